#pragma once
// Which kind of model a directory holds, from its files (detect_model_kind): tessera's own
// (SPEC 1, model/model_io.hpp) or a pretrained one (model/pretrained.hpp). load_model and
// load_tower_model each refuse the other's kind by name, and Pipeline::open picks.

#include <tessera/core/error.hpp>
#include <tessera/io/json.hpp>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>

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

inline constexpr const char* open_clip_config_name = "open_clip_config.json";
inline constexpr const char* open_clip_weights_name = "open_clip_model.safetensors";

// Which kind of model directory `dir` is, from its files: open_clip_config.json, or
// config.json's "model_type" ("clip", "imagebind", "tessera_towers"; absent: tessera's own).
// A config.json that is missing or cannot be read as JSON is taken for tessera's own, whose
// loader then names the problem as it always has (comments allowed, ...). Throws
// tessera::Error for a "model_type" tessera does not know.
inline ModelKind detect_model_kind(const std::filesystem::path& dir) {
  check(std::filesystem::is_directory(dir), "load_model: ", dir.string(), " is not a directory");
  if (std::filesystem::exists(dir / open_clip_config_name)) return ModelKind::open_clip;
  const auto config = dir / "config.json";
  nlohmann::json json;
  try {
    json = detail::read_json_file(config);
  } catch (const Error&) {
    return ModelKind::tessera;
  }
  if (!json.is_object() || !json.contains("model_type")) return ModelKind::tessera;
  const auto& type = json.at("model_type");
  check(type.is_string(), config.string(), ": key \"model_type\": expected a string, got ",
        detail::json_excerpt(type));
  const std::string name = type.get<std::string>();
  if (name == "clip") return ModelKind::hf_clip;
  if (name == "imagebind") return ModelKind::imagebind;
  if (name == "tessera_towers") return ModelKind::tessera_towers;
  fail(config.string(), ": model_type \"", name, "\" is not one tessera loads (\"clip\", "
       "\"imagebind\", \"tessera_towers\", or none for tessera's own models)");
}

}  // namespace tessera
