#pragma once
// WAV (RIFF/WAVE) reading and writing: the decoder in front of the audio pipeline (SPEC 5.3).
//
//   tessera::Wav<float> wav = tessera::read_wav("speech.wav");   // samples [C, N]
//   tessera::Vector<float> mono = tessera::average_channels(wav.samples);   // [N]
//
// Supported: PCM 8 (unsigned), 16, 24 and 32-bit, IEEE float 32 and 64-bit, each either as a
// plain fmt chunk (format tag 1 or 3) or as WAVE_FORMAT_EXTENSIBLE (0xFFFE) with the PCM or
// IEEE-float subformat GUID; any number of channels. Samples are scaled as torchaudio.load
// (normalize=True) scales them, into [-1, 1):
//   8-bit unsigned u -> (u - 128) / 128        16-bit s -> s / 32768
//   24-bit s        -> s / 2^23               32-bit s -> s / 2^31
//   float           -> the stored value (not clipped; NaN and infinity are errors)
// (torchaudio 0.13's sox backend rounds 32-bit and float samples to multiples of 2^-24 and
// clips floats to [-1, 1]; tessera keeps the exact value. docs/audio.md has the measurements.)
//
// The file is read by walking its chunks: unknown chunks (LIST, fact, cue, ...) are skipped,
// an odd-sized chunk is followed by one pad byte. The rules a file must follow, each a
// tessera::Error naming the file when broken:
//   - it starts with "RIFF" <size> "WAVE" (the RIFF size itself is not trusted: streaming
//     writers leave it 0 or 0xFFFFFFFF; chunks are walked up to the end of the file);
//   - it has a fmt chunk (at least 16 bytes, 40 for EXTENSIBLE) and a data chunk;
//   - format, bit depth and channel count are supported, block_align equals
//     channels * bits / 8, the sample rate is in [WavLimits::min_sample_rate,
//     WavLimits::max_sample_rate] (1000 .. 768000 Hz by default);
//   - the data chunk holds whole frames (a multiple of block_align) and at least one, and it
//     fits in the file: a data chunk that claims more bytes than the file has is an error,
//     never silently truncated;
//   - channels * frames is at most WavLimits::max_samples.
// When several data chunks are present the first one is used.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/io/atomic_file.hpp>
#include <tessera/io/read_file.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace tessera {

// Limits against absurd files; read_wav throws tessera::Error when a file exceeds one.
// preprocess_audio applies the same limits to the waveform it resamples (tokenize/audio.hpp).
struct WavLimits {
  // channels * frames (4 GiB as float); also the most samples resampling may produce
  std::int64_t max_samples = std::int64_t{1} << 30;
  std::int64_t max_channels = 1024;
  // The sample rates in use span 8 kHz (telephony; 4-6 kHz in a few old voice formats) to
  // 768 kHz (the highest rate of professional converters, 16x 48 kHz). The header field holds
  // any 32-bit value, and the rate alone scales resampling: a 1 Hz file is upsampled
  // 16000-fold to reach 16 kHz, and with a rate of 2^32 - 1 torchaudio's polyphase kernel
  // has ~10^9 taps. A rate outside [min_sample_rate, max_sample_rate] is an error.
  std::int64_t min_sample_rate = 1000;
  std::int64_t max_sample_rate = 768000;
};

enum class WavSampleFormat : std::uint8_t { pcm, ieee_float };

// What the fmt chunk says, after resolving WAVE_FORMAT_EXTENSIBLE.
struct WavFormat {
  WavSampleFormat sample_format = WavSampleFormat::pcm;
  bool extensible = false;   // the fmt chunk was WAVE_FORMAT_EXTENSIBLE
  int bits_per_sample = 16;  // container bits: 8, 16, 24, 32 (pcm) or 32, 64 (float)
  Index channels = 1;        // C
  Index sample_rate = 16000;
};

template <class Scalar>
struct Wav {
  WavFormat format;
  Index sample_rate = 0;
  Matrix<Scalar> samples;  // [C, N], scaled into [-1, 1) as torchaudio.load does

  Index channels() const { return samples.rows(); }
  Index frames() const { return samples.cols(); }  // N
  double seconds() const { return static_cast<double>(frames()) / static_cast<double>(sample_rate); }
};

// Reads a WAV file. Throws tessera::Error naming the file on any problem listed above.
template <class Scalar = float>
Wav<Scalar> read_wav(const std::filesystem::path& file, const WavLimits& limits = {});

// Decodes a WAV file held in memory; `name` stands for the file in error messages.
template <class Scalar = float>
Wav<Scalar> read_wav(std::span<const std::uint8_t> bytes, const WavLimits& limits = {},
                     const std::string& name = "<memory>");

// The mean over channels of each frame (SPEC 5.3 "channels averaged"): [C, N] -> [N].
template <class Scalar>
Vector<Scalar> average_channels(const Matrix<Scalar>& samples /* [C, N] */);

enum class WavEncoding : std::uint8_t { pcm16, float32 };

// Encodes samples [C, N] as a canonical 44-byte-header WAV (format tag 1 or 3). pcm16 rounds
// x * 32768 to the nearest integer and clamps it to [-32768, 32767]; float32 stores the values
// (finite ones only). Throws tessera::Error on an empty or non-finite input.
template <class Scalar>
std::vector<std::uint8_t> encode_wav(const Matrix<Scalar>& samples /* [C, N] */, Index sample_rate,
                                     WavEncoding encoding = WavEncoding::pcm16);

// encode_wav written to `file` atomically (a temporary renamed into place).
template <class Scalar>
void write_wav(const std::filesystem::path& file, const Matrix<Scalar>& samples /* [C, N] */,
               Index sample_rate, WavEncoding encoding = WavEncoding::pcm16);

// ---------------------------------------------------------------------------------------------
// Implementation

namespace detail {

inline std::uint16_t wav_u16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}
inline std::uint32_t wav_u32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}
inline std::string wav_fourcc(const std::uint8_t* p) {
  std::string s;
  for (int i = 0; i < 4; ++i) {
    const char c = static_cast<char>(p[i]);
    s += (c >= 32 && c < 127) ? std::string(1, c) : concat("\\x", std::hex, int(p[i]));
  }
  return s;
}

inline const char* wav_format_tag_name(std::uint16_t tag) {
  switch (tag) {
    case 0x0001: return "PCM";
    case 0x0002: return "Microsoft ADPCM";
    case 0x0003: return "IEEE float";
    case 0x0006: return "A-law";
    case 0x0007: return "mu-law";
    case 0x0011: return "IMA ADPCM";
    case 0x0031: return "GSM 6.10";
    case 0x0050: return "MPEG";
    case 0x0055: return "MPEG layer 3";
    case 0xFFFE: return "EXTENSIBLE";
    default: return "unknown";
  }
}

inline std::string wav_hex_tag(std::uint16_t tag) {
  std::ostringstream out;
  out << "0x" << std::hex << std::uppercase;
  out.width(4);
  out.fill('0');
  out << tag;
  return out.str();
}

// The 14 bytes that follow the 2-byte format code in a KSDATAFORMAT_SUBTYPE_* GUID
// (00000001-0000-0010-8000-00aa00389b71 is PCM, ...0003-... IEEE float).
inline constexpr std::array<std::uint8_t, 14> wav_guid_tail = {
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71};

// Throws unless rate is in [limits.min_sample_rate, limits.max_sample_rate]; `what` names
// the rate ("clip.wav: sample rate").
inline void check_sample_rate(std::int64_t rate, const WavLimits& limits, const std::string& what) {
  if (rate < limits.min_sample_rate) {
    fail(what, " ", rate, " Hz is below the limit of ", limits.min_sample_rate,
         " Hz (WavLimits::min_sample_rate)");
  }
  if (rate > limits.max_sample_rate) {
    fail(what, " ", rate, " Hz exceeds the limit of ", limits.max_sample_rate,
         " Hz (WavLimits::max_sample_rate)");
  }
}

// Parses the fmt chunk body; `where` is the file name.
inline WavFormat parse_wav_fmt(const std::uint8_t* p, std::uint32_t size, const WavLimits& limits,
                               const std::string& where) {
  if (size < 16) fail(where, ": fmt chunk is ", size, " bytes, expected at least 16");
  std::uint16_t tag = wav_u16(p);
  const std::uint16_t channels = wav_u16(p + 2);
  const std::uint32_t rate = wav_u32(p + 4);
  const std::uint16_t block_align = wav_u16(p + 12);
  const std::uint16_t bits = wav_u16(p + 14);
  WavFormat format;
  if (tag == 0xFFFE) {
    format.extensible = true;
    if (size < 40) {
      fail(where, ": WAVE_FORMAT_EXTENSIBLE fmt chunk is ", size, " bytes, expected at least 40");
    }
    const std::uint8_t* guid = p + 24;
    if (!std::equal(wav_guid_tail.begin(), wav_guid_tail.end(), guid + 2)) {
      fail(where, ": WAVE_FORMAT_EXTENSIBLE subformat GUID is not a PCM or IEEE-float GUID "
                  "(unsupported subformat)");
    }
    tag = wav_u16(guid);
    if (tag != 0x0001 && tag != 0x0003) {
      fail(where, ": unsupported WAVE_FORMAT_EXTENSIBLE subformat ", wav_hex_tag(tag), " (",
           wav_format_tag_name(tag), "); supported: PCM (0x0001) and IEEE float (0x0003)");
    }
  }
  if (tag == 0x0001) {
    format.sample_format = WavSampleFormat::pcm;
    if (bits != 8 && bits != 16 && bits != 24 && bits != 32) {
      fail(where, ": unsupported PCM bit depth ", bits, " (supported: 8, 16, 24, 32)");
    }
  } else if (tag == 0x0003) {
    format.sample_format = WavSampleFormat::ieee_float;
    if (bits != 32 && bits != 64) {
      fail(where, ": unsupported IEEE float bit depth ", bits, " (supported: 32, 64)");
    }
  } else {
    fail(where, ": unsupported WAV format tag ", wav_hex_tag(tag), " (", wav_format_tag_name(tag),
         "); supported: PCM (0x0001), IEEE float (0x0003), EXTENSIBLE (0xFFFE) with a PCM or "
         "float subformat");
  }
  if (channels == 0) fail(where, ": fmt chunk says 0 channels");
  if (channels > limits.max_channels) {
    fail(where, ": ", channels, " channels exceed the limit of ", limits.max_channels,
         " (WavLimits::max_channels)");
  }
  if (rate == 0) fail(where, ": fmt chunk says sample rate 0");
  check_sample_rate(rate, limits, where + ": sample rate");
  const std::uint32_t expected_align = std::uint32_t{channels} * (bits / 8u);
  if (block_align != expected_align) {
    fail(where, ": block_align ", block_align, " is inconsistent with ", channels, " channels of ",
         bits, " bits (expected ", expected_align, ")");
  }
  format.bits_per_sample = bits;
  format.channels = channels;
  format.sample_rate = static_cast<Index>(rate);
  return format;
}

// One sample of the given format at p, scaled as torchaudio.load scales it.
inline double wav_sample(const std::uint8_t* p, WavSampleFormat sample_format, int bits) {
  if (sample_format == WavSampleFormat::ieee_float) {
    if (bits == 32) {
      const std::uint32_t u = wav_u32(p);
      float f;
      std::memcpy(&f, &u, sizeof f);
      return f;
    }
    const std::uint64_t u = std::uint64_t{wav_u32(p)} | (std::uint64_t{wav_u32(p + 4)} << 32);
    double d;
    std::memcpy(&d, &u, sizeof d);
    return d;
  }
  switch (bits) {
    case 8: return (static_cast<double>(p[0]) - 128.0) / 128.0;
    case 16: return static_cast<double>(static_cast<std::int16_t>(wav_u16(p))) / 32768.0;
    case 24: {
      // sign-extend the 24-bit little-endian value through the top of a 32-bit word
      const std::uint32_t u = (std::uint32_t{p[0]} << 8) | (std::uint32_t{p[1]} << 16) |
                              (std::uint32_t{p[2]} << 24);
      return static_cast<double>(static_cast<std::int32_t>(u) >> 8) / 8388608.0;
    }
    default: return static_cast<double>(static_cast<std::int32_t>(wav_u32(p))) / 2147483648.0;
  }
}

}  // namespace detail

template <class Scalar>
Wav<Scalar> read_wav(std::span<const std::uint8_t> bytes, const WavLimits& limits,
                     const std::string& name) {
  static_assert(std::is_floating_point_v<Scalar>, "read_wav: Scalar is float or double");
  const std::uint8_t* data = bytes.data();
  const std::size_t size = bytes.size();
  if (size < 12 || std::memcmp(data, "RIFF", 4) != 0 || std::memcmp(data + 8, "WAVE", 4) != 0) {
    if (size >= 4 && (std::memcmp(data, "RIFX", 4) == 0 || std::memcmp(data, "RF64", 4) == 0)) {
      fail(name, ": not a RIFF/WAVE file (", detail::wav_fourcc(data),
           " files are not supported)");
    }
    fail(name, ": not a RIFF/WAVE file (", size < 12 ? "shorter than the 12-byte RIFF header"
                                                     : "no RIFF....WAVE signature", ")");
  }

  // Walk the chunks: id (4), size (4, little-endian), body, one pad byte after an odd body.
  std::optional<WavFormat> format;
  const std::uint8_t* samples_begin = nullptr;
  std::uint64_t data_size = 0;
  bool have_data = false;
  std::size_t pos = 12;
  while (pos < size) {
    if (size - pos < 8) {
      if (format && have_data) break;  // trailing bytes after the chunks we need
      fail(name, ": truncated chunk header at byte ", pos, " (", size - pos,
           " bytes left, a chunk header is 8)");
    }
    const std::uint8_t* header = data + pos;
    const std::uint32_t chunk_size = detail::wav_u32(header + 4);
    const std::size_t body = pos + 8;
    const std::uint64_t available = size - body;
    const bool is_fmt = std::memcmp(header, "fmt ", 4) == 0;
    const bool is_data = std::memcmp(header, "data", 4) == 0;
    if (chunk_size > available) {
      if (is_data && !have_data) {
        fail(name, ": data chunk claims ", chunk_size, " bytes but only ", available,
             " remain in the file (truncated file?)");
      }
      if (format && have_data) break;  // a damaged chunk after everything we need
      fail(name, ": chunk '", detail::wav_fourcc(header), "' at byte ", pos, " claims ",
           chunk_size, " bytes but only ", available, " remain in the file");
    }
    if (is_fmt && !format) {
      format = detail::parse_wav_fmt(data + body, chunk_size, limits, name);
    } else if (is_data && !have_data) {
      have_data = true;
      samples_begin = data + body;
      data_size = chunk_size;
    }
    pos = body + chunk_size + (chunk_size & 1u);
  }
  if (!format) fail(name, ": no fmt chunk");
  if (!have_data) fail(name, ": no data chunk");

  const std::uint64_t block_align =
      static_cast<std::uint64_t>(format->channels) * (format->bits_per_sample / 8);
  if (data_size == 0) fail(name, ": zero-length audio (the data chunk is empty)");
  if (data_size % block_align != 0) {
    fail(name, ": data chunk of ", data_size, " bytes is not a whole number of ", block_align,
         "-byte frames");
  }
  const std::uint64_t frames = data_size / block_align;
  const std::uint64_t total = frames * static_cast<std::uint64_t>(format->channels);
  if (total > static_cast<std::uint64_t>(limits.max_samples)) {
    fail(name, ": ", total, " samples (", format->channels, " channels x ", frames,
         " frames) exceed the limit of ", limits.max_samples, " (WavLimits::max_samples)");
  }

  Wav<Scalar> wav;
  wav.format = *format;
  wav.sample_rate = format->sample_rate;
  wav.samples.resize(format->channels, static_cast<Index>(frames));
  const int bits = format->bits_per_sample;
  const std::size_t width = static_cast<std::size_t>(bits / 8);
  for (Index n = 0; n < static_cast<Index>(frames); ++n) {
    const std::uint8_t* frame = samples_begin + static_cast<std::size_t>(n) * block_align;
    for (Index c = 0; c < format->channels; ++c) {
      const double value =
          detail::wav_sample(frame + static_cast<std::size_t>(c) * width, format->sample_format, bits);
      if (!std::isfinite(value)) {
        fail(name, ": sample ", n, " of channel ", c, " is not finite (", value, ")");
      }
      wav.samples(c, n) = static_cast<Scalar>(value);
    }
  }
  return wav;
}

template <class Scalar>
Wav<Scalar> read_wav(const std::filesystem::path& file, const WavLimits& limits) {
  const auto bytes = read_file<std::vector<std::uint8_t>>(file, {}, ReadLimits::wav_file);
  return read_wav<Scalar>(std::span<const std::uint8_t>(bytes), limits, file.string());
}

template <class Scalar>
Vector<Scalar> average_channels(const Matrix<Scalar>& samples /* [C, N] */) {
  check(samples.rows() > 0, "average_channels: no channels");
  Vector<Scalar> mono(samples.cols());
  const double inv = 1.0 / static_cast<double>(samples.rows());
  for (Index n = 0; n < samples.cols(); ++n) {
    double sum = 0;  // in double: the mean of C values, rounded once
    for (Index c = 0; c < samples.rows(); ++c) sum += static_cast<double>(samples(c, n));
    mono(n) = static_cast<Scalar>(samples.rows() == 1 ? sum : sum * inv);
  }
  return mono;
}

template <class Scalar>
std::vector<std::uint8_t> encode_wav(const Matrix<Scalar>& samples /* [C, N] */, Index sample_rate,
                                     WavEncoding encoding) {
  check(samples.rows() > 0 && samples.cols() > 0, "encode_wav: empty audio [", samples.rows(), ", ",
        samples.cols(), "]");
  check(samples.rows() <= 65535, "encode_wav: ", samples.rows(), " channels (at most 65535)");
  check(sample_rate > 0 && sample_rate <= 0xFFFFFFFFLL, "encode_wav: sample rate ", sample_rate,
        " out of range");
  const std::uint32_t width = encoding == WavEncoding::pcm16 ? 2 : 4;
  const std::uint64_t data_size =
      static_cast<std::uint64_t>(samples.rows()) * static_cast<std::uint64_t>(samples.cols()) * width;
  check(data_size + 36 <= 0xFFFFFFFFull, "encode_wav: ", data_size,
        " bytes of samples do not fit a RIFF file (4 GiB)");

  std::vector<std::uint8_t> out;
  out.reserve(static_cast<std::size_t>(44 + data_size));
  auto put = [&out](std::uint64_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<std::uint8_t>(value >> (8 * i)));
  };
  auto put_tag = [&out](const char* tag) { out.insert(out.end(), tag, tag + 4); };
  const auto channels = static_cast<std::uint64_t>(samples.rows());
  put_tag("RIFF");
  put(36 + data_size, 4);
  put_tag("WAVE");
  put_tag("fmt ");
  put(16, 4);
  put(encoding == WavEncoding::pcm16 ? 1 : 3, 2);
  put(channels, 2);
  put(static_cast<std::uint64_t>(sample_rate), 4);
  put(static_cast<std::uint64_t>(sample_rate) * channels * width, 4);
  put(channels * width, 2);
  put(width * 8, 2);
  put_tag("data");
  put(data_size, 4);
  for (Index n = 0; n < samples.cols(); ++n) {
    for (Index c = 0; c < samples.rows(); ++c) {
      const double x = static_cast<double>(samples(c, n));
      check(std::isfinite(x), "encode_wav: sample ", n, " of channel ", c, " is not finite");
      if (encoding == WavEncoding::pcm16) {
        const double q = std::clamp(std::nearbyint(x * 32768.0), -32768.0, 32767.0);
        put(static_cast<std::uint16_t>(static_cast<std::int16_t>(q)), 2);
      } else {
        const float f = static_cast<float>(x);
        std::uint32_t u;
        std::memcpy(&u, &f, sizeof u);
        put(u, 4);
      }
    }
  }
  return out;
}

template <class Scalar>
void write_wav(const std::filesystem::path& file, const Matrix<Scalar>& samples /* [C, N] */,
               Index sample_rate, WavEncoding encoding) {
  const std::vector<std::uint8_t> bytes = encode_wav(samples, sample_rate, encoding);
  detail::write_file_atomically(file, bytes.data(), bytes.size());
}

}  // namespace tessera
