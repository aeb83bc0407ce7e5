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

// What kind of file system object `status` is, for messages ("a FIFO", "a directory").
inline const char* file_kind(std::filesystem::file_type type) {
  switch (type) {
    case std::filesystem::file_type::directory: return "a directory";
    case std::filesystem::file_type::character: return "a character device";
    case std::filesystem::file_type::block: return "a block device";
    case std::filesystem::file_type::fifo: return "a FIFO";
    case std::filesystem::file_type::socket: return "a socket";
    default: return "not a regular file";
  }
}

// Where a write to `target` goes: the target itself, or, for a symbolic link, the file it
// points to (written through: the link keeps pointing at the new contents). Anything there
// that is not a regular file (a directory, a device, a FIFO, a socket) is refused: the rename
// of an atomic write would replace the node itself.
inline std::filesystem::path writable_target(const std::filesystem::path& target) {
  namespace fs = std::filesystem;
  std::error_code error;
  fs::path resolved = target;
  if (fs::is_symlink(fs::symlink_status(target, error))) {
    resolved = fs::weakly_canonical(target, error);
    check(!error, target.string(), ": cannot follow the symbolic link: ", error.message());
  }
  const fs::file_status status = fs::status(resolved, error);
  const bool exists = !error && fs::exists(status);
  check(!exists || fs::is_regular_file(status), target.string(), ": is ",
        file_kind(status.type()), ", not a regular file; tessera writes only regular files");
  return resolved;
}

// A file written through a temporary in the same directory and renamed into place by
// commit(), so readers never see a half-written file. Destroying it uncommitted removes the
// temporary. A symbolic link is written through; a target that is not a regular file is
// refused (writable_target). Errors throw tessera::Error naming the target path.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(const std::filesystem::path& target)
      : name_(target.string()), target_(writable_target(target)) {
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
    check(out_.is_open(), name_, ": cannot open ", temporary_.string(),
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
    check(out_.good(), name_, ": write failed: ", std::strerror(errno));
  }

  void commit() {
    out_.flush();
    check(out_.good(), name_, ": write failed: ", std::strerror(errno));
    out_.close();
    check(!out_.fail(), name_, ": closing failed: ", std::strerror(errno));
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
    check(!error, name_, ": cannot rename ", temporary_.string(),
          " into place: ", error.message());
    committed_ = true;
  }

 private:
  std::string name_;              // the path the caller gave, for messages
  std::filesystem::path target_;  // where the file goes (a link's target)
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
