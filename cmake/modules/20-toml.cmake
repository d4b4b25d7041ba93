# config/toml: the TOML 1.0.0 parser behind aigate's configuration, its unit
# tests, the official toml-test suite runner and a libFuzzer target.
add_library(ag_toml STATIC src/config/toml.c)
target_link_libraries(ag_toml PUBLIC ag_util)

ag_unit_test(test_toml tests/unit/test_toml.c)
target_link_libraries(test_toml ag_toml)

add_executable(test_toml_suite tests/unit/test_toml_suite.c)
target_link_libraries(test_toml_suite ag_toml PkgConfig::JANSSON m)
target_compile_definitions(test_toml_suite PRIVATE AG_TOML_TEST_DIR="${AG_TESTDATA}/toml-test")
add_test(NAME toml_suite COMMAND test_toml_suite ${AG_TESTDATA}/toml-test)
set_tests_properties(toml_suite PROPERTIES LABELS unit TIMEOUT 300)

ag_fuzz_target(fuzz_toml fuzz/fuzz_toml.c)
target_link_libraries(fuzz_toml ag_toml)
