#!/usr/bin/env python3
"""Convert a pickled PyTorch checkpoint, once, into a directory tessera loads.

    /usr/bin/python3 tools/convert_checkpoint.py CHECKPOINT OUTPUT_DIR [options]

Inputs (detected from the tensor names, or named with --from):

  openai       OpenAI CLIP's TorchScript ViT-*.pt (or a plain state_dict pickle of one)
               -> an open_clip directory with quick_gelu true.
  open_clip    open_clip's .bin/.pt state dict (bare, under "state_dict", with or without
               "module." prefixes, text tower under "text." or not)
               -> an open_clip directory (quick_gelu from --quick-gelu, default false).
  imagebind    ImageBind's imagebind_huge.pth -> an imagebind directory.
  torchvision  torchvision's VisionTransformer state dict (vit_b_16-*.pth, ...)
               -> a native "tessera_towers" directory with one vision tower.

Every size the tensors' shapes tell is inferred from them, as OpenAI's clip/model.py
build_model does; the few they cannot tell (attention heads, the activation, norm eps,
ImageBind's audio stride and spectrogram size) come from flags whose defaults are the
published models' values. Every tensor of the checkpoint must be one the directory kind
holds, with the shape the inferred config implies: anything else is refused by name.

The output is written into a temporary directory beside OUTPUT_DIR and renamed into place
at the end, so a failed run leaves nothing behind. An existing non-empty OUTPUT_DIR is
refused unless --force. Exit status 0 on success, 1 with one line on stderr otherwise.
"""

import argparse
import json
import math
import os
import re
import shutil
import struct
import sys
import tempfile
import zipfile

# ---------------------------------------------------------------------------------------
# Published values, used as defaults for what shapes cannot tell
# ---------------------------------------------------------------------------------------

# OpenAI's image statistics (clip/clip.py _transform; open_clip constants.py).
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
# torchvision's ImageNet statistics (transforms/_presets.py ImageClassification).
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# CLIP: build_model gives every tower width // 64 heads; open_clip's larger image towers
# (ViT-H-14, ViT-g-14, ViT-bigG-14, ViT-e-14) have 16 heads of width / 16 instead.
OPEN_CLIP_WIDE_VISION = {1280: 16, 1408: 16, 1664: 16, 1792: 16}
CLIP_NORM_EPS = 1e-5  # nn.LayerNorm's default, used by clip/model.py and open_clip

# imagebind_huge's heads (imagebind_model.py imagebind_huge, and the constructor's
# defaults for the modalities imagebind_huge does not set).
IMAGEBIND_HEADS = {"vision": 16, "text": 16, "audio": 12, "depth": 8, "thermal": 12, "imu": 8}
# ImageBindModel fixes these (imagebind_model.py _create_modality_preprocessors).
IMAGEBIND_IMAGE_SIZE = 224
IMAGEBIND_CONTEXT_LENGTH = 77
IMAGEBIND_VOCAB_SIZE = 49408
IMAGEBIND_IMU_SHAPE = (6, 2000)  # channels x samples; IMU patches of 8 samples x 6 = 48
IMAGEBIND_IMU_KERNEL = 8
IMAGEBIND_AUDIO = {"audio_stride": 10, "audio_num_mel_bins": 128, "audio_target_len": 204}

# torchvision's published ViTs by width: vit_b_* 768/12, vit_l_* 1024/16, vit_h_14 1280/16.
TORCHVISION_HEADS = {768: 12, 1024: 16, 1280: 16}
TORCHVISION_NORM_EPS = 1e-6  # vision_transformer.py: partial(nn.LayerNorm, eps=1e-6)

FAMILIES = ("openai", "open_clip", "imagebind", "torchvision")
TOKENIZER_FILES = ("bpe_simple_vocab_16e6.txt.gz", "vocab.json", "merges.txt")


class ConversionError(Exception):
    """A checkpoint or an option that cannot be converted; the message is the whole story."""


# ---------------------------------------------------------------------------------------
# safetensors writer (8-byte little-endian header length, JSON header, raw data)
# ---------------------------------------------------------------------------------------


def safetensors_dtype(torch, dtype):
    names = {
        torch.float64: "F64",
        torch.float32: "F32",
        torch.float16: "F16",
        torch.bfloat16: "BF16",
        torch.int64: "I64",
        torch.int32: "I32",
        torch.bool: "BOOL",
    }
    if dtype not in names:
        raise ConversionError(f"cannot store a tensor of dtype {dtype} in safetensors")
    return names[dtype]


def tensor_bytes(torch, t):
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)  # numpy has no bfloat16: write the raw bit pattern
    return t.numpy().tobytes()


def write_safetensors(path, tensors):
    """tensors: {name: torch tensor}. Names sorted, data contiguous in that order."""
    import torch

    if sys.byteorder != "little":
        raise ConversionError("safetensors data is little-endian; this machine is not")
    header = {}
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        size = t.numel() * t.element_size()
        header[name] = {
            "dtype": safetensors_dtype(torch, t.dtype),
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in sorted(tensors):
            f.write(tensor_bytes(torch, tensors[name]))


# ---------------------------------------------------------------------------------------
# Reading a checkpoint
# ---------------------------------------------------------------------------------------


def is_torchscript(path):
    """A TorchScript archive is a zip holding code/ and constants.pkl; torch.save's zip
    holds data.pkl only."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_checkpoint(path, unsafe_pickle):
    """Returns (state_dict {name: tensor}, how it was stored: "torchscript" | "pickle").
    Pickles are read with torch.load(weights_only=True): tensors, numbers, strings and
    containers only, so a checkpoint cannot run code unless --unsafe-pickle says so."""
    import pickle

    import torch

    if not os.path.exists(path):
        raise ConversionError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: not a regular file (give the checkpoint file itself)")
    with open(path, "rb") as f:
        magic = f.read(2)
    # torch.save writes a zip archive (since 1.6) or, before, a pickle (protocol >= 2: 0x80).
    if not zipfile.is_zipfile(path) and magic[:1] != b"\x80":
        raise ConversionError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        if is_torchscript(path):
            return dict(torch.jit.load(path, map_location="cpu").state_dict()), "torchscript"
        obj = torch.load(path, map_location="cpu", weights_only=not unsafe_pickle)
    except pickle.UnpicklingError as e:
        reason = str(e).rsplit("WeightsUnpickler error: ", 1)[-1].strip() or type(e).__name__
        if reason.startswith("Unsupported class"):
            raise ConversionError(f"{path}: holds a pickled object that is not a tensor or a "
                                  f"container ({reason}); if you trust this file, pass "
                                  f"--unsafe-pickle") from None
        raise ConversionError(f"{path}: not a PyTorch checkpoint torch can read ({first_line(reason)})") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as e:
        raise ConversionError(f"{path}: not a PyTorch checkpoint torch can read ({first_line(e)})") from None
    return unwrap_state_dict(torch, obj, path), "pickle"


def unwrap_state_dict(torch, obj, path):
    """A training checkpoint keeps the weights under "state_dict" (open_clip) or "model"
    (torchvision's reference scripts); DistributedDataParallel adds "module." to every name
    (open_clip factory.py load_state_dict strips it the same way)."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(f"{path}: expected a state dict (a mapping of names to tensors), "
                              f"got {type(obj).__name__}{' (empty)' if isinstance(obj, dict) else ''}")
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise ConversionError(f"{path}: entry {name!r} is a {type(value).__name__}, not a tensor")
    prefixed = [k.startswith("module.") for k in obj]
    if all(prefixed):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    elif any(prefixed):
        raise ConversionError(f"{path}: some tensor names start with \"module.\" and some do not "
                              f"(e.g. {next(k for k in obj if not k.startswith('module.'))})")
    return dict(obj)


def detect_family(sd, how, path):
    names = set(sd)
    if any(n.startswith(("modality_trunks.", "modality_preprocessors.")) for n in names):
        return "imagebind"
    if "conv_proj.weight" in names or "encoder.pos_embedding" in names:
        return "torchvision"
    if any(n.startswith("visual.") for n in names):
        # OpenAI ships TorchScript archives whose state dict carries input_resolution,
        # context_length and vocab_size (build_model deletes them); open_clip never does.
        if how == "torchscript" or "input_resolution" in names:
            return "openai"
        return "open_clip"
    raise ConversionError(f"{path}: not a checkpoint of a family this tool knows (no visual.*, "
                          f"modality_trunks.* or conv_proj.* tensors; first names: "
                          f"{', '.join(sorted(names)[:3])}); name it with --from")


# ---------------------------------------------------------------------------------------
# Shape helpers
# ---------------------------------------------------------------------------------------


def shape(sd, name, where, dims=None):
    if name not in sd:
        raise ConversionError(f"{where}: tensor {name} is missing")
    s = tuple(sd[name].shape)
    if dims is not None and len(s) != dims:
        raise ConversionError(f"{where}: tensor {name} has shape {list(s)}, expected {dims} dimensions")
    return s


def count_blocks(sd, prefix, where):
    """Number of blocks named <prefix><i>.*; the indices must be exactly 0..n-1."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for m in (pattern.match(n) for n in sd) if m}
    if not found:
        raise ConversionError(f"{where}: no tensors named {prefix}<i>.*: the tower has no blocks")
    if found != set(range(len(found))):
        missing = min(set(range(max(found) + 1)) - found)
        raise ConversionError(f"{where}: blocks {prefix}<i> are not numbered 0..{max(found)}: "
                              f"{prefix}{missing} is missing")
    return len(found)


def square_grid(tokens, extra, name, where):
    """The side of a square grid of tokens - extra patches (build_model's grid_size)."""
    side = round(math.sqrt(max(tokens - extra, 0)))
    if side < 1 or side * side + extra != tokens:
        raise ConversionError(f"{where}: tensor {name} holds {tokens} positions: not {extra} + a "
                              f"square grid of patches")
    return side


def heads_for(width, heads, flag, where, tower):
    if heads <= 0 or width % heads != 0:
        raise ConversionError(f"{where}: the {tower} tower's width {width} is not divisible by "
                              f"{heads} heads; pass the model's head count with {flag}")
    return heads


def mlp_ratio_for(width, ffn):
    """A ratio r with int(width * r) == ffn, as short as possible (open_clip builds the MLP
    width as int(width * mlp_ratio): ViT-bigG-14 writes 4.9231 for 8192 / 1664)."""
    for digits in range(1, 12):
        r = round(ffn / width, digits)
        if int(width * r) == ffn:
            return r
    return ffn / width


def check_tensors(sd, expected, where, layout):
    """Every expected tensor present with its shape; nothing else."""
    for name, want in expected.items():
        if name not in sd:
            raise ConversionError(f"{where}: tensor {name} is missing (expected shape {list(want)} "
                                  f"in the {layout} layout)")
    unexpected = sorted(set(sd) - set(expected))
    if unexpected:
        more = f"; {len(unexpected)} unexpected tensors in all" if len(unexpected) > 1 else ""
        raise ConversionError(f"{where}: unexpected tensor {unexpected[0]} "
                              f"{list(sd[unexpected[0]].shape)}: not part of the {layout} layout "
                              f"tessera runs{more}")
    for name, want in expected.items():
        got = tuple(sd[name].shape)
        if got != tuple(want):
            raise ConversionError(f"{where}: tensor {name} has shape {list(got)}, expected "
                                  f"{list(want)} (from the sizes inferred for the {layout} layout)")
        if not sd[name].is_floating_point():
            raise ConversionError(f"{where}: tensor {name} has dtype {sd[name].dtype}, expected "
                                  f"a floating-point type")


def cast(tensors, dtype):
    if dtype == "keep":
        return tensors
    import torch

    target = {"float32": torch.float32, "float16": torch.float16}[dtype]
    return {n: t.to(target) for n, t in tensors.items()}


# ---------------------------------------------------------------------------------------
# CLIP (OpenAI and open_clip) -> open_clip directory
# ---------------------------------------------------------------------------------------

# open_clip's CustomTextCLIP keeps the text tower under "text."
# (open_clip model.py convert_to_custom_text_state_dict); the directory uses OpenAI's names.
CLIP_TEXT_ROOTS = ("token_embedding", "positional_embedding", "transformer", "ln_final",
                   "text_projection")
# Entries of OpenAI's TorchScript state dict that are sizes, not weights (build_model).
OPENAI_SIZE_ENTRIES = ("input_resolution", "context_length", "vocab_size")


def clip_block_shapes(prefix, width, ffn):
    """One ResidualAttentionBlock of clip/model.py (nn.MultiheadAttention + c_fc/c_proj)."""
    shapes = {}
    for norm in ("ln_1", "ln_2"):
        shapes[f"{prefix}{norm}.weight"] = (width,)
        shapes[f"{prefix}{norm}.bias"] = (width,)
    shapes[f"{prefix}attn.in_proj_weight"] = (3 * width, width)
    shapes[f"{prefix}attn.in_proj_bias"] = (3 * width,)
    shapes[f"{prefix}attn.out_proj.weight"] = (width, width)
    shapes[f"{prefix}attn.out_proj.bias"] = (width,)
    shapes[f"{prefix}mlp.c_fc.weight"] = (ffn, width)
    shapes[f"{prefix}mlp.c_fc.bias"] = (ffn,)
    shapes[f"{prefix}mlp.c_proj.weight"] = (width, ffn)
    shapes[f"{prefix}mlp.c_proj.bias"] = (width,)
    return shapes


def clip_sizes(sd, where):
    """Follows clip/model.py build_model (the ViT branch): every size from a shape."""
    conv = shape(sd, "visual.conv1.weight", where, dims=4)
    if conv[1] != 3 or conv[2] != conv[3]:
        raise ConversionError(f"{where}: tensor visual.conv1.weight has shape {list(conv)}, "
                              f"expected [width, 3, patch, patch]")
    s = {"vision_width": conv[0], "patch_size": conv[3]}
    s["vision_layers"] = count_blocks(sd, "visual.transformer.resblocks.", where)
    positions = shape(sd, "visual.positional_embedding", where, dims=2)[0]
    s["grid"] = square_grid(positions, 1, "visual.positional_embedding", where)
    s["image_size"] = s["patch_size"] * s["grid"]
    s["embed_dim"] = shape(sd, "text_projection", where, dims=2)[1]
    s["context_length"] = shape(sd, "positional_embedding", where, dims=2)[0]
    s["vocab_size"] = shape(sd, "token_embedding.weight", where, dims=2)[0]
    s["text_width"] = shape(sd, "ln_final.weight", where, dims=1)[0]
    s["text_layers"] = count_blocks(sd, "transformer.resblocks.", where)
    s["vision_ffn"] = shape(sd, "visual.transformer.resblocks.0.mlp.c_fc.weight", where, 2)[0]
    s["text_ffn"] = shape(sd, "transformer.resblocks.0.mlp.c_fc.weight", where, 2)[0]
    return s


def clip_expected(s):
    dv, dt, e = s["vision_width"], s["text_width"], s["embed_dim"]
    p = s["patch_size"]
    want = {
        "visual.conv1.weight": (dv, 3, p, p),
        "visual.class_embedding": (dv,),
        "visual.positional_embedding": (s["grid"] ** 2 + 1, dv),
        "visual.ln_pre.weight": (dv,), "visual.ln_pre.bias": (dv,),
        "visual.ln_post.weight": (dv,), "visual.ln_post.bias": (dv,),
        "visual.proj": (dv, e),
        "token_embedding.weight": (s["vocab_size"], dt),
        "positional_embedding": (s["context_length"], dt),
        "ln_final.weight": (dt,), "ln_final.bias": (dt,),
        "text_projection": (dt, e),
    }
    for i in range(s["vision_layers"]):
        want.update(clip_block_shapes(f"visual.transformer.resblocks.{i}.", dv, s["vision_ffn"]))
    for i in range(s["text_layers"]):
        want.update(clip_block_shapes(f"transformer.resblocks.{i}.", dt, s["text_ffn"]))
    return want


def convert_clip(sd, args, family, where):
    sd = dict(sd)
    hf_text = sorted(n for n in sd if n.startswith(("text.transformer.embeddings.", "text.proj.")))
    if hf_text:
        raise ConversionError(f"{where}: tensor {hf_text[0]}: a Hugging Face text tower "
                              f"(open_clip's hf_model_name); tessera runs CLIP's own text tower")
    if any(n.startswith("text.") for n in sd):
        renamed = {}
        for n, t in sd.items():
            if n.startswith("text.") and n[len("text."):].split(".")[0] in CLIP_TEXT_ROOTS:
                n = n[len("text."):]
            renamed[n] = t
        sd = renamed
    resnet = sorted(n for n in sd if n.startswith(("visual.layer1.", "visual.attnpool.")))
    if resnet:
        raise ConversionError(f"{where}: tensor {resnet[0]}: a ResNet image tower (CLIP's "
                              f"ModifiedResNet, RN50 and kin); tessera runs ViT image towers only")
    if "visual.proj" not in sd or "visual.conv1.weight" not in sd:
        raise ConversionError(f"{where}: tensors visual.proj and visual.conv1.weight are needed: "
                              f"this is not a ViT CLIP checkpoint")
    sizes_in_file = {k: sd.pop(k) for k in OPENAI_SIZE_ENTRIES if k in sd}
    logit_scale = sd.pop("logit_scale", None)
    s = clip_sizes(sd, where)
    check_tensors(sd, clip_expected(s), where, "CLIP ViT (OpenAI names)")
    for key, inferred in (("input_resolution", s["image_size"]),
                          ("context_length", s["context_length"]),
                          ("vocab_size", s["vocab_size"])):
        if key in sizes_in_file:
            t = sizes_in_file[key]
            if t.numel() != 1 or int(t.reshape(-1)[0]) != inferred:
                raise ConversionError(f"{where}: entry {key} says {t.reshape(-1).tolist()}, but the "
                                      f"tensor shapes give {inferred}")
    if logit_scale is not None:
        if logit_scale.numel() != 1:
            raise ConversionError(f"{where}: tensor logit_scale has shape "
                                  f"{list(logit_scale.shape)}, expected one value")
        sd["logit_scale"] = logit_scale.reshape(())  # open_clip accepts [] and [1]; keep one form

    vision_heads = args.vision_heads or OPEN_CLIP_WIDE_VISION.get(s["vision_width"],
                                                                   s["vision_width"] // 64)
    text_heads = args.text_heads or s["text_width"] // 64
    heads_for(s["vision_width"], vision_heads, "--vision-heads", where, "image")
    heads_for(s["text_width"], text_heads, "--text-heads", where, "text")
    quick_gelu = args.quick_gelu if args.quick_gelu is not None else family == "openai"
    eps = args.norm_eps if args.norm_eps is not None else CLIP_NORM_EPS

    # open_clip model.py CLIPVisionCfg / CLIPTextCfg: keys left at their defaults are omitted,
    # as open_clip's own model_configs/*.json do.
    vision_cfg = {"image_size": s["image_size"], "layers": s["vision_layers"],
                  "width": s["vision_width"], "patch_size": s["patch_size"]}
    if s["vision_width"] // vision_heads != 64:
        vision_cfg["head_width"] = s["vision_width"] // vision_heads
    if s["vision_ffn"] != 4 * s["vision_width"]:
        vision_cfg["mlp_ratio"] = mlp_ratio_for(s["vision_width"], s["vision_ffn"])
    text_cfg = {"context_length": s["context_length"], "vocab_size": s["vocab_size"],
                "width": s["text_width"], "heads": text_heads, "layers": s["text_layers"]}
    if s["text_ffn"] != 4 * s["text_width"]:
        text_cfg["mlp_ratio"] = mlp_ratio_for(s["text_width"], s["text_ffn"])
    if eps != CLIP_NORM_EPS:
        vision_cfg["norm_kwargs"] = {"eps": eps}
        text_cfg["norm_kwargs"] = {"eps": eps}
    model_cfg = {"embed_dim": s["embed_dim"], "quick_gelu": quick_gelu,
                 "vision_cfg": vision_cfg, "text_cfg": text_cfg}
    # open_clip transform.py PreprocessCfg; OpenAI's clip.py _transform is the same recipe
    # (resize the shortest edge bicubic, center crop, OpenAI mean/std).
    preprocess_cfg = {"size": s["image_size"], "mode": "RGB", "mean": OPENAI_MEAN,
                      "std": OPENAI_STD, "interpolation": "bicubic", "resize_mode": "shortest"}
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    return {"open_clip_config.json": config,
            "open_clip_model.safetensors": cast(sd, args.dtype)}


# ---------------------------------------------------------------------------------------
# ImageBind -> imagebind directory
# ---------------------------------------------------------------------------------------

IMAGEBIND_MODALITIES = ("vision", "text", "audio", "depth", "thermal", "imu")
IMAGEBIND_REQUIRED = ("vision", "text", "audio")
# The patch stem's weight per modality (multimodal_preprocessors.py PatchEmbedGeneric: a
# one-layer stem is stored as proj itself, the vision stem [PadIm2Video, Conv3d] as proj.1).
IMAGEBIND_STEM = {
    "vision": "modality_preprocessors.vision.rgbt_stem.proj.1.weight",
    "audio": "modality_preprocessors.audio.rgbt_stem.proj.weight",
    "depth": "modality_preprocessors.depth.depth_stem.proj.weight",
    "thermal": "modality_preprocessors.thermal.rgbt_stem.proj.weight",
    "imu": "modality_preprocessors.imu.imu_stem.proj.weight",
}


def imagebind_trunk_shapes(m, width, layers, bias_kv, pre_ln):
    """imagebind_model.py _create_modality_trunks + transformer.py SimpleTransformer /
    BlockWithMasking (norm_1, attn = nn.MultiheadAttention, norm_2, mlp.fc1/fc2, ratio 4)."""
    p = f"modality_trunks.{m}."
    shapes = {}
    if pre_ln:
        shapes[p + "pre_transformer_layer.0.weight"] = (width,)
        shapes[p + "pre_transformer_layer.0.bias"] = (width,)
    for i in range(layers):
        b = f"{p}blocks.{i}."
        shapes[b + "attn.in_proj_weight"] = (3 * width, width)
        shapes[b + "attn.in_proj_bias"] = (3 * width,)
        shapes[b + "attn.out_proj.weight"] = (width, width)
        shapes[b + "attn.out_proj.bias"] = (width,)
        if bias_kv:
            shapes[b + "attn.bias_k"] = (1, 1, width)
            shapes[b + "attn.bias_v"] = (1, 1, width)
        for norm in ("norm_1", "norm_2"):
            shapes[f"{b}{norm}.weight"] = (width,)
            shapes[f"{b}{norm}.bias"] = (width,)
        shapes[b + "mlp.fc1.weight"] = (4 * width, width)
        shapes[b + "mlp.fc1.bias"] = (4 * width,)
        shapes[b + "mlp.fc2.weight"] = (width, 4 * width)
        shapes[b + "mlp.fc2.bias"] = (width,)
    return shapes


def conv_out(size, kernel, stride):
    return (size - kernel) // stride + 1 if size >= kernel else 0


def imagebind_modality(sd, m, args, where, config):
    """Infers one modality's constructor arguments; returns its expected tensor shapes."""
    pre = f"modality_preprocessors.{m}."
    want = {}
    if m == "text":
        vocab, width = shape(sd, pre + "token_embedding.weight", where, dims=2)
        positions = shape(sd, pre + "pos_embed", where, dims=3)[1]
        if (vocab, positions) != (IMAGEBIND_VOCAB_SIZE, IMAGEBIND_CONTEXT_LENGTH):
            raise ConversionError(f"{where}: the text tower has {vocab} tokens and {positions} "
                                  f"positions; ImageBindModel fixes {IMAGEBIND_VOCAB_SIZE} and "
                                  f"{IMAGEBIND_CONTEXT_LENGTH}")
        want[pre + "token_embedding.weight"] = (vocab, width)
        want[pre + "pos_embed"] = (1, positions, width)
        if pre + "mask" in sd:  # the causal mask buffer (TextPreprocessor, causal_masking)
            want[pre + "mask"] = (positions, positions)
    else:
        stem = shape(sd, IMAGEBIND_STEM[m], where)
        width = stem[0]
        if m == "vision":
            if len(stem) != 5 or stem[1] != 3 or stem[3] != stem[4]:
                raise ConversionError(f"{where}: tensor {IMAGEBIND_STEM[m]} has shape {list(stem)}, "
                                      f"expected [width, 3, frames, k, k]")
            kt, k = stem[2], stem[3]
            side = conv_out(IMAGEBIND_IMAGE_SIZE, k, k)
            patches = shape(sd, pre + "pos_embedding_helper.pos_embed", where, dims=3)[1] - 1
            if side < 1 or patches < side * side or patches % (side * side) != 0:
                raise ConversionError(f"{where}: tensor {pre}pos_embedding_helper.pos_embed holds "
                                      f"{patches + 1} positions: not 1 + a whole number of "
                                      f"{side}x{side} grids ({IMAGEBIND_IMAGE_SIZE} px, patch {k})")
            config.update(video_frames=patches // (side * side) * kt, kernel_size=[kt, k, k])
        elif m == "imu":
            if stem != (stem[0], IMAGEBIND_IMU_SHAPE[0] * IMAGEBIND_IMU_KERNEL):
                raise ConversionError(f"{where}: tensor {IMAGEBIND_STEM[m]} has shape {list(stem)}, "
                                      f"expected [width, {IMAGEBIND_IMU_SHAPE[0] * IMAGEBIND_IMU_KERNEL}]")
            patches = IMAGEBIND_IMU_SHAPE[1] // IMAGEBIND_IMU_KERNEL
        else:
            if len(stem) != 4 or stem[1] != 1 or stem[2] != stem[3]:
                raise ConversionError(f"{where}: tensor {IMAGEBIND_STEM[m]} has shape {list(stem)}, "
                                      f"expected [width, 1, k, k]")
            k = stem[2]
            if m == "audio":
                stride, mels, frames = args.audio_stride, args.audio_num_mel_bins, args.audio_target_len
                patches = conv_out(mels, k, stride) * conv_out(frames, k, stride)
                config.update(audio_kernel_size=k, audio_stride=stride,
                              audio_num_mel_bins=mels, audio_target_len=frames)
            else:
                side = conv_out(IMAGEBIND_IMAGE_SIZE, k, k)
                patches = side * side
                config[f"{m}_kernel_size"] = k
        want[IMAGEBIND_STEM[m]] = stem
        want[pre + "cls_token"] = (1, 1, width)
        # learned positions: IMUPreprocessor.pos_embed, else SpatioTemporalPosEmbeddingHelper's
        positions = "pos_embed" if m == "imu" else "pos_embedding_helper.pos_embed"
        want[pre + positions] = (1, patches + 1, width)
        if m != "vision":  # the stems of audio, depth, thermal, IMU end in a LayerNorm
            stem_root = IMAGEBIND_STEM[m].rsplit(".proj.", 1)[0]
            want[stem_root + ".norm_layer.weight"] = (width,)
            want[stem_root + ".norm_layer.bias"] = (width,)

    layers = count_blocks(sd, f"modality_trunks.{m}.blocks.", where)
    heads = getattr(args, f"{m}_heads") or IMAGEBIND_HEADS[m]
    heads_for(width, heads, f"--{m}-heads", where, m)
    config[f"{m}_embed_dim"] = width
    config[f"{m}_num_blocks"] = layers
    config[f"{m}_num_heads"] = heads
    want.update(imagebind_trunk_shapes(m, width, layers, bias_kv=m not in ("vision", "text"),
                                       pre_ln=m == "vision"))

    # imagebind_model.py _create_modality_heads / _create_modality_postprocessors.
    head = f"modality_heads.{m}."
    proj = {"text": "proj.1.weight", "imu": "3.weight"}.get(m, "2.weight")
    norm = "proj.0" if m == "text" else "0"
    out_dim = shape(sd, head + proj, where, dims=2)[0]
    want[head + proj] = (out_dim, width)
    want[f"{head}{norm}.weight"] = (width,)
    want[f"{head}{norm}.bias"] = (width,)
    if m != "vision":
        want[f"modality_postprocessors.{m}.1.log_logit_scale"] = ()
    return want, out_dim


def convert_imagebind(sd, args, where):
    if args.norm_eps is not None:
        raise ConversionError("--norm-eps: ImageBindModel fixes its norms' eps; the imagebind "
                              "directory has no key for it")
    present = [m for m in IMAGEBIND_MODALITIES
               if any(n.startswith(f"modality_trunks.{m}.") for n in sd)]
    for m in IMAGEBIND_REQUIRED:
        if m not in present:
            raise ConversionError(f"{where}: no modality_trunks.{m}.* tensors: an ImageBind "
                                  f"checkpoint needs the vision, text and audio towers")
    config = {"model_type": "imagebind"}
    expected = {}
    out_dims = {}
    for m in present:
        want, out_dims[m] = imagebind_modality(sd, m, args, where, config)
        expected.update(want)
    if len(set(out_dims.values())) != 1:
        raise ConversionError(f"{where}: the modality heads project to different sizes "
                              f"({', '.join(f'{m} {d}' for m, d in out_dims.items())})")
    config["out_embed_dim"] = out_dims["vision"]
    check_tensors(sd, expected, where, "ImageBind")
    ordered = {"model_type": "imagebind", "out_embed_dim": config.pop("out_embed_dim")}
    ordered.update(sorted((k, v) for k, v in config.items() if k != "model_type"))
    return {"config.json": ordered, "model.safetensors": cast(sd, args.dtype)}


# ---------------------------------------------------------------------------------------
# torchvision VisionTransformer -> native tessera_towers directory
# ---------------------------------------------------------------------------------------


def torchvision_block_map(i):
    """encoder.layers.encoder_layer_<i>.* (vision_transformer.py EncoderBlock) -> the
    native names. MLPBlock is MLP since torchvision 0.13 (mlp.0 / mlp.3); older files say
    mlp.linear_1 / mlp.linear_2 (MLPBlock._load_from_state_dict renames them the same way)."""
    src = f"encoder.layers.encoder_layer_{i}."
    dst = f"vision.transformer.resblocks.{i}."
    pairs = {"ln_1": "ln_1", "ln_2": "ln_2", "self_attention.out_proj": "attn.out_proj",
             "mlp.0": "mlp.c_fc", "mlp.3": "mlp.c_proj"}
    mapping = {f"{src}self_attention.in_proj_weight": f"{dst}attn.in_proj_weight",
               f"{src}self_attention.in_proj_bias": f"{dst}attn.in_proj_bias"}
    for a, b in pairs.items():
        for leaf in ("weight", "bias"):
            mapping[f"{src}{a}.{leaf}"] = f"{dst}{b}.{leaf}"
    return mapping


def convert_torchvision(sd, args, where):
    import torch

    sd = {re.sub(r"(\.mlp\.)linear_([12])\.", lambda m: f"{m.group(1)}{3 * (int(m.group(2)) - 1)}.", n): t
          for n, t in sd.items()}
    if any(n.startswith("conv_proj.conv_") for n in sd):
        raise ConversionError(f"{where}: tensor {sorted(n for n in sd if n.startswith('conv_proj.'))[0]}: "
                              f"a convolutional stem (conv_stem_configs); tessera's image tower has "
                              f"one patch convolution")
    if "heads.pre_logits.weight" in sd:
        raise ConversionError(f"{where}: tensor heads.pre_logits.weight: a representation layer "
                              f"(representation_size, Linear + Tanh) the native tower cannot hold")
    conv = shape(sd, "conv_proj.weight", where, dims=4)
    if conv[1] != 3 or conv[2] != conv[3]:
        raise ConversionError(f"{where}: tensor conv_proj.weight has shape {list(conv)}, "
                              f"expected [hidden_dim, 3, patch, patch]")
    width, patch = conv[0], conv[3]
    positions = shape(sd, "encoder.pos_embedding", where, dims=3)[1]
    grid = square_grid(positions, 1, "encoder.pos_embedding", where)
    layers = count_blocks(sd, "encoder.layers.encoder_layer_", where)
    ffn = shape(sd, "encoder.layers.encoder_layer_0.mlp.0.weight", where, dims=2)[0]
    classes = shape(sd, "heads.head.weight", where, dims=2)[0]
    if args.vision_heads:
        heads = args.vision_heads
    elif width in TORCHVISION_HEADS:
        heads = TORCHVISION_HEADS[width]
    else:
        raise ConversionError(f"{where}: hidden width {width} is not one of torchvision's published "
                              f"ViTs ({', '.join(f'{w}: {h} heads' for w, h in TORCHVISION_HEADS.items())}); "
                              f"pass the head count with --vision-heads")
    heads_for(width, heads, "--vision-heads", where, "image")

    expected = {
        "conv_proj.weight": (width, 3, patch, patch), "conv_proj.bias": (width,),
        "class_token": (1, 1, width), "encoder.pos_embedding": (1, positions, width),
        "encoder.ln.weight": (width,), "encoder.ln.bias": (width,),
        "heads.head.weight": (classes, width), "heads.head.bias": (classes,),
    }
    renames = {"conv_proj.weight": "vision.conv1.weight", "conv_proj.bias": "vision.conv1.bias",
               "encoder.ln.weight": "vision.ln_post.weight", "encoder.ln.bias": "vision.ln_post.bias"}
    for i in range(layers):
        block = torchvision_block_map(i)
        renames.update(block)
        native = clip_block_shapes(f"vision.transformer.resblocks.{i}.", width, ffn)
        expected.update({src: native[dst] for src, dst in block.items()})
    check_tensors(sd, expected, where, "torchvision VisionTransformer")

    out = {dst: sd[src] for src, dst in renames.items()}
    # vision_transformer.py VisionTransformer.forward: cat(class_token, patches) + pos_embedding,
    # the same order as CLIP's class_embedding + positional_embedding.
    out["vision.class_embedding"] = sd["class_token"].reshape(width)
    out["vision.positional_embedding"] = sd["encoder.pos_embedding"].reshape(positions, width)
    keep_head = args.torchvision_head == "proj"
    if keep_head:
        out["vision.proj.weight"] = sd["heads.head.weight"]
        out["vision.proj.bias"] = sd["heads.head.bias"]
    else:
        out["vision.proj.weight"] = torch.eye(width, dtype=sd["conv_proj.weight"].dtype)
    eps = args.norm_eps if args.norm_eps is not None else TORCHVISION_NORM_EPS
    image_size = grid * patch
    tower = {"modality": "image", "width": width, "layers": layers, "heads": heads,
             "ffn_dim": ffn, "activation": "gelu", "norm_eps": eps, "pre_norm": False,
             "bias_kv": False, "causal": False, "pooling": "cls", "proj_bias": keep_head,
             "image_size": image_size, "patch_size": patch, "channels": 3, "clip_frames": 1,
             "conv_bias": True, "cls_token": True}
    config = {"model_type": "tessera_towers", "embed_dim": classes if keep_head else width,
              "towers": {"vision": tower}, "video": {"tower": "vision", "clip_frames": 1}}
    # torchvision's ViT_*_Weights transforms (transforms/_presets.py ImageClassification):
    # resize the shortest edge (bilinear), center crop, ImageNet mean/std; written in the HF
    # preprocessor_config.json form tessera reads for HF directories.
    resize = args.resize_size or (256 if image_size == 224 else image_size)
    preprocessor = {"do_resize": True, "size": {"shortest_edge": resize}, "resample": 2,
                    "do_center_crop": True, "crop_size": {"height": image_size, "width": image_size},
                    "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                    "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, "do_convert_rgb": True}
    return {"config.json": config, "preprocessor_config.json": preprocessor,
            "model.safetensors": cast(out, args.dtype)}


# ---------------------------------------------------------------------------------------
# Writing the directory
# ---------------------------------------------------------------------------------------


def check_output(out, force):
    if os.path.lexists(out):
        if not os.path.isdir(out) or os.path.islink(out):
            raise ConversionError(f"{out}: exists and is not a directory")
        if os.listdir(out) and not force:
            raise ConversionError(f"{out}: directory exists and is not empty; pass --force to replace it")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise ConversionError(f"{out}: the parent directory {parent} does not exist")


def write_directory(out, files, tokenizer_files, force):
    """Writes every file into a temporary directory beside `out`, then renames it into place:
    the output is complete or absent, never half-written."""
    check_output(out, force)
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    old = None
    try:
        for name, content in files.items():
            path = os.path.join(tmp, name)
            if name.endswith(".json"):
                with open(path, "w", encoding="utf-8") as f:
                    json.dump(content, f, indent=2)
                    f.write("\n")
            else:
                write_safetensors(path, content)
        for src in tokenizer_files:
            shutil.copyfile(src, os.path.join(tmp, os.path.basename(src)))
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        if os.path.isdir(out):
            if os.listdir(out):
                old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=parent)
                os.rmdir(old)
                os.rename(out, old)
            else:
                os.rmdir(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not os.path.exists(out):
            os.rename(old, out)  # put the replaced directory back
            old = None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------


def positive(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def parser():
    p = argparse.ArgumentParser(
        prog="convert_checkpoint.py",
        description="Convert a pickled PyTorch checkpoint once into a directory tessera loads "
                    "(open_clip, imagebind, or the native tessera_towers kind). Sizes are "
                    "inferred from tensor shapes as OpenAI's build_model does; flags give "
                    "what shapes cannot tell.",
        epilog="""families and outputs:
  openai       OpenAI's TorchScript ViT-*.pt, or a plain state dict of one (--from openai)
               -> open_clip_config.json + open_clip_model.safetensors, quick_gelu true
  open_clip    open_clip's .bin/.pt (bare, under "state_dict", "module." prefixes,
               "text." tower) -> the same open_clip directory, quick_gelu false unless
               --quick-gelu (the *-quickgelu models)
  imagebind    imagebind_huge.pth -> config.json {"model_type": "imagebind", ImageBindModel
               keyword arguments} + model.safetensors (the same tensor names)
  torchvision  torchvision's VisionTransformer state dict -> config.json
               {"model_type": "tessera_towers"} + model.safetensors + preprocessor_config.json.
               The embedding is torchvision's pre-logits feature (the class token after
               encoder.ln): the classifier head is dropped and proj is the identity, unless
               --torchvision-head proj keeps the head as the projection (embedding = logits).

defaults of the flags (the published models):
  heads     CLIP: width // 64 (build_model), except open_clip's 1280/1408/1664/1792-wide
            image towers: 16. ImageBind: imagebind_huge's vision 16, text 16, audio 12,
            depth 8, thermal 12, imu 8. torchvision: 768 -> 12, 1024 -> 16, 1280 -> 16;
            other widths need --vision-heads.
  norm eps  CLIP 1e-5, torchvision 1e-6; ImageBind fixes its own.
  ImageBind audio: stride 10, 128 mel bins, 204 frames (the audio kernel comes from shapes).

Tokenizer files are not in a checkpoint: copy them in with --tokenizer
(bpe_simple_vocab_16e6.txt.gz ships with CLIP, open_clip and ImageBind).""",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="the .pt / .bin / .pth file")
    p.add_argument("output", help="the directory to write (must not exist or be empty, unless --force)")
    p.add_argument("--from", dest="family", choices=("auto",) + FAMILIES, default="auto",
                   help="the checkpoint's family (default: detected from its tensor names; a "
                        "plain state dict with OpenAI names is taken as open_clip)")
    p.add_argument("--quick-gelu", dest="quick_gelu", action=argparse.BooleanOptionalAction,
                   default=None, help="CLIP families: the MLP's activation is QuickGELU "
                                      "(default: true for openai, false for open_clip)")
    for tower in ("vision", "text", "audio", "depth", "thermal", "imu"):
        p.add_argument(f"--{tower}-heads", type=positive, default=None, metavar="N",
                       help=f"attention heads of the {tower} tower (default: the published value)")
    p.add_argument("--norm-eps", type=positive_float, default=None, metavar="EPS",
                   help="LayerNorm eps (default: 1e-5 for CLIP, 1e-6 for torchvision)")
    p.add_argument("--audio-stride", type=positive, default=IMAGEBIND_AUDIO["audio_stride"], metavar="N",
                   help="ImageBind: the audio patch stride (default 10)")
    p.add_argument("--audio-num-mel-bins", type=positive, metavar="N",
                   default=IMAGEBIND_AUDIO["audio_num_mel_bins"],
                   help="ImageBind: mel bins of the audio input (default 128)")
    p.add_argument("--audio-target-len", type=positive, metavar="N",
                   default=IMAGEBIND_AUDIO["audio_target_len"],
                   help="ImageBind: frames of one audio clip (default 204)")
    p.add_argument("--torchvision-head", choices=("drop", "proj"), default="drop",
                   help="torchvision: drop the classifier head (embedding = pre-logits feature, "
                        "the default) or keep it as the projection (embedding = logits)")
    p.add_argument("--resize-size", type=positive, default=None, metavar="N",
                   help="torchvision: the shortest edge before the center crop (default 256 "
                        "for 224-pixel models, else the image size)")
    p.add_argument("--dtype", choices=("keep", "float32", "float16"), default="keep",
                   help="store the weights as they are in the checkpoint (default) or cast them")
    p.add_argument("--tokenizer", action="append", default=[], metavar="FILE",
                   help="copy a tokenizer file into the directory (bpe_simple_vocab_16e6.txt.gz, "
                        "vocab.json, merges.txt); repeat for several")
    p.add_argument("--unsafe-pickle", action="store_true",
                   help="unpickle any object (torch.load weights_only=False): only for files you trust")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty output directory")
    return p


def convert(args):
    for src in args.tokenizer:
        if os.path.basename(src) not in TOKENIZER_FILES:
            raise ConversionError(f"--tokenizer {src}: expected one of {', '.join(TOKENIZER_FILES)}")
        if not os.path.isfile(src):
            raise ConversionError(f"--tokenizer {src}: no such file")
    check_output(args.output, args.force)  # fail before the (slow) load when we can
    sd, how = read_checkpoint(args.checkpoint, args.unsafe_pickle)
    family = detect_family(sd, how, args.checkpoint) if args.family == "auto" else args.family
    where = args.checkpoint
    if family in ("openai", "open_clip"):
        files = convert_clip(sd, args, family, where)
    elif family == "imagebind":
        files = convert_imagebind(sd, args, where)
    else:
        files = convert_torchvision(sd, args, where)
    write_directory(args.output, files, args.tokenizer, args.force)
    return family


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        family = convert(args)
    except ConversionError as e:
        print(f"convert_checkpoint.py: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"convert_checkpoint.py: {e.filename or args.output}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"{args.checkpoint}: {family} checkpoint written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
