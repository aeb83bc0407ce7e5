"""Runs tessera-classify --json (the command after the arguments) and checks its output: one
JSON object whose results hold, for each of the N inputs, probabilities over the labels that
sum to 1 and a "top" list in decreasing order.

Usage: python3 check_classify_json.py N <tessera-classify> <arguments>...
"""
import json
import math
import subprocess
import sys

SUM_TOLERANCE = 1e-5  # float32 probabilities of a few labels, each rounded once

expected_inputs = int(sys.argv[1])
run = subprocess.run(sys.argv[2:], capture_output=True, text=True, check=False)
if run.returncode != 0:
    sys.exit(f"exit status {run.returncode}: {run.stderr}")
out = json.loads(run.stdout)
labels = out["labels"]
assert len(out["results"]) == expected_inputs, out["results"]
for result in out["results"]:
    p = result["probabilities"]
    assert len(p) == len(labels), result
    assert all(0 <= x <= 1 for x in p), p
    assert math.isclose(sum(p), 1, abs_tol=SUM_TOLERANCE), f"{result['input']}: sum {sum(p)}"
    top = [t["probability"] for t in result["top"]]
    assert top == sorted(top, reverse=True), top
    assert top[0] == max(p)
print(f"ok: {expected_inputs} inputs, {len(labels)} labels, each row sums to 1")
