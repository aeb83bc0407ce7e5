#pragma once
// Quantizing a model in memory (tessera-quantize; docs/quantization.md): every linear and
// patch-embedding weight to int8 (symmetric, one fp32 scale per output row) or bfloat16, the
// rest kept fp32. What a quantized model's files hold is docs/model-files.md "Quantized
// weights" (model/quantized_weights.hpp); save_model and save_towers_model write them.
//
// Which tensors are quantized: tessera's own encoder's linear weights (attention q/k/v/out,
// the FFN's, the projection `proj.weight`) and patch embeddings (`<m>.patch_embed.weight`),
// named as in its model files; a tower model's patch convolutions, packed in_proj, out_proj,
// MLP and projection weights, named as in a tessera_towers file ("vision.conv1.weight",
// "text.transformer.resblocks.0.attn.in_proj_weight", "text.proj.weight"). Embedding tables,
// norms, biases, positional tables, class tokens, the router and logit_scale stay fp32, and
// so does every tensor `keep` names: a full name, or a prefix ending at a dot boundary
// ("layers.0" keeps layers.0.*, "proj" keeps proj.weight, "vision." the whole vision tower).

#include <tessera/core/error.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/pretrained.hpp>
#include <tessera/model/tower_model.hpp>
#include <tessera/model/weights.hpp>
#include <tessera/nn/linear.hpp>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

namespace tessera {

struct QuantizeOptions {
  nn::WeightFormat format = nn::WeightFormat::int8;  // int8 or bf16
  std::vector<std::string> keep;  // tensor names or dot-bounded prefixes kept fp32
};

// What quantize_model did: tensor names, and the bytes of every weight before and after.
struct QuantizeSummary {
  std::vector<std::string> quantized;  // linear and patch-embedding weights now int8 / bf16
  std::vector<std::string> kept;       // such weights kept fp32 by QuantizeOptions::keep
  std::size_t other = 0;               // tensors that always stay fp32 (norms, biases, ...)
  std::uint64_t bytes_before = 0;      // every weight, as held before (fp32: 4 bytes each)
  std::uint64_t bytes_after = 0;       // as held after (int8 + scales, or bf16, and fp32)
};

namespace detail {

// Whether `name` is `entry` or lies under it: "layers.0" names layers.0.*, not layers.01.*.
inline bool names_tensor(const std::string& entry, const std::string& name) {
  if (entry.empty() || !name.starts_with(entry)) return false;
  return name.size() == entry.size() || entry.back() == '.' || name[entry.size()] == '.';
}

// Quantizes one weight (its layers: one, or q, k, v packed) unless kept; records it.
template <class Layers>
void quantize_weight(const std::string& name, const Layers& layers, const QuantizeOptions& options,
                     std::set<std::string>& used_keep, QuantizeSummary& summary) {
  for (const auto& layer : layers) summary.bytes_before += layer->weight_bytes();
  bool kept = false;
  for (const auto& entry : options.keep) {
    if (names_tensor(entry, name)) {
      used_keep.insert(entry);
      kept = true;
    }
  }
  if (!kept) {
    for (const auto& layer : layers) layer->quantize(options.format);
  }
  for (const auto& layer : layers) summary.bytes_after += layer->weight_bytes();
  (kept ? summary.kept : summary.quantized).push_back(name);
}

// Records a tensor that always stays fp32 (a norm, a bias, an embedding table): its 4 bytes an
// element before and after.
template <class Shape>
void count_fp32_tensor(const Shape& shape, QuantizeSummary& summary) {
  std::uint64_t elements = 1;
  for (const auto n : shape) elements *= static_cast<std::uint64_t>(n);
  summary.bytes_before += 4 * elements;
  summary.bytes_after += 4 * elements;
  ++summary.other;
}

inline void check_keep_used(const QuantizeOptions& options, const std::set<std::string>& used,
                            const char* names_as) {
  for (const auto& entry : options.keep) {
    check(used.count(entry) == 1, "quantize: keep \"", entry, "\" names no linear or "
          "patch-embedding weight of the model (names as in ", names_as, ")");
  }
  check(options.format != nn::WeightFormat::f32, "quantize: the format is int8 or bf16");
}

}  // namespace detail

// Quantizes tessera's own encoder in place (names as in its model.safetensors).
// Throws tessera::Error for a keep entry that names no quantizable weight (before changing
// anything) and for a layer already quantized in another format.
inline QuantizeSummary quantize_model(MultiModalEncoder<float>& model,
                                      const QuantizeOptions& options) {
  std::set<std::string> used;
  for_each_weight(model.config, [&](const WeightSpec& spec, auto&&) {
    for (const auto& entry : options.keep) {
      if (spec.quantizable && detail::names_tensor(entry, spec.name)) used.insert(entry);
    }
  });
  detail::check_keep_used(options, used, "model.safetensors");
  QuantizeSummary summary;
  used.clear();
  for_each_weight(model.config, [&](const WeightSpec& spec, auto get) {
    if constexpr (reaches_layer<decltype(get), MultiModalEncoder<float>>) {
      if (spec.quantizable) {
        const std::vector<nn::Linear<float>*> layers = {&get.layer(model)};
        detail::quantize_weight(spec.name, layers, options, used, summary);
        return;
      }
    }
    detail::count_fp32_tensor(spec.shape, summary);
  });
  return summary;
}

// Quantizes a tower model in place (names as in its tessera_towers model.safetensors, the
// form save_towers_model writes it in).
inline QuantizeSummary quantize_model(TowerModel<float>& model, const QuantizeOptions& options) {
  const CheckpointNames names =
      detail::towers_names(native_towers_config(model.config, "quantize_model"));
  std::set<std::string> used;
  for_each_model_weight(model, names, [&](const WeightSlot<float>& slot, const std::string&) {
    for (const auto& entry : options.keep) {
      if (!slot.layers.empty() && detail::names_tensor(entry, slot.name)) used.insert(entry);
    }
  });
  detail::check_keep_used(options, used, "a tessera_towers model.safetensors");
  QuantizeSummary summary;
  used.clear();
  for_each_model_weight(model, names, [&](const WeightSlot<float>& slot, const std::string&) {
    if (!slot.layers.empty()) {
      detail::quantize_weight(slot.name, slot.layers, options, used, summary);
      return;
    }
    detail::count_fp32_tensor(slot.shape, summary);
  });
  return summary;
}

}  // namespace tessera
