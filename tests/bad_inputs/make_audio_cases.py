#!/usr/bin/python3
"""Writes the audio sample-rate cases of tests/bad_inputs/audio/ (issue 16).

Run from anywhere (stdlib only, deterministic):

    /usr/bin/python3 tests/bad_inputs/make_audio_cases.py

A WAV header holds any 32-bit sample rate, and the rate alone once scaled the work and memory
of resampling to the model's rate (torchaudio's gcd-reduced polyphase kernel). tessera bounds
the rate to [WavLimits::min_sample_rate, WavLimits::max_sample_rate] = [1000, 768000] Hz and
takes a direct resampling plan for awkward rates (docs/audio.md). Each file is a tiny mono
PCM16 WAV:

  rate_1hz.wav        1 Hz: 0.1 s of audio would "last" 1600 s; refused by read_wav
  rate_max.wav        2^32 - 1 Hz; refused by read_wav
  rate_awkward.wav    44101 Hz, 0.1 s (4410 frames): a valid
                      file whose rate shares no factor with 16000. It must succeed, fast: the
                      positive case (torchaudio would build a [16000, 44135] kernel, 2.8 GB).
"""

import math
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def wav(rate, frames):
    """Mono PCM16 WAV of `frames` samples of a 440 Hz + 3 kHz tone at `rate` Hz."""
    samples = [int(8000 * math.sin(2 * math.pi * 440 * n / rate)
                   + 3000 * math.sin(2 * math.pi * 3000 * n / rate)) for n in range(frames)]
    data = struct.pack(f"<{frames}h", *samples)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, (rate * 2) & 0xFFFFFFFF, 2, 16)
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", len(data)) + data)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def main():
    out = os.path.join(HERE, "audio")
    os.makedirs(out, exist_ok=True)
    cases = {
        "rate_1hz.wav": wav(1, 1600),
        "rate_max.wav": wav(0xFFFFFFFF, 1600),
        "rate_awkward.wav": wav(44101, 4410),
    }
    for name, data in cases.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        print(f"  audio/{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
