// tessera-synth: write the synthetic world of tessera/train/synthetic.hpp (colored shapes with
// captions, images, sounds and videos) for the training demo.
//
//   tessera-synth --out DIR [--seed N] [--per-combination N] [--image-size S]
//
// Writes DIR/images, DIR/audio, DIR/video, DIR/captions.txt, DIR/train.jsonl and
// DIR/heldout.jsonl (docs/synthetic-data.md) and prints one line with the counts per split.
// Errors print one line to stderr and exit 1.

#include <tessera/train/synthetic.hpp>

#include "example_util.hpp"

#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>

namespace {

constexpr const char* usage =
    "usage: tessera-synth --out DIR [--seed N] [--per-combination N] [--image-size S]";

std::uint64_t parse_seed(std::string_view text) {
  std::uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  tessera::check(!text.empty() && error == std::errc() && end == text.data() + text.size(),
                 "--seed expects a non-negative integer below 2^64, got '", text, "'");
  return value;
}

}  // namespace

int main(int argc, char** argv) {
  return example::run("tessera-synth", [&] {
    std::string out;
    tessera::SyntheticOptions options;
    example::for_each_option(argc, argv, usage, {}, [&](std::string_view arg, const std::string& value) {
      if (arg == "--out") {
        out = value;
      } else if (arg == "--seed") {
        options.seed = parse_seed(value);
      } else if (arg == "--per-combination") {
        options.samples_per_combination = example::positive_integer(arg, value);
      } else if (arg == "--image-size") {
        options.image_size = example::positive_integer(arg, value);
      } else {
        return false;
      }
      return true;
    });
    tessera::check(!out.empty(), "--out is required (", usage, ")");

    const auto summary = tessera::write_synthetic_world(out, options);
    std::cout << "wrote " << summary.train + summary.heldout << " samples to " << out << ": "
              << summary.train << " train, " << summary.heldout << " heldout ("
              << options.heldout_combinations
              << " of 48 color-shape-motion combinations held out, seed " << options.seed
              << ")\n";
  });
}
