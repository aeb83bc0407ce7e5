// tessera-encode: encode samples with a model directory and write their embeddings.
//
//   tessera-encode --model DIR [SAMPLES...] --out OUT.safetensors [--threads N] [--repeat N]
//                  [--similarities]
//
// SAMPLES, in any order and number (at least one sample in all):
//   --inputs FILE.safetensors   one sample of preprocessed tensors (text_ids, image, audio,
//                               video; docs/encoder.md)
//   --text "..." --image FILE --audio FILE.wav --video FILE|DIR [--video-fps R]
//                               raw inputs, mixed freely into one sample; --next starts
//                               another one. --video-fps is a frame directory's rate (30).
//   --text-file FILE            the text of FILE (UTF-8; one final line end is dropped),
//                               in place of --text
// All samples form one packed batch. OUT holds `embeddings` [N, E] and `hidden.0`,
// `hidden.1`, ... ([L_i, D]). --repeat N runs everything N times and prints per-stage timings
// (decode, preprocess, encode) as JSON on stdout. --similarities prints the cosine similarity
// of every two samples' embeddings, as a table. Errors print one line to stderr and exit 1.

#include <tessera/tessera.hpp>
#include <tessera/tokenize/files.hpp>

#include "example_util.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr const char* usage =
    "usage: tessera-encode --model DIR [--inputs FILE.safetensors ...] [--text T | --text-file F] "
    "[--image F] [--audio F] [--video F|DIR [--video-fps R]] [--next ...] --out OUT.safetensors "
    "[--threads N] [--repeat N] [--similarities]";

// One sample of the batch: a preprocessed inputs file or raw inputs.
struct SampleSource {
  std::string inputs_file;  // empty for raw inputs
  tessera::SampleFiles files;
};

struct Options {
  std::string model;
  std::vector<SampleSource> samples;
  std::string out;
  int threads = 0;  // 0: OpenMP's default
  int repeat = 0;   // 0: no timing report
  bool similarities = false;
};

Options parse(int argc, char** argv) {
  Options options;
  bool raw_open = false;  // the last sample takes raw inputs
  auto raw = [&]() -> tessera::SampleFiles& {
    if (!raw_open) {
      options.samples.emplace_back();
      raw_open = true;
    }
    return options.samples.back().files;
  };
  auto set_once = [](auto& slot, auto value, std::string_view option) {
    tessera::check(!slot.has_value(), option, " given twice for one sample (use --next to start another)");
    slot = std::move(value);
  };
  example::for_each_option(argc, argv, usage, {"--next", "--similarities"},
                           [&](std::string_view arg, const std::string& value) {
    if (arg == "--next") {
      tessera::check(raw_open, "--next must follow the raw inputs of a sample");
      raw_open = false;
    } else if (arg == "--similarities") {
      options.similarities = true;
    } else if (arg == "--model") {
      options.model = value;
    } else if (arg == "--inputs") {
      options.samples.push_back({value, {}});
      raw_open = false;
    } else if (arg == "--text") {
      set_once(raw().text, value, arg);
    } else if (arg == "--text-file") {
      std::string text = tessera::detail::read_text_file(value, "--text-file");
      tessera::validate_utf8(text, value);  // named by its file, not by the tokenizer
      if (text.ends_with('\n')) text.pop_back();  // the file's last line end
      if (text.ends_with('\r')) text.pop_back();
      set_once(raw().text, std::move(text), "--text");
    } else if (arg == "--image") {
      set_once(raw().image, std::filesystem::path(value), arg);
    } else if (arg == "--audio") {
      set_once(raw().audio, std::filesystem::path(value), arg);
    } else if (arg == "--video") {
      set_once(raw().video, std::filesystem::path(value), arg);
    } else if (arg == "--video-fps") {
      raw().video_images_fps = example::positive_number(arg, value);
    } else if (arg == "--out") {
      options.out = value;
    } else if (arg == "--threads") {
      options.threads = example::positive_integer(arg, value);
    } else if (arg == "--repeat") {
      options.repeat = example::positive_integer(arg, value);
    } else {
      return false;
    }
    return true;
  });
  tessera::check(!options.model.empty(), "--model is required (", usage, ")");
  tessera::check(!options.samples.empty(), "no sample: give --inputs or raw inputs (", usage, ")");
  tessera::check(!options.out.empty(), "--out is required (", usage, ")");
  return options;
}

// A sample's name in the similarity table: its inputs file, or its raw inputs (text quoted
// and cut to 40 characters, files by name).
std::string label(const SampleSource& source) {
  if (!source.inputs_file.empty()) return std::filesystem::path(source.inputs_file).filename().string();
  std::string out;
  for (const auto& in : source.files.inputs()) {
    std::string part = in.modality == "text"
                           ? "\"" + (in.value.size() > 40 ? in.value.substr(0, 37) + "..." : in.value) + "\""
                           : std::filesystem::path(in.value).filename().string();
    out += (out.empty() ? "" : " + ") + part;
  }
  return out;
}

// Row i: sample i's label, then its cosine similarity with every sample (unit embeddings: dot).
void print_similarities(const std::vector<SampleSource>& samples,
                        const std::vector<tessera::Encoding<float>>& encodings) {
  std::size_t width = 0;
  for (const auto& s : samples) width = std::max(width, label(s).size());
  std::printf("cosine similarities\n%*s", static_cast<int>(width + 6), "");
  for (std::size_t j = 0; j < samples.size(); ++j) std::printf(" %6zu", j);
  std::printf("\n");
  for (std::size_t i = 0; i < samples.size(); ++i) {
    std::printf("  %2zu  %-*s", i, static_cast<int>(width), label(samples[i]).c_str());
    for (std::size_t j = 0; j < samples.size(); ++j) {
      std::printf(" %6.3f", encodings[i].embedding.dot(encodings[j].embedding));
    }
    std::printf("\n");
  }
}

struct Timing {
  std::vector<double> decode, preprocess, encode;  // seconds, one per run
};

void print_stage(std::string_view name, std::vector<double> seconds, bool last) {
  std::sort(seconds.begin(), seconds.end());
  double total = 0;
  for (double s : seconds) total += s;
  std::cout << "    \"" << name << "\": {\"mean_ms\": " << 1e3 * total / seconds.size()
            << ", \"min_ms\": " << 1e3 * seconds.front()
            << ", \"median_ms\": " << 1e3 * seconds[seconds.size() / 2] << "}" << (last ? "\n" : ",\n");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options options = parse(argc, argv);
    if (options.threads > 0) tessera::set_num_threads(options.threads);
    const auto model = tessera::load_model<float>(options.model);
    const bool raw_inputs = std::any_of(options.samples.begin(), options.samples.end(),
                                        [](const SampleSource& s) { return s.inputs_file.empty(); });
    std::optional<tessera::FrontEnds> front;
    if (raw_inputs) front.emplace(model.config, options.model);

    Timing timing;
    std::vector<tessera::Encoding<float>> encodings;
    const int runs = std::max(1, options.repeat);
    for (int run = 0; run < runs; ++run) {
      tessera::StageTimes stages;
      std::vector<tessera::Sample<float>> batch;
      for (const auto& source : options.samples) {
        if (!source.inputs_file.empty()) {
          const auto start = std::chrono::steady_clock::now();
          batch.push_back(tessera::read_sample<float>(source.inputs_file));
          model.check_sample(batch.back(), source.inputs_file);  // errors name the file
          stages.decode += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        } else {
          batch.push_back(front->load(source.files, &stages));
        }
      }
      const auto start = std::chrono::steady_clock::now();
      encodings = model.encode_batch(batch);
      timing.encode.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      timing.decode.push_back(stages.decode);
      timing.preprocess.push_back(stages.preprocess);
    }
    tessera::write_encodings<float>(options.out, encodings);
    if (options.repeat > 0) {
      std::cout << "{\n  \"samples\": " << encodings.size() << ",\n  \"repeat\": " << runs
                << ",\n  \"threads\": " << tessera::num_threads() << ",\n  \"stages\": {\n";
      print_stage("decode", timing.decode, false);
      print_stage("preprocess", timing.preprocess, false);
      print_stage("encode", timing.encode, true);
      std::cout << "  }\n}\n";
    } else {
      std::cout << "encoded " << encodings.size() << " sample(s) into " << options.out << "\n";
    }
    if (options.similarities) print_similarities(options.samples, encodings);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "tessera-encode: error: " << e.what() << "\n";
    return 1;
  }
}
