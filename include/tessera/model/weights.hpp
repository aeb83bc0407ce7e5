#pragma once
// The weight table of SPEC 4: every tensor of a model of a given config, in a fixed order, with
// its name, shape and role. It is the one source of truth for the encoder's parameters()
// (which binds each entry to the encoder's storage), for parameter_count (which load_model
// checks against a weights file before allocating anything) and for init_random (which fills
// each tensor by its role, never by its name).

#include <tessera/core/parameter.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/config.hpp>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tessera {

// One tensor of the table.
struct WeightSpec {
  std::string name;                      // the SPEC 4 name
  std::vector<std::int64_t> shape;       // SPEC 4 shape ({} for a scalar)
  std::vector<std::int64_t> conv_shape;  // the accepted convolution shape of a patch embed, or {}
  WeightRole role = WeightRole::normal;  // how init_random fills it
  std::uint64_t repeat = 1;              // > 1: one per layer (for_each_weight unexpanded)
  // A linear layer's or a patch embedding's weight, which a quantized model may hold as int8
  // or bfloat16 (docs/model-files.md "Quantized weights"); its getter also reaches the layer.
  bool quantizable = false;
};

// The getter of a quantizable weight: get(m) is the weight matrix (empty when the layer holds
// it quantized), get.layer(m) the nn::Linear that holds it.
template <class GetLayer>
struct LayerWeight {
  GetLayer get_layer;
  template <class Model>
  auto& operator()(Model& m) const { return get_layer(m).weight; }
  template <class Model>
  auto& layer(Model& m) const { return get_layer(m); }
};
template <class GetLayer>
LayerWeight(GetLayer) -> LayerWeight<GetLayer>;

// Whether a for_each_weight getter reaches a layer (LayerWeight).
template <class Get, class Model>
inline constexpr bool reaches_layer = requires(const Get& get, Model& m) { get.layer(m); };

// Calls visit(spec, get) for every weight of a model of config `c`, in SPEC 4 order: the
// front ends (text, image, audio, video, custom), modality_embed, cls_token, the layers one
// after another, final_norm, router, proj, logit_scale. get(model) returns a reference to the
// Eigen object (or the scalar) that holds the weight in a MultiModalEncoder of any Scalar.
// With expand_layers false, each per-layer tensor is visited once, as layer 0's, with
// spec.repeat = num_layers: parameter_count does no work per layer, so a config of 2^31
// layers costs nothing to refuse.
template <class Visit>
void for_each_weight(const Config& c, Visit&& visit, bool expand_layers = true) {
  using Shape = std::vector<std::int64_t>;
  const std::int64_t d = c.hidden_dim;
  const bool learned = c.position == PositionKind::learned;
  const bool layernorm = c.norm == NormKind::layernorm;
  auto spec = [](std::string name, Shape shape, WeightRole role, Shape conv = {},
                 std::uint64_t repeat = 1) {
    return WeightSpec{std::move(name), std::move(shape), std::move(conv), role, repeat};
  };
  // A norm (weight, and bias for layernorm), a linear layer (weight, bias when it has one),
  // an attention layer (q, k, v, out projections with biases); `get` reaches the module.
  auto norm = [&](const std::string& name, std::uint64_t repeat, auto get) {
    visit(spec(name + ".weight", {d}, WeightRole::one, {}, repeat),
          [get](auto& m) -> auto& { return get(m).weight; });
    if (layernorm) {
      visit(spec(name + ".bias", {d}, WeightRole::zero, {}, repeat),
            [get](auto& m) -> auto& { return get(m).bias; });
    }
  };
  // The router's weight stays fp32 (quantizable false): 4 + custom rows whose logits weigh
  // the modalities, too few bytes to matter.
  auto linear = [&](const std::string& name, std::int64_t out, std::int64_t in, bool bias,
                    std::uint64_t repeat, auto get, bool quantizable = true) {
    WeightSpec weight = spec(name + ".weight", {out, in}, WeightRole::normal, {}, repeat);
    weight.quantizable = quantizable;
    visit(std::move(weight), LayerWeight{[get](auto& m) -> auto& { return get(m); }});
    if (bias) {
      visit(spec(name + ".bias", {out}, WeightRole::zero, {}, repeat),
            [get](auto& m) -> auto& { return get(m).bias; });
    }
  };
  auto attention = [&](const std::string& name, std::uint64_t repeat, auto get) {
    linear(name + ".q_proj", d, d, true, repeat, [get](auto& m) -> auto& { return get(m).q_proj; });
    linear(name + ".k_proj", d, d, true, repeat, [get](auto& m) -> auto& { return get(m).k_proj; });
    linear(name + ".v_proj", d, d, true, repeat, [get](auto& m) -> auto& { return get(m).v_proj; });
    linear(name + ".out_proj", d, d, true, repeat,
           [get](auto& m) -> auto& { return get(m).out_proj; });
  };
  auto patch_embed = [&](const std::string& name, std::int64_t patch_dim, Shape conv, auto get) {
    WeightSpec weight = spec(name + ".patch_embed.weight", {d, patch_dim}, WeightRole::normal,
                             std::move(conv));
    weight.quantizable = true;
    visit(std::move(weight), LayerWeight{[get](auto& m) -> auto& { return get(m).proj; }});
    visit(spec(name + ".patch_embed.bias", {d}, WeightRole::zero),
          [get](auto& m) -> auto& { return get(m).proj.bias; });
  };
  auto positions = [&](const std::string& name, std::int64_t rows, auto get) {
    if (learned) visit(spec(name, {rows, d}, WeightRole::normal), get);
  };

  if (c.text) {
    visit(spec("text.token_embed.weight", {c.text->vocab_size, d}, WeightRole::normal),
          [](auto& m) -> auto& { return m.text_token_embed.weight; });
    positions("text.pos_embed.weight", c.text->max_tokens,
              [](auto& m) -> auto& { return m.text_pos_embed; });
  }
  if (c.image) {
    const auto& im = *c.image;
    patch_embed("image", im.patch_dim(), {d, im.channels, im.patch, im.patch},
                [](auto& m) -> auto& { return m.image_patch_embed; });
    positions("image.pos_embed.weight", im.num_patches(),
              [](auto& m) -> auto& { return m.image_pos_embed; });
  }
  if (c.audio) {
    const auto& au = *c.audio;
    patch_embed("audio", au.patch_dim(), {d, au.n_mels, au.patch_frames},
                [](auto& m) -> auto& { return m.audio_patch_embed; });
    positions("audio.pos_embed.weight", au.max_tokens,
              [](auto& m) -> auto& { return m.audio_pos_embed; });
  }
  if (c.video) {
    const auto& fr = c.frame_geometry();
    patch_embed("video", c.video_patch_dim(),
                {d, fr.channels, c.video->tubelet, fr.patch, fr.patch},
                [](auto& m) -> auto& { return m.video_patch_embed; });
    if (c.pooled_video()) {
      visit(spec("video.pool.queries", {c.video->pool_queries, d}, WeightRole::normal),
            [](auto& m) -> auto& { return m.video_pool.queries; });
      visit(spec("video.pool.pos_embed", {fr.num_patches(), d}, WeightRole::normal),
            [](auto& m) -> auto& { return m.video_pool.pos_embed; });
      norm("video.pool.norm_q", 1, [](auto& m) -> auto& { return m.video_pool.norm_q; });
      norm("video.pool.norm_kv", 1, [](auto& m) -> auto& { return m.video_pool.norm_kv; });
      attention("video.pool.attn", 1, [](auto& m) -> auto& { return m.video_pool.attn; });
    } else {
      positions("video.pos_embed.weight", c.video->max_tokens,
                [](auto& m) -> auto& { return m.video_pos_embed; });
    }
  }
  for (std::size_t k = 0; k < c.custom.size(); ++k) {
    const std::string& name = c.custom[k].name;
    WeightSpec weight = spec(name + ".patch_embed.weight", {d, c.custom[k].input_dim},
                             WeightRole::normal);
    weight.quantizable = true;
    visit(std::move(weight),
          LayerWeight{[k](auto& m) -> auto& { return m.custom_patch_embed[k].proj; }});
    visit(spec(name + ".patch_embed.bias", {d}, WeightRole::zero),
          [k](auto& m) -> auto& { return m.custom_patch_embed[k].proj.bias; });
    positions(name + ".pos_embed.weight", c.custom[k].max_tokens,
              [k](auto& m) -> auto& { return m.custom_pos_embed[k]; });
  }
  visit(spec("modality_embed.weight", {c.modality_count(), d}, WeightRole::normal),
        [](auto& m) -> auto& { return m.modality_embed; });
  if (c.pooling == PoolingKind::cls) {
    visit(spec("cls_token", {1, d}, WeightRole::normal),
          [](auto& m) -> auto& { return m.cls_token; });
  }
  const std::int64_t layers =
      expand_layers ? c.num_layers : std::min<std::int64_t>(c.num_layers, 1);
  const std::uint64_t repeat = expand_layers ? 1 : static_cast<std::uint64_t>(c.num_layers);
  for (std::int64_t i = 0; i < layers; ++i) {
    const std::string prefix = "layers." + std::to_string(i) + ".";
    const auto l = static_cast<std::size_t>(i);
    norm(prefix + "norm1", repeat, [l](auto& m) -> auto& { return m.layers[l].norm1; });
    norm(prefix + "norm2", repeat, [l](auto& m) -> auto& { return m.layers[l].norm2; });
    attention(prefix + "attn", repeat, [l](auto& m) -> auto& { return m.layers[l].attn; });
    const std::int64_t f = c.ffn_dim;
    if (c.activation == Activation::swiglu) {
      linear(prefix + "ffn.gate", f, d, false, repeat,
             [l](auto& m) -> auto& { return m.layers[l].ffn.gate; });
      linear(prefix + "ffn.up", f, d, false, repeat,
             [l](auto& m) -> auto& { return m.layers[l].ffn.up; });
      linear(prefix + "ffn.down", d, f, false, repeat,
             [l](auto& m) -> auto& { return m.layers[l].ffn.down; });
    } else {
      linear(prefix + "ffn.fc1", f, d, true, repeat,
             [l](auto& m) -> auto& { return m.layers[l].ffn.fc1; });
      linear(prefix + "ffn.fc2", d, f, true, repeat,
             [l](auto& m) -> auto& { return m.layers[l].ffn.fc2; });
    }
  }
  norm("final_norm", 1, [](auto& m) -> auto& { return m.final_norm; });
  if (c.pooling == PoolingKind::routed) {
    linear("router", c.modality_count(), d, true, 1, [](auto& m) -> auto& { return m.router; },
           /*quantizable=*/false);
  }
  linear("proj", c.embed_dim, d, false, 1, [](auto& m) -> auto& { return m.proj; });
  visit(spec("logit_scale", {}, WeightRole::logit_scale),
        [](auto& m) -> auto& { return m.logit_scale; });
}

// The number of weights of a model with this config (every SPEC 4 tensor's elements, and
// logit_scale), computed from the weight table without allocating any weight; saturates at
// 2^64 - 1. load_model checks it against the weights file before allocating the model.
inline std::uint64_t parameter_count(const Config& c) {
  // Saturating arithmetic: a config may hold any sizes up to 2^31 - 1 per key.
  constexpr std::uint64_t most = ~std::uint64_t{0};
  const auto add = [](std::uint64_t a, std::uint64_t b) { return a > most - b ? most : a + b; };
  const auto mul = [](std::uint64_t a, std::uint64_t b) {
    return a != 0 && b > most / a ? most : a * b;
  };
  std::uint64_t total = 0;
  for_each_weight(c, [&](const WeightSpec& spec, auto&&) {
    std::uint64_t elements = spec.repeat;
    for (const auto n : spec.shape) elements = mul(elements, static_cast<std::uint64_t>(n));
    total = add(total, elements);
  }, /*expand_layers=*/false);
  return total;
}

}  // namespace tessera
