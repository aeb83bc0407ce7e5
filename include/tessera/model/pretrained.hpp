#pragma once
// Pretrained checkpoints as they are published, loaded into a TowerModel with no conversion
// step (docs/pretrained.md; docs/model-files.md "Towers" for the math):
//
//   hf_clip          config.json (model_type "clip") + model.safetensors with transformers'
//                    CLIPModel names
//   open_clip        open_clip_config.json (model_cfg) + open_clip_model.safetensors with
//                    OpenAI CLIP's names (ViT towers; a ResNet or timm tower is refused)
//   imagebind        config.json (model_type "imagebind" + ImageBindModel's keyword
//                    arguments) + model.safetensors with ImageBind's own names
//   tessera_towers   config.json (model_type "tessera_towers") + model.safetensors: the form
//                    tools/convert_checkpoint.py writes for other families (torchvision's ViT)
//
// detect_model tells them apart (and from tessera's own model directories) by their files,
// and parses the config file once for the loader. Every key that changes the math is read
// or, when tessera cannot compute it, refused by name; keys that do not (a library version,
// a dtype, dropout) are ignored. Where each weight lives in a family's file is said once, as
// CheckpointNames (detail::checkpoint_names): the loaders read through it and
// save_tower_model (model/pretrained_save.hpp) writes through it. Every tensor is checked
// (model/tower_weights.hpp): missing, misshapen, unexpected, non-finite; a linear layer's
// weight may be stored quantized (model/quantized_weights.hpp). to_json writes any
// TowerModelConfig in the native tessera_towers form, which towers_config reads back.

#include <tessera/core/error.hpp>
#include <tessera/io/json.hpp>
#include <tessera/io/read_file.hpp>
#include <tessera/model/model_kind.hpp>
#include <tessera/model/tower.hpp>
#include <tessera/model/tower_model.hpp>
#include <tessera/model/tower_weights.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace tessera {

// Where every weight of a pretrained model lives in its family's weights file: the one
// mapping the loaders read through and save_tower_model (model/pretrained_save.hpp) writes
// through. detail::checkpoint_names gives a directory's.
struct CheckpointNames {
  // One tower: its modality, what messages call it ("the text tower"), its names.
  struct TowerEntry {
    Modality modality;
    std::string what;
    TowerNames names;
  };
  std::string weights_file;        // in the directory: model.safetensors, ...
  std::vector<TowerEntry> towers;  // in the order they are read
  std::string logit_scale;         // the logit scale's tensor, a log (TowerModel::logit_scale)
  bool logit_scale_optional = true;
  // Tensors a file may hold that are no weight of the model (buffers such as position_ids,
  // the towers of modalities tessera does not run): passed over when reading, copied byte for
  // byte when writing.
  std::function<bool(const std::string&)> passed_over;
};

// Calls visit(const WeightSlot<Element>&, const std::string& what) for every weight of
// `model` under `names`: each tower's (model/tower_weights.hpp), then the logit scale, `what`
// saying which tower ("" for the logit scale). ModelT is TowerModel<Scalar> (to fill it) or
// const TowerModel<Scalar> (to write it out).
template <class ModelT, class Visit>
void for_each_model_weight(ModelT& model, const CheckpointNames& names, Visit&& visit) {
  for (const auto& tower : names.towers) {
    for_each_tower_weight(model.towers.at(tower.modality), tower.names,
                          [&](const auto& slot) { visit(slot, tower.what); });
  }
  using Element = std::remove_reference_t<decltype((model.logit_scale))>;  // const for a const model
  WeightSlot<Element> scale{names.logit_scale, {}, {std::span<Element>(&model.logit_scale, 1)}};
  scale.optional = names.logit_scale_optional;
  visit(scale, std::string());
}

namespace detail {

// ImageBind's modalities whose towers tessera does not run; their tensors ("....depth....")
// are passed over.
inline constexpr const char* imagebind_other_modalities[] = {".depth.", ".thermal.", ".imu."};

[[noreturn]] inline void not_pretrained(const ModelDirectory& found) {
  fail(found.dir.string(), ": not a pretrained model directory (no open_clip_config.json, and "
       "no config.json with a model_type of \"clip\", \"imagebind\" or \"tessera_towers\"); a "
       "tessera model loads with load_model");
}

// A JSON object read key by key, each error naming the file and the key's path.
class JsonObject {
 public:
  JsonObject(const nlohmann::json& json, std::string where, std::string path)
      : json_(json), where_(std::move(where)), path_(std::move(path)) {
    check(json_.is_object(), where_, ": ", path_.empty() ? "the top level" : "key \"" + path_ + "\"",
          " is not a JSON object");
  }

  bool has(const std::string& key) const {
    return json_.contains(key) && !json_.at(key).is_null();
  }
  std::string key_name(const std::string& key) const {
    return path_.empty() ? key : path_ + "." + key;
  }
  JsonObject object(const std::string& key) const {
    check(has(key), where_, ": missing key \"", key_name(key), "\"");
    return JsonObject(json_.at(key), where_, key_name(key));
  }

  Index integer(const std::string& key, std::optional<Index> fallback = {}) const {
    if (!has(key)) {
      check(fallback.has_value(), where_, ": missing key \"", key_name(key), "\"");
      return *fallback;
    }
    const auto& v = json_.at(key);
    check(v.is_number_integer() && v.get<std::int64_t>() > 0 &&
              v.get<std::int64_t>() <= (std::int64_t{1} << 31),
          where_, ": key \"", key_name(key), "\": expected a positive integer, got ", json_excerpt(v));
    return v.get<Index>();
  }
  std::int64_t id(const std::string& key, std::int64_t fallback) const {
    if (!has(key)) return fallback;
    const auto& v = json_.at(key);
    check(v.is_number_integer() && v.get<std::int64_t>() >= 0, where_, ": key \"", key_name(key),
          "\": expected a token id (an integer >= 0), got ", json_excerpt(v));
    return v.get<std::int64_t>();
  }
  double number(const std::string& key, double fallback) const {
    if (!has(key)) return fallback;
    const auto& v = json_.at(key);
    check(v.is_number() && std::isfinite(v.get<double>()), where_, ": key \"", key_name(key),
          "\": expected a number, got ", json_excerpt(v));
    return v.get<double>();
  }
  bool boolean(const std::string& key, bool fallback) const {
    if (!has(key)) return fallback;
    const auto& v = json_.at(key);
    check(v.is_boolean(), where_, ": key \"", key_name(key), "\": expected true or false, got ",
          json_excerpt(v));
    return v.get<bool>();
  }
  std::string string(const std::string& key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const auto& v = json_.at(key);
    check(v.is_string(), where_, ": key \"", key_name(key), "\": expected a string, got ",
          json_excerpt(v));
    return v.get<std::string>();
  }
  // Refuses a key whose value asks for something tessera does not compute.
  void refuse_unless(const std::string& key, bool acceptable, const std::string& what) const {
    check(!has(key) || acceptable, where_, ": key \"", key_name(key), "\" = ",
          has(key) ? json_excerpt(json_.at(key)) : std::string(), ": ", what);
  }
  const nlohmann::json& json() const { return json_; }
  const std::string& where() const { return where_; }

 private:
  const nlohmann::json& json_;
  std::string where_;
  std::string path_;
};

// The model of `config` (validated), allocated only when `weights` can hold its weights.
template <class Scalar>
TowerModel<Scalar> allocate(const TowerModelConfig& config, const TensorReader& weights,
                            const std::filesystem::path& config_file) {
  validate(config, config_file.string());  // before parameter_count divides by a stride
  weights.check_room(parameter_count(config), config_file.string());
  // The loader writes every linear weight (a missing one is an error): none is zeroed first.
  return TowerModel<Scalar>(config, config_file.string(), nn::WeightInit::unset);
}

// transformers' hidden_act names (activations.py ACT2FN) that a tower computes.
inline Activation hf_activation(const JsonObject& o, const std::string& key) {
  const std::string name = o.string(key, "quick_gelu");
  if (name == "quick_gelu") return Activation::quick_gelu;
  if (name == "gelu") return Activation::gelu;
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return Activation::gelu_tanh;
  if (name == "relu") return Activation::relu;
  fail(o.where(), ": key \"", o.key_name(key), "\" = \"", name,
       "\": tessera computes quick_gelu, gelu, gelu_new, gelu_pytorch_tanh and relu");
}

// ---- transformers' CLIPModel (configuration_clip.py defaults) ------------------------------

inline TowerModelConfig hf_clip_config(const nlohmann::json& json, const std::string& where) {
  const JsonObject top(json, where, "");
  const Index embed = top.integer("projection_dim", 512);
  TowerModelConfig model;
  model.family = "hf_clip";
  model.embed_dim = embed;
  model.video = true;

  const JsonObject t = top.object("text_config");
  TowerConfig text;
  text.modality = Modality::text;
  text.vocab_size = t.integer("vocab_size", 49408);
  text.width = t.integer("hidden_size", 512);
  text.ffn_dim = t.integer("intermediate_size", 2048);
  text.layers = t.integer("num_hidden_layers", 12);
  text.heads = t.integer("num_attention_heads", 8);
  text.context_length = t.integer("max_position_embeddings", 77);
  text.activation = hf_activation(t, "hidden_act");
  text.norm_eps = t.number("layer_norm_eps", 1e-5);
  text.embed_dim = embed;
  text.causal = true;
  // CLIPTextTransformer.forward: eos_token_id 2 (configs written before the rule was fixed)
  // pools at the largest id; any other at the first eos_token_id.
  text.eos_token_id = t.id("eos_token_id", 49407);
  text.pooling = text.eos_token_id == 2 ? TowerPooling::eot_argmax : TowerPooling::eos_first;
  text.cls_token = false;
  model.towers[Modality::text] = text;

  const JsonObject v = top.object("vision_config");
  TowerConfig vision;
  vision.modality = Modality::image;
  vision.width = v.integer("hidden_size", 768);
  vision.ffn_dim = v.integer("intermediate_size", 3072);
  vision.layers = v.integer("num_hidden_layers", 12);
  vision.heads = v.integer("num_attention_heads", 12);
  vision.channels = v.integer("num_channels", 3);
  vision.height = vision.width_in = v.integer("image_size", 224);
  vision.kernel = vision.stride = v.integer("patch_size", 32);
  vision.activation = hf_activation(v, "hidden_act");
  vision.norm_eps = v.number("layer_norm_eps", 1e-5);
  vision.embed_dim = embed;
  vision.pre_norm = true;
  model.towers[Modality::image] = vision;
  return model;
}

// transformers' CLIPModel names (modeling_clip.py): separate q/k/v, nn.Linear projections.
inline CheckpointNames hf_clip_names() {
  CheckpointNames out;
  out.weights_file = weights_file_name;
  for (const char* side : {"text", "vision"}) {
    const std::string m = std::string(side) + "_model.";
    const bool text = side == std::string("text");
    TowerNames names;
    names.token_embedding = m + "embeddings.token_embedding.weight";
    names.positional_embedding = m + "embeddings.position_embedding.weight";
    names.class_embedding = m + "embeddings.class_embedding";
    names.patch_weight = m + "embeddings.patch_embedding.weight";
    names.ln_pre = m + "pre_layrnorm";  // transformers' spelling
    names.ln_post = text ? m + "final_layer_norm" : m + "post_layernorm";
    names.proj = text ? "text_projection.weight" : "visual_projection.weight";
    names.block_prefix = [m](Index l) { return m + "encoder.layers." + std::to_string(l) + "."; };
    names.norm1 = "layer_norm1";
    names.norm2 = "layer_norm2";
    names.packed_qkv = false;
    names.attn = "self_attn";
    names.fc1 = "mlp.fc1";
    names.fc2 = "mlp.fc2";
    out.towers.push_back({text ? Modality::text : Modality::image,
                          std::string("the ") + side + " tower", std::move(names)});
  }
  out.logit_scale = "logit_scale";
  out.logit_scale_optional = true;
  out.passed_over = [](const std::string& name) {  // a buffer older transformers saved
    return name == "text_model.embeddings.position_ids" ||
           name == "vision_model.embeddings.position_ids";
  };
  return out;
}

// ---- open_clip (OpenAI CLIP's names; open_clip's CLIPVisionCfg / CLIPTextCfg defaults) ----

// A tower's LayerNorm eps: its "norm_kwargs" {"eps": x} (open_clip passes them to every
// LayerNorm of the tower), else PyTorch's 1e-5. Any other norm option is refused.
inline double norm_eps(const JsonObject& cfg) {
  if (!cfg.has("norm_kwargs")) return 1e-5;
  const JsonObject kwargs = cfg.object("norm_kwargs");
  for (const auto& item : kwargs.json().items()) {
    check(item.key() == "eps", kwargs.where(), ": key \"", kwargs.key_name(item.key()),
          "\": only the norms' eps is supported");
  }
  const double eps = kwargs.number("eps", 1e-5);
  check(eps > 0, kwargs.where(), ": key \"", kwargs.key_name("eps"), "\" must be positive");
  return eps;
}

inline TowerModelConfig open_clip_config(const nlohmann::json& json, const std::string& where) {
  const JsonObject top(json, where, "");
  const JsonObject cfg = top.object("model_cfg");
  cfg.refuse_unless("multimodal_cfg", false, "a CoCa model (a text decoder) is not supported");
  const Index embed = cfg.integer("embed_dim");
  const bool quick = cfg.boolean("quick_gelu", false);
  TowerModelConfig model;
  model.family = "open_clip";
  model.embed_dim = embed;
  model.video = true;

  const JsonObject v = cfg.object("vision_cfg");
  check(!v.has("layers") || !v.json().at("layers").is_array(), where,
        ": key \"model_cfg.vision_cfg.layers\" is a list: a ResNet image tower (ModifiedResNet), "
        "which tessera does not run; ViT towers only");
  v.refuse_unless("timm_model_name", false, "a timm image tower is not supported; ViT towers only");
  v.refuse_unless("attentional_pool", !v.boolean("attentional_pool", false),
                  "attentional pooling is not supported");
  v.refuse_unless("ls_init_value", false, "layer scale is not supported");
  v.refuse_unless("pos_embed_type", v.string("pos_embed_type", "learnable") == "learnable",
                  "only learned positional embeddings are supported");
  v.refuse_unless("pool_type", v.string("pool_type", "tok") == "tok",
                  "only the class token's pooling (\"tok\") is supported");
  v.refuse_unless("act_kwargs", false, "activation options are not supported");
  TowerConfig vision;
  vision.norm_eps = norm_eps(v);
  vision.modality = Modality::image;
  vision.width = v.integer("width", 768);
  vision.layers = v.integer("layers", 12);
  vision.heads = vision.width / v.integer("head_width", 64);
  vision.ffn_dim = static_cast<Index>(vision.width * v.number("mlp_ratio", 4.0));
  vision.kernel = vision.stride = v.integer("patch_size", 16);
  vision.height = vision.width_in = v.integer("image_size", 224);
  vision.pre_norm = !v.boolean("no_ln_pre", false);
  vision.activation = quick ? Activation::quick_gelu : Activation::gelu;
  vision.embed_dim = embed;
  model.towers[Modality::image] = vision;

  if (cfg.has("text_cfg")) {
    const JsonObject t = cfg.object("text_cfg");
    t.refuse_unless("hf_model_name", false, "a Hugging Face text tower is not supported");
    t.refuse_unless("ls_init_value", false, "layer scale is not supported");
    t.refuse_unless("embed_cls", !t.boolean("embed_cls", false), "a text class token is not supported");
    t.refuse_unless("pool_type", t.string("pool_type", "argmax") == "argmax",
                    "only pooling at the largest id (\"argmax\") is supported");
    t.refuse_unless("proj_type", t.string("proj_type", "linear") == "linear",
                    "only a linear projection is supported");
    t.refuse_unless("act_kwargs", false, "activation options are not supported");
    TowerConfig text;
    text.norm_eps = norm_eps(t);
    text.modality = Modality::text;
    text.context_length = t.integer("context_length", 77);
    text.vocab_size = t.integer("vocab_size", 49408);
    text.width = t.integer("width", 512);
    text.heads = t.integer("heads", 8);
    text.layers = t.integer("layers", 12);
    text.ffn_dim = static_cast<Index>(text.width * t.number("mlp_ratio", 4.0));
    text.causal = !t.boolean("no_causal_mask", false);
    text.proj_bias = t.boolean("proj_bias", false);
    text.pooling = TowerPooling::eot_argmax;
    text.cls_token = false;
    text.activation = vision.activation;
    text.embed_dim = embed;
    model.towers[Modality::text] = text;
  }
  return model;
}

// OpenAI CLIP's names as open_clip keeps them: packed in_proj, projections stored [D, E]
// (a text projection with a bias is an nn.Linear [E, D]). `custom_text`: CustomTextCLIP keeps
// its text tower under "text."; CLIP at the top level.
inline CheckpointNames open_clip_names(const TowerModelConfig& config, bool custom_text) {
  CheckpointNames out;
  out.weights_file = open_clip_weights_name;
  const auto block_names = [](TowerNames& names, const std::string& m) {
    names.block_prefix = [m](Index l) {
      return m + "transformer.resblocks." + std::to_string(l) + ".";
    };
    names.norm1 = "ln_1";
    names.norm2 = "ln_2";
    names.attn = "attn";
    names.fc1 = "mlp.c_fc";
    names.fc2 = "mlp.c_proj";
  };
  {
    TowerNames names;
    names.patch_weight = "visual.conv1.weight";
    names.class_embedding = "visual.class_embedding";
    names.positional_embedding = "visual.positional_embedding";
    names.ln_pre = "visual.ln_pre";
    names.ln_post = "visual.ln_post";
    names.proj = "visual.proj";
    names.proj_transposed = true;
    block_names(names, "visual.");
    out.towers.push_back({Modality::image, "the image tower", std::move(names)});
  }
  std::string attn_mask;
  if (config.has(Modality::text)) {
    const std::string m = custom_text ? "text." : "";
    TowerNames names;
    names.token_embedding = m + "token_embedding.weight";
    names.positional_embedding = m + "positional_embedding";
    names.ln_post = m + "ln_final";
    const bool bias = config.towers.at(Modality::text).proj_bias;
    names.proj = bias ? m + "text_projection.weight" : m + "text_projection";
    names.proj_bias = m + "text_projection.bias";
    names.proj_transposed = !bias;  // a Parameter [D, E], or an nn.Linear [E, D]
    block_names(names, m);
    out.towers.push_back({Modality::text, "the text tower", std::move(names)});
    attn_mask = m + "attn_mask";
  }
  out.logit_scale = "logit_scale";
  out.logit_scale_optional = true;
  out.passed_over = [attn_mask](const std::string& name) {  // the causal mask, a buffer
    return !attn_mask.empty() && name == attn_mask;
  };
  return out;
}

// ---- ImageBind (imagebind/models/imagebind_model.py, ImageBindModel's defaults) -------------

// ImageBind's constructor arguments that tessera reads, each with its default; the depth,
// thermal and IMU ones are accepted (their towers' weights are read past, not run).
inline TowerModelConfig imagebind_config(const nlohmann::json& json, const std::string& where) {
  const JsonObject top(json, where, "");
  static const std::set<std::string> known = {
      "model_type", "video_frames", "kernel_size", "audio_kernel_size", "audio_stride",
      "out_embed_dim", "vision_embed_dim", "vision_num_blocks", "vision_num_heads",
      "audio_embed_dim", "audio_num_blocks", "audio_num_heads", "audio_num_mel_bins",
      "audio_target_len", "audio_drop_path", "text_embed_dim", "text_num_blocks",
      "text_num_heads", "depth_embed_dim", "depth_kernel_size", "depth_num_blocks",
      "depth_num_heads", "depth_drop_path", "thermal_embed_dim", "thermal_kernel_size",
      "thermal_num_blocks", "thermal_num_heads", "thermal_drop_path", "imu_embed_dim",
      "imu_kernel_size", "imu_num_blocks", "imu_num_heads", "imu_drop_path"};
  for (const auto& item : json.items()) {
    check(known.count(item.key()) == 1, where, ": unknown key \"", item.key(),
          "\" (not an argument of ImageBindModel)");
  }
  const Index embed = top.integer("out_embed_dim", 768);
  const Index frames = top.integer("video_frames", 2);
  std::array<Index, 3> kernel{2, 14, 14};
  if (top.has("kernel_size")) {
    const auto& k = json.at("kernel_size");
    check(k.is_array() && k.size() == 3 && std::all_of(k.begin(), k.end(), [](const auto& v) {
            return v.is_number_integer() && v.template get<std::int64_t>() > 0 &&
                   v.template get<std::int64_t>() <= 4096;
          }),
          where, ": key \"kernel_size\": expected [time, height, width] positive integers, got ",
          json_excerpt(k));
    for (std::size_t i = 0; i < 3; ++i) kernel[i] = k[i].get<Index>();
  }
  check(kernel[1] == kernel[2], where, ": key \"kernel_size\": tessera takes square patches, got ",
        kernel[1], " x ", kernel[2]);
  check(frames == kernel[0], where, ": video_frames ", frames, " with a time kernel of ",
        kernel[0], ": tessera runs clips of exactly one time step (video_frames == kernel_size[0])");
  // The blocks', ln_pre's and the heads' LayerNorms: eps 1e-6 (SimpleTransformer's
  // _LAYER_NORM and the heads'); the audio stem's: nn.LayerNorm's default 1e-5.
  constexpr double eps = 1e-6;
  TowerModelConfig model;
  model.family = "imagebind";
  model.embed_dim = embed;
  model.video = true;
  model.video_clip_frames = frames;
  const auto trunk = [&](const std::string& name, Index width, Index blocks, Index heads) {
    TowerConfig t;
    t.width = top.integer(name + "_embed_dim", width);
    t.layers = top.integer(name + "_num_blocks", blocks);
    t.heads = top.integer(name + "_num_heads", heads);
    t.ffn_dim = 4 * t.width;  // mlp_ratio 4
    t.activation = Activation::gelu;
    t.norm_eps = eps;
    t.embed_dim = embed;
    return t;
  };
  TowerConfig vision = trunk("vision", 1024, 24, 16);
  vision.modality = Modality::image;
  vision.height = vision.width_in = 224;  // img_size [3, video_frames, 224, 224]
  vision.kernel = vision.stride = kernel[1];
  vision.clip_frames = kernel[0];
  vision.pre_norm = true;
  model.towers[Modality::image] = vision;

  TowerConfig text = trunk("text", 768, 12, 12);
  text.modality = Modality::text;
  text.vocab_size = 49408;  // TextPreprocessor(vocab_size=49408, context_length=77)
  text.context_length = 77;
  text.causal = true;
  text.pooling = TowerPooling::eot_argmax;
  text.cls_token = false;
  model.towers[Modality::text] = text;

  TowerConfig audio = trunk("audio", 768, 12, 12);
  audio.modality = Modality::audio;
  audio.channels = 1;
  audio.height = top.integer("audio_num_mel_bins", 128);
  audio.width_in = top.integer("audio_target_len", 204);
  audio.kernel = top.integer("audio_kernel_size", 16);
  audio.stride = top.integer("audio_stride", 10);
  audio.stem_norm = true;
  audio.stem_norm_eps = 1e-5;
  audio.bias_kv = true;
  model.towers[Modality::audio] = audio;
  return model;
}

// ImageBind's own names (imagebind_model.py): modality preprocessors, trunks and heads.
inline CheckpointNames imagebind_names() {
  CheckpointNames out;
  out.weights_file = weights_file_name;
  const auto trunk_names = [](TowerNames& names, const std::string& m) {
    const std::string trunk = "modality_trunks." + m + ".";
    names.ln_pre = trunk + "pre_transformer_layer.0";
    names.block_prefix = [trunk](Index l) { return trunk + "blocks." + std::to_string(l) + "."; };
    names.norm1 = "norm_1";
    names.norm2 = "norm_2";
    names.attn = "attn";
    names.fc1 = "mlp.fc1";
    names.fc2 = "mlp.fc2";
  };
  {
    TowerNames names;
    const std::string pre = "modality_preprocessors.vision.";
    names.patch_weight = pre + "rgbt_stem.proj.1.weight";  // after PadIm2Video
    names.class_embedding = pre + "cls_token";
    names.positional_embedding = pre + "pos_embedding_helper.pos_embed";
    names.ln_post = "modality_heads.vision.0";
    names.proj = "modality_heads.vision.2.weight";
    trunk_names(names, "vision");
    out.towers.push_back({Modality::image, "the vision tower", std::move(names)});
  }
  {
    TowerNames names;
    const std::string pre = "modality_preprocessors.text.";
    names.token_embedding = pre + "token_embedding.weight";
    names.positional_embedding = pre + "pos_embed";
    names.ln_post = "modality_heads.text.proj.0";
    names.proj = "modality_heads.text.proj.1.weight";
    trunk_names(names, "text");
    out.towers.push_back({Modality::text, "the text tower", std::move(names)});
  }
  {
    TowerNames names;
    const std::string pre = "modality_preprocessors.audio.";
    names.patch_weight = pre + "rgbt_stem.proj.weight";
    names.stem_norm = pre + "rgbt_stem.norm_layer";
    names.class_embedding = pre + "cls_token";
    names.positional_embedding = pre + "pos_embedding_helper.pos_embed";
    names.ln_post = "modality_heads.audio.0";
    names.proj = "modality_heads.audio.2.weight";
    trunk_names(names, "audio");
    out.towers.push_back({Modality::audio, "the audio tower", std::move(names)});
  }
  // The text postprocessor's learned scale multiplies text embeddings: CLIP's logit scale.
  out.logit_scale = "modality_postprocessors.text.1.log_logit_scale";
  out.logit_scale_optional = false;
  out.passed_over = [](const std::string& name) {
    if (name == "modality_preprocessors.text.mask") return true;  // the causal mask, a buffer
    if (name == "modality_postprocessors.audio.1.log_logit_scale") return true;  // fixed (20)
    // Depth, thermal and IMU: every ImageBind checkpoint carries them; tessera does not run
    // those towers (yet), so their tensors are passed over.
    if (name.rfind("modality_", 0) != 0) return false;
    return std::any_of(std::begin(imagebind_other_modalities),
                       std::end(imagebind_other_modalities),
                       [&](const char* m) { return name.find(m) != std::string::npos; });
  };
  return out;
}

// ---- tessera_towers: the native form (docs/model-files.md "Towers") -------------------------

// One tower of the native form (docs/model-files.md "tessera_towers"): the keys of `o`, a
// tower object, projecting to embed_dim values. Checked key by key here; validate(TowerConfig)
// checks the whole.
inline TowerConfig tower_config(const JsonObject& o, Index embed_dim) {
  TowerConfig t;
  const std::string modality = o.string("modality", "");
  if (modality == "text") {
    t.modality = Modality::text;
  } else if (modality == "image") {
    t.modality = Modality::image;
  } else if (modality == "audio") {
    t.modality = Modality::audio;
  } else {
    fail(o.where(), ": key \"", o.key_name("modality"), "\": expected \"text\", \"image\" or "
         "\"audio\", got \"", modality, "\"");
  }
  t.width = o.integer("width");
  t.layers = o.integer("layers");
  t.heads = o.integer("heads");
  t.ffn_dim = o.integer("ffn_dim");
  t.embed_dim = embed_dim;
  const std::string act = o.string("activation", "gelu");
  const auto found = std::find_if(std::begin(activation_kinds), std::end(activation_kinds),
                                  [&](Activation a) { return act == to_string(a); });
  check(found != std::end(activation_kinds), o.where(), ": key \"", o.key_name("activation"),
        "\": unknown activation \"", act, "\"");
  t.activation = *found;
  t.norm_eps = o.number("norm_eps", 1e-5);
  t.pre_norm = o.boolean("pre_norm", false);
  t.bias_kv = o.boolean("bias_kv", false);
  t.causal = o.boolean("causal", false);
  t.proj_bias = o.boolean("proj_bias", false);
  const std::string pooling = o.string("pooling", t.modality == Modality::text ? "eot_argmax" : "cls");
  const auto kind = std::find_if(std::begin(tower_pooling_kinds), std::end(tower_pooling_kinds),
                                 [&](TowerPooling p) { return pooling == to_string(p); });
  check(kind != std::end(tower_pooling_kinds), o.where(), ": key \"", o.key_name("pooling"),
        "\": expected \"cls\", \"eot_argmax\" or \"eos_first\", got \"", pooling, "\"");
  t.pooling = *kind;
  t.eos_token_id = o.id("eos_token_id", -1);
  if (t.modality == Modality::text) {
    t.vocab_size = o.integer("vocab_size");
    t.context_length = o.integer("context_length");
    t.cls_token = false;
  } else if (t.modality == Modality::image) {
    t.height = t.width_in = o.integer("image_size");
    t.kernel = t.stride = o.integer("patch_size");
    t.channels = o.integer("channels", 3);
    t.clip_frames = o.integer("clip_frames", 1);
    t.conv_bias = o.boolean("conv_bias", false);
    t.cls_token = o.boolean("cls_token", true);
  } else {
    t.channels = 1;
    t.height = o.integer("n_mels");
    t.width_in = o.integer("target_frames");
    t.kernel = o.integer("kernel");
    t.stride = o.integer("stride");
    t.stem_norm = o.boolean("stem_norm", false);
    t.stem_norm_eps = o.number("stem_norm_eps", 1e-5);
    t.conv_bias = o.boolean("conv_bias", false);
    t.cls_token = o.boolean("cls_token", true);
  }
  return t;
}

inline TowerModelConfig towers_config(const nlohmann::json& json, const std::string& where) {
  const JsonObject top(json, where, "");
  TowerModelConfig model;
  model.family = "tessera_towers";
  model.embed_dim = top.integer("embed_dim");
  const JsonObject towers = top.object("towers");
  for (const auto& item : towers.json().items()) {
    const TowerConfig t = tower_config(towers.object(item.key()), model.embed_dim);
    check(model.towers.count(t.modality) == 0, where, ": two towers of modality ",
          modality_name(t.modality));
    model.towers[t.modality] = t;
    model.tower_names[t.modality] = item.key();
  }
  if (top.has("video")) {
    const JsonObject v = top.object("video");
    check(v.string("tower", "vision") == model.tower_names[Modality::image], where,
          ": key \"video.tower\" names no image tower");
    model.video = true;
    model.video_clip_frames = v.integer("clip_frames", 1);
  }
  return model;
}

}  // namespace detail

// The native tessera_towers form of `config` (docs/model-files.md "tessera_towers"), which
// detail::towers_config reads back: towers_config(to_json(c)) == c for a tessera_towers
// config; for another family's, the same towers, embedding and video under the family
// "tessera_towers" (the JSON says the math; the family's input preparation is not in it).
// Each tower is named as in c.tower_names, or by its modality ("text", "image", "audio").
// Throws tessera::Error for a config validate refuses, and for an image tower the form
// cannot say: a non-square image, or a stem norm.
inline nlohmann::json to_json(const TowerModelConfig& config) {
  const std::string where = "to_json(TowerModelConfig)";
  validate(config, where);
  const auto name_of = [&](Modality m) {
    const auto named = config.tower_names.find(m);
    return named != config.tower_names.end() ? named->second : std::string(modality_name(m));
  };
  nlohmann::json towers = nlohmann::json::object();
  for (const auto& [m, t] : config.towers) {
    nlohmann::json o = {{"modality", modality_name(t.modality)},
                        {"width", t.width},
                        {"layers", t.layers},
                        {"heads", t.heads},
                        {"ffn_dim", t.ffn_dim},
                        {"activation", to_string(t.activation)},
                        {"norm_eps", t.norm_eps},
                        {"pre_norm", t.pre_norm},
                        {"bias_kv", t.bias_kv},
                        {"causal", t.causal},
                        {"proj_bias", t.proj_bias},
                        {"pooling", to_string(t.pooling)}};
    if (t.eos_token_id >= 0) o["eos_token_id"] = t.eos_token_id;
    if (t.is_text()) {
      o["vocab_size"] = t.vocab_size;
      o["context_length"] = t.context_length;
    } else if (t.modality == Modality::image) {
      check(t.height == t.width_in, where, ": the image tower takes ", t.height, " x ",
            t.width_in, " images; tessera_towers' image_size is square");
      check(!t.stem_norm, where, ": the image tower has a stem norm, which tessera_towers' "
            "image towers do not have");
      o["image_size"] = t.height;
      o["patch_size"] = t.kernel;
      o["channels"] = t.channels;
      o["clip_frames"] = t.clip_frames;
      o["conv_bias"] = t.conv_bias;
      o["cls_token"] = t.cls_token;
    } else {
      o["n_mels"] = t.height;
      o["target_frames"] = t.width_in;
      o["kernel"] = t.kernel;
      o["stride"] = t.stride;
      o["stem_norm"] = t.stem_norm;
      o["stem_norm_eps"] = t.stem_norm_eps;
      o["conv_bias"] = t.conv_bias;
      o["cls_token"] = t.cls_token;
    }
    towers[name_of(m)] = std::move(o);
  }
  nlohmann::json json = {{"model_type", to_string(ModelKind::tessera_towers)},
                         {"embed_dim", config.embed_dim},
                         {"towers", std::move(towers)}};
  if (config.video) {
    json["video"] = {{"tower", name_of(Modality::image)},
                     {"clip_frames", config.video_clip_frames}};
  }
  return json;
}

// `config` in the native tessera_towers form: the same towers, embedding and video, the
// family "tessera_towers" and every tower named (tower_names, or its modality's name).
// Throws tessera::Error naming `where` when the form cannot say the model exactly (to_json's
// refusals, or a tower whose config does not read back the same).
inline TowerModelConfig native_towers_config(const TowerModelConfig& config,
                                             const std::string& where) {
  TowerModelConfig native = config;
  native.family = "tessera_towers";
  for (const auto& entry : config.towers) native.tower_names[entry.first] = config.name_of(entry.first);
  const nlohmann::json json = to_json(native);
  check(detail::towers_config(json, where) == native, where, ": the ", config.family,
        " model's towers have no exact tessera_towers form");
  return native;
}

// A tower of the native form's keys (docs/model-files.md "tessera_towers": modality, width,
// layers, heads, ffn_dim, ...), read from a JSON object, projecting to embed_dim values; a key
// the form does not have is refused. Throws tessera::Error naming `where` and the key.
inline TowerConfig tower_config_from_json(const nlohmann::json& json, Index embed_dim,
                                          const std::string& where) {
  static const std::set<std::string> known = {
      "modality", "width", "layers", "heads", "ffn_dim", "activation", "norm_eps", "pre_norm",
      "bias_kv", "causal", "proj_bias", "pooling", "eos_token_id", "vocab_size",
      "context_length", "image_size", "patch_size", "channels", "clip_frames", "conv_bias",
      "cls_token", "n_mels", "target_frames", "kernel", "stride", "stem_norm", "stem_norm_eps"};
  const detail::JsonObject o(json, where, "");
  for (const auto& item : json.items()) {
    check(known.count(item.key()) == 1, where, ": unknown key \"", item.key(), "\" (not a "
          "tessera_towers tower key: docs/model-files.md)");
  }
  const TowerConfig tower = detail::tower_config(o, embed_dim);
  validate(tower, where);
  return tower;
}

// The tower ImageBind gives a new modality, projecting to embed_dim values: for audio,
// imagebind_huge's audio tower (ImageBindModel's defaults: 768 wide, 12 blocks of 12 heads,
// 128 mel bins x 204 frames cut into 16 x 16 patches at stride 10, a LayerNorm after the
// patches, add_bias_kv). The other built-in modalities have no such default: give their keys
// (tower_config_from_json).
inline TowerConfig imagebind_tower(Modality m, Index embed_dim) {
  check(m == Modality::audio, "ImageBind's new towers: ", modality_name(m), " has no default "
        "tower (only audio does); give its keys");
  return detail::imagebind_config(nlohmann::json{{"out_embed_dim", embed_dim}},
                                  "ImageBind's defaults").towers.at(Modality::audio);
}

// Adds a new tower of `tower`'s modality to `model`, its weights random (Tower::init_random
// with `seed`), projecting into the model's embedding space: ImageBind's binding of a new
// modality, trained against the model's frozen towers. The model becomes a tessera_towers
// one (native_towers_config; save_towers_model writes it), the new tower named by its
// modality. Throws tessera::Error, the model unchanged, when the model already has a tower
// of that modality, the tower's embed_dim is not the model's, or the native form cannot say
// the model.
template <class Scalar>
void add_tower(TowerModel<Scalar>& model, const TowerConfig& tower, std::uint64_t seed) {
  const std::string where = std::string("add_tower (a new ") + modality_name(tower.modality) + " tower)";
  check(model.config.towers.count(tower.modality) == 0, where, ": the ", model.config.family,
        " model has a ", modality_name(tower.modality), " tower already");
  check(tower.embed_dim == model.config.embed_dim, where, ": the tower projects to ",
        tower.embed_dim, " values, the model's embedding has ", model.config.embed_dim);
  TowerModelConfig config = model.config;
  config.towers[tower.modality] = tower;
  config.tower_names[tower.modality] = modality_name(tower.modality);
  config = native_towers_config(config, where);
  Tower<Scalar> added(tower, where);
  added.init_random(seed);
  model.towers.emplace(tower.modality, std::move(added));
  model.config = std::move(config);
}

namespace detail {

// The native names (docs/model-files.md "tessera_towers"): each tower under its name, OpenAI
// CLIP's block names, nn.Linear projections.
inline CheckpointNames towers_names(const TowerModelConfig& config) {
  CheckpointNames out;
  out.weights_file = weights_file_name;
  for (const auto& [m, tower] : config.towers) {
    const std::string p = config.tower_names.at(m) + ".";
    TowerNames names;
    names.token_embedding = p + "token_embedding.weight";
    names.positional_embedding = p + "positional_embedding";
    names.class_embedding = p + "class_embedding";
    names.patch_weight = p + "conv1.weight";
    names.patch_bias = p + "conv1.bias";
    names.stem_norm = p + "stem_norm";
    names.ln_pre = p + "ln_pre";
    names.ln_post = p + "ln_post";
    names.proj = p + "proj.weight";
    names.proj_bias = p + "proj.bias";
    names.block_prefix = [p](Index l) {
      return p + "transformer.resblocks." + std::to_string(l) + ".";
    };
    names.norm1 = "ln_1";
    names.norm2 = "ln_2";
    names.attn = "attn";
    names.fc1 = "mlp.c_fc";
    names.fc2 = "mlp.c_proj";
    out.towers.push_back({m, "the " + config.tower_names.at(m) + " tower", std::move(names)});
  }
  out.logit_scale = "logit_scale";
  out.logit_scale_optional = true;
  out.passed_over = [](const std::string&) { return false; };
  return out;
}

// The kind's config of a directory detect_model found (its config file parsed), validated
// by the kind's reader as the loader reads it.
inline TowerModelConfig pretrained_config(const ModelDirectory& found) {
  const std::string where = found.config_file.string();
  switch (found.kind) {
    case ModelKind::hf_clip: return hf_clip_config(*found.config, where);
    case ModelKind::open_clip: return open_clip_config(*found.config, where);
    case ModelKind::imagebind: return imagebind_config(*found.config, where);
    case ModelKind::tessera_towers: return towers_config(*found.config, where);
    case ModelKind::tessera: break;
  }
  not_pretrained(found);
}

// Where the weights of a model of `config` live in the kind of `found`.
inline CheckpointNames checkpoint_names(const ModelDirectory& found,
                                        const TowerModelConfig& config) {
  switch (found.kind) {
    case ModelKind::hf_clip: return hf_clip_names();
    case ModelKind::open_clip: {
      const JsonObject top(*found.config, found.config_file.string(), "");
      return open_clip_names(config, top.object("model_cfg").boolean("custom_text", false));
    }
    case ModelKind::imagebind: return imagebind_names();
    case ModelKind::tessera_towers: return towers_names(config);
    case ModelKind::tessera: break;
  }
  not_pretrained(found);
}

// Reads every weight of `model` under `names`, passes over the tensors names.passed_over
// accepts and refuses any other (TensorReader::finish).
template <class Scalar>
void read_pretrained_weights(TensorReader& reader, TowerModel<Scalar>& model,
                             const CheckpointNames& names) {
  std::set<std::string> quantizable;  // the linear layers' tensors, which may be stored quantized
  for_each_model_weight(model, names, [&](const WeightSlot<Scalar>& slot, const std::string&) {
    if (!slot.layers.empty()) quantizable.insert(slot.name);
  });
  reader.check_quantized_names(quantizable);
  for_each_model_weight(model, names, [&](const WeightSlot<Scalar>& slot, const std::string& what) {
    reader.set_context(what);
    reader.read(slot);
  });
  reader.set_context({});
  for (const auto& name : reader.file().names()) {
    if (names.passed_over(name)) reader.ignore(name);
  }
  reader.finish();
}

// The model of a pretrained directory, found.config parsed.
template <class Scalar>
TowerModel<Scalar> load_pretrained(const ModelDirectory& found) {
  const TowerModelConfig config = pretrained_config(found);
  const CheckpointNames names = checkpoint_names(found, config);
  TensorReader reader(found.dir / names.weights_file);
  reader.set_quantized_model(
      config_quantization(*found.config, found.config_file.string()).has_value());
  TowerModel<Scalar> model = allocate<Scalar>(config, reader, found.config_file);
  read_pretrained_weights(reader, model, names);
  return model;
}

}  // namespace detail

// The pretrained model of a directory detect_model found (any kind but tessera's own, which
// load_model reads), from the config file it parsed; one it could not parse is read again
// here, to name the problem.
template <class Scalar = float>
TowerModel<Scalar> load_tower_model(ModelDirectory found) {
  if (found.kind == ModelKind::tessera) detail::not_pretrained(found);
  if (!found.config) found.config = detail::read_json_file(found.config_file);
  return detail::load_pretrained<Scalar>(found);
}

// The pretrained model of directory `dir`.
template <class Scalar = float>
TowerModel<Scalar> load_tower_model(const std::filesystem::path& dir) {
  return load_tower_model<Scalar>(detect_model(dir));
}

}  // namespace tessera
