#!/usr/bin/python3
"""PyTorch twin of tessera: writes the reference fixtures the C++ tests check.

Run from the repository root with Debian's PyTorch:

    /usr/bin/python3 tests/reference/make_fixtures.py

It overwrites tests/data/layers/ (one safetensors file per layer: inputs, weights, outputs)
and tests/data/encoder/<variant>/ (config.json, model.safetensors, input.<i>.safetensors,
expected.safetensors). tests/reference/README.md documents every file.

The model follows SPEC.md sections 2, 3, 4 and 6 word by word, written with plain torch ops.
Weights are drawn at random, rounded to the dtype they are stored in, and every expected
output is computed in float64 from the rounded values; the encoder is also run in float32
and the float32-vs-float64 difference is printed as a sanity check.
Deterministic: every fixture draws from its own fixed-seed generator.
"""

import json
import math
import os
import shutil
import struct
import sys

import torch
import torch.nn.functional as F

F64 = torch.float64
MODALITIES = ("text", "image", "audio", "video")  # index = modality id (SPEC 2)

# ---------------------------------------------------------------------------------------
# safetensors writer and reader (8-byte LE header length, JSON header, raw LE data)
# ---------------------------------------------------------------------------------------

ST_DTYPES = {
    torch.float64: ("F64", "<f8"),
    torch.float32: ("F32", "<f4"),
    torch.float16: ("F16", "<f2"),
    torch.bfloat16: ("BF16", "<i2"),  # bit pattern through an int16 view
    torch.int64: ("I64", "<i8"),
    torch.int32: ("I32", "<i4"),
}
ST_FROM_NAME = {
    "F64": (torch.float64, "<f8"),
    "F32": (torch.float32, "<f4"),
    "F16": (torch.float16, "<f2"),
    "BF16": (torch.bfloat16, "<i2"),
    "I64": (torch.int64, "<i8"),
    "I32": (torch.int32, "<i4"),
}


def tensor_bytes(t):
    t = t.detach().contiguous().cpu()
    _, np_dtype = ST_DTYPES[t.dtype]
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().astype(np_dtype, copy=False).tobytes()


def save_safetensors(path, tensors, metadata=None):
    """tensors: {name: torch tensor}; metadata: {str: str} stored as __metadata__."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        dtype_name, _ = ST_DTYPES[t.dtype]
        data = tensor_bytes(t)
        header[name] = {
            "dtype": dtype_name,
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)


def load_safetensors(path):
    """Returns ({name: tensor}, metadata). Used to check what was written."""
    import numpy as np

    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    data = raw[8 + n :]
    metadata = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        dtype, np_dtype = ST_FROM_NAME[info["dtype"]]
        begin, end = info["data_offsets"]
        arr = np.frombuffer(data[begin:end], dtype=np_dtype).copy()
        t = torch.from_numpy(arr)
        if dtype == torch.bfloat16:
            t = t.view(torch.bfloat16)
        out[name] = t.reshape(info["shape"])
    return out, metadata


# ---------------------------------------------------------------------------------------
# Random draws (float64, one generator per fixture)
# ---------------------------------------------------------------------------------------


class Draw:
    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def normal(self, *shape, scale=1.0, mean=0.0):
        return torch.randn(*shape, generator=self.g, dtype=F64) * scale + mean

    def uniform(self, *shape, low=0.0, high=1.0):
        return torch.rand(*shape, generator=self.g, dtype=F64) * (high - low) + low

    def ints(self, low, high, *shape):
        return torch.randint(low, high, shape, generator=self.g, dtype=torch.int64)

    # Common weight kinds, scaled so activations stay O(1).
    def linear_weight(self, out_dim, in_dim, gain=1.0):  # [out, in]
        return self.normal(out_dim, in_dim, scale=gain / math.sqrt(in_dim))

    def bias(self, n):
        return self.normal(n, scale=0.05)

    def norm_weight(self, n):
        return self.normal(n, scale=0.1, mean=1.0)


def rounded(t, dtype):
    """The float64 value of t rounded to a storage dtype (exactly representable there)."""
    return t.to(dtype).to(F64)


# ---------------------------------------------------------------------------------------
# The model, SPEC 2-3 (dtype generic: float64 for expected values, float32 for the check)
# ---------------------------------------------------------------------------------------


def sub(weights, prefix):
    """The tensors under `prefix.`, with the prefix stripped."""
    p = prefix + "."
    return {k[len(p) :]: v for k, v in weights.items() if k.startswith(p)}


def norm(x, p, kind, eps):
    # layernorm: (x - mean) / sqrt(var + eps) * w + b (biased var); rmsnorm: x / rms * w
    if kind == "layernorm":
        return F.layer_norm(x, (x.shape[-1],), p["weight"], p["bias"], eps)
    if kind == "rmsnorm":
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * p["weight"]
    raise ValueError(kind)


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def activation(x, name):
    if name == "gelu":
        return F.gelu(x, approximate="none")
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "quick_gelu":
        return quick_gelu(x)
    if name == "relu":
        return F.relu(x)
    if name == "silu":
        return F.silu(x)
    raise ValueError(name)


def ffn(x, p, act):
    """x [L, D] -> [L, D]. swiglu: down(silu(gate x) * up x); else fc2(act(fc1 x))."""
    if act == "swiglu":
        return F.linear(F.silu(F.linear(x, p["gate.weight"])) * F.linear(x, p["up.weight"]),
                        p["down.weight"])
    return F.linear(activation(F.linear(x, p["fc1.weight"], p["fc1.bias"]), act),
                    p["fc2.weight"], p["fc2.bias"])


def default_rope_sections(dh):
    half = dh // 2
    s_yx = (3 * half) // 8
    return [half - 2 * s_yx, s_yx, s_yx]


def rope(x, positions, heads, theta, sections):
    """Multi-axis rotate_half RoPE (SPEC 2). x [L, H*dh], positions int [L, 3] (t, y, x)."""
    L, D = x.shape
    dh = D // heads
    half = dh // 2
    assert sum(sections) == half
    i = torch.arange(half, dtype=F64)
    inv_freq = (float(theta) ** (-2.0 * i / dh)).to(x.dtype)  # [dh/2]
    axis = torch.tensor([0] * sections[0] + [1] * sections[1] + [2] * sections[2])  # [dh/2]
    angle = positions[:, axis].to(x.dtype) * inv_freq  # [L, dh/2]
    cos = torch.cos(angle)[:, None, :]  # [L, 1, dh/2]
    sin = torch.sin(angle)[:, None, :]
    xh = x.view(L, heads, dh)
    x1, x2 = xh[..., :half], xh[..., half:]
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out.reshape(L, D)


def attention(xq, xkv, p, heads, allowed=None, pos_q=None, pos_k=None, theta=None,
              sections=None):
    """SPEC 3 attention. xq [Lq, D], xkv [Lk, D], allowed bool [Lq, Lk] or None -> [Lq, D]."""
    q = F.linear(xq, p["q_proj.weight"], p["q_proj.bias"])
    k = F.linear(xkv, p["k_proj.weight"], p["k_proj.bias"])
    v = F.linear(xkv, p["v_proj.weight"], p["v_proj.bias"])
    if pos_q is not None:
        q = rope(q, pos_q, heads, theta, sections)
        k = rope(k, pos_k, heads, theta, sections)
    Lq, D = q.shape
    Lk = k.shape[0]
    dh = D // heads
    qh = q.view(Lq, heads, dh).transpose(0, 1)  # [H, Lq, dh]
    kh = k.view(Lk, heads, dh).transpose(0, 1)
    vh = v.view(Lk, heads, dh).transpose(0, 1)
    scores = qh @ kh.transpose(1, 2) / math.sqrt(dh)  # [H, Lq, Lk]
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = (probs @ vh).transpose(0, 1).reshape(Lq, D)  # heads concatenated in order
    return F.linear(out, p["out_proj.weight"], p["out_proj.bias"])


def packed_mask(offsets, text_begin, text_end, causal):
    """allowed [L, L]: sample blocks only; with causal, text i does not see later text j."""
    L = offsets[-1]
    allowed = torch.zeros(L, L, dtype=torch.bool)
    for n in range(len(offsets) - 1):
        a, b = offsets[n], offsets[n + 1]
        allowed[a:b, a:b] = True
        if causal:
            tb, te = text_begin[n], text_end[n]
            for i in range(tb, te):
                allowed[i, i + 1 : te] = False
    return allowed


def block(x, p, cfg, allowed=None, positions=None):
    """Pre-norm block: h = x + Attn(Norm1 x); x = h + FFN(Norm2 h)."""
    kind, eps = cfg["norm"], cfg["norm_eps"]
    hn = norm(x, sub(p, "norm1"), kind, eps)
    if positions is not None:
        a = attention(hn, hn, sub(p, "attn"), cfg["num_heads"], allowed, positions, positions,
                      cfg["rope_theta"], cfg["sections"])
    else:
        a = attention(hn, hn, sub(p, "attn"), cfg["num_heads"], allowed)
    h = x + a
    return h + ffn(norm(h, sub(p, "norm2"), kind, eps), sub(p, "ffn"), cfg["activation"])


def patch_embed_image(image, weight, bias, patch):
    """image [C, S, S] -> [(S/P)^2, D]; weight [D, C*P*P] or [D, C, P, P]."""
    C = image.shape[0]
    w = weight.reshape(weight.shape[0], C, patch, patch)
    y = F.conv2d(image[None], w, bias, stride=patch)  # [1, D, S/P, S/P]
    return y[0].flatten(1).transpose(0, 1)  # row-major patch order


def patch_embed_audio(features, weight, bias, patch_frames):
    """features [M, T] -> [ceil(T/pf), D]; the last chunk zero-padded; weight [D, M*pf]."""
    M, T = features.shape
    n = -(-T // patch_frames)
    padded = F.pad(features, (0, n * patch_frames - T))  # zeros after the last frame
    w = weight.reshape(weight.shape[0], M, patch_frames)  # (mel, frame) flattening
    y = F.conv1d(padded[None], w, bias, stride=patch_frames)  # [1, D, n]
    return y[0].transpose(0, 1)


def patch_embed_video(video, weight, bias, tubelet, patch):
    """video [T, C, S, S] -> [K*(S/P)^2, D] in (step, row, col) order; K = ceil(T/tubelet)."""
    T, C = video.shape[0], video.shape[1]
    K = -(-T // tubelet)
    if K * tubelet > T:  # repeat the last frame
        video = torch.cat([video, video[-1:].expand(K * tubelet - T, *video.shape[1:])], 0)
    w = weight.reshape(weight.shape[0], C, tubelet, patch, patch)  # (c, dt, ky, kx)
    y = F.conv3d(video.permute(1, 0, 2, 3)[None], w, bias, stride=(tubelet, patch, patch))
    return y[0].flatten(1).transpose(0, 1), K  # [K*rows*cols, D]


def attention_pool(tokens, p, steps, heads, kind, eps):
    """Video pooling. tokens [K*Np, D] -> [K*Nq, D]:
    out_k = Q + Attn(norm_q(Q), norm_kv(tokens_k + pos_embed)), no RoPE, no mask."""
    Q = p["queries"]  # [Nq, D]
    Np = tokens.shape[0] // steps
    qn = norm(Q, sub(p, "norm_q"), kind, eps)
    outs = []
    for k in range(steps):
        kv = tokens[k * Np : (k + 1) * Np] + p["pos_embed"]
        outs.append(Q + attention(qn, norm(kv, sub(p, "norm_kv"), kind, eps), sub(p, "attn"),
                                  heads))
    return torch.cat(outs, 0)


def front_end(cfg, w, sample):
    """One sample -> x [L, D], positions int64 [L, 3], modality int64 [L] (-1 for cls)."""
    learned = cfg["position"] == "learned"
    cls = cfg["pooling"] == "cls"
    xs, poss, mods = [], [], []
    s = 1 if cls else 0

    def add(x, pos, m):
        x = x + w["modality_embed.weight"][m]
        xs.append(x)
        poss.append(pos)
        mods.append(torch.full((x.shape[0],), m, dtype=torch.int64))

    if "text_ids" in sample:
        ids = sample["text_ids"].to(torch.int64)
        n = ids.shape[0]
        x = F.embedding(ids, w["text.token_embed.weight"])
        if learned:
            x = x + w["text.pos_embed.weight"][:n]
        i = torch.arange(n)
        add(x, torch.stack([s + i, s + i, s + i], 1), 0)
        s += n
    if "image" in sample:
        ic = cfg["image"]
        x = patch_embed_image(sample["image"], w["image.patch_embed.weight"],
                              w["image.patch_embed.bias"], ic["patch"])
        g = ic["size"] // ic["patch"]
        if learned:
            x = x + w["image.pos_embed.weight"][: x.shape[0]]
        r = torch.arange(g).repeat_interleave(g)
        c = torch.arange(g).repeat(g)
        add(x, torch.stack([torch.full_like(r, s), s + r, s + c], 1), 1)
        s += g
    if "audio" in sample:
        ac = cfg["audio"]
        x = patch_embed_audio(sample["audio"], w["audio.patch_embed.weight"],
                              w["audio.patch_embed.bias"], ac["patch_frames"])
        n = x.shape[0]
        if learned:
            x = x + w["audio.pos_embed.weight"][:n]
        j = torch.arange(n)
        add(x, torch.stack([s + j, s + j, s + j], 1), 2)
        s += n
    if "video" in sample:
        ic, vc = cfg["image"], cfg["video"]
        x, K = patch_embed_video(sample["video"], w["video.patch_embed.weight"],
                                 w["video.patch_embed.bias"], vc["tubelet"], ic["patch"])
        g = ic["size"] // ic["patch"]
        nq = vc["pool_queries"]
        if nq > 0:
            x = attention_pool(x, sub(w, "video.pool"), K, cfg["num_heads"], cfg["norm"],
                               cfg["norm_eps"])
            k = torch.arange(K).repeat_interleave(nq)
            pos = torch.stack([s + k, s + k, s + k], 1)
            s += K
        else:
            if learned:
                x = x + w["video.pos_embed.weight"][: x.shape[0]]
            k = torch.arange(K).repeat_interleave(g * g)
            r = torch.arange(g).repeat_interleave(g).repeat(K)
            c = torch.arange(g).repeat(g * K)
            pos = torch.stack([s + k, s + r, s + c], 1)
            s += max(K, g, g)
        add(x, pos, 3)
    for k, c in enumerate(cfg.get("custom_modalities") or []):  # user modalities 4, 5, ...
        name = c["name"]
        if name not in sample:
            continue
        x = F.linear(sample[name], w[f"{name}.patch_embed.weight"], w[f"{name}.patch_embed.bias"])
        n = x.shape[0]
        if learned:
            x = x + w[f"{name}.pos_embed.weight"][:n]
        if name + ".positions" in sample:  # (t, y, x) offsets; then s += 1 + the largest
            offsets = sample[name + ".positions"].to(torch.int64)
            pos = s + offsets
            s += 1 + int(offsets.max())
        else:  # a sequence, like audio
            j = torch.arange(n)
            pos = torch.stack([s + j, s + j, s + j], 1)
            s += n
        add(x, pos, 4 + k)
    x = torch.cat(xs, 0)
    pos = torch.cat(poss, 0)
    mod = torch.cat(mods, 0)
    if cls:
        x = torch.cat([w["cls_token"], x], 0)
        pos = torch.cat([torch.zeros(1, 3, dtype=torch.int64), pos], 0)
        mod = torch.cat([torch.full((1,), -1, dtype=torch.int64), mod], 0)
    return x, pos, mod


def pool(cfg, w, x, mod):
    """x [L, D] (one sample, after the final norm) -> p [D], routing weights [4 + custom]
    or None."""
    if cfg["pooling"] == "mean":
        return x.mean(0), None
    if cfg["pooling"] == "cls":
        return x[0], None
    count = 4 + len(cfg.get("custom_modalities") or [])
    present = [m for m in range(count) if bool((mod == m).any())]
    p_m = torch.stack([x[mod == m].mean(0) for m in present], 0)  # [n_present, D]
    g = F.linear(p_m.mean(0), w["router.weight"], w["router.bias"])  # [count]
    weights = torch.softmax(g[present], dim=0)
    full = torch.zeros(count, dtype=x.dtype)
    full[present] = weights
    return (weights[:, None] * p_m).sum(0), full


def encode(cfg, w, samples):
    """A packed batch of samples -> dict of embeddings [N, E] and per-sample tensors."""
    fronts = [front_end(cfg, w, s) for s in samples]
    offsets = [0]
    text_begin, text_end = [], []
    for x, _, mod in fronts:
        idx = (mod == 0).nonzero().flatten()
        tb = offsets[-1] + (int(idx[0]) if len(idx) else 0)
        text_begin.append(tb)
        text_end.append(tb + len(idx))
        offsets.append(offsets[-1] + x.shape[0])
    x = torch.cat([f[0] for f in fronts], 0)
    positions = torch.cat([f[1] for f in fronts], 0)
    allowed = packed_mask(offsets, text_begin, text_end, cfg["text"]["causal"] if "text" in cfg
                          else False)
    use_rope = cfg["position"] == "rope"
    for l in range(cfg["num_layers"]):
        x = block(x, sub(w, f"layers.{l}"), cfg, allowed, positions if use_rope else None)
    x = norm(x, sub(w, "final_norm"), cfg["norm"], cfg["norm_eps"])
    out = {"embedded": [f[0] for f in fronts], "positions": [f[1] for f in fronts],
           "modality": [f[2] for f in fronts], "hidden": [], "routing": [], "embeddings": []}
    for n, (_, _, mod) in enumerate(fronts):
        h = x[offsets[n] : offsets[n + 1]]
        p, routing = pool(cfg, w, h, mod)
        e = F.linear(p, w["proj.weight"])
        out["hidden"].append(h)
        out["routing"].append(routing)
        out["embeddings"].append(e / e.norm())
    out["embeddings"] = torch.stack(out["embeddings"], 0)
    return out


# ---------------------------------------------------------------------------------------
# Losses, SPEC 6
# ---------------------------------------------------------------------------------------

LOGIT_SCALE_MAX = math.log(100.0)


def infonce(a, b, logit_scale):
    """a, b [N, E] unit rows; symmetric CLIP cross entropy with exp(min(ls, ln 100))."""
    scale = torch.exp(torch.clamp(logit_scale, max=LOGIT_SCALE_MAX))
    logits = scale * a @ b.T
    target = torch.arange(a.shape[0])
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def binding(anchor, others, logit_scale):
    return sum(infonce(anchor, m, logit_scale) for m in others)


def triplet(a, p, n, margin):
    d_ap = 1 - F.cosine_similarity(a, p, dim=1)
    d_an = 1 - F.cosine_similarity(a, n, dim=1)
    return torch.clamp(d_ap - d_an + margin, min=0).mean()


# ---------------------------------------------------------------------------------------
# A. layer fixtures
# ---------------------------------------------------------------------------------------

LAYERS = "tests/data/layers"


def attn_weights(r, D, prefix=""):
    w = {}
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        w[f"{prefix}{name}.weight"] = r.linear_weight(D, D)
        w[f"{prefix}{name}.bias"] = r.bias(D)
    return w


def ffn_weights(r, D, Fd, act, prefix=""):
    if act == "swiglu":
        return {f"{prefix}gate.weight": r.linear_weight(Fd, D),
                f"{prefix}up.weight": r.linear_weight(Fd, D),
                f"{prefix}down.weight": r.linear_weight(D, Fd)}
    return {f"{prefix}fc1.weight": r.linear_weight(Fd, D), f"{prefix}fc1.bias": r.bias(Fd),
            f"{prefix}fc2.weight": r.linear_weight(D, Fd), f"{prefix}fc2.bias": r.bias(D)}


def norm_weights(r, D, kind, prefix):
    w = {f"{prefix}.weight": r.norm_weight(D)}
    if kind == "layernorm":
        w[f"{prefix}.bias"] = r.bias(D)
    return w


def write_layer(name, tensors, metadata=None):
    save_safetensors(os.path.join(LAYERS, name + ".safetensors"), tensors, metadata)
    for k, v in tensors.items():
        if v.is_floating_point():
            assert torch.isfinite(v).all(), (name, k)


def sections_str(sections):
    return ",".join(str(s) for s in sections)


def make_layers():
    # linear: y = x W^T + b
    r = Draw(101)
    x, wt, b = r.normal(7, 24), r.linear_weight(40, 24), r.bias(40)
    write_layer("linear", {"x": x, "weight": wt, "bias": b, "y": F.linear(x, wt, b)})

    # embedding: y = weight[ids]
    r = Draw(102)
    ids = torch.tensor([0, 5, 19, 5, 3, 12, 7, 18, 1])
    wt = r.normal(20, 16, scale=0.5)
    write_layer("embedding", {"ids": ids, "weight": wt, "y": F.embedding(ids, wt)})

    # norms (x with an offset and a spread, so mean and variance both matter)
    r = Draw(103)
    x = r.normal(6, 32, scale=2.0) + r.normal(6, 1, scale=1.5)
    p = {"weight": r.norm_weight(32), "bias": r.bias(32)}
    write_layer("layer_norm", {"x": x, **p, "y": norm(x, p, "layernorm", 1e-5)},
                {"eps": "1e-05"})
    r = Draw(104)
    x = r.normal(6, 32, scale=2.0) + r.normal(6, 1, scale=1.0)
    p = {"weight": r.norm_weight(32)}
    write_layer("rms_norm", {"x": x, **p, "y": norm(x, p, "rmsnorm", 1e-6)}, {"eps": "1e-06"})

    # activations, elementwise over [-6, 6]
    r = Draw(105)
    x = r.uniform(5, 40, low=-6.0, high=6.0)
    t = {"x": x}
    for act in ("gelu", "gelu_tanh", "quick_gelu", "relu", "silu"):
        t[act] = activation(x, act)
    write_layer("activations", t)

    # FFN, one file per activation
    for seed, act in enumerate(("gelu", "gelu_tanh", "quick_gelu", "relu", "swiglu")):
        r = Draw(110 + seed)
        x = r.normal(9, 16)
        p = ffn_weights(r, 16, 40, act)
        write_layer(f"ffn_{act}", {"x": x, **p, "y": ffn(x, p, act)}, {"activation": act})

    # patch embeddings
    r = Draw(120)
    image = r.normal(3, 16, 16)
    wt, b = r.normal(32, 3, 4, 4, scale=1 / math.sqrt(48)), r.bias(32)
    write_layer("patch_embed_image",
                {"image": image, "weight": wt, "bias": b,
                 "y": patch_embed_image(image, wt, b, 4)}, {"patch": "4"})
    r = Draw(121)
    features = r.normal(8, 18)  # 18 frames, patch_frames 4 -> 5 chunks, the last half zero
    wt, b = r.normal(32, 8, 4, scale=1 / math.sqrt(32)), r.bias(32)
    write_layer("patch_embed_audio",
                {"features": features, "weight": wt, "bias": b,
                 "y": patch_embed_audio(features, wt, b, 4)}, {"patch_frames": "4"})
    r = Draw(122)
    video = r.normal(5, 3, 8, 8)  # 5 frames, tubelet 2 -> 3 steps, the last frame repeated
    wt, b = r.normal(32, 3, 2, 4, 4, scale=1 / math.sqrt(96)), r.bias(32)
    y, _ = patch_embed_video(video, wt, b, 2, 4)
    write_layer("patch_embed_video", {"video": video, "weight": wt, "bias": b, "y": y},
                {"tubelet": "2", "patch": "4"})

    # RoPE
    rope_cases = [("rope", 4, 32, 10000.0, None, 130),         # dh 8 -> [2, 1, 1]
                  ("rope_dh16", 2, 32, 10000.0, None, 131),    # dh 16 -> [2, 3, 3]
                  ("rope_sections", 2, 32, 1000.0, [3, 4, 1], 132)]
    for name, H, D, theta, sections, seed in rope_cases:
        r = Draw(seed)
        dh = D // H
        sec = sections or default_rope_sections(dh)
        x = r.normal(11, D)
        pos = torch.stack([r.ints(0, 40, 11), r.ints(0, 12, 11), r.ints(0, 12, 11)], 1)
        pos[0] = torch.tensor([0, 0, 0])
        write_layer(name, {"x": x, "positions": pos, "y": rope(x, pos, H, theta, sec)},
                    {"heads": str(H), "theta": repr(theta), "sections": sections_str(sec)})

    # attention: plain self attention, H 4 (dh 8) and H 2 (dh 16)
    for name, H, L, seed in (("attention_self", 4, 9, 140), ("attention_self_dh16", 2, 13, 141)):
        r = Draw(seed)
        x = r.normal(L, 32)
        p = attn_weights(r, 32)
        write_layer(name, {"x": x, **p, "y": attention(x, x, p, H)}, {"heads": str(H)})

    # packed batch with the causal text mask; samples:
    #   0: 6 tokens, all text; 1: 8 tokens, text 0..3 then 5 others;
    #   2: 5 tokens, no text;  3: 7 tokens, a cls-like token, text 1..5, one other.
    r = Draw(142)
    lengths = [6, 8, 5, 7]
    text_rel = [(0, 6), (0, 3), (0, 0), (1, 5)]
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    tb = [offsets[i] + a for i, (a, _) in enumerate(text_rel)]
    te = [offsets[i] + b for i, (_, b) in enumerate(text_rel)]
    tb[2] = te[2] = offsets[2]  # empty range at the sample start
    x = r.normal(offsets[-1], 32)
    p = attn_weights(r, 32)
    allowed = packed_mask(offsets, tb, te, True)
    allowed_bi = packed_mask(offsets, tb, te, False)
    write_layer("attention_packed",
                {"x": x, **p, "offsets": torch.tensor(offsets), "text_begin": torch.tensor(tb),
                 "text_end": torch.tensor(te), "allowed": allowed.to(torch.int64),
                 "y": attention(x, x, p, 4, allowed),
                 "allowed_bidirectional": allowed_bi.to(torch.int64),
                 "y_bidirectional": attention(x, x, p, 4, allowed_bi)},
                {"heads": "4", "causal": "true"})

    # self attention with RoPE positions (one sample, no mask)
    r = Draw(143)
    x = r.normal(12, 32)
    p = attn_weights(r, 32)
    pos = torch.stack([r.ints(0, 20, 12), r.ints(0, 8, 12), r.ints(0, 8, 12)], 1)
    sec = default_rope_sections(8)
    write_layer("attention_rope",
                {"x": x, **p, "positions": pos,
                 "y": attention(x, x, p, 4, None, pos, pos, 10000.0, sec)},
                {"heads": "4", "theta": "10000.0", "sections": sections_str(sec)})

    # cross attention: queries from one input, keys/values from another
    r = Draw(144)
    xq, xkv = r.normal(3, 32), r.normal(10, 32)
    p = attn_weights(r, 32)
    write_layer("attention_cross",
                {"queries": xq, "context": xkv, **p, "y": attention(xq, xkv, p, 4)},
                {"heads": "4"})

    # transformer blocks
    # (name, norm, activation, rope, D, H, F, seed); dh = 8 throughout
    block_cases = [("block_layernorm_gelu", "layernorm", "gelu", False, 32, 4, 64, 150),
                   ("block_rmsnorm_gelu", "rmsnorm", "gelu", False, 16, 2, 32, 151),
                   ("block_layernorm_swiglu", "layernorm", "swiglu", False, 16, 2, 32, 152),
                   ("block_rmsnorm_quick_gelu_rope", "rmsnorm", "quick_gelu", True, 16, 2, 32,
                    153)]
    for name, kind, act, with_rope, D, H, Fd, seed in block_cases:
        r = Draw(seed)
        x = r.normal(10, D)
        p = {**norm_weights(r, D, kind, "norm1"), **attn_weights(r, D, "attn."),
             **norm_weights(r, D, kind, "norm2"), **ffn_weights(r, D, Fd, act, "ffn.")}
        cfg = {"norm": kind, "norm_eps": 1e-5, "num_heads": H, "activation": act,
               "rope_theta": 10000.0, "sections": default_rope_sections(8)}
        meta = {"heads": str(H), "norm": kind, "eps": "1e-05", "activation": act}
        t = {"x": x, **p}
        pos = None
        if with_rope:
            pos = torch.stack([r.ints(0, 20, 10), r.ints(0, 8, 10), r.ints(0, 8, 10)], 1)
            t["positions"] = pos
            meta.update({"theta": "10000.0", "sections": sections_str(cfg["sections"])})
        t["y"] = block(x, p, cfg, None, pos)
        write_layer(name, t, meta)

    # attention pooler (video pooling), one per norm kind
    pool_cases = [("attention_pool_layernorm", "layernorm", 32, 4, 3, 16, 2, 160),
                  ("attention_pool_rmsnorm", "rmsnorm", 16, 2, 2, 9, 3, 161)]
    for name, kind, D, H, steps, Np, Nq, seed in pool_cases:
        r = Draw(seed)
        tokens = r.normal(steps * Np, D)
        p = {"queries": r.normal(Nq, D, scale=0.5), "pos_embed": r.normal(Np, D, scale=0.2),
             **norm_weights(r, D, kind, "norm_q"), **norm_weights(r, D, kind, "norm_kv"),
             **attn_weights(r, D, "attn.")}
        write_layer(name, {"tokens": tokens, **p,
                           "y": attention_pool(tokens, p, steps, H, kind, 1e-5)},
                    {"heads": str(H), "norm": kind, "eps": "1e-05", "steps": str(steps),
                     "queries": str(Nq)})

    # losses
    r = Draw(170)
    N, E = 6, 16
    unit = lambda t: t / t.norm(dim=1, keepdim=True)
    a = unit(r.normal(N, E))
    b = unit(a + r.normal(N, E, scale=0.6))
    c = unit(a + r.normal(N, E, scale=1.2))
    ls = torch.tensor(math.log(1 / 0.07), dtype=F64)
    ls_big = torch.tensor(5.0, dtype=F64)  # above ln(100): clamped
    margin = 0.3
    write_layer("losses",
                {"a": a, "b": b, "c": c, "logit_scale": ls, "logit_scale_clamped": ls_big,
                 "infonce": infonce(a, b, ls), "infonce_clamped": infonce(a, b, ls_big),
                 "binding": binding(a, [b, c], ls), "triplet": triplet(a, b, c, margin)},
                {"margin": repr(margin)})


# ---------------------------------------------------------------------------------------
# B. encoder fixtures
# ---------------------------------------------------------------------------------------

ENCODER = "tests/data/encoder"

STORE = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
         "F64": torch.float64}


def full_config(v):
    """The complete config.json of a variant (every key written; sections only when used)."""
    cfg = {
        "hidden_dim": v["D"], "num_layers": 2, "num_heads": v.get("H", 4), "ffn_dim": 64,
        "embed_dim": 16, "activation": v["activation"], "norm": v["norm"],
        "norm_eps": v.get("eps", 1e-5), "position": v["position"], "rope_theta": 10000.0,
        "rope_sections": v.get("sections"), "pooling": v["pooling"],
    }
    mods = v["modalities"]
    if "text" in mods:
        cfg["text"] = {"tokenizer": "gpt2_bpe", "vocab_size": 64, "max_tokens": 16,
                       "causal": v.get("causal", False)}
    if "image" in mods or "video" in mods:  # video frames use the image section
        cfg["image"] = {"size": 16, "patch": 4, "channels": 3,
                        "mean": [0.48145466, 0.4578275, 0.40821073],
                        "std": [0.26862954, 0.26130258, 0.27577711]}
    if "audio" in mods:
        cfg["audio"] = {"sample_rate": 16000, "features": "kaldi_fbank", "n_mels": 8,
                        "patch_frames": 4, "max_tokens": 16, "feature_mean": -4.268,
                        "feature_std": 9.138}
    if "video" in mods:
        cfg["video"] = {"fps": 1.0, "tubelet": 2, "pool_queries": v.get("pool", 0),
                        "max_tokens": 64}
    if "custom" in v:
        cfg["custom_modalities"] = [dict(c, options={}) for c in v["custom"]]
    return cfg


def runtime_config(cfg):
    """config.json plus the resolved rope sections the model functions use."""
    rc = dict(cfg)
    dh = cfg["hidden_dim"] // cfg["num_heads"]
    rc["sections"] = cfg["rope_sections"] or default_rope_sections(dh)
    return rc


def make_weights(cfg, r):
    """Every tensor of SPEC 4 that this config has, float64 (before storage rounding)."""
    D, Fd, E = cfg["hidden_dim"], cfg["ffn_dim"], cfg["embed_dim"]
    kind, act = cfg["norm"], cfg["activation"]
    learned = cfg["position"] == "learned"
    w = {}
    if "text" in cfg:
        t = cfg["text"]
        w["text.token_embed.weight"] = r.normal(t["vocab_size"], D, scale=0.7)
        if learned:
            w["text.pos_embed.weight"] = r.normal(t["max_tokens"], D, scale=0.2)
    if "image" in cfg:
        ic = cfg["image"]
        g = ic["size"] // ic["patch"]
        pd = ic["channels"] * ic["patch"] ** 2
        w["image.patch_embed.weight"] = r.linear_weight(D, pd)
        w["image.patch_embed.bias"] = r.bias(D)
        if learned:
            w["image.pos_embed.weight"] = r.normal(g * g, D, scale=0.2)
    if "audio" in cfg:
        ac = cfg["audio"]
        w["audio.patch_embed.weight"] = r.linear_weight(D, ac["n_mels"] * ac["patch_frames"])
        w["audio.patch_embed.bias"] = r.bias(D)
        if learned:
            w["audio.pos_embed.weight"] = r.normal(ac["max_tokens"], D, scale=0.2)
    if "video" in cfg:
        ic, vc = cfg["image"], cfg["video"]
        g = ic["size"] // ic["patch"]
        pd = ic["channels"] * vc["tubelet"] * ic["patch"] ** 2
        w["video.patch_embed.weight"] = r.linear_weight(D, pd)
        w["video.patch_embed.bias"] = r.bias(D)
        if vc["pool_queries"] > 0:
            w["video.pool.queries"] = r.normal(vc["pool_queries"], D, scale=0.5)
            w["video.pool.pos_embed"] = r.normal(g * g, D, scale=0.2)
            w.update(norm_weights(r, D, kind, "video.pool.norm_q"))
            w.update(norm_weights(r, D, kind, "video.pool.norm_kv"))
            w.update(attn_weights(r, D, "video.pool.attn."))
        elif learned:
            w["video.pos_embed.weight"] = r.normal(vc["max_tokens"], D, scale=0.2)
    custom = cfg.get("custom_modalities") or []
    for c in custom:
        w[c["name"] + ".patch_embed.weight"] = r.linear_weight(D, c["input_dim"])
        w[c["name"] + ".patch_embed.bias"] = r.bias(D)
        if learned:
            w[c["name"] + ".pos_embed.weight"] = r.normal(c["max_tokens"], D, scale=0.2)
    w["modality_embed.weight"] = r.normal(4 + len(custom), D, scale=0.2)
    if cfg["pooling"] == "cls":
        w["cls_token"] = r.normal(1, D, scale=0.5)
    for l in range(cfg["num_layers"]):
        w.update(norm_weights(r, D, kind, f"layers.{l}.norm1"))
        w.update(norm_weights(r, D, kind, f"layers.{l}.norm2"))
        w.update(attn_weights(r, D, f"layers.{l}.attn."))
        w.update(ffn_weights(r, D, Fd, act, f"layers.{l}.ffn."))
    w.update(norm_weights(r, D, kind, "final_norm"))
    if cfg["pooling"] == "routed":
        w["router.weight"] = r.linear_weight(4 + len(custom), D)
        w["router.bias"] = r.normal(4 + len(custom), scale=0.3)
    w["proj.weight"] = r.linear_weight(E, D)
    w["logit_scale"] = torch.tensor(math.log(1 / 0.07), dtype=F64)
    return w


def make_sample(cfg, r, spec):
    """spec: {"text": n, "image": True, "audio": T, "video": T} -> float64 inputs (rounded
    to the float32 they are stored in)."""
    s = {}
    if "text" in spec:
        s["text_ids"] = r.ints(0, cfg["text"]["vocab_size"], spec["text"])
    if "image" in spec:
        ic = cfg["image"]
        s["image"] = rounded(r.normal(ic["channels"], ic["size"], ic["size"]), torch.float32)
    if "audio" in spec:
        s["audio"] = rounded(r.normal(cfg["audio"]["n_mels"], spec["audio"]), torch.float32)
    if "video" in spec:
        ic = cfg["image"]
        s["video"] = rounded(r.normal(spec["video"], ic["channels"], ic["size"], ic["size"]),
                             torch.float32)
    for c in cfg.get("custom_modalities") or []:  # spec["custom"]: name -> (n, with positions)
        if c["name"] in spec.get("custom", {}):
            n, with_positions = spec["custom"][c["name"]]
            s[c["name"]] = rounded(r.normal(n, c["input_dim"]), torch.float32)
            if with_positions:
                s[c["name"] + ".positions"] = r.ints(0, 5, n, 3)
    return s


CONV_SHAPE = {
    "image.patch_embed.weight": lambda c: (c["image"]["channels"], c["image"]["patch"],
                                           c["image"]["patch"]),
    "audio.patch_embed.weight": lambda c: (c["audio"]["n_mels"], c["audio"]["patch_frames"]),
    "video.patch_embed.weight": lambda c: (c["image"]["channels"], c["video"]["tubelet"],
                                           c["image"]["patch"], c["image"]["patch"]),
}

# Text-only / image+audio / all four / text+video: the mixed batch of the brief.
MIXED = [{"text": 9}, {"image": True, "audio": 14}, {"text": 5, "image": True, "audio": 8,
                                                      "video": 3}, {"text": 12, "video": 3}]

VARIANTS = [
    dict(name="text_causal_cls", D=32, activation="gelu", norm="layernorm", position="rope",
         pooling="cls", modalities=["text"], causal=True, text_dtype=torch.int32,
         batch=[{"text": 7}, {"text": 12}, {"text": 1}]),
    dict(name="image_cls_learned", D=32, activation="quick_gelu", norm="layernorm",
         position="learned", pooling="cls", modalities=["image"], conv=True,
         batch=[{"image": True}, {"image": True}]),
    dict(name="audio_routed_rmsnorm", D=32, activation="relu", norm="rmsnorm", eps=1e-6,
         position="rope", pooling="routed", modalities=["audio"],
         batch=[{"audio": 18}, {"audio": 13}, {"audio": 4}]),
    dict(name="video_pooled", D=32, activation="gelu_tanh", norm="layernorm",
         position="rope", pooling="mean", modalities=["video"], pool=2,
         batch=[{"video": 3}, {"video": 4}]),
    dict(name="video_cls_swiglu", D=32, activation="swiglu", norm="rmsnorm",
         position="learned", pooling="cls", modalities=["image", "video"], conv=True,
         batch=[{"video": 3}, {"image": True}, {"image": True, "video": 1}]),
    dict(name="all_mean_d48", D=48, activation="gelu", norm="layernorm", position="rope",
         pooling="mean", modalities=list(MODALITIES), pool=2, batch=MIXED),
    dict(name="all_routed_causal_sections", D=32, activation="swiglu", norm="rmsnorm",
         position="rope", sections=[1, 2, 1], pooling="routed", modalities=list(MODALITIES),
         causal=True, pool=2, conv=True, batch=MIXED + [{"audio": 10}]),
    dict(name="all_cls_learned_f16", D=32, activation="quick_gelu", norm="layernorm",
         position="learned", pooling="cls", modalities=list(MODALITIES), causal=True, pool=2,
         store="F16", batch=MIXED),
    dict(name="text_image_bf16", D=32, activation="gelu_tanh", norm="rmsnorm",
         position="rope", pooling="mean", modalities=["text", "image"], store="BF16",
         batch=[{"text": 6}, {"image": True}, {"text": 10, "image": True}]),
    dict(name="audio_video_f64", D=32, activation="relu", norm="layernorm", position="rope",
         sections=[1, 1, 2], pooling="routed", modalities=["audio", "video"], store="F64",
         batch=[{"audio": 11}, {"video": 3}, {"audio": 7, "video": 5}]),
    # User modalities (Config::custom): own patch embeds, modality rows 4+, router rows,
    # given (t, y, x) offsets or sequence positions.
    dict(name="custom_routed", D=32, activation="gelu", norm="layernorm", position="rope",
         pooling="routed", modalities=["text", "image"],
         custom=[{"name": "points", "input_dim": 12, "max_tokens": 16},
                 {"name": "imu", "input_dim": 6, "max_tokens": 8}],
         batch=[{"custom": {"points": (7, True)}},
                {"text": 5, "custom": {"points": (5, True), "imu": (4, False)}},
                {"image": True, "custom": {"imu": (3, False)}}, {"text": 4}]),
    dict(name="custom_cls_learned", D=32, activation="quick_gelu", norm="rmsnorm",
         position="learned", pooling="cls", modalities=["audio"],
         custom=[{"name": "points", "input_dim": 9, "max_tokens": 12}],
         batch=[{"custom": {"points": (6, False)}}, {"audio": 9, "custom": {"points": (4, True)}}]),
]


def to_dtype(d, dtype):
    return {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in d.items()}


def make_encoder(v, seed):
    out_dir = os.path.join(ENCODER, v["name"])
    os.makedirs(out_dir, exist_ok=True)
    cfg = full_config(v)
    rc = runtime_config(cfg)
    r = Draw(seed)
    store = STORE[v.get("store", "F32")]
    w = {k: rounded(t, store) for k, t in make_weights(cfg, r).items()}
    samples = [make_sample(cfg, r, spec) for spec in v["batch"]]

    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    stored = {}
    for k, t in w.items():
        if v.get("conv") and k in CONV_SHAPE:
            t = t.reshape(t.shape[0], *CONV_SHAPE[k](cfg))
        stored[k] = t.to(store)
    save_safetensors(os.path.join(out_dir, "model.safetensors"), stored)
    for i, s in enumerate(samples):
        t = {}
        for k, x in s.items():
            if k == "text_ids":
                t[k] = x.to(v.get("text_dtype", torch.int64))
            elif k.endswith(".positions"):
                t[k] = x.to(torch.int64)
            else:
                t[k] = x.to(torch.float32)
        save_safetensors(os.path.join(out_dir, f"input.{i}.safetensors"), t)

    out = encode(rc, w, samples)
    expected = {"embeddings": out["embeddings"]}
    for i in range(len(samples)):
        expected[f"hidden.{i}"] = out["hidden"][i]
        expected[f"positions.{i}"] = out["positions"][i]
        expected[f"modality.{i}"] = out["modality"][i]
        expected[f"embedded.{i}"] = out["embedded"][i]
        if out["routing"][i] is not None:
            expected[f"routing.{i}"] = out["routing"][i]
    save_safetensors(os.path.join(out_dir, "expected.safetensors"), expected)

    # Checks: finite, unit rows, the files read back to the same result, float32 close.
    for k, t in expected.items():
        if t.is_floating_point():
            assert torch.isfinite(t).all(), (v["name"], k)
    norms = out["embeddings"].norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-12)
    w_disk, _ = load_safetensors(os.path.join(out_dir, "model.safetensors"))
    w_disk = {k: t.to(F64) for k, t in w_disk.items()}
    s_disk = []
    for i in range(len(samples)):
        t, _ = load_safetensors(os.path.join(out_dir, f"input.{i}.safetensors"))
        s_disk.append({k: (x.to(F64) if x.is_floating_point() else x) for k, x in t.items()})
    with open(os.path.join(out_dir, "config.json")) as f:
        rc_disk = runtime_config(json.load(f))
    again = encode(rc_disk, w_disk, s_disk)
    assert torch.equal(again["embeddings"], out["embeddings"]), v["name"]
    out32 = encode(rc, to_dtype(w, torch.float32), [to_dtype(s, torch.float32)
                                                   for s in samples])
    diff_e = (out32["embeddings"].to(F64) - out["embeddings"]).abs().max().item()
    diff_h = max((a.to(F64) - b).abs().max().item()
                 for a, b in zip(out32["hidden"], out["hidden"]))
    lengths = [h.shape[0] for h in out["hidden"]]
    spread = out["embeddings"] @ out["embeddings"].T
    off = spread[~torch.eye(len(samples), dtype=torch.bool)]
    print(f"  {v['name']:28s} store {v.get('store', 'F32'):4s} L {lengths}  "
          f"f32-f64: emb {diff_e:.2e} hidden {diff_h:.2e}  "
          f"max |cos| between samples {off.abs().max().item():.2f}")
    return diff_e


def main():
    if not os.path.isfile("tests/reference/make_fixtures.py"):
        sys.exit("run from the repository root: /usr/bin/python3 tests/reference/make_fixtures.py")
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    for d in (LAYERS, ENCODER):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    make_layers()
    print(f"layers: {len(os.listdir(LAYERS))} files in {LAYERS}")
    print(f"encoder variants in {ENCODER}:")
    worst = 0.0
    for seed, v in enumerate(VARIANTS):
        worst = max(worst, make_encoder(v, 1000 + seed))
    assert worst < 1e-5, worst
    total = sum(os.path.getsize(os.path.join(dp, f))
                for d in (LAYERS, ENCODER) for dp, _, fs in os.walk(d) for f in fs)
    print(f"worst float32-vs-float64 embedding difference {worst:.2e}; "
          f"tests/data total {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
