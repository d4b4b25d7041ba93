# tasks: scheduled AI tasks. outputs.c delivers one run's output to its destinations (R2, KV,
# webhook, e-mail over SMTP, a command), with mail.c (the RFC 5322 message) and exec.c (the
# command's process). The scheduler and the runner join this layer; the gateway is not used.
ag_layer(DIR tasks SOURCES src/tasks/outputs.c src/tasks/mail.c src/tasks/exec.c src/tasks/tasks.c
  USES util config store obs cron upstream
  LINK PkgConfig::JANSSON PkgConfig::UV Threads::Threads)

# Stores, commands and the message format, against real folders and processes.
ag_unit_test(test_outputs tests/unit/test_outputs.c)
target_link_libraries(test_outputs ag_tasks)

# outputs_cli: a JSON spec in, ag_outputs_deliver(), the results as JSON out; driven by
# tests/integration/n_outputs.test.js against a real webhook receiver and SMTP server.
add_executable(outputs_cli tests/unit/outputs_cli.c)
target_include_directories(outputs_cli PRIVATE ${CMAKE_SOURCE_DIR}/src)
target_link_libraries(outputs_cli ag_tasks PkgConfig::JANSSON)
