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
#include <tessera/model/encoder_cache.hpp>
#include <tessera/model/encoder_trace.hpp>
#include <tessera/model/pooling.hpp>
#include <tessera/model/sample.hpp>
#include <tessera/model/sample_check.hpp>
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
inline nn::BlockOptions block_options(const Config& c) {
  return {c.hidden_dim, c.num_heads, c.ffn_dim, c.activation, c.norm, c.norm_eps};
}

template <class Scalar>
class MultiModalEncoder {
 public:
  Config config;

  nn::Embedding<Scalar> text_token_embed;  // [V, D]
  nn::PatchEmbed<Scalar> image_patch_embed;  // [D, C*P*P]
  nn::PatchEmbed<Scalar> audio_patch_embed;  // [D, M*patch_frames]
  nn::PatchEmbed<Scalar> video_patch_embed;  // [D, C*tubelet*P*P]
  Matrix<Scalar> text_pos_embed;   // [text.max_tokens, D]   (position = learned)
  Matrix<Scalar> image_pos_embed;  // [(S/P)^2, D]           (position = learned)
  Matrix<Scalar> audio_pos_embed;  // [audio.max_tokens, D]  (position = learned)
  Matrix<Scalar> video_pos_embed;  // [video.max_tokens, D]  (learned, video not pooled)
  nn::AttentionPool<Scalar> video_pool;  // pool_queries > 0
  std::vector<nn::PatchEmbed<Scalar>> custom_patch_embed;  // per custom modality [D, input_dim]
  std::vector<Matrix<Scalar>> custom_pos_embed;  // per custom modality [max_tokens, D] (learned)
  Matrix<Scalar> modality_embed;   // [4 + custom, D]
  Matrix<Scalar> cls_token;        // [1, D]                 (pooling = cls)
  std::vector<nn::TransformerBlock<Scalar>> layers;
  nn::Norm<Scalar> final_norm;
  nn::Linear<Scalar> router;       // [4 + custom, D] with bias  (pooling = routed)
  nn::Linear<Scalar> proj;         // [E, D] no bias
  Scalar logit_scale = static_cast<Scalar>(2.6592600369327779);  // ln(1/0.07)
  nn::Rope<Scalar> rope;           // (position = rope)

  // Allocates every weight of `config` (validated first): norms at weight 1 and bias 0, the
  // rest zero. Use load_model() for trained weights, or init_random() for a fresh model.
  explicit MultiModalEncoder(const Config& model_config) : config(model_config) {
    validate(config);
    const Index d = config.hidden_dim;
    const bool learned = config.position == PositionKind::learned;
    if (config.text) {
      text_token_embed = nn::Embedding<Scalar>(config.text->vocab_size, d);
      if (learned) text_pos_embed = Matrix<Scalar>::Zero(config.text->max_tokens, d);
    }
    if (config.image) {
      image_patch_embed = nn::PatchEmbed<Scalar>(config.image->patch_dim(), d);
      if (learned) image_pos_embed = Matrix<Scalar>::Zero(config.image->num_patches(), d);
    }
    if (config.audio) {
      audio_patch_embed = nn::PatchEmbed<Scalar>(config.audio->patch_dim(), d);
      if (learned) audio_pos_embed = Matrix<Scalar>::Zero(config.audio->max_tokens, d);
    }
    if (config.video) {
      video_patch_embed = nn::PatchEmbed<Scalar>(config.video_patch_dim(), d);
      if (pooled_video()) {
        video_pool = nn::AttentionPool<Scalar>(config.video->pool_queries,
                                               frame().num_patches(), d, config.num_heads,
                                               config.norm, eps());
      } else if (learned) {
        video_pos_embed = Matrix<Scalar>::Zero(config.video->max_tokens, d);
      }
    }
    for (const auto& c : config.custom) {
      custom_patch_embed.emplace_back(c.input_dim, d);
      custom_pos_embed.push_back(learned ? Matrix<Scalar>::Zero(c.max_tokens, d) : Matrix<Scalar>());
    }
    modality_embed = Matrix<Scalar>::Zero(config.modality_count(), d);
    if (config.pooling == PoolingKind::cls) cls_token = Matrix<Scalar>::Zero(1, d);
    layers.assign(static_cast<std::size_t>(config.num_layers), nn::TransformerBlock<Scalar>(block_options(config)));
    final_norm = nn::Norm<Scalar>(config.norm, d, eps());
    if (config.pooling == PoolingKind::routed) {
      router = nn::Linear<Scalar>(d, config.modality_count(), true);
    }
    proj = nn::Linear<Scalar>(d, config.embed_dim, false);
    if (config.position == PositionKind::rope) {
      rope = nn::Rope<Scalar>(config.head_dim(), config.rope_theta, config.rope_axis_pairs());
    }
  }

  // Fills every weight with a seeded random initialization by its role in the weight table
  // (model/weights.hpp): normal(0, 0.02) for matrices, embeddings and positions, norms' scales
  // at 1, biases and norms' shifts 0, logit_scale ln(1/0.07). A fresh model to train or try.
  void init_random(std::uint64_t seed) {
    SplitMix64 rng{seed};  // the same numbers with any standard library
    for (auto& p : parameters()) {
      for (std::int64_t i = 0; i < p.size(); ++i) {
        switch (p.role) {
          case WeightRole::normal: p.data[i] = static_cast<Scalar>(rng.normal(0.0, 0.02)); break;
          case WeightRole::zero: p.data[i] = Scalar(0); break;
          case WeightRole::one: p.data[i] = Scalar(1); break;
          case WeightRole::logit_scale: p.data[i] = static_cast<Scalar>(2.6592600369327779); break;
        }
      }
    }
  }

  // Every weight, named and shaped as in SPEC 4, in a fixed order.
  std::vector<Parameter<Scalar>> parameters() { return collect_parameters<Scalar>(*this); }
  std::vector<Parameter<const Scalar>> parameters() const {
    return collect_parameters<const Scalar>(*this);
  }

  // How every attention layer (the blocks' and the video pooler's) stores the keys and values
  // its kernel reads: nn::KVPrecision::native (the default) or bfloat16, which halves their
  // memory, the KV caches of encode_append included, at the cost docs/encoder.md measures.
  // A setting of this object, not of the model file. Not to be called during an encode.
  void set_kv_precision(nn::KVPrecision precision) {
    for (auto& layer : layers) layer.attn.kv_precision = precision;
    video_pool.attn.kv_precision = precision;
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
    check_learned_room(cache.cursor, part);

    TokenCursor cursor = cache.cursor;  // committed with the rest at the end
    const bool first = cursor.counts.empty();
    Encoding<Scalar> fresh;
    Matrix<Scalar> x = embed(part, fresh, cursor);  // [n, D]
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
  // Throws tessera::Error, before any computation, for an input that does not fit.
  std::vector<Encoding<Scalar>> encode_batch(std::span<const Sample<Scalar>> samples,
                                             EncoderTrace<Scalar>& trace) const {
    check(!samples.empty(), "encode_batch: the batch is empty");
    for (std::size_t i = 0; i < samples.size(); ++i) {
      check_sample(samples[i], detail::concat("sample ", i));
    }
    trace = EncoderTrace<Scalar>{};
    trace.encodings = encode_packed(samples, &trace);
    return trace.encodings;
  }

  // Backward of encode_batch(samples, trace): given d_embeddings, the loss's gradient with
  // respect to each sample's embedding, adds the gradient of every weight to grad's (a model
  // of the same config, zeroed with set_zero() before the first batch). logit_scale is not
  // touched: the loss gives its gradient.
  //   e = u / |u|, u = proj p:  d_u = (d_e - e (e . d_e)) / |u|,  d_proj += d_u p^T,
  //   d_p = proj^T d_u; then each pooling's, the final norm's, the layers' and the front
  //   ends' backward passes in turn.
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
    final_norm.backward(d_x, grad.final_norm, d_x, trace.final_input, trace.final_norm);
    Matrix<Scalar> d_in(d_x.rows(), d_x.cols());
    for (std::size_t l = layers.size(); l-- > 0;) {
      layers[l].backward(d_in, grad.layers[l], d_x, trace.layer_inputs[l], trace.segments,
                         rotary(), &trace.positions, trace.layers[l]);
      d_x.swap(d_in);
    }
    for (std::size_t i = 0; i < count; ++i) {
      const Index first = trace.offsets[i], rows = trace.offsets[i + 1] - first;
      embed_backward(grad, d_x.middleRows(first, rows), trace.samples[i]);
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
      tokens[i] = embed(samples[i], out[i], cursor, trace != nullptr ? &trace->samples[i] : nullptr);
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
      trace->layers.resize(layers.size());
    }
    run_layers(x, [&](std::size_t l, Matrix<Scalar>& out, const Matrix<Scalar>& in) {
      if (trace == nullptr) {
        layers[l].forward(out, in, segments, rotary(), &positions);
        return;
      }
      trace->layer_inputs[l] = in;
      layers[l].forward(out, in, segments, rotary(), &positions, &trace->layers[l]);
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
    Vector<Scalar> e = proj.weight * pooled.transpose();  // [E]
    const Scalar norm = e.norm();
    check(std::isfinite(static_cast<double>(norm)) && norm > Scalar(0),
          "encode: the embedding of sample ", i, " has norm ", norm,
          " (non-finite or zero weights?)");
    enc.embedding = e / norm;
  }

  // The learned position tables that `part` would continue past the end of, after cursor:
  // a tessera::Error naming the first one (RoPE positions have no such table).
  void check_learned_room(const TokenCursor& cursor, const Sample<Scalar>& part) const {
    if (config.position != PositionKind::learned || cursor.counts.empty()) return;
    auto room = [&](auto m, Index n, const Matrix<Scalar>& table, const std::string& name) {
      const Index had = cursor.counts[static_cast<std::size_t>(m)];
      check(had + n <= table.rows(), "encode_append: ", name, " would reach token ", had + n,
            ", past its ", table.rows(), " learned positions");
    };
    if (part.text) room(Modality::text, static_cast<Index>(part.text->size()), text_pos_embed, "text");
    if (part.image) room(Modality::image, config.image->num_patches(), image_pos_embed, "image");
    if (part.audio) {
      const Index chunks = (part.audio->cols() + config.audio->patch_frames - 1) / config.audio->patch_frames;
      room(Modality::audio, chunks, audio_pos_embed, "audio");
    }
    if (part.video && !pooled_video())
      room(Modality::video, video_tokens(part.video->dimension(0)), video_pos_embed, "video");
    for (std::size_t k = 0; k < config.custom.size(); ++k) {
      const auto found = part.custom.find(config.custom[k].name);
      if (found != part.custom.end())
        room(num_modalities + static_cast<int>(k), found->second.features.rows(),
             custom_pos_embed[k], config.custom[k].name);
    }
  }

  Scalar eps() const { return static_cast<Scalar>(config.norm_eps); }
  bool pooled_video() const { return config.pooled_video(); }
  const ImageConfig& frame() const { return config.frame_geometry(); }
  Index video_tokens(Index frames) const { return config.video_tokens(frames); }

  // The front ends of SPEC 2 for one sample, or for the next part of one (after `cursor`,
  // which it advances): returns the tokens [L, D] and fills the encoding's modality and
  // positions.
  // With trace given, records what embed_backward needs.
  Matrix<Scalar> embed(const Sample<Scalar>& s, Encoding<Scalar>& enc, TokenCursor& cursor,
                       typename EncoderTrace<Scalar>::SampleTrace* trace = nullptr) const {
    const Index d = config.hidden_dim;
    const bool learned = config.position == PositionKind::learned;
    std::vector<Matrix<Scalar>> parts;  // each [L_m, D]
    std::vector<std::array<std::int64_t, 3>> pos;
    const bool first = cursor.counts.empty();
    if (first) cursor.counts.assign(static_cast<std::size_t>(config.modality_count()), 0);
    std::int64_t& offset = cursor.offset;  // the running RoPE offset s

    // Adds one modality's tokens [n, D]: modality embedding, then learned positions (from
    // the modality's tokens so far on). `m` is a Modality or 4 + k for the k-th custom one.
    // `patches` (the patch embedding's input) are kept in the trace.
    auto add = [&](Matrix<Scalar> t, auto m, const Matrix<Scalar>* pos_embed,
                   const Matrix<Scalar>* patches) {
      if (trace != nullptr) {
        Index first = 0;
        for (const auto& p : parts) first += p.rows();
        trace->parts.push_back({static_cast<int>(m), first, t.rows(),
                                patches != nullptr ? *patches : Matrix<Scalar>()});
      }
      Index& count = cursor.counts[static_cast<std::size_t>(m)];
      t.rowwise() += modality_embed.row(static_cast<Index>(m));
      if (learned && pos_embed != nullptr) {
        TESSERA_ASSERT(count + t.rows() <= pos_embed->rows());
        t += pos_embed->middleRows(count, t.rows());
      }
      count += t.rows();
      enc.modality.insert(enc.modality.end(), static_cast<std::size_t>(t.rows()),
                          static_cast<int>(m));
      parts.push_back(std::move(t));
    };

    if (first && config.pooling == PoolingKind::cls) {
      parts.push_back(cls_token);
      if (trace != nullptr) trace->cls = true;
      enc.modality.push_back(-1);
      pos.push_back({0, 0, 0});
      offset = 1;
    }
    if (s.text) {
      const auto n = static_cast<Index>(s.text->size());
      Matrix<Scalar> t(n, d);
      text_token_embed.forward(t, *s.text, "text_ids");
      for (Index i = 0; i < n; ++i) pos.push_back({offset + i, offset + i, offset + i});
      offset += n;
      if (trace != nullptr) trace->text = *s.text;
      add(std::move(t), Modality::text, &text_pos_embed, nullptr);
    }
    if (s.image) {
      const auto& im = *config.image;
      const Matrix<Scalar> patches = nn::patchify_image(*s.image, im.patch);
      Matrix<Scalar> t(patches.rows(), d);
      image_patch_embed.forward(t, patches);
      const Index grid = im.grid();
      for (Index r = 0; r < grid; ++r)
        for (Index c = 0; c < grid; ++c) pos.push_back({offset, offset + r, offset + c});
      offset += grid;
      add(std::move(t), Modality::image, &image_pos_embed, &patches);
    }
    if (s.audio) {
      const Matrix<Scalar> patches = nn::patchify_audio<Scalar>(*s.audio, config.audio->patch_frames);
      Matrix<Scalar> t(patches.rows(), d);
      audio_patch_embed.forward(t, patches);
      for (Index j = 0; j < t.rows(); ++j) pos.push_back({offset + j, offset + j, offset + j});
      offset += t.rows();
      add(std::move(t), Modality::audio, &audio_pos_embed, &patches);
    }
    if (s.video) {
      const auto& fr = frame();
      const Matrix<Scalar> patches =
          nn::patchify_video(*s.video, config.video->tubelet, fr.patch);
      Matrix<Scalar> t(patches.rows(), d);
      video_patch_embed.forward(t, patches);
      const Index grid = fr.grid();
      const Index steps = patches.rows() / (grid * grid);
      if (pooled_video()) {
        const Index nq = config.video->pool_queries;
        Matrix<Scalar> pooled(steps * nq, d);
        video_pool.forward(pooled, t, trace != nullptr ? &trace->video_pool : nullptr);
        for (Index k = 0; k < steps; ++k)
          for (Index j = 0; j < nq; ++j) pos.push_back({offset + k, offset + k, offset + k});
        offset += steps;
        add(std::move(pooled), Modality::video, nullptr, &patches);
      } else {
        for (Index k = 0; k < steps; ++k)
          for (Index r = 0; r < grid; ++r)
            for (Index c = 0; c < grid; ++c) pos.push_back({offset + k, offset + r, offset + c});
        offset += std::max(steps, grid);
        add(std::move(t), Modality::video, &video_pos_embed, &patches);
      }
    }
    for (std::size_t k = 0; k < config.custom.size(); ++k) {
      const auto found = s.custom.find(config.custom[k].name);
      if (found == s.custom.end()) continue;
      const CustomInput<Scalar>& in = found->second;
      Matrix<Scalar> t(in.features.rows(), d);
      custom_patch_embed[k].forward(t, in.features);
      if (in.positions.rows() == 0) {
        for (Index j = 0; j < t.rows(); ++j) pos.push_back({offset + j, offset + j, offset + j});
        offset += t.rows();
      } else {
        for (Index j = 0; j < t.rows(); ++j) {
          pos.push_back({offset + in.positions(j, 0), offset + in.positions(j, 1),
                         offset + in.positions(j, 2)});
        }
        offset += 1 + in.positions.maxCoeff();
      }
      add(std::move(t), num_modalities + static_cast<int>(k), &custom_pos_embed[k], &in.features);
    }

    Index rows = 0;
    for (const auto& p : parts) rows += p.rows();
    Matrix<Scalar> tokens(rows, d);  // [L, D]
    Index at = 0;
    for (const auto& p : parts) {
      tokens.middleRows(at, p.rows()) = p;
      at += p.rows();
    }
    enc.positions.resize(rows, 3);
    for (Index r = 0; r < rows; ++r)
      for (int a = 0; a < 3; ++a) enc.positions(r, a) = pos[static_cast<std::size_t>(r)][a];
    return tokens;
  }

  // Backward of finish(enc) and the pooling: d_hidden [L, D] += the gradient reaching the
  // sample's final hidden states from d_e (its embedding's), and grad's proj (and router)
  // accumulate theirs.
  //   e = u / |u|, u = proj p:  d_u = (d_e - e (e . d_e)) / |u|,  d_proj += d_u p^T,
  //   d_p = proj^T d_u; then pool_backward.
  void finish_backward(MultiModalEncoder& grad, MatrixRef<Scalar> d_hidden,
                       const RowVector<Scalar>& d_e, const Encoding<Scalar>& enc) const {
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

  // The learned position table of modality m (4 + k: custom), or nullptr (none, or pooled
  // video, or RoPE positions).
  template <class Self>
  static auto position_table(Self& self, int m) -> decltype(&self.text_pos_embed) {
    if (self.config.position != PositionKind::learned) return nullptr;
    switch (m) {
      case 0: return &self.text_pos_embed;
      case 1: return &self.image_pos_embed;
      case 2: return &self.audio_pos_embed;
      case 3: return self.pooled_video() ? nullptr : &self.video_pos_embed;
      default: return &self.custom_pos_embed[static_cast<std::size_t>(m - num_modalities)];
    }
  }

  // Backward of embed() for one sample of a fresh batch: d_tokens [L, D] reaches the cls
  // token, the modality embeddings, the learned positions and each front end's weights.
  void embed_backward(MultiModalEncoder& grad, const ConstMatrixRef<Scalar>& d_tokens,
                      const typename EncoderTrace<Scalar>::SampleTrace& trace) const {
    if (trace.cls) grad.cls_token.row(0) += d_tokens.row(0);
    for (const auto& part : trace.parts) {
      const auto d = d_tokens.middleRows(part.first, part.rows);  // [n, D]
      grad.modality_embed.row(part.modality) += d.colwise().sum();
      if (auto* table = position_table(grad, part.modality)) table->topRows(part.rows) += d;
      switch (part.modality) {
        case 0: text_token_embed.backward(grad.text_token_embed, d, trace.text); break;
        case 1: image_patch_embed.backward(grad.image_patch_embed, d, part.patches); break;
        case 2: audio_patch_embed.backward(grad.audio_patch_embed, d, part.patches); break;
        case 3:
          if (pooled_video()) {
            Matrix<Scalar> d_patch_tokens(part.patches.rows(), config.hidden_dim);  // [K*Np, D]
            video_pool.backward(d_patch_tokens, grad.video_pool, d, trace.video_pool);
            video_patch_embed.backward(grad.video_patch_embed, d_patch_tokens, part.patches);
          } else {
            video_patch_embed.backward(grad.video_patch_embed, d, part.patches);
          }
          break;
        default: {
          const auto k = static_cast<std::size_t>(part.modality - num_modalities);
          custom_patch_embed[k].backward(grad.custom_patch_embed[k], d, part.patches);
        }
      }
    }
  }

  // The weight table (model/weights.hpp) bound to this encoder's storage: each entry's
  // storage is checked to hold exactly the table's shape.
  template <class T, class Self>
  static std::vector<Parameter<T>> collect_parameters(Self& self) {
    std::vector<Parameter<T>> out;
    for_each_weight(self.config, [&](WeightSpec spec, auto get) {
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
