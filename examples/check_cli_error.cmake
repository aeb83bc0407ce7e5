# Runs COMMAND (a list) and checks the contract of tessera's programs on bad input: exit
# status 1 (not a signal, not 0), exactly one line on stderr, containing EXPECTED.
# Usage: cmake -DCOMMAND="prog;arg;..." -DEXPECTED="text" -P check_cli_error.cmake
execute_process(COMMAND ${COMMAND} RESULT_VARIABLE status ERROR_VARIABLE err OUTPUT_QUIET)
if(NOT status STREQUAL "1")
  message(FATAL_ERROR "expected exit status 1, got '${status}'; stderr:\n${err}")
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
