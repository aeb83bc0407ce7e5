#!/usr/bin/python3
"""Bad inputs for quantized model files (docs/model-files.md, "Quantized weights").

Run from the repository root (standard library only):

    /usr/bin/python3 tests/bad_inputs/make_quantized_cases.py

writes tests/bad_inputs/models/<case>/model.safetensors (and config.json where the case needs
"quantization"): the good model's weights (tests/bad_inputs/model/model.safetensors) with one
weight stored int8 (I8 plus NAME.scale, symmetric per row, as tessera-quantize writes it) or
bfloat16, then one defect. The catalogue lines (option --model) are printed and returned;
make_bad_inputs.py adds them to catalogue.json. Deterministic.
"""

import json
import math
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_checksum_cases import join, read, split, write  # noqa: E402

CLASS = "malformed quantized weight"
WEIGHT = "layers.0.ffn.fc1.weight"  # [32, 16]


def tensors_of(raw):
    """The tensors of a safetensors file as {name: [dtype, shape, bytes]}, in the file's order."""
    header, data = split(raw)
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        out[name] = [entry["dtype"], entry["shape"], data[begin:end]]
    return out


def file_of(tensors):
    """A safetensors file's bytes holding `tensors`, in order of name."""
    header, data = {}, b""
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return join(header, data)


def f16_values(raw):
    return list(struct.unpack("<%de" % (len(raw) // 2), raw))


def int8_rows(values, rows, cols):
    """Symmetric per-row int8: the values in [-127, 127] and one scale per row (max |w| / 127)."""
    codes, scales = [], []
    for r in range(rows):
        row = values[r * cols:(r + 1) * cols]
        scale = max(abs(v) for v in row) / 127.0
        scales.append(scale)
        codes.extend(0 if scale == 0 else max(-127, min(127, round(v / scale))) for v in row)
    return codes, scales


def bf16_bytes(values):
    """bfloat16 by truncation of the float32 bits (the defects below do not depend on rounding)."""
    return b"".join(struct.pack("<H", struct.unpack("<I", struct.pack("<f", v))[0] >> 16)
                    for v in values)


def make_cases():
    good = tensors_of(read(os.path.join(HERE, "model", "model.safetensors")))
    with open(os.path.join(HERE, "model", "config.json")) as f:
        config = json.load(f)
    dtype, shape, raw = good[WEIGHT]
    assert dtype == "F16" and shape == [32, 16]
    rows, cols = shape
    codes, scales = int8_rows(f16_values(raw), rows, cols)
    lines = []

    def case(name, tensors, error, quantization=None):
        folder = os.path.join(HERE, "models", name)
        write(os.path.join(folder, "model.safetensors"), file_of(tensors))
        if quantization is not None:
            with open(os.path.join(folder, "config.json"), "w") as f:
                json.dump(dict(config, quantization=quantization), f, indent=1)
                f.write("\n")
        lines.append({"class": CLASS, "file": "models/" + name, "option": "--model",
                      "error": error})

    def int8(codes=codes, scales=scales, scale_dtype="F32", scale_shape=None):
        tensors = dict(good)
        tensors[WEIGHT] = ["I8", shape, struct.pack("<%db" % len(codes), *codes)]
        if scales is not None:
            fmt = "<%d%s" % (len(scales), "f" if scale_dtype == "F32" else "e")
            tensors[WEIGHT + ".scale"] = [scale_dtype, scale_shape or [len(scales)],
                                          struct.pack(fmt, *scales)]
        return tensors

    case("int8_without_scale", int8(scales=None),
         "tensor '%s' is I8 but has no scale tensor '%s.scale' (F32 [32])" % (WEIGHT, WEIGHT))
    case("int8_scale_wrong_shape", int8(scales=scales[:31]),
         "scale '%s.scale' is F32 [31], expected F32 [32]" % WEIGHT)
    case("int8_scale_f16", int8(scale_dtype="F16"),
         "scale '%s.scale' is F16 [32], expected F32 [32]" % WEIGHT)
    case("int8_scale_nan", int8(scales=scales[:5] + [math.nan] + scales[6:]),
         "scale '%s.scale' holds nan at row 5, expected a finite value >= 0" % WEIGHT)
    case("int8_scale_negative", int8(scales=scales[:2] + [-scales[2]] + scales[3:]),
         "scale '%s.scale' holds %s at row 2" % (WEIGHT, "%g" % -struct.unpack("<f", struct.pack("<f", scales[2]))[0]))
    case("int8_value_minus_128", int8(codes=codes[:40] + [-128] + codes[41:]),
         "tensor '%s' holds the int8 value -128 at flat index 40" % WEIGHT)

    # int8 where a weight must stay fp32 (a norm), and a scale of no int8 weight
    norm = dict(good)
    norm["layers.0.norm1.weight"] = ["I8", [16], bytes(16)]
    case("int8_norm", norm, "tensor 'layers.0.norm1.weight' is I8, but it must stay fp32")
    stray = dict(good)
    stray[WEIGHT + ".scale"] = ["F32", [rows], struct.pack("<%df" % rows, *scales)]
    case("scale_of_no_int8_weight", stray,
         "tensor '%s.scale' is a scale, but '%s' is not an I8 tensor (it is F16)" % (WEIGHT, WEIGHT))

    # a bf16 model (config.json records it): a non-finite weight, and a norm left in F16
    values = f16_values(raw)
    bf16 = {name: ["F32", s, struct.pack("<%df" % (len(b) // 2), *f16_values(b))]
            for name, (d, s, b) in good.items()}
    bf16[WEIGHT] = ["BF16", shape, bf16_bytes(values[:7] + [math.inf] + values[8:])]
    case("bf16_weight_infinite", bf16,
         "tensor '%s' holds a non-finite value (inf) at flat index 7" % WEIGHT, "bf16")
    f16_norm = dict(bf16)
    f16_norm[WEIGHT] = ["BF16", shape, bf16_bytes(values)]
    f16_norm["final_norm.weight"] = good["final_norm.weight"]
    case("bf16_model_f16_norm", f16_norm,
         "tensor 'final_norm.weight' is F16, but in a quantized model it must stay fp32", "bf16")

    for line in lines:
        print(json.dumps(line))
    return lines


if __name__ == "__main__":
    make_cases()
