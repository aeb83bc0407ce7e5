#pragma once
// Training checkpoints: the weights, the optimizer's state and the loop's position in one
// safetensors file, written atomically (a temporary file renamed into place, so an
// interrupted save leaves the previous checkpoint intact).
//
//   model.<name>               every weight of the model (parameters(), logit_scale included)
//   adamw.<name>.exp_avg       AdamW's first and second moments, per weight (flat)
//   adamw.<name>.exp_avg_sq
//   __metadata__               "config" (the model's config.json), "step" (the next step of the
//                              loop), "adamw_steps", "scalar" (float or double), and the
//                              caller's own entries (a sampler's position, say) under "user.*",
//                              and "tessera.crc32", the checksum of all of the above
//                              (io/safetensors.hpp)
//
// A checkpoint is only read back when its checksum matches: a flipped bit in a weight or a
// moment would otherwise resume a run silently from damaged state. A checkpoint without a
// checksum is refused too, since tessera writes one into every checkpoint.
//
// save_checkpoint and load_checkpoint take a MultiModalEncoder, or any model's weights as a
// list of Parameters with the model's config as JSON (a fine-tuned TowerModel saves the
// weights it trains).
//
// Tensors are stored in Scalar's own type (F32 or F64), so load_checkpoint(save_checkpoint(...))
// restores every bit, and a resumed training equals an uninterrupted one (tested).

#include <tessera/core/error.hpp>
#include <tessera/core/parameter.hpp>
#include <tessera/io/json.hpp>
#include <tessera/io/safetensors.hpp>
#include <tessera/model/config.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/train/optimizer.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace tessera {

// Where a training loop stands, besides the weights and the optimizer.
struct TrainingPosition {
  std::int64_t step = 0;                     // the next step to run
  std::map<std::string, std::string> user;   // the caller's own state, as text
};

// Writes the weights `params` (named as parameters() names them), the model's config (its
// JSON, compared on load), optimizer and position to `file` (replacing it atomically): the
// piece every model's checkpoint is written by. A model that trains only some of its weights
// (a fine-tuned pretrained model with frozen towers) saves those alone.
// ensures: load_checkpoint(file, ...) restores all of them exactly.
// A weight that is not finite (a diverged run) is a tessera::Error naming it, and the
// previous checkpoint stays as it was.
template <class Scalar>
void save_checkpoint(const std::filesystem::path& file, std::span<const Parameter<const Scalar>> params,
                     const nlohmann::json& config, const AdamW<Scalar>& optimizer,
                     const TrainingPosition& position) {
  const DType dtype = sizeof(Scalar) == 8 ? DType::F64 : DType::F32;
  std::map<std::string, TensorData> tensors;
  for (const auto& p : params) {
    for (std::int64_t i = 0; i < p.size(); ++i) {
      check(std::isfinite(static_cast<double>(p.data[i])), "save_checkpoint ", file.string(),
            ": weight '", p.name, "' holds a non-finite value (", p.data[i], ") at flat index ", i);
    }
    tensors["model." + p.name] = TensorData::from_span(
        std::span<const Scalar>(p.data, static_cast<std::size_t>(p.size())), p.shape, dtype);
  }
  const AdamWState<Scalar> state = optimizer.state();
  for (const auto& [name, values] : state.tensors) {
    tensors["adamw." + name] = TensorData::from_span(
        std::span<const Scalar>(values.data(), static_cast<std::size_t>(values.size())),
        {values.size()}, dtype);
  }
  std::map<std::string, std::string> metadata{
      {"format", "tessera-checkpoint"},
      {"config", config.dump()},
      {"step", std::to_string(position.step)},
      {"adamw_steps", std::to_string(state.steps)},
      {"scalar", detail::scalar_name<Scalar>()}};
  for (const auto& [key, value] : position.user) metadata["user." + key] = value;
  save_safetensors(file, tensors, metadata, Checksum::crc32);
}

// Writes model (every weight, logit_scale included), optimizer and position to `file`.
template <class Scalar>
void save_checkpoint(const std::filesystem::path& file, const MultiModalEncoder<Scalar>& model,
                     const AdamW<Scalar>& optimizer, const TrainingPosition& position) {
  const auto params = model.parameters();
  save_checkpoint<Scalar>(file, params, to_json(model.config), optimizer, position);
}

// Opens `file` as a checkpoint and checks what holds for any Scalar: it is a tessera
// checkpoint ("format" is "tessera-checkpoint") with a checksum that matches its contents.
// A program resuming a run can call it to refuse a damaged file before it does any work;
// load_checkpoint calls it too.
inline SafetensorsFile open_checkpoint(const std::filesystem::path& file) {
  SafetensorsFile in = SafetensorsFile::open(file);  // verifies a checksum that is present
  const std::string where = file.string();
  const auto format = in.metadata().find("format");
  check(format != in.metadata().end(), where,
        ": not a tessera checkpoint (no metadata 'format')");
  check(format->second == "tessera-checkpoint", where, ": not a tessera checkpoint (format '",
        format->second, "', expected 'tessera-checkpoint')");
  check(in.has_checksum(), where, ": no checksum (metadata '", checksum_key,
        "'), so its contents cannot be verified; tessera writes one into every checkpoint, "
        "so this file was written by an older tessera or another program");
  return in;
}

// Reads a checkpoint written by save_checkpoint<Scalar> into the weights `params` (those the
// checkpoint was saved with, by name and shape), optimizer and position; its config must
// equal `config`. Everything is read and checked before anything is changed: on a
// tessera::Error (a missing or malformed file, a checksum that is missing or does not match,
// another config, a missing or misshapen tensor) the weights, optimizer and position are as
// they were.
template <class Scalar>
void load_checkpoint(const std::filesystem::path& file, std::span<const Parameter<Scalar>> params,
                     const nlohmann::json& config, AdamW<Scalar>& optimizer,
                     TrainingPosition& position) {
  const SafetensorsFile in = open_checkpoint(file);
  const std::string where = file.string();
  const auto& metadata = in.metadata();
  auto entry = [&](const std::string& key) -> const std::string& {
    const auto found = metadata.find(key);
    check(found != metadata.end(), where, ": not a tessera checkpoint (no metadata '", key, "')");
    return found->second;
  };
  check(entry("scalar") == detail::scalar_name<Scalar>(), where, ": written for ",
        entry("scalar"), ", read as ", detail::scalar_name<Scalar>());
  nlohmann::json saved_config;
  try {
    std::string problem;
    saved_config = detail::parse_json_checked(entry("config"), &problem);
    check(problem.empty(), where, ": metadata 'config': ", problem);
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": metadata 'config' is not JSON: ", detail::json_error_reason(e));
  }
  check(saved_config == config, where, ": the checkpoint's model config differs from this model's");
  auto integer = [&](const std::string& key) {
    const std::string& text = entry(key);
    std::size_t used = 0;
    long long value = -1;
    try {
      value = std::stoll(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    check(used == text.size() && value >= 0, where, ": metadata '", key, "' is '", text,
          "', expected an integer >= 0");
    return static_cast<std::int64_t>(value);
  };
  TrainingPosition next{integer("step"), {}};
  for (const auto& [key, value] : metadata) {
    if (key.rfind("user.", 0) == 0) next.user[key.substr(5)] = value;
  }

  // Weights, into copies first.
  std::vector<std::vector<Scalar>> weights;
  for (const auto& p : params) {
    const std::string name = "model." + p.name;
    check(in.contains(name), where, ": missing tensor '", name, "'");
    check(in.info(name).shape == p.shape, where, ": tensor '", name, "' has shape ",
          detail::shape_string(in.info(name).shape), ", expected ", detail::shape_string(p.shape));
    weights.push_back(in.read<Scalar>(name));
  }
  // The optimizer's state, loaded into a fresh AdamW (which checks it against the weights).
  AdamWState<Scalar> state;
  state.steps = integer("adamw_steps");
  for (const auto& name : in.names()) {
    if (name.rfind("adamw.", 0) != 0) continue;
    const std::vector<Scalar> values = in.read<Scalar>(name);
    state.tensors.emplace_back(name.substr(6), Eigen::Map<const Vector<Scalar>>(
                                                   values.data(), static_cast<Index>(values.size())));
  }
  AdamW<Scalar> restored(optimizer.options);
  restored.decays = optimizer.decays;
  restored.load_state(state, params);

  for (std::size_t i = 0; i < params.size(); ++i) {
    std::copy(weights[i].begin(), weights[i].end(), params[i].data);
  }
  optimizer = std::move(restored);
  position = std::move(next);
}

// Reads a checkpoint written by save_checkpoint<Scalar> into model (whose config must equal
// the checkpoint's), optimizer and position; nothing changes on an error.
template <class Scalar>
void load_checkpoint(const std::filesystem::path& file, MultiModalEncoder<Scalar>& model,
                     AdamW<Scalar>& optimizer, TrainingPosition& position) {
  const auto params = model.parameters();
  load_checkpoint<Scalar>(file, params, to_json(model.config), optimizer, position);
}

}  // namespace tessera
