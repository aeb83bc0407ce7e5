// quantization_accuracy: how far int8 and bf16 weights move a model's embeddings from fp32's
// (docs/quantization.md "Accuracy"). Deterministic figures, not timings.
//
//   quantization_accuracy --model DIR --data WORLD [--random SEED] [--items N]
//       [--modalities text,image,...] [--group-items N] [--keep NAMES] [--retrieval]
//       [--threads N]
//
// The model is any directory tessera-encode takes (tessera's own, or CLIP / open_clip /
// ImageBind / tessera_towers); with --random SEED its weights file is not read: the model of
// its config gets init_random's weights (WeightRole's statistics), so a full-size config with
// a tokenizer is enough. WORLD is a tessera-synth world: the inputs are its items' captions,
// PNGs, WAVs and Y4Ms, held-out items first, through the model's own front ends.
//
// Prints, as markdown tables:
//   1. per modality, the cosine of each input's int8 and bf16 embedding with its fp32 one:
//      mean, 1st percentile, worst (and which item); every quantizable weight quantized but
//      those --keep names (tessera-quantize's --keep: tensor names or dot-bounded prefixes);
//   2. sensitivity (--group-items > 0): int8 on ONE group of weights at a time, the rest
//      fp32 (QuantizeOptions::keep names every other quantizable weight), the worst cosine per
//      modality; groups by kind (q/k/v, attention out, FFN in, FFN out, patch embedding,
//      projection, per tower), by layer, and by tower ("-": the group has no part in that
//      modality's embedding, which is then exactly fp32's);
//   3. --retrieval: tessera-train's held-out retrieval table (the synthetic world's
//      attribute-matched top-1 / top-5) with fp32, int8 and bf16 embeddings, and the changes;
//      then, for each row where a query's top-1 changed, how near a tie those queries were in
//      fp32: a query's margin is its best relevant candidate's similarity less its best other
//      one's (top-1 is right when it is positive), so a format that moves similarities by
//      less than the margin cannot change that query.

#include <tessera/tessera.hpp>
#include <tessera/train/retrieval.hpp>
#include <tessera/train/sampler.hpp>

#include "cli.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

namespace {

namespace fs = std::filesystem;
using tessera::Index;
using tessera::Modality;
using tessera::modality_index;
using tessera::modality_name;

// ---- The inputs -----------------------------------------------------------------------------

constexpr const auto& attribute_names = tessera::synthetic_attribute_names;

// One item of the world: its caption, files and attributes.
struct Item {
  std::string id, caption;
  std::array<std::string, 4> files;  // by modality_index (text unused)
  std::array<std::string, 4> attributes;
  bool held_out = false;
};

std::vector<Item> read_items(const fs::path& world, const char* list, bool held_out) {
  std::istringstream in(tessera::read_file(world / list, {}, tessera::ReadLimits::any_file));
  std::vector<Item> items;
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line);
    Item item;
    item.id = j.at("id").get<std::string>();
    item.caption = j.at("caption").get<std::string>();
    for (Modality m : {Modality::image, Modality::audio, Modality::video}) {
      item.files[modality_index(m)] = (world / j.at(modality_name(m)).get<std::string>()).string();
    }
    for (std::size_t a = 0; a < 4; ++a) item.attributes[a] = j.at(attribute_names[a]).get<std::string>();
    item.held_out = held_out;
    items.push_back(std::move(item));
  }
  return items;
}

// The views of `items` in modality m through the front ends, in parallel.
template <class Front>
std::vector<tessera::Sample<float>> load_views(const Front& front, const std::vector<Item>& items,
                                               Modality m) {
  std::vector<tessera::Sample<float>> views(items.size());
  std::vector<std::string> errors(items.size());
#pragma omp parallel for schedule(dynamic)
  for (std::size_t i = 0; i < items.size(); ++i) {
    try {
      const tessera::RawInput input{modality_name(m),
                                    m == Modality::text ? items[i].caption : items[i].files[modality_index(m)],
                                    {}};
      views[i] = front.load(std::span<const tessera::RawInput>(&input, 1));
    } catch (const std::exception& e) {  // no exception may leave an OpenMP loop
      errors[i] = e.what();
    }
  }
  for (std::size_t i = 0; i < items.size(); ++i) {
    tessera::check(errors[i].empty(), items[i].id, " (", modality_name(m), "): ", errors[i]);
  }
  return views;
}

// The embeddings of `views` [N, E], 32 samples a batch.
template <class Model>
tessera::Matrix<float> embed(const Model& model, const std::vector<tessera::Sample<float>>& views) {
  tessera::Matrix<float> out(static_cast<Index>(views.size()), model.config.embed_dim);
  for (std::size_t first = 0; first < views.size(); first += 32) {
    const std::size_t n = std::min<std::size_t>(32, views.size() - first);
    const auto encoded = model.encode_batch(std::span<const tessera::Sample<float>>(views.data() + first, n));
    for (std::size_t i = 0; i < n; ++i) out.row(static_cast<Index>(first + i)) = encoded[i].embedding;
  }
  return out;
}

// ---- The statistics -------------------------------------------------------------------------

struct CosineStats {
  double mean = 0, p1 = 0, worst = 1;
  std::size_t worst_row = 0;
};

// The cosine of each row of `b` with the same row of `a`: mean, 1st percentile, minimum.
CosineStats cosine_stats(const tessera::Matrix<float>& a, const tessera::Matrix<float>& b) {
  std::vector<double> cos(static_cast<std::size_t>(a.rows()));
  CosineStats s;
  for (Index r = 0; r < a.rows(); ++r) {
    const Eigen::VectorXd x = a.row(r).transpose().cast<double>(), y = b.row(r).transpose().cast<double>();
    const double c = x.dot(y) / (x.norm() * y.norm());
    cos[static_cast<std::size_t>(r)] = c;
    s.mean += c;
    if (c < s.worst) {
      s.worst = c;
      s.worst_row = static_cast<std::size_t>(r);
    }
  }
  s.mean /= static_cast<double>(cos.size());
  std::sort(cos.begin(), cos.end());
  s.p1 = cos[static_cast<std::size_t>(0.01 * static_cast<double>(cos.size() - 1))];
  return s;
}

// ---- Weight groups --------------------------------------------------------------------------

// The kind of a quantizable weight, from its name (tessera's own or the native tower names).
std::string weight_kind(const std::string& name) {
  const auto has = [&](const char* s) { return name.find(s) != std::string::npos; };
  if (has("q_proj") || has("k_proj") || has("v_proj") || has("in_proj")) return "attention q/k/v";
  if (has("out_proj")) return "attention out";
  if (has("ffn.fc1") || has("ffn.up") || has("ffn.gate") || has("mlp.c_fc")) return "FFN in (fc1/up/gate)";
  if (has("ffn.fc2") || has("ffn.down") || has("mlp.c_proj")) return "FFN out (fc2/down)";
  if (has("patch_embed") || has("conv1")) return "patch embedding";
  if (name == "proj.weight" || name.ends_with(".proj.weight")) return "projection";
  return "other";
}

// The part of the model a weight belongs to: a tower's name ("vision."), or for tessera's own
// encoder "encoder" (shared by every modality) or the modality of a front-end weight.
std::string weight_part(const std::string& name, bool towers) {
  const std::string first = name.substr(0, name.find('.'));
  if (towers) return first;
  if (first == "layers" || first == "proj") return "encoder";
  if (name.starts_with("video.pool")) return "video pool";
  return first;
}

// "layer N" of a block weight, prefixed by its part for towers; empty for others.
std::string weight_layer(const std::string& name, bool towers) {
  for (const char* marker : {"layers.", "resblocks."}) {
    const auto at = name.find(marker);
    if (at == std::string::npos) continue;
    const auto from = at + std::string(marker).size();
    const std::string n = name.substr(from, name.find('.', from) - from);
    return (towers ? weight_part(name, true) + " " : std::string()) + "layer " + n;
  }
  return {};
}

struct Group {
  std::string table, name;  // table: "kind", "layer" or "part"
  std::vector<std::string> members;
};

std::vector<Group> weight_groups(const std::vector<std::string>& names, bool towers) {
  std::vector<Group> groups;
  const auto add = [&](const std::string& table, const std::string& group, const std::string& name) {
    auto at = std::find_if(groups.begin(), groups.end(),
                           [&](const Group& g) { return g.table == table && g.name == group; });
    if (at == groups.end()) {
      groups.push_back({table, group, {}});
      at = groups.end() - 1;
    }
    at->members.push_back(name);
  };
  for (const auto& name : names) {
    const std::string part = weight_part(name, towers);
    add("kind", (towers ? part + ": " : std::string()) + weight_kind(name), name);
    if (const std::string layer = weight_layer(name, towers); !layer.empty()) add("layer", layer, name);
    add("part", part, name);
  }
  // the tables in turn: kinds, then layers, then parts
  const auto rank = [](const Group& g) { return g.table == "kind" ? 0 : g.table == "layer" ? 1 : 2; };
  std::stable_sort(groups.begin(), groups.end(),
                   [&](const Group& a, const Group& b) { return rank(a) < rank(b); });
  return groups;
}

// Whether weight `name` takes part in encoding modality m: a tower's weights its own
// modality's (video: the image tower's); tessera's shared encoder every modality, a front
// end's its own.
template <class Model>
bool touches(const Model& model, const std::string& name, Modality m) {
  if constexpr (std::is_same_v<Model, tessera::MultiModalEncoder<float>>) {
    const std::string part = weight_part(name, false);
    return part == "encoder" || part == modality_name(m) || (part == "video pool" && m == Modality::video);
  } else {
    const tessera::TowerModelConfig native = tessera::native_towers_config(model.config, "quantization_accuracy");
    return name.starts_with(native.name_of(m == Modality::video ? Modality::image : m) + ".");
  }
}

// ---- The measurement ------------------------------------------------------------------------

struct Options {
  fs::path model, data;
  std::optional<std::uint64_t> random;
  Index items = 256;
  Index group_items = 64;
  std::vector<std::string> modalities;
  std::vector<std::string> keep;  // kept fp32 in 1. and 3.
  bool retrieval = false;
};

const char* format_name(tessera::nn::WeightFormat f) { return tessera::nn::to_string(f); }

// Each query's top-1 margin: its best relevant candidate's similarity less its best other one's
// (positive: top-1 is right; a query with no relevant or no other candidate gets +-infinity).
template <class Relevant>
std::vector<double> top1_margins(const tessera::Matrix<float>& queries, const tessera::Matrix<float>& candidates,
                                 const Relevant& relevant) {
  const tessera::Matrix<float> similarity = queries * candidates.transpose();
  std::vector<double> margins(static_cast<std::size_t>(queries.rows()));
  for (Index q = 0; q < queries.rows(); ++q) {
    double best_relevant = -INFINITY, best_other = -INFINITY;
    for (Index c = 0; c < candidates.rows(); ++c) {
      double& best = relevant(q, c) ? best_relevant : best_other;
      best = std::max(best, static_cast<double>(similarity(q, c)));
    }
    margins[static_cast<std::size_t>(q)] = best_relevant - best_other;
  }
  return margins;
}

std::string fixed(double value, int digits) {
  char text[32];
  std::snprintf(text, sizeof text, "%.*f", digits, value);
  return text;
}

template <class Model, class Front>
void measure(const Model& model, const Front& front, const Options& o) {
  std::vector<Item> items = read_items(o.data, "heldout.jsonl", true);
  const std::size_t held_out = items.size();
  for (auto& item : read_items(o.data, "train.jsonl", false)) items.push_back(std::move(item));
  tessera::check(o.items <= static_cast<Index>(items.size()), "--items ", o.items, ": the world has ",
                 items.size());
  items.resize(static_cast<std::size_t>(o.items));

  std::vector<Modality> modalities;
  for (Modality m : tessera::builtin_modalities) {
    const bool asked = o.modalities.empty() ||
                       std::find(o.modalities.begin(), o.modalities.end(), modality_name(m)) != o.modalities.end();
    if (asked && model.config.has(m)) modalities.push_back(m);
  }
  std::map<Modality, std::vector<tessera::Sample<float>>> views;
  for (Modality m : modalities) views[m] = load_views(front, items, m);

  using tessera::nn::WeightFormat;
  std::map<Modality, tessera::Matrix<float>> reference;
  for (Modality m : modalities) reference[m] = embed(model, views[m]);

  // 1. Every quantizable weight quantized.
  std::vector<std::string> quantizable;
  std::map<WeightFormat, std::map<Modality, tessera::Matrix<float>>> quantized;
  std::string kept;
  for (const auto& name : o.keep) kept += (kept.empty() ? "" : ", ") + name;
  std::printf("\n### Embedding cosine to fp32 (%lld inputs per modality%s%s)\n\n", static_cast<long long>(o.items),
              kept.empty() ? "" : "; kept fp32: ", kept.c_str());
  std::printf("| modality | format | mean | P1 | worst | worst input |\n| --- | --- | --- | --- | --- | --- |\n");
  for (WeightFormat f : {WeightFormat::int8, WeightFormat::bf16}) {
    Model q = model;
    const tessera::QuantizeSummary summary = tessera::quantize_model(q, {f, o.keep});
    quantizable = summary.quantized;
    for (Modality m : modalities) {
      quantized[f][m] = embed(q, views[m]);
      const CosineStats s = cosine_stats(reference[m], quantized[f][m]);
      std::printf("| %s | %s | %.6f | %.6f | %.6f | %s |\n", modality_name(m), format_name(f), s.mean, s.p1,
                  s.worst, items[s.worst_row].id.c_str());
    }
    std::fflush(stdout);
  }

  // 3. The retrieval table, fp32 / int8 / bf16, on the held-out items.
  if (o.retrieval) {
    tessera::check(static_cast<std::size_t>(o.items) >= held_out, "--retrieval needs --items >= ", held_out,
                   " (the held-out items)");
    std::printf("\n### Held-out retrieval (%zu items), top-1 / top-5 %%\n\n", held_out);
    std::printf("| query -> found | fp32 | int8 | change | bf16 | change |\n| --- | --- | --- | --- | --- | --- |\n");
    const auto n = static_cast<Index>(held_out);
    std::string ties;  // the near-tie table's rows
    for (const auto& [a, b] : tessera::pair_kinds) {
      for (const auto& [qm, cm] : {std::pair{a, b}, std::pair{b, a}}) {
        if (!views.count(qm) || !views.count(cm)) continue;
        // the synthetic world's relation, tessera-train's (train/retrieval.hpp)
        const std::array<bool, 4> compare = tessera::synthetic_attributes_compared(qm, cm);
        const auto relevant = [&](Index i, Index j) {
          for (std::size_t k = 0; k < 4; ++k) {
            if (compare[k] && items[static_cast<std::size_t>(i)].attributes[k] !=
                               items[static_cast<std::size_t>(j)].attributes[k]) {
              return false;
            }
          }
          return true;
        };
        const auto scores = [&](const std::map<Modality, tessera::Matrix<float>>& e) {
          return tessera::retrieval_scores<float>(e.at(qm).topRows(n), e.at(cm).topRows(n), relevant);
        };
        const auto r32 = scores(reference), r8 = scores(quantized[WeightFormat::int8]),
                   r16 = scores(quantized[WeightFormat::bf16]);
        const auto m32 = top1_margins(reference.at(qm).topRows(n), reference.at(cm).topRows(n), relevant);
        std::string row = std::string(modality_name(qm)) + " -> " + modality_name(cm);
        std::vector<std::string> cells;
        for (WeightFormat f : {WeightFormat::int8, WeightFormat::bf16}) {
          const auto mq = top1_margins(quantized[f].at(qm).topRows(n), quantized[f].at(cm).topRows(n), relevant);
          Index changed = 0;
          double largest = 0;
          for (std::size_t i = 0; i < m32.size(); ++i) {
            if ((m32[i] > 0) != (mq[i] > 0)) {
              ++changed;
              largest = std::max(largest, std::abs(m32[i]));
            }
          }
          cells.push_back(changed == 0 ? "0" : std::to_string(changed) + " (" + fixed(largest, 5) + ")");
        }
        std::vector<double> sizes;
        for (double m : m32) sizes.push_back(std::abs(m));
        std::nth_element(sizes.begin(), sizes.begin() + static_cast<std::ptrdiff_t>(sizes.size() / 2), sizes.end());
        if (cells[0] != "0" || cells[1] != "0") {
          ties += "| " + row + " | " + cells[0] + " | " + cells[1] + " | " + fixed(sizes[sizes.size() / 2], 4) + " |\n";
        }
        std::printf("| %s -> %s | %.1f / %.1f | %.1f / %.1f | %+.1f / %+.1f | %.1f / %.1f | %+.1f / %+.1f |\n",
                    modality_name(qm), modality_name(cm), 100 * r32.top1, 100 * r32.top5, 100 * r8.top1,
                    100 * r8.top5, 100 * (r8.top1 - r32.top1), 100 * (r8.top5 - r32.top5), 100 * r16.top1,
                    100 * r16.top5, 100 * (r16.top1 - r32.top1), 100 * (r16.top5 - r32.top5));
      }
    }
    std::printf("\n### Queries whose top-1 changed: how many (the largest fp32 margin among them), "
                "and the median fp32 margin of the row's queries\n\n");
    if (ties.empty()) {
      std::printf("none\n");
    } else {
      std::printf("| query -> found | int8 | bf16 | median margin |\n| --- | --- | --- | --- |\n%s", ties.c_str());
    }
    std::fflush(stdout);
  }

  // 2. Sensitivity: int8 on one group at a time.
  if (o.group_items <= 0) return;
  const auto g_items = std::min<Index>(o.group_items, o.items);
  std::printf("\n### int8 on one group of weights, the rest fp32: worst cosine to fp32 (%lld inputs per modality)\n",
              static_cast<long long>(g_items));
  const bool towers = !std::is_same_v<Model, tessera::MultiModalEncoder<float>>;
  const std::vector<Group> groups = weight_groups(quantizable, towers);
  std::string table;
  for (const Group& g : groups) {
    if (g.table != table) {
      table = g.table;
      std::printf("\n| %s | weights |", table.c_str());
      for (Modality m : modalities) std::printf(" %s |", modality_name(m));
      std::printf("\n| --- | --- |");
      for (std::size_t i = 0; i < modalities.size(); ++i) std::printf(" --- |");
      std::printf("\n");
    }
    std::vector<std::string> keep;
    for (const auto& name : quantizable) {
      if (std::find(g.members.begin(), g.members.end(), name) == g.members.end()) keep.push_back(name);
    }
    Model q = model;
    tessera::quantize_model(q, {WeightFormat::int8, keep});
    std::printf("| %s | %zu |", g.name.c_str(), g.members.size());
    for (Modality m : modalities) {
      if (std::none_of(g.members.begin(), g.members.end(),
                       [&](const std::string& name) { return touches(model, name, m); })) {
        std::printf(" - |");  // the group is not used for this modality: exactly fp32's
        continue;
      }
      const std::vector<tessera::Sample<float>> some(views[m].begin(), views[m].begin() + g_items);
      const CosineStats s = cosine_stats(reference[m].topRows(g_items), embed(q, some));
      std::printf(" %.6f |", s.worst);
    }
    std::printf("\n");
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  namespace apps = tessera::apps;
  CLI::App app("Cosine of int8 and bf16 embeddings to fp32's, per modality and per group of weights, "
               "and the change in the synthetic world's retrieval table.",
               "quantization_accuracy");
  apps::set_conventions(app);
  Options o;
  int threads = 0;
  std::string modalities;
  app.add_option("--model", o.model, "the model directory")->required()->type_name("DIR");
  app.add_option("--data", o.data, "a tessera-synth world")->required()->type_name("WORLD");
  app.add_option("--random", o.random, "random weights of the model's config, this seed (the weights file unread)")
      ->type_name("SEED");
  app.add_option("--items", o.items, "inputs per modality, held-out items first")->check(apps::positive_number);
  app.add_option("--group-items", o.group_items, "inputs per modality for the per-group runs (0: none)")
      ->check(apps::non_negative_number);
  app.add_option("--modalities", modalities, "comma-separated (default: every one the model has)");
  app.add_option("--keep", o.keep, "comma-separated weights kept fp32 in the cosine and retrieval tables "
                                   "(names or dot-bounded prefixes, as tessera-quantize --keep)")
      ->delimiter(',')->type_name("NAMES");
  app.add_flag("--retrieval", o.retrieval, "the held-out retrieval table, fp32 / int8 / bf16");
  apps::add_threads_option(app, threads);
  return apps::run(app, argc, argv, [&] {
    if (threads > 0) tessera::set_num_threads(threads);
    std::stringstream list(modalities);
    for (std::string m; std::getline(list, m, ',');) o.modalities.push_back(m);
    const tessera::ModelDirectory found = tessera::detect_model(o.model);
    if (found.kind == tessera::ModelKind::tessera) {
      auto model = [&] {
        if (!o.random) return tessera::load_model<float>(o.model);
        tessera::MultiModalEncoder<float> fresh(tessera::load_config(found.config_file));
        fresh.init_random(*o.random);
        return fresh;
      }();
      std::printf("model: %s (tessera, D %lld, %lld layers, %s weights)\n", o.model.string().c_str(),
                  static_cast<long long>(model.config.hidden_dim), static_cast<long long>(model.config.num_layers),
                  o.random ? "random" : "its own");
      measure(model, tessera::FrontEnds(model.config, o.model), o);
    } else {
      auto model = [&] {
        if (!o.random) return tessera::load_tower_model<float>(found);
        tessera::ModelDirectory parsed = found;
        if (!parsed.config) parsed.config = tessera::detail::read_json_file(parsed.config_file);
        tessera::TowerModel<float> fresh(tessera::detail::pretrained_config(parsed), parsed.config_file.string());
        std::uint64_t seed = *o.random;
        for (auto& [m, tower] : fresh.towers) tower.init_random(seed++);
        return fresh;
      }();
      std::printf("model: %s (%s, %s weights)\n", o.model.string().c_str(), model.config.family.c_str(),
                  o.random ? "random" : "its own");
      measure(model, tessera::TowerFrontEnds(model.config, o.model, {.truncate = true}), o);
    }
  });
}
