#!/usr/bin/env python3
"""Writes the generated part of tessera's fuzz seed corpus (fuzz/corpus/<target>/).

The other seeds are small files copied from tests/data and examples/point_cloud/data. Every
seed is a valid input, so that mutations start from every branch of the parser. Run from
anywhere: `python3 fuzz/corpus/make_corpus.py`.
"""
import json
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes), packed in order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def tessera_crc32(tensors, metadata):
    """The "tessera.crc32" entry of a file save_safetensors() packs (io/safetensors.hpp,
    "The checksum"): the data section, then each tensor's name, dtype, shape and offsets, then
    each metadata entry, NUL after each field, tensors and entries in order of name."""
    data, table, offsets = b"", b"", {}
    for name, dtype, shape, raw in tensors:
        offsets[name] = f"{len(data)},{len(data) + len(raw)}"
        data += raw
    for name, dtype, shape, raw in sorted(tensors, key=lambda t: t[0].encode()):
        for field in (name, dtype, ",".join(map(str, shape)), offsets[name]):
            table += field.encode() + b"\0"
    for key in sorted(metadata, key=lambda k: k.encode()):
        table += key.encode() + b"\0" + metadata[key].encode() + b"\0"
    return "%08x" % zlib.crc32(data + table)


def search_index(files, failed, embeddings, dtype="F32", checksum=False):
    """An index file as search_index.hpp's write_search_index writes it: the embeddings
    [len(files), E] and the tables in the metadata. files: (path, modality, size, mtime_ns);
    failed: the same and an error."""
    def record(path, modality, size, mtime_ns):
        return {"path": path, "modality": modality, "size": size, "mtime_ns": mtime_ns}

    def dump(value):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)

    model = {"dir": "models/imagebind",
             "files": {"config.json": {"size": 1043, "mtime_ns": 1764758400123456789},
                       "model.safetensors": {"size": 812544, "mtime_ns": 1764758400987654321}}}
    metadata = {"tessera.index.version": "1",
                "tessera.index.model": dump(model),
                "tessera.index.files": dump([record(*f) for f in files]),
                "tessera.index.failed": dump([dict(record(*f[:4]), error=f[4]) for f in failed])}
    width = len(embeddings[0]) if embeddings else 16
    packed = {"F32": "<%df", "F16": "<%de"}[dtype] % (len(embeddings) * width)
    raw = struct.pack(packed, *[v for row in embeddings for v in row])
    tensors = [("embeddings", dtype, [len(files), width], raw)]
    if checksum:
        metadata["tessera.crc32"] = tessera_crc32(tensors, metadata)
    return safetensors(tensors, metadata)


def y4m(header, frames, frame_bytes):
    out = ("YUV4MPEG2 " + header + "\n").encode()
    for f in range(frames):
        out += b"FRAME\n" + bytes((f * 37 + i * 11) % 256 for i in range(frame_bytes))
    return out


def main():
    f32 = struct.pack("<6f", 0.5, -1.0, 2.0, 0.0, 1e-3, 3.25)
    write("safetensors", "f32_matrix.safetensors",
          safetensors([("w", "F32", [2, 3], f32)], {"format": "pt"}))
    write("safetensors", "all_dtypes.safetensors", safetensors([
        ("a_f64", "F64", [2], struct.pack("<2d", 1.5, -2.0)),
        ("b_f16", "F16", [2, 1], struct.pack("<2H", 0x3C00, 0xC000)),
        ("c_bf16", "BF16", [2], struct.pack("<2H", 0x3F80, 0x4040)),
        ("d_i64", "I64", [2], struct.pack("<2q", -5, 7)),
        ("e_i32", "I32", [1, 2], struct.pack("<2i", 3, -4)),
        ("f_i16", "I16", [2], struct.pack("<2h", 1, 2)),
        ("g_i8", "I8", [3], struct.pack("<3b", -1, 0, 1)),
        ("h_u8", "U8", [3], bytes([0, 128, 255])),
        ("i_bool", "BOOL", [2], bytes([0, 1])),
        ("j_scalar", "F32", [], struct.pack("<f", 4.0)),
        ("k_empty", "F32", [0, 3], b""),
    ]))
    write("safetensors", "sample.safetensors", safetensors([
        ("text_ids", "I64", [3], struct.pack("<3q", 1, 2, 3)),
        ("audio", "F32", [2, 2], struct.pack("<4f", 0.1, 0.2, 0.3, 0.4)),
    ]))

    vocab = {"!": 0, "a": 1, "b": 2, "\u0120": 3, "\u0120a": 4, "ab": 5, "\u00e9": 6,
             "<|endoftext|>": 7, "th": 8, "the</w>": 9}
    write("vocab", "vocab.json", json.dumps(vocab, ensure_ascii=False, indent=1))
    write("vocab", "escaped.json", json.dumps(vocab, ensure_ascii=True))
    write("vocab", "one.json", '{"\\ud83d\\ude00": 0, "\\n": 1, "x": 3}')
    write("merges", "merges.txt", "#version: 0.2\n\u0120 a\na b\nt h\nth e</w>\n\u00e9 \u00e9\n")
    write("merges", "crlf.txt", "\ufeffa b\r\n\r\nt\th\r\n")
    write("bpe", "english.txt", "Hello world, this is the thing's 2026 test:  spaces\tand\nlines.")
    write("bpe", "unicode.txt", "Caf\u00e9 \u00fcber \u4e2d\u6587 \U0001F600 \u0345 \u2028 na\u00efve")
    write("bpe", "special.txt", "<|startoftext|>a photo<|endoftext|> 've 'll 's 123 4567")

    write("y4m", "c420jpeg.y4m", y4m("W8 H6 F25:1 Ip A1:1 C420jpeg", 2, 8 * 6 + 2 * 4 * 3))
    write("y4m", "c444_full.y4m", y4m("W3 H2 F30000:1001 C444 XCOLORRANGE=FULL", 2, 3 * 2 * 3))
    write("y4m", "c422.y4m", y4m("W5 H3 F1:1 C422", 1, 5 * 3 + 2 * 3 * 3))
    write("y4m", "mono.y4m", y4m("W4 H4 F10:1 Cmono", 3, 16))
    write("y4m", "default_colorspace.y4m", y4m("W2 H2 F5:2", 1, 4 + 2))
    write("y4m", "frame_params.y4m", b"YUV4MPEG2 W2 H2 F1:1 C420paldv\nFRAME Ixyz\n" + bytes(6))

    write("point_cloud", "comma.xyz", "# a comment\n0.5, -1, 2\r\n\n1 2 3\n  -0.25\t0\t1e-3\n")
    write("point_cloud", "one_point.xyz", "1 1 1\n")

    # pretrained_config: the selector byte, then each fixture's config file
    data = os.path.join(HERE, "..", "..", "tests", "data", "pretrained")
    for kind, selector, name in (("hf_clip", 0, "config.json"),
                                 ("open_clip", 1, "open_clip_config.json"),
                                 ("imagebind", 2, "config.json"),
                                 ("towers_torchvision", 3, "config.json"),
                                 ("hf_clip", 4, "preprocessor_config.json"),
                                 ("open_clip", 5, "open_clip_config.json")):
        with open(os.path.join(data, kind, "model", name), "rb") as f:
            write("pretrained_config", f"{selector}_{kind}_{name}", bytes([selector]) + f.read())
    # gzip: a two-member stream of a tiny merges file, and an empty member
    import gzip as gz
    merges = "\"bpe_simple_vocab_16e6.txt#version: 0.2\ni n\nt h\nth e</w>\na n\n"
    write("gzip", "merges.txt.gz", gz.compress(merges.encode(), mtime=0) + gz.compress(b"", mtime=0))

    # search_index: index files as tessera-search writes them; without the checksum (which a
    # mutation breaks at once) but for one, so that mutations reach the tables
    three = [("clip.y4m", "video", 1234, 1764758400000000001),
             ("photos/dog.png", "image", 5321, 1764758400500000000),
             ("sounds/bark.wav", "audio", 88244, -1000)]
    rows = [[0.6, 0.8, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.5, -0.5, 0.5, -0.5]]
    broken = [("broken.png", "image", 16, 1764758400000000000,
               "photos/broken.png: unsupported image format (unknown signature)")]
    write("search_index", "three_files.safetensors", search_index(three, broken, rows))
    write("search_index", "checksummed.safetensors", search_index(three, broken, rows, checksum=True))
    write("search_index", "empty.safetensors", search_index([], [], []))
    write("search_index", "f16_unicode.safetensors", search_index(
        [("caf\u00e9/\u4e2d \"q\".jpg", "image", 0, 0), ("z.wav", "audio", 2**63, 2**62)], [],
        [[1.0, 0.0], [0.0, -1.0]], dtype="F16"))


if __name__ == "__main__":
    main()
