#!/usr/bin/python3
"""Bad inputs for the checksum of model files, and the byte surgery of the checksum tests.

Run from the repository root (standard library only):

    /usr/bin/python3 tests/bad_inputs/make_checksum_cases.py

writes tests/bad_inputs/models/<case>/model.safetensors for each case below: the good model's
weights (tests/bad_inputs/model/model.safetensors, written by PyTorch, without a checksum) with
the checksum "tessera.crc32" added as tessera writes it, then one defect. The catalogue lines
(option --model) are printed; the lead copies them into catalogue.json. Deterministic.

    make_checksum_cases.py --flip SRC DST     copies SRC to DST with one bit of the data section
                                              flipped (bit 0 of its middle byte)
    make_checksum_cases.py --strip SRC DST    copies SRC to DST without its checksum entry

apps/checksum_tests.cmake uses these two on files tessera-train wrote.

The checksum (docs/model-files.md, "Checksum"): 8 lowercase hex digits of the CRC-32 (zlib) of
the data section, then of each tensor's name, dtype, shape ("2,3") and data_offsets ("0,24"),
in order of name, then of each other metadata key and value, in order of key; every name, key
and value followed by one NUL byte.
"""

import json
import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = "tessera.crc32"


def split(raw):
    """The header (a dict) and the data section of a safetensors file's bytes."""
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n].decode("utf-8")), raw[8 + n:]


def join(header, data):
    """A safetensors file's bytes: the header compact and padded with spaces to 8 bytes."""
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def checksum(header, data):
    """The value of "tessera.crc32" for these contents."""
    utf8 = lambda s: s.encode("utf-8")  # noqa: E731
    crc = zlib.crc32(data)
    for name in sorted((k for k in header if k != "__metadata__"), key=utf8):
        entry = header[name]
        fields = [name, entry["dtype"], ",".join(str(d) for d in entry["shape"]),
                  "%d,%d" % tuple(entry["data_offsets"])]
        crc = zlib.crc32(b"".join(utf8(f) + b"\0" for f in fields), crc)
    metadata = header.get("__metadata__", {})
    for key in sorted((k for k in metadata if k != KEY), key=utf8):
        crc = zlib.crc32(utf8(key) + b"\0" + utf8(metadata[key]) + b"\0", crc)
    return "%08x" % crc


def with_checksum(raw):
    header, data = split(raw)
    header.setdefault("__metadata__", {})[KEY] = checksum(header, data)
    return join(header, data)


def flip_data_bit(raw, offset=None, bit=0):
    header, data = split(raw)
    start = len(raw) - len(data)
    at = start + (len(data) // 2 if offset is None else offset)
    return raw[:at] + bytes([raw[at] ^ (1 << bit)]) + raw[at + 1:]


def read(file):
    with open(file, "rb") as f:
        return f.read()


def write(file, raw):
    os.makedirs(os.path.dirname(os.path.abspath(file)), exist_ok=True)
    with open(file, "wb") as f:
        f.write(raw)


def make_cases():
    good = with_checksum(read(os.path.join(HERE, "model", "model.safetensors")))
    header, data = split(good)
    lines = []

    def case(name, raw, error, klass):
        write(os.path.join(HERE, "models", name, "model.safetensors"), raw)
        lines.append({"class": klass, "file": "models/" + name, "option": "--model",
                      "error": error})

    # one bit of a weight (a low mantissa bit: the value stays finite and plausible)
    case("checksum_flipped_weight", flip_data_bit(good, offset=1000, bit=0),
         "checksum mismatch: metadata 'tessera.crc32' is", "checksum mismatch")

    # one bit of the tensor table, in a name: 'final_norm.bias' -> 'final_norm.cias' is still
    # a well-formed file (a flipped dimension or offset would break its structure instead)
    at = good.index(b'"final_norm.bias"') + len(b'"final_norm.')
    case("checksum_renamed_tensor", good[:at] + bytes([good[at] ^ 1]) + good[at + 1:],
         "checksum mismatch: metadata 'tessera.crc32' is", "checksum mismatch")

    # the entry itself damaged: not 8 lowercase hex digits
    damaged = json.loads(json.dumps(header))
    value = damaged["__metadata__"][KEY]
    damaged["__metadata__"][KEY] = value[:3] + "G" + value[4:]
    case("checksum_not_hex", join(damaged, data),
         "metadata 'tessera.crc32' is '%s', expected 8 lowercase hex digits"
         % damaged["__metadata__"][KEY], "malformed checksum")

    for line in lines:
        print(json.dumps(line))
    return lines


def main(argv):
    if len(argv) == 4 and argv[1] in ("--flip", "--strip"):
        raw = read(argv[2])
        if argv[1] == "--flip":
            raw = flip_data_bit(raw)
        else:
            header, data = split(raw)
            header.get("__metadata__", {}).pop(KEY, None)
            raw = join(header, data)
        write(argv[3], raw)
    elif len(argv) == 1:
        make_cases()
    else:
        sys.exit("usage: make_checksum_cases.py [--flip SRC DST | --strip SRC DST]")


if __name__ == "__main__":
    main(sys.argv)
