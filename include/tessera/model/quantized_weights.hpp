#pragma once
// Quantized weights in model files (docs/model-files.md "Quantized weights"): reading them
// straight into nn::Linear's int8 / bfloat16 forms and writing them back, for tessera's own
// model directories (model_io.hpp) and the towers' files (tower_weights.hpp).
//
//   int8   NAME        I8  [out, in] (or the weight's convolution shape [D, C, (T,) k, k])
//          NAME.scale  F32 [out]      w(r, c) ~= NAME(r, c) * NAME.scale[r], symmetric, the
//                                     values in [-127, 127] (-128 is refused)
//   bf16   NAME        BF16 [out, in] (or its convolution shape), no scale
//
// An I8 tensor is always a quantized weight. A BF16 one is kept as bfloat16 in memory only in
// a model whose config.json records "quantization" (tessera-quantize writes it); elsewhere a
// BF16 file loads into fp32 as it always has (a published bfloat16 checkpoint, save_model with
// DType::BF16). Only linear and patch-embedding weights may be quantized: an I8 (or, in a
// quantized model, BF16 or F16) norm, bias, embedding table or position table is refused.
// No quantized tensor is widened to fp32: each goes from the file's bytes into its packed form
// (int8 straight from the file's bytes, bfloat16 through one temporary matrix of the tensor). The loaders construct the model
// with its linear weights unset (nn::WeightInit::unset: allocated, never written, so never
// resident), and the file's pages are given back as each tensor is read
// (SafetensorsFile::release): the peak while loading is about the quantized model's size.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/io/safetensors.hpp>
#include <tessera/nn/linear.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace tessera {

// The config.json key that records a quantized model ("int8" or "bf16"), for information and
// to keep BF16 weights as bfloat16.
inline constexpr const char* quantization_key = "quantization";

// The scale tensor of int8 weight `name`.
inline std::string scale_name(const std::string& weight) { return weight + ".scale"; }

// The "quantization" entry of a config (json an object), validated: nullopt when absent.
// Throws tessera::Error naming `where` for a value other than "int8" or "bf16".
inline std::optional<nn::WeightFormat> config_quantization(const nlohmann::json& json,
                                                           const std::string& where) {
  if (!json.is_object() || !json.contains(quantization_key)) return std::nullopt;
  const auto& value = json.at(quantization_key);
  if (value.is_string() && value.get<std::string>() == "int8") return nn::WeightFormat::int8;
  if (value.is_string() && value.get<std::string>() == "bf16") return nn::WeightFormat::bf16;
  fail(where, ": key \"", quantization_key, "\": expected \"int8\" or \"bf16\", got ",
       value.dump());
}

// How a file stores its weights: which tensors hold quantized weights and how many bytes a
// weight takes at least (for the loaders' size check before allocating).
struct QuantizedFile {
  bool quantized_model = false;  // config.json records "quantization": BF16 weights stay bf16

  // Whether tensor `info` of a quantizable weight is stored quantized.
  bool is_quantized(const TensorInfo& info) const {
    return info.dtype == DType::I8 || (quantized_model && info.dtype == DType::BF16);
  }
};

// The fewest bytes one weight of `file` takes: 1 when it holds I8 tensors, else 2 (F16, BF16).
inline std::uint64_t smallest_weight_bytes(const SafetensorsFile& file) {
  for (const auto& name : file.names()) {
    if (file.info(name).dtype == DType::I8) return 1;
  }
  return 2;
}

namespace detail {

// Rows and columns of a weight stored as `shape` ([out, in] or a convolution shape).
inline std::pair<Index, Index> weight_matrix_shape(const std::vector<std::int64_t>& shape) {
  TESSERA_ASSERT(!shape.empty());
  std::int64_t cols = 1;
  for (std::size_t i = 1; i < shape.size(); ++i) cols *= shape[i];
  return {static_cast<Index>(shape[0]), static_cast<Index>(cols)};
}

}  // namespace detail

// Checks, for a file, that every tensor named "X.scale" is the scale of an I8 tensor X, and
// that every I8 tensor is one of `quantizable` (the call's check of each name): a scale of no
// I8 tensor, or I8 in a tensor that must stay fp32, is a tessera::Error naming it and `where`.
template <class IsQuantizable>
void check_quantized_names(const SafetensorsFile& file, const std::string& where,
                           IsQuantizable&& quantizable) {
  for (const auto& name : file.names()) {
    const TensorInfo& info = file.info(name);
    constexpr std::string_view suffix = ".scale";
    if (name.size() > suffix.size() && name.ends_with(suffix)) {
      const std::string weight = name.substr(0, name.size() - suffix.size());
      check(file.contains(weight) && file.info(weight).dtype == DType::I8, where, ": tensor '",
            name, "' is a scale, but '", weight, "' is ",
            file.contains(weight) ? std::string("not an I8 tensor (it is ") +
                                        dtype_name(file.info(weight).dtype) + ")"
                                  : std::string("not in the file"),
            ": a scale belongs to an int8 weight");
      continue;
    }
    check(info.dtype != DType::I8 || quantizable(name), where, ": tensor '", name,
          "' is I8, but it must stay fp32: only linear and patch-embedding weights may be "
          "quantized (docs/model-files.md \"Quantized weights\")");
  }
}

// Reads quantized weight `name` of `file` (I8 with its scale, or BF16), stored in `shape`'s
// element count (the caller has checked the shape), into `layers`: one layer, or the q, k and
// v of a packed in_proj, which take equal parts of its rows. Each layer's weight is released
// and replaced (nn::Linear::set_quantized). Throws tessera::Error naming the tensor and
// `where` for a missing or misshapen scale, a scale that is not F32, finite and >= 0, an int8
// value of -128, and a non-finite bfloat16 value.
inline void read_quantized_weight(const SafetensorsFile& file, const std::string& where,
                                  const std::string& name,
                                  std::span<nn::Linear<float>* const> layers) {
  const TensorInfo& info = file.info(name);
  const auto [rows, cols] = detail::weight_matrix_shape(info.shape);
  const auto parts = static_cast<Index>(layers.size());
  TESSERA_ASSERT(parts >= 1 && rows % parts == 0);
  const Index part_rows = rows / parts;
  const auto count = static_cast<std::size_t>(rows * cols);
  if (info.dtype == DType::I8) {
    const std::string scale = scale_name(name);
    check(file.contains(scale), where, ": tensor '", name, "' is I8 but has no scale tensor '",
          scale, "' (F32 [", rows, "]): an int8 weight needs one scale per output row");
    const TensorInfo& s = file.info(scale);
    check(s.dtype == DType::F32 && s.shape == std::vector<std::int64_t>{rows}, where,
          ": scale '", scale, "' is ", dtype_name(s.dtype), " ", detail::shape_string(s.shape),
          ", expected F32 [", rows, "] (one per output row of '", name, "')");
    const std::vector<float> scales = file.read<float>(scale);
    for (std::size_t r = 0; r < scales.size(); ++r) {
      check(std::isfinite(scales[r]) && scales[r] >= 0, where, ": scale '", scale, "' holds ",
            scales[r], " at row ", r, ", expected a finite value >= 0");
    }
    // [out, in] read in place from the file's bytes (int8: any offset is aligned), packed
    // straight into each layer: no temporary copy to fragment the heap while loading
    const Eigen::Map<const Matrix<std::int8_t>> values(
        reinterpret_cast<const std::int8_t*>(info.bytes.data()), rows, cols);
    for (std::size_t i = 0; i < count; ++i) {
      check(values.data()[i] != -128, where, ": tensor '", name, "' holds the int8 value -128 "
            "at flat index ", i, "; symmetric int8 weights lie in [-127, 127]");
    }
    const Eigen::Map<const Vector<float>> all_scales(scales.data(), rows);
    for (Index p = 0; p < parts; ++p) {
      layers[static_cast<std::size_t>(p)]->set_quantized(
          detail::Int8Rows(values.middleRows(p * part_rows, part_rows),
                           Vector<float>(all_scales.segment(p * part_rows, part_rows))));
    }
    file.release(name);
    return;
  }
  TESSERA_ASSERT(info.dtype == DType::BF16);
  Matrix<BFloat16> values(rows, cols);  // [out, in]
  for (std::size_t i = 0; i < count; ++i) {
    const auto bits = detail::load_le<std::uint16_t>(info.bytes.data() + 2 * i);
    check((bits & 0x7F80u) != 0x7F80u, where, ": tensor '", name, "' holds a non-finite value (",
          bfloat16_to_float(bits), ") at flat index ", i);
    values.data()[i] = BFloat16(Eigen::bfloat16_impl::raw_uint16_to_bfloat16(bits));
  }
  file.release(name);
  for (Index p = 0; p < parts; ++p) {
    layers[static_cast<std::size_t>(p)]->set_quantized(
        detail::BF16Rows(values.middleRows(p * part_rows, part_rows)));
  }
}

// Adds the tensors of the quantized weight of `layers` (one, or q, k and v packed, all of one
// format) under `name` in stored `shape` (rows the sum of theirs): NAME as I8 and NAME.scale
// as F32, or NAME as BF16.
inline void add_quantized_weight(std::map<std::string, TensorData>& tensors,
                                 const std::string& name, std::vector<std::int64_t> shape,
                                 std::span<const nn::Linear<float>* const> layers) {
  TESSERA_ASSERT(!layers.empty());
  const nn::WeightFormat format = layers.front()->format();
  Index rows = 0;
  for (const auto* layer : layers) {
    check(layer->format() == format, "saving '", name, "': its parts are stored ",
          nn::to_string(format), " and ", nn::to_string(layer->format()),
          "; a packed tensor holds one format");
    rows += layer->out_features();
  }
  const Index cols = layers.front()->in_features();
  TESSERA_ASSERT(detail::weight_matrix_shape(shape) == std::make_pair(rows, cols));
  if (format == nn::WeightFormat::int8) {
    Matrix<std::int8_t> values(rows, cols);  // [out, in]
    std::vector<float> scales;
    scales.reserve(static_cast<std::size_t>(rows));
    Index at = 0;
    for (const auto* layer : layers) {
      const auto& q = std::get<detail::Int8Rows>(layer->quantized);
      values.middleRows(at, q.rows()) = q.values();
      scales.insert(scales.end(), q.scale().data(), q.scale().data() + q.rows());
      at += q.rows();
    }
    tensors[name] = TensorData::from_span<std::int8_t>(
        std::span<const std::int8_t>(values.data(), static_cast<std::size_t>(values.size())),
        std::move(shape), DType::I8);
    tensors[scale_name(name)] = TensorData::from_vector(scales, DType::F32);
    return;
  }
  TESSERA_ASSERT(format == nn::WeightFormat::bf16);
  TensorData data{DType::BF16, std::move(shape),
                  std::vector<std::byte>(static_cast<std::size_t>(rows * cols) * 2)};
  std::size_t at = 0;
  for (const auto* layer : layers) {
    const Matrix<BFloat16> values = std::get<detail::BF16Rows>(layer->quantized).values();
    for (Index i = 0; i < values.size(); ++i, ++at) {
      detail::store_le<std::uint16_t>(Eigen::numext::bit_cast<std::uint16_t>(values.data()[i]),
                                      data.bytes.data() + 2 * at);
    }
  }
  tensors[name] = std::move(data);
}

}  // namespace tessera
