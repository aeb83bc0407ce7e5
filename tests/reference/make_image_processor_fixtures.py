#!/usr/bin/python3
"""Twin of the CLIP families' image preprocessing (tessera/tokenize/image_processor.hpp).

Run from the repository root with Debian's Pillow 9.4, numpy and torchvision 0.14:

    /usr/bin/python3 tests/reference/make_image_processor_fixtures.py

It rewrites tests/data/image/processor/:
  sources.safetensors       U8 [H, W, 3] per source image (synthetic, fixed seeds)
  hf_<name>.json            a transformers preprocessor_config.json
  open_clip_<name>.json     an open_clip_config.json (model_cfg.vision_cfg.image_size and
                            preprocess_cfg only)
  <config>.safetensors      per source <s>: `<s>.u8` U8 [h, w, 3], the image after resize and
                            crop, and `<s>.pixels` F32 [3, h, w], the tensor the model reads
  manifest.json             the configs and the sources

The transformers route is written here anew (transformers itself is not installed), following
src/transformers/models/clip/image_processing_clip.py (CLIPImageProcessor.__init__,
.preprocess, .resize) and src/transformers/image_transforms.py (get_resize_output_image_size,
resize, center_crop, rescale, normalize) and image_processing_utils.get_size_dict; the resize
is Pillow's own Image.resize, as transformers calls it. The open_clip route follows
src/open_clip/transform.py (image_transform with is_train=False, ResizeKeepRatio,
center_crop_or_pad) and runs torchvision's own Resize, CenterCrop, ToTensor and Normalize.
Every function names what it follows.
"""

import json
import math
import os
import struct

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
import torchvision.transforms.functional as TF

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "data", "image", "processor")
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

torch.set_num_threads(1)


def save_safetensors(path, arrays):
    """arrays: {name: numpy array (uint8 or float32)}, written in name order."""
    names = {np.dtype("uint8"): "U8", np.dtype("float32"): "F32"}
    header, blobs, offset = {}, [], 0
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        data = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": names[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)


# ---------------------------------------------------------------------------------------
# sources: small synthetic RGB images with detail in both directions
# ---------------------------------------------------------------------------------------

def source(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1),
                     128 + 100 * np.sin(x * 0.7 + y * 0.3)], axis=-1)
    base += rng.normal(0, 20, size=base.shape)
    return np.clip(np.rint(base), 0, 255).astype(np.uint8)


SOURCES = {
    "portrait_45x61": source(45, 61, 1),    # width x height
    "landscape_83x37": source(83, 37, 2),
    "square_51x51": source(51, 51, 3),
    "small_13x9": source(13, 9, 4),         # smaller than every crop: upscaled or padded
    "odd_offset_72x64": source(72, 64, 5),  # shortest edge 24: 27 x 24, crop offset 1.5
    "tall_20x97": source(20, 97, 6),
}


# ---------------------------------------------------------------------------------------
# transformers: CLIPImageProcessor
# ---------------------------------------------------------------------------------------

def hf_get_size_dict(size, default_to_square):
    """image_processing_utils.get_size_dict (height_width_order=True)."""
    if isinstance(size, int):
        return {"height": size, "width": size} if default_to_square else {"shortest_edge": size}
    if isinstance(size, (list, tuple)):
        return {"height": size[0], "width": size[1]}
    return dict(size)


def hf_processor_settings(config):
    """CLIPImageProcessor.__init__ + the defaults preprocess() falls back to."""
    size = config.get("size")
    size = hf_get_size_dict(size if size is not None else {"shortest_edge": 224}, False)
    crop = config.get("crop_size")
    crop = hf_get_size_dict(crop if crop is not None else {"height": 224, "width": 224}, True)
    if config.get("use_square_size"):
        size = {"height": size["shortest_edge"], "width": size["shortest_edge"]}
    return dict(
        do_resize=config.get("do_resize", True), size=size,
        resample=config.get("resample", Image.BICUBIC),
        do_center_crop=config.get("do_center_crop", True), crop_size=crop,
        do_rescale=config.get("do_rescale", True),
        rescale_factor=config.get("rescale_factor", 1 / 255),
        do_normalize=config.get("do_normalize", True),
        image_mean=config.get("image_mean") or CLIP_MEAN,
        image_std=config.get("image_std") or CLIP_STD)


def hf_output_size(height, width, size):
    """CLIPImageProcessor.resize -> image_transforms.get_resize_output_image_size."""
    if "shortest_edge" in size:  # default_to_square=False: torchvision's rule
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = size["shortest_edge"], int(size["shortest_edge"] * long / short)
        return (new_long, new_short) if width <= height else (new_short, new_long)
    return (size["height"], size["width"])


def hf_center_crop(image, crop_height, crop_width):
    """image_transforms.center_crop on an [H, W, C] array (pads with zeros when smaller)."""
    h, w = image.shape[:2]
    top, left = (h - crop_height) // 2, (w - crop_width) // 2
    bottom, right = top + crop_height, left + crop_width
    if top >= 0 and bottom <= h and left >= 0 and right <= w:
        return image[top:bottom, left:right]
    new_h, new_w = max(crop_height, h), max(crop_width, w)
    padded = np.zeros((new_h, new_w) + image.shape[2:], dtype=image.dtype)
    top_pad, left_pad = math.ceil((new_h - h) / 2), math.ceil((new_w - w) / 2)
    padded[top_pad:top_pad + h, left_pad:left_pad + w] = image
    top, bottom, left, right = top + top_pad, bottom + top_pad, left + left_pad, right + left_pad
    return padded[max(0, top):min(new_h, bottom), max(0, left):min(new_w, right)]


def hf_preprocess(pixels, config):
    """CLIPImageProcessor.preprocess for one RGB uint8 image: returns (u8 [h, w, 3],
    float32 [3, h, w])."""
    s = hf_processor_settings(config)
    image = pixels
    if s["do_resize"]:
        height, width = hf_output_size(image.shape[0], image.shape[1], s["size"])
        # image_transforms.resize: to PIL (uint8, no rescale), Image.resize((w, h), resample)
        image = np.array(Image.fromarray(image).resize((width, height), resample=s["resample"]))
    if s["do_center_crop"]:
        image = hf_center_crop(image, s["crop_size"]["height"], s["crop_size"]["width"])
    u8 = image.copy()
    out = image
    if s["do_rescale"]:  # image_transforms.rescale: float64 product, cast to float32
        out = (out.astype(np.float64) * s["rescale_factor"]).astype(np.float32)
    if s["do_normalize"]:  # image_transforms.normalize: float32 (uint8 cast first)
        if not np.issubdtype(out.dtype, np.floating):
            out = out.astype(np.float32)
        mean = np.array(s["image_mean"], dtype=out.dtype)
        std = np.array(s["image_std"], dtype=out.dtype)
        out = (out - mean) / std
    out = out.astype(np.float32)  # (rescale and normalize both off: the bytes, as float)
    return u8, np.ascontiguousarray(out.transpose(2, 0, 1))


# ---------------------------------------------------------------------------------------
# open_clip: image_transform(is_train=False)
# ---------------------------------------------------------------------------------------

def resize_keep_ratio(img, target_size, longest, interpolation):
    """open_clip transform.ResizeKeepRatio.__call__ / get_params without random scaling."""
    h, w = img.size[::-1]
    target_h, target_w = target_size
    ratio_h, ratio_w = h / target_h, w / target_w
    ratio = max(ratio_h, ratio_w) * longest + min(ratio_h, ratio_w) * (1. - longest)
    size = [round(x * 1. / ratio) for x in (h, w)]
    return TF.resize(img, size, interpolation)


def center_crop_or_pad(img, output_size, fill):
    """open_clip transform.center_crop_or_pad for a PIL image."""
    _, image_height, image_width = TF.get_dimensions(img)
    crop_height, crop_width = output_size
    if crop_width > image_width or crop_height > image_height:
        padding_ltrb = [
            (crop_width - image_width) // 2 if crop_width > image_width else 0,
            (crop_height - image_height) // 2 if crop_height > image_height else 0,
            (crop_width - image_width + 1) // 2 if crop_width > image_width else 0,
            (crop_height - image_height + 1) // 2 if crop_height > image_height else 0,
        ]
        img = TF.pad(img, padding_ltrb, fill=fill)
        _, image_height, image_width = TF.get_dimensions(img)
        if crop_width == image_width and crop_height == image_height:
            return img
    crop_top = int(round((image_height - crop_height) / 2.0))
    crop_left = int(round((image_width - crop_width) / 2.0))
    return TF.crop(img, crop_top, crop_left, crop_height, crop_width)


def open_clip_preprocess(pixels, config):
    """image_transform(image_size, is_train=False, ...) as create_model sets it up: the size
    is the vision tower's image_size. Returns (u8 [h, w, 3], float32 [3, h, w])."""
    cfg = {k: v for k, v in config["preprocess_cfg"].items() if v is not None}
    image_size = config["model_cfg"]["vision_cfg"]["image_size"]
    size = tuple(image_size) if isinstance(image_size, list) else (image_size, image_size)
    mean, std = cfg.get("mean", CLIP_MEAN), cfg.get("std", CLIP_STD)
    interpolation = cfg.get("interpolation", "bicubic")
    mode = T.InterpolationMode.BILINEAR if interpolation == "bilinear" else T.InterpolationMode.BICUBIC
    resize_mode = cfg.get("resize_mode", "shortest")
    fill = cfg.get("fill_color", 0)
    img = Image.fromarray(pixels)
    if resize_mode == "longest":
        img = resize_keep_ratio(img, size, 1, mode)
        img = center_crop_or_pad(img, size, fill)
    elif resize_mode == "squash":
        img = T.Resize(size, interpolation=mode)(img)
    else:
        if size[0] == size[1]:
            img = T.Resize(size[0], interpolation=mode)(img)
        else:  # ResizeKeepRatio(image_size): its own default interpolation, bicubic
            img = resize_keep_ratio(img, size, 0, T.InterpolationMode.BICUBIC)
        img = T.CenterCrop(size)(img)
    img = img.convert("RGB")
    u8 = np.array(img)
    tensor = T.Normalize(mean=mean, std=std)(T.ToTensor()(img))
    return u8, tensor.numpy().astype(np.float32)


# ---------------------------------------------------------------------------------------
# the configs
# ---------------------------------------------------------------------------------------

HF_CONFIGS = {
    # openai/clip-vit-base-patch32's form (feature extractor era), scaled down
    "legacy_bicubic": {"crop_size": 24, "do_center_crop": True, "do_normalize": True,
                       "do_resize": True, "feature_extractor_type": "CLIPFeatureExtractor",
                       "image_mean": CLIP_MEAN, "image_std": CLIP_STD, "resample": 3,
                       "size": 28},
    # the form transformers writes today
    "current_bilinear": {"crop_size": {"height": 24, "width": 24}, "do_center_crop": True,
                         "do_convert_rgb": True, "do_normalize": True, "do_rescale": True,
                         "do_resize": True, "image_mean": CLIP_MEAN,
                         "image_processor_type": "CLIPImageProcessor", "image_std": CLIP_STD,
                         "resample": 2, "rescale_factor": 0.00392156862745098,
                         "size": {"shortest_edge": 24}, "processor_class": "CLIPProcessor"},
    "current_bicubic": {"crop_size": {"height": 24, "width": 24},
                        "image_processor_type": "CLIPImageProcessor", "resample": 3,
                        "size": {"shortest_edge": 24}},
    # a non-square crop, ImageNet statistics, odd sizes
    "nonsquare_crop": {"size": {"shortest_edge": 30}, "crop_size": {"height": 23, "width": 29},
                       "resample": 2, "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD},
    # a crop larger than the resized image: padded with zeros (ceil before)
    "crop_pads": {"size": {"shortest_edge": 16}, "crop_size": {"height": 27, "width": 22},
                  "resample": 3},
    # resize to exactly height x width, no crop; a single number as mean and std
    "exact_no_crop": {"size": {"height": 21, "width": 26}, "do_center_crop": False,
                      "resample": 2, "image_mean": 0.5, "image_std": 0.25},
    # no resize, a crop of the raw image; rescale off (normalize the bytes)
    "no_resize_no_rescale": {"do_resize": False, "crop_size": [11, 9], "do_rescale": False},
    # an unusual rescale factor, no normalization
    "factor_no_normalize": {"size": {"shortest_edge": 20, "longest_edge": 1000},
                            "crop_size": 20, "rescale_factor": 0.0123, "do_normalize": False},
}

OPEN_CLIP_CONFIGS = {
    # most hub files: only mean and std (the size comes from the vision tower)
    "default": ({}, 24),
    "bilinear": ({"interpolation": "bilinear", "resize_mode": "shortest",
                  "mean": IMAGENET_MEAN, "std": IMAGENET_STD}, 24),
    "random_interpolation": ({"interpolation": "random", "size": 99}, 24),
    "longest_fill": ({"resize_mode": "longest", "fill_color": 128, "interpolation": "bilinear"},
                     28),
    "longest_nonsquare": ({"resize_mode": "longest"}, [20, 30]),
    "squash": ({"resize_mode": "squash", "interpolation": "bilinear", "mean": 0.5, "std": 0.5},
               [24, 18]),
    # non-square shortest: ResizeKeepRatio(size) resizes bicubic whatever the interpolation
    "shortest_nonsquare": ({"interpolation": "bilinear", "fill_color": None}, [26, 20]),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        os.remove(os.path.join(OUT, name))
    save_safetensors(os.path.join(OUT, "sources.safetensors"), SOURCES)
    manifest = {"sources": sorted(SOURCES), "configs": []}

    def write(config_name, kind, config, run):
        with open(os.path.join(OUT, config_name + ".json"), "w") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        arrays = {}
        for source_name, pixels in SOURCES.items():
            u8, tensor = run(pixels, config)
            assert tensor.shape == (3,) + u8.shape[:2], (config_name, source_name)
            arrays[source_name + ".u8"] = np.ascontiguousarray(u8)
            arrays[source_name + ".pixels"] = np.ascontiguousarray(tensor)
        save_safetensors(os.path.join(OUT, config_name + ".safetensors"), arrays)
        manifest["configs"].append({"name": config_name, "kind": kind})

    for name, config in HF_CONFIGS.items():
        write("hf_" + name, "hf", config, hf_preprocess)
    for name, (preprocess_cfg, image_size) in OPEN_CLIP_CONFIGS.items():
        config = {"model_cfg": {"embed_dim": 16, "vision_cfg": {"image_size": image_size}},
                  "preprocess_cfg": preprocess_cfg}
        write("open_clip_" + name, "open_clip", config, open_clip_preprocess)

    # The crop rules differ: 27 x 24 cropped to 24 starts at column 1 (transformers) or 2
    # (torchvision). Recorded so the C++ test can check the fixture shows the difference.
    a = hf_preprocess(SOURCES["odd_offset_72x64"], HF_CONFIGS["current_bicubic"])[0]
    b = open_clip_preprocess(SOURCES["odd_offset_72x64"],
                             {"model_cfg": {"vision_cfg": {"image_size": 24}},
                              "preprocess_cfg": {}})[0]
    manifest["odd_offset_columns_differ"] = bool((a != b).any())
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {len(manifest['configs'])} configs x {len(SOURCES)} sources to {OUT} "
          f"({total} bytes)")


if __name__ == "__main__":
    main()
