#pragma once
// Modality dropout: during training, a sample that holds several modalities (a video with its
// audio and caption, say) loses each of them but the anchor with probability p, so the
// encoder learns to embed every subset it will meet at inference, not only the full mix.
//
//   for each modality m the sample holds, m not the anchor:
//       u_m = uniform [0, 1) from SplitMix64 keyed by (seed, step, sample index, m's index)
//       m is dropped when u_m < p
//   if that would drop every modality (possible only when the sample lacks the anchor), the
//   one with the largest u_m stays (a uniformly chosen one: the u_m are independent)
//
// So the anchor is never dropped, a sample is never left empty, and a sample with one modality
// is never changed. A non-anchor modality of a sample without the anchor, among k modalities,
// is dropped with probability p - p^k / k (the rescue above), otherwise exactly p.
//
// The draws are a pure function of (seed, step, sample index, modality): independent of the
// thread, of the order of the calls, of the other modalities a sample holds, and of how a
// batch is split (give each sample its index in the global batch: GradCache's two forwards
// and any number of ranks then see the same samples). Like the pair sampler
// (train/sampler.hpp), a resumed run needs only the step.

#include <tessera/core/error.hpp>
#include <tessera/core/modality.hpp>
#include <tessera/core/random.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/config.hpp>
#include <tessera/model/sample.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

struct ModalityDropout {
  double probability = 0;            // p in [0, 1]: each non-anchor modality's chance to go
  std::optional<ModalityId> anchor;  // never dropped; none: any may go, one always stays
  std::uint64_t seed = 0;
};

// The modality of `config` called `name`: "text", "image", "audio", "video" or a custom
// modality's name. Throws tessera::Error naming the model's modalities when there is none.
inline ModalityId modality_by_name(const Config& config, std::string_view name) {
  for (const Modality m : builtin_modalities) {
    if (config.has(m) && name == modality_name(m)) return m;
  }
  for (std::size_t k = 0; k < config.custom.size(); ++k) {
    if (config.custom[k].name == name) return ModalityId::custom(static_cast<int>(k));
  }
  std::string known;
  for (int i = 0; i < static_cast<int>(config.modality_count()); ++i) {
    const ModalityId m = ModalityId::from_index(i);
    if (m.is_builtin() && !config.has(m.builtin())) continue;
    known += (known.empty() ? "" : ", ") + config.modality_label(m);
  }
  fail("modality '", name, "' is not a modality of the model (it has ", known, ")");
}

namespace detail {

// u in [0, 1), the draw of modality `modality` (its index()) of sample `index` at `step`.
inline double modality_dropout_draw(std::uint64_t seed, std::int64_t step, std::uint64_t index,
                                    int modality) {
  SplitMix64 rng{seed};
  rng.state = rng.next() ^ static_cast<std::uint64_t>(step);
  rng.state = rng.next() ^ index;
  rng.state = rng.next() ^ static_cast<std::uint64_t>(modality);
  return rng.uniform();
}

inline void check_modality_dropout(const Config& config, const ModalityDropout& dropout) {
  check(std::isfinite(dropout.probability) && dropout.probability >= 0 &&
            dropout.probability <= 1,
        "modality dropout: probability ", dropout.probability, " is outside [0, 1]");
  if (dropout.anchor) {
    const ModalityId a = *dropout.anchor;
    check(!a.is_cls() && a.index() < config.modality_count() &&
              (!a.is_builtin() || config.has(a.builtin())),
          "modality dropout: the anchor (modality ", a.is_cls() ? -1 : a.index(),
          ") is not a modality of the model");
  }
}

}  // namespace detail

// Modality dropout on `sample` in place, as sample `index` of the batch of step `step`.
// requires: dropout.probability in [0, 1], the anchor one of config's modalities, every
// custom input of sample one of config's custom modalities (all checked: tessera::Error).
// ensures: sample keeps the anchor, and at least one modality; returns how many it lost.
template <class Scalar>
int drop_modalities(const Config& config, const ModalityDropout& dropout, Sample<Scalar>& sample,
                    std::int64_t step, std::uint64_t index) {
  detail::check_modality_dropout(config, dropout);
  struct Held {
    ModalityId id;
    double draw;
    bool drop;
  };
  std::vector<Held> held;  // the sample's modalities, in token order
  const auto hold = [&](ModalityId m) {
    const bool anchor = dropout.anchor && *dropout.anchor == m;
    const double u = detail::modality_dropout_draw(dropout.seed, step, index, m.index());
    held.push_back({m, u, !anchor && u < dropout.probability});
  };
  if (sample.text) hold(Modality::text);
  if (sample.image) hold(Modality::image);
  if (sample.audio) hold(Modality::audio);
  if (sample.video) hold(Modality::video);
  for (const auto& [name, input] : sample.custom) {
    const CustomModalityConfig* custom = config.find_custom(name);
    check(custom != nullptr, "modality dropout: sample ", index, " has custom input '", name,
          "' but the model has no such modality");
    hold(ModalityId::custom(static_cast<int>(custom - config.custom.data())));
  }
  if (held.size() <= 1) return 0;

  bool all = true;
  for (const Held& h : held) all = all && h.drop;
  if (all) {  // keep the modality nearest to staying
    Held* best = &held.front();
    for (Held& h : held) best = h.draw > best->draw ? &h : best;
    best->drop = false;
  }
  int dropped = 0;
  for (const Held& h : held) {
    if (!h.drop) continue;
    ++dropped;
    if (h.id.is_custom()) {
      sample.custom.erase(config.custom[static_cast<std::size_t>(h.id.custom_index())].name);
      continue;
    }
    switch (h.id.builtin()) {
      case Modality::text: sample.text.reset(); break;
      case Modality::image: sample.image.reset(); break;
      case Modality::audio: sample.audio.reset(); break;
      case Modality::video: sample.video.reset(); break;
    }
  }
  return dropped;
}

// Modality dropout on a batch of step `step`: samples[i] is sample first_index + i (its index
// in the whole batch, when `samples` is a part of it). Returns how many modalities went.
template <class Scalar>
Index drop_modalities(const Config& config, const ModalityDropout& dropout,
                      std::span<Sample<Scalar>> samples, std::int64_t step,
                      std::uint64_t first_index = 0) {
  detail::check_modality_dropout(config, dropout);
  Index dropped = 0;
  for (std::size_t i = 0; i < samples.size(); ++i) {
    dropped += drop_modalities<Scalar>(config, dropout, samples[i], step, first_index + i);
  }
  return dropped;
}

}  // namespace tessera
