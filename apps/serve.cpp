// tessera-serve: a model directory's embeddings over HTTP (docs/serving.md).
//
//   tessera-serve --model DIR [--host 127.0.0.1] [--port 8080] [--max-batch-tokens N]
//                 [--max-wait-ms N] [--max-queue N] [--max-payload-mb N] [--max-samples N]
//                 [--cache-mb N] [--cache-ttl-s N] [--api-key-file F] [--threads N]
//                 [--http-threads N] [--max-connections N] [--request-timeout-s N] [--max-streams N]
//                 [--max-stream-mb N] [--stream-idle-s N]
//
// Loads the model (tessera's own or any pretrained directory tessera loads), runs one warm-up
// batch, prints "listening on http://HOST:PORT" and serves until SIGTERM or SIGINT, which stop
// the accepting, answer what was accepted and queued, and exit 0. The routes and answers are
// in apps/serve/server.hpp; errors at start-up follow every program's contract (cli.hpp).

#include <tessera/tessera.hpp>

#include "cli.hpp"
#include "serve/server.hpp"

#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

namespace {

namespace apps = tessera::apps;
namespace fs = std::filesystem;

struct Options {
  fs::path model;
  tessera::serve::ServeOptions serve;
  double max_wait_ms = 0;  // TEI's policy: the better P99 at low load, no worse at high (docs/serving.md)
  fs::path api_key_file;
  double max_stream_mb = 1024;
  int threads = 0;
};

void add_options(CLI::App& app, Options& o) {
  auto& s = o.serve;
  app.add_option("--model", o.model, "the model directory (tessera's own, or a pretrained one: docs/pretrained.md)")
      ->required()->check(CLI::ExistingDirectory)->type_name("DIR");
  app.add_option("--host", s.host, "the address to listen on (127.0.0.1: this machine only)")->type_name("ADDRESS");
  app.add_option("--port", s.port, "the port (0: any free one, printed)")
      ->check(apps::integer_in<int>(0, 65535))->type_name("N");
  app.add_option("--max-batch-tokens", s.batching.max_batch_tokens,
                 "a batch's tokens at most; a request over it is refused (413)")
      ->check(apps::integer_in<std::size_t>(1, std::size_t{1} << 24))->type_name("N");
  app.add_option("--max-wait-ms", o.max_wait_ms,
                 "how long a request waits for others to share its batch (0: none, TEI's policy)")
      ->check(apps::non_negative_number)->check(CLI::Range(0.0, 10000.0))->type_name("MS");
  app.add_option("--max-queue", s.batching.max_queue, "requests waiting for a batch at most; past it 429")
      ->check(apps::integer_in<std::size_t>(1, 1000000))->type_name("N");
  app.add_option("--max-payload-mb", s.max_payload_mb, "a request body's size at most; past it 413")
      ->check(apps::positive_number)->check(CLI::Range(0.0, 4096.0))->type_name("MB");
  app.add_option("--max-samples", s.max_samples, "samples (or labels) of one request at most; past it 413")
      ->check(apps::integer_in<std::size_t>(1, 100000))->type_name("N");
  app.add_option("--cache-mb", s.cache_mb, "the embedding cache's memory (0: no cache)")
      ->check(apps::non_negative_number)->check(CLI::Range(0.0, 1048576.0))->type_name("MB");
  app.add_option("--cache-ttl-s", s.cache_ttl_seconds, "seconds a cached embedding lives (0: until evicted)")
      ->check(apps::non_negative_number)->type_name("S");
  app.add_option("--api-key-file", o.api_key_file,
                 "a file holding the API key clients must send (Authorization: Bearer KEY); /health stays open")
      ->check(CLI::ExistingFile)->type_name("FILE");
  apps::add_threads_option(app, o.threads);
  app.add_option("--http-threads", s.connections.workers,
                 "requests served at once (a connection waiting for its request takes none)")
      ->check(apps::integer_in<int>(1, 4096))->type_name("N");
  app.add_option("--max-connections", s.connections.max_connections,
                 "connections open at once at most, busy or idle; past it a new one is closed "
                 "(default: 16384, or what the open-files limit allows)")
      ->check(apps::integer_in<std::size_t>(1, 1 << 24))->type_name("N");
  app.add_option("--max-streams", s.streams.max_streams, "streams open at once at most (/v1/streams); past it 429")
      ->check(apps::integer_in<std::size_t>(1, 100000))->type_name("N");
  app.add_option("--max-stream-mb", o.max_stream_mb, "the open streams' KV caches' memory at most; past it 429")
      ->check(apps::positive_number)->check(CLI::Range(0.0, 1048576.0))->type_name("MB");
  app.add_option("--stream-idle-s", s.streams.idle_seconds, "a stream unused this long is closed")
      ->check(apps::positive_number)->type_name("S");
  app.add_option("--request-timeout-s", s.connections.request_timeout_seconds,
                 "a request's whole arrival, at most (a slow client is cut off)")
      ->check(apps::positive_number)->type_name("S");
}

// Raises the open-files limit to its hard limit (each connection is a file) and checks that
// --max-connections fits under it; its default is lowered to fit.
void fit_connections(tessera::serve::ConnectionLimits& limits, bool given) {
  constexpr rlim_t spare = 64;  // the model's files, the listening socket, the streams' files
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) != 0) return;
  if (files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
    ::getrlimit(RLIMIT_NOFILE, &files);
  }
  if (files.rlim_cur == RLIM_INFINITY || limits.max_connections + spare <= files.rlim_cur) return;
  const std::size_t fits = files.rlim_cur > 2 * spare ? files.rlim_cur - spare : spare;
  tessera::check(!given, "--max-connections ", limits.max_connections, ": over what the open-files limit (",
                 files.rlim_cur, ", ulimit -n) leaves; at most ", fits);
  limits.max_connections = fits;
}

// The key of --api-key-file: its first line, without surrounding white space.
std::string read_api_key(const fs::path& file) {
  apps::Processing now("--api-key-file " + file.string(), file.string());
  std::string text = tessera::read_file(file);
  text = text.substr(0, text.find('\n'));
  const auto blank = [](unsigned char c) { return std::isspace(c) != 0; };
  text.erase(text.begin(), std::find_if_not(text.begin(), text.end(), blank));
  text.erase(std::find_if_not(text.rbegin(), text.rend(), blank).base(), text.end());
  tessera::check(!text.empty(), file.string(), ": no key on its first line");
  return text;
}

// SIGTERM and SIGINT, the signals that stop the server.
sigset_t stop_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  return signals;
}

// Once the server runs, a stop signal writes its number into this pipe, which the stopping
// thread reads. A handler rather than sigwait alone: threads started before main (OpenBLAS's
// pool) do not block the signals, and the kernel may deliver one to such a thread, where
// without a handler it would end the process at once.
int stop_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int signal) {
  const int saved = errno;
  const auto number = static_cast<unsigned char>(signal);
  [[maybe_unused]] const ssize_t written = ::write(stop_pipe[1], &number, 1);
  errno = saved;
}

void catch_stop_signals() {
  tessera::check(::pipe2(stop_pipe, O_CLOEXEC) == 0, "cannot create a pipe for the stop signals: ",
                 std::strerror(errno));
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
}

// Waits for a stop signal (the calling thread takes them too) and returns its number.
int wait_for_stop_signal() {
  const sigset_t signals = stop_signals();
  pthread_sigmask(SIG_UNBLOCK, &signals, nullptr);
  unsigned char number = 0;
  ssize_t n = 0;
  while ((n = ::read(stop_pipe[0], &number, 1)) < 0 && errno == EINTR) {
  }
  return n == 1 ? number : SIGTERM;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Serve a model's embeddings over HTTP: POST /embed, /v1/embeddings, /similarity, /classify "
               "(JSON, or a multipart form with the files as they are); GET /health, /info, /metrics "
               "(docs/serving.md)",
               "tessera-serve"};
  apps::set_conventions(app);
  Options options;
  add_options(app, options);
  return apps::run(app, argc, argv, [&] {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    Options& o = options;
    if (o.threads > 0) tessera::set_num_threads(o.threads);
    o.serve.batching.max_wait_seconds = o.max_wait_ms / 1000;
    o.serve.streams.max_bytes = static_cast<std::size_t>(o.max_stream_mb * 1024 * 1024);
    if (!o.api_key_file.empty()) o.serve.api_key = read_api_key(o.api_key_file);
    fit_connections(o.serve.connections, app.count("--max-connections") > 0);
    // glibc gives threads up to 8 malloc arenas per core; with one HTTP worker per request in
    // flight, their free lists kept the server at 215-235 MB under 64 clients where one arena
    // per core holds it flat at 150 MB, and 14% faster (docs/serving.md, "Load").
    // MALLOC_ARENA_MAX in the environment still decides.
    if (std::getenv("MALLOC_ARENA_MAX") == nullptr) {
      ::mallopt(M_ARENA_MAX, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    }

    // SIGTERM and SIGINT are blocked here, before any thread of ours starts, so that they
    // interrupt no HTTP worker or batch; once the server runs they go to one thread, which
    // stops it. Before that they end the process (or, taken by no thread, wait for the handler).
    const sigset_t signals = stop_signals();
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);

    tessera::Pipeline<float> pipeline = [&] {
      apps::Processing now("--model " + o.model.string(), o.model.string());
      return tessera::Pipeline<float>::open(o.model);
    }();
    const std::string name = fs::absolute(o.model).lexically_normal().filename().string();
    tessera::serve::Server server(std::move(pipeline), name.empty() ? o.model.string() : name, o.serve);
    const int port = server.bind();
    server.warm_up();
    catch_stop_signals();
    std::thread stopper([&] {
      const int signal = wait_for_stop_signal();
      server.stop();  // no new connections from here on
      std::printf("%s: stopping: answering what was accepted, then exiting\n",
                  signal == SIGTERM ? "SIGTERM" : "SIGINT");
    });
    std::printf("listening on http://%s:%d (model %s)\n", o.serve.host.c_str(), port, o.model.string().c_str());
    server.serve();
    if (stopper.joinable()) {
      // serve() returns only after stop(): the stopper thread has ended its wait
      stopper.join();
    }
    std::printf("stopped\n");
  });
}
