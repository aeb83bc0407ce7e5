#!/bin/sh
# kill_rank.sh RANK SECONDS PROGRAM [ARGS...]: run by mpirun in place of PROGRAM; every rank
# execs PROGRAM ARGS, and rank RANK is killed with SIGKILL SECONDS seconds later (the shell's
# pid is PROGRAM's once it execs). For tests/mpi/train_tests.cmake.
rank=$1
seconds=$2
shift 2
if [ "${OMPI_COMM_WORLD_RANK:-}" = "$rank" ]; then
  (sleep "$seconds" && kill -9 $$) >/dev/null 2>&1 &
fi
exec "$@"
