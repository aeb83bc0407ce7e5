#pragma once
// Reading a tower's weights from a checkpoint under another library's tensor names.
//
// TensorReader wraps a safetensors file: every read names the tensor, checks its shape (a
// stored shape with extra leading 1s, as ImageBind keeps [1, 1, D] tokens, is the same
// tensor), its dtype (floating) and that every value is finite; finish() then refuses any
// tensor that was not read and is not a known buffer. TowerNames says where each of a tower's
// weights lives in one family's names; read_tower fills a Tower from them.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/io/safetensors.hpp>
#include <tessera/model/tower.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <vector>

namespace tessera {

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
    std::vector<std::int64_t> stored = info.shape;
    while (stored.size() > shape.size() && stored.front() == 1) stored.erase(stored.begin());
    check(stored == shape, where_, ": tensor '", name, "' has shape ",
          detail::shape_string(info.shape), ", expected ", detail::shape_string(shape),
          what_for());
    check(is_floating(info.dtype), where_, ": tensor '", name, "' has dtype ",
          dtype_name(info.dtype), ", expected F32, F16, BF16 or F64");
    const std::vector<Scalar> values = file_.read<Scalar>(name);
    for (std::size_t i = 0; i < values.size(); ++i) {
      check(std::isfinite(static_cast<double>(values[i])), where_, ": tensor '", name,
            "' holds a non-finite value (", values[i], ") at flat index ", i);
    }
    std::copy(values.begin(), values.end(), out);
    used_.insert(name);
  }

  template <class Scalar>
  void read(const std::string& name, MatrixRef<Scalar> out) {  // [rows, cols]
    Matrix<Scalar> m(out.rows(), out.cols());
    read(name, {out.rows(), out.cols()}, m.data());
    out = m;
  }
  // A matrix stored transposed (OpenAI's text_projection [D, E] for a weight [E, D]).
  template <class Scalar>
  void read_transposed(const std::string& name, MatrixRef<Scalar> out) {  // [rows, cols]
    Matrix<Scalar> m(out.cols(), out.rows());
    read(name, {out.cols(), out.rows()}, m.data());
    out = m.transpose();
  }
  template <class Scalar, int Rows, int Cols, int Options>
  void read_vector(const std::string& name, Eigen::Matrix<Scalar, Rows, Cols, Options>& out) {
    read(name, {static_cast<std::int64_t>(out.size())}, out.data());
  }

  // A tensor that is present in real files but is no weight (position_ids, a causal mask
  // buffer): accepted and not read.
  void ignore(const std::string& name) {
    if (file_.contains(name)) used_.insert(name);
  }

  // Says which tower a missing or misshapen tensor belongs to ("(the text tower)").
  void set_context(std::string what) { context_ = std::move(what); }

  // Throws tessera::Error, before anything is allocated, when the config describes more
  // weights than the file's tensors can hold (each weight takes 2 bytes at least: F16, BF16).
  void check_room(std::uint64_t weights, const std::string& config_file) const {
    std::uint64_t stored = 0;
    for (const auto& name : file_.names()) stored += file_.info(name).bytes.size();
    check(weights <= stored / 2, where_, ": ", config_file, " describes a model of ", weights,
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

  SafetensorsFile file_;
  std::string where_;
  std::string context_;
  std::set<std::string> used_;
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

// Fills `tower` (allocated for its config) from `reader` under `names`.
template <class Scalar>
void read_tower(TensorReader& reader, Tower<Scalar>& tower, const TowerNames& names) {
  const TowerConfig& c = tower.config;
  const Index d = c.width;
  const auto norm = [&](const std::string& prefix, nn::Norm<Scalar>& n) {
    reader.read_vector(prefix + ".weight", n.weight);
    reader.read_vector(prefix + ".bias", n.bias);
  };
  if (c.is_text()) {
    reader.read(names.token_embedding, MatrixRef<Scalar>(tower.token_embedding));
  } else {
    std::vector<std::int64_t> conv{d, c.channels};
    if (c.clip_frames > 1) conv.push_back(c.clip_frames);
    conv.push_back(c.kernel);
    conv.push_back(c.kernel);
    reader.read(names.patch_weight, conv, tower.patch.weight.data());
    if (c.conv_bias) reader.read_vector(names.patch_bias, tower.patch.bias);
    if (c.stem_norm) norm(names.stem_norm, tower.stem_norm);
    if (c.cls_token) reader.read_vector(names.class_embedding, tower.class_embedding);
  }
  reader.read(names.positional_embedding, MatrixRef<Scalar>(tower.positional_embedding));
  if (c.pre_norm) norm(names.ln_pre, tower.ln_pre);
  for (Index l = 0; l < c.layers; ++l) {
    auto& block = tower.blocks[static_cast<std::size_t>(l)];
    const std::string p = names.block_prefix(l);
    norm(p + names.norm1, block.norm1);
    norm(p + names.norm2, block.norm2);
    auto& attn = block.attn;
    const std::string a = p + names.attn;
    if (names.packed_qkv) {
      Matrix<Scalar> w(3 * d, d);
      Vector<Scalar> b(3 * d);
      reader.read(a + ".in_proj_weight", MatrixRef<Scalar>(w));
      reader.read_vector(a + ".in_proj_bias", b);
      attn.q_proj.weight = w.topRows(d);
      attn.k_proj.weight = w.middleRows(d, d);
      attn.v_proj.weight = w.bottomRows(d);
      attn.q_proj.bias = b.head(d);
      attn.k_proj.bias = b.segment(d, d);
      attn.v_proj.bias = b.tail(d);
    } else {
      for (auto [part, linear] : {std::pair{"q_proj", &attn.q_proj}, std::pair{"k_proj", &attn.k_proj},
                                  std::pair{"v_proj", &attn.v_proj}}) {
        reader.read(a + "." + part + ".weight", MatrixRef<Scalar>(linear->weight));
        reader.read_vector(a + "." + part + ".bias", linear->bias);
      }
    }
    reader.read(a + ".out_proj.weight", MatrixRef<Scalar>(attn.out_proj.weight));
    reader.read_vector(a + ".out_proj.bias", attn.out_proj.bias);
    if (c.bias_kv) {
      reader.read_vector(a + ".bias_k", attn.bias_k);
      reader.read_vector(a + ".bias_v", attn.bias_v);
    }
    reader.read(p + names.fc1 + ".weight", MatrixRef<Scalar>(block.ffn.fc1.weight));
    reader.read_vector(p + names.fc1 + ".bias", block.ffn.fc1.bias);
    reader.read(p + names.fc2 + ".weight", MatrixRef<Scalar>(block.ffn.fc2.weight));
    reader.read_vector(p + names.fc2 + ".bias", block.ffn.fc2.bias);
  }
  norm(names.ln_post, tower.ln_post);
  if (names.proj_transposed) {
    reader.read_transposed(names.proj, MatrixRef<Scalar>(tower.proj.weight));
  } else {
    reader.read(names.proj, MatrixRef<Scalar>(tower.proj.weight));
  }
  if (c.proj_bias) reader.read_vector(names.proj_bias, tower.proj.bias);
}

}  // namespace tessera
