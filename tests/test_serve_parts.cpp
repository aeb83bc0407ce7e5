// tessera-serve's own parts (apps/serve/): the Prometheus metrics (the exposition text of a
// small registry written out in full, histogram quantiles against hand-computed values, every
// misuse refused naming the metric, concurrent updates summing exactly), the embedding cache
// (its SHA-256 keys against a known vector and across piece boundaries, hits and misses, LRU
// eviction order, expiry on an injected clock, the byte budget) and base64 (RFC 4648's test
// vectors, every byte value, OpenSSL's encoder on random data, and each refusal's message), and
// where a request's line and headers end (HeadEnd: line endings, pieces of any size), and the
// JSON a multipart form stands for (form_body: every name form, each value's kind, each refusal).
// Built only when OpenSSL's libcrypto is found (tests/CMakeLists.txt).

#include "../apps/serve/base64.hpp"
#include "../apps/serve/cache.hpp"
#include "../apps/serve/form.hpp"
#include "../apps/serve/head_end.hpp"
#include "../apps/serve/metrics.hpp"

#include "test_util.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace tessera {
namespace test_serve_parts {

using serve::CacheKey;
using serve::CacheKeyBuilder;
using serve::EmbeddingCache;
using serve::Labels;
using serve::Metrics;
using serve::MetricType;
using test::error_of;
using ::testing::HasSubstr;

// Quantiles are a few float operations on small numbers: equal up to rounding.
constexpr double quantile_tolerance = 1e-12;

// ---- Metrics: the exposition ------------------------------------------------------------------

// A counter with labels (one value needing every escape), a gauge without, and a histogram of
// three buckets whose observations include one on a bound (le: less or equal) and one past the
// last. The observations are dyadic, so their sum is exact.
TEST(Metrics, ExpositionText) {
  Metrics metrics;
  metrics.describe("tessera_requests_total", MetricType::counter,
                   "Requests answered.\nBy route and status; a backslash: \\.");
  metrics.describe("tessera_queue_depth", MetricType::gauge, "Requests waiting.");
  metrics.describe("tessera_request_seconds", MetricType::histogram, "Time to answer.",
                   {0.125, 0.5, 1});
  metrics.describe("tessera_unused_total", MetricType::counter, "Never updated.");

  metrics.add("tessera_requests_total", {{"route", "a\\b\"c\nd"}, {"status", "200"}});
  metrics.add("tessera_requests_total", {{"route", "/v1/embed"}, {"status", "400"}}, 1.5);
  metrics.add("tessera_requests_total", {{"route", "/v1/embed"}, {"status", "200"}});
  metrics.add("tessera_requests_total", {{"route", "/v1/embed"}, {"status", "200"}});
  metrics.set("tessera_queue_depth", {}, 7);
  metrics.set("tessera_queue_depth", {}, 3);
  for (double seconds : {0.0625, 0.125, 0.25, 2.0}) {
    metrics.observe("tessera_request_seconds", {{"route", "/v1/embed"}}, seconds);
  }

  // Families by name ('_' sorts before 's'), series by labels ('/' before 'a').
  const std::string expected =
      "# HELP tessera_queue_depth Requests waiting.\n"
      "# TYPE tessera_queue_depth gauge\n"
      "tessera_queue_depth 3\n"
      "# HELP tessera_request_seconds Time to answer.\n"
      "# TYPE tessera_request_seconds histogram\n"
      "tessera_request_seconds_bucket{route=\"/v1/embed\",le=\"0.125\"} 2\n"
      "tessera_request_seconds_bucket{route=\"/v1/embed\",le=\"0.5\"} 3\n"
      "tessera_request_seconds_bucket{route=\"/v1/embed\",le=\"1\"} 3\n"
      "tessera_request_seconds_bucket{route=\"/v1/embed\",le=\"+Inf\"} 4\n"
      "tessera_request_seconds_sum{route=\"/v1/embed\"} 2.4375\n"
      "tessera_request_seconds_count{route=\"/v1/embed\"} 4\n"
      "# HELP tessera_requests_total Requests answered.\\nBy route and status; a backslash: \\\\.\n"
      "# TYPE tessera_requests_total counter\n"
      "tessera_requests_total{route=\"/v1/embed\",status=\"200\"} 2\n"
      "tessera_requests_total{route=\"/v1/embed\",status=\"400\"} 1.5\n"
      "tessera_requests_total{route=\"a\\\\b\\\"c\\nd\",status=\"200\"} 1\n"
      "# HELP tessera_unused_total Never updated.\n"
      "# TYPE tessera_unused_total counter\n";
  EXPECT_EQ(metrics.text(), expected);

  EXPECT_EQ(metrics.value("tessera_requests_total", {{"route", "/v1/embed"}, {"status", "200"}}),
            2);
  EXPECT_EQ(metrics.value("tessera_requests_total", {{"route", "/v1/embed"}, {"status", "500"}}),
            0);
  EXPECT_EQ(metrics.value("tessera_queue_depth", {}), 3);
  EXPECT_EQ(metrics.count("tessera_request_seconds", {{"route", "/v1/embed"}}), 4u);
  EXPECT_EQ(metrics.count("tessera_request_seconds", {{"route", "/other"}}), 0u);
}

// Values as Go's ParseFloat reads them: shortest round trip, and the infinities and NaN by
// their Prometheus names.
TEST(Metrics, SampleValues) {
  Metrics metrics;
  metrics.describe("g", MetricType::gauge, "");
  const std::vector<std::pair<double, std::string>> cases = {
      {0, "0"},           {-2, "-2"},          {0.1, "0.1"},
      {1e-5, "1e-05"},    {1e21, "1e+21"},     {123456789, "123456789"},
      {INFINITY, "+Inf"}, {-INFINITY, "-Inf"}, {NAN, "NaN"}};
  for (const auto& [value, text] : cases) {
    metrics.set("g", {}, value);
    EXPECT_EQ(metrics.text(), "# HELP g \n# TYPE g gauge\ng " + text + "\n") << value;
  }
}

TEST(Metrics, Buckets) {
  EXPECT_EQ(serve::exponential_buckets(0.5, 2, 4), (std::vector<double>{0.5, 1, 2, 4}));
  const std::vector<double> latency = serve::latency_buckets();
  ASSERT_GE(latency.size(), 2u);
  EXPECT_EQ(latency.front(), 0.0005);
  EXPECT_EQ(latency.back(), 60);
  for (std::size_t i = 1; i < latency.size(); ++i) {
    EXPECT_GE(latency[i] / latency[i - 1], 1.5) << i;  // roughly x2 steps
    EXPECT_LE(latency[i] / latency[i - 1], 2.5) << i;
  }
  Metrics metrics;  // a valid histogram
  metrics.describe("latency_seconds", MetricType::histogram, "", latency);

  EXPECT_THAT(error_of([] { serve::exponential_buckets(0, 2, 3); }),
              HasSubstr("start must be positive"));
  EXPECT_THAT(error_of([] { serve::exponential_buckets(1, 1, 3); }),
              HasSubstr("factor must be > 1"));
  EXPECT_THAT(error_of([] { serve::exponential_buckets(1, 2, 0); }),
              HasSubstr("count must be at least 1"));
}

// ---- Metrics: quantiles -----------------------------------------------------------------------

// Bounds 1, 2, 4 and observations 0.5 | 1.5 1.5 | 3 | 10: per bucket 1, 2, 1 and 1 past +Inf,
// cumulative 1, 3, 4, 5. For q, rank = 5q; the first bucket whose cumulative count reaches it,
// interpolated between its bounds:
//   q = 0.1: rank 0.5 in (0, 1]: 0 + 1 * 0.5 / 1         = 0.5
//   q = 0.2: rank 1   in (0, 1]: 0 + 1 * 1 / 1           = 1
//   q = 0.5: rank 2.5 in (1, 2]: 1 + 1 * (2.5 - 1) / 2   = 1.75
//   q = 0.7: rank 3.5 in (2, 4]: 2 + 2 * (3.5 - 3) / 1   = 3
//   q = 0.9, 1: rank past 4 lands in +Inf: the highest finite bound, 4
//   q = 0: rank 0 in the first bucket: its lower bound, 0
TEST(Metrics, QuantileAsPromQL) {
  Metrics metrics;
  metrics.describe("h", MetricType::histogram, "", {1, 2, 4});
  EXPECT_TRUE(std::isnan(metrics.quantile("h", {}, 0.5)));  // no observations
  for (double v : {0.5, 1.5, 1.5, 3.0, 10.0}) metrics.observe("h", {}, v);
  const std::vector<std::pair<double, double>> expected = {
      {0.1, 0.5}, {0.2, 1}, {0.5, 1.75}, {0.7, 3}, {0.9, 4}, {1, 4}, {0, 0}};
  for (const auto& [q, value] : expected) {
    EXPECT_NEAR(metrics.quantile("h", {}, q), value, quantile_tolerance) << "q = " << q;
  }
  EXPECT_THAT(error_of([&] { metrics.quantile("h", {}, 1.5); }),
              HasSubstr("histogram h: quantile must be in [0, 1], got 1.5"));
}

// Empty leading buckets: one observation of 3 in (2, 4]. q = 0.5: rank 0.5, 2 + 2 * 0.5 = 3;
// q = 0 gives that bucket's lower bound, 2 (PromQL would divide 0 by 0). A first bound <= 0
// is returned as it is (nothing to interpolate from).
TEST(Metrics, QuantileEdges) {
  Metrics metrics;
  metrics.describe("h", MetricType::histogram, "", {1, 2, 4});
  metrics.observe("h", {{"route", "x"}}, 3);
  EXPECT_NEAR(metrics.quantile("h", {{"route", "x"}}, 0.5), 3, quantile_tolerance);
  EXPECT_NEAR(metrics.quantile("h", {{"route", "x"}}, 0), 2, quantile_tolerance);
  EXPECT_TRUE(std::isnan(metrics.quantile("h", {{"route", "y"}}, 0.5)));

  metrics.describe("negative", MetricType::histogram, "", {-1, 0, 1});
  metrics.observe("negative", {}, -5);
  EXPECT_EQ(metrics.quantile("negative", {}, 0.5), -1);
}

// ---- Metrics: misuse --------------------------------------------------------------------------

TEST(Metrics, Errors) {
  Metrics metrics;
  metrics.describe("requests_total", MetricType::counter, "");
  metrics.describe("depth", MetricType::gauge, "");
  metrics.describe("seconds", MetricType::histogram, "", {1});

  EXPECT_THAT(error_of([&] { metrics.add("nope_total", {}); }),
              HasSubstr("metric nope_total was not described"));
  EXPECT_THAT(error_of([&] { (void)metrics.value("nope", {}); }),
              HasSubstr("metric nope was not described"));
  EXPECT_THAT(error_of([&] { metrics.set("requests_total", {}, 1); }),
              HasSubstr("metric requests_total is a counter, not a gauge"));
  EXPECT_THAT(error_of([&] { metrics.observe("depth", {}, 1); }),
              HasSubstr("metric depth is a gauge, not a histogram"));
  EXPECT_THAT(error_of([&] { metrics.add("seconds", {}); }),
              HasSubstr("metric seconds is a histogram, not a counter"));
  EXPECT_THAT(error_of([&] { (void)metrics.value("seconds", {}); }),
              HasSubstr("metric seconds is a histogram: read it with count() or quantile()"));
  EXPECT_THAT(error_of([&] { (void)metrics.count("depth", {}); }),
              HasSubstr("metric depth is a gauge, not a histogram"));
  EXPECT_THAT(error_of([&] { metrics.add("requests_total", {}, -1); }),
              HasSubstr("counter requests_total: can only go up, by a finite amount >= 0, got -1"));
  EXPECT_THAT(error_of([&] { metrics.add("requests_total", {}, NAN); }),
              HasSubstr("counter requests_total: can only go up"));
  EXPECT_THAT(error_of([&] { metrics.observe("seconds", {}, NAN); }),
              HasSubstr("histogram seconds: cannot observe NaN"));

  // names
  for (const std::string name : {"1abc", "a-b", "", "caf\xc3\xa9"}) {
    EXPECT_THAT(error_of([&] { metrics.describe(name, MetricType::gauge, ""); }),
                HasSubstr("metric name \"" + name + "\" is not a Prometheus name"))
        << name;
  }
  metrics.describe("ns:sub_name:rate5m", MetricType::gauge, "");  // colons are allowed
  EXPECT_THAT(error_of([&] { metrics.describe("depth", MetricType::gauge, ""); }),
              HasSubstr("metric depth is registered twice"));
  EXPECT_THAT(
      error_of([&] {
        metrics.add("requests_total", {{"a-b", "x"}});
      }),
      HasSubstr("metric requests_total: label name \"a-b\" is not a Prometheus label name"));
  EXPECT_THAT(error_of([&] {
                metrics.add("requests_total", {{"__name", "x"}});
              }),
              HasSubstr("label name \"__name\" is not a Prometheus label name"));
  EXPECT_THAT(error_of([&] {
                metrics.add("requests_total", {{"a:b", "x"}});
              }),
              HasSubstr("label name \"a:b\""));
  EXPECT_THAT(error_of([&] {
                metrics.add("requests_total", {{"a", "x"}, {"a", "y"}});
              }),
              HasSubstr("metric requests_total: label \"a\" given twice"));
  EXPECT_THAT(error_of([&] {
                metrics.observe("seconds", {{"le", "1"}}, 1);
              }),
              HasSubstr("histogram seconds: the label name \"le\" is reserved"));

  // buckets
  EXPECT_THAT(error_of([&] { metrics.describe("h1", MetricType::histogram, ""); }),
              HasSubstr("histogram h1: needs at least one bucket"));
  EXPECT_THAT(error_of([&] {
                metrics.describe("h2", MetricType::histogram, "", {1, 0.5});
              }),
              HasSubstr("histogram h2: bucket bounds must be strictly increasing, got 1 then 0.5"));
  EXPECT_THAT(error_of([&] {
                metrics.describe("h3", MetricType::histogram, "", {1, 1});
              }),
              HasSubstr("strictly increasing"));
  EXPECT_THAT(error_of([&] {
                metrics.describe("h4", MetricType::histogram, "", {1, INFINITY});
              }),
              HasSubstr("histogram h4: bucket bound 1 must be finite"));
  EXPECT_THAT(error_of([&] { metrics.describe("c", MetricType::counter, "", {1}); }),
              HasSubstr("metric c: only a histogram takes buckets"));
  // a refused series was not made
  EXPECT_EQ(metrics.text().find("a-b"), std::string::npos);
}

// Four threads adding to one counter series, each to its own, and observing into one histogram:
// every update counted (the sums are integers well below 2^53, exact in double).
TEST(Metrics, ConcurrentUpdatesSumExactly) {
  Metrics metrics;
  metrics.describe("hits_total", MetricType::counter, "");
  metrics.describe("seconds", MetricType::histogram, "", {0.5, 2});
  constexpr int threads = 4, per_thread = 20000;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        metrics.add("hits_total", {{"shared", "yes"}});
        metrics.add("hits_total", {{"thread", std::to_string(t)}}, 2);
        metrics.observe("seconds", {}, 1);
      }
    });
  }
  for (auto& worker : workers) worker.join();
  EXPECT_EQ(metrics.value("hits_total", {{"shared", "yes"}}), threads * per_thread);
  for (int t = 0; t < threads; ++t) {
    EXPECT_EQ(metrics.value("hits_total", {{"thread", std::to_string(t)}}), 2 * per_thread);
  }
  EXPECT_EQ(metrics.count("seconds", {}), std::uint64_t{threads * per_thread});
  EXPECT_THAT(metrics.text(),
              HasSubstr("seconds_sum " + std::to_string(threads * per_thread) + "\n"));
}

// ---- The cache's keys -------------------------------------------------------------------------

TEST(CacheKey, RawSha256MatchesFips180Vectors) {
  EXPECT_EQ(to_hex(CacheKey{serve::detail::sha256("abc")}),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(to_hex(CacheKey{serve::detail::sha256("")}),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

// Each piece is its length (8 bytes, little-endian) then its bytes. The expected digest, from
// Python: hashlib.sha256(struct.pack('<Q', 2) + b'ab' + struct.pack('<Q', 1) + b'c').hexdigest()
TEST(CacheKey, PiecesAreLengthPrefixed) {
  CacheKeyBuilder builder;
  const CacheKey ab_c = builder.add("ab").add("c").finish();
  EXPECT_EQ(to_hex(ab_c), "43ee655579de01ca739b3f95c1c2d3f46d353b2c0df818064ea594506cdb2617");
  EXPECT_EQ(builder.add("ab").add("c").finish(), ab_c);  // finish() started the builder afresh
  EXPECT_EQ(CacheKeyBuilder().add("ab").add("c").finish(), ab_c);

  EXPECT_NE(CacheKeyBuilder().add("a").add("bc").finish(), ab_c);
  EXPECT_NE(CacheKeyBuilder().add("abc").finish(), ab_c);
  EXPECT_NE(CacheKeyBuilder().add("abc").finish(), CacheKey{serve::detail::sha256("abc")});
  EXPECT_NE(CacheKeyBuilder().finish(), CacheKeyBuilder().add("").finish());
  EXPECT_NE(CacheKeyBuilder().add("").finish(), CacheKeyBuilder().add("").add("").finish());
  const std::string with_nul("a\0b", 3);  // bytes, not C strings
  EXPECT_NE(CacheKeyBuilder().add(with_nul).finish(), CacheKeyBuilder().add("a").finish());
}

// ---- The embedding cache ----------------------------------------------------------------------

CacheKey key_of(const std::string& name) { return CacheKeyBuilder().add(name).finish(); }

// An injectable clock: the test moves `now`.
struct FakeClock {
  double now = 0;
  EmbeddingCache::Clock clock() {
    return [this] { return now; };
  }
};

TEST(EmbeddingCache, HitsAndMisses) {
  EmbeddingCache cache(1 << 20, 0);
  EXPECT_FALSE(cache.get(key_of("a")).has_value());
  cache.put(key_of("a"), {1, 2, 3});
  const auto hit = cache.get(key_of("a"));
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(*hit, (std::vector<float>{1, 2, 3}));
  EXPECT_FALSE(cache.get(key_of("b")).has_value());

  cache.put(key_of("a"), {4, 5});  // replaces
  EXPECT_EQ(*cache.get(key_of("a")), (std::vector<float>{4, 5}));

  const serve::CacheStats stats = cache.stats();
  EXPECT_EQ(stats.hits, 2u);
  EXPECT_EQ(stats.misses, 2u);
  EXPECT_EQ(stats.evictions, 0u);
  EXPECT_EQ(stats.expired, 0u);
  EXPECT_EQ(stats.entries, 1u);
  EXPECT_EQ(stats.bytes, EmbeddingCache::entry_bytes(2));
  EXPECT_EQ(EmbeddingCache::entry_bytes(2), 2 * sizeof(float) + EmbeddingCache::entry_overhead);

  cache.clear();  // empties, counters go on
  EXPECT_FALSE(cache.get(key_of("a")).has_value());
  EXPECT_EQ(cache.stats().entries, 0u);
  EXPECT_EQ(cache.stats().bytes, 0u);
  EXPECT_EQ(cache.stats().hits, 2u);
  EXPECT_EQ(cache.stats().misses, 3u);
}

// Room for three entries of 4 floats. After a, b, c, reading a makes b the least recently
// used: d evicts b, then e evicts c.
TEST(EmbeddingCache, EvictsLeastRecentlyUsed) {
  const std::vector<float> value(4, 1.0f);
  EmbeddingCache cache(3 * EmbeddingCache::entry_bytes(4), 0);
  for (const char* name : {"a", "b", "c"}) cache.put(key_of(name), value);
  ASSERT_TRUE(cache.get(key_of("a")).has_value());
  cache.put(key_of("d"), value);
  EXPECT_EQ(cache.stats().evictions, 1u);
  EXPECT_EQ(cache.stats().entries, 3u);
  cache.put(key_of("e"), value);
  EXPECT_EQ(cache.stats().evictions, 2u);
  EXPECT_FALSE(cache.get(key_of("b")).has_value());
  EXPECT_FALSE(cache.get(key_of("c")).has_value());
  for (const char* name : {"a", "d", "e"}) EXPECT_TRUE(cache.get(key_of(name)).has_value()) << name;
  EXPECT_EQ(cache.stats().bytes, 3 * EmbeddingCache::entry_bytes(4));
}

// The byte budget: one large entry makes room by evicting as many small ones as it needs, and
// the bytes held never exceed max_bytes.
TEST(EmbeddingCache, ByteBudget) {
  const std::size_t max_bytes = 4 * EmbeddingCache::entry_bytes(8);
  EmbeddingCache cache(max_bytes, 0);
  for (int i = 0; i < 4; ++i) cache.put(key_of(std::to_string(i)), std::vector<float>(8));
  EXPECT_EQ(cache.stats().bytes, max_bytes);
  // needs the room of 8 + 8 + 8 floats plus two overheads: three of the four go (0, 1, 2)
  const std::size_t large = 3 * 8 + 2 * EmbeddingCache::entry_overhead / sizeof(float);
  cache.put(key_of("large"), std::vector<float>(large));
  EXPECT_EQ(cache.stats().evictions, 3u);
  EXPECT_EQ(cache.stats().entries, 2u);
  EXPECT_LE(cache.stats().bytes, max_bytes);
  EXPECT_TRUE(cache.get(key_of("3")).has_value());
  EXPECT_TRUE(cache.get(key_of("large")).has_value());
}

// A value that could never fit is not stored, and evicts nothing; one that fits exactly is.
TEST(EmbeddingCache, OversizeValueNotStored) {
  EmbeddingCache cache(EmbeddingCache::entry_bytes(4), 0);
  cache.put(key_of("fits"), std::vector<float>(4));
  cache.put(key_of("too large"), std::vector<float>(5));
  EXPECT_FALSE(cache.get(key_of("too large")).has_value());
  EXPECT_TRUE(cache.get(key_of("fits")).has_value());
  EXPECT_EQ(cache.stats().entries, 1u);
  EXPECT_EQ(cache.stats().evictions, 0u);
  // a key given a value too large loses its old one
  cache.put(key_of("fits"), std::vector<float>(5));
  EXPECT_FALSE(cache.get(key_of("fits")).has_value());
  EXPECT_EQ(cache.stats().bytes, 0u);
}

TEST(EmbeddingCache, OffWhenMaxBytesIsZero) {
  EmbeddingCache cache(0, 0);
  cache.put(key_of("a"), {1});
  EXPECT_FALSE(cache.get(key_of("a")).has_value());
  EXPECT_EQ(cache.stats().entries, 0u);
  EXPECT_EQ(cache.stats().bytes, 0u);
  EXPECT_EQ(cache.stats().misses, 1u);
}

// Time to live 10 s, on an injected clock. An entry expires at put + 10 (a hit does not
// renew it); the expired look-up removes it and counts as a miss and as expired.
TEST(EmbeddingCache, ExpiresAfterTimeToLive) {
  FakeClock time;
  EmbeddingCache cache(1 << 20, 10, time.clock());
  cache.put(key_of("a"), {1});
  time.now = 5;
  cache.put(key_of("b"), {2});
  time.now = 9.5;
  EXPECT_TRUE(cache.get(key_of("a")).has_value());
  time.now = 10;
  EXPECT_FALSE(cache.get(key_of("a")).has_value());  // expires at 10, despite the hit at 9.5
  EXPECT_TRUE(cache.get(key_of("b")).has_value());   // until 15
  serve::CacheStats stats = cache.stats();
  EXPECT_EQ(stats.expired, 1u);
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(stats.hits, 2u);
  EXPECT_EQ(stats.entries, 1u);
  EXPECT_EQ(stats.bytes, EmbeddingCache::entry_bytes(1));

  cache.put(key_of("a"), {3});  // stored again: lives until 20
  time.now = 19;
  EXPECT_EQ(*cache.get(key_of("a")), std::vector<float>{3});
  EXPECT_FALSE(cache.get(key_of("b")).has_value());
  EXPECT_EQ(cache.stats().expired, 2u);

  // without a time to live nothing expires
  EmbeddingCache forever(1 << 20, 0, time.clock());
  forever.put(key_of("a"), {1});
  time.now = 1e12;
  EXPECT_TRUE(forever.get(key_of("a")).has_value());

  EXPECT_THAT(error_of([] { EmbeddingCache(1, -1); }),
              HasSubstr("EmbeddingCache: ttl_seconds must be a finite number >= 0"));
  EXPECT_THAT(error_of([] { EmbeddingCache(1, INFINITY); }), HasSubstr("ttl_seconds"));
}

TEST(EmbeddingCache, ConcurrentUse) {
  EmbeddingCache cache(64 * EmbeddingCache::entry_bytes(4), 0);
  constexpr int threads = 4, per_thread = 5000;
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        const CacheKey key = key_of(std::to_string((i * 7 + t) % 100));
        if (!cache.get(key)) cache.put(key, std::vector<float>(4, static_cast<float>(t)));
      }
    });
  }
  for (auto& worker : workers) worker.join();
  const serve::CacheStats stats = cache.stats();
  EXPECT_EQ(stats.hits + stats.misses, std::uint64_t{threads * per_thread});
  EXPECT_LE(stats.entries, 64u);
  EXPECT_EQ(stats.bytes, stats.entries * EmbeddingCache::entry_bytes(4));
}

// ---- base64 -----------------------------------------------------------------------------------

// RFC 4648 section 10.
TEST(Base64, Rfc4648Vectors) {
  const std::vector<std::pair<std::string, std::string>> vectors = {{"", ""},
                                                                    {"f", "Zg=="},
                                                                    {"fo", "Zm8="},
                                                                    {"foo", "Zm9v"},
                                                                    {"foob", "Zm9vYg=="},
                                                                    {"fooba", "Zm9vYmE="},
                                                                    {"foobar", "Zm9vYmFy"}};
  for (const auto& [bytes, text] : vectors) {
    EXPECT_EQ(serve::base64_encode(bytes), text) << bytes;
    EXPECT_EQ(serve::base64_decode(text, "field", bytes.size()), bytes) << text;
  }
}

TEST(Base64, EveryByteRoundTrips) {
  std::string bytes;
  for (int b = 0; b < 256; ++b) bytes += static_cast<char>(b);
  for (std::size_t length : {bytes.size(), bytes.size() - 1, bytes.size() - 2}) {
    const std::string part = bytes.substr(0, length);
    EXPECT_EQ(serve::base64_decode(serve::base64_encode(part), "field", part.size()), part);
  }
  // the whole alphabet, each character in each position of a group
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  EXPECT_EQ(serve::base64_encode(serve::base64_decode(alphabet, "field", 48)), alphabet);
}

// The encoder against OpenSSL's EVP_EncodeBlock, and OpenSSL's text decoded, on random bytes
// of every length up to 100.
TEST(Base64, AgreesWithOpenSsl) {
  std::mt19937 random(7);
  for (int length = 0; length <= 100; ++length) {
    std::string bytes(static_cast<std::size_t>(length), '\0');
    for (char& c : bytes) c = static_cast<char>(random() & 0xff);
    std::string openssl(static_cast<std::size_t>((length + 2) / 3 * 4 + 1), '\0');
    const int written =
        EVP_EncodeBlock(reinterpret_cast<unsigned char*>(openssl.data()),
                        reinterpret_cast<const unsigned char*>(bytes.data()), length);
    openssl.resize(static_cast<std::size_t>(written));
    EXPECT_EQ(serve::base64_encode(bytes), openssl) << length;
    EXPECT_EQ(serve::base64_decode(openssl, "field", bytes.size()), bytes) << length;
  }
}

TEST(Base64, Errors) {
  const auto decode = [](const std::string& text, std::size_t max_bytes = 1000) {
    return error_of([&] { serve::base64_decode(text, "samples[2].image", max_bytes); });
  };
  EXPECT_EQ(decode("Zm9"),
            "samples[2].image: base64 text of 3 characters: the length must be "
            "a multiple of 4 (padded with '=')");
  EXPECT_EQ(decode("Zm9vYmFy", 5),
            "samples[2].image: base64 text of 8 characters decodes to 6 "
            "bytes, over the limit of 5 bytes");
  EXPECT_EQ(decode("Zm9vYmE=", 4),
            "samples[2].image: base64 text of 8 characters decodes to 5 "
            "bytes, over the limit of 4 bytes");
  EXPECT_EQ(serve::base64_decode("Zm9vYmE=", "x", 5), "fooba");  // exactly at the limit
  // the size is checked from the length, before any character is looked at
  EXPECT_THAT(decode("!!!!!!!!", 3), HasSubstr("decodes to 6 bytes, over the limit of 3"));

  EXPECT_EQ(decode("Zm!v"),
            "samples[2].image: '!' at offset 2 is not a base64 character "
            "(A-Z a-z 0-9 + / and final '=' padding; no whitespace)");
  EXPECT_EQ(decode("Zm9v\nYmE"),
            "samples[2].image: byte 0x0a at offset 4 is not a base64 "
            "character (A-Z a-z 0-9 + / and final '=' padding; no whitespace)");
  EXPECT_THAT(decode("Zm 9"), HasSubstr("' ' at offset 2 is not a base64 character"));
  EXPECT_THAT(decode(std::string("Zm9\xff")), HasSubstr("byte 0xff at offset 3"));
  EXPECT_THAT(decode("Zm9-"), HasSubstr("'-' at offset 3 is not a base64 character (A-Z a-z 0-9 "
                                        "+ / and final '=' padding; no whitespace; this looks "
                                        "like base64url, send standard base64)"));

  const std::string middle = "samples[2].image: padding '=' at offset ";
  const std::string rest =
      " in the middle of the base64 text (only the last one or two "
      "characters may be '=')";
  EXPECT_EQ(decode("Zg==Zg=="), middle + "2" + rest);
  EXPECT_EQ(decode("ab=c"), middle + "2" + rest);
  EXPECT_EQ(decode("a==="), middle + "1" + rest);
  EXPECT_EQ(decode("===="), middle + "0" + rest);

  EXPECT_EQ(serve::base64_decode("", "x", 0), "");
}

// ---- HeadEnd: where a request's line and headers end -----------------------------------------

// How many bytes of `text` are the head when it arrives in pieces of `piece` bytes (its whole
// length when it does not end).
std::size_t head_length(const std::string& text, std::size_t piece) {
  serve::HeadEnd end;
  std::size_t head = 0;
  for (std::size_t at = 0; at < text.size(); at += piece) {
    head += end.scan(text.data() + at, std::min(piece, text.size() - at));
  }
  EXPECT_EQ(end.ended(), head < text.size() || text.ends_with("\n\n") || text.ends_with("\n\r\n"));
  return head;
}

TEST(HeadEnd, EndsAtTheFirstEmptyLineWhateverThePieces) {
  const std::string crlf = "POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n";
  const std::string lf = "GET / HTTP/1.1\nHost: x\n\n";
  const std::string mixed_a = "GET / HTTP/1.1\r\nHost: x\n\r\n";  // LF, then CRLF: httplib's lines
  const std::string mixed_b = "GET / HTTP/1.1\nHost: x\r\n\n";
  for (const std::size_t piece : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{7}, std::size_t{4096}}) {
    SCOPED_TRACE(piece);
    for (const std::string& head : {crlf, lf, mixed_a, mixed_b}) {
      EXPECT_EQ(head_length(head + "{}", piece), head.size());  // the body is not the head's
      EXPECT_EQ(head_length(head, piece), head.size());
    }
    // not ended: no empty line yet, or a CR alone between two LFs' lines is not one
    for (const std::string open : {"GET / HTTP/1.1\r\nHost: x\r\n", "GET / HTTP/1.1\r\nHost: x\r\r\n"}) {
      EXPECT_EQ(head_length(open, piece), open.size());
    }
    // an empty first line ends nothing (there was no line before it)
    EXPECT_EQ(head_length("\r\nGET / HTTP/1.1\r\n\r\n", piece), 20u);
  }
}

TEST(HeadEnd, ScansNothingOnceEnded) {
  serve::HeadEnd end;
  EXPECT_EQ(end.scan("a\n\nbody", 7), 3u);
  EXPECT_TRUE(end.ended());
  EXPECT_EQ(end.scan("more\n\n", 6), 0u);
}

// ---- forms (form.hpp) -------------------------------------------------------------------------

using serve::FormError;
using serve::FormField;
using serve::form_body;

// The status and message of form_body's refusal.
std::pair<int, std::string> form_refusal(std::vector<FormField> fields, std::size_t max_items = 8) {
  try {
    form_body(std::move(fields), max_items);
  } catch (const FormError& e) {
    return {e.status, e.what()};
  }
  return {0, "(accepted)"};
}

// Each name form lands where docs/serving.md says: files as binary values, texts and list
// elements as strings, other values as JSON scalars or else strings.
TEST(Form, NamesAndValues) {
  const std::string png("\x89PNG\r\n\x1a\n\0\xff", 10);  // bytes a string may not hold as text
  const nlohmann::json body = form_body({{"samples[0].image", png},
                                         {"samples[1].text", "true"},
                                         {"samples[1].audio", "RIFF"},
                                         {"labels[1]", "42"},
                                         {"labels[0]", "cat"},
                                         {"allow_partial", "true"},
                                         {"top", "3"},
                                         {"encoding_format", "base64"},
                                         {"template", "\"a photo of a {}.\""},
                                         {"video", ""}},
                                        8);
  ASSERT_TRUE(body["samples"][0]["image"].is_binary());
  const auto& bytes = body["samples"][0]["image"].get_binary();
  EXPECT_EQ(std::string(bytes.begin(), bytes.end()), png);
  EXPECT_EQ(body["samples"][1]["text"], "true");  // a text is a string, whatever it reads as
  EXPECT_TRUE(body["samples"][1]["audio"].is_binary());
  EXPECT_EQ(body["labels"], nlohmann::json({"cat", "42"}));  // a list's elements are strings
  EXPECT_EQ(body["allow_partial"], true);
  EXPECT_EQ(body["top"], 3);
  EXPECT_EQ(body["encoding_format"], "base64");  // not JSON: the word as it is
  EXPECT_EQ(body["template"], "a photo of a {}.");  // JSON: the string it holds
  EXPECT_TRUE(body["video"].is_binary());
  EXPECT_TRUE(body["video"].get_binary().empty());
  EXPECT_EQ(form_body({}, 8), nlohmann::json::object());
}

TEST(Form, Refusals) {
  const auto refused = [](std::vector<FormField> fields, int status, const std::string& says) {
    const auto [got, message] = form_refusal(std::move(fields));
    EXPECT_EQ(got, status) << message;
    EXPECT_THAT(message, HasSubstr(says));
  };
  for (const std::string name : {"", "Image", "samples[", "samples[]", "samples[-1]", "samples[01]", "samples[1x]",
                                 "samples[0]image", "samples[0].", "samples[0].Image", "samples[0].a.b",
                                 "samples[0][1]", "samples[1234567890]", "a b"}) {
    refused({{name, "x"}}, 400, "form field \"" + name + "\"");
  }
  refused({{"samples[8].text", "x"}}, 413, "index 8, past --max-samples 8");
  refused({{"text", "a"}, {"text", "b"}}, 400, "\"text\": given twice");
  refused({{"samples[0].text", "a"}, {"samples[0].text", "b"}}, 400, "given twice");
  refused({{"labels[0]", "a"}, {"labels[0]", "b"}}, 400, "given twice");
  refused({{"labels[0]", "a"}, {"labels[0].text", "b"}}, 400, "given twice");
  refused({{"samples", "[]"}, {"samples[0].text", "a"}}, 400, "samples is also given as a value");
  refused({{"samples[0].text", "a"}, {"samples", "[]"}}, 400, "also given as a list");
  refused({{"samples[0].text", "a"}, {"samples[2].text", "c"}}, 400, "samples[1] is missing");
}

}  // namespace test_serve_parts
}  // namespace tessera
