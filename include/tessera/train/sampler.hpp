#pragma once
// PairSampler: modality-balanced batches of cross-modal pairs for contrastive training.
//
// A pair kind is two modalities of one item (text-image, text-audio, ..., audio-video: six).
// Every batch holds each kind in a set proportion: with weights w_k and B pairs per batch,
// kind k gets n_k pairs, the largest-remainder rounding of B w_k / sum(w), the same in every
// batch of a stage. The items of kind k (those that have both modalities) are drawn without
// replacement, epoch after epoch, each epoch a fresh permutation.
//
// A schedule of stages changes the weights with the step: progressive() is the seed's
// curriculum, text-image first, then text-audio and text-video joining, then all six kinds.
//
// Hard negatives (optional): give every item a group (items alike in what the model learns
// easily, the same color and shape, say) and a run length r. Each epoch's permutation is then
// made of runs of up to r items of one group: per group, its items shuffled and cut into runs
// of r (the last may be shorter); the runs shuffled. A batch of a kind then holds several items
// that differ only in what the group leaves open (position, motion), so one InfoNCE has to tell
// them apart, where a uniform batch rarely brings such items together. Every item is still
// drawn once per epoch. Runs suit only the kinds whose two views both show something the group
// leaves open: an image and a sound of one color and shape (a sound has no position, an image
// no motion) cannot be told apart, and a batch of them would be all false negatives. So the
// groups apply to the kinds chosen in `kinds`; the others keep the plain shuffle.
//
// A kind's share of a batch is at most the number of items that have both its modalities
// (otherwise one batch would draw an item several times, each copy a false negative of the
// others): the constructor refuses a larger pairs_per_batch, and max_pairs_per_batch() tells
// the largest that fits the items and stages.
//
// batch(step) is a pure function of (items, B, seed, stages, groups, step): the k-th kind's draws up
// to a step are counted in closed form, and each epoch's permutation comes from its own
// SplitMix64 stream (core/random.hpp: Fisher-Yates, not std::shuffle, whose algorithm the
// standard leaves open). So a resumed run needs only the step to continue exactly, on any platform.

#include <tessera/core/error.hpp>
#include <tessera/core/modality.hpp>
#include <tessera/core/random.hpp>
#include <tessera/core/tensor.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

namespace tessera {

inline constexpr int pair_kind_count = 6;

// The six pair kinds, in this order.
inline constexpr std::array<std::array<Modality, 2>, pair_kind_count> pair_kinds{{
    {Modality::text, Modality::image},
    {Modality::text, Modality::audio},
    {Modality::text, Modality::video},
    {Modality::image, Modality::audio},
    {Modality::image, Modality::video},
    {Modality::audio, Modality::video},
}};

inline const char* pair_kind_name(int kind) {
  static constexpr const char* names[pair_kind_count] = {
      "text-image", "text-audio", "text-video", "image-audio", "image-video", "audio-video"};
  return names[kind];
}

// Which of the four built-in modalities an item has, indexed by modality_index().
using ModalitySet = std::array<bool, num_modalities>;

// The weights of the pair kinds from step `from` on (until the next stage's `from`).
struct SamplerStage {
  std::int64_t from = 0;
  std::array<double, pair_kind_count> weights{};
};

// Hard negatives: group[i] is item i's group; batches of the kinds with kinds[k] set draw runs
// of up to run_length items of one group (see above). run_length 1 (the default) is the plain
// shuffle for every kind.
struct SamplerGroups {
  std::vector<std::size_t> group;  // [items], or empty when run_length is 1
  Index run_length = 1;
  std::array<bool, pair_kind_count> kinds{true, true, true, true, true, true};
};

// One pair of a batch: two modalities of one item.
struct PairDraw {
  std::size_t item;
  int kind;  // index into pair_kinds
};

class PairSampler {
 public:
  // requires: stages non-empty, the first from step 0, strictly increasing `from`; weights
  // finite, >= 0, some > 0 in every stage; every kind with weight > 0 has an item with both
  // of its modalities; 1 <= pairs_per_batch <= max_pairs_per_batch(items, stages) (each
  // kind's share of a batch no more than its items); groups.run_length >= 1, and when it is
  // > 1, groups.group has one entry per item.
  PairSampler(std::vector<ModalitySet> items, Index pairs_per_batch, std::uint64_t seed,
              std::vector<SamplerStage> stages, SamplerGroups groups = {})
      : pairs_per_batch_(pairs_per_batch), seed_(seed), stages_(std::move(stages)),
        groups_(std::move(groups)) {
    check(pairs_per_batch >= 1, "PairSampler: pairs_per_batch is ", pairs_per_batch,
          ", expected >= 1");
    check(groups_.run_length >= 1, "PairSampler: run_length is ", groups_.run_length,
          ", expected >= 1");
    check(groups_.run_length == 1 || groups_.group.size() == items.size(), "PairSampler: ",
          groups_.group.size(), " groups for ", items.size(), " items");
    check(!stages_.empty() && stages_.front().from == 0,
          "PairSampler: the first stage must start at step 0");
    for (std::size_t i = 0; i < items.size(); ++i) {
      for (int k = 0; k < pair_kind_count; ++k) {
        if (has_kind(items[i], k)) eligible_[static_cast<std::size_t>(k)].push_back(i);
      }
    }
    for (std::size_t s = 0; s < stages_.size(); ++s) {
      const auto& stage = stages_[s];
      check(s == 0 || stage.from > stages_[s - 1].from, "PairSampler: stage ", s,
            " starts at step ", stage.from, ", not after the previous stage");
      double total = 0;
      for (int k = 0; k < pair_kind_count; ++k) {
        const double w = stage.weights[static_cast<std::size_t>(k)];
        check(std::isfinite(w) && w >= 0, "PairSampler: stage ", s, " weight of ",
              pair_kind_name(k), " is ", w, ", expected finite and >= 0");
        check(w == 0 || !eligible_[static_cast<std::size_t>(k)].empty(), "PairSampler: stage ", s,
              " wants ", pair_kind_name(k), " pairs but no item has both modalities");
        total += w;
      }
      check(total > 0, "PairSampler: stage ", s, " has no weight > 0");
      counts_.push_back(split(pairs_per_batch_, stage.weights, total));
      for (int k = 0; k < pair_kind_count; ++k) {
        const auto kind = static_cast<std::size_t>(k);
        check(counts_.back()[kind] <= static_cast<Index>(eligible_[kind].size()), "PairSampler: ",
              pairs_per_batch, " pairs per batch give stage ", s, " ", counts_.back()[kind], " ",
              pair_kind_name(k), " pairs per batch, but only ", eligible_[kind].size(),
              " items have both modalities (a batch would draw items more than once); at most ",
              max_pairs_per_batch(items, stages_), " pairs per batch fit these items");
      }
    }
  }

  // The largest pairs_per_batch for which, in every stage, each kind's share of a batch is no
  // more than the items that have both its modalities (the constructor's bound); 0 if none.
  // requires: every stage's weights finite, >= 0, some > 0.
  static Index max_pairs_per_batch(const std::vector<ModalitySet>& items,
                                   const std::vector<SamplerStage>& stages) {
    std::array<Index, pair_kind_count> available{};
    for (const ModalitySet& set : items) {
      for (int k = 0; k < pair_kind_count; ++k) available[static_cast<std::size_t>(k)] += has_kind(set, k);
    }
    // Kind k of a stage gets at least floor(B w_k / total) pairs, so a batch B that fits has
    // B < (available_k + 1) total / w_k: scan down from that bound to the first B that fits
    // (largest-remainder rounding is not monotonic in B, so the bound alone is not the answer).
    double bound = static_cast<double>(std::numeric_limits<Index>::max() / 2);
    for (const SamplerStage& stage : stages) {
      double total = 0;
      for (const double w : stage.weights) total += w;
      for (std::size_t k = 0; k < pair_kind_count; ++k) {
        if (stage.weights[k] > 0) {
          bound = std::min(bound, std::floor(static_cast<double>(available[k] + 1) * total / stage.weights[k]));
        }
      }
    }
    const auto fits = [&](Index pairs) {
      for (const SamplerStage& stage : stages) {
        double total = 0;
        for (const double w : stage.weights) total += w;
        const auto counts = split(pairs, stage.weights, total);
        for (std::size_t k = 0; k < pair_kind_count; ++k) {
          if (counts[k] > available[k]) return false;
        }
      }
      return true;
    };
    for (auto pairs = static_cast<Index>(bound); pairs >= 1; --pairs) {
      if (fits(pairs)) return pairs;
    }
    return 0;
  }

  // All six kinds alike.
  static std::vector<SamplerStage> uniform() {
    SamplerStage all;
    all.weights.fill(1.0);
    return {all};
  }

  // The progressive curriculum: text-image alone for steps [0, audio_video_from); text-image,
  // text-audio and text-video alike until all_pairs_from; then all six kinds alike.
  static std::vector<SamplerStage> progressive(std::int64_t audio_video_from,
                                               std::int64_t all_pairs_from) {
    check(0 < audio_video_from && audio_video_from < all_pairs_from,
          "PairSampler::progressive: expected 0 < ", audio_video_from, " < ", all_pairs_from);
    SamplerStage first, second{audio_video_from, {}}, third{all_pairs_from, {}};
    first.weights = {1, 0, 0, 0, 0, 0};
    second.weights = {1, 1, 1, 0, 0, 0};
    third.weights.fill(1.0);
    return {first, second, third};
  }

  // `stages` with the weight of every kind no item has set to 0 (a dataset without audio, a
  // model without video), so the constructor accepts them.
  static std::vector<SamplerStage> possible_only(std::vector<SamplerStage> stages,
                                                 const std::vector<ModalitySet>& items) {
    for (int k = 0; k < pair_kind_count; ++k) {
      const bool possible = std::any_of(items.begin(), items.end(),
                                        [k](const ModalitySet& s) { return has_kind(s, k); });
      if (possible) continue;
      for (auto& stage : stages) stage.weights[static_cast<std::size_t>(k)] = 0;
    }
    return stages;
  }

  // The pairs of batch `step`, grouped by kind in kind order.
  // requires: step >= 0.
  std::vector<PairDraw> batch(std::int64_t step) const {
    check(step >= 0, "PairSampler::batch: step ", step, " < 0");
    const std::size_t stage = stage_of(step);
    std::vector<PairDraw> out;
    for (int k = 0; k < pair_kind_count; ++k) {
      const Index count = counts_[stage][static_cast<std::size_t>(k)];
      const auto& items = eligible_[static_cast<std::size_t>(k)];
      const auto n = static_cast<std::int64_t>(items.size());
      const std::int64_t first = drawn_before(k, step);
      std::int64_t epoch = -1;
      std::vector<std::size_t> order;
      for (std::int64_t p = first; p < first + count; ++p) {
        if (p / n != epoch) {
          epoch = p / n;
          order = permutation(k, epoch, items);
        }
        out.push_back({order[static_cast<std::size_t>(p % n)], k});
      }
    }
    return out;
  }

  // How many pairs of each kind a batch of `step` holds.
  const std::array<Index, pair_kind_count>& counts(std::int64_t step) const {
    return counts_[stage_of(step)];
  }

  // The items that have both modalities of `kind`.
  const std::vector<std::size_t>& eligible(int kind) const {
    return eligible_[static_cast<std::size_t>(kind)];
  }

 private:
  // Whether an item with modalities `s` can stand on both sides of pair kind `kind`.
  static bool has_kind(const ModalitySet& s, int kind) {
    const auto& [a, b] = pair_kinds[static_cast<std::size_t>(kind)];
    return s[modality_index(a)] && s[modality_index(b)];
  }

  // Largest-remainder rounding of pairs * w / total (ties to the lower kind).
  static std::array<Index, pair_kind_count> split(Index pairs,
                                                  const std::array<double, pair_kind_count>& weights,
                                                  double total) {
    std::array<Index, pair_kind_count> counts{};
    std::array<double, pair_kind_count> remainder{};
    Index given = 0;
    for (std::size_t k = 0; k < pair_kind_count; ++k) {
      const double exact = static_cast<double>(pairs) * weights[k] / total;
      counts[k] = static_cast<Index>(std::floor(exact));
      remainder[k] = exact - std::floor(exact);
      given += counts[k];
    }
    while (given < pairs) {
      std::size_t best = 0;
      for (std::size_t k = 1; k < pair_kind_count; ++k) {
        if (remainder[k] > remainder[best]) best = k;
      }
      ++counts[best];
      remainder[best] = -1;
      ++given;
    }
    return counts;
  }

  std::size_t stage_of(std::int64_t step) const {
    std::size_t s = 0;
    while (s + 1 < stages_.size() && stages_[s + 1].from <= step) ++s;
    return s;
  }

  // Pairs of `kind` drawn by the batches before `step`.
  std::int64_t drawn_before(int kind, std::int64_t step) const {
    std::int64_t total = 0;
    for (std::size_t s = 0; s < stages_.size() && stages_[s].from < step; ++s) {
      const std::int64_t end = s + 1 < stages_.size() ? std::min(step, stages_[s + 1].from) : step;
      total += (end - stages_[s].from) * counts_[s][static_cast<std::size_t>(kind)];
    }
    return total;
  }

  // Epoch `epoch` of kind `kind`: a shuffle of its items, or with groups, shuffled runs of
  // shuffled groups.
  std::vector<std::size_t> permutation(int kind, std::int64_t epoch,
                                       const std::vector<std::size_t>& items) const {
    SplitMix64 rng{seed_ ^ (0xA24BAED4963EE407ull * static_cast<std::uint64_t>(kind + 1))};
    rng.state = rng.next() ^ static_cast<std::uint64_t>(epoch);
    std::vector<std::size_t> order = items;
    if (groups_.run_length == 1 || !groups_.kinds[static_cast<std::size_t>(kind)]) {
      shuffle(order, rng);
      return order;
    }
    // items by group (stable: in item order), each group shuffled and cut into runs
    std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) {
      return groups_.group[x] < groups_.group[y];
    });
    std::vector<std::pair<std::size_t, std::size_t>> runs;  // [first, end) into order
    for (std::size_t first = 0; first < order.size();) {
      std::size_t end = first;
      while (end < order.size() && groups_.group[order[end]] == groups_.group[order[first]]) ++end;
      std::vector<std::size_t> members(order.begin() + static_cast<std::ptrdiff_t>(first),
                                       order.begin() + static_cast<std::ptrdiff_t>(end));
      shuffle(members, rng);
      std::copy(members.begin(), members.end(), order.begin() + static_cast<std::ptrdiff_t>(first));
      const auto run = static_cast<std::size_t>(groups_.run_length);
      for (std::size_t r = first; r < end; r += run) runs.push_back({r, std::min(end, r + run)});
      first = end;
    }
    shuffle(runs, rng);
    std::vector<std::size_t> out;
    out.reserve(order.size());
    for (const auto& [first, end] : runs) {
      out.insert(out.end(), order.begin() + static_cast<std::ptrdiff_t>(first),
                 order.begin() + static_cast<std::ptrdiff_t>(end));
    }
    return out;
  }

  Index pairs_per_batch_;
  std::uint64_t seed_;
  std::vector<SamplerStage> stages_;
  SamplerGroups groups_;
  std::array<std::vector<std::size_t>, pair_kind_count> eligible_;
  std::vector<std::array<Index, pair_kind_count>> counts_;  // per stage
};

}  // namespace tessera
