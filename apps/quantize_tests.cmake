# ---- tessera-quantize (issue 20; docs/quantization.md) ----------------------------------------
# The demo's model (tessera's own encoder) and the zero-shot ImageBind model (a pretrained
# family: written as a tessera_towers directory) quantized, then encoded with tessera-encode
# as any model is; the errors.
set(quantized "${PROJECT_BINARY_DIR}/quantize-output")
add_test(NAME apps.quantize.clean COMMAND "${CMAKE_COMMAND}" -E rm -rf "${quantized}")
set_tests_properties(apps.quantize.clean PROPERTIES LABELS apps FIXTURES_SETUP quantize_clean)
add_test(NAME apps.quantize.make_dir COMMAND "${CMAKE_COMMAND}" -E make_directory "${quantized}")
set_tests_properties(apps.quantize.make_dir PROPERTIES LABELS apps
  FIXTURES_REQUIRED quantize_clean FIXTURES_SETUP quantize_dir)

foreach(dtype int8 bf16)
  add_test(NAME apps.quantize.own_${dtype}
    COMMAND tessera-quantize --model "${demo_dir}/model" --out "${quantized}/own-${dtype}"
      --dtype ${dtype} --keep proj)
  set_tests_properties(apps.quantize.own_${dtype} PROPERTIES LABELS apps
    FIXTURES_REQUIRED "tessera_demo;quantize_dir" FIXTURES_SETUP quantized_own_${dtype}
    PASS_REGULAR_EXPRESSION "quantized [1-9][0-9]* weight tensor\\(s\\) to ${dtype}, kept 1 fp32 by --keep.*weights: .* -> .*wrote .*own-${dtype} \\(a tessera model directory\\)")
  add_test(NAME apps.quantize.own_${dtype}_encode
    COMMAND tessera-encode --model "${quantized}/own-${dtype}"
      --text "a red square" --image "${demo_dir}/square.ppm" --audio "${demo_dir}/tone.wav"
      --video "${demo_dir}/moving.y4m" --out "${quantized}/own-${dtype}.safetensors")
  set_tests_properties(apps.quantize.own_${dtype}_encode PROPERTIES LABELS apps
    FIXTURES_REQUIRED quantized_own_${dtype} PASS_REGULAR_EXPRESSION "encoded 1 sample\\(s\\)")
endforeach()

add_test(NAME apps.quantize.towers_int8
  COMMAND tessera-quantize --model "${zero_shot_model}" --out "${quantized}/towers-int8" --dtype int8)
set_tests_properties(apps.quantize.towers_int8 PROPERTIES LABELS apps
  FIXTURES_REQUIRED "zero_shot;quantize_dir" FIXTURES_SETUP quantized_towers
  PASS_REGULAR_EXPRESSION "quantized [1-9][0-9]* weight tensor\\(s\\) to int8.*a tessera_towers directory, from imagebind")
add_test(NAME apps.quantize.towers_int8_encode
  COMMAND tessera-encode --model "${quantized}/towers-int8" --text "a blue circle"
    --next --image "${world}/images/blue-circle-bottom-down-0.png"
    --out "${quantized}/towers-int8.safetensors")
set_tests_properties(apps.quantize.towers_int8_encode PROPERTIES LABELS apps
  FIXTURES_REQUIRED quantized_towers PASS_REGULAR_EXPRESSION "encoded 2 sample\\(s\\)")

tessera_cli_test(tessera-quantize quantize_error.dtype 2 "--dtype: " --model "${demo_dir}/model"
  --out "${quantized}/never" --dtype int4)
tessera_cli_test(tessera-quantize quantize_error.keep_names_nothing 1
  "keep \"layers.9\" names no linear or patch-embedding weight"
  --model "${demo_dir}/model" --out "${quantized}/never" --dtype int8 --keep proj,layers.9)
set_tests_properties(apps.quantize_error.keep_names_nothing PROPERTIES
  FIXTURES_REQUIRED "tessera_demo;quantize_dir")
tessera_cli_test(tessera-quantize quantize_error.out_inside_model 2 "or inside it"
  --model "${demo_dir}/model" --out "${demo_dir}/model/quantized" --dtype int8)
set_tests_properties(apps.quantize_error.out_inside_model PROPERTIES FIXTURES_REQUIRED tessera_demo)
tessera_cli_test(tessera-quantize quantize_error.out_not_empty 1 "exists and is not empty"
  --model "${demo_dir}/model" --out "${quantized}/own-int8" --dtype int8)
set_tests_properties(apps.quantize_error.out_not_empty PROPERTIES FIXTURES_REQUIRED quantized_own_int8)
tessera_cli_test(tessera-quantize quantize_error.model_missing 1 "no_such_model"
  --model "${quantized}/no_such_model" --out "${quantized}/never" --dtype int8)
set_tests_properties(apps.quantize_error.model_missing PROPERTIES FIXTURES_REQUIRED quantize_dir)
tessera_cli_test(tessera-quantize quantize_error.model_nan_weight 1
  "tensor 'proj.weight' holds a non-finite value (nan) at flat index 18"
  --model "${PROJECT_BINARY_DIR}/bad-inputs/models/nan_weight" --out "${quantized}/never"
  --dtype int8)
set_tests_properties(apps.quantize_error.model_nan_weight PROPERTIES FIXTURES_REQUIRED quantize_dir)
tessera_cli_test(tessera-quantize quantize_error.already_quantized 1 "already int8"
  --model "${quantized}/own-int8" --out "${quantized}/never" --dtype bf16)
set_tests_properties(apps.quantize_error.already_quantized PROPERTIES
  FIXTURES_REQUIRED "quantized_own_int8;quantize_dir")
# nothing half-written: the refused runs left no directory behind
add_test(NAME apps.quantize_error.nothing_written
  COMMAND "${CMAKE_COMMAND}" -E cat "${quantized}/never/config.json")
set_tests_properties(apps.quantize_error.nothing_written PROPERTIES LABELS apps WILL_FAIL TRUE
  FIXTURES_REQUIRED quantize_dir DEPENDS "apps.quantize_error.keep_names_nothing;apps.quantize_error.model_missing;apps.quantize_error.model_nan_weight;apps.quantize_error.already_quantized")
# a quantized model cannot be trained
tessera_cli_test(tessera-train quantize_error.train_init 1 "a quantized model cannot be trained"
  --data "${PROJECT_BINARY_DIR}/synth-output" --init "${quantized}/own-int8"
  --out "${quantized}/trained" --steps 2 --warmup 1 --pairs 4)
set_tests_properties(apps.quantize_error.train_init PROPERTIES
  FIXTURES_REQUIRED "quantized_own_int8;synth_world")
