#!/usr/bin/python3
"""Reference fixtures for ImageBind's clip preprocessing (tokenize/imagebind_clips.hpp).

A twin of facebookresearch/ImageBind imagebind/data.py (load_and_transform_audio_data,
waveform2melspec, get_clip_timepoints, load_and_transform_video_data, uniform_crop,
SpatialCrop, NormalizeVideo) and of the pytorchvideo pieces it calls
(data/clip_sampling.py ConstantClipsPerVideoSampler, data/encoded_video_decord.py
EncodedVideoDecord.get_clip and duration, transforms/functional.py
uniform_temporal_subsample and short_side_scale), written here without pytorchvideo or
decord (neither is installed): each function names the one it follows. Audio runs through
torchaudio (Debian's python3-torchaudio) exactly as data.py calls it.

Run from the repository root:

    /usr/bin/python3 tests/reference/make_imagebind_data_fixtures.py

It deletes and rewrites tests/data/audio/imagebind/ and tests/data/video/imagebind/:

  audio/imagebind/<case>.wav        the inputs (PCM16)
  audio/imagebind/cases.safetensors
      <case>.f32   F32 [M, K*T]  data.py's output for the file, float32 as data.py runs,
                                 clip k in columns [k*T, (k+1)*T)
      <case>.f64   F32 [M, K*T]  the same code run in float64 (the loaded samples widened),
                                 rounded to float32 to keep the file small
      ranges.samples I64 [L]     waveform lengths N at 16 kHz; ranges.begin / ranges.end
                                 I64 [L, 3]: data.py's slice bounds of each clip (clamped to N)
      metadata <case>.rate, .n_mels, .target_length
  video/imagebind/<case>/frame_NNNN.png   the frames (a directory of images is the video)
  video/imagebind/cases.safetensors
      <case>.indices I64 [K, F]              source frames of each clip
      <case>.clips   F32 [K*crops*F, 3, S, S] data.py's output, clip-major, then crop, then frame
      sweep.<name>.frames I64 [L], sweep.<name>.indices I64 [L, 5, 2]: frame indices for
                                 videos of 1..L frames at the fps in metadata sweep.<name>.fps
      metadata <case>.fps, .frames, .size, .crops
"""

import math
import os
import shutil
import struct
import sys
from fractions import Fraction

import numpy as np
import torch
import torchaudio
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import save_safetensors  # noqa: E402

AUDIO_OUT = os.path.join("tests", "data", "audio", "imagebind")
VIDEO_OUT = os.path.join("tests", "data", "video", "imagebind")
F32, F64 = torch.float32, torch.float64


# ---------------------------------------------------------------------------------------
# pytorchvideo data/clip_sampling.py, ConstantClipsPerVideoSampler.__call__
# ---------------------------------------------------------------------------------------

class ConstantClipsSampler:
    def __init__(self, clip_duration, clips_per_video):
        self.clip_duration = Fraction(clip_duration)
        self.clips_per_video = clips_per_video
        self.index = 0

    def __call__(self, last_clip_end_time, video_duration):
        # a float minus a Fraction is a float; the rest is Fraction arithmetic
        max_start = Fraction(max(video_duration - self.clip_duration, 0))
        uniform = Fraction(max_start, max(self.clips_per_video - 1, 1))
        start = uniform * self.index
        self.index += 1
        last = self.index >= self.clips_per_video or uniform * self.index > max_start
        if last:
            self.index = 0
        return start, start + self.clip_duration, last


# ImageBind data.py, get_clip_timepoints
def clip_timepoints(sampler, duration):
    points, last, end = [], False, 0.0
    while not last:
        start, end, last = sampler(end, duration)
        points.append((start, end))
    return points


# ---------------------------------------------------------------------------------------
# Audio: data.py waveform2melspec and load_and_transform_audio_data
# ---------------------------------------------------------------------------------------

def waveform2melspec(waveform, sample_rate, num_mel_bins, target_length):
    waveform -= waveform.mean()  # in place: `waveform` is a view of the whole file's waveform
    fbank = torchaudio.compliance.kaldi.fbank(
        waveform, htk_compat=True, sample_frequency=sample_rate, use_energy=False,
        window_type="hanning", num_mel_bins=num_mel_bins, dither=0.0, frame_length=25,
        frame_shift=10)
    fbank = fbank.transpose(0, 1)
    p = target_length - fbank.size(1)
    if p > 0:
        fbank = torch.nn.functional.pad(fbank, (0, p), mode="constant", value=0)
    elif p < 0:
        fbank = fbank[:, 0:target_length]
    return fbank.unsqueeze(0)


def load_and_transform_audio(path, dtype, num_mel_bins=128, target_length=204,
                             sample_rate=16000, clip_duration=2, clips_per_video=3,
                             mean=-4.268, std=9.138):
    """One file of load_and_transform_audio_data: [K, 1, M, T]."""
    sampler = ConstantClipsSampler(clip_duration, clips_per_video)
    waveform, sr = torchaudio.load(path)
    waveform = waveform.to(dtype)
    if sample_rate != sr:
        waveform = torchaudio.functional.resample(waveform, orig_freq=sr, new_freq=sample_rate)
    clips = []
    for start, end in clip_timepoints(sampler, waveform.size(1) / sample_rate):
        clip = waveform[:, int(start * sample_rate):int(end * sample_rate)]
        clips.append(waveform2melspec(clip, sample_rate, num_mel_bins, target_length))
    # transforms.Normalize(mean, std) on each [1, M, T] clip: (x - mean) / std
    clips = [(c - mean) / std for c in clips]
    return torch.stack(clips, dim=0)


def audio_ranges(samples, sample_rate=16000, clip_duration=2, clips_per_video=3):
    sampler = ConstantClipsSampler(clip_duration, clips_per_video)
    out = []
    for start, end in clip_timepoints(sampler, samples / sample_rate):
        b, e = int(start * sample_rate), int(end * sample_rate)
        out.append((min(b, samples), min(e, samples)))  # what Python's slicing keeps
    return out


def write_wav16(path, ints, rate):
    """PCM16 WAV of ints [N, C]."""
    ints = np.asarray(ints, dtype="<i2")
    channels = ints.shape[1]
    data = ints.tobytes()
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE")
        f.write(b"fmt " + struct.pack("<I", len(fmt)) + fmt)
        f.write(b"data" + struct.pack("<I", len(data)) + data)


def audio_signal(rng, rate, seconds, channels, dc):
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    cols = []
    for c in range(channels):
        f0 = 220.0 * (c + 1)
        x = (0.4 * np.sin(2 * np.pi * f0 * t + 0.3 * c) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t))
             + 0.2 * np.sin(2 * np.pi * (300 + 1500 * t) * t) + 0.03 * rng.normal(size=n)
             + dc[c])
        cols.append(x)
    x = np.stack(cols, 1)
    return np.round(np.clip(x, -1, 0.999) * 32767).astype(np.int64)


AUDIO_CASES = [
    # name, rate, seconds, channels, dc offsets, options
    ("short_0p7s_16k", 16000, 0.7, 1, (0.05,), {}),
    ("exact_2s_44k_stereo", 44100, 2.0, 2, (0.1, -0.3), {"num_mel_bins": 64}),
    ("long_5p3s_8k", 8000, 5.3, 1, (0.2,), {"num_mel_bins": 64}),
    ("stereo_4p1s_22k", 22050, 4.1, 2, (0.25, -0.2), {"num_mel_bins": 64}),
    ("long_7s_16k_cut", 16000, 7.0, 1, (-0.1,), {"num_mel_bins": 64, "target_length": 150}),
]


def make_audio(rng):
    tensors, meta = {}, {}
    for name, rate, seconds, channels, dc, options in AUDIO_CASES:
        path = os.path.join(AUDIO_OUT, name + ".wav")
        write_wav16(path, audio_signal(rng, rate, seconds, channels, dc), rate)
        out = {}
        for dtype in (F32, F64):
            clips = load_and_transform_audio(path, dtype, **options)  # [K, 1, M, T]
            k, _, m, t = clips.shape
            out[dtype] = clips[:, 0].permute(1, 0, 2).reshape(m, k * t)  # [M, K*T]
        tensors[name + ".f32"] = out[F32].to(F32)
        tensors[name + ".f64"] = out[F64].to(F32)
        meta[name + ".rate"] = rate
        meta[name + ".n_mels"] = options.get("num_mel_bins", 128)
        meta[name + ".target_length"] = options.get("target_length", 204)
        print(f"  audio {name:22s} {tuple(out[F64].shape)}  f32 vs f64 "
              f"{(out[F32].double() - out[F64]).abs().max():.3g}")
    lengths = sorted(set(list(range(0, 1200, 7)) + list(range(31990, 32020)) +
                         list(range(95990, 96010)) +
                         # where a float product would round up across an integer
                         [32561, 32686, 32811, 32936, 33061, 33122] + [16000 * s + d for s in range(2, 9)
                                                      for d in (-3, -1, 0, 1, 2, 5)] +
                         [int(rng.integers(400, 2_000_000)) for _ in range(200)]))
    begins, ends = [], []
    for n in lengths:
        r = audio_ranges(n)
        begins.append([b for b, _ in r])
        ends.append([e for _, e in r])
    tensors["ranges.samples"] = torch.tensor(lengths, dtype=torch.int64)
    tensors["ranges.begin"] = torch.tensor(begins, dtype=torch.int64)
    tensors["ranges.end"] = torch.tensor(ends, dtype=torch.int64)
    save_safetensors(os.path.join(AUDIO_OUT, "cases.safetensors"), tensors, meta)


# ---------------------------------------------------------------------------------------
# Video: data.py load_and_transform_video_data with pytorchvideo's pieces
# ---------------------------------------------------------------------------------------

class DecordVideo:
    """EncodedVideoDecord over decoded frames [N, H, W, 3] (uint8) at avg fps `fps`."""

    def __init__(self, frames, fps):
        self.frames, self.fps = frames, float(fps)
        self.duration = float(len(frames)) / float(self.fps)

    def clip_indices(self, start_sec, end_sec):
        # EncodedVideoDecord.get_clip; float * Fraction is float * float(Fraction)
        if start_sec > end_sec or start_sec > self.duration:
            raise RuntimeError("Incorrect time window")
        start_idx = math.ceil(self.fps * start_sec)
        end_idx = min(math.ceil(self.fps * end_sec), len(self.frames))
        return list(range(start_idx, end_idx))

    def get_clip(self, start_sec, end_sec):
        idx = self.clip_indices(start_sec, end_sec)
        video = torch.from_numpy(self.frames[idx]).to(torch.float32)  # [T, H, W, C]
        return {"video": video.permute(3, 0, 1, 2), "indices": idx}  # thwc_to_cthw


# pytorchvideo transforms/functional.py uniform_temporal_subsample
def temporal_subsample_indices(t, num_samples):
    assert num_samples > 0 and t > 0
    indices = torch.linspace(0, t - 1, num_samples)
    return torch.clamp(indices, 0, t - 1).long()


# pytorchvideo transforms/functional.py short_side_scale (backend "pytorch")
def short_side_scale(x, size):
    c, t, h, w = x.shape
    if w < h:
        new_h, new_w = int(math.floor((float(h) / w) * size)), size
    else:
        new_h, new_w = size, int(math.floor((float(w) / h) * size))
    return torch.nn.functional.interpolate(x, size=(new_h, new_w), mode="bilinear",
                                           align_corners=False)


MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


# data.py NormalizeVideo
def normalize_video(clip):
    mean = torch.as_tensor(MEAN, dtype=clip.dtype)
    std = torch.as_tensor(STD, dtype=clip.dtype)
    return clip.clone().sub_(mean[:, None, None, None]).div_(std[:, None, None, None])


# data.py uniform_crop (no scale_size, no boxes), on [C, T, H, W]
def uniform_crop(images, size, spatial_idx):
    height, width = images.shape[2], images.shape[3]
    y_offset = int(math.ceil((height - size) / 2))
    x_offset = int(math.ceil((width - size) / 2))
    if height > width:
        if spatial_idx == 0:
            y_offset = 0
        elif spatial_idx == 2:
            y_offset = height - size
    else:
        if spatial_idx == 0:
            x_offset = 0
        elif spatial_idx == 2:
            x_offset = width - size
    return images[:, :, y_offset:y_offset + size, x_offset:x_offset + size]


# data.py SpatialCrop.forward
def spatial_crop(videos, size, num_crops):
    crops = [0, 1, 2] if num_crops == 3 else [1]
    return [uniform_crop(v, size, i) for v in videos for i in crops]


def load_and_transform_video(frames, fps, size=224, crops=3, clip_duration=2,
                             clips_per_video=5):
    """One video of load_and_transform_video_data: ([K*crops, C, F, S, S], [K][F] indices)."""
    video = DecordVideo(frames, fps)
    sampler = ConstantClipsSampler(clip_duration, clips_per_video)
    clips, indices = [], []
    for start, end in clip_timepoints(sampler, video.duration):
        clip = video.get_clip(start, end)
        pick = temporal_subsample_indices(clip["video"].shape[1], clip_duration)
        indices.append([clip["indices"][i] for i in pick.tolist()])
        clips.append(torch.index_select(clip["video"], 1, pick) / 255.0)
    clips = [normalize_video(short_side_scale(c, size)) for c in clips]
    return torch.stack(spatial_crop(clips, size, crops), dim=0), indices


def video_frames(rng, n, h, w):
    y, x = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(n):
        r = 128 + 100 * np.sin(0.3 * x + 0.2 * i) * np.cos(0.25 * y)
        g = 255.0 * ((x + 2 * i) % w) / w
        b = 255.0 * ((y * 3 + i) % h) / h
        f = np.stack([r, g, b], -1) + rng.normal(scale=12, size=(h, w, 3))
        frames.append(np.clip(np.round(f), 0, 255).astype(np.uint8))
    return np.stack(frames)


VIDEO_CASES = [
    # name, frames, height, width, fps, size, crops
    ("landscape_45f_15fps", 45, 30, 41, 15, 24, 3),
    ("portrait_12f_10fps", 12, 23, 17, 10, 32, 1),
]


def make_video(rng):
    tensors, meta = {}, {}
    for name, n, h, w, fps, size, crops in VIDEO_CASES:
        frames = video_frames(rng, n, h, w)
        d = os.path.join(VIDEO_OUT, name)
        os.makedirs(d)
        for i, f in enumerate(frames):
            Image.fromarray(f).save(os.path.join(d, f"frame_{i:04d}.png"))
        clips, indices = load_and_transform_video(frames, fps, size, crops)
        k = len(indices)
        tensors[name + ".indices"] = torch.tensor(indices, dtype=torch.int64)
        # [K*crops, C, F, S, S] -> [K*crops*F, C, S, S]
        tensors[name + ".clips"] = clips.permute(0, 2, 1, 3, 4).reshape(-1, 3, size, size)
        meta[name + ".fps"] = fps
        meta[name + ".frames"] = n
        meta[name + ".size"] = size
        meta[name + ".crops"] = crops
        print(f"  video {name:22s} {k} clips, indices {indices}")
    for label, fps in (("30", 30.0), ("25", 25.0), ("ntsc", 30000 / 1001), ("24", 24.0),
                       ("7p5", 7.5), ("23p976", 24000 / 1001)):
        counts = list(range(1, 301))
        all_indices = []
        for n in counts:
            video = DecordVideo(np.zeros((n, 1, 1, 3), np.uint8), fps)
            sampler = ConstantClipsSampler(2, 5)
            rows = []
            for start, end in clip_timepoints(sampler, video.duration):
                idx = video.clip_indices(start, end)
                rows.append([idx[i] for i in temporal_subsample_indices(len(idx), 2).tolist()])
            all_indices.append(rows)
        tensors[f"sweep.{label}.frames"] = torch.tensor(counts, dtype=torch.int64)
        tensors[f"sweep.{label}.indices"] = torch.tensor(all_indices, dtype=torch.int64)
        meta[f"sweep.{label}.fps"] = repr(fps)
    save_safetensors(os.path.join(VIDEO_OUT, "cases.safetensors"), tensors, meta)


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    for d in (AUDIO_OUT, VIDEO_OUT):
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(d)
    rng = np.random.default_rng(20260417)
    print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}")
    make_audio(rng)
    make_video(rng)
    for d in (AUDIO_OUT, VIDEO_OUT):
        total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)
        print(f"{d}: {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
