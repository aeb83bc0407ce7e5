// Activation checkpointing per transformer layer (EncoderTrace::Options::checkpoint_layers,
// model/encoder_trace.hpp): the trace keeps only each layer's input and backward runs the
// layer's forward again before its backward. The gradients must be bitwise those of the full
// trace (the same operations on the same values), on one thread and on two, for every kind of
// encoder the gradient fixtures cover (every modality, RoPE, causal text, each pooling,
// SwiGLU, RMSNorm, custom modalities), through MultiModalEncoder::backward and through
// contrastive_gradients (train/step.hpp), whose callers turn it on through the trace.

#include <tessera/core/parallel.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/model_io.hpp>
#include <tessera/train/step.hpp>

#include "encoder_fixtures.hpp"
#include "test_util.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

namespace tessera {
namespace test_checkpointing {

using ::testing::HasSubstr;

// The encoder fixtures of test_grad.cpp's gradient checks: between them, every modality,
// both position kinds, causal text, each pooling, both norms, SwiGLU and custom modalities.
const std::vector<std::string> variants = {"all_routed_causal_sections", "all_cls_learned_f16",
                                           "text_image_bf16", "video_cls_swiglu",
                                           "custom_routed"};

// Every weight's gradient (logit_scale included) of `model` on `batch` for the loss
// sum(E * W), W a fixed random [N, E]: the trace's forward, then backward.
template <class Scalar>
MultiModalEncoder<Scalar> gradients(const MultiModalEncoder<Scalar>& model,
                                    const std::vector<Sample<Scalar>>& batch, bool checkpoint,
                                    EncoderTrace<Scalar>* kept = nullptr) {
  EncoderTrace<Scalar> trace;
  trace.options.checkpoint_layers = checkpoint;
  model.encode_batch(batch, trace);
  std::srand(181);
  const Matrix<Scalar> d_e = Matrix<Scalar>::Random(static_cast<Index>(batch.size()),
                                                    model.config.embed_dim);  // [N, E]
  MultiModalEncoder<Scalar> grad(model.config);
  grad.set_zero();
  model.backward(grad, d_e, trace);
  if (kept != nullptr) *kept = std::move(trace);
  return grad;
}

// The names of the weights whose gradients differ in any bit ("" when none do).
template <class Scalar>
std::string differing(const MultiModalEncoder<Scalar>& a, const MultiModalEncoder<Scalar>& b) {
  std::string names;
  const auto pa = a.parameters(), pb = b.parameters();
  EXPECT_EQ(pa.size(), pb.size());
  for (std::size_t i = 0; i < std::min(pa.size(), pb.size()); ++i) {
    // bitwise: memcmp-like through ==, and no NaN may hide (a NaN gradient fails both ways)
    if (!std::equal(pa[i].data, pa[i].data + pa[i].size(), pb[i].data)) {
      names += (names.empty() ? "" : ", ") + pa[i].name;
    }
  }
  return names;
}

template <class Scalar>
void expect_bitwise_equal_gradients() {
  for (const auto& variant : variants) {
    SCOPED_TRACE(variant);
    const auto dir = test::data_dir() / "encoder" / variant;
    const auto model = load_model<Scalar>(dir);
    const auto batch = test::read_inputs<Scalar>(dir);
    for (const int threads : {1, 2}) {
      SCOPED_TRACE("threads " + std::to_string(threads));
      const ScopedThreads scoped(threads);
      EncoderTrace<Scalar> full_trace, checkpointed_trace;
      const auto full = gradients<Scalar>(model, batch, false, &full_trace);
      const auto checkpointed = gradients<Scalar>(model, batch, true, &checkpointed_trace);
      EXPECT_EQ(differing(full, checkpointed), "");
      EXPECT_NE(full.layers.front().attn.q_proj.weight.norm(), Scalar(0)) << "a real gradient";
      // the checkpointed trace holds the layers' inputs and no saved values
      EXPECT_EQ(full_trace.layers.size(), model.layers.size());
      EXPECT_TRUE(checkpointed_trace.layers.empty());
      EXPECT_EQ(checkpointed_trace.layer_inputs.size(), model.layers.size());
      EXPECT_LT(checkpointed_trace.transformer_bytes(), full_trace.transformer_bytes());
      // and the same encodings
      ASSERT_EQ(full_trace.encodings.size(), checkpointed_trace.encodings.size());
      for (std::size_t i = 0; i < full_trace.encodings.size(); ++i) {
        EXPECT_TRUE(full_trace.encodings[i].embedding == checkpointed_trace.encodings[i].embedding);
      }
    }
  }
}

TEST(Checkpointing, GradientsAreBitwiseThoseOfTheFullTraceInFloat) {
  expect_bitwise_equal_gradients<float>();
}

TEST(Checkpointing, GradientsAreBitwiseThoseOfTheFullTraceInDouble) {
  expect_bitwise_equal_gradients<double>();
}

// What the trace holds per layer, checkpointed or not, against the shapes written out.
TEST(Checkpointing, TraceBytesCountTheLayersInputsAndSavedValues) {
  const Config config = parse_config(nlohmann::json::parse(
      R"({"hidden_dim": 16, "num_layers": 3, "num_heads": 2, "ffn_dim": 40, "embed_dim": 8,
          "text": {"vocab_size": 30, "max_tokens": 8}})"),
      "test config");
  MultiModalEncoder<float> model(config);
  model.init_random(5);
  std::vector<Sample<float>> batch(2);
  batch[0].text = std::vector<std::int64_t>{1, 2, 3, 4, 5};
  batch[1].text = std::vector<std::int64_t>{6, 7, 8};
  const std::size_t tokens = 8, d = 16, f = 40, h = 2, layers = 3;
  EncoderTrace<float> full, checkpointed;
  checkpointed.options.checkpoint_layers = true;
  model.encode_batch(batch, full);
  model.encode_batch(batch, checkpointed);
  // both: the layers' inputs, the final norm's input, mean and rstd, the encodings' hidden
  const std::size_t common = layers * tokens * d + tokens * d + 2 * tokens + tokens * d;
  // per layer: normed1, q, k, v, ctx, h, normed2 (7 D), logsumexp (H), the FFN's hidden (F),
  // two norms' mean and rstd (4)
  const std::size_t saved = layers * tokens * (7 * d + h + f + 4);
  EXPECT_EQ(checkpointed.transformer_bytes(), common * sizeof(float));
  EXPECT_EQ(full.transformer_bytes(), (common + saved) * sizeof(float));
  EXPECT_TRUE(checkpointed.options.checkpoint_layers) << "encode_batch keeps the options";
}

// The step's callers turn checkpointing on through the trace they pass: contrastive_gradients
// is unchanged and its gradients are bitwise the same.
TEST(Checkpointing, ContrastiveGradientsTakeItFromTheTrace) {
  const Config config = parse_config(nlohmann::json::parse(
      R"({"hidden_dim": 16, "num_layers": 2, "num_heads": 2, "ffn_dim": 32, "embed_dim": 8,
          "position": "rope", "text": {"vocab_size": 30, "max_tokens": 8, "causal": true},
          "image": {"size": 8, "patch": 4}})"),
      "test config");
  MultiModalEncoder<float> model(config), full(config), checkpointed(config);
  model.init_random(6);
  std::srand(7);
  std::vector<Sample<float>> batch(6);
  for (int i = 0; i < 3; ++i) {
    batch[static_cast<std::size_t>(i)].text = std::vector<std::int64_t>{i, 2 * i + 1, 29 - i};
    Tensor3<float> image(3, 8, 8);
    image.setRandom();
    batch[static_cast<std::size_t>(3 + i)].image = image;
  }
  const PairGroup pairs{0, 3, 3, 1.0};
  for (const int threads : {1, 2}) {
    SCOPED_TRACE("threads " + std::to_string(threads));
    const ScopedThreads scoped(threads);
    EncoderTrace<float> full_trace, checkpointed_trace;
    checkpointed_trace.options.checkpoint_layers = true;
    full.set_zero();
    checkpointed.set_zero();
    const StepStats a = contrastive_gradients<float>(model, full, batch, std::span(&pairs, 1), full_trace);
    const StepStats b = contrastive_gradients<float>(model, checkpointed, batch, std::span(&pairs, 1),
                                                     checkpointed_trace);
    EXPECT_EQ(a.loss, b.loss);
    EXPECT_EQ(differing(full, checkpointed), "");
    EXPECT_TRUE(checkpointed_trace.layers.empty());
  }
}

// A trace that does not match the model is an error, not a read past its end.
TEST(Checkpointing, ATraceOfAnotherModelIsAnError) {
  const Config config = parse_config(nlohmann::json::parse(
      R"({"hidden_dim": 16, "num_layers": 2, "num_heads": 2, "ffn_dim": 32, "embed_dim": 8,
          "text": {"vocab_size": 30, "max_tokens": 8}})"),
      "test config");
  MultiModalEncoder<float> model(config), grad(config);
  model.init_random(8);
  std::vector<Sample<float>> batch(1);
  batch[0].text = std::vector<std::int64_t>{1, 2, 3};
  for (const bool checkpoint : {false, true}) {
    EncoderTrace<float> trace;
    trace.options.checkpoint_layers = checkpoint;
    model.encode_batch(batch, trace);
    trace.layer_inputs.pop_back();
    const Matrix<float> d_e = Matrix<float>::Ones(1, 8);
    EXPECT_THAT(test::error_of([&] { model.backward(grad, d_e, trace); }),
                HasSubstr("the trace holds 1 layer inputs"));
  }
}

}  // namespace test_checkpointing
}  // namespace tessera
