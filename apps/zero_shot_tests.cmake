# ---- tessera-classify and tessera-search (docs/pretrained.md) ------------------------------
# On a small generated model: the ImageBind fixture (text, image, audio and video towers, E 16)
# copied with the CLIP tokenizer into <build>/zero-shot/model, and a folder of files from the
# small synthetic world of apps.synth (zero_shot_setup.cmake says which). Each run takes
# about a second.
set(zero_shot "${PROJECT_BINARY_DIR}/zero-shot")
set(zero_shot_model "${zero_shot}/model")
set(zero_shot_files "${zero_shot}/files")
add_test(NAME apps.zero_shot.setup
  COMMAND "${CMAKE_COMMAND}" "-DSOURCE=${PROJECT_SOURCE_DIR}" "-DWORLD=${PROJECT_BINARY_DIR}/synth-output"
    "-DOUT=${zero_shot}" -P "${CMAKE_CURRENT_SOURCE_DIR}/zero_shot_setup.cmake")
set_tests_properties(apps.zero_shot.setup PROPERTIES LABELS apps
  FIXTURES_REQUIRED synth_world FIXTURES_SETUP zero_shot)

# -- tessera-classify: an image, an audio file and a video among three labels ----------------
# (from the world itself: the search tests below change the folder they index)
set(world "${PROJECT_BINARY_DIR}/synth-output")
set(classify_inputs --image "${world}/images/blue-circle-bottom-down-0.png"
  --audio "${world}/audio/blue-circle-bottom-down-0.wav"
  --video "${world}/video/blue-circle-bottom-down-0.y4m")
add_test(NAME apps.classify.run
  COMMAND tessera-classify --model "${zero_shot_model}" ${classify_inputs}
    --labels " blue circle,red square , a tone" --template "a picture of a {}")
set_tests_properties(apps.classify.run PROPERTIES LABELS apps FIXTURES_REQUIRED zero_shot
  PASS_REGULAR_EXPRESSION "blue-circle-bottom-down-0.png \\(image\\)\n +[a-z ]+: +[0-9]+\\.[0-9][0-9]%\n.*blue-circle-bottom-down-0.wav \\(audio\\)\n.*blue-circle-bottom-down-0.y4m \\(video\\)\n +[a-z ]+: +[0-9]+\\.[0-9][0-9]%\n +[a-z ]+: +[0-9]+\\.[0-9][0-9]%\n +[a-z ]+: +[0-9]+\\.[0-9][0-9]%")
# --json: it parses, and each input's probabilities sum to 1 (Python's json; left out without it)
find_package(Python3 COMPONENTS Interpreter QUIET)
if(Python3_Interpreter_FOUND)
  add_test(NAME apps.classify.json
    COMMAND "${Python3_EXECUTABLE}" "${CMAKE_CURRENT_SOURCE_DIR}/check_classify_json.py" 3
      $<TARGET_FILE:tessera-classify> --model "${zero_shot_model}" ${classify_inputs}
      --labels "blue circle,red square,green triangle,a tone" --top 2 --json)
  set_tests_properties(apps.classify.json PROPERTIES LABELS apps FIXTURES_REQUIRED zero_shot
    PASS_REGULAR_EXPRESSION "ok: 3 inputs, 4 labels, each row sums to 1")
endif()
# tessera's own models classify too (the demo's: text with its tokenizer, images)
add_test(NAME apps.classify.tessera_model
  COMMAND tessera-classify --model "${PROJECT_BINARY_DIR}/demo-output/model"
    --image "${PROJECT_BINARY_DIR}/demo-output/square.ppm" --labels "red square,blue circle")
set_tests_properties(apps.classify.tessera_model PROPERTIES LABELS apps FIXTURES_REQUIRED tessera_demo
  PASS_REGULAR_EXPRESSION "square.ppm \\(image\\)\n +(red square|blue circle): +[0-9.]+%\n +(red square|blue circle): +[0-9.]+%")

function(tessera_classify_error name status expected)
  tessera_cli_test(tessera-classify classify_error.${name} ${status} "${expected}" ${ARGN})
  set_tests_properties(apps.classify_error.${name} PROPERTIES FIXTURES_REQUIRED zero_shot)
endfunction()
set(one_image --model "${zero_shot_model}" --image "${zero_shot_files}/red-circle-left-up-0.png")
tessera_classify_error(template 1 "template \"a photo\" has no \"{}\" where the label goes"
  ${one_image} --labels "dog,cat" --template "a photo")
tessera_classify_error(empty_label 1 "labels: label 2 of 3 is empty" ${one_image} --labels "dog, ,cat")
tessera_classify_error(duplicate_label 1 "labels: \"dog\" is given twice" ${one_image} --labels "dog,cat, dog")
tessera_classify_error(no_input 2 "no input: give --image, --audio or --video"
  --model "${zero_shot_model}" --labels "dog,cat")
tessera_classify_error(no_labels 2 "--labels is required" ${one_image})
tessera_classify_error(bad_image 1 "broken.png: unsupported image format"
  --model "${zero_shot_model}" --image "${zero_shot_files}/broken.png" --labels "dog,cat")
tessera_classify_error(top 2 "--top: Value 0 not in range" ${one_image} --labels "dog,cat" --top 0)
tessera_classify_error(no_text 1 "the model has no text modality"
  --model "${PROJECT_SOURCE_DIR}/tests/data/encoder/video_pooled"
  --video "${zero_shot_files}/sub/blue-circle-bottom-down-0.y4m" --labels "dog,cat")

# -- tessera-search: the index built, reused, brought up to date ----------------------------
# In order (each step a fixture of the next): built (5 files embedded, broken.png reported and
# recorded), reused (nothing embedded, the file left as it was), a file touched (it alone
# embedded again), a file removed (dropped), then a file as the query (itself first, 1.0000).
set(search_args --model "${zero_shot_model}" --index "${zero_shot_files}")
set(index_file "${zero_shot_files}/.tessera-index.safetensors")
function(tessera_search_step name requires sets regex)
  add_test(NAME apps.search.${name} COMMAND ${ARGN})
  set_tests_properties(apps.search.${name} PROPERTIES LABELS apps
    FIXTURES_REQUIRED "${requires}" FIXTURES_SETUP "${sets}" PASS_REGULAR_EXPRESSION "${regex}")
endfunction()
tessera_search_step(build zero_shot search_built
  "broken.png: unsupported image format.*skipped until the file changes.*index .*files/.tessera-index.safetensors: 5 files: 0 reused, 5 embedded, 0 dropped, 1 failed, 1 other files skipped \\([0-9.]+ s\\)\n  1 +-?[0-9]\\.[0-9]+  [a-z/-]+0\\.(png|wav|y4m) \\((image|audio|video)\\)\n  2 .*\n  3 .*\n  4 .*\n  5 "
  tessera-search ${search_args} --query "a red circle")
add_test(NAME apps.search.index_tensors
  COMMAND "${CMAKE_COMMAND}" "-DFILE=${index_file}" "-DEXPECTED=embeddings F32 5x16"
    -P "${CMAKE_CURRENT_SOURCE_DIR}/check_safetensors.cmake")
set_tests_properties(apps.search.index_tensors PROPERTIES LABELS apps
  FIXTURES_REQUIRED search_built FIXTURES_SETUP search_checked)
tessera_search_step(reuse "search_built;search_checked" search_reused
  "5 files: 5 reused, 0 embedded, 0 dropped, 0 failed, 1 failed before \\(not retried\\), 1 other files skipped; unchanged"
  tessera-search ${search_args} --query "a blue circle" --top 2)
tessera_search_step(touch search_reused search_touched ""
  "${CMAKE_COMMAND}" -E touch "${zero_shot_files}/sub/green-square-top-up-0.png")
tessera_search_step(after_touch search_touched search_after_touch
  "5 files: 4 reused, 1 embedded, 0 dropped, 0 failed"
  tessera-search ${search_args} --query "a green square")
tessera_search_step(remove search_after_touch search_removed ""
  "${CMAKE_COMMAND}" -E rm "${zero_shot_files}/blue-circle-bottom-down-0.wav")
tessera_search_step(after_remove search_removed search_after_remove
  "4 files: 4 reused, 0 embedded, 1 dropped, 0 failed"
  tessera-search ${search_args} --query "a tone")
tessera_search_step(query_file search_after_remove search_queried
  "4 files: 4 reused, 0 embedded, 0 dropped, 0 failed.*\n  1   1\\.0000  red-circle-left-up-0\\.png \\(image\\)\n  2 "
  tessera-search ${search_args} --query-file "${zero_shot_files}/red-circle-left-up-0.png" --top 2)
tessera_search_step(text_file search_after_remove search_text_file "\n  1 .*\\.(png|y4m) \\((image|video)\\)"
  tessera-search ${search_args} --query-file "${zero_shot_files}/notes.txt" --top 1)
# an index file elsewhere: built anew there (after the removal: the folder changes no more)
tessera_search_step(index_file search_after_remove search_index_file "4 files: 0 reused, 4 embedded"
  tessera-search ${search_args} --query "a red circle" --index-file "${zero_shot}/elsewhere.safetensors")

function(tessera_search_error name status expected)
  tessera_cli_test(tessera-search search_error.${name} ${status} "${expected}" ${ARGN})
  set_tests_properties(apps.search_error.${name} PROPERTIES FIXTURES_REQUIRED zero_shot)
endfunction()
tessera_search_error(bad_query_file 1 "broken.png: unsupported image format (unknown signature)"
  ${search_args} --query-file "${zero_shot_files}/broken.png")
tessera_search_error(missing_query_file 1 "no-such.png: no such image file"
  ${search_args} --query-file "${zero_shot}/no-such.png")
tessera_search_error(query_file_kind 1 "not a kind of file tessera-search reads"
  ${search_args} --query-file "${zero_shot_model}/config.json")
tessera_search_error(missing_index_dir 1 "--index ${zero_shot}/no-such-folder: no such directory"
  --model "${zero_shot_model}" --index "${zero_shot}/no-such-folder" --query "a dog")
tessera_search_error(no_query 2 "no query: give --query TEXT or --query-file FILE" ${search_args})
tessera_search_error(two_queries 2 "give --query or --query-file, not both"
  ${search_args} --query "a dog" --query-file "${zero_shot_files}/red-circle-left-up-0.png")
tessera_search_error(not_an_index 1 "not-an-index.safetensors: exists and is not a tessera search index"
  ${search_args} --query "a dog" --index-file "${zero_shot}/not-an-index.safetensors")
tessera_search_error(index_over_the_model 1 "model/model.safetensors, one of the inputs"
  ${search_args} --query "a dog" --index-file "${zero_shot_model}/model.safetensors")
tessera_search_error(too_many_files 1 "more than 3 files to index (SearchIndexLimits::max_files)"
  ${search_args} --query "a dog" --max-files 3 --index-file "${zero_shot}/too-many.safetensors")
