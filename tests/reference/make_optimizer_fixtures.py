#!/usr/bin/python3
"""Reference fixture for tessera's optimizer (include/tessera/train/optimizer.hpp), from PyTorch.

Run from the repository root with Debian's PyTorch (1.13):

    /usr/bin/python3 tests/reference/make_optimizer_fixtures.py

It overwrites tests/data/train/adamw.safetensors: ten training steps of four small tensors,

  initial.<p>          the parameters before step 0
  grad.<k>.<p>         the raw gradient of step k (before clipping), k = 0..9
  lr                   [10] the learning rate of each step (the warmup + cosine schedule)
  total_norm           [10] what clip_grad_norm_(max_norm=1) returned at each step
  after.<k>.<p>        the parameters after step k: clip_grad_norm_, then torch.optim.AdamW
  f32.total_norm       [10] and f32.after.<k>.<p>: the same run in float32 (inputs rounded
                       to float32), widened to float64 for storage

with <p> one of proj.weight [5,4], proj.bias [4], norm.weight [3], logit_scale [] (0-d).
Every tensor is F64. The settings are in __metadata__ (as strings): peak_lr, warmup_steps,
total_steps, min_lr, beta1, beta2, eps, weight_decay, max_norm, steps and params (the names in
step order, comma separated).

AdamW runs its single-tensor path (foreach=False) with two parameter groups: proj.weight
(rank 2) with weight_decay 0.1, the rest with 0 -- tessera's default `decays` (rank >= 2).
The gradients are drawn with a different scale at each step so that clipping scales some
steps and leaves others alone (checked below). Deterministic: one seeded generator, one
thread, and the file writer of make_fixtures.py.
"""

import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import save_safetensors  # noqa: E402

OUT = os.path.join("tests", "data", "train", "adamw.safetensors")
F32, F64 = torch.float32, torch.float64

PEAK_LR, WARMUP_STEPS, TOTAL_STEPS, MIN_LR = 1e-2, 3, 10, 0.0
BETAS, EPS, WEIGHT_DECAY, MAX_NORM = (0.9, 0.98), 1e-6, 0.1, 1.0
STEPS = 10
# Gradient scale of each step: the joint norm of 28 N(0, s^2) elements is about 5.3 s.
GRAD_SCALES = (0.4, 0.05, 0.3, 0.08, 0.5, 0.1, 0.06, 0.35, 0.12, 0.25)


def schedule(step):
    """tessera::LearningRateSchedule::at, written the same way."""
    if step < WARMUP_STEPS:
        return PEAK_LR * (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, TOTAL_STEPS - WARMUP_STEPS)
    q = min(max(progress, 0.0), 1.0)
    return MIN_LR + 0.5 * (PEAK_LR - MIN_LR) * (1 + math.cos(math.pi * q))


def initial_values(g):
    """The four tensors (name -> float64 tensor), in step order."""
    return {
        "proj.weight": torch.randn(5, 4, generator=g, dtype=F64) * 0.5,
        "proj.bias": torch.randn(4, generator=g, dtype=F64) * 0.05,
        "norm.weight": 1 + torch.randn(3, generator=g, dtype=F64) * 0.1,
        "logit_scale": torch.tensor(math.log(1 / 0.07), dtype=F64),
    }


def run(initial, grads, dtype):
    """Runs the ten steps in `dtype`; returns (total norms, parameters after each step)."""
    params = {name: value.to(dtype).clone().requires_grad_(True) for name, value in initial.items()}
    decayed = [p for p in params.values() if p.dim() >= 2]
    other = [p for p in params.values() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decayed, "weight_decay": WEIGHT_DECAY}, {"params": other, "weight_decay": 0.0}],
        lr=PEAK_LR, betas=BETAS, eps=EPS, foreach=False)
    norms, after = [], []
    for k in range(STEPS):
        for name, p in params.items():
            p.grad = grads[k][name].to(dtype).clone()
        norms.append(torch.nn.utils.clip_grad_norm_(list(params.values()), MAX_NORM).item())
        for group in optimizer.param_groups:
            group["lr"] = schedule(k)
        optimizer.step()
        after.append({name: p.detach().clone() for name, p in params.items()})
    return norms, after


def main():
    if not os.path.isfile("tests/reference/make_optimizer_fixtures.py"):
        sys.exit("run from the repository root: "
                 "/usr/bin/python3 tests/reference/make_optimizer_fixtures.py")
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(20240611)
    initial = initial_values(g)
    grads = [{name: torch.randn(v.shape, generator=g, dtype=F64) * scale
              for name, v in initial.items()} for scale in GRAD_SCALES]

    norms, after = run(initial, grads, F64)
    norms32, after32 = run(initial, grads, F32)

    # Clipping must scale some steps and not others, with no norm so close to max_norm that
    # rounding could flip the decision.
    clipped = [n > MAX_NORM for n in norms]
    assert 3 <= sum(clipped) <= STEPS - 3, norms
    assert all(abs(n - MAX_NORM) > 0.1 for n in norms), norms

    tensors = {
        "lr": torch.tensor([schedule(k) for k in range(STEPS)], dtype=F64),
        "total_norm": torch.tensor(norms, dtype=F64),
        "f32.total_norm": torch.tensor(norms32, dtype=F64),
    }
    for name, value in initial.items():
        tensors[f"initial.{name}"] = value
    for k in range(STEPS):
        for name in initial:
            tensors[f"grad.{k}.{name}"] = grads[k][name]
            tensors[f"after.{k}.{name}"] = after[k][name]
            tensors[f"f32.after.{k}.{name}"] = after32[k][name].to(F64)
    for name, t in tensors.items():
        assert t.dtype == F64 and torch.isfinite(t).all(), name
    metadata = {
        "peak_lr": repr(PEAK_LR), "warmup_steps": str(WARMUP_STEPS),
        "total_steps": str(TOTAL_STEPS), "min_lr": repr(MIN_LR),
        "beta1": repr(BETAS[0]), "beta2": repr(BETAS[1]), "eps": repr(EPS),
        "weight_decay": repr(WEIGHT_DECAY), "max_norm": repr(MAX_NORM), "steps": str(STEPS),
        "params": ",".join(initial),
    }
    save_safetensors(OUT, tensors, metadata)

    worst = max((after32[k][n].double() - after[k][n]).abs().max().item()
                for k in range(STEPS) for n in initial)
    moved = max((after[-1][n] - initial[n]).abs().max().item() for n in initial)
    print(f"torch {torch.__version__}: {OUT}, {len(tensors)} tensors, "
          f"{os.path.getsize(OUT)} bytes")
    print("  total norms " + " ".join(f"{n:.3f}" for n in norms) +
          f" ({sum(clipped)} of {STEPS} steps clipped)")
    print(f"  largest change of a parameter {moved:.3g}; float32 vs float64 {worst:.3g}")


if __name__ == "__main__":
    main()
