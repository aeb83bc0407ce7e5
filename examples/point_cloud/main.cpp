// tessera-point-cloud: a fifth modality, point clouds, added by a program without touching the
// library (point_cloud.hpp has the front end; tokenize/front_end.hpp the interface).
//
//   tessera-point-cloud --init MODEL_DIR
//   tessera-point-cloud MODEL_DIR CLOUD.xyz OTHER.xyz [TEXT]
//
// --init writes a small model directory (example_model.hpp): text and a `point_cloud` custom
// modality with random weights, and a BPE tokenizer.
// The second form registers the point-cloud front end, loads the model, turns each .xyz file
// (one "x y z" point per line; data/ has a sphere and a cube) into tokens of grouped points,
// and prints each embedding and the cosine similarity of the two clouds; with TEXT, also the
// similarity of the text to each cloud.

#include "../example_util.hpp"
#include "example_model.hpp"
#include "point_cloud.hpp"

#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr std::string_view usage =
    "tessera-point-cloud --init MODEL_DIR | tessera-point-cloud MODEL_DIR CLOUD.xyz OTHER.xyz [TEXT]";

void encode_clouds(int argc, char** argv) {
  const std::filesystem::path model_dir = argv[1];
  const std::string clouds[2] = {argv[2], argv[3]};
  const std::string labels[2] = {std::filesystem::path(clouds[0]).filename().string(),
                                 std::filesystem::path(clouds[1]).filename().string()};

  // The front end must be registered before the FrontEnds are built: they take theirs then.
  point_cloud::register_front_end("point_cloud");
  const auto model = tessera::load_model<float>(model_dir);
  const tessera::FrontEnds front(model.config, model_dir);

  // FrontEnds hands each file to the point-cloud front end, which reads its points and groups
  // them into tokens: features [G, 3 + 3k] and (t, y, x) grid positions [G, 3].
  tessera::Encoding<float> encodings[2];
  for (int i = 0; i < 2; ++i) {
    tessera::SampleFiles files;
    files.custom["point_cloud"] = clouds[i];  // a custom modality's input: its name -> a path
    const tessera::Sample<float> sample = front.load(files);
    const tessera::CustomInput<float>& tokens = sample.custom.at("point_cloud");
    std::printf("%s: %ld tokens of %ld features\n", labels[i].c_str(),
                static_cast<long>(tokens.features.rows()), static_cast<long>(tokens.features.cols()));
    encodings[i] = model.encode(sample);
  }
  example::print_encoding(labels[0], encodings[0]);
  example::print_encoding(labels[1], encodings[1]);
  std::printf("%s vs %s: ", labels[0].c_str(), labels[1].c_str());
  example::print_similarity(encodings[0], encodings[1]);

  if (argc == 5) {
    const std::string text = argv[4];
    tessera::SampleFiles caption;
    caption.text = text;
    const tessera::Encoding<float> encoding = model.encode(front.load(caption));
    example::print_encoding("\"" + text + "\"", encoding);
    for (int i = 0; i < 2; ++i) {
      std::printf("\"%s\" vs %s: ", text.c_str(), labels[i].c_str());
      example::print_similarity(encoding, encodings[i]);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  return example::run("tessera-point-cloud", [&] {
    if (argc >= 2 && std::string_view(argv[1]) == "--init") {
      example::expect_arguments(argc, 2, usage);
      point_cloud::write_example_model(argv[2]);
    } else {
      tessera::check(argc == 4 || argc == 5, "usage: ", usage);
      encode_clouds(argc, argv);
    }
  });
}
