// One loaded model shared by many threads (docs/robustness.md, "Threads"): 8 threads encode
// different raw inputs at once through one FrontEnds and one MultiModalEncoder, and every
// result equals, bit for bit, the single-threaded encoding of the same input. The tsan preset
// builds this file alone with ThreadSanitizer, which reports any data race it sees.

#include <tessera/core/parallel.hpp>
#include <tessera/core/warning.hpp>
#include <tessera/io/y4m.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/model/model_io.hpp>
#include <tessera/model/tower_model.hpp>
#include <tessera/tokenize/bpe_trainer.hpp>
#include <tessera/tokenize/files.hpp>

#include "pipeline_fixture.hpp"
#include "test_util.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace tessera {
namespace test_threads {

constexpr int thread_count = 8;
constexpr int rounds = 3;  // each thread encodes its inputs this many times

struct Result {
  Vector<float> embedding;
  Matrix<float> hidden;
};

bool same_bits(const Result& a, const Result& b) {
  return a.embedding.size() == b.embedding.size() && a.hidden.rows() == b.hidden.rows() &&
         a.hidden.cols() == b.hidden.cols() && a.embedding == b.embedding && a.hidden == b.hidden;
}

TEST(Threads, EightThreadsEncodeWithOneSharedModel) {
  test::TempDir dir;
  const std::vector<std::string> captions = {"a red square moving left", "a rising tone",
                                             "a blue circle", "a falling tone in the dark"};
  train_bpe(captions, 300).save(dir.path());
  test::write_moving_bar_video(dir.path() / "a.y4m", 8, 235);
  test::write_moving_bar_video(dir.path() / "b.y4m", 12, 120);
  {
    MultiModalEncoder<float> fresh(parse_config(nlohmann::json::parse(R"({
        "hidden_dim": 32, "num_layers": 2, "num_heads": 4, "ffn_dim": 64, "embed_dim": 16,
        "pooling": "routed", "text": {"vocab_size": 300, "max_tokens": 16},
        "image": {"size": 32, "patch": 8}, "audio": {"n_mels": 16, "max_tokens": 64},
        "video": {"tubelet": 2}})")));
    fresh.init_random(11);
    save_model(fresh, dir.path());
  }
  const MultiModalEncoder<float> model = load_model<float>(dir.path());
  const FrontEnds front(model.config, dir.path());

  const auto image = [](const char* name) { return test::data_dir() / "image" / "sources" / name; };
  const auto audio = [](const char* name) { return test::data_dir() / "audio" / name; };
  std::vector<SampleFiles> inputs(thread_count);
  inputs[0].text = captions[0];
  inputs[1].image = image("coffee.png");
  inputs[2].audio = audio("pipeline_kaldi.wav");
  inputs[3].video = dir.path() / "a.y4m";
  inputs[4].text = captions[1];
  inputs[4].image = image("chelsea.jpg");
  inputs[5].text = captions[3];
  inputs[5].audio = audio("pipeline_whisper.wav");
  inputs[6].image = image("gray.png");
  inputs[6].video = dir.path() / "b.y4m";
  inputs[7].text = captions[2];
  inputs[7].image = image("astronaut.jpg");
  inputs[7].audio = audio("pipeline_kaldi.wav");
  inputs[7].video = dir.path() / "a.y4m";

  const auto encode = [&](const SampleFiles& files) {
    const Encoding<float> encoding = model.encode(front.load(files));
    return Result{encoding.embedding, encoding.hidden};
  };
  // Captions longer than max_tokens warn (a shared handler, called under its lock).
  int warnings = 0;
  const WarningHandler previous = set_warning_handler([&](const std::string&) { ++warnings; });
  std::vector<Result> expected;
  {
    ScopedThreads one(1);
    for (const auto& files : inputs) expected.push_back(encode(files));
  }
  const int warnings_per_pass = warnings;
  warnings = 0;

  // Thread t encodes inputs t, t+1, ... in turn, so that at any moment the threads work on
  // different inputs and modalities; errors are kept and reported after the join.
  std::vector<std::vector<Result>> results(thread_count);
  std::vector<std::string> errors(thread_count);
  std::vector<std::thread> threads;
  for (int t = 0; t < thread_count; ++t) {
    threads.emplace_back([&, t] {
      try {
        for (int i = 0; i < rounds * thread_count; ++i) {
          results[static_cast<std::size_t>(t)].push_back(
              encode(inputs[static_cast<std::size_t>((t + i) % thread_count)]));
        }
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(t)] = e.what();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  set_warning_handler(previous);
  EXPECT_GT(warnings_per_pass, 0);
  EXPECT_EQ(warnings, warnings_per_pass * rounds * thread_count);

  for (int t = 0; t < thread_count; ++t) {
    const auto& mine = results[static_cast<std::size_t>(t)];
    ASSERT_EQ(errors[static_cast<std::size_t>(t)], "") << "thread " << t;
    ASSERT_EQ(mine.size(), static_cast<std::size_t>(rounds * thread_count));
    for (int i = 0; i < rounds * thread_count; ++i) {
      const int input = (t + i) % thread_count;
      EXPECT_TRUE(same_bits(mine[static_cast<std::size_t>(i)],
                            expected[static_cast<std::size_t>(input)]))
          << "thread " << t << ", encoding " << i << " (input " << input << ")";
    }
  }
}

// A small text and audio tower model (causal packed texts; add_bias_kv, overlapping patches, a
// stem norm) with random weights at scales that keep activations O(1).
TowerModel<float> small_tower_model() {
  TowerModelConfig config;
  config.family = "test";
  config.embed_dim = 16;
  TowerConfig text;
  text.modality = Modality::text;
  text.width = 32;
  text.layers = 2;
  text.heads = 4;
  text.ffn_dim = 64;
  text.embed_dim = 16;
  text.activation = Activation::quick_gelu;
  text.causal = true;
  text.pooling = TowerPooling::eot_argmax;
  text.cls_token = false;
  text.vocab_size = 100;
  text.context_length = 64;
  TowerConfig audio = text;
  audio.modality = Modality::audio;
  audio.activation = Activation::gelu;
  audio.causal = false;
  audio.pooling = TowerPooling::cls;
  audio.cls_token = true;
  audio.bias_kv = true;
  audio.channels = 1;
  audio.height = 16;
  audio.width_in = 24;
  audio.kernel = 8;
  audio.stride = 4;
  audio.stem_norm = true;
  config.towers = {{Modality::text, text}, {Modality::audio, audio}};
  TowerModel<float> model(config, "small_tower_model");
  std::srand(5);
  const auto fill = [](auto& values, float scale) {
    values.setRandom();
    values *= scale;
  };
  for (auto& [m, tower] : model.towers) {
    const auto linear = [&](nn::Linear<float>& l) {
      fill(l.weight, 1.0f / std::sqrt(static_cast<float>(l.in_features())));
      fill(l.bias, 0.05f);
    };
    fill(tower.token_embedding, 0.3f);
    linear(tower.patch);
    fill(tower.class_embedding, 0.3f);
    fill(tower.positional_embedding, 0.3f);
    for (auto& b : tower.blocks) {
      for (auto* l : {&b.attn.q_proj, &b.attn.k_proj, &b.attn.v_proj, &b.attn.out_proj,
                      &b.ffn.fc1, &b.ffn.fc2}) {
        linear(*l);
      }
      fill(b.attn.bias_k, 0.3f);
      fill(b.attn.bias_v, 0.3f);
    }
    linear(tower.proj);
  }
  return model;
}

// The towers' products are cut into tiles of their shape alone (detail/matmul.hpp): a batch
// of texts whose products make several tiles (1090 tokens: 3 row tiles made 4) gives the same
// bits for 1, 2 or 3 OpenMP threads, and for 4 threads encoding at once with one model (a
// Tower keeps its buffers per call).
TEST(Threads, TowersGiveTheSameBitsForAnyThreadCountAndConcurrentCallers) {
  const TowerModel<float> model = small_tower_model();
  std::vector<Sample<float>> batch;
  Index text_tokens = 0;
  for (Index i = 0; i < 20; ++i) {
    Sample<float> s;
    const Index n = 45 + i;  // 45 to 64 tokens, 1090 in all
    s.text = std::vector<std::int64_t>(static_cast<std::size_t>(n));
    for (Index j = 0; j < n; ++j) (*s.text)[static_cast<std::size_t>(j)] = (i * 31 + j * 7) % 97;
    s.text->back() = 99;  // the end token: the largest id
    text_tokens += n;
    batch.push_back(std::move(s));
  }
  ASSERT_GT(text_tokens, 2 * detail::matmul_tile_max);
  for (Index i = 0; i < 3; ++i) {
    Sample<float> s;
    s.audio = Matrix<float>::Random(16, 24 * (i + 1));  // 1 to 3 clips
    batch.push_back(std::move(s));
  }
  const auto encode = [&] {
    std::vector<Result> out;
    for (const auto& e : model.encode_batch(std::span<const Sample<float>>(batch))) {
      out.push_back(Result{e.embedding, e.hidden});
    }
    return out;
  };
  const auto same = [](const std::vector<Result>& a, const std::vector<Result>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (!same_bits(a[i], b[i])) return false;
    }
    return true;
  };
  std::vector<Result> expected;
  {
    ScopedThreads one(1);
    expected = encode();
  }
  for (const int omp_threads : {2, 3}) {
    ScopedThreads scoped(omp_threads);
    EXPECT_TRUE(same(encode(), expected)) << omp_threads << " threads";
  }
  std::vector<std::vector<Result>> results(4);
  std::vector<std::string> errors(4);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < results.size(); ++t) {
    threads.emplace_back([&, t] {
      try {
        results[t] = encode();
      } catch (const std::exception& e) {
        errors[t] = e.what();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (std::size_t t = 0; t < results.size(); ++t) {
    ASSERT_EQ(errors[t], "") << "thread " << t;
    EXPECT_TRUE(same(results[t], expected)) << "thread " << t;
  }
}

}  // namespace
}  // namespace tessera
