#pragma once
// The encoder's input and output types: a Sample (any subset of the modalities, preprocessed),
// a CustomInput (one user modality's part of it) and an Encoding (one sample's result).
// Front ends build Samples from files (tokenize/); the encoder (model/encoder.hpp) turns them
// into Encodings. This header needs nothing but core/, so a front end need not include the
// encoder.

#include <tessera/core/modality.hpp>
#include <tessera/core/tensor.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tessera {

// The input of one custom modality (Config::custom): one vector per token, made by the
// modality's front end, and optionally a RoPE position per token.
//   token j = features.row(j) W^T + b    with `<name>.patch_embed.weight` W [D, input_dim]
//   position j = (s + t_j, s + y_j, s + x_j), then s += 1 + the largest offset;
//   no positions: (s + j, s + j, s + j), then s += n (a sequence, like audio)
template <class Scalar>
struct CustomInput {
  Matrix<Scalar> features;  // [n, input_dim]
  Positions positions;      // [n, 3] (t, y, x) offsets >= 0 within the modality, or empty
};

// One input of the encoder: any subset of the modalities (at least one).
template <class Scalar>
struct Sample {
  std::optional<std::vector<std::int64_t>> text;  // [n] token ids
  std::optional<Tensor3<Scalar>> image;           // [C, S, S] preprocessed (SPEC 5.2)
  std::optional<Matrix<Scalar>> audio;            // [M, T] features (SPEC 5.3)
  std::optional<Tensor4<Scalar>> video;           // [T, C, S, S] preprocessed frames (SPEC 5.4)
  std::map<std::string, CustomInput<Scalar>> custom;  // by custom modality name

  bool empty() const { return !text && !image && !audio && !video && custom.empty(); }
};

// The encoder's output for one sample.
template <class Scalar>
struct Encoding {
  Vector<Scalar> embedding;     // [E] unit L2 norm
  Matrix<Scalar> hidden;        // [L, D] final hidden states (after the final norm)
  std::vector<ModalityId> modality;  // [L] each token's modality (ModalityId::cls() for the
                                     // cls token)
  Positions positions;          // [L, 3] (t, y, x) RoPE positions (computed in learned mode too)
  Vector<Scalar> routing;       // [4 + custom] routed pooling's weight per modality (0 where absent);
                                // empty with mean or cls pooling
  int audio_clips = 1;          // > 1: long audio was split into this many clips (SPEC 5.3)
};

}  // namespace tessera
