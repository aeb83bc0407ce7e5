// The layers of include/tessera/nn against PyTorch fixtures (tests/reference/make_fixtures.py),
// in float and double.

#include <tessera/core/parallel.hpp>
#include <tessera/detail/matmul.hpp>
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

#include "test_util.hpp"

#include <gmock/gmock.h>

#include <iostream>
#include <string>

namespace tessera {
namespace test_nn {

using test::Fixture;
using test::close_to_reference;

template <class Scalar>
class NnTest : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(NnTest, Scalars);

std::array<Index, 3> parse_sections(const std::string& text) {
  std::array<Index, 3> sections{};
  std::stringstream in(text);
  char comma;
  in >> sections[0] >> comma >> sections[1] >> comma >> sections[2];
  return sections;
}

// "weight" for the unnamed module of a file, "<name>.weight" otherwise.
std::string key(const std::string& name, const char* field) {
  return name.empty() ? field : name + "." + field;
}

template <class Scalar>
nn::Linear<Scalar> load_linear(const Fixture& f, const std::string& name) {
  nn::Linear<Scalar> linear;
  linear.weight = f.matrix<Scalar>(key(name, "weight"));
  if (f.has(key(name, "bias"))) linear.bias = f.vector<Scalar>(key(name, "bias"));
  return linear;
}

template <class Scalar>
nn::Norm<Scalar> load_norm(const Fixture& f, const std::string& name, NormKind kind,
                           double eps) {
  nn::Norm<Scalar> norm(kind, f.vector<Scalar>(key(name, "weight")).size(),
                        static_cast<Scalar>(eps));
  norm.weight = f.vector<Scalar>(key(name, "weight"));
  if (kind == NormKind::layernorm) norm.bias = f.vector<Scalar>(key(name, "bias"));
  return norm;
}

template <class Scalar>
nn::MultiHeadAttention<Scalar> load_attention(const Fixture& f, const std::string& prefix,
                                              Index heads) {
  nn::MultiHeadAttention<Scalar> attn;
  attn.heads = heads;
  attn.q_proj = load_linear<Scalar>(f, prefix + "q_proj");
  attn.k_proj = load_linear<Scalar>(f, prefix + "k_proj");
  attn.v_proj = load_linear<Scalar>(f, prefix + "v_proj");
  attn.out_proj = load_linear<Scalar>(f, prefix + "out_proj");
  return attn;
}

NormKind norm_kind(const std::string& name) {
  return name == "rmsnorm" ? NormKind::rmsnorm : NormKind::layernorm;
}

Activation activation_kind(const std::string& name) {
  if (name == "gelu") return Activation::gelu;
  if (name == "gelu_tanh") return Activation::gelu_tanh;
  if (name == "quick_gelu") return Activation::quick_gelu;
  if (name == "relu") return Activation::relu;
  return Activation::swiglu;
}

template <class Scalar>
nn::FeedForward<Scalar> load_ffn(const Fixture& f, const std::string& prefix, Activation act) {
  nn::FeedForward<Scalar> ffn;
  ffn.activation = act;
  if (act == Activation::swiglu) {
    ffn.gate = load_linear<Scalar>(f, prefix + "gate");
    ffn.up = load_linear<Scalar>(f, prefix + "up");
    ffn.down = load_linear<Scalar>(f, prefix + "down");
  } else {
    ffn.fc1 = load_linear<Scalar>(f, prefix + "fc1");
    ffn.fc2 = load_linear<Scalar>(f, prefix + "fc2");
  }
  return ffn;
}

Positions load_positions(const Fixture& f, const std::string& name = "positions") {
  const auto values = f.ints(name);
  Positions positions(static_cast<Index>(values.size() / 3), 3);
  std::copy(values.begin(), values.end(), positions.data());
  return positions;
}

TYPED_TEST(NnTest, Linear) {
  using Scalar = TypeParam;
  const Fixture f("layers/linear.safetensors");
  const auto linear = load_linear<Scalar>(f, "");
  EXPECT_TRUE(close_to_reference<Scalar>(linear.forward(f.matrix<Scalar>("x")), f.matrix<double>("y")));
}

TYPED_TEST(NnTest, LinearLargeMatchesPlainProduct) {
  using Scalar = TypeParam;  // 3 x 3 product tiles (the last ones partial), with and without bias
  for (const bool bias : {false, true}) {
    nn::Linear<Scalar> linear(24, 2 * detail::matmul_tile_max + 8, bias);
    linear.weight.setRandom();
    if (bias) linear.bias.setRandom();
    const Matrix<Scalar> x = Matrix<Scalar>::Random(2 * detail::matmul_tile_max + 88, 24);
    Matrix<double> expected =
        x.template cast<double>() * linear.weight.template cast<double>().transpose();
    if (bias) expected.rowwise() += linear.bias.template cast<double>().transpose();
    Matrix<Scalar> one, two;
    {
      ScopedThreads threads(1);
      one = linear.forward(x);
    }
    {
      ScopedThreads threads(2);
      two = linear.forward(x);
    }
    EXPECT_TRUE(close_to_reference<Scalar>(one, expected)) << "bias " << bias;
    EXPECT_TRUE(one == two) << "bias " << bias;
  }
}

TYPED_TEST(NnTest, GemmAssignsAndAccumulatesOnBlocks) {
  using Scalar = TypeParam;  // strided blocks of larger matrices, as the attention kernel uses
  const Matrix<Scalar> a = Matrix<Scalar>::Random(40, 30), b = Matrix<Scalar>::Random(50, 30);
  const Matrix<Scalar> start = Matrix<Scalar>::Random(40, 50);
  const auto a_block = a.block(3, 2, 20, 17);                    // [20, 17]
  const auto bt_block = b.block(5, 4, 25, 17);                   // [25, 17]: op(b) = b^T
  const auto bn_block = b.block(1, 4, 17, 25);                   // [17, 25]: op(b) = b
  const Matrix<double> ad = a_block.template cast<double>();
  const Matrix<double> base = start.block(2, 3, 20, 25).template cast<double>();
  for (const bool accumulate : {false, true}) {
    Matrix<Scalar> t = start, n = start;
    detail::gemm<false, true>(t.block(2, 3, 20, 25), a_block, bt_block, accumulate);
    detail::gemm<false, false>(n.block(2, 3, 20, 25), a_block, bn_block, accumulate);
    const Matrix<double> add = accumulate ? base : Matrix<double>::Zero(20, 25);
    EXPECT_TRUE(close_to_reference<Scalar>(
        t.block(2, 3, 20, 25), add + ad * bt_block.template cast<double>().transpose()));
    EXPECT_TRUE(close_to_reference<Scalar>(
        n.block(2, 3, 20, 25), add + ad * bn_block.template cast<double>()));
    // outside the block nothing is written
    t.block(2, 3, 20, 25) = start.block(2, 3, 20, 25);
    n.block(2, 3, 20, 25) = start.block(2, 3, 20, 25);
    EXPECT_TRUE(t == start && n == start) << "accumulate " << accumulate;
  }
  // k = 0: the empty sum assigns zeros, or adds nothing
  Matrix<Scalar> empty_sum = start;
  detail::gemm<false, true>(empty_sum, Matrix<Scalar>(40, 0), Matrix<Scalar>(50, 0), true);
  EXPECT_TRUE(empty_sum == start);
  detail::gemm<false, true>(empty_sum, Matrix<Scalar>(40, 0), Matrix<Scalar>(50, 0), false);
  EXPECT_TRUE(empty_sum.isZero(0));
}

TYPED_TEST(NnTest, GemmWithATransposedFirstOperand) {
  using Scalar = TypeParam;  // op(a) = a^T for a [k, m]: the weight gradient d_y^T x
  const Matrix<Scalar> a = Matrix<Scalar>::Random(40, 30), b = Matrix<Scalar>::Random(50, 30);
  const auto at_block = a.block(3, 2, 17, 20);   // [17, 20]: op(a) = a^T [20, 17]
  const auto bt_block = b.block(5, 4, 25, 17);   // [25, 17]: op(b) = b^T
  const auto bn_block = b.block(1, 4, 17, 25);   // [17, 25]: op(b) = b
  const Matrix<double> atd = at_block.template cast<double>().transpose();
  for (const bool accumulate : {false, true}) {
    const Matrix<Scalar> start = Matrix<Scalar>::Random(20, 25);
    Matrix<Scalar> tt = start, tn = start;
    detail::gemm<true, true>(tt, at_block, bt_block, accumulate);
    detail::gemm<true, false>(tn, at_block, bn_block, accumulate);
    const Matrix<double> add = accumulate ? Matrix<double>(start.template cast<double>()) : Matrix<double>::Zero(20, 25);
    EXPECT_TRUE(close_to_reference<Scalar>(tt, add + atd * bt_block.template cast<double>().transpose()));
    EXPECT_TRUE(close_to_reference<Scalar>(tn, add + atd * bn_block.template cast<double>()));
  }
}

TYPED_TEST(NnTest, MatmulEveryTransposeOverTilesIsThreadCountIndependent) {
  using Scalar = TypeParam;  // outputs of 2 x 2 tiles, inner sums longer than a tile
  const Index m = detail::matmul_tile_max + 40, n = detail::matmul_tile_max + 9, k = 600;
  const Matrix<Scalar> a = Matrix<Scalar>::Random(m, k), at = a.transpose();
  const Matrix<Scalar> b = Matrix<Scalar>::Random(k, n), bt = b.transpose();
  const Matrix<double> expected = a.template cast<double>() * b.template cast<double>();
  const Matrix<Scalar> start = Matrix<Scalar>::Random(m, n);
  Matrix<Scalar> first_tn;  // the one-thread result
  for (int threads : {1, 2}) {
    ScopedThreads scoped(threads);
    Matrix<Scalar> nn_out(m, n), nt_out(m, n), tn_out(m, n), tt_out = start;
    detail::matmul<false, false, Scalar>(nn_out, a, b);
    detail::matmul<false, true, Scalar>(nt_out, a, bt);
    detail::matmul<true, false, Scalar>(tn_out, at, b);
    detail::matmul<true, true, Scalar>(tt_out, at, bt, true);
    EXPECT_TRUE(close_to_reference<Scalar>(nn_out, expected));
    EXPECT_TRUE(close_to_reference<Scalar>(nt_out, expected));
    EXPECT_TRUE(close_to_reference<Scalar>(tn_out, expected));
    EXPECT_TRUE(close_to_reference<Scalar>(tt_out, expected + start.template cast<double>()));
    if (threads == 1) {
      first_tn = tn_out;
    } else {
      EXPECT_TRUE(first_tn == tn_out) << "1 vs 2 threads";
    }
  }
}

TEST(Products, TilesAreEqualPartsOfTheShapeAlone) {
  using detail::matmul_tile_extent;
  EXPECT_EQ(matmul_tile_extent(0), 1);
  EXPECT_EQ(matmul_tile_extent(197), 197);    // one ViT-B/16 image: one row tile
  EXPECT_EQ(matmul_tile_extent(512), 512);
  EXPECT_EQ(matmul_tile_extent(513), 272);    // two parts of 257, rounded up to 16
  EXPECT_EQ(matmul_tile_extent(768), 384);    // D = 768: two equal column tiles
  EXPECT_EQ(matmul_tile_extent(1576), 400);   // 8 images: four row tiles (the last 376)
  EXPECT_EQ(matmul_tile_extent(3072), 512);   // F = 3072: six column tiles
}

TEST(Products, TileCountIsOneOrEven) {
  // An odd count of tiles above one gets one more part on the longer side, so that two threads
  // share a product evenly; the tiles stay a function of the shape alone.
  using detail::matmul_tiles;
  const auto texts = matmul_tiles(2464, 512);  // 32 texts of 77 tokens: 6 row tiles, not 5
  EXPECT_EQ(texts.row_tiles, 6);
  EXPECT_EQ(texts.col_tiles, 1);
  EXPECT_EQ(texts.rows, 416);
  const auto huge = matmul_tiles(257, 1280);  // imagebind_huge's vision: 4 column tiles, not 3
  EXPECT_EQ(huge.row_tiles, 1);
  EXPECT_EQ(huge.col_tiles, 4);
  EXPECT_EQ(huge.cols, 320);
  EXPECT_EQ(matmul_tiles(1576, 3072).count(), 24);  // 4 x 6, even already: as before
  EXPECT_EQ(matmul_tiles(1576, 3072).rows, detail::matmul_tile_extent(1576));
  EXPECT_EQ(matmul_tiles(197, 768).count(), 2);
  EXPECT_EQ(matmul_tiles(50, 512).count(), 1);
  EXPECT_EQ(matmul_tiles(0, 0).count(), 1);
  for (const Index rows : {1, 16, 17, 100, 512, 513, 1000, 1537, 2464, 5000}) {
    for (const Index cols : {1, 7, 16, 512, 513, 768, 1280, 1537, 3000}) {
      const auto t = matmul_tiles(rows, cols);
      const std::string shape = "[" + std::to_string(rows) + ", " + std::to_string(cols) + "]";
      EXPECT_TRUE(t.count() == 1 || t.count() % 2 == 0) << shape << ": " << t.count();
      EXPECT_LE(t.rows, detail::matmul_tile_max) << shape;
      EXPECT_LE(t.cols, detail::matmul_tile_max) << shape;
      // the tiles cover the output, the last one of each side not empty
      EXPECT_TRUE((t.row_tiles - 1) * t.rows < rows && rows <= t.row_tiles * t.rows) << shape;
      EXPECT_TRUE((t.col_tiles - 1) * t.cols < cols && cols <= t.col_tiles * t.cols) << shape;
    }
  }
}

TYPED_TEST(NnTest, MatmulWithBiasAssignsOrAccumulatesOverTiles) {
  using Scalar = TypeParam;  // [40, 1100] makes 4 column tiles (3 made even): the bias is written
  // into each tile (or added to it) before the product is added on
  const Index m = 40, n = 1100, k = 70;
  const Matrix<Scalar> a = Matrix<Scalar>::Random(m, k), bt = Matrix<Scalar>::Random(n, k);
  const Vector<Scalar> bias = Vector<Scalar>::Random(n);
  const Matrix<Scalar> start = Matrix<Scalar>::Random(m, n);
  Matrix<double> product = a.template cast<double>() * bt.template cast<double>().transpose();
  product.rowwise() += bias.template cast<double>().transpose();
  ASSERT_EQ(detail::matmul_tiles(m, n).count(), 4);
  Matrix<Scalar> first_assigned, first_added;
  for (const int threads : {1, 2, 3}) {
    ScopedThreads scoped(threads);
    Matrix<Scalar> assigned = Matrix<Scalar>::Constant(m, n, Scalar(7)), added = start;
    detail::matmul<false, true, Scalar>(assigned, a, bt, false, &bias);
    detail::matmul<false, true, Scalar>(added, a, bt, true, &bias);
    EXPECT_TRUE(close_to_reference<Scalar>(assigned, product)) << threads << " threads";
    EXPECT_TRUE(close_to_reference<Scalar>(added, product + start.template cast<double>()))
        << threads << " threads";
    if (threads == 1) {
      first_assigned = assigned;
      first_added = added;
    } else {
      EXPECT_TRUE(assigned == first_assigned && added == first_added) << threads << " threads";
    }
  }
}

TYPED_TEST(NnTest, LinearForwardAccumulateAddsForward) {
  using Scalar = TypeParam;  // out += x W^T + b (a residual connection), with and without bias
  for (const bool bias : {false, true}) {
    nn::Linear<Scalar> linear(30, detail::matmul_tile_max + 20, bias);
    linear.weight.setRandom();
    if (bias) linear.bias.setRandom();
    const Matrix<Scalar> x = Matrix<Scalar>::Random(detail::matmul_tile_max + 60, 30);
    const Matrix<Scalar> start = Matrix<Scalar>::Random(x.rows(), linear.out_features());
    Matrix<double> expected = start.template cast<double>() +
                              x.template cast<double>() * linear.weight.template cast<double>().transpose();
    if (bias) expected.rowwise() += linear.bias.template cast<double>().transpose();
    Matrix<Scalar> one = start, two = start;
    {
      ScopedThreads threads(1);
      linear.forward_accumulate(one, x);
    }
    {
      ScopedThreads threads(2);
      linear.forward_accumulate(two, x);
    }
    EXPECT_TRUE(close_to_reference<Scalar>(one, expected)) << "bias " << bias;
    EXPECT_TRUE(one == two) << "bias " << bias;
  }
}

TEST(Products, RouteIsTheConfiguredOne) {
#if defined(TESSERA_EIGEN_PRODUCTS) || !defined(TESSERA_HAS_OPENBLAS)
  EXPECT_FALSE(detail::matmul_uses_blas<float>);
  EXPECT_FALSE(detail::matmul_uses_blas<double>);
#else
  EXPECT_TRUE(detail::matmul_uses_blas<float>);
  EXPECT_TRUE(detail::matmul_uses_blas<double>);
#endif
  std::cout << "[ route    ] products through "
            << (detail::matmul_uses_blas<float> ? "OpenBLAS" : "Eigen") << "\n";
}

TYPED_TEST(NnTest, Embedding) {
  using Scalar = TypeParam;
  const Fixture f("layers/embedding.safetensors");
  nn::Embedding<Scalar> embedding;
  embedding.weight = f.matrix<Scalar>("weight");
  const auto ids = f.ints("ids");
  Matrix<Scalar> y(static_cast<Index>(ids.size()), embedding.dim());
  embedding.forward(y, ids);
  EXPECT_TRUE(close_to_reference<Scalar>(y, f.matrix<double>("y")));
}

TYPED_TEST(NnTest, EmbeddingRejectsIdsOutOfRangeWithoutWriting) {
  using Scalar = TypeParam;
  nn::Embedding<Scalar> embedding(10, 4);
  Matrix<Scalar> y = Matrix<Scalar>::Constant(3, 4, Scalar(7));
  const std::vector<std::int64_t> ids = {1, 10, 2};
  EXPECT_THAT(test::error_of([&] { embedding.forward(y, ids, "text_ids"); }),
              ::testing::HasSubstr("text_ids[1] = 10 is out of range [0, 10)"));
  EXPECT_TRUE((y.array() == Scalar(7)).all()) << "nothing is written on error";
  const std::vector<std::int64_t> negative = {-1};
  Matrix<Scalar> one(1, 4);
  EXPECT_THROW(embedding.forward(one, negative), Error);
}

TYPED_TEST(NnTest, LayerNorm) {
  using Scalar = TypeParam;
  const Fixture f("layers/layer_norm.safetensors");
  const auto norm = load_norm<Scalar>(f, "", NormKind::layernorm, std::stod(f.meta("eps")));
  typename nn::Norm<Scalar>::Saved saved;
  const Matrix<Scalar> x = f.matrix<Scalar>("x");
  Matrix<Scalar> y(x.rows(), x.cols());
  norm.forward(y, x, &saved);
  EXPECT_TRUE(close_to_reference<Scalar>(y, f.matrix<double>("y")));
  ASSERT_EQ(saved.mean.size(), x.rows());
  EXPECT_NEAR(static_cast<double>(saved.mean[0]), static_cast<double>(x.row(0).mean()), 1e-6);
}

TYPED_TEST(NnTest, RmsNorm) {
  using Scalar = TypeParam;
  const Fixture f("layers/rms_norm.safetensors");
  const auto norm = load_norm<Scalar>(f, "", NormKind::rmsnorm, std::stod(f.meta("eps")));
  EXPECT_TRUE(close_to_reference<Scalar>(norm.forward(f.matrix<Scalar>("x")), f.matrix<double>("y")));
}

TYPED_TEST(NnTest, Activations) {
  using Scalar = TypeParam;
  const Fixture f("layers/activations.safetensors");
  const std::pair<const char*, Activation> cases[] = {
      {"gelu", Activation::gelu},       {"gelu_tanh", Activation::gelu_tanh},
      {"quick_gelu", Activation::quick_gelu}, {"relu", Activation::relu},
      {"silu", Activation::swiglu}};
  for (const auto& [name, activation] : cases) {
    Matrix<Scalar> x = f.matrix<Scalar>("x");
    nn::activate<Scalar>(activation, x);
    EXPECT_TRUE(close_to_reference<Scalar>(x, f.matrix<double>(name))) << name;
  }
}

TYPED_TEST(NnTest, FeedForwardEveryActivation) {
  using Scalar = TypeParam;
  for (const std::string name : {"gelu", "gelu_tanh", "quick_gelu", "relu", "swiglu"}) {
    const Fixture f("layers/ffn_" + name + ".safetensors");
    const auto ffn = load_ffn<Scalar>(f, "", activation_kind(name));
    const Matrix<Scalar> x = f.matrix<Scalar>("x");
    Matrix<Scalar> y(x.rows(), x.cols());
    ffn.forward(y, x);
    EXPECT_TRUE(close_to_reference<Scalar>(y, f.matrix<double>("y"))) << name;
  }
}

TYPED_TEST(NnTest, PatchEmbedImage) {
  using Scalar = TypeParam;
  const Fixture f("layers/patch_embed_image.safetensors");
  const auto& info = f.file.info("image");
  const auto values = f.file.read<Scalar>("image");
  Tensor3<Scalar> image(info.shape[0], info.shape[1], info.shape[2]);
  std::copy(values.begin(), values.end(), image.data());
  nn::PatchEmbed<Scalar> embed;
  embed.proj.weight = f.matrix<Scalar>("weight");  // conv shape [D, C, P, P] flattened
  embed.proj.bias = f.vector<Scalar>("bias");
  const auto patches = nn::patchify_image(image, std::stol(f.meta("patch")));
  Matrix<Scalar> y(patches.rows(), embed.dim());
  embed.forward(y, patches);
  EXPECT_TRUE(close_to_reference<Scalar>(y, f.matrix<double>("y")));
}

TYPED_TEST(NnTest, PatchEmbedAudioPadsTheLastChunk) {
  using Scalar = TypeParam;
  const Fixture f("layers/patch_embed_audio.safetensors");
  nn::PatchEmbed<Scalar> embed;
  embed.proj.weight = f.matrix<Scalar>("weight");  // conv shape [D, M, patch_frames] flattened
  embed.proj.bias = f.vector<Scalar>("bias");
  const Matrix<Scalar> features = f.matrix<Scalar>("features");
  const Index patch_frames = std::stol(f.meta("patch_frames"));
  ASSERT_NE(features.cols() % patch_frames, 0) << "the fixture exercises padding";
  const auto patches = nn::patchify_audio<Scalar>(features, patch_frames);
  Matrix<Scalar> y(patches.rows(), embed.dim());
  embed.forward(y, patches);
  EXPECT_TRUE(close_to_reference<Scalar>(y, f.matrix<double>("y")));
}

TYPED_TEST(NnTest, PatchEmbedVideoRepeatsTheLastFrame) {
  using Scalar = TypeParam;
  const Fixture f("layers/patch_embed_video.safetensors");
  const auto& info = f.file.info("video");
  const auto values = f.file.read<Scalar>("video");
  Tensor4<Scalar> video(info.shape[0], info.shape[1], info.shape[2], info.shape[3]);
  std::copy(values.begin(), values.end(), video.data());
  const Index tubelet = std::stol(f.meta("tubelet"));
  ASSERT_NE(video.dimension(0) % tubelet, 0) << "the fixture exercises the repeated frame";
  nn::PatchEmbed<Scalar> embed;
  embed.proj.weight = f.matrix<Scalar>("weight");  // conv shape [D, C, t, P, P] flattened
  embed.proj.bias = f.vector<Scalar>("bias");
  const auto patches = nn::patchify_video(video, tubelet, std::stol(f.meta("patch")));
  Matrix<Scalar> y(patches.rows(), embed.dim());
  embed.forward(y, patches);
  EXPECT_TRUE(close_to_reference<Scalar>(y, f.matrix<double>("y")));
}

TYPED_TEST(NnTest, RopeEverySectionLayout) {
  using Scalar = TypeParam;
  for (const std::string name : {"rope", "rope_dh16", "rope_sections"}) {
    const Fixture f("layers/" + name + ".safetensors");
    Matrix<Scalar> x = f.matrix<Scalar>("x");
    const Index heads = std::stol(f.meta("heads"));
    const nn::Rope<Scalar> rope(x.cols() / heads, std::stod(f.meta("theta")),
                                parse_sections(f.meta("sections")));
    rope.forward(x, load_positions(f));
    EXPECT_TRUE(close_to_reference<Scalar>(x, f.matrix<double>("y"))) << name;
  }
}

TYPED_TEST(NnTest, SelfAttention) {
  using Scalar = TypeParam;
  for (const std::string name : {"attention_self", "attention_self_dh16"}) {
    const Fixture f("layers/" + name + ".safetensors");
    const auto attn = load_attention<Scalar>(f, "", std::stol(f.meta("heads")));
    const Matrix<Scalar> x = f.matrix<Scalar>("x");
    Matrix<Scalar> y(x.rows(), x.cols());
    attn.forward(y, x, nn::AttentionSegments::full(x.rows()));
    EXPECT_TRUE(close_to_reference<Scalar>(y, f.matrix<double>("y"))) << name;
  }
}

TYPED_TEST(NnTest, PackedAttentionWithMixedCausalMask) {
  using Scalar = TypeParam;
  const Fixture f("layers/attention_packed.safetensors");
  const auto attn = load_attention<Scalar>(f, "", std::stol(f.meta("heads")));
  const Matrix<Scalar> x = f.matrix<Scalar>("x");
  const auto offsets64 = f.ints("offsets");
  const std::vector<Index> offsets(offsets64.begin(), offsets64.end());
  const auto begin = f.ints("text_begin"), end = f.ints("text_end");

  auto bidirectional = nn::AttentionSegments::packed(offsets);
  Matrix<Scalar> y(x.rows(), x.cols());
  attn.forward(y, x, bidirectional);
  EXPECT_TRUE(close_to_reference<Scalar>(y, f.matrix<double>("y_bidirectional")));

  auto causal = nn::AttentionSegments::packed(offsets);
  for (Index s = 0; s < causal.size(); ++s) causal.set_causal(s, begin[s], end[s]);
  attn.forward(y, x, causal);
  EXPECT_TRUE(close_to_reference<Scalar>(y, f.matrix<double>("y")));
}

TYPED_TEST(NnTest, SelfAttentionWithRope) {
  using Scalar = TypeParam;
  const Fixture f("layers/attention_rope.safetensors");
  const Index heads = std::stol(f.meta("heads"));
  const auto attn = load_attention<Scalar>(f, "", heads);
  const Matrix<Scalar> x = f.matrix<Scalar>("x");
  const nn::Rope<Scalar> rope(x.cols() / heads, std::stod(f.meta("theta")),
                              parse_sections(f.meta("sections")));
  const Positions positions = load_positions(f);
  Matrix<Scalar> y(x.rows(), x.cols());
  attn.forward(y, x, nn::AttentionSegments::full(x.rows()), &rope, &positions);
  EXPECT_TRUE(close_to_reference<Scalar>(y, f.matrix<double>("y")));
}

TYPED_TEST(NnTest, CrossAttention) {
  using Scalar = TypeParam;
  const Fixture f("layers/attention_cross.safetensors");
  const auto attn = load_attention<Scalar>(f, "", std::stol(f.meta("heads")));
  const Matrix<Scalar> queries = f.matrix<Scalar>("queries");
  const Matrix<Scalar> context = f.matrix<Scalar>("context");
  Matrix<Scalar> y(queries.rows(), queries.cols());
  attn.forward_cross(y, queries, context,
                     nn::AttentionSegments::full(queries.rows(), context.rows()));
  EXPECT_TRUE(close_to_reference<Scalar>(y, f.matrix<double>("y")));
}

TYPED_TEST(NnTest, TransformerBlock) {
  using Scalar = TypeParam;
  for (const std::string name : {"block_layernorm_gelu", "block_layernorm_swiglu",
                                 "block_rmsnorm_gelu", "block_rmsnorm_quick_gelu_rope"}) {
    const Fixture f("layers/" + name + ".safetensors");
    const Index heads = std::stol(f.meta("heads"));
    const NormKind kind = norm_kind(f.meta("norm"));
    const double eps = std::stod(f.meta("eps"));
    nn::TransformerBlock<Scalar> block;
    block.norm1 = load_norm<Scalar>(f, "norm1", kind, eps);
    block.norm2 = load_norm<Scalar>(f, "norm2", kind, eps);
    block.attn = load_attention<Scalar>(f, "attn.", heads);
    block.ffn = load_ffn<Scalar>(f, "ffn.", activation_kind(f.meta("activation")));
    const Matrix<Scalar> x = f.matrix<Scalar>("x");
    Matrix<Scalar> y(x.rows(), x.cols());
    if (f.has("positions")) {
      const nn::Rope<Scalar> rope(x.cols() / heads, std::stod(f.meta("theta")),
                                  parse_sections(f.meta("sections")));
      const Positions positions = load_positions(f);
      block.forward(y, x, nn::AttentionSegments::full(x.rows()), &rope, &positions);
    } else {
      block.forward(y, x, nn::AttentionSegments::full(x.rows()));
    }
    EXPECT_TRUE(close_to_reference<Scalar>(y, f.matrix<double>("y"))) << name;
  }
}

TYPED_TEST(NnTest, AttentionPool) {
  using Scalar = TypeParam;
  for (const std::string name : {"attention_pool_layernorm", "attention_pool_rmsnorm"}) {
    const Fixture f("layers/" + name + ".safetensors");
    const NormKind kind = norm_kind(f.meta("norm"));
    const double eps = std::stod(f.meta("eps"));
    nn::AttentionPool<Scalar> pool;
    pool.queries = f.matrix<Scalar>("queries");
    pool.pos_embed = f.matrix<Scalar>("pos_embed");
    pool.norm_q = load_norm<Scalar>(f, "norm_q", kind, eps);
    pool.norm_kv = load_norm<Scalar>(f, "norm_kv", kind, eps);
    pool.attn = load_attention<Scalar>(f, "attn.", std::stol(f.meta("heads")));
    const Matrix<Scalar> tokens = f.matrix<Scalar>("tokens");
    const Index steps = std::stol(f.meta("steps"));
    Matrix<Scalar> y(steps * pool.num_queries(), tokens.cols());
    pool.forward(y, tokens);
    EXPECT_TRUE(close_to_reference<Scalar>(y, f.matrix<double>("y"))) << name;
  }
}

}  // namespace
}  // namespace tessera
