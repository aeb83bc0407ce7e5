#pragma once
// TowerModel: a model of one tower per modality (model/tower.hpp) sharing one embedding space:
// CLIP and open_clip (text and image towers), ImageBind (text, vision, audio). The pretrained
// checkpoints of those families load into it (model/pretrained.hpp).
//
// Each sample holds exactly one input. Its embedding is its tower's:
//   text, image           one clip
//   video                 clips of video_clip_frames frames through the image tower (CLIP:
//                         1, each frame; ImageBind: 2), e = normalize(mean of the clips' unit
//                         embeddings), CLIP4Clip's mean pooling and ImageBind's mean over clips
//   audio                 clips of the audio tower's target_frames columns of features [M, K*T]
//                         (ImageBind: 3 clips of 204 frames), e = normalize(mean of the clips')
// Encoding::hidden is the first clip's last-block output [L, D_tower] (towers have their own
// widths), modality its modality, positions (j, j, j) for token j, audio_clips the clip count.
//
// Fine-tuning: encode_batch with a TowerFreezing and a TowerModelTrace is the training forward
// (frozen towers run their plain forward and keep nothing), backward adds the gradients of the
// trained weights to a TowerGradients, which holds only those; parameters(freezing) and
// TowerGradients::parameters() list them in one order with one set of names, for AdamW.
// train/tower_step.hpp is the step built on them.

#include <tessera/core/error.hpp>
#include <tessera/core/modality.hpp>
#include <tessera/core/parameter.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/sample.hpp>
#include <tessera/model/tower.hpp>
#include <tessera/model/tower_freezing.hpp>
#include <tessera/model/tower_trace.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace tessera {

struct TowerModelConfig {
  std::string family;  // where the model came from: "hf_clip", "open_clip", "imagebind", ...
  Index embed_dim = 512;                         // E
  std::map<Modality, TowerConfig> towers;        // by modality: text, image, audio
  std::map<Modality, std::string> tower_names;   // tessera_towers: each tower's name in its files
  bool video = false;                            // video through the image tower
  Index video_clip_frames = 1;                   // frames per video clip (the image tower's time kernel)

  bool has(Modality m) const {
    return m == Modality::video ? video && towers.count(Modality::image) == 1
                                : towers.count(m) == 1;
  }
  // The name of the tower of modality m in tessera_towers files (and in parameter names):
  // tower_names' entry, or the modality's name ("text", "image", "audio").
  std::string name_of(Modality m) const {
    const auto named = tower_names.find(m);
    return named != tower_names.end() ? named->second : std::string(modality_name(m));
  }
  bool operator==(const TowerModelConfig&) const = default;
};

// Throws tessera::Error naming `where` when the towers of `c` are inconsistent: each
// tower's own checks (validate(TowerConfig)), its modality, its embed_dim, video's clips.
inline void validate(const TowerModelConfig& c, const std::string& where) {
  check(!c.towers.empty(), where, ": the model has no tower");
  for (const auto& [m, tower] : c.towers) {
    check(m != Modality::video && tower.modality == m, where, ": the ", modality_name(m),
          " tower is a ", modality_name(tower.modality), " tower");
    check(tower.embed_dim == c.embed_dim, where, ": the ", modality_name(m), " tower projects to ",
          tower.embed_dim, " values, the model's embedding has ", c.embed_dim);
    validate(tower, where + " (" + modality_name(m) + " tower)");
  }
  if (c.video) {
    check(c.towers.count(Modality::image) == 1, where, ": video needs the image tower");
    check(c.video_clip_frames == c.towers.at(Modality::image).clip_frames, where,
          ": video clips of ", c.video_clip_frames, " frames, but the image tower's time "
          "kernel is ", c.towers.at(Modality::image).clip_frames);
  }
}

// The number of weights of all towers (saturating), plus the logit scale.
inline std::uint64_t parameter_count(const TowerModelConfig& c) {
  std::uint64_t total = 1;
  for (const auto& [m, tower] : c.towers) {
    const std::uint64_t n = parameter_count(tower);
    total = total > UINT64_MAX - n ? UINT64_MAX : total + n;
  }
  return total;
}

// Throws tessera::Error naming `where` when `f` names a tower the model does not have, or
// leaves nothing of the model to train.
inline void validate(const TowerFreezing& f, const TowerModelConfig& c, const std::string& where) {
  std::string towers;  // "text, image"
  for (const auto& entry : c.towers) {
    towers += (towers.empty() ? "" : ", ") + std::string(modality_name(entry.first));
  }
  for (const auto& entry : f.towers) {
    check(c.towers.count(entry.first) == 1, where, ": the ", c.family, " model has no ",
          modality_name(entry.first), " tower to freeze (its towers: ", towers, ")");
  }
  bool trains = f.logit_scale;
  for (const auto& entry : c.towers) trains = trains || f.of(entry.first) != TowerTraining::frozen;
  check(trains, where, ": every tower and logit_scale are frozen: nothing to train");
}

// The gradients of a TowerModel's trained weights: for each tower that trains, a Tower of its
// config in which only the trained weights are allocated (whole: every weight; projection:
// proj alone, everything else empty), and logit_scale's. Frozen towers have no entry.
template <class Scalar>
struct TowerGradients {
  TowerModelConfig config;
  TowerFreezing freezing;
  std::map<Modality, Tower<Scalar>> towers;  // the towers that train, by modality
  Scalar logit_scale = 0;                    // read only when freezing.logit_scale

  // Zeroed gradients for the parts of a `config` model that `f` trains (validated first:
  // validate(TowerFreezing, ...)).
  TowerGradients(const TowerModelConfig& c, const TowerFreezing& f) : config(c), freezing(f) {
    validate(c, "TowerGradients");
    validate(f, c, "TowerGradients");
    for (const auto& [m, tower] : c.towers) {
      const TowerTraining training = f.of(m);
      if (training == TowerTraining::whole) {
        towers.emplace(m, Tower<Scalar>(tower, "TowerGradients (" + c.name_of(m) + " tower)"));
      } else if (training == TowerTraining::projection) {
        Tower<Scalar> t;
        t.config = tower;
        t.proj = nn::Linear<Scalar>(tower.width, tower.embed_dim, tower.proj_bias);
        towers.emplace(m, std::move(t));
      }
    }
    set_zero();
  }

  std::vector<Parameter<Scalar>> parameters() {
    std::vector<Parameter<Scalar>> out;
    for (auto& [m, tower] : towers) {
      Tower<Scalar>::template collect_parameters<Scalar>(tower, config.name_of(m) + ".",
                                                         freezing.of(m), out);
    }
    if (freezing.logit_scale) {
      out.push_back({"logit_scale", &logit_scale, {}, {}, WeightRole::logit_scale});
    }
    return out;
  }

  void set_zero() {
    for (auto& p : parameters()) std::fill(p.data, p.data + p.size(), Scalar(0));
  }

  // The bytes of the gradients held (the optimizer's state is twice as many: AdamW's moments).
  std::size_t bytes() {
    std::size_t values = 0;
    for (const auto& p : parameters()) values += static_cast<std::size_t>(p.size());
    return values * sizeof(Scalar);
  }
};

template <class Scalar>
class TowerModel {
 public:
  TowerModelConfig config;
  std::map<Modality, Tower<Scalar>> towers;
  Scalar logit_scale = static_cast<Scalar>(2.6592600369327779);  // ln(1/0.07): logits = exp(.) cos

  // Allocates every tower of `c` (validated first: validate below), as Tower(c, where, init).
  TowerModel(const TowerModelConfig& c, const std::string& where,
             nn::WeightInit init = nn::WeightInit::zeros)
      : config(c) {
    validate(c, where);
    for (const auto& [m, tower] : c.towers) {
      towers.emplace(m, Tower<Scalar>(tower, where + " (" + modality_name(m) + " tower)", init));
    }
  }

  Index embed_dim() const { return config.embed_dim; }
  bool has(Modality m) const { return config.has(m); }

  // The tower that encodes modality m (video: the image tower).
  const Tower<Scalar>& tower(Modality m) const {
    const Modality t = m == Modality::video ? Modality::image : m;
    check(has(m), "this ", config.family, " model has no ", modality_name(m), " tower");
    return towers.at(t);
  }

  // Throws tessera::Error, naming `where`, unless the sample holds exactly one input of a
  // modality the model has, of the right shape (the towers' checks).
  void check_sample(const Sample<Scalar>& s, const std::string& where) const {
    const std::vector<Clip> clips = clips_of(s, where);
    for (const Clip& c : clips) tower(c.modality).check_clip(c.clip, where);
  }

  Encoding<Scalar> encode(const Sample<Scalar>& sample) const {
    return encode_batch(std::span<const Sample<Scalar>>(&sample, 1)).front();
  }

  // Encodes a batch: the clips of every sample grouped by tower, each tower run once over its
  // clips packed without padding. Throws tessera::Error, before any computation, for a
  // sample that does not fit ("sample <i>: ...").
  std::vector<Encoding<Scalar>> encode_batch(std::span<const Sample<Scalar>> samples) const {
    return encode_samples(samples, nullptr, nullptr);
  }

  // The training forward: encode_batch that also fills `trace` (replaced) with what backward
  // needs for the towers `freezing` trains (Tower::forward with a trace); frozen towers run
  // the plain forward and keep nothing. The encodings are bitwise encode_batch's.
  std::vector<Encoding<Scalar>> encode_batch(std::span<const Sample<Scalar>> samples,
                                             const TowerFreezing& freezing,
                                             TowerModelTrace<Scalar>& trace) const {
    validate(freezing, config, "encode_batch");
    trace = TowerModelTrace<Scalar>{};
    return encode_samples(samples, &freezing, &trace);
  }

  // Backward of encode_batch(samples, freezing, trace): given d_embeddings, the loss's
  // gradient with respect to each sample's embedding, adds the gradient of every trained
  // weight to grad's (logit_scale is the loss's to add). A sample of several clips (video,
  // long audio) has e = s / |s|, s = the sum of its clips' unit embeddings, so each of its
  // clips gets d_s = (d_e - e (e . d_e)) / |s|; each trained tower then runs its backward
  // over its clips (Tower::backward).
  // requires: grad for this config and the trace's freezing; d_embeddings [N, E] for the
  //   trace's N samples (checked: tessera::Error).
  // ensures: grad's tower weights are accumulated into.
  void backward(TowerGradients<Scalar>& grad,
                const ConstMatrixRef<Scalar>& d_embeddings,  // [N, E]
                const TowerModelTrace<Scalar>& trace) const {
    check(d_embeddings.rows() == static_cast<Index>(trace.samples) &&
              d_embeddings.cols() == config.embed_dim,
          "tower model backward: d_embeddings is [", d_embeddings.rows(), ", ",
          d_embeddings.cols(), "], expected [", trace.samples, ", ", config.embed_dim,
          "] (one row per sample of the trace)");
    check(grad.config == config, "tower model backward: grad is not a gradient of this model");
    for (const auto& [m, part] : trace.towers) {
      const auto found = grad.towers.find(m);
      check(found != grad.towers.end() && grad.freezing.of(m) == part.trace.training,
            "tower model backward: the ", modality_name(m), " tower trains ",
            to_string(part.trace.training), " in the trace, but grad holds ",
            found == grad.towers.end() ? "nothing" : to_string(grad.freezing.of(m)),
            " of it");
      const Matrix<Scalar>& e = part.trace.embeddings;  // [clips, E]
      Matrix<Scalar> d_clips(e.rows(), e.cols());       // [clips, E]
      for (std::size_t k0 = 0; k0 < part.owner.size();) {  // the clips of one sample
        const std::size_t sample = part.owner[k0].first;
        std::size_t k1 = k0 + 1;
        while (k1 < part.owner.size() && part.owner[k1].first == sample) ++k1;
        const auto d_e = d_embeddings.row(static_cast<Index>(sample));
        if (k1 - k0 == 1) {
          d_clips.row(static_cast<Index>(k0)) = d_e;
        } else {
          RowVector<Scalar> sum = e.row(static_cast<Index>(k0));  // [E] as encode sums them
          for (std::size_t k = k0 + 1; k < k1; ++k) sum += e.row(static_cast<Index>(k));
          const Scalar norm = sum.norm();
          const RowVector<Scalar> unit = sum / norm;
          const RowVector<Scalar> d_sum = (d_e - unit * unit.dot(d_e)) / norm;
          for (std::size_t k = k0; k < k1; ++k) d_clips.row(static_cast<Index>(k)) = d_sum;
        }
        k0 = k1;
      }
      towers.at(m).backward(found->second, d_clips, part.trace);
    }
  }

  // The weights `freezing` trains, named as the tessera_towers files name them under each
  // tower's name (config.name_of), then "logit_scale": the list AdamW steps, in the order
  // of TowerGradients::parameters() (every weight with the default freezing).
  std::vector<Parameter<Scalar>> parameters(const TowerFreezing& freezing = {}) {
    return collect_parameters<Scalar>(*this, freezing);
  }
  std::vector<Parameter<const Scalar>> parameters(const TowerFreezing& freezing = {}) const {
    return collect_parameters<const Scalar>(*this, freezing);
  }

 private:
  template <class T, class Self>
  static std::vector<Parameter<T>> collect_parameters(Self& self, const TowerFreezing& freezing) {
    std::vector<Parameter<T>> out;
    for (auto& [m, tower] : self.towers) {
      Tower<Scalar>::template collect_parameters<T>(tower, self.config.name_of(m) + ".",
                                                    freezing.of(m), out);
    }
    if (freezing.logit_scale) {
      out.push_back({"logit_scale", &self.logit_scale, {}, {}, WeightRole::logit_scale});
    }
    return out;
  }

  // encode_batch, with a trace of the towers `freezing` trains when both are given.
  std::vector<Encoding<Scalar>> encode_samples(std::span<const Sample<Scalar>> samples,
                                               const TowerFreezing* freezing,
                                               TowerModelTrace<Scalar>* trace) const {
    check(!samples.empty(), "encode_batch: the batch is empty");
    std::vector<std::vector<Clip>> clips(samples.size());
    for (std::size_t i = 0; i < samples.size(); ++i) {
      clips[i] = clips_of(samples[i], detail::concat("sample ", i));
    }
    // Per tower: its clips and where each result goes (sample, clip).
    struct Work {
      std::vector<TowerClip<Scalar>> clips;
      std::vector<std::pair<std::size_t, std::size_t>> owner;
    };
    std::map<Modality, Work> work;
    for (std::size_t i = 0; i < samples.size(); ++i) {
      for (std::size_t j = 0; j < clips[i].size(); ++j) {
        const Modality t = clips[i][j].modality == Modality::video ? Modality::image
                                                                   : clips[i][j].modality;
        work[t].clips.push_back(clips[i][j].clip);
        work[t].owner.emplace_back(i, j);
      }
    }
    std::vector<std::vector<TowerOutput<Scalar>>> results(samples.size());
    for (std::size_t i = 0; i < samples.size(); ++i) results[i].resize(clips[i].size());
    if (trace != nullptr) trace->samples = samples.size();
    for (auto& entry : work) {  // not a structured binding: the lambda captures w (clang 14)
      const Work& w = entry.second;
      const auto where = [&](std::size_t k) {
        const auto [i, j] = w.owner[k];
        return clips[i].size() > 1 ? detail::concat("sample ", i, ", clip ", j)
                                   : detail::concat("sample ", i);
      };
      const Tower<Scalar>& tower = towers.at(entry.first);
      const TowerTraining training =
          freezing != nullptr ? freezing->of(entry.first) : TowerTraining::frozen;
      std::vector<TowerOutput<Scalar>> out;
      if (trace != nullptr && training != TowerTraining::frozen) {
        auto& part = trace->towers[entry.first];
        part.owner = w.owner;
        out = tower.forward(w.clips, where, training, part.trace);
      } else {
        out = tower.forward(w.clips, where);
      }
      for (std::size_t k = 0; k < out.size(); ++k) {
        results[w.owner[k].first][w.owner[k].second] = std::move(out[k]);
      }
    }

    std::vector<Encoding<Scalar>> encoded(samples.size());
    for (std::size_t i = 0; i < samples.size(); ++i) {
      auto& r = results[i];
      Encoding<Scalar>& e = encoded[i];
      e.embedding = r.front().embedding;
      for (std::size_t j = 1; j < r.size(); ++j) e.embedding += r[j].embedding;
      if (r.size() > 1) e.embedding.normalize();
      e.hidden = std::move(r.front().hidden);
      const Modality m = clips[i].front().modality;
      e.modality.assign(static_cast<std::size_t>(e.hidden.rows()), ModalityId(m));
      e.positions.resize(e.hidden.rows(), 3);
      for (Index row = 0; row < e.hidden.rows(); ++row) e.positions.row(row).setConstant(row);
      if (m == Modality::audio) e.audio_clips = static_cast<int>(r.size());
    }
    return encoded;
  }

  struct Clip {
    Modality modality;
    TowerClip<Scalar> clip;
  };

  // The clips of one sample (pointers into it), or an Error naming `where`.
  std::vector<Clip> clips_of(const Sample<Scalar>& s, const std::string& where) const {
    const int inputs = (s.text ? 1 : 0) + (s.image ? 1 : 0) + (s.audio ? 1 : 0) +
                       (s.video ? 1 : 0) + static_cast<int>(s.custom.size());
    check(inputs == 1, where, ": a sample of a ", config.family, " model holds exactly one "
          "input (its towers embed each modality apart), this one holds ", inputs);
    check(s.custom.empty(), where, ": this ", config.family, " model has no modality '",
          s.custom.empty() ? std::string() : s.custom.begin()->first, "'");
    const auto needs = [&](Modality m) {
      check(has(m), where, ": this ", config.family, " model has no ", modality_name(m),
            " tower");
    };
    std::vector<Clip> out;
    if (s.text) {
      needs(Modality::text);
      out.push_back({Modality::text, TowerClip<Scalar>{.ids = &*s.text}});
    } else if (s.image) {
      needs(Modality::image);
      out.push_back({Modality::image, TowerClip<Scalar>{.image = &*s.image}});
    } else if (s.video) {
      needs(Modality::video);
      const Index frames = s.video->dimension(0);
      check(frames >= 1, where, ": the video has no frames");
      for (Index f = 0; f < frames; f += config.video_clip_frames) {
        out.push_back({Modality::video, TowerClip<Scalar>{.frames = &*s.video, .first_frame = f}});
      }
    } else {
      needs(Modality::audio);
      const Index t = tower(Modality::audio).config.width_in;
      const Index columns = s.audio->cols();
      check(columns >= t && columns % t == 0, where, ": the audio features have ", columns,
            " frames; the audio tower takes clips of ", t, " frames each, side by side (",
            "a multiple of ", t, ")");
      for (Index c = 0; c < columns; c += t) {
        out.push_back({Modality::audio, TowerClip<Scalar>{.features = &*s.audio,
                                                          .first_column = c}});
      }
    }
    return out;
  }
};

}  // namespace tessera
