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

#include <tessera/core/error.hpp>
#include <tessera/core/modality.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/sample.hpp>
#include <tessera/model/tower.hpp>

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

template <class Scalar>
class TowerModel {
 public:
  TowerModelConfig config;
  std::map<Modality, Tower<Scalar>> towers;
  Scalar logit_scale = static_cast<Scalar>(2.6592600369327779);  // ln(1/0.07): logits = exp(.) cos

  // Allocates every tower of `c` (validated first: validate below).
  TowerModel(const TowerModelConfig& c, const std::string& where) : config(c) {
    validate(c, where);
    for (const auto& [m, tower] : c.towers) {
      towers.emplace(m, Tower<Scalar>(tower, where + " (" + modality_name(m) + " tower)"));
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
    for (auto& entry : work) {  // not a structured binding: the lambda captures w (clang 14)
      const Work& w = entry.second;
      auto out = towers.at(entry.first).forward(w.clips, [&](std::size_t k) {
        const auto [i, j] = w.owner[k];
        return clips[i].size() > 1 ? detail::concat("sample ", i, ", clip ", j)
                                   : detail::concat("sample ", i);
      });
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

 private:
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
