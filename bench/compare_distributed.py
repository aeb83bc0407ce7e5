#!/usr/bin/env python3
"""Data-parallel training throughput: 1 process x 2 threads against 2 ranks x 1 thread, tessera
(bench_distributed, MPI) and PyTorch (DistributedDataParallel, gloo over loopback), in one run.

The model and step are bench/bench_train.cpp's (D 256, 4 layers, 4 heads, F 1024, E 256; 32-id
texts, 64 px images, patch 8; AdamW, clipping to norm 1), the PyTorch side built as
bench/compare_torch.py builds it (nn.TransformerEncoderLayer, norm_first). The global batch is
--pairs caption-image pairs a step, its InfoNCE over the whole batch in both:

- tessera, one process: contrastive_step on the whole batch (OMP_NUM_THREADS=2);
- tessera, 2 ranks: `mpirun -np 2 --bind-to none -x OMP_NUM_THREADS=1`, each rank half the
  pairs, distributed_contrastive_step (embeddings all-gathered, the whole loss on each rank,
  gradients summed in rank order);
- PyTorch, one process: the same step, torch.set_num_threads(2);
- PyTorch DDP, 2 processes (torch.multiprocessing, gloo on 127.0.0.1), one thread each, each
  half the pairs: open_clip's way, features all-gathered (torch.distributed.all_gather, the
  local slice put back with its gradient), the whole batch's loss on each rank, DDP's
  gradient all-reduce in backward.

Prints samples/s (2 x pairs per step) for each and the ratios. Run from the repository:

    /usr/bin/python3 bench/compare_distributed.py [--build build/bench] [--pairs 64] [--steps 10]

OMPI_ALLOW_RUN_AS_ROOT is set for mpirun (as root in containers)."""

import argparse, json, os, subprocess, sys, time
from pathlib import Path

D, L, H, FF, E, V, T, S, P = 256, 4, 4, 1024, 256, 1024, 32, 64, 8


def run_tessera(binary, pairs, steps, warmup, ranks):
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    args = [str(binary), "--pairs", str(pairs), "--steps", str(steps), "--warmup", str(warmup)]
    if ranks == 1:
        env["OMP_NUM_THREADS"] = "2"
    else:
        env["OMP_NUM_THREADS"] = "1"
        args = ["mpirun", "-np", str(ranks), "--bind-to", "none", "-x", "OMP_NUM_THREADS"] + args
    out = subprocess.run(args, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def make_model(torch):
    nn, F = torch.nn, torch.nn.functional

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens = nn.Embedding(V, D)
            self.text_pos = nn.Parameter(torch.randn(T, D) * 0.02)
            self.patches = nn.Conv2d(3, D, P, P)
            self.image_pos = nn.Parameter(torch.randn((S // P) ** 2, D) * 0.02)
            self.modality = nn.Parameter(torch.randn(2, D) * 0.02)
            layer = nn.TransformerEncoderLayer(D, H, FF, dropout=0.0, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.layers = nn.TransformerEncoder(layer, L, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(D)
            self.proj = nn.Linear(D, E, bias=False)
            self.logit_scale = nn.Parameter(torch.tensor(2.6592600369327779))

        def embed(self, x):  # [B, n, D] -> [B, E] unit rows
            return F.normalize(self.proj(self.norm(self.layers(x)).mean(1)), dim=-1)

        def forward(self, ids, images):
            texts = self.embed(self.tokens(ids) + self.text_pos + self.modality[0])
            pics = self.embed(self.patches(images).flatten(2).transpose(1, 2) + self.image_pos
                              + self.modality[1])
            return texts, pics, torch.exp(torch.clamp(self.logit_scale, max=4.6051701859880914))

    torch.manual_seed(0)
    return Model()


def optimizer(torch, model):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                              {"params": rest, "weight_decay": 0.0}], lr=1e-4)


def batch(torch, pairs, first=0, count=None):
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, V, (pairs, T), generator=g)
    images = torch.rand(pairs, 3, S, S, generator=g) * 2 - 1
    count = pairs if count is None else count
    return ids[first:first + count], images[first:first + count]


def info_nce(torch, texts, pics, scale):
    F = torch.nn.functional
    logits = scale * texts @ pics.T
    target = torch.arange(texts.shape[0])
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def timed(step, steps, warmup, barrier=lambda: None):
    for _ in range(warmup):
        step()
    barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    barrier()
    return time.perf_counter() - start


def torch_single(pairs, steps, warmup):
    import torch
    torch.set_num_threads(2)
    model = make_model(torch)
    optim = optimizer(torch, model)
    ids, images = batch(torch, pairs)

    def step():
        optim.zero_grad(set_to_none=True)
        loss = info_nce(torch, *model(ids, images))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
    return 2 * pairs * steps / timed(step, steps, warmup)


def ddp_worker(rank, world, pairs, steps, warmup, port, results):
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = torch.nn.parallel.DistributedDataParallel(make_model(torch))
    optim = optimizer(torch, model)
    share = pairs // world + (1 if rank < pairs % world else 0)
    first = rank * (pairs // world) + min(rank, pairs % world)
    ids, images = batch(torch, pairs, first, share)

    def gather(x):  # open_clip gather_features: all ranks' rows, this rank's with its gradient
        parts = [torch.zeros_like(x) for _ in range(world)]
        dist.all_gather(parts, x.detach())
        parts[rank] = x
        return torch.cat(parts)

    def step():
        optim.zero_grad(set_to_none=True)
        texts, pics, scale = model(ids, images)
        loss = info_nce(torch, gather(texts), gather(pics), scale)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
    seconds = timed(step, steps, warmup, dist.barrier)
    if rank == 0:
        results.put(2 * pairs * steps / seconds)
    dist.destroy_process_group()


def torch_ddp(pairs, steps, warmup, world=2):
    import torch.multiprocessing as mp
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    port = 29500 + os.getpid() % 1000
    mp.start_processes(ddp_worker, args=(world, pairs, steps, warmup, port, results), nprocs=world,
                       join=True, start_method="spawn")
    return results.get()


def main():
    root = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", type=Path, default=root / "build" / "bench", help="tessera build tree (bench preset, with MPI)")
    p.add_argument("--pairs", type=int, default=64, help="pairs per step (global batch)")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    o = p.parse_args()
    binary = o.build / "bin" / "bench_distributed"
    rows = []
    def log(what, value):
        print(f"{what}: {value:.1f} samples/s", file=sys.stderr, flush=True)
        return value
    t1 = log("tessera, 1 process x 2 threads", run_tessera(binary, o.pairs, o.steps, o.warmup, 1)["samples_per_s"])
    t2 = log("tessera, 2 ranks x 1 thread", run_tessera(binary, o.pairs, o.steps, o.warmup, 2)["samples_per_s"])
    p1 = log("PyTorch, 1 process x 2 threads", torch_single(o.pairs, o.steps, o.warmup))
    p2 = log("PyTorch DDP, 2 processes x 1 thread", torch_ddp(o.pairs, o.steps, o.warmup))
    print(f"global batch {o.pairs} pairs ({2 * o.pairs} samples) a step, {o.steps} steps after {o.warmup}; "
          f"samples/s (higher is better)\n")
    print("| | 1 process x 2 threads | 2 ranks x 1 thread | 2 ranks / 1 process |")
    print("|---|---|---|---|")
    print(f"| tessera | {t1:.1f} | {t2:.1f} | {t2 / t1:.2f} |")
    print(f"| PyTorch (DDP, gloo) | {p1:.1f} | {p2:.1f} | {p2 / p1:.2f} |")
    print(f"| tessera / PyTorch | {t1 / p1:.2f} | {t2 / p2:.2f} | |")


if __name__ == "__main__":
    sys.exit(main())
