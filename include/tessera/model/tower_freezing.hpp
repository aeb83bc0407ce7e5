#pragma once
// TowerFreezing: which parts of a TowerModel (model/tower_model.hpp) a fine-tuning run trains.
//
// Per tower, one of three (TowerTraining):
//   whole       every weight trains
//   projection  only proj (and its bias): the rest of the tower is locked, the "everything but
//               the projections" of LiT (Zhai et al. 2022, locked-image tuning, which also
//               locks a whole tower: frozen)
//   frozen      nothing: the tower runs its plain forward, keeps no trace and has no gradient
// and whether logit_scale trains. A frozen part takes no gradient memory and no optimizer
// state: TowerGradients (model/tower_model.hpp) allocates only the trained parts, and the
// parameter lists AdamW walks hold only those.
//
// parse_tower_freezing reads the comma-separated list a command line gives (`--freeze`):
//   text | image | video | audio   that tower frozen (video: the image tower)
//   towers                         every tower frozen (then only logit_scale trains)
//   text.backbone | ...            all of that tower but its projection frozen
//   backbones                      every tower's backbone frozen: only projections train
//   logit_scale                    the logit scale frozen

#include <tessera/core/error.hpp>
#include <tessera/core/modality.hpp>

#include <algorithm>
#include <map>
#include <string>
#include <string_view>

namespace tessera {

// How much of one tower a training step changes.
enum class TowerTraining {
  frozen,      // nothing: no trace, no backward, no gradient memory
  projection,  // proj alone: the trace keeps each clip's pooled ln_post output
  whole,       // every weight
};
inline constexpr TowerTraining tower_training_kinds[] = {
    TowerTraining::frozen, TowerTraining::projection, TowerTraining::whole};
inline const char* to_string(TowerTraining t) {
  switch (t) {
    case TowerTraining::frozen: return "frozen";
    case TowerTraining::projection: return "projection";
    case TowerTraining::whole: return "whole";
  }
  return "unknown";
}

struct TowerFreezing {
  std::map<Modality, TowerTraining> towers;  // by the tower's modality (text, image, audio)
  TowerTraining rest = TowerTraining::whole;  // every tower not in `towers`
  bool logit_scale = true;                    // logit_scale trains

  // How the tower that encodes modality m trains (video: the image tower's).
  TowerTraining of(Modality m) const {
    const auto found = towers.find(m == Modality::video ? Modality::image : m);
    return found != towers.end() ? found->second : rest;
  }

  bool operator==(const TowerFreezing&) const = default;
};

// The freezing a `--freeze` list says (the grammar at the top of this file), starting from
// "everything trains"; items apply in order, so "backbones,image" locks the image tower whole
// and the others but for their projections. Throws tessera::Error naming `where` and the item
// for an unknown one.
inline TowerFreezing parse_tower_freezing(std::string_view spec, const std::string& where) {
  TowerFreezing out;
  const auto tower = [](std::string_view name, Modality& m) {
    for (const Modality candidate : {Modality::text, Modality::image, Modality::audio,
                                     Modality::video}) {
      if (name == modality_name(candidate)) {
        m = candidate == Modality::video ? Modality::image : candidate;
        return true;
      }
    }
    return false;
  };
  std::size_t begin = 0;
  while (begin <= spec.size()) {
    const std::size_t comma = std::min(spec.find(',', begin), spec.size());
    const std::string_view item = spec.substr(begin, comma - begin);
    begin = comma + 1;
    if (item.empty() && spec.empty()) break;
    constexpr std::string_view backbone = ".backbone";
    Modality m{};
    if (item == "towers") {
      out.towers.clear();
      out.rest = TowerTraining::frozen;
    } else if (item == "backbones") {
      out.towers.clear();
      out.rest = TowerTraining::projection;
    } else if (item == "logit_scale") {
      out.logit_scale = false;
    } else if (tower(item, m)) {
      out.towers[m] = TowerTraining::frozen;
    } else if (item.size() > backbone.size() && item.ends_with(backbone) &&
               tower(item.substr(0, item.size() - backbone.size()), m)) {
      out.towers[m] = TowerTraining::projection;
    } else {
      fail(where, ": cannot freeze \"", item, "\": expected a tower (text, image, video, audio), "
           "a tower's backbone (image.backbone: all of it but the projection), towers, "
           "backbones or logit_scale, separated by commas");
    }
  }
  return out;
}

}  // namespace tessera
