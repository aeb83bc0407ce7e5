#!/usr/bin/python3
"""Pillow + torchvision twin of tessera's image front end (SPEC 5.2).

Run from the repository root with Debian's Pillow and torchvision:

    /usr/bin/python3 tests/reference/make_image_fixtures.py [--photos DIR]

It rewrites tests/data/image/:
  sources/<name>.<ext>                the input files (synthetic ones, small crops of photos)
  decoded/<name>.<ext>.safetensors    `decoded` U8 [H, W, 3] = PIL.Image.open(f).convert("RGB")
  expected/<case>.safetensors         what Pillow + torchvision make of a source at one size
  manifest.json                       one entry per case: source, size, format, shapes

Images are U8 tensors in HWC order (the layout of tessera::Image). A case file holds
  resized   [h, w, 3]   decoded.resize((w, h), Image.BICUBIC), shorter side = size,
                        longer side = int(size * long / short)   (torchvision's rule)
  cropped   [S, S, 3]   torchvision.transforms.functional.center_crop(resized, S)
and, for the cases with "normalized": true, an F32 [3, S, S] tensor `normalized` =
  Normalize(CLIP mean, CLIP std)(ToTensor()(cropped)), computed by torchvision in float32.
`resized` is left out when it would be large (cases with "resized": false).

Photos (--photos, default: the data directory of Debian's python3-skimage, e.g. after
`apt-get download python3-skimage && dpkg -x python3-skimage_*.deb DIR`, pass
DIR/usr/lib/python3/dist-packages/skimage/data) are only needed to rebuild the photo
sources; when the directory is missing, the committed sources/ are reused as they are.
Deterministic: synthetic images come from fixed-seed numpy generators.
"""

import argparse
import json
import os
import shutil
import struct
import sys

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "data", "image")
SOURCES = os.path.join(OUT, "sources")
EXPECTED = os.path.join(OUT, "expected")
DECODED = os.path.join(OUT, "decoded")
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
DEFAULT_PHOTOS = "/usr/lib/python3/dist-packages/skimage/data"

# ---------------------------------------------------------------------------------------
# safetensors writer for numpy arrays (8-byte LE header length, JSON header, raw LE data)
# ---------------------------------------------------------------------------------------

ST_NAMES = {np.dtype("uint8"): "U8", np.dtype("<f4"): "F32"}


def save_safetensors(path, arrays, metadata=None):
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        data = a.tobytes()
        header[name] = {"dtype": ST_NAMES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)


# ---------------------------------------------------------------------------------------
# Synthetic sources
# ---------------------------------------------------------------------------------------


def gradient(w, h, seed, noise_sigma=2.0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / max(w - 1, 1)
    g = 255 * y / max(h - 1, 1)
    b = 127.5 + 127.5 * np.sin(x / 5.0 + y / 7.0)
    img = np.stack([r, g, b], -1) + rng.normal(0, noise_sigma, (h, w, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def checkerboard(w, h, cell):
    y, x = np.mgrid[0:h, 0:w]
    on = ((x // cell + y // cell) % 2).astype(np.uint8)
    img = np.stack([on * 255, on * 200 + 30, 255 - on * 255], -1)
    return img.astype(np.uint8)


def noise(w, h, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def thin_lines(w, h):
    img = np.full((h, w, 3), 16, np.uint8)
    img[::7, :, 0] = 255          # one-pixel horizontal lines
    img[:, ::5, 1] = 255          # one-pixel vertical lines
    for i in range(min(w, h)):    # a one-pixel diagonal
        img[i, i, :] = (255, 255, 0)
    return img


def save(name, fmt, array=None, image=None, **options):
    path = os.path.join(SOURCES, name)
    if image is None:
        image = Image.fromarray(array)
    image.save(path, fmt, **options)
    return name


def make_synthetic():
    """Returns [(case name, source file name, size, extra manifest fields)]."""
    cases = []

    def add(case, source, size, **extra):
        cases.append((case, source, size, extra))

    # Geometry: wide, tall, exactly the size, smaller than the size, odd crop offsets.
    add("gradient_wide_32", save("gradient_wide.png", "PNG", gradient(97, 61, 1)), 32,
        normalized=True)
    add("checker_tall_32", save("checker_tall.png", "PNG", checkerboard(40, 120, 3)), 32)
    add("noise_exact_64", save("noise_64.png", "PNG", noise(64, 64, 2)), 64)
    add("noise_small_32", save("noise_small.png", "PNG", noise(23, 17, 3)), 32)
    add("lines_64", save("lines.png", "PNG", thin_lines(150, 150)), 64)
    add("strip_wide_16", save("strip_wide.png", "PNG", gradient(400, 20, 4)), 16)
    add("strip_tall_16", save("strip_tall.png", "PNG", noise(9, 100, 5)), 16)
    # resize is the identity on the short side; crop offsets 6.5 -> 6, 7.5 -> 8, 1.5 -> 2
    add("offset_45_32", save("offset_45.png", "PNG", noise(32, 45, 6)), 32)
    add("offset_47_32", save("offset_47.png", "PNG", noise(32, 47, 7)), 32)
    add("offset_35_32", save("offset_35.png", "PNG", noise(35, 32, 8)), 32)
    # large shrink factor (support scaled by ~9)
    add("gradient_big_32", save("gradient_big.png", "PNG", gradient(136, 128, 9, 0.0)), 32)
    # Colour types and formats.
    gray = gradient(80, 50, 10)[:, :, 0]
    add("gray_png_32", save("gray.png", "PNG", gray), 32)
    rgba = np.concatenate([noise(70, 90, 11), noise(70, 90, 12)[:, :, :1]], -1)
    rgba[::3, :, 3] = 0  # fully transparent rows must keep their colour (alpha is dropped)
    add("rgba_png_32", save("rgba.png", "PNG", image=Image.fromarray(rgba, "RGBA")), 32)
    la = np.stack([gradient(33, 44, 13)[:, :, 1], noise(33, 44, 14)[:, :, 0]], -1)
    add("la_png_32", save("la.png", "PNG", image=Image.fromarray(la, "LA")), 32)
    pal = Image.fromarray(gradient(60, 45, 15)).quantize(colors=37, method=Image.MEDIANCUT,
                                                          dither=Image.NONE)
    add("palette_png_32", save("palette.png", "PNG", image=pal), 32)
    pal_t = pal.copy()
    pal_t.info["transparency"] = 3
    add("palette_trns_png_32", save("palette_trns.png", "PNG", image=pal_t,
                                    transparency=3), 32)
    bits1 = Image.fromarray(checkerboard(30, 26, 2)[:, :, 0]).convert("1")
    add("bilevel_png_32", save("bilevel.png", "PNG", image=bits1), 32)
    rgb16 = (gradient(41, 29, 16).astype(np.uint16) * 257 + 77).astype(">u2")
    write_png16(os.path.join(SOURCES, "rgb16.png"), rgb16)  # Pillow cannot write these
    add("rgb16_png_32", "rgb16.png", 32)
    la16 = np.stack([gradient(27, 35, 23)[:, :, 0], noise(27, 35, 24)[:, :, 0]], -1)
    write_png16(os.path.join(SOURCES, "la16.png"), la16.astype(np.uint16) * 251 + 3, 4)
    add("la16_png_32", "la16.png", 32)
    # Not a case: tessera refuses 16-bit gray (Pillow clips it to 255, see io/image.hpp).
    write_png16(os.path.join(SOURCES, "gray16.png"),
                gradient(20, 12, 25)[:, :, 0].astype(np.uint16) * 200, 0)
    add("bmp_32", save("image.bmp", "BMP", gradient(51, 37, 17)), 32)
    add("ppm_32", save("image.ppm", "PPM", noise(45, 30, 18)), 32)
    add("pgm_32", save("image.pgm", "PPM", gradient(30, 45, 19)[:, :, 2]), 32)
    smooth = gradient(96, 72, 20)
    add("jpeg_420_64", save("image_420.jpg", "JPEG", smooth, quality=90, subsampling=2), 64,
        format="jpeg")
    add("jpeg_444_64", save("image_444.jpg", "JPEG", smooth, quality=90, subsampling=0), 64,
        format="jpeg")
    add("jpeg_422_32", save("image_422.jpg", "JPEG", gradient(50, 70, 21), quality=85,
                            subsampling=1), 32, format="jpeg")
    add("jpeg_gray_32", save("gray.jpg", "JPEG", gray, quality=90), 32, format="jpeg")
    add("jpeg_progressive_32", save("progressive.jpg", "JPEG", gradient(64, 48, 22),
                                    quality=90, progressive=True), 32, format="jpeg")
    cmyk = Image.fromarray(np.concatenate([gradient(56, 40, 26), gradient(56, 40, 27)[:, :, :1]],
                                          -1), "CMYK")
    add("jpeg_cmyk_32", save("cmyk.jpg", "JPEG", image=cmyk, quality=90), 32, format="jpeg")
    return cases


def write_png16(path, samples, color_type=2):
    """A 16-bit PNG (colour type 2 RGB, 4 gray + alpha, 0 gray), written with zlib directly."""
    import zlib

    h, w = samples.shape[:2]
    raw = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


# ---------------------------------------------------------------------------------------
# Photo sources (small crops of scikit-image's sample photos)
# ---------------------------------------------------------------------------------------

PHOTOS = [
    # (source name in skimage/data, crop box or None, jpeg size, png size)
    ("chelsea.png", None, (210, 140), (128, 85)),
    ("astronaut.png", (96, 0, 416, 480), (140, 210), (86, 129)),
    ("coffee.png", None, (210, 140), (128, 85)),
]


def make_photos(photo_dir):
    cases = []
    for name, box, jpeg_size, png_size in PHOTOS:
        stem = os.path.splitext(name)[0]
        jpg, png = f"{stem}.jpg", f"{stem}.png"
        if os.path.isdir(photo_dir):
            im = Image.open(os.path.join(photo_dir, name)).convert("RGB")
            if box:
                im = im.crop(box)
            im.resize(jpeg_size, Image.LANCZOS).save(os.path.join(SOURCES, jpg), "JPEG",
                                                     quality=85)
            im.resize(png_size, Image.LANCZOS).save(os.path.join(SOURCES, png), "PNG",
                                                    optimize=True)
        elif not os.path.exists(os.path.join(SOURCES, jpg)):
            sys.exit(f"no photo directory {photo_dir} and no committed {jpg}: pass --photos")
        # `resized` of one photo only, to keep tests/data small (the crops check the rest)
        keep = stem == "chelsea"
        cases.append((f"{stem}_jpeg_64", jpg, 64, {"format": "jpeg", "resized": keep}))
        cases.append((f"{stem}_png_64", png, 64, {"resized": keep}))
    # upscaling 140 -> 224 on the photo
    cases.append(("chelsea_jpeg_224", "chelsea.jpg", 224, {"format": "jpeg", "resized": False}))
    cases.append(("astronaut_png_32", "astronaut.png", 32, {"normalized": True}))
    return cases


# ---------------------------------------------------------------------------------------
# The reference pipeline
# ---------------------------------------------------------------------------------------


def shorter_side_size(w, h, size):
    """torchvision.transforms.Resize(size) with an int size: (new_w, new_h)."""
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def reference(path, size):
    decoded = Image.open(path).convert("RGB")
    resized = decoded.resize(shorter_side_size(*decoded.size, size), Image.BICUBIC)
    cropped = TF.center_crop(resized, [size, size])
    normalized = TF.normalize(TF.to_tensor(cropped), CLIP_MEAN, CLIP_STD)
    return (np.asarray(decoded), np.asarray(resized), np.asarray(cropped),
            normalized.numpy().astype("<f4"))


def jpeg_sampling(path):
    """"4:4:4", "4:2:2", "4:2:0" for a YCbCr JPEG, "" otherwise."""
    from PIL import JpegImagePlugin

    im = Image.open(path)
    if im.format != "JPEG" or im.mode != "RGB":
        return ""
    return {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}.get(JpegImagePlugin.get_sampling(im), "other")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", default=DEFAULT_PHOTOS)
    args = parser.parse_args()

    os.makedirs(SOURCES, exist_ok=True)
    for folder in (EXPECTED, DECODED):
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)

    cases = make_synthetic() + make_photos(args.photos)
    manifest = []
    for case, source, size, extra in cases:
        decoded, resized, cropped, normalized = reference(os.path.join(SOURCES, source), size)
        decoded_file = os.path.join(DECODED, f"{source}.safetensors")
        if not os.path.exists(decoded_file):
            save_safetensors(decoded_file, {"decoded": decoded})
        arrays = {"cropped": cropped}
        if extra.get("resized", True):
            arrays["resized"] = resized
        if extra.get("normalized", False):
            arrays["normalized"] = normalized
        save_safetensors(os.path.join(EXPECTED, f"{case}.safetensors"), arrays)
        manifest.append({
            "case": case, "source": source, "size": size,
            "format": extra.get("format", "lossless"),
            "width": int(decoded.shape[1]), "height": int(decoded.shape[0]),
            "resized_width": int(resized.shape[1]), "resized_height": int(resized.shape[0]),
            "has_resized": "resized" in arrays, "has_normalized": "normalized" in arrays,
            "jpeg_sampling": jpeg_sampling(os.path.join(SOURCES, source)),
        })
    import torchvision

    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump({"pillow": Image.__version__, "torchvision": torchvision.__version__,
                   "cases": manifest}, f, indent=1)
        f.write("\n")

    total = 0
    for folder, _, files in os.walk(OUT):
        for name in files:
            size = os.path.getsize(os.path.join(folder, name))
            total += size
            if folder == SOURCES and size > 60 * 1024:
                print(f"warning: sources/{name} is {size / 1024:.0f} KiB (> 60 KiB)")
    print(f"{len(manifest)} cases, tests/data/image total {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
