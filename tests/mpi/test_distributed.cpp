// train/distributed.hpp's Communicator: every collective equals the single-process computation
// bit for bit, on every rank. ctest runs this program three ways (tests/mpi/CMakeLists.txt):
// under `mpirun -np 2`, under `mpirun -np 1` (the MPI world of one equals the single-process
// Communicator), and alone (no launcher: world() is the single process, MPI untouched).
//
// Each rank computes what every rank contributes (the values are a function of the rank), so
// the reference, the rank-order computation of one process, is known everywhere. Tests use
// EXPECT, not ASSERT, around collectives: a rank leaving a test early would skip a collective
// the others are waiting in.

#include <tessera/train/distributed.hpp>

#include "../test_util.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace tessera::test_distributed {

using tessera::test::error_of;

Communicator world() { return Communicator::world(); }

// Rank `rank`'s n values: magnitudes spread over many binades, so the order of additions
// changes the rounding (with three ranks or more) and a reordered sum would show.
template <class Scalar>
std::vector<Scalar> values_of(int rank, std::size_t n, unsigned salt = 0) {
  std::mt19937_64 engine(1000003u * static_cast<unsigned>(rank) + 7919u * salt + 1u);
  std::uniform_real_distribution<double> unit(-1.0, 1.0);
  std::uniform_int_distribution<int> exponent(-20, 20);
  std::vector<Scalar> values(n);
  for (auto& v : values) v = static_cast<Scalar>(std::ldexp(unit(engine), exponent(engine)));
  return values;
}

// Rank `rank`'s rows for all_gather_rows: [rows, columns].
template <class Scalar>
Matrix<Scalar> rows_of(int rank, Index rows, Index columns) {
  const auto flat = values_of<Scalar>(rank, static_cast<std::size_t>(rows * columns), 17);
  Matrix<Scalar> m(rows, columns);
  std::copy(flat.begin(), flat.end(), m.data());
  return m;
}

// The same bits; prints the first mismatches.
template <class Scalar>
::testing::AssertionResult same_bits(std::span<const Scalar> actual,
                                     std::span<const Scalar> expected) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << "sizes differ: " << actual.size() << " vs " << expected.size();
  }
  std::ostringstream report;
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    if (std::memcmp(&actual[i], &expected[i], sizeof(Scalar)) != 0) {
      if (++mismatches <= 5) {
        report << "\n  [" << i << "] " << actual[i] << " vs expected " << expected[i];
      }
    }
  }
  if (mismatches == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << mismatches << " of " << actual.size()
                                       << " values differ in their bits:" << report.str();
}

template <class Scalar>
::testing::AssertionResult same_bits(const std::vector<Scalar>& a, const std::vector<Scalar>& b) {
  return same_bits(std::span<const Scalar>(a), std::span<const Scalar>(b));
}

template <class Scalar>
::testing::AssertionResult same_bits(const Matrix<Scalar>& a, const Matrix<Scalar>& b) {
  if (a.rows() != b.rows() || a.cols() != b.cols()) {
    return ::testing::AssertionFailure() << "shapes differ: [" << a.rows() << ", " << a.cols()
                                         << "] vs [" << b.rows() << ", " << b.cols() << "]";
  }
  return same_bits(std::span<const Scalar>(a.data(), static_cast<std::size_t>(a.size())),
                   std::span<const Scalar>(b.data(), static_cast<std::size_t>(b.size())));
}

// The single-process computation: v_0, then + v_1, + v_2, ... in rank order.
template <class Scalar>
std::vector<Scalar> rank_order_sum(int size, std::size_t n, unsigned salt = 0) {
  std::vector<Scalar> sum = values_of<Scalar>(0, n, salt);
  for (int r = 1; r < size; ++r) {
    const auto v = values_of<Scalar>(r, n, salt);
    for (std::size_t i = 0; i < n; ++i) sum[i] += v[i];
  }
  return sum;
}

// Every rank holds `values` with the same bits as rank 0 (gathered and compared).
template <class Scalar>
::testing::AssertionResult same_on_every_rank(const Communicator& communicator,
                                              const std::vector<Scalar>& values) {
  Matrix<Scalar> mine(1, static_cast<Index>(values.size()));
  std::copy(values.begin(), values.end(), mine.data());
  const auto all = communicator.all_gather_rows(mine);
  for (int r = 1; r < communicator.size(); ++r) {
    Matrix<Scalar> first = all.rows.row(0);
    Matrix<Scalar> theirs = all.rows.row(r);
    auto result = same_bits(theirs, first);
    if (!result) return result << " (rank " << r << " against rank 0)";
  }
  return ::testing::AssertionSuccess();
}

template <class Scalar>
class Collectives : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(Collectives, Scalars);

TEST(Distributed, WorldIsTheLaunchersProcesses) {
  const Communicator communicator = world();
  const char* launched = std::getenv("OMPI_COMM_WORLD_SIZE");
  if (launched != nullptr) {
    EXPECT_TRUE(communicator.uses_mpi());
    EXPECT_EQ(communicator.size(), std::atoi(launched));
    EXPECT_EQ(communicator.rank(), std::atoi(std::getenv("OMPI_COMM_WORLD_RANK")));
  } else {
    // Not started by mpirun: this process alone, and MPI never initialised.
    EXPECT_FALSE(communicator.uses_mpi());
    EXPECT_EQ(communicator.size(), 1);
    EXPECT_EQ(communicator.rank(), 0);
#ifdef TESSERA_HAS_MPI
    int initialized = 1;
    MPI_Initialized(&initialized);
    EXPECT_EQ(initialized, 0);
#endif
  }
  const Communicator single = Communicator::single_process();
  EXPECT_FALSE(single.uses_mpi());
  EXPECT_EQ(single.size(), 1);
  EXPECT_EQ(single.rank(), 0);
}

TEST(Distributed, RankSharesPartitionTheBatchInRankOrder) {
  for (int size : {1, 2, 3, 7}) {
    for (Index total : {0, 1, 2, 5, 6, 7, 100}) {
      Index next = 0;
      for (int rank = 0; rank < size; ++rank) {
        const RankShare share = rank_share(total, rank, size);
        EXPECT_EQ(share.first, next) << "total " << total << ", rank " << rank << " of " << size;
        EXPECT_EQ(share.count, total / size + (rank < total % size ? 1 : 0));
        next += share.count;
      }
      EXPECT_EQ(next, total);
    }
  }
  EXPECT_NE(error_of([] { rank_share(4, 2, 2); }).find("0 <= rank < size"), std::string::npos);
  EXPECT_NE(error_of([] { rank_share(-1, 0, 1); }).find("total -1"), std::string::npos);
  const Communicator communicator = world();
  const RankShare share = communicator.share_of(10);
  EXPECT_EQ(share.first, rank_share(10, communicator.rank(), communicator.size()).first);
}

// Row counts per rank: each case gives rank r's count; a rank may have none.
std::vector<std::vector<Index>> row_count_cases(int size) {
  std::vector<std::vector<Index>> cases;
  std::vector<Index> growing, first_empty, last_empty, all_empty(static_cast<std::size_t>(size), 0);
  for (int r = 0; r < size; ++r) {
    growing.push_back(r + 1);
    first_empty.push_back(r == 0 ? 0 : 3);
    last_empty.push_back(r == size - 1 ? 0 : 2 + r);
  }
  return {growing, first_empty, last_empty, all_empty};
}

TYPED_TEST(Collectives, AllGatherRowsIsTheRankOrderConcatenation) {
  using Scalar = TypeParam;
  const Communicator communicator = world();
  const Index columns = 3;
  for (const auto& counts : row_count_cases(communicator.size())) {
    Matrix<Scalar> expected(0, columns);
    std::vector<Index> offsets{0};
    for (int r = 0; r < communicator.size(); ++r) {
      const Matrix<Scalar> theirs =
          rows_of<Scalar>(r, counts[static_cast<std::size_t>(r)], columns);
      Matrix<Scalar> grown(expected.rows() + theirs.rows(), columns);
      grown << expected, theirs;
      expected = grown;
      offsets.push_back(expected.rows());
    }
    const int me = communicator.rank();
    const auto gathered = communicator.all_gather_rows(
        rows_of<Scalar>(me, counts[static_cast<std::size_t>(me)], columns));
    EXPECT_TRUE(same_bits(gathered.rows, expected))
        << "rows per rank " << ::testing::PrintToString(counts);
    EXPECT_EQ(gathered.offsets, offsets);
  }
}

TYPED_TEST(Collectives, AllReduceSumIsTheRankOrderSumOnEveryRank) {
  using Scalar = TypeParam;
  const Communicator communicator = world();
  // Lengths below the number of ranks (empty chunks), odd ones, and segments of 1, 5 and the
  // default: the rounds change, the bits do not.
  for (std::size_t n : {std::size_t(0), std::size_t(1), std::size_t(7), std::size_t(1000)}) {
    for (Index segment : {Index(1), Index(5), CollectiveOptions{}.segment}) {
      if (segment == 1 && n > 7) continue;  // 1000 rounds: slow under oversubscription
      std::vector<Scalar> values = values_of<Scalar>(communicator.rank(), n);
      communicator.all_reduce_sum(std::span<Scalar>(values), CollectiveOptions{segment});
      EXPECT_TRUE(same_bits(values, rank_order_sum<Scalar>(communicator.size(), n)))
          << n << " values, segment " << segment;
      EXPECT_TRUE(same_on_every_rank(communicator, values)) << n << " values, segment " << segment;
    }
  }
  // With three ranks or more the order shows: the sum in reverse rank order differs in some
  // bits, so the comparisons above would see a sum in another order.
  if (communicator.size() >= 3) {
    const std::size_t n = 1000;
    std::vector<Scalar> reversed = values_of<Scalar>(communicator.size() - 1, n);
    for (int r = communicator.size() - 2; r >= 0; --r) {
      const auto v = values_of<Scalar>(r, n);
      for (std::size_t i = 0; i < n; ++i) reversed[i] += v[i];
    }
    EXPECT_FALSE(same_bits(reversed, rank_order_sum<Scalar>(communicator.size(), n)));
  }
}

TYPED_TEST(Collectives, BroadcastCopiesTheRootsBits) {
  using Scalar = TypeParam;
  const Communicator communicator = world();
  for (int root : {0, communicator.size() - 1}) {
    for (Index segment : {Index(3), CollectiveOptions{}.segment}) {
      std::vector<Scalar> values = values_of<Scalar>(communicator.rank(), 100, 3);
      communicator.broadcast(std::span<Scalar>(values), root, CollectiveOptions{segment});
      EXPECT_TRUE(same_bits(values, values_of<Scalar>(root, 100, 3))) << "root " << root;
    }
  }
}

TYPED_TEST(Collectives, ParametersAreSummedAndBroadcastAsOneBuffer) {
  using Scalar = TypeParam;
  const Communicator communicator = world();
  // Three parameters of different shapes over one rank-dependent storage.
  const std::size_t n = 2 * 3 + 4 + 1;
  auto parameters_over = [](std::vector<Scalar>& storage) {
    return std::vector<Parameter<Scalar>>{{"a", storage.data(), {2, 3}, {}},
                                          {"b", storage.data() + 6, {4}, {}},
                                          {"c", storage.data() + 10, {}, {}}};
  };
  std::vector<Scalar> gradients = values_of<Scalar>(communicator.rank(), n, 5);
  all_reduce_sum_parameters(communicator, parameters_over(gradients));
  EXPECT_TRUE(same_bits(gradients, rank_order_sum<Scalar>(communicator.size(), n, 5)));

  const int root = communicator.size() - 1;
  std::vector<Scalar> weights = values_of<Scalar>(communicator.rank(), n, 6);
  broadcast_parameters(communicator, parameters_over(weights), root);
  EXPECT_TRUE(same_bits(weights, values_of<Scalar>(root, n, 6)));
}

// With one rank, the MPI world and the single-process Communicator give the same bits.
TYPED_TEST(Collectives, SingleProcessEqualsAWorldOfOne) {
  using Scalar = TypeParam;
  const Communicator communicator = world();
  if (communicator.size() != 1) GTEST_SKIP() << "a world of " << communicator.size() << " ranks";
  const Communicator single = Communicator::single_process();
  const Matrix<Scalar> local = rows_of<Scalar>(0, 4, 5);
  const auto a = communicator.all_gather_rows(local);
  const auto b = single.all_gather_rows(local);
  EXPECT_TRUE(same_bits(a.rows, b.rows));
  EXPECT_EQ(a.offsets, b.offsets);
  std::vector<Scalar> x = values_of<Scalar>(0, 50), y = x;
  communicator.all_reduce_sum(std::span<Scalar>(x));
  single.all_reduce_sum(std::span<Scalar>(y));
  EXPECT_TRUE(same_bits(x, y));
  EXPECT_TRUE(same_bits(x, values_of<Scalar>(0, 50)));
  communicator.broadcast(std::span<Scalar>(x));
  single.broadcast(std::span<Scalar>(y));
  EXPECT_TRUE(same_bits(x, y));
  communicator.barrier();
  single.barrier();
}

TEST(Distributed, BroadcastTextOfAnyLength) {
  const Communicator communicator = world();
  const int root = communicator.size() - 1;
  for (std::size_t length : {std::size_t(0), std::size_t(1), std::size_t(100000)}) {
    std::string expected(length, 'x');
    for (std::size_t i = 0; i < length; ++i)
      expected[i] = static_cast<char>('a' + (i * 7 + length) % 26);
    // Other ranks start from text of another length, which must not matter.
    std::string text = communicator.rank() == root ? expected : std::string(5, '?');
    communicator.broadcast(text, root, CollectiveOptions{length > 10 ? Index(4096) : Index(1)});
    EXPECT_EQ(text, expected) << length << " bytes";
  }
}

// Calls that do not match are the same tessera::Error on every rank, and the ranks stay in
// step: the barrier after each case returns.
TEST(Distributed, MismatchedCallsAreAnErrorOnEveryRank) {
  const Communicator communicator = world();
  const int last = communicator.size() - 1;
  const bool several = communicator.size() > 1;
  const bool odd_one = several && communicator.rank() == last;

  if (several) {
    const Matrix<float> rows = rows_of<float>(communicator.rank(), 2, odd_one ? 4 : 3);
    const std::string gather = error_of([&] { communicator.all_gather_rows(rows); });
    EXPECT_NE(gather.find("all_gather_rows: the ranks' arguments do not match: rank 0 passes "
                          "rows 2, columns 3, value bytes 4; rank " +
                          std::to_string(last) + " passes rows 2, columns 4, value bytes 4"),
              std::string::npos)
        << gather;
    communicator.barrier();

    std::vector<double> values(odd_one ? 9 : 8, 1.0);
    const std::string sum =
        error_of([&] { communicator.all_reduce_sum(std::span<double>(values)); });
    EXPECT_NE(sum.find("; rank " + std::to_string(last) + " passes values 9, segment "),
              std::string::npos)
        << sum;
    EXPECT_NE(sum.find("(every rank must pass the same values, segment, value bytes)"),
              std::string::npos)
        << sum;
    communicator.barrier();

    // One rank broadcasts while the others sum.
    const std::string mixed = error_of([&] {
      if (odd_one)
        communicator.broadcast(std::span<double>(values));
      else
        communicator.all_reduce_sum(std::span<double>(values));
    });
    EXPECT_NE(mixed.find("collective calls do not match"), std::string::npos) << mixed;
    EXPECT_NE(mixed.find("broadcast"), std::string::npos) << mixed;
    EXPECT_NE(mixed.find("all_reduce_sum"), std::string::npos) << mixed;
    communicator.barrier();
  }

  std::vector<float> values(3);
  EXPECT_NE(error_of([&] {
              communicator.broadcast(std::span<float>(values), communicator.size());
            }).find("is not a rank"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              communicator.all_reduce_sum(std::span<float>(values), CollectiveOptions{0});
            }).find("segment must be in [1, "),
            std::string::npos);
  communicator.barrier();
}

#ifdef TESSERA_HAS_MPI
TEST(Distributed, MpiErrorsNameTheCall) {
  if (!world().uses_mpi()) GTEST_SKIP() << "MPI is not initialised without a launcher";
  const std::string message =
      error_of([] { detail::check_mpi(MPI_ERR_ROOT, "MPI_Bcast (broadcast)", 1); });
  EXPECT_NE(message.find("MPI_Bcast (broadcast) failed on rank 1: "), std::string::npos) << message;
  EXPECT_NO_THROW(detail::check_mpi(MPI_SUCCESS, "MPI_Bcast", 0));
}
#endif

}  // namespace tessera::test_distributed
