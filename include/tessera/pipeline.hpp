#pragma once
// tessera::Pipeline: a model directory's encoder and front ends in one object, raw inputs in
// and embeddings out.
//
//   auto p = tessera::Pipeline<float>::open("my-model");   // config.json, model.safetensors,
//                                                          // the tokenizer's files
//   tessera::Matrix<float> e = p.encode_texts({"a red circle", "a blue square"});   // [2, E]
//   tessera::Matrix<float> f = p.encode_images({"circle.png"});                     // [1, E]
//   float similarity = e.row(0).dot(f.row(0));    // embeddings have unit norm
//
// Samples are encoded in consecutive batches of PipelineOptions::batch_size (the last one
// shorter), one encode_batch call each, so memory is bounded by a batch's inputs and
// activations, not by the whole list. A batch's inputs are decoded and preprocessed in
// parallel, one sample per task: each sample's decoding is independent of the others and of
// the thread that does it, and encode_batch is deterministic, so the result is bitwise the
// same for any thread count, and equal to FrontEnds + encode_batch over the same batches.
// Another batch size changes the embeddings by rounding only, as encode_batch differs from
// encode: a sample's rows share the batch's matrix products, whose rounding depends on their
// row count (OpenBLAS chooses its kernels by shape).
//
// A pretrained model's directory (transformers' CLIP, open_clip, ImageBind, tessera_towers:
// model/pretrained.hpp) opens the same way: its TowerModel with TowerFrontEnds, which prepare
// each input as the model's family does (tokenize/tower_front_ends.hpp). Its samples hold
// one input each.
//
// Front ends make Sample<float>; a Pipeline<double> converts their output to double (exact).
// Every bad input throws tessera::Error whose message starts with "sample <i>" (its index in
// the list given) and names the file and the problem.

#ifndef TESSERA_HAS_ICU
#error "tessera/pipeline.hpp needs ICU for the text tokenizer: install libicu-dev and reconfigure"
#endif
#ifndef TESSERA_HAS_STB
#error "tessera/pipeline.hpp needs stb_image to decode images: install libstb-dev and reconfigure"
#endif

#include <tessera/core/error.hpp>
#include <tessera/core/parallel.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/model/config.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/model_io.hpp>
#include <tessera/model/pretrained.hpp>
#include <tessera/model/sample.hpp>
#include <tessera/model/tower_model.hpp>
#include <tessera/tokenize/files.hpp>
#include <tessera/tokenize/tower_front_ends.hpp>

#include <algorithm>
#include <cstddef>
#include <exception>
#include <filesystem>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace tessera {

struct PipelineOptions {
  // Samples per encode_batch call (>= 1): bounds the memory of decoded inputs and
  // activations; the result does not depend on it.
  std::size_t batch_size = 32;
  // Threads decoding and preprocessing a batch's inputs, one sample per task; 0: tessera's
  // thread count (num_threads()). The result does not depend on it.
  int threads = 0;
  // A pretrained model's front ends: text truncation, video frame rate (TowerFrontEndOptions).
  TowerFrontEndOptions pretrained;
};

namespace detail {

// A front end's Sample<float> as Sample<Scalar>: moved for float, converted (exactly) for
// double.
template <class Scalar>
Sample<Scalar> sample_as(Sample<float>&& in) {
  if constexpr (std::is_same_v<Scalar, float>) {
    return std::move(in);
  } else {
    Sample<Scalar> out;
    out.text = std::move(in.text);
    if (in.image) out.image = Tensor3<Scalar>(in.image->template cast<Scalar>());
    if (in.audio) out.audio = in.audio->template cast<Scalar>();
    if (in.video) out.video = Tensor4<Scalar>(in.video->template cast<Scalar>());
    for (auto& [name, custom] : in.custom) {
      out.custom[name] = CustomInput<Scalar>{custom.features.template cast<Scalar>(),
                                             std::move(custom.positions)};
    }
    return out;
  }
}

}  // namespace detail

template <class Scalar = float>
class Pipeline {
 public:
  // The model of directory `dir` with its front ends: a tessera model (load_model, with
  // FrontEnds, which read the tokenizer's vocab.json + merges.txt from `dir` when the model has
  // text), or a pretrained one (load_tower_model, with TowerFrontEnds).
  static Pipeline open(const std::filesystem::path& dir, const PipelineOptions& options = {}) {
    ModelDirectory found = detect_model(dir);  // config.json read and parsed once, here
    if (found.kind == ModelKind::tessera) return Pipeline(load_model<Scalar>(found), dir, options);
    return Pipeline(load_tower_model<Scalar>(std::move(found)), dir, options);
  }

  // A model already in memory; `dir` holds the files its front ends read (the tokenizer).
  Pipeline(MultiModalEncoder<Scalar> model, const std::filesystem::path& dir,
           const PipelineOptions& options = {})
      : model_(std::move(model)),
        front_(std::in_place_type<FrontEnds>, std::get<Encoder>(model_).config, dir),
        dir_(dir),
        options_(options) {
    check_options();
  }
  Pipeline(TowerModel<Scalar> model, const std::filesystem::path& dir,
           const PipelineOptions& options = {})
      : model_(std::move(model)),
        front_(std::in_place_type<TowerFrontEnds>, std::get<Towers>(model_).config, dir,
               options.pretrained),
        dir_(dir),
        options_(options) {
    check_options();
  }

  // Movable, not copyable (the front ends are held by unique_ptr; say so to type traits).
  Pipeline(Pipeline&&) noexcept = default;
  Pipeline& operator=(Pipeline&&) noexcept = default;
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  // Whether the model is a pretrained one (a TowerModel) rather than tessera's own.
  bool is_pretrained() const { return std::holds_alternative<Towers>(model_); }
  // tessera's own model and front ends; an Error for a pretrained model.
  const MultiModalEncoder<Scalar>& model() const {
    if (is_pretrained()) {
      fail("Pipeline::model: this is a pretrained ", tower_model().config.family,
           " model: use tower_model()");
    }
    return std::get<Encoder>(model_);
  }
  const FrontEnds& front_ends() const {
    check(!is_pretrained(), "Pipeline::front_ends: a pretrained model has TowerFrontEnds");
    return std::get<FrontEnds>(front_);
  }
  const Config& config() const { return model().config; }
  // The pretrained model; an Error for tessera's own.
  const TowerModel<Scalar>& tower_model() const {
    check(is_pretrained(), "Pipeline::tower_model: this is a tessera model, not a pretrained one");
    return std::get<Towers>(model_);
  }
  const TowerFrontEnds& tower_front_ends() const { return std::get<TowerFrontEnds>(front_); }
  const PipelineOptions& options() const { return options_; }
  // The directory the front ends read (the model's, for Pipeline::open).
  const std::filesystem::path& dir() const { return dir_; }
  Index embed_dim() const {  // E
    return is_pretrained() ? tower_model().embed_dim() : model().config.embed_dim;
  }
  // The model's logit scale, ln of the factor on cosine similarities (CLIP's logit_scale).
  Scalar logit_scale() const {
    return is_pretrained() ? tower_model().logit_scale : model().logit_scale;
  }
  // The names of the modalities the model takes ("text", "image", ...).
  std::vector<std::string> modalities() const {
    std::vector<std::string> names;
    for (const Modality m : builtin_modalities) {
      if (is_pretrained() ? tower_model().has(m) : config().has(m)) {
        names.push_back(modality_name(m));
      }
    }
    if (!is_pretrained()) {
      for (const auto& c : config().custom) names.push_back(c.name);
    }
    return names;
  }

  // Each of these returns the embeddings [N, E] of N samples, row i sample i's, and fills
  // `encodings` (when given) with each sample's whole Encoding (hidden states, modalities,
  // positions). No sample gives a [0, E] matrix.

  // One sample per text (UTF-8), tokenized by the model's tokenizer.
  Matrix<Scalar> encode_texts(const std::vector<std::string>& texts,
                              std::vector<Encoding<Scalar>>* encodings = nullptr) const {
    return encode_single("text", texts, encodings);
  }
  // One sample per image file (PNG, JPEG, BMP, PPM).
  Matrix<Scalar> encode_images(const std::vector<std::filesystem::path>& files,
                               std::vector<Encoding<Scalar>>* encodings = nullptr) const {
    return encode_single("image", files, encodings);
  }
  // One sample per WAV file.
  Matrix<Scalar> encode_audio(const std::vector<std::filesystem::path>& files,
                              std::vector<Encoding<Scalar>>* encodings = nullptr) const {
    return encode_single("audio", files, encodings);
  }
  // One sample per video: a Y4M file, a directory of images (at 30 fps), or with FFmpeg an
  // MP4/WebM/AVI file.
  Matrix<Scalar> encode_videos(const std::vector<std::filesystem::path>& files,
                               std::vector<Encoding<Scalar>>* encodings = nullptr) const {
    return encode_single("video", files, encodings);
  }

  // One sample per list of raw inputs (at most one per modality), e.g.
  //   p.encode({{{"text", "a red circle"}, {"image", "circle.png"}}, {{"audio", "tone.wav"}}})
  Matrix<Scalar> encode(const std::vector<std::vector<RawInput>>& samples,
                        std::vector<Encoding<Scalar>>* encodings = nullptr) const {
    return encode_each(samples.size(), [&](std::size_t i) { return load(samples[i]); }, encodings);
  }
  // One sample per SampleFiles (tokenize/files.hpp).
  Matrix<Scalar> encode_files(std::span<const SampleFiles> samples,
                              std::vector<Encoding<Scalar>>* encodings = nullptr) const {
    return encode_each(samples.size(), [&](std::size_t i) { return load(samples[i].inputs()); },
                       encodings);
  }
  // Samples already preprocessed (token ids, image/audio/video tensors), batched the same way.
  Matrix<Scalar> encode_samples(std::span<const Sample<Scalar>> samples,
                                std::vector<Encoding<Scalar>>* encodings = nullptr) const {
    return encode_each(samples.size(), [&](std::size_t i) { return samples[i]; }, encodings);
  }

  // The general form the others use: sample i is make(i), for i in [0, count). make is
  // called from several threads at once (a batch's samples in parallel), each i once; a
  // tessera::Error it throws is reported as sample i's.
  template <class Make>
  Matrix<Scalar> encode_each(std::size_t count, Make&& make,
                             std::vector<Encoding<Scalar>>* encodings = nullptr) const {
    Matrix<Scalar> out(static_cast<Index>(count), embed_dim());  // [N, E]
    if (encodings != nullptr) {
      encodings->clear();
      encodings->reserve(count);
    }
    for (std::size_t first = 0; first < count; first += options_.batch_size) {
      const std::size_t n = std::min(options_.batch_size, count - first);
      const std::vector<Sample<Scalar>> batch = load_batch(first, n, make);
      std::vector<Encoding<Scalar>> encoded;
      try {
        encoded = encode_batch(batch);
      } catch (const Error& e) {  // "sample k" there counts from the batch's first sample
        fail("the batch of samples ", first, " to ", first + n - 1, " (numbered from 0 in "
             "what follows): ", e.what());
      }
      for (std::size_t j = 0; j < n; ++j) {
        out.row(static_cast<Index>(first + j)) = encoded[j].embedding.transpose();
        if (encodings != nullptr) encodings->push_back(std::move(encoded[j]));
      }
    }
    return out;
  }

  // One sample from raw inputs through the front ends, as Sample<Scalar>.
  // times (when given) gains the time spent decoding and preprocessing.
  Sample<Scalar> load(std::span<const RawInput> inputs, StageTimes* times = nullptr) const {
    return detail::sample_as<Scalar>(
        std::visit([&](const auto& f) { return f.load(inputs, times); }, front_));
  }

  // The model's own checks of a sample (a tessera::Error naming `where`), and its encoding of
  // one batch as it is (no batching into batch_size): what a program that builds its own
  // batches calls.
  void check_sample(const Sample<Scalar>& s, const std::string& where) const {
    std::visit([&](const auto& m) { m.check_sample(s, where); }, model_);
  }
  std::vector<Encoding<Scalar>> encode_batch(std::span<const Sample<Scalar>> batch) const {
    return std::visit([&](const auto& m) { return m.encode_batch(batch); }, model_);
  }

 private:
  // Samples of one input each, of `modality`.
  template <class Value>
  Matrix<Scalar> encode_single(const char* modality, const std::vector<Value>& values,
                               std::vector<Encoding<Scalar>>* encodings) const {
    return encode_each(values.size(), [&](std::size_t i) {
      const RawInput input{modality, std::filesystem::path(values[i]).string(), {}};
      return load(std::span<const RawInput>(&input, 1));
    }, encodings);
  }

  // Samples first .. first + n - 1, made and checked in parallel. The first error (by sample
  // index, whatever thread met it) is thrown once every task has finished.
  template <class Make>
  std::vector<Sample<Scalar>> load_batch(std::size_t first, std::size_t n, Make& make) const {
    std::vector<Sample<Scalar>> batch(n);
    std::vector<std::exception_ptr> errors(n);
    const int threads = options_.threads > 0 ? options_.threads : num_threads();
    const auto tasks = static_cast<std::ptrdiff_t>(n);
    (void)threads;  // without OpenMP the loop runs in this thread
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1 && tasks > 1)
    for (std::ptrdiff_t j = 0; j < tasks; ++j) {
      const std::size_t i = first + static_cast<std::size_t>(j);
      try {
        try {
          batch[static_cast<std::size_t>(j)] = make(i);
        } catch (const Error& e) {
          fail("sample ", i, ": ", e.what());
        }
        check_fits(batch[static_cast<std::size_t>(j)], i);
      } catch (...) {
        errors[static_cast<std::size_t>(j)] = std::current_exception();
      }
    }
    for (const auto& error : errors) {
      if (error) std::rethrow_exception(error);
    }
    return batch;
  }

  // check_sample, naming the sample by its index in the whole list. A tessera model's audio
  // longer than audio.max_tokens chunks is split into clips by encode_batch, which checks
  // each clip.
  void check_fits(const Sample<Scalar>& s, std::size_t i) const {
    if (!is_pretrained()) {
      const auto& audio = model().config.audio;
      if (s.audio && audio && s.audio->cols() > audio->max_tokens * audio->patch_frames) return;
    }
    check_sample(s, detail::concat("sample ", i));
  }

  void check_options() const {
    check(options_.batch_size >= 1, "Pipeline: batch_size must be at least 1");
    check(options_.threads >= 0, "Pipeline: threads must be >= 0 (0: tessera's thread count), got ",
          options_.threads);
  }

  using Encoder = MultiModalEncoder<Scalar>;
  using Towers = TowerModel<Scalar>;
  std::variant<Encoder, Towers> model_;
  std::variant<FrontEnds, TowerFrontEnds> front_;  // made from model_'s config: declared after it
  std::filesystem::path dir_;
  PipelineOptions options_;
};

}  // namespace tessera
