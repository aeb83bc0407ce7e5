// Tests of include/tessera/core/: error.hpp, parallel.hpp, tensor.hpp, warning.hpp; and of
// io/read_file.hpp, the one whole-file reader every file format goes through.

// The tessera::tessera target defines this for every consumer (CMakeLists.txt); checked before
// any header, since core/tensor.hpp defines it too.
#ifndef EIGEN_DONT_PARALLELIZE
#error "tessera::tessera should define EIGEN_DONT_PARALLELIZE"
#endif

#include <tessera/core/error.hpp>
#include <tessera/core/modality.hpp>
#include <tessera/core/parallel.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/core/warning.hpp>
#include <tessera/io/atomic_file.hpp>
#include <tessera/io/read_file.hpp>

#include "test_util.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace test_core {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// The message of the tessera::Error that `action` throws; fails the test if it throws
// nothing or something else.
template <class Action>
std::string error_message(Action action) {
  try {
    action();
  } catch (const tessera::Error& e) {
    return e.what();
  } catch (...) {
    ADD_FAILURE() << "threw something other than tessera::Error";
    return {};
  }
  ADD_FAILURE() << "threw nothing";
  return {};
}

TEST(Error, IsARuntimeError) {
  static_assert(std::is_base_of_v<std::runtime_error, tessera::Error>);
  const tessera::Error error("bad shape");
  EXPECT_STREQ(error.what(), "bad shape");
}

TEST(Error, FailThrowsTheConcatenatedMessage) {
  const std::string message = error_message([] {
    tessera::fail("tensor ", "blocks.0.attn.qkv.weight", ": expected [", 768, ", ", 256, "]");
  });
  EXPECT_EQ(message, "tensor blocks.0.attn.qkv.weight: expected [768, 256]");
}

TEST(Error, CheckThrowsOnlyWhenTheConditionIsFalse) {
  EXPECT_NO_THROW(tessera::check(true, "never thrown"));
  const tessera::Index rows = 3;
  EXPECT_EQ(error_message([&] { tessera::check(rows == 4, "rows: expected 4, got ", rows); }),
            "rows: expected 4, got 3");
}

#ifndef TESSERA_NO_ASSERT
TEST(Error, AssertThrowsNamingTheConditionAndPlace) {
  EXPECT_NO_THROW(TESSERA_ASSERT(1 + 1 == 2));
  const int heads = 3;
  const std::string message = error_message([&] { TESSERA_ASSERT(heads % 2 == 0); });
  EXPECT_THAT(message, StartsWith("tessera internal error: assertion `heads % 2 == 0` failed at "));
  EXPECT_THAT(message, HasSubstr("test_core.cpp:"));
}
#endif

TEST(Parallel, SetNumThreadsIsHonouredWhenOpenMPIsOn) {
  const int before = tessera::num_threads();
  ASSERT_GE(before, 1);
  tessera::set_num_threads(1);
  EXPECT_EQ(tessera::num_threads(), 1);
  tessera::set_num_threads(0);  // clamped to 1
  EXPECT_EQ(tessera::num_threads(), 1);
#ifdef _OPENMP
  tessera::set_num_threads(2);
  EXPECT_EQ(tessera::num_threads(), 2);
#endif
  tessera::set_num_threads(before);
  EXPECT_EQ(tessera::num_threads(), before);
}

TEST(Parallel, EigenDoesNotThreadProducts) { EXPECT_EQ(Eigen::nbThreads(), 1); }

TEST(Tensor, MatricesAreRowMajorLikePyTorch) {
  static_assert(tessera::Matrix<float>::IsRowMajor);
  static_assert(tessera::Matrix<double>::IsRowMajor);
  tessera::Matrix<float> m(2, 3);  // [2, 3]
  m << 0, 1, 2, 3, 4, 5;
  EXPECT_EQ(m.data()[3], 3.0f);  // element (1, 0) follows row 0 in memory
}

TEST(Tensor, ModalityNamesFollowTheTokenOrder) {
  EXPECT_EQ(tessera::num_modalities, 4);
  EXPECT_STREQ(tessera::modality_name(tessera::Modality::text), "text");
  EXPECT_STREQ(tessera::modality_name(tessera::Modality::image), "image");
  EXPECT_STREQ(tessera::modality_name(tessera::Modality::audio), "audio");
  EXPECT_STREQ(tessera::modality_name(tessera::Modality::video), "video");
}

TEST(ReadFile, ReadsEveryByteIntoAStringOrAByteVector) {
  const tessera::test::TempDir dir;
  std::string content("a\0b\r\n\xFF", 6);
  content += std::string(200000, 'x');  // more than one read step (64 KiB)
  {
    std::ofstream out(dir / "f.bin", std::ios::binary);
    out << content;
  }
  EXPECT_EQ(tessera::read_file(dir / "f.bin"), content);
  const auto bytes = tessera::read_file<std::vector<std::uint8_t>>(dir / "f.bin");
  EXPECT_EQ(std::string(bytes.begin(), bytes.end()), content);
  EXPECT_EQ(tessera::read_file<std::vector<std::byte>>(dir / "f.bin").size(), content.size());
  { std::ofstream empty(dir / "empty"); }
  EXPECT_EQ(tessera::read_file(dir / "empty"), "");
  // A file whose size the file system does not know is read to its end as well.
  if (std::filesystem::exists("/proc/self/status")) {
    EXPECT_THAT(tessera::read_file("/proc/self/status"), HasSubstr("Name:"));
  }
}

TEST(ReadFile, MissingFilesAndDirectoriesAreErrorsNamingThePath) {
  const tessera::test::TempDir dir;
  const std::string missing = (dir / "missing.txt").string();
  const std::string folder = dir.path().string();
  EXPECT_THAT(error_message([&] { tessera::read_file(missing); }),
              StartsWith(missing + ": cannot open: No such file"));
  EXPECT_EQ(error_message([&] { tessera::read_file(folder); }),
            folder + ": cannot read: is a directory, expected a file");
  // With the caller's name first, the path follows the verb.
  EXPECT_THAT(error_message([&] { tessera::read_file(missing, "--text-file"); }),
              StartsWith("--text-file: cannot open " + missing + ": No such file"));
  EXPECT_EQ(error_message([&] { tessera::read_file<std::vector<std::uint8_t>>(folder, "load"); }),
            "load: cannot read " + folder + ": is a directory, expected a file");
}

// Every read is bounded (ReadLimit): a regular file over the limit is refused from its size
// (a sparse file here: nothing is written or allocated), a file without a size as soon as it
// passes the limit, holding at most one byte past it; at the limit a file is read whole.
TEST(ReadFile, RefusesMoreThanTheLimitNamingThePathTheLimitAndItsSetting) {
  const tessera::test::TempDir dir;
  const tessera::ReadLimit limit{1000, "the test's limit"};
  {
    std::ofstream out(dir / "at_limit", std::ios::binary);
    out << std::string(1000, 'x');
  }
  EXPECT_EQ(tessera::read_file(dir / "at_limit", {}, limit).size(), 1000u);
  std::filesystem::resize_file(dir / "at_limit", 1001);
  EXPECT_EQ(error_message([&] { tessera::read_file(dir / "at_limit", {}, limit); }),
            (dir / "at_limit").string() +
                ": cannot read: the file is 1001 bytes, more than the limit of 1000 bytes "
                "(1000 bytes) set by the test's limit");
  // The default limit, ReadLimits::any_file (256 MiB), on a sparse file of 5 GiB.
  const std::filesystem::path huge = dir / "huge.bin";
  { std::ofstream touch(huge); }
  std::filesystem::resize_file(huge, std::uint64_t{5} << 30);
  EXPECT_EQ(error_message([&] { tessera::read_file<std::vector<std::byte>>(huge, "load"); }),
            "load: cannot read " + huge.string() +
                ": the file is 5368709120 bytes, more than the limit of 268435456 bytes (256 MiB) "
                "set by tessera::ReadLimits::any_file");
  // A file without a size: read until one byte past the limit.
  if (std::filesystem::exists("/dev/zero")) {
    EXPECT_EQ(error_message([&] { tessera::read_file("/dev/zero", {}, limit); }),
              "/dev/zero: cannot read: more than the limit of 1000 bytes (1000 bytes) set by the "
              "test's limit (the file has no size: read until it passed the limit)");
    EXPECT_THAT(error_message([&] {
                  tessera::read_file("/dev/zero", {}, {std::uint64_t{3} << 20, "three MiB"});
                }),
                HasSubstr("more than the limit of 3145728 bytes (3 MiB) set by three MiB"));
    // A larger limit (a WAV's 4 GiB) is capped by without_size for a file without a size.
    EXPECT_THAT(error_message([&] {
                  tessera::read_file("/dev/zero", {}, tessera::ReadLimits::wav_file);
                }),
                HasSubstr("more than the limit of 268435456 bytes (256 MiB) set by "
                          "tessera::ReadLimits::without_size"));
  }
  // A regular file is held to its kind's limit only: a 5 GiB WAV is over wav_file's 4 GiB.
  EXPECT_THAT(error_message([&] {
                tessera::read_file<std::vector<std::byte>>(huge, {}, tessera::ReadLimits::wav_file);
              }),
              HasSubstr("the file is 5368709120 bytes, more than the limit of 4294967296 bytes "
                        "(4 GiB) set by tessera::ReadLimits::wav_file"));
  if (std::filesystem::exists("/proc/self/status")) {
    EXPECT_THAT(error_message([&] { tessera::read_file("/proc/self/status", {}, {10, "ten"}); }),
                HasSubstr("/proc/self/status: cannot read: more than the limit of 10 bytes"));
  }
  // Every kind's limit names itself.
  for (const tessera::ReadLimit& kind :
       {tessera::ReadLimits::text_file, tessera::ReadLimits::vocab_json,
        tessera::ReadLimits::merges_txt, tessera::ReadLimits::config_json,
        tessera::ReadLimits::wav_file, tessera::ReadLimits::image_file,
        tessera::ReadLimits::whole_file, tessera::ReadLimits::any_file,
        tessera::ReadLimits::without_size}) {
    EXPECT_THAT(kind.setting, StartsWith("tessera::ReadLimits::"));
    EXPECT_GE(kind.max_bytes, std::uint64_t{1} << 20);
  }
}

// Every file tessera writes goes through AtomicFileWriter (io/atomic_file.hpp): its rename
// would replace whatever node holds the name, so anything but a regular file is refused and
// left as it was; a symbolic link is written through and keeps pointing at the new contents.
TEST(AtomicFile, RefusesWhatIsNotARegularFileAndWritesThroughLinks) {
  namespace fs = std::filesystem;
  const tessera::test::TempDir dir;
  const fs::path fifo = dir / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(error_message([&] { tessera::detail::write_file_atomically(fifo, "x"); }),
            fifo.string() + ": is a FIFO, not a regular file; tessera writes only regular files");
  EXPECT_TRUE(fs::is_fifo(fs::symlink_status(fifo)));

  const fs::path socket_path = dir / "socket";
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  ASSERT_LT(socket_path.string().size(), sizeof(address.sun_path));
  std::copy_n(socket_path.c_str(), socket_path.string().size(), address.sun_path);
  ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)), 0);
  EXPECT_THAT(error_message([&] { tessera::detail::write_file_atomically(socket_path, "x"); }),
              HasSubstr(": is a socket, not a regular file"));
  EXPECT_TRUE(fs::is_socket(fs::symlink_status(socket_path)));
  ::close(fd);

  EXPECT_THAT(error_message([&] { tessera::detail::write_file_atomically(dir.path(), "x"); }),
              HasSubstr(": is a directory, not a regular file"));

  // A link (and a link to a link) is written through: the target gets the new bytes.
  const fs::path real = dir / "real.txt", link = dir / "link.txt", link2 = dir / "link2.txt";
  tessera::detail::write_file_atomically(real, "old");
  fs::create_symlink(real, link);
  fs::create_symlink(link, link2);
  tessera::detail::write_file_atomically(link2, "new");
  EXPECT_TRUE(fs::is_symlink(fs::symlink_status(link)));
  EXPECT_TRUE(fs::is_symlink(fs::symlink_status(link2)));
  EXPECT_EQ(tessera::read_file(real), "new");
  // A link to a FIFO is refused like the FIFO.
  const fs::path fifo_link = dir / "fifo-link";
  fs::create_symlink(fifo, fifo_link);
  EXPECT_THAT(error_message([&] { tessera::detail::write_file_atomically(fifo_link, "x"); }),
              HasSubstr("fifo-link: is a FIFO"));
}

}  // namespace

TEST(Warning, GoesToTheHandlerAndTheHandlerCanBeRestored) {
  std::vector<std::string> seen;
  auto previous = tessera::set_warning_handler([&](const std::string& m) { seen.push_back(m); });
  tessera::warn("text cut to ", 77, " tokens");
  tessera::set_warning_handler(previous);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], "text cut to 77 tokens");
}
