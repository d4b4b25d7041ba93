# cli: the storage commands (`aigate kv`, `aigate r2`, `aigate secret`) and `aigate stats`
# (over obs/stats.c); they find the data folder through the config exactly as the server does.
# Then the binary, on top of all.
ag_layer(DIR cli SOURCES src/cli/common.c src/cli/cmd_kv.c src/cli/cmd_r2.c src/cli/cmd_secret.c
  src/cli/cmd_stats.c
  USES util config store obs)

add_executable(aigate src/main.c)
target_include_directories(aigate PRIVATE ${CMAKE_SOURCE_DIR}/src)
target_link_libraries(aigate ag_gateway ag_cli)
