#pragma once
// A tower's weights under another library's tensor names, one mapping for both directions.
//
// TowerNames says where each of a tower's weights lives in one family's names;
// for_each_tower_weight walks a tower under them and hands each tensor of the file to a
// visitor as a WeightSlot: the tensor's name, its stored shape, and the tower's values in the
// stored order (three pieces for a packed q/k/v in_proj, a transposed matrix for OpenAI's
// projection). Reading (read_tower, TensorReader::read) and writing (slot_values, used by
// model/pretrained_save.hpp) walk the same slots, so each family's names are written once.
//
// TensorReader wraps a safetensors file: every read names the tensor, checks its shape (a
// stored shape with extra leading 1s, as ImageBind keeps [1, 1, D] tokens, is the same
// tensor), its dtype (floating) and that every value is finite; finish() then refuses any
// tensor that was not read and is not a known buffer. A linear layer's slot may be stored
// quantized (I8 with a scale, or BF16 in a quantized model: model/quantized_weights.hpp),
// which the reader puts straight into the layers' int8 / bfloat16 forms.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/io/safetensors.hpp>
#include <tessera/model/quantized_weights.hpp>
#include <tessera/model/tower.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <set>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace tessera {

// One tensor of a checkpoint and the model's values it holds. Element is Scalar when the
// model is being filled, const Scalar when it is being written out.
template <class Element>
struct WeightSlot {
  std::string name;                        // the tensor's name in the file
  std::vector<std::int64_t> shape;         // as stored (a file may add leading 1s)
  std::vector<std::span<Element>> pieces;  // the values in stored row-major order, one piece
                                           // after the other (q, k, v of a packed in_proj)
  bool transposed = false;  // one piece, a row-major [shape[1], shape[0]] matrix stored transposed
  bool optional = false;    // may be absent from a file (the model then keeps its default)
  // The linear layers whose weight this is (one, or the q, k, v of a packed in_proj), which
  // may hold it quantized (pieces then empty); none for any other tensor.
  using Layer = std::conditional_t<std::is_const_v<Element>,
                                   const nn::Linear<std::remove_const_t<Element>>,
                                   nn::Linear<Element>>;
  std::vector<Layer*> layers{};

  // Whether the slot's layers hold their weight quantized.
  bool quantized() const { return !layers.empty() && layers.front()->is_quantized(); }

  std::size_t size() const {
    std::size_t n = 0;
    for (const auto& piece : pieces) n += piece.size();
    return n;
  }
};

// The slot's values in stored order: what a file holds for it.
template <class Element>
std::vector<std::remove_const_t<Element>> slot_values(const WeightSlot<Element>& slot) {
  using Scalar = std::remove_const_t<Element>;
  std::vector<Scalar> out;
  out.reserve(slot.size());
  if (slot.transposed) {
    TESSERA_ASSERT(slot.pieces.size() == 1 && slot.shape.size() == 2);
    // stored [r, c] = the model's [c, r] transposed
    const Eigen::Map<const Matrix<Scalar>> m(slot.pieces[0].data(), slot.shape[1], slot.shape[0]);
    const Matrix<Scalar> stored = m.transpose();
    out.assign(stored.data(), stored.data() + stored.size());
    return out;
  }
  for (const auto& piece : slot.pieces) out.insert(out.end(), piece.begin(), piece.end());
  return out;
}

// Puts `values` (stored order, slot.size() of them) into the slot's places in the model.
template <class Scalar>
void assign_slot(const WeightSlot<Scalar>& slot, std::span<const Scalar> values) {
  TESSERA_ASSERT(values.size() == slot.size());
  if (slot.transposed) {
    TESSERA_ASSERT(slot.pieces.size() == 1 && slot.shape.size() == 2);
    const Eigen::Map<const Matrix<Scalar>> stored(values.data(), slot.shape[0], slot.shape[1]);
    Eigen::Map<Matrix<Scalar>>(slot.pieces[0].data(), slot.shape[1], slot.shape[0]) =
        stored.transpose();
    return;
  }
  std::size_t at = 0;
  for (const auto& piece : slot.pieces) {
    std::copy_n(values.begin() + static_cast<std::ptrdiff_t>(at), piece.size(), piece.begin());
    at += piece.size();
  }
}

// A stored shape without the leading 1s it has beyond `rank` ([1, 1, D] for a [D] token).
inline std::vector<std::int64_t> drop_leading_ones(std::vector<std::int64_t> stored,
                                                   std::size_t rank) {
  while (stored.size() > rank && stored.front() == 1) stored.erase(stored.begin());
  return stored;
}

class TensorReader {
 public:
  explicit TensorReader(const std::filesystem::path& file)
      : file_(SafetensorsFile::open(file)), where_(file.string()) {}

  const SafetensorsFile& file() const { return file_; }
  const std::string& where() const { return where_; }
  bool contains(const std::string& name) const { return file_.contains(name); }

  // Tensor `name` into out[0 .. product(shape)), refusing another shape (leading 1s aside),
  // a non-floating dtype, a missing tensor and non-finite values, each naming the tensor.
  template <class Scalar>
  void read(const std::string& name, std::vector<std::int64_t> shape, Scalar* out) {
    check(file_.contains(name), where_, ": missing tensor '", name, "' of shape ",
          detail::shape_string(shape), what_for());
    const TensorInfo& info = file_.info(name);
    check(drop_leading_ones(info.shape, shape.size()) == shape, where_, ": tensor '", name,
          "' has shape ", detail::shape_string(info.shape), ", expected ",
          detail::shape_string(shape), what_for());
    check(is_floating(info.dtype), where_, ": tensor '", name, "' has dtype ",
          dtype_name(info.dtype), ", expected F32, F16, BF16 or F64");
    check(!stored_.quantized_model || info.dtype == DType::F32 || info.dtype == DType::F64,
          where_, ": tensor '", name, "' is ", dtype_name(info.dtype), ", but in a quantized "
          "model it must stay fp32: only linear and patch-embedding weights are quantized");
    const std::vector<Scalar> values = file_.read<Scalar>(name);
    for (std::size_t i = 0; i < values.size(); ++i) {
      check(std::isfinite(static_cast<double>(values[i])), where_, ": tensor '", name,
            "' holds a non-finite value (", values[i], ") at flat index ", i);
    }
    std::copy(values.begin(), values.end(), out);
    used_.insert(name);
  }

  // The slot's tensor into the model's places (an optional slot the file lacks: left as is).
  template <class Scalar>
  void read(const WeightSlot<Scalar>& slot) {
    if (slot.optional && !contains(slot.name)) return;
    if (!slot.layers.empty() && contains(slot.name) && stored_.is_quantized(file_.info(slot.name))) {
      read_quantized(slot);
      return;
    }
    std::vector<Scalar> values(slot.size());
    read(slot.name, slot.shape, values.data());
    assign_slot(slot, std::span<const Scalar>(values));
  }

  // A tensor that is present in real files but is no weight (position_ids, a causal mask
  // buffer): accepted and not read.
  void ignore(const std::string& name) {
    if (file_.contains(name)) used_.insert(name);
  }

  // Whether the model's config records "quantization" (BF16 weights then stay bfloat16, and
  // every other tensor must be fp32).
  void set_quantized_model(bool quantized) { stored_.quantized_model = quantized; }

  // Refuses, naming the tensor, a scale of no I8 tensor and an I8 tensor not in `quantizable`
  // (the names of the slots of linear layers).
  void check_quantized_names(const std::set<std::string>& quantizable) const {
    tessera::check_quantized_names(file_, where_, [&](const std::string& name) {
      return quantizable.count(name) == 1;
    });
  }

  // Says which tower a missing or misshapen tensor belongs to ("(the text tower)").
  void set_context(std::string what) { context_ = std::move(what); }

  // Throws tessera::Error, before anything is allocated, when the config describes more
  // weights than the file's tensors can hold (each weight takes 2 bytes at least: F16, BF16;
  // 1 in a file with I8 tensors).
  void check_room(std::uint64_t weights, const std::string& config_file) const {
    std::uint64_t stored = 0;
    for (const auto& name : file_.names()) stored += file_.info(name).bytes.size();
    check(weights <= stored / smallest_weight_bytes(file_), where_, ": ", config_file,
          " describes a model of ", weights,
          " weights, more than the file's ", stored, " bytes of tensors can hold");
  }

  // Throws tessera::Error naming the first tensor no read asked for.
  void finish() const {
    for (const auto& name : file_.names()) {
      check(used_.count(name) == 1, where_, ": unexpected tensor '", name,
            "' (not part of a model with this configuration)");
    }
  }

 private:
  std::string what_for() const { return context_.empty() ? "" : " (" + context_ + ")"; }

  // A quantized tensor into the slot's layers (read_quantized_weight), its shape checked.
  template <class Scalar>
  void read_quantized(const WeightSlot<Scalar>& slot) {
    const TensorInfo& info = file_.info(slot.name);
    check(drop_leading_ones(info.shape, slot.shape.size()) == slot.shape, where_, ": tensor '",
          slot.name, "' has shape ", detail::shape_string(info.shape), ", expected ",
          detail::shape_string(slot.shape), what_for());
    check(!slot.transposed, where_, ": tensor '", slot.name, "' is ", dtype_name(info.dtype),
          ", but this family stores it transposed, which cannot be quantized by rows");
    if constexpr (std::is_same_v<Scalar, float>) {
      read_quantized_weight(file_, where_, slot.name,
                            std::span<nn::Linear<float>* const>(slot.layers));
      used_.insert(slot.name);
      if (info.dtype == DType::I8) used_.insert(scale_name(slot.name));
    } else {
      fail(where_, ": tensor '", slot.name, "' is quantized (", dtype_name(info.dtype),
           "); a quantized model loads as float only");
    }
  }

  SafetensorsFile file_;
  std::string where_;
  std::string context_;
  std::set<std::string> used_;
  QuantizedFile stored_;
};

// Where one tower's weights live in a family's names. Block names are
// block_prefix(l) + the part ("ln_1.weight", ...).
struct TowerNames {
  std::string token_embedding;       // [V, D]
  std::string positional_embedding;  // [P, D]
  std::string class_embedding;       // [D]
  std::string patch_weight;          // the convolution's [D, C, (kt,) k, k]
  std::string patch_bias;            // [D] (conv_bias)
  std::string stem_norm;             // prefix of .weight/.bias (stem_norm)
  std::string ln_pre;                // prefix (pre_norm)
  std::string ln_post;               // prefix
  std::string proj;                  // the projection's weight
  std::string proj_bias;             // its bias (proj_bias)
  bool proj_transposed = false;      // stored [D, E] (OpenAI) rather than [E, D] (nn.Linear)
  std::function<std::string(Index)> block_prefix;
  // Block parts: norms, attention (packed in_proj [3D, D] or separate q/k/v), MLP.
  std::string norm1, norm2;          // "ln_1" | "layer_norm1" | "norm_1"
  bool packed_qkv = true;            // attn.in_proj_weight / in_proj_bias
  std::string attn;                  // "attn" | "self_attn"
  std::string fc1, fc2;              // "mlp.c_fc" | "mlp.fc1"
};

// Calls visit(const WeightSlot<Element>&) for every tensor a tower of its config has under
// `names`, in a fixed order (the embeddings, the blocks, ln_post, the projection). TowerT is
// Tower<Scalar> (slots of Scalar, to fill it) or const Tower<Scalar> (of const Scalar, to
// write it out).
template <class TowerT, class Visit>
void for_each_tower_weight(TowerT& tower, const TowerNames& names, Visit&& visit) {
  using Element = std::remove_pointer_t<decltype(tower.positional_embedding.data())>;
  using Slot = WeightSlot<Element>;
  const auto values = [](auto& m) {  // an Eigen object's values, row-major
    return std::span<Element>(m.data(), static_cast<std::size_t>(m.size()));
  };
  const auto matrix = [&](const std::string& name, auto& m) {  // [rows, cols]
    visit(Slot{name, {m.rows(), m.cols()}, {values(m)}});
  };
  const auto vector = [&](const std::string& name, auto& v) {  // [n]
    visit(Slot{name, {v.size()}, {values(v)}});
  };
  const auto norm = [&](const std::string& prefix, auto& n) {
    vector(prefix + ".weight", n.weight);
    vector(prefix + ".bias", n.bias);
  };
  // A linear layer's weight [out, in] (or in `shape`), which the layer may hold quantized.
  const auto linear = [&](const std::string& name, auto& layer,
                          std::vector<std::int64_t> shape = {}) {
    if (shape.empty()) shape = {layer.out_features(), layer.in_features()};
    Slot slot{name, std::move(shape), {values(layer.weight)}};
    slot.layers = {&layer};
    visit(slot);
  };
  const TowerConfig& c = tower.config;
  const Index d = c.width;
  if (c.is_text()) {
    matrix(names.token_embedding, tower.token_embedding);
  } else {
    std::vector<std::int64_t> conv{d, c.channels};  // the same values as patch.weight [D, C*kt*k*k]
    if (c.clip_frames > 1) conv.push_back(c.clip_frames);
    conv.push_back(c.kernel);
    conv.push_back(c.kernel);
    linear(names.patch_weight, tower.patch, conv);
    if (c.conv_bias) vector(names.patch_bias, tower.patch.bias);
    if (c.stem_norm) norm(names.stem_norm, tower.stem_norm);
    if (c.cls_token) vector(names.class_embedding, tower.class_embedding);
  }
  matrix(names.positional_embedding, tower.positional_embedding);
  if (c.pre_norm) norm(names.ln_pre, tower.ln_pre);
  for (Index l = 0; l < c.layers; ++l) {
    auto& block = tower.blocks[static_cast<std::size_t>(l)];
    const std::string p = names.block_prefix(l);
    norm(p + names.norm1, block.norm1);
    norm(p + names.norm2, block.norm2);
    auto& attn = block.attn;
    const std::string a = p + names.attn;
    if (names.packed_qkv) {
      // nn.MultiheadAttention's in_proj: q, k, v stacked, [3D, D] and [3D].
      Slot in_proj{a + ".in_proj_weight", {3 * d, d},
                   {values(attn.q_proj.weight), values(attn.k_proj.weight),
                    values(attn.v_proj.weight)}};
      in_proj.layers = {&attn.q_proj, &attn.k_proj, &attn.v_proj};
      visit(in_proj);
      visit(Slot{a + ".in_proj_bias", {3 * d},
                 {values(attn.q_proj.bias), values(attn.k_proj.bias), values(attn.v_proj.bias)}});
    } else {
      linear(a + ".q_proj.weight", attn.q_proj);
      vector(a + ".q_proj.bias", attn.q_proj.bias);
      linear(a + ".k_proj.weight", attn.k_proj);
      vector(a + ".k_proj.bias", attn.k_proj.bias);
      linear(a + ".v_proj.weight", attn.v_proj);
      vector(a + ".v_proj.bias", attn.v_proj.bias);
    }
    linear(a + ".out_proj.weight", attn.out_proj);
    vector(a + ".out_proj.bias", attn.out_proj.bias);
    if (c.bias_kv) {
      vector(a + ".bias_k", attn.bias_k);
      vector(a + ".bias_v", attn.bias_v);
    }
    linear(p + names.fc1 + ".weight", block.ffn.fc1);
    vector(p + names.fc1 + ".bias", block.ffn.fc1.bias);
    linear(p + names.fc2 + ".weight", block.ffn.fc2);
    vector(p + names.fc2 + ".bias", block.ffn.fc2.bias);
  }
  norm(names.ln_post, tower.ln_post);
  if (names.proj_transposed) {  // [D, E]: the layer's [E, D] weight transposed
    Slot slot{names.proj, {tower.proj.in_features(), tower.proj.out_features()},
              {values(tower.proj.weight)}};
    slot.transposed = true;
    slot.layers = {&tower.proj};
    visit(slot);
  } else {
    linear(names.proj, tower.proj);
  }
  if (c.proj_bias) vector(names.proj_bias, tower.proj.bias);
}

// Fills `tower` (allocated for its config) from `reader` under `names`.
template <class Scalar>
void read_tower(TensorReader& reader, Tower<Scalar>& tower, const TowerNames& names) {
  for_each_tower_weight(tower, names, [&](const WeightSlot<Scalar>& slot) { reader.read(slot); });
}

}  // namespace tessera
