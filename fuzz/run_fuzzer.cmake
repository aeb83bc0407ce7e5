# cmake -DFUZZER=<exe> -DWORK=<dir> -DINPUTS=<dir>[;<dir>] -DSECONDS=<n> -P run_fuzzer.cmake
#
# Runs one libFuzzer target for SECONDS: first every input of INPUTS (the seed corpus and the
# regression inputs), then mutations of them. New inputs go to WORK/corpus, never into the
# source tree; a finding is saved as WORK/crash-*, leak-*, timeout-* or oom-* and fails the test.
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}/corpus")
execute_process(
  COMMAND "${FUZZER}" -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048
    -print_final_stats=1 "-artifact_prefix=${WORK}/" "${WORK}/corpus" ${INPUTS}
  RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  file(GLOB findings "${WORK}/crash-*" "${WORK}/leak-*" "${WORK}/timeout-*" "${WORK}/oom-*")
  message(FATAL_ERROR "${FUZZER} failed (${status}); its input: ${findings}\n"
    "Reproduce with: ${FUZZER} <input>")
endif()
