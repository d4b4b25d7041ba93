# store: the KV store (Workers KV, LMDB backend) and the object store (R2,
# directory backend), with their unit tests.
if(NOT TARGET PkgConfig::LMDB)
  message(FATAL_ERROR "ag_store needs LMDB: install liblmdb-dev (pkg-config lmdb)")
endif()
add_library(ag_store STATIC src/store/kv.c src/store/kv_lmdb.c src/store/objstore.c
                      src/store/objstore_fs.c)
target_link_libraries(ag_store PUBLIC ag_util PkgConfig::LMDB PkgConfig::CRYPTO
                      PkgConfig::JANSSON Threads::Threads)

ag_unit_test(test_kv tests/unit/test_kv.c)
target_link_libraries(test_kv ag_store)
ag_unit_test(test_objstore tests/unit/test_objstore.c)
target_link_libraries(test_objstore ag_store)
