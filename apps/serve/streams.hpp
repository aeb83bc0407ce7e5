#pragma once
// Streams for tessera-serve (docs/serving.md, "Streams"): a client opens a stream, appends
// windows of video frames or audio, and gets after each the embedding of everything so far,
// computed over the stream's KV cache: only the new window's tokens go through the encoder
// (MultiModalEncoder::encode_append, tessera's own models). Many streams share the model's
// weights, each with its own EncoderCache.
//
// Limits: at most max_streams open; their caches' memory at most max_bytes (an append that
// could pass it is refused before it runs); a stream idle for idle_seconds is closed, when
// the table is next used. A stream is used by one append at a time (its own mutex); appends
// to different streams run in parallel, beside the batched requests.

#include <tessera/core/error.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/encoder_cache.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace tessera::serve {

struct StreamLimits {
  std::size_t max_streams = 64;                  // open at once
  std::size_t max_bytes = std::size_t{1} << 30;  // all streams' caches together
  double idle_seconds = 300;                     // a stream unused this long is closed
};

// What went wrong with a stream request: the HTTP status and why.
struct StreamError : std::runtime_error {
  StreamError(int status, const std::string& message) : std::runtime_error(message), status(status) {}
  int status;
};

// The bytes an EncoderCache holds (its keys and values as allocated, and the encoding).
template <class Scalar>
std::size_t cache_bytes(const EncoderCache<Scalar>& cache) {
  std::size_t n = 0;
  for (const auto& layer : cache.layers) {
    n += static_cast<std::size_t>(layer.k.size() + layer.v.size()) * sizeof(Scalar) +
         static_cast<std::size_t>(layer.k16.size() + layer.v16.size()) * 2;
  }
  n += static_cast<std::size_t>(cache.encoding.hidden.size()) * sizeof(Scalar);
  return n;
}

class Streams {
 public:
  using Clock = std::chrono::steady_clock;

  Streams(const MultiModalEncoder<float>& model, const StreamLimits& limits)
      : model_(model), limits_(limits) {}

  // A new stream's id (32 hex digits). 429 when max_streams are open.
  std::string open() {
    std::lock_guard<std::mutex> lock(mutex_);
    expire_locked();
    if (streams_.size() >= limits_.max_streams) {
      throw StreamError(429, "too many open streams (" + std::to_string(streams_.size()) +
                                 ", --max-streams); close one (DELETE /v1/streams/ID) or retry later");
    }
    std::string id;
    do {
      id = random_id();
    } while (streams_.count(id) != 0);
    auto stream = std::make_shared<Stream>();
    stream->used = Clock::now();
    streams_.emplace(id, std::move(stream));
    return id;
  }

  // Appends `part` (`tokens` of them) to stream `id`; returns the embedding of the whole stream
  // so far and its tokens. 404 for an unknown or expired id; 429 when the streams' memory could
  // pass max_bytes; a part that does not fit the model is a tessera::Error (the stream
  // unchanged).
  struct Appended {
    Vector<float> embedding;
    Index tokens = 0;     // the stream's, so far
    std::size_t bytes = 0;  // its cache's
  };
  Appended append(const std::string& id, const Sample<float>& part, std::size_t tokens) {
    std::shared_ptr<Stream> stream = find(id);
    std::lock_guard<std::mutex> hold(stream->mutex);
    if (stream->closed) throw StreamError(404, "no stream " + id + " (closed)");
    // the most the append can add: each layer's keys and values at twice their rows (the
    // cache's capacity doubles), and the encoding's hidden rows
    const std::size_t width = static_cast<std::size_t>(model_.config.hidden_dim);
    const std::size_t rows = static_cast<std::size_t>(stream->cache.size()) + tokens;
    const std::size_t growth = 2 * rows * width * sizeof(float) * 2 * model_.layers.size() +
                               rows * width * sizeof(float);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (bytes_ - stream->bytes + growth > limits_.max_bytes) {
        throw StreamError(429, "the streams' caches would pass --max-stream-mb (" +
                                   std::to_string(limits_.max_bytes >> 20) + " MB); close streams or retry later");
      }
    }
    const Encoding<float> encoding = model_.encode_append(stream->cache, part);
    const std::size_t now = cache_bytes(stream->cache);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      bytes_ = bytes_ - stream->bytes + now;
    }
    stream->bytes = now;
    stream->used = Clock::now();
    return {encoding.embedding, stream->cache.size(), now};
  }

  // Closes stream `id`; 404 for an unknown one.
  void close(const std::string& id) {
    std::shared_ptr<Stream> stream;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      const auto found = streams_.find(id);
      if (found == streams_.end()) throw StreamError(404, "no stream " + id);
      stream = found->second;
      streams_.erase(found);
      bytes_ -= stream->bytes;
    }
    std::lock_guard<std::mutex> hold(stream->mutex);
    stream->closed = true;
  }

  std::size_t open_count() {
    std::lock_guard<std::mutex> lock(mutex_);
    expire_locked();
    return streams_.size();
  }
  std::size_t bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return bytes_;
  }

 private:
  struct Stream {
    std::mutex mutex;
    EncoderCache<float> cache;
    std::size_t bytes = 0;
    Clock::time_point used;
    bool closed = false;
  };

  std::shared_ptr<Stream> find(const std::string& id) {
    std::lock_guard<std::mutex> lock(mutex_);
    expire_locked();
    const auto found = streams_.find(id);
    if (found == streams_.end()) throw StreamError(404, "no stream " + id + " (never opened, closed, or idle past its time)");
    found->second->used = Clock::now();  // not expired while this append waits
    return found->second;
  }

  // Drops the streams idle past idle_seconds (one in use is not idle: find marks it).
  void expire_locked() {
    const auto now = Clock::now();
    for (auto it = streams_.begin(); it != streams_.end();) {
      const double idle = std::chrono::duration<double>(now - it->second->used).count();
      if (idle > limits_.idle_seconds && it->second->mutex.try_lock()) {
        it->second->closed = true;
        it->second->mutex.unlock();
        bytes_ -= it->second->bytes;
        it = streams_.erase(it);
      } else {
        ++it;
      }
    }
  }

  std::string random_id() {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    static const char* hex = "0123456789abcdef";
    std::string id;
    for (int i = 0; i < 2; ++i) {
      std::uint64_t v = rng();
      for (int d = 0; d < 16; ++d, v >>= 4) id.push_back(hex[v & 15]);
    }
    return id;
  }

  const MultiModalEncoder<float>& model_;
  StreamLimits limits_;
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<Stream>> streams_;
  std::size_t bytes_ = 0;
};

}  // namespace tessera::serve
