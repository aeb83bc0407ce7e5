// tessera-preprocess: run one front end of a model and write what it produced.
//
//   tessera-preprocess --model DIR (--text T | --image F | --audio F | --video F|DIR
//                      [--video-fps R]) --out OUT.safetensors
//
// Exactly one input. OUT holds the front end's output and, for image, audio and video, the
// flattened patch vectors the encoder projects into tokens (SPEC 2, nn/patch_embed.hpp):
//   --text   ids      I32 [n]            token ids
//   --image  image    F32 [C, S, S]      patches F32 [(S/P)^2, C*P*P]
//   --audio  audio    F32 [M, T]         patches F32 [ceil(T/pf), M*pf]
//   --video  video    F32 [T, C, S, S]   patches F32 [K*(S/P)^2, C*tubelet*P*P]
// Only config.json (and the tokenizer files, for text) are read from DIR. --video-fps is a
// frame directory's rate (30). Prints the tensors written. Exit statuses and errors as every
// program's (cli.hpp, docs/programs.md).

#include <tessera/tessera.hpp>
#include <tessera/tokenize/files.hpp>

#include "cli.hpp"

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace apps = tessera::apps;

struct Options {
  std::string model, out;
  std::string text, image, audio, video;  // the one given goes into the sample
  double video_fps = 30;
};

void add_options(CLI::App& app, Options& o) {
  app.add_option("--model", o.model, "the model directory (config.json and, for text, the tokenizer files)")
      ->required()->type_name("DIR");
  app.add_option("--out", o.out, "the file to write: the front end's output and the patches")
      ->required()->type_name("OUT.safetensors");
  app.add_option("--text", o.text, "a text, through the model's tokenizer")->type_name("T");
  app.add_option("--image", o.image, "an image file")->type_name("FILE");
  app.add_option("--audio", o.audio, "a WAV file")->type_name("FILE.wav");
  app.add_option("--video", o.video, "a video file, or a directory of frames")->type_name("FILE|DIR");
  app.add_option("--video-fps", o.video_fps, "a frame directory's frame rate")
      ->check(apps::positive_number)->type_name("R");
}

// The one input given (--text, --image, --audio or --video); a usage error for none or several.
tessera::SampleFiles one_input(const CLI::App& app, const Options& o) {
  std::vector<std::string> given;
  for (const CLI::Option* option : app.parse_order()) {
    const std::string name = option->get_name();
    if ((name == "--text" || name == "--image" || name == "--audio" || name == "--video") &&
        std::find(given.begin(), given.end(), name) == given.end()) {
      given.push_back(name);
    }
  }
  apps::require(!given.empty(), "no input: give one of --text, --image, --audio, --video");
  apps::require(given.size() == 1, "give exactly one input, got " + given[0] + " and " + given[1]);
  tessera::SampleFiles input;
  if (given[0] == "--text") input.text = o.text;
  if (given[0] == "--image") input.image = o.image;
  if (given[0] == "--audio") input.audio = o.audio;
  if (given[0] == "--video") input.video = o.video;
  input.video_images_fps = o.video_fps;
  return input;
}

std::vector<std::int64_t> shape_of(const auto& tensor) {
  std::vector<std::int64_t> shape;
  for (auto d : tensor.dimensions()) shape.push_back(d);
  return shape;
}

// An Eigen tensor (row-major, as tessera's are) as a safetensors tensor of the same shape.
tessera::TensorData tensor_data(const auto& tensor) {
  return tessera::TensorData::from_span(
      std::span<const float>(tensor.data(), static_cast<std::size_t>(tensor.size())),
      shape_of(tensor));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Run one front end of a model on one input and write what it produced, with the "
               "flattened patch vectors the encoder projects into tokens.",
               "tessera-preprocess");
  apps::set_conventions(app);
  Options options;
  add_options(app, options);
  return apps::run(app, argc, argv, [&] {
    const tessera::SampleFiles input = one_input(app, options);
    // --out over one of the inputs (a file of the model directory, the input file) is refused
    // before anything is read
    std::vector<std::filesystem::path> inputs = {options.model};
    for (const auto& in : input.inputs()) {
      if (in.modality != "text") inputs.emplace_back(in.value);
    }
    apps::refuse_output_over_inputs(options.out, "--out", inputs);
    tessera::check(std::filesystem::is_directory(options.model), "--model: ", options.model,
                   " is not a directory");
    std::optional<apps::Processing> now(std::in_place, "--model " + options.model, options.model);
    const tessera::Config config =
        tessera::load_config(std::filesystem::path(options.model) / tessera::config_file_name);
    const tessera::FrontEnds front(config, options.model);
    now.emplace(input.inputs().front().modality == "text" ? std::string("--text")
                                                          : "--" + input.inputs().front().modality + " " +
                                                                input.inputs().front().value,
                input.inputs().front().modality == "text" ? std::string("--text")
                                                          : input.inputs().front().value);
    const tessera::Sample<float> sample = front.load(input);

    // The patch geometry is the model's; video frames use the image section's (docs/encoder.md).
    const tessera::ImageConfig& frame = config.frame_geometry();
    std::map<std::string, tessera::TensorData> tensors;
    if (sample.text) {
      tensors["ids"] = tessera::TensorData::from_vector(*sample.text, tessera::DType::I32);
    }
    if (sample.image) {
      tensors["image"] = tensor_data(*sample.image);
      tensors["patches"] =
          tessera::TensorData::from_matrix(tessera::nn::patchify_image(*sample.image, frame.patch));
    }
    if (sample.audio) {
      tensors["audio"] = tessera::TensorData::from_matrix(*sample.audio);
      tensors["patches"] = tessera::TensorData::from_matrix(
          tessera::nn::patchify_audio<float>(*sample.audio, config.audio->patch_frames));
    }
    if (sample.video) {
      tensors["video"] = tensor_data(*sample.video);
      tensors["patches"] = tessera::TensorData::from_matrix(
          tessera::nn::patchify_video(*sample.video, config.video->tubelet, frame.patch));
    }
    now.emplace("--out " + options.out, options.out);
    tessera::save_safetensors(options.out, tensors);
    now.reset();

    std::cout << "wrote " << options.out << ":";
    const char* separator = " ";
    for (const auto& [name, tensor] : tensors) {
      std::cout << std::exchange(separator, ", ") << name << " " << tessera::dtype_name(tensor.dtype)
                << " [";
      for (std::size_t i = 0; i < tensor.shape.size(); ++i) {
        std::cout << (i > 0 ? ", " : "") << tensor.shape[i];
      }
      std::cout << "]";
    }
    std::cout << "\n";
  });
}
