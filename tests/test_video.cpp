// The video front end: io/y4m.hpp, io/video.hpp and tokenize/video.hpp (SPEC 5.4).
//
// Every fixture is made here: Y4M files of a moving square written with Y4mWriter, image
// directories of PPM frames, and, when tessera is built with FFmpeg, the same frames encoded
// in-process with libavcodec (ffv1 in MKV and AVI, mpeg4 in MP4, VP8/VP9 in WebM when this
// FFmpeg has libvpx), so no external tool is needed.

#include <tessera/io/video.hpp>
#include <tessera/io/y4m.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/tokenize/imagebind_clips.hpp>
#include <tessera/tokenize/video.hpp>

#include "test_util.hpp"

#include <gmock/gmock.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#if TESSERA_HAS_FFMPEG
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/frame.h>
}
#endif

namespace tessera {
namespace test_video {

using ::testing::HasSubstr;

// The message of the tessera::Error that `f` throws ("" and a test failure when none).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a tessera::Error";
  return "";
}

// Frame i of the test video: a gradient background and a colored square moving 2 px a frame.
Image moving_square(Index i, Index width, Index height) {
  Image f;
  f.width = width;
  f.height = height;
  f.rgb.resize(static_cast<std::size_t>(width * height * 3));
  const Index side = std::max<Index>(4, width / 4);
  const Index x0 = (2 * i) % std::max<Index>(1, width - side), y0 = (i) % std::max<Index>(1, height - side);
  for (Index y = 0; y < height; ++y)
    for (Index x = 0; x < width; ++x) {
      std::uint8_t* p = f.pixel(y, x);
      const bool inside = x >= x0 && x < x0 + side && y >= y0 && y < y0 + side;
      p[0] = inside ? 230 : static_cast<std::uint8_t>(40 + 100 * x / width);
      p[1] = inside ? 60 : static_cast<std::uint8_t>(50 + 80 * y / height);
      p[2] = inside ? 30 : static_cast<std::uint8_t>(90 + (i * 7) % 60);
    }
  return f;
}

Y4mHeader header(Index w, Index h, std::int64_t num = 30, std::int64_t den = 1,
                 Y4mColorspace c = Y4mColorspace::c420jpeg) {
  Y4mHeader hd;
  hd.width = w;
  hd.height = h;
  hd.rate_num = num;
  hd.rate_den = den;
  hd.colorspace = c;
  return hd;
}

void write_y4m(const std::filesystem::path& file, Index frames, const Y4mHeader& hd) {
  Y4mWriter out(file, hd);
  for (Index i = 0; i < frames; ++i) out.write(moving_square(i, hd.width, hd.height));
  out.close();
}

void write_text(const std::filesystem::path& file, const std::string& bytes) {
  std::ofstream(file, std::ios::binary) << bytes;
}

void write_ppm(const std::filesystem::path& file, const Image& f) {
  std::ofstream out(file, std::ios::binary);
  out << "P6\n" << f.width << " " << f.height << "\n255\n";
  out.write(reinterpret_cast<const char*>(f.rgb.data()), static_cast<std::streamsize>(f.rgb.size()));
}

int max_difference(const Image& a, const Image& b) {
  EXPECT_EQ(a.width, b.width);
  EXPECT_EQ(a.height, b.height);
  if (a.rgb.size() != b.rgb.size()) return 1 << 20;
  int largest = 0;
  for (std::size_t i = 0; i < a.rgb.size(); ++i) largest = std::max(largest, std::abs(a.rgb[i] - b.rgb[i]));
  return largest;
}

// ---- Y4M --------------------------------------------------------------------------------------

TEST(Y4m, HeaderAndRoundTrip444) {
  test::TempDir dir;
  write_y4m(dir / "a.y4m", 3, header(20, 12, 30000, 1001, Y4mColorspace::c444));
  Y4mReader in(dir / "a.y4m");
  EXPECT_EQ(in.header().width, 20);
  EXPECT_EQ(in.header().height, 12);
  EXPECT_EQ(in.header().colorspace, Y4mColorspace::c444);
  EXPECT_NEAR(in.header().frame_rate(), 29.97002997, 1e-6);
  EXPECT_DOUBLE_EQ(in.header().frame_time(30), 1.001);
  for (Index i = 0; i < 3; ++i) {
    const auto frame = in.read_frame();
    ASSERT_TRUE(frame);
    // RGB -> 8-bit limited-range YUV -> RGB loses at most a couple of levels.
    EXPECT_LE(max_difference(*frame, moving_square(i, 20, 12)), 2) << "frame " << i;
  }
  EXPECT_FALSE(in.read_frame());
  EXPECT_EQ(in.frames_read(), 3);
}

TEST(Y4m, ConversionIsBt601LimitedRange) {
  test::TempDir dir;
  auto convert = [&](Y4mColorspace c, bool full, int y, int u, int v) {
    Y4mHeader hd = header(2, 2, 25, 1, c);
    hd.full_range = full;
    Y4mWriter out(dir / "c.y4m", hd);
    YuvPlanes planes;
    planes.y.assign(4, static_cast<std::uint8_t>(y));
    const std::size_t chroma = static_cast<std::size_t>(hd.chroma_width() * hd.chroma_height());
    planes.u.assign(chroma, static_cast<std::uint8_t>(u));
    planes.v.assign(chroma, static_cast<std::uint8_t>(v));
    out.write_planes(planes);
    out.close();
    Y4mReader in(dir / "c.y4m");
    const Image f = *in.read_frame();
    return std::vector<int>{f.rgb[0], f.rgb[1], f.rgb[2]};
  };
  using V = std::vector<int>;
  EXPECT_EQ(convert(Y4mColorspace::c420jpeg, false, 235, 128, 128), (V{255, 255, 255}));
  EXPECT_EQ(convert(Y4mColorspace::c420mpeg2, false, 16, 128, 128), (V{0, 0, 0}));
  EXPECT_EQ(convert(Y4mColorspace::c422, false, 126, 128, 128), (V{128, 128, 128}));
  EXPECT_EQ(convert(Y4mColorspace::c420paldv, false, 81, 90, 240), (V{254, 0, 0}));  // red, rounded
  EXPECT_EQ(convert(Y4mColorspace::c420, false, 145, 54, 34), (V{0, 255, 1}));  // green, rounded
  EXPECT_EQ(convert(Y4mColorspace::c444, false, 41, 240, 110), (V{0, 0, 255}));       // blue
  EXPECT_EQ(convert(Y4mColorspace::mono, false, 126, 0, 0), (V{126, 126, 126}));  // as FFmpeg
  EXPECT_EQ(convert(Y4mColorspace::c444, true, 128, 128, 128), (V{128, 128, 128}));
  EXPECT_EQ(convert(Y4mColorspace::c444, true, 76, 85, 255), (V{254, 0, 0}));  // full-range red
}

TEST(Y4m, ParsesFfmpegStyleHeadersAndFrameParameters) {
  test::TempDir dir;
  std::string bytes = "YUV4MPEG2 W2 H2 F25:1 Ip A0:0 C420jpeg XYSCSS=420JPEG XCOLORRANGE=LIMITED\n";
  bytes += "FRAME Ixyz\n" + std::string(4, '\x10') + std::string(2, '\x80');
  write_text(dir / "f.y4m", bytes);
  Y4mReader in(dir / "f.y4m");
  EXPECT_EQ(in.header().colorspace, Y4mColorspace::c420jpeg);
  const auto f = in.read_frame();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->rgb, std::vector<std::uint8_t>(12, 0));
  EXPECT_FALSE(in.read_frame());
}

TEST(Y4m, StreamsFrameByFrame) {
  // Frames before a truncated one are delivered; the error comes when the bad frame is read.
  test::TempDir dir;
  write_y4m(dir / "s.y4m", 3, header(8, 8));
  const auto size = std::filesystem::file_size(dir / "s.y4m");
  std::filesystem::resize_file(dir / "s.y4m", size - 10);
  Y4mReader in(dir / "s.y4m");
  EXPECT_TRUE(in.read_frame());
  EXPECT_TRUE(in.read_frame());
  EXPECT_THAT(error_of([&] { in.read_frame(); }),
              HasSubstr("s.y4m: truncated frame 2: the V plane needs 16 bytes, the file has 6"));
}

TEST(Y4m, Errors) {
  test::TempDir dir;
  auto open = [&](const std::string& name, const std::string& bytes, VideoLimits limits = {}) {
    write_text(dir / name, bytes);
    return error_of([&] {
      Y4mReader in(dir / name, limits);
      while (in.read_frame()) {
      }
    });
  };
  const std::string frame = "FRAME\n" + std::string(6, 'x');
  EXPECT_THAT(open("empty.y4m", ""), HasSubstr("empty.y4m: empty file"));
  EXPECT_THAT(open("magic.y4m", "RIFF....WAVEfmt "),
              HasSubstr("magic.y4m: not a YUV4MPEG2 file (bad magic"));
  EXPECT_THAT(open("now.y4m", "YUV4MPEG2 H2 F25:1\n"), HasSubstr("now.y4m: the stream header has no width (W)"));
  EXPECT_THAT(open("noh.y4m", "YUV4MPEG2 W2 F25:1\n"), HasSubstr("noh.y4m: the stream header has no height (H)"));
  EXPECT_THAT(open("nof.y4m", "YUV4MPEG2 W2 H2\n"), HasSubstr("nof.y4m: the stream header has no frame rate"));
  EXPECT_THAT(open("badw.y4m", "YUV4MPEG2 W-2 H2 F25:1\n"), HasSubstr("badw.y4m: invalid width \"W-2\""));
  EXPECT_THAT(open("badf.y4m", "YUV4MPEG2 W2 H2 F25:0\n"), HasSubstr("badf.y4m: invalid frame rate \"F25:0\""));
  EXPECT_THAT(open("cs.y4m", "YUV4MPEG2 W2 H2 F25:1 C420p10\n"),
              HasSubstr("cs.y4m: unsupported colorspace \"C420p10\""));
  EXPECT_THAT(open("head.y4m", "YUV4MPEG2 W2 H2 F25:1"), HasSubstr("head.y4m: truncated stream header"));
  EXPECT_THAT(open("trunc.y4m", "YUV4MPEG2 W2 H2 F25:1\n" + frame + "FRAME\nxxx"),
              HasSubstr("trunc.y4m: truncated frame 1: the Y plane needs 4 bytes, the file has 3"));
  EXPECT_THAT(open("fh.y4m", "YUV4MPEG2 W2 H2 F25:1\n" + frame + "FRAMX\n"),
              HasSubstr("fh.y4m: frame 1: expected a FRAME header, got \"FRAMX\""));
  EXPECT_THAT(open("many.y4m", "YUV4MPEG2 W2 H2 F25:1\n" + frame + frame + frame, {2, 100}),
              HasSubstr("many.y4m: more than 2 frames (VideoLimits::max_frames)"));
  EXPECT_THAT(open("big.y4m", "YUV4MPEG2 W200 H200 F25:1\n", {10, 100}),
              HasSubstr("big.y4m: frames of 200x200 exceed VideoLimits::max_pixels = 100"));
  EXPECT_THAT(error_of([&] { Y4mReader in(dir / "missing.y4m"); }),
              HasSubstr("missing.y4m: cannot open the Y4M file"));
}

TEST(Y4m, FrameRateOutsideTheLimitsNamesTheField) {
  test::TempDir dir;
  auto open = [&](const std::string& name, const std::string& bytes, VideoLimits limits = {}) {
    write_text(dir / name, bytes);
    return error_of([&] { Y4mReader in(dir / name, limits); });
  };
  EXPECT_THAT(open("slow.y4m", "YUV4MPEG2 W2 H2 F1:1073741824\n"),
              HasSubstr("slow.y4m: the frame rate \"F1:1073741824\" of the stream header is "
                        "9.31323e-10 frames per second, below VideoLimits::min_frame_rate = 0.01"));
  EXPECT_THAT(open("fast.y4m", "YUV4MPEG2 W2 H2 F1073741824:1\n"),
              HasSubstr("fast.y4m: the frame rate \"F1073741824:1\" of the stream header is "
                        "1.07374e+09 frames per second, above VideoLimits::max_frame_rate = 1e+06"));
  EXPECT_THAT(open("wide.y4m", "YUV4MPEG2 W2 H2 F1:4294967295\n"),
              HasSubstr("wide.y4m: invalid frame rate \"F1:4294967295\" in the stream header "
                        "(expected F<num>:<den>, each an integer from 1 to 1073741824)"));
  EXPECT_THAT(open("zero.y4m", "YUV4MPEG2 W2 H2 F0:1\n"), HasSubstr("invalid frame rate \"F0:1\""));
  EXPECT_THAT(open("real.y4m", "YUV4MPEG2 W2 H2 F1e-300\n"), HasSubstr("invalid frame rate \"F1e-300\""));
  // The range is the caller's: a 1 fps time-lapse refused by a stricter reader.
  VideoLimits strict;
  strict.min_frame_rate = 2;
  EXPECT_THAT(open("timelapse.y4m", "YUV4MPEG2 W2 H2 F1:1\n", strict),
              HasSubstr("is 1 frames per second, below VideoLimits::min_frame_rate = 2"));
  // The bounds themselves are accepted: F1:100 and F1000000:1.
  write_text(dir / "edge.y4m", "YUV4MPEG2 W2 H2 F1:100\n");
  EXPECT_DOUBLE_EQ(Y4mReader(dir / "edge.y4m").header().frame_rate(), 0.01);
  write_text(dir / "edge.y4m", "YUV4MPEG2 W2 H2 F1000000:1\n");
  EXPECT_DOUBLE_EQ(Y4mReader(dir / "edge.y4m").header().frame_rate(), 1e6);
}

TEST(Y4m, TotalPixelsCheckedBeforeEachFrameIsRead) {
  test::TempDir dir;
  // Frames of 2x2 (6 bytes each in 4:2:0): at most 10 pixels in all allows 2 frames; the
  // third is refused before its planes are read (it is short: reading it would say so).
  const std::string frame = "FRAME\n" + std::string(6, 'x');
  write_text(dir / "long.y4m", "YUV4MPEG2 W2 H2 F25:1\n" + frame + frame + "FRAME\nxx");
  VideoLimits limits;
  limits.max_total_pixels = 10;
  Y4mReader in(dir / "long.y4m", limits);
  EXPECT_TRUE(in.read_frame());
  EXPECT_TRUE(in.read_frame());
  EXPECT_THAT(error_of([&] { in.read_frame(); }),
              HasSubstr("long.y4m: frame 2 (2x2) takes the video past "
                        "VideoLimits::max_total_pixels = 10 pixels (8 in the frames before it)"));
  // The default: 100000 frames of 1080p.
  EXPECT_EQ(VideoLimits{}.max_total_pixels, Index{100000} * 1920 * 1080);
}

// ---- VideoReader ------------------------------------------------------------------------------

TEST(VideoReader, Y4mFramesAndTimes) {
  test::TempDir dir;
  write_y4m(dir / "clip.dat", 4, header(16, 8, 25, 2));  // recognised by magic, 12.5 fps
  VideoReader video = VideoReader::open(dir / "clip.dat");
  EXPECT_EQ(video.kind(), VideoSourceKind::y4m);
  EXPECT_DOUBLE_EQ(video.frame_rate(), 12.5);
  const auto frames = video.read_all();
  ASSERT_EQ(frames.size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(frames[i].index, static_cast<Index>(i));
    EXPECT_DOUBLE_EQ(frames[i].time, 0.08 * static_cast<double>(i));
    EXPECT_DOUBLE_EQ(frames[i].duration, 0.08);
    EXPECT_EQ(frames[i].image.width, 16);
  }
}

#if TESSERA_HAS_STB

TEST(VideoReader, ImageDirectorySortedByName) {
  test::TempDir dir;
  // Written out of order; a non-image file and a hidden file are skipped.
  for (int i : {2, 0, 3, 1}) write_ppm(dir / ("frame_" + std::to_string(i) + ".ppm"), moving_square(i, 8, 6));
  write_text(dir / "notes.txt", "not a frame");
  write_ppm(dir / ".hidden.ppm", moving_square(9, 8, 6));
  VideoReader video = VideoReader::open(dir.path());
  EXPECT_EQ(video.kind(), VideoSourceKind::images);
  EXPECT_DOUBLE_EQ(video.frame_rate(), 30.0);
  const auto frames = video.read_all();
  ASSERT_EQ(frames.size(), 4u);
  for (Index i = 0; i < 4; ++i) {
    EXPECT_EQ(frames[static_cast<std::size_t>(i)].image, moving_square(i, 8, 6));
    EXPECT_DOUBLE_EQ(frames[static_cast<std::size_t>(i)].time, static_cast<double>(i) / 30.0);
  }
  VideoOptions options;
  options.images_fps = 10;
  EXPECT_DOUBLE_EQ(VideoReader::open(dir.path(), options).read_all()[3].time, 0.3);
}

TEST(VideoReader, ImageDirectoryErrors) {
  test::TempDir dir;
  std::filesystem::create_directories(dir / "empty");
  write_text(dir / "empty" / "readme.txt", "no frames here");
  EXPECT_THAT(error_of([&] { VideoReader::open(dir / "empty"); }),
              HasSubstr("empty: no image files in the directory"));
  std::filesystem::create_directories(dir / "bad");
  write_text(dir / "bad" / "0.ppm", "P6\n4 4\n255\nshort");
  EXPECT_THAT(error_of([&] { VideoReader::open(dir / "bad").read_all(); }),
              HasSubstr("0.ppm: truncated PPM/PGM data"));
  std::filesystem::create_directories(dir / "many");
  for (int i = 0; i < 3; ++i) write_ppm(dir / "many" / (std::to_string(i) + ".ppm"), moving_square(i, 4, 4));
  VideoOptions options;
  options.limits.max_frames = 2;
  EXPECT_THAT(error_of([&] { VideoReader::open(dir / "many", options); }),
              HasSubstr("many: more than 2 image files"));
  options = {};
  options.limits.max_pixels = 15;
  EXPECT_THAT(error_of([&] { VideoReader::open(dir / "many", options).next(); }),
              HasSubstr("0.ppm: the image is 4 x 4 = 16 pixels, more than ImageLimits::max_pixels = 15"));
  options = {};
  options.images_fps = 0;
  EXPECT_THAT(error_of([&] { VideoReader::open(dir / "many", options); }),
              HasSubstr("images_fps must be a positive frame rate"));
  // The programs' --video-fps: 1e-300 would make each frame last 1e300 s.
  options.images_fps = 1e-300;
  EXPECT_THAT(error_of([&] { VideoReader::open(dir / "many", options); }),
              HasSubstr("many: images_fps (the image directory's frame rate: --video-fps of "
                        "the programs, video_fps in Python) is 1e-300 frames per second, below "
                        "VideoLimits::min_frame_rate = 0.01 (a frame every 100 s)"));
  options.images_fps = 1e300;
  EXPECT_THAT(error_of([&] { VideoReader::open(dir / "many", options); }),
              HasSubstr("is 1e+300 frames per second, above VideoLimits::max_frame_rate = 1e+06"));
  // Pixels in all, from each image's header before it is decoded: frame 2 is cut short, and
  // the limit, not the truncation, is what stops it.
  options = {};
  options.limits.max_total_pixels = 40;
  write_text(dir / "many" / "2.ppm", "P6\n4 4\n255\nshort");
  VideoReader three = VideoReader::open(dir / "many", options);
  EXPECT_TRUE(three.next());
  EXPECT_TRUE(three.next());
  EXPECT_THAT(error_of([&] { three.next(); }),
              HasSubstr("2.ppm: frame 2 (4x4) takes the video past VideoLimits::max_total_pixels "
                        "= 40 pixels (32 in the frames before it)"));
  EXPECT_THAT(error_of([&] { VideoReader::open(dir / "nothing"); }),
              HasSubstr("nothing: no such file or directory"));
}

#else

TEST(VideoReader, ImageDirectoryWithoutStbIsAClearError) {
  test::TempDir dir;
  write_ppm(dir / "0.ppm", moving_square(0, 4, 4));
  EXPECT_THAT(error_of([&] { VideoReader::open(dir.path()).next(); }),
              HasSubstr("0.ppm: tessera was built without stb_image"));
}

#endif  // TESSERA_HAS_STB

TEST(VideoReader, FramesEndByMaxDuration) {
  test::TempDir dir;
  write_y4m(dir / "v.y4m", 5, header(8, 8, 10, 1));  // frames at 0, 0.1, ... lasting 0.1 s
  VideoOptions options;
  options.limits.max_duration = 0.35;
  VideoReader video = VideoReader::open(dir / "v.y4m", options);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(video.next());
  EXPECT_THAT(error_of([&] { video.next(); }),
              HasSubstr("v.y4m: frame 3 is at 0.3 s and lasts 0.1 s, past "
                        "VideoLimits::max_duration = 0.35 s"));
  EXPECT_EQ(video.limits().max_duration, 0.35);
}

// ---- Sampling ---------------------------------------------------------------------------------

std::vector<Index> indices_of(const std::filesystem::path& file, double fps) {
  return sample_frame_indices(VideoReader::open(file), fps);
}

std::vector<Index> expected_indices(Index frames, double source_fps, double fps) {
  // The rule written out: t_k = k / fps, nearest earlier frame, while t_k < frames / source_fps.
  std::vector<Index> out;
  for (Index k = 0; static_cast<double>(k) / fps < static_cast<double>(frames) / source_fps - 1e-9; ++k)
    out.push_back(std::min(frames - 1, static_cast<Index>(std::floor(k * source_fps / fps + 1e-9))));
  return out;
}

TEST(Sampling, NearestEarlierFrameUpToTheEnd) {
  test::TempDir dir;
  write_y4m(dir / "90.y4m", 90, header(8, 8));
  write_y4m(dir / "91.y4m", 91, header(8, 8));
  write_y4m(dir / "ntsc.y4m", 100, header(8, 8, 30000, 1001));
  EXPECT_EQ(indices_of(dir / "90.y4m", 1.0), (std::vector<Index>{0, 30, 60}));
  EXPECT_EQ(indices_of(dir / "91.y4m", 1.0), (std::vector<Index>{0, 30, 60, 90}));
  EXPECT_EQ(indices_of(dir / "90.y4m", 0.5), (std::vector<Index>{0, 60}));
  EXPECT_EQ(indices_of(dir / "90.y4m", 30.0), expected_indices(90, 30, 30));  // every frame
  EXPECT_EQ(indices_of(dir / "90.y4m", 7.0), expected_indices(90, 30, 7));
  EXPECT_EQ(indices_of(dir / "90.y4m", 3.0).size(), 9u);
  // 29.97 fps at 1 fps: frame 30 is at 1.001 s, so second 1 takes frame 29.
  EXPECT_EQ(indices_of(dir / "ntsc.y4m", 1.0), (std::vector<Index>{0, 29, 59, 89}));
  // Faster than the source: every frame twice.
  const auto doubled = indices_of(dir / "90.y4m", 60.0);
  ASSERT_EQ(doubled.size(), 180u);
  for (Index k = 0; k < 180; ++k) EXPECT_EQ(doubled[static_cast<std::size_t>(k)], k / 2);
  // A single frame gives one sample at any rate.
  write_y4m(dir / "one.y4m", 1, header(8, 8));
  EXPECT_EQ(indices_of(dir / "one.y4m", 1000.0), expected_indices(1, 30, 1000));
  EXPECT_EQ(indices_of(dir / "one.y4m", 0.1), (std::vector<Index>{0}));
  EXPECT_THAT(error_of([&] { indices_of(dir / "one.y4m", 0.0); }), HasSubstr("sampling fps must be positive"));
}

TEST(Sampling, AtMostMaxSamplesPerVideo) {
  // One frame lasting 1 s sampled at 100 fps: 100 samples of it; a limit of 5 stops the
  // sampler at the sixth, naming the frame that kept being repeated.
  test::TempDir dir;
  write_y4m(dir / "one.y4m", 1, header(8, 8, 1, 1));
  VideoOptions options;
  options.limits.max_samples = 5;
  EXPECT_EQ(sample_frame_indices(VideoReader::open(dir / "one.y4m"), 100).size(), 100u);
  EXPECT_THAT(error_of([&] { sample_frame_indices(VideoReader::open(dir / "one.y4m", options), 100); }),
              HasSubstr("one.y4m: sampled at 100 fps the video gives more than 5 samples "
                        "(VideoLimits::max_samples): sample 5 at 0.05 s still takes frame 0 (at 0 "
                        "s, lasting 1 s)"));
  // An absurd sampling rate repeats frame 0 until the limit instead of forever.
  EXPECT_THAT(error_of([&] { sample_frame_indices(VideoReader::open(dir / "one.y4m"), 1e300); }),
              HasSubstr("sampled at 1e+300 fps the video gives more than 200000 samples"));
}

Config video_config(Index size, Index patch, Index tubelet, double fps) {
  Config c;
  c.hidden_dim = 8;
  c.num_heads = 2;
  c.num_layers = 1;
  c.ffn_dim = 16;
  c.embed_dim = 4;
  c.image = ImageConfig{};
  c.image->size = size;
  c.image->patch = patch;
  c.video = VideoConfig{};
  c.video->tubelet = tubelet;
  c.video->fps = fps;
  validate(c);
  return c;
}

TEST(Sampling, PreprocessVideoGivesTheSampledFrames) {
  test::TempDir dir;
  write_y4m(dir / "v.y4m", 90, header(16, 16));
  const Config config = video_config(16, 8, 2, 1.0);
  const PreprocessedVideo v = preprocess_video(VideoReader::open(dir / "v.y4m"), config);
  ASSERT_EQ(v.frames.dimension(0), 3);
  EXPECT_EQ(v.frames.dimension(1), 3);
  EXPECT_EQ(v.frames.dimension(2), 16);
  EXPECT_EQ(v.source_indices, (std::vector<Index>{0, 30, 60}));
  // Sample 1 is source frame 30 through the pipeline.
  Y4mReader in(dir / "v.y4m");
  std::optional<Image> f;
  for (int i = 0; i <= 30; ++i) f = in.read_frame();
  const Tensor3<float> expected = preprocess_frame(*f, *config.image);
  for (Index c = 0; c < 3; ++c)
    for (Index y = 0; y < 16; ++y)
      for (Index x = 0; x < 16; ++x) ASSERT_EQ(v.frames(1, c, y, x), expected(c, y, x));
  EXPECT_EQ(load_video(dir / "v.y4m", config).dimension(0), 3);
}

TEST(Sampling, AFrameSampledTwiceIsPreprocessedOnce) {
  test::TempDir dir;
  write_y4m(dir / "v.y4m", 10, header(16, 16));
  int calls = 0;
  FramePipeline counting = [&](const Image& frame, const ImageConfig& image) {
    ++calls;
    return preprocess_frame(frame, image);
  };
  const auto v = preprocess_video(VideoReader::open(dir / "v.y4m"), video_config(16, 8, 2, 60.0), counting);
  EXPECT_EQ(v.frames.dimension(0), 20);
  EXPECT_EQ(calls, 10);
}

TEST(Sampling, PreprocessVideoErrors) {
  test::TempDir dir;
  write_y4m(dir / "long.y4m", 40, header(16, 16));
  Config config = video_config(16, 8, 2, 30.0);
  config.video->max_tokens = 16;  // 4 patches per step: at most 4 steps = 8 frames
  EXPECT_THAT(error_of([&] { preprocess_video(VideoReader::open(dir / "long.y4m"), config); }),
              HasSubstr("long.y4m: sampled at 30 fps the video has more than 8 frames, which "
                        "makes more than video.max_tokens = 16 tokens"));
  write_text(dir / "none.y4m", "YUV4MPEG2 W16 H16 F30:1\n");
  EXPECT_THAT(error_of([&] { load_video(dir / "none.y4m", config); }),
              HasSubstr("none.y4m: the video has no frames"));
  Config no_video = config;
  no_video.video.reset();
  EXPECT_THAT(error_of([&] { load_video(dir / "long.y4m", no_video); }),
              HasSubstr("the config has no video section"));
}

TEST(Sampling, ConfigFpsIsBounded) {
  // video.fps multiplies the samples of every video: config validation bounds it.
  Config config = video_config(16, 8, 2, 1.0);
  for (double fps : {1e-300, 1e-4, 1e300, 1001.0}) {
    config.video->fps = fps;
    EXPECT_THAT(error_of([&] { validate(config, "config.json"); }),
                HasSubstr("config.json: key \"video.fps\": expected a rate from 0.001 to 1000 "
                          "samples per second, got "));
  }
  for (double fps : {0.001, 1000.0, 30000.0 / 1001.0}) {
    config.video->fps = fps;
    EXPECT_NO_THROW(validate(config, "config.json"));
  }
}

TEST(Sampling, DefaultPipelineIsTheImagePipeline) {
  ImageConfig image;
  image.size = 8;
  const Image frame = moving_square(3, 20, 12);
  const Tensor3<float> ours = preprocess_frame(frame, image);
  const Tensor3<float> theirs = preprocess_image<float>(frame, image);
  ASSERT_EQ(ours.dimension(0), 3);
  ASSERT_EQ(ours.dimension(1), 8);
  ASSERT_EQ(ours.dimension(2), 8);
  for (Index i = 0; i < ours.size(); ++i) ASSERT_EQ(ours.data()[i], theirs.data()[i]);
}

// ---- Sliding window ---------------------------------------------------------------------------

struct WindowCase {
  Index frames, window, overlap;
};

TEST(SlidingWindow, EqualsRecomputingEachWindowAndReusesTubelets) {
  test::TempDir dir;
  const Config config = video_config(16, 8, 2, 30.0);
  MultiModalEncoder<float> model(config);
  model.init_random(7);
  for (const WindowCase& wc : {WindowCase{11, 4, 2}, WindowCase{12, 4, 0}, WindowCase{12, 6, 4},
                               WindowCase{3, 8, 2}, WindowCase{16, 8, 6}}) {
    SCOPED_TRACE(::testing::Message() << wc.frames << " frames, window " << wc.window
                                      << ", overlap " << wc.overlap);
    write_y4m(dir / "w.y4m", wc.frames, header(16, 16));
    const PreprocessedVideo all = preprocess_video(VideoReader::open(dir / "w.y4m"), config);
    SlidingWindow<float> windows(VideoReader::open(dir / "w.y4m"), config,
                                 {wc.window, wc.overlap}, &model.video_patch_embed);
    const Index stride = wc.window - wc.overlap;
    Index count = 0, from_scratch = 0;
    while (auto w = windows.next()) {
      EXPECT_EQ(w->index, count);
      EXPECT_EQ(w->first_frame, count * stride);
      const Index t = std::min(wc.window, wc.frames - w->first_frame);
      ASSERT_EQ(w->video.dimension(0), t);
      // From scratch: the window's frames, patchified and embedded in one go.
      Tensor4<float> clip(t, 3, 16, 16);
      const Index plane = 3 * 16 * 16;
      std::copy(all.frames.data() + w->first_frame * plane,
                all.frames.data() + (w->first_frame + t) * plane, clip.data());
      for (Index i = 0; i < t * plane; ++i) ASSERT_EQ(w->video.data()[i], clip.data()[i]);
      const Matrix<float> patches = nn::patchify_video(clip, 2, 8);
      Matrix<float> tokens(patches.rows(), 8);
      model.video_patch_embed.forward(tokens, patches);
      EXPECT_TRUE(test::all_close(w->tokens, tokens, 1e-6, 1e-5));
      from_scratch += (t + 1) / 2;
      ++count;
    }
    const Index expected_windows =
        wc.frames <= wc.window ? 1 : 1 + (wc.frames - wc.overlap - 1) / stride;
    EXPECT_EQ(count, expected_windows);
    // Every tubelet and every frame computed once, however many windows share it.
    EXPECT_EQ(windows.tubelets_computed(), (wc.frames + 1) / 2);
    EXPECT_EQ(windows.frames_preprocessed(), wc.frames);
    if (wc.overlap > 0 && count > 1) {
      EXPECT_LT(windows.tubelets_computed(), from_scratch);
    }
    EXPECT_FALSE(windows.next());
  }
}

TEST(SlidingWindow, RawPatchesWithoutAnEmbedding) {
  test::TempDir dir;
  const Config config = video_config(16, 8, 2, 30.0);
  write_y4m(dir / "w.y4m", 6, header(16, 16));
  const PreprocessedVideo all = preprocess_video(VideoReader::open(dir / "w.y4m"), config);
  SlidingWindow<double> windows(VideoReader::open(dir / "w.y4m"), config, {4, 2});
  auto w = windows.next();
  w = windows.next();  // frames 2..5
  ASSERT_TRUE(w);
  EXPECT_EQ(w->tokens.rows(), 2 * 4);
  EXPECT_EQ(w->tokens.cols(), 3 * 2 * 8 * 8);
  Tensor4<float> clip = all.frames.slice(Eigen::array<Index, 4>{2, 0, 0, 0},
                                         Eigen::array<Index, 4>{4, 3, 16, 16});
  const Matrix<float> patches = nn::patchify_video(clip, 2, 8);
  EXPECT_TRUE(test::all_close(w->tokens, patches.cast<double>(), 0, 0));
  EXPECT_EQ(w->source_indices, (std::vector<Index>{2, 3, 4, 5}));
  EXPECT_DOUBLE_EQ(w->start_time, 2.0 / 30.0);
  EXPECT_EQ(w->first_tubelet, 1);
}

TEST(SlidingWindow, Errors) {
  test::TempDir dir;
  Config config = video_config(16, 8, 2, 30.0);
  write_y4m(dir / "w.y4m", 4, header(16, 16));
  auto make = [&](Index window, Index overlap) {
    return error_of([&] { SlidingWindow<float>(VideoReader::open(dir / "w.y4m"), config, {window, overlap}); });
  };
  EXPECT_THAT(make(3, 0), HasSubstr("w.y4m: window = 3 frames must be a positive multiple of video.tubelet = 2"));
  EXPECT_THAT(make(4, 1), HasSubstr("overlap = 1 frames must be a multiple of video.tubelet = 2 in [0, window = 4)"));
  EXPECT_THAT(make(4, 4), HasSubstr("overlap = 4 frames"));
  config.video->max_tokens = 4;
  EXPECT_THAT(make(4, 0), HasSubstr("a window of 4 frames makes 8 tokens, more than video.max_tokens = 4"));
  config.video->max_tokens = 4096;
  nn::PatchEmbed<float> wrong(10, 8);
  EXPECT_THAT(error_of([&] {
                SlidingWindow<float>(VideoReader::open(dir / "w.y4m"), config, {4, 0}, &wrong);
              }),
              HasSubstr("the patch embedding takes 10 values per patch"));
  write_text(dir / "none.y4m", "YUV4MPEG2 W16 H16 F30:1\n");
  SlidingWindow<float> empty(VideoReader::open(dir / "none.y4m"), config, {4, 0});
  EXPECT_THAT(error_of([&] { empty.next(); }), HasSubstr("none.y4m: the video has no frames"));
}

TEST(SlidingWindow, EndsAtMaxSamplesWhateverTheFps) {
  // A config whose fps escaped validation: windows of frame 0 repeated would never end; the
  // sampler's limit ends them, with work bounded by max_samples.
  test::TempDir dir;
  Config config = video_config(16, 8, 2, 30.0);
  config.video->fps = 1e300;
  write_y4m(dir / "w.y4m", 4, header(16, 16));
  VideoOptions options;
  options.limits.max_samples = 40;
  SlidingWindow<float> windows(VideoReader::open(dir / "w.y4m", options), config, {4, 0});
  EXPECT_THAT(error_of([&] {
                while (windows.next()) {
                }
              }),
              HasSubstr("w.y4m: sampled at 1e+300 fps the video gives more than 40 samples"));
  EXPECT_LE(windows.windows(), 10);
  EXPECT_EQ(windows.frames_preprocessed(), 1);
}

// ---- FFmpeg containers ------------------------------------------------------------------------

#if TESSERA_HAS_FFMPEG

double mean_difference(const Image& a, const Image& b) {
  double sum = 0;
  for (std::size_t i = 0; i < a.rgb.size(); ++i) sum += std::abs(a.rgb[i] - b.rgb[i]);
  return sum / static_cast<double>(a.rgb.size());
}

// Encodes the frames of a Y4M file (their YUV planes, so no second color conversion) with
// libavcodec's `encoder` into `file`. Returns false when this FFmpeg has no such encoder.
// Frame i gets pts first_pts + i (in 1 / frame rate units), plus `jump` for every frame after
// the first (a container whose timestamps lie).
bool encode_with_libav(const std::filesystem::path& y4m, const std::filesystem::path& file,
                       const char* encoder, std::int64_t first_pts = 0, std::int64_t jump = 0) {
  const AVCodec* codec = avcodec_find_encoder_by_name(encoder);
  if (codec == nullptr) return false;
  Y4mReader in(y4m);
  const Y4mHeader& hd = in.header();
  AVFormatContext* format = nullptr;
  const std::string path = file.string();
  if (avformat_alloc_output_context2(&format, nullptr, nullptr, path.c_str()) < 0) return false;
  AVStream* stream = avformat_new_stream(format, nullptr);
  AVCodecContext* ctx = avcodec_alloc_context3(codec);
  ctx->width = static_cast<int>(hd.width);
  ctx->height = static_cast<int>(hd.height);
  ctx->pix_fmt = AV_PIX_FMT_YUV420P;
  ctx->time_base = AVRational{static_cast<int>(hd.rate_den), static_cast<int>(hd.rate_num)};
  ctx->framerate = AVRational{static_cast<int>(hd.rate_num), static_cast<int>(hd.rate_den)};
  ctx->gop_size = 12;
  ctx->max_b_frames = 0;
  ctx->bit_rate = 4000000;
  if (std::string(encoder) == "mpeg4") {
    ctx->flags |= AV_CODEC_FLAG_QSCALE;
    ctx->global_quality = FF_QP2LAMBDA * 2;
  }
  if (format->oformat->flags & AVFMT_GLOBALHEADER) ctx->flags |= AV_CODEC_FLAG_GLOBAL_HEADER;
  EXPECT_GE(avcodec_open2(ctx, codec, nullptr), 0) << encoder;
  EXPECT_GE(avcodec_parameters_from_context(stream->codecpar, ctx), 0);
  stream->time_base = ctx->time_base;
  EXPECT_GE(avio_open(&format->pb, path.c_str(), AVIO_FLAG_WRITE), 0);
  EXPECT_GE(avformat_write_header(format, nullptr), 0);
  AVPacket* packet = av_packet_alloc();
  auto drain = [&]() {
    while (avcodec_receive_packet(ctx, packet) >= 0) {
      // One frame long: MP4's edit list would otherwise end before the last frame.
      if (packet->duration <= 0) packet->duration = 1;
      av_packet_rescale_ts(packet, ctx->time_base, stream->time_base);
      packet->stream_index = stream->index;
      EXPECT_GE(av_interleaved_write_frame(format, packet), 0);
    }
  };
  YuvPlanes planes;
  for (std::int64_t i = 0; in.read_planes(planes); ++i) {
    AVFrame* frame = av_frame_alloc();
    frame->format = ctx->pix_fmt;
    frame->width = ctx->width;
    frame->height = ctx->height;
    EXPECT_GE(av_frame_get_buffer(frame, 0), 0);
    const std::vector<std::uint8_t>* src[3] = {&planes.y, &planes.u, &planes.v};
    for (int p = 0; p < 3; ++p) {
      const int w = p == 0 ? ctx->width : (ctx->width + 1) / 2;
      const int h = p == 0 ? ctx->height : (ctx->height + 1) / 2;
      for (int y = 0; y < h; ++y)
        std::copy_n(src[p]->data() + y * w, w, frame->data[p] + y * frame->linesize[p]);
    }
    frame->pts = first_pts + i + (i > 0 ? jump : 0);
    if (ctx->flags & AV_CODEC_FLAG_QSCALE) frame->quality = ctx->global_quality;
    EXPECT_GE(avcodec_send_frame(ctx, frame), 0);
    av_frame_free(&frame);
    drain();
  }
  avcodec_send_frame(ctx, nullptr);
  drain();
  EXPECT_GE(av_write_trailer(format), 0);
  av_packet_free(&packet);
  avcodec_free_context(&ctx);
  avio_closep(&format->pb);
  avformat_free_context(format);
  return true;
}

TEST(Container, Y4mReadThroughLibavMatchesTheY4mReader) {
  // The same .y4m file through both paths: FFmpeg's swscale and the Y4M reader's BT.601
  // conversion agree to within a few levels (fixed-point vs double rounding).
  test::TempDir dir;
  for (auto cs : {Y4mColorspace::c420jpeg, Y4mColorspace::c444, Y4mColorspace::mono}) {
    SCOPED_TRACE(to_string(cs));
    write_y4m(dir / "v.y4m", 5, header(32, 24, 30, 1, cs));
    const auto ours = VideoReader::open_y4m(dir / "v.y4m").read_all();
    VideoReader libav = VideoReader::open_container(dir / "v.y4m");
    EXPECT_EQ(libav.kind(), VideoSourceKind::container);
    EXPECT_DOUBLE_EQ(libav.frame_rate(), 30.0);
    const auto theirs = libav.read_all();
    ASSERT_EQ(theirs.size(), ours.size());
    int largest = 0;
    for (std::size_t i = 0; i < ours.size(); ++i) {
      largest = std::max(largest, max_difference(ours[i].image, theirs[i].image));
      EXPECT_NEAR(theirs[i].time, ours[i].time, 1e-9);
    }
    RecordProperty(std::string("max_rgb_difference_") + to_string(cs), largest);
    EXPECT_LE(largest, 3);
  }
}

TEST(Container, FullRangeY4mAgreesToo) {
  test::TempDir dir;
  Y4mHeader hd = header(32, 16);
  hd.full_range = true;
  Y4mWriter out(dir / "full.y4m", hd);
  YuvPlanes planes;
  for (int i = 0; i < 32 * 16; ++i) planes.y.push_back(static_cast<std::uint8_t>(i % 256));
  for (int i = 0; i < 16 * 8; ++i) {
    planes.u.push_back(static_cast<std::uint8_t>((i * 7) % 256));
    planes.v.push_back(static_cast<std::uint8_t>(255 - (i * 5) % 256));
  }
  out.write_planes(planes);
  out.close();
  const auto ours = VideoReader::open_y4m(dir / "full.y4m").read_all();
  const auto theirs = VideoReader::open_container(dir / "full.y4m").read_all();
  ASSERT_EQ(ours.size(), 1u);
  ASSERT_EQ(theirs.size(), 1u);
  EXPECT_LE(max_difference(ours[0].image, theirs[0].image), 3);
}

TEST(Container, LosslessFfv1EqualsTheSourceFrames) {
  test::TempDir dir;
  write_y4m(dir / "v.y4m", 91, header(32, 24));
  const auto reference = VideoReader::open_container(dir / "v.y4m").read_all();
  const auto y4m = VideoReader::open_y4m(dir / "v.y4m").read_all();
  for (const char* name : {"v.mkv", "v.avi"}) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(encode_with_libav(dir / "v.y4m", dir / name, "ffv1"));
    const auto frames = VideoReader::open(dir / name).read_all();
    ASSERT_EQ(frames.size(), reference.size());
    for (std::size_t i = 0; i < frames.size(); ++i) {
      EXPECT_EQ(frames[i].image, reference[i].image) << "frame " << i;  // lossless, same swscale
      EXPECT_LE(max_difference(frames[i].image, y4m[i].image), 3);
      EXPECT_NEAR(frames[i].time, static_cast<double>(i) / 30.0, 1e-3) << "frame " << i;
    }
    EXPECT_EQ(indices_of(dir / name, 1.0), (std::vector<Index>{0, 30, 60, 90}));
  }
}

TEST(Container, TimesCountFromTheStreamStart) {
  // A stream whose first frame is at 2 s: frame times start at 0, sampling is unchanged.
  test::TempDir dir;
  write_y4m(dir / "v.y4m", 31, header(32, 24));
  ASSERT_TRUE(encode_with_libav(dir / "v.y4m", dir / "late.mkv", "ffv1", 60));
  const auto frames = VideoReader::open(dir / "late.mkv").read_all();
  ASSERT_EQ(frames.size(), 31u);
  for (std::size_t i = 0; i < frames.size(); ++i)
    EXPECT_NEAR(frames[i].time, static_cast<double>(i) / 30.0, 1e-3) << "frame " << i;
  EXPECT_EQ(indices_of(dir / "late.mkv", 1.0), (std::vector<Index>{0, 30}));
}

TEST(Container, LossyCodecsStayCloseAndSampleTheSameFrames) {
  test::TempDir dir;
  write_y4m(dir / "v.y4m", 61, header(64, 48));
  const auto y4m = VideoReader::open_y4m(dir / "v.y4m").read_all();
  int encoded = 0;
  for (auto [name, encoder] : {std::pair{"v.mp4", "mpeg4"}, std::pair{"vp8.webm", "libvpx"},
                               std::pair{"vp9.webm", "libvpx-vp9"}}) {
    SCOPED_TRACE(encoder);
    if (!encode_with_libav(dir / "v.y4m", dir / name, encoder)) continue;  // not in this build
    ++encoded;
    const auto frames = VideoReader::open(dir / name).read_all();
    ASSERT_EQ(frames.size(), y4m.size());
    double worst = 0;
    for (std::size_t i = 0; i < frames.size(); ++i) {
      worst = std::max(worst, mean_difference(frames[i].image, y4m[i].image));
      EXPECT_NEAR(frames[i].time, static_cast<double>(i) / 30.0, 1e-3) << "frame " << i;
    }
    RecordProperty(std::string("mean_abs_difference_") + encoder, std::to_string(worst));
    EXPECT_LT(worst, 6.0);  // mean absolute RGB difference of the worst frame, in levels
    EXPECT_EQ(indices_of(dir / name, 1.0), (std::vector<Index>{0, 30, 60}));
  }
  EXPECT_GE(encoded, 1);
}

TEST(Container, Errors) {
  test::TempDir dir;
  write_text(dir / "corrupt.mp4", std::string(4096, '\x5a'));
  EXPECT_THAT(error_of([&] { VideoReader::open(dir / "corrupt.mp4"); }),
              HasSubstr("corrupt.mp4: cannot open as a video container"));
  // A valid MP4 cut in half (its index is at the end): openable or not, never silent success.
  write_y4m(dir / "v.y4m", 30, header(32, 24));
  ASSERT_TRUE(encode_with_libav(dir / "v.y4m", dir / "v.mp4", "mpeg4"));
  std::filesystem::copy_file(dir / "v.mp4", dir / "cut.mp4");
  std::filesystem::resize_file(dir / "cut.mp4", std::filesystem::file_size(dir / "v.mp4") / 2);
  EXPECT_THAT(error_of([&] { VideoReader::open(dir / "cut.mp4").read_all(); }), HasSubstr("cut.mp4: "));
  // A WAV file: a container with an audio stream only.
  std::string wav = "RIFF";
  auto u32 = [](std::uint32_t v) { return std::string{char(v), char(v >> 8), char(v >> 16), char(v >> 24)}; };
  auto u16 = [](std::uint16_t v) { return std::string{char(v), char(v >> 8)}; };
  const std::string samples(1600, '\0');
  wav += u32(36 + 1600) + "WAVEfmt " + u32(16) + u16(1) + u16(1) + u32(8000) + u32(16000) + u16(2) +
         u16(16) + "data" + u32(1600) + samples;
  write_text(dir / "audio.wav", wav);
  EXPECT_THAT(error_of([&] { VideoReader::open(dir / "audio.wav"); }),
              HasSubstr("audio.wav: no video stream in the file"));
  VideoOptions options;
  options.limits.max_pixels = 100;
  EXPECT_THAT(error_of([&] { VideoReader::open(dir / "v.mp4", options); }),
              HasSubstr("v.mp4: frames of 32x24 exceed VideoLimits::max_pixels = 100"));
  options = {};
  options.limits.max_frames = 10;
  // MP4 stores its frame count: refused from the header, before decoding.
  EXPECT_THAT(error_of([&] { VideoReader::open(dir / "v.mp4", options); }),
              HasSubstr("v.mp4: the container says the video stream has 30 frames (nb_frames), "
                        "more than VideoLimits::max_frames = 10"));
  // Matroska does not: refused at the frame past the limit.
  ASSERT_TRUE(encode_with_libav(dir / "v.y4m", dir / "v.mkv", "ffv1"));
  EXPECT_THAT(error_of([&] { VideoReader::open(dir / "v.mkv", options).read_all(); }),
              HasSubstr("v.mkv: more than 10 frames (VideoLimits::max_frames)"));
}

TEST(Container, TotalPixelsFromTheHeaderOrBeforeEachFrame) {
  test::TempDir dir;
  write_y4m(dir / "v.y4m", 30, header(32, 24));  // 768 pixels a frame
  ASSERT_TRUE(encode_with_libav(dir / "v.y4m", dir / "v.mp4", "mpeg4"));
  ASSERT_TRUE(encode_with_libav(dir / "v.y4m", dir / "v.mkv", "ffv1"));
  VideoOptions options;
  options.limits.max_total_pixels = 10000;  // 13 frames
  EXPECT_THAT(error_of([&] { VideoReader::open(dir / "v.mp4", options); }),
              HasSubstr("v.mp4: the container says the video stream has 30 frames (nb_frames) of "
                        "32x24, 23040 pixels, more than VideoLimits::max_total_pixels = 10000"));
  VideoReader mkv = VideoReader::open(dir / "v.mkv", options);
  for (int i = 0; i < 13; ++i) ASSERT_TRUE(mkv.next());
  EXPECT_THAT(error_of([&] { mkv.next(); }),
              HasSubstr("v.mkv: frame 13 (32x24) takes the video past "
                        "VideoLimits::max_total_pixels = 10000 pixels (9984 in the frames before "
                        "it)"));
}

TEST(Container, LyingTimestampsAndRatesAreRefused) {
  test::TempDir dir;
  write_y4m(dir / "v.y4m", 3, header(32, 24));
  // Frame 1 a trillion frame periods after frame 0: sampling would repeat frame 0 up to it.
  ASSERT_TRUE(encode_with_libav(dir / "v.y4m", dir / "gap.mkv", "ffv1", 0, 1'000'000'000'000));
  EXPECT_THAT(error_of([&] { VideoReader::open(dir / "gap.mkv").read_all(); }),
              HasSubstr("VideoLimits::max_duration = 1e+07 s"));
  // A frame rate far below the limit, read through libav (a Y4M file's F, as FFmpeg's demuxer
  // gives it): named with the stream field it came from.
  write_text(dir / "slow.y4m", "YUV4MPEG2 W2 H2 F1:1000 C444\nFRAME\n" + std::string(12, 'x'));
  EXPECT_THAT(error_of([&] { VideoReader::open_container(dir / "slow.y4m"); }),
              HasSubstr("slow.y4m: the video stream's avg_frame_rate 1/1000 is 0.001 frames per "
                        "second, below VideoLimits::min_frame_rate = 0.01"));
}

#else

TEST(Container, WithoutFfmpegContainersAreAClearError) {
  test::TempDir dir;
  write_text(dir / "v.mp4", std::string(64, '\0'));
  EXPECT_THAT(error_of([&] { VideoReader::open(dir / "v.mp4"); }),
              HasSubstr("v.mp4: not a Y4M file, and tessera was built without FFmpeg"));
}

#endif  // TESSERA_HAS_FFMPEG

}  // namespace
}  // namespace tessera

// ---- ImageBind's video clips (tokenize/imagebind_clips.hpp) ---------------------------------
// Fixtures: tests/reference/make_imagebind_data_fixtures.py, a twin of ImageBind's data.py
// (load_and_transform_video_data with pytorchvideo's sampler, subsample, ShortSideScale and
// SpatialCrop) -> tests/data/video/imagebind/.

namespace tessera::test_imagebind_video {

using ::testing::HasSubstr;
using test::Fixture;
using test::error_of;

// Pixels after ShortSideScale and NormalizeVideo: torch's bilinear interpolation is redone
// operation for operation in float, but torch's vectorized kernel may fuse or reorder a
// multiply-add; the normalized values are O(2), so a few float ulps.
constexpr double pixels_atol = 1e-5;

TEST(ImageBindVideo, FrameIndicesMatchDataPy) {
  const Fixture fixture("video/imagebind/cases.safetensors");
  for (const char* label : {"30", "25", "ntsc", "24", "7p5", "23p976"}) {
    SCOPED_TRACE(label);
    const double fps = std::stod(fixture.meta(std::string("sweep.") + label + ".fps"));
    const auto counts = fixture.ints(std::string("sweep.") + label + ".frames");
    const auto expected = fixture.ints(std::string("sweep.") + label + ".indices");  // [L, 5, 2]
    ASSERT_EQ(expected.size(), counts.size() * 10);
    int wrong = 0;
    for (std::size_t i = 0; i < counts.size(); ++i) {
      const auto clips = imagebind_video_frame_indices(counts[i], fps);
      ASSERT_EQ(clips.size(), 5u);
      for (std::size_t k = 0; k < 5; ++k) {
        ASSERT_EQ(clips[k].size(), 2u);
        for (std::size_t f = 0; f < 2; ++f) {
          if (clips[k][f] != expected[10 * i + 2 * k + f] && wrong++ < 5) {
            ADD_FAILURE() << counts[i] << " frames, clip " << k << " frame " << f << ": "
                          << clips[k][f] << " vs data.py " << expected[10 * i + 2 * k + f];
          }
        }
      }
    }
    EXPECT_EQ(wrong, 0);
  }
}

TEST(ImageBindVideo, UniformTemporalSubsample) {
  // 3 frames per clip from a 60-frame clip: torch.linspace(0, 59, 3) = 0, 29.5, 59 -> 0, 29, 59
  ImageBindVideoOptions options;
  options.frames_per_clip = 3;
  options.clips_per_video = 1;
  const auto one = imagebind_video_frame_indices(60, 30.0, options);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0], (std::vector<Index>{0, 29, 59}));
  // more samples than frames: torch.linspace(0, 1, 4) = 0, 1/3, 2/3, 1 truncates to 0, 0, 0, 1
  options.frames_per_clip = 4;
  EXPECT_EQ(imagebind_video_frame_indices(2, 30.0, options)[0], (std::vector<Index>{0, 0, 0, 1}));
  EXPECT_THAT(error_of([] { (void)imagebind_video_frame_indices(0, 30.0); }),
              HasSubstr("the video has no frames"));
  EXPECT_THAT(error_of([] { (void)imagebind_video_frame_indices(10, 0.0); }),
              HasSubstr("frame rate must be positive"));
}

#if TESSERA_HAS_STB
TEST(ImageBindVideo, ClipsMatchDataPy) {
  const Fixture fixture("video/imagebind/cases.safetensors");
  for (const char* name : {"landscape_45f_15fps", "portrait_12f_10fps"}) {
    SCOPED_TRACE(name);
    ImageBindVideoOptions options;
    options.size = std::stol(fixture.meta(std::string(name) + ".size"));
    options.spatial_crops = std::stol(fixture.meta(std::string(name) + ".crops"));
    VideoOptions video;
    video.images_fps = std::stod(fixture.meta(std::string(name) + ".fps"));
    const std::filesystem::path dir = test::data_dir() / "video" / "imagebind" / name;
    const auto indices = fixture.ints(std::string(name) + ".indices");
    const auto ours_indices = imagebind_video_frame_indices(
        std::stol(fixture.meta(std::string(name) + ".frames")), video.images_fps, options);
    ASSERT_EQ(ours_indices.size() * 2, indices.size());
    for (std::size_t k = 0; k < ours_indices.size(); ++k)
      for (std::size_t f = 0; f < 2; ++f) EXPECT_EQ(ours_indices[k][f], indices[2 * k + f]);
    const Tensor4<float> ours = imagebind_video_clips(dir, options, video);
    const Matrix<double> expected = fixture.matrix<double>(std::string(name) + ".clips");
    ASSERT_EQ(ours.dimension(0), expected.rows());
    ASSERT_EQ(ours.dimension(0), 5 * options.spatial_crops * 2);
    ASSERT_EQ(ours.dimension(2), options.size);
    const Matrix<double> flat =
        Eigen::Map<const Matrix<float>>(ours.data(), expected.rows(), expected.cols()).cast<double>();
    EXPECT_TRUE(test::all_close(flat, expected, pixels_atol, 0));
    std::cout << "[ measured ] imagebind_video_clips " << name
              << " vs data.py float32: max |diff| = " << (flat - expected).cwiseAbs().maxCoeff()
              << "\n";
  }
}

TEST(ImageBindVideo, CropOffsetsFollowUniformCrop) {
  // landscape 224 x 298: x offsets 0, ceil(74 / 2) = 37, 74; portrait: y offsets likewise
  EXPECT_EQ(detail::uniform_crop_offset(224, 298, 224, 0), std::make_pair(Index{0}, Index{0}));
  EXPECT_EQ(detail::uniform_crop_offset(224, 298, 224, 1), std::make_pair(Index{0}, Index{37}));
  EXPECT_EQ(detail::uniform_crop_offset(224, 298, 224, 2), std::make_pair(Index{0}, Index{74}));
  EXPECT_EQ(detail::uniform_crop_offset(299, 224, 224, 1), std::make_pair(Index{38}, Index{0}));
  EXPECT_EQ(detail::uniform_crop_offset(299, 224, 224, 2), std::make_pair(Index{75}, Index{0}));
  EXPECT_EQ(detail::uniform_crop_offset(224, 224, 224, 2), std::make_pair(Index{0}, Index{0}));
}

TEST(ImageBindVideo, Errors) {
  test::TempDir dir;
  ImageBindVideoOptions options;
  options.spatial_crops = 2;
  EXPECT_THAT(error_of([&] { (void)imagebind_video_clips(dir.path(), options); }),
              HasSubstr("spatial_crops must be 1 or 3"));
  // a 1000 x 1 frame would scale to 224000 x 224: refused before anything is allocated
  Image thin(1000, 1);
  EXPECT_THAT(error_of([&] { (void)short_side_scale(thin, 224); }),
              HasSubstr("a 1000 x 1 frame scaled to a shorter side of 224 would have 50176000 "
                        "pixels, more than 16777216 (ImageBindVideoOptions::max_scaled_pixels)"));
  ImageBindVideoOptions small;
  small.size = 24;
  small.max_scaled_pixels = 600;  // 24 x 24 fits, the 32 x 24 scaled frame does not
  VideoOptions video;
  video.images_fps = 15;
  const auto frames = test::data_dir() / "video" / "imagebind" / "landscape_45f_15fps";
  EXPECT_THAT(error_of([&] { (void)imagebind_video_clips(frames, small, video); }),
              HasSubstr("landscape_45f_15fps: frame 0: short_side_scale: a 41 x 30 frame"));
}
#endif  // TESSERA_HAS_STB

}  // namespace tessera::test_imagebind_video
