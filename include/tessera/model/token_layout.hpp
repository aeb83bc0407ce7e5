#pragma once
// TokenLayout: the input side of the encoder (SPEC 2). Each modality's tokenizer weights (the
// text embedding table, the patch embeddings, the video pooler, the custom modalities'), the
// modality embeddings, learned positions and the cls token; embed() lays one sample's inputs
// out as one token sequence with its (t, y, x) positions, embed_backward() takes the
// gradient of those tokens back to every weight used.
//
//   tokens = [cls] + text + image + audio + video + custom   (the order of SPEC 2)
//   token  = front end's token + modality_embed[m] (+ the modality's learned position)
//   positions: a running offset s; text and audio (t, y, x) = (s + j) each, s += n; an image
//   (s, s + row, s + col), s += grid; a video step k (s + k, s + row, s + col),
//   s += max(steps, grid); pooled video (s + k) for the Nq queries of step k, s += steps.
//
// MultiModalEncoder derives from it, so its weights keep their SPEC 4 names as members
// (model.text_token_embed, model.modality_embed, ...). The config is passed in, not held.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/config.hpp>
#include <tessera/model/encoder_cache.hpp>
#include <tessera/model/encoder_trace.hpp>
#include <tessera/model/sample.hpp>
#include <tessera/nn/attention_pool.hpp>
#include <tessera/nn/embedding.hpp>
#include <tessera/nn/patch_embed.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tessera {

template <class Scalar>
class TokenLayout {
 public:
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

  TokenLayout() = default;
  // Allocates the input side of a model of `config` (validated by the caller): every weight
  // zero.
  explicit TokenLayout(const Config& config) {
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
      if (config.pooled_video()) {
        video_pool = nn::AttentionPool<Scalar>(config.video->pool_queries,
                                               config.frame_geometry().num_patches(), d,
                                               config.num_heads, config.norm,
                                               static_cast<Scalar>(config.norm_eps));
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
  }

  // The learned position tables that `part` would continue past the end of, after cursor:
  // a tessera::Error naming the first one (RoPE positions have no such table).
  void check_room(const Config& config, const TokenCursor& cursor,
                  const Sample<Scalar>& part) const {
    if (config.position != PositionKind::learned || cursor.counts.empty()) return;
    auto room = [&](ModalityId m, Index n, const Matrix<Scalar>& table, const std::string& name) {
      const Index had = cursor.counts[static_cast<std::size_t>(m.index())];
      check(had + n <= table.rows(), "encode_append: ", name, " would reach token ", had + n,
            ", past its ", table.rows(), " learned positions");
    };
    if (part.text) {
      room(Modality::text, static_cast<Index>(part.text->size()), text_pos_embed, "text");
    }
    if (part.image) room(Modality::image, config.image->num_patches(), image_pos_embed, "image");
    if (part.audio) {
      const Index frames = config.audio->patch_frames;
      const Index chunks = (part.audio->cols() + frames - 1) / frames;
      room(Modality::audio, chunks, audio_pos_embed, "audio");
    }
    if (part.video && !config.pooled_video()) {
      room(Modality::video, config.video_tokens(part.video->dimension(0)), video_pos_embed,
           "video");
    }
    for (std::size_t k = 0; k < config.custom.size(); ++k) {
      const auto found = part.custom.find(config.custom[k].name);
      if (found != part.custom.end())
        room(ModalityId::custom(static_cast<int>(k)), found->second.features.rows(),
             custom_pos_embed[k], config.custom[k].name);
    }
  }

  // The front ends of SPEC 2 for one sample, or for the next part of one (after `cursor`,
  // which it advances): returns the tokens [L, D] and fills the encoding's modality and
  // positions.
  // With trace given, records what embed_backward needs.
  Matrix<Scalar> embed(const Config& config, const Sample<Scalar>& s, Encoding<Scalar>& enc,
                       TokenCursor& cursor,
                       typename EncoderTrace<Scalar>::SampleTrace* trace = nullptr) const {
    const Index d = config.hidden_dim;
    const bool learned = config.position == PositionKind::learned;
    std::vector<Matrix<Scalar>> parts;  // each [L_m, D]
    std::vector<std::array<std::int64_t, 3>> pos;
    const bool first = cursor.counts.empty();
    if (first) cursor.counts.assign(static_cast<std::size_t>(config.modality_count()), 0);
    std::int64_t& offset = cursor.offset;  // the running RoPE offset s

    // Adds one modality's tokens [n, D]: modality embedding, then learned positions (from
    // the modality's tokens so far on). `patches` (the patch embedding's input) are kept in
    // the trace.
    auto add = [&](Matrix<Scalar> t, ModalityId m, const Matrix<Scalar>* pos_embed,
                   const Matrix<Scalar>* patches) {
      if (trace != nullptr) {
        Index first = 0;
        for (const auto& p : parts) first += p.rows();
        trace->parts.push_back({m, first, t.rows(),
                                patches != nullptr ? *patches : Matrix<Scalar>()});
      }
      Index& count = cursor.counts[static_cast<std::size_t>(m.index())];
      t.rowwise() += modality_embed.row(m.index());
      if (learned && pos_embed != nullptr) {
        TESSERA_ASSERT(count + t.rows() <= pos_embed->rows());
        t += pos_embed->middleRows(count, t.rows());
      }
      count += t.rows();
      enc.modality.insert(enc.modality.end(), static_cast<std::size_t>(t.rows()), m);
      parts.push_back(std::move(t));
    };

    if (first && config.pooling == PoolingKind::cls) {
      parts.push_back(cls_token);
      if (trace != nullptr) trace->cls = true;
      enc.modality.push_back(ModalityId::cls());
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
      const auto& fr = config.frame_geometry();
      const Matrix<Scalar> patches =
          nn::patchify_video(*s.video, config.video->tubelet, fr.patch);
      Matrix<Scalar> t(patches.rows(), d);
      video_patch_embed.forward(t, patches);
      const Index grid = fr.grid();
      const Index steps = patches.rows() / (grid * grid);
      if (config.pooled_video()) {
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
      add(std::move(t), ModalityId::custom(static_cast<int>(k)), &custom_pos_embed[k],
          &in.features);
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

  // The learned position table of modality m, or nullptr (none, or pooled video, or RoPE
  // positions).
  Matrix<Scalar>* position_table(const Config& config, ModalityId m) {
    if (config.position != PositionKind::learned) return nullptr;
    if (m.is_custom()) return &custom_pos_embed[static_cast<std::size_t>(m.custom_index())];
    switch (m.builtin()) {
      case Modality::text: return &text_pos_embed;
      case Modality::image: return &image_pos_embed;
      case Modality::audio: return &audio_pos_embed;
      case Modality::video: return config.pooled_video() ? nullptr : &video_pos_embed;
    }
    return nullptr;
  }

  // Backward of embed() for one sample of a fresh batch: d_tokens [L, D] reaches the cls
  // token, the modality embeddings, the learned positions and each front end's weights.
  void embed_backward(const Config& config, TokenLayout& grad,
                      const ConstMatrixRef<Scalar>& d_tokens,
                      const typename EncoderTrace<Scalar>::SampleTrace& trace) const {
    if (trace.cls) grad.cls_token.row(0) += d_tokens.row(0);
    for (const auto& part : trace.parts) {
      const auto d = d_tokens.middleRows(part.first, part.rows);  // [n, D]
      grad.modality_embed.row(part.modality.index()) += d.colwise().sum();
      if (auto* table = grad.position_table(config, part.modality)) table->topRows(part.rows) += d;
      if (part.modality.is_custom()) {
        const auto k = static_cast<std::size_t>(part.modality.custom_index());
        custom_patch_embed[k].backward(grad.custom_patch_embed[k], d, part.patches);
        continue;
      }
      switch (part.modality.builtin()) {
        case Modality::text:
          text_token_embed.backward(grad.text_token_embed, d, trace.text);
          break;
        case Modality::image:
          image_patch_embed.backward(grad.image_patch_embed, d, part.patches);
          break;
        case Modality::audio:
          audio_patch_embed.backward(grad.audio_patch_embed, d, part.patches);
          break;
        case Modality::video:
          if (config.pooled_video()) {
            Matrix<Scalar> d_patch_tokens(part.patches.rows(), config.hidden_dim);  // [K*Np, D]
            video_pool.backward(d_patch_tokens, grad.video_pool, d, trace.video_pool);
            video_patch_embed.backward(grad.video_patch_embed, d_patch_tokens, part.patches);
          } else {
            video_patch_embed.backward(grad.video_patch_embed, d, part.patches);
          }
          break;
      }
    }
  }
};

}  // namespace tessera
