#pragma once
// TowerTrace: what a tower's training forward (Tower::forward with a trace) keeps of a batch of
// clips for Tower::backward, and TowerModelTrace, the same for a TowerModel's batch of samples
// (TowerModel::encode_batch with a trace).
//
// What is kept depends on how the tower trains (model/tower_freezing.hpp):
//   projection  per clip the projection's input p = ln_post(x[pool]) [D], the unit embedding
//               and |proj p|: a few numbers per clip, however deep the tower
//   whole       that, and each clip's stem inputs (ids, patches, the stem norm's and ln_pre's
//               inputs), every block's input and saved values (nn::TransformerBlock::Saved):
//               per token and block 8 D + F values (D = width, F = ffn_dim; the input, Norm1's
//               output, q, k, v, the context, h, Norm2's output, fc1's output), ln_post's
//               input rows
// A frozen tower keeps nothing (no trace at all).

#include <tessera/core/modality.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/tower_freezing.hpp>
#include <tessera/nn/attention_mask.hpp>
#include <tessera/nn/block.hpp>
#include <tessera/nn/norm.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <utility>
#include <vector>

namespace tessera {

template <class Scalar>
struct TowerTrace {
  TowerTraining training = TowerTraining::frozen;

  // The tail of every clip (projection and whole).
  Matrix<Scalar> pooled;      // [N, D] ln_post(x[pool]): proj's input
  Matrix<Scalar> embeddings;  // [N, E] the unit embeddings
  Vector<Scalar> norms;       // [N] |proj p (+ bias)| before the normalisation

  // whole only:
  struct Clip {
    std::vector<std::int64_t> ids;          // text: the token ids
    Matrix<Scalar> patches;                 // [G, patch_dim] the patch projection's input
    Matrix<Scalar> stem_input;              // [G, D] the stem norm's input (stem_norm)
    typename nn::Norm<Scalar>::Saved stem;
    Matrix<Scalar> pre_input;               // [L, D] ln_pre's input (pre_norm)
    typename nn::Norm<Scalar>::Saved pre;
    Index pooled_row = 0;                   // the pooled token, within the clip
  };
  std::vector<Clip> clips;                  // [N]
  std::vector<Index> offsets;               // [N+1] the clips' rows in the packed batch
  nn::AttentionSegments segments;
  std::vector<Matrix<Scalar>> layer_inputs;  // [layers] each [sum L, D]
  std::vector<typename nn::TransformerBlock<Scalar>::Saved> layers;  // [layers]
  Matrix<Scalar> post_input;                // [N, D] ln_post's input: each clip's pooled row
  typename nn::Norm<Scalar>::Saved post;    // over those N rows

  // The bytes of the values held.
  std::size_t bytes() const {
    std::size_t values = static_cast<std::size_t>(pooled.size() + embeddings.size() +
                                                  norms.size() + post_input.size() +
                                                  post.mean.size() + post.rstd.size());
    for (const auto& c : clips) {
      const Index matrices = c.patches.size() + c.stem_input.size() + c.pre_input.size() +
                             2 * c.stem.rstd.size() + 2 * c.pre.rstd.size();
      values += c.ids.size() + static_cast<std::size_t>(matrices);
    }
    for (const auto& input : layer_inputs) values += static_cast<std::size_t>(input.size());
    std::size_t out = values * sizeof(Scalar);
    for (const auto& saved : layers) out += saved.bytes();
    return out;
  }
};

// A TowerModel batch's trace: one TowerTrace per trained tower that had clips in the batch,
// and for each of its clips the (sample, clip) it came from.
template <class Scalar>
struct TowerModelTrace {
  struct Part {
    std::vector<std::pair<std::size_t, std::size_t>> owner;  // [clips] (sample, clip of it)
    TowerTrace<Scalar> trace;
  };
  std::map<Modality, Part> towers;  // by the tower's modality (video: image)
  std::size_t samples = 0;          // N of the batch

  std::size_t bytes() const {
    std::size_t out = 0;
    for (const auto& [m, part] : towers) out += part.trace.bytes();
    return out;
  }
};

}  // namespace tessera
