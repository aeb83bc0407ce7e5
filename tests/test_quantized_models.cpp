// Quantized models (model/quantize.hpp, model/quantized_weights.hpp, nn::Linear's int8 and
// bfloat16 weights): tessera's own encoder and a tower model of each pretrained family,
// quantized, saved, loaded; their embeddings close to fp32's; the save -> load round trip
// exact; every malformed quantized file a tessera::Error naming the tensor; and no training.

#include <tessera/model/model_io.hpp>
#include <tessera/model/pretrained.hpp>
#include <tessera/model/pretrained_save.hpp>
#include <tessera/model/quantize.hpp>
#include <tessera/model/quantized_weights.hpp>

#include "encoder_fixtures.hpp"
#include "pretrained_fixture.hpp"
#include "test_util.hpp"

#include <gmock/gmock.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace tessera {
namespace test_quantized_models {

using ::testing::HasSubstr;
namespace fs = std::filesystem;
using test::TempDir;
using nn::WeightFormat;

// The issue's bars for the cosine of a quantized model's embedding with the fp32 one's:
// int8 rounds each weight to 1/254 of its row's largest, bf16 to 8 significant bits.
constexpr double int8_min_cosine = 0.999;
constexpr double bf16_min_cosine = 0.9999;
// A ViT-B layer's quantized weight takes at most this share of fp32's bytes (int8: 1/4, plus
// a scale per row and the kernels' panel padding; the issue asks for 3.5x smaller). The
// fixtures' layers (D 16 to 48) are too small for it: padding to 16-row panels dominates.
constexpr double int8_max_share = 1 / 3.5;
constexpr double bf16_max_share = 1 / 1.9;

double min_cosine(WeightFormat f) { return f == WeightFormat::int8 ? int8_min_cosine : bf16_min_cosine; }

double cosine(const Vector<float>& a, const Vector<float>& b) {
  return a.cast<double>().dot(b.cast<double>()) / (a.cast<double>().norm() * b.cast<double>().norm());
}

// The lowest cosine of quantized and fp32 embeddings over a batch, printed for the record.
double lowest_cosine(const std::vector<Encoding<float>>& quantized,
                     const std::vector<Encoding<float>>& fp32, const std::string& what) {
  double lowest = 1;
  for (std::size_t i = 0; i < fp32.size(); ++i) {
    lowest = std::min(lowest, cosine(quantized[i].embedding, fp32[i].embedding));
  }
  std::printf("[ quantized ] %-40s lowest cosine with fp32 %.7f over %zu samples\n", what.c_str(),
              lowest, fp32.size());
  return lowest;
}

// Every quantizable layer of an encoder, by tensor name.
template <class Model>
std::map<std::string, const nn::Linear<float>*> layers_of(const Model& model) {
  std::map<std::string, const nn::Linear<float>*> out;
  for_each_weight(model.config, [&](const WeightSpec& spec, auto get) {
    if constexpr (reaches_layer<decltype(get), const Model>) {
      if (spec.quantizable) out[spec.name] = &get.layer(model);
    }
  });
  return out;
}

// Every layer of a tower model, by its slot's name and part (q, k, v of a packed in_proj).
std::map<std::string, const nn::Linear<float>*> layers_of(const TowerModel<float>& model) {
  std::map<std::string, const nn::Linear<float>*> out;
  const auto names = detail::towers_names(native_towers_config(model.config, "test"));
  for_each_model_weight(model, names, [&](const WeightSlot<const float>& slot, const std::string&) {
    for (std::size_t i = 0; i < slot.layers.size(); ++i) {
      out[slot.name + "#" + std::to_string(i)] = slot.layers[i];
    }
  });
  return out;
}

// Both layers hold the same weight in the same form, bit for bit.
void expect_same_layer(const nn::Linear<float>& a, const nn::Linear<float>& b,
                       const std::string& name) {
  SCOPED_TRACE(name);
  ASSERT_EQ(a.format(), b.format());
  if (a.format() == WeightFormat::int8) {
    const auto& qa = std::get<detail::Int8Rows>(a.quantized);
    const auto& qb = std::get<detail::Int8Rows>(b.quantized);
    EXPECT_TRUE(qa.values() == qb.values());
    EXPECT_EQ(std::memcmp(qa.scale().data(), qb.scale().data(), sizeof(float) * qa.scale().size()), 0);
  } else if (a.format() == WeightFormat::bf16) {
    const Matrix<BFloat16> va = std::get<detail::BF16Rows>(a.quantized).values();
    const Matrix<BFloat16> vb = std::get<detail::BF16Rows>(b.quantized).values();
    ASSERT_EQ(va.size(), vb.size());
    EXPECT_EQ(std::memcmp(va.data(), vb.data(), sizeof(BFloat16) * va.size()), 0);
  } else {
    EXPECT_TRUE(a.weight == b.weight);
  }
  EXPECT_TRUE(a.weight.size() == 0 || a.format() == WeightFormat::f32);
}

template <class Model>
void expect_same_layers(const Model& a, const Model& b) {
  const auto la = layers_of(a), lb = layers_of(b);
  ASSERT_EQ(la.size(), lb.size());
  for (const auto& [name, layer] : la) expect_same_layer(*layer, *lb.at(name), name);
}

template <class Model>
void expect_same_embeddings(const std::vector<Encoding<float>>& a,
                            const std::vector<Encoding<float>>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(a[i].embedding == b[i].embedding) << i;
}

// The bytes of every quantizable layer's weight.
template <class Model>
std::size_t weight_bytes(const Model& model) {
  std::size_t bytes = 0;
  for (const auto& [name, layer] : layers_of(model)) bytes += layer->weight_bytes();
  return bytes;
}

// ---- nn::Linear -------------------------------------------------------------------------------

TEST(QuantizedLinear, HoldsOnlyTheQuantizedWeightAndRunsForwardOnly) {
  nn::Linear<float> fp32(24, 10, true);
  SplitMix64 rng{5};
  for (Index i = 0; i < fp32.weight.size(); ++i) fp32.weight.data()[i] = float(rng.normal(0, 1));
  for (Index i = 0; i < fp32.bias.size(); ++i) fp32.bias[i] = float(rng.normal(0, 1));
  Matrix<float> x(3, 24);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = float(rng.normal(0, 1));
  const Matrix<float> expected = fp32.forward(x);
  for (WeightFormat f : {WeightFormat::int8, WeightFormat::bf16}) {
    SCOPED_TRACE(nn::to_string(f));
    nn::Linear<float> q = fp32;
    q.quantize(f);
    EXPECT_EQ(q.format(), f);
    EXPECT_EQ(q.weight.size(), 0);
    EXPECT_EQ(q.in_features(), 24);
    EXPECT_EQ(q.out_features(), 10);
    const Matrix<float> y = q.forward(x);
    EXPECT_LT((y - expected).norm() / expected.norm(), f == WeightFormat::int8 ? 1e-2 : 4e-3);
    Matrix<float> acc = Matrix<float>::Ones(3, 10);
    q.forward_accumulate(acc, x);
    EXPECT_TRUE(acc.isApprox((y.array() + 1).matrix(), 1e-5f));
    nn::Linear<float> grad(24, 10, true);
    Matrix<float> d_in(3, 24);
    EXPECT_THAT(test::error_of([&] { q.backward(d_in, grad, y, x); }),
                HasSubstr(std::string("is quantized (") + nn::to_string(f) +
                          "); a quantized model cannot be trained"));
    EXPECT_THAT(test::error_of([&] { q.backward_weights(grad, y, x); }),
                HasSubstr("cannot be trained"));
  }
}

// QuantizedInputs::with_residual (a patch embedding's product): the narrowed inputs' product plus
// that of what narrowing left out, bit for bit the two kernel calls; nn::PatchEmbed takes it. The
// inputs' own rounding all but vanishes: against the float product with the weight widened to
// the floats it stands for, the error is a small part of one pass's. Shapes off the packing's 16
// rows and 4 inputs; one input column 40 times the others (it takes most of each token's range).
TEST(QuantizedLinear, WithResidualNarrowsTheInputsTwice) {
  nn::PatchEmbed<float> fp32(37, 19);
  SplitMix64 rng{11};
  for (Index i = 0; i < fp32.proj.weight.size(); ++i) fp32.proj.weight.data()[i] = float(rng.normal(0, 1));
  for (Index i = 0; i < fp32.proj.bias.size(); ++i) fp32.proj.bias[i] = float(rng.normal(0, 1));
  Matrix<float> x(21, 37);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = float(rng.normal(0, 1)) * (i % 37 == 3 ? 40.0f : 1.0f);
  for (WeightFormat f : {WeightFormat::int8, WeightFormat::bf16}) {
    SCOPED_TRACE(nn::to_string(f));
    nn::PatchEmbed<float> q = fp32;
    q.proj.quantize(f);
    const bool int8 = f == WeightFormat::int8;
    const Matrix<float> widened = int8 ? std::get<detail::Int8Rows>(q.proj.quantized).dequantize()
                                       : std::get<detail::BF16Rows>(q.proj.quantized).dequantize();
    Matrix<float> exact_inputs(21, 19);
    detail::matmul<false, true, float>(exact_inputs, x, widened, false, &fp32.proj.bias);

    Matrix<float> two_calls(21, 19);
    if (int8) {
      const auto& w = std::get<detail::Int8Rows>(q.proj.quantized);
      detail::int8_matmul(two_calls, x, w, &fp32.proj.bias, false);
      detail::int8_matmul(two_calls, detail::int8_residual(x), w, nullptr, true);
    } else {
      const auto& w = std::get<detail::BF16Rows>(q.proj.quantized);
      detail::bf16_matmul(two_calls, x, w, &fp32.proj.bias, false);
      detail::bf16_matmul(two_calls, detail::bf16_residual(x), w, nullptr, true);
    }
    Matrix<float> y(21, 19), once(21, 19);
    q.proj.forward(y, x, nn::QuantizedInputs::with_residual);
    EXPECT_EQ(y, two_calls);
    q.forward(y, x);
    EXPECT_EQ(y, two_calls);
    q.proj.forward(once, x);
    const double twice_error = (y - exact_inputs).norm(), once_error = (once - exact_inputs).norm();
    std::printf("[ quantized ] %s inputs' error: %.3g once, %.3g with the residual\n", nn::to_string(f),
                once_error, twice_error);
    EXPECT_LT(twice_error, (int8 ? 0.02 : 0.05) * once_error);
  }
}

TEST(QuantizedLinear, MemoryShrinks) {
  const nn::Linear<float> fp32(768, 3072, true);  // ViT-B's MLP: [3072, 768]
  for (WeightFormat f : {WeightFormat::int8, WeightFormat::bf16}) {
    nn::Linear<float> q = fp32;
    q.quantize(f);
    const double share = double(q.weight_bytes()) / double(fp32.weight_bytes());
    std::printf("[ quantized ] %s weight of [3072, 768]: %.3f of fp32's bytes\n", nn::to_string(f), share);
    EXPECT_LE(share, f == WeightFormat::int8 ? int8_max_share : bf16_max_share);
  }
}

// ---- tessera's own encoder ---------------------------------------------------------------------

fs::path encoder_dir(const std::string& variant) { return test::data_dir() / "encoder" / variant; }

TEST(QuantizedModels, OwnEncoderCloseToFp32AndRoundTripsExactly) {
  for (const std::string variant : {"all_mean_d48", "video_pooled", "custom_routed"}) {
    SCOPED_TRACE(variant);
    const auto fp32 = load_model<float>(encoder_dir(variant));
    const auto batch = test::read_inputs<float>(encoder_dir(variant));
    ASSERT_FALSE(batch.empty());
    const auto reference = fp32.encode_batch(batch);
    for (WeightFormat f : {WeightFormat::int8, WeightFormat::bf16}) {
      SCOPED_TRACE(nn::to_string(f));
      auto model = fp32;
      const QuantizeSummary summary = quantize_model(model, {f, {}});
      EXPECT_EQ(summary.quantized.size(), layers_of(model).size());
      EXPECT_TRUE(summary.kept.empty());
      EXPECT_LT(weight_bytes(model), weight_bytes(fp32));
      const auto encoded = model.encode_batch(batch);
      EXPECT_GE(lowest_cosine(encoded, reference, variant + " " + nn::to_string(f)), min_cosine(f));

      TempDir tmp;
      save_model(model, tmp.path() / "q");
      const auto config = nlohmann::json::parse(std::ifstream(tmp.path() / "q" / "config.json"));
      EXPECT_EQ(config.at("quantization"), nn::to_string(f));
      const auto loaded = load_model<float>(tmp.path() / "q");
      expect_same_layers(model, loaded);
      expect_same_embeddings<MultiModalEncoder<float>>(loaded.encode_batch(batch), encoded);
      // saved again: the same file, byte for byte
      save_model(loaded, tmp.path() / "again");
      EXPECT_TRUE(load_safetensors(tmp.path() / "q" / weights_file_name) ==
                  load_safetensors(tmp.path() / "again" / weights_file_name));
    }
  }
}

TEST(QuantizedModels, KeepLeavesNamedWeightsFp32) {
  auto model = load_model<float>(encoder_dir("all_mean_d48"));
  const QuantizeSummary summary = quantize_model(model, {WeightFormat::int8, {"proj", "layers.1."}});
  const auto layers = layers_of(model);
  EXPECT_EQ(layers.at("proj.weight")->format(), WeightFormat::f32);
  EXPECT_EQ(layers.at("layers.1.ffn.fc1.weight")->format(), WeightFormat::f32);
  EXPECT_EQ(layers.at("layers.0.ffn.fc1.weight")->format(), WeightFormat::int8);
  EXPECT_EQ(layers.at("image.patch_embed.weight")->format(), WeightFormat::int8);
  EXPECT_THAT(summary.kept, ::testing::Contains("proj.weight"));
  EXPECT_LT(summary.bytes_after, summary.bytes_before);
  TempDir tmp;
  save_model(model, tmp.path() / "q");
  const auto file = SafetensorsFile::open(tmp.path() / "q" / weights_file_name);
  EXPECT_EQ(file.info("proj.weight").dtype, DType::F32);
  EXPECT_EQ(file.info("layers.0.ffn.fc1.weight").dtype, DType::I8);
  EXPECT_EQ(file.info("layers.0.ffn.fc1.weight.scale").dtype, DType::F32);
  EXPECT_EQ(file.info("layers.0.norm1.weight").dtype, DType::F32);
  expect_same_layers(model, load_model<float>(tmp.path() / "q"));
  // a name that keeps nothing is a typo: refused, before anything changes
  auto other = load_model<float>(encoder_dir("all_mean_d48"));
  EXPECT_THAT(test::error_of([&] { quantize_model(other, {WeightFormat::int8, {"layers.01"}}); }),
              HasSubstr("keep \"layers.01\" names no linear or patch-embedding weight"));
  EXPECT_EQ(layers_of(other).at("proj.weight")->format(), WeightFormat::f32);
}

TEST(QuantizedModels, QuantizedEncoderCannotTrain) {
  auto model = load_model<float>(encoder_dir("all_mean_d48"));
  quantize_model(model, {WeightFormat::int8, {}});
  EXPECT_THAT(test::error_of([&] { model.parameters(); }),
              HasSubstr("is quantized (int8); a quantized model has no fp32 parameters and "
                        "cannot be trained"));
  TempDir tmp;
  save_model(model, tmp.path() / "q");
  EXPECT_THAT(test::error_of([&] { load_model<double>(tmp.path() / "q"); }),
              HasSubstr("a quantized model loads as float only"));
}

// ---- malformed quantized files ---------------------------------------------------------------

// A quantized copy of all_mean_d48 (int8, proj kept), its tensors edited by `edit` and saved
// without a checksum; load_model's message.
std::string load_error(WeightFormat f,
                       const std::function<void(std::map<std::string, TensorData>&)>& edit) {
  TempDir tmp;
  auto model = load_model<float>(encoder_dir("all_mean_d48"));
  quantize_model(model, {f, {"proj"}});
  save_model(model, tmp.path() / "q");
  auto tensors = load_safetensors(tmp.path() / "q" / weights_file_name);
  edit(tensors);
  save_safetensors(tmp.path() / "q" / weights_file_name, tensors);
  return test::error_of([&] { load_model<float>(tmp.path() / "q"); });
}

TensorData f32(std::vector<float> values) { return TensorData::from_vector(values, DType::F32); }

TEST(QuantizedModels, MalformedFilesAreRefusedNamingTheTensor) {
  const std::string w = "layers.0.attn.q_proj.weight", s = w + ".scale";
  const auto rows = [](const TensorData& t) { return static_cast<std::size_t>(t.shape[0]); };
  struct Case {
    const char* what;
    std::function<void(std::map<std::string, TensorData>&)> edit;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"scale of the wrong shape",
       [&](auto& t) { t[s] = f32(std::vector<float>(rows(t[w]) + 1, 0.01f)); },
       "scale '" + s + "' is F32 [49], expected F32 [48]"},
      {"scale of the wrong dtype",
       [&](auto& t) { t[s] = TensorData::from_vector(std::vector<float>(rows(t[w]), 0.01f), DType::F16); },
       "scale '" + s + "' is F16 [48], expected F32 [48]"},
      {"NaN scale",
       [&](auto& t) { auto v = std::vector<float>(rows(t[w]), 0.01f); v[3] = NAN; t[s] = f32(v); },
       "scale '" + s + "' holds nan at row 3"},
      {"infinite scale",
       [&](auto& t) { auto v = std::vector<float>(rows(t[w]), 0.01f); v[0] = INFINITY; t[s] = f32(v); },
       "scale '" + s + "' holds inf at row 0"},
      {"negative scale",
       [&](auto& t) { auto v = std::vector<float>(rows(t[w]), 0.01f); v[5] = -0.5f; t[s] = f32(v); },
       "scale '" + s + "' holds -0.5 at row 5"},
      {"I8 without a scale", [&](auto& t) { t.erase(s); },
       "tensor '" + w + "' is I8 but has no scale tensor '" + s + "'"},
      {"a scale of no I8 tensor",
       [&](auto& t) { t["proj.weight.scale"] = f32(std::vector<float>(16, 0.01f)); },
       "tensor 'proj.weight.scale' is a scale, but 'proj.weight' is not an I8 tensor (it is F32)"},
      {"a scale of nothing",
       [&](auto& t) { t["nothing.scale"] = f32({0.01f}); },
       "tensor 'nothing.scale' is a scale, but 'nothing' is not in the file"},
      {"I8 in a norm",
       [&](auto& t) {
         t["final_norm.weight"] = TensorData::from_vector(std::vector<std::int8_t>(48, 1), DType::I8);
         t["final_norm.weight.scale"] = f32({1.0f});
       },
       "tensor 'final_norm.weight' is I8, but it must stay fp32"},
      {"BF16 in a bias of a quantized model",
       [&](auto& t) {
         t["layers.0.attn.q_proj.bias"] =
             TensorData::from_vector(std::vector<float>(48, 0.0f), DType::BF16);
       },
       "tensor 'layers.0.attn.q_proj.bias' is BF16, but in a quantized model it must stay fp32"},
      {"int8 value -128",
       [&](auto& t) { t[w].bytes[7] = std::byte{0x80}; },
       "tensor '" + w + "' holds the int8 value -128 at flat index 7"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const std::string message = load_error(WeightFormat::int8, c.edit);
    EXPECT_THAT(message, HasSubstr(c.expected));
    EXPECT_THAT(message, HasSubstr("model.safetensors"));
  }
  // bf16: a non-finite weight, and F16 in a norm of a quantized model
  EXPECT_THAT(load_error(WeightFormat::bf16, [&](auto& t) {
                t[w].bytes[2] = std::byte{0x80};  // element 1 = 0x7F80: +inf
                t[w].bytes[3] = std::byte{0x7F};
              }),
              HasSubstr("tensor '" + w + "' holds a non-finite value (inf) at flat index 1"));
  EXPECT_THAT(load_error(WeightFormat::bf16, [&](auto& t) {
                t["final_norm.weight"] =
                    TensorData::from_vector(std::vector<float>(48, 1.0f), DType::F16);
              }),
              HasSubstr("tensor 'final_norm.weight' is F16, but in a quantized model it must stay fp32"));
}

// ---- tower models of every pretrained family ------------------------------------------------

// The samples of a pretrained fixture's cases.safetensors (text ids, images, video, audio).
std::vector<Sample<float>> fixture_samples(const std::string& kind) {
  const auto file = SafetensorsFile::open(test::pretrained_dir(kind) / "cases.safetensors");
  std::vector<Sample<float>> out;
  for (const std::string modality : {"text", "image", "video", "audio"}) {
    for (int i = 0;; ++i) {
      const std::string name = modality + "." + std::to_string(i);
      Sample<float> s;
      if (file.contains(name + ".ids")) {
        s.text = file.read<std::int64_t>(name + ".ids");
      } else if (file.contains(name + ".pixels")) {
        const auto& shape = file.info(name + ".pixels").shape;
        const auto values = file.read<float>(name + ".pixels");
        s.image = Tensor3<float>(shape[0], shape[1], shape[2]);
        std::copy(values.begin(), values.end(), s.image->data());
      } else if (file.contains(name + ".frames")) {
        const auto& shape = file.info(name + ".frames").shape;
        const auto values = file.read<float>(name + ".frames");
        s.video = Tensor4<float>(shape[0], shape[1], shape[2], shape[3]);
        std::copy(values.begin(), values.end(), s.video->data());
      } else if (file.contains(name + ".features")) {
        s.audio = file.read_matrix<float>(name + ".features");
      } else {
        break;
      }
      out.push_back(std::move(s));
    }
  }
  return out;
}

TEST(QuantizedModels, TowerModelsOfEveryFamilyCloseToFp32AndRoundTripExactly) {
  for (const std::string kind : {"hf_clip", "open_clip", "imagebind", "towers_torchvision"}) {
    SCOPED_TRACE(kind);
    if (!fs::exists(test::pretrained_dir(kind) / "model")) GTEST_SKIP() << kind << " fixture missing";
    const auto fp32 = load_tower_model<float>(test::pretrained_dir(kind) / "model");
    const auto batch = fixture_samples(kind);
    ASSERT_GE(batch.size(), 2u);
    const auto reference = fp32.encode_batch(batch);
    for (WeightFormat f : {WeightFormat::int8, WeightFormat::bf16}) {
      SCOPED_TRACE(nn::to_string(f));
      auto model = fp32;
      const QuantizeSummary summary = quantize_model(model, {f, {}});
      EXPECT_FALSE(summary.quantized.empty());
      EXPECT_LT(weight_bytes(model), weight_bytes(fp32));
      const auto encoded = model.encode_batch(batch);
      EXPECT_GE(lowest_cosine(encoded, reference, kind + " " + nn::to_string(f)), min_cosine(f));

      TempDir tmp;
      save_towers_model(model, tmp.path() / "q", test::pretrained_dir(kind) / "model");
      EXPECT_EQ(detect_model_kind(tmp.path() / "q"), ModelKind::tessera_towers);
      const auto loaded = load_tower_model<float>(tmp.path() / "q");
      expect_same_layers(model, loaded);
      expect_same_embeddings<TowerModel<float>>(loaded.encode_batch(batch), encoded);
      // a quantized model goes back into its family's own form: refused, nothing written
      if (kind != "towers_torchvision") {
        EXPECT_THAT(test::error_of([&] {
                      save_tower_model(model, test::pretrained_dir(kind) / "model", tmp.path() / "back");
                    }),
                    HasSubstr("a quantized model is written in tessera's native form"));
        EXPECT_FALSE(fs::exists(tmp.path() / "back"));
      }
    }
  }
}

TEST(QuantizedModels, QuantizedTowersRefuseMalformedFilesAndTraining) {
  TempDir tmp;
  auto model = load_tower_model<float>(test::pretrained_dir("imagebind") / "model");
  quantize_model(model, {WeightFormat::int8, {}});
  EXPECT_THAT(test::error_of([&] { model.parameters(); }),
              HasSubstr("is quantized (int8); a quantized model has no fp32 parameters"));
  save_towers_model(model, tmp.path() / "q");
  const fs::path file = tmp.path() / "q" / weights_file_name;
  const auto original = load_safetensors(file);
  std::string packed;  // a packed in_proj's name
  for (const auto& [name, tensor] : original) {
    if (name.ends_with("attn.in_proj_weight")) packed = name;
  }
  ASSERT_FALSE(packed.empty());
  const auto expect_refused = [&](const std::function<void(std::map<std::string, TensorData>&)>& edit,
                                  const std::string& expected) {
    auto tensors = original;
    edit(tensors);
    save_safetensors(file, tensors);
    EXPECT_THAT(test::error_of([&] { load_tower_model<float>(tmp.path() / "q"); }),
                HasSubstr(expected));
  };
  expect_refused([&](auto& t) { t.erase(packed + ".scale"); },
                 "tensor '" + packed + "' is I8 but has no scale tensor");
  expect_refused([&](auto& t) { t[packed].bytes[0] = std::byte{0x80}; },
                 "tensor '" + packed + "' holds the int8 value -128 at flat index 0");
  expect_refused([&](auto& t) {
    auto v = std::vector<float>(static_cast<std::size_t>(t[packed].shape[0]), 0.01f);
    v[1] = -1;
    t[packed + ".scale"] = f32(v);
  }, "scale '" + packed + ".scale' holds -1 at row 1");
  expect_refused([&](auto& t) { t["text.ln_final.weight.scale"] = f32({1.0f}); }, "is a scale, but");
  save_safetensors(file, original);
  EXPECT_NO_THROW(load_tower_model<float>(tmp.path() / "q"));
}

}  // namespace test_quantized_models
}  // namespace tessera
