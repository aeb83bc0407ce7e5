// tessera-synth: write the synthetic world of apps/synthetic.hpp (colored shapes with
// captions, images, sounds and videos) for the training demo.
//
//   tessera-synth --out DIR [--seed N] [--per-combination N] [--image-size S]
//
// Writes DIR/images, DIR/audio, DIR/video, DIR/captions.txt, DIR/train.jsonl and
// DIR/heldout.jsonl (docs/synthetic-data.md) and prints one line with the counts per split.
// Exit statuses and errors as every program's (cli.hpp, docs/programs.md).

#include "synthetic.hpp"

#include "cli.hpp"

#include <cstdint>
#include <filesystem>
#include <iostream>
#include <string>

int main(int argc, char** argv) {
  namespace apps = tessera::apps;
  CLI::App app("Write the synthetic world of the training demo: colored shapes with captions, "
               "images, sounds and videos (docs/synthetic-data.md).",
               "tessera-synth");
  apps::set_conventions(app);
  std::string out;
  tessera::SyntheticOptions options;
  app.add_option("--out", out, "the directory to write")->required()->type_name("DIR");
  app.add_option("--seed", options.seed, "the random seed of every choice")
      ->check(apps::integer<std::uint64_t>())->type_name("N");
  app.add_option("--per-combination", options.samples_per_combination,
                 "items per (color, shape, position, motion)")
      ->check(apps::integer_in<tessera::Index>(1, 100000))->type_name("N");
  app.add_option("--image-size", options.image_size, "images and video frames are S x S pixels")
      ->check(apps::integer_in<tessera::Index>(1, 100000))->type_name("S");

  return apps::run(app, argc, argv, [&] {
    try {
      options.validate();  // the library's own limits, named in its message
    } catch (const tessera::Error& e) {
      throw apps::UsageError(e.what());
    }
    // the room the world takes on disk (and its lists in memory), before writing any of it
    namespace fs = std::filesystem;
    fs::path existing = fs::absolute(out);
    std::error_code error;
    while (!fs::exists(existing, error) && existing.has_relative_path()) existing = existing.parent_path();
    const fs::space_info space = fs::space(existing, error);
    const double needed = tessera::synthetic_world_bytes(options);
    const tessera::Index items = tessera::synthetic_item_count(options);
    tessera::check(error || needed <= static_cast<double>(space.available), "--out ", out,
                   ": --per-combination ", options.samples_per_combination, " and --image-size ",
                   options.image_size, " make ", items, " items, up to ", apps::bytes_text(needed),
                   " of files, but ", existing.string(), " has ",
                   apps::bytes_text(static_cast<double>(space.available)), " free");
    tessera::check(512 * static_cast<double>(items) <= static_cast<double>(apps::usable_memory_bytes()),
                   "--per-combination ", options.samples_per_combination, ": the lists of ", items,
                   " items need about ", apps::bytes_text(512 * static_cast<double>(items)), " of memory, more than the ",
                   apps::bytes_text(static_cast<double>(apps::usable_memory_bytes())),
                   " this process can still allocate");
    apps::Processing now("--out " + out, out);
    const auto summary = tessera::write_synthetic_world(out, options);
    std::cout << "wrote " << summary.train + summary.heldout << " samples to " << out << ": "
              << summary.train << " train, " << summary.heldout << " heldout ("
              << options.heldout_combinations
              << " of 48 color-shape-motion combinations held out, seed " << options.seed
              << ")\n";
  });
}
