#!/usr/bin/env python3
"""Compare tessera's Google Benchmark programs with PyTorch on the same shapes, in one run.

What is compared (float32 throughout, same thread count t on both sides):
  attention  softmax(q k^T / sqrt(dh)) v over 12 heads. tessera: BM_attention_reference and
             BM_attention_fused on q, k, v [L, 12*dh]; torch: q, k, v [12, L, dh] and
             torch.softmax(q @ k.transpose(-1, -2) * dh**-0.5, dim=-1) @ v. GFLOPS = 4 L^2 dh 12 / s.
  linear     y = x W^T + b, x [L, D], W [F, D]. tessera: BM_linear_forward; torch: F.linear.
  vit        ViT-B/16 on 224x224 images, batch 1 and 8. tessera: BM_encode_batch/vit_b16*;
             torch: torchvision.models.vit_b_16(weights=None) in eval mode under inference_mode.
  train      one training step of a small CLIP-like model (D 256, 4 pre-norm layers of 4 heads,
             F 1024, E 256, learned positions, mean pooling) on P caption-image pairs (32 ids;
             64 px images, patch 8): forward, InfoNCE, backward, clip_grad_norm_(1), AdamW.
             tessera: BM_train_step (bench/bench_train.cpp); torch: nn.TransformerEncoderLayer
             (norm_first, GELU, no dropout) with torch.optim.AdamW. samples/s = 2P / step.
  pretrained the towers of the published models at their real sizes, random weights, input to
             unit embedding: CLIP ViT-B/32's image tower (batch 1 and 8) and text tower (32 texts
             of 77 ids; 32 texts of 8-32 ids), imagebind_huge's vision trunk (one image) and
             audio trunk (one file: 3 clips of [128, 204]). tessera: BM_pretrained
             (bench/bench_pretrained.cpp, TowerModel::encode_batch); torch: this script's own
             modules built as clip/model.py and ImageBind's imagebind_model.py build them
             (nn.MultiheadAttention on [L, N, D], CLIP's texts padded to 77 with the causal
             mask: that padding is part of the reference's real cost, tessera packs texts
             unpadded), eval mode, timed under no_grad and under inference_mode.

Timing: tessera cells are Google Benchmark's real_time (per-iteration mean of a repetition;
the `_median` aggregate over --repetitions). torch cells are the median per-call
time.perf_counter time after one warm-up call, over >= 3 calls and >= 1 s (0.2 s with --quick).
Threads: tessera's threads:<t> argument; torch.set_num_threads(t), plus
openblas_set_num_threads(t) when torch's BLAS is OpenBLAS (torch does not forward it). Groups
are interleaved (tessera then torch per attention L, then linear, vit, train): noise hits both.
The pretrained section alternates closer still: per case and thread count, --repetitions rounds
of (one tessera run, torch under no_grad, torch under inference_mode), each side's best round
kept; with one thread it also shows CPU time per call (tessera's cpu_time, torch's
time.process_time), which waiting for a core that other work holds does not inflate.

Big shapes: when the [12, L, L] score tensor would exceed 6 GB (L = 16384 under --long), torch
runs the heads one at a time in a Python loop (1 GB of scores each; footnoted). Any torch case
whose warm-up + 3 calls would exceed 120 s (estimated from one head, from ViT batch 1, or from
the warm-up itself) is "n/a" with a footnote. Fused L = 32768 (--long) has no torch twin.

Usage (from the repository root):
  python3 bench/compare_torch.py [--build build/bench] [--threads 1,2] [--long] [--quick]
                                 [--repetitions 3] [--out FILE.md] [--torch-only]
                                 [--sections attention,linear,vit,train,pretrained]
--quick: L = 197 attention, one linear shape, ViT batch 1, CLIP ViT-B/32 image batch 1,
1 thread, short timing (smoke test).
--torch-only: skip the tessera binaries (their columns print "-").
Needs Debian's python3-torch and python3-torchvision (re-runs itself with /usr/bin/python3 if
the python3 on PATH has no torch). Progress goes to stderr, the markdown tables to stdout.
"""
import argparse, ctypes, datetime, json, os, re, statistics, subprocess, sys, time
from pathlib import Path

HEADS = 12
SCORE_LIMIT_BYTES = 6e9  # above this torch runs attention one head at a time
BUDGET_S = 120.0  # longest a single torch case may take (warm-up + MIN_CALLS calls)
MIN_CALLS = 3
BUILD_HINT = "build it first: cmake --preset bench && cmake --build --preset bench"
LINEAR_SHAPES = [(1576, 768, 768), (1576, 768, 3072), (1576, 3072, 768)]
VIT_CASES = {"vit_b16": 1, "vit_b16_batch8": 8}  # tessera case name -> batch
# bench_pretrained's cases: name -> (tower, batch, text lengths or None, what one item is)
PRETRAINED_CASES = {
    "clip_b32_image": ("clip_b32_image", 1, None, "image"),
    "clip_b32_image_batch8": ("clip_b32_image", 8, None, "image"),
    "clip_b32_text_ctx77": ("clip_b32_text", 32, [77] * 32, "text"),
    "clip_b32_text_len20": ("clip_b32_text", 32, [8 + (i * 7) % 25 for i in range(32)], "text"),
    "imagebind_vision": ("imagebind_vision", 1, None, "image"),
    "imagebind_audio": ("imagebind_audio", 1, None, "audio file (3 clips)"),
}
SECTIONS = ["attention", "linear", "vit", "train", "pretrained"]
UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
AGGREGATE = re.compile(r"_(mean|median|stddev|cv)$")
PATTERNS = {  # matched on Google Benchmark's name; suffixes such as /real_time are tolerated
    "attention": re.compile(r"^BM_attention_(fused|reference)/L:(\d+)/dh:(\d+)/threads:(\d+)(?:/|$)"),
    "linear": re.compile(r"^BM_linear_forward/L:(\d+)/D:(\d+)/F:(\d+)/threads:(\d+)(?:/|$)"),
    "vit": re.compile(r"^BM_encode_batch/(vit_b16(?:_batch8)?)/threads:(\d+)(?:/|$)"),
    "train": re.compile(r"^BM_train_step/pairs:(\d+)/threads:(\d+)(?:/|$)"),
    "pretrained": re.compile(r"^BM_pretrained/(\w+)/threads:(\d+)(?:/|$)"),
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def bench_key(name):
    """('attention', kind, L, dh, t) | ('linear', L, D, F, t) | ('vit', case, t) |
    ('train', P, t) | ('pretrained', case, t) | None."""
    for family, pattern in PATTERNS.items():
        m = pattern.match(AGGREGATE.sub("", name))
        if m:
            return (family,) + tuple(int(g) if g.isdigit() else g for g in m.groups())
    return None


def metrics(entry):
    out = {"seconds": entry["real_time"] * UNITS[entry.get("time_unit", "ns")],
           "cpu_seconds": entry["cpu_time"] * UNITS[entry.get("time_unit", "ns")]}
    for counter in ("GFLOPS", "samples/s", "items/s", "tokens", "peak_MB", "work_MB"):
        if counter in entry:
            out[counter] = float(entry[counter])
    return out


def parse_benchmarks(doc):
    """Key -> metrics: the `_median` aggregate when present, else the median of the runs."""
    medians, runs = {}, {}
    for entry in doc.get("benchmarks", []):
        key = bench_key(entry["name"])
        if key is None or entry.get("error_occurred"):
            continue
        aggregate = AGGREGATE.search(entry["name"])  # name_median, name_mean, ...
        if aggregate:
            if aggregate.group(1) == "median":
                medians[key] = metrics(entry)
        else:
            runs.setdefault(key, []).append(metrics(entry))
    out = {k: {f: statistics.median(m[f] for m in v if f in m) for f in v[0]} for k, v in runs.items()}
    out.update(medians)
    return out


def run_tessera(binary, regex, opts, repetitions=None):
    if opts.torch_only:
        return {}
    repetitions = repetitions or opts.repetitions
    cmd = [str(binary), f"--benchmark_filter={regex}", "--benchmark_format=json",
           f"--benchmark_min_time={opts.bench_min_time}"]
    if opts.long and binary.name == "bench_attention":
        cmd.append("--long")  # registers L = 16384 and 32768
    if repetitions > 1:
        cmd += [f"--benchmark_repetitions={repetitions}", "--benchmark_report_aggregates_only=true"]
    log("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    try:
        results = parse_benchmarks(json.loads(proc.stdout))
    except (ValueError, KeyError) as err:
        results = {}
        log(f"warning: unreadable output from {binary.name} ({err})")
    if proc.returncode != 0 or not results:
        log(f"warning: {binary.name} exited {proc.returncode} with {len(results)} results; "
            f"stderr: {proc.stderr.strip()[-500:]}")
    return results


def alt(values):
    return "(" + "|".join(str(v) for v in values) + ")"


def measure(fn, opts, est=None):
    """(median seconds per call, None) or (None, reason) when it would blow the budget."""
    if est is not None and est * (1 + MIN_CALLS) > BUDGET_S:
        return None, (f"torch n/a: about {est:.0f} s a call; warm-up + {MIN_CALLS} calls "
                      f"exceed {BUDGET_S:.0f} s")
    start = time.perf_counter()
    fn()  # warm-up
    warm = time.perf_counter() - start
    if warm * MIN_CALLS > BUDGET_S:
        return None, f"torch n/a: one call took {warm:.0f} s; {MIN_CALLS} more exceed {BUDGET_S:.0f} s"
    times, start = [], time.perf_counter()
    while len(times) < MIN_CALLS or time.perf_counter() - start < opts.min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), None


def torch_attention(torch, L, dh, opts):
    """(GFLOPS or None, footnote or None)."""
    if L > 16384:
        return None, f"torch n/a: L = {L} needs {HEADS * L * L * 4 / 1e9:.0f} GB of scores; not run"
    q, k, v = (torch.rand(HEADS, L, dh) * 2 - 1 for _ in range(3))
    scale = dh ** -0.5

    def head(h):
        return torch.softmax(q[h] @ k[h].transpose(-1, -2) * scale, dim=-1) @ v[h]

    t0 = time.perf_counter()
    head(0)
    est = (time.perf_counter() - t0) * HEADS
    per_head = HEADS * L * L * 4 > SCORE_LIMIT_BYTES
    fn = (lambda: [head(h) for h in range(HEADS)]) if per_head else \
        (lambda: torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v)
    seconds, note = measure(fn, opts, est)
    if seconds is None:
        return None, note
    note = "torch ran the 12 heads one at a time in a Python loop (scores > 6 GB)" if per_head else None
    return 4.0 * L * L * dh * HEADS / seconds / 1e9, note


def torch_linear(torch, L, D, F, opts):
    x, w, b = torch.randn(L, D), torch.randn(F, D) * 0.02, torch.randn(F)
    seconds, note = measure(lambda: torch.nn.functional.linear(x, w, b), opts)
    return (2.0 * L * D * F / seconds / 1e9 if seconds else None), note


def torch_vit(torch, model, batch, opts, est=None):
    x = torch.randn(batch, 3, 224, 224)
    seconds, note = measure(lambda: model(x), opts, est)
    return (batch / seconds if seconds else None), note


def blas_of(torch):
    """(short description, openblas_set_num_threads or None) of the BLAS torch really loaded."""
    torch.ones(64, 64) @ torch.ones(64, 64)
    info = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    paths = sorted({line.split()[-1] for line in open("/proc/self/maps")})
    lib = next((p for p in paths if re.match(r"lib(open)?blas|libmkl_rt|libblis", Path(p).name)), None)
    kinds = [("openblas", "OpenBLAS"), ("mkl", "MKL"), ("blis", "BLIS"), ("atlas", "ATLAS"),
             ("/blas/", "netlib reference BLAS")]
    kind = next((name for tag, name in kinds if lib and tag in lib), "unknown BLAS")
    setter = getattr(ctypes.CDLL(lib), "openblas_set_num_threads", None) if lib else None
    desc = f"BLAS_INFO={info.group(1) if info else '?'} -> {kind}" + (f" ({lib})" if lib else "")
    return desc, setter


def import_torch():
    try:
        import torch, torchvision
        return torch, torchvision
    except ImportError:
        system = "/usr/bin/python3"
        if os.path.exists(system) and not os.environ.get("COMPARE_TORCH_REEXEC"):
            log(f"note: {sys.executable} has no torch; re-running with {system}")
            os.environ["COMPARE_TORCH_REEXEC"] = "1"
            os.execv(system, [system] + sys.argv)
        sys.exit("error: PyTorch not found (apt-get install python3-torch python3-torchvision)")


class Notes:
    def __init__(self):
        self.items = []

    def cell(self, value, fmt, note=None):
        text = "-" if value is None and note is None else ("n/a" if value is None else fmt.format(value))
        if note:
            if note not in self.items:
                self.items.append(note)
            text += f" [{self.items.index(note) + 1}]"
        return text


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def machine_line(torch, blas):
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    flags = set((re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.M) or ["", ""])[1].split())
    avx = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16") if f in flags) or "none"
    env = "".join(f"; {k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
                  if k in os.environ)
    return (f"Machine: {model.group(1) if model else '?'}, {os.cpu_count()} cores, flags: {avx}; "
            f"torch {torch.__version__} ({blas}){env}; {datetime.datetime.now():%Y-%m-%d %H:%M}")


def parse_args():
    root = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", type=Path, default=root / "build" / "bench", help="tessera build tree (the bench preset: -O3)")
    p.add_argument("--threads", default=None, help="comma-separated thread counts (default 1,2)")
    p.add_argument("--long", action="store_true", help="add L = 16384 (and fused L = 32768)")
    p.add_argument("--quick", action="store_true", help="smallest shapes, 1 thread, short timing")
    p.add_argument("--repetitions", type=int, default=None, help="Google Benchmark repetitions (3)")
    p.add_argument("--out", type=Path, help="also write the markdown here")
    p.add_argument("--torch-only", action="store_true", help="skip the tessera binaries")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated sections to run (default: all, {','.join(SECTIONS)})")
    o = p.parse_args()
    o.sections = o.sections.split(",")
    unknown = set(o.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    o.threads = [int(t) for t in (o.threads or ("1" if o.quick else "1,2")).split(",")]
    o.repetitions = o.repetitions or (1 if o.quick else 3)
    o.min_time, o.bench_min_time = (0.2, 0.05) if o.quick else (1.0, 0.5)
    o.lengths = [197] if o.quick else [197, 1024, 4096] + ([16384, 32768] if o.long else [])
    o.head_dims = [64, 128]
    o.linear = LINEAR_SHAPES[:1] if o.quick else LINEAR_SHAPES
    o.vit = ["vit_b16"] if o.quick else list(VIT_CASES)
    o.train = [16] if o.quick else [16, 64]
    o.pretrained = ["clip_b32_image"] if o.quick else list(PRETRAINED_CASES)
    return o


def memory(result):
    """'peak (work)': the process's peak resident MB with inputs and output, and the kernel's own."""
    if "peak_MB" not in result:
        return "-"
    return f"{result['peak_MB']:.0f} ({result.get('work_MB', float('nan')):.1f})"


def attention_section(run, opts):
    rows, any_peak, ts = [], False, opts.threads
    for L in opts.lengths:
        kinds = ["fused"] if L > 16384 else ["fused", "reference"]
        res = run.tessera("bench_attention", f"^BM_attention_{alt(kinds)}/L:{L}/dh:{alt(opts.head_dims)}"
                                             f"/threads:{alt(ts)}(/|$)")
        for dh in opts.head_dims:
            for t in ts:
                run.threads(t)
                gf, note = torch_attention(run.torch, L, dh, opts)
                log(f"torch attention L={L} dh={dh} threads={t}: {gf and round(gf, 1)} GFLOPS")
                ref, fused = (res.get(("attention", k, L, dh, t), {}) for k in ("reference", "fused"))
                any_peak |= "peak_MB" in ref or "peak_MB" in fused
                cell = run.notes.cell
                rows.append([f"L={L} dh={dh}", t, cell(gf, "{:.1f}", note), cell(ref.get("GFLOPS"), "{:.1f}"),
                             cell(fused.get("GFLOPS"), "{:.1f}"), ratio(fused.get("GFLOPS"), gf),
                             memory(ref), memory(fused)])
    head = ["shape (12 heads)", "threads", "torch GFLOPS", "tessera reference", "tessera fused",
            "fused / torch", "reference peak MB (kernel's own)", "fused peak MB (kernel's own)"]
    width = len(head) if any_peak else len(head) - 2
    return "### Attention\n\n" + table(head[:width], [r[:width] for r in rows])


def linear_section(run, opts):
    shapes = "|".join(f"L:{L}/D:{D}/F:{F}" for L, D, F in opts.linear)
    res = run.tessera("bench_attention", f"^BM_linear_forward/({shapes})/threads:{alt(opts.threads)}(/|$)")
    rows = []
    for L, D, F in opts.linear:
        for t in opts.threads:
            run.threads(t)
            gf, note = torch_linear(run.torch, L, D, F, opts)
            log(f"torch linear L={L} D={D} F={F} threads={t}: {gf and round(gf, 1)} GFLOPS")
            ours = res.get(("linear", L, D, F, t), {}).get("GFLOPS")
            rows.append([f"L={L} D={D} F={F}", t, run.notes.cell(gf, "{:.1f}", note),
                         run.notes.cell(ours, "{:.1f}"), ratio(ours, gf)])
    head = ["shape", "threads", "torch GFLOPS", "tessera GFLOPS", "tessera / torch"]
    return "### Linear\n\n" + table(head, rows)


def vit_section(run, opts):
    res = run.tessera("bench_encoder", f"^BM_encode_batch/{alt(opts.vit)}/threads:{alt(opts.threads)}(/|$)")
    model, rows, per_image = run.torchvision.models.vit_b_16(weights=None).eval(), [], {}
    for case in opts.vit:
        batch = VIT_CASES[case]
        for t in opts.threads:
            run.threads(t)
            est = per_image[t] * batch if t in per_image else None  # from batch 1: skip hopeless cases
            ips, note = torch_vit(run.torch, model, batch, opts, est)
            per_image.setdefault(t, 1.0 / ips if ips else BUDGET_S)
            log(f"torch vit_b_16 batch={batch} threads={t}: {ips and round(ips, 2)} images/s")
            ours = res.get(("vit", case, t), {}).get("samples/s")
            rows.append(["ViT-B/16", batch, t, run.notes.cell(ips, "{:.2f}", note),
                         run.notes.cell(ours, "{:.2f}"), ratio(ours, ips)])
    head = ["model", "batch", "threads", "torch images/s", "tessera images/s", "tessera / torch"]
    return "### ViT-B/16 encoder\n\n" + table(head, rows)


def torch_train_step(torch, pairs):
    """One training step of bench/bench_train.cpp's model in PyTorch, as a closure."""
    nn, F = torch.nn, torch.nn.functional
    D, L, H, FF, E, V, T, S, P = 256, 4, 4, 1024, 256, 1024, 32, 64, 8

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
            logits = torch.exp(torch.clamp(self.logit_scale, max=4.6051701859880914)) * texts @ pics.T
            target = torch.arange(pairs)
            return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    torch.manual_seed(0)
    model = Model()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                               {"params": rest, "weight_decay": 0.0}], lr=1e-4)
    ids = torch.randint(0, V, (pairs, T))
    images = torch.rand(pairs, 3, S, S) * 2 - 1

    def step():
        optim.zero_grad(set_to_none=True)
        loss = model(ids, images)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
    return step


def train_section(run, opts):
    res = run.tessera("bench_train", f"^BM_train_step/pairs:{alt(opts.train)}/threads:{alt(opts.threads)}(/|$)")
    rows = []
    for pairs in opts.train:
        for t in opts.threads:
            run.threads(t)
            seconds, note = measure(torch_train_step(run.torch, pairs), opts)
            sps = 2 * pairs / seconds if seconds else None
            log(f"torch train step pairs={pairs} threads={t}: {sps and round(sps, 1)} samples/s")
            ours = res.get(("train", pairs, t), {}).get("samples/s")
            rows.append([pairs, t, run.notes.cell(sps, "{:.1f}", note), run.notes.cell(ours, "{:.1f}"),
                         ratio(ours, sps)])
    head = ["pairs per step", "threads", "torch samples/s", "tessera samples/s", "tessera / torch"]
    return "### Training step (small CLIP-like model)\n\n" + table(head, rows)


def quick_gelu(torch):
    class QuickGELU(torch.nn.Module):  # clip/model.py QuickGELU: x sigmoid(1.702 x)
        def forward(self, x):
            return x * torch.sigmoid(1.702 * x)
    return QuickGELU


def torch_tower(torch, tower):
    """A PyTorch module of one of bench_pretrained's towers (random weights, eval mode), as the
    reference builds it, taking a batch and returning [batch, E] unit embeddings."""
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        """clip/model.py ResidualAttentionBlock and ImageBind's transformer.py BlockWithMasking:
        x + attn(ln_1(x)), then + mlp(ln_2(x)), attention by nn.MultiheadAttention on [L, N, D]."""

        def __init__(self, d, heads, act, eps, bias_kv=False, mask=None):
            super().__init__()
            self.attn = nn.MultiheadAttention(d, heads, add_bias_kv=bias_kv)
            self.ln_1, self.ln_2 = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), act(), nn.Linear(4 * d, d))
            self.mask = mask

        def forward(self, x):  # [L, N, D]
            y = self.ln_1(x)
            x = x + self.attn(y, y, y, need_weights=False, attn_mask=self.mask)[0]
            return x + self.mlp(self.ln_2(x))

    class PatchTower(nn.Module):
        """clip/model.py VisionTransformer.forward (+ the unit norm CLIP's users apply), and
        ImageBind's vision / audio path (imagebind_model.py ImageBindModel.forward:
        RGBDTPreprocessor / AudioPreprocessor -> SimpleTransformer -> head -> Normalize, audio
        clips folded into the batch and averaged after the postprocessor)."""

        def __init__(self, d, layers, heads, embed, act, eps, conv, tokens, stem_norm=False,
                     pre_norm=True, bias_kv=False, frames=1, clips=1, head_eps=None):
            super().__init__()
            self.conv, self.frames, self.clips = conv, frames, clips
            self.stem_norm = nn.LayerNorm(d) if stem_norm else nn.Identity()
            self.cls = nn.Parameter(torch.randn(d) * 0.02)
            self.pos = nn.Parameter(torch.randn(tokens, d) * 0.02)
            self.ln_pre = nn.LayerNorm(d, eps=eps) if pre_norm else nn.Identity()
            self.blocks = nn.Sequential(*[Block(d, heads, act, eps, bias_kv) for _ in range(layers)])
            self.ln_post = nn.LayerNorm(d, eps=head_eps or eps)
            self.proj = nn.Linear(d, embed, bias=False)

        def forward(self, x):  # images [N, 3, S, S] or audio [N, clips, 1, M, T]
            if self.clips > 1:
                x = x.reshape(-1, *x.shape[2:])  # ImageBind: clips into the batch
            if self.frames > 1:
                x = x.unsqueeze(2).repeat(1, 1, self.frames, 1, 1)  # PadIm2Video
            x = self.stem_norm(self.conv(x).flatten(2).transpose(1, 2))
            x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], dim=1) + self.pos
            x = self.blocks(self.ln_pre(x).permute(1, 0, 2)).permute(1, 0, 2)
            e = F.normalize(self.proj(self.ln_post(x[:, 0])), dim=-1)
            if self.clips > 1:
                e = F.normalize((20.0 * e).reshape(-1, self.clips, e.shape[-1]).mean(1), dim=-1)
            return e

    class TextTower(nn.Module):
        """clip/model.py CLIP.encode_text: ids padded to 77, causal mask (build_attention_mask),
        ln_final, the row at argmax(ids) @ text_projection (+ the unit norm)."""

        def __init__(self, d=512, layers=12, heads=8, embed=512, vocab=49408, context=77):
            super().__init__()
            mask = torch.full((context, context), float("-inf")).triu_(1)
            self.token_embedding = nn.Embedding(vocab, d)
            self.pos = nn.Parameter(torch.randn(context, d) * 0.01)
            self.blocks = nn.Sequential(*[Block(d, heads, quick_gelu(torch), 1e-5, mask=mask)
                                          for _ in range(layers)])
            self.ln_final = nn.LayerNorm(d)
            self.text_projection = nn.Parameter(torch.randn(d, embed) * d ** -0.5)

        def forward(self, ids):  # [N, 77]
            x = self.blocks((self.token_embedding(ids) + self.pos).permute(1, 0, 2)).permute(1, 0, 2)
            x = self.ln_final(x)
            return F.normalize(x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ self.text_projection, dim=-1)

    torch.manual_seed(0)
    if tower == "clip_b32_image":  # ViT-B/32: conv1 k 32 no bias, ln_pre, QuickGELU, eps 1e-5
        model = PatchTower(768, 12, 12, 512, quick_gelu(torch), 1e-5,
                           nn.Conv2d(3, 768, 32, 32, bias=False), 50)
    elif tower == "clip_b32_text":
        model = TextTower()
    elif tower == "imagebind_vision":  # imagebind_huge: Conv3d (2, 14, 14), eps 1e-6
        model = PatchTower(1280, 32, 16, 1024, nn.GELU, 1e-6,
                           nn.Conv3d(3, 1280, (2, 14, 14), (2, 14, 14), bias=False), 257, frames=2)
    elif tower == "imagebind_audio":  # Conv2d k 16 s 10 + LayerNorm stem, add_bias_kv, no ln_pre
        model = PatchTower(768, 12, 12, 1024, nn.GELU, 1e-6, nn.Conv2d(1, 768, 16, 10, bias=False),
                           229, stem_norm=True, pre_norm=False, bias_kv=True, clips=3)
    else:
        raise ValueError(tower)
    return model.eval()


def torch_tower_input(torch, tower, batch, lengths):
    if tower == "clip_b32_text":  # bench_pretrained's ids, padded with 0 to 77 (clip.tokenize)
        ids = torch.zeros(batch, 77, dtype=torch.long)
        for i, n in enumerate(lengths):
            ids[i, 0], ids[i, n - 1] = 49406, 49407
            ids[i, 1:n - 1] = torch.tensor([(i * 7919 + j * 104729) % 49406 for j in range(1, n - 1)])
        return ids
    if tower == "imagebind_audio":
        return torch.randn(batch, 3, 1, 128, 204)
    return torch.randn(batch, 3, 224, 224)


def pretrained_section(run, opts):
    """Per case and thread count, `rounds` rounds of (tessera's binary, then torch under no_grad,
    then under inference_mode), each side's best round kept: on a shared machine other work only
    ever slows a round down, and alternating the two within a case lets neither run in a
    quieter minute than the other."""
    torch, rows, cell, rounds = run.torch, [], run.notes.cell, opts.repetitions
    towers = list(dict.fromkeys(PRETRAINED_CASES[c][0] for c in opts.pretrained))
    for tower in towers:
        model = torch_tower(torch, tower)
        for case in [c for c in opts.pretrained if PRETRAINED_CASES[c][0] == tower]:
            _, batch, lengths, item = PRETRAINED_CASES[case]
            x = torch_tower_input(torch, tower, batch, lengths)
            for t in opts.threads:
                ours, timed, cpu = {}, {"no_grad": [], "inference_mode": []}, {"no_grad": [], "inference_mode": []}
                for _ in range(rounds):
                    res = run.tessera("bench_pretrained", f"^BM_pretrained/{case}/threads:{t}(/|$)", repetitions=1)
                    got = res.get(("pretrained", case, t))
                    if got and got["seconds"] < ours.get("seconds", float("inf")):
                        ours = got
                    run.threads(t)
                    for mode, context in (("no_grad", torch.no_grad), ("inference_mode", torch.inference_mode)):
                        calls = []

                        def call():
                            c0 = time.process_time()
                            with context():
                                model(x)
                            calls.append(time.process_time() - c0)
                        timed[mode].append(measure(call, opts))
                        if len(calls) > 1:
                            cpu[mode].append(statistics.median(calls[1:]))  # after the warm-up
                best_of = lambda runs: min((v for v, _ in runs if v), default=None)
                note_of = lambda runs: next((n for v, n in runs if n), None)
                ng, im = best_of(timed["no_grad"]), best_of(timed["inference_mode"])
                best = min((v for v in (ng, im) if v), default=None)
                ours_s = ours.get("seconds")
                log(f"{case} threads={t}: torch no_grad {ng and round(ng * 1e3)} ms, inference_mode "
                    f"{im and round(im * 1e3)} ms; tessera {ours_s and round(ours_s * 1e3)} ms")
                padded = None
                if tower == "clip_b32_text":
                    padded = (f"torch runs the texts padded to 77 ({x.numel()} tokens) with the causal "
                              "mask, as CLIP does: the padding is part of the reference's real cost")
                ms = lambda v: v * 1e3 if v else None
                # one thread: CPU time too (tessera's thread, torch's process), which waiting for
                # a core shared with other work does not inflate
                torch_cpu = min(cpu["no_grad"] + cpu["inference_mode"], default=None) if t == 1 else None
                ours_cpu = ours.get("cpu_seconds") if t == 1 else None
                rows.append([case, batch, item, t,
                             f"{ours['tokens']:.0f}" if "tokens" in ours else "-",
                             cell(ms(ng), "{:.0f}", note_of(timed["no_grad"]) or padded),
                             cell(ms(im), "{:.0f}", note_of(timed["inference_mode"])),
                             cell(ms(ours_s), "{:.0f}"), ratio(best, ours_s),
                             cell(ms(torch_cpu), "{:.0f}"), cell(ms(ours_cpu), "{:.0f}"),
                             ratio(torch_cpu, ours_cpu)])
        model = None  # free a tower (imagebind_vision: 2.5 GB) before the next is built
    head = ["case", "batch", "item", "threads", "tessera tokens", "torch ms (no_grad)",
            "torch ms (inference_mode)", "tessera ms", "torch / tessera (faster torch)",
            "1 thread: torch CPU ms", "tessera CPU ms", "CPU torch / tessera"]
    how = (f"Each side's best of {rounds} alternating round(s) per case and thread count (tessera: "
           "Google Benchmark real_time of one repetition; torch: median per call after a warm-up). "
           "The CPU columns (one thread): tessera's cpu_time, torch's time.process_time per call "
           "(median after the warm-up, the faster mode).")
    return "### Pretrained towers (random weights, real sizes)\n\n" + table(head, rows) + "\n\n" + how


class Run:
    """What the sections share: torch, the footnotes, the binaries and the thread setter."""

    def __init__(self, opts, bins):
        self.opts, self.bins, self.notes = opts, bins, Notes()
        self.torch, self.torchvision = import_torch()
        self.blas, self.openblas_threads = blas_of(self.torch)

    def threads(self, t):
        self.torch.set_num_threads(t)
        if self.openblas_threads:
            self.openblas_threads(t)

    def tessera(self, name, regex, repetitions=None):
        return run_tessera(self.bins[name], regex, self.opts, repetitions)


def main():
    opts = parse_args()
    program = {"attention": "bench_attention", "linear": "bench_attention", "vit": "bench_encoder",
               "train": "bench_train", "pretrained": "bench_pretrained"}
    bins = {program[s]: opts.build / "bin" / program[s] for s in opts.sections}
    missing = [str(b) for b in bins.values() if not b.is_file()]
    if missing and not opts.torch_only:
        print(f"error: missing {', '.join(missing)}; {BUILD_HINT}", file=sys.stderr)
        sys.exit(2)
    run = Run(opts, bins)
    if "reference" in run.blas:
        log("warning: torch uses netlib reference BLAS here, far slower than a tuned BLAS")
    inference = {"attention": attention_section, "linear": linear_section, "vit": vit_section}
    with run.torch.inference_mode():
        sections = [inference[name](run, opts) for name in inference if name in opts.sections]
    if "train" in opts.sections:
        sections.append(train_section(run, opts))  # with autograd
    if "pretrained" in opts.sections:
        sections.append(pretrained_section(run, opts))  # its own no_grad / inference_mode
    how = (f"tessera: Google Benchmark real_time, median of {opts.repetitions} repetition(s); "
           f"torch: median per call after one warm-up, >= {MIN_CALLS} calls and >= {opts.min_time} s; "
           "both in this run, interleaved per group.")
    footer = [machine_line(run.torch, run.blas)] + ([how] if set(opts.sections) - {"pretrained"} else [])
    footer += [f"[{i}] {n}" for i, n in enumerate(run.notes.items, 1)]
    if opts.torch_only:
        footer.append("(--torch-only: tessera columns not run)")
    text = "\n\n".join(sections + footer) + "\n"  # one paragraph per footer line
    print(text)
    if opts.out:
        opts.out.write_text(text)


if __name__ == "__main__":
    main()
