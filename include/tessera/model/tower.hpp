#pragma once
// Tower: one modality's own transformer, as CLIP, open_clip and ImageBind build them (their
// text, vision and audio encoders). docs/model-files.md "Towers" is the specification.
//
//   tokens  = stem(input)                   text: token_embedding[ids]
//                                           patches: conv (kernel k, stride s; a time kernel of
//                                           clip_frames for video clips) (+ bias), stem norm
//   x       = [class_embedding] + tokens    (cls_token)
//   x       = x + positional_embedding[0 : L]
//   x       = ln_pre(x)                     (pre_norm)
//   for each block:  h = x + Attn(ln_1(x)),  x = h + MLP(ln_2(h))   (causal text; bias_kv)
//   hidden  = x                             (Encoding::hidden: the last block's output)
//   p       = ln_post(x[pool])              pool: 0 (cls), argmax of the ids (eot_argmax),
//                                           the first end token (eos_first)
//   e       = normalize(proj p (+ bias))
//
// A batch of clips (one input each: a text, an image, a video clip, an audio clip) is packed
// back to back without padding, each attending only to itself; causal text needs no padding
// mask, and its result equals a padded batch's.
//
// Training: forward with a TowerTrace (model/tower_trace.hpp) runs the same operations on the
// same buffers' values as the plain forward (its outputs are bitwise the same) and keeps what
// backward needs: for a tower trained whole, every block's input and nn::TransformerBlock::Saved,
// whose backward the blocks then use; for a tower whose projection alone trains, each clip's
// pooled ln_post output. parameters(prefix, training) names the trained weights the way the
// tessera_towers files do (model/pretrained.hpp), but q, k and v apart (attn.q_proj.weight, ...
// where the files pack attn.in_proj_weight).

#include <tessera/core/error.hpp>
#include <tessera/core/modality.hpp>
#include <tessera/core/parameter.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/tower_freezing.hpp>
#include <tessera/model/tower_trace.hpp>
#include <tessera/nn/activation.hpp>
#include <tessera/nn/attention.hpp>
#include <tessera/nn/block.hpp>
#include <tessera/nn/linear.hpp>
#include <tessera/nn/norm.hpp>
#include <tessera/nn/patch_embed.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace tessera {

// Which token a tower pools.
enum class TowerPooling {
  cls,         // the first token (CLIP's and ImageBind's vision and audio, SelectElement(0))
  eot_argmax,  // the token at the largest id (OpenAI CLIP, open_clip, ImageBind text)
  eos_first,   // the first token equal to eos_token_id (transformers' CLIP text)
};
inline constexpr TowerPooling tower_pooling_kinds[] = {TowerPooling::cls, TowerPooling::eot_argmax,
                                                       TowerPooling::eos_first};
inline const char* to_string(TowerPooling p) {
  switch (p) {
    case TowerPooling::cls: return "cls";
    case TowerPooling::eot_argmax: return "eot_argmax";
    case TowerPooling::eos_first: return "eos_first";
  }
  return "unknown";
}

// The sizes and kinds of one tower. `modality` is text (token ids), image (a clip of
// clip_frames frames [clip_frames, C, H, W], an image being one such clip) or audio (features
// [M, T] seen as a one-channel image [1, M, T]).
struct TowerConfig {
  Modality modality = Modality::image;
  Index width = 768;    // D
  Index layers = 12;
  Index heads = 12;     // H
  Index ffn_dim = 3072;  // F
  Index embed_dim = 512;  // E, the projection's output (the shared space)
  Activation activation = Activation::gelu;
  double norm_eps = 1e-5;    // every norm of the tower but the stem's
  bool pre_norm = false;     // ln_pre after the embeddings
  bool bias_kv = false;      // add_bias_kv in every block's attention
  bool causal = false;       // text that does not see later text
  bool proj_bias = false;
  TowerPooling pooling = TowerPooling::cls;
  std::int64_t eos_token_id = -1;  // eos_first

  // text
  Index vocab_size = 0;      // V
  Index context_length = 0;  // the most tokens, and the positional table's rows

  // patches (image, audio)
  Index channels = 3;     // C (audio: 1)
  Index height = 224;     // image size, or audio's mel bins M
  Index width_in = 224;   // image size, or audio's frames per clip T
  Index clip_frames = 1;  // the convolution's time kernel (and stride): video frames per clip
  Index kernel = 16;      // k (square)
  Index stride = 16;      // s (square); s < k: overlapping patches
  bool conv_bias = false;
  bool cls_token = true;
  bool stem_norm = false;      // a LayerNorm on the patch tokens, before the class token
  double stem_norm_eps = 1e-5;

  bool is_text() const { return modality == Modality::text; }
  Index grid_rows() const { return (height - kernel) / stride + 1; }
  Index grid_cols() const { return (width_in - kernel) / stride + 1; }
  Index patch_dim() const { return channels * clip_frames * kernel * kernel; }
  // The number of tokens of one clip (text: the most), and the positional table's rows.
  Index tokens() const {
    return is_text() ? context_length : grid_rows() * grid_cols() + (cls_token ? 1 : 0);
  }
  Index head_dim() const { return width / heads; }

  bool operator==(const TowerConfig&) const = default;
};

// Throws tessera::Error naming `where` and the key when a TowerConfig is inconsistent.
inline void validate(const TowerConfig& c, const std::string& where) {
  const auto positive = [&](Index v, const char* key) {
    check(v > 0 && v <= (Index{1} << 31), where, ": ", key, " must be a positive integer, got ", v);
  };
  positive(c.width, "width");
  positive(c.layers, "layers");
  positive(c.heads, "heads");
  positive(c.ffn_dim, "ffn_dim");
  positive(c.embed_dim, "embed_dim");
  check(c.width % c.heads == 0, where, ": width ", c.width, " is not divisible by heads ", c.heads);
  check(c.activation == Activation::gelu || c.activation == Activation::quick_gelu ||
            c.activation == Activation::gelu_tanh || c.activation == Activation::relu,
        where, ": activation ", to_string(c.activation), " is not a tower's (gelu, quick_gelu, "
        "gelu_tanh, relu)");
  check(std::isfinite(c.norm_eps) && c.norm_eps > 0 && std::isfinite(c.stem_norm_eps) &&
            c.stem_norm_eps > 0,
        where, ": norm eps must be positive and finite");
  if (c.is_text()) {
    positive(c.vocab_size, "vocab_size");
    positive(c.context_length, "context_length");
    check(c.pooling != TowerPooling::eos_first || (c.eos_token_id >= 0 && c.eos_token_id < c.vocab_size),
          where, ": eos_token_id ", c.eos_token_id, " is not an id below vocab_size ", c.vocab_size);
    return;
  }
  check(c.modality == Modality::image || c.modality == Modality::audio, where,
        ": a tower's modality is text, image or audio, got ", modality_name(c.modality));
  check(c.pooling == TowerPooling::cls && c.cls_token, where, ": an ", modality_name(c.modality),
        " tower pools its class token (pooling \"cls\" with a class token)");
  positive(c.channels, "channels");
  positive(c.height, c.modality == Modality::audio ? "n_mels" : "image_size");
  positive(c.width_in, c.modality == Modality::audio ? "target_frames" : "image_size");
  positive(c.clip_frames, "clip_frames");
  positive(c.kernel, "kernel");
  positive(c.stride, "stride");
  check(c.kernel <= c.height && c.kernel <= c.width_in, where, ": the patch kernel ", c.kernel,
        " is larger than the input (", c.height, " x ", c.width_in, ")");
  check(c.modality != Modality::image ||
            (c.stride == c.kernel && c.height % c.kernel == 0 && c.width_in % c.kernel == 0),
        where, ": an image tower's patches tile the image (image_size ", c.height,
        " a multiple of patch_size ", c.kernel, ")");
  check(c.modality != Modality::audio || (c.channels == 1 && c.clip_frames == 1), where,
        ": an audio tower reads one-channel features");
}

// The number of weights of a tower of config c (saturating at UINT64_MAX, so an absurd config
// cannot wrap around): what a loader compares with the file before allocating.
inline std::uint64_t parameter_count(const TowerConfig& c) {
  const auto mul = [](std::uint64_t a, std::uint64_t b) -> std::uint64_t {
    return b != 0 && a > UINT64_MAX / b ? UINT64_MAX : a * b;
  };
  const auto add = [](std::uint64_t a, std::uint64_t b) -> std::uint64_t {
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
  };
  const auto n = [](Index v) { return static_cast<std::uint64_t>(std::max<Index>(v, 0)); };
  const std::uint64_t d = n(c.width), f = n(c.ffn_dim);
  // per block: 2 norms, q/k/v/out with biases, bias_kv, the MLP
  std::uint64_t block = add(add(mul(4, d), mul(4, add(mul(d, d), d))), add(mul(2, mul(d, f)), add(f, d)));
  if (c.bias_kv) block = add(block, mul(2, d));
  std::uint64_t total = mul(block, n(c.layers));
  total = add(total, mul(n(c.tokens()), d));                            // positions
  total = add(total, c.is_text() ? mul(n(c.vocab_size), d)
                                 : mul(n(c.patch_dim()), d));            // stem
  total = add(total, add(mul(4, d), mul(n(c.embed_dim), add(d, 1))));  // norms, cls, projection
  return total;
}

// One clip of a tower's input.
template <class Scalar>
struct TowerClip {
  const std::vector<std::int64_t>* ids = nullptr;  // text: [n] token ids
  const Tensor4<Scalar>* frames = nullptr;          // image: [T, C, H, W]; frames first ..
  Index first_frame = 0;                            // .. first + clip_frames (the last repeated)
  const Tensor3<Scalar>* image = nullptr;           // image: one image [C, H, W] (repeated)
  const Matrix<Scalar>* features = nullptr;         // audio: [M, *]; columns first ..
  Index first_column = 0;                           // .. first + width_in
};

// The result for one clip.
template <class Scalar>
struct TowerOutput {
  Matrix<Scalar> hidden;     // [L, D] the last block's output
  Vector<Scalar> embedding;  // [E] unit norm
};

template <class Scalar>
struct Tower {
  TowerConfig config;
  Matrix<Scalar> token_embedding;       // [V, D] (text)
  nn::Linear<Scalar> patch;             // [D, C*clip_frames*k*k] (+ bias [D]) (image, audio)
  nn::Norm<Scalar> stem_norm;           // [D] (stem_norm)
  RowVector<Scalar> class_embedding;    // [D] (cls_token)
  Matrix<Scalar> positional_embedding;  // [tokens(), D]
  nn::Norm<Scalar> ln_pre;              // [D] (pre_norm)
  std::vector<nn::TransformerBlock<Scalar>> blocks;
  nn::Norm<Scalar> ln_post;             // [D]
  nn::Linear<Scalar> proj;              // [E, D] (+ bias [E])

  Tower() = default;
  // Allocates every weight of `c` (validated first) at zero, norms at weight 1; the linear
  // weights unset with WeightInit::unset, for a loader that writes them all.
  Tower(const TowerConfig& c, const std::string& where,
        nn::WeightInit init = nn::WeightInit::zeros)
      : config((validate(c, where), c)) {
    const Index d = config.width;
    const auto eps = static_cast<Scalar>(config.norm_eps);
    if (config.is_text()) {
      token_embedding = Matrix<Scalar>::Zero(config.vocab_size, d);
    } else {
      patch = nn::Linear<Scalar>(config.patch_dim(), d, config.conv_bias, init);
      if (config.stem_norm) {
        stem_norm = nn::Norm<Scalar>(NormKind::layernorm, d,
                                     static_cast<Scalar>(config.stem_norm_eps));
      }
      if (config.cls_token) class_embedding = RowVector<Scalar>::Zero(d);
    }
    positional_embedding = Matrix<Scalar>::Zero(config.tokens(), d);
    if (config.pre_norm) ln_pre = nn::Norm<Scalar>(NormKind::layernorm, d, eps);
    const nn::BlockOptions block{d, config.heads, config.ffn_dim, config.activation,
                                 NormKind::layernorm, config.norm_eps, init};
    blocks.reserve(static_cast<std::size_t>(config.layers));
    for (Index l = 0; l < config.layers; ++l) blocks.emplace_back(block);  // no copies
    if (config.bias_kv) {
      for (auto& b : blocks) {
        b.attn.bias_k = RowVector<Scalar>::Zero(d);
        b.attn.bias_v = RowVector<Scalar>::Zero(d);
      }
    }
    ln_post = nn::Norm<Scalar>(NormKind::layernorm, d, eps);
    proj = nn::Linear<Scalar>(d, config.embed_dim, config.proj_bias, init);
  }

  // Throws tessera::Error, naming `where`, when a clip does not fit this tower.
  void check_clip(const TowerClip<Scalar>& clip, const std::string& where) const {
    const TowerConfig& c = config;
    if (c.is_text()) {
      check(clip.ids != nullptr, where, ": the ", "text tower takes token ids");
      const auto n = static_cast<Index>(clip.ids->size());
      check(n >= 1, where, ": the text has no tokens");
      check(n <= c.context_length, where, ": the text has ", n, " tokens, more than the model's "
            "context length ", c.context_length);
      for (Index i = 0; i < n; ++i) {
        const std::int64_t id = (*clip.ids)[static_cast<std::size_t>(i)];
        check(id >= 0 && id < c.vocab_size, where, ": token ", i, " has id ", id,
              ", outside the vocabulary [0, ", c.vocab_size, ")");
      }
      check(c.pooling != TowerPooling::eos_first ||
                std::find(clip.ids->begin(), clip.ids->end(), c.eos_token_id) != clip.ids->end(),
            where, ": the text has no end token (id ", c.eos_token_id, "), which the model pools");
      return;
    }
    const char* kind = modality_name(c.modality);
    if (c.modality == Modality::audio) {
      check(clip.features != nullptr, where, ": the audio tower takes features [M, T]");
      check(clip.features->rows() == c.height, where, ": the audio features have ",
            clip.features->rows(), " mel bins, the model ", c.height);
      check(clip.first_column >= 0 && clip.first_column + c.width_in <= clip.features->cols(),
            where, ": the audio clip's frames ", clip.first_column, " to ",
            clip.first_column + c.width_in, " are not within the ", clip.features->cols(),
            " frames");
      check_finite(clip.features->middleCols(clip.first_column, c.width_in), where, "audio");
      return;
    }
    const auto expect = [&](Index channels, Index h, Index w) {
      check(channels == c.channels && h == c.height && w == c.width_in, where, ": the ", kind,
            " is [", channels, ", ", h, ", ", w, "], the model takes [", c.channels, ", ",
            c.height, ", ", c.width_in, "]");
    };
    if (clip.image != nullptr) {
      expect(clip.image->dimension(0), clip.image->dimension(1), clip.image->dimension(2));
      const auto& t = *clip.image;
      check_finite(ConstMatrixRef<Scalar>(Eigen::Map<const Matrix<Scalar>>(t.data(), 1, t.size())),
                   where, "image");
    } else {
      check(clip.frames != nullptr, where, ": the image tower takes an image or video frames");
      const auto& v = *clip.frames;
      expect(v.dimension(1), v.dimension(2), v.dimension(3));
      check(clip.first_frame >= 0 && clip.first_frame < v.dimension(0), where,
            ": the clip's first frame ", clip.first_frame, " is not one of the ", v.dimension(0));
      check_finite(ConstMatrixRef<Scalar>(Eigen::Map<const Matrix<Scalar>>(v.data(), 1, v.size())),
                   where, "video");
    }
  }

  // The outputs of a batch of clips, each checked first (check_clip); clip i named
  // where(i) in errors.
  template <class Where>
  std::vector<TowerOutput<Scalar>> forward(const std::vector<TowerClip<Scalar>>& clips,
                                           Where&& where) const {
    return run(clips, where, nullptr);
  }

  // The training forward: forward that also fills `trace` (replaced) with what backward needs
  // when the tower trains `training` (frozen: the plain forward, trace left empty). The outputs
  // are bitwise those of forward.
  template <class Where>
  std::vector<TowerOutput<Scalar>> forward(const std::vector<TowerClip<Scalar>>& clips,
                                           Where&& where, TowerTraining training,
                                           TowerTrace<Scalar>& trace) const {
    trace = TowerTrace<Scalar>{};
    trace.training = training;
    return run(clips, where, training == TowerTraining::frozen ? nullptr : &trace);
  }

  // Backward of forward(clips, where, training, trace): given d_embeddings, the loss's gradient
  // with respect to each clip's unit embedding, adds the gradient of every trained weight to
  // grad's.
  //   e = u / |u|, u = proj p (+ b):  d_u = (d_e - e (e . d_e)) / |u|,  d_proj += d_u^T p,
  //   d_b += sum of d_u;  a projection-only tower stops here;
  //   d_p = d_u proj, into ln_post's backward at each clip's pooled row; the blocks' backward
  //   (nn::TransformerBlock::backward) last to first; then per clip ln_pre's, the positions'
  //   (d_pos[0 : L] += d_x), the class token's (row 0), the stem norm's and the patch
  //   projection's (d_W += d_tokens^T patches), or the token embedding's (row ids[j] += d_x[j]).
  // requires: grad has this tower's config, with the weights trace.training trains allocated
  //   (TowerGradients: projection, proj alone; whole, every weight); d_embeddings [N, E] for
  //   the trace's N clips (checked: tessera::Error).
  // ensures: grad's trained weights are accumulated into.
  void backward(Tower& grad,
                const ConstMatrixRef<Scalar>& d_embeddings,  // [N, E]
                const TowerTrace<Scalar>& trace) const {
    const Index n = trace.embeddings.rows(), d = config.width;
    check(trace.training != TowerTraining::frozen, "tower backward: the trace is of a frozen "
          "tower (no trace was kept)");
    check(d_embeddings.rows() == n && d_embeddings.cols() == config.embed_dim,
          "tower backward: d_embeddings is [", d_embeddings.rows(), ", ", d_embeddings.cols(),
          "], expected [", n, ", ", config.embed_dim, "] (one row per clip of the trace)");
    check(grad.config == config && grad.proj.weight.rows() == proj.out_features() &&
              grad.proj.weight.cols() == proj.in_features() &&
              grad.proj.bias.size() == proj.bias.size(),
          "tower backward: grad is not a gradient of this tower");
    const bool whole = trace.training == TowerTraining::whole;
    check(!whole || (grad.blocks.size() == blocks.size() &&
                     grad.positional_embedding.rows() == positional_embedding.rows()),
          "tower backward: the tower trains whole, but grad holds its projection alone");
    Matrix<Scalar> d_u(n, config.embed_dim);  // [N, E]
    for (Index i = 0; i < n; ++i) {
      const auto e = trace.embeddings.row(i);
      const auto d_e = d_embeddings.row(i);
      d_u.row(i) = (d_e - e * e.dot(d_e)) / trace.norms[i];
    }
    if (!whole) {
      proj.backward_weights(grad.proj, d_u, trace.pooled);
      return;
    }
    Matrix<Scalar> d_pooled(n, d);  // [N, D]
    proj.backward(d_pooled, grad.proj, d_u, trace.pooled);
    ln_post.backward(d_pooled, grad.ln_post, d_pooled, trace.post_input, trace.post);

    Matrix<Scalar> d_x = Matrix<Scalar>::Zero(trace.offsets.back(), d);  // [sum L, D]
    for (Index i = 0; i < n; ++i) {
      const auto& clip = trace.clips[static_cast<std::size_t>(i)];
      d_x.row(trace.offsets[static_cast<std::size_t>(i)] + clip.pooled_row) = d_pooled.row(i);
    }
    Matrix<Scalar> d_in(d_x.rows(), d);  // [sum L, D]
    for (std::size_t l = blocks.size(); l-- > 0;) {
      blocks[l].backward(d_in, grad.blocks[l], d_x, trace.layer_inputs[l], trace.segments,
                         nullptr, nullptr, trace.layers[l]);
      d_x.swap(d_in);
    }
    for (std::size_t i = 0; i < trace.clips.size(); ++i) {
      const Index first = trace.offsets[i], rows = trace.offsets[i + 1] - first;
      embed_backward(grad, d_x.middleRows(first, rows), trace.clips[i]);
    }
  }

  // The weights `training` trains (none when frozen; proj alone, or every weight), each named
  // `prefix` + its name in a tessera_towers file ("transformer.resblocks.0.ln_1.weight", ...;
  // q, k and v apart: "attn.q_proj.weight"), in one fixed order.
  std::vector<Parameter<Scalar>> parameters(const std::string& prefix, TowerTraining training) {
    std::vector<Parameter<Scalar>> out;
    collect_parameters<Scalar>(*this, prefix, training, out);
    return out;
  }
  std::vector<Parameter<const Scalar>> parameters(const std::string& prefix,
                                                  TowerTraining training) const {
    std::vector<Parameter<const Scalar>> out;
    collect_parameters<const Scalar>(*this, prefix, training, out);
    return out;
  }

  // Fills every weight with a seeded random initialization by its role (init_parameters:
  // normal(0, 0.02) for projections, embeddings, positions and the class token, norms' scales
  // 1, biases, norms' shifts and add_bias_kv's tokens 0): a new tower to train.
  void init_random(std::uint64_t seed) {
    const std::vector<Parameter<Scalar>> params = parameters("", TowerTraining::whole);
    init_parameters<Scalar>(params, seed);
  }

  // Appends the parameters(prefix, training) of `self` (a Tower, const or not) to out.
  template <class T, class Self>
  static void collect_parameters(Self& self, const std::string& prefix, TowerTraining training,
                                 std::vector<Parameter<T>>& out) {
    if (training == TowerTraining::frozen) return;
    const TowerConfig& c = self.config;
    const auto add = [&](const std::string& name, auto& storage, std::vector<std::int64_t> shape,
                         WeightRole role, std::vector<std::int64_t> conv_shape = {}) {
      std::int64_t expected = 1;
      for (const auto v : shape) expected *= v;
      check(storage.size() == expected, "tower parameters: '", prefix, name, "' holds ",
            storage.size(), " values, expected ", expected, " (a tower of another config?)");
      out.push_back(Parameter<T>{prefix + name, storage.data(), std::move(shape),
                                 std::move(conv_shape), role});
    };
    const auto norm = [&](const std::string& name, auto& n) {
      add(name + ".weight", n.weight, {c.width}, WeightRole::one);
      add(name + ".bias", n.bias, {c.width}, WeightRole::zero);
    };
    // A quantized layer has no fp32 weight to list: such a tower cannot train.
    const auto fp32 = [&](const std::string& name, auto& l) {
      check(!l.is_quantized(), "tower parameters: '", prefix, name, "' is quantized (",
            nn::to_string(l.format()), "); a quantized model has no fp32 parameters and cannot "
            "be trained");
    };
    const auto linear = [&](const std::string& name, auto& l, Index out_dim, Index in_dim) {
      fp32(name + ".weight", l);
      add(name + ".weight", l.weight, {out_dim, in_dim}, WeightRole::normal);
      if (l.has_bias()) add(name + ".bias", l.bias, {out_dim}, WeightRole::zero);
    };
    if (training == TowerTraining::whole) {
      const Index d = c.width;
      if (c.is_text()) {
        add("token_embedding.weight", self.token_embedding, {c.vocab_size, d}, WeightRole::normal);
      } else {
        std::vector<std::int64_t> conv{d, c.channels};
        if (c.clip_frames > 1) conv.push_back(c.clip_frames);
        conv.push_back(c.kernel);
        conv.push_back(c.kernel);
        fp32("conv1.weight", self.patch);
        add("conv1.weight", self.patch.weight, {d, c.patch_dim()}, WeightRole::normal, conv);
        if (c.conv_bias) add("conv1.bias", self.patch.bias, {d}, WeightRole::zero);
        if (c.stem_norm) norm("stem_norm", self.stem_norm);
        if (c.cls_token) add("class_embedding", self.class_embedding, {d}, WeightRole::normal);
      }
      add("positional_embedding", self.positional_embedding, {c.tokens(), d}, WeightRole::normal);
      if (c.pre_norm) norm("ln_pre", self.ln_pre);
      for (std::size_t l = 0; l < self.blocks.size(); ++l) {
        auto& block = self.blocks[l];
        const std::string p = "transformer.resblocks." + std::to_string(l) + ".";
        norm(p + "ln_1", block.norm1);
        linear(p + "attn.q_proj", block.attn.q_proj, d, d);
        linear(p + "attn.k_proj", block.attn.k_proj, d, d);
        linear(p + "attn.v_proj", block.attn.v_proj, d, d);
        if (c.bias_kv) {
          add(p + "attn.bias_k", block.attn.bias_k, {d}, WeightRole::zero);
          add(p + "attn.bias_v", block.attn.bias_v, {d}, WeightRole::zero);
        }
        linear(p + "attn.out_proj", block.attn.out_proj, d, d);
        norm(p + "ln_2", block.norm2);
        linear(p + "mlp.c_fc", block.ffn.fc1, c.ffn_dim, d);
        linear(p + "mlp.c_proj", block.ffn.fc2, d, c.ffn_dim);
      }
      norm("ln_post", self.ln_post);
    }
    linear("proj", self.proj, c.embed_dim, c.width);
  }

 private:
  // forward, filling `trace` when given (its training set, not frozen).
  template <class Where>
  std::vector<TowerOutput<Scalar>> run(const std::vector<TowerClip<Scalar>>& clips, Where&& where,
                                       TowerTrace<Scalar>* trace) const {
    for (std::size_t i = 0; i < clips.size(); ++i) check_clip(clips[i], where(i));
    const bool whole = trace != nullptr && trace->training == TowerTraining::whole;
    const auto n = static_cast<Index>(clips.size());
    std::vector<Index> offsets{0};
    for (const auto& clip : clips) offsets.push_back(offsets.back() + clip_tokens(clip));
    Matrix<Scalar> x(offsets.back(), config.width);  // [sum L_i, D]
    auto segments = nn::AttentionSegments::packed(offsets);
    if (whole) trace->clips.resize(clips.size());
    for (std::size_t i = 0; i < clips.size(); ++i) {
      embed(x.middleRows(offsets[i], offsets[i + 1] - offsets[i]), clips[i],
            whole ? &trace->clips[i] : nullptr);
      if (config.causal) {
        segments.set_causal(static_cast<Index>(i), offsets[i], offsets[i + 1]);
      }
    }
    if (whole) {
      trace->offsets = offsets;
      trace->segments = segments;
      trace->layer_inputs.resize(blocks.size());
      trace->layers.resize(blocks.size());
    }
    Workspace workspace;  // this call's own: concurrent callers share no buffer
    for (std::size_t l = 0; l < blocks.size(); ++l) {
      if (whole) trace->layer_inputs[l] = x;
      block_forward(x, blocks[l], segments, workspace, whole ? &trace->layers[l] : nullptr);
    }

    if (trace != nullptr) {
      trace->pooled.resize(n, config.width);
      trace->embeddings.resize(n, config.embed_dim);
      trace->norms.resize(n);
    }
    if (whole) {
      trace->post_input.resize(n, config.width);
      trace->post.mean.resize(n);
      trace->post.rstd.resize(n);
    }
    std::vector<TowerOutput<Scalar>> out(clips.size());
    for (std::size_t i = 0; i < clips.size(); ++i) {
      const Index rows = offsets[i + 1] - offsets[i];
      out[i].hidden = x.middleRows(offsets[i], rows);
      const Index pooled_row = pool_row(clips[i]);
      Matrix<Scalar> pooled(1, config.width);  // [1, D]
      typename nn::Norm<Scalar>::Saved post;
      ln_post.forward(pooled, out[i].hidden.row(pooled_row), whole ? &post : nullptr);
      Matrix<Scalar> e(1, config.embed_dim);  // [1, E]
      proj.forward(e, pooled);
      const Scalar norm = e.norm();
      check(std::isfinite(static_cast<double>(norm)) && norm > Scalar(0), where(i),
            ": the embedding has norm ", norm, " (non-finite or zero weights?)");
      out[i].embedding = (e / norm).transpose();
      if (trace != nullptr) {
        const auto row = static_cast<Index>(i);
        trace->pooled.row(row) = pooled;
        trace->embeddings.row(row) = out[i].embedding.transpose();
        trace->norms[row] = norm;
      }
      if (whole) {
        const auto row = static_cast<Index>(i);
        trace->post_input.row(row) = out[i].hidden.row(pooled_row);
        trace->post.mean[row] = post.mean[0];
        trace->post.rstd[row] = post.rstd[0];
        trace->clips[i].pooled_row = pooled_row;
      }
    }
    return out;
  }

  // The buffers the blocks of one forward call share (nn::TransformerBlock::Workspace says why).
  using Workspace = typename nn::TransformerBlock<Scalar>::Workspace;

  // One block on x in place, nn::TransformerBlock::forward's math
  //   h = x + Attn(Norm1(x)),   x = h + fc2(act(fc1(Norm2(h))))
  // with the buffers of `ws`, and the MLP's output added onto x by its own product (fc2's
  // bias and product accumulate into x: no separate residual pass). With `saved`, the same
  // operations write into its buffers instead and it keeps what nn::TransformerBlock::backward
  // reads (Norm1(x), the attention's values, h, Norm2(h), fc1's output before the activation).
  void block_forward(MatrixRef<Scalar> x,  // [L, D]
                     const nn::TransformerBlock<Scalar>& block,
                     const nn::AttentionSegments& segments, Workspace& ws,
                     typename nn::TransformerBlock<Scalar>::Saved* saved = nullptr) const {
    TESSERA_ASSERT(!block.ffn.gated());  // validate(TowerConfig) allows no swiglu
    const Index rows = x.rows(), d = x.cols();
    Matrix<Scalar>& normed1 = saved != nullptr ? saved->normed1 : ws.normed;    // [L, D]
    Matrix<Scalar>& attended = saved != nullptr ? saved->h : ws.h;              // [L, D]
    Matrix<Scalar>& normed2 = saved != nullptr ? saved->normed2 : ws.normed;    // [L, D]
    normed1.resize(rows, d);
    attended.resize(rows, d);
    Matrix<Scalar>& hidden = ws.ffn.act;  // [L, F]
    hidden.resize(rows, block.ffn.ffn_dim());
    block.norm1.forward(normed1, x, saved != nullptr ? &saved->norm1 : nullptr);
    block.attn.forward(attended, normed1, segments, nullptr, nullptr,
                       saved != nullptr ? &saved->attn : &ws.attention);
    nn::for_row_blocks(rows, [&](Index r0, Index n) {
      x.middleRows(r0, n) += attended.middleRows(r0, n);
    });
    if (saved != nullptr) saved->h = x;
    normed2.resize(rows, d);
    block.norm2.forward(normed2, x, saved != nullptr ? &saved->norm2 : nullptr);
    if (saved != nullptr) {
      saved->ffn.hidden.resize(rows, block.ffn.ffn_dim());
      block.ffn.fc1.forward(saved->ffn.hidden, normed2);
      hidden = saved->ffn.hidden;
    } else {
      block.ffn.fc1.forward(hidden, normed2);
    }
    nn::activate<Scalar>(block.ffn.activation, hidden);
    block.ffn.fc2.forward_accumulate(x, hidden);
  }

  static void check_finite(const ConstMatrixRef<Scalar>& values, const std::string& where,
                           const char* what) {
    if (values.allFinite()) return;  // vectorised; the loop below finds the value to name
    for (Index r = 0; r < values.rows(); ++r) {
      for (Index c = 0; c < values.cols(); ++c) {
        check(std::isfinite(static_cast<double>(values(r, c))), where, ": the ", what,
              " holds a non-finite value (", values(r, c), ")");
      }
    }
  }

  // The row pooled: 0, or the end token's.
  Index pool_row(const TowerClip<Scalar>& clip) const {
    if (config.pooling == TowerPooling::cls) return 0;
    const auto& ids = *clip.ids;
    const auto at = config.pooling == TowerPooling::eot_argmax
                        ? std::max_element(ids.begin(), ids.end())  // the first largest
                        : std::find(ids.begin(), ids.end(), config.eos_token_id);
    return static_cast<Index>(at - ids.begin());
  }

  // The number of tokens of a (checked) clip: its ids, or the patches and class token.
  Index clip_tokens(const TowerClip<Scalar>& clip) const {
    return config.is_text() ? static_cast<Index>(clip.ids->size()) : config.tokens();
  }

  // x = the clip's tokens after the embeddings, positions and ln_pre; `trace` (when given)
  // keeps the inputs of the weights (ids, patches) and of the norms.
  void embed(MatrixRef<Scalar> x,  // [clip_tokens(clip), D]
             const TowerClip<Scalar>& clip,
             typename TowerTrace<Scalar>::Clip* trace = nullptr) const {
    TESSERA_ASSERT(x.rows() == clip_tokens(clip) && x.cols() == config.width);
    if (config.is_text()) {
      for (Index i = 0; i < x.rows(); ++i) {
        x.row(i) = token_embedding.row((*clip.ids)[static_cast<std::size_t>(i)]);
      }
      if (trace != nullptr) trace->ids = *clip.ids;
    } else {
      Matrix<Scalar> patches = patchify(clip);     // [G, patch_dim]
      auto tokens = x.bottomRows(patches.rows());  // [G, D]
      patch.forward(tokens, patches, nn::QuantizedInputs::with_residual);  // as nn::PatchEmbed's
      if (config.stem_norm) {
        if (trace != nullptr) trace->stem_input = tokens;
        stem_norm.forward(tokens, tokens, trace != nullptr ? &trace->stem : nullptr);
      }
      if (config.cls_token) x.row(0) = class_embedding;
      if (trace != nullptr) trace->patches = std::move(patches);
    }
    x += positional_embedding.topRows(x.rows());
    if (config.pre_norm) {
      if (trace != nullptr) trace->pre_input = x;
      ln_pre.forward(x, x, trace != nullptr ? &trace->pre : nullptr);
    }
  }

  // Backward of embed(x, clip, &trace) into grad's weights, given d_x, the gradient at its
  // output (overwritten: it is the clip's slice of backward's buffer).
  void embed_backward(Tower& grad,
                      MatrixRef<Scalar> d_x,  // [clip_tokens(clip), D]
                      const typename TowerTrace<Scalar>::Clip& trace) const {
    if (config.pre_norm) ln_pre.backward(d_x, grad.ln_pre, d_x, trace.pre_input, trace.pre);
    grad.positional_embedding.topRows(d_x.rows()) += d_x;
    if (config.is_text()) {
      for (Index i = 0; i < d_x.rows(); ++i) {
        grad.token_embedding.row(trace.ids[static_cast<std::size_t>(i)]) += d_x.row(i);
      }
      return;
    }
    if (config.cls_token) grad.class_embedding += d_x.row(0);
    auto d_tokens = d_x.bottomRows(trace.patches.rows());  // [G, D]
    if (config.stem_norm) {
      stem_norm.backward(d_tokens, grad.stem_norm, d_tokens, trace.stem_input, trace.stem);
    }
    patch.backward_weights(grad.patch, d_tokens, trace.patches);
  }

  // The clip's patches [G, patch_dim], each flattened in the convolution weight's order
  // (c, dt, ky, kx), row-major over the grid: PyTorch's conv(...).flatten(2).transpose(1, 2).
  Matrix<Scalar> patchify(const TowerClip<Scalar>& clip) const {
    const TowerConfig& c = config;
    const Index rows = c.grid_rows(), cols = c.grid_cols(), k = c.kernel, s = c.stride;
    const Index kt = c.clip_frames;
    Matrix<Scalar> patches(rows * cols, c.patch_dim());
    for (Index r = 0; r < rows; ++r) {
      for (Index q = 0; q < cols; ++q) {
        Scalar* dst = patches.row(r * cols + q).data();
        for (Index ch = 0; ch < c.channels; ++ch) {
          for (Index dt = 0; dt < kt; ++dt) {
            for (Index ky = 0; ky < k; ++ky) {  // a patch row: k values side by side in the input
              dst = std::copy_n(input_row(clip, dt, ch, r * s + ky) + q * s, k, dst);
            }
          }
        }
      }
    }
    return patches;
  }

  // Row y of channel ch of the clip's frame dt: where its column 0 is (the columns follow it).
  const Scalar* input_row(const TowerClip<Scalar>& clip, Index dt, Index ch, Index y) const {
    if (clip.features != nullptr) return clip.features->row(y).data() + clip.first_column;
    if (clip.image != nullptr) {  // every frame the image
      const auto& t = *clip.image;
      return t.data() + (ch * t.dimension(1) + y) * t.dimension(2);
    }
    const auto& v = *clip.frames;
    const Index frame = std::min(clip.first_frame + dt, v.dimension(0) - 1);
    return v.data() + ((frame * v.dimension(1) + ch) * v.dimension(2) + y) * v.dimension(3);
  }
};

}  // namespace tessera
