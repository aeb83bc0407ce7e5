#pragma once
// Model directories (SPEC 1): config.json + model.safetensors, read and written.
//
// load_model validates everything before the model is returned: the config (config.hpp),
// the safetensors container (safetensors.hpp), and every tensor against SPEC 4: no missing
// or unexpected tensor, each of its SPEC shape (a patch embed also in its convolution shape),
// a floating dtype (F32, F16, BF16, F64, converted to Scalar), and finite values. Each
// failure is a tessera::Error naming the file and the tensor.
//
// save_model writes a checksum into model.safetensors (metadata "tessera.crc32", defined in
// io/safetensors.hpp), and load_model refuses a file whose contents no longer match it. A file
// without one (written by PyTorch or another tool) loads as before. The checksum covers
// model.safetensors only: config.json is a small text file meant to be read and edited, and
// it is checked key by key on load and against every tensor's shape.

#include <tessera/core/error.hpp>
#include <tessera/io/safetensors.hpp>
#include <tessera/model/config.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/model_kind.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace tessera {

// The tessera model of a directory detect_model found (its config.json parsed there, or
// read here when it could not be, so that load_config names the problem).
template <class Scalar = float>
MultiModalEncoder<Scalar> load_model(const ModelDirectory& found) {
  const std::filesystem::path& dir = found.dir;
  if (found.kind != ModelKind::tessera) {
    fail("load_model: ", dir.string(), " holds a pretrained ", to_string(found.kind), " model, "
         "not a tessera model: load it with load_tower_model (model/pretrained.hpp) or "
         "Pipeline::open");
  }
  const Config config = found.config ? parse_config(*found.config, found.config_file.string())
                                      : load_config(found.config_file);
  const auto file = SafetensorsFile::open(dir / weights_file_name);
  const std::string where = (dir / weights_file_name).string();
  // Every weight is stored in 2 bytes at least (F16, BF16): a config describing more weights
  // than the file can hold is refused before the model is allocated.
  std::uint64_t stored_bytes = 0;
  for (const auto& name : file.names()) stored_bytes += file.info(name).bytes.size();
  const std::uint64_t weights = parameter_count(config);
  check(weights <= stored_bytes / 2, where, ": ", found.config_file.string(),
        " describes a model of ", weights, " weights, more than the file's ", stored_bytes,
        " bytes of tensors can hold");
  MultiModalEncoder<Scalar> model(config);

  std::set<std::string> expected;
  for (auto& p : model.parameters()) {
    expected.insert(p.name);
    check(file.contains(p.name), where, ": missing tensor '", p.name, "' of shape ",
          detail::shape_string(p.shape));
    const TensorInfo& info = file.info(p.name);
    check(is_floating(info.dtype), where, ": tensor '", p.name, "' has dtype ",
          dtype_name(info.dtype), ", expected F32, F16, BF16 or F64");
    check(info.shape == p.shape || (!p.conv_shape.empty() && info.shape == p.conv_shape), where,
          ": tensor '", p.name, "' has shape ", detail::shape_string(info.shape), ", expected ",
          detail::shape_string(p.shape),
          p.conv_shape.empty() ? std::string() : " or " + detail::shape_string(p.conv_shape));
    const std::vector<Scalar> values = file.read<Scalar>(p.name);
    for (std::size_t i = 0; i < values.size(); ++i) {
      check(std::isfinite(static_cast<double>(values[i])), where, ": tensor '", p.name,
            "' holds a non-finite value (", values[i], ") at flat index ", i);
    }
    std::copy(values.begin(), values.end(), p.data);
  }
  for (const auto& name : file.names()) {
    check(expected.count(name) == 1, where, ": unexpected tensor '", name,
          "' (not part of a model with this config.json)");
  }
  return model;
}

// The tessera model of directory `dir`; a pretrained one is refused by name.
template <class Scalar = float>
MultiModalEncoder<Scalar> load_model(const std::filesystem::path& dir) {
  return load_model<Scalar>(detect_model(dir));
}

// Writes config.json and model.safetensors into `dir` (created if needed), each through a
// temporary file renamed into place. Weights are stored as `dtype` (F32 by default for float,
// F64 for double), which makes load_model(save_model(m)) exact; model.safetensors carries
// the checksum "tessera.crc32".
template <class Scalar>
void save_model(const MultiModalEncoder<Scalar>& model, const std::filesystem::path& dir,
                DType dtype = sizeof(Scalar) == 8 ? DType::F64 : DType::F32) {
  check(is_floating(dtype), "save_model: dtype ", dtype_name(dtype), " is not a floating type");
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  check(!error && std::filesystem::is_directory(dir), "save_model: cannot create directory ",
        dir.string(), error ? ": " + error.message() : std::string());
  std::map<std::string, TensorData> tensors;
  for (const auto& p : model.parameters()) {
    tensors[p.name] = TensorData::from_span(
        std::span<const Scalar>(p.data, static_cast<std::size_t>(p.size())), p.shape, dtype);
  }
  save_safetensors(dir / weights_file_name, tensors, {{"format", "pt"}, {"producer", "tessera"}},
                   Checksum::crc32);
  save_config(model.config, dir / config_file_name);
}

}  // namespace tessera
