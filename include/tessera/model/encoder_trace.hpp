#pragma once
// EncoderTrace: what the training forward keeps of a batch for the backward pass.
//
// With options.checkpoint_layers (activation checkpointing per transformer layer, as
// torch.utils.checkpoint does it per block), the trace keeps only each layer's input [sum L, D];
// MultiModalEncoder::backward runs each layer's forward again from that input, just before the
// layer's backward, and the gradients are bitwise those of the full trace (the same operations
// on the same values). It costs one more forward of the layers (measured +16% step time on a
// small model, +31% on a ViT-B/16-sized one) and saves, per token and layer, everything but
// the input: the norms' outputs, q, k, v, the attention's context and the residual (7 D) and
// the feed-forward's hidden values (F, 2 F for SwiGLU): a 10x smaller trace at ViT-B/16's
// sizes. Measured in docs/training.md.

#include <tessera/core/modality.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/sample.hpp>
#include <tessera/nn/attention_mask.hpp>
#include <tessera/nn/attention_pool.hpp>
#include <tessera/nn/block.hpp>
#include <tessera/nn/norm.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tessera {

// What a training forward (MultiModalEncoder::encode_batch with a trace) keeps of a batch for
// MultiModalEncoder::backward: each sample's inputs to its weights (ids, patches), the layers'
// inputs and saved values, and the encodings.
template <class Scalar>
struct EncoderTrace {
  // How the training forward fills the trace; the caller's setting, kept when encode_batch
  // refills the trace.
  struct Options {
    bool checkpoint_layers = false;  // keep only each layer's input; backward recomputes the rest
  };
  Options options;

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
  // [num_layers] each layer's saved values; empty when the layers were checkpointed
  std::vector<typename nn::TransformerBlock<Scalar>::Saved> layers;
  Matrix<Scalar> final_input;                // [sum L, D] the final norm's input
  typename nn::Norm<Scalar>::Saved final_norm;
  std::vector<Encoding<Scalar>> encodings;   // [N]

  // The bytes of the values the trace holds for the transformer: the layers' inputs and saved
  // values, the final norm's input and the encodings' hidden states (the part that grows with
  // tokens x layers; the samples' patches and the video pooler's values are not counted).
  std::size_t transformer_bytes() const {
    std::size_t values = static_cast<std::size_t>(final_input.size() + final_norm.mean.size() +
                                                   final_norm.rstd.size());
    for (const auto& input : layer_inputs) values += static_cast<std::size_t>(input.size());
    for (const auto& encoding : encodings) values += static_cast<std::size_t>(encoding.hidden.size());
    std::size_t bytes = values * sizeof(Scalar);
    for (const auto& saved : layers) bytes += saved.bytes();
    return bytes;
  }
};

}  // namespace tessera
