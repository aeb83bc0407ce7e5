#pragma once
// The model configuration of SPEC 1 (config.json): parsed, validated and written back.
//
// Parsing rules (docs/model-files.md has the table of keys):
// - every key is optional and takes the SPEC 1 default; an unknown key is an error;
// - integers must be JSON integers (16.0, 16.5, "16" and true are rejected); numbers accept
//   integers; JSON comments (// and /* */) are accepted in files read by load_config;
// - a modality is present exactly when its section is present and not null; `{}` takes the
//   section's defaults; at least one modality is required;
// - video frames use the image section's size, patch, channels, mean and std; a config with
//   video but no image section uses the image defaults for them (Config::frame_geometry()),
//   while Config::image stays nullopt, so the model has no image front end.
// Every error is a tessera::Error that names the source and the key:
//   config.json: key "image.patch": expected a positive integer, got "16"
//   config.json: unknown key "text.vocab"

#include <tessera/core/error.hpp>
#include <tessera/core/modality.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/io/atomic_file.hpp>
#include <tessera/io/json.hpp>
#include <tessera/nn/activation.hpp>
#include <tessera/nn/norm.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

enum class PositionKind { rope, learned };
enum class PoolingKind { mean, cls, routed };

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

// Parses and validates a config. `where` names the source in messages ("dir/config.json").
// Unknown keys, wrong types and inconsistent values throw tessera::Error naming the key.
inline Config parse_config(const nlohmann::json& json, const std::string& where = "config.json");
inline Config load_config(const std::filesystem::path& file);
// Checks every value and cross-key constraint; parse_config calls it. Throws tessera::Error.
inline void validate(const Config& config, const std::string& where = "config");
// The JSON form of a config; parse_config(to_json(c)) == c.
inline nlohmann::json to_json(const Config& config);
inline void save_config(const Config& config, const std::filesystem::path& file);

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

inline const char* const activation_names[] = {"gelu", "gelu_tanh", "quick_gelu", "relu", "swiglu"};
inline const char* const norm_names[] = {"layernorm", "rmsnorm"};
inline const char* const position_names[] = {"rope", "learned"};
inline const char* const pooling_names[] = {"mean", "cls", "routed"};
inline const char* const tokenizer_names[] = {"gpt2_bpe", "clip_bpe"};
inline const char* const feature_names[] = {"kaldi_fbank", "whisper_logmel"};

// Reads config JSON, naming `where` and the key path in every error.
class ConfigReader {
 public:
  explicit ConfigReader(std::string where) : where_(std::move(where)) {}

  // Parses JSON text with comments allowed; a key repeated in one object, or nesting deeper
  // than max_json_depth, is an error.
  static nlohmann::json parse_text(std::string_view text, const std::string& where) {
    std::string problem;
    nlohmann::json json;
    try {
      json = parse_json_checked(text, &problem, /*ignore_comments=*/true);
    } catch (const nlohmann::json::exception& e) {
      fail(where, ": not valid JSON: ", e.what());
    }
    check(problem.empty(), where, ": ", problem);
    return json;
  }

  Config read(const nlohmann::json& json) const {
    if (!json.is_object()) {
      fail(where_, ": expected a JSON object at the top level, got ", json_excerpt(json));
    }
    check_keys(json, "",
               {"hidden_dim", "num_layers", "num_heads", "ffn_dim", "embed_dim", "activation",
                "norm", "norm_eps", "position", "rope_theta", "rope_sections", "pooling", "text",
                "image", "audio", "video", "custom_modalities"});
    Config config;
    read_integer(json, "", "hidden_dim", "positive", config.hidden_dim);
    read_integer(json, "", "num_layers", "positive", config.num_layers);
    read_integer(json, "", "num_heads", "positive", config.num_heads);
    read_integer(json, "", "ffn_dim", "positive", config.ffn_dim);
    read_integer(json, "", "embed_dim", "positive", config.embed_dim);
    read_enum(json, "", "activation", activation_names, config.activation);
    read_enum(json, "", "norm", norm_names, config.norm);
    read_number(json, "", "norm_eps", "a positive number", config.norm_eps);
    read_enum(json, "", "position", position_names, config.position);
    read_number(json, "", "rope_theta", "a positive number", config.rope_theta);
    read_rope_sections(json, config.rope_sections);
    read_enum(json, "", "pooling", pooling_names, config.pooling);

    if (const nlohmann::json* section = find_section(json, "text")) {
      check_keys(*section, "text.", {"tokenizer", "vocab_size", "max_tokens", "causal"});
      TextConfig& text = config.text.emplace();
      read_string_choice(*section, "text.", "tokenizer", tokenizer_names, text.tokenizer);
      read_integer(*section, "text.", "vocab_size", "positive", text.vocab_size);
      read_integer(*section, "text.", "max_tokens", "positive", text.max_tokens);
      read_bool(*section, "text.", "causal", text.causal);
    }
    if (const nlohmann::json* section = find_section(json, "image")) {
      check_keys(*section, "image.", {"size", "patch", "channels", "mean", "std"});
      ImageConfig& image = config.image.emplace();
      read_integer(*section, "image.", "size", "positive", image.size);
      read_integer(*section, "image.", "patch", "positive", image.patch);
      read_integer(*section, "image.", "channels", "positive", image.channels);
      read_numbers(*section, "image.", "mean", image.mean);
      read_numbers(*section, "image.", "std", image.std);
    }
    if (const nlohmann::json* section = find_section(json, "audio")) {
      check_keys(*section, "audio.",
                 {"sample_rate", "features", "n_mels", "patch_frames", "max_tokens", "feature_mean",
                  "feature_std"});
      AudioConfig& audio = config.audio.emplace();
      read_integer(*section, "audio.", "sample_rate", "positive", audio.sample_rate);
      read_string_choice(*section, "audio.", "features", feature_names, audio.features);
      read_integer(*section, "audio.", "n_mels", "positive", audio.n_mels);
      read_integer(*section, "audio.", "patch_frames", "positive", audio.patch_frames);
      read_integer(*section, "audio.", "max_tokens", "positive", audio.max_tokens);
      read_number(*section, "audio.", "feature_mean", "a number", audio.feature_mean);
      read_number(*section, "audio.", "feature_std", "a positive number", audio.feature_std);
    }
    if (const nlohmann::json* section = find_section(json, "video")) {
      check_keys(*section, "video.", {"fps", "tubelet", "pool_queries", "max_tokens"});
      VideoConfig& video = config.video.emplace();
      read_number(*section, "video.", "fps", "a positive number", video.fps);
      read_integer(*section, "video.", "tubelet", "positive", video.tubelet);
      read_integer(*section, "video.", "pool_queries", "non-negative", video.pool_queries);
      read_integer(*section, "video.", "max_tokens", "positive", video.max_tokens);
    }
    read_custom_modalities(json, config.custom);
    return config;
  }

 private:

  template <class... Args>
  [[noreturn]] void fail_key(const std::string& key, Args&&... args) const {
    fail(where_, ": key \"", key, "\": ", std::forward<Args>(args)...);
  }

  // A JSON integer (not a float, not a boolean) that fits in Index.
  static bool is_index(const nlohmann::json& value) {
    if (value.is_number_unsigned()) {
      return value.get<std::uint64_t>() <=
             static_cast<std::uint64_t>(std::numeric_limits<Index>::max());
    }
    return value.is_number_integer();
  }

  void check_keys(const nlohmann::json& object, const std::string& prefix,
                  std::initializer_list<std::string_view> known) const {
    for (const auto& [key, value] : object.items()) {
      if (std::find(known.begin(), known.end(), key) == known.end()) {
        fail(where_, ": unknown key \"", prefix, key, "\"");
      }
    }
  }

  // The section object, or nullptr when the section is absent or null.
  const nlohmann::json* find_section(const nlohmann::json& json, const char* name) const {
    const auto found = json.find(name);
    if (found == json.end() || found->is_null()) return nullptr;
    if (!found->is_object()) fail_key(name, "expected an object or null, got ", json_excerpt(*found));
    return &*found;
  }

  // `kind` is "positive" or "non-negative"; the range itself is checked by validate().
  void read_integer(const nlohmann::json& object, const std::string& prefix, const char* key,
                    const char* kind, Index& out) const {
    const auto found = object.find(key);
    if (found == object.end()) return;
    if (!is_index(*found))
      fail_key(prefix + key, "expected a ", kind, " integer, got ", json_excerpt(*found));
    out = found->get<Index>();
  }

  // `expected` describes the value ("a positive number"); the range is checked by validate().
  void read_number(const nlohmann::json& object, const std::string& prefix, const char* key,
                   const char* expected, double& out) const {
    const auto found = object.find(key);
    if (found == object.end()) return;
    if (!found->is_number())
      fail_key(prefix + key, "expected ", expected, ", got ", json_excerpt(*found));
    out = found->get<double>();
  }

  void read_bool(const nlohmann::json& object, const std::string& prefix, const char* key,
                 bool& out) const {
    const auto found = object.find(key);
    if (found == object.end()) return;
    if (!found->is_boolean()) {
      fail_key(prefix + key, "expected true or false, got ", json_excerpt(*found));
    }
    out = found->get<bool>();
  }

  void read_numbers(const nlohmann::json& object, const std::string& prefix, const char* key,
                    std::vector<double>& out) const {
    const auto found = object.find(key);
    if (found == object.end()) return;
    const bool numbers =
        found->is_array() &&
        std::all_of(found->begin(), found->end(), [](const auto& v) { return v.is_number(); });
    if (!numbers) fail_key(prefix + key, "expected an array of numbers, got ", json_excerpt(*found));
    out = found->get<std::vector<double>>();
  }

  template <std::size_t N>
  static std::string choices(const char* const (&names)[N]) {
    std::string out;
    for (std::size_t i = 0; i < N; ++i) out += (i == 0 ? "" : ", ") + std::string(names[i]);
    return out;
  }

  // The index of the string value in `names`.
  template <std::size_t N>
  std::optional<std::size_t> read_choice(const nlohmann::json& object, const std::string& prefix,
                                         const char* key, const char* const (&names)[N]) const {
    const auto found = object.find(key);
    if (found == object.end()) return std::nullopt;
    if (found->is_string()) {
      for (std::size_t i = 0; i < N; ++i) {
        if (found->get<std::string>() == names[i]) return i;
      }
    }
    fail_key(prefix + key, "expected one of ", choices(names), ", got ", json_excerpt(*found));
  }

  template <class Enum, std::size_t N>
  void read_enum(const nlohmann::json& object, const std::string& prefix, const char* key,
                 const char* const (&names)[N], Enum& out) const {
    if (const auto index = read_choice(object, prefix, key, names)) out = static_cast<Enum>(*index);
  }

  template <std::size_t N>
  void read_string_choice(const nlohmann::json& object, const std::string& prefix, const char* key,
                          const char* const (&names)[N], std::string& out) const {
    if (const auto index = read_choice(object, prefix, key, names)) out = names[*index];
  }

  void read_rope_sections(const nlohmann::json& json,
                          std::optional<std::array<Index, 3>>& out) const {
    const auto found = json.find("rope_sections");
    if (found == json.end() || found->is_null()) return;
    const bool three_integers = found->is_array() && found->size() == 3 &&
                                std::all_of(found->begin(), found->end(), is_index);
    if (!three_integers) {
      fail_key("rope_sections",
               "expected null or an array of three non-negative integers [t, y, x], got ",
               json_excerpt(*found));
    }
    out = std::array<Index, 3>{(*found)[0].get<Index>(), (*found)[1].get<Index>(),
                               (*found)[2].get<Index>()};
  }

  // "custom_modalities": null or a list of {name, input_dim, max_tokens, options}.
  void read_custom_modalities(const nlohmann::json& json,
                              std::vector<CustomModalityConfig>& out) const {
    const auto found = json.find("custom_modalities");
    if (found == json.end() || found->is_null()) return;
    if (!found->is_array()) {
      fail_key("custom_modalities", "expected a list of objects or null, got ",
               json_excerpt(*found));
    }
    for (std::size_t k = 0; k < found->size(); ++k) {
      const nlohmann::json& entry = (*found)[k];
      const std::string prefix = "custom_modalities[" + std::to_string(k) + "].";
      if (!entry.is_object()) {
        fail_key(prefix.substr(0, prefix.size() - 1), "expected an object, got ",
                 json_excerpt(entry));
      }
      check_keys(entry, prefix, {"name", "input_dim", "max_tokens", "options"});
      CustomModalityConfig& c = out.emplace_back();
      const auto name = entry.find("name");
      if (name == entry.end() || !name->is_string()) {
        fail_key(prefix + "name", "expected the modality's name as a string, got ",
                 name == entry.end() ? std::string("nothing") : json_excerpt(*name));
      }
      c.name = name->get<std::string>();
      if (!entry.contains("input_dim")) fail_key(prefix + "input_dim", "is required");
      read_integer(entry, prefix, "input_dim", "positive", c.input_dim);
      read_integer(entry, prefix, "max_tokens", "positive", c.max_tokens);
      if (const auto options = entry.find("options"); options != entry.end()) {
        if (!options->is_object()) {
          fail_key(prefix + "options", "expected an object, got ", json_excerpt(*options));
        }
        c.options = *options;
      }
    }
  }

  std::string where_;
};

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

inline void validate(const Config& config, const std::string& where) {
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
    v.positive("video.tubelet", video.tubelet);
    v.non_negative("video.pool_queries", video.pool_queries);
    v.positive("video.max_tokens", video.max_tokens);
    v.product_fits("video.tubelet", "channels * tubelet * patch * patch",
                   {frame.channels, video.tubelet, frame.patch, frame.patch});
  }
}

inline Config parse_config(const nlohmann::json& json, const std::string& where) {
  Config config = detail::ConfigReader(where).read(json);
  validate(config, where);
  return config;
}

inline Config load_config(const std::filesystem::path& file) {
  const std::string where = file.string();
  std::ifstream in(file, std::ios::binary);
  check(in.is_open(), where, ": cannot open the config: ", std::strerror(errno));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  check(!in.bad(), where, ": cannot read the config");
  return parse_config(detail::ConfigReader::parse_text(text, where), where);
}

inline nlohmann::json to_json(const Config& config) {
  nlohmann::json json = {
      {"hidden_dim", config.hidden_dim},
      {"num_layers", config.num_layers},
      {"num_heads", config.num_heads},
      {"ffn_dim", config.ffn_dim},
      {"embed_dim", config.embed_dim},
      {"activation", to_string(config.activation)},
      {"norm", to_string(config.norm)},
      {"norm_eps", config.norm_eps},
      {"position", to_string(config.position)},
      {"rope_theta", config.rope_theta},
      {"rope_sections", nullptr},
      {"pooling", to_string(config.pooling)},
  };
  if (config.rope_sections) json["rope_sections"] = *config.rope_sections;
  if (config.text) {
    json["text"] = {{"tokenizer", config.text->tokenizer},
                    {"vocab_size", config.text->vocab_size},
                    {"max_tokens", config.text->max_tokens},
                    {"causal", config.text->causal}};
  }
  if (config.image) {
    json["image"] = {{"size", config.image->size},
                     {"patch", config.image->patch},
                     {"channels", config.image->channels},
                     {"mean", config.image->mean},
                     {"std", config.image->std}};
  }
  if (config.audio) {
    json["audio"] = {
        {"sample_rate", config.audio->sample_rate}, {"features", config.audio->features},
        {"n_mels", config.audio->n_mels},           {"patch_frames", config.audio->patch_frames},
        {"max_tokens", config.audio->max_tokens},   {"feature_mean", config.audio->feature_mean},
        {"feature_std", config.audio->feature_std}};
  }
  if (config.video) {
    json["video"] = {{"fps", config.video->fps},
                     {"tubelet", config.video->tubelet},
                     {"pool_queries", config.video->pool_queries},
                     {"max_tokens", config.video->max_tokens}};
  }
  if (!config.custom.empty()) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& c : config.custom) {
      list.push_back({{"name", c.name},
                      {"input_dim", c.input_dim},
                      {"max_tokens", c.max_tokens},
                      {"options", c.options}});
    }
    json["custom_modalities"] = std::move(list);
  }
  return json;
}

// Writes pretty JSON through a temporary file in the same directory renamed into place, so
// a crash never leaves a half-written config. The config is validated first.
inline void save_config(const Config& config, const std::filesystem::path& file) {
  validate(config, file.string());
  const std::string text = to_json(config).dump(2) + "\n";
  detail::write_file_atomically(file, text);
}

}  // namespace tessera
