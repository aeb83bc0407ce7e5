#pragma once
// The four built-in front ends (SPEC 5) behind the FrontEnd interface, the process-wide
// registry that holds them, and FrontEnds: a model's front ends turning text and files into
// one encoder Sample.
//
//   tessera::FrontEnds front(model.config, "my-model");   // loads the tokenizer when needed
//   tessera::SampleFiles in;
//   in.text = "a red circle";  in.image = "circle.png";  in.audio = "tone.wav";
//   tessera::Sample<float> sample = front.load(in);
//   auto encoding = model.encode(sample);
//
// Each input is checked against the model first: an input for a modality the model does not
// have is an error naming it. A program adds a modality by registering its front end in
// front_end_registry() (tokenize/front_end.hpp, docs/extending.md).

#ifndef TESSERA_HAS_ICU
#error "tessera/tokenize/files.hpp needs ICU for the text tokenizer: install libicu-dev and reconfigure"
#endif
#ifndef TESSERA_HAS_STB
#error "tessera/tokenize/files.hpp needs stb_image to decode images: install libstb-dev and reconfigure"
#endif

#include <tessera/core/error.hpp>
#include <tessera/io/image.hpp>
#include <tessera/io/video.hpp>
#include <tessera/io/wav.hpp>
#include <tessera/model/config.hpp>
#include <tessera/model/sample.hpp>
#include <tessera/tokenize/audio.hpp>
#include <tessera/tokenize/front_end.hpp>
#include <tessera/tokenize/image.hpp>
#include <tessera/tokenize/image_file.hpp>
#include <tessera/tokenize/text.hpp>
#include <tessera/tokenize/video.hpp>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace tessera {

// The raw inputs of one sample; any subset, at least one.
struct SampleFiles {
  std::optional<std::string> text;             // UTF-8 text
  std::optional<std::filesystem::path> image;  // PNG, JPEG, BMP or PPM
  std::optional<std::filesystem::path> audio;  // WAV
  std::optional<std::filesystem::path> video;  // a directory of images, Y4M, or (with FFmpeg) MP4/WebM/AVI
  double video_images_fps = 30.0;              // the frame rate of a directory of images
  std::map<std::string, std::string> custom;   // custom modality name -> its input (a path, usually)

  // The same inputs as a list, in the encoder's modality order.
  std::vector<RawInput> inputs() const {
    std::vector<RawInput> out;
    if (text) out.push_back({"text", *text, {}});
    if (image) out.push_back({"image", image->string(), {}});
    if (audio) out.push_back({"audio", audio->string(), {}});
    if (video) out.push_back({"video", video->string(), {{"images_fps", video_images_fps}}});
    for (const auto& [name, value] : custom) out.push_back({name, value, {}});
    return out;
  }
};

namespace detail {

// The config section of a built-in front end's modality; an error when the model lacks it.
template <class Section>
const Section& front_end_section(const std::optional<Section>& section, const char* modality) {
  check(section.has_value(), "cannot make the ", modality, " front end: the model has no ",
        modality, " section");
  return *section;
}

}  // namespace detail

// Text (SPEC 5.1): the model's tokenizer (text.tokenizer) from vocab.json + merges.txt in
// the model directory, read and checked when the front end is made (TextTokenizer::load: a
// tokenizer that does not fit the model is refused here, not at the first text); a model used
// without text input needs no files, but one of the two files without the other is an error.
class TextFrontEnd : public FrontEnd {
 public:
  explicit TextFrontEnd(const FrontEndContext& c) : model_dir_(c.model_dir) {
    namespace fs = std::filesystem;
    const auto& dir = c.model_dir;
    const bool has_any = fs::exists(dir / "vocab.json") || fs::exists(dir / "encoder.json") ||
                         fs::exists(dir / "merges.txt") || fs::exists(dir / "vocab.bpe") ||
                         fs::exists(dir / ClipBpe::openai_file);
    const TextConfig& text = detail::front_end_section(c.config.text, "text");
    if (has_any) tokenizer_.emplace(TextTokenizer::load(dir, text));
  }

  void load(const RawInput& in, Sample<float>& sample, StageTimes& times) const override {
    check_options(in, {});
    refuse_bytes(in);
    check(tokenizer_.has_value(), "text input needs the tokenizer files vocab.json + "
          "merges.txt (a clip_bpe model: or ", ClipBpe::openai_file, ") in the model directory ",
          model_dir_.string());
    sample.text = timed(times.preprocess, [&] { return tokenizer_->encode(in.value); });
  }

 private:
  std::filesystem::path model_dir_;
  std::optional<TextTokenizer> tokenizer_;
};

// Image (SPEC 5.2): decode, resize, crop, normalize.
class ImageFrontEnd : public FrontEnd {
 public:
  explicit ImageFrontEnd(const FrontEndContext& c)
      : config_(detail::front_end_section(c.config.image, "image")) {}

  void load(const RawInput& in, Sample<float>& sample, StageTimes& times) const override {
    check_options(in, {});
    const Image image = timed(times.decode, [&] { return decode_image_input(in); });
    sample.image = timed(times.preprocess, [&] { return preprocess_image<float>(image, config_); });
  }

 private:
  ImageConfig config_;
};

// Audio (SPEC 5.3): WAV, channels averaged, resampled, features.
class AudioFrontEnd : public FrontEnd {
 public:
  explicit AudioFrontEnd(const FrontEndContext& c)
      : config_(detail::front_end_section(c.config.audio, "audio")) {}

  void load(const RawInput& in, Sample<float>& sample, StageTimes& times) const override {
    check_options(in, {});
    const Wav<float> wav = timed(times.decode, [&] { return read_wav_input(in); });
    sample.audio = timed(times.preprocess, [&] {
      try {
        return preprocess_audio(average_channels(wav.samples), wav.sample_rate, config_);
      } catch (const Error& e) {
        throw Error(in.value + ": " + e.what());
      }
    });
  }

 private:
  AudioConfig config_;
};

// Video (SPEC 5.4): frames from a directory, Y4M or (with FFmpeg) a container, sampled at
// the model's fps. Option "images_fps": the frame rate of a directory of images (30).
class VideoFrontEnd : public FrontEnd {
 public:
  explicit VideoFrontEnd(const FrontEndContext& c) : config_(c.config) {
    detail::front_end_section(c.config.video, "video");
  }

  void load(const RawInput& in, Sample<float>& sample, StageTimes& times) const override {
    check_options(in, {"images_fps"});
    refuse_bytes(in);
    VideoOptions options;
    if (const auto fps = in.options.find("images_fps"); fps != in.options.end()) {
      options.images_fps = fps->second;
    }
    sample.video = timed(times.preprocess, [&] { return load_video(in.value, config_, options); });
  }

 private:
  Config config_;
};

// The process-wide registry: the four built-in front ends, registered on first use, plus
// whatever the program adds.
inline FrontEndRegistry& front_end_registry() {
  static FrontEndRegistry registry;
  static const bool built_ins_added = [] {
    registry.add("text", [](const FrontEndContext& c) { return std::make_unique<TextFrontEnd>(c); });
    registry.add("image", [](const FrontEndContext& c) { return std::make_unique<ImageFrontEnd>(c); });
    registry.add("audio", [](const FrontEndContext& c) { return std::make_unique<AudioFrontEnd>(c); });
    registry.add("video", [](const FrontEndContext& c) { return std::make_unique<VideoFrontEnd>(c); });
    return true;
  }();
  (void)built_ins_added;
  return registry;
}

// The front ends of one model: one per modality it has whose front end is registered.
class FrontEnds {
 public:
  // `model_dir` holds files the front ends read (the tokenizer's vocab.json + merges.txt);
  // each front end is made here from `registry`.
  FrontEnds(const Config& config, const std::filesystem::path& model_dir,
            const FrontEndRegistry& registry = front_end_registry())
      : config_(config), model_dir_(model_dir) {
    for (int m = 0; m < num_modalities; ++m) {
      if (config_.has(static_cast<Modality>(m))) make(modality_name(static_cast<Modality>(m)), registry);
    }
    for (const auto& c : config_.custom) make(c.name, registry);
  }

  const Config& config() const { return config_; }

  // Whether load() can take input of `modality`.
  bool can_load(const std::string& modality) const {
    const auto found = front_ends_.find(modality);
    return found != front_ends_.end() && found->second != nullptr;
  }

  // One sample from raw inputs, at most one per modality.
  Sample<float> load(std::span<const RawInput> inputs, StageTimes* times = nullptr) const {
    check(!inputs.empty(), "FrontEnds::load: no input");
    std::set<std::string> seen;
    for (const RawInput& in : inputs) {
      const auto found = front_ends_.find(in.modality);
      check(found != front_ends_.end(), "the model has no ", in.modality, " modality, but ",
            in.modality, " input was given");
      check(found->second != nullptr, "no front end is registered for the model's modality '",
            in.modality, "': register one with tessera::front_end_registry().add before making "
            "the FrontEnds (docs/extending.md)");
      check(seen.insert(in.modality).second, "FrontEnds::load: two ", in.modality,
            " inputs for one sample");
    }
    StageTimes local;
    StageTimes& t = times != nullptr ? *times : local;
    Sample<float> sample;
    for (const RawInput& in : inputs) front_ends_.at(in.modality)->load(in, sample, t);
    return sample;
  }

  Sample<float> load(const SampleFiles& in, StageTimes* times = nullptr) const {
    const std::vector<RawInput> inputs = in.inputs();
    check(!inputs.empty(), "FrontEnds::load: no input (text, image, audio, video or custom)");
    return load(std::span<const RawInput>(inputs), times);
  }

 private:
  void make(const std::string& modality, const FrontEndRegistry& registry) {
    front_ends_[modality] = registry.make(modality, config_, model_dir_);
  }

  Config config_;
  std::filesystem::path model_dir_;
  std::map<std::string, std::unique_ptr<FrontEnd>> front_ends_;  // nullptr: none registered
};

}  // namespace tessera
