#pragma once
// tessera-serve's embedding cache: embeddings already computed, by a SHA-256 key over what
// determines them (the model, the modality, the input's bytes, the options), so a repeated
// request is answered without running the encoder.
//
// The key: CacheKeyBuilder hashes a sequence of pieces, each written as its length (8 bytes,
// little-endian) then its bytes, so no two sequences of pieces share a byte stream: ("ab", "c")
// and ("a", "bc") get different keys.
//
// The cache: least recently used entries go first when the byte budget is reached, and an
// entry older than the time to live is dropped when next looked up. Thread-safe (one mutex;
// a look-up copies the embedding out under it: D floats, small beside an encoder pass).

#include <tessera/core/error.hpp>

#include <openssl/evp.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <iterator>
#include <limits>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tessera::serve {

struct CacheKey {
  std::array<unsigned char, 32> digest{};  // SHA-256
  bool operator==(const CacheKey&) const = default;
};

// The digest in lowercase hex (64 characters), for logs.
inline std::string to_hex(const CacheKey& key) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * key.digest.size());
  for (unsigned char byte : key.digest) {
    out += digits[byte >> 4];
    out += digits[byte & 15];
  }
  return out;
}

namespace detail {

// SHA-256 through OpenSSL's EVP interface, fed in pieces.
class Sha256 {
 public:
  Sha256() : context_(EVP_MD_CTX_new()) {
    check(context_ != nullptr, "SHA-256: OpenSSL could not allocate a digest context");
    reset();
  }
  void update(std::string_view bytes) {
    check(EVP_DigestUpdate(context_.get(), bytes.data(), bytes.size()) == 1,
          "SHA-256: OpenSSL EVP_DigestUpdate failed");
  }
  // The digest of everything updated since the last reset; the hash then starts afresh.
  std::array<unsigned char, 32> finish() {
    std::array<unsigned char, 32> digest{};
    unsigned int size = 0;
    check(EVP_DigestFinal_ex(context_.get(), digest.data(), &size) == 1 && size == digest.size(),
          "SHA-256: OpenSSL EVP_DigestFinal_ex failed");
    reset();
    return digest;
  }

 private:
  void reset() {
    check(EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr) == 1,
          "SHA-256: OpenSSL EVP_DigestInit_ex failed");
  }
  struct Free {
    void operator()(EVP_MD_CTX* context) const { EVP_MD_CTX_free(context); }
  };
  std::unique_ptr<EVP_MD_CTX, Free> context_;
};

// SHA-256 of `bytes`, plain (no length prefix).
inline std::array<unsigned char, 32> sha256(std::string_view bytes) {
  Sha256 hash;
  hash.update(bytes);
  return hash.finish();
}

}  // namespace detail

// A CacheKey over pieces: SHA-256 of, for each piece, its length as 8 bytes little-endian
// followed by its bytes. finish() returns the key and leaves the builder empty for the next.
class CacheKeyBuilder {
 public:
  CacheKeyBuilder& add(std::string_view bytes) {
    std::array<char, 8> length{};
    auto size = static_cast<std::uint64_t>(bytes.size());
    for (char& byte : length) {
      byte = static_cast<char>(size & 0xff);
      size >>= 8;
    }
    hash_.update(std::string_view(length.data(), length.size()));
    hash_.update(bytes);
    return *this;
  }
  CacheKey finish() { return CacheKey{hash_.finish()}; }

 private:
  detail::Sha256 hash_;
};

// The first 8 bytes of the digest: SHA-256 output is already uniform.
struct CacheKeyHash {
  std::size_t operator()(const CacheKey& key) const {
    std::size_t h = 0;
    std::memcpy(&h, key.digest.data(), sizeof h);
    return h;
  }
};

// Counters since the cache was made (clear() keeps them), and what it holds now.
struct CacheStats {
  std::uint64_t hits = 0, misses = 0, evictions = 0, expired = 0;
  std::size_t entries = 0, bytes = 0;
};

class EmbeddingCache {
 public:
  using Clock = std::function<double()>;  // seconds, monotonic

  // What one entry costs besides its floats, counted against max_bytes: an estimate of the
  // list node (two pointers, the 32-byte key, the vector's three pointers, expiry and size:
  // 88 bytes), the hash map's node (next pointer, key, iterator, cached hash: 56), its bucket
  // slot (8) and the allocator's headers of the three allocations (about 8 each).
  static constexpr std::size_t entry_overhead = 176;

  // The bytes an entry of `floats` floats counts for.
  static constexpr std::size_t entry_bytes(std::size_t floats) {
    return floats * sizeof(float) + entry_overhead;
  }

  // max_bytes 0 turns the cache off: get() always misses, put() stores nothing. ttl_seconds
  // (>= 0, finite) is how long an entry lives after put(), 0 for ever. clock: the time in
  // seconds, monotonic (tests inject one); by default std::chrono::steady_clock.
  EmbeddingCache(std::size_t max_bytes, double ttl_seconds, Clock clock = {})
      : max_bytes_(max_bytes), ttl_(ttl_seconds), clock_(std::move(clock)) {
    check(ttl_seconds >= 0 && std::isfinite(ttl_seconds),
          "EmbeddingCache: ttl_seconds must be a finite number >= 0 (0: no expiry), got ",
          ttl_seconds);
    if (!clock_) {
      clock_ = [] {
        return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
            .count();
      };
    }
  }

  // Whether it stores anything (max_bytes above 0).
  bool enabled() const { return max_bytes_ != 0; }

  EmbeddingCache(const EmbeddingCache&) = delete;
  EmbeddingCache& operator=(const EmbeddingCache&) = delete;

  // The embedding stored under `key`, now the most recently used (its time to live is not
  // renewed); nothing on a miss. An entry past its time to live is removed and counts as a
  // miss and as expired.
  std::optional<std::vector<float>> get(const CacheKey& key) {
    const std::lock_guard lock(mutex_);
    const auto found = index_.find(key);
    if (found == index_.end()) {
      ++stats_.misses;
      return std::nullopt;
    }
    const auto entry = found->second;
    if (ttl_ > 0 && clock_() >= entry->expires_at) {
      erase(entry);
      ++stats_.expired;
      ++stats_.misses;
      return std::nullopt;
    }
    entries_.splice(entries_.begin(), entries_, entry);
    ++stats_.hits;
    return entry->value;
  }

  // Stores `value` under `key` as the most recently used entry, replacing what the key held,
  // evicting least recently used entries until entry_bytes(value.size()) fits in max_bytes. A
  // value that could never fit is not stored (and the key's old entry is gone).
  void put(const CacheKey& key, std::vector<float> value) {
    if (max_bytes_ == 0) return;
    const std::size_t bytes = entry_bytes(value.size());
    const std::lock_guard lock(mutex_);
    if (const auto found = index_.find(key); found != index_.end()) erase(found->second);
    if (bytes > max_bytes_) return;
    while (stats_.bytes + bytes > max_bytes_) {
      erase(std::prev(entries_.end()));
      ++stats_.evictions;
    }
    const double expires_at = ttl_ > 0 ? clock_() + ttl_ : std::numeric_limits<double>::infinity();
    entries_.push_front(Entry{key, std::move(value), expires_at, bytes});
    index_.emplace(key, entries_.begin());
    stats_.bytes += bytes;
    stats_.entries = entries_.size();
  }

  CacheStats stats() const {
    const std::lock_guard lock(mutex_);
    return stats_;
  }

  // Drops every entry; the hit, miss, eviction and expiry counters keep counting.
  void clear() {
    const std::lock_guard lock(mutex_);
    entries_.clear();
    index_.clear();
    stats_.entries = 0;
    stats_.bytes = 0;
  }

 private:
  struct Entry {
    CacheKey key;
    std::vector<float> value;  // [D]
    double expires_at;         // clock seconds; +infinity without a time to live
    std::size_t bytes;         // entry_bytes(value.size())
  };
  using Entries = std::list<Entry>;  // most recently used first

  void erase(Entries::iterator entry) {
    stats_.bytes -= entry->bytes;
    index_.erase(entry->key);
    entries_.erase(entry);
    stats_.entries = entries_.size();
  }

  std::size_t max_bytes_;
  double ttl_;
  Clock clock_;
  mutable std::mutex mutex_;
  Entries entries_;
  std::unordered_map<CacheKey, Entries::iterator, CacheKeyHash> index_;
  CacheStats stats_;
};

}  // namespace tessera::serve
