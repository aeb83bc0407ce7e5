# Runs COMMAND (an mpirun of tessera-train in which a rank fails or dies) and checks that every
# rank ended, mpirun exiting non-zero, within LIMIT seconds, and that stderr matches
# EXPECT_STDERR (a regular expression).
# cmake "-DCOMMAND=mpirun;-np;2;..." -DEXPECT_STDERR=... -DLIMIT=30 -P check_train_failure.cmake
foreach(variable COMMAND EXPECT_STDERR LIMIT)
  if(NOT DEFINED ${variable})
    message(FATAL_ERROR "check_train_failure.cmake: pass -D${variable}=...")
  endif()
endforeach()

string(TIMESTAMP start "%s")
execute_process(COMMAND ${COMMAND}
  RESULT_VARIABLE status
  OUTPUT_VARIABLE output
  ERROR_VARIABLE errors
  TIMEOUT ${LIMIT})
string(TIMESTAMP end "%s")
math(EXPR seconds "${end} - ${start}")
message(STATUS "mpirun ended with status '${status}' after about ${seconds} s\n"
               "stdout:\n${output}\nstderr:\n${errors}")

if(NOT status MATCHES "^[0-9]+$")
  message(FATAL_ERROR "mpirun did not end within ${LIMIT} s (${status})")
endif()
if(status EQUAL 0)
  message(FATAL_ERROR "mpirun exited 0; expected a failure")
endif()
if(NOT errors MATCHES "${EXPECT_STDERR}")
  message(FATAL_ERROR "stderr does not match '${EXPECT_STDERR}'")
endif()
