# Black-box tests: the real binary on an ephemeral port, the fake upstream, real HTTP.
find_program(NODE_EXE node)
if(NODE_EXE)
  file(GLOB AG_INTEGRATION_TESTS ${CMAKE_SOURCE_DIR}/tests/integration/*.test.js)
  set(AG_INTEGRATION_ENV "AIGATE_BIN=$<TARGET_FILE:aigate>" "CRON_NEXT_BIN=$<TARGET_FILE:cron_next>")
  # The service manager's end of sd_notify, for v_lifecycle.test.js.
  add_executable(notify_sink tests/helpers/notify_sink.c)
  list(APPEND AG_INTEGRATION_ENV "NOTIFY_SINK_BIN=$<TARGET_FILE:notify_sink>")
  # The outputs driver (cmake/modules/52-tasks.cmake), for n_outputs.test.js.
  if(TARGET outputs_cli)
    list(APPEND AG_INTEGRATION_ENV "OUTPUTS_CLI_BIN=$<TARGET_FILE:outputs_cli>")
  endif()
  foreach(t ${AG_INTEGRATION_TESTS})
    get_filename_component(n ${t} NAME_WE)
    add_test(NAME integration_${n} COMMAND ${NODE_EXE} --test ${t})
    set_tests_properties(integration_${n} PROPERTIES LABELS integration TIMEOUT 600
      ENVIRONMENT "${AG_INTEGRATION_ENV}")
  endforeach()
  # The longest files (seconds under ASan) start first, so that a fresh checkout's run (no
  # CTestCostData.txt yet) does not end on one of them alone.
  foreach(slow p_hardening_net:70 y_redis:60 o_tasks:55 f_stream:28 x_upgrade:22
               s_resilience:21 p_hardening:20 t_access:18 l_admin:18)
    string(REPLACE ":" ";" pair ${slow})
    list(GET pair 0 n)
    list(GET pair 1 cost)
    if(TEST integration_${n})
      set_tests_properties(integration_${n} PROPERTIES COST ${cost})
    endif()
  endforeach()
endif()
