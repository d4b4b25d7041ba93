# usage log: NDJSON usage entries batched into the object store by one writer
# thread (src/store/usage_log.c), with its unit test.
add_library(ag_usage_log STATIC src/store/usage_log.c)
target_link_libraries(ag_usage_log PUBLIC ag_store ag_util Threads::Threads m)

ag_unit_test(test_usage_log tests/unit/test_usage_log.c)
target_link_libraries(test_usage_log ag_usage_log PkgConfig::JANSSON)
