"""Tests of tools/convert_checkpoint.py (pytest; Debian's PyTorch and torchvision):

    /usr/bin/python3 -m pytest tests/reference/test_convert_checkpoint.py

Each test builds a small random checkpoint in one input form (an OpenAI TorchScript archive
made with torch.jit.trace, open_clip training state dicts, ImageBind's names, torchvision's
VisionTransformer), converts it in-process, and checks the directory written: the sizes
inferred, tensor names and shapes, the refusals, --force, and that a failed run leaves
nothing behind. For torchvision, the converted directory is also run through a small
implementation of the native tower (docs: /work/notes/issue17.md "The native tower format")
and compared with torchvision's own forward. Every test works inside its own tmp_path.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.vision_transformer import VisionTransformer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOOL = os.path.join(ROOT, "tools", "convert_checkpoint.py")
FIXTURE = os.path.join(ROOT, "tests", "data", "pretrained", "towers_torchvision")
sys.path.insert(0, HERE)
from make_fixtures import load_safetensors  # noqa: E402
from make_torchvision_fixtures import TINY, random_weights, torchvision_forward  # noqa: E402

spec = importlib.util.spec_from_file_location("convert_checkpoint", TOOL)
convert_checkpoint = importlib.util.module_from_spec(spec)
spec.loader.exec_module(convert_checkpoint)

F64 = torch.float64
# The native forward below and torchvision both run in float64 on the same weights: they
# differ only by summation order.
NATIVE_TOL = 1e-10

torch.set_num_threads(1)


def run(argv, capsys):
    """Runs the converter in-process: (exit status, stdout, stderr)."""
    status = convert_checkpoint.main([str(a) for a in argv])
    out = capsys.readouterr()
    return status, out.out, out.err


def refused(argv, capsys, *fragments):
    status, _, err = run(argv, capsys)
    assert status == 1
    assert err.count("\n") == 1, err  # one line
    for fragment in fragments:
        assert fragment in err, err
    return err


def tensors_of(path):
    return load_safetensors(str(path))[0]


def dtypes_of(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return {k: v["dtype"] for k, v in header.items() if k != "__metadata__"}


def randn(gen, *shape, dtype=torch.float32):
    return torch.randn(*shape, generator=gen, dtype=F64).to(dtype)


# ---------------------------------------------------------------------------------------
# CLIP state dicts under OpenAI's names (clip/model.py CLIP)
# ---------------------------------------------------------------------------------------


def clip_block(gen, prefix, d, ffn, dtype):
    t = {}
    for norm in ("ln_1", "ln_2"):
        t[f"{prefix}{norm}.weight"] = 1 + 0.1 * randn(gen, d, dtype=dtype)
        t[f"{prefix}{norm}.bias"] = randn(gen, d, dtype=dtype)
    t[prefix + "attn.in_proj_weight"] = randn(gen, 3 * d, d, dtype=dtype)
    t[prefix + "attn.in_proj_bias"] = randn(gen, 3 * d, dtype=dtype)
    t[prefix + "attn.out_proj.weight"] = randn(gen, d, d, dtype=dtype)
    t[prefix + "attn.out_proj.bias"] = randn(gen, d, dtype=dtype)
    t[prefix + "mlp.c_fc.weight"] = randn(gen, ffn, d, dtype=dtype)
    t[prefix + "mlp.c_fc.bias"] = randn(gen, ffn, dtype=dtype)
    t[prefix + "mlp.c_proj.weight"] = randn(gen, d, ffn, dtype=dtype)
    t[prefix + "mlp.c_proj.bias"] = randn(gen, d, dtype=dtype)
    return t


def clip_state_dict(dv=64, vlayers=2, patch=4, grid=2, dt=64, tlayers=1, context=7, vocab=50,
                    embed=16, vffn=None, tffn=None, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    sd = {
        "visual.conv1.weight": randn(gen, dv, 3, patch, patch, dtype=dtype),
        "visual.class_embedding": randn(gen, dv, dtype=dtype),
        "visual.positional_embedding": randn(gen, grid * grid + 1, dv, dtype=dtype),
        "visual.ln_pre.weight": randn(gen, dv, dtype=dtype), "visual.ln_pre.bias": randn(gen, dv, dtype=dtype),
        "visual.ln_post.weight": randn(gen, dv, dtype=dtype), "visual.ln_post.bias": randn(gen, dv, dtype=dtype),
        "visual.proj": randn(gen, dv, embed, dtype=dtype),
        "token_embedding.weight": randn(gen, vocab, dt, dtype=dtype),
        "positional_embedding": randn(gen, context, dt, dtype=dtype),
        "ln_final.weight": randn(gen, dt, dtype=dtype), "ln_final.bias": randn(gen, dt, dtype=dtype),
        "text_projection": randn(gen, dt, embed, dtype=dtype),
        "logit_scale": torch.tensor(4.6052, dtype=dtype),
    }
    for i in range(vlayers):
        sd.update(clip_block(gen, f"visual.transformer.resblocks.{i}.", dv, vffn or 4 * dv, dtype))
    for i in range(tlayers):
        sd.update(clip_block(gen, f"transformer.resblocks.{i}.", dt, tffn or 4 * dt, dtype))
    return sd


class Holder(nn.Module):
    """A module tree whose state_dict() is exactly `tensors` (dotted names become
    submodules), with a forward torch.jit.trace can record."""

    def __init__(self, tensors):
        super().__init__()
        for name, t in tensors.items():
            module = self
            *path, leaf = name.split(".")
            for part in path:
                if not hasattr(module, part):
                    module.add_module(part, nn.Module())
                module = getattr(module, part)
            if t.is_floating_point() and t.dim() > 0:
                module.register_parameter(leaf, nn.Parameter(t, requires_grad=False))
            else:
                module.register_buffer(leaf, t)

    def forward(self, x):
        return x * self.logit_scale


def openai_torchscript(path, sd):
    """OpenAI ships fp16 TorchScript archives whose state dict also holds three sizes."""
    holder = Holder(sd)
    traced = torch.jit.trace(holder, torch.ones(2, dtype=sd["logit_scale"].dtype))
    traced.save(str(path))


def test_help_names_the_choices():
    done = subprocess.run([sys.executable, TOOL, "--help"], capture_output=True, text=True, check=True)
    for fragment in ("--quick-gelu", "--vision-heads", "--force", "pre-logits", "tessera_towers",
                     "imagebind", "--torchvision-head"):
        assert fragment in done.stdout


def test_openai_torchscript_archive_becomes_an_open_clip_directory(tmp_path, capsys):
    sd = clip_state_dict(dtype=torch.float16)
    sd["input_resolution"] = torch.tensor(8)
    sd["context_length"] = torch.tensor(7)
    sd["vocab_size"] = torch.tensor(50)
    openai_torchscript(tmp_path / "ViT-tiny.pt", sd)
    status, out, _ = run([tmp_path / "ViT-tiny.pt", tmp_path / "out"], capsys)
    assert status == 0 and "openai checkpoint" in out
    assert sorted(os.listdir(tmp_path / "out")) == ["open_clip_config.json", "open_clip_model.safetensors"]
    config = json.loads((tmp_path / "out" / "open_clip_config.json").read_text())
    assert config["model_cfg"] == {
        "embed_dim": 16, "quick_gelu": True,
        "vision_cfg": {"image_size": 8, "layers": 2, "width": 64, "patch_size": 4},
        "text_cfg": {"context_length": 7, "vocab_size": 50, "width": 64, "heads": 1, "layers": 1},
    }
    assert config["preprocess_cfg"]["size"] == 8
    assert config["preprocess_cfg"]["interpolation"] == "bicubic"
    assert config["preprocess_cfg"]["mean"] == convert_checkpoint.OPENAI_MEAN
    written = tensors_of(tmp_path / "out" / "open_clip_model.safetensors")
    expected = {k: v for k, v in sd.items() if k not in ("input_resolution", "context_length", "vocab_size")}
    assert set(written) == set(expected)
    for name, t in expected.items():
        assert torch.equal(torch.as_tensor(written[name]).reshape(t.shape), t), name
    assert set(dtypes_of(tmp_path / "out" / "open_clip_model.safetensors").values()) == {"F16"}


def test_openai_sizes_that_disagree_with_the_shapes_are_refused(tmp_path, capsys):
    sd = clip_state_dict()
    sd["input_resolution"] = torch.tensor(224)
    openai_torchscript(tmp_path / "bad.pt", sd)
    refused([tmp_path / "bad.pt", tmp_path / "out"], capsys, "input_resolution", "224", "give 8")
    assert not (tmp_path / "out").exists()


def test_a_plain_clip_state_dict_is_open_clip_unless_named_openai(tmp_path, capsys):
    torch.save(clip_state_dict(), tmp_path / "plain.pt")
    assert run([tmp_path / "plain.pt", tmp_path / "a"], capsys)[0] == 0
    assert run([tmp_path / "plain.pt", tmp_path / "b", "--from", "openai"], capsys)[0] == 0
    assert run([tmp_path / "plain.pt", tmp_path / "c", "--quick-gelu"], capsys)[0] == 0
    gelu = {d: json.loads((tmp_path / d / "open_clip_config.json").read_text())["model_cfg"]["quick_gelu"]
            for d in "abc"}
    assert gelu == {"a": False, "b": True, "c": True}


def test_open_clip_training_checkpoint_with_module_prefixes_and_a_text_tower(tmp_path, capsys):
    sd = clip_state_dict(dv=96, dt=64, vffn=200, tffn=128, seed=1)
    layout = {}
    for name, t in sd.items():
        if name.split(".")[0] in convert_checkpoint.CLIP_TEXT_ROOTS:
            name = "text." + name  # open_clip's CustomTextCLIP
        layout["module." + name] = t
    torch.save({"epoch": 3, "name": "tiny", "state_dict": layout}, tmp_path / "epoch_3.pt")
    status, _, _ = run([tmp_path / "epoch_3.pt", tmp_path / "out", "--vision-heads", "3",
                        "--text-heads", "4", "--norm-eps", "1e-6"], capsys)
    assert status == 0
    cfg = json.loads((tmp_path / "out" / "open_clip_config.json").read_text())["model_cfg"]
    assert cfg["quick_gelu"] is False
    assert cfg["vision_cfg"]["head_width"] == 32
    assert int(96 * cfg["vision_cfg"]["mlp_ratio"]) == 200
    assert cfg["text_cfg"]["mlp_ratio"] == 2.0
    assert cfg["text_cfg"]["heads"] == 4
    assert cfg["vision_cfg"]["norm_kwargs"] == {"eps": 1e-6} == cfg["text_cfg"]["norm_kwargs"]
    assert set(tensors_of(tmp_path / "out" / "open_clip_model.safetensors")) == set(sd)


def test_mlp_ratio_is_the_one_open_clip_rebuilds_the_width_from():
    # ViT-bigG-14 (width 1664, MLP 8192) and ViT-g-14 (1408, 6144) as open_clip writes them.
    assert convert_checkpoint.mlp_ratio_for(1664, 8192) == 4.9231
    for width, ffn in ((1664, 8192), (1408, 6144), (96, 200), (64, 100), (768, 3072)):
        assert int(width * convert_checkpoint.mlp_ratio_for(width, ffn)) == ffn


def test_a_resnet_image_tower_is_refused_by_name(tmp_path, capsys):
    sd = {k: v for k, v in clip_state_dict().items() if not k.startswith("visual.")}
    sd["visual.layer1.0.conv1.weight"] = torch.zeros(8, 8, 1, 1)
    sd["visual.attnpool.positional_embedding"] = torch.zeros(50, 64)
    torch.save(sd, tmp_path / "RN50.pt")
    refused([tmp_path / "RN50.pt", tmp_path / "out"], capsys, "visual.attnpool.positional_embedding",
            "ResNet")
    assert os.listdir(tmp_path) == ["RN50.pt"]  # no output, no temporary directory


@pytest.mark.parametrize("change, fragments", [
    (lambda sd: sd.update({"visual.transformer.resblocks.0.ls_1.gamma": torch.ones(64)}),
     ["unexpected tensor visual.transformer.resblocks.0.ls_1.gamma"]),
    (lambda sd: sd.pop("visual.ln_pre.bias"), ["tensor visual.ln_pre.bias is missing", "[64]"]),
    (lambda sd: sd.update({"text_projection": torch.zeros(64, 12)}),
     ["visual.proj has shape [64, 16], expected [64, 12]"]),
    (lambda sd: sd.update({"transformer.resblocks.2.ln_1.weight": torch.ones(64)}),
     ["transformer.resblocks.1 is missing"]),
])
def test_a_clip_checkpoint_that_does_not_fit_the_layout_is_refused(tmp_path, capsys, change, fragments):
    sd = clip_state_dict()
    change(sd)
    torch.save(sd, tmp_path / "odd.pt")
    refused([tmp_path / "odd.pt", tmp_path / "out"], capsys, *fragments)
    assert not (tmp_path / "out").exists()


def test_a_hugging_face_text_tower_is_refused_by_name(tmp_path, capsys):
    sd = {k: v for k, v in clip_state_dict().items()
          if k.split(".")[0] not in convert_checkpoint.CLIP_TEXT_ROOTS}
    sd["text.transformer.embeddings.word_embeddings.weight"] = torch.zeros(50, 64)
    sd["text.proj.0.weight"] = torch.zeros(16, 64)
    torch.save(sd, tmp_path / "hf.pt")
    refused([tmp_path / "hf.pt", tmp_path / "out"], capsys, "text.proj.0.weight", "Hugging Face")


def test_heads_that_do_not_divide_the_width_name_the_flag(tmp_path, capsys):
    torch.save(clip_state_dict(dv=48), tmp_path / "w48.pt")  # 48 // 64 = 0 heads
    refused([tmp_path / "w48.pt", tmp_path / "out"], capsys, "--vision-heads")
    assert run([tmp_path / "w48.pt", tmp_path / "out", "--vision-heads", "2"], capsys)[0] == 0


# ---------------------------------------------------------------------------------------
# ImageBind (imagebind/models/imagebind_model.py ImageBindModel)
# ---------------------------------------------------------------------------------------


def imagebind_trunk(gen, m, d, layers, bias_kv, pre_ln):
    t = {}
    p = f"modality_trunks.{m}."
    if pre_ln:
        t[p + "pre_transformer_layer.0.weight"] = randn(gen, d)
        t[p + "pre_transformer_layer.0.bias"] = randn(gen, d)
    for i in range(layers):
        b = f"{p}blocks.{i}."
        t[b + "attn.in_proj_weight"] = randn(gen, 3 * d, d)
        t[b + "attn.in_proj_bias"] = randn(gen, 3 * d)
        t[b + "attn.out_proj.weight"] = randn(gen, d, d)
        t[b + "attn.out_proj.bias"] = randn(gen, d)
        if bias_kv:
            t[b + "attn.bias_k"] = randn(gen, 1, 1, d)
            t[b + "attn.bias_v"] = randn(gen, 1, 1, d)
        for norm in ("norm_1", "norm_2"):
            t[f"{b}{norm}.weight"] = randn(gen, d)
            t[f"{b}{norm}.bias"] = randn(gen, d)
        t[b + "mlp.fc1.weight"] = randn(gen, 4 * d, d)
        t[b + "mlp.fc1.bias"] = randn(gen, 4 * d)
        t[b + "mlp.fc2.weight"] = randn(gen, d, 4 * d)
        t[b + "mlp.fc2.bias"] = randn(gen, d)
    return t


def imagebind_state_dict(dv=40, dt=16, da=24, di=16, e=8, k=32, ka=16, frames=2, imu=True):
    """Vision (kernel (2, k, k) on 224 px), text (77 x 49408), audio (kernel ka, stride 10 on
    128 x 204) and, optionally, IMU; the names ImageBindModel's state_dict() has."""
    gen = torch.Generator().manual_seed(2)
    grid = (224 - k) // k + 1
    audio_patches = ((128 - ka) // 10 + 1) * ((204 - ka) // 10 + 1)
    pre = "modality_preprocessors."
    sd = {
        pre + "vision.cls_token": randn(gen, 1, 1, dv),
        pre + "vision.rgbt_stem.proj.1.weight": randn(gen, dv, 3, 2, k, k),
        pre + "vision.pos_embedding_helper.pos_embed": randn(gen, 1, 1 + frames // 2 * grid * grid, dv),
        pre + "text.token_embedding.weight": randn(gen, 49408, dt),
        pre + "text.pos_embed": randn(gen, 1, 77, dt),
        pre + "text.mask": torch.full((77, 77), float("-inf")).triu(1),
        pre + "audio.cls_token": randn(gen, 1, 1, da),
        pre + "audio.rgbt_stem.proj.weight": randn(gen, da, 1, ka, ka),
        pre + "audio.rgbt_stem.norm_layer.weight": randn(gen, da),
        pre + "audio.rgbt_stem.norm_layer.bias": randn(gen, da),
        pre + "audio.pos_embedding_helper.pos_embed": randn(gen, 1, 1 + audio_patches, da),
        "modality_heads.vision.0.weight": randn(gen, dv), "modality_heads.vision.0.bias": randn(gen, dv),
        "modality_heads.vision.2.weight": randn(gen, e, dv),
        "modality_heads.text.proj.0.weight": randn(gen, dt), "modality_heads.text.proj.0.bias": randn(gen, dt),
        "modality_heads.text.proj.1.weight": randn(gen, e, dt),
        "modality_heads.audio.0.weight": randn(gen, da), "modality_heads.audio.0.bias": randn(gen, da),
        "modality_heads.audio.2.weight": randn(gen, e, da),
        "modality_postprocessors.text.1.log_logit_scale": torch.tensor(2.65),
        "modality_postprocessors.audio.1.log_logit_scale": torch.tensor(3.0),
    }
    sd.update(imagebind_trunk(gen, "vision", dv, 2, bias_kv=False, pre_ln=True))
    sd.update(imagebind_trunk(gen, "text", dt, 2, bias_kv=False, pre_ln=False))
    sd.update(imagebind_trunk(gen, "audio", da, 1, bias_kv=True, pre_ln=False))
    if imu:
        sd.update({
            pre + "imu.pos_embed": randn(gen, 1, 251, di),
            pre + "imu.cls_token": randn(gen, 1, 1, di),
            pre + "imu.imu_stem.proj.weight": randn(gen, di, 48),
            pre + "imu.imu_stem.norm_layer.weight": randn(gen, di),
            pre + "imu.imu_stem.norm_layer.bias": randn(gen, di),
            "modality_heads.imu.0.weight": randn(gen, di), "modality_heads.imu.0.bias": randn(gen, di),
            "modality_heads.imu.3.weight": randn(gen, e, di),
            "modality_postprocessors.imu.1.log_logit_scale": torch.tensor(1.6),
        })
        sd.update(imagebind_trunk(gen, "imu", di, 1, bias_kv=True, pre_ln=False))
    return sd


IB_HEADS = ["--vision-heads", "2", "--text-heads", "2", "--audio-heads", "3", "--imu-heads", "4"]


def test_imagebind_checkpoint_becomes_an_imagebind_directory(tmp_path, capsys):
    sd = imagebind_state_dict()
    torch.save(sd, tmp_path / "imagebind_tiny.pth")
    status, out, _ = run([tmp_path / "imagebind_tiny.pth", tmp_path / "out"] + IB_HEADS, capsys)
    assert status == 0 and "imagebind checkpoint" in out
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config == {
        "model_type": "imagebind", "out_embed_dim": 8,
        "video_frames": 2, "kernel_size": [2, 32, 32],
        "vision_embed_dim": 40, "vision_num_blocks": 2, "vision_num_heads": 2,
        "text_embed_dim": 16, "text_num_blocks": 2, "text_num_heads": 2,
        "audio_embed_dim": 24, "audio_num_blocks": 1, "audio_num_heads": 3,
        "audio_kernel_size": 16, "audio_stride": 10, "audio_num_mel_bins": 128, "audio_target_len": 204,
        "imu_embed_dim": 16, "imu_num_blocks": 1, "imu_num_heads": 4,
    }
    written = tensors_of(tmp_path / "out" / "model.safetensors")
    assert set(written) == set(sd)
    for name, t in sd.items():
        assert list(written[name].shape) == list(t.shape), name


def test_imagebind_audio_sizes_come_from_flags_and_must_fit_the_positions(tmp_path, capsys):
    torch.save(imagebind_state_dict(imu=False), tmp_path / "ib.pth")
    refused([tmp_path / "ib.pth", tmp_path / "out", "--audio-target-len", "100"] + IB_HEADS, capsys,
            "modality_preprocessors.audio.pos_embedding_helper.pos_embed", "[1, 229, 24]", "[1, 109, 24]")


@pytest.mark.parametrize("argv, fragments", [
    ([], ["the vision tower's width 40 is not divisible by 16 heads", "--vision-heads"]),
    (IB_HEADS + ["--norm-eps", "1e-5"], ["--norm-eps", "ImageBindModel fixes"]),
])
def test_imagebind_options_that_cannot_apply_are_refused(tmp_path, capsys, argv, fragments):
    torch.save(imagebind_state_dict(imu=False), tmp_path / "ib.pth")
    refused([tmp_path / "ib.pth", tmp_path / "out"] + argv, capsys, *fragments)


@pytest.mark.parametrize("change, fragments", [
    (lambda sd: [sd.pop(k) for k in list(sd) if ".audio." in k],
     ["no modality_trunks.audio.* tensors"]),
    (lambda sd: sd.update({"modality_trunks.vision.blocks.0.layer_scale_gamma1": torch.ones(1, 1, 40)}),
     ["unexpected tensor modality_trunks.vision.blocks.0.layer_scale_gamma1"]),
    (lambda sd: sd.update({"modality_preprocessors.text.pos_embed": torch.zeros(1, 64, 16)}),
     ["64 positions", "77"]),
    (lambda sd: sd.update({"modality_heads.audio.2.weight": torch.zeros(12, 24)}),
     ["different sizes", "audio 12"]),
])
def test_an_imagebind_checkpoint_that_does_not_fit_is_refused(tmp_path, capsys, change, fragments):
    sd = imagebind_state_dict(imu=False)
    change(sd)
    torch.save(sd, tmp_path / "ib.pth")
    refused([tmp_path / "ib.pth", tmp_path / "out"] + IB_HEADS, capsys, *fragments)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------
# torchvision VisionTransformer -> native tessera_towers
# ---------------------------------------------------------------------------------------


def layer_norm(x, prefix, t, eps):
    return F.layer_norm(x, x.shape[-1:], t[prefix + ".weight"], t[prefix + ".bias"], eps)


def native_image_tower(t, tower, pixels):
    """The native image tower as /work/notes/issue17.md specifies it, in plain torch ops
    (one image [C, S, S]): -> (hidden [L, D] = the last block's output, embedding [E])."""
    d, heads, eps, p = tower["width"], tower["heads"], tower["norm_eps"], tower["patch_size"]
    bias = t.get("vision.conv1.bias") if tower["conv_bias"] else None
    x = F.conv2d(pixels[None], t["vision.conv1.weight"], bias, stride=p)[0]  # [D, g, g]
    x = x.flatten(1).T  # patches in row-major order, [g*g, D]
    x = torch.cat([t["vision.class_embedding"][None], x]) + t["vision.positional_embedding"]
    if tower["pre_norm"]:
        x = layer_norm(x, "vision.ln_pre", t, eps)
    for i in range(tower["layers"]):
        b = f"vision.transformer.resblocks.{i}."
        h = layer_norm(x, b + "ln_1", t, eps)
        q, k, v = (h @ t[b + "attn.in_proj_weight"].T + t[b + "attn.in_proj_bias"]).split(d, dim=-1)
        q, k, v = (y.reshape(-1, heads, d // heads).transpose(0, 1) for y in (q, k, v))
        a = torch.softmax(q @ k.transpose(1, 2) / (d // heads) ** 0.5, dim=-1) @ v
        a = a.transpose(0, 1).reshape(-1, d)
        x = x + a @ t[b + "attn.out_proj.weight"].T + t[b + "attn.out_proj.bias"]
        h = layer_norm(x, b + "ln_2", t, eps)
        h = F.gelu(h @ t[b + "mlp.c_fc.weight"].T + t[b + "mlp.c_fc.bias"])
        x = x + h @ t[b + "mlp.c_proj.weight"].T + t[b + "mlp.c_proj.bias"]
    pooled = layer_norm(x[0], "vision.ln_post", t, eps)
    e = t["vision.proj.weight"] @ pooled
    if tower["proj_bias"]:
        e = e + t["vision.proj.bias"]
    return x, e / e.norm()


def load_native(directory):
    config = json.loads((directory / "config.json").read_text())
    t = {k: torch.as_tensor(v).to(F64) for k, v in tensors_of(directory / "model.safetensors").items()}
    return config, t


def tiny_vit(seed=5, **changes):
    sizes = dict(TINY, **changes)
    model = VisionTransformer(**sizes).eval()
    random_weights(model, torch.Generator().manual_seed(seed))
    return model, sizes


@pytest.mark.parametrize("head", ["drop", "proj"])
def test_torchvision_vit_converts_to_a_native_tower_that_matches_torchvision(tmp_path, capsys, head):
    model, sizes = tiny_vit()
    torch.save(model.state_dict(), tmp_path / "vit.pth")
    status, out, _ = run([tmp_path / "vit.pth", tmp_path / "out", "--vision-heads", "4",
                          "--torchvision-head", head], capsys)
    assert status == 0 and "torchvision checkpoint" in out
    config, t = load_native(tmp_path / "out")
    tower = config["towers"]["vision"]
    assert config["model_type"] == "tessera_towers"
    assert config["video"] == {"tower": "vision", "clip_frames": 1}
    assert tower == {"modality": "image", "width": 48, "layers": 2, "heads": 4, "ffn_dim": 96,
                     "activation": "gelu", "norm_eps": 1e-6, "pre_norm": False, "bias_kv": False,
                     "causal": False, "pooling": "cls", "proj_bias": head == "proj",
                     "image_size": 32, "patch_size": 8, "channels": 3, "clip_frames": 1,
                     "conv_bias": True, "cls_token": True}
    assert config["embed_dim"] == (10 if head == "proj" else 48)
    assert ("vision.proj.bias" in t) == (head == "proj")
    assert not any(".ln_pre." in n or n.startswith("heads.") for n in t)

    model.double()
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(9), dtype=F64)
    hidden, feature, logits = torchvision_forward(model, pixels)
    reference = logits if head == "proj" else feature
    for i in range(pixels.shape[0]):
        h, e = native_image_tower(t, tower, pixels[i])
        assert (h - hidden[i]).abs().max() < NATIVE_TOL
        assert (e - reference[i] / reference[i].norm()).abs().max() < NATIVE_TOL


def test_torchvision_legacy_mlp_names_convert_the_same(tmp_path, capsys):
    model, _ = tiny_vit()
    sd = model.state_dict()
    legacy = {k.replace(".mlp.0.", ".mlp.linear_1.").replace(".mlp.3.", ".mlp.linear_2."): v
              for k, v in sd.items()}
    assert legacy != sd
    torch.save(sd, tmp_path / "new.pth")
    torch.save(legacy, tmp_path / "old.pth")
    for name in ("new", "old"):
        assert run([tmp_path / f"{name}.pth", tmp_path / name, "--vision-heads", "4"], capsys)[0] == 0
    for f in ("config.json", "model.safetensors"):
        assert (tmp_path / "new" / f).read_bytes() == (tmp_path / "old" / f).read_bytes()


def test_torchvision_heads_default_from_the_published_widths(tmp_path, capsys):
    model, _ = tiny_vit(hidden_dim=48)
    torch.save(model.state_dict(), tmp_path / "w48.pth")
    refused([tmp_path / "w48.pth", tmp_path / "out"], capsys, "hidden width 48", "--vision-heads")
    # vit_b_16's width: 12 heads without a flag (a 1-layer, 16-pixel model keeps it small).
    model, _ = tiny_vit(hidden_dim=768, mlp_dim=64, num_layers=1, image_size=16, patch_size=8)
    torch.save(model.state_dict(), tmp_path / "w768.pth")
    assert run([tmp_path / "w768.pth", tmp_path / "b16"], capsys)[0] == 0
    assert json.loads((tmp_path / "b16" / "config.json").read_text())["towers"]["vision"]["heads"] == 12


def test_torchvision_parts_the_native_tower_cannot_hold_are_refused(tmp_path, capsys):
    model, _ = tiny_vit(representation_size=12)
    torch.save(model.state_dict(), tmp_path / "pre_logits.pth")
    refused([tmp_path / "pre_logits.pth", tmp_path / "out", "--vision-heads", "4"], capsys,
            "heads.pre_logits.weight")
    sd = tiny_vit()[0].state_dict()
    sd["encoder.layers.encoder_layer_1.extra.weight"] = torch.ones(3)
    torch.save(sd, tmp_path / "extra.pth")
    refused([tmp_path / "extra.pth", tmp_path / "out", "--vision-heads", "4"], capsys,
            "unexpected tensor encoder.layers.encoder_layer_1.extra.weight")


def test_the_committed_fixture_is_the_converters_output(tmp_path, capsys):
    """tests/data/pretrained/towers_torchvision/model/ is what the converter makes of
    checkpoint.pth today (rerun make_torchvision_fixtures.py after changing the converter)."""
    status, _, _ = run([os.path.join(FIXTURE, "checkpoint.pth"), tmp_path / "model",
                        "--vision-heads", "4"], capsys)
    assert status == 0
    committed = sorted(os.listdir(os.path.join(FIXTURE, "model")))
    assert sorted(os.listdir(tmp_path / "model")) == committed
    for f in committed:
        with open(os.path.join(FIXTURE, "model", f), "rb") as ours:
            assert (tmp_path / "model" / f).read_bytes() == ours.read(), f


def test_the_committed_cases_match_the_native_tower(tmp_path):
    """The native format's semantics (no ln_pre, cls + pos order, identity proj, video as the
    mean of unit frame embeddings) reproduce torchvision's numbers in the committed cases."""
    from pathlib import Path

    config, t = load_native(Path(FIXTURE) / "model")
    tower = config["towers"]["vision"]
    cases = {k: torch.as_tensor(v) for k, v in tensors_of(os.path.join(FIXTURE, "cases.safetensors")).items()}
    assert sorted(k for k in cases if k.endswith((".pixels", ".frames"))) == [
        "image.0.pixels", "image.1.pixels", "video.0.frames", "video.1.frames"]
    for i in range(2):
        h, e = native_image_tower(t, tower, cases[f"image.{i}.pixels"])
        assert cases[f"image.{i}.hidden"].shape == (17, 48)
        assert (h - cases[f"image.{i}.hidden"]).abs().max() < NATIVE_TOL
        assert (e - cases[f"image.{i}.embedding"]).abs().max() < NATIVE_TOL
        frames = cases[f"video.{i}.frames"]
        runs = [native_image_tower(t, tower, f) for f in frames]
        mean = torch.stack([e for _, e in runs]).mean(dim=0)
        assert (runs[0][0] - cases[f"video.{i}.hidden"]).abs().max() < NATIVE_TOL
        assert (mean / mean.norm() - cases[f"video.{i}.embedding"]).abs().max() < NATIVE_TOL


# ---------------------------------------------------------------------------------------
# The output directory: --force, nothing half-written, bad files
# ---------------------------------------------------------------------------------------


def test_an_existing_directory_is_replaced_only_with_force(tmp_path, capsys):
    torch.save(clip_state_dict(), tmp_path / "c.pt")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    refused([tmp_path / "c.pt", tmp_path / "out"], capsys, "not empty", "--force")
    assert os.listdir(tmp_path / "out") == ["keep.txt"]
    assert run([tmp_path / "c.pt", tmp_path / "out", "--force"], capsys)[0] == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["open_clip_config.json", "open_clip_model.safetensors"]
    (tmp_path / "empty").mkdir()
    assert run([tmp_path / "c.pt", tmp_path / "empty"], capsys)[0] == 0
    (tmp_path / "file").write_text("x")
    refused([tmp_path / "c.pt", tmp_path / "file", "--force"], capsys, "not a directory")
    assert sorted(os.listdir(tmp_path)) == ["c.pt", "empty", "file", "out"]


def test_a_failure_while_writing_leaves_nothing_half_written(tmp_path, capsys, monkeypatch):
    torch.save(clip_state_dict(), tmp_path / "c.pt")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("mine")

    def full_disk(path, tensors):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device", path)

    monkeypatch.setattr(convert_checkpoint, "write_safetensors", full_disk)
    refused([tmp_path / "c.pt", tmp_path / "new"], capsys, "No space left on device")
    refused([tmp_path / "c.pt", tmp_path / "old", "--force"], capsys, "No space left on device")
    assert sorted(os.listdir(tmp_path)) == ["c.pt", "old"]  # no new/, no temporary directories
    assert os.listdir(tmp_path / "old") == ["keep.txt"]


@pytest.mark.parametrize("content, fragments", [
    (b"\x00" * 100, ["not a PyTorch checkpoint"]),
    (b"\x80\x02garbage", ["not a PyTorch checkpoint"]),
    (None, ["no such file"]),
], ids=["zeros", "broken-pickle", "missing"])
def test_files_that_are_not_checkpoints_are_refused(tmp_path, capsys, content, fragments):
    if content is not None:
        (tmp_path / "x.pt").write_bytes(content)
    refused([tmp_path / "x.pt", tmp_path / "out"], capsys, "x.pt", *fragments)
    refused([tmp_path, tmp_path / "out2"], capsys, "not a regular file")


def test_pickled_objects_are_refused_unless_unsafe_pickle(tmp_path, capsys):
    import argparse

    torch.save({"state_dict": clip_state_dict(), "args": argparse.Namespace(lr=1)}, tmp_path / "c.pt")
    refused([tmp_path / "c.pt", tmp_path / "out"], capsys, "Unsupported class argparse.Namespace", "--unsafe-pickle")
    assert run([tmp_path / "c.pt", tmp_path / "out", "--unsafe-pickle"], capsys)[0] == 0


def test_state_dicts_of_other_models_are_refused(tmp_path, capsys):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    refused([tmp_path / "other.pt", tmp_path / "out"], capsys, "not a checkpoint of a family", "--from")
    torch.save({"fc.weight": torch.zeros(2, 2), "step": 3}, tmp_path / "mixed.pt")
    refused([tmp_path / "mixed.pt", tmp_path / "out"], capsys, "entry 'step' is a int")


def test_tokenizer_files_are_copied_in(tmp_path, capsys):
    torch.save(clip_state_dict(), tmp_path / "c.pt")
    (tmp_path / "bpe_simple_vocab_16e6.txt.gz").write_bytes(b"vocab")
    (tmp_path / "tokens.txt").write_bytes(b"vocab")
    refused([tmp_path / "c.pt", tmp_path / "out", "--tokenizer", tmp_path / "tokens.txt"], capsys,
            "bpe_simple_vocab_16e6.txt.gz")
    assert run([tmp_path / "c.pt", tmp_path / "out", "--tokenizer",
                tmp_path / "bpe_simple_vocab_16e6.txt.gz"], capsys)[0] == 0
    assert (tmp_path / "out" / "bpe_simple_vocab_16e6.txt.gz").read_bytes() == b"vocab"
