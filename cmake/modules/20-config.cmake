# config: the TOML 1.0 parser (with the official toml-test suite and a fuzz target) and the
# configuration model on top of it (key table, routes, merging), with their unit tests.
ag_layer(DIR config SOURCES src/config/toml.c src/config/config.c USES util LINK m)

ag_unit_test(test_toml tests/unit/test_toml.c)
target_link_libraries(test_toml ag_config)
add_executable(test_toml_suite tests/unit/test_toml_suite.c)
target_include_directories(test_toml_suite PRIVATE ${CMAKE_SOURCE_DIR}/src)
target_link_libraries(test_toml_suite ag_config PkgConfig::JANSSON m)
target_compile_definitions(test_toml_suite PRIVATE AG_TOML_TEST_DIR="${AG_TESTDATA}/toml-test")
add_test(NAME toml_suite COMMAND test_toml_suite ${AG_TESTDATA}/toml-test)
set_tests_properties(toml_suite PROPERTIES LABELS unit TIMEOUT 300)
ag_fuzz_target(fuzz_toml fuzz/fuzz_toml.c)
target_link_libraries(fuzz_toml ag_config)

ag_unit_test(test_config tests/unit/test_config.c)
target_link_libraries(test_config ag_config)
