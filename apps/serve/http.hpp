#pragma once
// The HTTP layer of tessera-serve on cpp-httplib (Debian libcpp-httplib-dev), with what
// httplib 0.11's own connection loop lacks (docs/serving.md, "Connections"):
//
//   a deadline per request   a request's line, headers and body must all arrive within
//                            request_timeout of its first byte: a client sending a byte a
//                            second does not hold a worker (httplib's read timeout is per
//                            read, so such a client would); past it, the connection closes
//   a drain on shutdown      stop() ends the accept loop; a connection already accepted gets
//                            its request answered (httplib's loop closes queued ones unread)
//                            and keep-alive connections close after their current request
//
// HttpServer overrides httplib::Server's process_and_close_socket (a private virtual) with
// that loop, on a Stream of its own over the socket (poll(2), send(2) with MSG_NOSIGNAL).

#include <httplib.h>

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <thread>

namespace tessera::serve {

struct ConnectionLimits {
  double request_timeout_seconds = 30;   // a whole request's arrival, from its first byte
  double idle_timeout_seconds = 5;       // waiting for a connection's next request (keep-alive)
  double write_timeout_seconds = 30;     // a response's sending, per write
  std::size_t max_requests_per_connection = 100;
};

namespace detail {

using Clock = std::chrono::steady_clock;

// Milliseconds from now until `deadline`, at least 0.
inline int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return left.count() <= 0 ? 0 : static_cast<int>(std::min<long long>(left.count(), 1 << 30));
}

// Waits until `fd` is readable (or closed by the peer) or `deadline` passes; with `give_up`,
// also until give_up() says so (asked every 50 ms). Returns whether it is readable.
inline bool wait_readable(int fd, Clock::time_point deadline,
                          const std::function<bool()>& give_up = {}) {
  while (true) {
    if (give_up && give_up()) return false;
    const int wait = std::min(remaining_ms(deadline), give_up ? 50 : 1 << 30);
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, wait);
    if (ready > 0) return true;
    if (ready < 0 && errno != EINTR) return false;
    if (ready == 0 && Clock::now() >= deadline) return false;
  }
}

// A socket read until a fixed deadline and written with a per-write timeout.
class DeadlineStream : public httplib::Stream {
 public:
  DeadlineStream(int fd, Clock::time_point read_deadline, double write_timeout_seconds)
      : fd_(fd), read_deadline_(read_deadline), write_timeout_(write_timeout_seconds) {}

  bool is_readable() const override { return wait_readable(fd_, read_deadline_); }
  bool is_writable() const override {
    pollfd p{fd_, POLLOUT, 0};
    return ::poll(&p, 1, static_cast<int>(write_timeout_ * 1000)) > 0 && (p.revents & POLLOUT) != 0;
  }
  ssize_t read(char* ptr, std::size_t size) override {
    if (!is_readable()) return -1;
    while (true) {
      const ssize_t n = ::recv(fd_, ptr, size, 0);
      if (n < 0 && errno == EINTR) continue;
      return n;
    }
  }
  ssize_t write(const char* ptr, std::size_t size) override {
    if (!is_writable()) return -1;
    while (true) {
      const ssize_t n = ::send(fd_, ptr, size, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      return n;
    }
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    address(::getpeername, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    address(::getsockname, ip, port);
  }
  socket_t socket() const override { return fd_; }

 private:
  template <class Get>
  void address(Get get, std::string& ip, int& port) const {
    sockaddr_storage a{};
    socklen_t length = sizeof(a);
    ip.clear();
    port = 0;
    if (get(fd_, reinterpret_cast<sockaddr*>(&a), &length) != 0) return;
    char text[INET6_ADDRSTRLEN] = {};
    if (a.ss_family == AF_INET) {
      const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a);
      ::inet_ntop(AF_INET, &v4->sin_addr, text, sizeof(text));
      port = ntohs(v4->sin_port);
    } else if (a.ss_family == AF_INET6) {
      const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a);
      ::inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof(text));
      port = ntohs(v6->sin6_port);
    }
    ip = text;
  }

  int fd_;
  Clock::time_point read_deadline_;
  double write_timeout_;
};

}  // namespace detail

class HttpServer : public httplib::Server {
 public:
  explicit HttpServer(const ConnectionLimits& limits) : limits_(limits) {}

  // Runs the accept loop until drain() (httplib's listen_after_bind).
  bool listen_until_drained() {
    const bool ok = listen_after_bind();
    loop_ended_ = true;
    return ok;
  }

  // Ends the accept loop; the connections already accepted are answered (see the top).
  // httplib's stop() does nothing before the loop runs: called before that (a signal right
  // after start-up), this waits for the loop to start.
  void drain() {
    draining_ = true;
    while (!is_running() && !loop_ended_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    stop();
  }
  bool draining() const { return draining_; }

 private:
  bool process_and_close_socket(socket_t sock) override {
    using detail::Clock;
    // a response's header and body leave at once, not after the client's delayed ACK
    const int on = 1;
    ::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    const auto seconds = [](double s) {
      return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
    };
    bool ok = false;
    for (std::size_t served = 0; served < limits_.max_requests_per_connection; ++served) {
      // The first request is waited for (its connection was accepted: when draining, for a
      // second); a keep-alive connection's next one only while the server runs.
      const auto start = Clock::now();
      const auto idle = start + seconds(served == 0 ? limits_.request_timeout_seconds
                                                    : limits_.idle_timeout_seconds);
      const auto give_up = [&] {
        return draining_.load() && (served > 0 || Clock::now() - start > std::chrono::seconds(1));
      };
      if (!detail::wait_readable(sock, idle, give_up)) break;
      detail::DeadlineStream stream(sock, Clock::now() + seconds(limits_.request_timeout_seconds),
                                    limits_.write_timeout_seconds);
      bool closed = false;
      const bool last = served + 1 == limits_.max_requests_per_connection || draining_;
      ok = process_request(stream, last, closed, [&](httplib::Request& request) {
        stream.get_remote_ip_and_port(request.remote_addr, request.remote_port);
      });
      if (!ok || closed || last) break;
    }
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return ok;
  }

  ConnectionLimits limits_;
  std::atomic<bool> draining_{false};
  std::atomic<bool> loop_ended_{false};
};

}  // namespace tessera::serve
