#pragma once
// AtomicFileWriter: how tessera writes every file (models, configs, tensors). The bytes go to
// a temporary file in the target's directory, reach the disk, and are renamed into place, so
// a crash or an error never leaves a half-written file under the real name.

#include <tessera/core/error.hpp>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#if defined(__unix__) || defined(__APPLE__)
#define TESSERA_ATOMIC_FILE_POSIX 1
#include <fcntl.h>
#include <unistd.h>
#else
#define TESSERA_ATOMIC_FILE_POSIX 0
#endif

namespace tessera {

namespace detail {

// A file written through a temporary in the same directory and renamed into place by
// commit(), so readers never see a half-written file. Destroying it uncommitted removes the
// temporary. Errors throw tessera::Error naming the target path.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::filesystem::path target) : target_(std::move(target)) {
    static std::atomic<unsigned long> counter{0};
    const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
#if TESSERA_ATOMIC_FILE_POSIX
    const long process = static_cast<long>(::getpid());
#else
    const long process = 0;
#endif
    temporary_ = target_;
    temporary_ += concat(".tmp-", process, "-", stamp, "-", counter++);
    out_.open(temporary_, std::ios::binary | std::ios::trunc);
    check(out_.is_open(), target_.string(), ": cannot open ", temporary_.string(),
          " for writing: ", std::strerror(errno));
  }
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter() {
    if (!committed_) {
      out_.close();
      std::error_code ignored;
      std::filesystem::remove(temporary_, ignored);
    }
  }

  void write(const void* data, std::size_t size) {
    out_.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    check(out_.good(), target_.string(), ": write failed: ", std::strerror(errno));
  }

  void commit() {
    out_.flush();
    check(out_.good(), target_.string(), ": write failed: ", std::strerror(errno));
    out_.close();
    check(!out_.fail(), target_.string(), ": closing failed: ", std::strerror(errno));
#if TESSERA_ATOMIC_FILE_POSIX
    // Put the bytes on disk before the rename makes them visible under the real name.
    const int fd = ::open(temporary_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
#endif
    std::error_code error;
    std::filesystem::rename(temporary_, target_, error);
    check(!error, target_.string(), ": cannot rename ", temporary_.string(),
          " into place: ", error.message());
    committed_ = true;
  }

 private:
  std::filesystem::path target_;
  std::filesystem::path temporary_;
  std::ofstream out_;
  bool committed_ = false;
};

// The whole of `bytes` as `file`, through an AtomicFileWriter.
inline void write_file_atomically(const std::filesystem::path& file, const void* bytes,
                                  std::size_t size) {
  AtomicFileWriter writer(file);
  writer.write(bytes, size);
  writer.commit();
}
inline void write_file_atomically(const std::filesystem::path& file, std::string_view text) {
  write_file_atomically(file, text.data(), text.size());
}

}  // namespace detail

}  // namespace tessera
