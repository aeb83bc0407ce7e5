#pragma once
// check_sample: whether a Sample fits a model's config, before any computation. Input for a
// modality the model lacks, a wrong shape, a text id out of range, more tokens than
// max_tokens, a position out of range or a non-finite value is a tessera::Error whose message
// starts with `where` ("sample 3", "inputs.safetensors") and names what is wrong.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/config.hpp>
#include <tessera/model/sample.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

namespace tessera {

// The largest position offset a custom modality may give (keeps RoPE angles exact enough
// and every running offset far from overflow).
inline constexpr std::int64_t max_position_offset = std::int64_t{1} << 24;

namespace detail {

template <class Value>
void check_finite(const Value* data, Index size, std::string_view where, const char* what) {
  if constexpr (std::is_floating_point_v<Value>) {  // vectorised; the loop below names the value
    if (Eigen::Map<const Eigen::Array<Value, Eigen::Dynamic, 1>>(data, size).allFinite()) return;
  }
  for (Index j = 0; j < size; ++j) {
    check(std::isfinite(static_cast<double>(data[j])), where, ": ", what,
          " holds a non-finite value (", data[j], ") at flat index ", j);
  }
}

}  // namespace detail

// Throws tessera::Error when sample `s` does not fit the model: input for a modality the
// model lacks, a wrong shape, a text id out of range, more tokens than max_tokens, a
// non-finite value. `where` starts the message ("sample 3", "inputs.safetensors").
// encode and encode_batch check every sample so; a program that reads samples from files
// calls it first to name the file.
template <class Scalar>
void check_sample(const Config& config, const Sample<Scalar>& s, std::string_view where) {
  check(!s.empty(), where, " has no input");
  auto require = [&](bool given, Modality m) {
    check(!given || config.has(m), where, " has ", modality_name(m),
          " input but the model has no ", modality_name(m), " modality");
  };
  require(s.text.has_value(), Modality::text);
  require(s.image.has_value(), Modality::image);
  require(s.audio.has_value(), Modality::audio);
  require(s.video.has_value(), Modality::video);
  if (s.text) {
    const auto n = static_cast<Index>(s.text->size());
    check(n > 0, where, ": text has no tokens");
    check(n <= config.text->max_tokens, where, ": text has ", n,
          " tokens, more than text.max_tokens = ", config.text->max_tokens);
    for (std::size_t j = 0; j < s.text->size(); ++j) {
      const auto id = (*s.text)[j];
      check(id >= 0 && id < config.text->vocab_size, where, ": text id ", id,
            " at position ", j, " is out of range [0, ", config.text->vocab_size, ")");
    }
  }
  if (s.image) {
    const auto& im = *config.image;
    check(s.image->dimension(0) == im.channels && s.image->dimension(1) == im.size &&
              s.image->dimension(2) == im.size,
          where, ": image has shape [", s.image->dimension(0), ", ",
          s.image->dimension(1), ", ", s.image->dimension(2), "], expected [", im.channels,
          ", ", im.size, ", ", im.size, "]");
    detail::check_finite(s.image->data(), s.image->size(), where, "image");
  }
  if (s.audio) {
    const auto& au = *config.audio;
    check(s.audio->rows() == au.n_mels && s.audio->cols() > 0, where,
          ": audio has shape [", s.audio->rows(), ", ", s.audio->cols(), "], expected [",
          au.n_mels, ", T] with T >= 1");
    const Index chunks = (s.audio->cols() + au.patch_frames - 1) / au.patch_frames;
    check(chunks <= au.max_tokens, where, ": audio of ", s.audio->cols(),
          " frames makes ", chunks, " tokens, more than audio.max_tokens = ", au.max_tokens);
    detail::check_finite(s.audio->data(), s.audio->size(), where, "audio");
  }
  if (s.video) {
    const auto& fr = config.frame_geometry();
    check(s.video->dimension(0) > 0 && s.video->dimension(1) == fr.channels &&
              s.video->dimension(2) == fr.size && s.video->dimension(3) == fr.size,
          where, ": video has shape [", s.video->dimension(0), ", ",
          s.video->dimension(1), ", ", s.video->dimension(2), ", ", s.video->dimension(3),
          "], expected [T, ", fr.channels, ", ", fr.size, ", ", fr.size, "] with T >= 1");
    const Index n = config.video_tokens(s.video->dimension(0));
    check(n <= config.video->max_tokens, where, ": video of ", s.video->dimension(0),
          " frames makes ", n, " tokens, more than video.max_tokens = ",
          config.video->max_tokens);
    detail::check_finite(s.video->data(), s.video->size(), where, "video");
  }
  for (const auto& [name, in] : s.custom) {
    const CustomModalityConfig* c = config.find_custom(name);
    if (c == nullptr) {
      std::string known;
      for (const auto& k : config.custom) known += (known.empty() ? "" : ", ") + k.name;
      fail(where, " has input for modality '", name, "' but the model has no such ",
           "custom modality (it has: ", known.empty() ? "none" : known, ")");
    }
    const Index n = in.features.rows();
    check(n > 0 && in.features.cols() == c->input_dim, where, ": ", name,
          " features have shape [", n, ", ", in.features.cols(), "], expected [n, ",
          c->input_dim, "] with n >= 1");
    check(n <= c->max_tokens, where, ": ", name, " has ", n,
          " tokens, more than its max_tokens = ", c->max_tokens);
    detail::check_finite(in.features.data(), in.features.size(), where, name.c_str());
    check(in.positions.rows() == 0 || in.positions.rows() == n, where, ": ", name,
          " has ", in.positions.rows(), " positions for ", n, " tokens (give one per token, or none)");
    for (Index r = 0; r < in.positions.rows(); ++r)
      for (Index a = 0; a < 3; ++a) {
        const std::int64_t p = in.positions(r, a);
        check(p >= 0 && p <= max_position_offset, where, ": ", name, " position (",
              in.positions(r, 0), ", ", in.positions(r, 1), ", ", in.positions(r, 2),
              ") of token ", r, " is outside [0, ", max_position_offset, "]");
      }
  }
}

}  // namespace tessera
