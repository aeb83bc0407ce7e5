#pragma once
// config.json: parsed into a Config (and validated), and written back.
//
// Parsing rules (docs/model-files.md has the table of keys):
// - every key is optional and takes the SPEC 1 default; an unknown key is an error;
// - integers must be JSON integers (16.0, 16.5, "16" and true are rejected); numbers accept
//   integers; JSON comments (// and /* */) are accepted in files read by load_config;
// - a modality is present exactly when its section is present and not null; `{}` takes the
//   section's defaults; at least one modality is required.
// Every error is a tessera::Error that names the source and the key:
//   config.json: key "image.patch": expected a positive integer, got "16"
//   config.json: unknown key "text.vocab"

#include <tessera/core/error.hpp>
#include <tessera/io/atomic_file.hpp>
#include <tessera/io/json.hpp>
#include <tessera/io/read_file.hpp>
#include <tessera/model/config.hpp>
#include <tessera/model/config_check.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

namespace detail {

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
    read_enum(json, "", "activation", activation_kinds, config.activation);
    read_enum(json, "", "norm", norm_kinds, config.norm);
    read_number(json, "", "norm_eps", "a positive number", config.norm_eps);
    read_enum(json, "", "position", position_kinds, config.position);
    read_number(json, "", "rope_theta", "a positive number", config.rope_theta);
    read_rope_sections(json, config.rope_sections);
    read_enum(json, "", "pooling", pooling_kinds, config.pooling);

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

  static std::string choices(std::span<const char* const> names) {
    std::string out;
    for (std::size_t i = 0; i < names.size(); ++i) {
      out += (i == 0 ? "" : ", ") + std::string(names[i]);
    }
    return out;
  }

  // The index of the string value in `names`.
  std::optional<std::size_t> read_choice(const nlohmann::json& object, const std::string& prefix,
                                         const char* key, std::span<const char* const> names) const {
    const auto found = object.find(key);
    if (found == object.end()) return std::nullopt;
    if (found->is_string()) {
      for (std::size_t i = 0; i < names.size(); ++i) {
        if (found->get<std::string>() == names[i]) return i;
      }
    }
    fail_key(prefix + key, "expected one of ", choices(names), ", got ", json_excerpt(*found));
  }

  // An enum by its to_string name; `kinds` lists every value.
  template <class Enum, std::size_t N>
  void read_enum(const nlohmann::json& object, const std::string& prefix, const char* key,
                 const Enum (&kinds)[N], Enum& out) const {
    std::array<const char*, N> names{};
    for (std::size_t i = 0; i < N; ++i) names[i] = to_string(kinds[i]);
    if (const auto index = read_choice(object, prefix, key, names)) out = kinds[*index];
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

}  // namespace detail

// Parses and validates a config. `where` names the source in messages ("dir/config.json").
// Unknown keys, wrong types and inconsistent values throw tessera::Error naming the key.
inline Config parse_config(const nlohmann::json& json,
                           const std::string& where = "config.json") {
  Config config = detail::ConfigReader(where).read(json);
  validate(config, where);
  return config;
}

// Reads and parses a config.json file (comments allowed), naming it in every error.
inline Config load_config(const std::filesystem::path& file) {
  const std::string where = file.string();
  // names the file; refuses a directory, and a file over ReadLimits::config_json (1 MiB)
  const std::string text = read_file(file, {}, ReadLimits::config_json);
  return parse_config(detail::ConfigReader::parse_text(text, where), where);
}

// The JSON form of a config; parse_config(to_json(c)) == c.
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
