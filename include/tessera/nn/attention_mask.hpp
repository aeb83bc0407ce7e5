#pragma once
// AttentionSegments: the attention mask of a packed batch, described rather than stored.
//
// A packed batch holds several samples back to back without padding; AttentionSegments says
// which rows of q see which rows of k (a sample only attends to itself), and which range of
// each sample is causal text (a text token does not see later text tokens; every other pair
// is allowed: the mixed causal/bidirectional mask). The kernels (nn/attention_kernel.hpp)
// apply it tile by tile; no [Lq, Lk] mask is ever built.

#include <tessera/core/tensor.hpp>

#include <cstddef>
#include <vector>

namespace tessera::nn {

// Which queries see which keys. Segment s pairs query rows [query_offsets[s], query_offsets[s+1])
// with key rows [key_offsets[s], key_offsets[s+1]). Within a segment, rows in the causal range
// [causal_begin[s], causal_end[s]) (absolute key-row indices; an empty range when the segment
// has no causal part) do not see causal rows after them. Query row i stands at key row
// i + query_shift[s] for that rule: 0 in self attention (query row i is key row i), the
// cache's length when new tokens attend to a KV cache followed by their own keys. An empty
// query_shift means 0 for every segment.
struct AttentionSegments {
  std::vector<Index> query_offsets;  // [N+1]
  std::vector<Index> key_offsets;    // [N+1]
  std::vector<Index> causal_begin;   // [N]
  std::vector<Index> causal_end;     // [N]
  std::vector<Index> query_shift;    // [N] or empty

  Index size() const { return static_cast<Index>(query_offsets.size()) - 1; }
  Index shift(std::size_t s) const { return query_shift.empty() ? 0 : query_shift[s]; }

  // One segment where all `length` tokens see each other.
  static AttentionSegments full(Index length) { return full(length, length); }
  // One segment of `queries` query rows seeing all `keys` key rows.
  static AttentionSegments full(Index queries, Index keys) {
    return AttentionSegments{{0, queries}, {0, keys}, {0}, {0}, {}};
  }
  // Self attention over samples packed back to back: offsets [N+1]; no causal part.
  static AttentionSegments packed(const std::vector<Index>& offsets) {
    const std::size_t n = offsets.size() - 1;
    return AttentionSegments{offsets, offsets, std::vector<Index>(n, 0), std::vector<Index>(n, 0), {}};
  }

  // Adds a causal range [begin, end) to segment s (self attention only).
  void set_causal(Index s, Index begin, Index end) {
    causal_begin[static_cast<std::size_t>(s)] = begin;
    causal_end[static_cast<std::size_t>(s)] = end;
  }
};

}  // namespace tessera::nn
