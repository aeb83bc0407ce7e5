#!/usr/bin/python3
"""torchaudio's times-real-time on the cases of bench/bench_audio.cpp, for comparison.

    /usr/bin/python3 tests/reference/bench_audio_torch.py [--repeats 5]

Same 30 s signal as bench/bench_audio.cpp (two tones, a slow chirp, LCG noise; float32), same
work per case: kaldi fbank (128 mels, the SPEC 5.3 options, after subtracting the mean),
Whisper's log-mel (80 mels, formula of whisper/audio.py without padding), resampling
44.1 -> 16 kHz, and the whole pipeline from 44.1 kHz. Each case is timed with 1 and 2 torch
threads; the best of `repeats` runs is reported as x_realtime = 30 s / wall time.
"""

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torchaudio

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_audio_fixtures import slaney_mel_filters  # noqa: E402

SECONDS = 30.0


def signal(rate):
    n = int(SECONDS * rate)
    # the 32-bit LCG of bench/bench_audio.cpp, step by step (exact; about a second)
    states = np.empty(n, dtype=np.uint64)
    s = 12345
    for i in range(n):
        s = (s * 1664525 + 1013904223) & 0xFFFFFFFF
        states[i] = s
    noise = ((states >> np.uint64(8)).astype(np.float64) / 16777216.0 - 0.5) * 0.1
    t = np.arange(n) / rate
    x = (0.3 * np.sin(2 * np.pi * 440.0 * t) + 0.2 * np.sin(2 * np.pi * 3000.0 * t)
         + 0.2 * np.sin(2 * np.pi * (100.0 + 50.0 * t) * t) + noise)
    return torch.from_numpy(x.astype(np.float32))


def fbank(x):
    x = x - x.mean()
    return torchaudio.compliance.kaldi.fbank(
        x[None], htk_compat=True, sample_frequency=16000, use_energy=False,
        window_type="hanning", num_mel_bins=128, dither=0.0, frame_length=25,
        frame_shift=10).T


FILTERS = torch.from_numpy(slaney_mel_filters(16000, 400, 80)).float()
WINDOW = torch.hann_window(400)


def whisper(x):
    stft = torch.stft(x, 400, 160, window=WINDOW, return_complex=True)
    mel = FILTERS @ (stft[..., :-1].abs() ** 2)
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def resample(x):
    return torchaudio.functional.resample(x, 44100, 16000)


def pipeline(x):
    return (fbank(resample(x)) + 4.268) / 9.138


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    x16, x44 = signal(16000), signal(44100)
    cases = [("fbank", fbank, x16), ("whisper", whisper, x16),
             ("resample_44100", resample, x44), ("pipeline_44100", pipeline, x44)]
    print(f"torch {torch.__version__}, torchaudio {torchaudio.__version__}; 30 s of audio; "
          f"best of {args.repeats}")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for name, fn, x in cases:
            with torch.inference_mode():
                fn(x)  # warm-up
                best = math.inf
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    fn(x)
                    best = min(best, time.perf_counter() - start)
            print(f"torch/{name}/threads:{threads:<2d} {best * 1e3:9.1f} ms   "
                  f"x_realtime {SECONDS / best:8.0f}")


if __name__ == "__main__":
    main()
