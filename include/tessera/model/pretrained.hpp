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
// a dtype, dropout) are ignored. Every tensor is checked (model/tower_weights.hpp): missing,
// misshapen, unexpected, non-finite. to_json writes any TowerModelConfig in the native
// tessera_towers form, which towers_config reads back.

#include <tessera/core/error.hpp>
#include <tessera/io/json.hpp>
#include <tessera/io/read_file.hpp>
#include <tessera/model/model_kind.hpp>
#include <tessera/model/tower.hpp>
#include <tessera/model/tower_model.hpp>
#include <tessera/model/tower_weights.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <algorithm>
#include <array>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

namespace detail {

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
  return TowerModel<Scalar>(config, config_file.string());
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

// Each loader takes what detect_model found, its config file parsed (load_tower_model sees
// to that).
template <class Scalar>
TowerModel<Scalar> load_hf_clip(const ModelDirectory& found) {
  const auto& config_file = found.config_file;
  const TowerModelConfig config = hf_clip_config(*found.config, config_file.string());
  TensorReader reader(found.dir / weights_file_name);
  TowerModel<Scalar> model = allocate<Scalar>(config, reader, config_file);
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
    reader.set_context(std::string("the ") + side + " tower");
    read_tower(reader, model.towers.at(text ? Modality::text : Modality::image), names);
    reader.ignore(m + "embeddings.position_ids");  // a buffer older transformers saved
  }
  reader.set_context({});
  if (reader.contains("logit_scale")) {
    reader.read("logit_scale", {}, &model.logit_scale);
  }
  reader.finish();
  return model;
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

template <class Scalar>
TowerModel<Scalar> load_open_clip(const ModelDirectory& found) {
  const auto& config_file = found.config_file;
  const nlohmann::json& json = *found.config;
  const TowerModelConfig config = open_clip_config(json, config_file.string());
  TensorReader reader(found.dir / open_clip_weights_name);
  TowerModel<Scalar> model = allocate<Scalar>(config, reader, config_file);
  // CustomTextCLIP keeps its text tower under "text."; CLIP at the top level.
  const bool custom_text =
      JsonObject(json, config_file.string(), "").object("model_cfg").boolean("custom_text", false);
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
    reader.set_context("the image tower");
    read_tower(reader, model.towers.at(Modality::image), names);
  }
  if (model.has(Modality::text)) {
    const std::string m = custom_text ? "text." : "";
    TowerNames names;
    names.token_embedding = m + "token_embedding.weight";
    names.positional_embedding = m + "positional_embedding";
    names.ln_post = m + "ln_final";
    const bool bias = model.towers.at(Modality::text).config.proj_bias;
    names.proj = bias ? m + "text_projection.weight" : m + "text_projection";
    names.proj_bias = m + "text_projection.bias";
    names.proj_transposed = !bias;  // a Parameter [D, E], or an nn.Linear [E, D]
    block_names(names, m);
    reader.set_context("the text tower");
    read_tower(reader, model.towers.at(Modality::text), names);
    reader.ignore(m + "attn_mask");
  }
  reader.set_context({});
  if (reader.contains("logit_scale")) reader.read("logit_scale", {}, &model.logit_scale);
  reader.finish();
  return model;
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

template <class Scalar>
TowerModel<Scalar> load_imagebind(const ModelDirectory& found) {
  const auto& config_file = found.config_file;
  const TowerModelConfig config = imagebind_config(*found.config, config_file.string());
  TensorReader reader(found.dir / weights_file_name);
  TowerModel<Scalar> model = allocate<Scalar>(config, reader, config_file);
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
    reader.set_context("the vision tower");
    read_tower(reader, model.towers.at(Modality::image), names);
  }
  {
    TowerNames names;
    const std::string pre = "modality_preprocessors.text.";
    names.token_embedding = pre + "token_embedding.weight";
    names.positional_embedding = pre + "pos_embed";
    names.ln_post = "modality_heads.text.proj.0";
    names.proj = "modality_heads.text.proj.1.weight";
    trunk_names(names, "text");
    reader.set_context("the text tower");
    read_tower(reader, model.towers.at(Modality::text), names);
    reader.ignore(pre + "mask");  // the causal mask, a buffer
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
    reader.set_context("the audio tower");
    read_tower(reader, model.towers.at(Modality::audio), names);
  }
  reader.set_context({});
  // The text postprocessor's learned scale multiplies text embeddings: CLIP's logit scale.
  reader.read("modality_postprocessors.text.1.log_logit_scale", {}, &model.logit_scale);
  reader.ignore("modality_postprocessors.audio.1.log_logit_scale");  // fixed (20), a buffer
  // Depth, thermal and IMU: every ImageBind checkpoint carries them; tessera does not run
  // those towers (yet), so their tensors are passed over.
  for (const auto& name : reader.file().names()) {
    for (const char* m : {".depth.", ".thermal.", ".imu."}) {
      if (name.rfind("modality_", 0) == 0 && name.find(m) != std::string::npos) {
        reader.ignore(name);
      }
    }
  }
  reader.finish();
  return model;
}

// ---- tessera_towers: the native form (docs/model-files.md "Towers") -------------------------

inline TowerModelConfig towers_config(const nlohmann::json& json, const std::string& where) {
  const JsonObject top(json, where, "");
  TowerModelConfig model;
  model.family = "tessera_towers";
  model.embed_dim = top.integer("embed_dim");
  const JsonObject towers = top.object("towers");
  for (const auto& item : towers.json().items()) {
    const JsonObject o = towers.object(item.key());
    TowerConfig t;
    const std::string modality = o.string("modality", "");
    if (modality == "text") {
      t.modality = Modality::text;
    } else if (modality == "image") {
      t.modality = Modality::image;
    } else if (modality == "audio") {
      t.modality = Modality::audio;
    } else {
      fail(where, ": key \"towers.", item.key(), ".modality\": expected \"text\", \"image\" or "
           "\"audio\", got \"", modality, "\"");
    }
    check(model.towers.count(t.modality) == 0, where, ": two towers of modality ", modality);
    t.width = o.integer("width");
    t.layers = o.integer("layers");
    t.heads = o.integer("heads");
    t.ffn_dim = o.integer("ffn_dim");
    t.embed_dim = model.embed_dim;
    const std::string act = o.string("activation", "gelu");
    const auto found = std::find_if(std::begin(activation_kinds), std::end(activation_kinds),
                                    [&](Activation a) { return act == to_string(a); });
    check(found != std::end(activation_kinds), where, ": key \"towers.", item.key(),
          ".activation\": unknown activation \"", act, "\"");
    t.activation = *found;
    t.norm_eps = o.number("norm_eps", 1e-5);
    t.pre_norm = o.boolean("pre_norm", false);
    t.bias_kv = o.boolean("bias_kv", false);
    t.causal = o.boolean("causal", false);
    t.proj_bias = o.boolean("proj_bias", false);
    const std::string pooling = o.string("pooling", t.modality == Modality::text ? "eot_argmax" : "cls");
    const auto kind = std::find_if(std::begin(tower_pooling_kinds), std::end(tower_pooling_kinds),
                                   [&](TowerPooling p) { return pooling == to_string(p); });
    check(kind != std::end(tower_pooling_kinds), where, ": key \"towers.", item.key(),
          ".pooling\": expected \"cls\", \"eot_argmax\" or \"eos_first\", got \"", pooling, "\"");
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

namespace detail {

template <class Scalar>
TowerModel<Scalar> load_towers(const ModelDirectory& found) {
  const auto& config_file = found.config_file;
  const TowerModelConfig config = towers_config(*found.config, config_file.string());
  TensorReader reader(found.dir / weights_file_name);
  TowerModel<Scalar> model = allocate<Scalar>(config, reader, config_file);
  for (auto& [m, tower] : model.towers) {
    const std::string p = model.config.tower_names.at(m) + ".";
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
    reader.set_context("the " + model.config.tower_names.at(m) + " tower");
    read_tower(reader, tower, names);
  }
  reader.set_context({});
  if (reader.contains("logit_scale")) reader.read("logit_scale", {}, &model.logit_scale);
  reader.finish();
  return model;
}

}  // namespace detail

// The pretrained model of a directory detect_model found (any kind but tessera's own, which
// load_model reads), from the config file it parsed; one it could not parse is read again
// here, to name the problem.
template <class Scalar = float>
TowerModel<Scalar> load_tower_model(ModelDirectory found) {
  if (found.kind != ModelKind::tessera && !found.config) {
    found.config = detail::read_json_file(found.config_file);
  }
  switch (found.kind) {
    case ModelKind::hf_clip: return detail::load_hf_clip<Scalar>(found);
    case ModelKind::open_clip: return detail::load_open_clip<Scalar>(found);
    case ModelKind::imagebind: return detail::load_imagebind<Scalar>(found);
    case ModelKind::tessera_towers: return detail::load_towers<Scalar>(found);
    case ModelKind::tessera: break;
  }
  fail(found.dir.string(), ": not a pretrained model directory (no open_clip_config.json, and "
       "no config.json with a model_type of \"clip\", \"imagebind\" or \"tessera_towers\"); a "
       "tessera model loads with load_model");
}

// The pretrained model of directory `dir`.
template <class Scalar = float>
TowerModel<Scalar> load_tower_model(const std::filesystem::path& dir) {
  return load_tower_model<Scalar>(detect_model(dir));
}

}  // namespace tessera
