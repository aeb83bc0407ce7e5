#pragma once
// FrontEnds: a model's four front ends (SPEC 5) turning text and files into one encoder Sample.
//
//   tessera::FrontEnds front(model.config, "my-model");   // loads the tokenizer when needed
//   tessera::SampleFiles in;
//   in.text = "a red circle";  in.image = "circle.png";  in.audio = "tone.wav";
//   tessera::Sample<float> sample = front.load(in);
//   auto encoding = model.encode(sample);
//
// Each input is checked against the model first: an input for a modality the model does not
// have is an error naming it.

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
#include <tessera/model/encoder.hpp>
#include <tessera/tokenize/audio.hpp>
#include <tessera/tokenize/image.hpp>
#include <tessera/tokenize/text.hpp>
#include <tessera/tokenize/video.hpp>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>

namespace tessera {

// The raw inputs of one sample; any subset, at least one.
struct SampleFiles {
  std::optional<std::string> text;             // UTF-8 text
  std::optional<std::filesystem::path> image;  // PNG, JPEG, BMP or PPM
  std::optional<std::filesystem::path> audio;  // WAV
  std::optional<std::filesystem::path> video;  // a directory of images, Y4M, or (with FFmpeg) MP4/WebM/AVI
  double video_images_fps = 30.0;              // the frame rate of a directory of images
};

// Seconds spent per stage by FrontEnds::load. Video frames are decoded as they are sampled,
// so a video's decoding counts in `preprocess`.
struct StageTimes {
  double decode = 0;      // image and WAV decoding
  double preprocess = 0;  // tokenizing, resizing, features, video sampling and decoding
};

namespace detail {

// f(), with its wall time added to `seconds`.
template <class F>
auto timed(double& seconds, F&& f) {
  const auto start = std::chrono::steady_clock::now();
  auto result = f();
  seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace detail

class FrontEnds {
 public:
  // The front ends of a model with `config`; `model_dir` holds its tokenizer files
  // (vocab.json + merges.txt), read here when the model has text and the files are there
  // (a model used without text input needs none).
  FrontEnds(const Config& config, const std::filesystem::path& model_dir)
      : config_(config), model_dir_(model_dir) {
    namespace fs = std::filesystem;
    const bool has_files = (fs::exists(model_dir / "vocab.json") || fs::exists(model_dir / "encoder.json")) &&
                           (fs::exists(model_dir / "merges.txt") || fs::exists(model_dir / "vocab.bpe"));
    if (config_.text && has_files) tokenizer_.emplace(TextTokenizer::load(model_dir, *config_.text));
  }

  const Config& config() const { return config_; }

  Sample<float> load(const SampleFiles& in, StageTimes* times = nullptr) const {
    check(in.text || in.image || in.audio || in.video,
          "FrontEnds::load: no input (text, image, audio or video)");
    require(in.text.has_value(), Modality::text);
    require(in.image.has_value(), Modality::image);
    require(in.audio.has_value(), Modality::audio);
    require(in.video.has_value(), Modality::video);
    StageTimes local;
    StageTimes& t = times != nullptr ? *times : local;
    Sample<float> sample;
    check(!in.text || tokenizer_.has_value(), "text input needs the tokenizer files vocab.json + "
          "merges.txt in the model directory ", model_dir_.string());
    if (in.text) sample.text = detail::timed(t.preprocess, [&] { return tokenizer_->encode(*in.text); });
    if (in.image) {
      const Image image = detail::timed(t.decode, [&] { return decode_image(*in.image); });
      sample.image = detail::timed(t.preprocess, [&] { return preprocess_image<float>(image, *config_.image); });
    }
    if (in.audio) {
      const Wav<float> wav = detail::timed(t.decode, [&] { return read_wav<float>(*in.audio); });
      sample.audio = detail::timed(t.preprocess, [&] {
        try {
          return preprocess_audio(average_channels(wav.samples), wav.sample_rate, *config_.audio);
        } catch (const Error& e) {
          throw Error(in.audio->string() + ": " + e.what());
        }
      });
    }
    if (in.video) {
      VideoOptions options;
      options.images_fps = in.video_images_fps;
      sample.video = detail::timed(t.preprocess, [&] { return load_video(*in.video, config_, options); });
    }
    return sample;
  }

 private:
  void require(bool given, Modality m) const {
    check(!given || config_.has(m), "the model has no ", modality_name(m), " modality, but ",
          modality_name(m), " input was given");
  }

  Config config_;
  std::filesystem::path model_dir_;
  std::optional<TextTokenizer> tokenizer_;
};

}  // namespace tessera
