#!/usr/bin/python3
"""Gradients of the pretrained towers for fine-tuning (issue 18): the PyTorch twins' autograd.

Run from the repository root with Debian's PyTorch (1.13), after the pretrained fixtures exist:

    /usr/bin/python3 tests/reference/make_tower_grad_fixtures.py

It deletes and rewrites tests/data/tower_grad/ (its README.md says what is there):

  attention_bias_kv.safetensors   torch.nn.MultiheadAttention(add_bias_kv=True) on two packed
                                  samples (the second causal): output and every gradient
  hf_clip.safetensors             a batch of the pretrained fixtures' own cases
  open_clip.safetensors           (tests/data/pretrained/<kind>/cases.safetensors, named in the
  imagebind.safetensors           metadata), its InfoNCE loss per SPEC 6, and the gradient of
                                  the loss with respect to every weight and to logit_scale

The models are the fixtures under tests/data/pretrained/{hf_clip,open_clip,imagebind} (read
from their files, F32 widened to float64), run through the twins that wrote them, imported
from make_clip_fixtures.py (transformers' CLIPModel; open_clip / OpenAI CLIP) and
make_imagebind_fixtures.py (ImageBindModel): nothing of their math is written again here.
Every value is float64.

The loss is the one TowerModel training computes (train/tower_step.hpp): each sample's unit
embedding (a video or long audio: the normalised mean of its clips' unit embeddings, as the
towers compute them; ImageBind's fixed per-modality logit scales vanish in the
normalisation); for each pair group (a run of a-side samples and a run of b-side samples)
InfoNCE = (CE(s a b^T, arange) + CE(s b a^T, arange)) / 2 with s = exp(min(logit_scale,
ln 100)); the groups' sum. ImageBind's batch is SPEC 6's binding: images as the anchor of two
groups, audio and text.

Gradients are stored under tessera's parameter names (TowerModel::parameters(): the
tessera_towers names with q, k, v apart, e.g. "image.transformer.resblocks.0.attn.q_proj.weight")
in tessera's layout (weights [out, in], patch weights [D, C*(T)*k*k], [D] for ImageBind's
[1, 1, D] tokens). A tensor of at most FULL_LIMIT values is stored whole as `grad.<name>`;
a larger one as summaries that see every element, in float64:
  grad.<name>.sum       sum_j g_j
  grad.<name>.norm      sqrt(sum_j g_j^2)
  grad.<name>.weighted  sum_j g_j ((37 j) mod 101 - 50)   (flat row-major index j)
  grad.<name>.sample    g_j at j = floor(k n / 64), k = 0..63
so the files stay small (the ImageBind vision stem alone has 28224 weights). The metadata
`names` lists every name in TowerModel::parameters() order (the C++ test checks the order).
Deterministic (one thread).
"""

import math
import os
import shutil
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import load_safetensors, save_safetensors  # noqa: E402
import make_clip_fixtures as clip  # noqa: E402
import make_imagebind_fixtures as ib  # noqa: E402

F64 = torch.float64
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED = os.path.join(ROOT, "data", "pretrained")
OUT = os.path.join(ROOT, "data", "tower_grad")
FULL_LIMIT = 1024
SAMPLES = 64
# logit_scale of the loss (the fixtures' own ln 100 rounded to F32 lies above the clamp, where
# the scale gets no gradient): exp(2) = 7.4, a temperature that keeps every pair's term alive
LOGIT_SCALE = 2.0
MAX_LOGIT_SCALE = math.log(100.0)


def info_nce(a, b, logit_scale):
    """SPEC 6 InfoNCE of unit rows a, b [N, E] (train/losses.hpp info_nce_loss)."""
    scale = logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()
    logits = scale * a @ b.T
    labels = torch.arange(a.shape[0])
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def group_loss(emb, groups, logit_scale):
    """sum over groups (a_first, b_first, count) of InfoNCE, weight 1 (train/step.hpp PairGroup)."""
    return sum(info_nce(emb[a:a + n], emb[b:b + n], logit_scale) for a, b, n in groups)


def summaries(name, g):
    """What the fixture stores of gradient g (in tessera's layout) under `name`."""
    g = g.detach().to(F64).contiguous()
    if g.numel() <= FULL_LIMIT:
        return {f"grad.{name}": g}
    flat = g.reshape(-1)
    n = flat.numel()
    j = torch.arange(n, dtype=torch.int64)
    weights = ((37 * j) % 101 - 50).to(F64)
    picks = torch.tensor([k * n // SAMPLES for k in range(SAMPLES)], dtype=torch.int64)
    return {f"grad.{name}.sum": flat.sum(), f"grad.{name}.norm": flat.norm(),
            f"grad.{name}.weighted": (flat * weights).sum(), f"grad.{name}.sample": flat[picks]}


def block_names(prefix, l, bias_kv):
    """The parameter names of one tower block, in Tower::collect_parameters order."""
    p = f"{prefix}transformer.resblocks.{l}."
    out = [p + "ln_1.weight", p + "ln_1.bias"]
    for part in ("q_proj", "k_proj", "v_proj"):
        out += [p + f"attn.{part}.weight", p + f"attn.{part}.bias"]
    if bias_kv:
        out += [p + "attn.bias_k", p + "attn.bias_v"]
    out += [p + "attn.out_proj.weight", p + "attn.out_proj.bias", p + "ln_2.weight", p + "ln_2.bias",
            p + "mlp.c_fc.weight", p + "mlp.c_fc.bias", p + "mlp.c_proj.weight", p + "mlp.c_proj.bias"]
    return out


class Mapping:
    """tessera parameter name -> a function of the twin's gradients giving that tensor, in
    TowerModel::parameters() order."""

    def __init__(self):
        self.entries = []

    def add(self, name, fn):
        self.entries.append((name, fn))

    def direct(self, name, source, transform=None):
        self.add(name, lambda g: (transform or (lambda t: t))(g[source]))

    def norm(self, name, source):
        self.direct(name + ".weight", source + ".weight")
        self.direct(name + ".bias", source + ".bias")

    def packed_block(self, prefix, l, source, bias_kv, names):
        """A block whose q, k, v sit packed in in_proj_weight / in_proj_bias (open_clip,
        ImageBind); names: the source names of (ln_1, attn, ln_2, c_fc, c_proj)."""
        ln1, attn, ln2, fc1, fc2 = (source + n for n in names)
        p = f"{prefix}transformer.resblocks.{l}."
        self.norm(p + "ln_1", ln1)
        for i, part in enumerate(("q_proj", "k_proj", "v_proj")):
            self.add(p + f"attn.{part}.weight", lambda g, i=i: g[attn + ".in_proj_weight"].chunk(3)[i])
            self.add(p + f"attn.{part}.bias", lambda g, i=i: g[attn + ".in_proj_bias"].chunk(3)[i])
        if bias_kv:
            self.direct(p + "attn.bias_k", attn + ".bias_k", lambda t: t.reshape(-1))
            self.direct(p + "attn.bias_v", attn + ".bias_v", lambda t: t.reshape(-1))
        self.direct(p + "attn.out_proj.weight", attn + ".out_proj.weight")
        self.direct(p + "attn.out_proj.bias", attn + ".out_proj.bias")
        self.norm(p + "ln_2", ln2)
        self.norm(p + "mlp.c_fc", fc1)
        self.norm(p + "mlp.c_proj", fc2)

    def names(self):
        return [n for n, _ in self.entries]


def flat_conv(t):  # [D, C, (T,) k, k] -> [D, C*(T)*k*k]
    return t.reshape(t.shape[0], -1)


def squeeze_row(t):  # ImageBind's [1, 1, D] or [1, L, D] -> [D] or [L, D]
    return t.reshape(t.shape[-2], t.shape[-1]) if t.shape[-2] > 1 else t.reshape(-1)


def write(kind, mapping, grads, loss, d_logit_scale, embeddings, samples, groups, extra_meta=""):
    names = mapping.names()
    assert len(set(names)) == len(names)
    out = {"loss": loss.detach(), "logit_scale": torch.tensor(LOGIT_SCALE, dtype=F64),
           "d_logit_scale": d_logit_scale.detach(), "embeddings": embeddings.detach(),
           "groups": torch.tensor(groups, dtype=torch.int64)}
    full = 0
    for name, fn in mapping.entries:
        g = fn(grads)
        out.update(summaries(name, g))
        full += g.numel() <= FULL_LIMIT
    meta = {"samples": ",".join(samples), "names": ",".join(names), "full_limit": str(FULL_LIMIT)}
    path = os.path.join(OUT, f"{kind}.safetensors")
    save_safetensors(path, out, meta)
    print(f"  {kind}: loss {float(loss):.6f}, {len(names)} tensors ({full} whole), "
          f"{os.path.getsize(path)} bytes")


def cases_of(kind):
    return load_safetensors(os.path.join(PRETRAINED, kind, "cases.safetensors"))[0]


def leaf_weights(tensors):
    """Float tensors widened to float64 as autograd leaves; integer buffers as they are."""
    return {k: (v.to(F64).requires_grad_(True) if v.is_floating_point() else v)
            for k, v in tensors.items()}


# ---------------------------------------------------------------------------------------------
# CLIP: transformers' CLIPModel and open_clip, text + image (+ video: one clip per frame)
# ---------------------------------------------------------------------------------------------


def clip_batch(fam, w, cases, samples):
    """The unit embeddings [N, E] of the named cases, through fam's text / image / video."""
    rows = []
    for s in samples:
        m, i = s.split(".")
        if m == "text":
            rows.append(fam.text(w, [cases[f"text.{i}.ids"].tolist()])[1][0])
        elif m == "image":
            rows.append(fam.image(w, cases[f"image.{i}.pixels"].unsqueeze(0))[1][0])
        else:
            rows.append(fam.video(w, cases[f"video.{i}.frames"])[1])
    return torch.stack(rows)


def hf_mapping(config):
    m = Mapping()
    layers_t, layers_v = config["text_config"]["num_hidden_layers"], config["vision_config"]["num_hidden_layers"]

    def blocks(prefix, source, layers):
        for l in range(layers):
            s = f"{source}.encoder.layers.{l}."
            p = f"{prefix}transformer.resblocks.{l}."
            m.norm(p + "ln_1", s + "layer_norm1")
            for part in ("q_proj", "k_proj", "v_proj"):
                m.norm(p + f"attn.{part}", s + f"self_attn.{part}")
            m.norm(p + "attn.out_proj", s + "self_attn.out_proj")
            m.norm(p + "ln_2", s + "layer_norm2")
            m.norm(p + "mlp.c_fc", s + "mlp.fc1")
            m.norm(p + "mlp.c_proj", s + "mlp.fc2")

    m.direct("text.token_embedding.weight", "text_model.embeddings.token_embedding.weight")
    m.direct("text.positional_embedding", "text_model.embeddings.position_embedding.weight")
    blocks("text.", "text_model", layers_t)
    m.norm("text.ln_post", "text_model.final_layer_norm")
    m.direct("text.proj.weight", "text_projection.weight")
    m.direct("image.conv1.weight", "vision_model.embeddings.patch_embedding.weight", flat_conv)
    m.direct("image.class_embedding", "vision_model.embeddings.class_embedding")
    m.direct("image.positional_embedding", "vision_model.embeddings.position_embedding.weight")
    m.norm("image.ln_pre", "vision_model.pre_layrnorm")
    blocks("image.", "vision_model", layers_v)
    m.norm("image.ln_post", "vision_model.post_layernorm")
    m.direct("image.proj.weight", "visual_projection.weight")
    m.add("logit_scale", lambda g: g["logit_scale"])
    return m


def oc_mapping():
    m = Mapping()
    parts = ("ln_1", "attn", "ln_2", "mlp.c_fc", "mlp.c_proj")
    m.direct("text.token_embedding.weight", "token_embedding.weight")
    m.direct("text.positional_embedding", "positional_embedding")
    for l in range(clip.OC_TEXT_CFG["layers"]):
        m.packed_block("text.", l, f"transformer.resblocks.{l}.", False, parts)
    m.norm("text.ln_post", "ln_final")
    m.direct("text.proj.weight", "text_projection", lambda t: t.T)
    m.direct("image.conv1.weight", "visual.conv1.weight", flat_conv)
    m.direct("image.class_embedding", "visual.class_embedding")
    m.direct("image.positional_embedding", "visual.positional_embedding")
    m.norm("image.ln_pre", "visual.ln_pre")
    for l in range(clip.OC_VISION_CFG["layers"]):
        m.packed_block("image.", l, f"visual.transformer.resblocks.{l}.", False, parts)
    m.norm("image.ln_post", "visual.ln_post")
    m.direct("image.proj.weight", "visual.proj", lambda t: t.T)
    m.add("logit_scale", lambda g: g["logit_scale"])
    return m


def make_clip_kind(kind, fam, weights_file, mapping, samples, groups):
    cases = cases_of(kind)
    w = leaf_weights(load_safetensors(os.path.join(PRETRAINED, kind, "model", weights_file))[0])
    logit_scale = torch.tensor(LOGIT_SCALE, dtype=F64, requires_grad=True)
    emb = clip_batch(fam, w, cases, samples)
    for s, row in zip(samples, emb):  # the batch's embeddings are the fixture's own
        assert (row - cases[f"{s}.embedding"]).abs().max() < 1e-12, s
    loss = group_loss(emb, groups, logit_scale)
    leaves = [v for v in w.values() if v.is_floating_point() and v.requires_grad]
    got = torch.autograd.grad(loss, leaves + [logit_scale], allow_unused=True)
    keys = [k for k, v in w.items() if v.is_floating_point() and v.requires_grad]
    grads = {k: (g if g is not None else torch.zeros_like(w[k])) for k, g in zip(keys, got)}
    grads["logit_scale"] = got[-1]
    write(kind, mapping, grads, loss, got[-1], emb, samples, groups)


def make_hf_clip():
    fam = clip.Family("hf_clip", clip.hf_get_text_features, clip.hf_get_image_features,
                      clip.HF_TEXT["pad_token_id"])
    samples = ["text.0", "text.1", "text.2", "text.3", "image.0", "image.1", "video.0", "video.1"]
    config = clip.hf_config_json()
    make_clip_kind("hf_clip", fam, "model.safetensors", hf_mapping(config), samples, [(0, 4, 4)])


def make_open_clip():
    fam = clip.Family("open_clip", clip.oc_encode_text, clip.oc_encode_image, clip.OC_PAD)
    samples = ["text.0", "text.1", "text.2", "image.0", "image.1", "video.0"]
    make_clip_kind("open_clip", fam, "open_clip_model.safetensors", oc_mapping(), samples,
                   [(0, 3, 3)])


# ---------------------------------------------------------------------------------------------
# ImageBind: image (anchor) + audio (bias_kv, stem norm, 1 and 3 clips) + text (binding)
# ---------------------------------------------------------------------------------------------


def ib_mapping(model):
    m = Mapping()
    parts = ("norm_1", "attn", "norm_2", "mlp.fc1", "mlp.fc2")
    a = model.args
    pre, trunk, head = "modality_preprocessors.", "modality_trunks.", "modality_heads."
    # TowerModel order: text, image, audio (the Modality enum), logit_scale last
    m.direct("text.token_embedding.weight", pre + "text.token_embedding.weight")
    m.direct("text.positional_embedding", pre + "text.pos_embed", squeeze_row)
    for l in range(a["text_num_blocks"]):
        m.packed_block("text.", l, f"{trunk}text.blocks.{l}.", False, parts)
    m.norm("text.ln_post", head + "text.proj.0")
    m.direct("text.proj.weight", head + "text.proj.1.weight")
    m.direct("image.conv1.weight", pre + "vision.rgbt_stem.proj.1.weight", flat_conv)
    m.direct("image.class_embedding", pre + "vision.cls_token", squeeze_row)
    m.direct("image.positional_embedding", pre + "vision.pos_embedding_helper.pos_embed", squeeze_row)
    m.norm("image.ln_pre", trunk + "vision.pre_transformer_layer.0")
    for l in range(a["vision_num_blocks"]):
        m.packed_block("image.", l, f"{trunk}vision.blocks.{l}.", False, parts)
    m.norm("image.ln_post", head + "vision.0")
    m.direct("image.proj.weight", head + "vision.2.weight")
    m.direct("audio.conv1.weight", pre + "audio.rgbt_stem.proj.weight", flat_conv)
    m.norm("audio.stem_norm", pre + "audio.rgbt_stem.norm_layer")
    m.direct("audio.class_embedding", pre + "audio.cls_token", squeeze_row)
    m.direct("audio.positional_embedding", pre + "audio.pos_embedding_helper.pos_embed", squeeze_row)
    for l in range(a["audio_num_blocks"]):
        m.packed_block("audio.", l, f"{trunk}audio.blocks.{l}.", True, parts)
    m.norm("audio.ln_post", head + "audio.0")
    m.direct("audio.proj.weight", head + "audio.2.weight")
    m.add("logit_scale", lambda g: g["logit_scale"])
    return m


def make_imagebind():
    cases = cases_of("imagebind")
    model = ib.ImageBindModel(**ib.CONFIG).to(F64)
    state, _ = load_safetensors(os.path.join(PRETRAINED, "imagebind", "model", "model.safetensors"))
    model.load_state_dict({k: v.to(F64) if v.is_floating_point() else v for k, v in state.items()})
    T = model.args["audio_target_len"]
    samples = ["image.0", "video.1", "audio.0", "audio.1", "text.1", "text.2"]
    groups = [(0, 2, 2), (0, 4, 2)]  # SPEC 6 binding: the image anchor with audio, with text
    rows = []
    for s in samples:
        m, i = s.split(".")
        if m == "text":
            out, _ = model.encode("text", ib.padded([cases[f"text.{i}.ids"]]))
        elif m == "image":
            out, _ = model.encode("vision", cases[f"image.{i}.pixels"].to(F64).unsqueeze(0))
        elif m == "video":
            out, _ = model.encode("vision", ib.video_clips(cases[f"video.{i}.frames"].to(F64)))
        else:
            out, _ = model.encode("audio", ib.audio_clips(cases[f"audio.{i}.features"], T))
        rows.append(ib.unit(out[0]))
    emb = torch.stack(rows)
    for s, row in zip(samples, emb):
        assert (row - cases[f"{s}.embedding"]).abs().max() < 1e-12, s
    logit_scale = torch.tensor(LOGIT_SCALE, dtype=F64, requires_grad=True)
    loss = group_loss(emb, groups, logit_scale)
    params = dict(model.named_parameters())
    got = torch.autograd.grad(loss, list(params.values()) + [logit_scale], allow_unused=True)
    grads = {k: (g if g is not None else torch.zeros_like(params[k]))
             for k, g in zip(params, got)}
    grads["logit_scale"] = got[-1]
    write("imagebind", ib_mapping(model), grads, loss, got[-1], emb, samples, groups)


# ---------------------------------------------------------------------------------------------
# the attention layer: torch.nn.MultiheadAttention(add_bias_kv=True)
# ---------------------------------------------------------------------------------------------


def make_attention_bias_kv():
    """Two samples packed back to back (3 and 5 tokens; the second causal, the mask padded
    with a zero column for the extra key as PyTorch does), D 8, 2 heads; loss sum(out * R)."""
    g = torch.Generator().manual_seed(1818)
    D, H, lengths = 8, 2, (3, 5)
    mha = torch.nn.MultiheadAttention(D, H, bias=True, add_bias_kv=True).to(F64)
    with torch.no_grad():
        for p in mha.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64) * 0.5)
    x = torch.randn(sum(lengths), D, generator=g, dtype=F64, requires_grad=True)
    r = torch.randn(sum(lengths), D, generator=g, dtype=F64)
    outs, first = [], 0
    for s, n in enumerate(lengths):
        xs = x[first:first + n].unsqueeze(1)  # [L, 1, D]
        mask = torch.full((n, n), float("-inf"), dtype=F64).triu(1) if s == 1 else None
        outs.append(mha(xs, xs, xs, need_weights=False, attn_mask=mask)[0][:, 0])
        first += n
    y = torch.cat(outs)
    (y * r).sum().backward()
    w, b = mha.in_proj_weight, mha.in_proj_bias
    out = {"x": x.detach(), "d_out": r, "y": y.detach(), "d_x": x.grad}
    for i, part in enumerate(("q_proj", "k_proj", "v_proj")):
        out[f"{part}.weight"] = w.detach().chunk(3)[i].contiguous()
        out[f"{part}.bias"] = b.detach().chunk(3)[i].contiguous()
        out[f"grad.{part}.weight"] = w.grad.chunk(3)[i].contiguous()
        out[f"grad.{part}.bias"] = b.grad.chunk(3)[i].contiguous()
    out["out_proj.weight"], out["out_proj.bias"] = mha.out_proj.weight.detach(), mha.out_proj.bias.detach()
    out["grad.out_proj.weight"], out["grad.out_proj.bias"] = mha.out_proj.weight.grad, mha.out_proj.bias.grad
    out["bias_k"], out["bias_v"] = mha.bias_k.detach().reshape(-1), mha.bias_v.detach().reshape(-1)
    out["grad.bias_k"], out["grad.bias_v"] = mha.bias_k.grad.reshape(-1), mha.bias_v.grad.reshape(-1)
    meta = {"heads": str(H), "lengths": ",".join(map(str, lengths)), "causal": "1"}
    path = os.path.join(OUT, "attention_bias_kv.safetensors")
    save_safetensors(path, out, meta)
    print(f"  attention_bias_kv: {os.path.getsize(path)} bytes")


def main():
    torch.set_num_threads(1)
    readme = os.path.join(OUT, "README.md")
    with open(readme) as f:  # kept across the rewrite
        kept = f.read()
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    with open(readme, "w") as f:
        f.write(kept)
    make_attention_bias_kv()
    make_hf_clip()
    make_open_clip()
    make_imagebind()


if __name__ == "__main__":
    main()
