# cli: the storage commands (`aigate kv`, `aigate r2`, `aigate secret`, `aigate keys`: client
# API keys over store/keys.c), `aigate stats` (over obs/stats.c) and `aigate tail` (the admin listener's event stream, with libcurl's easy
# interface and upstream's SSE parser); they find the data folder through the config exactly as
# the server does. Then the binary, on top of all.
ag_layer(DIR cli SOURCES src/cli/common.c src/cli/cmd_kv.c src/cli/cmd_r2.c src/cli/cmd_secret.c
  src/cli/cmd_stats.c src/cli/cmd_tail.c src/cli/tail_format.c src/cli/cmd_cron.c
  src/cli/cmd_keys.c src/cli/cmd_init.c src/cli/cmd_deploy.c
  USES util config store obs upstream cron tasks
  LINK PkgConfig::JANSSON PkgConfig::UV m)

ag_unit_test(test_tail_format tests/unit/test_tail_format.c)
target_link_libraries(test_tail_format ag_cli)

add_executable(aigate src/main.c src/upgrade.c)
target_include_directories(aigate PRIVATE ${CMAKE_SOURCE_DIR}/src)
target_link_libraries(aigate ag_gateway ag_admin ag_tasks ag_cli)
