#!/usr/bin/python3
"""Writes tests/bad_inputs/: one small file per class of bad input, and the catalogue.

Run from the repository root with Debian's PyTorch (for the model's weights):

    /usr/bin/python3 tests/bad_inputs/make_bad_inputs.py

It rewrites everything under tests/bad_inputs/ but this script:

- model/             a good model (config.json, model.safetensors, vocab.json, merges.txt) with
                     text, image, audio and video, tiny. Every bad file is fed to it.
- models/<case>/     model directories with one defect each: only the defective file is
                     kept (and config.json where the case needs its own); the harness copies
                     the other files of model/ beside it;
- pretrained/<case>/ pretrained model directories with one defect each (make_pretrained_cases.py):
                     the entry's "base" names the fixture under tests/data/ whose model/
                     supplies the other files;
- image/, audio/, video/, text/, inputs/   one bad file per class and modality;
- manifest/          training manifests (CSV, TSV, JSONL) with one defect each
                     (make_manifest_cases.py), read by tessera-train --manifest with the key
                     options of the entry's "args";
- catalogue.json     one entry per bad file: its class, the tessera-encode option that reads
                     it (tessera-train's for --manifest), and a part of the error message it
                     must give.

tests/test_bad_inputs.cpp feeds every entry to the library, apps/bad_inputs_tests.cmake to
tessera-encode (a manifest to tessera-train); docs/robustness.md lists the classes. Deterministic: the same bytes each run.
"""

import json
import math
import os
import shutil
import struct
import sys
import zlib

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "reference"))
from make_fixtures import Draw, make_weights, save_safetensors  # noqa: E402

CONFIG = {
    "hidden_dim": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "embed_dim": 8,
    "activation": "gelu", "norm": "layernorm", "norm_eps": 1e-5, "position": "rope",
    "rope_theta": 10000.0, "rope_sections": None, "pooling": "mean",
    "text": {"tokenizer": "gpt2_bpe", "vocab_size": 300, "max_tokens": 16, "causal": False},
    "image": {"size": 16, "patch": 8, "channels": 3,
              "mean": [0.48145466, 0.4578275, 0.40821073],
              "std": [0.26862954, 0.26130258, 0.27577711]},
    "audio": {"sample_rate": 16000, "features": "kaldi_fbank", "n_mels": 16,
              "patch_frames": 4, "max_tokens": 32, "feature_mean": -4.268, "feature_std": 9.138},
    "video": {"fps": 1.0, "tubelet": 2, "pool_queries": 0, "max_tokens": 64},
}

catalogue = []


def path(*parts):
    return os.path.join(HERE, *parts)


def write(relative, data):
    full = path(relative)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def entry(cls, relative, option, error):
    catalogue.append({"class": cls, "file": relative, "option": option, "error": error})


# ---- the good model ------------------------------------------------------------------------

def bytes_to_unicode():
    """GPT-2's byte -> printable character table."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
          + list(range(ord("\xae"), ord("\xff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tokenizer(vocab_size):
    """A byte-level BPE of vocab_size tokens learned from a few captions (greedy pair counts)."""
    table = bytes_to_unicode()
    words = []
    for caption in ["a red square moving left", "a blue circle moving up", "a rising tone",
                    "a falling tone", "a green triangle on the right", "the sound of a bell"]:
        for i, word in enumerate(caption.split(" ")):
            raw = (" " if i else "") + word
            words.append([table[b] for b in raw.encode("utf-8")])
    vocab = {table[b]: b for b in range(256)}
    merges = []
    while len(vocab) < vocab_size:
        counts = {}
        for w in words:
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = max(sorted(counts), key=lambda p: counts[p])
        merges.append(best)
        vocab[best[0] + best[1]] = len(vocab)
        for w in words:
            i = 0
            while i + 1 < len(w):
                if (w[i], w[i + 1]) == best:
                    w[i:i + 2] = [best[0] + best[1]]
                else:
                    i += 1
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    return json.dumps(vocab, ensure_ascii=False), merges_text


def weights(config):
    w = make_weights(config, Draw(61))
    return {k: v.to(torch.float16) for k, v in w.items()}


def write_model(relative, config=CONFIG, tensors=None, vocab=None, merges=None):
    os.makedirs(path(relative), exist_ok=True)
    write(os.path.join(relative, "config.json"),
          config if isinstance(config, str) else json.dumps(config, indent=1))
    save_safetensors(path(relative, "model.safetensors"),
                     weights(CONFIG) if tensors is None else tensors)
    good_vocab, good_merges = tokenizer(CONFIG["text"]["vocab_size"])
    write(os.path.join(relative, "vocab.json"), vocab or good_vocab)
    write(os.path.join(relative, "merges.txt"), merges or good_merges)


def write_case(case, files):
    """models/<case>/ holds only the files that differ from model/ (the harness copies the
    rest of model/ beside them)."""
    for name, data in files.items():
        write(os.path.join("models", case, name), data)


# ---- raw safetensors (for files that no correct writer makes) ------------------------------

def safetensors_raw(header, data=b""):
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def f32(*values):
    return struct.pack(f"<{len(values)}f", *values)


def i64(*values):
    return struct.pack(f"<{len(values)}q", *values)


# ---- images, audio, video ------------------------------------------------------------------

def png(width, height, pixels=None, idat=None):
    """An 8-bit RGB PNG; `idat` replaces the compressed data when given."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    if idat is None:
        rows = b"".join(b"\0" + bytes(pixels[y * width * 3:(y + 1) * width * 3])
                        for y in range(height))
        idat = zlib.compress(rows, 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


def wav(samples, rate=16000, tag=1, bits=16, data_size=None, pack="h"):
    data = struct.pack(f"<{len(samples)}{pack}", *samples)
    block = bits // 8
    fmt = struct.pack("<HHIIHH", tag, 1, rate, rate * block, block, bits)
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def y4m(header, frames, frame_bytes):
    out = ("YUV4MPEG2 " + header + "\n").encode()
    for f in range(frames):
        out += b"FRAME\n" + bytes((f * 31 + i * 7) % 220 + 16 for i in range(frame_bytes))
    return out


def main():
    for sub in ("model", "models", "image", "audio", "video", "text", "inputs"):
        shutil.rmtree(path(sub), ignore_errors=True)
    write_model("model")
    tensors = weights(CONFIG)

    # -- truncated --
    gradient = [(x * 16 + c * 40) % 256 for x in range(16 * 16) for c in range(3)]
    good_png = png(16, 16, gradient)
    write("image/truncated.png", good_png[:len(good_png) // 2])
    entry("truncated", "image/truncated.png", "--image", "cannot decode the PNG data")
    tone = [int(8000 * math.sin(2 * math.pi * 440 * n / 16000)) for n in range(1600)]
    write("audio/truncated.wav", wav(tone)[:1000])
    entry("truncated", "audio/truncated.wav", "--audio",
          "data chunk claims 3200 bytes but only 956 remain in the file")
    write("video/truncated.y4m", y4m("W16 H16 F4:1 C420jpeg", 3, 16 * 16 + 2 * 64)[:700])
    entry("truncated", "video/truncated.y4m", "--video",
          "truncated frame 1: the U plane needs 64 bytes, the file has 16")
    sample = safetensors_raw({"text_ids": {"dtype": "I64", "shape": [3],
                                           "data_offsets": [0, 24]}}, i64(1, 2, 3))
    write("inputs/truncated.safetensors", sample[:-8])
    entry("truncated", "inputs/truncated.safetensors", "--inputs",
          "are out of bounds of the data section (16 bytes)")
    with open(path("model/model.safetensors"), "rb") as f:
        whole = f.read()
    write_case("truncated_weights", {"model.safetensors": whole[:len(whole) - 100]})
    entry("truncated", "models/truncated_weights", "--model",
          "data_offsets [22786, 35074] are out of bounds of the data section (34974 bytes)")

    # -- empty --
    write("image/empty.png", b"")
    entry("empty", "image/empty.png", "--image", "the file is empty, not an image")
    write("audio/empty.wav", b"")
    entry("empty", "audio/empty.wav", "--audio", "not a RIFF/WAVE file (shorter than the 12-byte RIFF header)")
    write("inputs/empty.safetensors", b"")
    entry("empty", "inputs/empty.safetensors", "--inputs",
          "file is 0 bytes, shorter than the 8-byte header length")

    # -- wrong magic --
    write("image/wrong_magic.png", b"GIF89a\x10\x00\x10\x00" + bytes(32))
    entry("wrong magic", "image/wrong_magic.png", "--image", "unsupported image format (GIF)")
    write("audio/wrong_magic.wav", b"RIFX" + wav(tone)[4:])
    entry("wrong magic", "audio/wrong_magic.wav", "--audio", "RIFX files are not supported")
    write("video/wrong_magic.y4m", b"YUV4MPEG3 W16 H16 F4:1\n")
    entry("wrong magic", "video/wrong_magic.y4m", "--video", "not a YUV4MPEG2 file (bad magic")
    write("inputs/wrong_magic.safetensors", b"PK\x03\x04 this is a zip archive, not safetensors")
    entry("wrong magic", "inputs/wrong_magic.safetensors", "--inputs",
          "exceeds the file size (43 bytes)")

    # -- lying sizes: headers that claim more than the file holds, refused before allocating --
    write("image/decompression_bomb.png", png(20000, 20000, idat=zlib.compress(bytes(4096))))
    entry("lying sizes", "image/decompression_bomb.png", "--image",
          "pixels, more than ImageLimits::max_pixels = 100000000")
    bmp_header = (b"BM" + struct.pack("<IHHI", 54 + 48, 0, 0, 54)
                  + struct.pack("<IiiHHIIiiII", 40, 4000, 4000, 1, 24, 0, 48, 2835, 2835, 0, 0))
    write("image/lying_size.bmp", bmp_header + bytes(48))
    entry("lying sizes", "image/lying_size.bmp", "--image",
          "truncated BMP data (102 bytes, the header needs 48000054)")
    write("audio/lying_size.wav", wav(tone[:100], data_size=1 << 30))
    entry("lying sizes", "audio/lying_size.wav", "--audio",
          "data chunk claims 1073741824 bytes but only 200 remain in the file")
    write("video/lying_size.y4m", y4m("W8000 H8000 F25:1 C444", 0, 0) + b"FRAME\n" + bytes(64))
    entry("lying sizes", "video/lying_size.y4m", "--video",
          "truncated frame 0: the Y plane needs 64000000 bytes, the file has 64")
    write("inputs/lying_shape.safetensors", safetensors_raw(
        {"audio": {"dtype": "F32", "shape": [16, 1000000], "data_offsets": [0, 16]}},
        f32(1, 2, 3, 4)))
    entry("lying sizes", "inputs/lying_shape.safetensors", "--inputs",
          "hold 16 bytes but shape [16, 1000000] of dtype F32 needs 64000000")
    absurd = dict(CONFIG, num_layers=1000000)
    write_case("absurd_config", {"config.json": json.dumps(absurd, indent=1)})
    entry("lying sizes", "models/absurd_config", "--model",
          "config.json describes a model of 2224015313 weights, more than the file's 35074 "
          "bytes of tensors can hold")

    # -- overlapping tensors --
    write("inputs/overlapping_offsets.safetensors", safetensors_raw(
        {"image": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
         "text_ids": {"dtype": "I64", "shape": [1], "data_offsets": [4, 12]}}, bytes(12)))
    entry("overlapping tensors", "inputs/overlapping_offsets.safetensors", "--inputs",
          "overlap in the data section")

    # -- NaN --
    nan_weights = dict(tensors)
    bad = nan_weights["proj.weight"].clone()
    bad[1, 2] = float("nan")
    nan_weights["proj.weight"] = bad
    save_safetensors(path("models/nan_weight/model.safetensors"), nan_weights)
    entry("NaN", "models/nan_weight", "--model",
          "tensor 'proj.weight' holds a non-finite value (nan) at flat index 18")
    image = [0.5] * (3 * 16 * 16)
    image[40] = float("nan")
    write("inputs/nan_image.safetensors", safetensors_raw(
        {"image": {"dtype": "F32", "shape": [3, 16, 16], "data_offsets": [0, 3 * 256 * 4]}},
        f32(*image)))
    entry("NaN", "inputs/nan_image.safetensors", "--inputs",
          "image holds a non-finite value (nan) at flat index 40")
    samples = [0.25] * 800
    samples[123] = float("nan")
    write("audio/nan_sample.wav", wav(samples, tag=3, bits=32, pack="f"))
    entry("NaN", "audio/nan_sample.wav", "--audio", "sample 123 of channel 0 is not finite")

    # -- text that is not UTF-8 --
    write("text/not_utf8.txt", b"a red \xff\xfe square")
    entry("not UTF-8", "text/not_utf8.txt", "--text-file",
          "invalid UTF-8 at byte 6: invalid lead byte 0xFF")
    write_case("vocab_not_utf8", {"vocab.json": b'{"a\xff": 0}'})
    entry("not UTF-8", "models/vocab_not_utf8", "--model",
          "vocab.json:1: invalid UTF-8 in a token string at byte 3 of the file")

    # -- ids out of range, sequences over the limit --
    write("inputs/id_out_of_range.safetensors", safetensors_raw(
        {"text_ids": {"dtype": "I64", "shape": [3], "data_offsets": [0, 24]}}, i64(5, 300, 7)))
    entry("ids out of range", "inputs/id_out_of_range.safetensors", "--inputs",
          "text id 300 at position 1 is out of range [0, 300)")
    write("inputs/too_many_tokens.safetensors", safetensors_raw(
        {"text_ids": {"dtype": "I64", "shape": [17], "data_offsets": [0, 17 * 8]}},
        i64(*range(17))))
    entry("sequence over the limit", "inputs/too_many_tokens.safetensors", "--inputs",
          "text has 17 tokens, more than text.max_tokens = 16")

    # -- wrong shape, wrong type --
    write("inputs/wrong_rank.safetensors", safetensors_raw(
        {"image": {"dtype": "F32", "shape": [16, 16], "data_offsets": [0, 1024]}},
        f32(*([0.0] * 256))))
    entry("wrong shape", "inputs/wrong_rank.safetensors", "--inputs",
          "tensor 'image' has shape [16, 16], expected [C, S, S]")
    write("inputs/wrong_image_size.safetensors", safetensors_raw(
        {"image": {"dtype": "F32", "shape": [3, 8, 8], "data_offsets": [0, 768]}},
        f32(*([0.0] * 192))))
    entry("wrong shape", "inputs/wrong_image_size.safetensors", "--inputs",
          "image has shape [3, 8, 8], expected [3, 16, 16]")
    write("inputs/wrong_dtype.safetensors", safetensors_raw(
        {"text_ids": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, f32(1, 2)))
    entry("wrong type", "inputs/wrong_dtype.safetensors", "--inputs",
          "tensor 'text_ids' has dtype F32, expected I32 or I64")
    write("audio/unsupported_format.wav", wav(tone[:400], tag=0x55))
    entry("wrong type", "audio/unsupported_format.wav", "--audio", "unsupported WAV format tag 0x0055 (MPEG layer 3)")

    # -- malformed JSON --
    entry_json = b'{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'
    header = b'{"x":' + entry_json + b',"x":' + entry_json + b"}"
    header += b" " * (-len(header) % 8)
    write("inputs/duplicate_key.safetensors", struct.pack("<Q", len(header)) + header + f32(1))
    entry("malformed JSON", "inputs/duplicate_key.safetensors", "--inputs",
          "header: key \"x\" appears twice in one object")
    write_case("config_not_json", {"config.json": '{"hidden_dim": 16,, "num_layers": 1}'})
    entry("malformed JSON", "models/config_not_json", "--model", "config.json: not valid JSON")
    deep = json.dumps(CONFIG)[:-1] + ', "extra": ' + "[" * 100 + "]" * 100 + "}"
    write_case("config_too_deep", {"config.json": deep})
    entry("malformed JSON", "models/config_too_deep", "--model",
          "config.json: nested deeper than 64 levels")

    # -- a directory where a file belongs: refused by name, never read as empty --
    for name, error in (("config.json", "config.json: cannot read: is a directory, expected a file"),
                        ("vocab.json", "vocab.json: is a directory, expected a file"),
                        ("merges.txt", "merges.txt: is a directory, expected a file"),
                        ("model.safetensors", "model.safetensors: not a regular file")):
        case = name.split(".")[0] + "_is_a_directory"
        write_case(case, {os.path.join(name, "README"):
                          f"This directory stands where the model's {name} belongs.\n"})
        entry("directory as a file", f"models/{case}", "--model", error)
    entry("directory as a file", "text", "--text-file",
          "text: cannot read: is a directory, expected a file")

    # -- a file without an end: refused within its limit or by its first bytes, never read
    # forever nor whole --
    for option, error in (
            ("--text-file", "more than the limit of 16777216 bytes (16 MiB) set by tessera::ReadLimits::text_file"),
            ("--audio", "256 MiB) set by tessera::ReadLimits::without_size"),
            ("--image", "256 MiB) set by tessera::ReadLimits::without_size"),
            ("--video", "cannot open as a video container"),
            ("--inputs", "/dev/zero: not a regular file")):
        entry("a file without an end", "/dev/zero", option, error)

    # -- numbers in files that scale work, tokenizers that cannot encode, checksums: written by
    # the scripts beside this one (each can run alone after this one) --
    sys.path.insert(0, HERE)
    import make_audio_cases, make_checksum_cases, make_text_cases, make_video_cases  # noqa: E402
    make_audio_cases.main()
    entry("rates that scale work", "audio/rate_1hz.wav", "--audio",
          "sample rate 1 Hz is below the limit of 1000 Hz (WavLimits::min_sample_rate)")
    entry("rates that scale work", "audio/rate_max.wav", "--audio",
          "sample rate 4294967295 Hz exceeds the limit of 768000 Hz (WavLimits::max_sample_rate)")
    make_video_cases.main()
    for case in make_video_cases.CASES:
        if case["class"] == "absurd header value":
            case["class"] = "rates that scale work"
        catalogue.append(case)
    make_text_cases.main()
    entry("inconsistent tokenizer", "models/merges_unknown_token", "--model",
          "merges.txt:46: the merge \"q z\" makes \"qz\", which is not in the vocabulary")
    entry("ids out of range", "models/vocab_id_over_vocab_size", "--model",
          "vocab.json:301: the id 300 of \"quare\" is not below the model's text.vocab_size = 300")
    entry("inconsistent tokenizer", "models/vocab_missing_byte", "--model",
          "vocab.json: the token \"a\" (byte 0x61) is missing")
    entry("wrong type", "models/vocab_negative_id", "--model",
          "vocab.json:124: the id of \"z\" must be a non-negative integer below 2^31, found '-1'")
    entry("inconsistent tokenizer", "models/vocab_duplicate_id", "--model",
          "vocab.json:100: id 97 of \"b\" is already the id of \"a\"")
    catalogue.extend(make_checksum_cases.make_cases())
    import make_quantized_cases  # noqa: E402
    catalogue.extend(make_quantized_cases.make_cases())
    import make_pretrained_cases  # noqa: E402
    make_pretrained_cases.main()
    catalogue.extend(make_pretrained_cases.CASES)
    import make_manifest_cases  # noqa: E402
    catalogue.extend(make_manifest_cases.main())

    with open(path("catalogue.json"), "w") as f:
        f.write("[\n" + ",\n".join("  " + json.dumps(e, ensure_ascii=False) for e in catalogue)
                + "\n]\n")
    print(f"wrote {len(catalogue)} bad inputs to {HERE}")


if __name__ == "__main__":
    main()
