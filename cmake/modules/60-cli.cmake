# cli: the storage commands (`aigate kv`, `aigate r2`, `aigate secret`) and the secret store
# they share with the server. ag_secrets is its own library because the server's config
# loader (ag_core) reads secrets too, and should not pull in the CLI to do so.
add_library(ag_secrets STATIC src/store/secrets.c)
target_link_libraries(ag_secrets PUBLIC ag_util)

add_library(ag_cli STATIC
  src/cli/common.c src/cli/cmd_kv.c src/cli/cmd_r2.c src/cli/cmd_secret.c)
# ag_core provides the config loader (src/config/config.c), so the CLI finds the data
# folder exactly as the server does.
target_link_libraries(ag_cli PUBLIC ag_core ag_store ag_secrets ag_util)

# ag_config_load_secrets() (in ag_core) reads the secrets file: ag_core's users get ag_secrets.
if(TARGET ag_core)
  target_link_libraries(ag_core PUBLIC ag_secrets)
endif()

ag_unit_test(test_secrets tests/unit/test_secrets.c)
target_link_libraries(test_secrets ag_secrets)
