#pragma once
// The front-end interface and its registry: how a raw input (text, a file, a directory)
// becomes one modality's part of an encoder Sample, and how a program adds a modality.
//
// Every modality, the four built-in ones included (tokenize/files.hpp), is a FrontEnd made
// by a factory registered under the modality's name. A program adds its own modality without
// touching the library (docs/extending.md; examples/point_cloud/ is a complete one):
//
//   1. config.json lists it:  "custom_modalities": [{"name": "point_cloud", "input_dim": 99}]
//   2. a FrontEnd turns an input into Sample::custom["point_cloud"] (features [n, 99] and,
//      optionally, (t, y, x) positions [n, 3]);
//   3. the program registers it before building its FrontEnds:
//        tessera::front_end_registry().add("point_cloud", [](const tessera::FrontEndContext& c) {
//          return std::make_unique<PointCloudFrontEnd>(c);
//        });
//
// The encoder then gives the modality its own patch embedding (`point_cloud.patch_embed.*`),
// a modality embedding row, learned positions or RoPE positions, and a router row.

#include <tessera/core/error.hpp>
#include <tessera/io/image.hpp>
#include <tessera/io/wav.hpp>
#include <tessera/model/config.hpp>
#include <tessera/model/sample.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tessera {

// One raw input of one modality.
struct RawInput {
  std::string modality;  // "text", "image", "audio", "video" or a custom modality's name
  std::string value;     // the text itself, or a file or directory path
  std::map<std::string, double> options;  // per-input settings, e.g. video's "images_fps"
  // An image's or a WAV's file bytes held in memory (a server's request, say), read in place
  // of a file: `value` then only names them in error messages. Not owned: they must outlive
  // the load. Text and video inputs refuse them; a custom modality's front end decides.
  std::span<const std::uint8_t> bytes = {};
};

// Seconds spent per stage while loading inputs. Video frames are decoded as they are
// sampled, so a video's decoding counts in `preprocess`.
struct StageTimes {
  double decode = 0;      // image and WAV decoding, reading a custom modality's file
  double preprocess = 0;  // tokenizing, resizing, features, video sampling and decoding
};

// f(), with its wall time added to `seconds`.
template <class F>
auto timed(double& seconds, F&& f) {
  const auto start = std::chrono::steady_clock::now();
  auto result = f();
  seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

// Turns raw inputs of one modality into its part of a Sample.
class FrontEnd {
 public:
  virtual ~FrontEnd() = default;

  // Fills this modality's part of `sample` from `input` (input.modality is this front end's
  // modality) and adds the time spent to `times`. A bad input throws tessera::Error naming
  // the input (the file, usually) and the problem; the sample is then left unchanged.
  virtual void load(const RawInput& input, Sample<float>& sample, StageTimes& times) const = 0;
};

// What a factory gets to build the front end of one modality of one model.
struct FrontEndContext {
  const std::string& modality;             // the name it was registered under
  const Config& config;                    // the model's config (custom: config.find_custom(modality))
  const std::filesystem::path& model_dir;  // the model's directory, for files such as a vocabulary
};

using FrontEndFactory = std::function<std::unique_ptr<FrontEnd>(const FrontEndContext&)>;

// Factories by modality name. Thread-safe; a FrontEnds object takes the front ends it needs
// when it is built, so later changes to the registry do not affect it.
class FrontEndRegistry {
 public:
  // Registers the factory of `modality`, replacing any earlier one (so a program can also
  // swap a built-in front end for its own).
  void add(const std::string& modality, FrontEndFactory factory) {
    check(static_cast<bool>(factory), "FrontEndRegistry::add: the factory of '", modality,
          "' is empty");
    const std::lock_guard lock(mutex_);
    factories_[modality] = std::move(factory);
  }

  bool contains(const std::string& modality) const {
    const std::lock_guard lock(mutex_);
    return factories_.contains(modality);
  }

  // The registered modality names, sorted.
  std::vector<std::string> modalities() const {
    const std::lock_guard lock(mutex_);
    std::vector<std::string> names;
    for (const auto& [name, factory] : factories_) names.push_back(name);
    return names;
  }

  // The front end of `modality` for a model, or nullptr when none is registered.
  std::unique_ptr<FrontEnd> make(const std::string& modality, const Config& config,
                                 const std::filesystem::path& model_dir) const {
    FrontEndFactory factory;
    {
      const std::lock_guard lock(mutex_);
      const auto found = factories_.find(modality);
      if (found == factories_.end()) return nullptr;
      factory = found->second;
    }
    std::unique_ptr<FrontEnd> front = factory(FrontEndContext{modality, config, model_dir});
    check(front != nullptr, "the front-end factory of '", modality, "' returned no front end");
    return front;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::string, FrontEndFactory, std::less<>> factories_;
};

// An image input decoded: from its bytes when they are given, else from the file `value`.
inline Image decode_image_input(const RawInput& input) {
  return input.bytes.empty() ? decode_image(input.value) : decode_image_memory(input.bytes, input.value);
}

// A WAV input read: from its bytes when they are given, else from the file `value`.
inline Wav<float> read_wav_input(const RawInput& input) {
  return input.bytes.empty() ? read_wav<float>(input.value) : read_wav<float>(input.bytes, {}, input.value);
}

// Throws tessera::Error when `input` holds bytes in memory: text is its value, and a video is
// read from its path.
inline void refuse_bytes(const RawInput& input) {
  check(input.bytes.empty(), input.value, ": ", input.modality,
        " input takes no bytes in memory (image and audio inputs do)");
}

// Throws tessera::Error when `input` has an option not in `known`, naming it.
inline void check_options(const RawInput& input, std::initializer_list<std::string_view> known) {
  for (const auto& [key, value] : input.options) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      std::string list;
      for (auto k : known) list += (list.empty() ? "" : ", ") + std::string(k);
      fail(input.modality, " input ", input.value, ": unknown option '", key, "' (",
           list.empty() ? "this front end takes no options" : "known: " + list, ")");
    }
  }
}

}  // namespace tessera
