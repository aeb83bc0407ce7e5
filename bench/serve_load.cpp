// serve_load: a load generator for tessera-serve (docs/serving.md, "Load").
//
//   serve_load --url http://127.0.0.1:PORT --clients C --seconds T --inputs DIR
//              [--samples N] [--mix text,image,audio] [--body json|form] [--api-key KEY]
//              [--server-pid PID] [--max-requests N]
//
// C client threads, each with its own keep-alive connection, send POST /embed requests
// back to back for T seconds (or until --max-requests in all): request k of client c carries
// N samples of one modality, the modalities taken in turn from --mix, the inputs in turn from
// DIR (its *.png / *.jpg images, *.wav files, and the lines of captions.txt, a synthetic
// world's layout; a text gets its request's number appended, so no two are alike), as JSON
// with the files in base64 (--body json, the default) or as a multipart/form-data form with the
// files as they are (--body form: samples[i].image=@file, docs/serving.md "Forms"). Prints one
// JSON line: requests, samples, errors by status (and transport failures), lost requests (sent,
// never answered), throughput (requests/s, samples/s), latency P50/P95/P99/max in ms over the
// answered requests, the CPU time serve_load itself took (user + system), and, with
// --server-pid, the server's CPU time over the run and its resident memory (VmRSS) at the
// start and end and its peak (VmHWM). On one machine the two CPU times say how the cores were
// shared between the clients and the server.
//
// Every request is counted once: answered (any status) or failed in transport; "lost" is the
// difference between sent and those, which a correct server keeps at 0.

#include "../apps/serve/base64.hpp"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <sys/resource.h>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string url = "http://127.0.0.1:8080";
  int clients = 8;
  double seconds = 10;
  fs::path inputs;
  int samples = 1;
  std::vector<std::string> mix = {"text", "image", "audio"};
  bool form = false;  // --body form
  std::string api_key;
  long server_pid = 0;
  long max_requests = 0;  // 0: no limit
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "serve_load: %s\nusage: serve_load --url URL --clients C --seconds T --inputs DIR "
               "[--samples N] [--mix text,image,audio] [--body json|form] [--api-key KEY] [--server-pid PID] "
               "[--max-requests N]\n",
               why.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help") usage("a load generator for tessera-serve");
    if (i + 1 >= argc) usage(arg + " needs a value");
    const std::string value = argv[++i];
    try {
      if (arg == "--url") o.url = value;
      else if (arg == "--clients") o.clients = std::stoi(value);
      else if (arg == "--seconds") o.seconds = std::stod(value);
      else if (arg == "--inputs") o.inputs = value;
      else if (arg == "--samples") o.samples = std::stoi(value);
      else if (arg == "--api-key") o.api_key = value;
      else if (arg == "--body") {
        if (value != "json" && value != "form") usage("--body: json or form, not " + value);
        o.form = value == "form";
      }
      else if (arg == "--server-pid") o.server_pid = std::stol(value);
      else if (arg == "--max-requests") o.max_requests = std::stol(value);
      else if (arg == "--mix") {
        o.mix.clear();
        std::stringstream list(value);
        for (std::string m; std::getline(list, m, ',');) o.mix.push_back(m);
      } else usage("unknown option " + arg);
    } catch (const std::exception&) {
      usage(arg + ": not a number: " + value);
    }
  }
  if (o.inputs.empty()) usage("--inputs DIR is required");
  if (o.clients < 1 || o.clients > 4096) usage("--clients must be 1 to 4096");
  if (!(o.seconds > 0 && o.seconds <= 3600)) usage("--seconds must be in (0, 3600]");
  if (o.samples < 1 || o.samples > 1024) usage("--samples must be 1 to 1024");
  return o;
}

std::string read_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// The inputs of each modality: texts as they are; files in base64 as JSON strings (quoted),
// or their bytes as they are for a form.
struct Inputs {
  std::vector<std::string> text, image, audio;

  const std::vector<std::string>& of(const std::string& m) const {
    if (m == "text") return text;
    if (m == "image") return image;
    if (m == "audio") return audio;
    usage("--mix: unknown modality " + m + " (text, image, audio)");
  }
};

Inputs load_inputs(const fs::path& dir, bool form) {
  Inputs in;
  std::vector<fs::path> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  for (const fs::path& f : files) {
    const std::string ext = f.extension().string();
    const auto quoted = [&] {
      return form ? read_bytes(f) : "\"" + tessera::serve::base64_encode(read_bytes(f)) + "\"";
    };
    if (ext == ".png" || ext == ".jpg") in.image.push_back(quoted());
    if (ext == ".wav") in.audio.push_back(quoted());
    if (f.filename() == "captions.txt") {
      std::ifstream text(f);
      for (std::string line; std::getline(text, line);) {
        if (!line.empty()) in.text.push_back(line);
      }
    }
  }
  return in;
}

long rss_kb(long pid, const char* field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind(field, 0) == 0) return std::atol(line.c_str() + std::strlen(field) + 1);
  }
  return -1;
}

// CPU seconds (user + system) a process has taken: /proc/PID/stat's utime and stime.
double cpu_seconds(long pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const std::size_t close = text.rfind(')');  // the command's name may hold spaces
  if (close == std::string::npos) return -1;
  std::istringstream fields(text.substr(close + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stod(field);
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double own_cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) * 1e-6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

double percentile(std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const auto at = static_cast<std::size_t>(q * static_cast<double>(sorted.size() - 1) + 0.5);
  return sorted[std::min(at, sorted.size() - 1)];
}

}  // namespace

// A form's boundary: a line no PNG, WAV or caption of a synthetic world holds.
constexpr std::string_view boundary = "tessera-serve-load-7c1f0e5a9b2d4c68";
const std::string form_type = "multipart/form-data; boundary=" + std::string(boundary);

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const Inputs inputs = load_inputs(o.inputs, o.form);
  for (const std::string& m : o.mix) {
    if (inputs.of(m).empty()) usage("--inputs " + o.inputs.string() + " has no " + m + " inputs");
  }
  const long rss_start = o.server_pid > 0 ? rss_kb(o.server_pid, "VmRSS:") : -1;
  const double server_cpu_start = o.server_pid > 0 ? cpu_seconds(o.server_pid) : 0;
  const double own_cpu_start = own_cpu_seconds();

  std::atomic<long> sent{0}, answered{0}, transport_failures{0}, samples_ok{0};
  std::mutex mutex;
  std::map<int, long> statuses;
  std::vector<double> latencies_ms;
  std::atomic<long> next_request{0};
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));

  std::vector<std::thread> clients;
  for (int c = 0; c < o.clients; ++c) {
    clients.emplace_back([&] {
      httplib::Client client(o.url);
      client.set_keep_alive(true);
      client.set_tcp_nodelay(true);
      client.set_connection_timeout(10);
      client.set_read_timeout(120);
      client.set_write_timeout(60);
      httplib::Headers headers;
      if (!o.api_key.empty()) headers.emplace("Authorization", "Bearer " + o.api_key);
      std::vector<double> mine;
      std::map<int, long> my_statuses;
      while (Clock::now() < deadline) {
        const long k = next_request++;
        if (o.max_requests > 0 && k >= o.max_requests) break;
        const std::string& m = o.mix[static_cast<std::size_t>(k) % o.mix.size()];
        const auto& pool = inputs.of(m);
        // the body by hand: nlohmann (or httplib's form writer) would copy and escape each
        // file again, and the client's CPU is taken from the server's on one machine
        std::string body;
        if (o.form) {
          for (int s = 0; s < o.samples; ++s) {
            const std::size_t pick = static_cast<std::size_t>(k * o.samples + s) % pool.size();
            body += "--" + std::string(boundary) + "\r\nContent-Disposition: form-data; name=\"samples[" +
                    std::to_string(s) + "]." + m + "\"" + (m == "text" ? "" : "; filename=\"input\"") + "\r\n\r\n";
            body += m == "text" ? pool[pick] + " #" + std::to_string(k) : pool[pick];
            body += "\r\n";
          }
          body += "--" + std::string(boundary) +
                  "\r\nContent-Disposition: form-data; name=\"encoding_format\"\r\n\r\nbase64\r\n--" +
                  std::string(boundary) + "--\r\n";
        } else {
          body = "{\"samples\":[";
          for (int s = 0; s < o.samples; ++s) {
            const std::size_t pick = static_cast<std::size_t>(k * o.samples + s) % pool.size();
            const std::string value =
                m == "text" ? nlohmann::json(pool[pick] + " #" + std::to_string(k)).dump() : pool[pick];
            body += (s == 0 ? "{\"" : ",{\"") + m + "\":" + value + "}";
          }
          body += "],\"encoding_format\":\"base64\"}";
        }
        ++sent;
        const auto t0 = Clock::now();
        const auto result = client.Post("/embed", headers, body, o.form ? form_type : "application/json");
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        if (!result) {
          ++transport_failures;
          continue;
        }
        ++answered;
        ++my_statuses[result->status];
        if (result->status == 200) {
          mine.push_back(ms);
          samples_ok += o.samples;
        }
      }
      std::lock_guard<std::mutex> lock(mutex);
      latencies_ms.insert(latencies_ms.end(), mine.begin(), mine.end());
      for (const auto& [status, n] : my_statuses) statuses[status] += n;
    });
  }
  for (auto& t : clients) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  const double own_cpu = own_cpu_seconds() - own_cpu_start;
  std::sort(latencies_ms.begin(), latencies_ms.end());

  nlohmann::json report = {
      {"clients", o.clients},
      {"seconds", elapsed},
      {"samples_per_request", o.samples},
      {"body", o.form ? "form" : "json"},
      {"client_cpu_seconds", own_cpu},
      {"mix", o.mix},
      {"sent", sent.load()},
      {"answered", answered.load()},
      {"transport_failures", transport_failures.load()},
      {"lost", sent.load() - answered.load() - transport_failures.load()},
      {"requests_per_second", static_cast<double>(statuses[200]) / elapsed},
      {"samples_per_second", static_cast<double>(samples_ok.load()) / elapsed},
      {"latency_ms",
       {{"p50", percentile(latencies_ms, 0.50)},
        {"p95", percentile(latencies_ms, 0.95)},
        {"p99", percentile(latencies_ms, 0.99)},
        {"max", latencies_ms.empty() ? 0.0 : latencies_ms.back()}}}};
  nlohmann::json codes = nlohmann::json::object();
  for (const auto& [status, n] : statuses) codes[std::to_string(status)] = n;
  report["statuses"] = codes;
  if (o.server_pid > 0) {
    report["server_cpu_seconds"] = cpu_seconds(o.server_pid) - server_cpu_start;
    report["server_rss_kb"] = {{"start", rss_start}, {"end", rss_kb(o.server_pid, "VmRSS:")},
                               {"peak", rss_kb(o.server_pid, "VmHWM:")}};
  }
  std::cout << report.dump() << "\n";
  const bool clean = transport_failures.load() == 0 && statuses.size() == 1 && statuses.count(200) == 1;
  return clean ? 0 : 1;
}
