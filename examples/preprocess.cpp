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
// frame directory's rate (30). Prints the tensors written; errors print one line to stderr
// and exit 1.

#include <tessera/tessera.hpp>
#include <tessera/tokenize/files.hpp>

#include "example_util.hpp"

#include <cstdlib>
#include <exception>
#include <iostream>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

constexpr const char* usage =
    "usage: tessera-preprocess --model DIR (--text T | --image F | --audio F | --video F|DIR "
    "[--video-fps R]) --out OUT.safetensors";

struct Options {
  std::string model;
  tessera::SampleFiles input;  // exactly one of text, image, audio, video
  std::string out;
};

Options parse(int argc, char** argv) {
  Options options;
  std::vector<std::string_view> inputs;  // the modality options given
  example::for_each_option(argc, argv, usage, {}, [&](std::string_view arg, const std::string& value) {
    if (arg == "--model") {
      options.model = value;
    } else if (arg == "--text") {
      options.input.text = value;
    } else if (arg == "--image") {
      options.input.image = value;
    } else if (arg == "--audio") {
      options.input.audio = value;
    } else if (arg == "--video") {
      options.input.video = value;
    } else if (arg == "--video-fps") {
      options.input.video_images_fps = example::positive_number(arg, value);
    } else if (arg == "--out") {
      options.out = value;
    } else {
      return false;
    }
    if (arg == "--text" || arg == "--image" || arg == "--audio" || arg == "--video") {
      inputs.push_back(arg);
    }
    return true;
  });
  tessera::check(!options.model.empty(), "--model is required (", usage, ")");
  tessera::check(!inputs.empty(), "no input: give one of --text, --image, --audio, --video (",
                 usage, ")");
  tessera::check(inputs.size() == 1, "give exactly one input, got ", inputs[0], " and ",
                 inputs[1], " (", usage, ")");
  tessera::check(!options.out.empty(), "--out is required (", usage, ")");
  return options;
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
  try {
    const Options options = parse(argc, argv);
    tessera::check(std::filesystem::is_directory(options.model), "--model: ", options.model,
                   " is not a directory");
    const tessera::Config config =
        tessera::load_config(std::filesystem::path(options.model) / tessera::config_file_name);
    const tessera::FrontEnds front(config, options.model);
    const tessera::Sample<float> sample = front.load(options.input);

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
    tessera::save_safetensors(options.out, tensors);

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
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "tessera-preprocess: error: " << e.what() << "\n";
    return 1;
  }
}
