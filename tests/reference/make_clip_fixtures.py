#!/usr/bin/python3
"""PyTorch twins of HF transformers' CLIPModel and of OpenAI CLIP / open_clip (issue 17).

Run from the repository root with Debian's PyTorch (1.13):

    /usr/bin/python3 tests/reference/make_clip_fixtures.py

It deletes and rewrites two fixture kinds (layout: tests/reference/README.md, section
"CLIP twins"):

  tests/data/pretrained/hf_clip/model/      config.json, model.safetensors, preprocessor_config.json
                                            (a transformers CLIPModel directory, as save_pretrained
                                            writes it; no tokenizer files: the vocabulary is random)
  tests/data/pretrained/hf_clip/cases.safetensors
  tests/data/pretrained/open_clip/model/    open_clip_config.json, open_clip_model.safetensors
                                            (as open_clip's push_to_hf_hub writes them)
  tests/data/pretrained/open_clip/cases.safetensors
  tests/data/pretrained/<kind>/README.md

The twins are written here with plain torch ops, each function following one function of the
public reference, named in its comment:
  HF:        huggingface/transformers src/transformers/models/clip/modeling_clip.py
             (and configuration_clip.py for the config keys and their defaults)
  open_clip: mlfoundations/open_clip src/open_clip/model.py, transformer.py, layers.py,
             push_to_hf_hub.py; openai/CLIP clip/model.py (the same math, LND layout)
Weights are drawn in float64 and rounded to float32 (the stored dtype); every expected value is
computed in float64 from the rounded weights. Each twin is checked against a second route
(torch.nn.MultiheadAttention, as openai/CLIP runs it), against its own unpadded runs, and run
again in float32; the script prints the differences and the sensitivity of the fixtures to the
usual mistakes. Optionally it also runs the public code itself on the written weights:

    /usr/bin/python3 tests/reference/make_clip_fixtures.py \
        --openai-clip-model CLIP/clip/model.py --open-clip-src open_clip/src

(a checkout of openai/CLIP, whose model.py needs only torch and numpy; open_clip's src/ folder,
of which model.py and the modules it imports load under torch 1.13 with torchvision present).
Deterministic: one fixed-seed torch.Generator per kind, one thread.
"""

import argparse
import importlib.util
import json
import math
import os
import shutil
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import save_safetensors  # noqa: E402

F64 = torch.float64
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "data", "pretrained")
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Sizes shared by both kinds: different widths per tower, E unlike either.
VOCAB = 1000
CONTEXT = 16
TEXT_WIDTH, TEXT_LAYERS, TEXT_HEADS = 32, 2, 4
VISION_WIDTH, VISION_LAYERS, VISION_HEADS = 48, 2, 4
IMAGE_SIZE, PATCH = 32, 8
EMBED_DIM = 24
NORM_EPS = 1e-5  # HF layer_norm_eps default; torch.nn.LayerNorm's default in open_clip / OpenAI
LOGIT_SCALE = math.log(100.0)  # a trained CLIP's value, unlike the init value in the HF config
# The vision stem (patch conv, class embedding, positions) is drawn this much smaller, so the
# input of the pre-norm has a variance near 1e-4 (1e-5 on the class row) and its eps shows:
# a runtime using 1e-6 instead of the config's 1e-5 moves the values visibly (see the printout).
STEM_SCALE = 0.01

# ---------------------------------------------------------------------------------------
# random weights: float64 draws rounded to float32 (README "How values are made")
# ---------------------------------------------------------------------------------------


class Draw:
    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def normal(self, shape, std, mean=0.0):
        x = torch.randn(*shape, generator=self.g, dtype=F64) * std + mean
        return x.to(torch.float32).to(F64)

    def linear(self, out_dim, in_dim):  # weight [out, in], bias [out]
        return self.normal((out_dim, in_dim), in_dim ** -0.5), self.normal((out_dim,), 0.05)

    def norm(self, dim):  # LayerNorm weight [dim], bias [dim]
        return self.normal((dim,), 0.1, 1.0), self.normal((dim,), 0.05)

    def ids(self, n, low, high, exclude=()):  # n ids in [low, high), none in exclude
        out = []
        while len(out) < n:
            v = int(torch.randint(low, high, (1,), generator=self.g))
            if v not in exclude:
                out.append(v)
        return out


def layer_norm(x, w, b, eps):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def quick_gelu(x):
    # modeling_clip: ACT2FN["quick_gelu"] (activations.py QuickGELUActivation);
    # openai/CLIP clip/model.py QuickGELU.forward: x * sigmoid(1.702 x)
    return x * torch.sigmoid(1.702 * x)


def gelu(x):
    # open_clip model.py _build_*_tower: nn.GELU() (erf form) when quick_gelu is false
    return F.gelu(x)


def softmax_attention(q, k, v, mask):
    """q, k, v [B, H, L, dh]; mask [B, 1 or H, L, L] bool (True = may attend) or None -> [B, L, H*dh]."""
    scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v  # [B, H, L, dh]
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1)


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def cast(w, dtype):
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in w.items()}


# =======================================================================================
# HF transformers CLIPModel twin (modeling_clip.py)
# =======================================================================================

HF_TEXT = dict(vocab_size=VOCAB, hidden_size=TEXT_WIDTH, intermediate_size=96,  # 3x: not 4x
               num_hidden_layers=TEXT_LAYERS, num_attention_heads=TEXT_HEADS,
               max_position_embeddings=CONTEXT, hidden_act="quick_gelu", layer_norm_eps=NORM_EPS,
               # eos is neither 2 (the pre-#24773 "legacy argmax" value) nor the largest id,
               # so "first eos" pooling and argmax pooling pick different rows.
               bos_token_id=400, eos_token_id=401, pad_token_id=1)
HF_VISION = dict(hidden_size=VISION_WIDTH, intermediate_size=4 * VISION_WIDTH,
                 num_hidden_layers=VISION_LAYERS, num_attention_heads=VISION_HEADS, num_channels=3,
                 image_size=IMAGE_SIZE, patch_size=PATCH, hidden_act="quick_gelu",
                 layer_norm_eps=NORM_EPS)


def hf_config_json():
    """config.json as transformers' CLIPConfig.save_pretrained writes it (sorted keys, indent 2)."""
    common = {"attention_dropout": 0.0, "dropout": 0.0, "initializer_factor": 1.0,
              "initializer_range": 0.02, "projection_dim": EMBED_DIM}
    text = dict(common, model_type="clip_text_model", **HF_TEXT)
    vision = dict(common, model_type="clip_vision_model", **HF_VISION)
    return {"architectures": ["CLIPModel"], "initializer_factor": 1.0,
            "logit_scale_init_value": 2.6592, "model_type": "clip", "projection_dim": EMBED_DIM,
            "text_config": text, "vision_config": vision, "torch_dtype": "float32",
            "transformers_version": "4.41.2"}


def hf_preprocessor_json():
    """preprocessor_config.json in CLIPImageProcessor's form (image_processing_clip.py)."""
    return {"crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}, "do_center_crop": True,
            "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
            "image_mean": CLIP_MEAN, "image_processor_type": "CLIPImageProcessor",
            "image_std": CLIP_STD, "resample": 3, "rescale_factor": 1 / 255,
            "size": {"shortest_edge": IMAGE_SIZE}}


def hf_weights(d):
    """CLIPModel.state_dict() names and shapes (modeling_clip.py CLIPModel.__init__ and below)."""
    w = {}

    def encoder(prefix, dim, ffn, layers):  # CLIPEncoder -> CLIPEncoderLayer
        for l in range(layers):
            p = f"{prefix}.encoder.layers.{l}."
            for name in ("q_proj", "k_proj", "v_proj", "out_proj"):  # CLIPAttention
                w[p + f"self_attn.{name}.weight"], w[p + f"self_attn.{name}.bias"] = d.linear(dim, dim)
            w[p + "layer_norm1.weight"], w[p + "layer_norm1.bias"] = d.norm(dim)
            w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"] = d.linear(ffn, dim)  # CLIPMLP
            w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"] = d.linear(dim, ffn)
            w[p + "layer_norm2.weight"], w[p + "layer_norm2.bias"] = d.norm(dim)

    t, v = HF_TEXT, HF_VISION
    # CLIPTextEmbeddings
    w["text_model.embeddings.token_embedding.weight"] = d.normal((t["vocab_size"], TEXT_WIDTH), 0.2)
    w["text_model.embeddings.position_embedding.weight"] = d.normal((CONTEXT, TEXT_WIDTH), 0.2)
    # a buffer (persistent=False today); hub files of older transformers carry it
    w["text_model.embeddings.position_ids"] = torch.arange(CONTEXT).unsqueeze(0)
    encoder("text_model", TEXT_WIDTH, t["intermediate_size"], TEXT_LAYERS)
    w["text_model.final_layer_norm.weight"], w["text_model.final_layer_norm.bias"] = d.norm(TEXT_WIDTH)
    # CLIPVisionEmbeddings
    positions = (IMAGE_SIZE // PATCH) ** 2 + 1
    w["vision_model.embeddings.class_embedding"] = d.normal((VISION_WIDTH,), 0.2 * STEM_SCALE)
    w["vision_model.embeddings.patch_embedding.weight"] = d.normal(
        (VISION_WIDTH, 3, PATCH, PATCH), (3 * PATCH * PATCH) ** -0.5 * STEM_SCALE)
    w["vision_model.embeddings.position_embedding.weight"] = d.normal(
        (positions, VISION_WIDTH), 0.2 * STEM_SCALE)
    w["vision_model.embeddings.position_ids"] = torch.arange(positions).unsqueeze(0)
    # CLIPVisionTransformer: "pre_layrnorm" is transformers' own spelling
    w["vision_model.pre_layrnorm.weight"], w["vision_model.pre_layrnorm.bias"] = d.norm(VISION_WIDTH)
    encoder("vision_model", VISION_WIDTH, v["intermediate_size"], VISION_LAYERS)
    w["vision_model.post_layernorm.weight"], w["vision_model.post_layernorm.bias"] = d.norm(VISION_WIDTH)
    # CLIPModel heads: nn.Linear(bias=False), weight [E, D]
    w["visual_projection.weight"] = d.normal((EMBED_DIM, VISION_WIDTH), VISION_WIDTH ** -0.5)
    w["text_projection.weight"] = d.normal((EMBED_DIM, TEXT_WIDTH), TEXT_WIDTH ** -0.5)
    w["logit_scale"] = torch.tensor(LOGIT_SCALE, dtype=F64).to(torch.float32).to(F64)
    return w


def hf_attention(w, p, x, mask, heads):
    """modeling_clip.py CLIPAttention.forward + eager_attention_forward.
    x [B, L, D]; mask [B, 1, L, L] bool or None -> [B, L, D].
    (eager_attention_forward takes the softmax in float32 whatever the model dtype; the sdpa path,
    transformers' default, keeps the dtype. The twin keeps float64 throughout.)"""
    B, L, D = x.shape
    dh = D // heads

    def split(t):  # [B, L, D] -> [B, H, L, dh]
        return t.view(B, L, heads, dh).transpose(1, 2)

    q = split(F.linear(x, w[p + "q_proj.weight"], w[p + "q_proj.bias"]))
    k = split(F.linear(x, w[p + "k_proj.weight"], w[p + "k_proj.bias"]))
    v = split(F.linear(x, w[p + "v_proj.weight"], w[p + "v_proj.bias"]))
    out = softmax_attention(q, k, v, mask)
    return F.linear(out, w[p + "out_proj.weight"], w[p + "out_proj.bias"])


def hf_mlp(w, p, x, act):
    """modeling_clip.py CLIPMLP.forward: fc2(act(fc1 x))."""
    return F.linear(act(F.linear(x, w[p + "fc1.weight"], w[p + "fc1.bias"])),
                    w[p + "fc2.weight"], w[p + "fc2.bias"])


def hf_encoder_layer(w, p, x, mask, cfg, attention=hf_attention, act=None):
    """modeling_clip.py CLIPEncoderLayer.forward: pre-norm residual attention, then MLP.
    act: the config's hidden_act unless given (sensitivity runs)."""
    eps = cfg["layer_norm_eps"]
    act = act or {"quick_gelu": quick_gelu, "gelu": gelu}[cfg["hidden_act"]]
    h = layer_norm(x, w[p + "layer_norm1.weight"], w[p + "layer_norm1.bias"], eps)
    x = x + attention(w, p + "self_attn.", h, mask, cfg["num_attention_heads"])
    h = layer_norm(x, w[p + "layer_norm2.weight"], w[p + "layer_norm2.bias"], eps)
    return x + hf_mlp(w, p + "mlp.", h, act)


def hf_encoder(w, prefix, x, mask, cfg, attention=hf_attention, act=None):
    """modeling_clip.py CLIPEncoder.forward: the layers in order; returns the last layer's output."""
    for l in range(cfg["num_hidden_layers"]):
        x = hf_encoder_layer(w, f"{prefix}.encoder.layers.{l}.", x, mask, cfg, attention, act)
    return x


def hf_text_embeddings(w, ids):
    """modeling_clip.py CLIPTextEmbeddings.forward: token + position embedding (position_ids[:L])."""
    L = ids.shape[-1]
    pos = w["text_model.embeddings.position_ids"][:, :L]
    return (w["text_model.embeddings.token_embedding.weight"][ids]
            + w["text_model.embeddings.position_embedding.weight"][pos])


def hf_text_mask(attention_mask):
    """The mask CLIPTextTransformer.forward hands the encoder: create_causal_mask(attention_mask)
    (older releases: _create_4d_causal_attention_mask + _prepare_4d_attention_mask, added).
    Query i may see key j when j <= i and attention_mask[j] = 1. -> [B, 1, L, L] bool."""
    B, L = attention_mask.shape
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    return causal[None, None] & attention_mask.bool()[:, None, None, :]


def hf_pool_index(ids, attention_mask, eos_token_id, rule=None):
    """modeling_clip.py CLIPTextTransformer.forward, the pooled_output rule:
    legacy checkpoints (eos_token_id == 2 in releases from PR #24773 on; today: every row's
    largest id is 49407) pool at argmax(ids); all others at the FIRST position holding
    eos_token_id. rule "argmax" / "last_eos" force a wrong rule (sensitivity runs)."""
    legacy = eos_token_id == 2 or bool(torch.all(ids.max(dim=-1).values == 49407))
    if rule == "argmax" or (rule is None and legacy):
        return ids.argmax(dim=-1)
    if rule == "last_eos":  # the last eos among the real tokens
        eos = ((ids == eos_token_id) & attention_mask.bool()).int()
        return (eos * torch.arange(ids.shape[1])).argmax(dim=-1)
    return (ids == eos_token_id).int().argmax(dim=-1)


def hf_text_transformer(w, ids, attention_mask, attention=hf_attention, act=None, pool_rule=None):
    """modeling_clip.py CLIPTextTransformer.forward.
    ids, attention_mask [B, L] -> (last block output [B, L, Dt], pooled [B, Dt])."""
    cfg = HF_TEXT
    x = hf_text_embeddings(w, ids)
    hidden = hf_encoder(w, "text_model", x, hf_text_mask(attention_mask), cfg, attention, act)
    normed = layer_norm(hidden, w["text_model.final_layer_norm.weight"],
                        w["text_model.final_layer_norm.bias"], cfg["layer_norm_eps"])
    index = hf_pool_index(ids, attention_mask, cfg["eos_token_id"], pool_rule)
    return hidden, normed[torch.arange(ids.shape[0]), index]


def hf_vision_embeddings(w, pixels):
    """modeling_clip.py CLIPVisionEmbeddings.forward: conv patches (no bias), class token first,
    + position_embedding(position_ids). pixels [B, 3, S, S] -> [B, 1 + N, Dv]."""
    patches = F.conv2d(pixels, w["vision_model.embeddings.patch_embedding.weight"], stride=PATCH)
    patches = patches.flatten(2).transpose(1, 2)  # [B, N, Dv], row-major over the grid
    cls = w["vision_model.embeddings.class_embedding"].expand(pixels.shape[0], 1, -1)
    pos = w["vision_model.embeddings.position_ids"]
    return torch.cat([cls, patches], dim=1) + w["vision_model.embeddings.position_embedding.weight"][pos]


def hf_vision_transformer(w, pixels, attention=hf_attention, act=None, pre_norm=True, pre_eps=None):
    """modeling_clip.py CLIPVisionTransformer.forward: embeddings -> pre_layrnorm -> encoder
    (no mask) -> post_layernorm of the class token. -> (last block output [B, L, Dv], pooled [B, Dv]).
    pre_norm false / pre_eps: skip pre_layrnorm or give it another eps (sensitivity runs)."""
    cfg = HF_VISION
    eps = cfg["layer_norm_eps"]
    x = hf_vision_embeddings(w, pixels)
    if pre_norm:
        x = layer_norm(x, w["vision_model.pre_layrnorm.weight"], w["vision_model.pre_layrnorm.bias"],
                       pre_eps or eps)
    hidden = hf_encoder(w, "vision_model", x, None, cfg, attention, act)
    pooled = layer_norm(hidden[:, 0, :], w["vision_model.post_layernorm.weight"],
                        w["vision_model.post_layernorm.bias"], eps)
    return hidden, pooled


def hf_get_text_features(w, ids, attention_mask, pre_norm=True, pre_eps=None, **kw):
    """modeling_clip.py CLIPModel.get_text_features: text_projection(pooled). -> ([B,L,Dt], [B,E])
    (pre_norm, pre_eps: the vision tower's knobs, ignored here)"""
    hidden, pooled = hf_text_transformer(w, ids, attention_mask, **kw)
    return hidden, F.linear(pooled, w["text_projection.weight"])


def hf_get_image_features(w, pixels, pool_rule=None, **kw):
    """modeling_clip.py CLIPModel.get_image_features: visual_projection(pooled). -> ([B,L,Dv], [B,E])
    (pool_rule: the text tower's knob, ignored here)"""
    hidden, pooled = hf_vision_transformer(w, pixels, **kw)
    return hidden, F.linear(pooled, w["visual_projection.weight"])


def hf_attention_mha(w, p, x, mask, heads):
    """Second route for CLIPAttention: torch.nn.MultiheadAttention with q/k/v packed into
    in_proj_weight (the layout openai/CLIP uses), sequence-first, mask as a float mask."""
    B, L, D = x.shape
    mha = torch.nn.MultiheadAttention(D, heads).to(x.dtype)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([w[p + f"{n}_proj.weight"] for n in "qkv"]))
        mha.in_proj_bias.copy_(torch.cat([w[p + f"{n}_proj.bias"] for n in "qkv"]))
        mha.out_proj.weight.copy_(w[p + "out_proj.weight"])
        mha.out_proj.bias.copy_(w[p + "out_proj.bias"])
    float_mask = None
    if mask is not None:  # [B, 1, L, L] bool -> [B*H, L, L] additive
        float_mask = torch.zeros(mask.shape, dtype=x.dtype).masked_fill(~mask, float("-inf"))
        float_mask = float_mask.expand(B, heads, L, L).reshape(B * heads, L, L)
    xt = x.transpose(0, 1)
    return mha(xt, xt, xt, need_weights=False, attn_mask=float_mask)[0].transpose(0, 1)


# =======================================================================================
# open_clip / OpenAI CLIP twin (open_clip model.py + transformer.py; openai/CLIP clip/model.py)
# =======================================================================================

OC_TEXT_CFG = {"context_length": CONTEXT, "vocab_size": VOCAB, "width": TEXT_WIDTH,
               "heads": TEXT_HEADS, "layers": TEXT_LAYERS}
# open_clip gives the vision tower heads = width // head_width (default head_width 64) and
# mlp width int(width * mlp_ratio); both differ from their defaults here so a loader must read them.
OC_VISION_CFG = {"image_size": IMAGE_SIZE, "layers": VISION_LAYERS, "width": VISION_WIDTH,
                 "head_width": VISION_WIDTH // VISION_HEADS, "mlp_ratio": 2.5, "patch_size": PATCH}
OC_MODEL_CFG = {"embed_dim": EMBED_DIM, "quick_gelu": False,
                "vision_cfg": OC_VISION_CFG, "text_cfg": OC_TEXT_CFG}
# push_to_hf_hub.py save_config_for_hf: mean, std, and interpolation / resize_mode when set
OC_PREPROCESS_CFG = {"mean": CLIP_MEAN, "std": CLIP_STD, "interpolation": "bicubic",
                     "resize_mode": "shortest"}
OC_START, OC_END, OC_PAD = VOCAB - 2, VOCAB - 1, 0  # as SimpleTokenizer: sot, eot (the largest id), 0


def oc_vision_heads():
    """open_clip model.py _build_vision_tower: vision_heads = width // head_width."""
    return OC_VISION_CFG["width"] // OC_VISION_CFG["head_width"]


def oc_mlp_width(cfg):
    """open_clip transformer.py ResidualAttentionBlock.__init__: int(d_model * mlp_ratio)."""
    return int(cfg["width"] * cfg.get("mlp_ratio", 4.0))


def oc_weights(d):
    """open_clip CLIP.state_dict() names (= OpenAI's), shapes from transformer.py / model.py."""
    w = {}

    def transformer(prefix, dim, ffn, layers):  # Transformer -> ResidualAttentionBlock
        for l in range(layers):
            p = f"{prefix}transformer.resblocks.{l}."
            w[p + "ln_1.weight"], w[p + "ln_1.bias"] = d.norm(dim)
            w[p + "attn.in_proj_weight"] = d.normal((3 * dim, dim), dim ** -0.5)  # q; k; v rows
            w[p + "attn.in_proj_bias"] = d.normal((3 * dim,), 0.05)
            w[p + "attn.out_proj.weight"], w[p + "attn.out_proj.bias"] = d.linear(dim, dim)
            w[p + "ln_2.weight"], w[p + "ln_2.bias"] = d.norm(dim)
            w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"] = d.linear(ffn, dim)
            w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"] = d.linear(dim, ffn)

    t, v = OC_TEXT_CFG, OC_VISION_CFG
    # text tower (TextTransformer's parts, hoisted into CLIP by model.py CLIP.__init__)
    w["token_embedding.weight"] = d.normal((t["vocab_size"], t["width"]), 0.2)
    w["positional_embedding"] = d.normal((t["context_length"], t["width"]), 0.2)
    transformer("", t["width"], oc_mlp_width(t), t["layers"])
    w["ln_final.weight"], w["ln_final.bias"] = d.norm(t["width"])
    w["text_projection"] = d.normal((t["width"], EMBED_DIM), t["width"] ** -0.5)  # [Dt, E]: x @ P
    # vision tower (transformer.py VisionTransformer.__init__)
    grid = v["image_size"] // v["patch_size"]
    w["visual.conv1.weight"] = d.normal((v["width"], 3, v["patch_size"], v["patch_size"]),
                                        (3 * v["patch_size"] ** 2) ** -0.5 * STEM_SCALE)
    w["visual.class_embedding"] = d.normal((v["width"],), 0.2 * STEM_SCALE)
    w["visual.positional_embedding"] = d.normal((grid * grid + 1, v["width"]), 0.2 * STEM_SCALE)
    w["visual.ln_pre.weight"], w["visual.ln_pre.bias"] = d.norm(v["width"])
    transformer("visual.", v["width"], oc_mlp_width(v), v["layers"])
    w["visual.ln_post.weight"], w["visual.ln_post.bias"] = d.norm(v["width"])
    w["visual.proj"] = d.normal((v["width"], EMBED_DIM), v["width"] ** -0.5)  # [Dv, E]
    w["logit_scale"] = torch.tensor(LOGIT_SCALE, dtype=F64).to(torch.float32).to(F64)
    return w


def oc_attention(w, p, x, mask, heads):
    """open_clip transformer.py Attention.forward (self-attention path): q, k, v =
    linear(x, in_proj_weight, in_proj_bias).chunk(3); scaled dot product per head; out_proj.
    x [B, L, D]; mask [L, L] bool (True = may attend) or None."""
    B, L, D = x.shape
    dh = D // heads
    q, k, v = F.linear(x, w[p + "in_proj_weight"], w[p + "in_proj_bias"]).chunk(3, dim=-1)
    q, k, v = (t.reshape(B, L, heads, dh).transpose(1, 2) for t in (q, k, v))
    out = softmax_attention(q, k, v, None if mask is None else mask[None, None])
    return F.linear(out, w[p + "out_proj.weight"], w[p + "out_proj.bias"])


def oc_residual_block(w, p, x, mask, heads, act, attention=oc_attention):
    """open_clip transformer.py ResidualAttentionBlock.forward (ls_1/ls_2 identity):
    x + attn(ln_1 x), then + mlp(ln_2 x) with mlp = c_proj(act(c_fc))."""
    h = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"], NORM_EPS)
    x = x + attention(w, p + "attn.", h, mask, heads)
    h = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"], NORM_EPS)
    h = F.linear(act(F.linear(h, w[p + "mlp.c_fc.weight"], w[p + "mlp.c_fc.bias"])),
                 w[p + "mlp.c_proj.weight"], w[p + "mlp.c_proj.bias"])
    return x + h


def oc_transformer(w, prefix, x, mask, heads, layers, act, attention=oc_attention):
    """open_clip transformer.py Transformer.forward: the resblocks in order."""
    for l in range(layers):
        x = oc_residual_block(w, f"{prefix}transformer.resblocks.{l}.", x, mask, heads, act, attention)
    return x


def oc_act(quick):
    return quick_gelu if quick else gelu


def oc_encode_image(w, pixels, attention=oc_attention, quick=None, pre_norm=True, pre_eps=None):
    """open_clip transformer.py VisionTransformer._embeds, forward and _pool (pool_type 'tok',
    final_ln_after_pool false): conv1 (no bias) -> [cls; patches] + positional_embedding -> ln_pre
    -> transformer -> ln_post(x)[:, 0] @ proj. pixels [B, 3, S, S] -> ([B, L, Dv], [B, E])."""
    v = OC_VISION_CFG
    quick = OC_MODEL_CFG["quick_gelu"] if quick is None else quick
    x = F.conv2d(pixels, w["visual.conv1.weight"], stride=v["patch_size"])
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [B, N, Dv]
    cls = w["visual.class_embedding"].view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + w["visual.positional_embedding"]
    if pre_norm:
        x = layer_norm(x, w["visual.ln_pre.weight"], w["visual.ln_pre.bias"], pre_eps or NORM_EPS)
    hidden = oc_transformer(w, "visual.", x, None, oc_vision_heads(), v["layers"], oc_act(quick),
                            attention)
    pooled = layer_norm(hidden, w["visual.ln_post.weight"], w["visual.ln_post.bias"], NORM_EPS)[:, 0]
    return hidden, pooled @ w["visual.proj"]


def oc_causal_mask(L):
    """open_clip transformer.py TextTransformer.build_causal_mask (-inf above the diagonal) as
    bool: True = may attend. The text tower adds no padding mask (use_pad_mask is off)."""
    return torch.ones(L, L, dtype=torch.bool).tril()


def oc_text_global_pool(x, ids):
    """open_clip transformer.py text_global_pool, pool_type 'argmax' (the default):
    x[arange(B), ids.argmax(-1)]: the end token is the largest id (OpenAI clip/model.py encode_text)."""
    return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)]


def oc_encode_text(w, ids, attention_mask=None, attention=oc_attention, quick=None, pre_norm=True,
                   pre_eps=None):
    """open_clip model.py CLIP._encode_text: token_embedding + positional_embedding -> transformer
    with the causal attn_mask -> ln_final -> pool -> @ text_projection.
    ids [B, L] (padded with 0) -> ([B, L, Dt] last block output, [B, E]). attention_mask,
    pre_norm and pre_eps are ignored: open_clip's text tower has no padding mask and no pre-norm."""
    t = OC_TEXT_CFG
    quick = OC_MODEL_CFG["quick_gelu"] if quick is None else quick
    L = ids.shape[1]
    x = w["token_embedding.weight"][ids] + w["positional_embedding"][:L]
    hidden = oc_transformer(w, "", x, oc_causal_mask(L), t["heads"], t["layers"], oc_act(quick),
                            attention)
    x = layer_norm(hidden, w["ln_final.weight"], w["ln_final.bias"], NORM_EPS)
    return hidden, oc_text_global_pool(x, ids) @ w["text_projection"]


def oc_attention_mha(w, p, x, mask, heads):
    """Second route: openai/CLIP clip/model.py ResidualAttentionBlock.attention, i.e.
    nn.MultiheadAttention(d_model, n_head) on LND input with an additive -inf attn_mask."""
    D = x.shape[-1]
    mha = torch.nn.MultiheadAttention(D, heads).to(x.dtype)
    with torch.no_grad():
        mha.in_proj_weight.copy_(w[p + "in_proj_weight"])
        mha.in_proj_bias.copy_(w[p + "in_proj_bias"])
        mha.out_proj.weight.copy_(w[p + "out_proj.weight"])
        mha.out_proj.bias.copy_(w[p + "out_proj.bias"])
    float_mask = None
    if mask is not None:
        float_mask = torch.zeros(mask.shape, dtype=x.dtype).masked_fill(~mask, float("-inf"))
    xt = x.permute(1, 0, 2)  # NLD -> LND
    return mha(xt, xt, xt, need_weights=False, attn_mask=float_mask)[0].permute(1, 0, 2)


# =======================================================================================
# samples and cases.safetensors
# =======================================================================================


def make_pixels(d, n):  # [n, 3, S, S], already normalised, float32-exact
    return d.normal((n, 3, IMAGE_SIZE, IMAGE_SIZE), 1.0)


def pad_batch(texts, pad_id):
    """texts: lists of ids -> (ids [B, CONTEXT] padded with pad_id, attention_mask [B, CONTEXT])."""
    ids = torch.full((len(texts), CONTEXT), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(texts), CONTEXT), dtype=torch.int64)
    for i, t in enumerate(texts):
        ids[i, :len(t)] = torch.tensor(t)
        mask[i, :len(t)] = 1
    return ids, mask


class Family:
    """What a kind's cases need from its twin: text and image functions over a weight dict."""

    def __init__(self, name, text_fn, image_fn, pad_id):
        self.name, self.text_fn, self.image_fn, self.pad_id = name, text_fn, image_fn, pad_id

    def text(self, w, texts, **kw):  # -> [hidden [n_i, Dt]], [B, E] unit
        ids, mask = pad_batch(texts, self.pad_id)
        hidden, emb = self.text_fn(w, ids, mask, **kw)
        return [hidden[i, :len(t)] for i, t in enumerate(texts)], unit(emb)

    def image(self, w, pixels, **kw):  # pixels [B, 3, S, S] -> [B, L, Dv], [B, E] unit
        hidden, emb = self.image_fn(w, pixels, **kw)
        return hidden, unit(emb)

    def video(self, w, frames, **kw):
        """CLIP4Clip mean pooling: every frame through the image tower as one clip;
        normalize(mean of the unit frame embeddings). frames [T, 3, S, S] -> ([L, Dv], [E])."""
        hidden, emb = self.image(w, frames, **kw)
        return hidden[0], unit(emb.mean(dim=0))


def compute_cases(fam, w, samples, **kw):
    texts, images, videos = samples
    out = {}
    hidden, emb = fam.text(w, texts, **kw)
    for i, t in enumerate(texts):
        out[f"text.{i}.ids"] = torch.tensor(t, dtype=torch.int64)
        out[f"text.{i}.hidden"] = hidden[i]
        out[f"text.{i}.embedding"] = emb[i]
    hidden, emb = fam.image(w, images, **kw)
    for i in range(images.shape[0]):
        out[f"image.{i}.pixels"] = images[i]
        out[f"image.{i}.hidden"] = hidden[i]
        out[f"image.{i}.embedding"] = emb[i]
    for i, frames in enumerate(videos):
        out[f"video.{i}.frames"] = frames
        out[f"video.{i}.hidden"], out[f"video.{i}.embedding"] = fam.video(w, frames, **kw)
    out["logit_scale"] = w["logit_scale"].clone()
    return out


def max_diff(a, b, keys=None):
    keys = keys or [k for k in a if a[k].is_floating_point()]
    return max(float((a[k].to(F64) - b[k].to(F64)).abs().max()) for k in keys)


def diff_by_kind(a, b):
    """max |a-b| over the embeddings and over the hidden states, separately."""
    emb = [k for k in a if k.endswith(".embedding")]
    hid = [k for k in a if k.endswith(".hidden")]
    return max_diff(a, b, emb), max_diff(a, b, hid)


def check(label, value, limit):
    status = "ok" if value <= limit else "FAILED"
    print(f"  {label}: {value:.3g} ({status}, limit {limit:g})")
    if value > limit:
        raise SystemExit(f"{label}: {value} exceeds {limit}")


def sensitivity(label, ref, other):
    emb, hid = diff_by_kind(ref, other)
    print(f"  sensitivity, {label}: embeddings move {emb:.3g}, hidden {hid:.3g}")


def write_json(path, obj, sort_keys):
    with open(path, "w") as f:
        f.write(json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")


def write_readme(path, text):
    with open(path, "w") as f:
        f.write(text.strip() + "\n")


def dir_size(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


# ---------------------------------------------------------------------------------------
# the two kinds
# ---------------------------------------------------------------------------------------


def hf_texts(d):
    """4 texts: bos ... eos. Lengths 5, 9, the full context and 12. Every text holds an id larger
    than eos before its first eos (argmax pooling would pick it); text 3 holds eos twice (the
    first one pools)."""
    t = HF_TEXT
    bos, eos = t["bos_token_id"], t["eos_token_id"]
    special = {bos, eos, t["pad_token_id"]}
    texts = []
    for n in (5, 9, CONTEXT):
        body = d.ids(n - 2, 2, VOCAB, special)
        body[0] = max(body[0], 900)  # an id above eos, so argmax and first-eos differ
        texts.append([bos] + body + [eos])
    body = d.ids(9, 2, VOCAB, special)
    body[1] = 950
    texts.append([bos] + body[:4] + [eos] + body[4:] + [eos])
    for ids in texts:
        first = ids.index(eos)
        assert max(ids[:first]) > eos and ids.index(max(ids)) != first
    return texts


def oc_texts(d):
    """3 texts: start ... end (the largest id), lengths 4, 10 and the full context."""
    return [[OC_START] + d.ids(n - 2, 1, OC_START) + [OC_END] for n in (4, 10, CONTEXT)]


def samples_for(d, texts):
    images = make_pixels(d, 2)
    videos = [make_pixels(d, 2), make_pixels(d, 3)]  # 2 and 3 frames (= clips)
    return texts, images, videos


def verify(fam, w, samples, expected, second_attention):
    """A second route for the attention, a padding-free run, and a float32 run."""
    texts = samples[0]
    second = compute_cases(fam, w, samples, attention=second_attention)
    check("second route (nn.MultiheadAttention) vs twin, all values", max_diff(expected, second), 1e-10)
    # causal text: each text alone, unpadded, gives the padded batch's rows and embedding
    worst = 0.0
    for i, t in enumerate(texts):
        ids = torch.tensor([t])
        hidden, emb = fam.text_fn(w, ids, torch.ones_like(ids))
        worst = max(worst, float((hidden[0] - expected[f"text.{i}.hidden"]).abs().max()),
                    float((unit(emb[0]) - expected[f"text.{i}.embedding"]).abs().max()))
    check("unpadded single texts vs padded batch", worst, 1e-12)
    f32 = compute_cases(fam, cast(w, torch.float32), cast_samples(samples, torch.float32))
    emb, hid = diff_by_kind(expected, f32)
    print(f"  float32 run vs float64 expected: embeddings {emb:.3g}, hidden {hid:.3g}")
    check("float32 vs float64 (embeddings and hidden)", max(emb, hid), 1e-4)
    return emb, hid


def cast_samples(samples, dtype):
    texts, images, videos = samples
    return texts, images.to(dtype), [v.to(dtype) for v in videos]


def write_kind(kind, model_files, cases, readme):
    root = os.path.join(OUT, kind)
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(os.path.join(root, "model"))
    for name, writer in model_files.items():
        writer(os.path.join(root, "model", name))
    save_safetensors(os.path.join(root, "cases.safetensors"), cases)
    write_readme(os.path.join(root, "README.md"), readme)
    size = dir_size(root)
    print(f"  wrote {os.path.relpath(root, os.path.dirname(ROOT))}: {size} bytes")
    assert size < 3_000_000


def stored(w):  # weights as written: floats to F32, integer buffers stay I64
    return {k: (v.to(torch.float32) if v.is_floating_point() else v) for k, v in w.items()}


def make_hf_clip(openai_model_py=None):
    print("hf_clip (transformers CLIPModel)")
    d = Draw(1701)
    w = hf_weights(d)
    samples = samples_for(d, hf_texts(d))
    fam = Family("hf_clip", hf_get_text_features, hf_get_image_features, HF_TEXT["pad_token_id"])
    expected = compute_cases(fam, w, samples)
    verify(fam, w, samples, expected, hf_attention_mha)
    if openai_model_py:
        check_hf_with_openai_code(openai_model_py, w, samples, expected)

    # what the fixtures catch: argmax or last-eos pooling, no pre_layrnorm, gelu for quick_gelu
    assert HF_TEXT["eos_token_id"] != 2
    sensitivity("argmax instead of first-eos pooling", expected,
                compute_cases(fam, w, samples, pool_rule="argmax"))
    sensitivity("last instead of first eos (text 3 only)", expected,
                compute_cases(fam, w, samples, pool_rule="last_eos"))
    sensitivity("no pre_layrnorm", expected, compute_cases(fam, w, samples, pre_norm=False))
    sensitivity("pre_layrnorm eps 1e-6 instead of 1e-5", expected,
                compute_cases(fam, w, samples, pre_eps=1e-6))
    sensitivity("gelu instead of quick_gelu", expected, compute_cases(fam, w, samples, act=gelu))

    readme = f"""
# hf_clip: a transformers CLIPModel directory with random weights

Written by `tests/reference/make_clip_fixtures.py` (regenerate from the repository root with
`/usr/bin/python3 tests/reference/make_clip_fixtures.py`; deterministic). Its twin follows
huggingface/transformers `src/transformers/models/clip/modeling_clip.py` function by function
(CLIPTextEmbeddings, CLIPVisionEmbeddings, CLIPAttention, CLIPMLP, CLIPEncoderLayer,
CLIPTextTransformer, CLIPVisionTransformer, CLIPModel.get_text_features / get_image_features).

- `model/`: `config.json` (model_type "clip", hidden_act "quick_gelu", layer_norm_eps 1e-5),
  `model.safetensors` (CLIPModel's state_dict names, F32, with the I64 `position_ids` buffers
  older transformers saved), `preprocessor_config.json` (CLIPImageProcessor). No tokenizer
  files: the 1000-id vocabulary is random, so tests hand ids in.
- Sizes: text width 32 (4 heads, FFN 96, 2 layers, context 16, vocab 1000), vision width 48
  (4 heads, FFN 192, 2 layers, image 32, patch 8: 17 tokens), projection_dim 24.
- Text pooling: bos 400, eos 401 (not 2, not the largest id), pad 1. Pooled at the FIRST eos
  (text 3 holds eos twice); every text has a larger id before its eos, so argmax pooling is wrong.
  The expected values come from one padded batch (pad 1, attention_mask, causal mask).
- The vision stem (patch conv, class and position embeddings) is drawn 0.01x smaller, so the
  eps of pre_layrnorm (1e-5) shows: 1e-6 moves the embeddings by 8e-2.
- `cases.safetensors`: 4 texts (5, 9, 16 and 12 ids), 2 images, 2 videos (2 and 3 frames, one
  clip per frame), and `logit_scale` (ln 100; config.json's logit_scale_init_value 2.6592 is
  only the init value). Layout: tests/reference/README.md, section "CLIP twins".
"""
    model_files = {
        "config.json": lambda p: write_json(p, hf_config_json(), True),
        "model.safetensors": lambda p: save_safetensors(p, stored(w)),
        "preprocessor_config.json": lambda p: write_json(p, hf_preprocessor_json(), True),
    }
    write_kind("hf_clip", model_files, expected, readme)


def compare_with_reference_model(label, model, lnd, samples, expected, pad_id, eos_first=None):
    """Runs a reference implementation's CLIP module (encode_text, encode_image, .transformer and
    .visual.transformer resblocks) on the samples, reading the last block's output with hooks
    (lnd: its blocks run sequence-first), and checks it against the twin's expected values.
    eos_first: pool the text at the first position of this id (HF's rule) instead of the model's
    own argmax, from the output of its ln_final."""
    last = {}

    def keep(name, permute):
        return lambda mod, inp, out: last.__setitem__(name, out.permute(1, 0, 2) if permute else out)

    model.transformer.resblocks[-1].register_forward_hook(keep("text", lnd))
    model.visual.transformer.resblocks[-1].register_forward_hook(keep("image", lnd))
    model.ln_final.register_forward_hook(keep("ln_final", False))
    texts, images, videos = samples
    ids, _ = pad_batch(texts, pad_id)
    got = {}
    emb = model.encode_text(ids)
    if eos_first is not None:
        index = (ids == eos_first).int().argmax(dim=-1)
        emb = last["ln_final"][torch.arange(ids.shape[0]), index] @ model.text_projection
    emb = unit(emb)
    for i, tx in enumerate(texts):
        got[f"text.{i}.hidden"], got[f"text.{i}.embedding"] = last["text"][i, :len(tx)], emb[i]
    emb = unit(model.encode_image(images))
    for i in range(images.shape[0]):
        got[f"image.{i}.hidden"], got[f"image.{i}.embedding"] = last["image"][i], emb[i]
    for i, frames in enumerate(videos):
        emb = unit(model.encode_image(frames))
        got[f"video.{i}.hidden"], got[f"video.{i}.embedding"] = last["image"][0], unit(emb.mean(0))
    check(f"{label} vs twin", max_diff(expected, got, list(got)), 1e-10)


def openai_clip_module(model_py, text_heads, text_ffn, vision_heads, vision_ffn, quick):
    """openai/CLIP's own clip/model.py (--openai-clip-model FILE; it needs only torch and numpy),
    loaded at run time, not copied, its CLIP built at our sizes: CLIP.__init__ would take
    heads = width // 64 and a 4x MLP, so the vision tower is built by hand and the MLPs resized.
    quick false swaps its QuickGELU for nn.GELU (open_clip's quick_gelu false); its LayerNorm
    subclass (which computes in float32 for fp16 support) runs in float64."""
    spec = importlib.util.spec_from_file_location("openai_clip_model", model_py)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    ref.LayerNorm.forward = torch.nn.LayerNorm.forward
    model = ref.CLIP(EMBED_DIM, IMAGE_SIZE, VISION_LAYERS, 64, PATCH, CONTEXT, VOCAB, TEXT_WIDTH,
                     text_heads, TEXT_LAYERS)
    model.visual = ref.VisionTransformer(IMAGE_SIZE, PATCH, VISION_WIDTH, VISION_LAYERS, vision_heads,
                                         EMBED_DIM)
    for blocks, width, ffn in ((model.transformer.resblocks, TEXT_WIDTH, text_ffn),
                               (model.visual.transformer.resblocks, VISION_WIDTH, vision_ffn)):
        for block in blocks:
            block.mlp.c_fc = torch.nn.Linear(width, ffn)
            block.mlp.c_proj = torch.nn.Linear(ffn, width)
    if not quick:
        for module in model.modules():
            if isinstance(module, ref.QuickGELU):
                module.forward = torch.nn.GELU().forward
    return model.to(F64).eval()


def check_with_openai_code(model_py, w, samples, expected):
    """Optional: the open_clip fixture through openai/CLIP's clip/model.py (same tensor names)."""
    model = openai_clip_module(model_py, OC_TEXT_CFG["heads"], oc_mlp_width(OC_TEXT_CFG),
                               oc_vision_heads(), oc_mlp_width(OC_VISION_CFG), quick=False)
    model.load_state_dict(w, strict=True)
    compare_with_reference_model("openai/CLIP clip/model.py", model, True, samples, expected, OC_PAD)


def hf_to_openai_names(w):
    """transformers convert_clip_original_pytorch_to_hf.py, run backwards: q/k/v stacked into
    in_proj, fc1/fc2 -> c_fc/c_proj, layer_norm1/2 -> ln_1/2, projections transposed, the
    position_ids buffers dropped."""
    out = {}
    for hf_tower, oa_tower in (("text_model", ""), ("vision_model", "visual.")):
        layers = HF_TEXT if hf_tower == "text_model" else HF_VISION
        for l in range(layers["num_hidden_layers"]):
            p, q = f"{hf_tower}.encoder.layers.{l}.", f"{oa_tower}transformer.resblocks.{l}."
            for kind in ("weight", "bias"):
                out[q + f"attn.in_proj_{kind}"] = torch.cat(
                    [w[p + f"self_attn.{n}_proj.{kind}"] for n in "qkv"])
                out[q + f"attn.out_proj.{kind}"] = w[p + f"self_attn.out_proj.{kind}"]
                out[q + f"ln_1.{kind}"] = w[p + f"layer_norm1.{kind}"]
                out[q + f"ln_2.{kind}"] = w[p + f"layer_norm2.{kind}"]
                out[q + f"mlp.c_fc.{kind}"] = w[p + f"mlp.fc1.{kind}"]
                out[q + f"mlp.c_proj.{kind}"] = w[p + f"mlp.fc2.{kind}"]
    out["token_embedding.weight"] = w["text_model.embeddings.token_embedding.weight"]
    out["positional_embedding"] = w["text_model.embeddings.position_embedding.weight"]
    out["text_projection"] = w["text_projection.weight"].T
    out["visual.conv1.weight"] = w["vision_model.embeddings.patch_embedding.weight"]
    out["visual.class_embedding"] = w["vision_model.embeddings.class_embedding"]
    out["visual.positional_embedding"] = w["vision_model.embeddings.position_embedding.weight"]
    out["visual.proj"] = w["visual_projection.weight"].T
    out["logit_scale"] = w["logit_scale"]
    for kind in ("weight", "bias"):
        out[f"ln_final.{kind}"] = w[f"text_model.final_layer_norm.{kind}"]
        out[f"visual.ln_pre.{kind}"] = w[f"vision_model.pre_layrnorm.{kind}"]
        out[f"visual.ln_post.{kind}"] = w[f"vision_model.post_layernorm.{kind}"]
    return out


def check_hf_with_openai_code(model_py, w, samples, expected):
    """Optional: the hf_clip fixture through openai/CLIP's clip/model.py with its own QuickGELU,
    the weights renamed as transformers' conversion script maps them, pooled at the first eos."""
    model = openai_clip_module(model_py, HF_TEXT["num_attention_heads"], HF_TEXT["intermediate_size"],
                               HF_VISION["num_attention_heads"], HF_VISION["intermediate_size"],
                               quick=True)
    model.load_state_dict(hf_to_openai_names(w), strict=True)
    compare_with_reference_model("openai/CLIP clip/model.py (renamed)", model, True, samples, expected,
                                 HF_TEXT["pad_token_id"], eos_first=HF_TEXT["eos_token_id"])


def check_with_open_clip_code(src_dir, w, samples, expected):
    """Optional: open_clip's own model.CLIP (--open-clip-src DIR, the folder holding the open_clip
    package; model.py and the modules it imports), built from our open_clip_config.json's model_cfg
    and loaded strictly from the state dict. Its Attention takes torch >= 2's
    F.scaled_dot_product_attention by default; use_sdpa is turned off for its own matmul path."""
    sys.path.insert(0, src_dir)
    import open_clip.model as ref
    import open_clip.transformer as ref_transformer
    model = ref.CLIP(**OC_MODEL_CFG)
    for module in model.modules():
        if isinstance(module, ref_transformer.Attention):
            module.use_sdpa = False
    model = model.to(F64).eval()
    model.load_state_dict(w, strict=True)
    compare_with_reference_model("open_clip model.CLIP", model, False, samples, expected, OC_PAD)


def make_open_clip(openai_model_py=None, open_clip_src=None):
    print("open_clip (OpenAI CLIP tensor names)")
    d = Draw(1702)
    w = oc_weights(d)
    samples = samples_for(d, oc_texts(d))
    fam = Family("open_clip", oc_encode_text, oc_encode_image, OC_PAD)
    expected = compute_cases(fam, w, samples)
    verify(fam, w, samples, expected, oc_attention_mha)
    if openai_model_py:
        check_with_openai_code(openai_model_py, w, samples, expected)
    if open_clip_src:
        check_with_open_clip_code(open_clip_src, w, samples, expected)
    sensitivity("quick_gelu instead of gelu", expected, compute_cases(fam, w, samples, quick=True))
    sensitivity("no ln_pre", expected, compute_cases(fam, w, samples, pre_norm=False))
    sensitivity("ln_pre eps 1e-6 instead of 1e-5", expected, compute_cases(fam, w, samples, pre_eps=1e-6))

    readme = f"""
# open_clip: an open_clip hub directory (OpenAI CLIP tensor names) with random weights

Written by `tests/reference/make_clip_fixtures.py` (regenerate from the repository root with
`/usr/bin/python3 tests/reference/make_clip_fixtures.py`; deterministic). Its twin follows
mlfoundations/open_clip `src/open_clip/model.py` (CLIP._encode_text, _build_*_tower) and
`transformer.py` (Attention, ResidualAttentionBlock, Transformer, VisionTransformer,
text_global_pool), which compute what openai/CLIP `clip/model.py` does; it is checked against
a second route through torch.nn.MultiheadAttention as clip/model.py runs it.

- `model/`: `open_clip_config.json` ({{"model_cfg": {{embed_dim, quick_gelu: false, vision_cfg,
  text_cfg}}, "preprocess_cfg": {{mean, std, interpolation, resize_mode}}}}, as push_to_hf_hub's
  save_config_for_hf writes it) and `open_clip_model.safetensors` (F32, OpenAI names:
  `token_embedding.weight`, `positional_embedding`, `transformer.resblocks.N.*`, `ln_final`,
  `text_projection` [32, 24], `logit_scale`, `visual.conv1.weight`, `visual.class_embedding`,
  `visual.positional_embedding`, `visual.ln_pre`, `visual.transformer.resblocks.N.*`,
  `visual.ln_post`, `visual.proj` [48, 24]).
- Sizes: text width 32 (heads 4 from text_cfg.heads, mlp_ratio 4 -> 128, 2 layers, context 16,
  vocab 1000); vision width 48 (heads = width // head_width = 48 // 12 = 4, mlp_ratio 2.5 ->
  120, 2 layers, image 32, patch 8: 17 tokens); embed_dim 24. Activation nn.GELU (erf), since
  quick_gelu is false; LayerNorm eps 1e-5.
- Text: start {OC_START}, end {OC_END} (the largest id), padded with 0, causal mask only; pooled
  at argmax of the ids.
- The vision stem (conv1, class and positional embeddings) is drawn 0.01x smaller, so the eps of
  ln_pre (1e-5) shows: 1e-6 moves the embeddings by 0.16.
- `cases.safetensors`: 3 texts (4, 10 and 16 ids), 2 images, 2 videos (2 and 3 frames, one clip
  per frame), and `logit_scale` (ln 100). Layout: tests/reference/README.md, section "CLIP twins".
"""
    config = {"model_cfg": OC_MODEL_CFG, "preprocess_cfg": OC_PREPROCESS_CFG}
    model_files = {
        "open_clip_config.json": lambda p: write_json(p, config, False),
        "open_clip_model.safetensors": lambda p: save_safetensors(p, stored(w)),
    }
    write_kind("open_clip", model_files, expected, readme)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--openai-clip-model", metavar="FILE",
                        help="openai/CLIP's clip/model.py: also check both fixtures with it")
    parser.add_argument("--open-clip-src", metavar="DIR",
                        help="folder holding open_clip's package (src/): also check with its model.CLIP")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with torch.no_grad():
        make_hf_clip(args.openai_clip_model)
        make_open_clip(args.openai_clip_model, args.open_clip_src)
