#pragma once
// Data parallelism across processes: a Communicator (this process's rank among `size` ranks)
// and the collectives a distributed training step needs. Every collective is deterministic:
// its result is a fixed function of the ranks' inputs in rank order, the same bits on every
// rank, whatever the timing.
//
//   all_gather_rows(local [n_r, C]) -> [sum_r n_r, C]  rank 0's rows, then rank 1's, ...
//                                                       (n_r may differ, and may be 0)
//   all_reduce_sum(values [n])      values <- v_0 + v_1 + ... + v_{P-1}, added in rank order
//   broadcast(values [n], root)     values <- root's values (bits copied)
//   barrier()                       returns once every rank has entered it
//
// all_reduce_sum does not use MPI_Allreduce, whose order of additions is the implementation's
// choice (it may change with the message size, the algorithm chosen or the number of ranks
// per node). It is a reduce-scatter and an all-gather written out:
//   1. the buffer is cut into P contiguous chunks; rank r owns chunk r (MPI_Alltoallv sends
//      each rank's copy of chunk r to rank r);
//   2. rank r adds the P copies of its chunk in rank order, ((v_0 + v_1) + v_2) + ...;
//   3. MPI_Allgatherv copies every summed chunk to every rank.
// Each element is added by one rank in one fixed order and then copied, so every rank holds
// the same bits, and the sum equals the single-process loop over ranks. Each rank sends and
// receives 2(P-1)/P of the buffer, as a ring all-reduce does (bandwidth-optimal), where
// gathering all buffers and adding them everywhere would move (P-1) buffers per rank.
//
// Agreement: every collective begins by all-gathering a small header (which collective, the
// sizes, the root) from every rank, so every rank sees every rank's call. Calls that do not
// match (a different collective, a different length or column count, another root) are the
// same tessera::Error on every rank, instead of a hang or silently mixed data. The header
// costs one small all-gather (P*32 bytes) per collective.
//
// Failures (docs/training.md, "Many processes"): MPI errors are returned, not fatal
// (MPI_ERRORS_RETURN), and become a tessera::Error naming the call. A rank that ends with a
// non-zero exit status (an error printed by the program, exit(1), a return of 1 from main)
// calls MPI_Abort from its exit handler instead of MPI_Finalize: the other ranks may be
// waiting for it in a collective, and MPI_Finalize would wait for them in turn. mpirun then
// ends every rank. A rank killed by a signal is noticed by mpirun, which ends the others.
// Either way mpirun exits non-zero within seconds (tested by tests/mpi/).
//
// Threads: MPI is initialised with MPI_THREAD_FUNNELED; call the collectives from the thread
// that created the first MPI Communicator (the main thread), between tessera's parallel loops.

#include <tessera/core/error.hpp>
#include <tessera/core/parameter.hpp>
#include <tessera/core/tensor.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#ifdef TESSERA_HAS_MPI
#include <mpi.h>
#endif

namespace tessera {

// The rows [first, first + count) of a global batch of `total` rows that rank `rank` of
// `size` takes: contiguous shares in rank order, their sizes differing by at most one (the
// first total % size ranks take one more). A share may be empty (total < size).
struct RankShare {
  Index first = 0;
  Index count = 0;
};

inline RankShare rank_share(Index total, int rank, int size) {
  check(total >= 0 && size >= 1 && rank >= 0 && rank < size, "rank_share: expected total >= 0 ",
        "and 0 <= rank < size, got total ", total, ", rank ", rank, ", size ", size);
  const Index base = total / size;
  const Index extra = total % size;
  const Index r = rank;
  return {r * base + std::min(r, extra), base + (r < extra ? 1 : 0)};
}

// The rows every rank contributed to all_gather_rows, in rank order.
template <class Scalar>
struct GatheredRows {
  Matrix<Scalar> rows;         // [sum_r n_r, C]  rank 0's rows first
  std::vector<Index> offsets;  // [P + 1]  rank r's rows are [offsets[r], offsets[r + 1])
};

// Sizes of the collectives' rounds.
struct CollectiveOptions {
  // all_reduce_sum and broadcast move at most this many elements per round (MPI call): 2^24,
  // so all_reduce_sum's receive buffer stays at 64 MiB of float (128 MiB of double) however
  // large the gradients, and every MPI count fits MPI's int. Any value >= 1 gives the same
  // result bits (each element is still added in rank order); only the number of rounds changes.
  Index segment = Index(1) << 24;
};

namespace detail {

// The collectives, as named in errors and checked by the agreement header.
enum class Collective : std::int64_t {
  all_gather_rows = 1,
  all_reduce_sum,
  broadcast,
  broadcast_text,
  barrier
};

inline const char* collective_name(std::int64_t op) {
  switch (static_cast<Collective>(op)) {
    case Collective::all_gather_rows:
      return "all_gather_rows";
    case Collective::all_reduce_sum:
      return "all_reduce_sum";
    case Collective::broadcast:
      return "broadcast";
    case Collective::broadcast_text:
      return "broadcast (text)";
    case Collective::barrier:
      return "barrier";
  }
  return "an unknown collective";
}

// Every rank's header of one collective call: [P][4] = {collective, a, b, c}.
using Headers = std::vector<std::array<std::int64_t, 4>>;

// The launcher's number of processes when this process was started by an MPI launcher
// (mpirun/mpiexec of Open MPI, MPICH's Hydra, PMIx), or 0.
inline int launched_ranks() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}) {
    if (const char* value = std::getenv(name)) return std::max(1, std::atoi(value));
  }
  if (std::getenv("PMIX_RANK") != nullptr) return 1;  // PMIx without a size: at least one rank
  return 0;
}

#ifdef TESSERA_HAS_MPI

// MPI's communicator for tessera: a duplicate of MPI_COMM_WORLD (so tessera's collectives
// never match a message of the program's own), with errors returned.
struct MpiWorld {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0;
  int size = 1;
  bool funneled = true;  // only the main thread may call MPI
};

inline MpiWorld& mpi_world_state() {
  static MpiWorld world;
  return world;
}

// At exit: MPI_Finalize after a zero exit status; MPI_Abort after any other, since the other
// ranks may wait for this one in a collective and MPI_Finalize would then wait for them. One
// rank alone needs no abort.
inline void mpi_exit(int status, void*) {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  const MpiWorld& world = mpi_world_state();
  if (status != 0 && world.size > 1) MPI_Abort(MPI_COMM_WORLD, status);
  MPI_Finalize();
}

// rank: this process's rank, or -1 before it is known.
[[noreturn]] inline void mpi_failed(int code, const char* call, int rank) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
  fail("tessera distributed: ", call, " failed",
       rank >= 0 ? " on rank " + std::to_string(rank) : std::string(), ": ",
       length > 0 ? std::string(text, static_cast<std::size_t>(length))
                  : "MPI error " + std::to_string(code),
       " (another rank may have ended; this rank stops too)");
}

inline void check_mpi(int code, const char* call, int rank) {
  if (code != MPI_SUCCESS) mpi_failed(code, call, rank);
}

// Initialises MPI once (MPI_THREAD_FUNNELED) unless the program already did, and the
// communicator tessera uses. Every rank must call it (it duplicates MPI_COMM_WORLD).
inline const MpiWorld& mpi_world() {
  static const bool ready = [] {
    int finalized = 0;
    MPI_Finalized(&finalized);
    check(!finalized,
          "tessera distributed: MPI was already finalised by the program; create "
          "the Communicator before MPI_Finalize");
    int initialized = 0;
    MPI_Initialized(&initialized);
    int provided = MPI_THREAD_SINGLE;
    if (!initialized) {
      const int code = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
      check(code == MPI_SUCCESS, "tessera distributed: MPI_Init_thread failed (error ", code, ")");
#if defined(__GLIBC__)
      on_exit(&mpi_exit, nullptr);  // sees the exit status, which std::atexit does not
#else
      std::atexit([] { mpi_exit(0, nullptr); });
#endif
    } else {
      MPI_Query_thread(&provided);
    }
    check(provided >= MPI_THREAD_FUNNELED, "tessera distributed: MPI gives thread level ", provided,
          ", below MPI_THREAD_FUNNELED (", MPI_THREAD_FUNNELED,
          "): tessera's threads would not be safe beside MPI");
    MpiWorld& world = mpi_world_state();
    check_mpi(MPI_Comm_dup(MPI_COMM_WORLD, &world.comm), "MPI_Comm_dup", -1);
    check_mpi(MPI_Comm_set_errhandler(world.comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler",
              -1);
    check_mpi(MPI_Comm_rank(world.comm, &world.rank), "MPI_Comm_rank", -1);
    check_mpi(MPI_Comm_size(world.comm, &world.size), "MPI_Comm_size", world.rank);
    world.funneled = provided < MPI_THREAD_MULTIPLE;
    return true;
  }();
  (void)ready;
  return mpi_world_state();
}

template <class T>
MPI_Datatype mpi_type() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> ||
                    std::is_same_v<T, std::int64_t> || std::is_same_v<T, char>,
                "tessera distributed: float, double, int64 or char only");
  if constexpr (std::is_same_v<T, float>) return MPI_FLOAT;
  if constexpr (std::is_same_v<T, double>) return MPI_DOUBLE;
  if constexpr (std::is_same_v<T, std::int64_t>) return MPI_INT64_T;
  if constexpr (std::is_same_v<T, char>) return MPI_CHAR;
}

#endif  // TESSERA_HAS_MPI

}  // namespace detail

// The Communicator's code differs with and without TESSERA_HAS_MPI. An inline namespace per
// build keeps a program that mixes both kinds of translation unit from silently calling one
// kind's code with the other's objects (a link error instead).
#ifdef TESSERA_HAS_MPI
inline namespace distributed_mpi {
#else
inline namespace distributed_single {
#endif

// One process of a data-parallel run, and the collectives over all of them.
//
// Communicator::world() is every process of the run: MPI_COMM_WORLD when the program was
// started by an MPI launcher (mpirun -np N) in a build with MPI, else this process alone.
// Communicator::single_process() is always this process alone (rank 0 of 1), with no MPI:
// its collectives are the identity (all_gather_rows copies, all_reduce_sum and broadcast leave
// the values as they are), the same results the MPI ones give with one rank.
//
// A Communicator is a small value; copies share the one MPI communicator. Every collective
// must be called by every rank, in the same order, with matching arguments (else the same
// tessera::Error on every rank, see the file's comment).
class Communicator {
 public:
  // This process alone: rank 0 of 1, no MPI.
  static Communicator single_process() { return Communicator(0, 1, false); }

  // Every process of the run (see the class comment). Without MPI in the build but started
  // as one of several processes by an MPI launcher, each process would train alone and write
  // the same files: that is a tessera::Error.
  static Communicator world() {
#ifdef TESSERA_HAS_MPI
    if (detail::launched_ranks() > 0) return mpi();
#else
    const int launched = detail::launched_ranks();
    check(launched <= 1, "tessera distributed: this program was started as one of ", launched,
          " processes by an MPI launcher, but tessera was built without MPI (TESSERA_HAS_MPI): "
          "each process would train alone. Install libopenmpi-dev, reconfigure and link "
          "tessera::mpi (docs/training.md)");
#endif
    return single_process();
  }

#ifdef TESSERA_HAS_MPI
  // MPI_COMM_WORLD, initialising MPI on first use (MPI_THREAD_FUNNELED; finalised at exit).
  // A program not started by a launcher is then a world of one (an MPI singleton).
  static Communicator mpi() {
    const detail::MpiWorld& world = detail::mpi_world();
    return Communicator(world.rank, world.size, true);
  }
#endif

  int rank() const { return rank_; }  // 0 <= rank() < size()
  int size() const { return size_; }  // the number of ranks P
  bool uses_mpi() const { return mpi_; }

  // This rank's rows of a global batch of `total` rows (rank_share).
  RankShare share_of(Index total) const { return rank_share(total, rank_, size_); }

  // Every rank's rows, in rank order.
  // requires: every rank passes the same column count C (any row count, 0 included)
  // ensures: result.rows is [sum_r n_r, C], rank r's local rows at [offsets[r], offsets[r+1]),
  //          the same bits on every rank
  template <class Scalar>
  GatheredRows<Scalar> all_gather_rows(const Matrix<Scalar>& local /* [n_r, C] */) const {
    GatheredRows<Scalar> out;
    if (!mpi_) {
      out.rows = local;
      out.offsets = {0, local.rows()};
      return out;
    }
#ifdef TESSERA_HAS_MPI
    const detail::Headers headers =
        agree(detail::Collective::all_gather_rows, {{{"rows", local.rows(), false},
                                                     {"columns", local.cols(), true},
                                                     {"value bytes", sizeof(Scalar), true}}});
    out.offsets.assign(static_cast<std::size_t>(size_) + 1, 0);
    for (std::size_t r = 0; r < headers.size(); ++r)
      out.offsets[r + 1] = out.offsets[r] + headers[r][1];
    const Index total_rows = out.offsets.back();
    const Index columns = local.cols();
    // MPI_Allgatherv counts and displaces in int: the whole result must fit.
    check(columns == 0 || total_rows <= std::numeric_limits<int>::max() / columns,
          "tessera distributed: all_gather_rows: ", total_rows, " rows of ", columns,
          " columns exceed MPI's limit of ", std::numeric_limits<int>::max(),
          " elements per all-gather (MPI counts are int)");
    out.rows.resize(total_rows, columns);
    std::vector<int> counts(static_cast<std::size_t>(size_));
    std::vector<int> displacements(static_cast<std::size_t>(size_));
    for (int r = 0; r < size_; ++r) {
      const auto i = static_cast<std::size_t>(r);
      counts[i] = static_cast<int>((out.offsets[i + 1] - out.offsets[i]) * columns);
      displacements[i] = static_cast<int>(out.offsets[i] * columns);
    }
    Scalar unused{};  // a valid address for an empty buffer
    detail::check_mpi(
        MPI_Allgatherv(local.size() > 0 ? local.data() : &unused, static_cast<int>(local.size()),
                       detail::mpi_type<Scalar>(), out.rows.size() > 0 ? out.rows.data() : &unused,
                       counts.data(), displacements.data(), detail::mpi_type<Scalar>(), comm()),
        "MPI_Allgatherv (all_gather_rows)", rank_);
#endif
    return out;
  }

  // values <- the sum over ranks of every rank's values, added in rank order:
  //   ((v_0 + v_1) + v_2) + ... + v_{P-1}   (rank 0's value itself when P = 1)
  // requires: every rank passes the same length and the same options
  // ensures: the same bits on every rank, whatever the timing (see the file's comment)
  template <class Scalar>
  void all_reduce_sum([[maybe_unused]] std::span<Scalar> values /* [n] */,
                      CollectiveOptions options = {}) const {
    check_segment(options, "all_reduce_sum");
    if (!mpi_) return;
#ifdef TESSERA_HAS_MPI
    const auto n = static_cast<std::int64_t>(values.size());
    agree(detail::Collective::all_reduce_sum, {{{"values", n, true},
                                                {"segment", options.segment, true},
                                                {"value bytes", sizeof(Scalar), true}}});
    if (size_ == 1) return;
    const auto p = static_cast<std::size_t>(size_);
    const auto me = static_cast<std::size_t>(rank_);
    const MPI_Datatype type = detail::mpi_type<Scalar>();
    std::vector<int> counts(p), starts(p), own_counts(p), own_starts(p);
    std::vector<Scalar> received;  // [P, own chunk]  every rank's copy of this rank's chunk
    std::vector<Scalar> sum;       // [own chunk]
    Scalar unused{};
    for (Index begin = 0; begin < n; begin += options.segment) {
      const Index length = std::min<Index>(options.segment, n - begin);
      // Chunk r of this segment: [r*length/P, (r+1)*length/P), owned by rank r.
      for (std::size_t r = 0; r < p; ++r) {
        const Index first = length * static_cast<Index>(r) / size_;
        const Index last = length * static_cast<Index>(r + 1) / size_;
        starts[r] = static_cast<int>(first);
        counts[r] = static_cast<int>(last - first);
      }
      const int own = counts[me];
      for (std::size_t r = 0; r < p; ++r) {
        own_counts[r] = own;
        own_starts[r] = static_cast<int>(r) * own;
      }
      received.resize(p * static_cast<std::size_t>(own));
      Scalar* segment = values.data() + begin;
      detail::check_mpi(MPI_Alltoallv(segment, counts.data(), starts.data(), type,
                                      received.empty() ? &unused : received.data(),
                                      own_counts.data(), own_starts.data(), type, comm()),
                        "MPI_Alltoallv (all_reduce_sum)", rank_);
      // Rank order, one element at a time: ((v_0 + v_1) + v_2) + ...
      sum.assign(received.begin(), received.begin() + own);
      for (std::size_t r = 1; r < p; ++r) {
        const Scalar* copy = received.data() + r * static_cast<std::size_t>(own);
        for (int i = 0; i < own; ++i) sum[static_cast<std::size_t>(i)] += copy[i];
      }
      detail::check_mpi(MPI_Allgatherv(sum.empty() ? &unused : sum.data(), own, type, segment,
                                       counts.data(), starts.data(), type, comm()),
                        "MPI_Allgatherv (all_reduce_sum)", rank_);
    }
#endif
  }

  // values <- root's values, on every rank.
  // requires: 0 <= root < size(); every rank passes the same length and root
  template <class Scalar>
  void broadcast([[maybe_unused]] std::span<Scalar> values /* [n] */, int root = 0,
                 CollectiveOptions options = {}) const {
    check_root(root, "broadcast");
    check_segment(options, "broadcast");
    if (!mpi_) return;
#ifdef TESSERA_HAS_MPI
    const auto n = static_cast<std::int64_t>(values.size());
    agree(detail::Collective::broadcast,
          {{{"values", n, true}, {"root", root, true}, {"value bytes", sizeof(Scalar), true}}});
    bcast(values.data(), n, root, options.segment, "MPI_Bcast (broadcast)");
#endif
  }

  // text <- root's text, on every rank (its length need not be known elsewhere): a resume
  // state, a config, a whole file's bytes.
  // requires: 0 <= root < size(); every rank passes the same root
  void broadcast([[maybe_unused]] std::string& text, int root = 0,
                 CollectiveOptions options = {}) const {
    check_root(root, "broadcast");
    check_segment(options, "broadcast");
    if (!mpi_) return;
#ifdef TESSERA_HAS_MPI
    const auto mine = rank_ == root ? static_cast<std::int64_t>(text.size()) : -1;
    const detail::Headers headers =
        agree(detail::Collective::broadcast_text,
              {{{"bytes at the root", mine, false}, {"root", root, true}, {"unused", 0, true}}});
    text.resize(static_cast<std::size_t>(headers[static_cast<std::size_t>(root)][1]));
    bcast(text.data(), static_cast<std::int64_t>(text.size()), root, options.segment,
          "MPI_Bcast (broadcast text)");
#endif
  }

  // Returns once every rank has called it.
  void barrier() const {
    if (!mpi_) return;
#ifdef TESSERA_HAS_MPI
    // An all-gather: no rank leaves before every rank has come.
    agree(detail::Collective::barrier,
          {{{"unused", 0, true}, {"unused", 0, true}, {"unused", 0, true}}});
#endif
  }

  // Ends every rank now with exit status `code` (MPI_Abort; std::exit for a single process).
  // A program need not call it after an error: a non-zero exit status of any rank aborts the
  // run (see the file's comment).
  [[noreturn]] void abort(int code) const {
#ifdef TESSERA_HAS_MPI
    if (mpi_) MPI_Abort(MPI_COMM_WORLD, code);  // does not return
#endif
    std::exit(code);
  }

 private:
  Communicator(int rank, int size, bool mpi) : rank_(rank), size_(size), mpi_(mpi) {}

  static void check_segment(const CollectiveOptions& options, const char* what) {
    check(options.segment >= 1 && options.segment <= std::numeric_limits<int>::max(),
          "tessera distributed: ", what, ": CollectiveOptions::segment must be in [1, ",
          std::numeric_limits<int>::max(), "] (MPI counts are int), got ", options.segment);
  }

  void check_root(int root, const char* what) const {
    check(root >= 0 && root < size_, "tessera distributed: ", what, ": root ", root,
          " is not a rank (0 <= root < ", size_, ")");
  }

#ifdef TESSERA_HAS_MPI
  static MPI_Comm comm() { return detail::mpi_world_state().comm; }

  // One argument of a collective in the agreement header.
  struct Argument {
    const char* name;
    std::int64_t value;
    bool must_match;  // the same on every rank
  };

  // All-gathers every rank's header {collective, arguments}. A rank calling another collective,
  // or passing another value of an argument that must match, is the same tessera::Error on
  // every rank (each compares every rank with rank 0).
  detail::Headers agree(detail::Collective collective,
                        const std::array<Argument, 3>& arguments) const {
    if (detail::mpi_world_state().funneled) {
      int main_thread = 0;
      MPI_Is_thread_main(&main_thread);
      check(main_thread != 0,
            "tessera distributed: ", detail::collective_name(std::int64_t(collective)),
            " called from a thread other than the one that initialised MPI "
            "(MPI_THREAD_FUNNELED): call collectives from the main thread");
    }
    const std::array<std::int64_t, 4> mine{static_cast<std::int64_t>(collective),
                                           arguments[0].value, arguments[1].value,
                                           arguments[2].value};
    detail::Headers all(static_cast<std::size_t>(size_));
    detail::check_mpi(
        MPI_Allgather(mine.data(), 4, MPI_INT64_T, all.data(), 4, MPI_INT64_T, comm()),
        "MPI_Allgather (the agreement header)", rank_);
    const auto& first = all.front();
    for (int r = 1; r < size_; ++r) {
      const auto& theirs = all[static_cast<std::size_t>(r)];
      check(theirs[0] == first[0], "tessera distributed: the ranks' collective calls do not ",
            "match: rank 0 calls ", detail::collective_name(first[0]), ", rank ", r, " calls ",
            detail::collective_name(theirs[0]),
            " (every rank must make the same collective calls in the same order)");
      bool match = true;
      for (std::size_t i = 0; i < 3; ++i)
        match &= !arguments[i].must_match || theirs[i + 1] == first[i + 1];
      if (match) continue;
      auto describe = [&](const std::array<std::int64_t, 4>& header) {
        std::string text;
        for (std::size_t i = 0; i < 3; ++i) {
          if (std::string(arguments[i].name) == "unused") continue;
          text += (text.empty() ? "" : ", ") + std::string(arguments[i].name) + " " +
                  std::to_string(header[i + 1]);
        }
        return text;
      };
      std::string matching;
      for (const auto& argument : arguments) {
        if (argument.must_match && std::string(argument.name) != "unused") {
          matching += (matching.empty() ? "" : ", ") + std::string(argument.name);
        }
      }
      fail("tessera distributed: ", detail::collective_name(first[0]),
           ": the ranks' arguments do not match: rank 0 passes ", describe(first), "; rank ", r,
           " passes ", describe(theirs), " (every rank must pass the same ", matching, ")");
    }
    return all;
  }

  template <class T>
  void bcast(T* data, std::int64_t n, int root, Index segment, const char* call) const {
    for (std::int64_t begin = 0; begin < n; begin += segment) {
      const auto length = static_cast<int>(std::min<std::int64_t>(segment, n - begin));
      detail::check_mpi(MPI_Bcast(data + begin, length, detail::mpi_type<T>(), root, comm()), call,
                        rank_);
    }
  }
#endif

  int rank_ = 0;
  int size_ = 1;
  bool mpi_ = false;
};

// Parameters (a model's weights or a gradient model's gradients, in parameters() order) as
// one flat buffer, and back: the collectives below move all of them in one call.
template <class Scalar>
std::vector<Scalar> pack_parameters(const std::vector<Parameter<Scalar>>& parameters) {
  std::size_t total = 0;
  for (const auto& p : parameters) total += static_cast<std::size_t>(p.size());
  std::vector<Scalar> flat;
  flat.reserve(total);
  for (const auto& p : parameters) flat.insert(flat.end(), p.data, p.data + p.size());
  return flat;
}

template <class Scalar>
void unpack_parameters(std::span<const Scalar> flat,
                       const std::vector<Parameter<Scalar>>& parameters) {
  std::size_t at = 0;
  for (const auto& p : parameters) {
    const auto n = static_cast<std::size_t>(p.size());
    TESSERA_ASSERT(at + n <= flat.size());
    std::copy(flat.begin() + static_cast<std::ptrdiff_t>(at),
              flat.begin() + static_cast<std::ptrdiff_t>(at + n), p.data);
    at += n;
  }
  TESSERA_ASSERT(at == flat.size());
}

// Every parameter <- its sum over ranks, added in rank order (all_reduce_sum), e.g. the
// gradients of a step: all_reduce_sum_parameters(communicator, grads.parameters()).
// requires: every rank passes the same parameters (the same model) in the same order
template <class Scalar>
void all_reduce_sum_parameters(const Communicator& communicator,
                               const std::vector<Parameter<Scalar>>& parameters,
                               CollectiveOptions options = {}) {
  if (communicator.size() == 1) return;
  std::vector<Scalar> flat = pack_parameters(parameters);
  communicator.all_reduce_sum(std::span<Scalar>(flat), options);
  unpack_parameters(std::span<const Scalar>(flat), parameters);
}

// Every parameter <- root's (the initial weights, or the weights of a resumed run).
// requires: every rank passes the same parameters in the same order
template <class Scalar>
void broadcast_parameters(const Communicator& communicator,
                          const std::vector<Parameter<Scalar>>& parameters, int root = 0,
                          CollectiveOptions options = {}) {
  if (communicator.size() == 1) {
    communicator.broadcast(std::span<Scalar>(), root, options);  // checks the root
    return;
  }
  std::vector<Scalar> flat = pack_parameters(parameters);
  communicator.broadcast(std::span<Scalar>(flat), root, options);
  unpack_parameters(std::span<const Scalar>(flat), parameters);
}

}  // inline namespace distributed_mpi / distributed_single

}  // namespace tessera
