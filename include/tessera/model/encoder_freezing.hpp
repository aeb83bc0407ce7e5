#pragma once
// EncoderFreezing: which weights of tessera's own MultiModalEncoder (model/encoder.hpp) a
// fine-tuning run leaves as they are; the counterpart of TowerFreezing (model/tower_freezing.hpp)
// for a pretrained tower model.
//
// The encoder's weights (the SPEC 4 table, model/weights.hpp) fall into parts by name:
//   a modality's inputs  text.token_embed.weight, <m>.patch_embed.*, <m>.pos_embed.weight,
//                        and video's pooler video.pool.* (a custom modality's likewise)
//   the trunk            modality_embed.weight, cls_token, layers.N.*, final_norm.*, router.*:
//                        what every modality shares
//   the projection       proj.weight, which always trains
//   logit_scale
//
// parse_encoder_freezing reads the comma-separated list a command line gives (`--freeze`):
//   text | image | audio | video   that modality's inputs frozen
//   trunk (or backbone)            the trunk frozen
//   backbones                      everything but proj frozen (every modality's inputs, custom
//                                  ones too, and the trunk): LiT's "only the projection trains"
//                                  (Zhai et al. 2022); logit_scale still trains unless named
//   logit_scale                    the logit scale frozen
//
// A frozen weight gets no AdamW state and no update, and its gradient is not part of the
// clipped norm: the step functions (train/step.hpp, grad_cache.hpp, distributed_step.hpp) hand
// AdamW only trained(parameters, freezing). Unlike a frozen tower, a frozen part of this encoder
// still has its gradient computed: the modalities share one trunk, so the backward runs
// through all of it whenever anything below it trains, and the gradient model holds every
// weight (docs/training.md, "Freezing parts of tessera's own encoder").

#include <tessera/core/error.hpp>
#include <tessera/core/modality.hpp>
#include <tessera/core/parameter.hpp>
#include <tessera/model/config.hpp>
#include <tessera/model/weights.hpp>

#include <algorithm>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

// What one item of a `--freeze` list names (the grammar at the top of this file).
enum class EncoderPart {
  text,         // the text modality's inputs
  image,        // the image modality's inputs
  audio,        // the audio modality's inputs
  video,        // the video modality's inputs and pooler
  trunk,        // modality_embed, cls_token, the layers, final_norm, router
  backbones,    // everything but proj (and but logit_scale)
  logit_scale,  // logit_scale
};
inline constexpr EncoderPart encoder_parts[] = {
    EncoderPart::text,  EncoderPart::image,     EncoderPart::audio,      EncoderPart::video,
    EncoderPart::trunk, EncoderPart::backbones, EncoderPart::logit_scale};
inline const char* to_string(EncoderPart p) {
  switch (p) {
    case EncoderPart::text: return "text";
    case EncoderPart::image: return "image";
    case EncoderPart::audio: return "audio";
    case EncoderPart::video: return "video";
    case EncoderPart::trunk: return "trunk";
    case EncoderPart::backbones: return "backbones";
    case EncoderPart::logit_scale: return "logit_scale";
  }
  return "unknown";
}

// The part that names modality m's inputs.
constexpr EncoderPart input_part(Modality m) {
  switch (m) {
    case Modality::text: return EncoderPart::text;
    case Modality::image: return EncoderPart::image;
    case Modality::audio: return EncoderPart::audio;
    case Modality::video: return EncoderPart::video;
  }
  return EncoderPart::text;
}

namespace detail {

// The first component of a weight name ("layers" of "layers.0.attn.q_proj.weight").
inline std::string_view top_level_name(std::string_view weight) {
  return weight.substr(0, weight.find('.'));
}

// Whether a weight whose name starts with `top` (top_level_name) is part of the trunk. These
// names are reserved (config_check.hpp), so no custom modality's weight starts with one.
inline bool is_trunk_weight(std::string_view top) {
  return top == "modality_embed" || top == "cls_token" || top == "layers" ||
         top == "final_norm" || top == "router";
}

}  // namespace detail

struct EncoderFreezing {
  std::set<EncoderPart> parts;  // the parts that do not train; empty: every weight trains

  // Whether the weight named `parameter_name` (a SPEC 4 name, as parameters() gives it) does
  // not train. proj.weight always trains; a custom modality's inputs are frozen by backbones.
  bool frozen(const std::string& parameter_name) const {
    const auto has = [this](EncoderPart p) { return parts.count(p) == 1; };
    if (parameter_name == "proj.weight") return false;
    if (parameter_name == "logit_scale") return has(EncoderPart::logit_scale);
    if (has(EncoderPart::backbones)) return true;
    const std::string_view top = detail::top_level_name(parameter_name);
    if (detail::is_trunk_weight(top)) return has(EncoderPart::trunk);
    for (const Modality m : builtin_modalities) {
      if (top == modality_name(m)) return has(input_part(m));
    }
    return false;  // a custom modality's inputs
  }

  bool operator==(const EncoderFreezing&) const = default;
};

// The freezing a `--freeze` list says (the grammar at the top of this file), starting from
// "everything trains". Every item only adds to what is frozen, so their order does not
// matter. Throws tessera::Error naming `where`, the item and the choices for an unknown one
// (an empty item, as in "text,", too); an empty spec freezes nothing.
inline EncoderFreezing parse_encoder_freezing(std::string_view spec, const std::string& where) {
  EncoderFreezing out;
  std::size_t begin = 0;
  while (begin <= spec.size()) {
    const std::size_t comma = std::min(spec.find(',', begin), spec.size());
    const std::string_view item = spec.substr(begin, comma - begin);
    begin = comma + 1;
    if (item.empty() && spec.empty()) break;
    const auto* named = std::find_if(std::begin(encoder_parts), std::end(encoder_parts),
                                     [item](EncoderPart p) { return item == to_string(p); });
    if (named != std::end(encoder_parts)) {
      out.parts.insert(*named);
    } else if (item == "backbone") {
      out.parts.insert(EncoderPart::trunk);
    } else {
      fail(where, ": cannot freeze \"", item, "\" of tessera's encoder: expected a modality's "
           "inputs (text, image, audio, video), trunk (or backbone: the shared layers, "
           "final_norm, modality_embed, cls_token, router), backbones (everything but proj) "
           "or logit_scale, separated by commas");
    }
  }
  return out;
}

// Throws tessera::Error naming `where` when `f` names a modality the `c` model does not have,
// or leaves none of its weights to train. (proj.weight always trains, so no list of today's
// items leaves nothing; the check keeps the promise for any part the grammar gains.)
inline void validate(const EncoderFreezing& f, const Config& c, const std::string& where) {
  std::string modalities;  // "text, image"
  for (const Modality m : builtin_modalities) {
    if (c.has(m)) modalities += (modalities.empty() ? "" : ", ") + std::string(modality_name(m));
  }
  for (const auto& custom : c.custom) {
    modalities += (modalities.empty() ? "" : ", ") + custom.name;
  }
  for (const Modality m : builtin_modalities) {
    check(c.has(m) || f.parts.count(input_part(m)) == 0, where, ": the model has no ",
          modality_name(m), " inputs to freeze (its modalities: ", modalities, ")");
  }
  bool trains = false;
  for_each_weight(c, [&](const WeightSpec& spec, auto&&) {
    trains = trains || !f.frozen(spec.name);
  }, /*expand_layers=*/false);
  check(trains, where, ": every weight of the model is frozen: nothing to train");
}

// The parameters of `params` that `freezing` trains, in their order: the list AdamW steps.
// Filter a model's parameters() and its gradient model's parameters() alike to get two lists
// of the same tensors in one order. Scalar may be const (a list to save in a checkpoint).
template <class Scalar>
std::vector<Parameter<Scalar>> trained(std::vector<Parameter<Scalar>> params,
                                       const EncoderFreezing& freezing) {
  std::erase_if(params, [&freezing](const Parameter<Scalar>& p) { return freezing.frozen(p.name); });
  return params;
}

}  // namespace tessera
