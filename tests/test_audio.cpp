// The audio front end (SPEC 5.3): WAV decoding against torchaudio.load, resampling, Kaldi
// fbank and Whisper log-mel against torchaudio / Whisper's formula, every WAV error, clip
// splitting. Fixtures: tests/reference/make_audio_fixtures.py -> tests/data/audio/.
//
// Each comparison prints a "[ measured ]" line with its largest absolute difference, the
// numbers docs/audio.md quotes.

#include <tessera/core/parallel.hpp>
#include <tessera/io/wav.hpp>
#include <tessera/tokenize/audio.hpp>
#include <tessera/tokenize/imagebind_clips.hpp>

#include "test_util.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace test_audio {

namespace fs = std::filesystem;
using tessera::Index;
using tessera::Matrix;
using tessera::Vector;
using tessera::test::Fixture;
using tessera::test::TempDir;
using tessera::test::error_of;
using ::testing::HasSubstr;

fs::path audio_dir() { return tessera::test::data_dir() / "audio"; }


template <class A, class B>
double max_abs_diff(const A& a, const B& b) {
  return (a.template cast<double>() - b.template cast<double>()).cwiseAbs().maxCoeff();
}

void report(const std::string& what, double diff) {
  std::cout << "[ measured ] " << what << ": max |diff| = " << diff << "\n";
}

// ---- WAV bytes built by hand ----------------------------------------------------------------

void put_le(std::vector<std::uint8_t>& out, std::uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(value >> (8 * i)));
}
void put_tag(std::vector<std::uint8_t>& out, const char* tag) { out.insert(out.end(), tag, tag + 4); }

struct Chunk {
  std::string id;
  std::vector<std::uint8_t> body;
  std::int64_t claimed_size = -1;  // >= 0: write this size instead of the body's
};

Chunk fmt_chunk(int tag, int bits, int channels, std::uint32_t rate, int block_align = -1) {
  Chunk c{"fmt ", {}, -1};
  if (block_align < 0) block_align = channels * bits / 8;
  put_le(c.body, static_cast<std::uint64_t>(tag), 2);
  put_le(c.body, static_cast<std::uint64_t>(channels), 2);
  put_le(c.body, static_cast<std::uint64_t>(rate), 4);
  put_le(c.body, static_cast<std::uint64_t>(rate) * static_cast<std::uint64_t>(block_align), 4);
  put_le(c.body, static_cast<std::uint64_t>(block_align), 2);
  put_le(c.body, static_cast<std::uint64_t>(bits), 2);
  return c;
}

Chunk extensible_fmt_chunk(int subformat, int bits, int channels, std::uint32_t rate,
                           bool good_guid = true) {
  Chunk c = fmt_chunk(0xFFFE, bits, channels, rate);
  put_le(c.body, 22, 2);
  put_le(c.body, static_cast<std::uint64_t>(bits), 2);
  put_le(c.body, 0, 4);
  put_le(c.body, static_cast<std::uint64_t>(subformat), 2);
  const std::uint8_t tail[14] = {0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80,
                                 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B,
                                 static_cast<std::uint8_t>(good_guid ? 0x71 : 0x72)};
  c.body.insert(c.body.end(), tail, tail + 14);
  return c;
}

Chunk data_chunk(std::vector<std::uint8_t> bytes) { return Chunk{"data", std::move(bytes), -1}; }

std::vector<std::uint8_t> pcm16_bytes(const std::vector<int>& values) {
  std::vector<std::uint8_t> out;
  for (int v : values) put_le(out, static_cast<std::uint16_t>(static_cast<std::int16_t>(v)), 2);
  return out;
}

std::vector<std::uint8_t> riff(const std::vector<Chunk>& chunks) {
  std::vector<std::uint8_t> body;
  put_tag(body, "WAVE");
  for (const Chunk& c : chunks) {
    put_tag(body, c.id.c_str());
    put_le(body, static_cast<std::uint64_t>(c.claimed_size >= 0 ? c.claimed_size
                                                                : static_cast<std::int64_t>(c.body.size())),
           4);
    body.insert(body.end(), c.body.begin(), c.body.end());
    if (c.body.size() % 2) body.push_back(0);
  }
  std::vector<std::uint8_t> out;
  put_tag(out, "RIFF");
  put_le(out, body.size(), 4);
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

std::vector<std::uint8_t> simple_pcm16() {
  return riff({fmt_chunk(1, 16, 1, 16000), data_chunk(pcm16_bytes({0, 1000, -1000, 32767, -32768}))});
}

void write_file(const fs::path& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good());
}

// ---- formats ----------------------------------------------------------------------------------

struct FormatCase {
  const char* name;
  tessera::WavSampleFormat sample_format;
  int bits;
  bool extensible;
  double torchaudio_tolerance;  // torchaudio 0.13 (sox) rounds 32-bit and float to 2^-24 steps
};

constexpr double sox_rounding = 0x1p-24;  // one step of sox's grid (float64 input rounds twice)

const FormatCase format_cases[] = {
    {"pcm8_mono", tessera::WavSampleFormat::pcm, 8, false, 0},
    {"pcm16_mono", tessera::WavSampleFormat::pcm, 16, false, 0},
    {"pcm16_stereo", tessera::WavSampleFormat::pcm, 16, false, 0},
    {"pcm24_stereo", tessera::WavSampleFormat::pcm, 24, false, 0},
    {"pcm32_mono", tessera::WavSampleFormat::pcm, 32, false, sox_rounding},
    {"float32_stereo", tessera::WavSampleFormat::ieee_float, 32, false, sox_rounding},
    {"float64_mono", tessera::WavSampleFormat::ieee_float, 64, false, sox_rounding},
    {"pcm16_5.1", tessera::WavSampleFormat::pcm, 16, false, 0},
    {"ext_pcm16_stereo", tessera::WavSampleFormat::pcm, 16, true, 0},
    {"ext_pcm24_5.1", tessera::WavSampleFormat::pcm, 24, true, 0},
    {"ext_float32_mono", tessera::WavSampleFormat::ieee_float, 32, true, sox_rounding},
    {"pcm16_chunks", tessera::WavSampleFormat::pcm, 16, false, 0},
};

TEST(Wav, EveryFormatDecodesAsTorchaudioLoad) {
  const Fixture fixture("audio/formats.safetensors");
  for (const FormatCase& c : format_cases) {
    SCOPED_TRACE(c.name);
    const fs::path path = audio_dir() / "formats" / (std::string(c.name) + ".wav");
    const auto wav = tessera::read_wav<double>(path);
    EXPECT_EQ(wav.sample_rate, std::stol(fixture.meta(std::string(c.name) + ".sample_rate")));
    EXPECT_EQ(wav.channels(), std::stol(fixture.meta(std::string(c.name) + ".channels")));
    EXPECT_EQ(wav.format.sample_format, c.sample_format);
    EXPECT_EQ(wav.format.bits_per_sample, c.bits);
    EXPECT_EQ(wav.format.extensible, c.extensible);
    const Matrix<double> exact = fixture.matrix<double>(std::string(c.name) + ".exact");
    const Matrix<double> torchaudio = fixture.matrix<double>(std::string(c.name) + ".torchaudio");
    // the scaling rule, bit for bit
    EXPECT_TRUE(tessera::test::all_close(wav.samples, exact, 0, 0));
    // torchaudio.load: identical for 8/16/24-bit, within sox's 2^-24 rounding otherwise
    EXPECT_TRUE(tessera::test::all_close(wav.samples, torchaudio, c.torchaudio_tolerance, 0));
    report(std::string("read_wav ") + c.name + " vs torchaudio.load",
           max_abs_diff(wav.samples, torchaudio));
    // float decoding is the same values rounded once
    const auto wav_float = tessera::read_wav<float>(path);
    EXPECT_TRUE(tessera::test::all_close(wav_float.samples, exact.cast<float>(), 0, 0));
    // every sample in [-1, 1)
    EXPECT_GE(wav.samples.minCoeff(), -1.0);
    EXPECT_LT(wav.samples.maxCoeff(), 1.0);
  }
}

TEST(Wav, FullScaleValues) {
  // The extremes of each integer width map to -1 and 1 - 2^-(bits-1), as in torchaudio.
  const auto pcm8 = tessera::read_wav<double>(audio_dir() / "formats" / "pcm8_mono.wav");
  EXPECT_EQ(pcm8.samples(0, 0), -1.0);
  EXPECT_EQ(pcm8.samples(0, 1), 127.0 / 128.0);
  const auto pcm24 = tessera::read_wav<double>(audio_dir() / "formats" / "pcm24_stereo.wav");
  EXPECT_EQ(pcm24.samples(0, 0), -1.0);
  EXPECT_EQ(pcm24.samples(0, 1), 1.0 - 0x1p-23);
  const auto pcm32 = tessera::read_wav<double>(audio_dir() / "formats" / "pcm32_mono.wav");
  EXPECT_EQ(pcm32.samples(0, 0), -1.0);
  EXPECT_EQ(pcm32.samples(0, 1), 1.0 - 0x1p-31);
}

TEST(Wav, MemoryEqualsFile) {
  const fs::path path = audio_dir() / "formats" / "pcm24_stereo.wav";
  std::ifstream in(path, std::ios::binary);
  const std::vector<std::uint8_t> bytes{std::istreambuf_iterator<char>(in),
                                        std::istreambuf_iterator<char>()};
  const auto from_memory = tessera::read_wav<float>(std::span<const std::uint8_t>(bytes));
  const auto from_file = tessera::read_wav<float>(path);
  EXPECT_EQ(from_memory.samples, from_file.samples);
  EXPECT_EQ(from_memory.sample_rate, 48000);
}

TEST(Wav, AverageChannels) {
  const auto wav = tessera::read_wav<double>(audio_dir() / "formats" / "pcm16_5.1.wav");
  ASSERT_EQ(wav.channels(), 6);
  const Vector<double> mono = tessera::average_channels(wav.samples);
  ASSERT_EQ(mono.size(), wav.frames());
  for (Index n = 0; n < wav.frames(); ++n) {
    EXPECT_NEAR(mono(n), wav.samples.col(n).mean(), 1e-15);
  }
  const Matrix<double> one = wav.samples.topRows(1);
  EXPECT_EQ(tessera::average_channels(one), one.row(0).transpose());
}

TEST(Wav, WriteAndReadBack) {
  TempDir dir;
  Matrix<float> samples(2, 5);
  samples << 0.0f, 0.5f, -0.5f, 0.999f, -1.0f,  //
      0.25f, -0.25f, 1e-3f, 1.5f, -2.0f;        // out of range: clamped by pcm16
  tessera::write_wav(dir / "a.wav", samples, 22050, tessera::WavEncoding::pcm16);
  const auto pcm = tessera::read_wav<double>(dir / "a.wav");
  EXPECT_EQ(pcm.sample_rate, 22050);
  EXPECT_EQ(pcm.format.bits_per_sample, 16);
  ASSERT_EQ(pcm.channels(), 2);
  for (Index c = 0; c < 2; ++c) {
    for (Index n = 0; n < 5; ++n) {
      const double q = std::clamp(std::nearbyint(double(samples(c, n)) * 32768.0), -32768.0, 32767.0);
      EXPECT_EQ(pcm.samples(c, n), q / 32768.0) << c << ", " << n;
    }
  }
  tessera::write_wav(dir / "b.wav", samples, 16000, tessera::WavEncoding::float32);
  const auto flt = tessera::read_wav<float>(dir / "b.wav");
  EXPECT_EQ(flt.format.sample_format, tessera::WavSampleFormat::ieee_float);
  EXPECT_EQ(flt.samples, samples);  // exact, not clipped

  Matrix<float> bad = samples;
  bad(1, 1) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(error_of([&] { tessera::write_wav(dir / "c.wav", bad, 16000); }),
              HasSubstr("not finite"));
  EXPECT_FALSE(fs::exists(dir / "c.wav"));
}

// ---- errors -------------------------------------------------------------------------------------

class WavErrors : public ::testing::Test {
 protected:
  TempDir dir;
  // Writes `bytes` to clip.wav and returns read_wav's error, which must name the file.
  std::string error_for(const std::vector<std::uint8_t>& bytes, const tessera::WavLimits& limits = {}) {
    const fs::path path = dir / "clip.wav";
    write_file(path, bytes);
    const std::string message = error_of([&] { (void)tessera::read_wav<float>(path, limits); });
    EXPECT_THAT(message, HasSubstr(path.string()));
    return message;
  }
};

TEST_F(WavErrors, NotAWav) {
  const std::vector<std::uint8_t> png = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A,
                                         0, 0, 0, 13, 'I', 'H', 'D', 'R'};
  EXPECT_THAT(error_for(png), HasSubstr("not a RIFF/WAVE file (no RIFF....WAVE signature)"));
  std::vector<std::uint8_t> avi = simple_pcm16();
  std::memcpy(avi.data() + 8, "AVI ", 4);
  EXPECT_THAT(error_for(avi), HasSubstr("not a RIFF/WAVE file"));
  std::vector<std::uint8_t> rifx = simple_pcm16();
  std::memcpy(rifx.data(), "RIFX", 4);
  EXPECT_THAT(error_for(rifx), HasSubstr("RIFX files are not supported"));
  EXPECT_THAT(error_for({}), HasSubstr("shorter than the 12-byte RIFF header"));
}

TEST_F(WavErrors, TruncatedHeader) {
  const std::vector<std::uint8_t> full = simple_pcm16();
  EXPECT_THAT(error_for({full.begin(), full.begin() + 10}),
              HasSubstr("shorter than the 12-byte RIFF header"));
  EXPECT_THAT(error_for({full.begin(), full.begin() + 16}),
              HasSubstr("truncated chunk header at byte 12 (4 bytes left"));
  EXPECT_THAT(error_for({full.begin(), full.begin() + 30}),
              HasSubstr("chunk 'fmt ' at byte 12 claims 16 bytes but only 10 remain in the file"));
  EXPECT_THAT(error_for({full.begin(), full.begin() + 36}), HasSubstr("no data chunk"));
}

TEST_F(WavErrors, DataChunkLongerThanTheFile) {
  const std::vector<std::uint8_t> full = simple_pcm16();  // 10 data bytes
  EXPECT_THAT(error_for({full.begin(), full.end() - 4}),
              HasSubstr("data chunk claims 10 bytes but only 6 remain in the file"));
  Chunk data = data_chunk(pcm16_bytes({1, 2}));
  data.claimed_size = 0xFFFFFFFF;  // a streaming writer's "unknown length"
  EXPECT_THAT(error_for(riff({fmt_chunk(1, 16, 1, 16000), data})),
              HasSubstr("data chunk claims 4294967295 bytes but only 4 remain"));
}

TEST_F(WavErrors, ZeroLength) {
  EXPECT_THAT(error_for(riff({fmt_chunk(1, 16, 1, 16000), data_chunk({})})),
              HasSubstr("zero-length audio"));
}

TEST_F(WavErrors, UnsupportedFormat) {
  const auto data = data_chunk(pcm16_bytes({1, 2, 3, 4}));
  EXPECT_THAT(error_for(riff({fmt_chunk(2, 16, 1, 16000), data})),
              HasSubstr("unsupported WAV format tag 0x0002 (Microsoft ADPCM)"));
  EXPECT_THAT(error_for(riff({fmt_chunk(7, 8, 1, 8000), data})),
              HasSubstr("unsupported WAV format tag 0x0007 (mu-law)"));
  EXPECT_THAT(error_for(riff({fmt_chunk(1, 12, 1, 16000, 2), data})),
              HasSubstr("unsupported PCM bit depth 12"));
  EXPECT_THAT(error_for(riff({fmt_chunk(3, 16, 1, 16000), data})),
              HasSubstr("unsupported IEEE float bit depth 16"));
  EXPECT_THAT(error_for(riff({extensible_fmt_chunk(6, 16, 1, 16000), data})),
              HasSubstr("unsupported WAVE_FORMAT_EXTENSIBLE subformat 0x0006 (A-law)"));
  EXPECT_THAT(error_for(riff({extensible_fmt_chunk(1, 16, 1, 16000, false), data})),
              HasSubstr("subformat GUID is not a PCM or IEEE-float GUID"));
  Chunk short_ext = extensible_fmt_chunk(1, 16, 1, 16000);
  short_ext.body.resize(30);
  EXPECT_THAT(error_for(riff({short_ext, data})),
              HasSubstr("WAVE_FORMAT_EXTENSIBLE fmt chunk is 30 bytes, expected at least 40"));
}

TEST_F(WavErrors, InconsistentFmt) {
  const auto data = data_chunk(pcm16_bytes({1, 2, 3, 4}));
  EXPECT_THAT(error_for(riff({fmt_chunk(1, 16, 2, 16000, 2), data})),
              HasSubstr("block_align 2 is inconsistent with 2 channels of 16 bits (expected 4)"));
  EXPECT_THAT(error_for(riff({fmt_chunk(1, 16, 0, 16000, 0), data})), HasSubstr("0 channels"));
  EXPECT_THAT(error_for(riff({fmt_chunk(1, 16, 1, 0), data})), HasSubstr("sample rate 0"));
  Chunk tiny = fmt_chunk(1, 16, 1, 16000);
  tiny.body.resize(14);
  EXPECT_THAT(error_for(riff({tiny, data})), HasSubstr("fmt chunk is 14 bytes, expected at least 16"));
  EXPECT_THAT(error_for(riff({fmt_chunk(1, 16, 2, 16000), data_chunk(pcm16_bytes({1, 2, 3}))})),
              HasSubstr("data chunk of 6 bytes is not a whole number of 4-byte frames"));
}

TEST_F(WavErrors, MissingChunks) {
  EXPECT_THAT(error_for(riff({data_chunk(pcm16_bytes({1, 2}))})), HasSubstr("no fmt chunk"));
  EXPECT_THAT(error_for(riff({fmt_chunk(1, 16, 1, 16000), Chunk{"LIST", {1, 2, 3}, -1}})),
              HasSubstr("no data chunk"));
}

TEST_F(WavErrors, NonFiniteFloat) {
  std::vector<std::uint8_t> bytes;
  for (float f : {0.5f, std::numeric_limits<float>::infinity()}) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    put_le(bytes, u, 4);
  }
  EXPECT_THAT(error_for(riff({fmt_chunk(3, 32, 1, 16000), data_chunk(bytes)})),
              HasSubstr("sample 1 of channel 0 is not finite"));
}

TEST_F(WavErrors, Limits) {
  tessera::WavLimits limits;
  limits.max_samples = 4;
  EXPECT_THAT(error_for(simple_pcm16(), limits),
              HasSubstr("5 samples (1 channels x 5 frames) exceed the limit of 4"));
  limits = {};
  limits.max_channels = 2;
  EXPECT_THAT(error_for(riff({fmt_chunk(1, 16, 3, 16000), data_chunk(pcm16_bytes({1, 2, 3}))}), limits),
              HasSubstr("3 channels exceed the limit of 2"));
  EXPECT_THAT(error_of([&] { (void)tessera::read_wav<float>(dir / "missing.wav"); }),
              HasSubstr("missing.wav: cannot open"));
}

TEST_F(WavErrors, SampleRateRange) {
  // The header holds any 32-bit rate; WavLimits keeps it to the rates in use (issue 16).
  const auto data = data_chunk(pcm16_bytes({1, 2, 3, 4}));
  EXPECT_THAT(error_for(riff({fmt_chunk(1, 16, 1, 1), data})),
              HasSubstr("sample rate 1 Hz is below the limit of 1000 Hz (WavLimits::min_sample_rate)"));
  EXPECT_THAT(error_for(riff({fmt_chunk(1, 16, 1, 999), data})),
              HasSubstr("sample rate 999 Hz is below the limit of 1000 Hz"));
  EXPECT_THAT(error_for(riff({fmt_chunk(1, 16, 1, 0xFFFFFFFFu), data})),
              HasSubstr("sample rate 4294967295 Hz exceeds the limit of 768000 Hz "
                        "(WavLimits::max_sample_rate)"));
  EXPECT_THAT(error_for(riff({extensible_fmt_chunk(1, 16, 1, 768001), data})),
              HasSubstr("sample rate 768001 Hz exceeds the limit of 768000 Hz"));
  for (std::uint32_t rate : {1000u, 7999u, 44101u, 768000u}) {
    write_file(dir / "ok.wav", riff({fmt_chunk(1, 16, 1, rate), data}));
    EXPECT_EQ(tessera::read_wav<float>(dir / "ok.wav").sample_rate, rate);
  }
  tessera::WavLimits limits;
  limits.min_sample_rate = 8000;
  limits.max_sample_rate = 48000;
  EXPECT_THAT(error_for(riff({fmt_chunk(1, 16, 1, 7999), data}), limits),
              HasSubstr("sample rate 7999 Hz is below the limit of 8000 Hz"));
  EXPECT_THAT(error_for(riff({fmt_chunk(1, 16, 1, 96000), data}), limits),
              HasSubstr("sample rate 96000 Hz exceeds the limit of 48000 Hz"));
}

TEST_F(WavErrors, ChunkWalkingRules) {
  // an odd-sized unknown chunk before fmt, a chunk after data, trailing junk after the chunks
  std::vector<std::uint8_t> bytes = riff({Chunk{"junk", {1, 2, 3}, -1}, fmt_chunk(1, 16, 1, 16000),
                                          data_chunk(pcm16_bytes({100, -100})),
                                          Chunk{"LIST", {9, 9}, -1}});
  bytes.push_back(0x55);  // 1 stray byte: not a chunk header, ignored once fmt and data are found
  write_file(dir / "ok.wav", bytes);
  const auto wav = tessera::read_wav<double>(dir / "ok.wav");
  ASSERT_EQ(wav.frames(), 2);
  EXPECT_EQ(wav.samples(0, 1), -100.0 / 32768.0);
  // a damaged chunk before the data is an error
  EXPECT_THAT(error_for(riff({fmt_chunk(1, 16, 1, 16000), Chunk{"LIST", {1, 2}, 1000},
                              data_chunk(pcm16_bytes({1}))})),
              HasSubstr("chunk 'LIST' at byte 36 claims 1000 bytes"));
}

// ---- resampling -------------------------------------------------------------------------------

// One case of audio/resample.safetensors: the input and its rates, torchaudio's float64 and
// float32 outputs, and ours in double and float.
struct ResampleCase {
  Vector<float> input;  // [N]
  Index from, to;
  Vector<double> f64, f32;
  Vector<double> ours_double;
  Vector<float> ours_float;
  ResampleCase(const Fixture& fixture, const std::string& name)
      : input(fixture.vector<float>(name + ".input")),
        from(std::stol(fixture.meta(name + ".from"))),
        to(std::stol(fixture.meta(name + ".to"))),
        f64(fixture.vector<double>(name + ".f64")),
        f32(fixture.vector<double>(name + ".f32")),
        ours_double(tessera::resample<double>(input.cast<double>(), from, to)),
        ours_float(tessera::resample<float>(input, from, to)) {}
};

TEST(Resample, MatchesTorchaudio) {
  const Fixture fixture("audio/resample.safetensors");
  for (const char* name : {"8000", "22050", "44100", "48000", "16000_to_22050",
                           "16000_to_44100_short"}) {
    SCOPED_TRACE(name);
    const ResampleCase c(fixture, name);
    const auto& [input, from, to, f64, f32, ours_double, ours_float] = c;
    ASSERT_EQ(ours_double.size(), f64.size());
    ASSERT_EQ(ours_float.size(), f32.size());
    EXPECT_TRUE(tessera::test::all_close(ours_double, f64, 1e-12, 0));
    EXPECT_TRUE(tessera::test::all_close(ours_float, f32, 1e-4, 0));
    EXPECT_TRUE(tessera::test::all_close(ours_float, f64, 1e-5, 0));
    report(std::string("resample ") + name + " double vs torchaudio float64",
           max_abs_diff(ours_double, f64));
    report(std::string("resample ") + name + " float vs torchaudio float32",
           max_abs_diff(ours_float, f32));
    report(std::string("resample ") + name + " float vs torchaudio float64",
           max_abs_diff(ours_float, f64));
  }
}

TEST(Resample, EdgeCases) {
  Vector<float> x(3);
  x << 0.1f, 0.2f, 0.3f;
  EXPECT_EQ(tessera::resample(x, 16000, 16000), x);
  EXPECT_EQ(tessera::resample(Vector<float>(0), 44100, 16000).size(), 0);
  EXPECT_EQ(tessera::resample(x, 48000, 16000).size(), 1);   // ceil(3 / 3)
  EXPECT_EQ(tessera::resample(x, 8000, 16000).size(), 6);
  EXPECT_EQ(tessera::resample(x, 44100, 16000).size(), 2);   // ceil(3 * 160 / 441)
  EXPECT_THAT(error_of([&] { (void)tessera::resample(x, 0, 16000); }),
              HasSubstr("sample rates must be positive"));
  x(1) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THAT(error_of([&] { (void)tessera::resample(x, 8000, 16000); }),
              HasSubstr("resample: audio sample 1 is not finite"));
}

// Rate pairs whose gcd-reduced kernel [out, taps] is large, so resample takes its direct
// plan (issue 16): 11025, 12345 and 7999 against torchaudio itself (7999 -> 16000: a
// [16000, 8013] kernel, 4.4 GB and 51 s in torchaudio for 400 samples), 44101 <-> 16000
// ([16000, 44135], ~14 GB in torchaudio) against torchaudio's formula evaluated a few hundred
// phases at a time, which the fixture script checks against torchaudio on every other case.
TEST(Resample, AwkwardPairsMatchTorchaudio) {
  const Fixture fixture("audio/resample.safetensors");
  for (const char* name : {"11025", "12345", "16000_to_12345", "7999", "44101", "16000_to_44101"}) {
    SCOPED_TRACE(name);
    const ResampleCase c(fixture, name);
    const auto& [input, from, to, f64, f32, ours_double, ours_float] = c;
    EXPECT_EQ(tessera::detail::choose_resample_plan(tessera::detail::ResampleGeometry(from, to)),
              tessera::detail::ResamplePlan::direct);
    ASSERT_EQ(ours_double.size(), f64.size());
    ASSERT_EQ(ours_float.size(), f32.size());
    EXPECT_TRUE(tessera::test::all_close(ours_double, f64, 1e-12, 0));
    EXPECT_TRUE(tessera::test::all_close(ours_float, f64, 1e-5, 0));
    // torchaudio's float32 run is itself up to 1.6e-4 from its float64 run here (12345 Hz):
    // ours may differ from it by 1e-4 plus that error, element by element
    for (Index i = 0; i < f32.size(); ++i) {
      EXPECT_LE(std::abs(ours_float(i) - f32(i)), 1e-4 + std::abs(f32(i) - f64(i))) << "at " << i;
    }
    report(std::string("resample ") + name + " (direct) double vs torchaudio float64",
           max_abs_diff(ours_double, f64));
    report(std::string("resample ") + name + " (direct) float vs torchaudio float32",
           max_abs_diff(ours_float, f32));
    report(std::string("resample ") + name + " (direct) float vs torchaudio float64",
           max_abs_diff(ours_float, f64));
  }
}

// A deterministic test waveform: two tones and a chirp, [N].
template <class Scalar>
Vector<Scalar> test_waveform(Index n) {
  Vector<Scalar> x(n);
  for (Index i = 0; i < n; ++i) {
    const double t = static_cast<double>(i);
    x(i) = static_cast<Scalar>(0.4 * std::sin(0.031 * t) + 0.3 * std::sin(1.9 * t + 0.5) +
                               0.2 * std::sin(1e-4 * t * t));
  }
  return x;
}

// Both plans round the same kernel values (ResampleGeometry::kernel) to Scalar; polyphase
// sums them in Scalar (Eigen's product), direct in double and drops the kernel's clamped tail
// (~5e-50). So they differ by the rounding of the sums: for double, sums of at most ~500
// terms below 1 in magnitude, 1e-13; for float, a few float ulps of values below 1, 1e-6.
constexpr double plans_double_tolerance = 1e-13, plans_float_tolerance = 1e-6;

TEST(Resample, DirectPlanEqualsPolyphase) {
  using tessera::detail::ResamplePlan;
  using tessera::detail::resample_with_plan;
  const Index limit = tessera::WavLimits{}.max_samples;
  const std::pair<Index, Index> pairs[] = {{44100, 16000}, {48000, 16000}, {22050, 16000},
                                           {8000, 16000},  {16000, 44100}, {16000, 22050},
                                           {32000, 16000}, {11025, 16000}, {16000, 8000},
                                           {999, 1000}};
  for (const auto& [from, to] : pairs) {
    for (Index n : {1, 2, 3, 159, 441, 442, 1000, 5000}) {
      SCOPED_TRACE(std::to_string(from) + " -> " + std::to_string(to) + ", N = " + std::to_string(n));
      const Vector<double> xd = test_waveform<double>(n);
      const Vector<double> pd = resample_with_plan(xd, from, to, limit, ResamplePlan::polyphase);
      const Vector<double> dd = resample_with_plan(xd, from, to, limit, ResamplePlan::direct);
      ASSERT_EQ(pd.size(), dd.size());
      EXPECT_TRUE(tessera::test::all_close(dd, pd, plans_double_tolerance, 0));
      const Vector<float> xf = xd.cast<float>();
      const Vector<float> pf = resample_with_plan(xf, from, to, limit, ResamplePlan::polyphase);
      const Vector<float> df = resample_with_plan(xf, from, to, limit, ResamplePlan::direct);
      EXPECT_TRUE(tessera::test::all_close(df, pf, plans_float_tolerance, 0));
    }
  }
  // polyphase is never built beyond its bound, even when asked for
  const Vector<float> x = test_waveform<float>(100);
  EXPECT_THAT(error_of([&] {
                (void)resample_with_plan(x, 44101, 16000, limit, ResamplePlan::polyphase);
              }),
              HasSubstr("the polyphase kernel of 44101 -> 16000 Hz would have 16000 x 44135 "
                        "entries, more than 1048576"));
}

TEST(Resample, DirectPlanIndependentOfThreadCount) {
  const Vector<float> x = test_waveform<float>(100000);  // 2.3 s at 44101 Hz: 9 chunks
  Vector<float> one, two, one_up, two_up;
  {
    tessera::ScopedThreads threads(1);
    one = tessera::resample(x, 44101, 16000);
    one_up = tessera::resample(x, 7999, 16000);
  }
  {
    tessera::ScopedThreads threads(2);
    two = tessera::resample(x, 44101, 16000);
    two_up = tessera::resample(x, 7999, 16000);
  }
  EXPECT_EQ(one, two);
  EXPECT_EQ(one_up, two_up);
}

// Seconds taken by `action`.
double seconds_of(const std::function<void()>& action) {
  const auto start = std::chrono::steady_clock::now();
  action();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Generous: these take milliseconds (even under sanitizers, well under a second); the rates
// alone used to cost minutes and gigabytes.
constexpr double fast_seconds = 10.0;

TEST(Resample, WorkBoundedByTheSamples) {
  Vector<float> x(3);
  x << 0.1f, 0.2f, 0.3f;
  // the output is bounded before anything is allocated
  EXPECT_THAT(error_of([&] { (void)tessera::resample(x, 1, 4294967295); }),
              HasSubstr("resample: 3 samples at 1 Hz become 12884901885 samples at 4294967295 Hz, "
                        "more than the limit of 1073741824 (WavLimits::max_samples)"));
  EXPECT_THAT(error_of([&] { (void)tessera::resample(x, 16000, 48000, 8); }),
              HasSubstr("become 9 samples at 48000 Hz, more than the limit of 8"));
  EXPECT_EQ(tessera::resample(x, 16000, 48000, 9).size(), 9);
  EXPECT_THAT(error_of([&] { (void)tessera::resample(x, 4294967296, 16000); }),
              HasSubstr("sample rates must be at most 4294967295 Hz (got 4294967296 -> 16000)"));
  // 2^32 - 1 -> 16000 reduces to 858993459 -> 3200: each phase's band has 3.25 million taps,
  // cut to the 3 samples there are; coprime rates near 2^32 keep phase arithmetic exact
  double elapsed = seconds_of([&] {
    EXPECT_EQ(tessera::resample(x, 4294967295, 16000).size(), 1);
    EXPECT_EQ(tessera::resample(x, 4294967295, 4294967294).size(), 3);
    EXPECT_EQ(tessera::resample(x, 4294967294, 4294967295).size(), 4);  // ceil(3.0000000007)
    EXPECT_EQ(tessera::resample(x, 1000, 768000).size(), 2304);
  });
  EXPECT_LT(elapsed, fast_seconds);
  // in-range awkward rates on seconds of audio (torchaudio: a [16000, 44135] kernel, 2.8 GB,
  // for 44101 Hz; 767999 Hz: a band of 584 taps per output, its table [16000, 584])
  for (const auto& rate_and_seconds : {std::pair<Index, Index>{44101, 10}, {7999, 10}, {767999, 2}}) {
    const Index from = rate_and_seconds.first, seconds = rate_and_seconds.second;
    const Vector<float> long_input = test_waveform<float>(seconds * from);
    elapsed = seconds_of([&] {
      EXPECT_EQ(tessera::resample(long_input, from, 16000).size(), seconds * 16000);
    });
    EXPECT_LT(elapsed, fast_seconds) << from << " Hz";
    std::cout << "[ measured ] resample " << seconds << " s at " << from << " Hz -> 16000 Hz: "
              << elapsed << " s\n";
  }
  const Vector<float> speech = test_waveform<float>(160000);
  elapsed = seconds_of([&] {
    EXPECT_EQ(tessera::resample(speech, 16000, 44101).size(), 441010);
  });
  EXPECT_LT(elapsed, fast_seconds);
}

// ---- features -----------------------------------------------------------------------------------

// SPEC 5.3's conformance check against torchaudio run in float32 (as ImageBind and Whisper
// run it): |ours - f32| <= 1e-3 + 2 |f32 - f64| element by element. The second term is
// torchaudio's own float32 rounding error at that element, measured against its float64 run
// of the same code: for values dominated by rounding noise (log energies near Kaldi's
// epsilon floor, or Whisper bins far below the loudest one after float32 resampling)
// torchaudio's float32 output is itself more than 1e-3 away from the exact value, and
// tessera (computing in double) lands next to the float64 result instead.
::testing::AssertionResult conforms(const Matrix<double>& ours, const Matrix<double>& f32,
                                    const Matrix<double>& f64) {
  if (ours.rows() != f32.rows() || ours.cols() != f32.cols()) {
    return ::testing::AssertionFailure() << "shape mismatch";
  }
  int bad = 0;
  std::ostringstream out;
  for (Index r = 0; r < ours.rows(); ++r) {
    for (Index c = 0; c < ours.cols(); ++c) {
      const double d = std::abs(ours(r, c) - f32(r, c));
      if (!(d <= 1e-3 + 2 * std::abs(f32(r, c) - f64(r, c)))) {
        if (bad++ < 5) {
          out << "\n  at (" << r << ", " << c << "): " << ours(r, c) << " vs " << f32(r, c)
              << " (float64 " << f64(r, c) << ")";
        }
      }
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " elements outside the bound" << out.str();
}

// Largest |ours - f32| where torchaudio's float32 result is within 1e-4 of its float64 one.
double diff_where_reference_is_sound(const Matrix<double>& ours, const Matrix<double>& f32,
                                     const Matrix<double>& f64) {
  double largest = 0;
  for (Index r = 0; r < ours.rows(); ++r) {
    for (Index c = 0; c < ours.cols(); ++c) {
      if (std::abs(f32(r, c) - f64(r, c)) <= 1e-4) {
        largest = std::max(largest, std::abs(ours(r, c) - f32(r, c)));
      }
    }
  }
  return largest;
}

// SPEC 5.3's conformance quantity for kaldi_fbank: the normalized feature.
Matrix<double> normalized(Matrix<double> raw) {
  tessera::normalize_features(raw, -4.268, 9.138);
  return raw;
}

TEST(KaldiFbank, MatchesTorchaudio) {
  const Fixture fixture("audio/features.safetensors");
  for (const char* name : {"tone", "chirp", "noise", "silence_click", "len400", "len560"}) {
    const Vector<float> input = fixture.vector<float>(std::string(name) + ".input");
    for (Index mels : {128, 80}) {
      const std::string key = std::string(name) + ".fbank" + std::to_string(mels);
      SCOPED_TRACE(key);
      const Matrix<double> f64 = fixture.matrix<double>(key + ".f64");
      const Matrix<double> f32 = fixture.matrix<double>(key + ".f32");
      const Matrix<double> ours_double = tessera::kaldi_fbank<double>(input.cast<double>(), 16000, mels);
      const Matrix<float> ours_float = tessera::kaldi_fbank<float>(input, 16000, mels);
      // Against torchaudio's float64 run of the same function. Its float32 mel banks are
      // rebuilt operation for operation, but torch's vectorized float32 log is not correctly
      // rounded: it is 1 ulp off std::log at a few FFT bins (2 of 256 at 16 kHz), which moves
      // the mel rows using those bins by up to ~2e-5.
      EXPECT_TRUE(tessera::test::all_close(ours_double, f64, 5e-5, 0));
      EXPECT_TRUE(tessera::test::all_close(ours_float, f64, 5e-5, 0));
      // Against torchaudio in float32, on the normalized features (SPEC 5.3's quantity).
      const Matrix<double> ours_n = normalized(ours_float.cast<double>());
      EXPECT_TRUE(conforms(ours_n, normalized(f32), normalized(f64)));
      report("kaldi_fbank " + key + " double vs torchaudio float64 (raw log-mel)",
             max_abs_diff(ours_double, f64));
      report("kaldi_fbank " + key + " float vs torchaudio float64 (raw log-mel)",
             max_abs_diff(ours_float, f64));
      report("kaldi_fbank " + key + " float vs torchaudio float32 (normalized)",
             max_abs_diff(ours_n, normalized(f32)));
      report("kaldi_fbank " + key + " float vs torchaudio float32 (normalized, where "
             "torchaudio float32 is within 1e-4 of float64)",
             diff_where_reference_is_sound(ours_n, normalized(f32), normalized(f64)));
      report("kaldi_fbank " + key + "   torchaudio float32 vs its float64 (normalized)",
             max_abs_diff(normalized(f32), normalized(f64)));
    }
  }
}

TEST(KaldiFbank, ShapesAndErrors) {
  Vector<double> x = Vector<double>::LinSpaced(16000, -0.5, 0.5);
  EXPECT_EQ(tessera::kaldi_fbank(x, 16000, 128).cols(), 98);  // 1 + (16000 - 400) / 160
  EXPECT_EQ(tessera::kaldi_fbank(x.head(400).eval(), 16000, 80).cols(), 1);
  // 22.05 kHz: 551-sample windows padded to 1024, shift 220
  EXPECT_EQ(tessera::kaldi_fbank(x, 22050, 64).cols(), 1 + (16000 - 551) / 220);
  EXPECT_THAT(error_of([&] { (void)tessera::kaldi_fbank(x.head(399).eval(), 16000, 128); }),
              HasSubstr("audio of 399 samples is shorter than one frame (400 samples = 25 ms at 16000 Hz)"));
  EXPECT_THAT(error_of([&] { (void)tessera::kaldi_fbank(x, 16000, 3); }),
              HasSubstr("n_mels must be at least 4"));
  x(7) = std::numeric_limits<double>::infinity();
  EXPECT_THAT(error_of([&] { (void)tessera::kaldi_fbank(x, 16000, 128); }),
              HasSubstr("kaldi_fbank: audio sample 7 is not finite"));
}

TEST(WhisperLogmel, MatchesWhisper) {
  const Fixture fixture("audio/features.safetensors");
  for (const char* name :
       {"tone", "chirp", "noise", "silence_click", "len400", "len560", "len201"}) {
    const std::string key = std::string(name) + ".whisper80";
    SCOPED_TRACE(key);
    const Vector<float> input = fixture.vector<float>(std::string(name) + ".input");
    const Matrix<double> f64 = fixture.matrix<double>(key + ".f64");
    const Matrix<double> f32 = fixture.matrix<double>(key + ".f32");
    const Matrix<double> ours_double = tessera::whisper_logmel<double>(input.cast<double>(), 80);
    const Matrix<float> ours_float = tessera::whisper_logmel<float>(input, 80);
    EXPECT_TRUE(tessera::test::all_close(ours_double, f64, 1e-9, 0));
    EXPECT_TRUE(tessera::test::all_close(ours_float, f64, 1e-6, 0));
    EXPECT_TRUE(conforms(ours_float.cast<double>(), f32, f64));  // SPEC 5.3
    report("whisper_logmel " + key + " double vs float64 formula", max_abs_diff(ours_double, f64));
    report("whisper_logmel " + key + " float vs Whisper float32", max_abs_diff(ours_float, f32));
  }
}

TEST(WhisperLogmel, ShapesAndErrors) {
  const Vector<float> x = Vector<float>::LinSpaced(480000, -0.5f, 0.5f);
  EXPECT_EQ(tessera::whisper_logmel(x, 80).cols(), 3000);  // 30 s -> 3000 frames, like Whisper
  EXPECT_EQ(tessera::whisper_logmel(x.head(319).eval(), 128).cols(), 1);
  EXPECT_THAT(error_of([&] { (void)tessera::whisper_logmel(x.head(200).eval(), 80); }),
              HasSubstr("audio of 200 samples is too short"));
  EXPECT_THAT(error_of([&] { (void)tessera::whisper_logmel(x, 0); }),
              HasSubstr("n_mels must be positive"));
}

TEST(AudioFeatures, IndependentOfThreadCount) {
  const Fixture fixture("audio/resample.safetensors");
  const Vector<float> input = fixture.vector<float>("44100.input");
  Vector<float> one_r, two_r;
  Matrix<float> one_k, two_k, one_w, two_w;
  {
    tessera::ScopedThreads threads(1);
    one_r = tessera::resample(input, 44100, 16000);
    one_k = tessera::kaldi_fbank(one_r, 16000, 128);
    one_w = tessera::whisper_logmel(one_r, 80);
  }
  {
    tessera::ScopedThreads threads(2);
    two_r = tessera::resample(input, 44100, 16000);
    two_k = tessera::kaldi_fbank(two_r, 16000, 128);
    two_w = tessera::whisper_logmel(two_r, 80);
  }
  EXPECT_EQ(one_r, two_r);
  EXPECT_EQ(one_k, two_k);
  EXPECT_EQ(one_w, two_w);
}

// ---- the whole pipeline ---------------------------------------------------------------------

TEST(PreprocessAudio, MatchesTorchaudioPipeline) {
  const Fixture fixture("audio/pipeline.safetensors");
  tessera::AudioConfig kaldi;  // kaldi_fbank, 128 mels, 16 kHz, -4.268 / 9.138
  const Matrix<double> k =
      tessera::preprocess_audio(audio_dir() / "pipeline_kaldi.wav", kaldi).cast<double>();
  const Matrix<double> k32 = fixture.matrix<double>("kaldi.f32");
  const Matrix<double> k64 = fixture.matrix<double>("kaldi.f64");
  EXPECT_TRUE(tessera::test::all_close(k, k64, 1e-5, 0));
  EXPECT_TRUE(conforms(k, k32, k64));
  report("preprocess_audio kaldi_fbank (44.1 kHz stereo PCM16) vs torchaudio float64",
         max_abs_diff(k, k64));
  report("preprocess_audio kaldi_fbank (44.1 kHz stereo PCM16) vs torchaudio float32",
         max_abs_diff(k, k32));

  tessera::AudioConfig whisper;
  whisper.features = "whisper_logmel";
  whisper.n_mels = 80;
  const Matrix<double> w =
      tessera::preprocess_audio(audio_dir() / "pipeline_whisper.wav", whisper).cast<double>();
  const Matrix<double> w32 = fixture.matrix<double>("whisper.f32");
  const Matrix<double> w64 = fixture.matrix<double>("whisper.f64");
  // float resampling (~1e-7 from exact) and sox's 2^-24 rounding of the float WAV in the
  // reference show in the bins ~6 decades below the loudest one
  EXPECT_TRUE(tessera::test::all_close(w, w64, 1e-4, 0));
  EXPECT_TRUE(conforms(w, w32, w64));
  report("preprocess_audio whisper_logmel (22.05 kHz float32) vs float64 pipeline",
         max_abs_diff(w, w64));
  report("preprocess_audio whisper_logmel (22.05 kHz float32) vs Whisper float32",
         max_abs_diff(w, w32));
  report("   torchaudio/Whisper float32 pipeline vs its float64 run", max_abs_diff(w32, w64));
}

TEST(PreprocessAudio, Errors) {
  TempDir dir;
  tessera::AudioConfig audio;
  Matrix<float> tiny = Matrix<float>::Constant(1, 300, 0.1f);  // 300 samples < one frame
  tessera::write_wav(dir / "tiny.wav", tiny, 16000);
  EXPECT_THAT(error_of([&] { (void)tessera::preprocess_audio(dir / "tiny.wav", audio); }),
              HasSubstr((dir / "tiny.wav").string() + ": kaldi_fbank: audio of 300 samples"));
  audio.features = "mfcc";
  EXPECT_THAT(error_of([&] { (void)tessera::preprocess_audio(dir / "tiny.wav", audio); }),
              HasSubstr("audio.features must be \"kaldi_fbank\" or \"whisper_logmel\" (got \"mfcc\")"));
}

TEST(PreprocessAudio, RatesAndLengthsBounded) {
  TempDir dir;
  tessera::AudioConfig audio;  // kaldi_fbank at 16 kHz
  // 1 s at 1000 Hz, the lowest rate: upsampled 16-fold
  const Matrix<float> low = test_waveform<float>(1000).transpose();  // [1, 1000]
  tessera::write_wav(dir / "low.wav", low, 1000);
  EXPECT_EQ(tessera::preprocess_audio(dir / "low.wav", audio).cols(), 98);  // 16000 samples
  tessera::WavLimits limits;
  limits.max_samples = 10000;
  EXPECT_THAT(error_of([&] { (void)tessera::preprocess_audio(dir / "low.wav", audio, limits); }),
              HasSubstr((dir / "low.wav").string() + ": resample: 1000 samples at 1000 Hz become "
                        "16000 samples at 16000 Hz, more than the limit of 10000 "
                        "(WavLimits::max_samples)"));
  // a file at 1 Hz is refused by read_wav, naming it
  tessera::write_wav(dir / "one_hz.wav", low, 1);
  EXPECT_THAT(error_of([&] { (void)tessera::preprocess_audio(dir / "one_hz.wav", audio); }),
              HasSubstr((dir / "one_hz.wav").string() + ": sample rate 1 Hz is below the limit of "
                        "1000 Hz (WavLimits::min_sample_rate)"));
  // in memory, the same range
  const Vector<float> x = test_waveform<float>(1000);
  EXPECT_THAT(error_of([&] { (void)tessera::preprocess_audio(x, 1, audio); }),
              HasSubstr("preprocess_audio: the audio's sample rate 1 Hz is below the limit of 1000 Hz"));
  EXPECT_THAT(error_of([&] { (void)tessera::preprocess_audio(x, 4294967295, audio); }),
              HasSubstr("the audio's sample rate 4294967295 Hz exceeds the limit of 768000 Hz"));
  // and the model's rate
  tessera::AudioConfig fast = audio;
  fast.sample_rate = 5000000;
  EXPECT_THAT(error_of([&] { (void)tessera::preprocess_audio(x, 16000, fast); }),
              HasSubstr("preprocess_audio: audio.sample_rate 5000000 Hz exceeds the limit of "
                        "768000 Hz (WavLimits::max_sample_rate)"));
  // an awkward rate in range succeeds, fast: 3 s at 44101 Hz
  const Matrix<float> odd = test_waveform<float>(3 * 44101).transpose();
  tessera::write_wav(dir / "odd.wav", odd, 44101);
  const double elapsed = seconds_of([&] {
    EXPECT_EQ(tessera::preprocess_audio(dir / "odd.wav", audio).cols(), 298);  // 48000 samples
  });
  EXPECT_LT(elapsed, fast_seconds);
}

TEST(SplitIntoClips, ConsecutiveClipsThatFit) {
  tessera::AudioConfig audio;
  audio.max_tokens = 2;
  audio.patch_frames = 2;  // F = 4 frames per clip
  Matrix<float> features(3, 10);
  for (Index i = 0; i < features.size(); ++i) features.data()[i] = static_cast<float>(i);
  const auto clips = tessera::split_into_clips(features, audio);
  ASSERT_EQ(clips.size(), 3u);
  EXPECT_EQ(clips[0], features.middleCols(0, 4));
  EXPECT_EQ(clips[1], features.middleCols(4, 4));
  EXPECT_EQ(clips[2], features.middleCols(8, 2));  // the last clip is shorter
  EXPECT_EQ(tessera::split_into_clips(Matrix<float>(features.leftCols(8)), audio).size(), 2u);
  const auto one = tessera::split_into_clips(Matrix<float>(features.leftCols(3)), audio);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0], features.leftCols(3));
  EXPECT_TRUE(tessera::split_into_clips(Matrix<float>(3, 0), audio).empty());
  audio.max_tokens = 0;
  EXPECT_THAT(error_of([&] { (void)tessera::split_into_clips(features, audio); }),
              HasSubstr("must be positive"));
}

}  // namespace

// ---- ImageBind's audio clips (tokenize/imagebind_clips.hpp) ---------------------------------
// Fixtures: tests/reference/make_imagebind_data_fixtures.py, a twin of ImageBind's data.py
// (load_and_transform_audio_data) run with torchaudio -> tests/data/audio/imagebind/.

namespace test_audio {

// Against data.py run in float64: the features within 1e-4 (the bound). Against
// data.py in float32 (as ImageBind runs it), test_audio's conformance bound: torchaudio's own
// float32 error is up to 4e-4 here (the 8 kHz file's empty mel bins above 4 kHz).
constexpr double features_atol = 1e-4;

TEST(ImageBindAudio, ClipRangesMatchDataPy) {
  const Fixture fixture("audio/imagebind/cases.safetensors");
  const auto samples = fixture.ints("ranges.samples");
  const auto begin = fixture.ints("ranges.begin");
  const auto end = fixture.ints("ranges.end");
  ASSERT_EQ(begin.size(), samples.size() * 3);
  int wrong = 0;
  for (std::size_t i = 0; i < samples.size(); ++i) {
    const auto ranges = tessera::imagebind_audio_ranges(samples[i]);
    ASSERT_EQ(ranges.size(), 3u);
    for (std::size_t k = 0; k < 3; ++k) {
      if (ranges[k].first != begin[3 * i + k] || ranges[k].second != end[3 * i + k]) {
        if (wrong++ < 5) {
          ADD_FAILURE() << "N = " << samples[i] << " clip " << k << ": [" << ranges[k].first
                        << ", " << ranges[k].second << ") vs data.py [" << begin[3 * i + k]
                        << ", " << end[3 * i + k] << ")";
        }
      }
    }
  }
  EXPECT_EQ(wrong, 0) << "of " << samples.size() << " lengths";
}

TEST(ImageBindAudio, ConstantClipsSampler) {
  // 5 s, 3 clips of 2 s: starts 0, 1.5, 3
  const tessera::ConstantClips c = tessera::constant_clips(5.0, 2.0, 3);
  EXPECT_EQ(c.count, 3);
  EXPECT_EQ(c.start_seconds(1), 1.5);
  EXPECT_EQ(c.end_seconds(2), 5.0);
  EXPECT_EQ(c.start_index(2, 16000), 48000);
  // shorter than a clip: K clips at 0
  const tessera::ConstantClips s = tessera::constant_clips(0.7, 2.0, 3);
  EXPECT_EQ(s.max_start, 0.0);
  EXPECT_EQ(s.start_index(2, 16000), 0);
  // int(Fraction * rate) is exact where a float product rounds up across an integer: N =
  // 32686 samples, max_start = fl(32686 / 16000 - 2); clip 1 starts 2^-45 samples before
  // sample 343: the double rate * max_start / 2 rounds to 343.0, the Fraction truncates to 342
  const tessera::ConstantClips t = tessera::constant_clips(32686.0 / 16000.0, 2.0, 3);
  EXPECT_EQ(t.start_index(1, 16000), 342);
  EXPECT_EQ(t.start_index(2, 16000), 685);
  EXPECT_THAT(error_of([] { (void)tessera::constant_clips(5.0, 2.0, 0); }),
              HasSubstr("clips per file must be in [1, 1000]"));
  EXPECT_THAT(error_of([] { (void)tessera::constant_clips(5.0, 0.0, 3); }),
              HasSubstr("clip_duration must be positive"));
  EXPECT_THAT(error_of([] { (void)tessera::constant_clips(-1.0, 2.0, 3); }),
              HasSubstr("duration must be finite and non-negative"));
}

TEST(ImageBindAudio, FeaturesMatchDataPy) {
  const Fixture fixture("audio/imagebind/cases.safetensors");
  for (const char* name : {"short_0p7s_16k", "exact_2s_44k_stereo", "long_5p3s_8k",
                           "stereo_4p1s_22k", "long_7s_16k_cut"}) {
    SCOPED_TRACE(name);
    tessera::ImageBindAudioOptions options;
    options.n_mels = std::stol(fixture.meta(std::string(name) + ".n_mels"));
    options.target_length = std::stol(fixture.meta(std::string(name) + ".target_length"));
    const Matrix<double> ours =
        tessera::imagebind_audio_clips(audio_dir() / "imagebind" / (std::string(name) + ".wav"),
                                       options)
            .cast<double>();
    const Matrix<double> f64 = fixture.matrix<double>(std::string(name) + ".f64");
    const Matrix<double> f32 = fixture.matrix<double>(std::string(name) + ".f32");
    ASSERT_EQ(ours.rows(), options.n_mels);
    ASSERT_EQ(ours.cols(), 3 * options.target_length);
    // A file below 16 kHz has nothing above its Nyquist frequency after resampling: the mel
    // rows there hold float32 rounding noise in any float pipeline (torchaudio's float32 run
    // is 4e-4 off its float64 run there), so the 1e-4 bound covers the rows below it.
    const double rate = std::stod(fixture.meta(std::string(name) + ".rate"));
    const auto mel = [](double hz) { return 1127.0 * std::log(1.0 + hz / 700.0); };
    const double delta = (mel(8000.0) - mel(20.0)) / static_cast<double>(options.n_mels + 1);
    Index rows = options.n_mels;
    while (rows > 0 && mel(20.0) + static_cast<double>(rows + 1) * delta > mel(std::min(rate, 16000.0) / 2))
      --rows;
    EXPECT_TRUE(tessera::test::all_close(ours.topRows(rows), f64.topRows(rows), features_atol, 0));
    EXPECT_TRUE(conforms(ours, f32, f64));
    if (rows < options.n_mels) {
      report(std::string("imagebind_audio_clips ") + name + " vs data.py float64, mel rows below "
             "the file's Nyquist frequency", max_abs_diff(ours.topRows(rows), f64.topRows(rows)));
    }
    report(std::string("imagebind_audio_clips ") + name + " vs data.py float64", max_abs_diff(ours, f64));
    report(std::string("imagebind_audio_clips ") + name + " vs data.py float32", max_abs_diff(ours, f32));
    report(std::string("imagebind_audio_clips ") + name + " vs data.py float32 where it is "
           "within 1e-4 of float64", diff_where_reference_is_sound(ours, f32, f64));
  }
}

TEST(ImageBindAudio, PaddingAndLayout) {
  // a 0.7 s file: three identical clips [0, 11200) of 68 frames, padded with zeros that
  // normalize to 4.268 / 9.138
  Matrix<float> wave(1, 11200);
  for (Index i = 0; i < wave.cols(); ++i) wave(0, i) = 0.3f * std::sin(0.05f * static_cast<float>(i));
  const Matrix<float> f = tessera::imagebind_audio_clips(wave, 16000);
  ASSERT_EQ(f.rows(), 128);
  ASSERT_EQ(f.cols(), 3 * 204);
  const float pad = (0.0f - -4.268f) / 9.138f;
  for (Index k = 0; k < 3; ++k) {
    EXPECT_TRUE((f.middleCols(k * 204 + 68, 204 - 68).array() == pad).all());
    EXPECT_FALSE((f.col(k * 204 + 67).array() == pad).all());
    EXPECT_TRUE(tessera::test::all_close(f.middleCols(k * 204, 68), f.leftCols(68), 1e-5, 0));
  }
}

TEST(ImageBindAudio, Errors) {
  TempDir dir;
  // 300 samples: every clip is shorter than one 25 ms frame (data.py divides by zero)
  tessera::write_wav(dir / "tiny.wav", Matrix<float>(Matrix<float>::Constant(1, 300, 0.1f)), 16000);
  EXPECT_THAT(error_of([&] { (void)tessera::imagebind_audio_clips(dir / "tiny.wav"); }),
              HasSubstr("tiny.wav: ImageBind audio clip 0 (samples [0, 300) at 16000 Hz): "
                        "kaldi_fbank: audio of 300 samples is shorter than one frame"));
  const Matrix<float> wave = Matrix<float>::Constant(1, 40000, 0.1f);
  tessera::ImageBindAudioOptions odd;
  odd.clip_duration = 1.0 / 3.0;  // not a whole number of samples
  EXPECT_THAT(error_of([&] { (void)tessera::imagebind_audio_clips(wave, 16000, odd); }),
              HasSubstr("clip_duration * sample_rate must be a whole number of samples"));
  tessera::ImageBindAudioOptions many;
  many.clips_per_video = 1001;
  EXPECT_THAT(error_of([&] { (void)tessera::imagebind_audio_clips(wave, 16000, many); }),
              HasSubstr("(imagebind_max_clips)"));
  tessera::ImageBindAudioOptions zero;
  zero.target_length = 0;
  EXPECT_THAT(error_of([&] { (void)tessera::imagebind_audio_clips(wave, 16000, zero); }),
              HasSubstr("target_length must be positive"));
}

}  // namespace test_audio
