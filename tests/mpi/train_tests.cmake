# tessera-train under mpirun (label `mpi`), included by apps/CMakeLists.txt once tessera-train
# and the small world of apps.synth are defined, when MPI was found. Each run writes its own
# directory under <build>/mpi-train-output; the ranks run one thread each.
#
#   mpi.train.one / .two          20 steps in one process and under mpirun -np 2: the weights
#   mpi.train.two_equals_one      within 1e-5 relative (tessera_compare_weights: in norm, all
#                                 weights together)
#   mpi.train.stop / .resume      stopped at step 10 on 2 ranks, resumed on 1 (mpirun -np 1):
#   mpi.train.resumed_equals_one  the uninterrupted run's weights within 1e-5
#   mpi.train.kill                rank 1 killed (SIGKILL) mid-run: mpirun exits non-zero
#   mpi.train.killed_checkpoint   within seconds, and the last checkpoint loads
#   mpi.train.too_many_bad_items  bad items counted over the ranks stop every rank
set(mpi_train_out "${PROJECT_BINARY_DIR}/mpi-train-output")
set(mpi_train_args --data "${PROJECT_BINARY_DIR}/synth-output"
  --config "${PROJECT_SOURCE_DIR}/apps/demo_config.json" --steps 20 --pairs 12 --warmup 2
  --checkpoint-every 4 --schedule progressive --lr 1e-4 --min-lr 1e-5)
# At lr 1e-4: rounding differences grow with the steps' sizes, and at the default 1e-3 the
# 20-step runs are 5e-5 apart (measured: as far as one process with --micro-batch 5 is from
# one without, 2.4e-5; docs/training.md, "Many processes"); at 1e-4, 1.5e-6.
set(mpi_train_environment OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1)
tessera_mpirun(mpi_train_two 2)
tessera_mpirun(mpi_train_one 1)

add_test(NAME mpi.train.clean COMMAND "${CMAKE_COMMAND}" -E rm -rf "${mpi_train_out}")
set_tests_properties(mpi.train.clean PROPERTIES LABELS mpi FIXTURES_SETUP mpi_train_clean)

add_test(NAME mpi.train.one COMMAND tessera-train ${mpi_train_args} --out "${mpi_train_out}/one")
add_test(NAME mpi.train.two
  COMMAND ${mpi_train_two} $<TARGET_FILE:tessera-train> ${mpi_train_args} --out "${mpi_train_out}/two")
add_test(NAME mpi.train.two_equals_one
  COMMAND tessera_compare_weights "${mpi_train_out}/two/model.safetensors"
    "${mpi_train_out}/one/model.safetensors" 1e-5)
set(mpi_train_needs "synth_world;mpi_train_clean")
set_tests_properties(mpi.train.one PROPERTIES FIXTURES_REQUIRED "${mpi_train_needs}" FIXTURES_SETUP mpi_train_one
  PASS_REGULAR_EXPRESSION "ranks: 1 .*wrote .*. 20 steps")
set_tests_properties(mpi.train.two PROPERTIES FIXTURES_REQUIRED "${mpi_train_needs}" FIXTURES_SETUP mpi_train_two
  PASS_REGULAR_EXPRESSION "ranks: 2 .*text -> image +[0-9.]+%.*wrote .*. 20 steps")
set_tests_properties(mpi.train.two_equals_one PROPERTIES
  FIXTURES_REQUIRED "mpi_train_one;mpi_train_two" PASS_REGULAR_EXPRESSION "equal within the tolerance")

# --resume on another number of ranks: the global batch (--pairs) is what must match
add_test(NAME mpi.train.stop
  COMMAND ${mpi_train_two} $<TARGET_FILE:tessera-train> ${mpi_train_args} --out "${mpi_train_out}/resumed"
    --stop-at 10)
add_test(NAME mpi.train.resume
  COMMAND ${mpi_train_one} $<TARGET_FILE:tessera-train> ${mpi_train_args} --out "${mpi_train_out}/resumed"
    --resume)
add_test(NAME mpi.train.resumed_equals_one
  COMMAND tessera_compare_weights "${mpi_train_out}/resumed/model.safetensors"
    "${mpi_train_out}/one/model.safetensors" 1e-5)
set_tests_properties(mpi.train.stop PROPERTIES FIXTURES_REQUIRED "${mpi_train_needs}" FIXTURES_SETUP mpi_train_stopped
  PASS_REGULAR_EXPRESSION "stopped after step 10 of 20")
set_tests_properties(mpi.train.resume PROPERTIES
  FIXTURES_REQUIRED mpi_train_stopped FIXTURES_SETUP mpi_train_resumed
  PASS_REGULAR_EXPRESSION "ranks: 1 .*resumed at step 10 of 20.*wrote .*. 10 steps")
set_tests_properties(mpi.train.resumed_equals_one PROPERTIES
  FIXTURES_REQUIRED "mpi_train_one;mpi_train_resumed" PASS_REGULAR_EXPRESSION "equal within the tolerance")

# Rank 1 killed 5 s into a long run (kill_rank.sh): mpirun notices and ends rank 0; rank 0's
# last checkpoint, written atomically every 2 steps, still loads.
add_test(NAME mpi.train.kill
  COMMAND "${CMAKE_COMMAND}" -DLIMIT=40 "-DEXPECT_STDERR=rank 1 .*signal 9"
    "-DCOMMAND=${mpi_train_two};/bin/sh;${CMAKE_CURRENT_LIST_DIR}/kill_rank.sh;1;5;$<TARGET_FILE:tessera-train>;${mpi_train_args};--steps;1000;--checkpoint-every;2;--out;${mpi_train_out}/killed"
    -P "${CMAKE_CURRENT_LIST_DIR}/check_train_failure.cmake")
add_test(NAME mpi.train.killed_checkpoint
  COMMAND tessera_compare_weights --checkpoint "${mpi_train_out}/killed")
set_tests_properties(mpi.train.kill PROPERTIES FIXTURES_REQUIRED "${mpi_train_needs}"
  FIXTURES_SETUP mpi_train_killed TIMEOUT 90)
set_tests_properties(mpi.train.killed_checkpoint PROPERTIES FIXTURES_REQUIRED mpi_train_killed
  PASS_REGULAR_EXPRESSION "a checkpoint at step [1-9][0-9]* that loads")

# A third of own-bad.csv's images are missing: each rank names its bad items, the fraction is
# counted over both ranks, and past --max-bad-fraction every rank stops with the same error.
add_test(NAME mpi.train.too_many_bad_items
  COMMAND "${CMAKE_COMMAND}" -DLIMIT=60 "-DEXPECT_STDERR=rank [01] of 2: step [0-9]+ of 12: Loader: [0-9]+ of [0-9]+ items are bad .*over the 2 ranks"
    "-DCOMMAND=${mpi_train_two};$<TARGET_FILE:tessera-train>;--manifest;${own_bad_csv};${manifest_args};--steps;12;--out;${mpi_train_out}/too-many-bad"
    -P "${CMAKE_CURRENT_LIST_DIR}/check_train_failure.cmake")
set_tests_properties(mpi.train.too_many_bad_items PROPERTIES FIXTURES_REQUIRED "own_csv;mpi_train_clean")

set_tests_properties(mpi.train.one mpi.train.two mpi.train.two_equals_one mpi.train.stop
  mpi.train.resume mpi.train.resumed_equals_one mpi.train.kill mpi.train.killed_checkpoint
  mpi.train.too_many_bad_items
  PROPERTIES LABELS mpi ENVIRONMENT "${mpi_train_environment}")
