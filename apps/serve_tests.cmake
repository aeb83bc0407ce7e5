# tessera-serve end to end (included by apps/CMakeLists.txt once tessera-serve is a target):
# tests/serve/test_serve.cpp starts the real program on a free port, talks to it over loopback
# with cpp-httplib's client, compares its embeddings with tessera-encode's, and stops it with
# SIGTERM. One ctest per GoogleTest test, apps.serve.<Suite>.<test>, label `apps`.

if(NOT TESSERA_BUILD_TESTS)
  return()
endif()
find_package(GTest QUIET)
if(NOT GTest_FOUND)
  message(STATUS "tessera: GoogleTest not found; the tests of tessera-serve (tests/serve) are not built")
  return()
endif()
include(GoogleTest)

add_executable(tessera_serve_tests "${PROJECT_SOURCE_DIR}/tests/serve/test_serve.cpp")
target_link_libraries(tessera_serve_tests PRIVATE
  tessera::tessera tessera_warnings GTest::gtest_main PkgConfig::tessera_httplib Threads::Threads)
# apps/ for serve/base64.hpp (the server's own), tests/ for the fixtures' headers
target_include_directories(tessera_serve_tests PRIVATE
  "${CMAKE_CURRENT_SOURCE_DIR}" "${PROJECT_SOURCE_DIR}/tests")
target_compile_definitions(tessera_serve_tests PRIVATE
  TESSERA_TEST_DATA_DIR="${PROJECT_SOURCE_DIR}/tests/data"
  TESSERA_SERVE_PROGRAM="$<TARGET_FILE:tessera-serve>"
  TESSERA_ENCODE_PROGRAM="$<TARGET_FILE:tessera-encode>"
  # Page.filled_in_by_chromium: the browser script, and where .ci/run installs playwright-core
  TESSERA_PAGE_TEST_SCRIPT="${PROJECT_SOURCE_DIR}/tests/serve/page_test.mjs"
  TESSERA_BROWSER_TEST_DIR="${PROJECT_SOURCE_DIR}/build/browser-test")
# building the tests builds the programs they run
add_dependencies(tessera_serve_tests tessera-serve tessera-encode)
# Each test starts its servers and bounds every wait (tests/serve/child_process.hpp); the whole
# program takes seconds. The timeout is the last guard.
gtest_discover_tests(tessera_serve_tests
  TEST_PREFIX "apps.serve."
  DISCOVERY_TIMEOUT 60
  WORKING_DIRECTORY "${CMAKE_CURRENT_BINARY_DIR}"
  PROPERTIES LABELS apps TIMEOUT 120)
