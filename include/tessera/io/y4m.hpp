#pragma once
// YUV4MPEG2 (.y4m): a streaming reader that converts each frame to 8-bit RGB, and a writer.
//
// The format (as written by ffmpeg, mjpegtools and x264):
//   "YUV4MPEG2" { " " parameter } "\n"           stream header
//   { "FRAME" { " " parameter } "\n" Y-plane [U-plane V-plane] }
// Stream parameters: W<width> H<height> F<num>:<den> (frame rate) C<colorspace> I<interlacing>
// A<aspect> X<extension>. W, H and F are required; C defaults to 420jpeg; I and A are ignored
// (frames are taken as progressive, pixels as square); of the X extensions only
// XCOLORRANGE=FULL|LIMITED is read (ffmpeg writes it). Frame parameters are ignored.
//
// Colorspaces: 420jpeg, 420paldv, 420mpeg2, 420 (chroma [ceil(H/2), ceil(W/2)]), 422
// ([H, ceil(W/2)]), 444 ([H, W]) and mono (luma only). The 420 variants differ only in where
// the chroma samples sit; like FFmpeg's swscale on unscaled frames, the reader ignores the
// siting and gives each chroma sample to the 2x2 (420) or 2x1 (422) block of pixels it covers.
// Higher bit depths (C420p10, ...) and alpha are rejected as unsupported.
//
// YUV -> RGB: ITU-R BT.601 (Kr = 0.299, Kb = 0.114), limited range unless the header says
// XCOLORRANGE=FULL, which is what ffmpeg writes and assumes for Y4M by default:
//   limited: y = (Y - 16) * 255/219,  u = (U - 128) * 255/224,  v = (V - 128) * 255/224
//   full:    y = Y,                   u = U - 128,              v = V - 128
//   R = y + 1.402 v,   G = y - 0.344136 u - 0.714136 v,   B = y + 1.772 u
// each rounded to nearest and clamped to [0, 255]. Mono gives R = G = B = Y, the luma code
// unchanged, in either range: that is what FFmpeg's swscale does with gray frames. FFmpeg's own
// conversion (swscale, used by the libav path of io/video.hpp) uses the same matrix in
// fixed point, so the two paths agree to within a few levels on the same file
// (tests/test_video.cpp measures it; docs/video.md states the bound).
//
// Errors are tessera::Error naming the file: an empty file, a bad magic, a missing or invalid
// W, H or F, a frame rate outside VideoLimits' range, an unsupported colorspace, a frame larger
// than the limits, a bad FRAME header, a truncated frame, more frames or more pixels in all
// than the limits (checked before each frame's planes are allocated).

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/io/atomic_file.hpp>
#include <tessera/core/image.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

// Guards against hostile or mistaken inputs: every reader of the video front end checks them
// before allocating a frame or reading one more. Each bounds a header field (or a product of
// them) that multiplies work or memory; an error names the file, the field and the limit.
struct VideoLimits {
  // Decoded frames per video: about 55 minutes at 30 fps. A container whose header claims
  // more (nb_frames) is refused before decoding.
  Index max_frames = 100000;
  // width * height of one frame (8192 x 8192: 8K video is 7680 x 4320).
  Index max_pixels = 8192 * 8192;
  // width * height summed over the frames of one video: max_frames frames of 1920 x 1080
  // (55 minutes of 1080p at 30 fps, 622 GB of RGB decoded one frame at a time). Without it,
  // max_frames * max_pixels lets a container of frames that compress to nothing make 6.7e12
  // pixels (20 TB of RGB) of decoding work. Checked before each frame is allocated, and from
  // the container's frame count before any decoding.
  Index max_total_pixels = Index{100000} * 1920 * 1080;
  // Frame rates (Y4M F<num>:<den>, a directory's images_fps, a container's avg_frame_rate)
  // in frames per second. Below 0.01 (a frame every 100 s) a frame lasts so long that sampling
  // at the model's fps repeats it thousands of times, work that no byte of the file pays for:
  // such rates come from broken headers (F1:1073741824, --video-fps 1e-300). Above 1e6 (the
  // fastest high-speed cameras) frames come closer than 1 microsecond, within a thousand
  // times the sampler's 1e-9 s tolerance.
  double min_frame_rate = 0.01;
  double max_frame_rate = 1e6;
  // Seconds from the start of the video to the end of any frame: max_frames frames at
  // min_frame_rate. A later timestamp (a container's pts or frame duration) is corrupt, and
  // sampling up to it would repeat the frame before it once per sample.
  double max_duration = 1e7;
  // Frames FrameSampler (tokenize/video.hpp) takes per video at the model's fps: twice
  // max_frames, the longest video sampled at twice its frame rate. Sampling faster than the
  // source repeats frames, so past this the work would no longer follow the frames in the file.
  Index max_samples = 200000;
};

namespace detail {

// Checks a frame rate against VideoLimits; `field` names where it came from, e.g.
// "the frame rate F1:1073741824 of the stream header".
inline void check_frame_rate(const std::string& where, const std::string& field, double rate,
                             const VideoLimits& limits) {
  check(std::isfinite(rate) && rate > 0, where, ": ", field, " is ", rate,
        " frames per second, not a positive frame rate");
  check(rate >= limits.min_frame_rate, where, ": ", field, " is ", rate,
        " frames per second, below VideoLimits::min_frame_rate = ", limits.min_frame_rate,
        " (a frame every ", 1.0 / limits.min_frame_rate, " s)");
  check(rate <= limits.max_frame_rate, where, ": ", field, " is ", rate,
        " frames per second, above VideoLimits::max_frame_rate = ", limits.max_frame_rate);
}

// Checks that one more frame of width x height keeps the video within max_frames and
// max_total_pixels; `decoded` frames of `total_pixels` pixels came before it.
inline void check_next_frame(const std::string& where, Index decoded, Index total_pixels,
                             Index width, Index height, const VideoLimits& limits) {
  check(decoded < limits.max_frames, where, ": more than ", limits.max_frames,
        " frames (VideoLimits::max_frames)");
  check(total_pixels <= limits.max_total_pixels - width * height, where, ": frame ", decoded,
        " (", width, "x", height, ") takes the video past VideoLimits::max_total_pixels = ",
        limits.max_total_pixels, " pixels (", total_pixels, " in the frames before it)");
}

}  // namespace detail

enum class Y4mColorspace { c420jpeg, c420paldv, c420mpeg2, c420, c422, c444, mono };

inline const char* to_string(Y4mColorspace c) {
  switch (c) {
    case Y4mColorspace::c420jpeg: return "420jpeg";
    case Y4mColorspace::c420paldv: return "420paldv";
    case Y4mColorspace::c420mpeg2: return "420mpeg2";
    case Y4mColorspace::c420: return "420";
    case Y4mColorspace::c422: return "422";
    case Y4mColorspace::c444: return "444";
    case Y4mColorspace::mono: return "mono";
  }
  return "unknown";
}

// What a Y4M stream header says.
struct Y4mHeader {
  Index width = 0;
  Index height = 0;
  std::int64_t rate_num = 0;  // frame rate = rate_num / rate_den frames per second
  std::int64_t rate_den = 1;
  Y4mColorspace colorspace = Y4mColorspace::c420jpeg;
  bool full_range = false;  // XCOLORRANGE=FULL

  double frame_rate() const { return static_cast<double>(rate_num) / static_cast<double>(rate_den); }
  // The time of frame i in seconds, i * den / num (one correctly rounded division).
  double frame_time(Index i) const {
    return static_cast<double>(i * rate_den) / static_cast<double>(rate_num);
  }
  // Subsampled chroma plane sizes (0 for mono).
  Index chroma_width() const {
    switch (colorspace) {
      case Y4mColorspace::c444: return width;
      case Y4mColorspace::mono: return 0;
      default: return (width + 1) / 2;
    }
  }
  Index chroma_height() const {
    switch (colorspace) {
      case Y4mColorspace::c444:
      case Y4mColorspace::c422: return height;
      case Y4mColorspace::mono: return 0;
      default: return (height + 1) / 2;
    }
  }
  Index frame_bytes() const { return width * height + 2 * chroma_width() * chroma_height(); }
};

// One frame's planes as stored: Y [H, W], U and V [chroma_height, chroma_width] (empty for mono).
struct YuvPlanes {
  std::vector<std::uint8_t> y, u, v;
};

namespace detail {

inline std::uint8_t clamp_to_byte(double value) {
  return static_cast<std::uint8_t>(std::clamp(std::nearbyint(value), 0.0, 255.0));
}

// BT.601 YUV -> RGB of one pixel (see the header comment for the formulas).
inline void yuv_to_rgb(int y_code, int u_code, int v_code, bool full_range, std::uint8_t* rgb) {
  const double y = full_range ? y_code : (y_code - 16) * (255.0 / 219.0);
  const double u = full_range ? u_code - 128 : (u_code - 128) * (255.0 / 224.0);
  const double v = full_range ? v_code - 128 : (v_code - 128) * (255.0 / 224.0);
  rgb[0] = clamp_to_byte(y + 1.402 * v);
  rgb[1] = clamp_to_byte(y - 0.344136 * u - 0.714136 * v);
  rgb[2] = clamp_to_byte(y + 1.772 * u);
}

// BT.601 RGB -> limited-range Y, U, V codes (the inverse of yuv_to_rgb, before rounding).
inline double rgb_to_luma(double r, double g, double b) {
  return 16.0 + (219.0 / 255.0) * (0.299 * r + 0.587 * g + 0.114 * b);
}
inline double rgb_to_cb(double r, double g, double b) {
  return 128.0 + (224.0 / 255.0) * (b - (0.299 * r + 0.587 * g + 0.114 * b)) / 1.772;
}
inline double rgb_to_cr(double r, double g, double b) {
  return 128.0 + (224.0 / 255.0) * (r - (0.299 * r + 0.587 * g + 0.114 * b)) / 1.402;
}

// Parses a decimal integer in [1, max]; nullopt when malformed or out of range.
inline std::optional<std::int64_t> parse_positive(std::string_view text, std::int64_t max) {
  if (text.empty() || text.size() > 18) return std::nullopt;
  std::int64_t value = 0;
  for (char ch : text) {
    if (ch < '0' || ch > '9') return std::nullopt;
    value = value * 10 + (ch - '0');
  }
  if (value < 1 || value > max) return std::nullopt;
  return value;
}

}  // namespace detail

// Converts one frame's planes to RGB.
// requires: planes sized as header.frame_bytes() says. ensures: out is assigned [H, W, 3].
inline void y4m_planes_to_rgb(const Y4mHeader& header, const YuvPlanes& planes, Image& out) {
  const Index w = header.width, h = header.height, cw = header.chroma_width();
  TESSERA_ASSERT(static_cast<Index>(planes.y.size()) == w * h);
  out.width = w;
  out.height = h;
  out.rgb.resize(static_cast<std::size_t>(w * h * 3));
  const bool mono = header.colorspace == Y4mColorspace::mono;
  const Index shift_x = header.colorspace == Y4mColorspace::c444 ? 0 : 1;
  const Index shift_y =
      header.colorspace == Y4mColorspace::c444 || header.colorspace == Y4mColorspace::c422 ? 0 : 1;
  for (Index y = 0; y < h; ++y) {
    const std::uint8_t* luma = planes.y.data() + y * w;
    std::uint8_t* dst = out.pixel(y, 0);
    if (mono) {
      for (Index x = 0; x < w; ++x, dst += 3) dst[0] = dst[1] = dst[2] = luma[x];
      continue;
    }
    const std::uint8_t* u = planes.u.data() + (y >> shift_y) * cw;
    const std::uint8_t* v = planes.v.data() + (y >> shift_y) * cw;
    for (Index x = 0; x < w; ++x, dst += 3)
      detail::yuv_to_rgb(luma[x], u[x >> shift_x], v[x >> shift_x], header.full_range, dst);
  }
}

// Reads a Y4M file frame by frame: only the current frame is in memory.
class Y4mReader {
 public:
  explicit Y4mReader(const std::filesystem::path& file, VideoLimits limits = {})
      : where_(file.string()), limits_(limits), in_(file, std::ios::binary) {
    check(in_.is_open(), where_, ": cannot open the Y4M file: ", std::strerror(errno));
    std::error_code error;
    if (std::filesystem::is_regular_file(file, error)) {
      const auto size = std::filesystem::file_size(file, error);
      if (!error) file_size_ = static_cast<Index>(size);
    }
    read_header();
  }

  const Y4mHeader& header() const { return header_; }
  const std::string& path() const { return where_; }
  Index frames_read() const { return frames_read_; }

  // The next frame's raw planes; false at the end of the file (after the last whole frame).
  bool read_planes(YuvPlanes& planes) {
    std::string line;
    if (!read_line(line, "FRAME header")) return false;
    check(line.compare(0, 5, "FRAME") == 0 && (line.size() == 5 || line[5] == ' '), where_,
          ": frame ", frames_read_, ": expected a FRAME header, got \"", excerpt(line), "\"");
    const Index w = header_.width, h = header_.height;
    detail::check_next_frame(where_, frames_read_, frames_read_ * w * h, w, h, limits_);
    const Index chroma = header_.chroma_width() * header_.chroma_height();
    read_plane(planes.y, w * h, "Y");
    read_plane(planes.u, chroma, "U");
    read_plane(planes.v, chroma, "V");
    ++frames_read_;
    return true;
  }

  // The next frame as RGB; nullopt at the end of the file.
  std::optional<Image> read_frame() {
    if (!read_planes(planes_)) return std::nullopt;
    Image frame;
    y4m_planes_to_rgb(header_, planes_, frame);
    return frame;
  }

 private:
  static constexpr std::size_t max_line = 4096;  // header lines longer than this are refused
  // The largest numerator or denominator of F<num>:<den> (2^30): num * den and
  // frame * den then fit 64 bits; the rate itself is bounded by VideoLimits.
  static constexpr std::int64_t max_rate_term = std::int64_t{1} << 30;

  static std::string excerpt(const std::string& text) {
    std::string out;
    for (char ch : text.substr(0, 40)) out += (ch >= 32 && ch < 127) ? ch : '?';
    return text.size() > 40 ? out + "..." : out;
  }

  // Reads up to '\n'. Returns false on a clean end of file before any byte.
  bool read_line(std::string& line, const char* what) {
    line.clear();
    for (;;) {
      const int ch = in_.get();
      if (ch == std::char_traits<char>::eof()) {
        check(!in_.bad(), where_, ": read error");
        if (line.empty()) return false;
        fail(where_, ": truncated ", what, " (no end of line) after frame ", frames_read_);
      }
      if (ch == '\n') return true;
      line.push_back(static_cast<char>(ch));
      check(line.size() <= max_line, where_, ": ", what, " longer than ", max_line, " bytes");
    }
  }

  void read_plane(std::vector<std::uint8_t>& plane, Index bytes, const char* name) {
    // A header may claim frames larger than the file: compare with what is left before
    // allocating (a regular file; a pipe is read and found short instead).
    if (file_size_ >= 0) {
      const Index left = std::max<Index>(0, file_size_ - static_cast<Index>(in_.tellg()));
      check(left >= bytes, where_, ": truncated frame ", frames_read_, ": the ", name,
            " plane needs ", bytes, " bytes, the file has ", left);
    }
    plane.resize(static_cast<std::size_t>(bytes));
    if (bytes == 0) return;
    in_.read(reinterpret_cast<char*>(plane.data()), static_cast<std::streamsize>(bytes));
    check(!in_.bad(), where_, ": read error in frame ", frames_read_);
    check(in_.gcount() == bytes, where_, ": truncated frame ", frames_read_, ": the ", name,
          " plane needs ", bytes, " bytes, the file has ", in_.gcount());
  }

  void read_header() {
    // The magic first, so that any other file is named as such (not as a long header line).
    std::string line(10, '\0');
    in_.read(line.data(), 10);
    line.resize(static_cast<std::size_t>(in_.gcount()));
    check(!line.empty(), where_, ": empty file (expected a YUV4MPEG2 header)");
    check(line.compare(0, 9, "YUV4MPEG2") == 0 && (line.size() == 9 || line[9] == ' ' ||
                                                   line[9] == '\n'),
          where_, ": not a YUV4MPEG2 file (bad magic: the file starts with \"", excerpt(line),
          "\", expected \"YUV4MPEG2 \")");
    check(line.size() == 10, where_, ": truncated stream header");
    if (line[9] == ' ') {
      std::string rest;
      check(read_line(rest, "stream header"), where_, ": truncated stream header");
      line = "YUV4MPEG2 " + rest;
    } else {
      line.resize(9);
    }
    bool have_w = false, have_h = false, have_f = false;
    std::size_t at = 9;
    while (at < line.size()) {
      if (line[at] == ' ') {
        ++at;
        continue;
      }
      const std::size_t end = std::min(line.find(' ', at), line.size());
      const std::string_view token(line.data() + at, end - at);
      at = end;
      const std::string_view value = token.substr(1);
      switch (token[0]) {
        case 'W':
        case 'H': {
          const auto n = detail::parse_positive(value, std::int64_t{1} << 30);
          check(n.has_value(), where_, ": invalid ", token[0] == 'W' ? "width" : "height",
                " \"", std::string(token), "\" in the stream header");
          (token[0] == 'W' ? header_.width : header_.height) = *n;
          (token[0] == 'W' ? have_w : have_h) = true;
          break;
        }
        case 'F': {
          const std::size_t colon = value.find(':');
          const auto num = detail::parse_positive(value.substr(0, colon), max_rate_term);
          const auto den = colon == std::string_view::npos
                               ? std::nullopt
                               : detail::parse_positive(value.substr(colon + 1), max_rate_term);
          check(num && den, where_, ": invalid frame rate \"", std::string(token),
                "\" in the stream header (expected F<num>:<den>, each an integer from 1 to ",
                max_rate_term, ")");
          header_.rate_num = *num;
          header_.rate_den = *den;
          detail::check_frame_rate(
              where_, detail::concat("the frame rate \"", std::string(token), "\" of the stream header"),
              header_.frame_rate(), limits_);
          have_f = true;
          break;
        }
        case 'C': header_.colorspace = parse_colorspace(value); break;
        case 'X':
          if (value == "COLORRANGE=FULL") header_.full_range = true;
          if (value == "COLORRANGE=LIMITED") header_.full_range = false;
          break;
        default: break;  // I (interlacing), A (aspect) and unknown parameters are ignored
      }
    }
    check(have_w, where_, ": the stream header has no width (W)");
    check(have_h, where_, ": the stream header has no height (H)");
    check(have_f, where_, ": the stream header has no frame rate (F<num>:<den>)");
    check(header_.width * header_.height <= limits_.max_pixels, where_, ": frames of ",
          header_.width, "x", header_.height, " exceed VideoLimits::max_pixels = ",
          limits_.max_pixels);
  }

  Y4mColorspace parse_colorspace(std::string_view value) const {
    for (auto c : {Y4mColorspace::c420jpeg, Y4mColorspace::c420paldv, Y4mColorspace::c420mpeg2,
                   Y4mColorspace::c420, Y4mColorspace::c422, Y4mColorspace::c444,
                   Y4mColorspace::mono}) {
      if (value == to_string(c)) return c;
    }
    fail(where_, ": unsupported colorspace \"C", std::string(value),
         "\" (supported: 420jpeg, 420paldv, 420mpeg2, 420, 422, 444, mono; 8 bits only)");
  }

  std::string where_;
  VideoLimits limits_;
  std::ifstream in_;
  Index file_size_ = -1;  // bytes, when `file` is a regular file
  Y4mHeader header_;
  YuvPlanes planes_;
  Index frames_read_ = 0;
};

// Writes a Y4M file frame by frame: raw planes, or RGB frames converted with the BT.601
// limited-range matrix above (chroma from the mean of each 2x2 / 2x1 block's RGB).
// Used for test fixtures and to hand frames to other tools.
class Y4mWriter {
 public:
  // requires: header.width, height, rate_num, rate_den positive.
  Y4mWriter(const std::filesystem::path& file, const Y4mHeader& header)
      : where_(file.string()), header_(header), out_(checked(file, header)) {
    std::string line = detail::concat("YUV4MPEG2 W", header.width, " H", header.height, " F",
                                      header.rate_num, ":", header.rate_den, " Ip A1:1 C",
                                      to_string(header.colorspace));
    if (header.full_range) line += " XCOLORRANGE=FULL";
    line += "\n";
    out_.write(line.data(), line.size());
  }

  // requires: planes sized as header().frame_bytes() says.
  void write_planes(const YuvPlanes& planes) {
    const Index luma = header_.width * header_.height;
    const Index chroma = header_.chroma_width() * header_.chroma_height();
    check(static_cast<Index>(planes.y.size()) == luma &&
              static_cast<Index>(planes.u.size()) == chroma &&
              static_cast<Index>(planes.v.size()) == chroma,
          where_, ": write_planes: plane sizes do not match ", header_.width, "x",
          header_.height, " C", to_string(header_.colorspace));
    out_.write("FRAME\n", 6);
    out_.write(planes.y.data(), planes.y.size());
    out_.write(planes.u.data(), planes.u.size());
    out_.write(planes.v.data(), planes.v.size());
  }

  // Converts an RGB frame (limited range) and writes it. requires: the header's size.
  void write(const Image& frame) {
    check(frame.width == header_.width && frame.height == header_.height, where_,
          ": write: frame is ", frame.width, "x", frame.height, ", the stream is ",
          header_.width, "x", header_.height);
    check(!header_.full_range, where_, ": write: RGB conversion is limited range only");
    YuvPlanes planes;
    const Index w = header_.width, h = header_.height;
    const Index cw = header_.chroma_width(), ch = header_.chroma_height();
    planes.y.resize(static_cast<std::size_t>(w * h));
    for (Index y = 0; y < h; ++y)
      for (Index x = 0; x < w; ++x) {
        const std::uint8_t* p = frame.pixel(y, x);
        const double luma = header_.colorspace == Y4mColorspace::mono  // read back unscaled
                                ? 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]
                                : detail::rgb_to_luma(p[0], p[1], p[2]);
        planes.y[static_cast<std::size_t>(y * w + x)] = detail::clamp_to_byte(luma);
      }
    planes.u.resize(static_cast<std::size_t>(cw * ch));
    planes.v.resize(static_cast<std::size_t>(cw * ch));
    const Index bw = cw == 0 ? 1 : (w + cw - 1) / cw, bh = ch == 0 ? 1 : (h + ch - 1) / ch;
    for (Index cy = 0; cy < ch; ++cy)
      for (Index cx = 0; cx < cw; ++cx) {
        double r = 0, g = 0, b = 0;
        int n = 0;
        for (Index y = cy * bh; y < std::min(h, (cy + 1) * bh); ++y)
          for (Index x = cx * bw; x < std::min(w, (cx + 1) * bw); ++x, ++n) {
            const std::uint8_t* p = frame.pixel(y, x);
            r += p[0];
            g += p[1];
            b += p[2];
          }
        r /= n;
        g /= n;
        b /= n;
        planes.u[static_cast<std::size_t>(cy * cw + cx)] = detail::clamp_to_byte(detail::rgb_to_cb(r, g, b));
        planes.v[static_cast<std::size_t>(cy * cw + cx)] = detail::clamp_to_byte(detail::rgb_to_cr(r, g, b));
      }
    write_planes(planes);
  }

  const Y4mHeader& header() const { return header_; }

  // Finishes the file: until close() the frames go to a temporary file beside it, which
  // close() renames into place (io/atomic_file.hpp), so a crash or an error mid-way never
  // leaves a half-written video under the real name. A writer destroyed without close()
  // removes the temporary and leaves no file.
  void close() { out_.commit(); }

 private:
  static std::filesystem::path checked(const std::filesystem::path& file, const Y4mHeader& header) {
    check(header.width > 0 && header.height > 0 && header.rate_num > 0 && header.rate_den > 0,
          file.string(), ": Y4mWriter needs a positive width, height and frame rate");
    return file;
  }

  std::string where_;
  Y4mHeader header_;
  detail::AtomicFileWriter out_;
};

}  // namespace tessera
