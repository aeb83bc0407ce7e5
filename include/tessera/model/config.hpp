#pragma once
// The model configuration of SPEC 1 (config.json) as structs: the model's sizes and kinds and
// one section per modality. Reading and writing config.json: model/config_json.hpp; checking
// every value and cross-key constraint: model/config_check.hpp.
//
// A modality is part of a model exactly when its section is present. Video frames use the
// image section's size, patch, channels, mean and std; a config with video but no image section
// uses the image defaults for them (Config::frame_geometry()), while Config::image stays
// nullopt, so the model has no image front end.

#include <tessera/core/error.hpp>
#include <tessera/core/modality.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/nn/activation.hpp>
#include <tessera/nn/norm.hpp>

#include <nlohmann/json.hpp>

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

enum class PositionKind { rope, learned };
enum class PoolingKind { mean, cls, routed };
inline constexpr PositionKind position_kinds[] = {PositionKind::rope, PositionKind::learned};
inline constexpr PoolingKind pooling_kinds[] = {PoolingKind::mean, PoolingKind::cls,
                                                PoolingKind::routed};

struct TextConfig {
  std::string tokenizer = "gpt2_bpe";  // gpt2_bpe | clip_bpe
  Index vocab_size = 50257;            // V
  Index max_tokens = 77;
  bool causal = false;

  bool operator==(const TextConfig&) const = default;
};

struct ImageConfig {
  Index size = 224;  // S
  Index patch = 16;  // P
  Index channels = 3;  // C
  std::vector<double> mean = {0.48145466, 0.4578275, 0.40821073};  // [C]
  std::vector<double> std = {0.26862954, 0.26130258, 0.27577711};  // [C]

  Index grid() const { return size / patch; }               // patches per side
  Index num_patches() const { return grid() * grid(); }     // (S/P)^2
  Index patch_dim() const { return channels * patch * patch; }  // C*P*P

  bool operator==(const ImageConfig&) const = default;
};

struct AudioConfig {
  Index sample_rate = 16000;
  std::string features = "kaldi_fbank";  // kaldi_fbank | whisper_logmel
  Index n_mels = 128;                    // M
  Index patch_frames = 4;
  Index max_tokens = 512;
  double feature_mean = -4.268;
  double feature_std = 9.138;

  Index patch_dim() const { return n_mels * patch_frames; }  // M*patch_frames

  bool operator==(const AudioConfig&) const = default;
};

struct VideoConfig {
  double fps = 1.0;
  Index tubelet = 2;
  Index pool_queries = 0;  // Nq; 0 = no video pooling
  Index max_tokens = 4096;

  bool operator==(const VideoConfig&) const = default;
};

// A modality the user adds (docs/extending.md): the encoder sees one vector of `input_dim`
// values per token, made by the front end the user registers under `name` (FrontEndRegistry);
// `options` is passed through to that front end untouched. Config key "custom_modalities", a
// list; the k-th entry is modality 4 + k, placed after video in the token sequence.
struct CustomModalityConfig {
  std::string name;     // [a-z][a-z0-9_]*, not a built-in name; prefixes its weights
  Index input_dim = 0;  // values per token (required)
  Index max_tokens = 512;
  nlohmann::json options = nlohmann::json::object();  // the front end's own settings

  bool operator==(const CustomModalityConfig&) const = default;
};

// A modality is part of the model exactly when its section is present in config.json
// (an empty object `{}` takes every default of that section; `null` or absence leaves the
// modality out). At least one modality must be present.
struct Config {
  Index hidden_dim = 256;  // D
  Index num_layers = 4;
  Index num_heads = 4;  // H
  Index ffn_dim = 1024;  // F
  Index embed_dim = 256;  // E
  Activation activation = Activation::gelu;
  NormKind norm = NormKind::layernorm;
  double norm_eps = 1e-5;
  PositionKind position = PositionKind::rope;
  double rope_theta = 10000.0;
  std::optional<std::array<Index, 3>> rope_sections;  // [t, y, x]; nullopt = SPEC 2 default
  PoolingKind pooling = PoolingKind::mean;
  std::optional<TextConfig> text;
  std::optional<ImageConfig> image;
  std::optional<AudioConfig> audio;
  std::optional<VideoConfig> video;  // video frames use image's size, patch, channels, mean, std
  std::vector<CustomModalityConfig> custom;  // user modalities 4, 5, ... ("custom_modalities")

  Index head_dim() const { return hidden_dim / num_heads; }  // dh
  bool has(Modality m) const;
  // The number of modalities an index can name: the 4 built-in ones plus the custom ones
  // (the rows of modality_embed and of the router).
  Index modality_count() const { return num_modalities + static_cast<Index>(custom.size()); }
  // The custom modality called `name`, or nullptr.
  const CustomModalityConfig* find_custom(std::string_view name) const;
  // The name of modality m (built-in or custom), or "cls".
  std::string modality_label(ModalityId m) const;
  // The rotation pairs per axis [t, y, x]: rope_sections or the SPEC 2 default.
  std::array<Index, 3> rope_axis_pairs() const;
  // The geometry of a video frame: the image section, or the ImageConfig defaults when the
  // config has no image section.
  const ImageConfig& frame_geometry() const;
  Index video_patch_dim() const;  // C*tubelet*P*P; requires has(Modality::video)
  // Video is pooled to video.pool_queries tokens per tubelet step (SPEC 3).
  bool pooled_video() const { return video && video->pool_queries > 0; }
  // The tokens a video of `frames` frames makes: K tubelet steps of (S/P)^2 patches, or
  // K * Nq when pooled. Requires has(Modality::video).
  Index video_tokens(Index frames) const;

  bool operator==(const Config&) const = default;
};

inline const char* to_string(PositionKind p);
inline const char* to_string(PoolingKind p);

// ---------------------------------------------------------------------------------------------
// Implementation

inline const char* to_string(PositionKind p) {
  switch (p) {
    case PositionKind::rope: return "rope";
    case PositionKind::learned: return "learned";
  }
  return "unknown";
}

inline const char* to_string(PoolingKind p) {
  switch (p) {
    case PoolingKind::mean: return "mean";
    case PoolingKind::cls: return "cls";
    case PoolingKind::routed: return "routed";
  }
  return "unknown";
}

inline bool Config::has(Modality m) const {
  switch (m) {
    case Modality::text: return text.has_value();
    case Modality::image: return image.has_value();
    case Modality::audio: return audio.has_value();
    case Modality::video: return video.has_value();
  }
  return false;
}

inline const CustomModalityConfig* Config::find_custom(std::string_view name) const {
  for (const auto& c : custom) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

inline std::string Config::modality_label(ModalityId m) const {
  if (m.is_cls()) return "cls";
  if (m.is_builtin()) return modality_name(m.builtin());
  const auto k = static_cast<std::size_t>(m.custom_index());
  return k < custom.size() ? custom[k].name : "modality " + std::to_string(m.index());
}

inline std::array<Index, 3> Config::rope_axis_pairs() const {
  if (rope_sections) return *rope_sections;
  const Index pairs = head_dim() / 2;   // dh/2
  const Index spatial = 3 * pairs / 8;  // floor(3*(dh/2)/8), for y and for x
  return {pairs - 2 * spatial, spatial, spatial};
}

inline const ImageConfig& Config::frame_geometry() const {
  static const ImageConfig defaults;
  return image ? *image : defaults;
}

inline Index Config::video_tokens(Index frames) const {
  const Index steps = (frames + video->tubelet - 1) / video->tubelet;
  return steps * (pooled_video() ? video->pool_queries : frame_geometry().num_patches());
}

inline Index Config::video_patch_dim() const {
  check(video.has_value(), "video_patch_dim: the config has no video section");
  const ImageConfig& frame = frame_geometry();
  return frame.channels * video->tubelet * frame.patch * frame.patch;
}

namespace detail {

// The largest value of any integer key: keeps every product of sizes the library forms far
// from overflow, and is beyond any real model.
inline constexpr Index config_max_integer = (Index{1} << 31) - 1;

}  // namespace detail

}  // namespace tessera
