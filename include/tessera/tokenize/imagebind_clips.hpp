#pragma once
// ImageBind's clips (imagebind/data.py): which stretches of an audio file or a video its
// pretrained towers see, and the per-clip features and frames it feeds them.
//
//   tessera::Matrix<float> a = tessera::imagebind_audio_clips("dog.wav");   // [128, 3 * 204]
//   tessera::Tensor4<float> v = tessera::imagebind_video_clips("dog.y4m");  // [5*3*2, 3, 224, 224]
//
// Clip sampling is pytorchvideo's ConstantClipsPerVideoSampler as data.py's
// get_clip_timepoints reads it out (constant_clips below): K clips of clip_duration seconds,
// clip k starting at k * max(duration - clip_duration, 0) / max(K - 1, 1). pytorchvideo keeps
// those times as Fractions; the sample and frame indices here are computed from them exactly
// (error-free products and sums on doubles, no wider integers), see ConstantClips.
//
// Audio (load_and_transform_audio_data + waveform2melspec):
//   resample every channel to sample_rate (torchaudio.functional.resample: tessera::resample)
//   duration = N / sample_rate; for each of the K clips, in order:
//     the slice [int(start * sr), int(end * sr)) of all channels (clamped to N, as Python
//     slicing is), minus its mean over channels and samples, IN PLACE: data.py's
//     `waveform -= waveform.mean()` acts on a view of the whole waveform, so a later clip that
//     overlaps this one (every file shorter than K * clip_duration) sees these samples with
//     this clip's mean already removed, and frames straddling the old clip's end change;
//     kaldi fbank of the FIRST channel (torchaudio's fbank takes channel 0 of a [C, N] input)
//     with htk_compat, hanning, dither 0, 25/10 ms, no energy, n_mels bins: [M, T_k];
//     zero-padded (value 0, before normalizing) or cut to target_length frames;
//     (x - mean) / std.
//   The K clips side by side along time: [M, K * target_length], clip k in columns
//   [k * target_length, (k + 1) * target_length) (how the model core takes clips).
//
// Video (load_and_transform_video_data): decord's frame indices of each clip
// (ceil(fps * start) .. ceil(fps * end), at most the frame count, fps = the reader's nominal
// frame rate, duration = frames / fps), UniformTemporalSubsample(frames_per_clip) of those,
// /255, pytorchvideo's ShortSideScale(size) (torch.nn.functional.interpolate bilinear,
// align_corners=False, no antialiasing, in float), NormalizeVideo (CLIP's mean and std),
// SpatialCrop(size, spatial_crops): uniform_crop's left/top, centre, right/bottom squares
// (1 crop: the centre one). docs/video.md says what differs (the decoder).

#include <tessera/core/error.hpp>
#include <tessera/core/image.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/detail/rounding.hpp>
#include <tessera/io/video.hpp>
#include <tessera/io/wav.hpp>
#include <tessera/tokenize/audio.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace tessera {

// The most clips per file either sampler takes (ImageBind uses 3 and 5). It keeps k * rate
// (k < K, rate < 2^32) below 2^53, where doubles hold integers exactly.
inline constexpr Index imagebind_max_clips = 1000;

// pytorchvideo's ConstantClipsPerVideoSampler(clip_duration, K), read out over a whole file as
// get_clip_timepoints does: always K clips (a file shorter than one clip gives K clips at 0).
// start_k = k * max_start / divisions and end_k = start_k + clip_duration are exact rationals
// (pytorchvideo's Fractions); the methods below round them exactly as Python does.
struct ConstantClips {
  Index count = 0;            // K
  Index divisions = 1;        // max(K - 1, 1)
  double max_start = 0;       // max(duration - clip_duration, 0): a float minus a Fraction is a float
  double clip_duration = 2;   // seconds

  // int(start_k * rate): the Fraction times an integer, truncated. Exact for any K.
  Index start_index(Index k, Index rate) const;
  // float(start_k) and float(end_k): the Fractions rounded to the nearest double. Exact when
  // `divisions` is a power of two (ImageBind's 3 and 5 clips); otherwise start_k is
  // fl(fl(k * max_start) / divisions), which may be 1 ulp from the nearest double.
  double start_seconds(Index k) const;
  double end_seconds(Index k) const;
};

// The clips of a file lasting `duration` seconds. Requires duration >= 0, clip_duration > 0
// (both finite) and 1 <= clips <= imagebind_max_clips; throws tessera::Error otherwise.
inline ConstantClips constant_clips(double duration, double clip_duration, Index clips);

// load_and_transform_audio_data's keyword arguments, with its defaults.
struct ImageBindAudioOptions {
  double clip_duration = 2;    // seconds; clip_duration * sample_rate must be a whole number
  Index clips_per_video = 3;   // K
  Index n_mels = 128;          // M (num_mel_bins)
  Index target_length = 204;   // T frames per clip (a 2 s clip has 198: 6 are padding)
  double mean = -4.268;        // Normalize(mean, std) of every clip, padding included
  double std = 9.138;
  Index sample_rate = 16000;   // Hz; the waveform is resampled to it first
};

// The sample ranges [begin, end) data.py slices from a waveform of `samples` samples at
// options.sample_rate (end is clamped to `samples`, as Python's slicing does): K ranges.
inline std::vector<std::pair<Index, Index>> imagebind_audio_ranges(
    Index samples, const ImageBindAudioOptions& options = {});

// ImageBind's audio input from the channels [C, N] of a waveform at `sample_rate` Hz:
// [M, K * T] (see the top of this file). `limits` bounds the rates and the resampled length
// (as preprocess_audio). Throws tessera::Error when a clip is shorter than one 25 ms frame
// (data.py divides by zero there), or on a bad option or sample.
inline Matrix<float> imagebind_audio_clips(const Matrix<float>& channels /* [C, N] */,
                                           Index sample_rate,
                                           const ImageBindAudioOptions& options = {},
                                           const WavLimits& limits = {});
// The same from a WAV file (read_wav); errors name the file.
inline Matrix<float> imagebind_audio_clips(const std::filesystem::path& file,
                                           const ImageBindAudioOptions& options = {},
                                           const WavLimits& limits = {});

// load_and_transform_video_data's settings, with its defaults.
struct ImageBindVideoOptions {
  double clip_duration = 2;    // seconds
  Index clips_per_video = 5;   // K
  Index frames_per_clip = 2;   // F: UniformTemporalSubsample(num_samples = clip_duration)
  Index size = 224;            // S: ShortSideScale(S), then S x S crops
  Index spatial_crops = 3;     // SpatialCrop(S, num_crops): 3 (ImageBind) or 1 (the centre)
  std::array<float, 3> mean = {0.48145466f, 0.4578275f, 0.40821073f};  // NormalizeVideo
  std::array<float, 3> std = {0.26862954f, 0.26130258f, 0.27577711f};
  // Pixels of one frame after ShortSideScale: 4096^2 (200 MB of floats). A 224-pixel short
  // side leaves the long side 74898 pixels, an aspect ratio of 334:1; without a bound, a
  // 8192 x 1 frame the reader accepts would scale to 224 x 1835008 (1.6 GB).
  Index max_scaled_pixels = Index{4096} * 4096;
};

// The source frame indices of each clip, [K][F], for a video of `frames` frames at `fps`
// (decord's len(reader) and get_avg_fps()). Throws tessera::Error when a clip holds no frame.
inline std::vector<std::vector<Index>> imagebind_video_frame_indices(
    Index frames, double fps, const ImageBindVideoOptions& options = {});

// pytorchvideo's short_side_scale of one frame, after ToTensor's /255: [3, H', W'] with the
// shorter side = size and the longer int(floor(long / short * size)), by
// torch.nn.functional.interpolate(mode="bilinear", align_corners=False) in float.
// Throws tessera::Error when H' * W' would exceed max_pixels.
inline Tensor3<float> short_side_scale(const Image& frame, Index size,
                                       Index max_pixels = ImageBindVideoOptions{}.max_scaled_pixels);

// ImageBind's video input: [K * crops * F, 3, S, S], clip k's crop j in the F frames from
// (k * crops + j) * F, crops in SpatialCrop's order (left/top, centre, right/bottom). The
// video is read twice (once to count its frames, once to keep the sampled ones).
inline Tensor4<float> imagebind_video_clips(const std::filesystem::path& path,
                                            const ImageBindVideoOptions& options = {},
                                            const VideoOptions& video = {});

// ---------------------------------------------------------------------------------------------
// Implementation

namespace detail {

// a * b = hi + lo exactly (lo from one fused multiply-add).
struct ExactProduct {
  double hi = 0, lo = 0;
  ExactProduct(double a, double b) : hi(detail::rounded(a * b)), lo(std::fma(a, b, -hi)) {}
};

// a + b = hi + lo exactly (Knuth's TwoSum).
struct ExactSum {
  double hi = 0, lo = 0;
  ExactSum(double a, double b) : hi(detail::rounded(a + b)) {
    const double b_virtual = detail::rounded(hi - a);
    const double a_virtual = detail::rounded(hi - b_virtual);
    lo = detail::rounded(a - a_virtual) + detail::rounded(b - b_virtual);
  }
};

// The sign of (hi + lo) - m for hi = fl(hi + lo) and a double m: when hi != m, |hi - m| is at
// least one ulp of hi, more than |lo|, so hi decides; when hi == m, lo does.
inline int sign_of_difference(double hi, double lo, double m) {
  if (hi != m) return hi < m ? -1 : 1;
  return lo < 0 ? -1 : (lo > 0 ? 1 : 0);
}

inline bool is_power_of_two(Index n) { return n > 0 && (n & (n - 1)) == 0; }

}  // namespace detail

inline ConstantClips constant_clips(double duration, double clip_duration, Index clips) {
  check(std::isfinite(duration) && duration >= 0, "constant_clips: duration must be finite and "
        "non-negative (got ", duration, ")");
  check(std::isfinite(clip_duration) && clip_duration > 0,
        "constant_clips: clip_duration must be positive and finite (got ", clip_duration, ")");
  check(clips >= 1 && clips <= imagebind_max_clips, "constant_clips: clips per file must be in "
        "[1, ", imagebind_max_clips, "] (imagebind_max_clips), got ", clips);
  ConstantClips c;
  c.count = clips;
  c.divisions = std::max<Index>(clips - 1, 1);
  c.max_start = std::max(detail::rounded(duration - clip_duration), 0.0);
  c.clip_duration = clip_duration;
  return c;
}

inline Index ConstantClips::start_index(Index k, Index rate) const {
  // X = k * rate * max_start = hi + lo exactly (k * rate < 2^53 is exact); floor(X / divisions)
  // is the q with q * d <= X < (q + 1) * d, found from a float estimate by exact comparisons.
  const detail::ExactProduct x(static_cast<double>(k * rate), max_start);
  const auto d = static_cast<double>(divisions);
  double q = std::floor(x.hi / d);
  while (q > 0 && detail::sign_of_difference(x.hi, x.lo, q * d) < 0) q -= 1;
  while (detail::sign_of_difference(x.hi, x.lo, (q + 1) * d) >= 0) q += 1;
  return static_cast<Index>(q);
}

inline double ConstantClips::start_seconds(Index k) const {
  // fl(k * max_start) is the nearest double to k * max_start; dividing by a power of two is
  // exact, so it stays the nearest to start_k.
  return detail::rounded(static_cast<double>(k) * max_start) / static_cast<double>(divisions);
}

inline double ConstantClips::end_seconds(Index k) const {
  if (!detail::is_power_of_two(divisions)) return detail::rounded(start_seconds(k) + clip_duration);
  // start_k = (hi + lo) / d exactly; end_k = s + e + clip_duration with s, e scaled exactly.
  const detail::ExactProduct p(static_cast<double>(k), max_start);
  const auto d = static_cast<double>(divisions);
  const double s = p.hi / d, e = p.lo / d;
  const detail::ExactSum t(s, clip_duration);  // s + c = t.hi + t.lo
  const detail::ExactSum v(t.lo, e);           // t.lo + e = v.hi + v.lo
  const detail::ExactSum r(t.hi, v.hi);        // the sum so far = r.hi + r.lo
  // fl(t.hi + v.hi) is the nearest double to the exact sum unless t.hi + v.hi lies exactly
  // halfway between r.hi and its neighbour and the last residue v.lo pushes past the tie.
  if (r.lo != 0 && v.lo != 0) {
    const double toward = std::nextafter(r.hi, r.lo > 0 ? std::numeric_limits<double>::infinity()
                                                        : -std::numeric_limits<double>::infinity());
    const bool tie = 2 * std::abs(r.lo) == std::abs(toward - r.hi);
    if (tie && (v.lo > 0) == (r.lo > 0)) return toward;
  }
  return r.hi;
}

inline std::vector<std::pair<Index, Index>> imagebind_audio_ranges(
    Index samples, const ImageBindAudioOptions& options) {
  check(samples >= 0, "imagebind_audio_ranges: negative length ", samples);
  check(options.sample_rate > 0 && options.sample_rate <= resample_max_rate,
        "imagebind_audio_ranges: sample_rate must be in [1, ", resample_max_rate, "] (got ",
        options.sample_rate, ")");
  const auto rate = static_cast<double>(options.sample_rate);
  // end_k = start_k + clip_duration, so int(end_k * sr) = int(start_k * sr) + clip_duration * sr
  // when the clip is a whole number of samples (checked exactly: the product has no error)
  const detail::ExactProduct clip(options.clip_duration, rate);
  check(std::isfinite(options.clip_duration) && options.clip_duration > 0 && clip.lo == 0 &&
            clip.hi == std::floor(clip.hi) && clip.hi < 9007199254740992.0,
        "ImageBind audio: clip_duration * sample_rate must be a whole number of samples (got ",
        options.clip_duration, " s at ", options.sample_rate, " Hz)");
  const auto clip_samples = static_cast<Index>(clip.hi);
  // Python's N / sample_rate: both exact in double, one correctly rounded division
  const ConstantClips clips = constant_clips(static_cast<double>(samples) / rate,
                                             options.clip_duration, options.clips_per_video);
  std::vector<std::pair<Index, Index>> ranges;
  for (Index k = 0; k < clips.count; ++k) {
    const Index begin = clips.start_index(k, options.sample_rate);
    ranges.emplace_back(std::min(begin, samples), std::min(begin + clip_samples, samples));
  }
  return ranges;
}

inline Matrix<float> imagebind_audio_clips(const Matrix<float>& channels /* [C, N] */,
                                           Index sample_rate,
                                           const ImageBindAudioOptions& options,
                                           const WavLimits& limits) {
  check(channels.rows() > 0, "ImageBind audio: no channels");
  check(options.target_length > 0, "ImageBind audio: target_length must be positive (got ",
        options.target_length, ")");
  detail::check_sample_rate(options.sample_rate, limits, "ImageBind audio: sample_rate");
  detail::check_sample_rate(sample_rate, limits, "ImageBind audio: the audio's sample rate");
  // every channel resampled: the in-place mean below is over all of them
  Matrix<float> wave;  // [C, N']
  for (Index c = 0; c < channels.rows(); ++c) {
    const Vector<float> row = resample(Vector<float>(channels.row(c).transpose()), sample_rate,
                                       options.sample_rate, limits.max_samples);
    if (c == 0) wave.resize(channels.rows(), row.size());
    wave.row(c) = row.transpose();
  }
  const auto ranges = imagebind_audio_ranges(wave.cols(), options);
  const Index m = options.n_mels, t = options.target_length;
  Matrix<float> out = Matrix<float>::Zero(m, static_cast<Index>(ranges.size()) * t);  // [M, K*T]
  for (std::size_t k = 0; k < ranges.size(); ++k) {
    const auto [begin, end] = ranges[k];
    auto clip = wave.middleCols(begin, end - begin);  // a view: data.py mutates the waveform
    if (clip.size() > 0) {
      // torch's float32 mean, subtracted in float32 (the sum's order differs from torch's
      // cascade: the mean may differ in its last bit)
      const float mean = static_cast<float>(clip.template cast<double>().sum() /
                                            static_cast<double>(clip.size()));
      clip.array() -= mean;
    }
    Matrix<float> fbank;
    try {
      fbank = kaldi_fbank(Vector<float>(clip.row(0).transpose()), options.sample_rate, m);
    } catch (const Error& e) {
      fail("ImageBind audio clip ", k, " (samples [", begin, ", ", end, ") at ",
           options.sample_rate, " Hz): ", e.what());
    }
    const Index frames = std::min(fbank.cols(), t);  // cut, or the rest stays 0 (ZeroPad)
    out.middleCols(static_cast<Index>(k) * t, frames) = fbank.leftCols(frames);
  }
  normalize_features(out, options.mean, options.std);
  return out;
}

inline Matrix<float> imagebind_audio_clips(const std::filesystem::path& file,
                                           const ImageBindAudioOptions& options,
                                           const WavLimits& limits) {
  const Wav<float> wav = read_wav<float>(file, limits);
  try {
    return imagebind_audio_clips(wav.samples, wav.sample_rate, options, limits);
  } catch (const Error& e) {
    throw Error(file.string() + ": " + e.what());
  }
}

inline std::vector<std::vector<Index>> imagebind_video_frame_indices(
    Index frames, double fps, const ImageBindVideoOptions& options) {
  check(frames > 0, "ImageBind video: the video has no frames");
  check(std::isfinite(fps) && fps > 0, "ImageBind video: the frame rate must be positive (got ",
        fps, ")");
  check(options.frames_per_clip >= 1, "ImageBind video: frames_per_clip must be positive (got ",
        options.frames_per_clip, ")");
  // EncodedVideoDecord: duration = len / avg_fps; get_clip: ceil(fps * start) up to
  // min(ceil(fps * end), len), with fps * Fraction computed as fps * float(Fraction)
  const ConstantClips clips =
      constant_clips(static_cast<double>(frames) / fps, options.clip_duration,
                     options.clips_per_video);
  std::vector<std::vector<Index>> out;
  for (Index k = 0; k < clips.count; ++k) {
    const auto first = static_cast<Index>(std::ceil(detail::rounded(fps * clips.start_seconds(k))));
    const double end = std::ceil(detail::rounded(fps * clips.end_seconds(k)));
    const Index last = std::min(static_cast<double>(frames), end) >= static_cast<double>(frames)
                           ? frames
                           : static_cast<Index>(end);  // exclusive
    const Index n = last - first;
    check(n > 0, "ImageBind video: clip ", k, " (", clips.start_seconds(k), " s to ",
          clips.end_seconds(k), " s at ", fps, " fps) holds no frame of the ", frames);
    // uniform_temporal_subsample: torch.linspace(0, n - 1, F) in float32, then .long();
    // torch's linspace fills the first half from the start and the second from the end
    std::vector<Index> picked;
    const Index count = options.frames_per_clip;
    const float stop = static_cast<float>(n - 1);
    const float step = count > 1 ? stop / static_cast<float>(count - 1) : 0.0f;
    for (Index i = 0; i < count; ++i) {
      const float value = i < count / 2 ? detail::rounded(step * static_cast<float>(i))
                                        : stop - detail::rounded(step * static_cast<float>(count - 1 - i));
      picked.push_back(first + std::clamp<Index>(static_cast<Index>(value), 0, n - 1));
    }
    out.push_back(std::move(picked));
  }
  return out;
}

namespace detail {

// One axis of torch's upsample_bilinear2d (align_corners=False) on CPU: for each output
// position the two source indices and weights, computed as torch does (the scale in float,
// the source position in double from it, then rounded to float).
struct BilinearAxis {
  std::vector<Index> i0, i1;   // [out]
  std::vector<float> w0, w1;   // [out]
};

inline BilinearAxis bilinear_axis(Index in, Index out) {
  BilinearAxis a;
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  for (Index o = 0; o < out; ++o) {
    const double source = static_cast<double>(scale) * (static_cast<double>(o) + 0.5) - 0.5;
    const float x = source < 0 ? 0.0f : static_cast<float>(source);
    const auto i = static_cast<Index>(x);
    const float lambda = std::min(x - static_cast<float>(i), 1.0f);
    a.i0.push_back(i);
    a.i1.push_back(i < in - 1 ? i + 1 : i);
    a.w1.push_back(lambda);
    a.w0.push_back(1.0f - lambda);
  }
  return a;
}

// uniform_crop's offsets: ceil((H - S) / 2) and ceil((W - S) / 2), moved to the start or the
// end along the longer side for spatial_idx 0 and 2 (along the width when H == W).
inline std::pair<Index, Index> uniform_crop_offset(Index height, Index width, Index size,
                                                   Index spatial_idx) {
  Index y = (height - size + 1) / 2, x = (width - size + 1) / 2;  // ceil of a non-negative half
  if (height > width) {
    if (spatial_idx == 0) y = 0;
    if (spatial_idx == 2) y = height - size;
  } else {
    if (spatial_idx == 0) x = 0;
    if (spatial_idx == 2) x = width - size;
  }
  return {y, x};
}

}  // namespace detail

inline Tensor3<float> short_side_scale(const Image& frame, Index size, Index max_pixels) {
  detail::check_image(frame, "short_side_scale");
  check(size > 0 && static_cast<double>(size) * static_cast<double>(size) <=
                        static_cast<double>(max_pixels),
        "short_side_scale: size must be positive and size^2 at most ", max_pixels,
        " (ImageBindVideoOptions::max_scaled_pixels), got ", size);
  const Index h = frame.height, w = frame.width;
  // float(long) / short * size in double, floored (pytorchvideo)
  const double ratio = w < h ? static_cast<double>(h) / static_cast<double>(w)
                             : static_cast<double>(w) / static_cast<double>(h);
  const double longer = std::floor(detail::rounded(ratio * static_cast<double>(size)));
  check(longer * static_cast<double>(size) <= static_cast<double>(max_pixels),
        "short_side_scale: a ", w, " x ", h, " frame scaled to a shorter side of ", size,
        " would have ", static_cast<Index>(longer) * size, " pixels, more than ", max_pixels,
        " (ImageBindVideoOptions::max_scaled_pixels)");
  const Index out_h = w < h ? static_cast<Index>(longer) : size;
  const Index out_w = w < h ? size : static_cast<Index>(longer);
  const detail::BilinearAxis rows = detail::bilinear_axis(h, out_h);
  const detail::BilinearAxis cols = detail::bilinear_axis(w, out_w);
  Tensor3<float> out(3, out_h, out_w);
  for (Index c = 0; c < 3; ++c) {
    const auto at = [&](Index y, Index x) {
      return static_cast<float>(frame.rgb[static_cast<std::size_t>(3 * (y * w + x) + c)]) / 255.0f;
    };
    for (Index y = 0; y < out_h; ++y) {
      const auto r = static_cast<std::size_t>(y);
      for (Index x = 0; x < out_w; ++x) {
        const auto q = static_cast<std::size_t>(x);
        // torch: (t00 w0 + t01 w1) h0 + (t10 w0 + t11 w1) h1, each step in float
        const float top = detail::rounded(at(rows.i0[r], cols.i0[q]) * cols.w0[q]) +
                          detail::rounded(at(rows.i0[r], cols.i1[q]) * cols.w1[q]);
        const float bottom = detail::rounded(at(rows.i1[r], cols.i0[q]) * cols.w0[q]) +
                             detail::rounded(at(rows.i1[r], cols.i1[q]) * cols.w1[q]);
        out(c, y, x) = detail::rounded(top * rows.w0[r]) + detail::rounded(bottom * rows.w1[r]);
      }
    }
  }
  return out;
}

inline Tensor4<float> imagebind_video_clips(const std::filesystem::path& path,
                                            const ImageBindVideoOptions& options,
                                            const VideoOptions& video) {
  check(options.spatial_crops == 1 || options.spatial_crops == 3, path.string(),
        ": ImageBind video: spatial_crops must be 1 or 3 (SpatialCrop), got ",
        options.spatial_crops);
  // pass 1: the frame count and rate (decord's len and get_avg_fps)
  Index frames = 0;
  double fps = 0;
  {
    VideoReader reader = VideoReader::open(path, video);
    fps = reader.frame_rate();
    while (reader.next()) ++frames;
  }
  std::vector<std::vector<Index>> indices;
  try {
    indices = imagebind_video_frame_indices(frames, fps, options);
  } catch (const Error& e) {
    throw Error(path.string() + ": " + e.what());
  }
  // pass 2: each sampled frame scaled, normalized and cropped once; only its crops are kept
  const Index s = options.size, crops = options.spatial_crops, per_clip = options.frames_per_clip;
  std::map<Index, std::vector<Tensor3<float>>> cropped;  // frame -> [crops] of [3, S, S]
  for (const auto& clip : indices)
    for (Index i : clip) cropped.emplace(i, std::vector<Tensor3<float>>());
  {
    VideoReader reader = VideoReader::open(path, video);
    while (auto frame = reader.next()) {
      const auto it = cropped.find(frame->index);
      if (it == cropped.end()) continue;
      Tensor3<float> f;
      try {
        f = short_side_scale(frame->image, s, options.max_scaled_pixels);
      } catch (const Error& e) {
        fail(path.string(), ": frame ", frame->index, ": ", e.what());
      }
      for (Index c = 0; c < 3; ++c) {
        const float mean = options.mean[static_cast<std::size_t>(c)];
        const float std = options.std[static_cast<std::size_t>(c)];
        f.chip(c, 0) = (f.chip(c, 0) - mean) / std;
      }
      for (Index j = 0; j < crops; ++j) {
        const auto [y, x] = detail::uniform_crop_offset(f.dimension(1), f.dimension(2), s,
                                                        crops == 3 ? j : 1);
        const Eigen::array<Index, 3> offsets{0, y, x}, extents{3, s, s};
        it->second.push_back(f.slice(offsets, extents));
      }
    }
  }
  for (const auto& [index, f] : cropped) {
    check(!f.empty(), path.string(), ": frame ", index, " was counted but not read again");
  }
  const Index plane = 3 * s * s;
  Tensor4<float> out(static_cast<Index>(indices.size()) * crops * per_clip, 3, s, s);
  Index slot = 0;
  for (const auto& clip : indices) {
    for (Index j = 0; j < crops; ++j) {
      for (Index i : clip) {
        const Tensor3<float>& crop = cropped.at(i)[static_cast<std::size_t>(j)];
        std::copy(crop.data(), crop.data() + plane, out.data() + slot * plane);
        ++slot;
      }
    }
  }
  return out;
}

}  // namespace tessera
