#pragma once
// MultiModalEncoder: text, images, audio and video in one token sequence, one embedding space
// (SPEC 2-3).
//
//   tokens = [cls] + text + image + audio + video      (each front end: SPEC 2)
//   x      = tokens + modality_embed[m] (+ learned position)
//   for each layer:  h = x + Attn(Norm1(x)),  x = h + FFN(Norm2(h))     (RoPE inside Attn)
//   x = FinalNorm(x);  p = Pool(x);  e = normalize(proj p)
//
// A batch of samples with different modality mixes is packed back to back, without padding;
// each sample attends only to its own tokens. Every weight is a public member named after its
// SPEC 4 tensor; parameters() lists them all, which is how model files are read and written.

#include <tessera/core/error.hpp>
#include <tessera/core/parameter.hpp>
#include <tessera/core/random.hpp>
#include <tessera/core/warning.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/config.hpp>
#include <tessera/model/config_check.hpp>
#include <tessera/model/encoder_cache.hpp>
#include <tessera/model/encoder_trace.hpp>
#include <tessera/model/pooling.hpp>
#include <tessera/model/sample.hpp>
#include <tessera/model/sample_check.hpp>
#include <tessera/model/token_layout.hpp>
#include <tessera/model/weights.hpp>
#include <tessera/nn/attention.hpp>
#include <tessera/nn/attention_pool.hpp>
#include <tessera/nn/block.hpp>
#include <tessera/nn/embedding.hpp>
#include <tessera/nn/linear.hpp>
#include <tessera/nn/norm.hpp>
#include <tessera/nn/patch_embed.hpp>
#include <tessera/nn/rope.hpp>

#include <algorithm>
#include <type_traits>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

// The options of each of the encoder's transformer blocks.
inline nn::BlockOptions block_options(const Config& c,
                                      nn::WeightInit init = nn::WeightInit::zeros) {
  return {c.hidden_dim, c.num_heads, c.ffn_dim, c.activation, c.norm, c.norm_eps, init};
}

template <class Scalar>
class MultiModalEncoder : public TokenLayout<Scalar> {
 public:
  Config config;

  // The input side (model/token_layout.hpp): text_token_embed, the patch embeddings, learned
  // positions, video_pool, the custom modalities' embeddings, modality_embed, cls_token.
  std::vector<nn::TransformerBlock<Scalar>> layers;
  nn::Norm<Scalar> final_norm;
  nn::Linear<Scalar> router;       // [4 + custom, D] with bias  (pooling = routed)
  nn::Linear<Scalar> proj;         // [E, D] no bias
  Scalar logit_scale = static_cast<Scalar>(2.6592600369327779);  // ln(1/0.07)
  nn::Rope<Scalar> rope;           // (position = rope)

  // Allocates every weight of `config` (validated first): norms at weight 1 and bias 0, the
  // rest zero (the linear weights unset with WeightInit::unset, for a loader that writes them
  // all: load_model). Use load_model() for trained weights, or init_random() for a fresh model.
  explicit MultiModalEncoder(const Config& model_config,
                             nn::WeightInit init = nn::WeightInit::zeros)
      : TokenLayout<Scalar>((validate(model_config), model_config)),  // validated first
        config(model_config) {
    const Index d = config.hidden_dim;
    layers.reserve(static_cast<std::size_t>(config.num_layers));
    for (Index l = 0; l < config.num_layers; ++l) {  // each its own (a copy would write them)
      layers.emplace_back(block_options(config, init));
    }
    final_norm = nn::Norm<Scalar>(config.norm, d, eps());
    if (config.pooling == PoolingKind::routed) {
      router = nn::Linear<Scalar>(d, config.modality_count(), true, init);
    }
    proj = nn::Linear<Scalar>(d, config.embed_dim, false, init);
    if (config.position == PositionKind::rope) {
      rope = nn::Rope<Scalar>(config.head_dim(), config.rope_theta, config.rope_axis_pairs());
    }
  }

  // Fills every weight with a seeded random initialization by its role in the weight table
  // (model/weights.hpp): normal(0, 0.02) for matrices, embeddings and positions, norms' scales
  // at 1, biases and norms' shifts 0, logit_scale ln(1/0.07). A fresh model to train or try.
  void init_random(std::uint64_t seed) {
    const std::vector<Parameter<Scalar>> params = parameters();
    init_parameters<Scalar>(params, seed);
  }

  // Every weight, named and shaped as in SPEC 4, in a fixed order.
  std::vector<Parameter<Scalar>> parameters() { return collect_parameters<Scalar>(*this); }
  std::vector<Parameter<const Scalar>> parameters() const {
    return collect_parameters<const Scalar>(*this);
  }

  // How every attention layer (the blocks' and the video pooler's) stores the keys and values
  // its kernel reads: nn::KVPrecision::native (the default), bfloat16, which halves their
  // memory, the KV caches of encode_append included, or bfloat16_products, which also runs the
  // attention products in bfloat16 (float only), at the costs docs/encoder.md measures.
  // A setting of this object, not of the model file. Not to be called during an encode.
  void set_kv_precision(nn::KVPrecision precision) {
    for (auto& layer : layers) layer.attn.kv_precision = precision;
    this->video_pool.attn.kv_precision = precision;
  }
  nn::KVPrecision kv_precision() const {
    return layers.empty() ? nn::KVPrecision::native : layers.front().attn.kv_precision;
  }

  // Every weight (logit_scale included) set to 0: a model used as a gradient accumulator.
  void set_zero() {
    for (auto& p : parameters()) std::fill(p.data, p.data + p.size(), Scalar(0));
  }

  // Throws tessera::Error when sample `s` does not fit the model (model/sample_check.hpp).
  // encode and encode_batch check every sample so; a program that reads samples from files
  // calls it first to name the file.
  void check_sample(const Sample<Scalar>& s, std::string_view where) const {
    tessera::check_sample(config, s, where);
  }

  // Encodes one sample.
  Encoding<Scalar> encode(const Sample<Scalar>& sample) const {
    return encode_batch(std::span<const Sample<Scalar>>(&sample, 1)).front();
  }

  // Encodes a batch packed without padding; each sample attends only to itself.
  // Audio longer than audio.max_tokens chunks is split into consecutive clips that fit
  // (SPEC 5.3): the sample is encoded once per clip, with its other inputs, and its embedding
  // is the re-normalized mean of the clip embeddings; Encoding::audio_clips says how many
  // clips there were, and hidden, modality and positions are the first clip's.
  // Throws tessera::Error, before any computation, for an input that does not fit the model.
  std::vector<Encoding<Scalar>> encode_batch(std::span<const Sample<Scalar>> samples) const {
    check(!samples.empty(), "encode_batch: the batch is empty");
    std::vector<Sample<Scalar>> parts;      // the samples, long audio split into clips
    std::vector<std::size_t> owner;         // [parts] the sample each part comes from
    for (std::size_t i = 0; i < samples.size(); ++i) {
      const auto& s = samples[i];
      const Index frames_per_clip =
          config.audio ? config.audio->max_tokens * config.audio->patch_frames : 0;
      if (s.audio && config.audio && s.audio->cols() > frames_per_clip) {
        for (Index first = 0; first < s.audio->cols(); first += frames_per_clip) {
          Sample<Scalar> clip = s;
          clip.audio = s.audio->middleCols(first, std::min(frames_per_clip, s.audio->cols() - first));
          parts.push_back(std::move(clip));
          owner.push_back(i);
        }
      } else {
        parts.push_back(s);
        owner.push_back(i);
      }
    }
    for (std::size_t p = 0; p < parts.size(); ++p) {
      check_sample(parts[p], detail::concat("sample ", owner[p]));
    }
    std::vector<Encoding<Scalar>> encoded = encode_packed(parts);
    if (parts.size() == samples.size()) return encoded;

    std::vector<Encoding<Scalar>> out(samples.size());
    std::vector<int> clips(samples.size(), 0);
    for (std::size_t p = 0; p < parts.size(); ++p) {
      const std::size_t i = owner[p];
      if (clips[i]++ == 0) {
        out[i] = std::move(encoded[p]);
      } else {
        out[i].embedding += encoded[p].embedding;
      }
    }
    for (std::size_t i = 0; i < samples.size(); ++i) {
      out[i].audio_clips = clips[i];
      if (clips[i] > 1) {
        out[i].embedding.normalize();
        warn("encode: the audio of sample ", i, " has more than audio.max_tokens = ",
             config.audio->max_tokens, " chunks; it was split into ", clips[i],
             " clips and the embedding is the normalized mean of theirs");
      }
    }
    return out;
  }

  // Incremental encoding of one sample with a KV cache: appends the tokens of `part` to the
  // sample held in `cache` (empty at first) and returns the encoding of all its tokens so far
  // (also kept in cache.encoding). Only the new tokens are computed: in every layer they
  // attend to the cached keys and values of the earlier tokens and to each other (text
  // causally with text.causal), while the earlier tokens keep the states they had. The result
  // equals encoding the whole sample at once where the mask makes it so, i.e. where no earlier
  // token would see a later one: causal text appended to causal text, with mean or routed
  // pooling. Elsewhere it is the streaming form (a new video window sees the earlier ones, not
  // the reverse; with cls pooling the cls token has seen the first part only).
  // Positions continue: the running RoPE offset and each modality's learned positions (an
  // error once a learned table is used up). Long audio is refused, not split into clips.
  // Throws tessera::Error, leaving cache unchanged, for a part that does not fit.
  Encoding<Scalar> encode_append(EncoderCache<Scalar>& cache, const Sample<Scalar>& part) const {
    check_sample(part, "sample 0");
    check(cache.layers.empty() ||
              (cache.layers.size() == layers.size() &&
               cache.layers.front().width() == config.hidden_dim),
          "encode_append: the cache holds ", cache.layers.size(), " layers of width ",
          cache.layers.empty() ? 0 : cache.layers.front().width(), ", this model has ",
          layers.size(), " of width ", config.hidden_dim, " (a cache of another model?)");
    this->check_room(config, cache.cursor, part);

    TokenCursor cursor = cache.cursor;  // committed with the rest at the end
    const bool first = cursor.counts.empty();
    Encoding<Scalar> fresh;
    Matrix<Scalar> x = this->embed(config, part, fresh, cursor);  // [n, D]
    const Index past = cache.size(), n = x.rows();
    Index causal_begin = 0, causal_end = 0;  // the new text, in key rows
    if (config.text && config.text->causal && part.text) {
      causal_begin = past + (first && config.pooling == PoolingKind::cls ? 1 : 0);
      causal_end = causal_begin + static_cast<Index>(part.text->size());
    }

    std::vector<nn::KVCache<Scalar>> started;  // the first part's caches, kept on success only
    std::vector<nn::KVCache<Scalar>>& kv = first ? started : cache.layers;
    if (first) kv.resize(layers.size());
    try {
      run_layers(x, [&](std::size_t l, Matrix<Scalar>& out, const Matrix<Scalar>& in) {
        layers[l].forward_cached(out, in, kv[l], causal_begin, causal_end, rotary(),
                                 &fresh.positions);
      });

      Encoding<Scalar> all = cache.encoding;
      all.hidden.conservativeResize(past + n, config.hidden_dim);
      all.hidden.bottomRows(n) = x;
      all.positions.conservativeResize(past + n, 3);
      all.positions.bottomRows(n) = fresh.positions;
      all.modality.insert(all.modality.end(), fresh.modality.begin(), fresh.modality.end());
      finish(all, 0);
      if (first) cache.layers = std::move(started);
      cache.encoding = all;
      cache.cursor = std::move(cursor);
      return all;
    } catch (...) {
      if (!first) {  // forget the keys and values appended before the failure
        for (auto& layer : cache.layers) layer.length = std::min(layer.length, past);
      }
      throw;
    }
  }

  // The training forward: encode_batch that also fills `trace` with what backward needs. Every
  // sample must fit the model as it is (long audio is an error here, not split into clips).
  // trace.options says how (checkpoint_layers: keep only each layer's input, and backward
  // recomputes the rest; model/encoder_trace.hpp); they are kept, the rest of trace replaced.
  // Throws tessera::Error, before any computation, for an input that does not fit.
  std::vector<Encoding<Scalar>> encode_batch(std::span<const Sample<Scalar>> samples,
                                             EncoderTrace<Scalar>& trace) const {
    check(!samples.empty(), "encode_batch: the batch is empty");
    for (std::size_t i = 0; i < samples.size(); ++i) {
      check_sample(samples[i], detail::concat("sample ", i));
    }
    const typename EncoderTrace<Scalar>::Options options = trace.options;
    trace = EncoderTrace<Scalar>{};
    trace.options = options;
    trace.encodings = encode_packed(samples, &trace);
    return trace.encodings;
  }

  // Backward of encode_batch(samples, trace): given d_embeddings, the loss's gradient with
  // respect to each sample's embedding, adds the gradient of every weight to grad's (a model
  // of the same config, zeroed with set_zero() before the first batch). logit_scale is not
  // touched: the loss gives its gradient.
  //   e = u / |u|, u = proj p:  d_u = (d_e - e (e . d_e)) / |u|,  d_proj += d_u p^T,
  //   d_p = proj^T d_u; then each pooling's, the final norm's, the layers' and the front
  //   ends' backward passes in turn. A layer whose saved values the trace does not hold (it
  //   was checkpointed) first runs its forward again from its input to get them, the same
  //   operations on the same values: the gradients are bitwise those of a full trace.
  // requires: grad.config is this config; d_embeddings [N, E] for trace's N samples.
  // ensures: grad's weights are accumulated into.
  void backward(MultiModalEncoder& grad,
                const ConstMatrixRef<Scalar>& d_embeddings,  // [N, E]
                const EncoderTrace<Scalar>& trace) const {
    const auto count = trace.encodings.size();
    check(d_embeddings.rows() == static_cast<Index>(count) &&
              d_embeddings.cols() == config.embed_dim,
          "encoder backward: d_embeddings is [", d_embeddings.rows(), ", ", d_embeddings.cols(),
          "], expected [", count, ", ", config.embed_dim, "] (one row per sample of the trace)");
    check(grad.layers.size() == layers.size() && grad.config.hidden_dim == config.hidden_dim &&
              grad.config.embed_dim == config.embed_dim,
          "encoder backward: grad is not a model of this config");
    Matrix<Scalar> d_x = Matrix<Scalar>::Zero(trace.final_input.rows(), config.hidden_dim);
    for (std::size_t i = 0; i < count; ++i) {
      const Index first = trace.offsets[i], rows = trace.offsets[i + 1] - first;
      finish_backward(grad, d_x.middleRows(first, rows), d_embeddings.row(static_cast<Index>(i)),
                      trace.encodings[i]);
    }
    check(trace.layer_inputs.size() == layers.size() &&
              (trace.layers.size() == layers.size() || trace.layers.empty()),
          "encoder backward: the trace holds ", trace.layer_inputs.size(), " layer inputs and ",
          trace.layers.size(), " layers' saved values, expected ", layers.size(),
          " (a trace of another model?)");
    final_norm.backward(d_x, grad.final_norm, d_x, trace.final_input, trace.final_norm);
    Matrix<Scalar> d_in(d_x.rows(), d_x.cols());
    const bool recompute = trace.layers.empty();  // checkpointed: one layer's values at a time
    typename nn::TransformerBlock<Scalar>::Saved recomputed;
    Matrix<Scalar> out;  // [sum L, D] the recomputed forward's output, unused
    if (recompute) out.resize(d_x.rows(), d_x.cols());
    for (std::size_t l = layers.size(); l-- > 0;) {
      if (recompute) {
        layers[l].forward(out, trace.layer_inputs[l], trace.segments, rotary(), &trace.positions,
                          &recomputed);
      }
      layers[l].backward(d_in, grad.layers[l], d_x, trace.layer_inputs[l], trace.segments,
                         rotary(), &trace.positions, recompute ? recomputed : trace.layers[l]);
      d_x.swap(d_in);
    }
    for (std::size_t i = 0; i < count; ++i) {
      const Index first = trace.offsets[i], rows = trace.offsets[i + 1] - first;
      this->embed_backward(config, grad, d_x.middleRows(first, rows), trace.samples[i]);
    }
  }

 private:
  // encode_batch for samples that each fit the model (checked); fills trace when given.
  std::vector<Encoding<Scalar>> encode_packed(std::span<const Sample<Scalar>> samples,
                                              EncoderTrace<Scalar>* trace = nullptr) const {
    // Front ends: each sample's tokens, positions and modalities, packed back to back.
    std::vector<Encoding<Scalar>> out(samples.size());
    std::vector<Matrix<Scalar>> tokens(samples.size());
    std::vector<Index> offsets{0};
    if (trace != nullptr) trace->samples.resize(samples.size());
    for (std::size_t i = 0; i < samples.size(); ++i) {
      TokenCursor cursor;
      tokens[i] = this->embed(config, samples[i], out[i], cursor,
                              trace != nullptr ? &trace->samples[i] : nullptr);
      offsets.push_back(offsets.back() + tokens[i].rows());
    }
    Matrix<Scalar> x(offsets.back(), config.hidden_dim);  // [sum L_i, D]
    Positions positions(offsets.back(), 3);                // [sum L_i, 3]
    auto segments = nn::AttentionSegments::packed(offsets);
    for (std::size_t i = 0; i < samples.size(); ++i) {
      x.middleRows(offsets[i], tokens[i].rows()) = tokens[i];
      positions.middleRows(offsets[i], tokens[i].rows()) = out[i].positions;
      if (config.text && config.text->causal && samples[i].text) {
        const Index begin = offsets[i] + (config.pooling == PoolingKind::cls ? 1 : 0);
        segments.set_causal(static_cast<Index>(i), begin,
                            begin + static_cast<Index>(samples[i].text->size()));
      }
    }
    tokens.clear();

    // The transformer.
    if (trace != nullptr) {
      trace->offsets = offsets;
      trace->segments = segments;
      trace->positions = positions;
      trace->layer_inputs.resize(layers.size());
      if (!trace->options.checkpoint_layers) trace->layers.resize(layers.size());
    }
    typename nn::TransformerBlock<Scalar>::Workspace workspace;  // this call's: no sharing
    run_layers(x, [&](std::size_t l, Matrix<Scalar>& out, const Matrix<Scalar>& in) {
      if (trace == nullptr) {
        layers[l].forward(out, in, segments, rotary(), &positions, workspace);
        return;
      }
      trace->layer_inputs[l] = in;
      layers[l].forward(out, in, segments, rotary(), &positions,
                        trace->layers.empty() ? nullptr : &trace->layers[l]);
    }, trace != nullptr ? &trace->final_input : nullptr,
       trace != nullptr ? &trace->final_norm : nullptr);

    // Pooling and projection, per sample.
    for (std::size_t i = 0; i < samples.size(); ++i) {
      out[i].hidden = x.middleRows(offsets[i], offsets[i + 1] - offsets[i]);
      finish(out[i], i);
    }
    return out;
  }

  // The transformer on x [L, D] in place: every layer, then the final norm.
  // step(l, out, in) runs layer l from in to out. With final_input given, the final norm's
  // input and saved values are kept there and in final_saved.
  template <class Step>
  void run_layers(Matrix<Scalar>& x, Step&& step, Matrix<Scalar>* final_input = nullptr,
                  typename nn::Norm<Scalar>::Saved* final_saved = nullptr) const {
    Matrix<Scalar> next(x.rows(), x.cols());
    for (std::size_t l = 0; l < layers.size(); ++l) {
      step(l, next, x);
      x.swap(next);
    }
    if (final_input != nullptr) *final_input = x;
    final_norm.forward(x, x, final_saved);
  }

  const nn::Rope<Scalar>* rotary() const {
    return config.position == PositionKind::rope ? &rope : nullptr;
  }

  // Pooling and projection of sample i's final hidden states: sets the embedding.
  void finish(Encoding<Scalar>& enc, std::size_t i) const {
    const RowVector<Scalar> pooled =
        pool_forward(config.pooling, enc.hidden, enc.modality, router, &enc.routing);  // [D]
    // [E]; a quantized projection through its own product (fp32: the matrix-vector one)
    Vector<Scalar> e = proj.is_quantized() ? Vector<Scalar>(proj.forward(pooled).transpose())
                                           : Vector<Scalar>(proj.weight * pooled.transpose());
    const Scalar norm = e.norm();
    check(std::isfinite(static_cast<double>(norm)) && norm > Scalar(0),
          "encode: the embedding of sample ", i, " has norm ", norm,
          " (non-finite or zero weights?)");
    enc.embedding = e / norm;
  }

  Scalar eps() const { return static_cast<Scalar>(config.norm_eps); }

  // Backward of finish(enc) and the pooling: d_hidden [L, D] += the gradient reaching the
  // sample's final hidden states from d_e (its embedding's), and grad's proj (and router)
  // accumulate theirs.
  //   e = u / |u|, u = proj p:  d_u = (d_e - e (e . d_e)) / |u|,  d_proj += d_u p^T,
  //   d_p = proj^T d_u; then pool_backward.
  void finish_backward(MultiModalEncoder& grad, MatrixRef<Scalar> d_hidden,
                       const RowVector<Scalar>& d_e, const Encoding<Scalar>& enc) const {
    proj.check_trainable();
    RoutedPooling<Scalar> routed;
    const RowVector<Scalar> pooled =
        pool_forward(config.pooling, enc.hidden, enc.modality, router, nullptr, &routed);  // [D]
    const Vector<Scalar> u = proj.weight * pooled.transpose();    // [E]
    const Scalar norm = u.norm();
    const Vector<Scalar> e = u / norm;
    const Vector<Scalar> d_u = (d_e.transpose() - e * e.dot(d_e.transpose())) / norm;  // [E]
    grad.proj.weight.noalias() += d_u * pooled;
    const RowVector<Scalar> d_p = d_u.transpose() * proj.weight;  // [D]
    pool_backward(config.pooling, d_hidden, grad.router, d_p, enc.modality, router, routed);
  }

  // The weight table (model/weights.hpp) bound to this encoder's storage: each entry's
  // storage is checked to hold exactly the table's shape.
  template <class T, class Self>
  static std::vector<Parameter<T>> collect_parameters(Self& self) {
    std::vector<Parameter<T>> out;
    for_each_weight(self.config, [&](WeightSpec spec, auto get) {
      if constexpr (reaches_layer<decltype(get), Self>) {
        check(!get.layer(self).is_quantized(), "parameters: '", spec.name, "' is quantized (",
              nn::to_string(get.layer(self).format()), "); a quantized model has no fp32 "
              "parameters and cannot be trained");
      }
      auto& storage = get(self);
      T* data = nullptr;
      std::int64_t stored = 1;
      if constexpr (std::is_arithmetic_v<std::remove_cvref_t<decltype(storage)>>) {
        data = &storage;
      } else {
        data = storage.data();
        stored = storage.size();
      }
      std::int64_t expected = 1;
      for (const auto n : spec.shape) expected *= n;
      TESSERA_ASSERT(stored == expected);
      out.push_back(Parameter<T>{std::move(spec.name), data, std::move(spec.shape),
                                 std::move(spec.conv_shape), spec.role});
    });
    return out;
  }
};

}  // namespace tessera
