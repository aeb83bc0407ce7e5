// The backward pass of every layer of include/tessera/nn against central finite differences
// in double (check_gradients, include/tessera/train/grad_check.hpp), in the manner of dlib's
// gradient checker: the loss is sum(out * R) for a fixed random R (so d_out = R); weight
// gradients are pre-filled with a constant and must come out as that constant plus the
// gradient (accumulated), input gradients are pre-filled with NaN and must come out as the
// gradient (assigned). Then the losses and the whole encoder, every weight of it, with every
// modality and each pooling, against differences and against PyTorch autograd
// (tests/reference/make_grad_fixtures.py: every weight's gradient, and ten AdamW steps).
// Also: the fused attention backward against the reference one, and backward bitwise the
// same for one and two threads.

#include <tessera/core/parallel.hpp>
#include <tessera/model/config.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/model_io.hpp>
#include <tessera/nn/activation.hpp>
#include <tessera/nn/attention.hpp>
#include <tessera/nn/attention_pool.hpp>
#include <tessera/nn/block.hpp>
#include <tessera/nn/embedding.hpp>
#include <tessera/nn/ffn.hpp>
#include <tessera/nn/linear.hpp>
#include <tessera/nn/norm.hpp>
#include <tessera/nn/patch_embed.hpp>
#include <tessera/nn/rope.hpp>
#include <tessera/train/grad_check.hpp>
#include <tessera/train/losses.hpp>
#include <tessera/train/optimizer.hpp>

#include "encoder_fixtures.hpp"
#include "test_util.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <limits>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace tessera {
namespace test_grad {

using M = Matrix<double>;
using V = Vector<double>;

constexpr double accumulated_start = 0.375;  // what weight gradients hold before backward

// A tensor whose gradient is checked: the values and the gradient buffer backward writes.
struct Checked {
  std::string name;
  double* values;
  double* gradient;
  Index size;
  bool accumulates;  // a weight gradient (accumulated) or an input gradient (assigned)
};

template <class Values, class Gradient>
Checked weight(const std::string& name, Values& values, Gradient& gradient) {
  EXPECT_EQ(values.size(), gradient.size()) << name;
  return {name, values.data(), gradient.data(), values.size(), true};
}
template <class Values, class Gradient>
Checked input(const std::string& name, Values& values, Gradient& gradient) {
  EXPECT_EQ(values.size(), gradient.size()) << name;
  return {name, values.data(), gradient.data(), values.size(), false};
}

// Before backward: weight gradients at accumulated_start, input gradients NaN.
void prefill(const std::vector<Checked>& tensors) {
  for (const auto& t : tensors) {
    std::fill(t.gradient, t.gradient + t.size,
              t.accumulates ? accumulated_start : std::numeric_limits<double>::quiet_NaN());
  }
}

// After backward: the accumulated start taken off, then every gradient against differences.
void expect_gradients(const std::function<double()>& loss, const std::vector<Checked>& tensors,
                      const GradCheckOptions& options = {}) {
  std::vector<GradCheckTensor> checked;
  for (const auto& t : tensors) {
    if (t.accumulates) {
      for (Index i = 0; i < t.size; ++i) t.gradient[i] -= accumulated_start;
    }
    checked.push_back({t.name, t.values, t.gradient, t.size});
  }
  const GradCheckReport report = check_gradients(loss, checked, options);
  EXPECT_TRUE(report.ok) << "worst: " << report.worst << " (ratio " << report.worst_ratio << ")";
  EXPECT_GT(report.checked, 0);
}

M random_matrix(Index rows, Index cols, unsigned seed, double scale = 1.0) {
  std::srand(seed);
  return M::Random(rows, cols) * scale;
}

// sum(out * r): the loss whose d_out is r.
double dot(const M& out, const M& r) { return out.cwiseProduct(r).sum(); }

// ---- The checker itself ------------------------------------------------------------------------

TEST(GradCheck, CatchesAWrongElementAndNaN) {
  M x = random_matrix(4, 5, 0);
  M gradient = 2 * x;  // of sum(x^2)
  auto loss = [&] { return x.squaredNorm(); };
  std::vector<GradCheckTensor> tensors{{"x", x.data(), gradient.data(), x.size()}};
  EXPECT_TRUE(check_gradients(loss, tensors).ok);
  const M before = x;
  gradient(2, 3) += 1e-3;
  GradCheckReport report = check_gradients(loss, tensors);
  EXPECT_FALSE(report.ok);
  EXPECT_THAT(report.worst, ::testing::StartsWith("x[13]: analytic"));
  EXPECT_TRUE(x == before) << "the values are restored";
  gradient(2, 3) = std::numeric_limits<double>::quiet_NaN();
  EXPECT_FALSE(check_gradients(loss, tensors).ok);
  EXPECT_EQ(check_gradients(loss, tensors).checked, 20);
}

// ---- Linear, Embedding, PatchEmbed ------------------------------------------------------------

TEST(Gradients, Linear) {
  for (const bool bias : {true, false}) {
    SCOPED_TRACE(bias ? "bias" : "no bias");
    nn::Linear<double> layer(7, 5, bias);
    layer.weight = random_matrix(5, 7, 1);
    if (bias) layer.bias = random_matrix(5, 1, 2);
    M x = random_matrix(6, 7, 3);
    const M r = random_matrix(6, 5, 4);
    nn::Linear<double> grad(7, 5, bias);
    M d_x(6, 7);
    std::vector<Checked> tensors{weight("weight", layer.weight, grad.weight), input("x", x, d_x)};
    if (bias) tensors.push_back(weight("bias", layer.bias, grad.bias));
    prefill(tensors);
    layer.backward(d_x, grad, r, x);
    expect_gradients([&] { return dot(layer.forward(x), r); }, tensors);
  }
}

TEST(Gradients, LinearOnProductTilesAccumulatesOverCalls) {
  // Shapes past one product tile (detail::matmul_tile_max) in every direction; two backward
  // calls (two micro-batches) add up to the gradient of the summed losses.
  const Index rows = 530, in = 520, out = 515;
  nn::Linear<double> layer(in, out, true);
  layer.weight = random_matrix(out, in, 5, 0.05);
  layer.bias = random_matrix(out, 1, 6);
  M x1 = random_matrix(rows, in, 7), x2 = random_matrix(rows, in, 8);
  const M r1 = random_matrix(rows, out, 9), r2 = random_matrix(rows, out, 10);
  nn::Linear<double> grad(in, out, true);
  M d_x1(rows, in), d_x2(rows, in);
  std::vector<Checked> tensors{weight("weight", layer.weight, grad.weight),
                               weight("bias", layer.bias, grad.bias), input("x1", x1, d_x1),
                               input("x2", x2, d_x2)};
  prefill(tensors);
  layer.backward(d_x1, grad, r1, x1);
  layer.backward(d_x2, grad, r2, x2);
  GradCheckOptions few;  // each difference costs two [530, 520] x [520, 515] products
  few.max_elements = 6;
  expect_gradients([&] { return dot(layer.forward(x1), r1) + dot(layer.forward(x2), r2); },
                   tensors, few);
}

TEST(Gradients, EmbeddingAddsTheRowsOfRepeatedIds) {
  nn::Embedding<double> layer(9, 4);
  layer.weight = random_matrix(9, 4, 11);
  const std::vector<std::int64_t> ids = {3, 0, 8, 3, 3, 5};
  const M r = random_matrix(6, 4, 12);
  nn::Embedding<double> grad(9, 4);
  std::vector<Checked> tensors{weight("weight", layer.weight, grad.weight)};
  prefill(tensors);
  layer.backward(grad, r, ids);
  expect_gradients([&] {
    M out(6, 4);
    layer.forward(out, ids);
    return dot(out, r);
  }, tensors);
}

TEST(Gradients, PatchEmbed) {
  nn::PatchEmbed<double> layer(12, 5);
  layer.proj.weight = random_matrix(5, 12, 13);
  layer.proj.bias = random_matrix(5, 1, 14);
  const M patches = random_matrix(7, 12, 15);
  const M r = random_matrix(7, 5, 16);
  nn::PatchEmbed<double> grad(12, 5);
  std::vector<Checked> tensors{weight("proj.weight", layer.proj.weight, grad.proj.weight),
                               weight("proj.bias", layer.proj.bias, grad.proj.bias)};
  prefill(tensors);
  layer.backward(grad, r, patches);
  expect_gradients([&] {
    M out(7, 5);
    layer.forward(out, patches);
    return dot(out, r);
  }, tensors);
}

// ---- Norms and activations --------------------------------------------------------------------

TEST(Gradients, Norms) {
  for (const NormKind kind : {NormKind::layernorm, NormKind::rmsnorm}) {
    SCOPED_TRACE(kind == NormKind::layernorm ? "layernorm" : "rmsnorm");
    nn::Norm<double> layer(kind, 8, 1e-5);
    layer.weight = random_matrix(8, 1, 17) + V::Ones(8);
    if (kind == NormKind::layernorm) layer.bias = random_matrix(8, 1, 18);
    M x = random_matrix(300, 8, 19, 2.0);  // > 256 rows: the parallel row loop
    const M r = random_matrix(300, 8, 20);
    nn::Norm<double> grad(kind, 8, 1e-5);
    M d_x(300, 8);
    std::vector<Checked> tensors{weight("weight", layer.weight, grad.weight), input("x", x, d_x)};
    if (kind == NormKind::layernorm) tensors.push_back(weight("bias", layer.bias, grad.bias));
    prefill(tensors);
    typename nn::Norm<double>::Saved saved;
    M out(300, 8);
    layer.forward(out, x, &saved);
    layer.backward(d_x, grad, r, x, saved);
    expect_gradients([&] { return dot(layer.forward(x), r); }, tensors);
  }
}

TEST(Gradients, NormBackwardMayOverwriteItsOutputGradient) {
  nn::Norm<double> layer(NormKind::layernorm, 8, 1e-5);
  layer.weight = random_matrix(8, 1, 21);
  layer.bias = random_matrix(8, 1, 22);
  const M x = random_matrix(5, 8, 23);
  typename nn::Norm<double>::Saved saved;
  M out(5, 8);
  layer.forward(out, x, &saved);
  nn::Norm<double> grad_apart(NormKind::layernorm, 8, 1e-5), grad_alias = grad_apart;
  M d = random_matrix(5, 8, 24), d_x(5, 8);
  layer.backward(d_x, grad_apart, d, x, saved);
  layer.backward(d, grad_alias, d, x, saved);
  EXPECT_TRUE(d == d_x);
  EXPECT_TRUE(grad_apart.weight == grad_alias.weight && grad_apart.bias == grad_alias.bias);
}

TEST(Gradients, Activations) {
  for (const Activation activation : {Activation::gelu, Activation::gelu_tanh,
                                      Activation::quick_gelu, Activation::relu,
                                      Activation::swiglu}) {
    SCOPED_TRACE(static_cast<int>(activation));
    M x = random_matrix(70, 9, 25, 3.0);  // >= 64 rows: the parallel blocks
    const M r = random_matrix(70, 9, 26);
    M d_x = r;
    nn::activate_backward<double>(activation, d_x, x);
    std::vector<Checked> tensors{{"x", x.data(), d_x.data(), x.size(), false}};
    expect_gradients([&] {
      M out = x;
      nn::activate<double>(activation, out);
      return dot(out, r);
    }, tensors);
  }
}

// ---- FFN, RoPE ----------------------------------------------------------------------------

TEST(Gradients, FeedForwardEveryActivation) {
  for (const Activation activation : {Activation::gelu, Activation::gelu_tanh,
                                      Activation::quick_gelu, Activation::relu,
                                      Activation::swiglu}) {
    SCOPED_TRACE(static_cast<int>(activation));
    nn::FeedForward<double> layer(activation, 6, 10);
    nn::FeedForward<double> grad(activation, 6, 10);
    std::vector<Checked> tensors;
    unsigned seed = 30;
    for (auto [name, w, g] : {std::tuple{"fc1", &layer.fc1, &grad.fc1}, {"fc2", &layer.fc2, &grad.fc2},
                              {"gate", &layer.gate, &grad.gate}, {"up", &layer.up, &grad.up},
                              {"down", &layer.down, &grad.down}}) {
      if (w->weight.size() == 0) continue;
      w->weight = random_matrix(w->weight.rows(), w->weight.cols(), seed++, 0.5);
      tensors.push_back(weight(std::string(name) + ".weight", w->weight, g->weight));
      if (w->has_bias()) {
        w->bias = random_matrix(w->bias.size(), 1, seed++);
        tensors.push_back(weight(std::string(name) + ".bias", w->bias, g->bias));
      }
    }
    M x = random_matrix(5, 6, 40);
    const M r = random_matrix(5, 6, 41);
    M d_x(5, 6);
    tensors.push_back(input("x", x, d_x));
    prefill(tensors);
    typename nn::FeedForward<double>::Saved saved;
    M out(5, 6);
    layer.forward(out, x, &saved);
    layer.backward(d_x, grad, r, x, saved);
    expect_gradients([&] {
      M y(5, 6);
      layer.forward(y, x);
      return dot(y, r);
    }, tensors);
  }
}

Positions positions_of(Index rows) {
  Positions p(rows, 3);
  for (Index i = 0; i < rows; ++i) p.row(i) << 2 + i, (3 * i) % 5, (7 * i) % 4;
  return p;
}

TEST(Gradients, Rope) {
  const nn::Rope<double> rope(8, 10000.0, {2, 1, 1});
  M x = random_matrix(6, 16, 42);  // two heads
  const M r = random_matrix(6, 16, 43);
  const Positions positions = positions_of(6);
  M d_x = r;
  rope.backward(d_x, positions);
  std::vector<Checked> tensors{{"x", x.data(), d_x.data(), x.size(), false}};
  expect_gradients([&] {
    M out = x;
    rope.forward(out, positions);
    return dot(out, r);
  }, tensors);
}

// ---- Attention ----------------------------------------------------------------------------

struct AttentionCase {
  std::string name;
  Index heads, dh;
  nn::AttentionSegments segments;
};

std::vector<AttentionCase> attention_cases() {
  using nn::AttentionSegments;
  auto causal = AttentionSegments::packed({0, 5, 12, 20});
  causal.set_causal(0, 0, 5);
  causal.set_causal(2, 14, 20);
  return {
      {"one segment", 2, 4, AttentionSegments::full(7)},
      {"packed, causal parts", 2, 4, causal},
      {"cross", 2, 4, AttentionSegments{{0, 3, 5}, {0, 6, 13}, {0, 0}, {0, 0}, {}}},
      {"after a cache", 1, 4, AttentionSegments{{0, 4}, {0, 9}, {3}, {9}, {5}}},
  };
}

TEST(Gradients, AttentionKernels) {
  for (const bool fused : {false, true}) {
    for (const AttentionCase& c : attention_cases()) {
      SCOPED_TRACE(c.name + (fused ? ", fused" : ", reference"));
      const Index width = c.heads * c.dh;
      const Index lq = c.segments.query_offsets.back(), lk = c.segments.key_offsets.back();
      M q = random_matrix(lq, width, 44, 1.5), k = random_matrix(lk, width, 45, 1.5);
      M v = random_matrix(lk, width, 46);
      const M r = random_matrix(lq, width, 47);
      auto forward = [&](M* logsumexp) {
        M ctx = M::Zero(lq, width);
        if (fused) {
          nn::attention_fused<double>(ctx, q, k, v, c.heads, c.segments, logsumexp);
        } else {
          nn::attention_reference<double>(ctx, q, k, v, c.heads, c.segments);
        }
        return ctx;
      };
      M logsumexp(lq, c.heads);
      const M ctx = forward(&logsumexp);
      M d_q(lq, width), d_k(lk, width), d_v(lk, width);
      std::vector<Checked> tensors{input("q", q, d_q), input("k", k, d_k), input("v", v, d_v)};
      prefill(tensors);
      if (fused) {
        nn::attention_fused_backward<double>(d_q, d_k, d_v, r, q, k, v, ctx, logsumexp, c.heads,
                                             c.segments);
      } else {
        nn::attention_reference_backward<double>(d_q, d_k, d_v, r, q, k, v, c.heads, c.segments);
      }
      expect_gradients([&] { return dot(forward(nullptr), r); }, tensors);
    }
  }
}

// The fused backward on shapes that cross its tiles equals the reference backward.
TEST(Gradients, FusedAttentionBackwardEqualsTheReferenceOnTiledShapes) {
  using nn::AttentionSegments;
  const Index tile = nn::attention_key_tile, rows = nn::attention_query_tile;
  auto causal = AttentionSegments::full(2 * tile + 37);
  causal.set_causal(0, 5, tile + rows + 3);
  auto packed = AttentionSegments::packed({0, 5, 300, 301, 650, 650, 720});
  packed.set_causal(1, 5 + rows - 3, 290);
  const std::vector<AttentionCase> cases{
      {"causal over key tiles", 2, 16, causal},
      {"packed", 2, 8, packed},
      {"cross: few queries", 2, 8, AttentionSegments{{0, 4, 8}, {0, 600, 900}, {0, 0}, {0, 0}, {}}},
      {"a segment without queries", 2, 8, AttentionSegments{{0, 0, 70}, {0, 40, 80}, {0, 0}, {0, 0}, {}}},
  };
  for (const AttentionCase& c : cases) {
    SCOPED_TRACE(c.name);
    const Index width = c.heads * c.dh;
    const Index lq = c.segments.query_offsets.back(), lk = c.segments.key_offsets.back();
    const M q = random_matrix(lq, width, 48, 2.0), k = random_matrix(lk, width, 49, 2.0);
    const M v = random_matrix(lk, width, 50), d_ctx = random_matrix(lq, width, 51);
    M ctx = M::Zero(lq, width), logsumexp(lq, c.heads);
    nn::attention_fused<double>(ctx, q, k, v, c.heads, c.segments, &logsumexp);
    M fq(lq, width), fk(lk, width), fv(lk, width), rq(lq, width), rk(lk, width), rv(lk, width);
    nn::attention_fused_backward<double>(fq, fk, fv, d_ctx, q, k, v, ctx, logsumexp, c.heads,
                                         c.segments);
    nn::attention_reference_backward<double>(rq, rk, rv, d_ctx, q, k, v, c.heads, c.segments);
    EXPECT_TRUE(test::all_close(fq, rq, 1e-12, 0));
    EXPECT_TRUE(test::all_close(fk, rk, 1e-12, 0));
    EXPECT_TRUE(test::all_close(fv, rv, 1e-12, 0));

    M one_q(lq, width), one_k(lk, width), one_v(lk, width);
    {
      ScopedThreads threads(1);
      nn::attention_fused_backward<double>(one_q, one_k, one_v, d_ctx, q, k, v, ctx, logsumexp,
                                           c.heads, c.segments);
    }
    M two_q(lq, width), two_k(lk, width), two_v(lk, width);
    {
      ScopedThreads threads(2);
      nn::attention_fused_backward<double>(two_q, two_k, two_v, d_ctx, q, k, v, ctx, logsumexp,
                                           c.heads, c.segments);
    }
    EXPECT_TRUE(one_q == two_q && one_k == two_k && one_v == two_v) << "1 vs 2 threads";
  }
}

// Every weight of a multi-head attention layer, and the gradient buffers of its twin.
std::vector<Checked> attention_weights(const std::string& prefix, nn::MultiHeadAttention<double>& a,
                                       nn::MultiHeadAttention<double>& g, unsigned seed) {
  std::vector<Checked> tensors;
  for (auto [name, w, gw] : {std::tuple{"q_proj", &a.q_proj, &g.q_proj}, {"k_proj", &a.k_proj, &g.k_proj},
                             {"v_proj", &a.v_proj, &g.v_proj}, {"out_proj", &a.out_proj, &g.out_proj}}) {
    w->weight = random_matrix(w->weight.rows(), w->weight.cols(), seed++, 0.6);
    w->bias = random_matrix(w->bias.size(), 1, seed++, 0.3);
    tensors.push_back(weight(prefix + name + ".weight", w->weight, gw->weight));
    tensors.push_back(weight(prefix + name + ".bias", w->bias, gw->bias));
  }
  return tensors;
}

// Forward with saved values, backward with d_out = R, and differences: the check of a layer
// over a sequence x [rows, D] (MultiHeadAttention, TransformerBlock) whose weights are in
// tensors already.
template <class Layer>
void check_sequence_layer(const Layer& layer, Layer& grad, std::vector<Checked> tensors,
                          const nn::AttentionSegments& segments, const nn::Rope<double>* rope,
                          const Positions* positions, Index rows, unsigned seed) {
  const Index dim = 8;
  M x = random_matrix(rows, dim, seed);
  const M r = random_matrix(rows, dim, seed + 1);
  M d_x(rows, dim);
  tensors.push_back(input("x", x, d_x));
  prefill(tensors);
  typename Layer::Saved saved;
  M out(rows, dim);
  layer.forward(out, x, segments, rope, positions, &saved);
  layer.backward(d_x, grad, r, x, segments, rope, positions, saved);
  expect_gradients([&] {
    M y(rows, dim);
    layer.forward(y, x, segments, rope, positions);
    return dot(y, r);
  }, tensors);
}

TEST(Gradients, MultiHeadSelfAttentionWithRope) {
  nn::MultiHeadAttention<double> layer(8, 2), grad(8, 2);
  std::vector<Checked> tensors = attention_weights("", layer, grad, 52);
  const nn::Rope<double> rope(4, 100.0, {1, 0, 1});
  const Positions positions = positions_of(9);
  auto segments = nn::AttentionSegments::packed({0, 4, 9});
  segments.set_causal(1, 4, 8);
  check_sequence_layer(layer, grad, tensors, segments, &rope, &positions, 9, 60);
}

TEST(Gradients, MultiHeadCrossAttention) {
  nn::MultiHeadAttention<double> layer(8, 2), grad(8, 2);
  std::vector<Checked> tensors = attention_weights("", layer, grad, 62);
  const nn::AttentionSegments segments{{0, 2, 5}, {0, 4, 10}, {0, 0}, {0, 0}, {}};
  M x_q = random_matrix(5, 8, 70), x_kv = random_matrix(10, 8, 71);
  const M r = random_matrix(5, 8, 72);
  M d_q(5, 8), d_kv(10, 8);
  tensors.push_back(input("x_q", x_q, d_q));
  tensors.push_back(input("x_kv", x_kv, d_kv));
  prefill(tensors);
  typename nn::MultiHeadAttention<double>::Saved saved;
  M out(5, 8);
  layer.forward_cross(out, x_q, x_kv, segments, nullptr, nullptr, &saved);
  layer.backward_cross(d_q, d_kv, grad, r, x_q, x_kv, segments, nullptr, nullptr, saved);
  expect_gradients([&] {
    M y(5, 8);
    layer.forward_cross(y, x_q, x_kv, segments);
    return dot(y, r);
  }, tensors);
}

TEST(Gradients, AttentionBackwardRefusesBfloat16KeysAndValues) {
  nn::MultiHeadAttention<double> layer(8, 2), grad(8, 2);
  layer.kv_precision = nn::KVPrecision::bfloat16;
  const M x = random_matrix(3, 8, 73);
  typename nn::MultiHeadAttention<double>::Saved saved;
  M out(3, 8), d_x(3, 8);
  const auto segments = nn::AttentionSegments::full(3);
  layer.forward(out, x, segments, nullptr, nullptr, &saved);
  EXPECT_THAT(test::error_of([&] { layer.backward(d_x, grad, out, x, segments, nullptr, nullptr, saved); }),
              ::testing::HasSubstr("train with KVPrecision::native"));
}

// ---- The block and the video pooler -------------------------------------------------------

Config block_config(const std::string& norm, const std::string& activation) {
  Config config;
  config.hidden_dim = 8;
  config.num_heads = 2;
  config.ffn_dim = 12;
  config.norm = norm == "rmsnorm" ? NormKind::rmsnorm : NormKind::layernorm;
  config.activation = activation == "swiglu" ? Activation::swiglu : Activation::gelu;
  return config;
}

TEST(Gradients, TransformerBlock) {
  for (const auto& [norm, activation] : {std::pair{"layernorm", "gelu"}, {"rmsnorm", "swiglu"}}) {
    SCOPED_TRACE(std::string(norm) + ", " + activation);
    const Config config = block_config(norm, activation);
    nn::TransformerBlock<double> layer(block_options(config)), grad(block_options(config));
    std::vector<Checked> tensors = attention_weights("attn.", layer.attn, grad.attn, 80);
    layer.norm1.weight = random_matrix(8, 1, 90) + V::Ones(8);
    layer.norm2.weight = random_matrix(8, 1, 91) + V::Ones(8);
    tensors.push_back(weight("norm1.weight", layer.norm1.weight, grad.norm1.weight));
    tensors.push_back(weight("norm2.weight", layer.norm2.weight, grad.norm2.weight));
    if (config.norm == NormKind::layernorm) {
      layer.norm1.bias = random_matrix(8, 1, 92);
      tensors.push_back(weight("norm1.bias", layer.norm1.bias, grad.norm1.bias));
    }
    auto& ffn = layer.ffn;
    auto& first = ffn.gated() ? ffn.gate : ffn.fc1;
    auto& second = ffn.gated() ? ffn.down : ffn.fc2;
    first.weight = random_matrix(first.weight.rows(), first.weight.cols(), 93, 0.5);
    second.weight = random_matrix(second.weight.rows(), second.weight.cols(), 94, 0.5);
    tensors.push_back(weight("ffn.first", first.weight, (ffn.gated() ? grad.ffn.gate : grad.ffn.fc1).weight));
    tensors.push_back(weight("ffn.second", second.weight, (ffn.gated() ? grad.ffn.down : grad.ffn.fc2).weight));
    if (ffn.gated()) {
      ffn.up.weight = random_matrix(12, 8, 95, 0.5);
      tensors.push_back(weight("ffn.up", ffn.up.weight, grad.ffn.up.weight));
    }
    const nn::Rope<double> rope(4, 100.0, {2, 0, 0});
    const Positions positions = positions_of(7);
    auto segments = nn::AttentionSegments::full(7);
    segments.set_causal(0, 1, 5);
    check_sequence_layer(layer, grad, tensors, segments, &rope, &positions, 7, 96);
  }
}

TEST(Gradients, AttentionPool) {
  nn::AttentionPool<double> layer(3, 4, 8, 2, NormKind::layernorm, 1e-5);
  nn::AttentionPool<double> grad(3, 4, 8, 2, NormKind::layernorm, 1e-5);
  std::vector<Checked> tensors = attention_weights("attn.", layer.attn, grad.attn, 100);
  layer.queries = random_matrix(3, 8, 110);
  layer.pos_embed = random_matrix(4, 8, 111, 0.5);
  layer.norm_q.weight = random_matrix(8, 1, 112) + V::Ones(8);
  layer.norm_kv.bias = random_matrix(8, 1, 113);
  tensors.push_back(weight("queries", layer.queries, grad.queries));
  tensors.push_back(weight("pos_embed", layer.pos_embed, grad.pos_embed));
  tensors.push_back(weight("norm_q.weight", layer.norm_q.weight, grad.norm_q.weight));
  tensors.push_back(weight("norm_kv.bias", layer.norm_kv.bias, grad.norm_kv.bias));
  M tokens = random_matrix(3 * 4, 8, 114);  // three steps
  const M r = random_matrix(3 * 3, 8, 115);
  M d_tokens(12, 8);
  tensors.push_back(input("tokens", tokens, d_tokens));
  prefill(tensors);
  typename nn::AttentionPool<double>::Saved saved;
  M out(9, 8);
  layer.forward(out, tokens, &saved);
  layer.backward(d_tokens, grad, r, saved);
  expect_gradients([&] {
    M y(9, 8);
    layer.forward(y, tokens);
    return dot(y, r);
  }, tensors);
}

TEST(Gradients, BlockBackwardBitwiseIdenticalForOneAndTwoThreads) {
  const Config config = block_config("layernorm", "gelu");
  nn::TransformerBlock<float> layer(block_options(config));
  std::srand(120);
  for (auto* w : {&layer.attn.q_proj, &layer.attn.k_proj, &layer.attn.v_proj, &layer.attn.out_proj,
                  &layer.ffn.fc1, &layer.ffn.fc2}) {
    w->weight.setRandom();
    w->bias.setRandom();
  }
  const Matrix<float> x = Matrix<float>::Random(300, 8), r = Matrix<float>::Random(300, 8);
  const auto segments = nn::AttentionSegments::packed({0, 100, 300});
  typename nn::TransformerBlock<float>::Saved saved;
  Matrix<float> out(300, 8);
  layer.forward(out, x, segments, nullptr, nullptr, &saved);
  std::vector<nn::TransformerBlock<float>> grads(2, nn::TransformerBlock<float>(block_options(config)));
  std::vector<Matrix<float>> d_x(2, Matrix<float>(300, 8));
  for (int t = 0; t < 2; ++t) {
    ScopedThreads threads(t + 1);
    layer.backward(d_x[t], grads[t], r, x, segments, nullptr, nullptr, saved);
  }
  EXPECT_TRUE(d_x[0] == d_x[1]);
  EXPECT_TRUE(grads[0].attn.q_proj.weight == grads[1].attn.q_proj.weight);
  EXPECT_TRUE(grads[0].ffn.fc1.weight == grads[1].ffn.fc1.weight);
  EXPECT_TRUE(grads[0].norm1.weight == grads[1].norm1.weight);
}

// ---- Losses -------------------------------------------------------------------------------

M unit_rows(Index rows, Index cols, unsigned seed) {
  M x = random_matrix(rows, cols, seed);
  x.rowwise().normalize();
  return x;
}

TEST(Gradients, InfoNceBindingAndTripletLosses) {
  for (const double logit_scale : {1.3, 5.0}) {  // 5.0 > ln(100): clamped, no gradient
    SCOPED_TRACE("logit_scale " + std::to_string(logit_scale));
    M a = unit_rows(5, 6, 130), b = unit_rows(5, 6, 131), c = unit_rows(5, 6, 132);
    double scale = logit_scale;
    M d_a = M::Constant(5, 6, accumulated_start), d_b = d_a, d_c = d_a;
    // total = 0.7 InfoNCE(a, b) + binding(a, {b, c}) + 1.5 triplet(a, b, c, margin 0.4)
    double d_scale = info_nce_backward<double>(d_a, d_b, a, b, scale, 0.7);
    std::vector<M> others{b, c}, d_others{M::Zero(5, 6), M::Zero(5, 6)};
    d_scale += binding_backward<double>(d_a, d_others, a, others, scale);
    d_b += d_others[0];
    d_c += d_others[1];
    triplet_backward<double>(d_a, d_b, d_c, a, b, c, 0.4, 1.5);
    if (logit_scale > max_logit_scale) {
      EXPECT_EQ(d_scale, 0.0);
    }
    double d_scale_start = d_scale + accumulated_start;  // checked like a weight
    std::vector<Checked> tensors{weight("a", a, d_a), weight("b", b, d_b), weight("c", c, d_c),
                                 {"logit_scale", &scale, &d_scale_start, 1, true}};
    expect_gradients([&] {
      return 0.7 * info_nce_loss<double>(a, b, scale) +
             binding_loss<double>(a, std::vector<M>{b, c}, scale) +
             1.5 * triplet_loss<double>(a, b, c, 0.4);
    }, tensors);
  }
}

// ---- The whole encoder ----------------------------------------------------------------------

// Small models that together use every modality, pooling, position kind, norm and FFN kind.
std::vector<std::string> encoder_configs() {
  return {
      R"({"hidden_dim": 8, "num_layers": 2, "num_heads": 2, "ffn_dim": 12, "embed_dim": 6,
          "pooling": "routed", "position": "rope",
          "text": {"vocab_size": 20, "max_tokens": 8, "causal": true},
          "image": {"size": 8, "patch": 4}, "audio": {"n_mels": 3, "patch_frames": 2},
          "video": {"tubelet": 2, "pool_queries": 2}})",
      R"({"hidden_dim": 8, "num_layers": 1, "num_heads": 2, "ffn_dim": 12, "embed_dim": 6,
          "pooling": "cls", "position": "learned", "norm": "rmsnorm", "activation": "swiglu",
          "text": {"vocab_size": 20, "max_tokens": 8},
          "image": {"size": 8, "patch": 4}, "audio": {"n_mels": 3, "patch_frames": 2, "max_tokens": 8},
          "video": {"tubelet": 2, "max_tokens": 16}})",
      R"({"hidden_dim": 8, "num_layers": 1, "num_heads": 2, "ffn_dim": 12, "embed_dim": 6,
          "pooling": "mean", "position": "learned",
          "text": {"vocab_size": 20, "max_tokens": 8},
          "custom_modalities": [{"name": "points", "input_dim": 5, "max_tokens": 6}]})",
  };
}

std::vector<Sample<double>> encoder_batch(const Config& config) {
  std::srand(140);
  std::vector<Sample<double>> batch(3);
  batch[0].text = std::vector<std::int64_t>{3, 7, 7, 19};
  batch[1].text = std::vector<std::int64_t>{0, 11};
  batch[2].text = std::vector<std::int64_t>{5, 1, 2};
  auto image = [] {
    Tensor3<double> t(3, 8, 8);
    t.setRandom();
    return t;
  };
  if (config.image) {
    batch[0].image = image();
    batch[2].image = image();
  }
  if (config.audio) {
    batch[1].audio = M::Random(3, 5);
    batch[2].audio = M::Random(3, 4);
  }
  if (config.video) {
    Tensor4<double> video(3, 3, 8, 8);  // two steps, the last frame repeated
    video.setRandom();
    batch[1].video = video;
  }
  if (!config.custom.empty()) {
    batch[0].custom["points"] = {M::Random(4, 5), Positions()};
    batch[1].custom["points"] = {M::Random(2, 5), Positions()};
  }
  return batch;
}

TEST(Gradients, WholeEncoderEveryWeight) {
  for (const std::string& text : encoder_configs()) {
    const Config config = parse_config(nlohmann::json::parse(text), "test config");
    SCOPED_TRACE(text.substr(0, 120));
    MultiModalEncoder<double> model(config);
    model.init_random(150);
    for (auto& p : model.parameters()) {  // larger weights than init's 0.02: a real test
      if (p.name == "logit_scale") continue;
      for (std::int64_t i = 0; i < p.size(); ++i) p.data[i] += 0.3 * std::sin(1.7 * static_cast<double>(i) + static_cast<double>(p.name.size()));
    }
    const auto batch = encoder_batch(config);
    // the loss: InfoNCE between the batch and itself rolled by one, plus a triplet term
    auto loss_of = [&](const M& e) {
      M rolled(e.rows(), e.cols()), twice(e.rows(), e.cols());
      for (Index i = 0; i < e.rows(); ++i) {
        rolled.row(i) = e.row((i + 1) % e.rows());
        twice.row(i) = e.row((i + 2) % e.rows());
      }
      return std::tuple{rolled, twice,
                        info_nce_loss<double>(e, rolled, model.logit_scale) +
                            triplet_loss<double>(e, rolled, twice, 0.5)};
    };
    auto embeddings = [&] {
      M e(3, config.embed_dim);
      const auto encoded = model.encode_batch(batch);
      for (Index i = 0; i < 3; ++i) e.row(i) = encoded[static_cast<std::size_t>(i)].embedding;
      return e;
    };

    EncoderTrace<double> trace;
    const auto encoded = model.encode_batch(batch, trace);
    M e(3, config.embed_dim);
    for (Index i = 0; i < 3; ++i) e.row(i) = encoded[static_cast<std::size_t>(i)].embedding;
    EXPECT_TRUE(e == embeddings()) << "the training forward gives encode_batch's embeddings";
    const auto [rolled, twice, loss] = loss_of(e);
    (void)loss;
    M d_e = M::Zero(3, config.embed_dim), d_rolled = d_e, d_twice = d_e;
    const double d_scale = info_nce_backward<double>(d_e, d_rolled, e, rolled, model.logit_scale);
    triplet_backward<double>(d_e, d_rolled, d_twice, e, rolled, twice, 0.5);
    for (Index i = 0; i < 3; ++i) {  // the rolled copies' gradients go back to their rows
      d_e.row((i + 1) % 3) += d_rolled.row(i);
      d_e.row((i + 2) % 3) += d_twice.row(i);
    }

    MultiModalEncoder<double> grad(config);
    auto params = model.parameters();
    auto grads = grad.parameters();
    ASSERT_EQ(params.size(), grads.size());
    std::vector<Checked> tensors;
    for (std::size_t j = 0; j < params.size(); ++j) {
      ASSERT_EQ(params[j].name, grads[j].name);
      tensors.push_back({params[j].name, params[j].data, grads[j].data, params[j].size(), true});
    }
    prefill(tensors);
    model.backward(grad, d_e, trace);
    grad.logit_scale += d_scale;
    GradCheckOptions options;
    options.max_elements = 5;
    options.atol = 1e-8;  // some gradients are small; differences of an O(1) loss are good to 1e-10
    expect_gradients([&] { return std::get<2>(loss_of(embeddings())); }, tensors, options);
  }
}

TEST(Gradients, EncoderBackwardChecksItsArguments) {
  const Config config = parse_config(nlohmann::json::parse(encoder_configs()[2]), "test config");
  MultiModalEncoder<double> model(config), grad(config);
  model.init_random(1);
  EncoderTrace<double> trace;
  const auto batch = encoder_batch(config);
  model.encode_batch(batch, trace);
  EXPECT_THAT(test::error_of([&] { model.backward(grad, M::Zero(2, 6), trace); }),
              ::testing::HasSubstr("d_embeddings is [2, 6], expected [3, 6]"));
  Sample<double> long_text;
  long_text.text = std::vector<std::int64_t>(9, 1);
  EXPECT_THAT(test::error_of([&] { model.encode_batch(std::vector{long_text}, trace); }),
              ::testing::HasSubstr("more than text.max_tokens"));
}

// ---- The encoder against PyTorch autograd -------------------------------------------------

const std::vector<std::string> gradient_variants = {
    "all_routed_causal_sections", "all_cls_learned_f16", "text_image_bf16", "video_cls_swiglu",
    "custom_routed"};

// The fixtures' loss: InfoNCE(E, T) + triplet(E, T, roll(T, 1), 0.5) + sum(E * W), and its
// gradient with respect to E (d_e) and to logit_scale.
template <class Scalar>
struct FixtureLoss {
  Scalar loss;
  Matrix<Scalar> d_e;  // [N, E]
  Scalar d_logit_scale;
};
template <class Scalar>
FixtureLoss<Scalar> fixture_loss(const Matrix<Scalar>& e, const Matrix<Scalar>& targets,
                                 const Matrix<Scalar>& weights, Scalar logit_scale) {
  const Index n = e.rows();
  Matrix<Scalar> rolled(n, e.cols());  // roll(T, 1): row i is T's row i - 1
  for (Index i = 0; i < n; ++i) rolled.row(i) = targets.row((i + n - 1) % n);
  FixtureLoss<Scalar> out;
  out.loss = info_nce_loss<Scalar>(e, targets, logit_scale) +
             triplet_loss<Scalar>(e, targets, rolled, Scalar(0.5)) + e.cwiseProduct(weights).sum();
  out.d_e = weights;
  Matrix<Scalar> unused_t = Matrix<Scalar>::Zero(n, e.cols()), unused_r = unused_t;
  out.d_logit_scale = info_nce_backward<Scalar>(out.d_e, unused_t, e, targets, logit_scale);
  triplet_backward<Scalar>(out.d_e, unused_t, unused_r, e, targets, rolled, Scalar(0.5));
  return out;
}

// One training step's loss and gradients (grad zeroed first).
template <class Scalar>
Scalar loss_and_gradients(const MultiModalEncoder<Scalar>& model, MultiModalEncoder<Scalar>& grad,
                          const std::vector<Sample<Scalar>>& batch, const Matrix<Scalar>& targets,
                          const Matrix<Scalar>& weights) {
  EncoderTrace<Scalar> trace;
  const auto encoded = model.encode_batch(batch, trace);
  Matrix<Scalar> e(static_cast<Index>(encoded.size()), model.config.embed_dim);
  for (std::size_t i = 0; i < encoded.size(); ++i) e.row(static_cast<Index>(i)) = encoded[i].embedding;
  const FixtureLoss<Scalar> l = fixture_loss<Scalar>(e, targets, weights, model.logit_scale);
  grad.set_zero();
  model.backward(grad, l.d_e, trace);
  grad.logit_scale += l.d_logit_scale;
  return l.loss;
}

template <class Scalar>
void check_gradient_fixture(const std::string& variant, double atol, double rtol) {
  SCOPED_TRACE(variant);
  const auto dir = test::data_dir() / "encoder" / variant;
  const auto model = load_model<Scalar>(dir);
  const auto batch = test::read_inputs<Scalar>(dir);
  const test::Fixture f("encoder/" + variant + "/gradients.safetensors");
  MultiModalEncoder<Scalar> grad(model.config);
  const Scalar loss = loss_and_gradients<Scalar>(model, grad, batch, f.matrix<Scalar>("targets"),
                                                 f.matrix<Scalar>("weights"));
  EXPECT_NEAR(static_cast<double>(loss), f.scalar<double>("loss"), atol + rtol * std::abs(f.scalar<double>("loss")));
  for (const auto& p : grad.parameters()) {
    const std::vector<double> expected = f.file.read<double>("grad." + p.name);
    ASSERT_EQ(static_cast<std::int64_t>(expected.size()), p.size()) << p.name;
    const Eigen::Map<const Vector<Scalar>> got(p.data, p.size());
    const Eigen::Map<const Vector<double>> want(expected.data(), p.size());
    EXPECT_TRUE(test::all_close(got, want, atol, rtol)) << p.name;
  }
}

TEST(GradientsAgainstPyTorch, EveryWeightOfTheEncoderInFloatWithin1e4) {
  for (const auto& v : gradient_variants) check_gradient_fixture<float>(v, 1e-4, 0);
}

TEST(GradientsAgainstPyTorch, EveryWeightOfTheEncoderInDouble) {
  // the references are float64 gradients stored as float32 (6e-8 relative)
  for (const auto& v : gradient_variants) check_gradient_fixture<double>(v, 1e-6, 1e-6);
}

TEST(GradientsAgainstPyTorch, TenAdamWStepsReproduceTheLosses) {
  const std::string variant = gradient_variants.front();
  const auto dir = test::data_dir() / "encoder" / variant;
  const test::Fixture f("encoder/" + variant + "/gradients.safetensors");
  const std::vector<double> expected = f.file.read<double>("adamw.losses");
  ASSERT_EQ(expected.size(), 11u);
  auto run = [&](auto zero) {
    using Scalar = decltype(zero);
    auto model = load_model<Scalar>(dir);
    const auto batch = test::read_inputs<Scalar>(dir);
    const Matrix<Scalar> targets = f.matrix<Scalar>("targets"), weights = f.matrix<Scalar>("weights");
    MultiModalEncoder<Scalar> grad(model.config);
    AdamWOptions options;
    options.lr = 1e-2;
    AdamW<Scalar> optimizer(options);
    std::vector<double> losses;
    for (int step = 0; step < 10; ++step) {
      losses.push_back(static_cast<double>(loss_and_gradients<Scalar>(model, grad, batch, targets, weights)));
      const auto grads = grad.parameters();
      optimizer.step(model.parameters(), read_only<Scalar>(grads));
    }
    losses.push_back(static_cast<double>(loss_and_gradients<Scalar>(model, grad, batch, targets, weights)));
    return losses;
  };
  const std::vector<double> in_double = run(0.0), in_float = run(0.0f);
  for (std::size_t k = 0; k < expected.size(); ++k) {
    EXPECT_NEAR(in_double[k], expected[k], 1e-9 * (1 + std::abs(expected[k]))) << "step " << k;
    EXPECT_NEAR(in_float[k], expected[k], 1e-3 * (1 + std::abs(expected[k]))) << "step " << k;
  }
}

}  // namespace
}  // namespace tessera
