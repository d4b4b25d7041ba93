# Black-box tests: the real binary on an ephemeral port, the fake upstream, real HTTP.
find_program(NODE_EXE node)
if(NODE_EXE)
  file(GLOB AG_INTEGRATION_TESTS ${CMAKE_SOURCE_DIR}/tests/integration/*.test.js)
  foreach(t ${AG_INTEGRATION_TESTS})
    get_filename_component(n ${t} NAME_WE)
    add_test(NAME integration_${n} COMMAND ${NODE_EXE} --test ${t})
    set_tests_properties(integration_${n} PROPERTIES LABELS integration TIMEOUT 600
      ENVIRONMENT "AIGATE_BIN=$<TARGET_FILE:aigate>;CRON_NEXT_BIN=$<TARGET_FILE:cron_next>")
  endforeach()
endif()
