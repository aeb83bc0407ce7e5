#pragma once
// TowerFrontEnds: raw inputs to samples for a pretrained model (model/pretrained.hpp), each
// modality prepared as the model's family prepares it (docs/pretrained.md):
//
//   text    CLIP's tokenizer (tokenize/clip_bpe.hpp) from the directory's vocab.json +
//           merges.txt or bpe_simple_vocab_16e6.txt.gz: [<|startoftext|>] + ids +
//           [<|endoftext|>]; longer than the context length is an error (clip.tokenize's
//           default), or cut to it with the end token kept (truncate = true)
//   image   hf_clip, tessera_towers: preprocessor_config.json (transformers'
//           CLIPImageProcessor); open_clip: open_clip_config.json's preprocess_cfg;
//           imagebind: data.py's Resize(224, bicubic) + CenterCrop(224) + CLIP's mean and std.
//           Without such a file, OpenAI CLIP's transform at the tower's image size.
//   audio   imagebind, tessera_towers: data.py's clips (tokenize/imagebind_clips.hpp): [M, 3 * 204]
//           (the audio tower's mel bins and frames; a tessera_towers audio tower is
//           ImageBind's design, add_tower's new one included)
//   video   imagebind: data.py's 5 clips x 3 crops x 2 frames (imagebind_clips.hpp);
//           CLIP families: frames sampled at video_fps (tokenize/video.hpp's sampling), each
//           prepared as an image; the model embeds each and averages (CLIP4Clip).

#ifndef TESSERA_HAS_ICU
#error "tessera/tokenize/tower_front_ends.hpp needs ICU for the CLIP tokenizer"
#endif
#ifndef TESSERA_HAS_STB
#error "tessera/tokenize/tower_front_ends.hpp needs stb_image to decode images"
#endif

#include <tessera/core/error.hpp>
#include <tessera/io/image.hpp>
#include <tessera/io/video.hpp>
#include <tessera/model/pretrained.hpp>
#include <tessera/model/sample.hpp>
#include <tessera/model/tower_model.hpp>
#include <tessera/tokenize/clip_bpe.hpp>
#include <tessera/tokenize/front_end.hpp>
#include <tessera/tokenize/image_processor.hpp>
#include <tessera/tokenize/imagebind_clips.hpp>
#include <tessera/tokenize/video.hpp>

#include <filesystem>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace tessera {

struct TowerFrontEndOptions {
  // Text longer than the context length: cut to it, keeping the end token (clip.tokenize's
  // truncate=True), instead of an error.
  bool truncate = false;
  // Frames per second sampled from a video for a CLIP model (each frame one clip).
  double video_fps = 1.0;
  // The most frames a CLIP model's video may give at video_fps: 256 (at 224 x 224, 154 MB of
  // preprocessed frames). An error past it, naming the file.
  Index max_video_frames = 256;
};

class TowerFrontEnds {
 public:
  TowerFrontEnds(const TowerModelConfig& config, const std::filesystem::path& dir,
                 const TowerFrontEndOptions& options = {})
      : config_(config), dir_(dir), options_(options) {
    check(options.video_fps > 0 && options.video_fps <= 1000, "TowerFrontEnds: video_fps ",
          options.video_fps, " is not within (0, 1000]");
    check(options.max_video_frames >= 1, "TowerFrontEnds: max_video_frames must be positive");
    if (config.has(Modality::text) && ClipBpe::has_files(dir)) tokenizer_.emplace(ClipBpe::load(dir));
    if (config.has(Modality::image)) {
      image_ = image_processing();
      const TowerConfig& vision = config.towers.at(Modality::image);
      check(image_->crop && image_->crop_height == vision.height &&
                image_->crop_width == vision.width_in,
            dir.string(), ": the image preprocessing makes ",
            image_->crop ? std::to_string(image_->crop_height) + " x " +
                               std::to_string(image_->crop_width) + " images"
                         : std::string("uncropped images"),
            ", the image tower takes ", vision.height, " x ", vision.width_in);
    }
  }

  const TowerModelConfig& config() const { return config_; }

  bool can_load(const std::string& modality) const {
    for (const Modality m : builtin_modalities) {
      if (modality == modality_name(m)) return config_.has(m);
    }
    return false;
  }

  // One sample from raw inputs (exactly one: a tower model embeds one input per sample).
  Sample<float> load(std::span<const RawInput> inputs, StageTimes* times = nullptr) const {
    check(inputs.size() == 1, "a ", config_.family, " model embeds one input per sample, ",
          inputs.size(), " were given");
    StageTimes local;
    StageTimes& t = times != nullptr ? *times : local;
    const RawInput& in = inputs.front();
    check(can_load(in.modality), "the ", config_.family, " model has no ", in.modality,
          " tower, but ", in.modality, " input was given");
    check(in.options.empty() || (in.modality == "video" && in.options.size() == 1 &&
                                 in.options.count("images_fps") == 1),
          in.value, ": unknown option for ", in.modality, " input");
    if (in.modality == "text" || in.modality == "video") refuse_bytes(in);
    Sample<float> sample;
    if (in.modality == "text") {
      sample.text = timed(t.preprocess, [&] { return tokenize(in.value); });
    } else if (in.modality == "image") {
      const Image image = timed(t.decode, [&] { return decode_image_input(in); });
      sample.image = timed(t.preprocess, [&] { return preprocess_image(image, *image_); });
    } else if (in.modality == "audio") {
      sample.audio = timed(t.preprocess, [&] { return imagebind_audio(in); });
    } else {
      VideoOptions video;
      if (const auto fps = in.options.find("images_fps"); fps != in.options.end()) {
        video.images_fps = fps->second;
      }
      sample.video = timed(t.preprocess, [&] { return load_video(in.value, video); });
    }
    return sample;
  }

  // How images are prepared for the image tower (none without one).
  const std::optional<ImageProcessing>& image_processing_used() const { return image_; }

  // The ids of one text: [<|startoftext|>] + ids + [<|endoftext|>] (cut or refused past the
  // context length).
  std::vector<std::int64_t> tokenize(const std::string& text) const {
    check(tokenizer_.has_value(), dir_.string(), ": the model has no tokenizer files (vocab.json "
          "+ merges.txt, or bpe_simple_vocab_16e6.txt.gz): give token ids instead of text");
    const Index context = config_.towers.at(Modality::text).context_length;
    return tokenizer_->tokenize(text, static_cast<std::size_t>(context),
                                options_.truncate ? ClipBpe::Overflow::truncate
                                                  : ClipBpe::Overflow::refuse);
  }

 private:
  // The family's image preprocessing (see the top of this file).
  ImageProcessing image_processing() const {
    const TowerConfig& vision = config_.towers.at(Modality::image);
    if (config_.family == "open_clip") {
      return image_processing_from_open_clip_config(dir_ / open_clip_config_name);
    }
    if ((config_.family == "hf_clip" || config_.family == "tessera_towers") &&
        std::filesystem::exists(dir_ / "preprocessor_config.json")) {
      return image_processing_from_hf(dir_ / "preprocessor_config.json");
    }
    ImageConfig openai;  // OpenAI CLIP's _transform (and ImageBind's data.py): CLIP's mean, std
    openai.size = vision.height;
    return image_processing_from_config(openai);
  }

  Matrix<float> imagebind_audio(const RawInput& in) const {
    check(config_.family == "imagebind" || config_.family == "tessera_towers",
          "audio input needs ImageBind's preprocessing, which a ", config_.family,
          " model does not have");
    const TowerConfig& audio = config_.towers.at(Modality::audio);
    ImageBindAudioOptions o;
    o.n_mels = audio.height;
    o.target_length = audio.width_in;
    if (in.bytes.empty()) return imagebind_audio_clips(in.value, o);
    const Wav<float> wav = read_wav_input(in);
    try {
      return imagebind_audio_clips(wav.samples, wav.sample_rate, o);
    } catch (const Error& e) {
      throw Error(in.value + ": " + e.what());
    }
  }

  Tensor4<float> load_video(const std::string& path, const VideoOptions& video) const {
    if (config_.family == "imagebind") {
      ImageBindVideoOptions o;
      o.size = config_.towers.at(Modality::image).height;
      o.frames_per_clip = config_.video_clip_frames;
      return imagebind_video_clips(path, o, video);
    }
    // CLIP families: tokenize/video.hpp's sampling at video_fps, each frame as an image. The
    // Config below only carries the sampling and the frame budget to preprocess_video.
    const ImageProcessing& p = *image_;
    Config sampling;
    sampling.image = ImageConfig{};
    sampling.image->size = sampling.image->patch = p.crop_height;
    sampling.video = VideoConfig{};
    sampling.video->fps = options_.video_fps;
    sampling.video->tubelet = 1;
    sampling.video->max_tokens = options_.max_video_frames;
    check(p.crop && p.crop_height == p.crop_width, path, ": video needs a square crop");
    return preprocess_video(VideoReader::open(path, video), sampling,
                            [&p](const Image& frame, const ImageConfig&) {
                              return preprocess_image(frame, p);
                            }).frames;
  }

  TowerModelConfig config_;
  std::filesystem::path dir_;
  TowerFrontEndOptions options_;
  std::optional<ClipBpe> tokenizer_;
  std::optional<ImageProcessing> image_;
};

}  // namespace tessera
