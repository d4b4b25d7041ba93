# Layers: one static library per src/ directory. Each library compiles against
# a staged include tree (build/layers/<dir>/) that links only its own directory
# and the directories it may use, so an #include that goes up a layer does not
# resolve and the build fails. Libraries link in the same order.
#
#   ag_layer(DIR gateway SOURCES ... USES util config ... LINK PkgConfig::UV ...)
function(ag_layer)
  cmake_parse_arguments(L "" "DIR" "SOURCES;USES;LINK" ${ARGN})
  set(inc ${CMAKE_BINARY_DIR}/layers/${L_DIR})
  file(REMOVE_RECURSE ${inc})
  file(MAKE_DIRECTORY ${inc})
  foreach(d ${L_DIR} ${L_USES})
    file(CREATE_LINK ${CMAKE_SOURCE_DIR}/src/${d} ${inc}/${d} SYMBOLIC)
  endforeach()
  add_library(ag_${L_DIR} STATIC ${L_SOURCES})
  target_include_directories(ag_${L_DIR} PRIVATE ${inc})
  set(deps)
  foreach(d ${L_USES})
    list(APPEND deps ag_${d})
  endforeach()
  target_link_libraries(ag_${L_DIR} PUBLIC ${deps} ${L_LINK})
  set_property(GLOBAL APPEND PROPERTY AG_LAYER_LIBS ag_${L_DIR})
endfunction()
