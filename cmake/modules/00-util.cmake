# util: arena, buffers, strings, errors, logging, time, hex, file helpers.
add_library(ag_util STATIC
  src/util/pool.c src/util/buf.c src/util/errors.c src/util/log.c src/util/json.c
  src/util/utf.c src/util/hex.c src/util/fs.c)
target_link_libraries(ag_util PUBLIC PkgConfig::JANSSON Threads::Threads)
ag_unit_test(test_util tests/unit/test_util.c)
target_link_libraries(test_util ag_util)
