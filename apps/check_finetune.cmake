# What --freeze promises, seen from outside: the fine-tuned model of tessera-train --init embeds
# the frozen modality exactly as the model it started from did (the same bytes out of
# tessera-encode), and the trained one differently; a new tower's modality (--add-tower), which
# the model it started from lacks, it embeds at all.
#
#   cmake -DENCODE=tessera-encode -DINIT=DIR -DTUNED=DIR -DSCRATCH=DIR
#         -DSAME="--image;FILE" [-DCHANGED="--text;TEXT"] [-DNEW="--audio;FILE"] -P check_finetune.cmake
cmake_minimum_required(VERSION 3.19)
foreach(var ENCODE INIT TUNED SCRATCH SAME)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "check_finetune.cmake: -D${var}=... is required")
  endif()
endforeach()
set(inputs SAME)
if(DEFINED CHANGED)
  list(APPEND inputs CHANGED)
endif()
file(MAKE_DIRECTORY "${SCRATCH}")
foreach(input ${inputs})
  foreach(model INIT TUNED)
    execute_process(COMMAND "${ENCODE}" --model "${${model}}" ${${input}}
                      --out "${SCRATCH}/${input}-${model}.safetensors"
                    RESULT_VARIABLE status ERROR_VARIABLE error)
    if(NOT status EQUAL 0)
      message(FATAL_ERROR "tessera-encode --model ${${model}} ${${input}}: ${status}: ${error}")
    endif()
  endforeach()
  execute_process(COMMAND "${CMAKE_COMMAND}" -E compare_files
                    "${SCRATCH}/${input}-INIT.safetensors" "${SCRATCH}/${input}-TUNED.safetensors"
                  RESULT_VARIABLE differ)
  if(input STREQUAL "SAME" AND NOT differ EQUAL 0)
    message(FATAL_ERROR "${SAME}: the frozen tower's embedding changed in ${TUNED}")
  elseif(input STREQUAL "CHANGED" AND differ EQUAL 0)
    message(FATAL_ERROR "${CHANGED}: the trained tower's embedding is still ${INIT}'s")
  endif()
endforeach()
if(DEFINED NEW)
  execute_process(COMMAND "${ENCODE}" --model "${TUNED}" ${NEW} --out "${SCRATCH}/NEW-TUNED.safetensors"
                  RESULT_VARIABLE status ERROR_VARIABLE error)
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "tessera-encode --model ${TUNED} ${NEW}: ${status}: ${error}")
  endif()
endif()
message(STATUS "frozen: ${SAME} embeds as before; trained: ${CHANGED} embeds differently; new: ${NEW} embeds")
