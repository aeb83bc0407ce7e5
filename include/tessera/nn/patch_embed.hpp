#pragma once
// PatchEmbed: cut an image, a spectrogram or a video into patches and project them (SPEC 2).
//
//   image [C, S, S]     -> (S/P)^2 patches, row-major, each flattened (c, ky, kx)     (Conv2d)
//   audio [M, T]        -> ceil(T/pf) chunks along time, the last zero-padded,
//                          each flattened (mel, frame)                              (Conv1d)
//   video [T, C, S, S]  -> tubelets of `tubelet` frames (last frame repeated to fill),
//                          each cut into P x P patches, row-major, flattened (c, dt, ky, kx)
//                                                                                    (Conv3d)
// then tokens = patches W^T + b with W [D, patch_dim]: the same numbers as the strided
// convolution whose weight is W reshaped to its convolution shape.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/nn/linear.hpp>

#include <algorithm>

namespace tessera::nn {

// image [C, S, S] -> patches [(S/P)^2, C*P*P]
template <class Scalar>
Matrix<Scalar> patchify_image(const Tensor3<Scalar>& image, Index patch) {
  const Index channels = image.dimension(0), height = image.dimension(1),
              width = image.dimension(2);
  TESSERA_ASSERT(patch > 0 && height % patch == 0 && width % patch == 0);
  const Index rows = height / patch, cols = width / patch;
  Matrix<Scalar> patches(rows * cols, channels * patch * patch);
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c) {
      Scalar* dst = patches.row(r * cols + c).data();
      for (Index ch = 0; ch < channels; ++ch)
        for (Index ky = 0; ky < patch; ++ky)
          for (Index kx = 0; kx < patch; ++kx)
            *dst++ = image(ch, r * patch + ky, c * patch + kx);
    }
  return patches;
}

// features [M, T] -> chunks [ceil(T/pf), M*pf], the last chunk zero-padded
template <class Scalar>
Matrix<Scalar> patchify_audio(const ConstMatrixRef<Scalar>& features, Index patch_frames) {
  const Index mels = features.rows(), frames = features.cols();
  TESSERA_ASSERT(patch_frames > 0);
  const Index chunks = (frames + patch_frames - 1) / patch_frames;
  Matrix<Scalar> patches = Matrix<Scalar>::Zero(chunks, mels * patch_frames);
  for (Index j = 0; j < chunks; ++j)
    for (Index m = 0; m < mels; ++m)
      for (Index f = 0; f < patch_frames && j * patch_frames + f < frames; ++f)
        patches(j, m * patch_frames + f) = features(m, j * patch_frames + f);
  return patches;
}

// video [T, C, S, S] -> tubelet patches [K*(S/P)^2, C*tubelet*P*P], K = ceil(T/tubelet)
template <class Scalar>
Matrix<Scalar> patchify_video(const Tensor4<Scalar>& video, Index tubelet, Index patch) {
  const Index frames = video.dimension(0), channels = video.dimension(1),
              height = video.dimension(2), width = video.dimension(3);
  TESSERA_ASSERT(frames > 0 && tubelet > 0 && patch > 0 && height % patch == 0 &&
                 width % patch == 0);
  const Index steps = (frames + tubelet - 1) / tubelet;
  const Index rows = height / patch, cols = width / patch;
  Matrix<Scalar> patches(steps * rows * cols, channels * tubelet * patch * patch);
  for (Index k = 0; k < steps; ++k)
    for (Index r = 0; r < rows; ++r)
      for (Index c = 0; c < cols; ++c) {
        Scalar* dst = patches.row((k * rows + r) * cols + c).data();
        for (Index ch = 0; ch < channels; ++ch)
          for (Index dt = 0; dt < tubelet; ++dt) {
            const Index frame = std::min(k * tubelet + dt, frames - 1);  // repeat the last
            for (Index ky = 0; ky < patch; ++ky)
              for (Index kx = 0; kx < patch; ++kx)
                *dst++ = video(frame, ch, r * patch + ky, c * patch + kx);
          }
      }
  return patches;
}

// The projection of flattened patches: a Linear [D, patch_dim] with bias.
//
// With a quantized weight (docs/quantization.md) the patches go through the product twice,
// narrowed and then what narrowing left out (QuantizedInputs::with_residual): they are the raw
// inputs (pixels, log-mel bins), and rounding each patch to int8 by its own largest value was
// the largest single loss measured on the demo model (docs/quantization.md, "Accuracy"), in
// a product that is a few percent of a ViT's at most.
template <class Scalar>
struct PatchEmbed {
  Linear<Scalar> proj;  // weight [D, patch_dim], bias [D]

  PatchEmbed() = default;
  PatchEmbed(Index patch_dim, Index dim) : proj(patch_dim, dim, true) {}

  Index patch_dim() const { return proj.in_features(); }
  Index dim() const { return proj.out_features(); }

  // requires: patches.cols() == patch_dim(). ensures: out [L, D] is assigned.
  void forward(MatrixRef<Scalar> out,                  // [L, D]
               const ConstMatrixRef<Scalar>& patches   // [L, patch_dim]
  ) const {
    proj.forward(out, patches, QuantizedInputs::with_residual);
  }

  // Backward of forward(out, patches): the projection's weight gradients (the patches are
  // data and get none).
  // ensures: grad.proj.weight and grad.proj.bias are accumulated into.
  void backward(PatchEmbed& grad,                      // proj [D, patch_dim], [D]
                const ConstMatrixRef<Scalar>& d_out,   // [L, D]
                const ConstMatrixRef<Scalar>& patches  // [L, patch_dim]
  ) const {
    proj.backward_weights(grad.proj, d_out, patches);
  }
};

}  // namespace tessera::nn
