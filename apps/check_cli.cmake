# Runs COMMAND (a list) and checks the contract of tessera's programs (docs/programs.md):
#   EXPECTED_STATUS 1 (the default): a runtime error, 2: a usage error. The exit status is
#     that one (not a signal, not 0) and stderr is exactly one line, containing EXPECTED.
#   EXPECTED_STATUS 0: success (--help); stdout contains EXPECTED and stderr is empty.
#   MAX_SECONDS and MAX_RSS_MB (optional): the run ends within that many seconds of wall time
#     and its peak resident memory stays under that many MiB, as measured by GNU time
#     (/usr/bin/time, Debian package `time`). The catalogue of bad inputs uses 10 s and 1024 MiB.
# Usage: cmake -DCOMMAND="prog;arg;..." -DEXPECTED="text" [-DEXPECTED_STATUS=2]
#   [-DNOTES_ALLOWED=ON: lines "tessera: warning: ..." and progress lines "step N/M ..." may
#    come before the error line]
#          [-DMAX_SECONDS=10 -DMAX_RSS_MB=1024] -P check_cli.cmake
if(NOT DEFINED EXPECTED_STATUS)
  set(EXPECTED_STATUS 1)
endif()
set(measure)
set(timeout)
if(DEFINED MAX_SECONDS OR DEFINED MAX_RSS_MB)
  find_program(gnu_time NAMES time PATHS /usr/bin NO_DEFAULT_PATH)
  if(NOT gnu_time)
    message(FATAL_ERROR "MAX_SECONDS/MAX_RSS_MB need GNU time at /usr/bin/time (Debian: time)")
  endif()
  string(RANDOM LENGTH 12 tag)
  set(usage "${CMAKE_CURRENT_BINARY_DIR}/check_cli_usage_${tag}.txt")
  set(measure "${gnu_time}" -f "%e %M" -o "${usage}")
endif()
if(DEFINED MAX_SECONDS)
  # A hang is cut off by coreutils' timeout, at three times the bound (so the failure says
  # how long it ran), inside the measure so that the measure still reports.
  math(EXPR cutoff "${MAX_SECONDS} * 3")
  set(timeout timeout --signal=KILL ${cutoff})
endif()
execute_process(COMMAND ${measure} ${timeout} ${COMMAND} RESULT_VARIABLE status
  OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(measure)
  if(EXISTS "${usage}")
    file(READ "${usage}" measured)
    file(REMOVE "${usage}")
  endif()
  # GNU time writes "Command exited with non-zero status N" before the line "%e %M".
  if(NOT measured MATCHES "([0-9.]+) ([0-9]+)[ \t\r\n]*$")
    message(FATAL_ERROR "no measurement from GNU time (status '${status}'): '${measured}'\n${err}")
  endif()
  set(seconds "${CMAKE_MATCH_1}")
  math(EXPR rss_mb "${CMAKE_MATCH_2} / 1024")
  if(DEFINED MAX_SECONDS AND seconds GREATER MAX_SECONDS)
    message(FATAL_ERROR "took ${seconds} s, more than ${MAX_SECONDS} s")
  endif()
  if(DEFINED MAX_RSS_MB AND rss_mb GREATER_EQUAL MAX_RSS_MB)
    message(FATAL_ERROR "peak resident memory ${rss_mb} MiB, not under ${MAX_RSS_MB} MiB")
  endif()
  message(STATUS "measured: ${seconds} s, peak ${rss_mb} MiB")
endif()
if(NOT status STREQUAL "${EXPECTED_STATUS}")
  message(FATAL_ERROR "expected exit status ${EXPECTED_STATUS}, got '${status}'; stderr:\n${err}")
endif()
if(EXPECTED_STATUS EQUAL 0)
  if(NOT err STREQUAL "")
    message(FATAL_ERROR "expected nothing on stderr, got:\n${err}")
  endif()
  string(FIND "${out}" "${EXPECTED}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "stdout does not mention '${EXPECTED}':\n${out}")
  endif()
  message(STATUS "ok: stdout mentions '${EXPECTED}'")
  return()
endif()
if(NOTES_ALLOWED)  # warnings and progress lines may come first; the error is the one other line
  string(REGEX REPLACE "(^|\n)(tessera: warning: |step +[0-9]+/[0-9]+ )[^\n\r]*" "" err "${err}")
  string(REGEX REPLACE "^\n+" "" err "${err}")
endif()
string(REGEX MATCHALL "\n" newlines "${err}")
list(LENGTH newlines lines)
if(NOT lines EQUAL 1)
  message(FATAL_ERROR "expected one line on stderr, got ${lines}:\n${err}")
endif()
string(FIND "${err}" "${EXPECTED}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "stderr does not mention '${EXPECTED}':\n${err}")
endif()
message(STATUS "ok: ${err}")
