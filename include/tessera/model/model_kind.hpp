#pragma once
// Which kind of model a directory holds, from its files (detect_model): tessera's own
// (SPEC 1, model/model_io.hpp) or a pretrained one (model/pretrained.hpp), with its
// configuration file parsed once for the kind's loader. load_model and load_tower_model each
// take what detect_model found and refuse the other's kind by name; Pipeline::open picks.

#include <tessera/core/error.hpp>
#include <tessera/io/json.hpp>
#include <tessera/io/read_file.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <utility>

namespace tessera {

enum class ModelKind { tessera, tessera_towers, hf_clip, open_clip, imagebind };

inline const char* to_string(ModelKind k) {
  switch (k) {
    case ModelKind::tessera: return "tessera";
    case ModelKind::tessera_towers: return "tessera_towers";
    case ModelKind::hf_clip: return "hf_clip";
    case ModelKind::open_clip: return "open_clip";
    case ModelKind::imagebind: return "imagebind";
  }
  return "unknown";
}

inline constexpr const char* config_file_name = "config.json";
inline constexpr const char* weights_file_name = "model.safetensors";
inline constexpr const char* open_clip_config_name = "open_clip_config.json";
inline constexpr const char* open_clip_weights_name = "open_clip_model.safetensors";

// A model directory as detect_model found it: its kind, and its configuration file read and
// parsed once, for the kind's loader.
struct ModelDirectory {
  std::filesystem::path dir;
  ModelKind kind = ModelKind::tessera;
  std::filesystem::path config_file;  // dir/config.json, or dir/open_clip_config.json
  // config_file parsed: strict JSON, or for tessera's own kind JSON with comments (as
  // load_config reads it). Empty when the file is missing, unreadable or not JSON: the
  // kind's loader then reads it itself and names the problem as it always has.
  std::optional<nlohmann::json> config;
};

// Which kind of model directory `dir` is, from its files: open_clip_config.json, or
// config.json's "model_type" ("clip", "imagebind", "tessera_towers"; absent: tessera's own).
// A config.json that is missing, cannot be read, or is JSON only with comments is taken for
// tessera's own, whose loader then names any problem as it always has. Throws tessera::Error
// for a "model_type" tessera does not know.
inline ModelDirectory detect_model(const std::filesystem::path& dir) {
  check(std::filesystem::is_directory(dir), "load_model: ", dir.string(), " is not a directory");
  ModelDirectory found{dir, ModelKind::tessera, dir / config_file_name, {}};
  if (std::filesystem::exists(dir / open_clip_config_name)) {
    found.kind = ModelKind::open_clip;
    found.config_file = dir / open_clip_config_name;
    try {
      found.config = detail::read_json_file(found.config_file);
    } catch (const Error&) {  // left to load_tower_model, which reads it again to say why
    }
    return found;
  }
  std::string text;
  try {
    text = read_file(found.config_file, {}, ReadLimits::config_json);
  } catch (const Error&) {
    return found;
  }
  // Strict JSON first (every pretrained config); then with comments, which only tessera's
  // own config.json may hold.
  bool strict = true;
  std::string problem;
  nlohmann::json json;
  try {
    json = detail::parse_json_checked(text, &problem);
  } catch (const nlohmann::json::exception&) {
    strict = false;
    problem.clear();
    try {
      json = detail::parse_json_checked(text, &problem, /*ignore_comments=*/true);
    } catch (const nlohmann::json::exception&) {
      return found;
    }
  }
  if (!problem.empty()) return found;  // a key twice, too deep: load_config names it
  if (strict && json.is_object() && json.contains("model_type")) {
    const auto& type = json.at("model_type");
    check(type.is_string(), found.config_file.string(), ": key \"model_type\": expected a "
          "string, got ", detail::json_excerpt(type));
    const std::string name = type.get<std::string>();
    if (name == "clip") {
      found.kind = ModelKind::hf_clip;
    } else if (name == "imagebind") {
      found.kind = ModelKind::imagebind;
    } else if (name == "tessera_towers") {
      found.kind = ModelKind::tessera_towers;
    } else {
      fail(found.config_file.string(), ": model_type \"", name, "\" is not one tessera loads "
           "(\"clip\", \"imagebind\", \"tessera_towers\", or none for tessera's own models)");
    }
  }
  found.config = std::move(json);
  return found;
}

// detect_model's kind alone.
inline ModelKind detect_model_kind(const std::filesystem::path& dir) {
  return detect_model(dir).kind;
}

}  // namespace tessera
