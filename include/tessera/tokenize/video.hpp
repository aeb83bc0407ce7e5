#pragma once
// The video front end of SPEC 5.4: sampling at `fps`, each sampled frame through the image
// pipeline, and the streaming sliding window that reuses tubelets.
//
// Sampling (FrameSampler): sample k is at time t_k = k / fps, k = 0, 1, ...; it takes the
// nearest earlier frame, the last frame whose time is <= t_k (times within 1e-9 s count as
// equal, so a 30 fps source sampled at 1 fps gives frames 0, 30, 60, ...). A frame covers
// [time, time + duration); sampling stops at the first t_k past the end of the last frame
// (a 90-frame 30 fps video sampled at 1 fps gives 3 samples; sampled at 60 fps, every frame
// twice). When the first frame starts after 0, the samples before it take the first frame.
// At most VideoLimits::max_samples samples per video (an Error past it): the reader's limits
// bound the frame rates and times, and this bounds what sampling faster than the source
// repeats, so SlidingWindow's work follows the frames in the file.
//
// Preprocessing: FramePipeline maps an 8-bit RGB frame to the image tensor [C, S, S] of SPEC
// 5.2; preprocess_frame (preprocess_image of tokenize/image.hpp) is the default; a caller may
// pass its own (a different crop, a counting wrapper in tests). A frame sampled twice is
// preprocessed once.
//
// preprocess_video: the whole sampled video as [T, C, S, S] for Sample::video of the encoder.
// It refuses videos whose T makes more than video.max_tokens tokens (it stops reading there):
// long videos go through SlidingWindow.
//
// SlidingWindow: windows of W sampled frames, each starting `W - O` frames after the previous
// one (O = overlap); W and O must be multiples of video.tubelet, so that every window starts on
// a tubelet boundary and the tubelets of the overlap are exactly tubelets of the previous
// window, 0 <= O < W. Each window yields its preprocessed frames [W, C, S, S] and its tubelet
// tokens [K*(S/P)^2, D] (K = W / tubelet): the video patch embedding of an encoder
// (`encoder.video_patch_embed`) applied to the tubelet patches, or, without an embedding, the
// raw tubelet patches [K*(S/P)^2, C*tubelet*P*P]. Tubelets (and frames) already computed for
// the previous window are reused, not recomputed; tubelets_computed() and
// frames_preprocessed() count the work done. The last window holds the frames left after the
// previous one (it may be shorter than W; its last tubelet repeats its last frame as SPEC 2
// says); a video shorter than W gives a single short window. Window tokens equal
// patchify_video + patch embedding of the window's frames computed from scratch.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/io/video.hpp>
#include <tessera/io/y4m.hpp>
#include <tessera/model/config.hpp>
#include <tessera/nn/patch_embed.hpp>
#include <tessera/tokenize/image.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace tessera {

// The image pipeline applied to every sampled frame: RGB frame -> [C, S, S].
using FramePipeline = std::function<Tensor3<float>(const Image& frame, const ImageConfig& image)>;

// The default FramePipeline: SPEC 5.2's pipeline of tokenize/image.hpp (Pillow-exact bicubic
// resize of the shorter side to S, center crop, /255, normalize), in float.
inline Tensor3<float> preprocess_frame(const Image& frame, const ImageConfig& image) {
  return preprocess_image<float>(frame, image);
}

// One sample of FrameSampler.
struct SampledFrame {
  Index sample = 0;          // k
  Index source_index = 0;    // the index of the frame taken, in the source
  double time = 0;           // k / fps
  const VideoFrame* frame = nullptr;  // valid until the sampler's next call
};

// Samples a video at `fps` (the rule at the top of this file), reading it frame by frame.
class FrameSampler {
 public:
  FrameSampler(VideoReader reader, double fps) : reader_(std::move(reader)), fps_(fps) {
    check(std::isfinite(fps) && fps > 0, reader_.path(), ": sampling fps must be positive, got ",
          fps);
  }

  std::optional<SampledFrame> next() {
    constexpr double eps = 1e-9;  // seconds; absorbs rounding in time bases
    if (done_) return std::nullopt;
    if (!current_) {
      current_ = reader_.next();
      if (!current_) {
        done_ = true;
        return std::nullopt;
      }
      ahead_ = reader_.next();
    }
    const double t = static_cast<double>(k_) / fps_;
    while (ahead_ && ahead_->time <= t + eps) {
      current_ = std::move(ahead_);
      ahead_ = reader_.next();
    }
    if (!ahead_ && k_ > 0 && t > current_->time + std::max(current_->duration, 0.0) - eps &&
        t > current_->time + eps) {
      done_ = true;
      return std::nullopt;
    }
    const VideoLimits& limits = reader_.limits();
    check(k_ < limits.max_samples, reader_.path(), ": sampled at ", fps_,
          " fps the video gives more than ", limits.max_samples,
          " samples (VideoLimits::max_samples): sample ", k_, " at ", t, " s still takes frame ",
          current_->index, " (at ", current_->time, " s, lasting ", current_->duration, " s)");
    SampledFrame out{k_, current_->index, t, &*current_};
    ++k_;
    return out;
  }

  const VideoReader& reader() const { return reader_; }
  double fps() const { return fps_; }

 private:
  VideoReader reader_;
  double fps_;
  std::optional<VideoFrame> current_, ahead_;
  Index k_ = 0;
  bool done_ = false;
};

// The source indices that sampling at `fps` picks (reads the whole video).
inline std::vector<Index> sample_frame_indices(VideoReader reader, double fps) {
  FrameSampler sampler(std::move(reader), fps);
  std::vector<Index> out;
  while (auto s = sampler.next()) out.push_back(s->source_index);
  return out;
}

namespace detail {

// Sampled frames through the pipeline; a source frame sampled again reuses its tensor.
class PreprocessedFrames {
 public:
  PreprocessedFrames(VideoReader reader, const Config& config, FramePipeline pipeline)
      : sampler_(std::move(reader), config.video ? config.video->fps : 1.0),
        image_(config.frame_geometry()),
        pipeline_(std::move(pipeline)) {
    check(config.video.has_value(), sampler_.reader().path(), ": the config has no video section");
    check(static_cast<bool>(pipeline_), "video: the frame pipeline is empty");
  }

  // The next sampled frame's tensor [C, S, S] (and its source index), or nullopt at the end.
  std::optional<std::pair<Tensor3<float>, Index>> next() {
    const auto s = sampler_.next();
    if (!s) return std::nullopt;
    if (s->source_index != last_index_) {
      last_ = pipeline_(s->frame->image, image_);
      check(last_.dimension(0) == image_.channels && last_.dimension(1) == image_.size &&
                last_.dimension(2) == image_.size,
            path(), ": the frame pipeline returned [", last_.dimension(0), ", ",
            last_.dimension(1), ", ", last_.dimension(2), "], expected [", image_.channels, ", ",
            image_.size, ", ", image_.size, "]");
      last_index_ = s->source_index;
      ++preprocessed_;
    }
    return std::make_pair(last_, s->source_index);
  }

  const std::string& path() const { return sampler_.reader().path(); }
  double fps() const { return sampler_.fps(); }
  Index preprocessed() const { return preprocessed_; }

 private:
  FrameSampler sampler_;
  ImageConfig image_;
  FramePipeline pipeline_;
  Tensor3<float> last_;
  Index last_index_ = -1;
  Index preprocessed_ = 0;
};

// Video tokens per tubelet step: Nq when pooled, else (S/P)^2.
inline Index video_tokens_per_step(const Config& config) {
  return config.video->pool_queries > 0 ? config.video->pool_queries
                                        : config.frame_geometry().num_patches();
}

}  // namespace detail

struct PreprocessedVideo {
  Tensor4<float> frames;             // [T, C, S, S]
  std::vector<Index> source_indices; // [T] the source frame of each sample
};

// Samples the video at config.video->fps and preprocesses every sampled frame.
// Errors: no frames; more frames than fit video.max_tokens (checked while reading).
inline PreprocessedVideo preprocess_video(VideoReader reader, const Config& config,
                                          FramePipeline pipeline = preprocess_frame) {
  detail::PreprocessedFrames source(std::move(reader), config, std::move(pipeline));
  const Index tubelet = config.video->tubelet;
  const Index max_frames =
      config.video->max_tokens / detail::video_tokens_per_step(config) * tubelet;
  std::vector<Tensor3<float>> frames;
  PreprocessedVideo out;
  while (auto f = source.next()) {
    check(static_cast<Index>(frames.size()) < max_frames, source.path(), ": sampled at ",
          source.fps(), " fps the video has more than ", max_frames,
          " frames, which makes more than video.max_tokens = ", config.video->max_tokens,
          " tokens; encode it in windows with SlidingWindow (tokenize/video.hpp)");
    frames.push_back(std::move(f->first));
    out.source_indices.push_back(f->second);
  }
  check(!frames.empty(), source.path(), ": the video has no frames");
  const ImageConfig& image = config.frame_geometry();
  const Index plane = image.channels * image.size * image.size;
  out.frames = Tensor4<float>(static_cast<Index>(frames.size()), image.channels, image.size, image.size);
  for (std::size_t t = 0; t < frames.size(); ++t)
    std::copy(frames[t].data(), frames[t].data() + plane, out.frames.data() + static_cast<Index>(t) * plane);
  return out;
}

// preprocess_video of the file or directory at `path`.
inline Tensor4<float> load_video(const std::filesystem::path& path, const Config& config,
                                 const VideoOptions& options = {}) {
  return preprocess_video(VideoReader::open(path, options), config).frames;
}

struct WindowOptions {
  Index window = 8;   // W sampled frames per window; a multiple of video.tubelet
  Index overlap = 0;  // O frames shared with the previous window; a multiple of tubelet, < W
};

// One window of SlidingWindow.
template <class Scalar>
struct VideoWindow {
  Index index = 0;          // 0-based window number
  Index first_frame = 0;    // the sample index k of its first frame
  double start_time = 0;    // first_frame / fps, seconds
  Index first_tubelet = 0;  // the global index of its first tubelet step
  Tensor4<Scalar> video;    // [T, C, S, S] its frames (T = W, or fewer in the last window)
  Matrix<Scalar> tokens;    // [K*(S/P)^2, D] embedded tubelets, or [K*(S/P)^2, C*tubelet*P*P]
                            // raw tubelet patches without an embedding; K = ceil(T / tubelet)
  std::vector<Index> source_indices;  // [T] the source frame of each sample
};

// Streams a video in overlapping windows of sampled frames (see the top of this file).
template <class Scalar>
class SlidingWindow {
 public:
  // `embed` (may be null: raw patches) must outlive the SlidingWindow; its patch_dim must be
  // C*tubelet*P*P.
  SlidingWindow(VideoReader reader, const Config& config, WindowOptions options,
                const nn::PatchEmbed<Scalar>* embed = nullptr,
                FramePipeline pipeline = preprocess_frame)
      : source_(std::move(reader), config, std::move(pipeline)),
        image_(config.frame_geometry()),
        tubelet_(config.video->tubelet),
        window_(options.window),
        overlap_(options.overlap),
        embed_(embed) {
    const std::string& where = source_.path();
    check(window_ > 0 && window_ % tubelet_ == 0, where, ": window = ", window_,
          " frames must be a positive multiple of video.tubelet = ", tubelet_);
    check(overlap_ >= 0 && overlap_ < window_ && overlap_ % tubelet_ == 0, where,
          ": overlap = ", overlap_, " frames must be a multiple of video.tubelet = ", tubelet_,
          " in [0, window = ", window_, ")");
    const Index tokens = window_ / tubelet_ * detail::video_tokens_per_step(config);
    check(tokens <= config.video->max_tokens, where, ": a window of ", window_, " frames makes ",
          tokens, " tokens, more than video.max_tokens = ", config.video->max_tokens);
    if (embed_ != nullptr) {
      check(embed_->patch_dim() == config.video_patch_dim(), where,
            ": the patch embedding takes ", embed_->patch_dim(),
            " values per patch, the config's tubelets have C*tubelet*P*P = ",
            config.video_patch_dim());
    }
  }

  // The next window, or nullopt when the video is exhausted.
  std::optional<VideoWindow<Scalar>> next() {
    const Index start = windows_ * (window_ - overlap_);
    // Pull sampled frames until the window is full or the video ends.
    while (!ended_ && frames_base_ + static_cast<Index>(frames_.size()) < start + window_) {
      auto f = source_.next();
      if (!f) {
        ended_ = true;
        break;
      }
      frames_.push_back(std::move(f->first));
      sources_.push_back(f->second);
    }
    const Index available = frames_base_ + static_cast<Index>(frames_.size());
    if (windows_ == 0) check(available > 0, source_.path(), ": the video has no frames");
    // Done when the previous window already reached the last frame.
    if (windows_ > 0 && available <= start + overlap_) return std::nullopt;
    const Index end = std::min(start + window_, available);

    VideoWindow<Scalar> w;
    w.index = windows_;
    w.first_frame = start;
    w.start_time = static_cast<double>(start) / source_.fps();
    w.first_tubelet = start / tubelet_;
    const Index frames = end - start;
    const Index plane = image_.channels * image_.size * image_.size;
    w.video = Tensor4<Scalar>(frames, image_.channels, image_.size, image_.size);
    for (Index t = 0; t < frames; ++t) {
      const Tensor3<float>& f = frames_[static_cast<std::size_t>(start + t - frames_base_)];
      std::transform(f.data(), f.data() + plane, w.video.data() + t * plane,
                     [](float v) { return static_cast<Scalar>(v); });
      w.source_indices.push_back(sources_[static_cast<std::size_t>(start + t - frames_base_)]);
    }

    // Tubelets [first, last): reuse what the previous window computed, compute the rest.
    const Index first = start / tubelet_;
    const Index last = (end + tubelet_ - 1) / tubelet_;
    while (!tubelets_.empty() && tubelets_base_ < first) {
      tubelets_.pop_front();
      ++tubelets_base_;
    }
    if (tubelets_.empty()) tubelets_base_ = first;
    for (Index q = tubelets_base_ + static_cast<Index>(tubelets_.size()); q < last; ++q)
      tubelets_.push_back(compute_tubelet(q, end));
    const Index per_step = image_.num_patches();
    w.tokens.resize((last - first) * per_step, tubelets_.front().cols());
    for (Index q = first; q < last; ++q)
      w.tokens.middleRows((q - first) * per_step, per_step) =
          tubelets_[static_cast<std::size_t>(q - tubelets_base_)];

    // Keep only what the next window can share.
    const Index next_start = start + window_ - overlap_;
    while (!frames_.empty() && frames_base_ < next_start) {
      frames_.pop_front();
      sources_.pop_front();
      ++frames_base_;
    }
    ++windows_;
    return w;
  }

  Index tubelets_computed() const { return tubelets_computed_; }  // patchified (+ embedded)
  Index frames_preprocessed() const { return source_.preprocessed(); }  // through the pipeline
  Index windows() const { return windows_; }

 private:
  // Tubelet step q from sampled frames [q*tubelet, q*tubelet + tubelet), the last available
  // frame (index end - 1) repeated past the end: [(S/P)^2, D] or [(S/P)^2, C*tubelet*P*P].
  Matrix<Scalar> compute_tubelet(Index q, Index end) {
    const Index plane = image_.channels * image_.size * image_.size;
    Tensor4<Scalar> clip(tubelet_, image_.channels, image_.size, image_.size);
    for (Index dt = 0; dt < tubelet_; ++dt) {
      const Index k = std::min(q * tubelet_ + dt, end - 1);
      const Tensor3<float>& f = frames_[static_cast<std::size_t>(k - frames_base_)];
      std::transform(f.data(), f.data() + plane, clip.data() + dt * plane,
                     [](float v) { return static_cast<Scalar>(v); });
    }
    Matrix<Scalar> patches = nn::patchify_video(clip, tubelet_, image_.patch);
    ++tubelets_computed_;
    if (embed_ == nullptr) return patches;
    Matrix<Scalar> tokens(patches.rows(), embed_->dim());
    embed_->forward(tokens, patches);
    return tokens;
  }

  detail::PreprocessedFrames source_;
  ImageConfig image_;
  Index tubelet_, window_, overlap_;
  const nn::PatchEmbed<Scalar>* embed_;
  std::deque<Tensor3<float>> frames_;  // sampled frames [frames_base_, ...), each [C, S, S]
  std::deque<Index> sources_;          // their source indices
  Index frames_base_ = 0;
  std::deque<Matrix<Scalar>> tubelets_;  // tubelet steps [tubelets_base_, ...)
  Index tubelets_base_ = 0;
  Index tubelets_computed_ = 0;
  Index windows_ = 0;
  bool ended_ = false;
};

}  // namespace tessera
