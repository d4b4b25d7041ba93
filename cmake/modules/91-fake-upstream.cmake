# fake-upstream: the Node.js fake Anthropic API used by integration tests and benchmarks.
# Its own test suite runs under node's built-in test runner; no npm packages are needed.
find_program(NODE_EXE node)
if(NODE_EXE)
  add_test(NAME fake_upstream
           COMMAND ${NODE_EXE} --test ${CMAKE_SOURCE_DIR}/tests/fake-upstream/fake-anthropic.test.js)
  set_tests_properties(fake_upstream PROPERTIES LABELS integration TIMEOUT 300)
else()
  message(STATUS "node not found: the fake_upstream test is not registered")
endif()
