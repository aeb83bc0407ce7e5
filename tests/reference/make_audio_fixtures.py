#!/usr/bin/python3
"""Reference fixtures for tessera's audio front end (SPEC 5.3), from torchaudio itself.

Run from the repository root with Debian's PyTorch and torchaudio (python3-torchaudio 0.13):

    /usr/bin/python3 tests/reference/make_audio_fixtures.py

It deletes and rewrites tests/data/audio/:

  formats/<name>.wav       one small file per WAV flavour, written byte by byte here
  formats.safetensors      per file: `<name>.torchaudio` F32 [C, N] = torchaudio.load(file)[0],
                           `<name>.exact` F64 [C, N] = the integer/float samples scaled by hand
                           (u8: (u-128)/128, s16: /2^15, s24: /2^23, s32: /2^31, float: as is);
                           metadata `<name>.sample_rate`, `<name>.channels`
  resample.safetensors     per case `<case>.input` F32 [N], `<case>.f32` F32 = torchaudio
                           resample of the float32 input, `<case>.f64` F64 = the same on the
                           input widened to float64; metadata `<case>.from`, `<case>.to`,
                           `<case>.reference` ("torchaudio" or "torchaudio by phases": the
                           awkward pairs 44101 <-> 16000, whose [out, taps] kernel torchaudio
                           cannot build here, come from resample_by_phases below, torchaudio's
                           own formula a few hundred phases at a time, checked against
                           torchaudio on every case torchaudio can run)
  features.safetensors     per signal `<sig>.input` F32 [N] at 16 kHz and
                           `<sig>.fbank<M>.f32|f64`  [M, T] torchaudio.compliance.kaldi.fbank of
                                                     (x - mean(x)), transposed (not normalized)
                           `<sig>.whisper80.f32|f64` [80, T] Whisper's log_mel_spectrogram
                                                     formula (below) without 30 s padding
  pipeline_kaldi.wav       44.1 kHz stereo PCM16; pipeline_whisper.wav 22.05 kHz mono float32
  pipeline.safetensors     `kaldi.f32|f64` [128, T]: torchaudio.load -> mean over channels ->
                           resample to 16 kHz -> fbank(x - mean) -> (x + 4.268) / 9.138;
                           `whisper.f32|f64` [80, T]: load -> resample -> whisper formula
                           (.f64: the loaded float32 samples widened, then all in float64)

Everything is float32 as torchaudio runs it (the `.f32` tensors) plus a float64 run of the
same torchaudio code (`.f64`) to check tessera's double path tightly. Note that torchaudio's
kaldi mel banks are built in float32 even for a float64 input, and Whisper's mel filters
are librosa's, stored as float32 (the .f32 run uses them rounded to float32, the .f64 run in
float64). Deterministic: every signal comes from a seeded numpy generator.
"""

import math
import os
import shutil
import struct
import sys

import numpy as np
import torch
import torchaudio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import save_safetensors  # noqa: E402

OUT = os.path.join("tests", "data", "audio")
F32, F64 = torch.float32, torch.float64

# ---------------------------------------------------------------------------------------
# WAV writing, by hand (so every flavour, EXTENSIBLE and odd chunks included, is exact)
# ---------------------------------------------------------------------------------------

GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")


def wav_bytes(tag, bits, channels, rate, data, extensible=False, extra_chunks=()):
    """A RIFF/WAVE file: fmt (plain or EXTENSIBLE), any extra chunks, then data."""
    block_align = channels * bits // 8
    if extensible:
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block_align, block_align,
                          bits, 22, bits, 0) + struct.pack("<H", tag) + GUID_TAIL
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block_align, block_align, bits)
    body = b"WAVE"

    def chunk(cid, payload):
        return cid + struct.pack("<I", len(payload)) + payload + (b"\0" if len(payload) % 2 else b"")

    body += chunk(b"fmt ", fmt)
    for cid, payload in extra_chunks:
        body += chunk(cid, payload)
    body += chunk(b"data", data)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def pcm_encode(ints, bits):
    """ints [N, C] (interleaved frames) -> little-endian PCM bytes."""
    flat = ints.reshape(-1)
    if bits == 8:
        return flat.astype(np.uint8).tobytes()
    if bits == 16:
        return flat.astype("<i2").tobytes()
    if bits == 24:
        u = flat.astype(np.int64) & 0xFFFFFF
        return np.stack([u & 0xFF, (u >> 8) & 0xFF, (u >> 16) & 0xFF], axis=1).astype(np.uint8).tobytes()
    return flat.astype("<i4").tobytes()


def test_signal(rng, frames, channels):
    """[N, C] in (-0.95, 0.95): a different tone per channel plus a little noise."""
    t = np.arange(frames) / 16000.0
    cols = [0.6 * np.sin(2 * np.pi * (300 + 170 * c) * t + c) + 0.3 * rng.uniform(-1, 1, frames)
            for c in range(channels)]
    return np.clip(np.stack(cols, axis=1), -0.95, 0.95)


def make_formats(rng):
    os.makedirs(os.path.join(OUT, "formats"), exist_ok=True)
    frames = 400
    cases = []  # (name, tag, bits, channels, rate, extensible, extra)
    cases.append(("pcm8_mono", 1, 8, 1, 8000, False, ()))
    cases.append(("pcm16_mono", 1, 16, 1, 16000, False, ()))
    cases.append(("pcm16_stereo", 1, 16, 2, 44100, False, ()))
    cases.append(("pcm24_stereo", 1, 24, 2, 48000, False, ()))
    cases.append(("pcm32_mono", 1, 32, 1, 22050, False, ()))
    cases.append(("float32_stereo", 3, 32, 2, 16000, False, ()))
    cases.append(("float64_mono", 3, 64, 1, 16000, False, ()))
    cases.append(("pcm16_5.1", 1, 16, 6, 48000, False, ()))
    cases.append(("ext_pcm16_stereo", 1, 16, 2, 16000, True, ()))
    cases.append(("ext_pcm24_5.1", 1, 24, 6, 48000, True, ()))
    cases.append(("ext_float32_mono", 3, 32, 1, 16000, True, ()))
    # unknown chunks before the data, one of odd size (a pad byte follows it)
    cases.append(("pcm16_chunks", 1, 16, 1, 16000, False,
                  ((b"LIST", b"INFOISFT\x05\x00\x00\x00test\x00"), (b"junk", b"abc"),
                   (b"fact", struct.pack("<I", frames)))))
    tensors, meta = {}, {}
    for name, tag, bits, channels, rate, ext, extra in cases:
        x = test_signal(rng, frames, channels)  # [N, C]
        if tag == 3:
            dtype = "<f4" if bits == 32 else "<f8"
            stored = x.astype(dtype)
            data = stored.tobytes()
            exact = stored.astype(np.float64)
        else:
            full = 2 ** (bits - 1)
            ints = np.round(x * full).astype(np.int64)
            ints[0, 0] = -full  # the extremes of the range appear in every file
            ints[1, 0] = full - 1
            if bits == 8:
                data = pcm_encode(ints + 128, 8)
            else:
                data = pcm_encode(ints, bits)
            exact = ints.astype(np.float64) / full
        raw = wav_bytes(tag, bits, channels, rate, data, ext, extra)
        path = os.path.join(OUT, "formats", name + ".wav")
        with open(path, "wb") as f:
            f.write(raw)
        loaded, sr = torchaudio.load(path)
        assert sr == rate and loaded.shape == (channels, frames), (name, sr, loaded.shape)
        tensors[name + ".torchaudio"] = loaded.to(F32)
        tensors[name + ".exact"] = torch.from_numpy(exact.T.copy())
        meta[name + ".sample_rate"] = rate
        meta[name + ".channels"] = channels
        diff = (loaded.double() - tensors[name + ".exact"]).abs().max().item()
        print(f"  {name:18s} {len(raw):6d} bytes  torchaudio.load vs exact: {diff:.3g}")
    save_safetensors(os.path.join(OUT, "formats.safetensors"), tensors, meta)


# ---------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------

def f32(x):
    """Round to float32 so the float32 and float64 runs see the same input."""
    return np.asarray(x, dtype=np.float32)


def tone(rate, seconds, freqs=(440.0, 3000.0), amps=(0.5, 0.2)):
    t = np.arange(int(round(rate * seconds))) / rate
    return f32(sum(a * np.sin(2 * np.pi * f * t) for f, a in zip(freqs, amps)))


def chirp(rate, seconds, f0=100.0, f1=7000.0):
    t = np.arange(int(round(rate * seconds))) / rate
    k = (f1 - f0) / seconds
    return f32(0.6 * np.sin(2 * np.pi * (f0 * t + 0.5 * k * t * t)))


def noise(rng, rate, seconds):
    return f32(rng.normal(0.0, 0.25, int(round(rate * seconds))).clip(-0.99, 0.99))


def silence_click(rate, seconds):
    x = np.zeros(int(round(rate * seconds)))
    mid = len(x) // 2
    x[mid:mid + 3] = [0.9, -0.7, 0.3]
    return f32(x)


# ---------------------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------------------

def fbank(x, m):
    """SPEC 5.3 kaldi_fbank: the waveform minus its mean, then torchaudio's fbank, [M, T]."""
    x = x - x.mean()
    f = torchaudio.compliance.kaldi.fbank(
        x[None], htk_compat=True, sample_frequency=16000, use_energy=False,
        window_type="hanning", num_mel_bins=m, dither=0.0, frame_length=25, frame_shift=10)
    return f.T.contiguous()


def slaney_mel_filters(sr, n_fft, n_mels):
    """librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels) (htk=False, norm='slaney',
    fmin=0, fmax=sr/2), written out in numpy float64."""
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = (min_log_hz - 0.0) / f_sp
    logstep = np.log(6.4) / 27.0

    def hz_to_mel(f):
        f = np.asanyarray(f, dtype=np.float64)
        mels = (f - 0.0) / f_sp
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-300) / min_log_hz) / logstep, mels)

    def mel_to_hz(m):
        m = np.asanyarray(m, dtype=np.float64)
        freqs = 0.0 + f_sp * m
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)

    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sr / 2.0), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2))
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
    return weights * enorm[:, None]


def whisper_logmel(x, n_mels, sr=16000):
    """Whisper's log_mel_spectrogram (audio.py) without the 30 s padding, in x's dtype.
    Whisper ships librosa's filters as float32; the float64 run keeps them in float64."""
    filters = torch.from_numpy(slaney_mel_filters(sr, 400, n_mels))
    if x.dtype == F32:
        filters = filters.to(F32)
    window = torch.hann_window(400, dtype=x.dtype)
    stft = torch.stft(x, 400, 160, window=window, return_complex=True)
    magnitudes = stft[..., :-1].abs() ** 2
    mel_spec = filters @ magnitudes
    log_spec = torch.clamp(mel_spec, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def both(fn, x):
    """fn on the float32 input and on the same values widened to float64."""
    t = torch.from_numpy(x)
    return fn(t.to(F32)).to(F32), fn(t.to(F64)).to(F64)


def resample_by_phases(x, orig_freq, new_freq, phases_per_step=256):
    """torchaudio.functional.resample(x, orig_freq, new_freq) with its defaults, computed by
    torchaudio 0.13's own code (_get_sinc_resample_kernel and _apply_sinc_resample_kernel,
    copied operation for operation) for `phases_per_step` output phases at a time instead of
    all `new` at once. Same numbers, without the [new, taps] kernel of an awkward rate pair:
    torchaudio itself needs 4.4 GB and 51 s for 400 samples at 7999 -> 16000 in float64, and
    about 5.5 times that for 44101 -> 16000 ([16000, 44135] per temporary)."""
    g = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // g, new_freq // g
    base = min(orig, new) * 0.99
    width = math.ceil(6 * orig / base)
    dtype = x.dtype
    idx = torch.arange(-width, width + orig, dtype=dtype)[None, None] / orig
    length = x.shape[-1]
    padded = torch.nn.functional.pad(x[None], (width, width + orig))  # [1, N + 2 width + orig]
    target = int(math.ceil(new * length / orig))
    blocks = (padded.shape[-1] - (2 * width + orig)) // orig + 1
    y = torch.zeros(blocks, new, dtype=dtype)  # y[i, p] = output i * new + p
    for p0 in range(0, min(new, target), phases_per_step):
        p1 = min(p0 + phases_per_step, new)
        t = torch.arange(-p0, -p1, -1, dtype=dtype)[:, None, None] / new + idx
        t *= base
        t = t.clamp_(-6, 6)
        window = torch.cos(t * math.pi / 6 / 2) ** 2
        t *= math.pi
        kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
        kernels *= window * (base / orig)
        y[:, p0:p1] = torch.nn.functional.conv1d(padded[:, None], kernels, stride=orig)[0].T
    return y.reshape(-1)[:target]


def make_resample(rng):
    cases = [
        ("8000", 8000, 16000, tone(8000, 0.25, (440.0, 1900.0))),
        ("22050", 22050, 16000, chirp(22050, 0.25, 50.0, 10000.0)),
        ("44100", 44100, 16000, noise(rng, 44100, 0.25)),
        ("48000", 48000, 16000, chirp(48000, 0.25, 200.0, 20000.0)),
        ("16000_to_22050", 16000, 22050, tone(16000, 0.1)),
        ("16000_to_44100_short", 16000, 44100, tone(16000, 0.003)),  # 48 samples
        # Awkward pairs (issue 16): rates sharing few factors with 16000, so the gcd-reduced
        # kernel [out, taps] is large and tessera takes its direct plan. No rng: the signals
        # of the cases above and of make_features stay what they were.
        ("11025", 11025, 16000, tone(11025, 0.1, (440.0, 5000.0))),         # [640, 455]
        ("12345", 12345, 16000, chirp(12345, 0.25, 60.0, 6000.0)),         # [3200, 2483], 2 blocks
        ("16000_to_12345", 16000, 12345, tone(16000, 0.25, (300.0, 5500.0))),  # [2469, 3216]
        ("7999", 7999, 16000, chirp(7999, 0.05, 100.0, 3900.0)),           # [16000, 8013]
    ]
    by_phases = [  # torchaudio would need ~14 GB (float32) to ~25 GB (float64) for these
        ("44101", 44101, 16000, chirp(44101, 0.005, 300.0, 15000.0)),      # [16000, 44135]
        ("16000_to_44101", 16000, 44101, tone(16000, 0.0125)),             # [44101, 16014]
    ]
    tensors, meta = {}, {}

    def add(name, src, dst, x, a, b, reference):
        tensors[name + ".input"] = torch.from_numpy(x)
        tensors[name + ".f32"] = a
        tensors[name + ".f64"] = b
        meta[name + ".from"] = src
        meta[name + ".to"] = dst
        meta[name + ".reference"] = reference
        print(f"  resample {name:22s} {len(x)} -> {len(b)}  f32 vs f64 {(a.double() - b).abs().max():.3g}"
              f"  ({reference})")

    for name, src, dst, x in cases:
        a, b = both(lambda t: torchaudio.functional.resample(t, src, dst), x)
        # the phase-by-phase copy reproduces torchaudio wherever torchaudio can run
        pa, pb = both(lambda t: resample_by_phases(t, src, dst), x)
        assert (pb - b).abs().max().item() <= 1e-13, (name, (pb - b).abs().max().item())
        assert (pa - a).abs().max().item() <= 1e-5, (name, (pa - a).abs().max().item())
        add(name, src, dst, x, a, b, "torchaudio")
    for name, src, dst, x in by_phases:
        a, b = both(lambda t: resample_by_phases(t, src, dst), x)
        add(name, src, dst, x, a, b, "torchaudio by phases")
    save_safetensors(os.path.join(OUT, "resample.safetensors"), tensors, meta)


def make_features(rng):
    signals = [
        ("tone", tone(16000, 0.5)),
        ("chirp", chirp(16000, 0.3)),
        ("noise", noise(rng, 16000, 0.25)),
        ("silence_click", silence_click(16000, 0.3)),
        ("len400", tone(16000, 400 / 16000)),   # exactly one kaldi frame; whisper T = 2
        ("len560", noise(rng, 16000, 560 / 16000)),  # 2 kaldi frames; whisper T = 3
        ("len201", tone(16000, 201 / 16000)),   # the shortest whisper input: T = 1
    ]
    tensors = {}
    for name, x in signals:
        tensors[name + ".input"] = torch.from_numpy(x)
        if len(x) >= 400:
            for m in (128, 80):
                a, b = both(lambda t: fbank(t, m), x)
                tensors[f"{name}.fbank{m}.f32"] = a
                tensors[f"{name}.fbank{m}.f64"] = b
                print(f"  fbank{m:<3d} {name:14s} {tuple(b.shape)}  f32 vs f64 {(a.double() - b).abs().max():.3g}")
        a, b = both(lambda t: whisper_logmel(t, 80), x)
        tensors[f"{name}.whisper80.f32"] = a
        tensors[f"{name}.whisper80.f64"] = b
        print(f"  whisper80 {name:14s} {tuple(b.shape)}  f32 vs f64 {(a.double() - b).abs().max():.3g}")
    save_safetensors(os.path.join(OUT, "features.safetensors"), tensors)


def make_pipeline(rng):
    # kaldi: 44.1 kHz stereo PCM16, two different channels
    n = int(0.6 * 44100)
    t = np.arange(n) / 44100.0
    left = 0.5 * np.sin(2 * np.pi * 523.25 * t) * np.exp(-2 * t) + 0.05 * rng.normal(size=n)
    right = 0.4 * np.sin(2 * np.pi * (200 + 3000 * t) * t)
    ints = np.round(np.clip(np.stack([left, right], 1), -1, 0.99) * 32768).astype(np.int64)
    path = os.path.join(OUT, "pipeline_kaldi.wav")
    with open(path, "wb") as f:
        f.write(wav_bytes(1, 16, 2, 44100, pcm_encode(ints, 16)))
    w, sr = torchaudio.load(path)
    kaldi = {}
    for dtype in (F32, F64):
        x = torchaudio.functional.resample(w.to(dtype).mean(0), sr, 16000)
        kaldi[dtype] = (fbank(x, 128) - (-4.268)) / 9.138
    # whisper: 22.05 kHz mono float32
    x = chirp(22050, 0.5, 80.0, 9000.0) * np.float32(0.8)
    path = os.path.join(OUT, "pipeline_whisper.wav")
    with open(path, "wb") as f:
        f.write(wav_bytes(3, 32, 1, 22050, x.astype("<f4").tobytes()))
    w, sr = torchaudio.load(path)
    whisper = {}
    for dtype in (F32, F64):
        whisper[dtype] = whisper_logmel(torchaudio.functional.resample(w.to(dtype).mean(0), sr, 16000), 80)
    save_safetensors(os.path.join(OUT, "pipeline.safetensors"),
                     {"kaldi.f32": kaldi[F32].to(F32), "kaldi.f64": kaldi[F64],
                      "whisper.f32": whisper[F32].to(F32), "whisper.f64": whisper[F64]})
    for name, d in (("kaldi", kaldi), ("whisper", whisper)):
        print(f"  pipeline {name} {tuple(d[F64].shape)}  f32 vs f64 {(d[F32].double() - d[F64]).abs().max():.3g}")


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    # Everything this script writes is rewritten; imagebind/ belongs to
    # make_imagebind_data_fixtures.py and is kept.
    if os.path.isdir(OUT):
        for entry in os.listdir(OUT):
            if entry == "imagebind":
                continue
            path = os.path.join(OUT, entry)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261122)
    print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}")
    make_formats(rng)
    make_resample(rng)
    make_features(rng)
    make_pipeline(rng)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"{OUT}: {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
