# Runs `MPIEXEC... PROGRAM MODE` and checks how it ends (tests/mpi/mpi_failure.cpp):
#   EXPECT_STATUS  0 (a clean run) or NONZERO (a failed one)
#   EXPECT_STDERR  a regular expression mpirun's and the ranks' stderr must match (optional)
#   LIMIT          seconds within which every rank must have ended
# cmake -DMPIEXEC="mpirun;-np;2" -DPROGRAM=... -DMODE=kill -DEXPECT_STATUS=NONZERO
#       -DEXPECT_STDERR=... -DLIMIT=15 -P check_failure.cmake
foreach(variable MPIEXEC PROGRAM MODE EXPECT_STATUS LIMIT)
  if(NOT DEFINED ${variable})
    message(FATAL_ERROR "check_failure.cmake: pass -D${variable}=...")
  endif()
endforeach()

string(TIMESTAMP start "%s")
execute_process(COMMAND ${MPIEXEC} "${PROGRAM}" "${MODE}"
  RESULT_VARIABLE status
  OUTPUT_VARIABLE output
  ERROR_VARIABLE errors
  TIMEOUT ${LIMIT})
string(TIMESTAMP end "%s")
math(EXPR seconds "${end} - ${start}")
message(STATUS "${MODE}: mpirun ended with status '${status}' after about ${seconds} s\n"
               "stdout:\n${output}\nstderr:\n${errors}")

if(NOT status MATCHES "^[0-9]+$")
  message(FATAL_ERROR "${MODE}: mpirun did not end within ${LIMIT} s (${status})")
endif()
if(EXPECT_STATUS STREQUAL "NONZERO" AND status EQUAL 0)
  message(FATAL_ERROR "${MODE}: mpirun exited 0; expected a failure")
endif()
if(EXPECT_STATUS STREQUAL "0" AND NOT status EQUAL 0)
  message(FATAL_ERROR "${MODE}: mpirun exited ${status}; expected 0")
endif()
if(DEFINED EXPECT_STDERR AND NOT errors MATCHES "${EXPECT_STDERR}")
  message(FATAL_ERROR "${MODE}: stderr does not match '${EXPECT_STDERR}'")
endif()
