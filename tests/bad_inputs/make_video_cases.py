#!/usr/bin/env python3
"""Writes the bad-input cases of the video and image front ends whose header fields multiply
work or memory (issue 16): frame rates, frame counts, sizes per frame and in all, sizes per
side. Each file is a few hundred bytes; each is refused from its header (or after one frame),
before anything large is allocated or decoded.

    /usr/bin/python3 tests/bad_inputs/make_video_cases.py

writes tests/bad_inputs/video/*.y4m, *.avi and tests/bad_inputs/image/* and prints one
catalogue line per case (tests/bad_inputs/catalogue.json's form). The AVI cases are read
through FFmpeg, so they need a tessera built with it (TESSERA_HAS_FFMPEG). Deterministic:
stdlib only, fixed bytes.
"""

import json
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = []


def write(name, data):
    path = os.path.join(HERE, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    assert len(data) < 20000, name


def entry(klass, name, option, error):
    CASES.append({"class": klass, "file": name, "option": option, "error": error})


def y4m(header, frames=0, frame_bytes=0):
    out = ("YUV4MPEG2 " + header + "\n").encode()
    for f in range(frames):
        out += b"FRAME\n" + bytes((f * 31 + i * 7) % 220 + 16 for i in range(frame_bytes))
    return out


def avi(width, height, frames, length, scale=1, rate=30):
    """An uncompressed (BI_RGB, 24-bit bottom-up) AVI holding `frames` frames whose headers
    claim `length` frames (avih dwTotalFrames, strh dwLength) at rate / scale frames per
    second."""
    def chunk(fourcc, body):
        pad = b"\0" if len(body) % 2 else b""
        return fourcc + struct.pack("<I", len(body)) + body + pad

    def lst(kind, body):
        return chunk(b"LIST", kind + body)

    stride = (width * 3 + 3) // 4 * 4
    frame_size = stride * height
    avih = struct.pack("<10I4I", min(1000000 * scale // rate, 0xFFFFFFFF), 0, 0, 0x10, length, 0, 1, frame_size,
                       width, height, 0, 0, 0, 0)
    strh = (b"vids" + b"DIB " + struct.pack("<IHHIIIIIIIIhhhh", 0, 0, 0, 0, scale, rate, 0,
                                                   length, frame_size, 0xFFFFFFFF, 0, 0, 0,
                                                   width, height))
    strf = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, frame_size, 0, 0, 0, 0)
    hdrl = lst(b"hdrl", chunk(b"avih", avih) + lst(b"strl", chunk(b"strh", strh) +
                                                 chunk(b"strf", strf)))
    chunks, index, offset = b"", b"", 4  # idx1 offsets count from the "movi" fourcc
    for f in range(frames):
        data = bytes((f * 29 + i * 11) % 256 for i in range(frame_size))
        index += b"00db" + struct.pack("<III", 0x10, offset, frame_size)
        piece = chunk(b"00db", data)
        chunks += piece
        offset += len(piece)
    movi = lst(b"movi", chunks)
    body = b"AVI " + hdrl + movi + chunk(b"idx1", index)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def png_header(width, height, depth=8, colour=2):
    """A PNG signature, IHDR and an empty IDAT/IEND: enough for the header checks."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def main():
    # ---- Y4M: the frame rate F<num>:<den> and the frame size ------------------------------------
    frame = 16 * 16 + 2 * 8 * 8
    write("video/frame_rate_zero.y4m", y4m("W16 H16 F1:0 C420jpeg", 1, frame))
    entry("absurd header value", "video/frame_rate_zero.y4m", "--video",
          'invalid frame rate "F1:0" in the stream header (expected F<num>:<den>, each an '
          "integer from 1 to 1073741824)")
    write("video/frame_rate_not_a_ratio.y4m", y4m("W16 H16 F1e-300 C420jpeg", 1, frame))
    entry("absurd header value", "video/frame_rate_not_a_ratio.y4m", "--video",
          'invalid frame rate "F1e-300" in the stream header')
    write("video/frame_rate_overflow.y4m", y4m("W16 H16 F1:4294967295 C420jpeg", 1, frame))
    entry("absurd header value", "video/frame_rate_overflow.y4m", "--video",
          'invalid frame rate "F1:4294967295" in the stream header')
    # One frame that would last 34 years: sampled at 1 fps, 1e9 samples of it.
    write("video/frame_rate_tiny.y4m", y4m("W16 H16 F1:1073741824 C420jpeg", 1, frame))
    entry("absurd header value", "video/frame_rate_tiny.y4m", "--video",
          'the frame rate "F1:1073741824" of the stream header is 9.31323e-10 frames per '
          "second, below VideoLimits::min_frame_rate = 0.01")
    write("video/frame_rate_huge.y4m", y4m("W16 H16 F1073741824:1 C420jpeg", 1, frame))
    entry("absurd header value", "video/frame_rate_huge.y4m", "--video",
          'the frame rate "F1073741824:1" of the stream header is 1.07374e+09 frames per '
          "second, above VideoLimits::max_frame_rate = 1e+06")
    write("video/frame_too_large.y4m", y4m("W8193 H8193 F25:1 C420jpeg") + b"FRAME\n" + bytes(64))
    entry("lying sizes", "video/frame_too_large.y4m", "--video",
          "frames of 8193x8193 exceed VideoLimits::max_pixels = 67108864")

    # ---- containers (FFmpeg): frame counts, sizes times frames, rates -------------------------
    # Two 4x4 frames whose headers claim a billion.
    write("video/billion_frames.avi", avi(4, 4, 2, 1000000000))
    entry("lying sizes", "video/billion_frames.avi", "--video",
          "the container says the video stream has 1000000000 frames (nb_frames), more than "
          "VideoLimits::max_frames = 100000")
    # 90000 frames (within max_frames) of 8192 x 8192 (within max_pixels): 6e12 pixels in all.
    write("video/total_pixels.avi", avi(8192, 8192, 0, 90000))
    entry("lying sizes", "video/total_pixels.avi", "--video",
          "more than VideoLimits::max_total_pixels = 207360000000")
    # A frame every 1e9 seconds.
    write("video/frame_rate_tiny.avi", avi(4, 4, 2, 2, scale=1000000000, rate=1))
    entry("absurd header value", "video/frame_rate_tiny.avi", "--video",
          "the video stream's avg_frame_rate 1/1000000000 is 1e-09 frames per second, below "
          "VideoLimits::min_frame_rate = 0.01")

    # ---- images: sizes per side -------------------------------------------------------------
    write("image/too_wide.png", png_header(0x80000000, 1))
    entry("lying sizes", "image/too_wide.png", "--image",
          "the PNG header gives an image of 2147483648 x 1 pixels, more than 2^31 per side")
    write("image/zero_height.png", png_header(16, 0))
    entry("lying sizes", "image/zero_height.png", "--image",
          "the PNG header gives an image of 16 x 0 pixels")
    write("image/huge_width.ppm", b"P6\n99999999999 1\n255\n" + bytes(3))
    entry("lying sizes", "image/huge_width.ppm", "--image",
          "invalid PPM/PGM header: the width is too large")
    # BMP height INT32_MIN (top-down rows): its magnitude is 2^31.
    bmp = (b"BM" + struct.pack("<IHHI", 54 + 12, 0, 0, 54)
           + struct.pack("<IiiHHIIiiII", 40, 2, -0x80000000, 1, 24, 0, 12, 0, 0, 0, 0) + bytes(12))
    write("image/height_int_min.bmp", bmp)
    entry("lying sizes", "image/height_int_min.bmp", "--image",
          "the BMP header gives an image of 2 x 2147483648 pixels, more than 2^31 per side")

    for case in CASES:
        print(json.dumps(case) + ",")


if __name__ == "__main__":
    main()
