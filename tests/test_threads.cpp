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
#include <tessera/tokenize/bpe_trainer.hpp>
#include <tessera/tokenize/files.hpp>

#include "pipeline_fixture.hpp"
#include "test_util.hpp"

#include <gtest/gtest.h>

#include <cstddef>
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

}  // namespace
}  // namespace tessera
