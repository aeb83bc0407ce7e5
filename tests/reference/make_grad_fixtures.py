#!/usr/bin/python3
"""Reference gradients of tessera's encoder (MultiModalEncoder::backward), from PyTorch autograd.

Run from the repository root with Debian's PyTorch (1.13), after make_fixtures.py:

    /usr/bin/python3 tests/reference/make_grad_fixtures.py

For each encoder variant in VARIANTS it reads tests/data/encoder/<variant>/ (config.json,
model.safetensors, input.<i>.safetensors: the files make_fixtures.py wrote), runs the PyTorch
twin of make_fixtures.py in float64 on that batch, and writes
tests/data/encoder/<variant>/gradients.safetensors:

  targets        [N, E] fixed unit rows T (drawn with a fixed seed)
  weights        [N, E] fixed coefficients W
  loss           []     the loss below at the stored weights
  grad.<name>    the gradient of the loss with respect to each weight of model.safetensors,
                 in the weight's stored shape (logit_scale included), computed in float64
                 and stored as F32 (6e-8 relative: ample for the tests' 1e-4 in float and
                 1e-6 in double, at half the size)

with the embeddings E [N, E] of the batch and

  loss = InfoNCE(E, T, logit_scale) + triplet(E, T, roll(T, 1), margin 0.5) + sum(E * W)

(the linear term keeps every gradient informative when N = 1, where InfoNCE is 0).
For the first variant it also writes adamw.losses [11]: ten steps of torch.optim.AdamW
(lr 1e-2, betas (0.9, 0.999), eps 1e-8, weight_decay 0.01 on the tensors of rank >= 2 as
stored -- tessera's default `decays` -- and 0 on the rest, single-tensor path) on this loss,
the loss before each step and after the last.

The other tensors are F64. Deterministic: fixed seeds, one thread.
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402

F64 = torch.float64
# Together: every modality, pooling (mean, cls, routed), position kind, norm, FFN kind,
# pooled and unpooled video, custom modalities, RoPE sections, causal text.
VARIANTS = ["all_routed_causal_sections", "all_cls_learned_f16", "text_image_bf16",
            "video_cls_swiglu", "custom_routed"]
ADAMW_STEPS = 10


def load_variant(name):
    """(runtime config, {weight name: float64 tensor in the model's 2-D layout}, stored
    shapes, samples)."""
    d = os.path.join(mf.ENCODER, name)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    stored, _ = mf.load_safetensors(os.path.join(d, "model.safetensors"))
    weights, shapes = {}, {}
    for k, t in stored.items():
        shapes[k] = tuple(t.shape)
        t = t.to(F64)
        if k in mf.CONV_SHAPE and t.dim() > 2:  # a convolution-shaped patch embedding
            t = t.reshape(t.shape[0], -1)
        weights[k] = t
    samples = []
    i = 0
    while os.path.exists(os.path.join(d, f"input.{i}.safetensors")):
        t, _ = mf.load_safetensors(os.path.join(d, f"input.{i}.safetensors"))
        samples.append({k: (x.to(F64) if x.is_floating_point() else x) for k, x in t.items()})
        i += 1
    return mf.runtime_config(cfg), weights, shapes, samples


def loss_of(rc, w, samples, targets, coefficients):
    e = mf.encode(rc, w, samples)["embeddings"]
    rolled = torch.roll(targets, 1, 0)
    return (mf.infonce(e, targets, w["logit_scale"]) + mf.triplet(e, targets, rolled, 0.5)
            + (e * coefficients).sum())


def make(name, seed, with_adamw):
    rc, w, shapes, samples = load_variant(name)
    g = torch.Generator().manual_seed(seed)
    n, e_dim = len(samples), rc["embed_dim"]
    targets = torch.randn(n, e_dim, generator=g, dtype=F64)
    targets = targets / targets.norm(dim=1, keepdim=True)
    coefficients = torch.randn(n, e_dim, generator=g, dtype=F64) * 0.5

    params = {k: t.clone().requires_grad_(True) for k, t in w.items()}
    loss = loss_of(rc, params, samples, targets, coefficients)
    loss.backward()
    out = {"targets": targets, "weights": coefficients, "loss": loss.detach()}
    for k, p in params.items():
        grad = p.grad if p.grad is not None else torch.zeros_like(p)  # an unused weight
        assert torch.isfinite(grad).all(), (name, k)
        out["grad." + k] = grad.reshape(shapes[k]).contiguous().to(torch.float32)

    if with_adamw:
        params = {k: t.clone().requires_grad_(True) for k, t in w.items()}
        decay = [p for k, p in params.items() if len(shapes[k]) >= 2]
        rest = [p for k, p in params.items() if len(shapes[k]) < 2]
        optim = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                   {"params": rest, "weight_decay": 0.0}],
                                  lr=1e-2, betas=(0.9, 0.999), eps=1e-8, foreach=False)
        losses = []
        for _ in range(ADAMW_STEPS):
            optim.zero_grad()
            loss = loss_of(rc, params, samples, targets, coefficients)
            losses.append(loss.item())
            loss.backward()
            optim.step()
        with torch.no_grad():
            losses.append(loss_of(rc, params, samples, targets, coefficients).item())
        out["adamw.losses"] = torch.tensor(losses, dtype=F64)
        print(f"  {name}: AdamW losses {losses[0]:.4f} -> {losses[-1]:.4f}")

    path = os.path.join(mf.ENCODER, name, "gradients.safetensors")
    mf.save_safetensors(path, out)
    largest = max(out[k].abs().max().item() for k in out if k.startswith("grad."))
    print(f"  {name:28s} N {n}  loss {out['loss'].item():.6f}  {len(params)} gradients, "
          f"largest |g| {largest:.3g}, {os.path.getsize(path) / 1024:.0f} KiB")


def main():
    if not os.path.isfile("tests/reference/make_grad_fixtures.py"):
        sys.exit("run from the repository root: /usr/bin/python3 tests/reference/make_grad_fixtures.py")
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    for i, name in enumerate(VARIANTS):
        make(name, 2000 + i, with_adamw=(i == 0))


if __name__ == "__main__":
    main()
