# Architecture checks. (1) An include that goes up a layer fails to compile: a probe in the
# util layer includes a gateway header, and must not build. (2) No two source files call each
# other in a circle, and no layer calls one above it (tests/arch/call_graph.py over the
# objects of every layer library, with the layer order of tests/arch/layers.txt).
add_test(NAME arch_upward_include
  COMMAND ${CMAKE_C_COMPILER} -std=c11 -fsyntax-only -I${CMAKE_BINARY_DIR}/layers/util
          ${CMAKE_SOURCE_DIR}/tests/arch/upward_include.c)
set_tests_properties(arch_upward_include PROPERTIES LABELS unit WILL_FAIL TRUE)
add_test(NAME arch_same_layer_include
  COMMAND ${CMAKE_C_COMPILER} -std=c11 -fsyntax-only -I${CMAKE_BINARY_DIR}/layers/gateway
          ${CMAKE_SOURCE_DIR}/tests/arch/upward_include.c)
set_tests_properties(arch_same_layer_include PROPERTIES LABELS unit)

find_package(Python3 COMPONENTS Interpreter)
if(Python3_FOUND)
  # The objects of every layer library (tests, fuzz targets and tools are left out).
  get_property(libs GLOBAL PROPERTY AG_LAYER_LIBS)
  set(dirs)
  foreach(l ${libs})
    list(APPEND dirs ${CMAKE_BINARY_DIR}/CMakeFiles/${l}.dir)
  endforeach()
  add_test(NAME arch_call_graph
    COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/arch/call_graph.py --only src/
            --layers ${CMAKE_SOURCE_DIR}/tests/arch/layers.txt ${dirs})
  add_test(NAME arch_call_graph_selftest
    COMMAND ${Python3_EXECUTABLE} ${CMAKE_SOURCE_DIR}/tests/arch/test_call_graph.py)
  set_tests_properties(arch_call_graph_selftest PROPERTIES LABELS unit)
  set_tests_properties(arch_call_graph PROPERTIES LABELS unit)
endif()
