# bench: the open-loop load generator behind `make bench` (bench/run.sh), the streaming upstream
# of scenario S4, the generator's self-test, and a smoke run of the whole harness. Standalone on
# purpose: they link no project code, so a bug in the gateway cannot hide in the tools that
# measure it.
add_executable(ag_loadgen bench/loadgen.c)
add_executable(ag_sse_upstream bench/sse_upstream.c)

add_test(NAME bench_loadgen_selftest COMMAND ag_loadgen --self-test)
set_tests_properties(bench_loadgen_selftest PROPERTIES LABELS "unit;bench" TIMEOUT 60)

# The whole harness for about a second per scenario: it asserts that the harness ran and wrote
# its JSON, never a figure. aigate is measured when this build has it, else skipped; without
# wrk or nginx the script exits 77 and ctest reports the test as skipped.
add_test(NAME bench_smoke
         COMMAND ${CMAKE_SOURCE_DIR}/bench/run.sh --smoke --build-dir ${CMAKE_BINARY_DIR}
                 --out ${CMAKE_BINARY_DIR}/bench-smoke.json)
set_tests_properties(bench_smoke PROPERTIES LABELS bench TIMEOUT 300 SKIP_RETURN_CODE 77
                     RUN_SERIAL TRUE)
# They share util/platform.h (feature macros) and nothing else of the project.
target_include_directories(ag_loadgen PRIVATE ${CMAKE_SOURCE_DIR}/src)
target_include_directories(ag_sse_upstream PRIVATE ${CMAKE_SOURCE_DIR}/src)
