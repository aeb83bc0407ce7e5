# Program tests of the checksums tessera writes into model files and checkpoints
# (docs/model-files.md, "Checksum"; docs/robustness.md). Included from apps/CMakeLists.txt.
#
# The files come from apps.train.run (fixture train_straight): its model directory and its
# checkpoint, copied into ${checksum_dir} and damaged there by
# tests/bad_inputs/make_checksum_cases.py (--flip: one bit of the data section; --strip: the
# checksum entry removed). Then
#   apps.checksum.encode_flipped_model   tessera-encode --model on the damaged model: exit 1,
#                                        one line naming model.safetensors;
#   apps.checksum.resume_flipped         tessera-train --resume on the damaged checkpoint:
#                                        exit 1, one line naming checkpoint.safetensors;
#   apps.checksum.resume_without         tessera-train --resume on a checkpoint without a
#                                        checksum: refused, naming the file.

find_package(Python3 COMPONENTS Interpreter QUIET)
if(NOT Python3_Interpreter_FOUND)
  message(STATUS "tessera: no Python 3 interpreter; the apps.checksum.* tests are not run")
  return()
endif()

set(checksum_dir "${PROJECT_BINARY_DIR}/checksum-tests")
set(checksum_cases "${PROJECT_SOURCE_DIR}/tests/bad_inputs/make_checksum_cases.py")

add_test(NAME apps.checksum.clean COMMAND "${CMAKE_COMMAND}" -E rm -rf "${checksum_dir}")
add_test(NAME apps.checksum.copy_model
  COMMAND "${CMAKE_COMMAND}" -E copy_directory "${train_out}/straight" "${checksum_dir}/model")
add_test(NAME apps.checksum.flip_model
  COMMAND "${Python3_EXECUTABLE}" "${checksum_cases}" --flip
    "${checksum_dir}/model/model.safetensors" "${checksum_dir}/model/model.safetensors")
add_test(NAME apps.checksum.flip_checkpoint
  COMMAND "${Python3_EXECUTABLE}" "${checksum_cases}" --flip
    "${train_out}/straight/checkpoint.safetensors" "${checksum_dir}/flipped/checkpoint.safetensors")
add_test(NAME apps.checksum.strip_checkpoint
  COMMAND "${Python3_EXECUTABLE}" "${checksum_cases}" --strip
    "${train_out}/straight/checkpoint.safetensors" "${checksum_dir}/without/checkpoint.safetensors")
set_tests_properties(apps.checksum.clean PROPERTIES LABELS apps FIXTURES_SETUP checksum_clean)
set_tests_properties(apps.checksum.copy_model PROPERTIES LABELS apps
  FIXTURES_REQUIRED "train_straight;checksum_clean" FIXTURES_SETUP checksum_model_copy)
set_tests_properties(apps.checksum.flip_model PROPERTIES LABELS apps
  FIXTURES_REQUIRED checksum_model_copy FIXTURES_SETUP checksum_flipped_model)
set_tests_properties(apps.checksum.flip_checkpoint PROPERTIES LABELS apps
  FIXTURES_REQUIRED "train_straight;checksum_clean" FIXTURES_SETUP checksum_flipped_checkpoint)
set_tests_properties(apps.checksum.strip_checkpoint PROPERTIES LABELS apps
  FIXTURES_REQUIRED "train_straight;checksum_clean" FIXTURES_SETUP checksum_stripped_checkpoint)

tessera_cli_test(tessera-encode checksum.encode_flipped_model 1
  "checksum-tests/model/model.safetensors: checksum mismatch: metadata 'tessera.crc32' is"
  --model "${checksum_dir}/model" --text "a red circle" --out "${checksum_dir}/embeddings.safetensors")
set_tests_properties(apps.checksum.encode_flipped_model PROPERTIES
  FIXTURES_REQUIRED checksum_flipped_model)

tessera_cli_test(tessera-train checksum.resume_flipped 1
  "checksum-tests/flipped/checkpoint.safetensors: checksum mismatch: metadata 'tessera.crc32' is"
  ${train_args} --out "${checksum_dir}/flipped" --resume)
set_tests_properties(apps.checksum.resume_flipped PROPERTIES
  FIXTURES_REQUIRED "synth_world;checksum_flipped_checkpoint")

tessera_cli_test(tessera-train checksum.resume_without 1
  "checksum-tests/without/checkpoint.safetensors: no checksum (metadata 'tessera.crc32')"
  ${train_args} --out "${checksum_dir}/without" --resume)
set_tests_properties(apps.checksum.resume_without PROPERTIES
  FIXTURES_REQUIRED "synth_world;checksum_stripped_checkpoint")
