// tessera-classify: zero-shot classification of images, audio and videos among labels, as
// CLIP's README does (search_index.hpp: zero_shot_classify).
//
//   tessera-classify --model DIR --image F [--image F ...] [--audio F ...] [--video F ...]
//                    --labels "dog,cat,car" [--template "a photo of a {}."] [--top K] [--json]
//
// Each input is one sample; each label becomes a text through the template (every "{}" is
// the label) and the probabilities over the labels are softmax(exp(logit_scale) x cosine)
// with the model's logit_scale. Printed per input, the most likely first:
//
//   dog.png (image)
//        dog: 92.31%
//        cat:  6.12%
//
// --json prints one JSON object instead (docs/programs.md). Exit statuses and errors as every
// program's (cli.hpp).

#include <tessera/pipeline.hpp>
#include <tessera/search_index.hpp>

#include "cli.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace {

namespace apps = tessera::apps;

struct Options {
  std::string model;
  std::vector<std::string> image, audio, video;
  std::string labels;
  std::string label_template = tessera::default_label_template;
  std::size_t top = 5;
  bool json = false;
  int threads = 0;
};

void add_options(CLI::App& app, Options& o) {
  app.add_option("--model", o.model, "the model directory (a tessera model or a pretrained one; "
                                     "it needs text and the inputs' modalities)")
      ->required()->type_name("DIR");
  apps::add_repeated_option(app, "--image", o.image, "an image to classify; repeatable")
      ->type_name("FILE");
  apps::add_repeated_option(app, "--audio", o.audio, "a WAV file to classify; repeatable")
      ->type_name("FILE.wav");
  apps::add_repeated_option(app, "--video", o.video, "a video to classify; repeatable")
      ->type_name("FILE");
  app.add_option("--labels", o.labels, "the labels, separated by commas (each trimmed; none "
                                       "empty, none twice)")
      ->required()->type_name("\"A,B,...\"");
  app.add_option("--template", o.label_template,
                 "the text made of each label: every {} is the label")
      ->type_name("TEXT");
  app.add_option("--top", o.top, "the labels printed per input, the most likely first")
      ->check(apps::integer_in<std::size_t>(1, tessera::ZeroShotLimits{}.max_labels))
      ->type_name("K");
  app.add_flag("--json", o.json, "print the results as one JSON object");
  apps::add_threads_option(app, o.threads);
}

// The inputs in the order given, each one sample: (modality, path).
std::vector<std::pair<std::string, std::string>> inputs_in_order(const CLI::App& app,
                                                                 const Options& o) {
  std::vector<std::pair<std::string, std::string>> inputs;
  std::map<std::string, std::size_t> seen;
  for (const CLI::Option* option : app.parse_order()) {
    const std::string name = option->get_name();
    const std::size_t i = seen[name]++;
    if (name == "--image") inputs.emplace_back("image", o.image[i]);
    if (name == "--audio") inputs.emplace_back("audio", o.audio[i]);
    if (name == "--video") inputs.emplace_back("video", o.video[i]);
  }
  apps::require(!inputs.empty(), "no input: give --image, --audio or --video");
  return inputs;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Zero-shot classification: the probability of each label for each input "
               "(softmax over the labels of exp(logit_scale) x cosine similarity with the "
               "label's text), as CLIP's README does.",
               "tessera-classify");
  apps::set_conventions(app);
  Options o;
  add_options(app, o);
  return apps::run(app, argc, argv, [&] {
    const auto inputs = inputs_in_order(app, o);
    // the labels and template before the model is read: a bad one costs nothing
    std::vector<std::string> labels;
    {
      apps::Processing now("--labels", "labels");
      labels = tessera::parse_labels(o.labels);
    }
    {
      apps::Processing now("--template", "template");
      tessera::label_texts(labels, o.label_template);  // refuses a template without {}
    }
    if (o.threads > 0) tessera::set_num_threads(o.threads);
    std::optional<apps::Processing> loading(std::in_place, "--model " + o.model, o.model);
    const auto model = tessera::Pipeline<float>::open(o.model);
    loading.reset();

    std::vector<std::vector<tessera::RawInput>> samples;
    for (const auto& [modality, path] : inputs) samples.push_back({{modality, path, {}}});
    const auto result = tessera::zero_shot_classify(model, samples, labels, o.label_template);
    const std::size_t top = std::min(o.top, labels.size());

    if (o.json) {
      nlohmann::json out = {{"model", o.model},
                            {"template", o.label_template},
                            {"logit_scale", model.logit_scale()},
                            {"labels", labels},
                            {"results", nlohmann::json::array()}};
      for (std::size_t n = 0; n < inputs.size(); ++n) {
        const auto row = result.probabilities.row(static_cast<tessera::Index>(n));
        nlohmann::json item = {{"input", inputs[n].second},
                               {"modality", inputs[n].first},
                               {"probabilities", std::vector<float>(row.begin(), row.end())},
                               {"top", nlohmann::json::array()}};
        for (const tessera::Index k : tessera::ranking(row, top)) {
          item["top"].push_back({{"label", labels[static_cast<std::size_t>(k)]},
                                 {"probability", row(k)},
                                 {"cosine", result.cosines(static_cast<tessera::Index>(n), k)}});
        }
        out["results"].push_back(std::move(item));
      }
      std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      return;
    }
    std::size_t width = 0;
    for (const std::string& label : labels) width = std::max(width, label.size());
    for (std::size_t n = 0; n < inputs.size(); ++n) {
      std::printf("%s%s (%s)\n", n == 0 ? "" : "\n", inputs[n].second.c_str(), inputs[n].first.c_str());
      const auto row = result.probabilities.row(static_cast<tessera::Index>(n));
      for (const tessera::Index k : tessera::ranking(row, top)) {
        std::printf("  %*s: %6.2f%%\n", static_cast<int>(width),
                    labels[static_cast<std::size_t>(k)].c_str(), 100.0 * row(k));
      }
    }
  });
}
