// bench_tokenizer: text tokenizer throughput on tests/data/text/corpus.txt, one thread.
//
//   BM_gpt2_encode/warm  Gpt2Bpe::encode over every corpus line, the thread's word cache
//                        kept between passes (a long-running program).
//   BM_gpt2_encode/cold  the same with the cache emptied before each pass (every distinct
//                        word runs the merge loop once per pass).
//   BM_clip_encode       ClipBpe::encode (lowercasing, CLIP's pattern, "</w>"), warm, on a
//                        stand-in vocabulary trained here (CLIP's files are not at hand).
//   BM_train_bpe         train_bpe on the corpus to 4096 ids.
//
// Counters: MB/s of the corpus' UTF-8 bytes and tokens/s. The GPT-2 benchmarks use the real
// GPT-2 files from the conformance reference directory ($TESSERA_GPT2_REFERENCE_DIR, else
// <source dir>/build/gpt2-reference; see docs/text.md); without it they use a 8192-id
// vocabulary trained on the corpus, and the label says so. Compare with the npm reference:
//
//   node tests/reference/gpt2_bench.js build/gpt2-reference
//   build/bench/bin/bench_tokenizer

#include <benchmark/benchmark.h>

#ifndef TESSERA_HAS_ICU
// The tokenizers need ICU (their headers #error without it).
static void BM_tokenizer_needs_icu(benchmark::State& state) {
  for (auto _ : state) {
  }
  state.SkipWithError("tessera was configured without ICU (libicu-dev): no tokenizer benchmarks");
}
BENCHMARK(BM_tokenizer_needs_icu);
#else

#include <tessera/tokenize/bpe_trainer.hpp>
#include <tessera/tokenize/clip_bpe.hpp>
#include <tessera/tokenize/gpt2_bpe.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

fs::path source_dir() { return fs::path(__FILE__).parent_path().parent_path(); }

// The corpus cases, unescaped ("\n" -> LF, "\r" -> CR, "\\" -> backslash).
const std::vector<std::string>& corpus() {
  static const std::vector<std::string> lines = [] {
    std::ifstream in(source_dir() / "tests" / "data" / "text" / "corpus.txt", std::ios::binary);
    if (!in) throw tessera::Error("bench_tokenizer: cannot open tests/data/text/corpus.txt");
    std::vector<std::string> out;
    std::string line;
    while (std::getline(in, line)) {
      std::string text;
      for (std::size_t i = 0; i < line.size(); ++i) {
        if (line[i] == '\\' && i + 1 < line.size()) {
          const char e = line[++i];
          text += e == 'n' ? '\n' : e == 'r' ? '\r' : e;
        } else {
          text += line[i];
        }
      }
      out.push_back(std::move(text));
    }
    return out;
  }();
  return lines;
}

std::size_t corpus_bytes() {
  std::size_t bytes = 0;
  for (const auto& line : corpus()) bytes += line.size();
  return bytes;
}

struct Gpt2Setup {
  std::unique_ptr<tessera::Gpt2Bpe> tokenizer;
  std::string label;
};

const Gpt2Setup& gpt2() {
  static const Gpt2Setup setup = [] {
    const char* env = std::getenv("TESSERA_GPT2_REFERENCE_DIR");
    const fs::path dir = env != nullptr && *env != '\0' ? fs::path(env)
                                                        : source_dir() / "build" / "gpt2-reference";
    Gpt2Setup out;
    if (fs::exists(dir / "encoder.json") && fs::exists(dir / "vocab.bpe")) {
      out.tokenizer = std::make_unique<tessera::Gpt2Bpe>(
          tessera::Gpt2Bpe::load(dir / "encoder.json", dir / "vocab.bpe"));
      out.label = "GPT-2 vocab (50257)";
    } else {
      const auto model = tessera::train_bpe(corpus(), 8192);
      out.tokenizer = std::make_unique<tessera::Gpt2Bpe>(model.vocab, model.merges);
      out.label = "no GPT-2 reference: vocab trained on the corpus (8192)";
    }
    return out;
  }();
  return setup;
}

void set_counters(benchmark::State& state, std::size_t tokens_per_pass) {
  state.counters["MB/s"] = benchmark::Counter(static_cast<double>(corpus_bytes()) / 1e6,
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(tokens_per_pass),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

// Arg: 1 = warm (the word cache kept), 0 = cold (emptied before each pass).
void BM_gpt2_encode(benchmark::State& state) {
  const auto& setup = gpt2();
  const bool warm = state.range(0) != 0;
  // Encoding with another tokenizer makes this thread's cache switch owners, which empties it.
  const tessera::Gpt2Bpe evictor(tessera::BpeVocabulary{{"a", 0}}, tessera::BpeMerges{});
  std::size_t tokens = 0;
  for (const auto& line : corpus()) tokens += setup.tokenizer->encode(line).size();
  for (auto _ : state) {
    if (!warm) {
      state.PauseTiming();
      benchmark::DoNotOptimize(evictor.encode("a"));
      state.ResumeTiming();
    }
    for (const auto& line : corpus()) {
      auto ids = setup.tokenizer->encode(line);
      benchmark::DoNotOptimize(ids.data());
    }
  }
  set_counters(state, tokens);
  state.SetLabel(setup.label);
}
BENCHMARK(BM_gpt2_encode)->ArgName("warm")->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond);

void BM_clip_encode(benchmark::State& state) {
  // A CLIP-like vocabulary: train_bpe's merges on the corpus plus the "</w>" forms of the
  // 256 byte symbols and the two special tokens (a stand-in for CLIP's files: it measures
  // the speed of the pipeline, not CLIP's exact tokens).
  static const tessera::ClipBpe tokenizer = [] {
    tessera::BpeTrainerOptions options;
    options.end_of_text = false;
    const auto model = tessera::train_bpe(corpus(), 4096, options);
    tessera::BpeVocabulary vocab = model.vocab;
    std::int64_t next = static_cast<std::int64_t>(vocab.size());
    for (int i = 0; i < 256; ++i) vocab.emplace_back(model.vocab[static_cast<std::size_t>(i)].first + "</w>", next++);
    vocab.emplace_back("<|startoftext|>", next++);
    vocab.emplace_back("<|endoftext|>", next++);
    const tessera::BpeMerges& merges = model.merges;
    return tessera::ClipBpe(vocab, merges);
  }();
  std::size_t tokens = 0;
  for (const auto& line : corpus()) tokens += tokenizer.encode(line).size();
  for (auto _ : state) {
    for (const auto& line : corpus()) {
      auto ids = tokenizer.encode(line);
      benchmark::DoNotOptimize(ids.data());
    }
  }
  set_counters(state, tokens);
}
BENCHMARK(BM_clip_encode)->Unit(benchmark::kMillisecond);

void BM_train_bpe(benchmark::State& state) {
  const auto vocab_size = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    auto model = tessera::train_bpe(corpus(), vocab_size);
    benchmark::DoNotOptimize(model.merges.data());
  }
  state.counters["MB/s"] = benchmark::Counter(static_cast<double>(corpus_bytes()) / 1e6,
                                              benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_train_bpe)->ArgName("vocab")->Arg(4096)->Unit(benchmark::kMillisecond);

}  // namespace

#endif  // TESSERA_HAS_ICU

BENCHMARK_MAIN();
