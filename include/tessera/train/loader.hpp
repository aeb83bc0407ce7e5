#pragma once
// Loader: streaming, prefetching batches over a deterministic plan.
//
// A plan says which items make each batch: plan.batch(position) is a list of draws (item
// indices, or PairSampler's PairDraw), a pure function of the position {epoch, step} and of
// whatever seed the plan was built with. A load function turns one draw into a value (a
// preprocessed Sample, the views of a pair) or says why the item is bad (BadItem: a broken
// image, an empty caption). The loader's worker threads (std::jthread) load the next batches
// into a ring of `prefetch` batches while the caller trains on the current one:
//
//   tessera::Loader<std::size_t, Sample<float>> loader(
//       tessera::shuffled_plan(items.size(), 64, seed),
//       [&](std::size_t i) -> tessera::LoadResult<Sample<float>> { return load(items[i]); },
//       {.workers = 2, .prefetch = 2, .start = resume_at, .label = [&](std::size_t i) { ... }});
//   while (auto batch = loader.next()) train(batch->values);  // batch->position, ->draws
//
// Under data parallelism each rank loads only its share of every batch: a loader over
// rank_share_plan(plan, rank, size) (train/distributed_step.hpp puts the shares together).
//
// Guarantees:
// - Order: next() delivers the plan's batches in plan order, each batch's values in the plan's
//   order, whatever the number of workers or their timing (each result is stored at its own
//   index of its own batch's slot; the caller takes slots in order). With a deterministic load
//   function the values are bit-identical for 0, 1 or many workers.
// - Resume: a loader started at position p delivers exactly the batches an uninterrupted one
//   delivers from p on: nothing but the position decides what a batch holds.
// - Memory: workers claim items only of the `prefetch` batches after the one last delivered,
//   so at most (prefetch + 1) batches of values exist at once (the caller's and those
//   ahead, when the caller lets go of a batch before asking for the next), whatever the size
//   of the data set.
// - Bad items: a draw whose load returns BadItem (or, with errors_are_bad_items, throws
//   tessera::Error, which is how tessera's decoders report a broken file) is left out of its
//   batch, counted, and reported by one log line naming its index, its label and the reason.
//   The batch keeps its other items: it is not refilled, because a refill would take items
//   from later batches and make every later batch depend on which items failed before it, so
//   a resumed run would need that history, not just the position; a contrastive batch works
//   with a few pairs fewer. Past max_bad_fraction of the items (counted from min_items on),
//   next() throws tessera::Error. Logs, counts and that error come in plan order, the same
//   for any number of workers.
// - Failures: any other exception from the load function (or the plan) is carried to the
//   caller: next() throws it as a tessera::Error naming the item, at that item's batch, after
//   delivering every batch before it; the loader stays failed (next() throws it again).
// - Shutdown: the destructor stops the workers and joins them; it waits for loads already
//   running (at most one per worker), never for the window to drain. No thread outlives it.
//
// Threads: the load function runs on the worker threads, several calls at once, so it must be
// safe to call concurrently; the plan runs on them too but one call at a time, in position
// order. Each worker sets tessera's OpenMP thread count to 1 for its own loops (a decode is one
// item's work; the parallelism comes from the workers, and the caller's training loops keep
// their threads). With workers = 0, next() loads each batch itself, on the caller's thread.

#include <tessera/core/error.hpp>
#include <tessera/core/parallel.hpp>
#include <tessera/core/random.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/core/warning.hpp>
#include <tessera/train/distributed.hpp>
#include <tessera/train/sampler.hpp>

#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace tessera {

// A batch's place in the run: batch `step` of epoch `epoch`.
struct BatchPosition {
  std::int64_t epoch = 0;
  std::int64_t step = 0;
  friend bool operator==(const BatchPosition&, const BatchPosition&) = default;
};

// What each batch holds. batch(position) must be a pure function of the position (same
// position, same draws), or neither order nor resume holds.
template <class Draw>
struct LoaderPlan {
  std::function<std::vector<Draw>(BatchPosition)> batch;
  // Batches per epoch: after step steps_per_epoch - 1 comes step 0 of the next epoch. 0: the
  // step counts on forever and the epoch stays as started (PairSampler, whose epochs are its
  // own business, takes the global step).
  std::int64_t steps_per_epoch = 0;
};

// The position `batches` batches after `position`.
// requires: batches >= 0; position.step < steps_per_epoch when steps_per_epoch > 0.
inline BatchPosition advance_position(BatchPosition position, std::int64_t batches,
                             std::int64_t steps_per_epoch) {
  if (steps_per_epoch <= 0) return {position.epoch, position.step + batches};
  const std::int64_t step = position.step + batches;
  return {position.epoch + step / steps_per_epoch, step % steps_per_epoch};
}

// The plan of a PairSampler: batch {epoch, step} is sampler.batch(step) (the sampler's own
// epochs run per pair kind inside the global step; the position's epoch is passed through).
// The plan holds a copy of the sampler.
inline LoaderPlan<PairDraw> pair_sampler_plan(PairSampler sampler) {
  auto shared = std::make_shared<const PairSampler>(std::move(sampler));
  return {[shared](BatchPosition position) { return shared->batch(position.step); }, 0};
}

// Rank `rank` of `size`'s share of each batch of `plan` (data parallelism: each rank loads
// only its share): the draws [first, first + count) of rank_share(n, rank, size) for a batch
// of n draws, contiguous and in plan order, so the ranks' shares in rank order are the whole
// batch. A share may be empty (n < size). The plan's steps per epoch are kept.
// requires: 0 <= rank < size.
template <class Draw>
LoaderPlan<Draw> rank_share_plan(LoaderPlan<Draw> plan, int rank, int size) {
  (void)rank_share(0, rank, size);  // checks rank and size now, not at the first batch
  auto whole = std::move(plan.batch);
  return {[whole = std::move(whole), rank, size](BatchPosition position) {
            std::vector<Draw> draws = whole(position);
            const RankShare share = rank_share(static_cast<Index>(draws.size()), rank, size);
            const auto first = draws.begin() + static_cast<std::ptrdiff_t>(share.first);
            return std::vector<Draw>(first, first + static_cast<std::ptrdiff_t>(share.count));
          },
          plan.steps_per_epoch};
}

// Epochs of `items` item indices: each epoch a fresh permutation (Fisher-Yates on its own
// SplitMix64 stream from seed and epoch, so the same on every platform), cut into batches of
// batch_size; the last partial batch of an epoch is left out (open_clip's drop_last), so every
// batch has batch_size items and an epoch is items / batch_size steps.
// requires: 1 <= batch_size <= items.
inline LoaderPlan<std::size_t> shuffled_plan(std::size_t items, std::size_t batch_size,
                                             std::uint64_t seed) {
  check(batch_size >= 1 && batch_size <= items, "shuffled_plan: a batch of ", batch_size,
        " items from ", items, " items; expected 1 <= batch size <= items");
  // The last epoch's permutation, kept so that each batch does not shuffle the whole set
  // again; behind a mutex since copies of the plan share it.
  struct Cache {
    std::mutex mutex;
    std::int64_t epoch = -1;
    std::vector<std::size_t> order;  // [items]
  };
  auto cache = std::make_shared<Cache>();
  const auto per_epoch = static_cast<std::int64_t>(items / batch_size);
  return {[=](BatchPosition position) {
            check(position.epoch >= 0 && position.step >= 0 && position.step < per_epoch,
                  "shuffled_plan: no batch at epoch ", position.epoch, " step ", position.step,
                  " (", per_epoch, " steps per epoch)");
            std::lock_guard<std::mutex> lock(cache->mutex);
            if (cache->epoch != position.epoch) {
              SplitMix64 rng{seed ^ 0x6A09E667F3BCC909ull};
              rng.state = rng.next() ^ static_cast<std::uint64_t>(position.epoch);
              cache->order.resize(items);
              for (std::size_t i = 0; i < items; ++i) cache->order[i] = i;
              shuffle(cache->order, rng);
              cache->epoch = position.epoch;
            }
            const auto first = cache->order.begin() +
                               static_cast<std::ptrdiff_t>(static_cast<std::size_t>(position.step) * batch_size);
            return std::vector<std::size_t>(first, first + static_cast<std::ptrdiff_t>(batch_size));
          },
          per_epoch};
}

// A load function's answer for an item it cannot use, and why ("empty caption").
struct BadItem {
  std::string reason;
};

// A load function's answer: the loaded value, or BadItem.
template <class Value>
using LoadResult = std::variant<Value, BadItem>;

// What next() has delivered: batches, the items of their plans, and the bad ones among them.
struct LoaderCounts {
  std::int64_t batches = 0;
  std::int64_t items = 0;  // good and bad
  std::int64_t bad = 0;
};

struct LoaderOptions {
  static constexpr int max_workers = 256;  // far past any machine's cores; a typo's guard
  static constexpr std::int64_t max_prefetch = 1 << 16;  // likewise

  // Threads that load, 0..max_workers. 0: next() loads each batch itself.
  int workers = 2;
  // Batches loaded ahead of the one the caller holds, 1..max_prefetch. Memory: (prefetch + 1)
  // batches of values.
  std::int64_t prefetch = 2;
  // The first batch next() delivers: to resume, the position after the last batch trained.
  BatchPosition start{};
  // How many batches next() delivers before returning nothing; -1: no end.
  std::int64_t batches = -1;

  // Bad items: next() throws once more than max_bad_fraction (0..1) of the items delivered are
  // bad, counted from min_items items on (so one bad first item does not stop a run). 5%:
  // beyond a stray broken file, a sign that the manifest or its paths are wrong.
  double max_bad_fraction = 0.05;
  std::int64_t min_items = 100;
  // The counts of the run before `start` (kept in a checkpoint), so the fraction is the run's.
  LoaderCounts counts_before{};
  // Whether a tessera::Error thrown by the load function makes its item bad (true: tessera's
  // decoders throw it for a broken file) or stops the run like any other exception.
  bool errors_are_bad_items = true;

  // How a log line names an item besides its index ("manifest.csv:17"); empty: the index only.
  std::function<std::string(std::size_t item)> label{};
  // Receives one line per bad item, on the caller's thread; empty: tessera::warn().
  std::function<void(const std::string& line)> log{};
};

// One batch of the plan with its loaded values: values[i] is the value of draws[i]; the bad
// draws are left out of both.
template <class Draw, class Value>
struct LoadedBatch {
  BatchPosition position;
  std::vector<Draw> draws;
  std::vector<Value> values;
  std::int64_t bad = 0;  // draws of this batch left out as bad
};

namespace detail {

// The item a draw names: the draw itself when it is an integer, else its member `item`.
template <class Draw>
std::size_t loader_item(const Draw& draw) {
  if constexpr (std::is_integral_v<Draw>) {
    return static_cast<std::size_t>(draw);
  } else {
    return static_cast<std::size_t>(draw.item);
  }
}

inline std::string exception_text(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

}  // namespace detail

template <class Draw, class Value>
class Loader {
 public:
  using Load = std::function<LoadResult<Value>(const Draw&)>;
  using Batch = LoadedBatch<Draw, Value>;

  // requires: plan.batch and load callable; plan.steps_per_epoch >= 0; options within their
  // ranges; start.epoch, start.step >= 0, and start.step < steps_per_epoch when that is > 0.
  Loader(LoaderPlan<Draw> plan, Load load, LoaderOptions options = {})
      : plan_(std::move(plan)), load_(std::move(load)), options_(std::move(options)),
        counts_(options_.counts_before) {
    const LoaderOptions& o = options_;
    check(static_cast<bool>(plan_.batch) && static_cast<bool>(load_),
          "Loader: the plan and the load function must be set");
    check(o.workers >= 0 && o.workers <= LoaderOptions::max_workers, "Loader: workers is ",
          o.workers, ", expected 0..", LoaderOptions::max_workers);
    check(o.prefetch >= 1 && o.prefetch <= LoaderOptions::max_prefetch, "Loader: prefetch is ",
          o.prefetch, ", expected 1..", LoaderOptions::max_prefetch);
    check(o.batches >= -1, "Loader: batches is ", o.batches, ", expected >= 0 or -1 (no end)");
    check(std::isfinite(o.max_bad_fraction) && o.max_bad_fraction >= 0 && o.max_bad_fraction <= 1,
          "Loader: max_bad_fraction is ", o.max_bad_fraction, ", expected 0..1");
    check(o.min_items >= 0, "Loader: min_items is ", o.min_items, ", expected >= 0");
    check(o.counts_before.batches >= 0 && o.counts_before.items >= 0 &&
              o.counts_before.bad >= 0 && o.counts_before.bad <= o.counts_before.items,
          "Loader: counts_before has ", o.counts_before.bad, " bad of ", o.counts_before.items,
          " items, expected 0 <= bad <= items");
    check(plan_.steps_per_epoch >= 0, "Loader: the plan has ", plan_.steps_per_epoch,
          " steps per epoch, expected >= 0");
    check(o.start.epoch >= 0 && o.start.step >= 0 &&
              (plan_.steps_per_epoch == 0 || o.start.step < plan_.steps_per_epoch),
          "Loader: start at epoch ", o.start.epoch, " step ", o.start.step, ", expected >= 0",
          plan_.steps_per_epoch > 0 ? detail::concat(" and a step below the plan's ",
                                                     plan_.steps_per_epoch, " per epoch")
                                    : std::string());
    slots_.resize(static_cast<std::size_t>(o.prefetch));
    try {
      for (int w = 0; w < o.workers; ++w) workers_.emplace_back([this] { work(); });
    } catch (const std::exception& e) {
      stop();
      fail("Loader: cannot start worker thread ", workers_.size() + 1, " of ", o.workers, ": ",
           e.what());
    }
  }

  // Stops the workers and joins them (each finishes the load it is in, if any).
  ~Loader() { stop(); }

  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // The next batch of the plan, or nothing after options.batches batches. Blocks until it is
  // loaded. Let go of the previous batch first: the memory bound counts on it.
  // Throws tessera::Error when an item's load failed otherwise than as a bad item (naming the
  // item), when the plan failed, or when bad items pass max_bad_fraction; then every later
  // call throws the same error.
  std::optional<Batch> next() {
    if (failure_) throw Error(*failure_);
    if (options_.batches >= 0 && delivered_ >= options_.batches) return std::nullopt;
    const std::int64_t n = delivered_;
    Slot slot = workers_.empty() ? load_here(n) : take_loaded(n);
    try {
      return assemble(std::move(slot), n);
    } catch (const Error& e) {
      failure_ = e.what();
      throw;
    }
  }

  // The position of the batch next() delivers next (for a checkpoint: where to resume).
  BatchPosition position() const { return position_of(delivered_); }

  // What next() has delivered so far, options.counts_before included.
  const LoaderCounts& counts() const { return counts_; }

 private:
  struct Failure {
    std::exception_ptr error;
  };
  // An item's outcome: not loaded yet, its value, bad, or failed.
  using Outcome = std::variant<std::monostate, Value, BadItem, Failure>;

  // One batch on its way: its draws and their outcomes, done counting those in.
  struct Slot {
    bool planned = false;
    std::vector<Draw> draws;
    std::vector<Outcome> outcomes;  // [draws]
    std::size_t done = 0;
    std::exception_ptr plan_error;
  };

  BatchPosition position_of(std::int64_t n) const {
    return advance_position(options_.start, n, plan_.steps_per_epoch);
  }

  Slot& slot_of(std::int64_t n) { return slots_[static_cast<std::size_t>(n % options_.prefetch)]; }

  // Fills `slot` with the plan of batch n (or the plan's exception).
  void plan_into(Slot& slot, std::int64_t n) {
    try {
      slot.draws = plan_.batch(position_of(n));
    } catch (...) {
      slot.draws.clear();
      slot.plan_error = std::current_exception();
    }
    slot.outcomes.clear();
    slot.outcomes.resize(slot.draws.size());  // not assign(): Value may be move-only
    slot.done = 0;
    slot.planned = true;
  }

  // Batch n loaded on the caller's thread (workers = 0).
  Slot load_here(std::int64_t n) {
    Slot slot;
    plan_into(slot, n);
    for (std::size_t i = 0; i < slot.draws.size(); ++i) slot.outcomes[i] = load_one(slot.draws[i]);
    ++delivered_;
    return slot;
  }

  // Batch n from the workers, once its last item is in; its slot is then free for batch
  // n + prefetch.
  Slot take_loaded(std::int64_t n) {
    std::unique_lock<std::mutex> lock(mutex_);
    Slot& ready = slot_of(n);
    batch_done_.wait(lock, [&] { return ready.planned && ready.done == ready.draws.size(); });
    Slot slot = std::move(ready);
    ready = Slot{};
    ++delivered_;
    lock.unlock();
    work_ready_.notify_all();
    return slot;
  }

  Outcome load_one(const Draw& draw) {
    try {
      LoadResult<Value> result = load_(draw);
      if (auto* bad = std::get_if<BadItem>(&result)) return std::move(*bad);
      return Outcome(std::in_place_type<Value>, std::get<Value>(std::move(result)));
    } catch (const Error& e) {
      if (options_.errors_are_bad_items) return BadItem{e.what()};
      return Failure{std::current_exception()};
    } catch (...) {
      return Failure{std::current_exception()};
    }
  }

  // Moves the claim cursor to the next item a worker may load (planning batches as it enters
  // them); false when none may be loaded now. Called with the mutex held.
  bool claimable() {
    while (true) {
      if (failed_batch_ >= 0 && claim_batch_ > failed_batch_) return false;
      if (options_.batches >= 0 && claim_batch_ >= options_.batches) return false;
      if (claim_batch_ >= delivered_ + options_.prefetch) return false;  // the window is full
      Slot& slot = slot_of(claim_batch_);
      if (!slot.planned) {
        plan_into(slot, claim_batch_);
        if (slot.plan_error) failed_batch_ = claim_batch_;
        if (slot.draws.empty()) batch_done_.notify_all();
      }
      if (claim_item_ < slot.draws.size()) return true;
      ++claim_batch_;
      claim_item_ = 0;
    }
  }

  void work() {
    set_num_threads(1);
    std::unique_lock<std::mutex> lock(mutex_);
    while (true) {
      work_ready_.wait(lock, [&] { return stopping_ || claimable(); });
      if (stopping_) return;
      const std::int64_t n = claim_batch_;
      const std::size_t i = claim_item_++;
      Slot& slot = slot_of(n);  // stays batch n's until every item of it is done
      const Draw draw = slot.draws[i];
      lock.unlock();
      Outcome outcome = load_one(draw);
      lock.lock();
      if (std::holds_alternative<Failure>(outcome) &&
          (failed_batch_ < 0 || n < failed_batch_)) {
        failed_batch_ = n;  // nothing past this batch is claimed: the caller stops there
      }
      slot.outcomes[i] = std::move(outcome);
      if (++slot.done == slot.draws.size()) batch_done_.notify_all();
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    work_ready_.notify_all();
    workers_.clear();  // joins each
  }

  std::string describe(const Draw& draw) const {
    const std::size_t item = detail::loader_item(draw);
    std::string text = detail::concat("item ", item);
    if (options_.label) text += " (" + options_.label(item) + ")";
    return text;
  }

  // Batch n from its slot, in plan order: values kept, bad items counted and logged, the
  // first failure thrown; then the bad fraction checked.
  Batch assemble(Slot slot, std::int64_t n) {
    Batch out{position_of(n), {}, {}, 0};
    const std::string where =
        detail::concat("batch (epoch ", out.position.epoch, ", step ", out.position.step, ")");
    if (slot.plan_error) {
      fail("Loader: the plan of ", where, " failed: ", detail::exception_text(slot.plan_error));
    }
    out.draws.reserve(slot.draws.size());
    out.values.reserve(slot.draws.size());
    for (std::size_t i = 0; i < slot.draws.size(); ++i) {
      Outcome& outcome = slot.outcomes[i];
      if (auto* failure = std::get_if<Failure>(&outcome)) {
        fail("Loader: loading ", describe(slot.draws[i]), " of ", where,
             " failed: ", detail::exception_text(failure->error));
      }
      ++counts_.items;
      if (auto* bad = std::get_if<BadItem>(&outcome)) {
        ++out.bad;
        ++counts_.bad;
        last_bad_ = describe(slot.draws[i]) + ": " + bad->reason;
        const std::string line = "Loader: skipped " + describe(slot.draws[i]) + " of " + where +
                                 ": " + bad->reason;
        if (options_.log) {
          options_.log(line);
        } else {
          warn(line);
        }
        continue;
      }
      TESSERA_ASSERT(std::holds_alternative<Value>(outcome));
      out.draws.push_back(slot.draws[i]);
      out.values.push_back(std::get<Value>(std::move(outcome)));
    }
    ++counts_.batches;
    const auto items = static_cast<double>(counts_.items);
    if (counts_.items >= options_.min_items && counts_.bad > 0 &&
        static_cast<double>(counts_.bad) > options_.max_bad_fraction * items) {
      fail("Loader: ", counts_.bad, " of ", counts_.items, " items are bad (",
           100.0 * static_cast<double>(counts_.bad) / items, "%), more than max_bad_fraction ",
           options_.max_bad_fraction, " allows (counted from min_items ", options_.min_items,
           " items on), at ", where, "; the last: ", last_bad_);
    }
    return out;
  }

  LoaderPlan<Draw> plan_;
  Load load_;
  LoaderOptions options_;

  // The caller's side (next(), on the caller's thread).
  LoaderCounts counts_;
  std::optional<std::string> failure_;
  std::string last_bad_;

  // Shared with the workers, under mutex_.
  std::mutex mutex_;
  std::condition_variable work_ready_;  // the window moved, or stop
  std::condition_variable batch_done_;  // a batch's last item is in
  std::vector<Slot> slots_;             // [prefetch]: batch n in slots_[n % prefetch]
  std::int64_t delivered_ = 0;          // batches handed to the caller
  std::int64_t claim_batch_ = 0;        // the next item a worker takes: batch, item
  std::size_t claim_item_ = 0;
  std::int64_t failed_batch_ = -1;      // the first batch with a failure, or -1
  bool stopping_ = false;

  std::vector<std::jthread> workers_;  // last: joined before the members above go
};

}  // namespace tessera
