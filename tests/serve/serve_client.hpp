#pragma once
// tessera-serve as tests/serve sees it: the real program started as a child process on a free
// port (--port 0; the port read from its "listening on" line), HTTP requests to it over
// loopback with cpp-httplib's client, and the helpers the tests share (base64 embeddings,
// error bodies, the /metrics text).

#include "child_process.hpp"
#include "serve/base64.hpp"  // apps/serve/base64.hpp: the server's own

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include <bit>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>
#include <regex>
#include <string>
#include <vector>

#ifndef TESSERA_SERVE_PROGRAM
#error "TESSERA_SERVE_PROGRAM must name the tessera-serve executable"
#endif

namespace tessera::test {

using namespace std::chrono_literals;
using json = nlohmann::json;

// How long the server may take to load its model and run its warm-up batch, and to exit
// after SIGTERM: generous bounds (both take well under a second here) that keep a broken
// server from hanging the suite.
inline constexpr auto start_timeout = 30s;
inline constexpr auto exit_timeout = 20s;

// One HTTP answer; status 0 when there was none (the connection failed: `error` says how).
struct Answer {
  int status = 0;
  httplib::Error error = httplib::Error::Success;
  std::string body;
  httplib::Headers headers;

  std::string header(const std::string& name) const {
    const auto found = headers.find(name);
    return found == headers.end() ? std::string() : found->second;
  }
  bool has_header(const std::string& name) const { return headers.find(name) != headers.end(); }
  // The body as JSON; a test failure (and null) when it is not.
  json body_json() const {
    json parsed = json::parse(body, nullptr, false);
    if (parsed.is_discarded()) {
      ADD_FAILURE() << "the body is not JSON (status " << status << "): " << body.substr(0, 300);
      return nullptr;
    }
    return parsed;
  }
};

// The answer of a request made with an httplib::Client of the test's own.
inline Answer answer_of(const httplib::Result& result) {
  Answer a;
  if (!result) {
    a.error = result.error();
    return a;
  }
  a.status = result->status;
  a.body = result->body;
  a.headers = result->headers;
  return a;
}

// For a test's failure message: the status and the start of the body.
inline std::string describe(const Answer& a) {
  if (a.status == 0) return "no answer: " + httplib::to_string(a.error);
  return "HTTP " + std::to_string(a.status) + ": " + a.body.substr(0, 400);
}

// A running tessera-serve, stopped (SIGTERM) by stop() or killed when it goes.
class ServeProcess {
 public:
  ServeProcess(const std::filesystem::path& model, const std::vector<std::string>& options = {})
      : process_(TESSERA_SERVE_PROGRAM, arguments(model, options)) {
    if (!process_.wait_for_output(" (model ", start_timeout)) {
      throw std::runtime_error("tessera-serve did not print its \"listening on\" line; its output:\n" +
                               process_.output());
    }
    std::smatch match;
    const std::string output = process_.output();
    if (!std::regex_search(output, match, std::regex("listening on http://127\\.0\\.0\\.1:([0-9]+) "))) {
      throw std::runtime_error("no port in tessera-serve's output:\n" + output);
    }
    port_ = std::stoi(match[1]);
  }

  int port() const { return port_; }
  ChildProcess& process() { return process_; }

  // SIGTERM, then the exit status (nothing: still running after exit_timeout).
  std::optional<int> stop() {
    process_.signal(SIGTERM);
    return process_.wait(exit_timeout);
  }

  // A request; `body` is sent with `content_type` for POST, PUT and PATCH.
  Answer request(const std::string& method, const std::string& path, const std::string& body = {},
                 const httplib::Headers& headers = {},
                 const std::string& content_type = "application/json") const {
    httplib::Client client("127.0.0.1", port_);
    client.set_connection_timeout(5, 0);
    client.set_read_timeout(30, 0);
    client.set_write_timeout(30, 0);
    httplib::Result result = method == "GET"      ? client.Get(path, headers)
                             : method == "POST"   ? client.Post(path, headers, body, content_type)
                             : method == "PUT"    ? client.Put(path, headers, body, content_type)
                             : method == "PATCH"  ? client.Patch(path, headers, body, content_type)
                             : method == "DELETE" ? client.Delete(path, headers)
                                                  : throw std::invalid_argument("method " + method);
    return answer_of(result);
  }
  Answer get(const std::string& path, const httplib::Headers& headers = {}) const {
    return request("GET", path, {}, headers);
  }
  Answer post(const std::string& path, const json& body, const httplib::Headers& headers = {}) const {
    return request("POST", path, body.dump(), headers);
  }

  std::string metrics() const {
    const Answer a = get("/metrics");
    EXPECT_EQ(a.status, 200) << describe(a);
    return a.body;
  }

 private:
  static std::vector<std::string> arguments(const std::filesystem::path& model,
                                            const std::vector<std::string>& options) {
    std::vector<std::string> args{"--model", model.string(), "--port", "0"};
    args.insert(args.end(), options.begin(), options.end());
    return args;
  }

  ChildProcess process_;
  int port_ = 0;
};

// The value of one series in a /metrics text: `series` is the name with its labels as the
// server writes them (tessera_requests_total{route="/embed",code="200"}); 0 when absent, as
// Prometheus reads a series not yet written.
inline double metric(const std::string& text, const std::string& series) {
  const std::string start = series + " ";
  for (std::size_t at = 0; at < text.size();) {
    const std::size_t end = std::min(text.find('\n', at), text.size());
    if (text.compare(at, start.size(), start) == 0) {
      return std::stod(text.substr(at + start.size(), end - at - start.size()));
    }
    at = end + 1;
  }
  return 0;
}

// The embedding floats of a base64 string (little-endian float32, as the server sends them).
inline std::vector<float> floats_of_base64(const std::string& text) {
  static_assert(std::endian::native == std::endian::little, "the embeddings' bytes are little-endian");
  const std::string bytes = serve::base64_decode(text, "embedding", 1 << 20);
  EXPECT_EQ(bytes.size() % sizeof(float), 0u);
  std::vector<float> out(bytes.size() / sizeof(float));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(float));
  return out;
}

// Whether two embeddings are equal bit for bit; a failure message naming the first
// difference otherwise.
inline ::testing::AssertionResult bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure() << "sizes differ: " << a.size() << " and " << b.size();
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::bit_cast<std::uint32_t>(a[i]) != std::bit_cast<std::uint32_t>(b[i])) {
      return ::testing::AssertionFailure() << "first difference at [" << i << "]: " << a[i] << " and " << b[i]
                                           << " (of " << a.size() << " values)";
    }
  }
  return ::testing::AssertionSuccess();
}

// Whether every |a[i] - b[i]| <= tolerance; the largest difference otherwise.
inline ::testing::AssertionResult all_close(const std::vector<float>& a, const std::vector<float>& b,
                                            double tolerance) {
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure() << "sizes differ: " << a.size() << " and " << b.size();
  }
  double largest = 0;
  std::size_t where = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(static_cast<double>(a[i]) - b[i]);
    if (d > largest) {
      largest = d;
      where = i;
    }
  }
  if (largest <= tolerance) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "largest difference " << largest << " at [" << where << "]: " << a[where]
                                       << " and " << b[where] << ", over " << tolerance;
}

// Checks the error body every non-200 answer has: {"error": {"message", "type", "code"}},
// code the status, the message containing `fragment`.
inline void expect_error(const Answer& a, int status, const std::string& fragment) {
  ASSERT_EQ(a.status, status) << describe(a);
  EXPECT_EQ(a.header("Content-Type"), "application/json");
  const json body = a.body_json();
  ASSERT_TRUE(body.is_object() && body.contains("error") && body["error"].is_object()) << a.body;
  const json& error = body["error"];
  ASSERT_TRUE(error.contains("message") && error["message"].is_string()) << a.body;
  EXPECT_TRUE(error.contains("type") && error["type"].is_string() && !error["type"].get<std::string>().empty())
      << a.body;
  EXPECT_EQ(error.value("code", 0), status) << a.body;
  EXPECT_NE(error["message"].get<std::string>().find(fragment), std::string::npos)
      << "the message does not name \"" << fragment << "\": " << error["message"];
}

}  // namespace tessera::test
