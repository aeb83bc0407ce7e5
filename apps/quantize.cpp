// tessera-quantize: write a model directory with int8 or bfloat16 weights.
//
//   tessera-quantize --model DIR --out DIR2 --dtype int8|bf16 [--keep NAMES]
//
// DIR is any model tessera-encode accepts: tessera's own, or a pretrained one (transformers'
// CLIP, open_clip, ImageBind, tessera_towers). DIR2 is written in tessera's native form:
// tessera's own model directory for tessera's encoder, a tessera_towers directory for a
// pretrained family (docs/model-files.md), with the source's tokenizer and preprocessor
// files. Its linear and patch-embedding weights are int8 with one fp32 scale per output row
// (symmetric) or bfloat16; embedding tables, norms, biases, positional tables, class tokens,
// the router, logit_scale and every tensor --keep names stay fp32 (model/quantize.hpp).
// load_model, Pipeline::open, tessera-encode and tessera-serve read DIR2 as they read DIR.
// DIR2 is assembled beside itself and renamed into place: nothing is half-written on error.
// Exit statuses and errors as every program's (cli.hpp, docs/programs.md).

#include <tessera/tessera.hpp>

#include "cli.hpp"

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace {

namespace apps = tessera::apps;
namespace fs = std::filesystem;

struct Options {
  std::string model;
  std::string out;
  std::string dtype;
  std::vector<std::string> keep;
  bool replace = false;
};

void add_options(CLI::App& app, Options& o) {
  app.add_option("--model", o.model, "the model directory: tessera's own or a pretrained one "
                                     "(any that tessera-encode accepts)")
      ->required()->type_name("DIR");
  app.add_option("--out", o.out, "the quantized model directory to write, in tessera's native "
                                 "form (absent or empty, unless --replace)")
      ->required()->type_name("DIR2");
  app.add_option("--dtype", o.dtype, "int8 (symmetric, one fp32 scale per output row) or bf16")
      ->required()->check(CLI::IsMember({"int8", "bf16"}))->type_name("int8|bf16");
  app.add_option("--keep", o.keep,
                 "weights kept fp32, comma-separated: full tensor names or prefixes ending at "
                 "a dot (layers.0, proj, vision.transformer.resblocks.11.), named as in the "
                 "output's model.safetensors")
      ->delimiter(',')->type_name("NAMES")->default_str("");
  app.add_flag("--replace", o.replace, "replace an existing non-empty --out directory");
}

// Whether a file of tessera's own model directory is copied into the quantized one: the
// tokenizer and any other file, but not the weights or the config, which save_model writes.
bool copied(const fs::directory_entry& entry) {
  const fs::path name = entry.path().filename();
  return entry.is_regular_file() && name != tessera::config_file_name &&
         name != tessera::weights_file_name && !tessera::detail::is_other_weights_file(name);
}

// tessera's own encoder, quantized, assembled beside `out` and put in its place.
void write_own_model(const tessera::MultiModalEncoder<float>& model, const fs::path& from,
                     const fs::path& out, const tessera::SaveTowerModelOptions& place) {
  constexpr const char* what = "tessera-quantize";
  std::error_code error;
  const fs::path target = fs::weakly_canonical(out, error);
  tessera::check(!error, out.string(), ": ", error.message());
  const bool exists = tessera::detail::check_target(target, out, place, what);
  tessera::detail::TemporaryDirectory assembled(tessera::detail::sibling_temporary(target, "partial"));
  fs::create_directory(assembled.path(), error);
  tessera::check(!error, "cannot create ", assembled.path().string(), ": ", error.message());
  for (const auto& entry : fs::directory_iterator(from)) {
    if (!copied(entry)) continue;
    fs::copy_file(entry.path(), assembled.path() / entry.path().filename(), error);
    tessera::check(!error, "cannot copy ", entry.path().string(), ": ", error.message());
  }
  tessera::save_model(model, assembled.path());
  tessera::detail::place_directory(assembled, target, exists, place, what);
}

void print_summary(const tessera::QuantizeSummary& s, const std::string& dtype, const fs::path& out,
                   const char* form) {
  std::printf("quantized %zu weight tensor(s) to %s, kept %zu fp32 by --keep, %zu other tensor(s) "
              "fp32 (norms, biases, embeddings, positions)\n",
              s.quantized.size(), dtype.c_str(), s.kept.size(), s.other);
  std::printf("weights: %s -> %s (%.2fx smaller)\n", apps::bytes_text(double(s.bytes_before)).c_str(),
              apps::bytes_text(double(s.bytes_after)).c_str(),
              s.bytes_after > 0 ? double(s.bytes_before) / double(s.bytes_after) : 0.0);
  std::printf("wrote %s (%s)\n", out.string().c_str(), form);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Write a model directory whose linear and patch-embedding weights are int8 (one "
               "fp32 scale per output row) or bf16; embedding tables, norms, biases, positional "
               "tables, class tokens, logit_scale and --keep's tensors stay fp32. The output is in "
               "tessera's native form: tessera's own model directory, or a tessera_towers "
               "directory for a pretrained model (CLIP, open_clip, ImageBind); tessera-encode, "
               "tessera-serve and load_model read it as they read the original.",
               "tessera-quantize");
  apps::set_conventions(app);
  Options options;
  add_options(app, options);
  return apps::run(app, argc, argv, [&] {
    apps::refuse_output_over_inputs(options.out, "--out", {options.model});
    std::error_code error;
    const fs::path from = fs::weakly_canonical(options.model, error);
    const fs::path to = fs::weakly_canonical(options.out, error);
    const auto [in_from, in_to] = std::mismatch(from.begin(), from.end(), to.begin(), to.end());
    apps::require(in_from != from.end() || error,
                  "--out " + options.out + " is --model " + options.model + " or inside it; write "
                  "the quantized model elsewhere");
    tessera::QuantizeOptions quantize;
    quantize.format = options.dtype == "int8" ? tessera::nn::WeightFormat::int8
                                              : tessera::nn::WeightFormat::bf16;
    quantize.keep = options.keep;
    tessera::SaveTowerModelOptions place;
    place.replace = options.replace;

    std::optional<apps::Processing> loading(std::in_place, "--model " + options.model, options.model);
    const tessera::ModelDirectory found = tessera::detect_model(options.model);
    if (found.kind == tessera::ModelKind::tessera) {
      auto model = tessera::load_model<float>(found);
      loading.reset();
      const tessera::QuantizeSummary summary = tessera::quantize_model(model, quantize);
      apps::Processing now("--out " + options.out, options.out);
      write_own_model(model, options.model, options.out, place);
      print_summary(summary, options.dtype, options.out, "a tessera model directory");
      return;
    }
    auto model = tessera::load_tower_model<float>(found);
    loading.reset();
    const tessera::QuantizeSummary summary = tessera::quantize_model(model, quantize);
    apps::Processing now("--out " + options.out, options.out);
    tessera::save_towers_model(model, options.out, options.model, place);
    print_summary(summary, options.dtype, options.out,
                  ("a tessera_towers directory, from " + std::string(tessera::to_string(found.kind))).c_str());
  });
}
