#!/usr/bin/python3
"""torchvision's own VisionTransformer as the reference for a converted "tessera_towers" model.

Run from the repository root with Debian's PyTorch and torchvision (0.14):

    /usr/bin/python3 tests/reference/make_torchvision_fixtures.py
    /usr/bin/python3 tests/reference/make_torchvision_fixtures.py --vit-b-16 DIR   (manual check)

The first form rewrites tests/data/pretrained/towers_torchvision/:
  checkpoint.pth       the state_dict of torchvision.models.vision_transformer.VisionTransformer
                       (image 32, patch 8, 2 layers, 4 heads, width 48, MLP 96, 10 classes) with
                       seeded random weights, stored F32, as torch.save writes it
  model/               tools/convert_checkpoint.py's output for checkpoint.pth (--vision-heads 4)
  cases.safetensors    what torchvision's own modules compute from it in float64:
    image.<i>.pixels     F64 [3, 32, 32]    normalised pixels (float32-exact values)
    image.<i>.hidden     F64 [17, 48]       output of encoder.layers (the last EncoderBlock),
                                            before encoder.ln, taken with a forward hook
    image.<i>.embedding  F64 [48]           normalize(encoder(x)[:, 0]): the pre-logits
                                            feature; the converter drops the classifier head
    video.<i>.frames     F64 [T, 3, 32, 32] (T = 3 and 2); each frame is one clip
    video.<i>.hidden     F64 [17, 48]       the first frame's encoder.layers output
    video.<i>.embedding  F64 [48]           normalize(mean of the frames' unit embeddings)

There is no reimplementation here: the expected values are torchvision's code itself
(vision_transformer.py VisionTransformer.forward, Encoder, EncoderBlock, MLPBlock), run in
float64 on the float32-rounded weights. torchvision's vit_b_16 is this same class at image
224, patch 16, 12 layers, 12 heads, width 768, MLP 3072, 1000 classes; `--vit-b-16 DIR`
builds one with random weights (330 MB, not committed), converts it into DIR/model with the
converter's defaults (12 heads from the width) and writes DIR/cases.safetensors (2 images, no
video) for a manual run of tessera against it.

Deterministic: one seeded torch.Generator per fixture, one thread.
"""

import argparse
import os
import subprocess
import sys

import torch
import torchvision
from torchvision.models.vision_transformer import VisionTransformer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
from make_fixtures import save_safetensors  # noqa: E402

OUT = os.path.join(ROOT, "tests", "data", "pretrained", "towers_torchvision")
CONVERTER = os.path.join(ROOT, "tools", "convert_checkpoint.py")
F64 = torch.float64

TINY = dict(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=48, mlp_dim=96,
            num_classes=10)
VIT_B_16 = dict(image_size=224, patch_size=16, num_layers=12, num_heads=12, hidden_dim=768,
                mlp_dim=3072, num_classes=1000)


def random_weights(model, gen):
    """Every tensor drawn in float64 at the scales of tests/reference/README.md ("How values
    are made") and rounded to float32. This replaces torchvision's initialisation, which
    zeroes class_token and heads.head and leaves biases near 0, so that no tensor is trivial."""
    state = {}
    for name, t in model.state_dict().items():
        if name.endswith("bias"):
            v = 0.05 * torch.randn(t.shape, generator=gen, dtype=F64)
        elif ".ln" in name or name.startswith("encoder.ln"):  # LayerNorm weights
            v = 1 + 0.1 * torch.randn(t.shape, generator=gen, dtype=F64)
        elif name in ("class_token", "encoder.pos_embedding"):
            v = 0.2 * torch.randn(t.shape, generator=gen, dtype=F64)
        else:  # conv_proj, in_proj, out_proj, mlp.0, mlp.3, heads.head: N(0, 1/fan_in)
            fan_in = t[0].numel()
            v = torch.randn(t.shape, generator=gen, dtype=F64) / fan_in ** 0.5
        state[name] = v.to(torch.float32)
    model.load_state_dict(state)
    return state


def torchvision_forward(model, pixels):
    """pixels [B, 3, S, S] -> (hidden [B, L, D] = encoder.layers' output, before encoder.ln;
    feature [B, D] = encoder(x)[:, 0], the input of heads; logits [B, classes]), all from
    torchvision's own forward, hooked."""
    seen = {}
    hooks = [model.encoder.layers.register_forward_hook(lambda m, i, o: seen.update(hidden=o)),
             model.encoder.register_forward_hook(lambda m, i, o: seen.update(encoded=o))]
    try:
        with torch.no_grad():
            logits = model(pixels)
    finally:
        for h in hooks:
            h.remove()
    feature = seen["encoded"][:, 0]
    with torch.no_grad():
        assert torch.allclose(model.heads(feature), logits, rtol=0, atol=1e-12)
    return seen["hidden"], feature, logits


def unit(v):
    return v / v.norm(dim=-1, keepdim=True)


def make_cases(model, size, gen, videos):
    """Images (2) and videos (frames counts in `videos`) through the float64 model."""
    cases = {}
    images = torch.randn(2, 3, size, size, generator=gen, dtype=F64).to(torch.float32).to(F64)
    hidden, feature, _ = torchvision_forward(model, images)
    for i in range(images.shape[0]):
        cases[f"image.{i}.pixels"] = images[i]
        cases[f"image.{i}.hidden"] = hidden[i]
        cases[f"image.{i}.embedding"] = unit(feature[i])
    for i, frames in enumerate(videos):
        clip = torch.randn(frames, 3, size, size, generator=gen, dtype=F64).to(torch.float32).to(F64)
        hidden, feature, _ = torchvision_forward(model, clip)
        cases[f"video.{i}.frames"] = clip
        cases[f"video.{i}.hidden"] = hidden[0]
        cases[f"video.{i}.embedding"] = unit(unit(feature).mean(dim=0))
    return cases


def float32_gap(model, cases):
    """How far the float32 model is from the float64 reference (printed, for tolerances)."""
    m32 = model.float()
    worst_e, worst_h = 0.0, 0.0
    for key in [k for k in cases if k.endswith(".pixels")]:
        i = key.split(".")[1]
        hidden, feature, _ = torchvision_forward(m32, cases[key][None].float())
        worst_h = max(worst_h, (hidden[0].double() - cases[f"image.{i}.hidden"]).abs().max().item())
        worst_e = max(worst_e, (unit(feature[0]).double() - cases[f"image.{i}.embedding"]).abs().max().item())
    model.double()
    return worst_e, worst_h


def build(sizes, seed, out, extra_flags, videos):
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(seed)
    model = VisionTransformer(**sizes).eval()
    state = random_weights(model, gen)
    os.makedirs(out, exist_ok=True)
    checkpoint = os.path.join(out, "vit_b_16.pth" if sizes is VIT_B_16 else "checkpoint.pth")
    torch.save(state, checkpoint)
    subprocess.run([sys.executable, CONVERTER, checkpoint, os.path.join(out, "model"), "--force"]
                   + extra_flags, check=True)
    model.double()
    cases = make_cases(model, sizes["image_size"], gen, videos)
    save_safetensors(os.path.join(out, "cases.safetensors"), cases)
    gap_e, gap_h = float32_gap(model, cases)
    print(f"{out}: {len(cases)} tensors; float32 vs float64: embeddings {gap_e:.2e}, "
          f"hidden {gap_h:.2e}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vit-b-16", metavar="DIR",
                   help="instead: a random full-size vit_b_16 (330 MB) into DIR, for a manual check")
    args = p.parse_args()
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}")
    if args.vit_b_16:
        build(VIT_B_16, 16, args.vit_b_16, [], videos=())
    else:
        build(TINY, 17, OUT, ["--vision-heads", str(TINY["num_heads"])], videos=(3, 2))


if __name__ == "__main__":
    main()
