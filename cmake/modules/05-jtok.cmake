# util/jtok: the strict allocation-free JSON tokenizer for the hot paths, its unit tests (with a
# differential check against jansson), its libFuzzer target and its micro-benchmark.
add_library(ag_jtok STATIC src/util/jtok.c)
target_link_libraries(ag_jtok PUBLIC ag_util)

ag_unit_test(test_jtok tests/unit/test_jtok.c)
target_link_libraries(test_jtok ag_jtok PkgConfig::JANSSON)
target_compile_definitions(test_jtok PRIVATE
                           AG_JTOK_CORPUS="${CMAKE_SOURCE_DIR}/fuzz/corpus/fuzz_jtok")

ag_fuzz_target(fuzz_jtok fuzz/fuzz_jtok.c)
target_link_libraries(fuzz_jtok ag_jtok PkgConfig::JANSSON)

# Not a test: prints ns per parse for jtok and jansson on the same documents.
add_executable(jtok_bench bench/jtok_bench.c)
target_link_libraries(jtok_bench ag_jtok PkgConfig::JANSSON)
