// A run in which one rank fails while the others wait in a collective, for
// tests/mpi/check_failure.cmake: every rank must end, and mpirun exit non-zero, within seconds.
//
//   tessera_mpi_failure kill    the last rank kills itself (SIGKILL) before an all-reduce
//   tessera_mpi_failure throw   the last rank's "data" cannot be read: a tessera::Error,
//                               printed, and main returns 1 (the program's usual error path)
//   tessera_mpi_failure ok      every rank sums and returns 0 (the run ends cleanly)
//
// Rank 0 and the others call all_reduce_sum and would wait forever for the failed rank. An
// alarm ends every process after kWatchdogSeconds whatever happens, so a broken failure path
// fails the test (too slow) but never leaves processes behind.

#include <tessera/train/distributed.hpp>

#include <csignal>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

constexpr unsigned kWatchdogSeconds = 60;

int run(const std::string& mode) {
  const tessera::Communicator communicator = tessera::Communicator::world();
  const bool failing = communicator.rank() == communicator.size() - 1;
  communicator.barrier();  // every rank is up
  if (failing && mode == "kill") {
    std::raise(SIGKILL);
  }
  if (failing && mode == "throw") {
    throw tessera::Error("data.csv line 3: cannot read image 'missing.png' (rank " +
                         std::to_string(communicator.rank()) + ")");
  }
  std::vector<float> values(1000, 1.0f);
  communicator.all_reduce_sum(std::span<float>(values));
  if (values[0] != static_cast<float>(communicator.size())) {
    std::fprintf(stderr, "error: the sum is %g, expected %d\n", values[0], communicator.size());
    return 1;
  }
  std::printf("rank %d of %d: done\n", communicator.rank(), communicator.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  alarm(kWatchdogSeconds);
  if (argc != 2) {
    std::fprintf(stderr, "usage: tessera_mpi_failure kill|throw|ok\n");
    return 2;
  }
  try {
    return run(argv[1]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
