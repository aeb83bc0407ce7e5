#pragma once
// The HTTP layer of tessera-serve on cpp-httplib (Debian libcpp-httplib-dev), with what
// httplib 0.11's own connection handling lacks (docs/serving.md, "Connections"):
//
//   waiting costs no thread  a connection waiting for a request (a new one, or a keep-alive
//                            one between requests) is watched by one epoll(7) thread, which
//                            also reads the request's line and headers; only a connection
//                            whose headers are whole (or past 8 KiB) takes a worker.
//                            httplib gives each connection a thread for its whole life, so
//                            16 idle connections would stop a 16-thread server; here 10,000
//                            do not (`max_connections` bounds them: past it a new connection
//                            is closed at once)
//   a deadline per request   a request's line, headers and body must all arrive within
//                            request_timeout of its first byte: a client sending its body a
//                            byte a second does not hold a worker past it (httplib's read
//                            timeout is per read, so such a client would hold it for ever)
//   a drain on shutdown      drain() ends the accept loop; a connection already accepted gets
//                            its request answered (httplib's loop closes queued ones unread)
//                            and keep-alive connections close after their current request
//
// HttpServer overrides httplib::Server's process_and_close_socket (a private virtual, called
// by the accept loop for each new connection) and supplies the loop's task queue
// (ConnectionPool: the epoll thread and the workers).
#include <httplib.h>

#include "head_end.hpp"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <thread>
#include <unordered_map>
#include <vector>

namespace tessera::serve {

struct ConnectionLimits {
  double request_timeout_seconds = 30;   // a whole request's arrival, from its first byte
  double idle_timeout_seconds = 5;       // waiting for a connection's next request (keep-alive)
  double write_timeout_seconds = 30;     // a response's sending, per write
  std::size_t max_requests_per_connection = 100;
  std::size_t max_header_bytes = std::size_t{1} << 20;  // a request's line and headers together
  int workers = 16;                      // requests served at once
  std::size_t max_connections = 16384;   // open at once, busy or waiting; past it closed at once
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

// A connection's socket, read through a buffer (httplib reads a request's line and headers
// a byte at a time) with a deadline per request and a cap on its line and headers together
// (httplib caps a header line's length, not their number), written with a per-write timeout.
class DeadlineStream : public httplib::Stream {
 public:
  // `head`: bytes already read from the socket, read first.
  DeadlineStream(int fd, double write_timeout_seconds, const std::string& head = {})
      : fd_(fd), write_timeout_(write_timeout_seconds), buffer_(std::max<std::size_t>(head.size(), 4096)) {
    std::memcpy(buffer_.data(), head.data(), head.size());
    end_ = head.size();
  }

  // The next request must arrive whole by `deadline`, its line and headers in at most
  // `max_header_bytes`; past either, reads fail and the request is cut.
  void begin_request(Clock::time_point deadline, std::size_t max_header_bytes) {
    read_deadline_ = deadline;
    header_left_ = max_header_bytes;
    head_ = HeadEnd{};
  }
  // Bytes read from the socket that no request has taken yet (a pipelined request's).
  bool buffered() const { return begin_ < end_; }

  bool is_readable() const override { return buffered() || wait_readable(fd_, read_deadline_); }
  bool is_writable() const override {
    pollfd p{fd_, POLLOUT, 0};
    return ::poll(&p, 1, static_cast<int>(write_timeout_ * 1000)) > 0 && (p.revents & POLLOUT) != 0;
  }
  ssize_t read(char* ptr, std::size_t size) override {
    if (!buffered()) {
      if (!wait_readable(fd_, read_deadline_)) return -1;
      ssize_t n;
      do {
        n = ::recv(fd_, buffer_.data(), buffer_.size(), 0);
      } while (n < 0 && errno == EINTR);
      if (n <= 0) return n;
      begin_ = 0;
      end_ = static_cast<std::size_t>(n);
    }
    std::size_t n = std::min(size, end_ - begin_);
    if (!head_.ended()) {  // the line and headers: counted against max_header_bytes
      n = head_.scan(buffer_.data() + begin_, std::min(n, header_left_ + 1));
      if (n > header_left_) return -1;
      header_left_ -= n;
    }
    std::memcpy(ptr, buffer_.data() + begin_, n);
    begin_ += n;
    return static_cast<ssize_t>(n);
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
  double write_timeout_;
  Clock::time_point read_deadline_{};
  std::size_t header_left_ = 0;
  HeadEnd head_;
  std::vector<char> buffer_;
  std::size_t begin_ = 0, end_ = 0;
};

// Set by a route (through close_after_response) on the worker thread serving the request:
// the connection is closed once the answer is written, not kept alive.
inline thread_local bool close_requested = false;

}  // namespace detail

// Asks that the connection serving `res` be closed once `res` is written (Connection: close):
// for a request whose body was not read to its end (a multipart form that stopped parsing
// midway), whose unread rest would otherwise be taken for the next request. Call it from a
// route handler (the worker thread that serves the request).
inline void close_after_response(httplib::Response& res) {
  res.set_header("Connection", "close");
  detail::close_requested = true;
}

class HttpServer : public httplib::Server {
 public:
  explicit HttpServer(const ConnectionLimits& limits) : limits_(limits) {
    new_task_queue = [this] {
      pool_ = new ConnectionPool(*this);
      return pool_;
    };
    set_socket_options([this](socket_t sock) {
      httplib::default_socket_options(sock);
      listening_ = sock;
    });
  }

  // Binds as httplib::Server does, then raises the listening socket's backlog from httplib's 5
  // (compiled into Debian's library) to the system's most: with 5, connections arriving while
  // the accept thread waits for a core find the queue full, and each waits a second for its
  // SYN to be sent again.
  bool bind_to_port(const std::string& host, int port) {
    return raised(httplib::Server::bind_to_port(host.c_str(), port) ? port : -1) >= 0;
  }
  int bind_to_any_port(const std::string& host) { return raised(httplib::Server::bind_to_any_port(host.c_str())); }

  // Runs the accept loop until drain() (httplib's listen_after_bind); returns once every
  // connection accepted has been answered or closed.
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

  // Connections open now: being served or waiting for a request.
  std::size_t open_connections() const { return open_; }

 private:
  using Clock = detail::Clock;

  static Clock::duration seconds(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  }

  // The accept loop's task queue: one thread watching the connections that wait for a
  // request (epoll), and the workers that serve the ones whose request has arrived. The accept
  // loop's tasks (a new connection each) run at once on its own thread: they only hand the
  // connection to the watcher.
  class ConnectionPool : public httplib::TaskQueue {
   public:
    explicit ConnectionPool(HttpServer& server) : server_(server) {
      epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
      wake_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      epoll_event e{};
      e.events = EPOLLIN;
      e.data.fd = wake_;
      ::epoll_ctl(epoll_, EPOLL_CTL_ADD, wake_, &e);
      for (int i = 0; i < std::max(1, server_.limits_.workers); ++i) workers_.emplace_back([this] { work(); });
      watcher_ = std::thread([this] { watch(); });
    }
    ~ConnectionPool() override {
      shutdown();
      ::close(wake_);
      ::close(epoll_);
    }

    void enqueue(std::function<void()> fn) override { fn(); }

    // The accept loop has ended: the waiting connections are closed (a new one after a
    // second's grace for its request), the requests being served are finished, and the
    // threads end.
    void shutdown() override {
      {
        std::lock_guard lock(mutex_);
        if (stopping_) return;
        stopping_ = true;
      }
      wake();
      watcher_.join();
      {
        std::lock_guard lock(mutex_);
        workers_stop_ = true;
      }
      work_ready_.notify_all();
      for (auto& w : workers_) w.join();
    }

    // A connection waits for its next request (`served` requests answered) until `deadline`.
    void park(int fd, std::size_t served, Clock::time_point deadline) {
      std::lock_guard lock(mutex_);
      if (watcher_done_) {
        server_.close_connection(fd);
        return;
      }
      waiting_[fd] = Waiting{served, deadline, {}, {}};
      epoll_event e{};
      e.events = EPOLLIN | EPOLLRDHUP;
      e.data.fd = fd;
      if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &e) != 0) {
        waiting_.erase(fd);
        server_.close_connection(fd);
      }
    }

   private:
    struct Waiting {
      std::size_t served;
      Clock::time_point deadline;
      std::string head;  // the request's first bytes, read by the watcher
      HeadEnd head_end;  // where they end
    };

    void wake() {
      const std::uint64_t one = 1;
      [[maybe_unused]] const ssize_t n = ::write(wake_, &one, sizeof one);
    }

    // The watcher: a connection whose request arrives goes to a worker; one past its
    // deadline is closed. Draining, a keep-alive connection is closed at once and a new one
    // is given a second; the watcher ends when no connection waits any more.
    void watch() {
      constexpr int max_events = 256;
      epoll_event events[max_events];
      std::optional<Clock::time_point> drain_start;
      Clock::time_point last_scan{};
      while (true) {
        const int n = ::epoll_wait(epoll_, events, max_events, 50);
        std::unique_lock lock(mutex_);
        for (int i = 0; i < n; ++i) {
          const int fd = events[i].data.fd;
          if (fd == wake_) {
            std::uint64_t count = 0;
            [[maybe_unused]] const ssize_t r = ::read(wake_, &count, sizeof count);
            continue;
          }
          const auto it = waiting_.find(fd);
          if (it == waiting_.end()) continue;
          Waiting& w = it->second;
          const Arrival arrival = read_head(fd, w);
          if (arrival == Arrival::partial) continue;
          ::epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
          if (arrival == Arrival::closed) {
            server_.close_connection(fd);
          } else {
            jobs_.push_back({fd, w.served, w.deadline, std::move(w.head)});
            work_ready_.notify_one();
          }
          waiting_.erase(it);
        }
        const bool draining = stopping_ || server_.draining_;
        if (draining && !drain_start) drain_start = Clock::now();
        const auto now = Clock::now();
        // the deadlines, every 50 ms
        if (now - last_scan < std::chrono::milliseconds(50) && !draining) continue;
        last_scan = now;
        for (auto it = waiting_.begin(); it != waiting_.end();) {
          const bool expired = now >= it->second.deadline ||
                               (drain_start && (it->second.served > 0 || now - *drain_start > std::chrono::seconds(1)));
          if (!expired) {
            ++it;
            continue;
          }
          ::epoll_ctl(epoll_, EPOLL_CTL_DEL, it->first, nullptr);
          server_.close_connection(it->first);
          it = waiting_.erase(it);
        }
        if (stopping_ && waiting_.empty() && jobs_.empty() && busy_ == 0) {
          watcher_done_ = true;
          return;
        }
      }
    }

    // A waiting connection's request head (its line and headers) is read by the watcher, so a
    // client sending it slowly holds no worker; a worker takes the connection once the head
    // is whole (its end read) or longer than head_bytes (the worker reads on), its body with it.
    static constexpr std::size_t head_bytes = 8192;
    enum class Arrival { partial, whole, closed };

    Arrival read_head(int fd, Waiting& w) const {
      char buffer[head_bytes];
      const ssize_t n = ::recv(fd, buffer, head_bytes - w.head.size(), MSG_DONTWAIT);
      if (n == 0) return Arrival::closed;  // the client left before its request was whole
      if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? Arrival::partial : Arrival::closed;
      if (w.head.empty()) {
        // the request's whole arrival is timed from its first byte
        w.deadline = Clock::now() + seconds(server_.limits_.request_timeout_seconds);
      }
      w.head.append(buffer, static_cast<std::size_t>(n));
      w.head_end.scan(buffer, static_cast<std::size_t>(n));
      return w.head_end.ended() || w.head.size() >= head_bytes ? Arrival::whole : Arrival::partial;
    }

    struct Job {
      int fd;
      std::size_t served;
      Clock::time_point deadline;
      std::string head;
    };

    void work() {
      while (true) {
        Job job{};
        {
          std::unique_lock lock(mutex_);
          work_ready_.wait(lock, [&] { return workers_stop_ || !jobs_.empty(); });
          if (jobs_.empty()) return;
          job = std::move(jobs_.front());
          jobs_.pop_front();
          ++busy_;
        }
        server_.serve_connection(*this, job.fd, job.served, job.deadline, job.head);
        {
          std::lock_guard lock(mutex_);
          --busy_;
        }
      }
    }

    HttpServer& server_;
    int epoll_ = -1;
    int wake_ = -1;
    std::mutex mutex_;
    std::condition_variable work_ready_;
    std::unordered_map<int, Waiting> waiting_;
    std::deque<Job> jobs_;
    std::size_t busy_ = 0;
    bool stopping_ = false, watcher_done_ = false, workers_stop_ = false;
    std::vector<std::thread> workers_;
    std::thread watcher_;
  };

  // A new connection (the accept loop's task): past max_connections it is closed; otherwise it
  // waits for its first request with the watcher.
  bool process_and_close_socket(socket_t sock) override {
    if (open_.fetch_add(1) >= limits_.max_connections) {
      close_connection(sock);
      return false;
    }
    // a response's header and body leave at once, not after the client's delayed ACK
    const int on = 1;
    ::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    pool().park(sock, 0, Clock::now() + seconds(limits_.request_timeout_seconds));
    return true;
  }

  // A worker serves a connection's requests while they arrive back to back; when it would
  // wait for the next one, the connection goes back to the watcher.
  // The first request's `head` was read by the watcher, and must arrive whole by `deadline`.
  void serve_connection(ConnectionPool& pool, int sock, std::size_t served, Clock::time_point deadline,
                        const std::string& head) {
    detail::DeadlineStream stream(sock, limits_.write_timeout_seconds, head);
    for (bool first = true;; first = false) {
      stream.begin_request(first ? deadline : Clock::now() + seconds(limits_.request_timeout_seconds),
                           limits_.max_header_bytes);
      bool closed = false;
      const bool last = served + 1 >= limits_.max_requests_per_connection || draining_;
      const bool ok = process_request(stream, last, closed, [&](httplib::Request& request) {
        stream.get_remote_ip_and_port(request.remote_addr, request.remote_port);
      });
      ++served;
      if (std::exchange(detail::close_requested, false)) return linger_close(sock);
      if (!ok || closed || last) break;
      // the next request, if it has begun, is served now; else the watcher waits for it
      pollfd p{sock, POLLIN, 0};
      if (!stream.buffered() && ::poll(&p, 1, 0) <= 0) {
        pool.park(sock, served, Clock::now() + seconds(limits_.idle_timeout_seconds));
        return;
      }
    }
    close_connection(sock);
  }

  void close_connection(int sock) {
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    --open_;
  }

  // Closes a connection whose request's body was left partly unread, after its answer: the
  // writing side is shut first and what the client still sends is read and dropped (for at
  // most 2 s, 64 MiB), since closing a socket with unread bytes resets the connection, and a
  // reset can reach the client before the answer it was sent.
  void linger_close(int sock) {
    ::shutdown(sock, SHUT_WR);
    const auto deadline = Clock::now() + std::chrono::seconds(2);
    char sink[16384];
    for (std::size_t dropped = 0; dropped < (std::size_t{64} << 20) && detail::wait_readable(sock, deadline);) {
      const ssize_t n = ::recv(sock, sink, sizeof sink, 0);
      if (n <= 0) break;
      dropped += static_cast<std::size_t>(n);
    }
    close_connection(sock);
  }

  ConnectionPool& pool() { return *pool_; }

  int raised(int port) {
    if (port >= 0 && listening_ >= 0) ::listen(listening_, SOMAXCONN);
    return port;
  }

  ConnectionLimits limits_;
  std::atomic<bool> draining_{false};
  std::atomic<bool> loop_ended_{false};
  std::atomic<std::size_t> open_{0};
  ConnectionPool* pool_ = nullptr;
  socket_t listening_ = -1;
};

}  // namespace tessera::serve
