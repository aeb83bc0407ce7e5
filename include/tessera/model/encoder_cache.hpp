#pragma once
// The state of an incremental encoding (MultiModalEncoder::encode_append): where the next
// tokens of a sample start (TokenCursor) and every layer's keys and values so far
// (EncoderCache). Streaming video and audio keep one EncoderCache per stream.

#include <tessera/core/tensor.hpp>
#include <tessera/model/sample.hpp>
#include <tessera/nn/kv_cache.hpp>

#include <cstdint>
#include <vector>

namespace tessera {

// Where a sample's next tokens start: the running RoPE offset s of SPEC 2 and, per modality
// (4 + custom), how many tokens the sample has already (learned positions continue there).
// Empty counts: nothing yet (a cls token, with cls pooling, comes first).
struct TokenCursor {
  std::int64_t offset = 0;
  std::vector<Index> counts;  // [4 + custom] or empty
};

// The state of an incremental encoding of one sample (MultiModalEncoder::encode_append):
// per layer the keys and values of every token so far, and the encoding of them all.
template <class Scalar>
struct EncoderCache {
  std::vector<nn::KVCache<Scalar>> layers;  // [num_layers]
  Encoding<Scalar> encoding;                // hidden [L, D], modality, positions, embedding
  TokenCursor cursor;

  Index size() const { return encoding.hidden.rows(); }  // L, the tokens so far
};

}  // namespace tessera
