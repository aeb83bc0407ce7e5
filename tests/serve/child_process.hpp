#pragma once
// A program run as a child process for tests/serve: started with fork and exec, its stdout and
// stderr read into one string by a thread of ours, stopped by a signal, its exit status
// waited for within a deadline. Every wait here is bounded: a test that goes wrong fails with
// the child's output rather than hanging the suite.

#include <tessera/core/error.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace tessera::test {

class ChildProcess {
 public:
  using Clock = std::chrono::steady_clock;

  // Starts `program` with `args` (argv[1...]); its stdout and stderr go to output(). The child
  // is killed (SIGKILL) if the thread that made this ends first, as when ctest kills a test
  // that ran out of time: no server outlives its test.
  ChildProcess(const std::string& program, const std::vector<std::string>& args) {
    std::vector<std::string> argv_strings{program};
    argv_strings.insert(argv_strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_strings) argv.push_back(a.data());
    argv.push_back(nullptr);
    int pipe_fds[2];
    check(::pipe2(pipe_fds, O_CLOEXEC) == 0, "pipe2: ", std::strerror(errno));
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
      // the child: async-signal-safe calls only, until exec
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(pipe_fds[1], STDOUT_FILENO);
      ::dup2(pipe_fds[1], STDERR_FILENO);
      // no signal blocked, SIGPIPE at its default, whatever this process did with them
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      struct sigaction default_action {};
      default_action.sa_handler = SIG_DFL;
      ::sigaction(SIGPIPE, &default_action, nullptr);
      ::execv(program.c_str(), argv.data());
      ::_exit(127);
    }
    const int fork_error = errno;
    ::close(pipe_fds[1]);
    if (pid_ < 0) {
      ::close(pipe_fds[0]);
      fail("fork for ", program, ": ", std::strerror(fork_error));
    }
    reader_ = std::thread([this, fd = pipe_fds[0]] { read_output(fd); });
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  // A child still running (a test that failed half way) is killed.
  ~ChildProcess() {
    if (!status_) {
      ::kill(pid_, SIGKILL);
      int ignored = 0;
      ::waitpid(pid_, &ignored, 0);
    }
    if (reader_.joinable()) reader_.join();
  }

  pid_t pid() const { return pid_; }

  // Everything the child wrote so far.
  std::string output() const {
    std::lock_guard lock(mutex_);
    return output_;
  }

  // Waits until the output contains `text` (true), the output ends (the child closed it, as
  // when it exits) or `timeout` passes (false).
  bool wait_for_output(const std::string& text, std::chrono::milliseconds timeout) const {
    std::unique_lock lock(mutex_);
    return grown_.wait_for(lock, timeout, [&] { return output_.find(text) != std::string::npos || ended_; }) &&
           output_.find(text) != std::string::npos;
  }

  void signal(int number) const {
    check(::kill(pid_, number) == 0, "kill ", pid_, ": ", std::strerror(errno));
  }

  // The exit status (0..255), or -N when signal N ended it; nothing when it is still running
  // after `timeout`.
  std::optional<int> wait(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (!status_) {
      int raw = 0;
      const pid_t done = ::waitpid(pid_, &raw, WNOHANG);
      if (done == pid_) {
        status_ = WIFEXITED(raw) ? WEXITSTATUS(raw) : -WTERMSIG(raw);
        break;
      }
      if (Clock::now() >= deadline) return std::nullopt;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (reader_.joinable()) reader_.join();  // the output ends with the child
    return status_;
  }

 private:
  void read_output(int fd) {
    char buffer[4096];
    while (true) {
      const ssize_t n = ::read(fd, buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      std::lock_guard lock(mutex_);
      if (n <= 0) {
        ended_ = true;
        grown_.notify_all();
        break;
      }
      output_.append(buffer, static_cast<std::size_t>(n));
      grown_.notify_all();
    }
    ::close(fd);
  }

  pid_t pid_ = -1;
  std::optional<int> status_;
  mutable std::mutex mutex_;
  mutable std::condition_variable grown_;
  std::string output_;
  bool ended_ = false;
  std::thread reader_;
};

}  // namespace tessera::test
