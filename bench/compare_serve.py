#!/usr/bin/env python3
"""tessera-serve under load (bench/serve_load) against tessera-encode on the same inputs in one
batch, the batching policies' latency, and the server's memory over a long run, in one go.

For each model (--models):

- levels: a fresh `tessera-serve --model M --port 0 --cache-mb 0 --http-threads 256`, a short
  unreported warm-up (8 clients, --warmup-seconds), then serve_load at each of --clients (1, 8,
  64, 256) for --seconds each, with each body of --bodies (json: the files in base64; form:
  multipart/form-data, the files as they are): one sample a request, text, image and audio in
  turn, from the synthetic world; requests/s, samples/s, P50/P95/P99/max, errors, lost
  requests, the server's resident memory, the mean batch the server encoded (its /metrics,
  before and after), and the CPU time a sample of the server and of serve_load (which share
  the machine's cores);
- encode: tessera-encode on the inputs serve_load sends first (request k: modality k mod 3,
  input k mod the pool's size, a caption with " #k" appended, as serve_load does), --encode-samples
  of them as ONE batch in one invocation, --repeat R: samples/s from its own stage timings
  (decode + preprocess + encode, the median run; model loading and writing are not in them),
  and, as a check, from wall clocks: (wall(N samples) - wall(1 sample)) / (N - 1), which
  subtracts the loading and start-up. Each level's samples/s is given as a ratio to it;
- policy: a fresh server for each --max-wait-ms in --waits (0 is text-embeddings-inference's
  policy: no waiting), warmed up, then 1 client (low load) and 64 clients (high load) for
  --seconds each: P50 and P99;
- memory (the first model only, unless --memory-models): a fresh server, 64 clients for
  --memory-seconds (300), its VmRSS read from /proc/PID/status every 5 s: start, max, end, and
  the least-squares slope over the last 4 minutes (the last 80 % of a shorter run).

Models: `imagebind-fixture` is the ImageBind test fixture (tests/data/pretrained/imagebind/model,
E 16, towers 8 to 24 wide, with OpenAI's BPE file beside it, as tests/pretrained_fixture.hpp makes
it): the model costs little, HTTP, decoding and preprocessing dominate. `vit-b32-shaped` is
tessera's own encoder at ViT-B/32's size (D 768, 12 layers, 12 heads, F 3072, E 512; 224 px
images in 32 px patches: 49 tokens; 128-mel audio in 4-frame patches: 25 tokens a second; a
320-token BPE), trained for one step of 2 pairs by tessera-train on the world: its weights are
as good as random, its cost is a real model's. Inputs: `tessera-synth --per-combination 1
--image-size 224` (192 items: 224 px PNGs, 1 s WAVs, captions), or --inputs DIR.

Prints one markdown table per part (progress on stderr) and writes every raw serve_load JSON
line and timing to --json. Run from the repository, on a quiet machine:

    /usr/bin/python3 bench/compare_serve.py --build build/loadbench [--seconds 10]
        [--memory-seconds 300] [--models imagebind-fixture,vit-b32-shaped] [--json FILE]

(a build with -DTESSERA_BUILD_APPS=ON -DTESSERA_BUILD_BENCHMARKS=ON and cpp-httplib; targets
tessera-serve tessera-encode tessera-synth tessera-train serve_load)."""

import argparse, datetime, json, os, re, shutil, signal, statistics, subprocess, sys, threading, time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = ["imagebind-fixture", "vit-b32-shaped"]
VIT_B32_SHAPED = {
    "hidden_dim": 768, "num_layers": 12, "num_heads": 12, "ffn_dim": 3072, "embed_dim": 512,
    "activation": "gelu", "norm": "layernorm", "position": "learned", "pooling": "cls",
    "text": {"vocab_size": 320, "max_tokens": 32},
    "image": {"size": 224, "patch": 32},
    "audio": {"n_mels": 128, "patch_frames": 4, "max_tokens": 64},
}
MIX = ["text", "image", "audio"]
RSS_EVERY_S = 5.0
SLOPE_WINDOW_S = 240.0


def log(*what):
    print(*what, file=sys.stderr, flush=True)


def run(args, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, **kw)


# ---- inputs and models ----------------------------------------------------------------------

def make_world(bin_dir, work):
    world = work / "world"
    if not (world / "captions.txt").exists():
        log(f"tessera-synth -> {world}")
        run([bin_dir / "tessera-synth", "--out", world, "--per-combination", 1, "--image-size", 224])
    return world


def make_model(name, bin_dir, work, world):
    out = work / name
    if name == "imagebind-fixture":
        if not (out / "config.json").exists():
            shutil.copytree(ROOT / "tests/data/pretrained/imagebind/model", out)
            shutil.copy(ROOT / "tests/data/text/clip_tokenizer/bpe_simple_vocab_16e6.txt.gz", out)
        return out
    if name == "vit-b32-shaped":
        config = work / "vit-b32-shaped.json"
        config.write_text(json.dumps(VIT_B32_SHAPED, indent=1) + "\n")
        if not (out / "model.safetensors").exists():
            log(f"tessera-train (one step) -> {out}")
            run([bin_dir / "tessera-train", "--data", world, "--config", config, "--out", out,
                 "--steps", 1, "--pairs", 2, "--warmup", 0])
            (out / "checkpoint.safetensors").unlink(missing_ok=True)  # 1 GB of AdamW state, unused
        return out
    sys.exit(f"compare_serve.py: unknown model {name} (known: {', '.join(MODELS)})")


def world_inputs(world):
    """The inputs as serve_load reads them: images and WAVs sorted by path, captions' lines."""
    files = sorted(p for p in world.rglob("*") if p.is_file())
    return {"image": [p for p in files if p.suffix in (".png", ".jpg")],
            "audio": [p for p in files if p.suffix == ".wav"],
            "text": [line for line in (world / "captions.txt").read_text().splitlines() if line]}


# ---- the server -----------------------------------------------------------------------------

class Server:
    """tessera-serve on a free port; stop() sends SIGTERM and returns its exit status."""

    def __init__(self, bin_dir, model, log_file, wait_ms=None):
        args = [bin_dir / "tessera-serve", "--model", model, "--port", 0, "--cache-mb", 0,
                "--http-threads", 256]
        if wait_ms is not None:
            args += ["--max-wait-ms", wait_ms]
        self.log = open(log_file, "a")
        self.log.write(f"$ {' '.join(map(str, args))}\n")
        self.log.flush()
        self.proc = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.lines = []
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"listening on (http://[\d.]+:(\d+))", line)
            if m:
                self.url = m.group(1)
                break
        else:
            raise RuntimeError(f"tessera-serve exited ({self.proc.wait()}) before listening; see {log_file}")
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()
        self.pid = self.proc.pid

    def batch_counters(self):
        """(batches, samples) encoded so far, from /metrics' tessera_batch_size histogram."""
        text = urllib.request.urlopen(self.url + "/metrics", timeout=10).read().decode()
        count = re.search(r"^tessera_batch_size_count(?:\{\})? (\S+)", text, re.M)
        total = re.search(r"^tessera_batch_size_sum(?:\{\})? (\S+)", text, re.M)
        return (float(count.group(1)) if count else 0.0, float(total.group(1)) if total else 0.0)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        status = self.proc.wait(timeout=60)
        self.reader.join(timeout=5)
        self.log.write("".join(self.lines))
        self.log.close()
        return status


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load(bin_dir, server, world, clients, seconds, body="json"):
    """serve_load against the server: its JSON line, with the mean batch the server encoded."""
    before = server.batch_counters()
    done = subprocess.run([str(bin_dir / "serve_load"), "--url", server.url, "--clients", str(clients),
                           "--seconds", str(seconds), "--inputs", str(world), "--server-pid", str(server.pid),
                           "--body", body],
                          capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"serve_load exited {done.returncode} without a report: {done.stderr.strip()}")
    report = json.loads(lines[-1])
    after = server.batch_counters()
    batches = after[0] - before[0]
    report["server_batches"] = batches
    report["server_mean_batch"] = (after[1] - before[1]) / batches if batches else 0.0
    report["exit_status"] = done.returncode
    return report


def errors_of(r):
    return r["transport_failures"] + sum(n for code, n in r["statuses"].items() if code != "200")


# ---- the parts ------------------------------------------------------------------------------

def part_levels(o, bin_dir, model, world, logs):
    server = Server(bin_dir, model, logs)
    load(bin_dir, server, world, 8, o.warmup_seconds)
    rows = []
    for clients in o.clients:
        for body in o.bodies:
            r = load(bin_dir, server, world, clients, o.seconds, body)
            log(f"  {clients} clients, {body}: {r['samples_per_second']:.1f} samples/s, "
                f"P99 {r['latency_ms']['p99']:.1f} ms, errors {errors_of(r)}, lost {r['lost']}")
            rows.append(r)
    status = server.stop()
    return {"runs": rows, "server_exit_status": status}


def encode_args(inputs, n):
    """tessera-encode's sample options for serve_load's first n requests, one sample each."""
    args = []
    for k in range(n):
        m = MIX[k % len(MIX)]
        pool = inputs[m]
        value = f"{pool[k % len(pool)]} #{k}" if m == "text" else pool[k % len(pool)]
        args += (["--next"] if args else []) + [f"--{m}", value]
    return args


def part_encode(o, bin_dir, model, world, work):
    inputs = world_inputs(world)
    n = o.encode_samples
    exe = [bin_dir / "tessera-encode", "--model", model, "--out", work / "encoded.safetensors"]
    stages = json.loads(run(exe + encode_args(inputs, n) + ["--repeat", o.encode_repeat]).stdout)
    stage_ms = {k: v["median_ms"] for k, v in stages["stages"].items()}
    batch_s = sum(stage_ms.values()) / 1e3

    def wall(count):
        best = float("inf")
        for _ in range(o.encode_repeat):
            start = time.perf_counter()
            run(exe + encode_args(inputs, count))
            best = min(best, time.perf_counter() - start)
        return best
    wall_1, wall_n = wall(1), wall(n)
    result = {"samples": n, "repeat": o.encode_repeat, "threads": stages["threads"], "stage_median_ms": stage_ms,
              "samples_per_second": n / batch_s, "wall_1_sample_s": wall_1, "wall_n_samples_s": wall_n,
              "samples_per_second_wall": (n - 1) / (wall_n - wall_1)}
    log(f"  tessera-encode: {n} samples in one batch: {result['samples_per_second']:.1f} samples/s (stages), "
        f"{result['samples_per_second_wall']:.1f} (wall, minus a 1-sample run of {wall_1:.2f} s)")
    return result


def part_policy(o, bin_dir, model, world, logs):
    rows = []
    for wait in o.waits:
        server = Server(bin_dir, model, logs, wait_ms=wait)
        load(bin_dir, server, world, 8, o.warmup_seconds)
        low = load(bin_dir, server, world, 1, o.seconds)
        high = load(bin_dir, server, world, 64, o.seconds)
        status = server.stop()
        log(f"  --max-wait-ms {wait}: 1 client P99 {low['latency_ms']['p99']:.1f} ms, "
            f"64 clients P99 {high['latency_ms']['p99']:.1f} ms")
        rows.append({"max_wait_ms": wait, "low": low, "high": high, "server_exit_status": status})
    return rows


def part_memory(o, bin_dir, model, world, logs):
    server = Server(bin_dir, model, logs)
    samples, stop = [], threading.Event()

    def sample():
        start = time.monotonic()
        while True:
            samples.append((time.monotonic() - start, rss_mb(server.pid)))
            if stop.wait(RSS_EVERY_S):
                samples.append((time.monotonic() - start, rss_mb(server.pid)))
                return
    sampler = threading.Thread(target=sample)
    sampler.start()
    r = load(bin_dir, server, world, 64, o.memory_seconds)
    stop.set()
    sampler.join()
    status = server.stop()
    duration = samples[-1][0]
    window = min(SLOPE_WINDOW_S, 0.8 * duration)
    tail = [(t, m) for t, m in samples if t >= duration - window]
    slope = 0.0
    if len(tail) >= 2:
        slope = statistics.linear_regression([t for t, _ in tail], [m for _, m in tail]).slope * 60
    result = {"load": r, "rss_mb": samples, "start_mb": samples[0][1], "max_mb": max(m for _, m in samples),
              "end_mb": samples[-1][1], "slope_window_s": window, "slope_mb_per_min": slope,
              "server_exit_status": status}
    log(f"  memory: {result['start_mb']:.1f} -> max {result['max_mb']:.1f} -> {result['end_mb']:.1f} MB, "
        f"slope {slope:+.3f} MB/min over the last {window:.0f} s")
    return result


# ---- tables ---------------------------------------------------------------------------------

def ms(x):
    return f"{x:.1f} ms" if x < 100 else f"{x:.0f} ms"


def print_levels(name, levels, encode):
    enc = encode["samples_per_second"]
    print(f"\n**Load, {name}** (tessera-encode, {encode['samples']} samples in one batch: {enc:.1f} samples/s; "
          f"{encode['samples_per_second_wall']:.1f} by wall clock minus a 1-sample run; "
          f"server exit status {levels['server_exit_status']})\n")
    print("| clients | body | requests/s | samples/s | / tessera-encode | mean batch | P50 | P95 | P99 | max "
          "| errors | lost | CPU ms a sample: server, serve_load | server RSS start -> end (peak) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in levels["runs"]:
        lat, rss = r["latency_ms"], r.get("server_rss_kb", {})
        done = r["samples_per_second"] * r["seconds"]
        cpu = (f"{1000 * r['server_cpu_seconds'] / done:.2f}, {1000 * r['client_cpu_seconds'] / done:.2f}"
               if done and "server_cpu_seconds" in r else "-")
        print(f"| {r['clients']} | {r.get('body', 'json')} | {r['requests_per_second']:.0f} | "
              f"{r['samples_per_second']:.1f} | {r['samples_per_second'] / enc:.2f} | {r['server_mean_batch']:.1f} | "
              f"{ms(lat['p50'])} | {ms(lat['p95'])} | {ms(lat['p99'])} | {ms(lat['max'])} | {errors_of(r)} | "
              f"{r['lost']} | {cpu} | {rss.get('start', 0) / 1024:.0f} -> {rss.get('end', 0) / 1024:.0f} "
              f"({rss.get('peak', 0) / 1024:.0f}) MB |")


def print_policy(name, rows):
    print(f"\n**Batching policy, {name}** (1 client: low load; 64 clients: high load)\n")
    print("| --max-wait-ms | 1 client: req/s | P50 | P99 | 64 clients: req/s | mean batch | P50 | P99 | errors, lost |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        lo, hi = row["low"], row["high"]
        print(f"| {row['max_wait_ms']} | {lo['requests_per_second']:.0f} | {ms(lo['latency_ms']['p50'])} | "
              f"{ms(lo['latency_ms']['p99'])} | {hi['requests_per_second']:.0f} | {hi['server_mean_batch']:.1f} | "
              f"{ms(hi['latency_ms']['p50'])} | {ms(hi['latency_ms']['p99'])} | "
              f"{errors_of(lo) + errors_of(hi)}, {lo['lost'] + hi['lost']} |")


def print_memory(name, m):
    r = m["load"]
    print(f"\n**Memory, {name}** (64 clients, VmRSS every {RSS_EVERY_S:.0f} s; server exit status "
          f"{m['server_exit_status']})\n")
    print("| seconds | requests answered | errors, lost | RSS start | max | end | slope, last "
          f"{m['slope_window_s']:.0f} s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| {r['seconds']:.0f} | {r['answered']} | {errors_of(r)}, {r['lost']} | {m['start_mb']:.1f} MB | "
          f"{m['max_mb']:.1f} MB | {m['end_mb']:.1f} MB | {m['slope_mb_per_min']:+.2f} MB/min |")


def machine():
    lscpu = run(["lscpu"]).stdout
    name = re.search(r"Model name:\s*(.+)", lscpu)
    flags = open("/proc/cpuinfo").read().split("flags", 1)[1].split("\n", 1)[0].split()
    return {"cpu": name.group(1).strip() if name else "?", "vcpus": os.cpu_count(),
            "flags": [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16") if f in flags],
            "load_average": os.getloadavg(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat()}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", type=Path, default=ROOT / "build" / "loadbench", help="the build tree (its bin/)")
    p.add_argument("--work", type=Path, help="where the world, models and logs go (default BUILD/compare-serve)")
    p.add_argument("--inputs", type=Path, help="a synthetic world to use instead of making one")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    p.add_argument("--parts", default="levels,encode,policy,memory", help="comma-separated parts to run")
    p.add_argument("--clients", default="1,8,64,256", help="client counts of the levels")
    p.add_argument("--bodies", default="json,form",
                   help="the levels' request bodies: json (files in base64) and/or form (multipart/form-data)")
    p.add_argument("--seconds", type=float, default=10, help="each load run's length")
    p.add_argument("--warmup-seconds", type=float, default=2, help="unreported load on each fresh server")
    p.add_argument("--waits", default="0,2,10", help="the --max-wait-ms values compared")
    p.add_argument("--memory-seconds", type=float, default=300, help="the memory run's length")
    p.add_argument("--memory-models", help="the models of the memory run (default: the first of --models)")
    p.add_argument("--encode-samples", type=int, default=96, help="samples in tessera-encode's one batch")
    p.add_argument("--encode-repeat", type=int, default=3, help="tessera-encode's runs (--repeat) and wall timings")
    p.add_argument("--json", type=Path, help="the raw results (default WORK/compare_serve.json)")
    o = p.parse_args()
    o.clients = [int(c) for c in o.clients.split(",")]
    o.bodies = o.bodies.split(",")
    if not set(o.bodies) <= {"json", "form"}:
        p.error("--bodies: json and/or form")
    o.waits = [int(w) for w in o.waits.split(",")]
    models = o.models.split(",")
    memory_models = o.memory_models.split(",") if o.memory_models else models[:1]
    parts = set(o.parts.split(","))
    bin_dir = o.build / "bin"
    work = o.work or o.build / "compare-serve"
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "servers.log"
    world = o.inputs or make_world(bin_dir, work)

    results = {"machine": machine(), "options": {k: str(v) for k, v in vars(o).items()}, "world": str(world),
               "models": {}}
    log(f"{results['machine']['cpu']}, load average {results['machine']['load_average']}")
    for name in models:
        model = make_model(name, bin_dir, work, world)
        log(f"{name} ({model})")
        res = results["models"].setdefault(name, {"dir": str(model)})
        if "encode" in parts or "levels" in parts:
            res["encode"] = part_encode(o, bin_dir, model, world, work)
        if "levels" in parts:
            res["levels"] = part_levels(o, bin_dir, model, world, logs)
        if "policy" in parts:
            res["policy"] = part_policy(o, bin_dir, model, world, logs)
        if "memory" in parts and name in memory_models:
            res["memory"] = part_memory(o, bin_dir, model, world, logs)
    results["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    out = o.json or work / "compare_serve.json"
    out.write_text(json.dumps(results, indent=1) + "\n")

    m = results["machine"]
    print(f"{m['date'][:16]} UTC, {m['cpu']}, {m['vcpus']} vCPUs ({' '.join(m['flags'])}), load average before "
          f"{m['load_average'][0]:.2f}; --seconds {o.seconds:g}; raw results: {out}")
    for name, res in results["models"].items():
        if "levels" in res:
            print_levels(name, res["levels"], res["encode"])
        elif "encode" in res:
            e = res["encode"]
            print(f"\n**tessera-encode, {name}**: {e['samples']} samples in one batch, {e['samples_per_second']:.1f} "
                  f"samples/s ({e['samples_per_second_wall']:.1f} by wall clock)")
        if "policy" in res:
            print_policy(name, res["policy"])
        if "memory" in res:
            print_memory(name, res["memory"])


if __name__ == "__main__":
    sys.exit(main())
