#pragma once
// VideoReader: frames of a video, decoded to 8-bit RGB, one at a time, with timestamps (SPEC 5.4).
//
// Three sources, picked by VideoReader::open:
//   - a directory of images: every file with an image extension (.png .jpg .jpeg .bmp .ppm
//     .pgm .pnm, any case; other files and hidden files are skipped), sorted by file name
//     (byte order, so name them frame_0001.png, ...); frame i is at i / images_fps seconds,
//     images_fps = 30 unless the caller says otherwise;
//   - a YUV4MPEG2 file (recognised by its magic, whatever its name): frame i at
//     i * den / num seconds from the header's F<num>:<den> (io/y4m.hpp);
//   - any other file: a container opened with FFmpeg's libavformat (MP4, WebM, MKV, AVI, ...),
//     the best video stream decoded with libavcodec and converted to RGB24 with swscale,
//     frame times from the frame's pts (best effort) in the stream's time_base, measured from
//     the stream's start_time (so the first frame is usually at 0). Only when tessera is built
//     with FFmpeg (TESSERA_HAS_FFMPEG); otherwise opening such a file is an Error.
// Each frame also carries its duration (the nominal 1 / frame rate, or the container's frame
// duration), which tells the sampler of tokenize/video.hpp where the video ends.
//
// Limits (VideoLimits of io/y4m.hpp): frames per video, pixels per frame, pixels summed over
// the frames, the frame rate's range, the latest time a frame may reach. Each is checked from
// the header where there is one (Y4M W, H, F; a directory's images_fps; a container's
// nb_frames, codec size, avg_frame_rate, time_base and duration), and otherwise before each
// frame is allocated (an image's header, each decoded frame, its pts and duration), so that
// nothing is allocated or decoded past a limit. Every error is a tessera::Error naming the
// file or directory and the field: an empty directory, an unreadable or undecodable frame, no
// video stream, a corrupt container, a decoding failure, a limit.
//
// Frames of a directory are decoded by decode_image of io/image.hpp, which needs stb_image
// (TESSERA_HAS_STB); without it, reading an image directory is an Error.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/io/y4m.hpp>
#include <tessera/core/image.hpp>
#if TESSERA_HAS_STB
#include <tessera/io/image.hpp>
#endif

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#if TESSERA_HAS_FFMPEG
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avutil.h>
#include <libavutil/error.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
}
#endif

namespace tessera {

// One decoded frame and where it sits in time.
struct VideoFrame {
  Image image;        // [H, W, 3]
  Index index = 0;       // 0-based position in the source
  double time = 0;       // seconds from the start of the video
  double duration = 0;   // seconds it is shown (nominal); 0 when the source does not say
};

struct VideoOptions {
  double images_fps = 30.0;  // frame rate of a directory of images
  VideoLimits limits;
};

enum class VideoSourceKind { images, y4m, container };

inline const char* to_string(VideoSourceKind kind) {
  switch (kind) {
    case VideoSourceKind::images: return "images";
    case VideoSourceKind::y4m: return "y4m";
    case VideoSourceKind::container: return "container";
  }
  return "unknown";
}

// True when tessera was built with FFmpeg and can read containers.
inline constexpr bool has_ffmpeg() {
#if TESSERA_HAS_FFMPEG
  return true;
#else
  return false;
#endif
}

namespace detail {

// A source of frames: next() returns frames in order, then nullopt forever.
class FrameSource {
 public:
  virtual ~FrameSource() = default;
  virtual std::optional<VideoFrame> next() = 0;
  virtual double frame_rate() const = 0;  // nominal frames per second; 0 when unknown
};

// A frame of an image directory: decode_image of io/image.hpp (PNG, JPEG, BMP, PPM/PGM as
// Pillow's convert("RGB") gives them), which needs stb_image.
// `total_pixels` is the sum of width * height over the frames before it: the frame's size is
// read from its header and checked against VideoLimits before it is decoded.
inline Image decode_frame_image(const std::filesystem::path& file, Index frame,
                                Index total_pixels, const VideoLimits& limits) {
#if TESSERA_HAS_STB
  ImageLimits image_limits;
  image_limits.max_pixels = limits.max_pixels;
  const std::vector<std::uint8_t> bytes = read_image_file(file);
  const ImageSize size = read_image_size(bytes, file.string(), image_limits);
  check_next_frame(file.string(), frame, total_pixels, size.width, size.height, limits);
  return decode_image_memory(bytes, file.string(), image_limits);
#else
  (void)frame;
  (void)total_pixels;
  (void)limits;
  fail(file.string(), ": tessera was built without stb_image (Debian: libstb-dev), so the "
       "frames of an image directory cannot be decoded");
#endif
}

inline bool has_image_extension(const std::filesystem::path& file) {
  std::string ext = file.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const char* known : {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".pnm"})
    if (ext == known) return true;
  return false;
}

class ImageDirectorySource final : public FrameSource {
 public:
  ImageDirectorySource(const std::filesystem::path& dir, const VideoOptions& options)
      : options_(options) {
    const std::string where = dir.string();
    check(std::isfinite(options.images_fps) && options.images_fps > 0, where,
          ": images_fps must be a positive frame rate, got ", options.images_fps);
    check_frame_rate(where,
                     "images_fps (the image directory's frame rate: --video-fps of the programs, "
                     "video_fps in Python)",
                     options.images_fps, options.limits);
    std::error_code ec;
    for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const auto& path = it->path();
      const std::string name = path.filename().string();
      if (name.empty() || name[0] == '.' || !has_image_extension(path)) continue;
      std::error_code type_ec;
      if (!it->is_regular_file(type_ec)) continue;
      files_.push_back(path);
      check(static_cast<Index>(files_.size()) <= options.limits.max_frames, where,
            ": more than ", options.limits.max_frames, " image files (VideoLimits::max_frames)");
    }
    check(!ec, where, ": cannot list the directory: ", ec.message());
    check(!files_.empty(), where,
          ": no image files in the directory (expected .png, .jpg, .jpeg, .bmp, .ppm, .pgm or "
          ".pnm frames)");
    std::sort(files_.begin(), files_.end(), [](const auto& a, const auto& b) {
      return a.filename().string() < b.filename().string();
    });
  }

  std::optional<VideoFrame> next() override {
    if (next_ >= files_.size()) return std::nullopt;
    VideoFrame frame;
    frame.image = decode_frame_image(files_[next_], static_cast<Index>(next_), total_pixels_,
                                     options_.limits);
    total_pixels_ += frame.image.width * frame.image.height;
    frame.index = static_cast<Index>(next_);
    frame.time = static_cast<double>(next_) / options_.images_fps;
    frame.duration = 1.0 / options_.images_fps;
    ++next_;
    return frame;
  }

  double frame_rate() const override { return options_.images_fps; }

 private:
  VideoOptions options_;
  std::vector<std::filesystem::path> files_;
  std::size_t next_ = 0;
  Index total_pixels_ = 0;  // width * height summed over the frames returned
};

class Y4mSource final : public FrameSource {
 public:
  Y4mSource(const std::filesystem::path& file, const VideoOptions& options)
      : reader_(file, options.limits) {}

  std::optional<VideoFrame> next() override {
    std::optional<Image> image = reader_.read_frame();
    if (!image) return std::nullopt;
    VideoFrame frame;
    frame.index = reader_.frames_read() - 1;
    frame.image = std::move(*image);
    frame.time = reader_.header().frame_time(frame.index);
    frame.duration = 1.0 / reader_.header().frame_rate();
    return frame;
  }

  double frame_rate() const override { return reader_.header().frame_rate(); }

 private:
  Y4mReader reader_;
};

#if TESSERA_HAS_FFMPEG

inline std::string av_error_text(int code) {
  char text[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(code, text, sizeof text);
  return text;
}

// libavformat + libavcodec + swscale, one video stream, frames in presentation order.
class ContainerSource final : public FrameSource {
 public:
  ContainerSource(const std::filesystem::path& file, const VideoOptions& options)
      : where_(file.string()), limits_(options.limits) {
    AVFormatContext* format = nullptr;
    int err = avformat_open_input(&format, where_.c_str(), nullptr, nullptr);
    check(err >= 0, where_, ": cannot open as a video container: ", av_error_text(err));
    format_.reset(format);
    err = avformat_find_stream_info(format, nullptr);
    check(err >= 0, where_, ": cannot read the container's streams: ", av_error_text(err));
    const AVCodec* codec = nullptr;
    stream_index_ = av_find_best_stream(format, AVMEDIA_TYPE_VIDEO, -1, -1, &codec, 0);
    check(stream_index_ != AVERROR_STREAM_NOT_FOUND, where_, ": no video stream in the file");
    check(stream_index_ >= 0 && codec != nullptr, where_,
          ": no decoder in this FFmpeg build for the video stream (",
          stream_index_ >= 0 ? avcodec_get_name(format->streams[stream_index_]->codecpar->codec_id)
                             : av_error_text(stream_index_).c_str(),
          ")");
    stream_ = format->streams[stream_index_];
    const AVCodecParameters* par = stream_->codecpar;
    check(static_cast<Index>(par->width) * par->height <= limits_.max_pixels, where_,
          ": frames of ", par->width, "x", par->height, " exceed VideoLimits::max_pixels = ",
          limits_.max_pixels);
    check_stream_header(par);
    decoder_.reset(avcodec_alloc_context3(codec));
    check(decoder_ != nullptr, where_, ": out of memory (decoder)");
    err = avcodec_parameters_to_context(decoder_.get(), par);
    check(err >= 0, where_, ": bad codec parameters: ", av_error_text(err));
    decoder_->thread_count = 0;  // FFmpeg's choice; frames come out the same either way
    // FFmpeg itself refuses to allocate a larger frame (a stream whose size changes midway).
    decoder_->max_pixels = limits_.max_pixels;
    err = avcodec_open2(decoder_.get(), codec, nullptr);
    check(err >= 0, where_, ": cannot open the ", codec->name, " decoder: ", av_error_text(err));
    packet_.reset(av_packet_alloc());
    frame_.reset(av_frame_alloc());
    check(packet_ && frame_, where_, ": out of memory (frame)");
  }

  std::optional<VideoFrame> next() override {
    while (!finished_) {
      const int err = avcodec_receive_frame(decoder_.get(), frame_.get());
      if (err >= 0) return convert();
      if (err == AVERROR_EOF) {
        finished_ = true;
        break;
      }
      check(err == AVERROR(EAGAIN), where_, ": decoding frame ", count_, " failed: ",
            av_error_text(err));
      feed();
    }
    return std::nullopt;
  }

  double frame_rate() const override { return rate_; }

 private:
  struct FormatDeleter {
    void operator()(AVFormatContext* p) const { avformat_close_input(&p); }
  };
  struct CodecDeleter {
    void operator()(AVCodecContext* p) const { avcodec_free_context(&p); }
  };
  struct PacketDeleter {
    void operator()(AVPacket* p) const { av_packet_free(&p); }
  };
  struct FrameDeleter {
    void operator()(AVFrame* p) const { av_frame_free(&p); }
  };
  struct ScaleDeleter {
    void operator()(SwsContext* p) const { sws_freeContext(p); }
  };

  // What the container's header says about the stream, checked before anything is decoded:
  // its time base, its frame rate (avg_frame_rate, else r_frame_rate; none is fine: frames
  // then carry their own durations), its frame count (nb_frames, when the container stores
  // one) against max_frames and max_total_pixels, its duration against max_duration.
  void check_stream_header(const AVCodecParameters* par) {
    const AVRational base = stream_->time_base;
    check(base.num > 0 && base.den > 0, where_, ": the video stream's time_base ", base.num, "/",
          base.den, " is not a positive fraction of a second");
    const bool average = stream_->avg_frame_rate.num > 0;
    const AVRational rate = average ? stream_->avg_frame_rate : stream_->r_frame_rate;
    rate_ = rate.num > 0 && rate.den > 0 ? av_q2d(rate) : 0.0;
    if (rate_ > 0) {
      check_frame_rate(where_,
                       detail::concat("the video stream's ", average ? "avg" : "r", "_frame_rate ",
                                      rate.num, "/", rate.den),
                       rate_, limits_);
    }
    const std::int64_t claimed = stream_->nb_frames;
    check(claimed <= limits_.max_frames, where_, ": the container says the video stream has ",
          claimed, " frames (nb_frames), more than VideoLimits::max_frames = ",
          limits_.max_frames);
    const Index frame_pixels = static_cast<Index>(par->width) * par->height;
    check(claimed <= 0 || frame_pixels <= 0 || claimed <= limits_.max_total_pixels / frame_pixels,
          where_, ": the container says the video stream has ", claimed, " frames (nb_frames) of ",
          par->width, "x", par->height, ", ",
          static_cast<double>(claimed) * static_cast<double>(frame_pixels),
          " pixels, more than VideoLimits::max_total_pixels = ", limits_.max_total_pixels);
    if (stream_->duration != AV_NOPTS_VALUE && stream_->duration > 0) {
      const double seconds = static_cast<double>(stream_->duration) * av_q2d(base);
      check(seconds <= limits_.max_duration, where_, ": the container says the video stream "
            "lasts ", seconds, " s (duration ", stream_->duration, " in time_base ", base.num,
            "/", base.den, "), more than VideoLimits::max_duration = ", limits_.max_duration,
            " s");
    }
  }

  // Sends the next packet of the stream to the decoder, or the end-of-stream flush.
  void feed() {
    check(!flushed_, where_, ": the decoder wants input after the end of the stream");
    for (;;) {
      const int err = av_read_frame(format_.get(), packet_.get());
      if (err == AVERROR_EOF) {
        const int sent = avcodec_send_packet(decoder_.get(), nullptr);
        check(sent >= 0, where_, ": flushing the decoder failed: ", av_error_text(sent));
        flushed_ = true;
        return;
      }
      check(err >= 0, where_, ": cannot read the container after frame ", count_, ": ",
            av_error_text(err));
      if (packet_->stream_index != stream_index_) {
        av_packet_unref(packet_.get());
        continue;
      }
      const int sent = avcodec_send_packet(decoder_.get(), packet_.get());
      av_packet_unref(packet_.get());
      check(sent >= 0, where_, ": decoding frame ", count_, " failed: ", av_error_text(sent));
      return;
    }
  }

  VideoFrame convert() {
    AVFrame* f = frame_.get();
    check(f->width > 0 && f->height > 0 &&
              static_cast<Index>(f->width) * f->height <= limits_.max_pixels,
          where_, ": frame ", count_, " of ", f->width, "x", f->height,
          " is empty or exceeds VideoLimits::max_pixels = ", limits_.max_pixels);
    check_next_frame(where_, count_, total_pixels_, f->width, f->height, limits_);
    total_pixels_ += static_cast<Index>(f->width) * f->height;
    VideoFrame out;
    out.index = count_++;
    out.image.width = f->width;
    out.image.height = f->height;
    out.image.rgb.resize(static_cast<std::size_t>(f->width) * static_cast<std::size_t>(f->height) * 3);

    // Same size, RGB24 out; the input's matrix (BT.601 when unspecified, as for Y4M) and range.
    const auto format = static_cast<AVPixelFormat>(f->format);
    scale_.reset(sws_getCachedContext(scale_.release(), f->width, f->height, format, f->width,
                                      f->height, AV_PIX_FMT_RGB24, SWS_BICUBIC, nullptr, nullptr,
                                      nullptr));
    check(scale_ != nullptr, where_, ": swscale cannot convert ",
          av_get_pix_fmt_name(format) ? av_get_pix_fmt_name(format) : "this pixel format",
          " to RGB24");
    const int matrix = f->colorspace == AVCOL_SPC_UNSPECIFIED ? SWS_CS_DEFAULT
                                                             : static_cast<int>(f->colorspace);
    const int full = f->color_range == AVCOL_RANGE_JPEG ? 1 : 0;
    if (scale_.get() != colors_for_ || matrix != matrix_ || full != full_range_) {
      // Returns -1 for RGB or gray inputs, where there is no matrix to set: fine.
      sws_setColorspaceDetails(scale_.get(), sws_getCoefficients(matrix), full,
                               sws_getCoefficients(SWS_CS_DEFAULT), 1, 0, 1 << 16, 1 << 16);
      colors_for_ = scale_.get();
      matrix_ = matrix;
      full_range_ = full;
    }
    std::uint8_t* dst[4] = {out.image.rgb.data(), nullptr, nullptr, nullptr};
    const int dst_stride[4] = {3 * f->width, 0, 0, 0};
    const int rows = sws_scale(scale_.get(), f->data, f->linesize, 0, f->height, dst, dst_stride);
    check(rows == f->height, where_, ": converting frame ", out.index, " to RGB failed");

    // Time: best-effort pts in time_base, from the stream's start; kept non-decreasing.
    const double base = av_q2d(stream_->time_base);
#if LIBAVUTIL_VERSION_INT >= AV_VERSION_INT(57, 30, 100)
    const std::int64_t duration = f->duration;
#else
    const std::int64_t duration = f->pkt_duration;
#endif
    out.duration = duration > 0 ? static_cast<double>(duration) * base
                                : (rate_ > 0 ? 1.0 / rate_ : 0.0);
    const std::int64_t pts = f->best_effort_timestamp;
    if (pts == AV_NOPTS_VALUE) {
      out.time = out.index == 0 ? 0.0 : last_time_ + last_duration_;
    } else {
      if (start_ == AV_NOPTS_VALUE)
        start_ = stream_->start_time != AV_NOPTS_VALUE ? std::min(stream_->start_time, pts) : pts;
      // in double: pts and start_time are any 64-bit values a container holds
      out.time = (static_cast<double>(pts) - static_cast<double>(start_)) * base;
    }
    if (out.index > 0) out.time = std::max(out.time, last_time_);
    // A frame at or lasting until an absurd time would be sampled once per 1 / fps up to it.
    check(out.time + out.duration <= limits_.max_duration, where_, ": frame ", out.index,
          " is at ", out.time, " s and lasts ", out.duration, " s (pts ", pts, ", duration ",
          duration, " in time_base ", stream_->time_base.num, "/", stream_->time_base.den,
          "), past VideoLimits::max_duration = ", limits_.max_duration, " s");
    last_time_ = out.time;
    last_duration_ = out.duration;
    av_frame_unref(f);
    return out;
  }

  std::string where_;
  VideoLimits limits_;
  std::unique_ptr<AVFormatContext, FormatDeleter> format_;
  std::unique_ptr<AVCodecContext, CodecDeleter> decoder_;
  std::unique_ptr<AVPacket, PacketDeleter> packet_;
  std::unique_ptr<AVFrame, FrameDeleter> frame_;
  std::unique_ptr<SwsContext, ScaleDeleter> scale_;
  const SwsContext* colors_for_ = nullptr;  // the context whose colorspace was last set
  int matrix_ = -1, full_range_ = -1;
  AVStream* stream_ = nullptr;
  int stream_index_ = -1;
  double rate_ = 0;
  Index count_ = 0;
  Index total_pixels_ = 0;  // width * height summed over the frames returned
  std::int64_t start_ = AV_NOPTS_VALUE;
  double last_time_ = 0, last_duration_ = 0;
  bool flushed_ = false, finished_ = false;
};

#endif  // TESSERA_HAS_FFMPEG

// True when the file starts with the Y4M magic or is named *.y4m (Y4mReader then says what
// is wrong with it, rather than FFmpeg failing to recognize it).
inline bool is_y4m_file(const std::filesystem::path& file) {
  std::string extension = file.extension().string();
  for (char& c : extension) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (extension == ".y4m") return true;
  std::ifstream in(file, std::ios::binary);
  char magic[9] = {};
  in.read(magic, 9);
  return in.gcount() == 9 && std::memcmp(magic, "YUV4MPEG2", 9) == 0;
}

}  // namespace detail

// Frames of one video, in order, decoded on demand (only the current frame is in memory).
class VideoReader {
 public:
  // A directory -> images; a file starting with "YUV4MPEG2" -> Y4M; any other file -> FFmpeg.
  static VideoReader open(const std::filesystem::path& path, const VideoOptions& options = {}) {
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    check(std::filesystem::exists(status), path.string(), ": no such file or directory");
    if (std::filesystem::is_directory(status)) return open_images(path, options);
    if (detail::is_y4m_file(path)) return open_y4m(path, options);
    return open_container(path, options);
  }

  static VideoReader open_images(const std::filesystem::path& dir, const VideoOptions& options = {}) {
    check(std::filesystem::is_directory(dir), dir.string(), ": not a directory");
    return VideoReader(std::make_unique<detail::ImageDirectorySource>(dir, options),
                       VideoSourceKind::images, dir.string(), options.limits);
  }

  static VideoReader open_y4m(const std::filesystem::path& file, const VideoOptions& options = {}) {
    return VideoReader(std::make_unique<detail::Y4mSource>(file, options), VideoSourceKind::y4m,
                       file.string(), options.limits);
  }

  static VideoReader open_container(const std::filesystem::path& file,
                                    const VideoOptions& options = {}) {
#if TESSERA_HAS_FFMPEG
    return VideoReader(std::make_unique<detail::ContainerSource>(file, options),
                       VideoSourceKind::container, file.string(), options.limits);
#else
    (void)options;
    fail(file.string(), ": not a Y4M file, and tessera was built without FFmpeg, so video "
         "containers (MP4, WebM, MKV, AVI, ...) cannot be read; rebuild with libavformat, "
         "libavcodec, libavutil and libswscale, or convert to Y4M or a directory of images");
#endif
  }

  // The next frame, or nullopt after the last one. Every source's frames end by
  // VideoLimits::max_duration (the container checks its timestamps itself, naming them).
  std::optional<VideoFrame> next() {
    std::optional<VideoFrame> frame = source_->next();
    if (frame) {
      check(frame->time + frame->duration <= limits_.max_duration, path_, ": frame ",
            frame->index, " is at ", frame->time, " s and lasts ", frame->duration,
            " s, past VideoLimits::max_duration = ", limits_.max_duration, " s");
    }
    return frame;
  }

  // Reads every remaining frame (mind VideoLimits: a long video is a lot of memory).
  std::vector<VideoFrame> read_all() {
    std::vector<VideoFrame> frames;
    while (auto frame = next()) frames.push_back(std::move(*frame));
    return frames;
  }

  double frame_rate() const { return source_->frame_rate(); }  // nominal; 0 when unknown
  VideoSourceKind kind() const { return kind_; }
  const std::string& path() const { return path_; }
  const VideoLimits& limits() const { return limits_; }  // the sampler reads max_samples

 private:
  VideoReader(std::unique_ptr<detail::FrameSource> source, VideoSourceKind kind, std::string path,
              const VideoLimits& limits)
      : source_(std::move(source)), kind_(kind), path_(std::move(path)), limits_(limits) {}

  std::unique_ptr<detail::FrameSource> source_;
  VideoSourceKind kind_;
  std::string path_;
  VideoLimits limits_;
};

}  // namespace tessera
