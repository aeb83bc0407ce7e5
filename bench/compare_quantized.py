#!/usr/bin/env python3
"""Quantized tessera against tessera fp32, PyTorch fp32 and PyTorch int8, speed and size, in one run.

What is compared (docs/quantization.md "Speed and size"; same shapes and thread count t on
every side):
  vit_b16        a ViT-B/16-sized encoder (D 768, 12 layers of 12 heads, F 3072, 224 px, patch
                 16), batch 1 and 8. tessera: bench_encoder's BM_encode_batch/vit_b16{,_batch8}
                 (fp32) and its _int8 and _bf16 twins (the same random model quantized in memory
                 by quantize_model); torch: torchvision.models.vit_b_16(weights=None), as
                 compare_torch.py's vit section runs it.
  clip_b32_image CLIP ViT-B/32's image tower (D 768, 12 layers, patch 32: 50 tokens), batch 1
                 and 8. tessera: bench_pretrained's BM_pretrained/clip_b32_image{,_batch8} and
                 their _int8 and _bf16 twins; torch: compare_torch.py's own module of that
                 tower (torch_tower, as clip/model.py builds it).
  PyTorch int8 is torch.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
  on the backend torch.backends.quantized.engine names (fbgemm where torch was built with it;
  Debian's 1.13 has onednn instead). It quantizes nn.Linear modules only: the MLP's two layers
  and the heads. nn.MultiheadAttention's packed in_proj is not a Linear module and its
  out_proj is NonDynamicallyQuantizableLinear, so PyTorch's attention projections (a third of
  the products) stay fp32, where tessera quantizes them too.

Kernel paths: tessera's int8 and bf16 products take the best path the CPU has (avx512 with
AVX-512 VNNI / BF16, else avx2); --paths default,avx2 runs the quantized cases a second time
with TESSERA_CPU=avx2 (detail/cpu.hpp), skipped (and said so) where avx2 is the best already.
The note under the table lists the paths the binaries' labels reported ("int8 avx512").

Timing: per model and batch, --rounds rounds of (tessera's binary on the fp32, int8 and bf16
cases at each thread count, one repetition; the same under TESSERA_CPU=avx2; torch fp32 and
torch int8 at each thread count), each column's best round kept: on a shared machine other
work only slows a round down. tessera: Google Benchmark real_time and, with one thread,
cpu_time (the main thread's); torch: median time.perf_counter per call after a warm-up (>= 3
calls, >= --min-time s) under inference_mode, and with one thread the median
time.process_time per call. With one thread, CPU time is what waiting for a core taken by
other work does not inflate: the ratios are given on both.

Size: bench_encoder / bench_pretrained --write-models write each model as fp32, int8 and bf16
(save_model, save_towers_model) under --models-dir; the table gives model.safetensors' size and
the weights' bytes in memory (quantize_model's summary), and runs each binary once more per
model as `--load-and-encode DIR 1` (a fresh process: load, then one image) for its resident
memory from /proc/self/status: at start, the peak while loading (VmHWM), after loading
(VmRSS after malloc_trim), the peak with the call, and after it. PyTorch's state_dict sizes
(torch.save, fp32 and quantize_dynamic int8) are given for comparison.

Usage (from the repository root; the bench preset's build, or any Release build with benchmarks):
  python3 bench/compare_quantized.py [--build build/bench] [--threads 1,2] [--rounds 2]
                                     [--paths default,avx2] [--sections speed,size]
                                     [--models vit_b16,clip_b32_image] [--batches 1,8]
                                     [--models-dir DIR] [--out FILE.md] [--quick]
--quick: CLIP ViT-B/32 image at batch 1, one thread, one round, short timing (smoke test).
Needs Debian's python3-torch and python3-torchvision (re-runs itself with /usr/bin/python3 if
the python3 on PATH has no torch). Progress goes to stderr, the markdown to stdout.
"""
import argparse, datetime, io, json, os, re, statistics, subprocess, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_torch as ct  # noqa: E402  (the shared helpers: torch import, BLAS, towers, timing)

FORMATS = ["f32", "int8", "bf16"]
# model -> (binary, benchmark function, {batch: tessera case}, torch twin)
MODELS = {
    "vit_b16": ("bench_encoder", "BM_encode_batch", {1: "vit_b16", 8: "vit_b16_batch8"}),
    "clip_b32_image": ("bench_pretrained", "BM_pretrained",
                       {1: "clip_b32_image", 8: "clip_b32_image_batch8"}),
}
CPU_FLAGS = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "avx_vnni", "amx_int8", "amx_bf16"]
log = ct.log


def case_name(case, fmt):
    return case if fmt == "f32" else f"{case}_{fmt}"


def run_binary(binary, regex, opts, env_extra=None):
    """name (case, threads) -> {seconds, cpu_seconds, label} from one Google Benchmark run."""
    cmd = [str(binary), f"--benchmark_filter={regex}", "--benchmark_format=json",
           f"--benchmark_min_time={opts.bench_min_time}"]
    env = dict(os.environ, **(env_extra or {}))
    log("$ " + "".join(f"{k}={v} " for k, v in (env_extra or {}).items()) + " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    out = {}
    try:
        doc = json.loads(proc.stdout)
    except ValueError as err:
        log(f"warning: unreadable output from {binary.name} ({err}); stderr: {proc.stderr.strip()[-500:]}")
        return out
    for entry in doc.get("benchmarks", []):
        m = re.match(r"^BM_\w+?/(\w+)/threads:(\d+)(?:/|$)", entry["name"])
        if not m or entry.get("error_occurred"):
            continue
        unit = ct.UNITS[entry.get("time_unit", "ns")]
        out[(m.group(1), int(m.group(2)))] = {"seconds": entry["real_time"] * unit,
                                              "cpu_seconds": entry["cpu_time"] * unit,
                                              "label": entry.get("label", "")}
    if proc.returncode != 0 or not out:
        log(f"warning: {binary.name} exited {proc.returncode} with {len(out)} results; "
            f"stderr: {proc.stderr.strip()[-500:]}")
    return out


def torch_model(torch, torchvision, model):
    if model == "vit_b16":
        torch.manual_seed(0)
        return torchvision.models.vit_b_16(weights=None).eval()
    return ct.torch_tower(torch, model)


def torch_int8(torch, fp32):
    return torch.quantization.quantize_dynamic(fp32, {torch.nn.Linear}, dtype=torch.qint8)


def time_torch(torch, module, x, opts):
    """(wall seconds, CPU seconds) per call: the median after a warm-up."""
    cpu = []

    def call():
        c0 = time.process_time()
        with torch.inference_mode():
            module(x)
        cpu.append(time.process_time() - c0)
    wall, note = ct.measure(call, opts)
    if note:
        log(note)
    return wall, (statistics.median(cpu[1:]) if len(cpu) > 1 else None)


def best(a, b):
    return b if a is None else a if b is None else min(a, b)


def ms(v, digits=0):
    return "-" if v is None else f"{v * 1e3:.{digits}f}"


def ratio(a, b):
    return f"{a / b:.2f}x" if a and b else "-"


def speed_section(env, opts):
    torch, torchvision = env["torch"], env["torchvision"]
    rows, paths_seen, skipped = [], set(), []
    avx2_runs = "avx2" in opts.paths
    for model in opts.models:
        binary_name, _, cases = MODELS[model]
        binary = opts.build / "bin" / binary_name
        fp32 = torch_model(torch, torchvision, model)
        int8 = torch_int8(torch, fp32)
        for batch in opts.batches:
            case = cases[batch]
            x = torch.randn(batch, 3, 224, 224)
            cols = {t: {} for t in opts.threads}  # t -> column -> best over rounds

            def keep(t, col, seconds, cpu, label=""):
                old = cols[t].setdefault(col, {"seconds": None, "cpu_seconds": None, "label": label})
                old["seconds"], old["cpu_seconds"] = best(old["seconds"], seconds), best(old["cpu_seconds"], cpu)
                old["label"] = old["label"] or label

            for _ in range(opts.rounds):
                regex = (f"^{MODELS[model][1]}/{ct.alt(case_name(case, f) for f in FORMATS)}"
                         f"/threads:{ct.alt(opts.threads)}(/|$)")
                res = run_binary(binary, regex, opts)
                if avx2_runs and env["best_path"] != "avx2":
                    regex = (f"^{MODELS[model][1]}/{ct.alt(case_name(case, f) for f in FORMATS[1:])}"
                             f"/threads:{ct.alt(opts.threads)}(/|$)")
                    res.update({(name + " avx2", t): v for (name, t), v in
                                run_binary(binary, regex, opts, {"TESSERA_CPU": "avx2"}).items()})
                for t in opts.threads:
                    for f in FORMATS + [f + " avx2" for f in FORMATS[1:]]:
                        name = case_name(case, f.split()[0]) + (" avx2" if " " in f else "")
                        got = res.get((name, t))
                        if got:
                            keep(t, f, got["seconds"], got["cpu_seconds"], got["label"])
                    env["threads"](t)
                    keep(t, "torch f32", *time_torch(torch, fp32, x, opts))
                    keep(t, "torch int8", *time_torch(torch, int8, x, opts))
            for t in opts.threads:
                for col in cols[t].values():
                    if col["label"]:
                        paths_seen.add(col["label"])
                log(f"{model} batch={batch} threads={t}: " + ", ".join(
                    f"{k} {ms(v['seconds'])} ms" for k, v in cols[t].items()))
                get = lambda col, what="seconds": cols[t].get(col, {}).get(what)
                cpu = (lambda col: get(col, "cpu_seconds")) if t == 1 else (lambda col: None)
                cell = lambda col: (f"{ms(get(col))} ({ms(cpu(col))})" if t == 1 else ms(get(col))) \
                    if get(col) else "-"
                rows.append([model, batch, t, cell("f32"), cell("int8"), cell("bf16"),
                             cell("int8 avx2"), cell("bf16 avx2"), cell("torch f32"), cell("torch int8"),
                             ratio(get("f32"), get("int8")), ratio(cpu("f32"), cpu("int8")),
                             ratio(get("f32"), get("int8 avx2")), ratio(cpu("f32"), cpu("int8 avx2")),
                             ratio(get("torch int8"), get("int8")), ratio(cpu("torch int8"), cpu("int8")),
                             ratio(get("torch int8"), get("int8 avx2")),
                             ratio(get("torch f32"), get("f32")), ratio(get("torch f32"), get("torch int8"))])
        fp32 = int8 = None
    if avx2_runs and env["best_path"] == "avx2":
        skipped.append("the TESSERA_CPU=avx2 columns: avx2 is this CPU's best path already (the "
                       "int8 / bf16 columns are that path)")
    if env["best_path"] != "avx512":
        skipped.append("the avx512 path (AVX-512 VNNI / BF16): this CPU lacks it")
    head = ["model", "batch", "threads", "tessera f32 ms", f"tessera int8 ms ({env['best_path']})",
            f"tessera bf16 ms ({env['best_path']})", "tessera int8 ms (avx2)", "tessera bf16 ms (avx2)",
            "torch f32 ms", f"torch int8 ms ({env['engine']})",
            "int8 speed-up: f32 / int8", "(CPU)", "f32 / int8 avx2", "(CPU)",
            "torch int8 / tessera int8", "(CPU)", "torch int8 / tessera int8 avx2", "torch f32 / tessera f32", "torch f32 / torch int8"]
    how = (f"Milliseconds per call, each column's best of {opts.rounds} alternating round(s); with "
           "one thread, \"wall (CPU)\". Ratios above 1: the second named is faster; \"(CPU)\" is the "
           "same ratio on one-thread CPU time. Paths reported by the binaries' labels: "
           + ", ".join(sorted(paths_seen)) + "."
           + "".join(f" Skipped: {s}." for s in skipped))
    return "### Speed\n\n" + ct.table(head, rows) + "\n\n" + how


def size_section(env, opts):
    torch, torchvision = env["torch"], env["torchvision"]
    rows, torch_rows = [], []
    models_dir = opts.models_dir
    models_dir.mkdir(parents=True, exist_ok=True)
    for model in opts.models:
        binary = opts.build / "bin" / MODELS[model][0]
        log(f"$ {binary} --write-models {models_dir}")
        proc = subprocess.run([str(binary), "--write-models", str(models_dir)], capture_output=True, text=True)
        if proc.returncode != 0:
            log(f"warning: {binary.name} --write-models exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
            continue
        written = sorted((json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")),
                         key=lambda w: FORMATS.index(w["format"]))  # f32 first: the base
        base = {}
        for w in written:
            d = Path(w["dir"])
            log(f"$ {binary} --load-and-encode {d} 1")
            run = subprocess.run([str(binary), "--load-and-encode", str(d), "1"], capture_output=True, text=True)
            mem = json.loads(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 else {}
            if run.returncode != 0:
                log(f"warning: --load-and-encode {d} exited {run.returncode}: {run.stderr.strip()[-500:]}")
            file_bytes = (d / "model.safetensors").stat().st_size
            model_rss = mem["loaded_kB"] - mem["start_kB"] if mem else None
            if w["format"] == "f32":
                base = {"file": file_bytes, "weights": w["weight_bytes"], "rss": model_rss}
            mb = lambda kb: "-" if kb is None else f"{kb / 1024:.0f}"
            rows.append([model, w["format"], f"{file_bytes / 2**20:.1f}", ratio(base.get("file"), file_bytes),
                         f"{w['weight_bytes'] / 2**20:.1f}", ratio(base.get("weights"), w["weight_bytes"]),
                         mb(mem.get("start_kB")), mb(mem.get("load_peak_kB")), mb(mem.get("loaded_kB")),
                         mb(model_rss), ratio(base.get("rss"), model_rss),
                         mb(mem.get("peak_kB")), mb(mem.get("after_kB"))])
        fp32 = torch_model(torch, torchvision, model)
        sizes = {}
        for name, m in (("f32", fp32), ("int8 (quantize_dynamic)", torch_int8(torch, fp32))):
            buf = io.BytesIO()
            torch.save(m.state_dict(), buf)
            sizes[name] = buf.tell()
        f = sizes["f32"]
        torch_rows.append([model] + [f"{v / 2**20:.1f} ({ratio(f, v)})" for v in sizes.values()])
    head = ["model", "format", "model.safetensors MiB", "smaller than f32", "weights in memory MiB",
            "smaller than f32", "RSS at start MiB", "peak while loading", "after loading",
            "model's own (after loading - start)", "smaller than f32", "peak with one image",
            "after the call"]
    how = ("Resident memory of one process per row (`--load-and-encode DIR 1`: load, then one image "
           "on one thread), from /proc/self/status: VmRSS at start, VmHWM after loading, VmRSS after "
           "loading and malloc_trim(0), VmHWM after the call, VmRSS after it and malloc_trim(0). "
           "Weights in memory: quantize_model's summary (every weight tensor as held: int8 + row "
           "scales or bf16 for the quantized ones, fp32 for embeddings, norms and biases).")
    torch_table = ct.table(["model", "torch.save(state_dict) f32 MiB", "int8 MiB (smaller than f32)"],
                           torch_rows)
    return ("### Size\n\n" + ct.table(head, rows) + "\n\n" + how + "\n\nPyTorch, for comparison "
            "(quantize_dynamic leaves the attention projections fp32):\n\n" + torch_table)


def machine_lines(env, opts):
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    flags = set((re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.M) or ["", ""])[1].split())
    have = " ".join(f for f in CPU_FLAGS if f in flags) or "none"
    lacks = " ".join(f for f in CPU_FLAGS if f not in flags) or "none"
    root = Path(__file__).resolve().parent.parent
    git = lambda *a: subprocess.run(["git", *a], cwd=root, capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") + (" (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")
    return [f"Machine: {model.group(1) if model else '?'}, {os.cpu_count()} cores; CPU flags: {have} "
            f"(not: {lacks}); tessera's best int8 / bf16 path here: {env['best_path']}; threads "
            f"{','.join(map(str, opts.threads))}; torch {env['torch'].__version__} ({env['blas']}), quantized "
            f"engine {env['engine']}; commit {commit}; {datetime.datetime.now():%Y-%m-%d %H:%M}; load "
            f"average {env['load_before']:.1f} before, {os.getloadavg()[0]:.1f} after"]


def best_path(flags):
    """The best int8 / bf16 paths (detail/cpu.hpp) for /proc/cpuinfo's flags: "avx512" or
    "avx512 / avx2" when only one of them has its AVX-512 kernel."""
    base = {"avx512f", "avx512bw", "avx512vl"}
    wide = lambda extra: "avx512" if base | {extra} <= flags else \
        "avx2" if {"avx2", "fma"} <= flags else "scalar"
    int8, bf16 = wide("avx512_vnni"), wide("avx512_bf16")
    return int8 if int8 == bf16 else f"{int8} / {bf16}"


def parse_args():
    root = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", type=Path, default=root / "build" / "bench", help="tessera build tree (Release)")
    p.add_argument("--threads", default=None, help="comma-separated thread counts (default 1,2)")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds per row (default 2)")
    p.add_argument("--paths", default="default,avx2", help="default and/or avx2 (TESSERA_CPU=avx2)")
    p.add_argument("--sections", default="speed,size", help="speed and/or size")
    p.add_argument("--models", default=",".join(MODELS), help="vit_b16 and/or clip_b32_image")
    p.add_argument("--batches", default=None, help="1 and/or 8 (default 1,8)")
    p.add_argument("--models-dir", type=Path, default=None,
                   help="where --write-models writes (default <build>/quantized-models)")
    p.add_argument("--min-time", type=float, default=None, help="torch: seconds per measurement (1.0)")
    p.add_argument("--out", type=Path, help="also write the markdown here")
    p.add_argument("--quick", action="store_true", help="CLIP batch 1, one thread, one round")
    o = p.parse_args()
    o.models = ["clip_b32_image"] if o.quick else o.models.split(",")
    o.batches = [int(b) for b in (o.batches or ("1" if o.quick else "1,8")).split(",")]
    o.threads = [int(t) for t in (o.threads or ("1" if o.quick else "1,2")).split(",")]
    o.rounds = o.rounds or (1 if o.quick else 2)
    o.paths = o.paths.split(",")
    o.sections = o.sections.split(",")
    o.min_time = o.min_time or (0.2 if o.quick else 1.0)
    o.bench_min_time = 0.05 if o.quick else 0.5
    o.models_dir = o.models_dir or o.build / "quantized-models"
    for name in o.models:
        if name not in MODELS:
            p.error(f"unknown model {name} (expected {', '.join(MODELS)})")
    return o


def main():
    opts = parse_args()
    missing = [str(opts.build / "bin" / MODELS[m][0]) for m in opts.models
               if not (opts.build / "bin" / MODELS[m][0]).is_file()]
    if missing:
        sys.exit(f"error: missing {', '.join(missing)}; {ct.BUILD_HINT}")
    load_before = os.getloadavg()[0]
    torch, torchvision = ct.import_torch()
    blas, openblas_threads = ct.blas_of(torch)
    flags = set((re.search(r"^flags\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M) or ["", ""])[1].split())

    def threads(t):
        torch.set_num_threads(t)
        if openblas_threads:
            openblas_threads(t)
    env = {"torch": torch, "torchvision": torchvision, "blas": blas, "threads": threads,
           "engine": torch.backends.quantized.engine, "best_path": best_path(flags),
           "load_before": load_before}
    parts = []
    if "speed" in opts.sections:
        parts.append(speed_section(env, opts))
    if "size" in opts.sections:
        threads(1)
        parts.append(size_section(env, opts))
    text = "\n\n".join(parts + machine_lines(env, opts)) + "\n"
    print(text)
    if opts.out:
        opts.out.write_text(text)


if __name__ == "__main__":
    main()
