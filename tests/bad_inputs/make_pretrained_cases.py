#!/usr/bin/python3
"""Bad pretrained model directories (issue 17): one defect each, over a good fixture.

Run from the repository root (standard library only):

    /usr/bin/python3 tests/bad_inputs/make_pretrained_cases.py

writes tests/bad_inputs/pretrained/<case>/ holding only the defective file(s). Each catalogue
entry names its "base": a fixture under tests/data/ (e.g. "pretrained/hf_clip") whose model/
directory supplies every other file, as models/<case>/ does with tests/bad_inputs/model/.
CASES holds the catalogue lines; make_bad_inputs.py adds them. Deterministic.
"""

import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data")
CASES = []


def base_file(base, name):
    return os.path.join(DATA, base, "model", name)


def case_dir(name):
    path = os.path.join(HERE, "pretrained", name)
    os.makedirs(path, exist_ok=True)
    return path


def write(name, file, content):
    mode = "wb" if isinstance(content, bytes) else "w"
    with open(os.path.join(case_dir(name), file), mode) as f:
        f.write(content)


def add(cls, name, base, error):
    CASES.append({"class": cls, "file": "pretrained/" + name, "option": "--model",
                  "base": base, "error": error})


def tiny_towers(extra=None):
    """A tessera_towers model with one image tower of width 4 (a few hundred bytes)."""
    d, patch, size = 4, 4, 8
    tensors = {
        "vision.conv1.weight": [d, 3, patch, patch],
        "vision.class_embedding": [d],
        "vision.positional_embedding": [1 + (size // patch) ** 2, d],
        "vision.transformer.resblocks.0.ln_1.weight": [d],
        "vision.transformer.resblocks.0.ln_1.bias": [d],
        "vision.transformer.resblocks.0.attn.in_proj_weight": [3 * d, d],
        "vision.transformer.resblocks.0.attn.in_proj_bias": [3 * d],
        "vision.transformer.resblocks.0.attn.out_proj.weight": [d, d],
        "vision.transformer.resblocks.0.attn.out_proj.bias": [d],
        "vision.transformer.resblocks.0.ln_2.weight": [d],
        "vision.transformer.resblocks.0.ln_2.bias": [d],
        "vision.transformer.resblocks.0.mlp.c_fc.weight": [8, d],
        "vision.transformer.resblocks.0.mlp.c_fc.bias": [8],
        "vision.transformer.resblocks.0.mlp.c_proj.weight": [d, 8],
        "vision.transformer.resblocks.0.mlp.c_proj.bias": [d],
        "vision.ln_post.weight": [d],
        "vision.ln_post.bias": [d],
        "vision.proj.weight": [d, d],
    }
    if extra:
        tensors[extra] = [d]
    header, data = {}, b""
    for name in sorted(tensors):
        count = 1
        for n in tensors[name]:
            count *= n
        values = [((i * 7 + len(name)) % 11 - 5) / 10 for i in range(count)]
        header[name] = {"dtype": "F32", "shape": tensors[name],
                        "data_offsets": [len(data), len(data) + 4 * count]}
        data += struct.pack("<%df" % count, *values)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    weights = struct.pack("<Q", len(text)) + text + data
    config = {"model_type": "tessera_towers", "embed_dim": d,
              "towers": {"vision": {"modality": "image", "width": d, "layers": 1, "heads": 2,
                                    "ffn_dim": 8, "image_size": size, "patch_size": patch}}}
    processor = {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": size},
                 "crop_size": {"height": size, "width": size}}
    return weights, json.dumps(config), json.dumps(processor)


def main():
    shutil.rmtree(os.path.join(HERE, "pretrained"), ignore_errors=True)

    write("unknown_model_type", "config.json", '{"model_type": "bert"}\n')
    add("unknown model type", "unknown_model_type", "pretrained/hf_clip",
        'model_type "bert" is not one tessera loads')

    with open(base_file("pretrained/hf_clip", "config.json")) as f:
        config = json.load(f)
    text = config["text_config"]
    width, ffn = text["hidden_size"], text["intermediate_size"]
    text["intermediate_size"] = 2 * ffn
    write("config_disagrees_with_weights", "config.json", json.dumps(config, indent=2))
    add("config and weights disagree", "config_disagrees_with_weights", "pretrained/hf_clip",
        f"tensor 'text_model.encoder.layers.0.mlp.fc1.weight' has shape [{ffn}, {width}], "
        f"expected [{2 * ffn}, {width}] (the text tower)")

    with open(base_file("pretrained/hf_clip", "config.json")) as f:
        config = json.load(f)
    config["text_config"]["vocab_size"] = 2 ** 31
    write("absurd_vocab_size", "config.json", json.dumps(config, indent=2))
    add("lying sizes", "absurd_vocab_size", "pretrained/hf_clip",
        "describes a model of 68719")

    with open(base_file("pretrained/open_clip", "open_clip_config.json")) as f:
        config = json.load(f)
    config["model_cfg"]["vision_cfg"]["layers"] = [3, 4, 6, 3]
    write("resnet_tower", "open_clip_config.json", json.dumps(config, indent=2))
    add("ResNet tower", "resnet_tower", "pretrained/open_clip",
        "a ResNet image tower (ModifiedResNet), which tessera does not run")

    write("open_clip_config_not_json", "open_clip_config.json", '{"model_cfg": {"embed_dim": 24,')
    add("malformed JSON", "open_clip_config_not_json", "pretrained/open_clip", "not valid JSON")

    write("no_tokenizer", "NOTE.txt", "a model without tokenizer files, given raw text\n")
    add("missing tokenizer", "no_tokenizer", "pretrained/hf_clip",
        "the model has no tokenizer files (vocab.json + merges.txt, or "
        "bpe_simple_vocab_16e6.txt.gz): give token ids instead of text")

    write("tokenizer_not_gzip", "bpe_simple_vocab_16e6.txt.gz", b"not a gzip stream\n" * 4)
    add("wrong magic", "tokenizer_not_gzip", "pretrained/hf_clip",
        "bpe_simple_vocab_16e6.txt.gz: not gzip data: it starts with the bytes 0x6E 0x6F, "
        "not 0x1F 0x8B")

    with open(base_file("pretrained/hf_clip", "preprocessor_config.json")) as f:
        processor = json.load(f)
    processor["resample"] = 1
    write("resample_lanczos", "preprocessor_config.json", json.dumps(processor, indent=2))
    add("wrong type", "resample_lanczos", "pretrained/hf_clip", "is not supported")

    with open(base_file("pretrained/imagebind", "config.json")) as f:
        config = json.load(f)
    config["vision_num_layers"] = 3
    write("imagebind_unknown_argument", "config.json", json.dumps(config, indent=2))
    add("wrong type", "imagebind_unknown_argument", "pretrained/imagebind",
        'unknown key "vision_num_layers" (not an argument of ImageBindModel)')

    weights, config, processor = tiny_towers(extra="vision.extra")
    write("unexpected_tensor", "model.safetensors", weights)
    write("unexpected_tensor", "config.json", config)
    write("unexpected_tensor", "preprocessor_config.json", processor)
    add("unexpected tensor", "unexpected_tensor", "pretrained/towers_torchvision",
        "unexpected tensor 'vision.extra'")

    for case in CASES:
        print(json.dumps(case))


if __name__ == "__main__":
    main()
