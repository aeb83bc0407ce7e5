// tessera-train: train a multimodal encoder with a contrastive loss on a directory of paired
// data, and write a model directory that tessera-encode loads (docs/training.md#tessera-train).
//
//   tessera-train --data DIR --config CONFIG.json --out MODEL_DIR [--steps N] [--pairs N]
//       [--lr X] [--min-lr X] [--warmup N] [--weight-decay X] [--beta2 X] [--clip X]
//       [--schedule uniform|progressive [--stages A,B]] [--seed N] [--threads N]
//       [--temperature T] [--hard-negatives ATTR[,ATTR...] [--run-length N]]
//       [--checkpoint-every N] [--resume] [--stop-at STEP]
//   tessera-train --manifest FILE --csv-img-key K --csv-caption-key K ... (your own data, docs/data.md)
//   tessera-train ... --init MODEL_DIR [--freeze image,...]  (fine-tuning, instead of --config)
//   tessera-train ... --init MODEL_DIR --add-tower audio[=TOWER.json]  (binding a new modality)
//
// --init starts from a model directory instead of a new model: tessera's own (its tokenizer
// kept; --freeze names its frozen parts: a modality's inputs, the trunk), or a pretrained CLIP (transformers, open_clip), ImageBind or
// tessera_towers model, whose towers train but for the parts --freeze names (a tower, its
// backbone, LiT's "backbones", logit_scale) and which is written back into MODEL_DIR as the
// same kind of directory (docs/pretrained.md, "Fine-tuning"). --add-tower gives a pretrained
// model a new tower (ImageBind's binding: a new modality trained against the frozen towers)
// and writes it as a tessera_towers directory.
//
// DIR is laid out as tessera-synth writes it (docs/synthetic-data.md): train.jsonl and
// heldout.jsonl (one item per line: "id", "caption", and "image", "audio", "video" paths
// relative to DIR; any of them may be missing) and captions.txt (the tokenizer's corpus).
// CONFIG.json is the model's config (SPEC 1); text.vocab_size is the size the tokenizer is
// trained to.
//
//   1. a BPE tokenizer trained on captions.txt (vocab.json + merges.txt in MODEL_DIR)
//   2. every item's views through the model's front ends, once, in parallel
//   3. steps of PairSampler batches (every pair kind the data and the model have, in equal
//      proportions, or the progressive curriculum: text-image alone before step A, text-audio
//      and text-video joining, all kinds from step B; A, B = steps/4, steps/2 unless given;
//      with --hard-negatives, in runs of --run-length items alike in the named attributes),
//      one InfoNCE per kind weighted by its share of the batch, AdamW with warmup + cosine decay, gradient clipping; a progress bar on
//      stderr; MODEL_DIR/checkpoint.safetensors every --checkpoint-every steps, which
//      --resume continues from (the result equals an uninterrupted run); --stop-at STEP
//      ends the run early, after STEP steps and a checkpoint (training in several sittings)
//   4. MODEL_DIR/config.json + model.safetensors, loss.png (the loss curve) and
//      training.json (the options, every step's loss, the retrieval table)
//   5. retrieval on the held-out items, printed as a table
//
// Before any of it: the options are checked against the data and the memory they imply
// (--pairs against the items of each pair kind, --steps against what a checkpoint can hold;
// the batch's memory, once the views are loaded, against the memory the process may use);
// MODEL_DIR is locked against a second tessera-train (MODEL_DIR/.tessera-train.lock); --out
// may not be --data, nor hold one of the inputs (--config, the data's files), nor another
// run's checkpoint. docs/programs.md.
//
// Under `mpirun -np N` (a build with MPI: tessera::mpi), each rank loads and trains its share of
// every step's pairs on its own threads (train/distributed_step.hpp: the same update as one
// process on the whole batch, to float rounding); rank 0 alone prints, locks MODEL_DIR and
// writes to it (the other ranks read the tokenizer and, with --resume, the checkpoint from it:
// one machine or a shared file system). --resume takes any N. A rank that fails or dies ends
// every rank (train/distributed.hpp). docs/training.md, "Many processes".
//
// Exit statuses and errors as every program's (cli.hpp, docs/programs.md).

#include <tessera/tessera.hpp>
#include <tessera/tokenize/bpe_trainer.hpp>
#include <tessera/tokenize/files.hpp>
#include <tessera/io/manifest.hpp>
#include <tessera/train/checkpoint.hpp>
#include <tessera/train/distributed.hpp>
#include <tessera/train/distributed_step.hpp>
#include <tessera/train/grad_cache.hpp>
#include <tessera/train/loader.hpp>
#include <tessera/train/retrieval.hpp>
#include <tessera/train/sampler.hpp>
#include <tessera/train/step.hpp>

#include "cli.hpp"
#include "loss_plot.hpp"
#include "progress.hpp"

#include <nlohmann/json.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace fs = std::filesystem;
using tessera::Index;

namespace apps = tessera::apps;

using tessera::Modality;
using tessera::modality_index;
using tessera::modality_name;

constexpr const auto& attribute_names = tessera::synthetic_attribute_names;

// The limits tessera-train checks its options against before allocating (docs/programs.md).
struct TrainLimits {
  // A checkpoint keeps every step's loss as text in its safetensors header, at most 16 bytes
  // a step ("-1.23456789e-05 ", join_losses' 9 digits), and readers refuse a header over
  // SafetensorsLimits::max_header_bytes (100 MB). Half of that for the losses leaves room for
  // the tensors' entries: 3,125,000 steps.
  static constexpr std::int64_t bytes_per_loss = 16;
  static std::int64_t max_steps() {
    return static_cast<std::int64_t>(tessera::SafetensorsLimits{}.max_header_bytes / 2) / bytes_per_loss;
  }
};

// The files tessera-train writes into MODEL_DIR.
constexpr std::array<const char*, 7> output_files{
    "config.json", "model.safetensors", "vocab.json", "merges.txt", "checkpoint.safetensors",
    "loss.png", "training.json"};
constexpr const char* lock_file = ".tessera-train.lock";

struct Options {
  fs::path data, config, out;
  // --manifest instead of --data: the user's own CSV/TSV/JSONL (docs/data.md)
  fs::path manifest, heldout_manifest, tokenizer;
  std::string manifest_format;  // csv | jsonl; empty: from the extension
  // --init instead of --config: fine-tune a model directory (tessera's own or a pretrained
  // one, docs/pretrained.md), freezing the parts --freeze names
  fs::path init;
  std::string freeze;
  // --add-tower MODALITY[=TOWER.json]: a new tower for a pretrained --init (add_tower)
  std::vector<std::string> add_towers;
  double heldout_fraction = 0.05;  // of --manifest, when no --heldout-manifest
  std::string text_key, image_key, audio_key, video_key, label_key, id_key, separator;
  std::vector<std::string> templates{"{}"};  // zero-shot classes' texts, with --label-key
  // the streaming loader (results do not depend on these)
  bool checkpoint_layers = false;  // recompute each layer in backward (same result, less memory)
  std::int64_t micro_batch = 0;    // > 0: GradCache over micro-batches of this many samples
  int workers = 2;
  std::int64_t prefetch = 2;
  double max_bad_fraction = 0.05;
  std::int64_t steps = 1000;
  int pairs = 48;  // pairs per batch
  double lr = 1e-3, min_lr = 1e-4, weight_decay = 0.1, clip = 1.0;
  double beta2 = 0.98;  // AdamW's second-moment decay (CLIP's 0.98: steadier early steps than 0.999)
  std::int64_t warmup = 50;
  std::string schedule = "uniform";
  std::vector<std::int64_t> stages;  // --stages A,B as given (none: steps/4, steps/2)
  std::int64_t audio_video_from = 0, all_pairs_from = 0;  // the progressive stages, A and B
  std::uint64_t seed = 1;
  int threads = 0;
  std::int64_t checkpoint_every = 250;
  bool resume = false;
  std::int64_t stop_at = 0;  // > 0: stop after this many steps, with a checkpoint to resume
  double temperature = 0.07;  // the initial softmax temperature: logit_scale = ln(1 / temperature)
  std::vector<std::string> hard_negative_names;  // --hard-negatives as given
  std::vector<std::size_t> hard_negatives;  // attributes (indices into attribute_names)
  std::int64_t run_length = 4;              // items alike in them per run, with hard_negatives

  bool from_manifest() const { return !manifest.empty(); }

  tessera::ManifestOptions manifest_options() const {
    tessera::ManifestOptions m;
    if (manifest_format == "csv") m.format = tessera::ManifestFormat::csv;
    if (manifest_format == "jsonl") m.format = tessera::ManifestFormat::jsonl;
    // errors name these options as a user of tessera-train types them
    m.option_names = {{"text_key", "--text-key"},   {"image_key", "--image-key"},
                      {"audio_key", "--audio-key"}, {"video_key", "--video-key"},
                      {"label_key", "--label-key"}, {"id_key", "--id-key"},
                      {"format", "--manifest-format"}};
    if (!separator.empty()) m.separator = separator == "\\t" ? '\t' : separator[0];
    m.text_key = text_key;
    m.image_key = image_key;
    m.audio_key = audio_key;
    m.video_key = video_key;
    m.label_key = label_key;
    m.id_key = id_key;
    return m;
  }

  // What a checkpoint must agree on to be resumed.
  nlohmann::json run() const {
    const auto absolute = [](const fs::path& p) { return fs::absolute(p).lexically_normal().string(); };
    if (from_manifest()) {
      nlohmann::json r = run_options();
      r["manifest"] = absolute(manifest);
      r["keys"] = {text_key, image_key, audio_key, video_key, label_key, id_key, separator, manifest_format};
      if (!heldout_manifest.empty()) r["heldout_manifest"] = absolute(heldout_manifest);
      else r["heldout_fraction"] = heldout_fraction;
      if (!tokenizer.empty()) r["tokenizer"] = absolute(tokenizer);
      return r;
    }
    nlohmann::json r = {{"data", absolute(data)}};
    r.update(run_options());
    return r;
  }

  nlohmann::json run_options() const {
    const auto absolute = [](const fs::path& p) { return fs::absolute(p).lexically_normal().string(); };
    return {{"init", init.empty() ? std::string() : absolute(init)}, {"freeze", freeze},
            {"add_tower", add_towers}, {"steps", steps},
            {"pairs", pairs}, {"lr", lr}, {"min_lr", min_lr}, {"warmup", warmup},
            {"weight_decay", weight_decay}, {"beta2", beta2}, {"clip", clip}, {"schedule", schedule},
            {"stages", {audio_video_from, all_pairs_from}}, {"temperature", temperature},
            {"hard_negatives", hard_negatives}, {"run_length", run_length}, {"seed", seed},
            {"micro_batch", micro_batch}};
  }
};

void add_options(CLI::App& app, Options& o) {
  auto* data = app.add_option("--data", o.data, "the data directory, as tessera-synth writes it (train.jsonl, "
                                   "heldout.jsonl, captions.txt); or --manifest")
      ->type_name("DIR");
  auto* manifest = app.add_option("--manifest", o.manifest,
                 "the training items: a CSV, TSV or JSONL manifest (docs/data.md) whose columns "
                 "--text-key, --image-key, --audio-key, --video-key name; instead of --data")
      ->type_name("FILE")->excludes(data);
  data->excludes(manifest);
  app.add_option("--heldout-manifest", o.heldout_manifest,
                 "the held-out items, a manifest of the same columns (default: --heldout-fraction of --manifest)")
      ->type_name("FILE")->needs(manifest);
  app.add_option("--heldout-fraction", o.heldout_fraction,
                 "the share of --manifest's items held out for evaluation, chosen by a hash of "
                 "their ids and --seed (docs/data.md)")
      ->check(CLI::Range(0.0, 1.0))->type_name("X")->needs(manifest);
  app.add_option("--text-key,--csv-caption-key", o.text_key, "the manifest's caption column (open_clip: title)")
      ->type_name("NAME")->needs(manifest);
  app.add_option("--image-key,--csv-img-key", o.image_key, "the manifest's image-file column (open_clip: filepath)")
      ->type_name("NAME")->needs(manifest);
  app.add_option("--audio-key", o.audio_key, "the manifest's audio-file (WAV) column")
      ->type_name("NAME")->needs(manifest);
  app.add_option("--video-key", o.video_key, "the manifest's video-file column")
      ->type_name("NAME")->needs(manifest);
  app.add_option("--label-key", o.label_key,
                 "the manifest's class-label column: zero-shot accuracy on the held-out items")
      ->type_name("NAME")->needs(manifest);
  app.add_option("--id-key", o.id_key,
                 "the manifest's item-id column (rows of one id are one item for retrieval and the "
                 "split; default: the line number)")
      ->type_name("NAME")->needs(manifest);
  app.add_option("--separator,--csv-separator", o.separator,
                 "the CSV field separator: one ASCII character, or \\t (default: tab for .tsv, comma otherwise)")
      ->type_name("C")->needs(manifest);
  app.add_option("--template", o.templates,
                 "with --label-key: a class's texts, {} standing for its label (CLIP's \"a photo of a {}.\"); may repeat")
      ->type_name("TEXT")->needs(manifest)->take_all();
  app.add_option("--tokenizer", o.tokenizer,
                 "a directory with vocab.json and merges.txt to use (default: one trained on the "
                 "training captions)")
      ->type_name("DIR")->needs(manifest);
  app.add_flag("--checkpoint-layers", o.checkpoint_layers,
               "keep only each transformer layer's input for backward and recompute the rest "
               "(about 10x less trace memory, a third more time; the same result)");
  app.add_option("--micro-batch", o.micro_batch,
                 "contrastive gradient caching (GradCache): the batch's embeddings first, then "
                 "forward and backward again in micro-batches of N samples, so memory is a "
                 "micro-batch's and the gradient the whole batch's (to rounding; 0: no caching)")
      ->check(apps::integer_in<std::int64_t>(0, 200000))->type_name("N");
  app.add_option("--workers", o.workers, "threads that load and preprocess the next batches (0: "
                                        "the training thread loads them)")
      ->check(apps::integer_in(0, tessera::LoaderOptions::max_workers))->type_name("N");
  app.add_option("--prefetch", o.prefetch, "batches loaded ahead of the one training")
      ->check(apps::integer_in<std::int64_t>(1, 64))->type_name("N");
  app.add_option("--max-bad-fraction", o.max_bad_fraction,
                 "stop when more than this share of the items drawn cannot be loaded (a broken "
                 "file, an empty caption), counted from the 100th item on")
      ->check(CLI::Range(0.0, 1.0))->type_name("X");
  app.add_option("--config", o.config, "the model's config, to train a new model (text.vocab_size: the size "
                                       "the tokenizer is trained to)")
      ->type_name("CONFIG.json");
  app.add_option("--init", o.init, "fine-tune this model instead: tessera's own (a tessera-train MODEL_DIR) or a "
                                   "pretrained one (CLIP from transformers or open_clip, ImageBind, tessera_towers), "
                                   "written back as the same kind of directory")
      ->type_name("MODEL_DIR")->check(CLI::ExistingDirectory);
  app.add_option("--freeze", o.freeze, "with --init: the parts that do not train, comma-separated. A pretrained "
                                       "model's: a tower (text, image, audio, video), a tower's backbone "
                                       "(image.backbone: all but its projection), towers, backbones (LiT: only the "
                                       "projections train), logit_scale. tessera's own: a modality's inputs (text, "
                                       "image, audio, video), trunk, backbones (all but the projection), logit_scale")
      ->type_name("LIST");
  app.add_option("--add-tower", o.add_towers,
                 "with a pretrained --init: a new tower for a modality the model lacks, trained against the model's "
                 "towers (frozen, with logit_scale, unless --freeze says otherwise): audio (ImageBind's audio "
                 "tower) or MODALITY=TOWER.json (a tessera_towers tower's keys); the model is written as a "
                 "tessera_towers directory")
      ->type_name("MODALITY[=TOWER.json]");
  app.add_option("--manifest-format", o.manifest_format, "the manifest's format, when its extension does not say")
      ->check(CLI::IsMember({"csv", "jsonl"}))->type_name("csv|jsonl");
  app.add_option("--out", o.out, "the model directory to write")->required()->type_name("MODEL_DIR");
  app.add_option("--steps", o.steps, "training steps")
      ->check(apps::integer_in<std::int64_t>(1, 100000000))->type_name("N");
  app.add_option("--pairs", o.pairs, "pairs per batch")
      ->check(apps::integer_in(1, 100000))->type_name("N");
  app.add_option("--lr", o.lr, "the peak learning rate")->check(apps::positive_number)->type_name("X");
  app.add_option("--min-lr", o.min_lr, "the learning rate at the end of the cosine decay")
      ->check(apps::non_negative_number)->type_name("X");
  app.add_option("--warmup", o.warmup, "steps of linear warmup")
      ->check(apps::integer_in<std::int64_t>(0, 100000000))->type_name("N");
  app.add_option("--weight-decay", o.weight_decay, "AdamW's decoupled weight decay")
      ->check(apps::non_negative_number)->type_name("X");
  app.add_option("--beta2", o.beta2, "AdamW's second-moment decay")
      ->check(apps::non_negative_number)->check(CLI::Range(0.0, 1.0))->type_name("X");
  app.add_option("--clip", o.clip, "the gradient norm clipped to (0: no clipping)")
      ->check(apps::non_negative_number)->type_name("X");
  app.add_option("--schedule", o.schedule,
                 "uniform: every pair kind in equal proportions; progressive: text-image alone "
                 "before step A, text-audio and text-video joining, all kinds from step B")
      ->check(CLI::IsMember({"uniform", "progressive"}))->type_name("KIND");
  app.add_option("--stages", o.stages, "the progressive schedule's steps A,B (default: steps/4, steps/2)")
      ->delimiter(',')->expected(2)->allow_extra_args(false)->take_last()
      ->check(apps::integer_in<std::int64_t>(1, 100000000))->type_name("A,B")->default_str("");
  app.add_option("--seed", o.seed, "the random seed (weights, batches)")
      ->check(apps::integer<std::uint64_t>())->type_name("N");
  apps::add_threads_option(app, o.threads);
  app.add_option("--temperature", o.temperature, "the initial softmax temperature")
      ->check(apps::positive_number)->type_name("T");
  app.add_option("--hard-negatives", o.hard_negative_names,
                 "batches in runs of items alike in these attributes (color, shape, position, motion)")
      ->delimiter(',')->allow_extra_args(false)->take_all()
      ->check(CLI::Validator(
          [](std::string& name) -> std::string {
            const bool known = std::find(attribute_names.begin(), attribute_names.end(), name) !=
                               attribute_names.end();
            return known ? "" : "unknown attribute '" + name +
                                    "' (expected some of color, shape, position, motion)";
          },
          ""))
      ->type_name("ATTR[,ATTR...]")->default_str("");
  app.add_option("--run-length", o.run_length, "items alike per run, with --hard-negatives")
      ->check(apps::integer_in<std::int64_t>(1, 100000))->type_name("N");
  app.add_option("--checkpoint-every", o.checkpoint_every,
                 "write MODEL_DIR/checkpoint.safetensors every N steps")
      ->check(apps::integer_in<std::int64_t>(1, 100000000))->type_name("N");
  app.add_flag("--resume", o.resume, "continue from MODEL_DIR/checkpoint.safetensors, if there is one");
  app.add_option("--stop-at", o.stop_at, "stop after STEP steps, with a checkpoint to --resume")
      ->check(apps::integer_in<std::int64_t>(1, 100000000))->type_name("STEP")->default_str("");
}

// What the options mean together; a usage error when they contradict each other.
void finish(Options& o) {
  using tessera::detail::concat;
  apps::require(!o.data.empty() || o.from_manifest(), "--data or --manifest is required");
  apps::require(o.config.empty() != o.init.empty(),
                o.init.empty() ? "--config (a new model) or --init (a model to fine-tune) is required"
                               : "--config and --init: give one, --init's model has its own config");
  apps::require(o.freeze.empty() || !o.init.empty(), "--freeze needs --init: a new model trains whole");
  apps::require(o.add_towers.empty() || !o.init.empty(),
                "--add-tower needs a pretrained --init: a new model's modalities are its --config's");
  if (o.from_manifest()) {
    apps::require(!o.text_key.empty() || !o.image_key.empty() || !o.audio_key.empty() ||
                      !o.video_key.empty(),
                  "--manifest " + o.manifest.string() +
                      ": name its columns: at least one of --text-key, --image-key, --audio-key, --video-key");
    apps::require(o.separator.empty() || o.separator == "\\t" ||
                      (o.separator.size() == 1 && static_cast<unsigned char>(o.separator[0]) < 0x80),
                  "--separator '" + o.separator + "': expected one ASCII character or \\t");
    apps::require(o.hard_negative_names.empty(),
                  "--hard-negatives needs the synthetic world's attributes: use it with --data");
    for (const auto& t : o.templates) {
      apps::require(t.find("{}") != std::string::npos, "--template '" + t + "': expected {} where the label goes");
    }
  }
  apps::require(o.min_lr <= o.lr, concat("--min-lr ", o.min_lr, " is above --lr ", o.lr));
  apps::require(o.warmup <= o.steps, concat("--warmup ", o.warmup, " is more than --steps ", o.steps));
  apps::require(o.steps <= TrainLimits::max_steps(),
                concat("--steps ", o.steps, ": a checkpoint keeps every step's loss (up to ",
                       TrainLimits::bytes_per_loss, " bytes each in its header, which readers cap at ",
                       tessera::SafetensorsLimits{}.max_header_bytes, " bytes), so at most ",
                       TrainLimits::max_steps(), " steps"));
  apps::require(o.stages.empty() || o.stages.size() == 2,
                concat("--stages expects A,B (two steps), got ", o.stages.size(), " value(s)"));
  if (o.stages.empty()) {
    o.stages = {std::max<std::int64_t>(1, o.steps / 4), std::max<std::int64_t>(2, o.steps / 2)};
  }
  for (const std::string& name : o.hard_negative_names) {  // each one checked by its validator
    const auto at = std::find(attribute_names.begin(), attribute_names.end(), name);
    o.hard_negatives.push_back(static_cast<std::size_t>(at - attribute_names.begin()));
  }
  o.audio_video_from = o.stages[0];
  o.all_pairs_from = o.stages[1];
  apps::require(o.audio_video_from < o.all_pairs_from,
                concat("--stages ", o.audio_video_from, ",", o.all_pairs_from,
                       ": the second step must come after the first"));
}

// ---- The data -------------------------------------------------------------------------------

// One item: its caption and files, its attributes when the data has them (the synthetic
// world's color, shape, position, motion) and its views once loaded (one Sample per modality).
struct Item {
  std::string id, caption;
  bool has_text = false;  // a caption was given (it may still be empty: a bad item, counted)
  std::optional<std::string> label;  // a manifest's --label-key
  std::string where;  // "DIR/train.jsonl:3", its line
  // by modality_index(): the text entry is unused (the caption is the text)
  std::array<std::optional<fs::path>, tessera::num_modalities> files;
  std::array<std::string, 4> attributes;  // color, shape, position, motion ("" if none)
  std::array<std::optional<tessera::Sample<float>>, tessera::num_modalities> views;
};

std::vector<Item> read_items(const fs::path& data, const char* list) {
  const fs::path file = data / list;
  apps::Processing now(file.string());  // out of memory on a huge list, say
  // The whole list, within ReadLimits::any_file (256 MiB; a million items are about 200 MB):
  // a larger file is refused from its size, one without an end (/dev/zero) at the limit.
  std::istringstream in(tessera::read_file(file, {}, tessera::ReadLimits::any_file));
  std::vector<Item> items;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = tessera::detail::concat(file.string(), ":", number);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      tessera::fail(where, ": not a JSON object: ", e.what());
    }
    tessera::check(j.is_object(), where, ": expected a JSON object per line");
    const auto text = [&](const char* key) -> std::optional<std::string> {
      if (!j.contains(key)) return std::nullopt;
      tessera::check(j[key].is_string(), where, ": \"", key, "\" must be a string");
      return j[key].get<std::string>();
    };
    Item item;
    item.where = where;
    item.id = text("id").value_or(tessera::detail::concat(list, ":", number));
    item.caption = text("caption").value_or("");
    item.has_text = !item.caption.empty();
    for (Modality m : {Modality::image, Modality::audio, Modality::video}) {
      if (auto path = text(modality_name(m))) item.files[modality_index(m)] = data / *path;
    }
    for (std::size_t a = 0; a < 4; ++a) item.attributes[a] = text(attribute_names[a]).value_or("");
    items.push_back(std::move(item));
  }
  tessera::check(!items.empty(), file.string(), ": no items");
  return items;
}

// The items of a manifest (docs/data.md), as tessera-train's items: no attributes.
std::vector<Item> manifest_items(std::vector<tessera::ManifestItem> rows, const fs::path& file) {
  std::vector<Item> items;
  items.reserve(rows.size());
  for (tessera::ManifestItem& row : rows) {
    Item item;
    item.id = std::move(row.id);
    item.has_text = row.text.has_value();
    item.caption = std::move(row.text).value_or("");
    item.label = std::move(row.label);
    item.where = tessera::detail::concat(file.string(), ":", row.line);
    for (Modality m : {Modality::image, Modality::audio, Modality::video}) {
      if (const std::string* path = row.file(m)) item.files[modality_index(m)] = *path;
    }
    items.push_back(std::move(item));
  }
  return items;
}

// The training and held-out items of --manifest: a second manifest, or a share of the first.
std::pair<std::vector<Item>, std::vector<Item>> read_manifests(const Options& o) {
  const tessera::ManifestOptions options = o.manifest_options();
  tessera::Manifest train = [&] {
    apps::Processing now("--manifest " + o.manifest.string(), o.manifest.string());
    return tessera::read_manifest(o.manifest, options);
  }();
  if (!o.heldout_manifest.empty()) {
    apps::Processing now("--heldout-manifest " + o.heldout_manifest.string(), o.heldout_manifest.string());
    tessera::Manifest heldout = tessera::read_manifest(o.heldout_manifest, options);
    return {manifest_items(std::move(train.items), o.manifest),
            manifest_items(std::move(heldout.items), o.heldout_manifest)};
  }
  auto split = tessera::split_manifest(std::move(train.items), o.heldout_fraction, o.seed);
  tessera::check(!split.train.empty(), o.manifest.string(), ": --heldout-fraction ", o.heldout_fraction,
                 " leaves no training item");
  return {manifest_items(std::move(split.train), o.manifest),
          manifest_items(std::move(split.held_out), o.manifest)};
}

// One view of an item through the front ends, or why the item cannot give it.
// Front: tessera::FrontEnds (tessera's own model) or tessera::TowerFrontEnds (a pretrained one).
template <class Front>
tessera::LoadResult<tessera::Sample<float>> load_view(const Item& item, Modality m, const Front& front) {
  std::optional<tessera::RawInput> input;
  if (m == Modality::text) {
    if (item.caption.find_first_not_of(" \t\n\r\f\v") == std::string::npos) {
      return tessera::BadItem{"empty caption"};
    }
    input = {"text", item.caption, {}};
  } else {
    input = {modality_name(m), item.files[modality_index(m)]->string(), {}};
  }
  return front.load(std::span<const tessera::RawInput>(&*input, 1));
}

// The views an item will have once loaded: those its line names that the model takes.
// ModelConfig: tessera::Config or tessera::TowerModelConfig.
template <class ModelConfig>
tessera::ModalitySet declared_modalities(const Item& item, const ModelConfig& config) {
  tessera::ModalitySet set{};
  for (Modality m : tessera::builtin_modalities) {
    const std::size_t at = modality_index(m);
    const bool given = m == Modality::text ? item.has_text : item.files[at].has_value();
    set[at] = given && config.has(m);
  }
  return set;
}

// The held-out items' views, in parallel; an item with a view that cannot be loaded is left
// out of the evaluation, with one line naming it and why. Returns how many were left out.
template <class Front, class ModelConfig>
std::size_t load_views(std::vector<Item>& items, const Front& front, const ModelConfig& config) {
  std::vector<std::string> errors(items.size());
#pragma omp parallel for schedule(dynamic)
  for (std::size_t i = 0; i < items.size(); ++i) {
    Item& item = items[i];
    try {
      for (Modality m : tessera::builtin_modalities) {
        if (!declared_modalities(item, config)[modality_index(m)]) continue;
        auto view = load_view(item, m, front);
        if (auto* bad = std::get_if<tessera::BadItem>(&view)) {
          errors[i] = bad->reason;
          break;
        }
        item.views[modality_index(m)] = std::move(std::get<tessera::Sample<float>>(view));
      }
    } catch (const std::exception& e) {  // no exception may leave an OpenMP loop
      errors[i] = apps::detail::explain(e);
    }
  }
  std::size_t kept = 0, left_out = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (!errors[i].empty()) {
      tessera::warn(items[i].where, " (item ", items[i].id, "): left out of the evaluation: ", errors[i]);
      ++left_out;
      continue;
    }
    if (kept != i) items[kept] = std::move(items[i]);
    ++kept;
  }
  items.resize(kept);
  return left_out;
}


// ---- Sizes and safety, before anything is written -------------------------------------------

// The file that lists the training items.
fs::path train_list(const Options& o) { return o.from_manifest() ? o.manifest : o.data / "train.jsonl"; }

// --pairs against the data: each pair kind's share of a batch must not exceed the items that
// have both its modalities (PairSampler's bound); said in the options' words.
void check_pairs(const Options& o, const std::vector<tessera::ModalitySet>& sets,
                 const std::vector<tessera::SamplerStage>& stages) {
  const tessera::Index most = tessera::PairSampler::max_pairs_per_batch(sets, stages);
  if (o.pairs <= most) return;
  std::string kinds;
  for (int k = 0; k < tessera::pair_kind_count; ++k) {
    const auto [a, b] = tessera::pair_kinds[static_cast<std::size_t>(k)];
    const auto n = std::count_if(sets.begin(), sets.end(), [&](const tessera::ModalitySet& s) {
      return s[modality_index(a)] && s[modality_index(b)];
    });
    if (n > 0) kinds += tessera::detail::concat(kinds.empty() ? "" : ", ", n, " ", tessera::pair_kind_name(k));
  }
  tessera::fail("--pairs ", o.pairs, " asks for ", o.pairs, " pairs per step, shared among the pair kinds (--schedule ",
                o.schedule, "); ", train_list(o).string(), " has ", sets.size(),
                " items (", kinds, "), and a kind's share of a batch cannot exceed its items, so at most --pairs ",
                most);
}

// (st_dev, st_ino) of `file`, if it exists.
std::optional<std::pair<dev_t, ino_t>> identity(const fs::path& file) {
  struct stat status {};
  if (::stat(file.c_str(), &status) != 0) return std::nullopt;
  return std::pair{status.st_dev, status.st_ino};
}

// --out may not be --data, nor name (through the files written into it) one of the inputs:
// --config, the data's lists and captions, and (once read) the items' files.
void refuse_out_over_inputs(const Options& o) {
  std::error_code error;
  std::vector<fs::path> inputs;
  if (!o.init.empty()) {
    // the model is written back beside the run's files: never over the model it starts from
    const fs::path from = fs::weakly_canonical(o.init, error), to = fs::weakly_canonical(o.out, error);
    const auto [in_from, in_to] = std::mismatch(from.begin(), from.end(), to.begin(), to.end());
    const bool inside = in_from == from.end(), holds = in_to == to.end();
    tessera::check(!inside && !holds, "--out ", o.out.string(), ": ",
                   inside && holds ? "is" : inside ? "is inside" : "holds",
                   " the --init directory ", o.init.string(), "; write the fine-tuned model elsewhere");
    for (const auto& entry : fs::directory_iterator(o.init)) inputs.push_back(entry.path());
  } else {
    inputs.push_back(o.config);
  }
  if (o.from_manifest()) {
    inputs.push_back(o.manifest);
    if (!o.heldout_manifest.empty()) inputs.push_back(o.heldout_manifest);
    if (!o.tokenizer.empty()) {
      tessera::check(!(fs::exists(o.out, error) && fs::equivalent(o.out, o.tokenizer, error)), "--out ",
                     o.out.string(), ": is the --tokenizer directory; write the model elsewhere");
      inputs.push_back(o.tokenizer / "vocab.json");
      inputs.push_back(o.tokenizer / "merges.txt");
    }
  } else {
    tessera::check(!(fs::exists(o.out, error) && fs::equivalent(o.out, o.data, error)), "--out ",
                   o.out.string(), ": is the --data directory ", o.data.string(),
                   "; write the model elsewhere");
    for (const char* name : {"train.jsonl", "heldout.jsonl", "captions.txt"}) inputs.push_back(o.data / name);
  }
  for (const char* name : output_files) apps::refuse_output_over_inputs(o.out / name, "--out", inputs);
}

void refuse_out_over_item_files(const Options& o, const std::vector<Item>& items) {
  std::set<std::pair<dev_t, ino_t>> written;
  for (const char* name : output_files) {
    if (auto id = identity(o.out / name)) written.insert(*id);
  }
  if (written.empty()) return;  // a fresh directory: nothing of it can be an input
  for (const Item& item : items) {
    for (const auto& file : item.files) {
      if (!file) continue;
      const auto id = identity(*file);
      tessera::check(!id || !written.contains(*id), "--out ", o.out.string(), ": would write over ",
                     file->string(), ", an input (", item.where, "); write the model elsewhere");
    }
  }
}

// A checkpoint in MODEL_DIR must come from this very run: resumed with --resume, or overwritten
// by the same run started again; another run's is refused (with or without --resume), so a
// stopped run is never lost. Returns whether to resume.
bool check_checkpoint(const Options& o, const fs::path& checkpoint, bool leader) {
  std::error_code error;
  if (!fs::exists(checkpoint, error)) {
    if (o.resume && leader) std::printf("no checkpoint in %s: starting at step 0\n", o.out.string().c_str());
    return false;
  }
  // resumed: a tessera checkpoint whose checksum holds; overwritten: any file that is intact
  const auto file = o.resume ? tessera::open_checkpoint(checkpoint)
                             : tessera::SafetensorsFile::open(checkpoint);
  const auto& metadata = file.metadata();
  const auto run = metadata.find("user.run");
  tessera::check(run != metadata.end(), checkpoint.string(), ": not written by tessera-train",
                 o.resume ? "" : "; this run would overwrite it: write elsewhere");
  // A damaged entry parses as `discarded`, which equals no run.
  const auto saved_run = nlohmann::json::parse(run->second, nullptr, false);
  tessera::check(saved_run == o.run(), checkpoint.string(), ": written by another run (", run->second,
                 "); this run is ", o.run().dump(),
                 o.resume ? "" : "; it would overwrite that run's checkpoint: resume it with its options, or write elsewhere");
  return o.resume;
}

// The largest view of modality m the front ends can make for this config: its tokens in the
// packed batch and its bytes as a Sample. The views are loaded as training goes (the
// streaming loader), so the bound comes from the config (max_tokens), not from the files.
std::pair<tessera::Index, double> largest_view(const tessera::Config& config, Modality m) {
  const auto per_frame = [&] { return config.image->channels * config.image->size * config.image->size; };
  switch (m) {
    case Modality::text: return {config.text->max_tokens, 8.0 * static_cast<double>(config.text->max_tokens)};
    case Modality::image: return {config.image->num_patches(), 4.0 * static_cast<double>(per_frame())};
    case Modality::audio:
      return {config.audio->max_tokens,
              4.0 * static_cast<double>(config.audio->max_tokens * config.audio->patch_dim())};
    case Modality::video: {
      const tessera::Index frames = config.video->max_tokens / std::max<tessera::Index>(1, config.image->num_patches()) *
                                    config.video->tubelet;
      return {config.video->max_tokens, 4.0 * static_cast<double>(frames * per_frame())};
    }
  }
  return {0, 0};
}

// The memory of the largest batch the sampler can draw (each kind's pairs taken as the
// largest views of its modalities), against the memory the process may use: refused before
// the first step allocates it. A view's bytes count (prefetch + 3) times: in the loader's
// window of prefetch + 1 batches, copied into the batch, and its patches kept by the trace.
void check_batch_memory(const Options& o, const tessera::Config& config, const tessera::PairSampler& sampler) {
  std::array<tessera::Index, 4> tokens{};  // the largest view of each modality
  std::array<double, 4> bytes{};
  for (Modality m : tessera::builtin_modalities) {
    if (!config.has(m)) continue;
    const auto [t, b] = largest_view(config, m);
    tokens[modality_index(m)] = t;
    bytes[modality_index(m)] = b * static_cast<double>(o.prefetch + 3);
  }
  double most = 0;
  for (const std::int64_t step : {std::int64_t{0}, o.audio_video_from, o.all_pairs_from}) {
    const auto& counts = sampler.counts(step);
    tessera::Index batch_tokens = 0, largest = 0;
    double batch_bytes = 0;
    for (int k = 0; k < tessera::pair_kind_count; ++k) {
      const auto [a, b] = tessera::pair_kinds[static_cast<std::size_t>(k)];
      const tessera::Index n = counts[static_cast<std::size_t>(k)];
      batch_tokens += n * (tokens[modality_index(a)] + tokens[modality_index(b)]);
      batch_bytes += static_cast<double>(n) * (bytes[modality_index(a)] + bytes[modality_index(b)]);
      largest = std::max(largest, n);
    }
    // with --micro-batch M, the trace is that of M samples of the batch's largest views
    tessera::Index traced_tokens = batch_tokens;
    if (o.micro_batch > 0 && o.micro_batch < 2 * o.pairs) {
      traced_tokens = o.micro_batch * *std::max_element(tokens.begin(), tokens.end());
    }
    most = std::max(most, batch_bytes + tessera::contrastive_step_bytes<float>(
                                            config, 2 * o.pairs, traced_tokens, largest, o.checkpoint_layers));
  }
  const auto usable = static_cast<double>(apps::usable_memory_bytes());
  tessera::check(most <= usable, "--pairs ", o.pairs, ": a batch of ", o.pairs, " pairs (", 2 * o.pairs,
                 " views of these items and this model) needs about ", apps::bytes_text(most),
                 ", more than the ", apps::bytes_text(usable),
                 " this process can still allocate (of the physical memory, or of ulimit -v); at most about --pairs ",
                 std::max<std::int64_t>(1, static_cast<std::int64_t>(static_cast<double>(o.pairs) * usable / most)));
}

// With --hard-negatives, one group per combination of the named attributes' values, for the
// pair kinds whose two views both show an attribute left open (text-image: position, with
// color,shape; not image-audio, which share no attribute but color and shape).
tessera::SamplerGroups hard_negative_groups(const std::vector<Item>& items, const Options& o) {
  if (o.hard_negatives.empty()) return {};
  std::map<std::string, std::size_t> ids;
  tessera::SamplerGroups groups{{}, o.run_length, {}};
  for (int k = 0; k < tessera::pair_kind_count; ++k) {
    const auto [a, b] = tessera::pair_kinds[static_cast<std::size_t>(k)];
    for (std::size_t attribute = 0; attribute < 4; ++attribute) {
      const bool open = std::find(o.hard_negatives.begin(), o.hard_negatives.end(), attribute) ==
                        o.hard_negatives.end();
      if (open && tessera::synthetic_attributes_compared(a, b)[attribute]) {
        groups.kinds[static_cast<std::size_t>(k)] = true;
      }
    }
  }
  for (const Item& item : items) {
    std::string key;
    for (const std::size_t a : o.hard_negatives) {
      tessera::check(!item.attributes[a].empty(), "--hard-negatives: item ", item.id, " has no \"",
                     attribute_names[a], "\"");
      key += item.attributes[a] + '\n';
    }
    groups.group.push_back(ids.emplace(key, ids.size()).first->second);
  }
  return groups;
}

// ---- Retrieval ------------------------------------------------------------------------------

struct RetrievalRow {
  Modality query, candidate;
  tessera::RetrievalScores scores;
  std::string matched_on;
};

// The embeddings of samples [N, E], encoded 64 at a time. Model: tessera::MultiModalEncoder
// or tessera::TowerModel (here and below).
template <class Model>
tessera::Matrix<float> embed(const Model& model,
                             const std::vector<const tessera::Sample<float>*>& samples) {
  tessera::Matrix<float> embedded(static_cast<Index>(samples.size()), model.config.embed_dim);
  for (std::size_t first = 0; first < samples.size(); first += 64) {
    std::vector<tessera::Sample<float>> batch;
    for (std::size_t i = first; i < std::min(samples.size(), first + 64); ++i) batch.push_back(*samples[i]);
    const auto encoded = model.encode_batch(batch);
    for (std::size_t i = 0; i < encoded.size(); ++i) {
      embedded.row(static_cast<Index>(first + i)) = encoded[i].embedding;
    }
  }
  return embedded;
}

// The embeddings of the items' views of modality m [N, E]; rows of items without one are 0.
template <class Model>
tessera::Matrix<float> embed_views(const Model& model,
                                   const std::vector<Item>& items, std::size_t m) {
  std::vector<const tessera::Sample<float>*> views;
  std::vector<Index> rows;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (!items[i].views[m]) continue;
    views.push_back(&*items[i].views[m]);
    rows.push_back(static_cast<Index>(i));
  }
  const tessera::Matrix<float> some = embed(model, views);
  tessera::Matrix<float> all = tessera::Matrix<float>::Zero(static_cast<Index>(items.size()), model.config.embed_dim);
  for (std::size_t r = 0; r < rows.size(); ++r) all.row(rows[r]) = some.row(static_cast<Index>(r));
  return all;
}

template <class Model>
std::vector<RetrievalRow> evaluate(const Model& model,
                                   const std::vector<Item>& items) {
  // embeddings of every view, per modality: [items, E]
  std::array<tessera::Matrix<float>, 4> embedded;
  std::array<bool, 4> present{};
  for (std::size_t m = 0; m < tessera::num_modalities; ++m) {
    present[m] = std::all_of(items.begin(), items.end(), [&](const Item& i) { return i.views[m].has_value(); });
    if (present[m]) embedded[m] = embed_views(model, items, m);
  }
  const bool attributed = std::all_of(items.begin(), items.end(), [](const Item& i) {
    return std::none_of(i.attributes.begin(), i.attributes.end(), [](const auto& a) { return a.empty(); });
  });
  std::vector<RetrievalRow> rows;
  for (const auto& [a, b] : tessera::pair_kinds) {
    for (const auto& [q, c] : {std::pair{a, b}, std::pair{b, a}}) {
      if (!present[modality_index(q)] || !present[modality_index(c)]) continue;
      const std::array<bool, 4> compare = tessera::synthetic_attributes_compared(q, c);
      std::string matched_on;
      for (std::size_t k = 0; k < 4; ++k) {
        if (compare[k]) matched_on += std::string(matched_on.empty() ? "" : " ") + attribute_names[k];
      }
      const auto relevant = [&](Index i, Index j) {
        const Item &x = items[static_cast<std::size_t>(i)], &y = items[static_cast<std::size_t>(j)];
        if (!attributed) return x.caption.empty() ? i == j : x.caption == y.caption;
        for (std::size_t k = 0; k < 4; ++k) {
          if (compare[k] && x.attributes[k] != y.attributes[k]) return false;
        }
        return true;
      };
      rows.push_back({q, c,
                      tessera::retrieval_scores<float>(embedded[modality_index(q)],
                                                       embedded[modality_index(c)], relevant),
                      attributed ? matched_on : "caption"});
    }
  }
  return rows;
}

void print_table(const std::vector<RetrievalRow>& rows, std::size_t items) {
  std::printf("\nretrieval on the %zu held-out items (a hit shares the query's attributes that both views show)\n",
              items);
  std::printf("  %-16s %7s %7s %7s   %s\n", "query -> found", "top-1", "top-5", "chance", "matched on");
  for (const auto& r : rows) {
    const std::string pair =
        std::string(modality_name(r.query)) + " -> " + modality_name(r.candidate);
    std::printf("  %-16s %6.1f%% %6.1f%% %6.1f%%   %s\n", pair.c_str(), 100 * r.scores.top1,
                100 * r.scores.top5, 100 * r.scores.chance_top1, r.matched_on.c_str());
  }
}

// A manifest's held-out evaluation (docs/data.md): retrieval by item identity for every
// ordered pair of modalities (open_clip's recall@1/5/10, mean and median rank) and, when the
// items have labels, zero-shot classification of each non-text modality: a class is the
// normalized mean of its label's --template texts, as CLIP classifies.
template <class Model, class Front>
nlohmann::json evaluate_manifest(const Model& model, const std::vector<Item>& items, const Front& front,
                                 const Options& o) {
  nlohmann::json report = {{"items", items.size()}};
  std::printf("\nheld-out evaluation on %zu items\n", items.size());
  if (items.empty()) return report;
  std::vector<tessera::ItemEmbeddings<float>> modalities;
  for (Modality m : tessera::builtin_modalities) {
    const std::size_t at = modality_index(m);
    std::vector<bool> present(items.size());
    for (std::size_t i = 0; i < items.size(); ++i) present[i] = items[i].views[at].has_value();
    if (std::none_of(present.begin(), present.end(), [](bool p) { return p; })) continue;
    modalities.push_back({modality_name(m), embed_views(model, items, at), std::move(present)});
  }
  const auto rows = tessera::identity_retrieval<float>(modalities);
  if (!rows.empty()) {
    std::printf("  retrieval by item identity\n  %-16s %6s %7s %7s %7s %7s %7s\n", "query -> found", "items",
                "R@1", "R@5", "R@10", "mean", "median");
  }
  for (const auto& r : rows) {
    const auto& v = r.scores;
    const std::string pair = r.query + " -> " + r.candidate;
    std::printf("  %-16s %6ld %6.1f%% %6.1f%% %6.1f%% %7.1f %7.0f\n", pair.c_str(), static_cast<long>(v.queries),
                100 * v.recall_at_1, 100 * v.recall_at_5, 100 * v.recall_at_10, v.mean_rank, v.median_rank);
    report["retrieval"].push_back({{"query", r.query}, {"found", r.candidate}, {"items", v.queries},
                                   {"recall_at_1", v.recall_at_1}, {"recall_at_5", v.recall_at_5},
                                   {"recall_at_10", v.recall_at_10}, {"mean_rank", v.mean_rank},
                                   {"median_rank", v.median_rank}});
  }
  if (o.label_key.empty() || !model.config.has(Modality::text)) return report;
  // the classes: the held-out items' labels, in sorted order
  std::map<std::string, Index> classes;
  for (const Item& item : items) {
    if (item.label) classes.emplace(*item.label, 0);
  }
  if (classes.empty()) return report;
  std::vector<tessera::Sample<float>> texts;
  Index k = 0;
  for (auto& [label, index] : classes) {
    index = k++;
    for (const std::string& t : o.templates) {
      std::string text = t;
      text.replace(text.find("{}"), 2, label);
      const tessera::RawInput input{"text", text, {}};
      texts.push_back(front.load(std::span<const tessera::RawInput>(&input, 1)));
    }
  }
  std::vector<const tessera::Sample<float>*> pointers;
  for (const auto& t : texts) pointers.push_back(&t);
  const tessera::Matrix<float> classifier = tessera::zero_shot_classifier<float>(
      embed(model, pointers), static_cast<Index>(o.templates.size()));
  std::printf("  zero-shot classification into %zu classes\n  %-8s %6s %7s %7s\n", classes.size(), "modality",
              "items", "top-1", "top-5");
  for (const auto& m : modalities) {
    if (m.modality == "text") continue;
    std::vector<Index> rows_of, labels;
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (!m.present[i] || !items[i].label) continue;
      rows_of.push_back(static_cast<Index>(i));
      labels.push_back(classes.at(*items[i].label));
    }
    if (rows_of.empty()) continue;
    tessera::Matrix<float> chosen(static_cast<Index>(rows_of.size()), m.embeddings.cols());
    for (std::size_t r = 0; r < rows_of.size(); ++r) chosen.row(static_cast<Index>(r)) = m.embeddings.row(rows_of[r]);
    const auto acc = tessera::zero_shot_accuracy<float>(chosen, labels, classifier);
    std::printf("  %-8s %6ld %6.1f%% %6.1f%%\n", m.modality.c_str(), static_cast<long>(acc.items), 100 * acc.top1,
                100 * acc.top5);
    report["zero_shot"].push_back({{"modality", m.modality}, {"items", acc.items}, {"classes", acc.classes},
                                   {"top1", acc.top1}, {"top5", acc.top5}});
  }
  return report;
}

// ---- Training -------------------------------------------------------------------------------

// A pair's two views, as the loader delivers them, and a batch of them.
using Views = std::array<tessera::Sample<float>, 2>;
using LoadedPairs = tessera::LoadedBatch<tessera::PairDraw, Views>;

// The pairs one process loaded as one batch: pair_batch's samples and groups.
void local_pair_batch(const LoadedPairs& loaded, std::vector<tessera::Sample<float>>& batch,
                      std::vector<tessera::PairGroup>& groups) {
  // a view by (item, modality): an item drawn for two pair kinds loads the same view twice
  std::map<std::pair<std::size_t, Modality>, const tessera::Sample<float>*> views;
  for (std::size_t i = 0; i < loaded.draws.size(); ++i) {
    const auto [a, b] = tessera::pair_kinds[static_cast<std::size_t>(loaded.draws[i].kind)];
    views[{loaded.draws[i].item, a}] = &loaded.values[i][0];
    views[{loaded.draws[i].item, b}] = &loaded.values[i][1];
  }
  tessera::pair_batch<float>(loaded.draws, [&](std::size_t item, Modality m) -> const auto& {
    return *views.at({item, m});
  }, batch, groups);
}

// One step of training on `loaded`, the pairs this process loaded: the whole batch in one
// process, this rank's share of it under mpirun (every rank calls it at every step; the
// global batch's layout comes from every rank's draws). Returns the global batch's loss.
// This is where the model meets the data: another model type (a pretrained tower model) needs
// its own contrastive_step / grad_cache_step / distributed_contrastive_step, the same three
// calls on its encode and backward, and nothing else of the loop changes.
tessera::StepStats train_step(tessera::MultiModalEncoder<float>& model, tessera::MultiModalEncoder<float>& grad,
                              tessera::AdamW<float>& optimizer, tessera::EncoderTrace<float>& trace,
                              const tessera::EncoderFreezing& freezing, LoadedPairs& loaded,
                              const tessera::Communicator& world, const Options& o, double lr) {
  if (world.size() > 1) {
    // this rank's draws' views, in order (draw i's first view, then its second), and where
    // they go in the global batch
    const tessera::DistributedPairBatch batch = tessera::distributed_pair_batch(world, loaded.draws);
    std::vector<tessera::Sample<float>> samples;
    samples.reserve(2 * loaded.values.size());
    for (Views& views : loaded.values) {
      samples.push_back(std::move(views[0]));
      samples.push_back(std::move(views[1]));
    }
    return tessera::distributed_contrastive_step<float>(model, grad, optimizer, samples, batch.rows, batch.groups,
                                                        world, o.micro_batch, lr, o.clip, trace, freezing);
  }
  std::vector<tessera::Sample<float>> batch;
  std::vector<tessera::PairGroup> groups;
  local_pair_batch(loaded, batch, groups);
  return o.micro_batch > 0
             ? tessera::grad_cache_step<float>(model, grad, optimizer, batch, groups, o.micro_batch, lr, o.clip, trace,
                                               freezing)
             : tessera::contrastive_step<float>(model, grad, optimizer, batch, groups, lr, o.clip, trace, freezing);
}

// The loader's counts over every rank (each rank counts the draws of its share; the run's
// are their sums; batches are every rank's alike). Under mpirun the fraction of bad items is
// checked here, on the sums, as the loader checks its own in one process: the run stops at
// the same step whatever the number of ranks.
tessera::LoaderCounts run_counts(const tessera::LoaderCounts& mine, const tessera::Communicator& world,
                                 const Options& o, std::int64_t step) {
  if (world.size() == 1) return mine;
  std::array<std::int64_t, 2> sums{mine.items, mine.bad};
  world.all_reduce_sum(std::span<std::int64_t>(sums));
  const tessera::LoaderCounts all{mine.batches, sums[0], sums[1]};
  const tessera::LoaderOptions defaults;
  const auto items = static_cast<double>(all.items);
  tessera::check(!(all.items >= defaults.min_items && all.bad > 0 &&
                   static_cast<double>(all.bad) > o.max_bad_fraction * items),
                 "Loader: ", all.bad, " of ", all.items, " items are bad (", 100.0 * static_cast<double>(all.bad) / items,
                 "%) over the ", world.size(), " ranks, more than --max-bad-fraction ", o.max_bad_fraction,
                 " allows (counted from ", defaults.min_items, " items on), at step ", step + 1,
                 "; each rank named its own above");
  return all;
}

std::string join_losses(const std::vector<double>& losses) {
  std::ostringstream out;
  out.precision(9);
  for (std::size_t i = 0; i < losses.size(); ++i) out << (i ? " " : "") << losses[i];
  return out.str();
}

std::vector<double> split_losses(const std::string& text) {
  std::istringstream in(text);
  std::vector<double> losses;
  for (double x; in >> x;) losses.push_back(x);
  return losses;
}

// The loader's counts in a checkpoint ("batches items bad"), so a resumed run's bad-item
// fraction is the whole run's.
std::string write_counts(const tessera::LoaderCounts& c) {
  return tessera::detail::concat(c.batches, " ", c.items, " ", c.bad);
}

tessera::LoaderCounts read_counts(const std::map<std::string, std::string>& user, const fs::path& checkpoint) {
  const auto entry = user.find("loaded");
  tessera::check(entry != user.end(), checkpoint.string(), ": no \"loaded\" counts (written by an older tessera-train?)");
  std::istringstream in(entry->second);
  tessera::LoaderCounts c;
  in >> c.batches >> c.items >> c.bad;
  tessera::check(in && c.batches >= 0 && c.items >= c.bad && c.bad >= 0, checkpoint.string(),
                 ": damaged \"loaded\" counts '", entry->second, "'");
  return c;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// ---- What trains -----------------------------------------------------------------------------
// train_model is one loop for either kind of model; a run holds what differs: the model and
// its gradients, the front ends, a step, the weights a checkpoint keeps, what is written.

// tessera's own encoder: a new one (--config), trained whole, or --init's, trained but for
// the parts --freeze names (model/encoder_freezing.hpp: no optimizer state, no update).
struct EncoderRun {
  using Front = tessera::FrontEnds;
  tessera::MultiModalEncoder<float> model, grad;
  tessera::EncoderTrace<float> trace;
  tessera::EncoderFreezing freezing;
  std::optional<tessera::ModelDirectory> from;  // --init's directory

  EncoderRun(tessera::MultiModalEncoder<float> m, const Options& o) : model(std::move(m)), grad(model.config) {
    trace.options.checkpoint_layers = o.checkpoint_layers;
  }
  static EncoderRun fresh(const tessera::Config& config, const Options& o) {
    EncoderRun run(tessera::MultiModalEncoder<float>(config), o);
    run.model.init_random(o.seed);
    run.model.logit_scale = static_cast<float>(std::log(1 / o.temperature));
    return run;
  }
  static EncoderRun fine_tune(const tessera::ModelDirectory& found, const Options& o) {
    tessera::check(o.tokenizer.empty(), "--tokenizer: the --init model ", found.dir.string(), " has its own");
    tessera::check(o.add_towers.empty(), "--add-tower: ", found.dir.string(), " holds tessera's own encoder, "
                   "whose modalities are its config's; --add-tower takes a pretrained model");
    apps::Processing now("--init " + found.dir.string(), found.dir.string());
    EncoderRun run(tessera::load_model<float>(found), o);
    run.from = found;
    run.freezing = tessera::parse_encoder_freezing(o.freeze, "--freeze");
    tessera::validate(run.freezing, run.model.config, "--freeze " + o.freeze);
    return run;
  }

  const tessera::Config& model_config() const { return model.config; }
  std::vector<tessera::Parameter<float>> trained() { return tessera::trained(model.parameters(), freezing); }
  std::vector<tessera::Parameter<const float>> checkpointed() const {
    return tessera::trained(model.parameters(), freezing);
  }
  nlohmann::json checkpoint_config() const { return tessera::to_json(model.config); }

  // MODEL_DIR's tokenizer and config, which the front ends read: --init's tokenizer,
  // --tokenizer's, or one trained on the captions.
  void prepare(const Options& o, const std::vector<Item>& train) const {
    const tessera::Config& config = model.config;
    if (from) {
      std::size_t trained_weights = 0, weights = 0;
      for (const auto& p : checkpointed()) trained_weights += static_cast<std::size_t>(p.size());
      for (const auto& p : model.parameters()) weights += static_cast<std::size_t>(p.size());
      std::string frozen;
      for (const tessera::EncoderPart part : freezing.parts) {
        frozen += std::string(frozen.empty() ? "" : ", ") + tessera::to_string(part);
      }
      std::printf("fine-tuning tessera's own model of %s: %s frozen; %zu of its %zu weights train\n",
                  from->dir.string().c_str(), frozen.empty() ? "nothing" : frozen.c_str(), trained_weights, weights);
    }
    if (from && config.text) {
      for (const char* name : {"vocab.json", "merges.txt"}) {
        apps::Processing now((from->dir / name).string());
        tessera::detail::write_file_atomically(o.out / name, tessera::read_file(from->dir / name));
      }
      std::printf("tokenizer: --init's, from %s\n", from->dir.string().c_str());
    } else if (config.text && !o.tokenizer.empty()) {
      apps::Processing now("--tokenizer " + o.tokenizer.string(), o.tokenizer.string());
      const auto bpe = tessera::Gpt2Bpe::load(o.tokenizer);
      tessera::check(bpe.max_id() < config.text->vocab_size, "--tokenizer ", o.tokenizer.string(),
                     ": ids up to ", bpe.max_id(), ", beyond the config's text.vocab_size ",
                     config.text->vocab_size);
      for (const char* name : {"vocab.json", "merges.txt"}) {
        tessera::detail::write_file_atomically(o.out / name, tessera::read_file(o.tokenizer / name));
      }
      std::printf("tokenizer: %zu ids from %s\n", bpe.size(), o.tokenizer.string().c_str());
    } else if (config.text) {
      std::vector<std::string> captions;
      if (o.from_manifest()) {
        for (const Item& item : train) {
          if (!item.caption.empty()) captions.push_back(item.caption);
        }
      } else {
        apps::Processing now((o.data / "captions.txt").string());
        std::istringstream text(tessera::read_file(o.data / "captions.txt"));
        for (std::string line; std::getline(text, line);) captions.push_back(line);
      }
      const auto bpe = tessera::train_bpe(captions, static_cast<std::size_t>(config.text->vocab_size));
      bpe.save(o.out);
      std::printf("tokenizer: %zu ids (%zu merges) from %zu captions\n", bpe.vocab.size(),
                  bpe.merges.size(), captions.size());
    }
    tessera::save_config(config, o.out / tessera::config_file_name);
  }
  Front front_ends(const Options& o) const { return Front(model.config, o.out); }
  void check_batch_memory(const Options& o, const tessera::PairSampler& sampler) const {
    ::check_batch_memory(o, model.config, sampler);
  }
  tessera::StepStats step(tessera::AdamW<float>& optimizer, LoadedPairs& loaded, const tessera::Communicator& world,
                          const Options& o, double lr) {
    return train_step(model, grad, optimizer, trace, freezing, loaded, world, o, lr);
  }
  void write(const fs::path& out) const { tessera::save_model(model, out); }
  std::string written() const { return "config.json, model.safetensors, vocab.json, merges.txt"; }
};

// A pretrained model from --init (CLIP from transformers or open_clip, ImageBind,
// tessera_towers; docs/pretrained.md): its towers train but for the parts --freeze names,
// which take no gradient memory and no optimizer state (model/tower_freezing.hpp), and it is
// written back into MODEL_DIR as --init's kind of directory (model/pretrained_save.hpp).
struct TowerRun {
  using Front = tessera::TowerFrontEnds;
  tessera::ModelDirectory from;
  tessera::TowerModelConfig loaded;         // --init's model as loaded
  std::vector<tessera::Modality> added;     // --add-tower's new towers
  tessera::TowerModel<float> model;
  tessera::TowerGradients<float> grad;
  tessera::TowerModelTrace<float> trace;

  TowerRun(const tessera::ModelDirectory& found, const Options& o, const tessera::Communicator& world)
      : from(found), model(load(found, o, loaded, added)), grad(model.config, freezing(o, model.config, added)) {
    const auto refuse = [&](bool given, const char* option, const char* why) {
      tessera::check(!given, option, ": not with a pretrained --init model (", found.dir.string(), "): ", why);
    };
    refuse(o.micro_batch > 0, "--micro-batch", "GradCache runs tessera's own encoder");
    refuse(o.checkpoint_layers, "--checkpoint-layers", "its towers keep their whole trace");
    refuse(!o.tokenizer.empty(), "--tokenizer", "the model has its own");
    refuse(world.size() > 1, "mpirun -np N > 1", "a pretrained model trains in one process");
    if (!added.empty()) {
      // the native form's front ends must prepare images as --init's family does
      const Front original(loaded, from.dir), native(model.config, from.dir);
      tessera::check(original.image_processing_used() == native.image_processing_used(), "--add-tower: ",
                     from.dir.string(), ": the ", loaded.family, " model prepares images in a way a "
                     "tessera_towers directory cannot say (it reads preprocessor_config.json, or OpenAI "
                     "CLIP's transform)");
    }
  }

  const tessera::TowerModelConfig& model_config() const { return model.config; }
  std::vector<tessera::Parameter<float>> trained() { return model.parameters(grad.freezing); }
  std::vector<tessera::Parameter<const float>> checkpointed() const { return model.parameters(grad.freezing); }
  nlohmann::json checkpoint_config() const { return tessera::to_json(model.config); }

  void prepare(const Options&, const std::vector<Item>&) const {
    std::size_t trained_weights = 0, weights = 0;
    for (const auto& p : checkpointed()) trained_weights += static_cast<std::size_t>(p.size());
    for (const auto& p : model.parameters()) weights += static_cast<std::size_t>(p.size());
    std::printf("fine-tuning the %s model of %s:", loaded.family.c_str(), from.dir.string().c_str());
    for (const auto& [m, tower] : model.towers) {
      const bool is_new = std::find(added.begin(), added.end(), m) != added.end();
      std::printf(" %s%s tower %s,", is_new ? "new " : "", modality_name(m),
                  tessera::to_string(grad.freezing.of(m)));
    }
    std::printf(" logit_scale %s; %zu of its %zu weights train\n", grad.freezing.logit_scale ? "trains" : "frozen",
                trained_weights, weights);
  }
  // The front ends of the model's family, from --init's files; a caption longer than the
  // text tower's context is cut to it (clip.tokenize(truncate=True), as open_clip trains).
  Front front_ends(const Options&) const { return Front(model.config, from.dir, {.truncate = true}); }
  void check_batch_memory(const Options& o, const tessera::PairSampler& sampler) const;
  tessera::StepStats step(tessera::AdamW<float>& optimizer, LoadedPairs& loaded, const tessera::Communicator&,
                          const Options& o, double lr) {
    std::vector<tessera::Sample<float>> batch;
    std::vector<tessera::PairGroup> groups;
    local_pair_batch(loaded, batch, groups);
    return tessera::tower_step<float>(model, grad, optimizer, batch, groups, lr, o.clip, trace);
  }
  // the model's files into MODEL_DIR, which keeps the run's own (checkpoint, loss.png, ...)
  // --init's kind of directory; with new towers, a tessera_towers one holding --init's
  // tokenizer and preprocessor files
  void write(const fs::path& out) const {
    if (added.empty()) {
      tessera::save_tower_model(model, from, out, {.merge = true});
    } else {
      tessera::save_towers_model(model, out, from.dir, {.merge = true});
    }
  }
  std::string written() const {
    if (added.empty()) return "a " + model.config.family + " directory, as --init " + from.dir.string();
    std::string towers;
    for (const tessera::Modality m : added) towers += std::string(towers.empty() ? "" : ", ") + modality_name(m);
    return "a tessera_towers directory: the towers of --init " + from.dir.string() + " and a new " + towers +
           " tower";
  }

 private:
  // --init's model (its config into `loaded`) with --add-tower's new towers (into `added`)
  static tessera::TowerModel<float> load(const tessera::ModelDirectory& found, const Options& o,
                                         tessera::TowerModelConfig& loaded, std::vector<Modality>& added) {
    tessera::TowerModel<float> model = [&] {
      apps::Processing now("--init " + found.dir.string(), found.dir.string());
      return tessera::load_tower_model<float>(found);
    }();
    loaded = model.config;
    for (const std::string& spec : o.add_towers) added.push_back(add_tower(model, spec, o));
    return model;
  }
  // --freeze's parts; with new towers and no --freeze, every tower of --init and logit_scale
  // (ImageBind's binding). A new tower always trains whole.
  static tessera::TowerFreezing freezing(const Options& o, const tessera::TowerModelConfig& config,
                                         const std::vector<tessera::Modality>& added) {
    tessera::TowerFreezing f = tessera::parse_tower_freezing(o.freeze, "--freeze");
    if (!added.empty() && o.freeze.empty()) {
      f.rest = tessera::TowerTraining::frozen;
      f.logit_scale = false;
    }
    for (const tessera::Modality m : added) {
      tessera::check(f.towers.count(m) == 0, "--freeze ", o.freeze, ": the ", modality_name(m),
                     " tower is --add-tower's new one, which trains");
      f.towers[m] = tessera::TowerTraining::whole;
    }
    tessera::validate(f, config, "--freeze " + o.freeze);
    return f;
  }
  // One --add-tower: MODALITY (ImageBind's tower) or MODALITY=TOWER.json, added with weights
  // from --seed.
  static Modality add_tower(tessera::TowerModel<float>& model, const std::string& spec, const Options& o) {
    const std::string where = "--add-tower " + spec;
    const std::size_t equals = spec.find('=');
    const std::string name = spec.substr(0, equals);
    std::optional<Modality> m;
    for (const Modality candidate : {Modality::text, Modality::image, Modality::audio}) {
      if (name == modality_name(candidate)) m = candidate;
    }
    tessera::check(m.has_value(), where, ": expected text, image or audio (video goes through the image tower), "
                   "optionally =TOWER.json");
    tessera::check(!model.has(*m), where, ": the model has a ", name, " tower already");
    tessera::TowerConfig tower;
    if (equals == std::string::npos) {
      apps::Processing now(where);
      tower = tessera::imagebind_tower(*m, model.config.embed_dim);
    } else {
      const fs::path file = spec.substr(equals + 1);
      apps::Processing now(where, file.string());
      tower = tessera::tower_config_from_json(tessera::detail::read_json_file(file), model.config.embed_dim,
                                              file.string());
      tessera::check(tower.modality == *m, where, ": the file's tower is a ", modality_name(tower.modality), " tower");
    }
    apps::Processing now(where);
    tessera::add_tower(model, tower, o.seed + 1 + static_cast<std::uint64_t>(tessera::modality_index(*m)));
    return *m;
  }
};

// The memory of the largest batch the sampler can draw, against the memory the process may
// use, as check_batch_memory estimates it for tessera's own encoder: each view's input
// (prefetch + 3) times, and per token of a trained tower the trace of contrastive_step_bytes'
// count, (7 D + 2 F) per layer (a frozen tower keeps none; one layer's values live at a time).
void TowerRun::check_batch_memory(const Options& o, const tessera::PairSampler& sampler) const {
  std::array<double, 4> bytes{};  // the largest view of each modality, inputs and trace
  for (Modality m : tessera::builtin_modalities) {
    if (!model.has(m)) continue;
    const tessera::TowerConfig& c = model.tower(m).config;
    // clips per view: a text 1, an ImageBind audio 3 and video 15 (data.py), a CLIP video
    // TowerFrontEndOptions::max_video_frames frames
    const double clips = m == Modality::audio ? 3.0
                         : m == Modality::video
                             ? (model.config.family == "imagebind" ? 15.0
                                                                   : static_cast<double>(tessera::TowerFrontEndOptions{}.max_video_frames))
                             : 1.0;
    const double tokens = clips * static_cast<double>(c.tokens());
    const double input = m == Modality::text ? 8.0 * tokens
                                             : 4.0 * clips * static_cast<double>(c.channels * c.height * c.width_in);
    const double per_token = grad.freezing.of(m) == tessera::TowerTraining::whole
                                 ? static_cast<double>(c.layers * (7 * c.width + 2 * c.ffn_dim))
                                 : static_cast<double>(8 * c.width + 2 * c.ffn_dim);
    bytes[modality_index(m)] = input * static_cast<double>(o.prefetch + 3) + 4.0 * tokens * per_token;
  }
  double most = 0;
  for (const std::int64_t step : {std::int64_t{0}, o.audio_video_from, o.all_pairs_from}) {
    const auto& counts = sampler.counts(step);
    double batch = 0;
    for (int k = 0; k < tessera::pair_kind_count; ++k) {
      const auto [a, b] = tessera::pair_kinds[static_cast<std::size_t>(k)];
      batch += static_cast<double>(counts[static_cast<std::size_t>(k)]) * (bytes[modality_index(a)] + bytes[modality_index(b)]);
    }
    most = std::max(most, batch);
  }
  const auto usable = static_cast<double>(apps::usable_memory_bytes());
  tessera::check(most <= usable, "--pairs ", o.pairs, ": a batch of ", o.pairs, " pairs through ", from.dir.string(),
                 "'s towers needs about ", apps::bytes_text(most), ", more than the ", apps::bytes_text(usable),
                 " this process can still allocate; at most about --pairs ",
                 std::max<std::int64_t>(1, static_cast<std::int64_t>(static_cast<double>(o.pairs) * usable / most)));
}

// The whole run for a model `run` (EncoderRun or TowerRun): the data, the checks, the steps,
// the model directory, the held-out evaluation.
template <class Run>
void train_model(Run& run, const Options& o, const tessera::Communicator& world,
                 std::chrono::steady_clock::time_point start) {
  const bool leader = world.rank() == 0;
  const auto& config = run.model_config();
  auto [train, heldout] = o.from_manifest()
                              ? read_manifests(o)
                              : std::pair{read_items(o.data, "train.jsonl"), read_items(o.data, "heldout.jsonl")};
  refuse_out_over_item_files(o, train);
  refuse_out_over_item_files(o, heldout);

  // --pairs against the data, before any view is loaded; kinds no item has (a dataset
  // without audio, a model without video) are left out
  std::vector<tessera::ModalitySet> sets;
  for (const Item& item : train) sets.push_back(declared_modalities(item, config));
  const auto stages = tessera::PairSampler::possible_only(
      o.schedule == "progressive"
          ? tessera::PairSampler::progressive(o.audio_video_from, o.all_pairs_from)
          : tessera::PairSampler::uniform(),
      sets);
  check_pairs(o, sets, stages);

  // one run at a time in MODEL_DIR (released when this process ends, however it ends); a
  // checkpoint there must come from this very run; both before anything is written
  std::optional<apps::DirectoryLock> lock;
  if (leader) lock.emplace(o.out, lock_file, "tessera-train");
  const fs::path checkpoint = o.out / "checkpoint.safetensors";
  const bool resuming = check_checkpoint(o, checkpoint, leader);

  // 1. what the front ends need in MODEL_DIR (a new model's tokenizer and config), written
  // by rank 0, which the other ranks wait for (they read it from MODEL_DIR)
  if (leader) run.prepare(o, train);
  world.barrier();

  // 2. the held-out items' views, preprocessed once (the training items' are loaded as
  // training goes)
  const typename Run::Front front = run.front_ends(o);

  const std::size_t heldout_items = heldout.size();
  const std::size_t heldout_left_out = leader ? load_views(heldout, front, config) : 0;
  if (leader) {
    std::printf("data: %zu training and %zu held-out items (%zu left out)\n", train.size(), heldout_items,
                heldout_left_out);
    if (world.size() == 1) {
      std::printf("ranks: 1 (this process, on %d thread(s))\n", tessera::num_threads());
    } else {
      std::printf("ranks: %d (each loads and trains its share of the %d pairs of a step, on %d thread(s))\n",
                  world.size(), o.pairs, tessera::num_threads());
    }
  }

  // 3. training
  const tessera::PairSampler sampler(sets, o.pairs, o.seed, stages, hard_negative_groups(train, o));
  run.check_batch_memory(o, sampler);
  tessera::AdamW<float> optimizer({.beta2 = o.beta2, .weight_decay = o.weight_decay});
  const tessera::LearningRateSchedule schedule{o.lr, o.warmup, o.steps, o.min_lr};

  std::int64_t first_step = 0;
  std::vector<double> losses;
  tessera::LoaderCounts counts_before;
  if (resuming) {
    apps::Processing now("--resume " + checkpoint.string(), checkpoint.string());
    tessera::TrainingPosition position;
    tessera::load_checkpoint<float>(checkpoint, run.trained(), run.checkpoint_config(), optimizer, position);
    first_step = position.step;
    losses = split_losses(position.user.at("losses"));
    tessera::check(static_cast<std::int64_t>(losses.size()) == first_step, checkpoint.string(),
                   ": ", losses.size(), " losses for ", first_step, " steps");
    counts_before = read_counts(position.user, checkpoint);
    if (!leader) counts_before = {counts_before.batches, 0, 0};  // rank 0 carries the run's counts
    if (leader) std::printf("resumed at step %ld of %ld\n", static_cast<long>(first_step), static_cast<long>(o.steps));
  }

  std::optional<apps::Progress> progress;
  if (leader) progress.emplace(o.steps, first_step);
  const auto train_start = std::chrono::steady_clock::now();
  double average = 0;
  const std::int64_t last_step = o.stop_at > 0 ? std::min(o.stop_at, o.steps) : o.steps;
  // the training items' views, loaded by the streaming loader as the steps go: under
  // mpirun, each rank its share of each step's draws
  tessera::Loader<tessera::PairDraw, Views> loader(
      world.size() > 1 ? tessera::rank_share_plan(tessera::pair_sampler_plan(sampler), world.rank(), world.size())
                       : tessera::pair_sampler_plan(sampler),
      [&](const tessera::PairDraw& draw) -> tessera::LoadResult<Views> {
        const auto [a, b] = tessera::pair_kinds[static_cast<std::size_t>(draw.kind)];
        auto first = load_view(train[draw.item], a, front);
        if (auto* bad = std::get_if<tessera::BadItem>(&first)) return *bad;
        auto second = load_view(train[draw.item], b, front);
        if (auto* bad = std::get_if<tessera::BadItem>(&second)) return *bad;
        return Views{std::move(std::get<0>(first)), std::move(std::get<0>(second))};
      },
      {.workers = o.workers, .prefetch = o.prefetch, .start = {0, first_step},
       .batches = last_step - first_step,
       // under mpirun checked over all ranks (run_counts)
       .max_bad_fraction = world.size() > 1 ? 1.0 : o.max_bad_fraction,
       .counts_before = counts_before,
       .label = [&](std::size_t item) { return train[item].where + " (item " + train[item].id + ")"; }});
  tessera::LoaderCounts counts = counts_before;  // over every rank
  for (std::int64_t step = first_step; step < last_step; ++step) {
    apps::Processing now(tessera::detail::concat("step ", step + 1, " of ", o.steps));
    auto loaded = loader.next();
    tessera::check(loaded.has_value(), "the loader ended before step ", step + 1);
    counts = run_counts(loader.counts(), world, o, step);
    const auto stats = run.step(optimizer, *loaded, world, o, schedule.at(step));
    losses.push_back(stats.loss);
    average = step == first_step ? stats.loss : 0.95 * average + 0.05 * stats.loss;
    const double rate = static_cast<double>(step + 1 - first_step) * 2 * o.pairs / seconds_since(train_start);
    char status[96];
    std::snprintf(status, sizeof status, "loss %.3f  %.0f samples/s", average, rate);
    if (progress) progress->update(step + 1, status);
    if (leader && ((step + 1) % o.checkpoint_every == 0 || step + 1 == last_step)) {
      tessera::save_checkpoint<float>(checkpoint, run.checkpointed(), run.checkpoint_config(), optimizer,
                               {step + 1, {{"run", o.run().dump()}, {"losses", join_losses(losses)},
                                           {"loaded", write_counts(counts)}}});
    }
  }
  const double train_seconds = seconds_since(train_start);
  if (!leader) return;  // every rank holds the same weights; rank 0 writes them
  if (last_step < o.steps) {
    std::printf("stopped after step %ld of %ld: %s holds the run; --resume continues it\n",
                static_cast<long>(last_step), static_cast<long>(o.steps), checkpoint.string().c_str());
    return;
  }

  // 4. the model directory
  {
    apps::Processing now("writing the model into " + o.out.string(), o.out.string());
    run.write(o.out);
    apps::write_loss_plot(o.out / "loss.png", losses);
  }

  nlohmann::json report = o.run();
  report["losses"] = losses;
  report["train_seconds"] = train_seconds;
  report["threads"] = tessera::num_threads();
  report["ranks"] = world.size();
  const auto& loaded = counts;
  report["loaded"] = {{"items", loaded.items}, {"bad", loaded.bad}, {"heldout_left_out", heldout_left_out}};
  if (loaded.bad > 0) {
    std::printf("%ld of the %ld training items drawn could not be loaded and were left out of their batches "
                "(named above)\n", static_cast<long>(loaded.bad), static_cast<long>(loaded.items));
  }

  // 5. the held-out evaluation
  if (o.from_manifest()) {
    apps::Processing now("held-out evaluation");
    report["evaluation"] = evaluate_manifest(run.model, heldout, front, o);
  } else {
    const auto rows = [&] {
      apps::Processing now("held-out retrieval on " + (o.data / "heldout.jsonl").string());
      return evaluate(run.model, heldout);
    }();
    print_table(rows, heldout.size());
    for (const auto& r : rows) {
      report["retrieval"].push_back({{"query", modality_name(r.query)},
                                     {"found", modality_name(r.candidate)},
                                     {"top1", r.scores.top1}, {"top5", r.scores.top5},
                                     {"chance_top1", r.scores.chance_top1},
                                     {"matched_on", r.matched_on}});
    }
  }
  tessera::detail::write_file_atomically(o.out / "training.json", report.dump(1) + "\n");
  std::printf("\nwrote %s: the model (%s), loss.png, training.json; %ld steps in %.0f s, %.1f s in all\n",
              o.out.string().c_str(), run.written().c_str(), static_cast<long>(last_step - first_step), train_seconds,
              seconds_since(start));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Train a multimodal encoder with a contrastive loss on paired data (a directory of "
               "tessera-synth's or your own manifest), or fine-tune one (--init: tessera's own, CLIP, "
               "ImageBind), and write a model directory that tessera-encode loads (docs/training.md).",
               "tessera-train");
  apps::set_conventions(app);
  Options options;
  add_options(app, options);
  return apps::run(app, argc, argv, [&] {
    std::setvbuf(stdout, nullptr, _IOLBF, 0);  // lines in order with the progress on stderr
    finish(options);
    const Options& o = options;
    if (o.threads > 0) tessera::set_num_threads(o.threads);
    const auto start = std::chrono::steady_clock::now();
    // every process of the run (mpirun -np N), or this one alone; rank 0 alone writes and prints
    const tessera::Communicator world = tessera::Communicator::world();
    std::optional<apps::Processing> rank_named;
    if (world.size() > 1) rank_named.emplace(tessera::detail::concat("rank ", world.rank(), " of ", world.size()));

    refuse_out_over_inputs(o);
    if (o.init.empty()) {
      EncoderRun run = EncoderRun::fresh([&] {
        apps::Processing now("--config " + o.config.string(), o.config.string());
        return tessera::load_config(o.config);
      }(), o);
      return train_model(run, o, world, start);
    }
    const tessera::ModelDirectory found = [&] {
      apps::Processing now("--init " + o.init.string(), o.init.string());
      return tessera::detect_model(o.init);
    }();
    // A quantized model (tessera-quantize) holds int8 / bfloat16 weights that have no gradient.
    if (const auto q = found.config ? tessera::config_quantization(*found.config, found.config_file.string())
                                    : std::nullopt) {
      tessera::fail("--init ", o.init.string(), ": the model is quantized (", tessera::nn::to_string(*q),
                    ", written by tessera-quantize); a quantized model cannot be trained: fine-tune the "
                    "fp32 model and quantize the result");
    }
    if (found.kind == tessera::ModelKind::tessera) {
      EncoderRun run = EncoderRun::fine_tune(found, o);
      return train_model(run, o, world, start);
    }
    TowerRun run(found, o, world);
    train_model(run, o, world, start);
  });
}
