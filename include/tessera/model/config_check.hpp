#pragma once
// validate(config): every value of a Config and every constraint between keys, checked before
// a model is built from it (MultiModalEncoder's constructor and parse_config call it). Each
// error is a tessera::Error naming the source and the key:
//   config.json: key "num_heads": hidden_dim 30 is not divisible by num_heads 4

#include <tessera/core/error.hpp>
#include <tessera/io/wav.hpp>
#include <tessera/model/config.hpp>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <string_view>

namespace tessera {

namespace detail {

// Names a custom modality may not take: the built-in modalities and the other top-level
// weight names (a custom modality's weights are "<name>.patch_embed.weight", ...), and the
// tensor names of an inputs file.
inline const char* const reserved_modality_names[] = {
    "text", "image", "audio", "video", "text_ids", "modality_embed", "cls_token", "layers",
    "final_norm", "router", "proj", "logit_scale", "cls"};

inline bool is_modality_name(std::string_view name) {
  if (name.empty() || name.size() > 64 || name[0] < 'a' || name[0] > 'z') return false;
  return std::all_of(name.begin(), name.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_';
  });
}

// The range of video.fps, the rate the model samples videos at (tokenize/video.hpp): a sample
// every 1000 s up to 1000 samples a second. Faster than that repeats the frames of any video
// but a high-speed camera's (1e300, a typo, would take VideoLimits::max_samples copies of
// frame 0); slower takes one frame of a quarter hour.
inline constexpr double min_video_fps = 1e-3;
inline constexpr double max_video_fps = 1e3;

// Checks the values of one config; every message names `where` and the key.
class ConfigValidator {
 public:
  explicit ConfigValidator(const std::string& where) : where_(where) {}

  template <class... Args>
  [[noreturn]] void fail_key(const std::string& key, Args&&... args) const {
    fail(where_, ": key \"", key, "\": ", std::forward<Args>(args)...);
  }

  void positive(const std::string& key, Index value) const {
    if (value < 1) fail_key(key, "expected a positive integer, got ", value);
    at_most_max(key, value);
  }
  void non_negative(const std::string& key, Index value) const {
    if (value < 0) fail_key(key, "expected a non-negative integer, got ", value);
    at_most_max(key, value);
  }
  void at_most_max(const std::string& key, Index value) const {
    if (value > config_max_integer) {
      fail_key(key, value, " is larger than the supported maximum ", config_max_integer);
    }
  }
  void positive(const std::string& key, double value) const {
    // written so that NaN fails too
    if (!(value > 0) || !std::isfinite(value)) {
      fail_key(key, "expected a positive number, got ", value);
    }
  }
  void finite(const std::string& key, double value) const {
    if (!std::isfinite(value)) fail_key(key, "expected a finite number, got ", value);
  }
  // A product of sizes the model forms (e.g. C*P*P) must stay within config_max_integer.
  void product_fits(const std::string& key, const char* what,
                    std::initializer_list<Index> factors) const {
    Index product = 1;
    for (Index factor : factors) {
      if (factor != 0 && product > config_max_integer / factor) {
        fail_key(key, what, " is larger than the supported maximum ", config_max_integer);
      }
      product *= factor;
    }
  }

 private:
  const std::string& where_;
};

}  // namespace detail

// Checks every value and cross-key constraint. `where` names the source in messages.
// Throws tessera::Error naming the key.
inline void validate(const Config& config, const std::string& where = "config") {
  const detail::ConfigValidator v(where);
  v.positive("hidden_dim", config.hidden_dim);
  v.positive("num_layers", config.num_layers);
  v.positive("num_heads", config.num_heads);
  v.positive("ffn_dim", config.ffn_dim);
  v.positive("embed_dim", config.embed_dim);
  v.positive("norm_eps", config.norm_eps);
  v.positive("rope_theta", config.rope_theta);
  if (config.hidden_dim % config.num_heads != 0) {
    v.fail_key("num_heads", "hidden_dim ", config.hidden_dim, " is not divisible by num_heads ",
               config.num_heads);
  }
  const Index head_dim = config.head_dim();
  if (config.position == PositionKind::rope && head_dim % 2 != 0) {
    v.fail_key("num_heads", "RoPE needs an even head_dim, but hidden_dim / num_heads = ", head_dim);
  }
  if (config.rope_sections) {
    const auto& s = *config.rope_sections;
    for (Index pairs : s) v.non_negative("rope_sections", pairs);
    if (config.position == PositionKind::rope && s[0] + s[1] + s[2] != head_dim / 2) {
      v.fail_key("rope_sections", "[", s[0], ", ", s[1], ", ", s[2], "] sums to ",
                 s[0] + s[1] + s[2], ", expected head_dim / 2 = ", head_dim / 2);
    }
  }
  check(config.text || config.image || config.audio || config.video || !config.custom.empty(),
        where, ": at least one modality (text, image, audio, video or custom_modalities) is required");
  for (std::size_t k = 0; k < config.custom.size(); ++k) {
    const CustomModalityConfig& c = config.custom[k];
    const std::string prefix = "custom_modalities[" + std::to_string(k) + "].";
    if (!detail::is_modality_name(c.name)) {
      v.fail_key(prefix + "name", "\"", c.name,
                 "\" is not a modality name: expected a lowercase letter, then lowercase "
                 "letters, digits or '_' (at most 64)");
    }
    for (const char* reserved : detail::reserved_modality_names) {
      if (c.name == reserved) v.fail_key(prefix + "name", "\"", c.name, "\" is reserved");
    }
    for (std::size_t j = 0; j < k; ++j) {
      if (config.custom[j].name == c.name) {
        v.fail_key(prefix + "name", "\"", c.name, "\" is already the name of custom_modalities[",
                   j, "]");
      }
    }
    v.positive(prefix + "input_dim", c.input_dim);
    v.positive(prefix + "max_tokens", c.max_tokens);
    if (!c.options.is_object()) v.fail_key(prefix + "options", "expected an object");
  }

  if (config.text) {
    const TextConfig& text = *config.text;
    if (text.tokenizer != "gpt2_bpe" && text.tokenizer != "clip_bpe") {
      v.fail_key("text.tokenizer", "expected one of gpt2_bpe, clip_bpe, got \"", text.tokenizer,
                 "\"");
    }
    v.positive("text.vocab_size", text.vocab_size);
    v.positive("text.max_tokens", text.max_tokens);
    if (text.tokenizer == "clip_bpe" && text.max_tokens < 2) {
      v.fail_key("text.max_tokens", "clip_bpe needs at least 2 tokens (start and end), got ",
                 text.max_tokens);
    }
  }
  // The image section, or its defaults for video frames: validated whenever either is used.
  if (config.image || config.video) {
    const ImageConfig& image = config.frame_geometry();
    v.positive("image.size", image.size);
    v.positive("image.patch", image.patch);
    v.positive("image.channels", image.channels);
    if (image.size % image.patch != 0) {
      v.fail_key("image.size", image.size, " is not divisible by image.patch ", image.patch);
    }
    v.product_fits("image.patch", "channels * patch * patch",
                   {image.channels, image.patch, image.patch});
    v.product_fits("image.size", "(size / patch)^2", {image.grid(), image.grid()});
    if (static_cast<Index>(image.mean.size()) != image.channels) {
      v.fail_key("image.mean", "expected ", image.channels, " values (one per channel), got ",
                 image.mean.size());
    }
    if (static_cast<Index>(image.std.size()) != image.channels) {
      v.fail_key("image.std", "expected ", image.channels, " values (one per channel), got ",
                 image.std.size());
    }
    for (double m : image.mean) v.finite("image.mean", m);
    for (double s : image.std) v.positive("image.std", s);
  }
  if (config.audio) {
    const AudioConfig& audio = *config.audio;
    v.positive("audio.sample_rate", audio.sample_rate);
    // the rates a WAV may have (WavLimits' defaults): the waveform is resampled to this one
    const WavLimits wav;
    if (audio.sample_rate < wav.min_sample_rate || audio.sample_rate > wav.max_sample_rate) {
      v.fail_key("audio.sample_rate", "expected a rate from ", wav.min_sample_rate, " to ",
                 wav.max_sample_rate, " Hz (WavLimits), got ", audio.sample_rate);
    }
    if (audio.features != "kaldi_fbank" && audio.features != "whisper_logmel") {
      v.fail_key("audio.features", "expected one of kaldi_fbank, whisper_logmel, got \"",
                 audio.features, "\"");
    }
    v.positive("audio.n_mels", audio.n_mels);
    v.positive("audio.patch_frames", audio.patch_frames);
    v.positive("audio.max_tokens", audio.max_tokens);
    v.product_fits("audio.patch_frames", "n_mels * patch_frames",
                   {audio.n_mels, audio.patch_frames});
    v.finite("audio.feature_mean", audio.feature_mean);
    v.positive("audio.feature_std", audio.feature_std);
  }
  if (config.video) {
    const VideoConfig& video = *config.video;
    const ImageConfig& frame = config.frame_geometry();
    v.positive("video.fps", video.fps);
    if (video.fps < detail::min_video_fps || video.fps > detail::max_video_fps) {
      v.fail_key("video.fps", "expected a rate from ", detail::min_video_fps, " to ",
                 detail::max_video_fps, " samples per second, got ", video.fps);
    }
    v.positive("video.tubelet", video.tubelet);
    v.non_negative("video.pool_queries", video.pool_queries);
    v.positive("video.max_tokens", video.max_tokens);
    v.product_fits("video.tubelet", "channels * tubelet * patch * patch",
                   {frame.channels, video.tubelet, frame.patch, frame.patch});
  }
}

}  // namespace tessera
