// bench_audio: the audio front end (SPEC 5.3) on 30 s of audio, in times real time.
//
//   case              input                                     work per iteration
//   fbank             30 s at 16 kHz (480000 samples)           kaldi_fbank, 128 mels
//   whisper           30 s at 16 kHz                            whisper_logmel, 80 mels
//   resample_44100    30 s at 44.1 kHz                          resample to 16 kHz
//   resample_awkward  30 s at 44.101 kHz (rate:44101), 7.999     resample to 16 kHz: the direct
//                     kHz (7999), 767.999 kHz (767999)          plan (torchaudio would build a
//                                                               [16000, 44135] kernel for 44101)
//   pipeline_44100    30 s at 44.1 kHz                          resample + fbank + normalize
//
// The signal is a deterministic mix of tones and noise. Counter `x_realtime` = audio seconds
// per wall-clock second (30 / time of one call). Each case runs with 1 and 2 threads.
// tests/reference/bench_audio_torch.py times torchaudio on the same cases for comparison.
//
//   build/bench/bin/bench_audio [--benchmark_filter=fbank]

#include <tessera/core/parallel.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/config.hpp>
#include <tessera/tokenize/audio.hpp>

#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <numbers>

namespace {

using tessera::Index;
using tessera::Vector;

constexpr double seconds = 30.0;

// 30 s at `rate`: two tones, a slow chirp and uniform noise from a fixed LCG.
Vector<float> signal(Index rate) {
  const auto n = static_cast<Index>(seconds * static_cast<double>(rate));
  Vector<float> x(n);
  std::uint32_t state = 12345;
  for (Index i = 0; i < n; ++i) {
    const double t = static_cast<double>(i) / static_cast<double>(rate);
    state = state * 1664525u + 1013904223u;
    const double noise = (static_cast<double>(state >> 8) / 16777216.0 - 0.5) * 0.1;
    x(i) = static_cast<float>(0.3 * std::sin(2 * std::numbers::pi * 440.0 * t) +
                              0.2 * std::sin(2 * std::numbers::pi * 3000.0 * t) +
                              0.2 * std::sin(2 * std::numbers::pi * (100.0 + 50.0 * t) * t) + noise);
  }
  return x;
}

const Vector<float>& signal_16k() {
  static const Vector<float> x = signal(16000);
  return x;
}
const Vector<float>& signal_44k() {
  static const Vector<float> x = signal(44100);
  return x;
}

void finish(benchmark::State& state) {
  state.counters["x_realtime"] = benchmark::Counter(
      seconds * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_fbank(benchmark::State& state) {
  tessera::ScopedThreads threads(static_cast<int>(state.range(0)));
  const Vector<float>& x = signal_16k();
  for (auto _ : state) {
    auto f = tessera::kaldi_fbank(x, 16000, 128);
    benchmark::DoNotOptimize(f.data());
  }
  finish(state);
}

void BM_whisper(benchmark::State& state) {
  tessera::ScopedThreads threads(static_cast<int>(state.range(0)));
  const Vector<float>& x = signal_16k();
  for (auto _ : state) {
    auto f = tessera::whisper_logmel(x, 80);
    benchmark::DoNotOptimize(f.data());
  }
  finish(state);
}

void BM_resample_44100(benchmark::State& state) {
  tessera::ScopedThreads threads(static_cast<int>(state.range(0)));
  const Vector<float>& x = signal_44k();
  for (auto _ : state) {
    auto y = tessera::resample(x, 44100, 16000);
    benchmark::DoNotOptimize(y.data());
  }
  finish(state);
}

// Rates sharing few factors with 16000: resample's direct plan (docs/audio.md).
void BM_resample_awkward(benchmark::State& state) {
  const Index rate = state.range(0);
  tessera::ScopedThreads threads(static_cast<int>(state.range(1)));
  const Vector<float> x = signal(rate);
  for (auto _ : state) {
    auto y = tessera::resample(x, rate, 16000);
    benchmark::DoNotOptimize(y.data());
  }
  finish(state);
}

void BM_pipeline_44100(benchmark::State& state) {
  tessera::ScopedThreads threads(static_cast<int>(state.range(0)));
  const Vector<float>& x = signal_44k();
  const tessera::AudioConfig audio;  // kaldi_fbank, 128 mels, 16 kHz
  for (auto _ : state) {
    auto f = tessera::preprocess_audio(x, 44100, audio);
    benchmark::DoNotOptimize(f.data());
  }
  finish(state);
}

BENCHMARK(BM_fbank)->ArgNames({"threads"})->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_whisper)->ArgNames({"threads"})->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_resample_44100)->ArgNames({"threads"})->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_resample_awkward)
    ->ArgNames({"rate", "threads"})
    ->ArgsProduct({{44101, 7999, 767999}, {1, 2}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_pipeline_44100)->ArgNames({"threads"})->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
