# gateway/openai.c: the OpenAI Chat Completions translator, in the gateway library (a module of
# its own so the gateway's source list stays as it is), its unit test over the fake upstream's
# recorded streams (tests/unit/data/openai/), and fuzz targets for requests and streams.
target_sources(ag_gateway PRIVATE ${CMAKE_SOURCE_DIR}/src/gateway/openai.c)

ag_unit_test(test_openai tests/unit/test_openai.c)
target_link_libraries(test_openai ag_gateway PkgConfig::JANSSON)
target_compile_definitions(test_openai PRIVATE
                           AG_OPENAI_STREAMS="${CMAKE_SOURCE_DIR}/tests/unit/data/openai")
ag_fuzz_target(fuzz_openai_request fuzz/fuzz_openai_request.c)
target_link_libraries(fuzz_openai_request ag_gateway PkgConfig::JANSSON)
ag_fuzz_target(fuzz_openai_stream fuzz/fuzz_openai_stream.c)
target_link_libraries(fuzz_openai_stream ag_gateway PkgConfig::JANSSON)

# The recorded streams are the fake's own: this check records them again and fails when the
# fake's streams changed (then run tests/unit/data/openai/record.js to refresh them).
find_program(NODE_EXE node)
if(NODE_EXE)
  add_test(NAME openai_streams_recorded
           COMMAND ${NODE_EXE} ${CMAKE_SOURCE_DIR}/tests/unit/data/openai/record.js --check)
  set_tests_properties(openai_streams_recorded PROPERTIES LABELS integration TIMEOUT 120)
endif()
