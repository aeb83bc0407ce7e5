// The streaming loader (train/loader.hpp): batches in plan order for any number of workers and
// any load timing, resume, bad items, failures, shutdown mid-stream, and bounded memory.
// Threads and sleeps only (no files); the whole file runs in well under a second.

#include <tessera/train/loader.hpp>

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace tessera {
namespace test_loader {

using test::error_of;
using Clock = std::chrono::steady_clock;

// A value that depends only on its item, so a wrong order or a mixed-up item shows.
struct Loaded {
  std::size_t item = 0;
  std::vector<std::uint64_t> payload;  // [4]
  friend bool operator==(const Loaded&, const Loaded&) = default;
};

Loaded make_value(std::size_t item) {
  SplitMix64 rng{item * 7919 + 1};
  return {item, {rng.next(), rng.next(), rng.next(), rng.next()}};
}

// Sleeps 0..max_us microseconds, drawn from a per-thread stream: workers finish out of order.
void random_delay(int max_us) {
  thread_local SplitMix64 rng{std::hash<std::thread::id>{}(std::this_thread::get_id())};
  std::this_thread::sleep_for(std::chrono::microseconds(rng.integer(0, max_us)));
}

// Batch step s holds items [per * s, per * (s + 1)): item numbers say where they came from.
LoaderPlan<std::size_t> sequential_plan(std::size_t per) {
  return {[per](BatchPosition p) {
            std::vector<std::size_t> out(per);
            for (std::size_t i = 0; i < per; ++i) out[i] = static_cast<std::size_t>(p.step) * per + i;
            return out;
          },
          0};
}

std::string manifest_label(std::size_t item) {
  return "manifest.csv:" + std::to_string(item + 2);  // line 1 is the header
}

struct Delivered {
  std::vector<BatchPosition> positions;
  std::vector<std::vector<std::size_t>> draws;
  std::vector<std::vector<Loaded>> values;
};

Delivered drain(Loader<std::size_t, Loaded>& loader, std::int64_t most = -1) {
  Delivered out;
  for (std::int64_t n = 0; most < 0 || n < most; ++n) {
    auto batch = loader.next();
    if (!batch) break;
    out.positions.push_back(batch->position);
    out.draws.push_back(batch->draws);
    out.values.push_back(std::move(batch->values));
  }
  return out;
}

TEST(Loader, BatchesComeInPlanOrderForAnyWorkersAndTiming) {
  constexpr std::size_t items = 60, per = 8;
  constexpr std::int64_t batches = 21;  // three epochs of 7
  const auto plan = shuffled_plan(items, per, 7);
  ASSERT_EQ(plan.steps_per_epoch, 7);
  Delivered expected;
  for (std::int64_t n = 0; n < batches; ++n) {
    const BatchPosition p = advance_position({}, n, plan.steps_per_epoch);
    expected.positions.push_back(p);
    expected.draws.push_back(plan.batch(p));
    std::vector<Loaded> values;
    for (const std::size_t item : expected.draws.back()) values.push_back(make_value(item));
    expected.values.push_back(values);
  }
  for (const int workers : {0, 1, 2, 4}) {
    for (const std::int64_t prefetch : {1, 3}) {
      SCOPED_TRACE(testing::Message() << workers << " workers, prefetch " << prefetch);
      Loader<std::size_t, Loaded> loader(
          plan,
          [](std::size_t item) -> LoadResult<Loaded> {
            random_delay(150);
            return make_value(item);
          },
          {.workers = workers, .prefetch = prefetch, .batches = batches});
      const Delivered got = drain(loader);
      EXPECT_EQ(got.positions, expected.positions);
      EXPECT_EQ(got.draws, expected.draws);
      EXPECT_EQ(got.values, expected.values);
      EXPECT_FALSE(loader.next().has_value()) << "past options.batches";
      EXPECT_EQ(loader.counts().batches, batches);
      EXPECT_EQ(loader.counts().items, batches * static_cast<std::int64_t>(per));
      EXPECT_EQ(loader.counts().bad, 0);
    }
  }
}

TEST(Loader, ShuffledPlanDrawsEachItemOncePerEpochFromTheSeed) {
  const auto plan = shuffled_plan(20, 6, 3);  // 3 steps per epoch, 2 items left out
  ASSERT_EQ(plan.steps_per_epoch, 3);
  std::vector<std::vector<std::size_t>> epochs(2);
  for (std::int64_t e = 0; e < 2; ++e) {
    for (std::int64_t s = 0; s < 3; ++s) {
      const auto batch = plan.batch({e, s});
      ASSERT_EQ(batch.size(), 6u);
      epochs[static_cast<std::size_t>(e)].insert(epochs[static_cast<std::size_t>(e)].end(),
                                                 batch.begin(), batch.end());
    }
    auto sorted = epochs[static_cast<std::size_t>(e)];
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end()) << "an item twice";
  }
  EXPECT_NE(epochs[0], epochs[1]) << "each epoch its own permutation";
  EXPECT_EQ(shuffled_plan(20, 6, 3).batch({1, 2}), plan.batch({1, 2}));  // a fresh copy agrees
  EXPECT_NE(shuffled_plan(20, 6, 4).batch({0, 0}), plan.batch({0, 0}));
  EXPECT_NE(error_of([&] { plan.batch({0, 3}); }).find("3 steps per epoch"), std::string::npos);
  EXPECT_NE(error_of([] { shuffled_plan(5, 6, 0); }).find("1 <= batch size <= items"),
            std::string::npos);
}

TEST(Loader, TakesPairSamplerDraws) {
  std::vector<ModalitySet> items(12, ModalitySet{true, true, false, false});  // text, image
  const PairSampler sampler(items, 4, 11, PairSampler::possible_only(PairSampler::uniform(), items));
  Loader<PairDraw, std::size_t> loader(
      pair_sampler_plan(sampler),
      [](const PairDraw& d) -> LoadResult<std::size_t> {
        random_delay(100);
        return d.item * 10 + static_cast<std::size_t>(d.kind);
      },
      {.workers = 3, .start = {0, 5}, .batches = 6});
  for (std::int64_t step = 5; step < 11; ++step) {
    const auto batch = loader.next();
    ASSERT_TRUE(batch);
    EXPECT_EQ(batch->position, (BatchPosition{0, step}));
    const auto expected = sampler.batch(step);
    ASSERT_EQ(batch->draws.size(), expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
      EXPECT_EQ(batch->draws[i].item, expected[i].item);
      EXPECT_EQ(batch->draws[i].kind, expected[i].kind);
      EXPECT_EQ(batch->values[i], expected[i].item * 10 + static_cast<std::size_t>(expected[i].kind));
    }
  }
  EXPECT_FALSE(loader.next());
}

TEST(Loader, ResumingMidEpochGivesTheUninterruptedBatches) {
  const auto plan = shuffled_plan(60, 8, 5);  // 7 steps per epoch
  const auto load = [](std::size_t item) -> LoadResult<Loaded> {
    random_delay(100);
    return make_value(item);
  };
  Loader<std::size_t, Loaded> whole(plan, load, {.workers = 2, .batches = 20});
  const Delivered uninterrupted = drain(whole);
  ASSERT_EQ(uninterrupted.draws.size(), 20u);

  Delivered resumed;
  BatchPosition stopped_at;
  {
    // The first run stops after 9 batches with its prefetch window full, and is destroyed.
    Loader<std::size_t, Loaded> first(plan, load, {.workers = 4, .prefetch = 3});
    resumed = drain(first, 9);
    stopped_at = first.position();
  }
  EXPECT_EQ(stopped_at, (BatchPosition{1, 2}));
  Loader<std::size_t, Loaded> second(plan, load, {.workers = 1, .start = stopped_at, .batches = 11});
  const Delivered rest = drain(second);
  resumed.positions.insert(resumed.positions.end(), rest.positions.begin(), rest.positions.end());
  resumed.draws.insert(resumed.draws.end(), rest.draws.begin(), rest.draws.end());
  resumed.values.insert(resumed.values.end(), rest.values.begin(), rest.values.end());
  EXPECT_EQ(resumed.positions, uninterrupted.positions);
  EXPECT_EQ(resumed.draws, uninterrupted.draws);
  EXPECT_EQ(resumed.values, uninterrupted.values);
}

// Items ending in 3 are empty captions (BadItem), items ending in 7 broken images (a
// tessera::Error from the decoder); the rest load.
LoadResult<Loaded> load_with_bad_items(std::size_t item) {
  random_delay(100);
  if (item % 10 == 3) return BadItem{"empty caption"};
  if (item % 10 == 7) fail("images/", item, ".png: cannot decode the PNG data");
  return make_value(item);
}

TEST(Loader, BadItemsAreSkippedCountedAndLoggedInPlanOrder) {
  const auto plan = shuffled_plan(50, 10, 9);  // 5 steps per epoch
  std::vector<std::string> first_log;
  for (const int workers : {0, 1, 4}) {
    SCOPED_TRACE(testing::Message() << workers << " workers");
    std::vector<std::string> log;
    Loader<std::size_t, Loaded> loader(plan, load_with_bad_items,
                                       {.workers = workers, .batches = 10, .max_bad_fraction = 1,
                                        .label = manifest_label,
                                        .log = [&](const std::string& line) { log.push_back(line); }});
    std::int64_t bad = 0, expected_bad = 0, kept = 0;
    std::vector<std::string> expected_log;
    while (auto batch = loader.next()) {
      std::vector<std::size_t> good;
      std::int64_t batch_bad = 0;
      for (const std::size_t item : plan.batch(batch->position)) {
        if (item % 10 == 3 || item % 10 == 7) {
          ++batch_bad;
          expected_log.push_back(detail::concat("item ", item, " (manifest.csv:", item + 2, ") of batch (epoch ",
                                                batch->position.epoch, ", step ", batch->position.step,
                                                "): ", item % 10 == 3 ? "empty caption" : "cannot decode"));
        } else {
          good.push_back(item);
        }
      }
      EXPECT_EQ(batch->draws, good) << "the batch keeps its other items, in plan order";
      ASSERT_EQ(batch->values.size(), good.size());
      for (std::size_t i = 0; i < good.size(); ++i) EXPECT_EQ(batch->values[i], make_value(good[i]));
      EXPECT_EQ(batch->bad, batch_bad);
      bad += batch->bad;
      expected_bad += batch_bad;
      kept += static_cast<std::int64_t>(good.size());
    }
    EXPECT_EQ(bad, 20) << "two in ten of 100 items";
    EXPECT_EQ(loader.counts().bad, expected_bad);
    EXPECT_EQ(loader.counts().items, kept + expected_bad) << "nothing silently dropped";
    ASSERT_EQ(log.size(), expected_log.size());
    for (std::size_t i = 0; i < log.size(); ++i) {
      const auto reason_at = expected_log[i].rfind(": ") + 2;
      EXPECT_NE(log[i].find(expected_log[i].substr(0, reason_at)), std::string::npos) << log[i];
      EXPECT_NE(log[i].find(expected_log[i].substr(reason_at)), std::string::npos) << log[i];
    }
    if (workers == 0) first_log = log;
    EXPECT_EQ(log, first_log) << "the same lines in the same order for any number of workers";
  }
}

TEST(Loader, BadItemsPastTheFractionStopWithAnError) {
  // Batches of 8 items 0, 1, 2, ...; every fifth item bad: 2 + 2 + 1 of the first 24.
  const auto load = [](std::size_t item) -> LoadResult<Loaded> {
    random_delay(50);
    if (item % 5 == 0) return BadItem{"unreadable file"};
    return make_value(item);
  };
  for (const int workers : {0, 3}) {
    SCOPED_TRACE(testing::Message() << workers << " workers");
    std::vector<std::string> log;
    Loader<std::size_t, Loaded> loader(
        sequential_plan(8), load,
        {.workers = workers, .max_bad_fraction = 0.1, .min_items = 20, .label = manifest_label,
         .log = [&](const std::string& line) { log.push_back(line); }});
    ASSERT_TRUE(loader.next());  // 2 of 8 bad, under min_items
    ASSERT_TRUE(loader.next());  // 4 of 16
    const std::string message = error_of([&] { loader.next(); });  // 5 of 24: 21% > 10%
    EXPECT_NE(message.find("5 of 24 items are bad"), std::string::npos) << message;
    EXPECT_NE(message.find("max_bad_fraction 0.1"), std::string::npos) << message;
    EXPECT_NE(message.find("min_items 20"), std::string::npos) << message;
    EXPECT_NE(message.find("item 20 (manifest.csv:22): unreadable file"), std::string::npos) << message;
    EXPECT_EQ(error_of([&] { loader.next(); }), message) << "the loader stays failed";
    EXPECT_EQ(log.size(), 5u);
    EXPECT_EQ(loader.counts().bad, 5);
  }
}

TEST(Loader, OneBadFirstItemDoesNotStopTheRun) {
  Loader<std::size_t, Loaded> loader(
      sequential_plan(10),
      [](std::size_t item) -> LoadResult<Loaded> {
        if (item == 0) return BadItem{"empty caption"};
        return make_value(item);
      },
      {.workers = 2, .batches = 20, .log = [](const std::string&) {}});  // 5% from 100 items on
  EXPECT_EQ(drain(loader).draws.size(), 20u) << "1 of 10 is 10%, but under min_items";
  EXPECT_EQ(loader.counts().bad, 1);
  EXPECT_EQ(loader.counts().items, 200);

  // The fraction is the whole run's when a resumed loader gets the counts before it.
  Loader<std::size_t, Loaded> resumed(
      sequential_plan(10),
      [](std::size_t item) -> LoadResult<Loaded> {
        if (item % 5 == 0) return BadItem{"empty caption"};
        return make_value(item);
      },
      {.workers = 2, .batches = 3, .max_bad_fraction = 0.05, .min_items = 10,
       .counts_before = {100, 1000, 0}, .log = [](const std::string&) {}});
  EXPECT_EQ(drain(resumed).draws.size(), 3u) << "6 bad of 1030 is under 5%";
  EXPECT_EQ(resumed.counts().bad, 6);
  EXPECT_EQ(resumed.counts().items, 1030);
}

TEST(Loader, OtherExceptionsReachNextAsErrorsNamingTheItem) {
  for (const int workers : {0, 1, 3}) {
    SCOPED_TRACE(testing::Message() << workers << " workers");
    std::atomic<int> calls{0};
    Loader<std::size_t, Loaded> loader(
        sequential_plan(8),
        [&](std::size_t item) -> LoadResult<Loaded> {
          ++calls;
          random_delay(50);
          if (item == 21) throw std::runtime_error("disk on fire");
          return make_value(item);
        },
        {.workers = workers, .prefetch = 3, .label = manifest_label});
    ASSERT_TRUE(loader.next());
    ASSERT_TRUE(loader.next());
    const std::string message = error_of([&] { loader.next(); });
    EXPECT_NE(message.find("item 21 (manifest.csv:23) of batch (epoch 0, step 2)"), std::string::npos)
        << message;
    EXPECT_NE(message.find("disk on fire"), std::string::npos) << message;
    EXPECT_EQ(error_of([&] { loader.next(); }), message);
    EXPECT_LE(calls.load(), (2 + 3) * 8) << "nothing claimed past the window of batch 2";
  }

  // A tessera::Error stops the run too when it is not taken as a bad item.
  Loader<std::size_t, Loaded> strict(
      sequential_plan(4),
      [](std::size_t item) -> LoadResult<Loaded> {
        if (item == 2) fail("images/2.png: cannot decode the PNG data");
        return make_value(item);
      },
      {.workers = 2, .errors_are_bad_items = false});
  EXPECT_NE(error_of([&] { strict.next(); }).find("item 2 of batch (epoch 0, step 0) failed: images/2.png"),
            std::string::npos);

  // So does the plan's own exception, at its batch.
  Loader<std::size_t, Loaded> planless(
      {[](BatchPosition p) {
         if (p.step == 1) throw std::out_of_range("no such step");
         return std::vector<std::size_t>{0, 1};
       },
       0},
      [](std::size_t item) -> LoadResult<Loaded> { return make_value(item); }, {.workers = 2});
  ASSERT_TRUE(planless.next());
  EXPECT_NE(error_of([&] { planless.next(); }).find("the plan of batch (epoch 0, step 1) failed: no such step"),
            std::string::npos);
}

TEST(Loader, DestructionMidStreamStopsAndJoinsTheWorkers) {
  std::atomic<int> loads{0};
  const auto slow = [&](std::size_t item) -> LoadResult<Loaded> {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    ++loads;
    return make_value(item);
  };
  const auto destroy_time = [](auto& loader) {
    const auto begin = Clock::now();
    loader.reset();
    return std::chrono::duration<double>(Clock::now() - begin).count();
  };
  // Destroyed before any batch, after one batch (workers mid-load), and with the window full.
  for (const int taken : {0, 1, 3}) {
    SCOPED_TRACE(testing::Message() << taken << " batches taken");
    auto loader = std::make_unique<Loader<std::size_t, Loaded>>(sequential_plan(8), slow,
                                                                LoaderOptions{.workers = 4, .prefetch = 3});
    for (int i = 0; i < taken; ++i) ASSERT_TRUE(loader->next());
    if (taken == 3) std::this_thread::sleep_for(std::chrono::milliseconds(30));  // fill the window
    EXPECT_LT(destroy_time(loader), 1.0) << "one load per worker at most, then joined";
    const int after = loads.load();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_EQ(loads.load(), after) << "no thread outlives the loader";
  }
  // And after a failure.
  auto failed = std::make_unique<Loader<std::size_t, Loaded>>(
      sequential_plan(8),
      [](std::size_t) -> LoadResult<Loaded> { throw std::logic_error("bug"); },
      LoaderOptions{.workers = 2});
  EXPECT_NE(error_of([&] { failed->next(); }).find("bug"), std::string::npos);
  EXPECT_LT(destroy_time(failed), 1.0);
}

// Counts the values that exist: a move hands the count over, so only owners count.
struct Counted {
  static inline std::atomic<int> live{0};
  static inline std::atomic<int> peak{0};
  bool owns = false;

  Counted() = default;
  explicit Counted(bool) : owns(true) {
    const int now = ++live;
    for (int p = peak.load(); now > p && !peak.compare_exchange_weak(p, now);) {
    }
  }
  Counted(Counted&& other) noexcept : owns(std::exchange(other.owns, false)) {}
  Counted& operator=(Counted&& other) noexcept {
    if (this != &other) {
      if (owns) --live;
      owns = std::exchange(other.owns, false);
    }
    return *this;
  }
  Counted(const Counted&) = delete;
  Counted& operator=(const Counted&) = delete;
  ~Counted() {
    if (owns) --live;
  }
};

TEST(Loader, AtMostPrefetchPlusOneBatchesOfValuesExist) {
  constexpr int per = 8, workers = 4;
  constexpr std::int64_t prefetch = 2, batches = 40;
  Counted::live = 0;
  Counted::peak = 0;
  {
    Loader<std::size_t, Counted> loader(
        sequential_plan(per),
        [](std::size_t) -> LoadResult<Counted> {
          random_delay(100);
          return Counted(true);
        },
        {.workers = workers, .prefetch = prefetch, .batches = batches});
    std::int64_t seen = 0;
    while (auto batch = loader.next()) {  // the batch goes before the next call
      seen += static_cast<std::int64_t>(batch->values.size());
      std::this_thread::sleep_for(std::chrono::microseconds(500));  // training: workers run ahead
    }
    EXPECT_EQ(seen, batches * per);
  }
  EXPECT_EQ(Counted::live.load(), 0) << "every value released";
  // The caller's batch and `prefetch` ahead; the brief's looser bound adds one per worker.
  EXPECT_LE(Counted::peak.load(), (prefetch + 1) * per) << "peak " << Counted::peak.load();
  EXPECT_GE(Counted::peak.load(), per);
}

TEST(Loader, EmptyBatchesAndTheEnd) {
  Loader<std::size_t, Loaded> loader(
      {[](BatchPosition p) { return p.step == 1 ? std::vector<std::size_t>{} : std::vector<std::size_t>{9}; },
       0},
      [](std::size_t item) -> LoadResult<Loaded> { return make_value(item); },
      {.workers = 2, .batches = 3});
  EXPECT_EQ(loader.next()->draws.size(), 1u);
  EXPECT_EQ(loader.next()->draws.size(), 0u);
  EXPECT_EQ(loader.next()->draws.size(), 1u);
  EXPECT_FALSE(loader.next());
  EXPECT_EQ(loader.position(), (BatchPosition{0, 3}));
}

TEST(Loader, OptionsOutOfRangeAreErrors) {
  const auto plan = shuffled_plan(10, 5, 0);
  const auto load = [](std::size_t item) -> LoadResult<Loaded> { return make_value(item); };
  const auto message = [&](LoaderOptions options) {
    return error_of([&] { Loader<std::size_t, Loaded> loader(plan, load, std::move(options)); });
  };
  EXPECT_NE(message({.workers = -1}).find("workers is -1, expected 0..256"), std::string::npos);
  EXPECT_NE(message({.prefetch = 0}).find("prefetch is 0, expected 1.."), std::string::npos);
  EXPECT_NE(message({.start = {0, 2}}).find("start at epoch 0 step 2"), std::string::npos);
  EXPECT_NE(message({.max_bad_fraction = 1.5}).find("max_bad_fraction is 1.5"), std::string::npos);
  EXPECT_NE(message({.batches = -2}).find("batches is -2"), std::string::npos);
  EXPECT_NE(error_of([&] { Loader<std::size_t, Loaded> loader(LoaderPlan<std::size_t>{}, load); })
                .find("plan and the load function"),
            std::string::npos);
}

}  // namespace test_loader
}  // namespace tessera
