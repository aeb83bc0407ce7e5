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
//
// A quantized model (tessera-quantize; docs/model-files.md "Quantized weights") stores its
// linear and patch-embedding weights as I8 with a scale per row, or BF16, and its config.json
// records "quantization"; load_model reads them into nn::Linear's quantized forms.

#include <tessera/core/error.hpp>
#include <tessera/io/safetensors.hpp>
#include <tessera/model/config.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/model_kind.hpp>
#include <tessera/model/quantized_weights.hpp>
#include <tessera/model/weights.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <type_traits>
#include <string>
#include <vector>

namespace tessera {

// The tessera model of a directory detect_model found (its config.json parsed there, or
// read here when it could not be, so that load_config names the problem). Quantized weights
// (model/quantized_weights.hpp) go straight into their layers' int8 / bfloat16 forms; a
// quantized file loads only as float.
template <class Scalar = float>
MultiModalEncoder<Scalar> load_model(const ModelDirectory& found) {
  const std::filesystem::path& dir = found.dir;
  if (found.kind != ModelKind::tessera) {
    fail("load_model: ", dir.string(), " holds a pretrained ", to_string(found.kind), " model, "
         "not a tessera model: load it with load_tower_model (model/pretrained.hpp) or "
         "Pipeline::open");
  }
  // "quantization" is the one key of a quantized model's config.json that is no Config key.
  QuantizedFile stored;
  std::optional<nlohmann::json> json = found.config;
  if (json) {
    stored.quantized_model = config_quantization(*json, found.config_file.string()).has_value();
    if (json->is_object()) json->erase(quantization_key);
  }
  const Config config = json ? parse_config(*json, found.config_file.string())
                             : load_config(found.config_file);
  const auto file = SafetensorsFile::open(dir / weights_file_name);
  const std::string where = (dir / weights_file_name).string();
  // Every weight is stored in 2 bytes at least (F16, BF16), 1 in a file with I8 tensors: a
  // config describing more weights than the file can hold is refused before the model is
  // allocated.
  std::uint64_t stored_bytes = 0;
  for (const auto& name : file.names()) stored_bytes += file.info(name).bytes.size();
  const std::uint64_t weights = parameter_count(config);
  check(weights <= stored_bytes / smallest_weight_bytes(file), where, ": ",
        found.config_file.string(), " describes a model of ", weights,
        " weights, more than the file's ", stored_bytes, " bytes of tensors can hold");
  std::set<std::string> quantizable;
  for_each_weight(config, [&](const WeightSpec& spec, auto&&) {
    if (spec.quantizable) quantizable.insert(spec.name);
  });
  check_quantized_names(file, where,
                        [&](const std::string& name) { return quantizable.count(name) == 1; });
  // Every weight is read below (a missing one is an error): the linear ones are not zeroed first.
  MultiModalEncoder<Scalar> model(config, nn::WeightInit::unset);

  std::set<std::string> expected;
  for_each_weight(config, [&](const WeightSpec& p, auto get) {
    expected.insert(p.name);
    check(file.contains(p.name), where, ": missing tensor '", p.name, "' of shape ",
          detail::shape_string(p.shape));
    const TensorInfo& info = file.info(p.name);
    check(info.shape == p.shape || (!p.conv_shape.empty() && info.shape == p.conv_shape), where,
          ": tensor '", p.name, "' has shape ", detail::shape_string(info.shape), ", expected ",
          detail::shape_string(p.shape),
          p.conv_shape.empty() ? std::string() : " or " + detail::shape_string(p.conv_shape));
    if constexpr (reaches_layer<decltype(get), MultiModalEncoder<Scalar>>) {
      if (p.quantizable && stored.is_quantized(info)) {
        check(std::is_same_v<Scalar, float>, where, ": tensor '", p.name, "' is quantized (",
              dtype_name(info.dtype), "); a quantized model loads as float only");
        if constexpr (std::is_same_v<Scalar, float>) {
          nn::Linear<float>* layer = &get.layer(model);
          read_quantized_weight(file, where, p.name, std::span<nn::Linear<float>* const>(&layer, 1));
          expected.insert(scale_name(p.name));
        }
        return;
      }
    }
    check(is_floating(info.dtype), where, ": tensor '", p.name, "' has dtype ",
          dtype_name(info.dtype), ", expected F32, F16, BF16 or F64");
    check(!stored.quantized_model || p.quantizable || info.dtype == DType::F32 ||
              info.dtype == DType::F64,
          where, ": tensor '", p.name, "' is ", dtype_name(info.dtype), ", but in a quantized "
          "model it must stay fp32: only linear and patch-embedding weights are quantized");
    auto& storage = get(model);
    Scalar* data = nullptr;
    if constexpr (std::is_arithmetic_v<std::remove_cvref_t<decltype(storage)>>) {
      data = &storage;
    } else {
      data = storage.data();
    }
    const std::vector<Scalar> values = file.read<Scalar>(p.name);
    for (std::size_t i = 0; i < values.size(); ++i) {
      check(std::isfinite(static_cast<double>(values[i])), where, ": tensor '", p.name,
            "' holds a non-finite value (", values[i], ") at flat index ", i);
    }
    std::copy(values.begin(), values.end(), data);
  });
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

// The format of a model's quantized weights: int8 when any layer holds int8, else bf16 when
// any holds bfloat16, else nullopt (an fp32 model).
template <class Scalar>
std::optional<nn::WeightFormat> model_quantization(const MultiModalEncoder<Scalar>& model) {
  std::optional<nn::WeightFormat> out;
  for_each_weight(model.config, [&](const WeightSpec&, auto get) {
    if constexpr (reaches_layer<decltype(get), const MultiModalEncoder<Scalar>>) {
      const auto format = get.layer(model).format();
      if (format == nn::WeightFormat::int8 || (format == nn::WeightFormat::bf16 && !out)) {
        out = format;
      }
    }
  });
  return out;
}

// Writes config.json and model.safetensors into `dir` (created if needed), each through a
// temporary file renamed into place. Weights are stored as `dtype` (F32 by default for float,
// F64 for double), which makes load_model(save_model(m)) exact; model.safetensors carries
// the checksum "tessera.crc32". A quantized model's quantized weights are stored as they are
// held (I8 with a scale, or BF16: docs/model-files.md "Quantized weights"), its other
// tensors as F32, and its config.json records "quantization".
template <class Scalar>
void save_model(const MultiModalEncoder<Scalar>& model, const std::filesystem::path& dir,
                DType dtype = sizeof(Scalar) == 8 ? DType::F64 : DType::F32) {
  check(is_floating(dtype), "save_model: dtype ", dtype_name(dtype), " is not a floating type");
  const std::optional<nn::WeightFormat> quantization = model_quantization(model);
  check(!quantization || dtype == DType::F32, "save_model: the model is quantized (",
        quantization ? nn::to_string(*quantization) : "", "); its other tensors are saved as "
        "F32, not ", dtype_name(dtype));
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  check(!error && std::filesystem::is_directory(dir), "save_model: cannot create directory ",
        dir.string(), error ? ": " + error.message() : std::string());
  std::map<std::string, TensorData> tensors;
  for_each_weight(model.config, [&](const WeightSpec& p, auto get) {
    if constexpr (reaches_layer<decltype(get), const MultiModalEncoder<Scalar>>) {
      if constexpr (std::is_same_v<Scalar, float>) {
        const nn::Linear<float>* layer = &get.layer(model);
        if (layer->is_quantized()) {
          add_quantized_weight(tensors, p.name, p.shape,
                               std::span<const nn::Linear<float>* const>(&layer, 1));
          return;
        }
      }
    }
    const auto& storage = get(model);
    const Scalar* data = nullptr;
    std::int64_t size = 1;
    if constexpr (std::is_arithmetic_v<std::remove_cvref_t<decltype(storage)>>) {
      data = &storage;
    } else {
      data = storage.data();
      size = storage.size();
    }
    tensors[p.name] = TensorData::from_span(
        std::span<const Scalar>(data, static_cast<std::size_t>(size)), p.shape, dtype);
  });
  save_safetensors(dir / weights_file_name, tensors, {{"format", "pt"}, {"producer", "tessera"}},
                   Checksum::crc32);
  if (!quantization) {
    save_config(model.config, dir / config_file_name);
    return;
  }
  validate(model.config, (dir / config_file_name).string());
  nlohmann::json json = to_json(model.config);
  json[quantization_key] = nn::to_string(*quantization);
  detail::write_file_atomically(dir / config_file_name, json.dump(2) + "\n");
}

}  // namespace tessera
