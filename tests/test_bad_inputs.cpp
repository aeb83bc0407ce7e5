// The catalogue of bad inputs (tests/bad_inputs/, docs/robustness.md): every file goes
// through the library the way tessera-encode takes it (load the model, the front ends, read
// the input, encode) and must end in a tessera::Error naming the file and the problem.
// apps/CMakeLists.txt runs tessera-encode on the same files (exit status 1, one line).

#include <tessera/model/model_io.hpp>
#include <tessera/model/sample_io.hpp>
#include <tessera/tokenize/files.hpp>
#include <tessera/tokenize/utf8.hpp>

#include "test_util.hpp"

#include <gmock/gmock.h>

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
};

std::vector<BadInput> catalogue() {
  const fs::path file = bad_inputs_dir() / "catalogue.json";
  std::ifstream in(file);
  const nlohmann::json json = nlohmann::json::parse(in);
  std::vector<BadInput> out;
  for (const auto& e : json) {
    out.push_back({e.at("class"), e.at("file"), e.at("option"), e.at("error")});
  }
  return out;
}

// models/<case> holds the defective file only; the others come from model/.
fs::path assemble_model(const fs::path& case_dir, const fs::path& into) {
  for (const auto& entry : fs::directory_iterator(bad_inputs_dir() / "model")) {
    const fs::path own = case_dir / entry.path().filename();
    fs::copy_file(fs::exists(own) ? own : entry.path(), into / entry.path().filename());
  }
  return into;
}

// What tessera-encode does with `input` given as `option`.
void encode_through_the_library(const BadInput& input, const fs::path& scratch) {
  const fs::path file = bad_inputs_dir() / input.file;
  const fs::path model_dir =
      input.option == "--model" ? assemble_model(file, scratch) : bad_inputs_dir() / "model";
  const MultiModalEncoder<float> model = load_model<float>(model_dir);
  const FrontEnds front(model.config, model_dir);
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
    sample = front.load(files);
  }
  (void)model.encode(sample);
}

TEST(BadInputs, TheCatalogueCoversEveryClass) {
  std::set<std::string> classes;
  for (const auto& input : catalogue()) classes.insert(input.cls);
  for (const char* cls : {"truncated", "empty", "wrong magic", "lying sizes", "overlapping tensors",
                          "NaN", "not UTF-8", "ids out of range", "sequence over the limit",
                          "wrong shape", "wrong type", "malformed JSON"}) {
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
    test::TempDir scratch;
    const std::string error =
        test::error_of([&] { encode_through_the_library(input, scratch.path()); });
    EXPECT_THAT(error, HasSubstr(input.error));
    // The message names the file (or, for a model, the file of the model at fault).
    const std::string named = input.option == "--model" ? scratch.path().string()
                                                        : fs::path(input.file).filename().string();
    EXPECT_THAT(error, HasSubstr(named));
  }
}

}  // namespace
}  // namespace tessera
