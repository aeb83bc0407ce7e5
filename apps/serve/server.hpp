#pragma once
// tessera-serve's routes (docs/serving.md): a model directory's Pipeline behind HTTP, with
// dynamic batching (batcher.hpp), an embedding cache (cache.hpp) and Prometheus metrics
// (metrics.hpp), on HttpServer (http.hpp).
//
//   GET  /health          200 once the model is loaded and a warm-up batch ran, else 503
//   GET  /info            the model (family, modalities, embedding size) and the limits
//   GET  /metrics         Prometheus text
//   POST /embed           {"samples": [{"text": "...", "image": B64, "audio": B64, "video": B64}],
//                          "allow_partial": false, "encoding_format": "float" | "base64"}
//   POST /v1/embeddings   OpenAI's: {"input": "..." | ["...", ...], "encoding_format"}
//   POST /similarity      {"a": [samples], "b": [samples]}: cosine similarities [|a|, |b|]
//   POST /classify        {"samples": [...], "labels": [...], "template": "a photo of a {}."}
//   POST /v1/streams      opens a stream (tessera's own models): {"id"}
//   POST /v1/streams/ID   {"video": B64} or {"audio": B64} (or "text", "image"): appends the
//                         window; the embedding of the whole stream so far (streams.hpp)
//   DELETE /v1/streams/ID closes it
//
// Every POST route also takes a multipart/form-data form standing for its JSON (form.hpp:
// samples[0].image=@cat.png, the files as they are), and /embed one sample's inputs at the
// top level ({"text": ...}, image=@cat.png).
//
// Answers: 400 a body that is not the JSON a route takes, 401 a missing or wrong API key,
// 404 an unknown route, 405 a known route with another method, 413 a body over
// --max-payload-mb or a request over the batch budget, 422 an input that cannot be encoded
// (named: "samples[2].image: ..."), 429 the queue full (Retry-After), 503 not ready or
// shutting down. Errors are {"error": {"message", "type", "code"}}.

#include <tessera/tessera.hpp>
#include <tessera/search_index.hpp>

#include "base64.hpp"
#include "batcher.hpp"
#include "cache.hpp"
#include "form.hpp"
#include "http.hpp"
#include "metrics.hpp"
#include "page.hpp"
#include "streams.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

namespace tessera::serve {

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                  // 0: any free port (printed)
  BatcherOptions batching;
  double max_payload_mb = 64;       // a request body, at most (413 past it)
  std::size_t max_samples = 256;    // samples of one request, at most (413 past it)
  double cache_mb = 256;            // 0: no cache
  double cache_ttl_seconds = 3600;  // 0: entries never expire
  std::string api_key;              // empty: no key asked
  StreamLimits streams;             // /v1/streams (tessera's own models)
  ConnectionLimits connections;
};

// An answer other than 200, raised inside a route.
struct HttpError : std::runtime_error {
  HttpError(int status, const std::string& message) : std::runtime_error(message), status(status) {}
  int status;
};

namespace detail {

inline const char* error_type(int status) {
  switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 405: return "method_not_allowed_error";
    case 413: return "payload_too_large_error";
    case 422: return "unprocessable_input_error";
    case 429: return "overloaded_error";
    case 503: return "unavailable_error";
    default: return "server_error";
  }
}

inline void send_json(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

inline void send_error(httplib::Response& res, int status, const std::string& message) {
  send_json(res, status, {{"error", {{"message", message}, {"type", error_type(status)}, {"code", status}}}});
}

// The kind of file the bytes hold, by their first bytes, as an extension the front ends
// know: PNG, JPEG, BMP, PPM/PGM, WAV, Y4M; anything else ".bin" (a video container, which
// FFmpeg probes by content).
inline std::string sniff_extension(std::string_view bytes) {
  const auto starts = [&](std::string_view magic) { return bytes.compare(0, magic.size(), magic) == 0; };
  if (starts("\x89PNG")) return ".png";
  if (starts("\xFF\xD8\xFF")) return ".jpg";
  if (starts("BM")) return ".bmp";
  if (starts("P6") || starts("P5")) return ".ppm";
  if (starts("RIFF")) return ".wav";
  if (starts("YUV4MPEG2")) return ".y4m";
  return ".mp4";
}

// A file of a request's bytes for the front ends, which read files: written into the
// server's scratch directory, removed when this goes.
class ScratchFile {
 public:
  ScratchFile(const std::filesystem::path& dir, std::string_view bytes, const std::string& extension) {
    static std::atomic<std::uint64_t> counter{0};
    path_ = dir / ("input-" + std::to_string(counter++) + extension);
    std::ofstream out(path_, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    check(out.good(), "cannot write the input to ", path_.string());
  }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;
  ~ScratchFile() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Bytes of a tensor's values, for the cache key.
template <class T>
std::string_view bytes_of(const T* data, std::size_t count) {
  return {reinterpret_cast<const char*>(data), count * sizeof(T)};
}

}  // namespace detail

class Server {
 public:
  Server(Pipeline<float> pipeline, std::string model_name, const ServeOptions& options)
      : pipeline_(std::move(pipeline)),
        model_name_(std::move(model_name)),
        options_(options),
        cache_(static_cast<std::size_t>(options.cache_mb * 1024 * 1024), options.cache_ttl_seconds),
        http_(options.connections) {
    check(options.max_payload_mb > 0, "--max-payload-mb must be positive");
    scratch_ = std::filesystem::temp_directory_path() /
               ("tessera-serve-" + std::to_string(::getpid()) + "-" + std::to_string(instance()));
    std::filesystem::create_directories(scratch_);
    describe_metrics();
    batcher_.emplace(options.batching,
                     [this](std::span<const Sample<float>> batch) { return encode(batch); },
                     [this](const BatchInfo& info) { observe_batch(info); });
    if (!pipeline_.is_pretrained()) streams_.emplace(pipeline_.model(), options.streams);
    routes();
  }
  ~Server() {
    batcher_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(scratch_, ignored);
  }

  // Binds the address; returns the port (the one chosen for port 0).
  int bind() {
    if (options_.port == 0) {
      port_ = http_.bind_to_any_port(options_.host);
      check(port_ > 0, "cannot listen on ", options_.host, " (any port)");
    } else {
      check(http_.bind_to_port(options_.host, options_.port), "cannot listen on ", options_.host, ":",
            options_.port, " (in use, or not an address of this machine)");
      port_ = options_.port;
    }
    return port_;
  }

  // One batch through the model, so the first request does not pay for the first run; then
  // /health answers 200.
  void warm_up() {
    std::vector<Sample<float>> batch{warm_up_sample()};
    batcher_->run(std::move(batch), 1);
    ready_ = true;
  }

  // Serves until stop(); then the queued requests are answered and it returns.
  void serve() {
    http_.listen_until_drained();
    batcher_->stop();
  }

  // Stops accepting connections and drains (safe from another thread).
  void stop() {
    ready_ = false;
    http_.drain();
  }

  const Metrics& metrics() const { return metrics_; }

 private:
  static int instance() {
    static std::atomic<int> n{0};
    return n++;
  }

  // ---- metrics ---------------------------------------------------------------------------

  void describe_metrics() {
    metrics_.describe("tessera_requests_total", MetricType::counter, "HTTP requests answered, by route and status code");
    metrics_.describe("tessera_request_duration_seconds", MetricType::histogram,
                      "Request latency by route, modality combination and stage (queue, preprocess, encode, total)",
                      latency_buckets());
    metrics_.describe("tessera_batch_size", MetricType::histogram, "Samples per encoded batch",
                      exponential_buckets(1, 2, 10));
    metrics_.describe("tessera_batch_tokens", MetricType::histogram, "Tokens per encoded batch",
                      exponential_buckets(16, 2, 12));
    metrics_.describe("tessera_queue_depth", MetricType::gauge, "Requests waiting for a batch");
    metrics_.describe("tessera_cache_hits_total", MetricType::counter, "Samples answered from the embedding cache");
    metrics_.describe("tessera_cache_misses_total", MetricType::counter, "Samples the embedding cache did not hold");
    metrics_.describe("tessera_cache_bytes", MetricType::gauge, "Bytes the embedding cache holds");
    metrics_.describe("tessera_cache_entries", MetricType::gauge, "Embeddings the embedding cache holds");
    metrics_.describe("tessera_open_streams", MetricType::gauge, "Streams open (/v1/streams)");
    metrics_.describe("tessera_open_connections", MetricType::gauge,
                      "HTTP connections open: being served or waiting for a request");
    metrics_.describe("tessera_stream_cache_bytes", MetricType::gauge, "Bytes the open streams' KV caches hold");
  }

  void observe_batch(const BatchInfo& info) {
    metrics_.observe("tessera_batch_size", {}, static_cast<double>(info.samples));
    metrics_.observe("tessera_batch_tokens", {}, static_cast<double>(info.tokens));
    metrics_.set("tessera_queue_depth", {}, static_cast<double>(batcher_depth()));
  }
  std::size_t batcher_depth() const { return batcher_ ? batcher_->depth() : 0; }

  // ---- the routes ------------------------------------------------------------------------

  // A route's handler: the request, its body as JSON (read by the route: httplib reads a body
  // itself only up to 8 KiB when it is form-encoded, as curl -d says it is; a multipart form
  // becomes the JSON object it stands for, form.hpp; null for GET and DELETE), the response.
  using Route = std::function<void(const httplib::Request&, const nlohmann::json&, httplib::Response&)>;

  void routes() {
    http_.set_payload_max_length(static_cast<std::size_t>(options_.max_payload_mb * 1024 * 1024));
    http_.set_keep_alive_max_count(options_.connections.max_requests_per_connection);
    http_.set_tcp_nodelay(true);  // a response's header and body go out without waiting for an ACK

    get("/health", [this](const auto&, const auto&, auto& res) {
      if (!ready_) throw HttpError(503, http_.draining() ? "shutting down" : "warming up");
      detail::send_json(res, 200, {{"status", "ok"}});
    });
    get("/info", [this](const auto&, const auto&, auto& res) { detail::send_json(res, 200, info()); });
    get("/metrics", [this](const auto&, const auto&, auto& res) {
      update_gauges();
      res.set_content(metrics_.text(), "text/plain; version=0.0.4; charset=utf-8");
    });
    post("/embed", [this](const auto&, const auto& body, auto& res) { embed(body, res); });
    post("/v1/embeddings", [this](const auto&, const auto& body, auto& res) { openai_embeddings(body, res); });
    post("/similarity", [this](const auto&, const auto& body, auto& res) { similarity(body, res); });
    post("/classify", [this](const auto&, const auto& body, auto& res) { classify(body, res); });
    get("/", [](const auto&, const auto&, auto& res) { res.set_content(index_html, "text/html; charset=utf-8"); });
    post("/v1/streams", [this](const auto&, const auto&, auto& res) { open_stream(res); });
    // a stream's own route: POST appends a window, DELETE closes it
    known_.emplace_back(stream_route, "POST, DELETE");
    http_.Post(stream_route, [this](const httplib::Request& req, httplib::Response& res,
                                    const httplib::ContentReader& reader) {
      answer("/v1/streams/{id}", [this](const auto& r, const auto& body, auto& out) { append_stream(r, body, out); },
             req, res, [&] { return read_body(req, res, reader); });
    });
    http_.Delete(stream_route, [this](const httplib::Request& req, httplib::Response& res) {
      answer("/v1/streams/{id}", [this](const auto& r, const auto&, auto& out) { close_stream(r, out); }, req, res,
             [] { return nlohmann::json(); });
    });

    // a known route with another method: 405 with Allow
    for (const auto& [path, method] : known_) {
      const httplib::Server::Handler refuse = [this, method = method](const httplib::Request& req,
                                                                      httplib::Response& res) {
        res.set_header("Allow", method);
        detail::send_error(res, 405, req.method + " " + req.path + ": this route takes " + method);
        count(req, res);
      };
      const auto takes = [&m = method](const char* name) { return m.find(name) != std::string::npos; };
      if (!takes("GET")) http_.Get(path, refuse);
      if (!takes("POST")) http_.Post(path, refuse);
      http_.Put(path, refuse);
      if (!takes("DELETE")) http_.Delete(path, refuse);
      http_.Patch(path, refuse);
    }
    http_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (options_.api_key.empty() || req.path == "/health" || req.path == "/") {
        return httplib::Server::HandlerResponse::Unhandled;  // the page asks for the key itself
      }
      if (!authorized(req)) {
        res.set_header("WWW-Authenticate", "Bearer");
        detail::send_error(res, 401, req.has_header("Authorization")
                                         ? "the API key is wrong"
                                         : "an API key is required: Authorization: Bearer <key>");
        count(req, res);
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    // answers httplib makes itself (404, 413, 400 for a malformed request line): a JSON body.
    // httplib calls this for every answer >= 400; the others (a route's, the 401, the 405,
    // the 500) have their body and were counted where they were made.
    http_.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      const std::string message =
          res.status == 404   ? "no route " + req.method + " " + req.path
          : res.status == 413 ? too_large()
                              : "HTTP " + std::to_string(res.status);
      detail::send_error(res, res.status, message);
      count(req, res);
    });
    http_.set_exception_handler([this](const httplib::Request& req, httplib::Response& res, std::exception_ptr e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& error) {
        detail::send_error(res, 500, std::string("internal error: ") + error.what());
      } catch (...) {
        detail::send_error(res, 500, "internal error");
      }
      count(req, res);
    });
  }

  static std::string number(double v) {
    std::ostringstream out;
    out << v;
    return out.str();
  }
  std::string too_large() const {
    return "the body is larger than --max-payload-mb " + number(options_.max_payload_mb) + " MB";
  }

  // A route's handler, its errors turned into answers, the request counted and timed.
  // (The body is read here, inside the guard: a client that stops sending is a failed read.)
  template <class Reader>
  void answer(const std::string& route, const Route& handler, const httplib::Request& req, httplib::Response& res,
              Reader read_body) {
    const auto start = std::chrono::steady_clock::now();
    try {
      handler(req, read_body(), res);
    } catch (const HttpError& e) {
      if (e.status == 429) res.set_header("Retry-After", "1");
      detail::send_error(res, e.status, e.what());
    } catch (const FormError& e) {
      detail::send_error(res, e.status, e.what());
    } catch (const QueueFull& e) {
      res.set_header("Retry-After", "1");
      detail::send_error(res, 429, std::string("busy: ") + e.what() + "; retry later");
    } catch (const Stopping& e) {
      detail::send_error(res, 503, e.what());
    } catch (const nlohmann::json::exception& e) {
      detail::send_error(res, 400, std::string("the body is not the JSON this route takes: ") + e.what());
    } catch (const Error& e) {
      detail::send_error(res, 422, e.what());
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    metrics_.observe("tessera_request_duration_seconds",
                     {{"route", route}, {"modalities", res.get_header_value("X-Modalities")}, {"stage", "total"}},
                     seconds);
    count(req, res);
  }
  void get(const std::string& path, Route handler) {
    known_.emplace_back(path, "GET");
    http_.Get(path, [this, path, handler = std::move(handler)](const httplib::Request& req, httplib::Response& res) {
      answer(path, handler, req, res, [] { return nlohmann::json(); });
    });
  }
  void post(const std::string& path, Route handler) {
    known_.emplace_back(path, "POST");
    http_.Post(path, [this, path, handler = std::move(handler)](const httplib::Request& req, httplib::Response& res,
                                                                 const httplib::ContentReader& reader) {
      answer(path, handler, req, res, [&] { return read_body(req, res, reader); });
    });
  }
  // A POST's body as JSON: the JSON it holds, or the object a multipart form stands for
  // (form.hpp). It is read to its end even when refused, so that a keep-alive connection's next
  // request starts where it should; a form whose parsing stopped midway cannot be, and its
  // connection is closed after the answer. httplib refuses a Content-Length over the limit unread
  // (status 413); a body sent in chunks has no length to check, so its size is checked here as
  // it arrives, the rest dropped past the limit.
  nlohmann::json read_body(const httplib::Request& req, httplib::Response& res,
                           const httplib::ContentReader& reader) const {
    const auto limit = static_cast<std::size_t>(options_.max_payload_mb * 1024 * 1024);
    std::size_t size = 0;
    bool over = false;
    const auto take = [&](std::string& into, const char* data, std::size_t n) {
      size += n;
      over = over || size > limit;
      if (!over) into.append(data, n);
      return true;
    };
    if (req.is_multipart_form_data()) {
      std::vector<FormField> fields;
      const std::size_t max_fields = 8 * options_.max_samples + 16;  // 4 modalities a sample, a and b, options
      bool too_many = false;
      const bool complete = reader(
          [&](const httplib::MultipartFormData& part) {
            too_many = too_many || fields.size() == max_fields;
            if (!too_many) fields.push_back({part.name, {}});
            return true;
          },
          [&](const char* data, std::size_t n) {
            return too_many ? true : take(fields.back().content, data, n);
          });
      if (over || res.status == 413) throw HttpError(413, too_large());
      if (!complete) {
        close_after_response(res);  // the parser stopped midway: the body's rest is unread
        throw HttpError(400, "the multipart/form-data body could not be read (malformed, or cut short)");
      }
      if (too_many) {
        throw HttpError(413, "the form has more than " + std::to_string(max_fields) + " fields (--max-samples " +
                                 std::to_string(options_.max_samples) + ")");
      }
      return form_body(std::move(fields), options_.max_samples);
    }
    std::string text;
    const bool complete = reader([&](const char* data, std::size_t n) { return take(text, data, n); });
    if (over || res.status == 413) throw HttpError(413, too_large());
    if (!complete) {
      close_after_response(res);
      throw HttpError(400, "the body could not be read whole");
    }
    return parse_body(text);
  }
  void count(const httplib::Request& req, const httplib::Response& res) {
    const bool known = std::any_of(known_.begin(), known_.end(), [&](const auto& k) { return k.first == req.path; });
    static const std::regex stream_path(stream_route);
    const bool stream = std::regex_match(req.path, stream_path);
    metrics_.add("tessera_requests_total", {{"route", stream ? "/v1/streams/{id}" : known ? req.path : "other"},
                                            {"code", std::to_string(res.status)}});
  }

  bool authorized(const httplib::Request& req) const {
    const std::string header = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    if (header.size() != prefix.size() + options_.api_key.size() || header.compare(0, prefix.size(), prefix) != 0) {
      return false;
    }
    unsigned char differ = 0;  // constant time in the key's length
    for (std::size_t i = 0; i < options_.api_key.size(); ++i) {
      differ |= static_cast<unsigned char>(header[prefix.size() + i] ^ options_.api_key[i]);
    }
    return differ == 0;
  }

  void update_gauges() {
    const CacheStats c = cache_.stats();
    metrics_.set("tessera_cache_bytes", {}, static_cast<double>(c.bytes));
    metrics_.set("tessera_cache_entries", {}, static_cast<double>(c.entries));
    metrics_.set("tessera_queue_depth", {}, static_cast<double>(batcher_depth()));
    metrics_.set("tessera_open_streams", {}, streams_ ? static_cast<double>(streams_->open_count()) : 0.0);
    metrics_.set("tessera_open_connections", {}, static_cast<double>(http_.open_connections()));
    metrics_.set("tessera_stream_cache_bytes", {}, streams_ ? static_cast<double>(streams_->bytes()) : 0.0);
  }

  nlohmann::json info() const {
    nlohmann::json model = {{"name", model_name_},
                            {"kind", pipeline_.is_pretrained() ? pipeline_.tower_model().config.family : "tessera"},
                            {"modalities", pipeline_.modalities()},
                            {"embedding_size", pipeline_.embed_dim()},
                            {"logit_scale", pipeline_.logit_scale()}};
    return {{"model", model},
            {"limits",
             {{"max_batch_tokens", options_.batching.max_batch_tokens},
              {"max_wait_ms", options_.batching.max_wait_seconds * 1000},
              {"max_queue", options_.batching.max_queue},
              {"max_payload_mb", options_.max_payload_mb},
              {"max_samples", options_.max_samples},
              {"cache_mb", options_.cache_mb},
              {"cache_ttl_s", options_.cache_ttl_seconds},
              {"http_threads", options_.connections.workers},
              {"max_connections", options_.connections.max_connections}}},
            {"version", "tessera-serve 1"}};
  }

  // ---- samples: JSON -> Sample, cached, batched --------------------------------------------

  // A sample of a request, prepared.
  struct Prepared {
    Sample<float> sample;
    std::vector<std::string> used;                              // modalities encoded
    std::vector<std::pair<std::string, std::string>> dropped;   // (modality, why)
    CacheKey key;
    std::size_t tokens = 0;
    std::optional<std::vector<float>> embedding;
    bool cached = false;  // the embedding came from the cache
  };

  static std::string join(const std::vector<std::string>& names) {
    std::string out;
    for (const auto& n : names) out += (out.empty() ? "" : "+") + n;
    return out;
  }

  // The tokens a sample costs a batch: text ids, image patches, audio and video tokens as the
  // model counts them.
  std::size_t tokens_of(const Sample<float>& s) const {
    std::size_t n = 0;
    if (s.text) n += s.text->size();
    if (pipeline_.is_pretrained()) {
      const TowerModel<float>& m = pipeline_.tower_model();
      if (s.image) n += static_cast<std::size_t>(m.tower(Modality::image).config.tokens());
      if (s.audio) {
        const TowerConfig& c = m.tower(Modality::audio).config;
        n += static_cast<std::size_t>(c.tokens() * std::max<Index>(1, s.audio->cols() / c.width_in));
      }
      if (s.video) {
        const TowerConfig& c = m.tower(Modality::video).config;
        n += static_cast<std::size_t>(c.tokens() * std::max<Index>(1, s.video->dimension(0) / c.clip_frames));
      }
    } else {
      const Config& c = pipeline_.config();
      if (s.image) n += static_cast<std::size_t>(c.image->num_patches());
      if (s.audio) n += static_cast<std::size_t>((s.audio->cols() + c.audio->patch_frames - 1) / c.audio->patch_frames);
      if (s.video) {
        n += static_cast<std::size_t>(std::min<Index>(
            c.video->max_tokens, (s.video->dimension(0) + c.video->tubelet - 1) / c.video->tubelet * c.image->num_patches()));
      }
    }
    return std::max<std::size_t>(n, 1);
  }

  CacheKey key_of(const Sample<float>& s) const {
    CacheKeyBuilder key;
    key.add(model_name_).add(std::to_string(pipeline_.embed_dim()));
    const auto shape = [&](std::initializer_list<Index> dims) {
      std::string text;
      for (const Index d : dims) text += std::to_string(d) + ",";
      key.add(text);
    };
    if (s.text) key.add("text").add(detail::bytes_of(s.text->data(), s.text->size()));
    if (s.image) {
      key.add("image");
      shape({s.image->dimension(0), s.image->dimension(1), s.image->dimension(2)});
      key.add(detail::bytes_of(s.image->data(), static_cast<std::size_t>(s.image->size())));
    }
    if (s.audio) {
      key.add("audio");
      shape({s.audio->rows(), s.audio->cols()});
      key.add(detail::bytes_of(s.audio->data(), static_cast<std::size_t>(s.audio->size())));
    }
    if (s.video) {
      key.add("video");
      shape({s.video->dimension(0), s.video->dimension(1), s.video->dimension(2), s.video->dimension(3)});
      key.add(detail::bytes_of(s.video->data(), static_cast<std::size_t>(s.video->size())));
    }
    return key.finish();
  }

  // One input of a sample through the front ends: a text, or a file's bytes, given in base64 (a
  // JSON string) or as they are (a form's file, a JSON binary value). Images and WAVs are
  // decoded in memory; a video goes through a scratch file (FFmpeg reads files).
  Sample<float> load_input(const std::string& modality, const nlohmann::json& value, const std::string& where) const {
    if (modality == "text") {
      const RawInput input{"text", value.get_ref<const std::string&>(), {}};
      return pipeline_.load(std::span<const RawInput>(&input, 1));
    }
    std::string decoded;
    std::string_view bytes;
    if (value.is_binary()) {
      const auto& binary = value.get_binary();
      bytes = std::string_view(reinterpret_cast<const char*>(binary.data()), binary.size());
    } else {
      decoded = base64_decode(value.get_ref<const std::string&>(), where,
                              static_cast<std::size_t>(options_.max_payload_mb * 1024 * 1024));
      bytes = decoded;
    }
    check(!bytes.empty(), where, ": empty");
    if (modality == "image" || modality == "audio") {  // decoded in memory, named by `where`
      RawInput input{modality, where, {}};
      input.bytes = std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
      return pipeline_.load(std::span<const RawInput>(&input, 1));
    }
    const detail::ScratchFile file(scratch_, bytes, detail::sniff_extension(bytes));
    const RawInput input{modality, file.path().string(), {}};
    try {
      return pipeline_.load(std::span<const RawInput>(&input, 1));
    } catch (const Error& e) {
      // the scratch file's name means nothing to the client
      std::string message = e.what();
      const std::string path = file.path().string();
      for (std::size_t at; (at = message.find(path)) != std::string::npos;) message.replace(at, path.size(), where);
      fail(message.find(where) == std::string::npos ? where + ": " + message : message);
    }
  }

  // samples[i] of a request: its inputs loaded (a broken one dropped when allow_partial and
  // another remains), checked, its key and tokens, and the cache asked.
  Prepared prepare(const nlohmann::json& item, const std::string& where, bool allow_partial) const {
    if (!item.is_object()) throw HttpError(400, where + ": expected an object with text, image, audio or video");
    static const std::vector<std::string> modalities = {"text", "image", "audio", "video"};
    for (const auto& entry : item.items()) {
      if (std::find(modalities.begin(), modalities.end(), entry.key()) == modalities.end()) {
        throw HttpError(400, where + ": unknown key \"" + entry.key() + "\" (a sample holds text, image, audio, video)");
      }
      const bool text = entry.key() == "text";
      if (!entry.value().is_string() && (text || !entry.value().is_binary())) {
        throw HttpError(400, where + "." + entry.key() + ": expected a string (" +
                                 (text ? "the text" : "the file's bytes in base64, or a form's file") + ")");
      }
    }
    Prepared p;
    std::vector<std::string> given;
    for (const std::string& m : modalities) {
      if (!item.contains(m)) continue;
      given.push_back(m);
      const std::string at = where + "." + m;
      const std::vector<std::string> names = pipeline_.modalities();
      try {
        check(std::find(names.begin(), names.end(), m) != names.end(), at, ": the model takes no ", m,
              " (it takes ", join(names), ")");
        Sample<float> part = load_input(m, item.at(m), at);
        merge(p.sample, std::move(part));
        p.used.push_back(m);
      } catch (const Error& e) {
        if (!allow_partial) throw;
        p.dropped.emplace_back(m, e.what());
      }
    }
    if (given.empty()) throw HttpError(400, where + ": no input (give text, image, audio or video)");
    if (p.used.empty()) {
      throw HttpError(422, where + ": no input could be used: " + p.dropped.front().second);
    }
    check_sample(p.sample, where);
    p.tokens = tokens_of(p.sample);
    if (cache_.enabled()) p.key = key_of(p.sample);  // hashing the inputs costs: only for a cache
    return p;
  }

  // The model's checks of a sample. A tessera model's audio longer than audio.max_tokens
  // chunks is split into clips by the encoder (as Pipeline and tessera-encode take it): such
  // a sample is checked with its first clip in place of its audio.
  void check_sample(const Sample<float>& s, const std::string& where) const {
    if (!pipeline_.is_pretrained() && s.audio && pipeline_.config().audio) {
      const AudioConfig& audio = *pipeline_.config().audio;
      const Index frames_per_clip = audio.max_tokens * audio.patch_frames;
      if (s.audio->cols() > frames_per_clip) {
        Sample<float> first_clip = s;
        first_clip.audio = s.audio->leftCols(frames_per_clip);
        pipeline_.check_sample(first_clip, where);
        return;
      }
    }
    pipeline_.check_sample(s, where);
  }

  static void merge(Sample<float>& into, Sample<float>&& part) {
    if (part.text) into.text = std::move(part.text);
    if (part.image) into.image = std::move(part.image);
    if (part.audio) into.audio = std::move(part.audio);
    if (part.video) into.video = std::move(part.video);
  }

  // The embeddings of prepared samples: the cache's, the rest through one batch.
  // Returns whether every one came from the cache.
  bool embed_prepared(std::vector<Prepared>& samples, const std::string& route, const std::string& combination) {
    std::vector<Sample<float>> misses;
    std::vector<std::size_t> where;
    std::size_t tokens = 0;
    for (std::size_t i = 0; i < samples.size(); ++i) {
      samples[i].embedding = cache_.get(samples[i].key);
      samples[i].cached = samples[i].embedding.has_value();
      if (samples[i].cached) {
        metrics_.add("tessera_cache_hits_total", {});
        continue;
      }
      metrics_.add("tessera_cache_misses_total", {});
      tokens += samples[i].tokens;
      where.push_back(i);
      misses.push_back(std::move(samples[i].sample));  // not needed once embedded
    }
    if (misses.empty()) return true;
    if (!batcher_->fits(tokens)) {
      throw HttpError(413, "the request's samples hold " + std::to_string(tokens) +
                               " tokens, more than a batch takes (--max-batch-tokens " +
                               std::to_string(options_.batching.max_batch_tokens) + "): send fewer at once");
    }
    Batcher::Result result = batcher_->run(std::move(misses), tokens);
    const Labels labels{{"route", route}, {"modalities", combination}};
    const auto stage = [&](const char* name, double seconds) {
      Labels l = labels;
      l.emplace_back("stage", name);
      metrics_.observe("tessera_request_duration_seconds", l, seconds);
    };
    stage("queue", result.queue_seconds);
    stage("encode", result.encode_seconds);
    for (std::size_t j = 0; j < where.size(); ++j) {
      Prepared& p = samples[where[j]];
      p.embedding = std::move(result.embeddings[j]);
      cache_.put(p.key, *p.embedding);
    }
    return false;
  }

  std::vector<std::vector<float>> encode(std::span<const Sample<float>> batch) {
    const std::vector<Encoding<float>> encodings = pipeline_.encode_batch(batch);
    std::vector<std::vector<float>> out;
    out.reserve(encodings.size());
    for (const auto& e : encodings) out.emplace_back(e.embedding.data(), e.embedding.data() + e.embedding.size());
    return out;
  }

  Sample<float> warm_up_sample() const {
    Sample<float> s;
    if (pipeline_.is_pretrained()) {
      const TowerModel<float>& m = pipeline_.tower_model();
      if (m.has(Modality::text)) {
        s.text = std::vector<std::int64_t>{0};
        const TowerConfig& t = m.tower(Modality::text).config;
        if (t.pooling == TowerPooling::eot_argmax || t.pooling == TowerPooling::eos_first) {
          s.text = std::vector<std::int64_t>{std::max<std::int64_t>(0, t.eos_token_id >= 0 ? t.eos_token_id : t.vocab_size - 1)};
        }
      } else {
        const TowerConfig& c = m.tower(Modality::image).config;
        Tensor3<float> image(c.channels, c.height, c.width_in);
        image.setZero();
        s.image = std::move(image);
      }
    } else {
      const Config& c = pipeline_.config();
      if (c.text) {
        s.text = std::vector<std::int64_t>{0};
      } else if (c.image) {
        Tensor3<float> image(c.image->channels, c.image->size, c.image->size);
        image.setZero();
        s.image = std::move(image);
      } else {
        const RawInput none{"text", "", {}};
        s = pipeline_.load(std::span<const RawInput>(&none, 1));
      }
    }
    return s;
  }

  // ---- request bodies ----------------------------------------------------------------------

  static nlohmann::json parse_body(const std::string& text) {
    nlohmann::json body = nlohmann::json::parse(text, nullptr, false);
    if (body.is_discarded()) throw HttpError(400, "the body is not JSON");
    if (!body.is_object()) throw HttpError(400, "the body must be a JSON object");
    return body;
  }

  static void only_keys(const nlohmann::json& body, std::initializer_list<const char*> keys) {
    for (const auto& item : body.items()) {
      if (std::none_of(keys.begin(), keys.end(), [&](const char* k) { return item.key() == k; })) {
        std::string list;
        for (const char* k : keys) list += std::string(list.empty() ? "" : ", ") + k;
        throw HttpError(400, "unknown key \"" + item.key() + "\" (this route takes " + list + ")");
      }
    }
  }

  template <class T>
  static T value_or(const nlohmann::json& body, const char* key, T fallback, const char* expected) {
    if (!body.contains(key)) return fallback;
    try {
      return body.at(key).get<T>();
    } catch (const nlohmann::json::exception&) {
      throw HttpError(400, std::string("\"") + key + "\": expected " + expected);
    }
  }

  // A list of sample objects under `key`, prepared.
  std::vector<Prepared> prepare_all(const nlohmann::json& body, const char* key, bool allow_partial) const {
    if (!body.contains(key) || !body.at(key).is_array()) {
      throw HttpError(400, std::string("\"") + key + "\": expected a list of samples");
    }
    const auto& items = body.at(key);
    if (items.empty()) throw HttpError(400, std::string("\"") + key + "\": empty (give at least one sample)");
    if (items.size() > options_.max_samples) {
      throw HttpError(413, std::string("\"") + key + "\": " + std::to_string(items.size()) +
                               " samples, more than --max-samples " + std::to_string(options_.max_samples));
    }
    std::vector<Prepared> out;
    out.reserve(items.size());
    for (std::size_t i = 0; i < items.size(); ++i) {
      out.push_back(prepare(items[i], std::string(key) + "[" + std::to_string(i) + "]", allow_partial));
    }
    return out;
  }

  static std::string combination_of(const std::vector<Prepared>& samples) {
    std::set<std::string> seen;
    for (const auto& p : samples) seen.insert(join(p.used));
    std::string out;
    for (const auto& s : seen) out += (out.empty() ? "" : ",") + s;
    return out;
  }

  static nlohmann::json embedding_json(const std::vector<float>& e, bool base64) {
    if (!base64) return e;
    return base64_encode(std::string_view(reinterpret_cast<const char*>(e.data()), e.size() * sizeof(float)));
  }

  static bool encoding_format(const nlohmann::json& body) {
    const std::string format = value_or<std::string>(body, "encoding_format", "float", "\"float\" or \"base64\"");
    if (format != "float" && format != "base64") {
      throw HttpError(400, "\"encoding_format\": \"" + format + "\" is not \"float\" or \"base64\"");
    }
    return format == "base64";
  }

  void timed_preprocess(const std::string& route, const std::string& combination, double seconds) {
    metrics_.observe("tessera_request_duration_seconds",
                     {{"route", route}, {"modalities", combination}, {"stage", "preprocess"}}, seconds);
  }

  // /embed's shorthand: text, image, audio or video at a body's top level are one sample, as
  // {"samples": [{...}]} (curl -F text="a cat" -F image=@cat.png .../embed). Nothing when the
  // body does not use it (then it is taken as it is, not copied).
  static std::optional<nlohmann::json> one_sample_shorthand(const nlohmann::json& body) {
    static const std::set<std::string> modalities = {"text", "image", "audio", "video"};
    const auto items = body.items();
    if (std::none_of(items.begin(), items.end(), [](const auto& i) { return modalities.count(i.key()) > 0; })) {
      return std::nullopt;
    }
    if (body.contains("samples")) {
      throw HttpError(400, "inputs both in \"samples\" and at the top level: give a list of samples, or one "
                           "sample's text, image, audio, video at the top level");
    }
    nlohmann::json out = nlohmann::json::object(), sample = nlohmann::json::object();
    for (const auto& item : body.items()) (modalities.count(item.key()) > 0 ? sample : out)[item.key()] = item.value();
    out["samples"] = nlohmann::json::array({std::move(sample)});
    return out;
  }

  void embed(const nlohmann::json& request, httplib::Response& res) {
    const std::optional<nlohmann::json> reshaped = one_sample_shorthand(request);
    const nlohmann::json& body = reshaped ? *reshaped : request;
    only_keys(body, {"samples", "allow_partial", "normalize", "encoding_format"});
    const bool allow_partial = value_or<bool>(body, "allow_partial", false, "true or false");
    if (!value_or<bool>(body, "normalize", true, "true or false")) {
      throw HttpError(422, "\"normalize\": false: tessera's embeddings are unit vectors by definition (the "
                           "model's last step); there is no other form to return");
    }
    const bool base64 = encoding_format(body);
    const auto start = std::chrono::steady_clock::now();
    std::vector<Prepared> samples = prepare_all(body, "samples", allow_partial);
    const std::string combination = combination_of(samples);
    res.set_header("X-Modalities", combination);
    timed_preprocess("/embed", combination, seconds_since(start));
    const bool all_cached = embed_prepared(samples, "/embed", combination);
    nlohmann::json embeddings = nlohmann::json::array(), details = nlohmann::json::array();
    std::size_t tokens = 0;
    for (const Prepared& p : samples) {
      embeddings.push_back(embedding_json(*p.embedding, base64));
      nlohmann::json d = {{"modalities", p.used}, {"cache", p.cached ? "hit" : "miss"}};
      nlohmann::json dropped = nlohmann::json::array();
      for (const auto& [m, why] : p.dropped) dropped.push_back({{"modality", m}, {"reason", why}});
      d["dropped"] = std::move(dropped);
      details.push_back(std::move(d));
      tokens += p.tokens;
    }
    res.set_header("X-Cache", all_cached ? "hit" : "miss");
    detail::send_json(res, 200, {{"model", model_name_},
                                 {"embeddings", std::move(embeddings)},
                                 {"samples", std::move(details)},
                                 {"usage", {{"tokens", tokens}}}});
  }

  void openai_embeddings(const nlohmann::json& body, httplib::Response& res) {
    only_keys(body, {"input", "model", "encoding_format", "user", "dimensions"});
    if (!body.contains("input")) throw HttpError(400, "\"input\": required (a string or a list of strings)");
    std::vector<std::string> texts;
    const auto& input = body.at("input");
    if (input.is_string()) {
      texts.push_back(input.get<std::string>());
    } else if (input.is_array() && !input.empty() &&
               std::all_of(input.begin(), input.end(), [](const auto& v) { return v.is_string(); })) {
      for (const auto& v : input) texts.push_back(v.get<std::string>());
    } else {
      throw HttpError(400, "\"input\": expected a string or a non-empty list of strings (token arrays are not taken)");
    }
    if (body.contains("dimensions") && body.at("dimensions") != pipeline_.embed_dim()) {
      throw HttpError(422, "\"dimensions\": the model's embeddings have " + std::to_string(pipeline_.embed_dim()) +
                               " values and are not shortened");
    }
    const bool base64 = encoding_format(body);
    nlohmann::json samples = nlohmann::json::array();
    for (const auto& t : texts) samples.push_back({{"text", t}});
    const auto start = std::chrono::steady_clock::now();
    std::vector<Prepared> prepared = prepare_all({{"input", samples}}, "input", false);
    res.set_header("X-Modalities", "text");
    timed_preprocess("/v1/embeddings", "text", seconds_since(start));
    const bool all_cached = embed_prepared(prepared, "/v1/embeddings", "text");
    nlohmann::json data = nlohmann::json::array();
    std::size_t tokens = 0;
    for (std::size_t i = 0; i < prepared.size(); ++i) {
      data.push_back({{"object", "embedding"}, {"index", i}, {"embedding", embedding_json(*prepared[i].embedding, base64)}});
      tokens += prepared[i].tokens;
    }
    res.set_header("X-Cache", all_cached ? "hit" : "miss");
    detail::send_json(res, 200, {{"object", "list"},
                                 {"data", std::move(data)},
                                 {"model", body.contains("model") && body.at("model").is_string()
                                               ? body.at("model").get<std::string>() : model_name_},
                                 {"usage", {{"prompt_tokens", tokens}, {"total_tokens", tokens}}}});
  }

  static Matrix<float> matrix_of(const std::vector<Prepared>& samples) {
    Matrix<float> m(static_cast<Index>(samples.size()), static_cast<Index>(samples.front().embedding->size()));
    for (std::size_t i = 0; i < samples.size(); ++i) {
      m.row(static_cast<Index>(i)) = Eigen::Map<const RowVector<float>>(samples[i].embedding->data(), m.cols());
    }
    return m;
  }

  void similarity(const nlohmann::json& body, httplib::Response& res) {
    only_keys(body, {"a", "b", "allow_partial"});
    const bool allow_partial = value_or<bool>(body, "allow_partial", false, "true or false");
    const auto start = std::chrono::steady_clock::now();
    std::vector<Prepared> a = prepare_all(body, "a", allow_partial), b = prepare_all(body, "b", allow_partial);
    std::vector<Prepared> both;
    for (auto& p : a) both.push_back(std::move(p));
    for (auto& p : b) both.push_back(std::move(p));
    const std::string combination = combination_of(both);
    res.set_header("X-Modalities", combination);
    timed_preprocess("/similarity", combination, seconds_since(start));
    const bool all_cached = embed_prepared(both, "/similarity", combination);
    const std::size_t n = a.size();
    std::vector<Prepared> left(std::make_move_iterator(both.begin()), std::make_move_iterator(both.begin() + static_cast<std::ptrdiff_t>(n)));
    std::vector<Prepared> right(std::make_move_iterator(both.begin() + static_cast<std::ptrdiff_t>(n)), std::make_move_iterator(both.end()));
    const Matrix<float> scores = matrix_of(left) * matrix_of(right).transpose();
    nlohmann::json rows = nlohmann::json::array();
    for (Index i = 0; i < scores.rows(); ++i) {
      rows.push_back(std::vector<float>(scores.row(i).data(), scores.row(i).data() + scores.cols()));
    }
    res.set_header("X-Cache", all_cached ? "hit" : "miss");
    detail::send_json(res, 200, {{"model", model_name_}, {"scores", std::move(rows)}, {"logit_scale", pipeline_.logit_scale()}});
  }

  void classify(const nlohmann::json& body, httplib::Response& res) {
    only_keys(body, {"samples", "labels", "template", "allow_partial", "top"});
    const bool allow_partial = value_or<bool>(body, "allow_partial", false, "true or false");
    const std::string label_template = value_or<std::string>(body, "template", default_label_template, "a string");
    if (!body.contains("labels") || !body.at("labels").is_array() ||
        !std::all_of(body.at("labels").begin(), body.at("labels").end(), [](const auto& v) { return v.is_string(); })) {
      throw HttpError(400, "\"labels\": expected a list of strings");
    }
    const std::vector<std::string> names = pipeline_.modalities();
    if (std::find(names.begin(), names.end(), "text") == names.end()) {
      throw HttpError(422, "the model has no text modality: zero-shot classification compares with the labels as texts");
    }
    const std::vector<std::string> labels = check_labels(body.at("labels").get<std::vector<std::string>>());
    if (labels.size() > options_.max_samples) {
      throw HttpError(413, "\"labels\": " + std::to_string(labels.size()) + " labels, more than --max-samples " +
                               std::to_string(options_.max_samples));
    }
    const std::vector<std::string> texts = label_texts(labels, label_template);
    const auto top = value_or<std::size_t>(body, "top", labels.size(), "a positive integer");
    const auto start = std::chrono::steady_clock::now();
    std::vector<Prepared> samples = prepare_all(body, "samples", allow_partial);
    nlohmann::json label_samples = nlohmann::json::array();
    for (const auto& t : texts) label_samples.push_back({{"text", t}});
    std::vector<Prepared> label_prepared = prepare_all({{"labels", label_samples}}, "labels", false);
    const std::string combination = combination_of(samples);
    res.set_header("X-Modalities", combination);
    timed_preprocess("/classify", combination, seconds_since(start));
    std::vector<Prepared> both;
    const std::size_t n = samples.size();
    for (auto& p : samples) both.push_back(std::move(p));
    for (auto& p : label_prepared) both.push_back(std::move(p));
    const bool all_cached = embed_prepared(both, "/classify", combination);
    std::vector<Prepared> inputs(std::make_move_iterator(both.begin()), std::make_move_iterator(both.begin() + static_cast<std::ptrdiff_t>(n)));
    std::vector<Prepared> classes(std::make_move_iterator(both.begin() + static_cast<std::ptrdiff_t>(n)), std::make_move_iterator(both.end()));
    const ZeroShotResult<float> result = zero_shot_probabilities(matrix_of(inputs), matrix_of(classes), pipeline_.logit_scale());
    nlohmann::json results = nlohmann::json::array();
    for (Index i = 0; i < result.probabilities.rows(); ++i) {
      nlohmann::json ranked = nlohmann::json::array();
      for (const Index k : ranking(result.probabilities.row(i), std::max<std::size_t>(top, 1))) {
        ranked.push_back({{"label", labels[static_cast<std::size_t>(k)]},
                          {"probability", result.probabilities(i, k)},
                          {"cosine", result.cosines(i, k)}});
      }
      results.push_back({{"labels", std::move(ranked)}, {"modalities", inputs[static_cast<std::size_t>(i)].used}});
    }
    res.set_header("X-Cache", all_cached ? "hit" : "miss");
    detail::send_json(res, 200, {{"model", model_name_}, {"results", std::move(results)}});
  }

  // ---- streams (streams.hpp) -------------------------------------------------------------------

  static constexpr const char* stream_route = "/v1/streams/([0-9a-f]{32})";

  Streams& streams() {
    if (!streams_) {
      throw HttpError(422, "streams need tessera's own model (incremental encoding over a KV cache); this is a " +
                               pipeline_.tower_model().config.family + " model");
    }
    return *streams_;
  }
  template <class F>
  static auto stream_call(F&& f) {
    try {
      return f();
    } catch (const StreamError& e) {
      throw HttpError(e.status, e.what());
    }
  }

  void open_stream(httplib::Response& res) {
    Streams& table = streams();
    const std::string id = stream_call([&] { return table.open(); });
    detail::send_json(res, 200, {{"id", id}, {"object", "stream"}});
  }

  // {"video": B64} (or audio, text, image): a window, prepared as /embed's samples are.
  void append_stream(const httplib::Request& req, const nlohmann::json& body, httplib::Response& res) {
    Streams& table = streams();
    const std::string id = req.matches[1];
    const bool base64 = encoding_format(body);
    nlohmann::json window = body;
    window.erase("encoding_format");
    const auto start = std::chrono::steady_clock::now();
    const Prepared p = prepare(window, "window", false);
    res.set_header("X-Modalities", join(p.used));
    timed_preprocess("/v1/streams/{id}", join(p.used), seconds_since(start));
    const Streams::Appended appended = stream_call([&] { return table.append(id, p.sample, p.tokens); });
    const std::vector<float> e(appended.embedding.data(), appended.embedding.data() + appended.embedding.size());
    detail::send_json(res, 200, {{"id", id},
                                 {"embedding", embedding_json(e, base64)},
                                 {"tokens", appended.tokens},
                                 {"cache_bytes", appended.bytes}});
  }

  void close_stream(const httplib::Request& req, httplib::Response& res) {
    Streams& table = streams();
    const std::string id = req.matches[1];
    stream_call([&] {
      table.close(id);
      return 0;
    });
    detail::send_json(res, 200, {{"id", id}, {"closed", true}});
  }

  static double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  Pipeline<float> pipeline_;
  std::string model_name_;
  ServeOptions options_;
  mutable EmbeddingCache cache_;
  Metrics metrics_;
  HttpServer http_;
  std::optional<Batcher> batcher_;
  std::optional<Streams> streams_;  // tessera's own models
  std::filesystem::path scratch_;
  std::vector<std::pair<std::string, std::string>> known_;  // (path, method)
  std::atomic<bool> ready_{false};
  int port_ = 0;
};

}  // namespace tessera::serve
