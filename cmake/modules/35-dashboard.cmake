# dashboard: the admin listener's page, embedded in the binary. web/src/* (our HTML, JS, CSS,
# icon) and uPlot's dist files (npm, pinned by web/package-lock.json) become byte arrays in a
# generated C source in the build tree, written by tools/embed.c, a host tool built here; an
# edit to any input regenerates it. src/obs/dashboard.c looks the files up.
#
# ag_dashboard is its own library so the generated source and its inputs stay out of ag_obs's
# sources (ag_layer() would make a second ag_obs), but it belongs to the obs layer: it compiles
# against obs's staged include tree (obs/, util/), and ag_obs links it PUBLIC, so every layer
# that may include obs/dashboard.h also links it.
set(AG_WEB ${CMAKE_SOURCE_DIR}/web)
set(AG_UPLOT ${AG_WEB}/node_modules/uplot/dist)
if(NOT EXISTS ${AG_UPLOT}/uPlot.iife.min.js OR NOT EXISTS ${AG_UPLOT}/uPlot.min.css)
  message(FATAL_ERROR "The dashboard needs uPlot from npm, and web/node_modules/uplot is missing. "
                      "Run `make` (its deps-web step runs `npm ci` in web/), "
                      "or run `npm ci` in web/ yourself.")
endif()

add_executable(ag_embed tools/embed.c)

# index.html is the page at "/"; everything else is under "/assets/". Dot files and editor
# backups are skipped; any other new file is embedded (tools/embed.c refuses an extension it
# has no Content-Type for).
file(GLOB AG_WEB_FILES LIST_DIRECTORIES false CONFIGURE_DEPENDS ${AG_WEB}/src/*)
list(SORT AG_WEB_FILES)
set(AG_WEB_INPUTS)
set(AG_WEB_ARGS)
foreach(f ${AG_WEB_FILES} ${AG_UPLOT}/uPlot.iife.min.js ${AG_UPLOT}/uPlot.min.css)
  get_filename_component(n ${f} NAME)
  if(n MATCHES "^\\." OR n MATCHES "~$")
    continue()
  endif()
  if(n STREQUAL "index.html")
    list(APPEND AG_WEB_ARGS "/=${f}")
  else()
    list(APPEND AG_WEB_ARGS "/assets/${n}=${f}")
  endif()
  list(APPEND AG_WEB_INPUTS ${f})
endforeach()

set(AG_DASHBOARD_GEN ${CMAKE_BINARY_DIR}/generated/dashboard_assets.c)
add_custom_command(OUTPUT ${AG_DASHBOARD_GEN}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/generated
  COMMAND ag_embed ${AG_DASHBOARD_GEN} ${AG_WEB_ARGS}
  DEPENDS ag_embed ${AG_WEB_INPUTS}
  COMMENT "Embedding the dashboard (web/) in ${AG_DASHBOARD_GEN}"
  VERBATIM)

add_library(ag_dashboard STATIC src/obs/dashboard.c ${AG_DASHBOARD_GEN})
target_include_directories(ag_dashboard PRIVATE ${CMAKE_BINARY_DIR}/layers/obs)
target_link_libraries(ag_obs PUBLIC ag_dashboard)
# In the architecture check with the layer libraries (src/obs/dashboard.c is in the obs layer;
# the generated source, outside src/, is not checked).
set_property(GLOBAL APPEND PROPERTY AG_LAYER_LIBS ag_dashboard)

# The lookup, and what the CSP demands of the page: no inline script or style, nothing from
# another origin, every file the page names is embedded.
ag_unit_test(test_dashboard tests/unit/test_dashboard.c)
target_link_libraries(test_dashboard ag_dashboard)
