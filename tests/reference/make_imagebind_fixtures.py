#!/usr/bin/python3
"""PyTorch twin of Meta's ImageBind (facebookresearch/ImageBind), with random weights.

Run from the repository root with Debian's PyTorch (1.13):

    /usr/bin/python3 tests/reference/make_imagebind_fixtures.py [--reference DIR]

It deletes and rewrites tests/data/pretrained/imagebind/:

  model/config.json         {"model_type": "imagebind", <ImageBindModel keyword arguments>}
  model/model.safetensors   the model's state_dict under ImageBind's own names, exactly the
                            keys torch.save(model.state_dict()) writes (buffers included:
                            the text causal mask and the fixed log logit scales); all F32
                            except the text token embedding [49408, Dt], stored F16
  cases.safetensors         inputs and float64 expected values (tests/reference/README.md,
                            section "ImageBind twin", lists every tensor)
  README.md                 a few lines on what is there

The modules below follow ImageBind's code function by function (each names the file and
function it follows); they are written again here, not copied, with plain torch ops. The
depth, thermal and IMU towers are built too because ImageBindModel.__init__ always builds
them (no argument turns a modality off), at the smallest sizes we choose.

Weights are drawn in float64, rounded to the dtype they are stored in, and every expected
value is computed in float64 from the rounded weights. The model is also run in float32 and
the float32-vs-float64 differences are printed. Checks run every time: each attention of
the twin against torch.nn.MultiheadAttention (add_bias_kv as the tower has it) loaded with
the same weights. With --reference DIR (a checkout of facebookresearch/ImageBind), the
public ImageBindModel itself is imported (its missing third-party imports are stubbed: they
are not used at inference), loaded with our state_dict (strict) and compared on every case.
Deterministic: one seeded torch.Generator, one thread.
"""

import json
import math
import os
import shutil
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import load_safetensors, save_safetensors  # noqa: E402

OUT = os.path.join("tests", "data", "pretrained", "imagebind")
F16, F32, F64 = torch.float16, torch.float32, torch.float64

# ImageBind's hard-coded sizes (imagebind_model.py, ImageBindModel._create_modality_preprocessors)
IMAGE_SIZE = 224          # RGBDTPreprocessor img_size [3, video_frames, 224, 224]; depth, thermal [1, 224, 224]
CONTEXT_LENGTH = 77       # TextPreprocessor context_length
VOCAB_SIZE = 49408        # TextPreprocessor vocab_size
SOT, EOT = 49406, 49407   # <|startoftext|>, <|endoftext|> (SimpleTokenizer: the last two ids)
IMU_SIZE = (6, 2000)      # IMUPreprocessor img_size
IMU_KERNEL = 8            # IMUPreprocessor kernel_size=8 (imu_kernel_size is never used)

# The constructor's keyword arguments and defaults (imagebind_model.py, ImageBindModel.__init__)
DEFAULTS = {
    "video_frames": 2, "kernel_size": [2, 14, 14], "audio_kernel_size": 16, "audio_stride": 10,
    "out_embed_dim": 768,
    "vision_embed_dim": 1024, "vision_num_blocks": 24, "vision_num_heads": 16,
    "audio_embed_dim": 768, "audio_num_blocks": 12, "audio_num_heads": 12,
    "audio_num_mel_bins": 128, "audio_target_len": 204, "audio_drop_path": 0.1,
    "text_embed_dim": 768, "text_num_blocks": 12, "text_num_heads": 12,
    "depth_embed_dim": 384, "depth_kernel_size": 16, "depth_num_blocks": 12,
    "depth_num_heads": 8, "depth_drop_path": 0.0,
    "thermal_embed_dim": 768, "thermal_kernel_size": 16, "thermal_num_blocks": 12,
    "thermal_num_heads": 12, "thermal_drop_path": 0.0,
    "imu_embed_dim": 512, "imu_kernel_size": 8, "imu_num_blocks": 6, "imu_num_heads": 8,
    "imu_drop_path": 0.7,
}

# What the fixture's config.json says. Left out on purpose (so a loader must apply the
# defaults): video_frames, depth_kernel_size, thermal_kernel_size, imu_kernel_size and the
# drop paths other than audio's (drop path is the identity at inference).
CONFIG = {
    "kernel_size": [2, 14, 14], "audio_kernel_size": 16, "audio_stride": 10,
    "out_embed_dim": 16,
    "vision_embed_dim": 24, "vision_num_blocks": 2, "vision_num_heads": 3,
    "audio_embed_dim": 20, "audio_num_blocks": 2, "audio_num_heads": 2,
    "audio_num_mel_bins": 38, "audio_target_len": 47, "audio_drop_path": 0.1,
    "text_embed_dim": 8, "text_num_blocks": 2, "text_num_heads": 2,
    "depth_embed_dim": 8, "depth_num_blocks": 1, "depth_num_heads": 2,
    "thermal_embed_dim": 8, "thermal_num_blocks": 1, "thermal_num_heads": 2,
    "imu_embed_dim": 8, "imu_num_blocks": 1, "imu_num_heads": 2,
}

# ---------------------------------------------------------------------------------------
# helpers.py
# ---------------------------------------------------------------------------------------


class Normalize(nn.Module):
    """helpers.py, Normalize: x / max(||x||_2, 1e-12) over the last axis."""

    def forward(self, x):
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class LearnableLogitScaling(nn.Module):
    """helpers.py, LearnableLogitScaling: min(exp(log_logit_scale), 100) * x.
    A parameter when learnable (text), else a persistent buffer (audio 20, depth 5,
    thermal 10, imu 5): both are in the state_dict as `log_logit_scale` []."""

    def __init__(self, logit_scale_init=1 / 0.07, learnable=True, max_logit_scale=100.0):
        super().__init__()
        self.max_logit_scale = max_logit_scale
        value = torch.tensor(math.log(logit_scale_init), dtype=F32)
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)

    def forward(self, x):
        return self.log_logit_scale.exp().clamp(max=self.max_logit_scale) * x


class SelectElement(nn.Module):
    """helpers.py, SelectElement: token `index` of [B, L, D] -> [B, D]."""

    def __init__(self, index):
        super().__init__()
        self.index = index

    def forward(self, x):
        return x[:, self.index]


class SelectEOSAndProject(nn.Module):
    """helpers.py, SelectEOSAndProject: row seq_len[b] of sample b, then proj (LN, Linear)."""

    def __init__(self, proj):
        super().__init__()
        self.proj = proj

    def forward(self, x, seq_len):  # x [B, L, D], seq_len I64 [B]
        return self.proj(x[torch.arange(x.shape[0]), seq_len])


# ---------------------------------------------------------------------------------------
# transformer.py
# ---------------------------------------------------------------------------------------


class MultiheadAttention(nn.Module):
    """transformer.py, MultiheadAttention = torch.nn.MultiheadAttention(x, x, x) with
    bias=True; the math of torch.nn.functional.multi_head_attention_forward:
      [q k v] = x W_inᵀ + b_in                      (in_proj_weight [3D, D], in_proj_bias [3D])
      add_bias_kv: k, v get one more row, bias_k / bias_v [1, 1, D] (already projected);
                   the additive mask gets a zero column for it
      per head h (columns h*dh .. h*dh+dh-1): softmax(q kᵀ / sqrt(dh) + mask) v
      out_proj (Linear D -> D with bias).
    Parameter names are nn.MultiheadAttention's. Works on [B, L, D] (ImageBind rearranges to
    [L, B, D] around the trunk; the layout does not change the math)."""

    def __init__(self, embed_dim, num_heads, add_bias_kv):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.zeros(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=True)
        self.add_bias_kv = add_bias_kv
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.bias_v = nn.Parameter(torch.zeros(1, 1, embed_dim))

    def forward(self, x, attn_mask):  # x [B, L, D], attn_mask [L, L] additive or None
        B, L, D = x.shape
        H = self.num_heads
        dh = D // H
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).split(D, dim=-1)
        if self.add_bias_kv:
            k = torch.cat([k, self.bias_k.expand(B, 1, D)], dim=1)  # [B, L+1, D]
            v = torch.cat([v, self.bias_v.expand(B, 1, D)], dim=1)
            if attn_mask is not None:
                attn_mask = F.pad(attn_mask, (0, 1))  # the extra key is always visible
        q = q.reshape(B, L, H, dh).transpose(1, 2)  # [B, H, L, dh]
        k = k.reshape(B, -1, H, dh).transpose(1, 2)
        v = v.reshape(B, -1, H, dh).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)  # [B, H, L, L(+1)]
        if attn_mask is not None:
            scores = scores + attn_mask
        out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, L, D)
        return self.out_proj(out)


class Mlp(nn.Module):
    """transformer.py, Mlp: fc2(GELU(fc1 x)), GELU the erf form, hidden 4 x dim (mlp_ratio);
    the dropouts are 0."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


def layer_norm(dim, eps):
    return nn.LayerNorm(dim, eps=eps)


class BlockWithMasking(nn.Module):
    """transformer.py, BlockWithMasking with layer_scale_type None (ImageBind never sets it,
    so no layer_scale_gamma tensors): x = x + attn(norm_1 x, mask); x = x + mlp(norm_2 x).
    drop_path is the identity at inference. norm_1/norm_2 eps 1e-6 (SimpleTransformer's
    _LAYER_NORM)."""

    def __init__(self, dim, num_heads, add_bias_kv):
        super().__init__()
        self.attn = MultiheadAttention(dim, num_heads, add_bias_kv)
        self.norm_1 = layer_norm(dim, 1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.norm_2 = layer_norm(dim, 1e-6)

    def forward(self, x, attn_mask):
        x = x + self.attn(self.norm_1(x), attn_mask)
        return x + self.mlp(self.norm_2(x))


class SimpleTransformer(nn.Module):
    """transformer.py, SimpleTransformer, as imagebind_model.py's instantiate_trunk builds it:
    pre_transformer_layer = Sequential(LayerNorm(eps 1e-6) if pre_transformer_ln else
    Identity, rearrange b l d -> l b d), then the blocks, then rearrange back. Only vision has
    pre_transformer_ln (its norm is `pre_transformer_layer.0`)."""

    def __init__(self, dim, num_blocks, num_heads, pre_transformer_ln, add_bias_kv):
        super().__init__()
        self.pre_transformer_layer = nn.Sequential(
            layer_norm(dim, 1e-6) if pre_transformer_ln else nn.Identity())
        self.blocks = nn.Sequential(
            *[BlockWithMasking(dim, num_heads, add_bias_kv) for _ in range(num_blocks)])

    def forward(self, tokens, attn_mask=None):  # [B, L, D]
        x = self.pre_transformer_layer(tokens)
        for block in self.blocks:
            x = block(x, attn_mask)
        return x


# ---------------------------------------------------------------------------------------
# multimodal_preprocessors.py
# ---------------------------------------------------------------------------------------


class PadIm2Video(nn.Module):
    """multimodal_preprocessors.py, Im2Video + PadIm2Video(pad_type "repeat", ntimes 2):
    [B, C, H, W] -> [B, C, 1, H, W]; a time axis of 1 is repeated to 2 frames; longer
    inputs pass unchanged."""

    def forward(self, x):
        if x.ndim == 4:
            x = x.unsqueeze(2)
        if x.shape[2] == 1:
            x = x.repeat(1, 1, 2, 1, 1)
        return x


class PatchEmbedGeneric(nn.Module):
    """multimodal_preprocessors.py, PatchEmbedGeneric: proj (a Sequential when the stem has
    several steps, else the one module itself: names `proj.1.weight` vs `proj.weight`), then
    [B, D, (T,) H, W] -> [B, (T)HW, D] row-major (the last axis fastest), then norm_layer."""

    def __init__(self, proj_stem, norm_layer=None):
        super().__init__()
        self.proj = nn.Sequential(*proj_stem) if len(proj_stem) > 1 else proj_stem[0]
        self.norm_layer = norm_layer

    def forward(self, x):
        x = self.proj(x).flatten(2).transpose(1, 2)
        return self.norm_layer(x) if self.norm_layer is not None else x

    def patch_layout(self, img_size):  # PatchEmbedGeneric.get_patch_layout, by a dry run
        with torch.no_grad():
            out = self.proj(torch.zeros([1] + list(img_size)))
        return tuple(out.shape[2:])


class SpatioTemporalPosEmbeddingHelper(nn.Module):
    """multimodal_preprocessors.py, SpatioTemporalPosEmbeddingHelper(learnable=True):
    pos_embed [1, cls + patches, D]. ImageBind interpolates it (bicubic, interpolate_pos_encoding)
    only when an input has another patch count; the fixtures never do, so this raises."""

    def __init__(self, num_tokens, dim):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))

    def get_pos_embedding(self, tokens):
        if tokens.shape[1] != self.pos_embed.shape[1]:
            raise ValueError("the twin does not interpolate positional embeddings")
        return self.pos_embed


class RGBDTPreprocessor(nn.Module):
    """multimodal_preprocessors.py, RGBDTPreprocessor (num_cls_tokens 1, learnable positions,
    no type embedding): tokens = stem(x); [cls_token; tokens] + pos_embed.
    AudioPreprocessor and ThermalPreprocessor are this class with their stem as `rgbt_stem`;
    depth's stem is `depth_stem` (rgbt_stem None)."""

    def __init__(self, img_size, dim, rgbt_stem=None, depth_stem=None):
        super().__init__()
        self.rgbt_stem = rgbt_stem
        self.depth_stem = depth_stem
        stem = rgbt_stem if rgbt_stem is not None else depth_stem
        self.patches_layout = stem.patch_layout(img_size)
        num_patches = math.prod(self.patches_layout)
        self.pos_embedding_helper = SpatioTemporalPosEmbeddingHelper(1 + num_patches, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x):
        stem = self.rgbt_stem if self.rgbt_stem is not None else self.depth_stem
        tokens = stem(x)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.pos_embedding_helper.get_pos_embedding(tokens), None


def build_causal_attention_mask(context_length):
    """multimodal_preprocessors.py, build_causal_attention_mask: -inf above the diagonal."""
    return torch.full((context_length, context_length), float("-inf")).triu(1)


class TextPreprocessor(nn.Module):
    """multimodal_preprocessors.py, TextPreprocessor(context 77, vocab 49408,
    causal_masking True, supply_seq_len_to_head True, no cls): token_embedding(ids) +
    pos_embed [1, 77, D]; the trunk gets the causal `mask` buffer [77, 77] (persistent: in
    the state_dict), the head gets seq_len = ids.argmax(-1) (the end-of-text token, the
    largest id)."""

    def __init__(self, dim):
        super().__init__()
        self.token_embedding = nn.Embedding(VOCAB_SIZE, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, CONTEXT_LENGTH, dim))
        self.register_buffer("mask", build_causal_attention_mask(CONTEXT_LENGTH))

    def forward(self, ids):  # ids I64 [B, 77]
        return self.token_embedding(ids) + self.pos_embed, self.mask, ids.argmax(dim=-1)


class IMUPreprocessor(nn.Module):
    """multimodal_preprocessors.py, IMUPreprocessor(kernel_size 8, img_size [6, 2000]):
    x [B, 6, 2000] -> unfold time into 250 windows of 8 -> [B, 250, 6*8] (channel-major,
    then time within the window) -> imu_stem.proj (Linear 48 -> D, no bias) ->
    imu_stem.norm_layer (LayerNorm eps 1e-5); [cls_token; tokens] + pos_embed [1, 251, D]."""

    def __init__(self, dim):
        super().__init__()
        self.imu_stem = PatchEmbedGeneric(
            [nn.Linear(IMU_SIZE[0] * IMU_KERNEL, dim, bias=False)], nn.LayerNorm(dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, IMU_SIZE[1] // IMU_KERNEL + 1, dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x):
        x = x.unfold(-1, IMU_KERNEL, IMU_KERNEL).permute(0, 2, 1, 3)  # [B, 250, 6, 8]
        x = x.reshape(x.shape[0], x.shape[1], -1)
        tokens = self.imu_stem.norm_layer(self.imu_stem.proj(x))
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens + self.pos_embed, None


# ---------------------------------------------------------------------------------------
# imagebind_model.py
# ---------------------------------------------------------------------------------------


class ImageBindModel(nn.Module):
    """imagebind_model.py, ImageBindModel: four ModuleDicts keyed by modality, built by
    _create_modality_preprocessors / _trunks / _heads / _postprocessors."""

    def __init__(self, **kwargs):
        super().__init__()
        unknown = set(kwargs) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown ImageBindModel arguments {sorted(unknown)}")
        a = {**DEFAULTS, **kwargs}
        self.args = a
        self.modality_preprocessors = self.create_preprocessors(a)
        self.modality_trunks = self.create_trunks(a)
        self.modality_heads = self.create_heads(a)
        self.modality_postprocessors = self.create_postprocessors()

    @staticmethod
    def create_preprocessors(a):
        """imagebind_model.py, ImageBindModel._create_modality_preprocessors."""
        dv, da = a["vision_embed_dim"], a["audio_embed_dim"]
        # vision: PadIm2Video then Conv3d(3 -> Dv, kernel = stride = kernel_size, no bias)
        rgbt_stem = PatchEmbedGeneric([
            PadIm2Video(),
            nn.Conv3d(3, dv, kernel_size=a["kernel_size"], stride=a["kernel_size"], bias=False)])
        vision = RGBDTPreprocessor([3, a["video_frames"], IMAGE_SIZE, IMAGE_SIZE], dv,
                                   rgbt_stem=rgbt_stem)
        text = TextPreprocessor(a["text_embed_dim"])
        # audio: Conv2d(1 -> Da, kernel 16, stride 10, no bias) over [1, mel, frames], then a
        # LayerNorm with torch's default eps 1e-5 (the stem norm)
        audio_stem = PatchEmbedGeneric(
            [nn.Conv2d(1, da, kernel_size=a["audio_kernel_size"], stride=a["audio_stride"],
                       bias=False)],
            nn.LayerNorm(da))
        audio = RGBDTPreprocessor([1, a["audio_num_mel_bins"], a["audio_target_len"]], da,
                                  rgbt_stem=audio_stem)
        dd, kd = a["depth_embed_dim"], a["depth_kernel_size"]
        depth_stem = PatchEmbedGeneric(
            [nn.Conv2d(1, dd, kernel_size=kd, stride=kd, bias=False)], nn.LayerNorm(dd))
        depth = RGBDTPreprocessor([1, IMAGE_SIZE, IMAGE_SIZE], dd, depth_stem=depth_stem)
        dt, kt = a["thermal_embed_dim"], a["thermal_kernel_size"]
        thermal_stem = PatchEmbedGeneric(
            [nn.Conv2d(1, dt, kernel_size=kt, stride=kt, bias=False)], nn.LayerNorm(dt))
        thermal = RGBDTPreprocessor([1, IMAGE_SIZE, IMAGE_SIZE], dt, rgbt_stem=thermal_stem)
        imu = IMUPreprocessor(a["imu_embed_dim"])
        return nn.ModuleDict({"vision": vision, "text": text, "audio": audio, "depth": depth,
                              "thermal": thermal, "imu": imu})

    @staticmethod
    def create_trunks(a):
        """imagebind_model.py, ImageBindModel._create_modality_trunks / instantiate_trunk:
        pre_transformer_ln only for vision; add_bias_kv for audio, depth, thermal, imu."""
        def trunk(m, pre_ln, bias_kv):
            return SimpleTransformer(a[f"{m}_embed_dim"], a[f"{m}_num_blocks"],
                                     a[f"{m}_num_heads"], pre_ln, bias_kv)
        return nn.ModuleDict({
            "vision": trunk("vision", True, False), "text": trunk("text", False, False),
            "audio": trunk("audio", False, True), "depth": trunk("depth", False, True),
            "thermal": trunk("thermal", False, True), "imu": trunk("imu", False, True)})

    @staticmethod
    def create_heads(a):
        """imagebind_model.py, ImageBindModel._create_modality_heads: LayerNorm (eps 1e-6),
        the cls token (text: the EOS token), Linear to out_embed_dim without bias. IMU has a
        Dropout(0.5) between (the identity at inference), so its Linear is `3`."""
        e = a["out_embed_dim"]

        def cls_head(d, dropout=False):
            mid = [SelectElement(0)] + ([nn.Dropout(0.5)] if dropout else [])
            return nn.Sequential(layer_norm(d, 1e-6), *mid, nn.Linear(d, e, bias=False))
        dt = a["text_embed_dim"]
        return nn.ModuleDict({
            "vision": cls_head(a["vision_embed_dim"]),
            "text": SelectEOSAndProject(
                nn.Sequential(layer_norm(dt, 1e-6), nn.Linear(dt, e, bias=False))),
            "audio": cls_head(a["audio_embed_dim"]),
            "depth": cls_head(a["depth_embed_dim"]),
            "thermal": cls_head(a["thermal_embed_dim"]),
            "imu": cls_head(a["imu_embed_dim"], dropout=True)})

    @staticmethod
    def create_postprocessors():
        """imagebind_model.py, ImageBindModel._create_modality_postprocessors."""
        def scaled(init, learnable):
            return nn.Sequential(Normalize(), LearnableLogitScaling(init, learnable))
        return nn.ModuleDict({
            "vision": Normalize(), "text": scaled(1 / 0.07, True), "audio": scaled(20.0, False),
            "depth": scaled(5.0, False), "thermal": scaled(10.0, False),
            "imu": scaled(5.0, False)})

    def encode(self, modality, x):
        """imagebind_model.py, ImageBindModel.forward for one modality key, with the trunk's
        output kept: x [B, S, ...] (S clips: the reduce_list mean over dim 1) or [B, ...].
        Returns (postprocessed outputs [B, E], trunk outputs [B*S, L, D])."""
        reduce = x.ndim >= 5
        if reduce:
            B, S = x.shape[:2]
            x = x.reshape(B * S, *x.shape[2:])
        if modality == "text":
            tokens, mask, seq_len = self.modality_preprocessors["text"](x)
            hidden = self.modality_trunks["text"](tokens, mask)
            out = self.modality_heads["text"](hidden, seq_len)
        else:
            tokens, mask = self.modality_preprocessors[modality](x)
            hidden = self.modality_trunks[modality](tokens, mask)
            out = self.modality_heads[modality](hidden)
        out = self.modality_postprocessors[modality](out)
        if reduce:
            out = out.reshape(B, S, -1).mean(dim=1)
        return out, hidden


# ---------------------------------------------------------------------------------------
# random weights
# ---------------------------------------------------------------------------------------


def stored_dtype(name):
    return F16 if name.endswith("token_embedding.weight") else F32


# The tokens entering the vision tower's ln_pre (eps 1e-6) and the audio stem's LayerNorm
# (eps 1e-5) are made small (std ~ SMALL), so that the norms' eps shows: with O(1) inputs a
# 1e-5-vs-1e-6 mix-up moves nothing by more than 1e-5.
SMALL = 0.01
SMALL_VISION = "modality_preprocessors.vision."
SMALL_AUDIO = "modality_preprocessors.audio.rgbt_stem.proj."


def draw_weights(model, gen):
    """Fills every parameter in state_dict order (tests/reference/README.md scales): linear
    and conv weights N(0, 1/fan_in), biases N(0, .05²), norm weights 1 + N(0, .1²), norm
    biases N(0, .05²), token embedding, positions and cls tokens N(0, .2²), bias_k/bias_v
    N(0, .5²) (large enough that a missing extra key shows), the text log logit scale
    ln(1/0.07) + N(0, .1²); the vision stem, positions and cls token and the audio stem's
    conv are SMALL times that. Buffers (the mask, the fixed scales) keep their built values.
    Each value is rounded to its stored dtype; returns the state_dict to save."""
    norms = {n for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
    params = dict(model.named_parameters())
    saved = {}
    for name, value in model.state_dict().items():
        if name in params:
            owner, _, leaf = name.rpartition(".")
            shape = value.shape
            z = torch.randn(shape, generator=gen, dtype=F64)
            if owner in norms:
                w = 1 + 0.1 * z if leaf == "weight" else 0.05 * z
            elif leaf in ("bias", "in_proj_bias"):
                w = 0.05 * z
            elif leaf in ("bias_k", "bias_v"):
                w = 0.5 * z
            elif leaf == "log_logit_scale":
                w = math.log(1 / 0.07) + 0.1 * z
            elif name.endswith("token_embedding.weight") or leaf in ("pos_embed", "cls_token"):
                w = (SMALL if name.startswith(SMALL_VISION) else 0.2) * z
            else:  # Linear, Conv2d, Conv3d, in_proj_weight: [out, in, ...]
                w = z / math.sqrt(shape[1:].numel())
                if name.startswith((SMALL_VISION, SMALL_AUDIO)):
                    w = SMALL * w
            stored = w.to(stored_dtype(name))
            with torch.no_grad():
                params[name].copy_(stored.to(value.dtype))
        else:
            stored = value.to(F32)
        saved[name] = stored
    return saved


# ---------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------


def text_ids(gen, lengths):
    """Unpadded ids: SOT, random ids in [1, 49405], EOT (SimpleTokenizer.__call__: a text is
    cut to 76 tokens and EOT is always the last)."""
    out = []
    for n in lengths:
        inner = torch.randint(1, SOT, (n - 2,), generator=gen)
        out.append(torch.cat([torch.tensor([SOT]), inner, torch.tensor([EOT])]))
    return out


def padded(ids_list):
    """data.py load_and_transform_text: each text zero-padded to 77."""
    batch = torch.zeros(len(ids_list), CONTEXT_LENGTH, dtype=torch.long)
    for i, ids in enumerate(ids_list):
        batch[i, : len(ids)] = ids
    return batch


def pixels(gen, shape):
    """Normalised pixels, N(0, 1) clipped to +-2.5, on a grid of 1/64: exact in F16 (so they
    are stored F16 to keep the file small; a 224 x 224 image is 1.2 MB in F64)."""
    x = torch.randn(shape, generator=gen, dtype=F64).clamp(-2.5, 2.5)
    return torch.round(x * 64) / 64


def features(gen, shape):
    """Normalised fbank features ((fbank + 4.268) / 9.138 in data.py): N(0, 1), float32-exact."""
    return torch.randn(shape, generator=gen, dtype=F64).to(F32).to(F64)


def video_clips(frames):
    """[T, C, S, S] with T = 2K -> [1, K, C, 2, S, S]: clip k is frames 2k, 2k+1 (data.py
    hands the model [B, clips, C, T, H, W])."""
    T = frames.shape[0]
    assert T % 2 == 0
    clips = frames.reshape(T // 2, 2, *frames.shape[1:]).transpose(1, 2)
    return clips.unsqueeze(0)


def audio_clips(feats, target_len):
    """[M, K*T] -> [1, K, 1, M, T]: clip k is frames k*T .. k*T+T-1 (data.py hands the model
    [B, clips, 1, mel, frames])."""
    M, KT = feats.shape
    K = KT // target_len
    return feats.reshape(M, K, target_len).permute(1, 0, 2).reshape(1, K, 1, M, target_len)


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


# ---------------------------------------------------------------------------------------
# cases
# ---------------------------------------------------------------------------------------


def make_cases(model, inputs):
    """Every expected value of cases.safetensors, computed by `model` in its dtype."""
    dt = next(model.parameters()).dtype
    cases = {}
    with torch.no_grad():
        ids = inputs["text"]
        out, hidden = model.encode("text", padded(ids))  # out = logit scale x unit vector
        emb = unit(out)
        for i, t in enumerate(ids):
            cases[f"text.{i}.ids"] = t
            cases[f"text.{i}.hidden"] = hidden[i, : len(t)]
            cases[f"text.{i}.embedding"] = emb[i]
        for i, img in enumerate(inputs["image"]):
            out, hidden = model.encode("vision", img.unsqueeze(0).to(dt))
            cases[f"image.{i}.pixels"] = img.to(F16)
            cases[f"image.{i}.hidden"] = hidden[0]
            cases[f"image.{i}.embedding"] = unit(out[0])
        for i, frames in enumerate(inputs["video"]):
            out, hidden = model.encode("vision", video_clips(frames).to(dt))
            cases[f"video.{i}.frames"] = frames.to(F16)
            cases[f"video.{i}.hidden"] = hidden[0]
            cases[f"video.{i}.embedding"] = unit(out[0])  # mean of unit clip embeddings
        T = model.args["audio_target_len"]
        for i, feats in enumerate(inputs["audio"]):
            out, hidden = model.encode("audio", audio_clips(feats, T).to(dt))
            cases[f"audio.{i}.features"] = feats
            cases[f"audio.{i}.hidden"] = hidden[0]
            cases[f"audio.{i}.embedding"] = unit(out[0])  # mean of 20 x unit clip embeddings
        cases["logit_scale"] = model.modality_postprocessors["text"][1].log_logit_scale.detach()
    return {k: (v.to(F64) if v.is_floating_point() and v.dtype != F16 else v)
            for k, v in cases.items()}


# ---------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------


def check_attention(model, gen):
    """Each trunk's first attention against torch.nn.MultiheadAttention (L, B, D layout)."""
    worst = 0.0
    for m, trunk in model.modality_trunks.items():
        ours = trunk.blocks[0].attn
        D = ours.in_proj_weight.shape[1]
        ref = nn.MultiheadAttention(D, ours.num_heads, bias=True,
                                    add_bias_kv=ours.add_bias_kv).to(F64).eval()
        ref.load_state_dict(ours.state_dict())
        x = torch.randn(3, 9, D, generator=gen, dtype=F64)
        mask = build_causal_attention_mask(9).to(F64) if m == "text" else None
        with torch.no_grad():
            a = ours(x, mask)
            b = ref(*(x.transpose(0, 1),) * 3, need_weights=False, attn_mask=mask)[0]
        diff = (a - b.transpose(0, 1)).abs().max().item()
        worst = max(worst, diff)
        assert diff < 1e-10, f"{m}: attention differs from nn.MultiheadAttention by {diff}"
    print(f"attention vs torch.nn.MultiheadAttention (every tower, float64): {worst:.1e}")


def max_diff(cases, other, kind):
    """{modality: max |diff|} over the tensors named <modality>.<i>.<kind>."""
    out = {}
    for k in cases:
        if k.endswith("." + kind):
            m = k.split(".")[0]
            out[m] = max(out.get(m, 0.0), (cases[k] - other[k]).abs().max().item())
    return out


def show(diffs):
    return ", ".join(f"{m} {d:.1e}" for m, d in diffs.items())


def check_float32(model64, inputs, cases64):
    model32 = ImageBindModel(**CONFIG).eval()
    model32.load_state_dict({k: v.to(F32) for k, v in model64.state_dict().items()})
    cases32 = make_cases(model32, inputs)
    for kind in ("hidden", "embedding"):
        print(f"float32 vs float64, {kind}: {show(max_diff(cases64, cases32, kind))}")


def check_sensitivity(model, inputs, cases):
    """How far plausible runtime mistakes move the expected values (printed, so the
    fixture's power is known): each mutates a copy of the twin."""
    import copy

    def pad_zero(self, x):  # PadIm2Video with pad_type "zero"
        x = x.unsqueeze(2) if x.ndim == 4 else x
        return F.pad(x, (0, 0, 0, 0, 0, 1)) if x.shape[2] == 1 else x

    def time_major(self, x):  # audio tokens flattened frames-first
        x = self.proj(x).transpose(2, 3).flatten(2).transpose(1, 2)
        return self.norm_layer(x)

    def set_eps(modules, eps):
        for m in modules:
            m.eps = eps

    def no_bias_kv(t):
        for b in t.blocks:
            b.attn.add_bias_kv = False

    def trunk_norms(m):
        return [n for b in m.modality_trunks.values() for blk in b.blocks
                for n in (blk.norm_1, blk.norm_2)]

    mistakes = {
        "vision ln_pre eps 1e-5": lambda m: set_eps(
            [m.modality_trunks["vision"].pre_transformer_layer[0]], 1e-5),
        "audio stem norm eps 1e-6": lambda m: set_eps(
            [m.modality_preprocessors["audio"].rgbt_stem.norm_layer], 1e-6),
        "block norms eps 1e-5": lambda m: set_eps(trunk_norms(m), 1e-5),
        "head norms eps 1e-5": lambda m: set_eps(
            [h[0] for k, h in m.modality_heads.items() if k != "text"]
            + [m.modality_heads["text"].proj[0]], 1e-5),
        "audio without bias_kv": lambda m: no_bias_kv(m.modality_trunks["audio"]),
        "text without causal mask": lambda m: m.modality_preprocessors["text"].mask.zero_(),
        "image zero-padded to 2 frames": lambda m: setattr(
            m.modality_preprocessors["vision"].rgbt_stem.proj[0], "forward",
            pad_zero.__get__(m.modality_preprocessors["vision"].rgbt_stem.proj[0])),
        "audio tokens time-major": lambda m: setattr(
            m.modality_preprocessors["audio"].rgbt_stem, "forward",
            time_major.__get__(m.modality_preprocessors["audio"].rgbt_stem)),
    }
    for what, mutate in mistakes.items():
        other = copy.deepcopy(model)
        with torch.no_grad():
            mutate(other)
        moved = make_cases(other, inputs)
        emb = {m: d for m, d in max_diff(cases, moved, "embedding").items() if d > 0}
        hid = {m: d for m, d in max_diff(cases, moved, "hidden").items() if d > 0}
        print(f"mistake '{what}' moves embeddings: {show(emb)}; hidden: {show(hid)}")


def import_reference(directory):
    """Imports imagebind.models.imagebind_model from a checkout, bypassing imagebind/__init__
    (which loads data.py and its video libraries) and stubbing third-party imports the
    model code names but does not use at inference (einops' two rearranges, timm's
    DropPath/trunc_normal_, and the tokenizer's ftfy/regex/iopath)."""
    import types

    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        return mod

    class DropPath(nn.Module):
        def __init__(self, p=0.0):
            super().__init__()

        def forward(self, x):
            assert not self.training
            return x

    def rearrange(x, expr):
        assert expr in ("b l d -> l b d", "l b d -> b l d"), expr
        return x.transpose(0, 1)

    def trunc_normal_(t, std=1.0):
        with torch.no_grad():
            return t.normal_(0, std)

    import re
    module("einops", rearrange=rearrange)
    module("timm")
    module("timm.layers", DropPath=DropPath, trunc_normal_=trunc_normal_)
    module("ftfy", fix_text=lambda s: s)
    module("regex", **{k: getattr(re, k) for k in ("compile", "sub", "findall", "IGNORECASE")})
    module("iopath")
    module("iopath.common")
    module("iopath.common.file_io", g_pathmgr=None)
    module("imagebind", __path__=[os.path.join(directory, "imagebind")])
    from imagebind.models import imagebind_model
    return imagebind_model


def check_reference(directory, model, saved, inputs, cases, gen):
    ib = import_reference(directory)
    kwargs = dict(CONFIG, kernel_size=tuple(CONFIG["kernel_size"]))
    ref = ib.ImageBindModel(**kwargs).to(F64).eval()
    ours = set(saved)
    theirs = set(ref.state_dict())
    assert ours == theirs, f"names differ: only ours {sorted(ours - theirs)}, " \
                           f"only the reference's {sorted(theirs - ours)}"
    for k, v in ref.state_dict().items():
        assert tuple(v.shape) == tuple(saved[k].shape), f"{k}: {v.shape} vs {saved[k].shape}"
    ref.load_state_dict({k: v.to(F64) for k, v in saved.items()}, strict=True)
    worst = {}

    def compare(what, a, b):
        worst[what] = max(worst.get(what, 0.0), (a - b).abs().max().item())

    with torch.no_grad():
        ids = inputs["text"]
        text = ref({"text": padded(ids)})["text"]
        scale = min(math.exp(cases["logit_scale"].item()), 100.0)
        for i in range(len(ids)):
            compare("text", text[i] / scale, cases[f"text.{i}.embedding"])
        trunk = ref.modality_trunks["text"]
        pre = ref.modality_preprocessors["text"](text=padded(ids))
        hidden = trunk(**pre["trunk"])
        for i, t in enumerate(ids):
            compare("hidden", hidden[i, : len(t)], cases[f"text.{i}.hidden"])
        for i, img in enumerate(inputs["image"]):
            out = ref({"vision": img.unsqueeze(0)})["vision"][0]
            compare("image", out, cases[f"image.{i}.embedding"])
            pre = ref.modality_preprocessors["vision"](vision=img.unsqueeze(0))
            compare("hidden", ref.modality_trunks["vision"](**pre["trunk"])[0],
                    cases[f"image.{i}.hidden"])
        for i, frames in enumerate(inputs["video"]):
            out = ref({"vision": video_clips(frames)})["vision"][0]  # mean of unit vectors
            compare("video", unit(out), cases[f"video.{i}.embedding"])
        T = CONFIG["audio_target_len"]
        for i, feats in enumerate(inputs["audio"]):
            clips = audio_clips(feats, T)
            out = ref({"audio": clips})["audio"][0]  # mean of 20 x unit vectors
            compare("audio", unit(out), cases[f"audio.{i}.embedding"])
            pre = ref.modality_preprocessors["audio"](audio=clips[:, 0])
            compare("hidden", ref.modality_trunks["audio"](**pre["trunk"])[0],
                    cases[f"audio.{i}.hidden"])
        # depth, thermal and IMU are not in the cases; compare the twin on random inputs
        extra = {"depth": torch.randn(2, 1, IMAGE_SIZE, IMAGE_SIZE, generator=gen, dtype=F64),
                 "thermal": torch.randn(2, 1, IMAGE_SIZE, IMAGE_SIZE, generator=gen, dtype=F64),
                 "imu": torch.randn(2, *IMU_SIZE, generator=gen, dtype=F64)}
        for m, x in extra.items():
            compare(m, ref({m: x})[m], model.encode(m, x)[0])
    for what, diff in worst.items():
        print(f"reference ImageBindModel vs twin, {what}: {diff:.1e}")
        assert diff < 1e-12, what


# ---------------------------------------------------------------------------------------


README = """\
# ImageBind fixture (random weights)

Written by `tests/reference/make_imagebind_fixtures.py`, a float64 PyTorch twin of
facebookresearch/ImageBind's `imagebind/models/*.py` (`ImageBindModel` with every modality,
at small sizes; the hard-coded sizes kept: 224 x 224 images, 77-token context, 49408-token
vocabulary). `model/` is a directory of the `imagebind` kind: `config.json` holds
`ImageBindModel`'s keyword arguments (missing keys take the constructor's defaults) and
`model.safetensors` its `state_dict` under ImageBind's names (F32; the text token embedding
F16). There is no tokenizer file: the cases give token ids. `cases.safetensors` holds text,
image, video and audio inputs with the float64 hidden states and unit embeddings; image and
video pixels are stored F16 (their values are exact in F16). tests/reference/README.md
("ImageBind twin") lists every tensor. Regenerate from the repository root:

    /usr/bin/python3 tests/reference/make_imagebind_fixtures.py [--reference IMAGEBIND_CHECKOUT]
"""


def main():
    torch.set_num_threads(1)
    reference = None
    args = sys.argv[1:]
    if args[:1] == ["--reference"] and len(args) == 2:
        reference = args[1]
    elif args:
        sys.exit("usage: make_imagebind_fixtures.py [--reference IMAGEBIND_CHECKOUT]")

    gen = torch.Generator().manual_seed(17)
    model = ImageBindModel(**CONFIG).to(F64).eval()
    saved = draw_weights(model, gen)

    inputs = {
        # lengths with SOT and EOT: an empty text, short ones, the full context
        "text": text_ids(gen, [2, 7, 19, CONTEXT_LENGTH]),
        "image": [pixels(gen, (3, IMAGE_SIZE, IMAGE_SIZE)) for _ in range(2)],
        "video": [pixels(gen, (2 * k, 3, IMAGE_SIZE, IMAGE_SIZE)) for k in (1, 2)],
        "audio": [features(gen, (CONFIG["audio_num_mel_bins"], k * CONFIG["audio_target_len"]))
                  for k in (1, 3)],
    }
    cases = make_cases(model, inputs)

    check_attention(model, gen)
    check_float32(model, inputs, cases)
    check_sensitivity(model, inputs, cases)
    if reference:
        check_reference(reference, model, saved, inputs, cases, gen)

    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(os.path.join(OUT, "model"))
    with open(os.path.join(OUT, "model", "config.json"), "w") as f:
        json.dump({"model_type": "imagebind", **CONFIG}, f, indent=2)
        f.write("\n")
    save_safetensors(os.path.join(OUT, "model", "model.safetensors"), saved)
    save_safetensors(os.path.join(OUT, "cases.safetensors"), cases)
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write(README)

    # read back what was written
    back, _ = load_safetensors(os.path.join(OUT, "model", "model.safetensors"))
    assert set(back) == set(model.state_dict())
    for name, t in sorted(back.items()):
        print(f"  {name} {t.dtype} {list(t.shape)}")
    for root, _, files in os.walk(OUT):
        for name in sorted(files):
            path = os.path.join(root, name)
            print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
