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
// of every two samples' embeddings, as a table. Exit statuses and errors as every program's
// (cli.hpp, docs/programs.md).

#include <tessera/tessera.hpp>
#include <tessera/tokenize/files.hpp>

#include "cli.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace apps = tessera::apps;

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

// The options as CLI11 leaves them: each sample option's values, in the order given.
struct SampleOptions {
  std::vector<std::string> inputs, text, text_file, image, audio, video;
  std::vector<double> video_fps;
  int next = 0;
};

void add_options(CLI::App& app, Options& o, SampleOptions& s) {
  app.add_option("--model", o.model, "the model directory (config.json, model.safetensors and, "
                                     "for text, the tokenizer files)")
      ->required()->type_name("DIR");
  app.add_option("--out", o.out, "the file to write: `embeddings` [N, E] and `hidden.<i>` [L_i, D]")
      ->required()->type_name("OUT.safetensors");
  apps::add_repeated_option(app, "--inputs", s.inputs,
                            "a sample of preprocessed tensors (text_ids, image, audio, video; "
                            "docs/encoder.md); repeatable")
      ->type_name("FILE.safetensors");
  apps::add_repeated_option(app, "--text", s.text, "text of the current raw sample")->type_name("T");
  apps::add_repeated_option(app, "--text-file", s.text_file,
                            "the text of FILE (UTF-8; one final line end is dropped), in place of --text")
      ->type_name("FILE");
  apps::add_repeated_option(app, "--image", s.image, "an image of the current raw sample")
      ->type_name("FILE");
  apps::add_repeated_option(app, "--audio", s.audio, "a WAV file of the current raw sample")
      ->type_name("FILE.wav");
  apps::add_repeated_option(app, "--video", s.video,
                            "a video file, or a directory of frames, of the current raw sample")
      ->type_name("FILE|DIR");
  apps::add_repeated_option(app, "--video-fps", s.video_fps,
                            "the frame rate of the current sample's frame directory (default 30)")
      ->check(apps::positive_number)->type_name("R");
  app.add_flag("--next", s.next, "start another raw sample (raw inputs go into one sample until then)");
  apps::add_threads_option(app, o.threads);
  app.add_option("--repeat", o.repeat,
                 "run everything N times and print per-stage timings (decode, preprocess, "
                 "encode) as JSON")
      ->check(apps::integer_in(1, 100000))->type_name("N")->default_str("");
  app.add_flag("--similarities", o.similarities,
               "print the cosine similarity of every two samples' embeddings, as a table");
}

// The samples, from the sample options in the order given (app.parse_order(), one entry per
// occurrence): raw inputs go into one sample until --next or --inputs; an inputs file is a
// sample of its own.
std::vector<SampleSource> samples_in_order(const CLI::App& app, const SampleOptions& s) {
  std::vector<SampleSource> samples;
  bool raw_open = false;  // the last sample takes raw inputs
  auto raw = [&]() -> tessera::SampleFiles& {
    if (!raw_open) {
      samples.emplace_back();
      raw_open = true;
    }
    return samples.back().files;
  };
  auto set_once = [](auto& slot, auto value, const std::string& option) {
    apps::require(!slot.has_value(), option + " given twice for one sample (use --next to start another)");
    slot = std::move(value);
  };
  std::map<std::string, std::size_t> seen;  // occurrences of each option so far
  for (const CLI::Option* option : app.parse_order()) {
    const std::string name = option->get_name();
    const std::size_t i = seen[name]++;
    if (name == "--next") {
      apps::require(raw_open, "--next must follow the raw inputs of a sample");
      raw_open = false;
    } else if (name == "--inputs") {
      samples.push_back({s.inputs[i], {}});
      raw_open = false;
    } else if (name == "--text") {
      set_once(raw().text, s.text[i], name);
    } else if (name == "--text-file") {
      apps::Processing now("--text-file " + s.text_file[i], s.text_file[i]);
      std::string text = tessera::read_utf8_file(s.text_file[i]);  // named by its file
      if (text.ends_with('\n')) text.pop_back();  // the file's last line end
      if (text.ends_with('\r')) text.pop_back();
      set_once(raw().text, std::move(text), "--text");
    } else if (name == "--image") {
      set_once(raw().image, std::filesystem::path(s.image[i]), name);
    } else if (name == "--audio") {
      set_once(raw().audio, std::filesystem::path(s.audio[i]), name);
    } else if (name == "--video") {
      set_once(raw().video, std::filesystem::path(s.video[i]), name);
    } else if (name == "--video-fps") {
      raw().video_images_fps = s.video_fps[i];
    }
  }
  apps::require(!samples.empty(), "no sample: give --inputs or raw inputs");
  return samples;
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
  CLI::App app("Encode samples with a model directory and write their embeddings. Samples are "
               "inputs files (--inputs) or raw inputs mixed freely into one sample (--text, "
               "--image, --audio, --video), --next starting another; all form one packed batch.",
               "tessera-encode");
  apps::set_conventions(app);
  Options options;
  SampleOptions sample_options;
  add_options(app, options, sample_options);
  return apps::run(app, argc, argv, [&] {
    options.samples = samples_in_order(app, sample_options);
    std::vector<std::filesystem::path> inputs = {options.model};
    for (const auto* given : {&sample_options.inputs, &sample_options.text_file,
                              &sample_options.image, &sample_options.audio, &sample_options.video}) {
      inputs.insert(inputs.end(), given->begin(), given->end());
    }
    apps::refuse_output_over_inputs(options.out, "--out", inputs);
    if (options.threads > 0) tessera::set_num_threads(options.threads);
    std::optional<apps::Processing> loading(std::in_place, "--model " + options.model, options.model);
    // tessera's own model or a pretrained one (transformers' CLIP, open_clip, ImageBind), with
    // its front ends
    const auto model = tessera::Pipeline<float>::open(options.model);
    loading.reset();

    Timing timing;
    std::vector<tessera::Encoding<float>> encodings;
    const int runs = std::max(1, options.repeat);
    for (int run = 0; run < runs; ++run) {
      tessera::StageTimes stages;
      std::vector<tessera::Sample<float>> batch;
      for (std::size_t i = 0; i < options.samples.size(); ++i) {
        const SampleSource& source = options.samples[i];
        const std::string name = label(source);
        apps::Processing now(tessera::detail::concat("sample ", i, " (", name, ")"), name);
        if (!source.inputs_file.empty()) {
          const auto start = std::chrono::steady_clock::now();
          batch.push_back(tessera::read_sample<float>(source.inputs_file));
          model.check_sample(batch.back(), source.inputs_file);  // errors name the file
          stages.decode += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        } else {
          const std::vector<tessera::RawInput> raw = source.files.inputs();
          batch.push_back(model.load(raw, &stages));
        }
      }
      const auto start = std::chrono::steady_clock::now();
      apps::Processing now(tessera::detail::concat("encoding the batch of ", batch.size(), " samples"));
      encodings = model.encode_batch(batch);
      timing.encode.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
      timing.decode.push_back(stages.decode);
      timing.preprocess.push_back(stages.preprocess);
    }
    {
      apps::Processing now("--out " + options.out, options.out);
      tessera::write_encodings<float>(options.out, encodings);
    }
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
  });
}
