// tessera-encode: encode samples with a model directory and write their embeddings.
//
//   tessera-encode --model DIR --inputs FILE.safetensors [--inputs FILE2 ...]
//                  --out OUT.safetensors [--threads N]
//
// Each inputs file is one sample (any of text_ids, image, audio, video; see
// docs/encoder.md); several --inputs form one batch. OUT holds `embeddings` [N, E] and
// `hidden.0`, `hidden.1`, ... ([L_i, D]). Errors print one line to stderr and exit with 1.

#include <tessera/tessera.hpp>

#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr const char* usage =
    "usage: tessera-encode --model DIR --inputs FILE.safetensors [--inputs FILE2 ...] "
    "--out OUT.safetensors [--threads N]";

struct Options {
  std::string model;
  std::vector<std::string> inputs;
  std::string out;
  int threads = 0;  // 0: OpenMP's default
};

int parse_threads(std::string_view text) {
  int value = 0;
  for (char c : text) {
    tessera::check(c >= '0' && c <= '9' && value < 100000, "--threads expects a positive integer, got '", text, "'");
    value = value * 10 + (c - '0');
  }
  tessera::check(!text.empty() && value >= 1, "--threads expects a positive integer, got '", text, "'");
  return value;
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << usage << "\n";
      std::exit(0);
    }
    tessera::check(i + 1 < argc, "option ", arg, " needs a value (", usage, ")");
    const std::string value = argv[++i];
    if (arg == "--model") {
      options.model = value;
    } else if (arg == "--inputs") {
      options.inputs.push_back(value);
    } else if (arg == "--out") {
      options.out = value;
    } else if (arg == "--threads") {
      options.threads = parse_threads(value);
    } else {
      tessera::fail("unknown option ", arg, " (", usage, ")");
    }
  }
  tessera::check(!options.model.empty(), "--model is required (", usage, ")");
  tessera::check(!options.inputs.empty(), "at least one --inputs is required (", usage, ")");
  tessera::check(!options.out.empty(), "--out is required (", usage, ")");
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options options = parse(argc, argv);
    if (options.threads > 0) tessera::set_num_threads(options.threads);
    const auto model = tessera::load_model<float>(options.model);
    std::vector<tessera::Sample<float>> batch;
    for (const auto& file : options.inputs) batch.push_back(tessera::read_sample<float>(file));
    const auto encodings = model.encode_batch(batch);
    tessera::write_encodings<float>(options.out, encodings);
    std::cout << "encoded " << encodings.size() << " sample(s) into " << options.out << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "tessera-encode: error: " << e.what() << "\n";
    return 1;
  }
}
