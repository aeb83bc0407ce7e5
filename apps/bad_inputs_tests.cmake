# ---- The catalogue of bad inputs (tests/bad_inputs/, docs/robustness.md) --------------------
# tessera-encode on every file of tests/bad_inputs/catalogue.json: exit status 1 and one line
# naming the problem (check_cli.cmake), never a signal, within 10 s and 1 GiB of resident
# memory (measured by GNU time). The files are read by the model of tests/bad_inputs/model,
# or are a model directory: tests/bad_inputs/models/<case> holds the defective file only (or
# a directory where a file belongs), and is assembled here beside model/'s other files;
# tests/bad_inputs/pretrained/<case> likewise beside the files of the fixture its "base" names. A file
# given by an absolute path (/dev/zero) is taken as it is. A manifest (option --manifest,
# tests/bad_inputs/manifest/) goes to tessera-train instead, with the model's config, the key
# options of its entry's "args" and an --out of its own (never reached): the error line must
# hold "<manifest's path>: <the entry's error>". Included from apps/CMakeLists.txt.
set(bad_inputs "${PROJECT_SOURCE_DIR}/tests/bad_inputs")
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${bad_inputs}/catalogue.json")
file(READ "${bad_inputs}/catalogue.json" catalogue)
string(JSON count LENGTH "${catalogue}")
math(EXPR last "${count} - 1")
foreach(i RANGE ${last})
  string(JSON file GET "${catalogue}" ${i} file)
  string(JSON option GET "${catalogue}" ${i} option)
  string(JSON expected GET "${catalogue}" ${i} error)
  # a pretrained model's case: "base" names the fixture under tests/data/ whose model/ holds
  # the other files
  string(JSON base ERROR_VARIABLE no_base GET "${catalogue}" ${i} base)
  set(model_base "${bad_inputs}/model")
  if(NOT no_base)
    set(model_base "${PROJECT_SOURCE_DIR}/tests/data/${base}/model")
  endif()
  string(REGEX REPLACE "^/" "" name "${file}")
  string(REGEX REPLACE "[/.]" "_" name "${name}")
  if(file MATCHES "[.]avi$" AND NOT tessera_WITH_FFMPEG)
    continue()  # a container: FFmpeg reads it
  endif()
  set(path "${bad_inputs}/${file}")
  if(IS_ABSOLUTE "${file}")
    # one node (/dev/zero) read as several kinds of input: the option names the test
    set(path "${file}")
    string(REGEX REPLACE "^--" "" kind "${option}")
    string(REPLACE "-" "_" kind "${kind}")
    set(name "${kind}.${name}")
  endif()
  if(option STREQUAL "--manifest")
    # "args": the key options the manifest is read with (optional)
    string(JSON args_json ERROR_VARIABLE no_args GET "${catalogue}" ${i} args)
    set(args_count 0)
    if(NOT no_args)
      string(JSON args_count LENGTH "${args_json}")
    endif()
    set(args)
    if(args_count GREATER 0)
      math(EXPR args_last "${args_count} - 1")
      foreach(a RANGE ${args_last})
        string(JSON arg GET "${args_json}" ${a})
        list(APPEND args "${arg}")
      endforeach()
    endif()
    # --warmup: the default 50 is more than --steps 1, a usage error before the manifest
    add_test(NAME apps.bad_input.${name}
      COMMAND "${CMAKE_COMMAND}" "-DEXPECTED=${path}: ${expected}" -DEXPECTED_STATUS=1
        -DMAX_SECONDS=10 -DMAX_RSS_MB=1024
        "-DCOMMAND=$<TARGET_FILE:tessera-train>;--manifest;${path};${args};--config;${bad_inputs}/model/config.json;--out;${PROJECT_BINARY_DIR}/bad-inputs/train/${name};--steps;1;--pairs;2;--warmup;1"
        -P "${CMAKE_CURRENT_SOURCE_DIR}/check_cli.cmake")
    set_tests_properties(apps.bad_input.${name} PROPERTIES LABELS apps TIMEOUT 60)
    continue()
  endif()
  set(model "${bad_inputs}/model")
  set(input "${option}" "${path}")
  if(option STREQUAL "--model")
    set(model "${PROJECT_BINARY_DIR}/bad-inputs/${file}")
    file(REMOVE_RECURSE "${model}")
    file(MAKE_DIRECTORY "${model}")
    file(GLOB model_files RELATIVE "${model_base}" "${model_base}/*")
    foreach(part IN LISTS model_files)
      set(from "${model_base}/${part}")
      if(EXISTS "${path}/${part}")
        set(from "${path}/${part}")
      endif()
      file(COPY "${from}" DESTINATION "${model}")
    endforeach()
    file(GLOB case_files RELATIVE "${path}" "${path}/*")
    foreach(part IN LISTS case_files)  # files the base lacks (a tokenizer)
      if(NOT EXISTS "${model}/${part}")
        file(COPY "${path}/${part}" DESTINATION "${model}")
      endif()
    endforeach()
    set(input --text "a red square")
  endif()
  add_test(NAME apps.bad_input.${name}
    COMMAND "${CMAKE_COMMAND}" "-DEXPECTED=${expected}" -DEXPECTED_STATUS=1
      -DMAX_SECONDS=10 -DMAX_RSS_MB=1024
      "-DCOMMAND=$<TARGET_FILE:tessera-encode>;--model;${model};${input};--out;${PROJECT_BINARY_DIR}/bad-inputs/never.safetensors"
      -P "${CMAKE_CURRENT_SOURCE_DIR}/check_cli.cmake")
  # The bound is check_cli.cmake's; ctest's own timeout is only a backstop.
  set_tests_properties(apps.bad_input.${name} PROPERTIES LABELS apps TIMEOUT 60)
endforeach()
