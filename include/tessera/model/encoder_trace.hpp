#pragma once
// EncoderTrace: what the training forward keeps of a batch for the backward pass.

#include <tessera/core/modality.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/sample.hpp>
#include <tessera/nn/attention_mask.hpp>
#include <tessera/nn/attention_pool.hpp>
#include <tessera/nn/block.hpp>
#include <tessera/nn/norm.hpp>

#include <cstdint>
#include <vector>

namespace tessera {

// What a training forward (MultiModalEncoder::encode_batch with a trace) keeps of a batch for
// MultiModalEncoder::backward: each sample's inputs to its weights (ids, patches), the layers'
// inputs and saved values, and the encodings.
template <class Scalar>
struct EncoderTrace {
  // One modality's tokens within a sample: rows [first, first + rows) of it.
  struct Part {
    ModalityId modality;
    Index first = 0, rows = 0;
    Matrix<Scalar> patches;  // [n, patch_dim] the patch embedding's input (not for text)
  };
  struct SampleTrace {
    bool cls = false;                       // the sample starts with the cls token
    std::vector<std::int64_t> text;         // the text ids
    std::vector<Part> parts;
    typename nn::AttentionPool<Scalar>::Saved video_pool;  // pooled video
  };
  std::vector<SampleTrace> samples;
  std::vector<Index> offsets;                // [N+1] the samples' rows in the packed batch
  nn::AttentionSegments segments;
  Positions positions;                       // [sum L, 3]
  std::vector<Matrix<Scalar>> layer_inputs;  // [num_layers] each [sum L, D]
  std::vector<typename nn::TransformerBlock<Scalar>::Saved> layers;
  Matrix<Scalar> final_input;                // [sum L, D] the final norm's input
  typename nn::Norm<Scalar>::Saved final_norm;
  std::vector<Encoding<Scalar>> encodings;   // [N]
};

}  // namespace tessera
