// The catalogue of bad inputs (tests/bad_inputs/, docs/robustness.md): every file goes
// through the library the way tessera-encode takes it (load the model, the front ends, read
// the input, encode), a manifest the way tessera-train reads it (read_manifest with the
// entry's key options), and must end in a tessera::Error naming the file and the problem.
// apps/bad_inputs_tests.cmake runs the programs on the same files (exit status 1, one line).
// Each case ends within 10 s, and the whole catalogue within 1 GiB of resident memory (the
// process's peak; 2 GiB and 30 s under AddressSanitizer, whose shadow memory and quarantine
// add to both).

#include <tessera/io/manifest.hpp>
#include <tessera/model/model_io.hpp>
#include <tessera/model/sample_io.hpp>
#include <tessera/pipeline.hpp>
#include <tessera/tokenize/files.hpp>
#include <tessera/tokenize/utf8.hpp>

#include "test_util.hpp"

#include <gmock/gmock.h>

#include <sys/resource.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

namespace tessera {
namespace test_bad_inputs {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

fs::path bad_inputs_dir() { return test::data_dir().parent_path() / "bad_inputs"; }

struct BadInput {
  std::string cls, file, option, error;
  std::string base;  // a pretrained case: the fixture under tests/data/ holding the other files
  std::vector<std::string> args;  // a manifest: tessera-train's key options ("--text-key", "caption")
};

std::vector<BadInput> catalogue() {
  const fs::path file = bad_inputs_dir() / "catalogue.json";
  std::ifstream in(file);
  const nlohmann::json json = nlohmann::json::parse(in);
  std::vector<BadInput> out;
  for (const auto& e : json) {
    out.push_back({e.at("class"), e.at("file"), e.at("option"), e.at("error"),
                   e.value("base", std::string()), e.value("args", std::vector<std::string>())});
  }
  return out;
}

#if defined(__SANITIZE_ADDRESS__)
constexpr bool under_asan = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool under_asan = true;
#else
constexpr bool under_asan = false;
#endif
#else
constexpr bool under_asan = false;
#endif
constexpr double max_seconds = under_asan ? 30.0 : 10.0;
constexpr long max_resident_mib = under_asan ? 2048 : 1024;

// models/<case> holds the defective file only (or a directory where a file belongs); the
// others come from model/ (pretrained/<case>: from the model/ of the fixture `base` names).
fs::path assemble_model(const fs::path& case_dir, const fs::path& into, const std::string& base) {
  const fs::path from = base.empty() ? bad_inputs_dir() / "model" : test::data_dir() / base / "model";
  for (const auto& entry : fs::directory_iterator(from)) {
    const fs::path own = case_dir / entry.path().filename();
    fs::copy(fs::exists(own) ? own : entry.path(), into / entry.path().filename(),
             fs::copy_options::recursive);
  }
  for (const auto& entry : fs::directory_iterator(case_dir)) {  // files the base lacks
    if (!fs::exists(into / entry.path().filename())) {
      fs::copy(entry.path(), into / entry.path().filename(), fs::copy_options::recursive);
    }
  }
  return into;
}

// The process's peak resident memory so far, in MiB.
long peak_resident_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024;  // Linux: kilobytes
}

// What tessera-encode does with `input` given as `option`.
void encode_through_the_library(const BadInput& input, const fs::path& scratch) {
  const fs::path file = bad_inputs_dir() / input.file;
  const fs::path model_dir = input.option == "--model"
                                ? assemble_model(file, scratch, input.base)
                                : bad_inputs_dir() / "model";
  // tessera's own model or a pretrained one, as tessera-encode opens it
  const Pipeline<float> model = Pipeline<float>::open(model_dir);
  Sample<float> sample;
  SampleFiles files;
  if (input.option == "--inputs") {
    sample = read_sample<float>(file);
    model.check_sample(sample, file.string());
  } else {
    if (input.option == "--model") files.text = "a red square";
    if (input.option == "--text-file") {
      files.text = read_utf8_file(file);
    }
    if (input.option == "--image") files.image = file;
    if (input.option == "--audio") files.audio = file;
    if (input.option == "--video") files.video = file;
    const std::vector<RawInput> raw = files.inputs();
    sample = model.load(raw);
  }
  (void)model.encode_batch(std::span<const Sample<float>>(&sample, 1));
}

// tessera-train's ManifestOptions from its key options (apps/train.cpp, manifest_options).
ManifestOptions manifest_options(const std::vector<std::string>& args) {
  ManifestOptions options;
  // errors name tessera-train's options, as its users type them
  options.option_names = {{"text_key", "--text-key"},   {"image_key", "--image-key"},
                          {"audio_key", "--audio-key"}, {"video_key", "--video-key"},
                          {"label_key", "--label-key"}, {"id_key", "--id-key"},
                          {"format", "--manifest-format"}};
  for (std::size_t i = 0; i + 1 < args.size(); i += 2) {
    const std::string& option = args[i];
    const std::string& value = args[i + 1];
    if (option == "--text-key" || option == "--csv-caption-key") options.text_key = value;
    else if (option == "--image-key" || option == "--csv-img-key") options.image_key = value;
    else if (option == "--audio-key") options.audio_key = value;
    else if (option == "--video-key") options.video_key = value;
    else if (option == "--label-key") options.label_key = value;
    else if (option == "--id-key") options.id_key = value;
    else if (option == "--separator" || option == "--csv-separator") {
      options.separator = value == "\\t" ? '\t' : value.at(0);
    } else {
      ADD_FAILURE() << "catalogue.json: an \"args\" option this test does not know: " << option;
    }
  }
  EXPECT_EQ(args.size() % 2, 0u) << "catalogue.json: \"args\" are option-value pairs";
  return options;
}

// What tessera-train does with a manifest before anything else: read it.
void read_through_the_library(const BadInput& input) {
  (void)read_manifest(bad_inputs_dir() / input.file, manifest_options(input.args));
}

TEST(BadInputs, TheCatalogueCoversEveryClass) {
  std::set<std::string> classes;
  for (const auto& input : catalogue()) classes.insert(input.cls);
  for (const char* cls : {"truncated", "empty", "wrong magic", "lying sizes", "overlapping tensors",
                          "NaN", "not UTF-8", "ids out of range", "sequence over the limit",
                          "wrong shape", "wrong type", "malformed JSON", "rates that scale work",
                          "directory as a file", "a file without an end", "inconsistent tokenizer",
                          "checksum mismatch", "malformed checksum", "unknown model type",
                          "config and weights disagree", "ResNet tower", "missing tokenizer",
                          "unexpected tensor", "malformed CSV", "manifest columns", "manifest items",
                          "over a limit", "unknown format", "malformed quantized weight"}) {
    EXPECT_EQ(classes.count(cls), 1u) << cls;
  }
}

TEST(BadInputs, TheGoodModelEncodesEveryModality) {
  const fs::path dir = bad_inputs_dir() / "model";
  const MultiModalEncoder<float> model = load_model<float>(dir);
  SampleFiles files;
  files.text = "a red square";
  files.image = test::data_dir() / "image" / "sources" / "coffee.png";
  files.audio = test::data_dir() / "audio" / "pipeline_kaldi.wav";
  const Encoding<float> encoding = model.encode(FrontEnds(model.config, dir).load(files));
  EXPECT_NEAR(encoding.embedding.norm(), 1.0f, 1e-5f);
}

TEST(BadInputs, EveryFileIsAClearErrorThroughTheLibrary) {
  for (const auto& input : catalogue()) {
    SCOPED_TRACE(input.cls + ": " + input.file);
#if !TESSERA_HAS_FFMPEG
    if (fs::path(input.file).extension() == ".avi") continue;  // a container: FFmpeg reads it
#endif
    test::TempDir scratch;
    const auto start = std::chrono::steady_clock::now();
    const bool manifest = input.option == "--manifest";
    const std::string error = test::error_of([&] {
      if (manifest) read_through_the_library(input);
      else encode_through_the_library(input, scratch.path());
    });
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    EXPECT_LT(took.count(), max_seconds);
    EXPECT_THAT(error, HasSubstr(input.error));
    // The message names the file (or, for a model, the file of the model at fault).
    const std::string named = input.option == "--model" ? scratch.path().string()
                                                        : fs::path(input.file).filename().string();
    EXPECT_THAT(error, HasSubstr(named));
    // A manifest's entry is the whole message after the path, which names the line (and the
    // column or key) itself.
    if (manifest) {
      EXPECT_EQ(error, (bad_inputs_dir() / input.file).string() + ": " + input.error);
    }
  }
  EXPECT_LT(peak_resident_mib(), max_resident_mib);
}

}  // namespace
}  // namespace tessera
