#pragma once
// The audio front end of SPEC 5.3: waveform -> resampled waveform -> log-mel features [M, T].
//
//   tessera::Matrix<float> f = tessera::preprocess_audio("speech.wav", *config.audio);
//   std::vector<tessera::Matrix<float>> clips = tessera::split_into_clips(f, *config.audio);
//
// Each step follows a named reference exactly (docs/audio.md lists the measured differences):
//   resample        torchaudio.functional.resample defaults (sinc_interp_hann, 6 zero
//                   crossings, rolloff 0.99, gcd-reduced polyphase kernel, same padding/length)
//   kaldi_fbank     torchaudio.compliance.kaldi.fbank(htk_compat=True, use_energy=False,
//                   window_type="hanning", dither=0, frame_length=25, frame_shift=10,
//                   num_mel_bins=M) of the waveform minus its mean, transposed to [M, T]
//   whisper_logmel  Whisper's log_mel_spectrogram without the 30 s padding
// FFTs come from Eigen's FFT module (kissfft). The spectral features are computed in double
// whatever Scalar is (Scalar is the type of the input and output): near Kaldi's epsilon floor
// a log-mel value is sensitive to FFT rounding, and double costs little here. Frames are
// independent and spread over OpenMP threads; every output element is computed by the same
// code whatever the thread count, so results do not depend on it.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/detail/rounding.hpp>
#include <tessera/io/wav.hpp>
#include <tessera/model/config.hpp>

#include <unsupported/Eigen/FFT>

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <numbers>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

namespace tessera {

// Band-limited resampling from `from_rate` to `to_rate` Hz, exactly as
// torchaudio.functional.resample(samples, from_rate, to_rate) with its defaults:
// [N] -> [ceil(N * to_rate / from_rate)]. Equal rates return the input; N = 0 returns [0].
// Requires: both rates in [1, resample_max_rate]; the output at most max_samples long (checked
// before anything is allocated). Throws tessera::Error otherwise, or on a non-finite sample.
// Work and memory are O(N + output) whatever the rates: common pairs use torchaudio's dense
// polyphase kernel, awkward ones (44101 -> 16000, whose dense kernel would have 16000 x 44135
// entries) evaluate only the taps inside the sinc's 6 zero crossings (detail::ResamplePlan).
template <class Scalar>
Vector<Scalar> resample(const Vector<Scalar>& samples /* [N] */, Index from_rate, Index to_rate,
                        Index max_samples = WavLimits{}.max_samples);

// The largest rate resample takes: 2^32 - 1, the largest a WAV header holds. It keeps
// orig * out (the gcd-reduced rates) below 2^64, so phase arithmetic is exact in uint64.
inline constexpr Index resample_max_rate = 0xFFFFFFFFLL;

// Kaldi filter banks of the waveform minus its mean, as SPEC 5.3 `kaldi_fbank` (ImageBind):
// [N] -> [M, T] with T = 1 + (N - window) / shift, window = 25 ms, shift = 10 ms at
// `sample_rate` (400 and 160 samples at 16 kHz). Not normalized (see normalize_features).
// Throws tessera::Error when N is shorter than one window, M < 4, or a sample is not finite.
template <class Scalar>
Matrix<Scalar> kaldi_fbank(const Vector<Scalar>& waveform /* [N] */, Index sample_rate,
                           Index n_mels);

// Whisper's log-mel spectrogram (SPEC 5.3 `whisper_logmel`): [N] -> [M, T] with T = N / 160
// (centered frames, the last one dropped; no 30 s padding). The mel filters are librosa's
// Slaney filters for `sample_rate` and n_fft = 400. Throws tessera::Error when N <= 200 (the
// reflect padding needs N > 200), M < 1, or a sample is not finite.
template <class Scalar>
Matrix<Scalar> whisper_logmel(const Vector<Scalar>& waveform /* [N] */, Index n_mels,
                              Index sample_rate = 16000);

// (x - mean) / std in place: the kaldi_fbank normalization of SPEC 5.3.
template <class Scalar>
void normalize_features(Matrix<Scalar>& features /* [M, T] */, double mean, double std);

// The whole SPEC 5.3 pipeline: decode (read_wav), average the channels, resample to
// audio.sample_rate, compute audio.features (kaldi_fbank normalized with feature_mean and
// feature_std; whisper_logmel as is). Returns [M, T]. `limits` bounds the file (read_wav),
// the model's audio.sample_rate (the same rate range as a file's) and the resampled
// waveform (at most limits.max_samples samples).
inline Matrix<float> preprocess_audio(const std::filesystem::path& file, const AudioConfig& audio,
                                      const WavLimits& limits = {});
// The same from a mono waveform [N] at `sample_rate` Hz (in the range of `limits`).
inline Matrix<float> preprocess_audio(const Vector<float>& samples /* [N] */, Index sample_rate,
                                      const AudioConfig& audio, const WavLimits& limits = {});

// Splits features [M, T] into consecutive clips of at most F = max_tokens * patch_frames
// frames, so each clip fits the encoder (SPEC 5.3 "split into consecutive clips that fit").
// Clip k holds frames [k*F, min((k+1)*F, T)): every clip but the last has exactly F frames,
// the last one holds the rest (1..F frames). T <= F gives one clip, the input itself; T = 0
// gives no clip.
template <class Scalar>
std::vector<Matrix<Scalar>> split_into_clips(const Matrix<Scalar>& features /* [M, T] */,
                                             const AudioConfig& audio);

// ---------------------------------------------------------------------------------------------
// Implementation

namespace detail {

template <class Scalar>
void check_finite_waveform(const Vector<Scalar>& waveform, const char* who) {
  for (Index i = 0; i < waveform.size(); ++i) {
    if (!std::isfinite(waveform(i))) fail(who, ": audio sample ", i, " is not finite");
  }
}

// Resampling works on fixed chunks of this many output blocks (polyphase) or output samples
// (direct): how the work is cut never depends on the thread count, so neither do the sums.
inline constexpr Index resample_chunk = 64;
inline constexpr Index resample_direct_chunk = 4096;

// A triangular mel filter stored over the bins it touches: weights[k - begin].
struct MelFilter {
  Index begin = 0;
  std::vector<double> weights;
};

// Keeps a dense filter row's nonzero range. The zero weights outside it only add exact
// zeros in a dense product, so the sparse dot product gives the same sums.
inline MelFilter sparse_filter(const std::vector<double>& dense) {
  MelFilter f;
  std::size_t first = dense.size(), last = 0;
  for (std::size_t k = 0; k < dense.size(); ++k) {
    if (dense[k] != 0.0) {
      first = std::min(first, k);
      last = k;
    }
  }
  if (first == dense.size()) return f;
  f.begin = static_cast<Index>(first);
  f.weights.assign(dense.begin() + static_cast<std::ptrdiff_t>(first),
                   dense.begin() + static_cast<std::ptrdiff_t>(last) + 1);
  return f;
}

// sum_k filter[k] * power[begin + k]
inline double apply_filter(const MelFilter& filter, const double* power) {
  double sum = 0;
  const double* p = power + filter.begin;
  for (std::size_t k = 0; k < filter.weights.size(); ++k) sum += filter.weights[k] * p[k];
  return sum;
}

// torchaudio.compliance.kaldi.get_mel_banks without VTLN: M triangles equally spaced on the
// mel scale 1127 ln(1 + f/700) between low_freq = 20 Hz and the Nyquist frequency, evaluated
// at the first padded/2 FFT bins (the Nyquist bin gets weight 0). torchaudio builds them in
// float32 (Kaldi too: BaseFloat) from double scalars, whatever the waveform's dtype; the
// same float operations here make the weights equal, not merely close (building them in
// double moves log-mel values by up to 2e-4).
inline std::vector<MelFilter> kaldi_mel_banks(Index n_mels, Index padded, double sample_rate) {
  const Index num_fft_bins = padded / 2;
  const double nyquist = 0.5 * sample_rate;
  const double low_freq = 20.0, high_freq = nyquist;
  check(low_freq < nyquist, "kaldi_fbank: sample rate ", sample_rate,
        " Hz is too low (the mel banks start at 20 Hz)");
  const double fft_bin_width = sample_rate / static_cast<double>(padded);
  const double mel_low = 1127.0 * std::log(1.0 + low_freq / 700.0);
  const double mel_high = 1127.0 * std::log(1.0 + high_freq / 700.0);
  const double delta = (mel_high - mel_low) / static_cast<double>(n_mels + 1);
  // python scalars meet float32 tensors: each scalar is rounded to float, each op rounds
  const auto mel_low_f = static_cast<float>(mel_low), delta_f = static_cast<float>(delta);
  const auto bin_width_f = static_cast<float>(fft_bin_width);
  std::vector<float> mel(static_cast<std::size_t>(num_fft_bins));
  for (Index k = 0; k < num_fft_bins; ++k) {
    const float f = bin_width_f * static_cast<float>(k);
    mel[static_cast<std::size_t>(k)] = 1127.0f * std::log(1.0f + f / 700.0f);
  }
  std::vector<MelFilter> banks;
  banks.reserve(static_cast<std::size_t>(n_mels));
  for (Index m = 0; m < n_mels; ++m) {
    const auto bin = static_cast<float>(m);
    const float left = mel_low_f + rounded(bin * delta_f);  // torch rounds the product first
    const float center = mel_low_f + rounded((bin + 1.0f) * delta_f);
    const float right = mel_low_f + rounded((bin + 2.0f) * delta_f);
    std::vector<double> dense(static_cast<std::size_t>(num_fft_bins));
    for (Index k = 0; k < num_fft_bins; ++k) {
      const float f = mel[static_cast<std::size_t>(k)];
      const float up = (f - left) / (center - left);
      const float down = (right - f) / (right - center);
      dense[static_cast<std::size_t>(k)] = std::max(0.0f, std::min(up, down));
    }
    banks.push_back(sparse_filter(dense));
  }
  return banks;
}

// librosa's Slaney mel scale (htk=False): linear below 1 kHz (200/3 Hz per mel), logarithmic
// above (27 mels per factor 6.4).
struct SlaneyScale {
  static constexpr double f_sp = 200.0 / 3.0;
  static constexpr double min_log_hz = 1000.0;
  static constexpr double min_log_mel = (min_log_hz - 0.0) / f_sp;
  static double logstep() { return std::log(6.4) / 27.0; }

  static double hz_to_mel(double hz) {
    if (hz >= min_log_hz) return min_log_mel + std::log(hz / min_log_hz) / logstep();
    return (hz - 0.0) / f_sp;
  }
  static double mel_to_hz(double mel) {
    if (mel >= min_log_mel) return min_log_hz * std::exp(logstep() * (mel - min_log_mel));
    return 0.0 + f_sp * mel;
  }
};

// librosa.filters.mel(sr, n_fft, n_mels) with its defaults (fmin 0, fmax sr/2, htk=False,
// norm="slaney"): triangles between consecutive mel-spaced frequencies over the n_fft/2 + 1
// rfft bins, each scaled by 2 / (its width in Hz).
inline std::vector<MelFilter> slaney_mel_filters(Index n_mels, Index n_fft, double sample_rate) {
  const Index bins = n_fft / 2 + 1;
  // np.linspace(hz_to_mel(0), hz_to_mel(sr/2), n_mels + 2): start + i*step, the last = stop
  const double mel_min = SlaneyScale::hz_to_mel(0.0);
  const double mel_max = SlaneyScale::hz_to_mel(sample_rate / 2.0);
  const Index points = n_mels + 2;
  const double step = (mel_max - mel_min) / static_cast<double>(points - 1);
  std::vector<double> hz(static_cast<std::size_t>(points));
  for (Index i = 0; i < points; ++i) {
    const double m = i == points - 1 ? mel_max : rounded(static_cast<double>(i) * step) + mel_min;
    hz[static_cast<std::size_t>(i)] = SlaneyScale::mel_to_hz(m);
  }
  const double bin_hz = 1.0 / (static_cast<double>(n_fft) * (1.0 / sample_rate));  // rfftfreq
  std::vector<MelFilter> filters;
  filters.reserve(static_cast<std::size_t>(n_mels));
  for (Index m = 0; m < n_mels; ++m) {
    const auto i = static_cast<std::size_t>(m);
    const double lower_width = hz[i + 1] - hz[i], upper_width = hz[i + 2] - hz[i + 1];
    const double enorm = 2.0 / (hz[i + 2] - hz[i]);
    std::vector<double> dense(static_cast<std::size_t>(bins));
    for (Index k = 0; k < bins; ++k) {
      const double f = static_cast<double>(k) * bin_hz;
      const double lower = -(hz[i] - f) / lower_width;
      const double upper = (hz[i + 2] - f) / upper_width;
      dense[static_cast<std::size_t>(k)] = std::max(0.0, std::min(lower, upper)) * enorm;
    }
    filters.push_back(sparse_filter(dense));
  }
  return filters;
}

}  // namespace detail

namespace detail {

// torchaudio's _get_sinc_resample_kernel, for the rates reduced by their gcd to orig -> out:
//   y[i*out + p] = sum_k kernel[p, k] x[i*orig + k - width],  k in [0, taps),
//   taps = 2 * width + orig, x zero outside [0, N),
//   kernel[p, k] = sinc(pi t) cos(pi t / 12)^2 base / orig,
//   t = clamp((-p / out + (k - width) / orig) base, -6, 6),
// a Hann-windowed sinc with cutoff base = min(orig, out) * 0.99 and 6 zero crossings each
// side, width = ceil(6 orig / base).
struct ResampleGeometry {
  static constexpr double zeros = 6.0, rolloff = 0.99;
  Index orig = 1, out = 1;  // the rates divided by their gcd
  double base = 0;          // cutoff, in units of the reduced rates
  double scale = 0;         // base / orig
  Index width = 0;          // input samples each side of a block
  Index taps = 0;           // 2 * width + orig

  ResampleGeometry(Index from_rate, Index to_rate) {
    const Index g = std::gcd(from_rate, to_rate);
    orig = from_rate / g;
    out = to_rate / g;
    base = static_cast<double>(std::min(orig, out)) * rolloff;
    width = static_cast<Index>(std::ceil(zeros * static_cast<double>(orig) / base));
    taps = 2 * width + orig;
    scale = base / static_cast<double>(orig);
  }

  // kernel[p, width + j], in double: the one expression both plans evaluate.
  double kernel(Index p, Index j) const {
    double t = (-static_cast<double>(p) / static_cast<double>(out) +
                static_cast<double>(j) / static_cast<double>(orig)) * base;
    t = std::clamp(t, -zeros, zeros);
    const double c = std::cos(t * std::numbers::pi / zeros / 2.0);
    t *= std::numbers::pi;
    const double sinc = t == 0.0 ? 1.0 : std::sin(t) / t;
    return sinc * (c * c * scale);
  }

  // The first offset j = k - width of phase p's band: the taps outside
  // [band_first(p), band_first(p) + band()) have |t| > 6, where the kernel is clamped to its
  // tail value sinc(6 pi) cos(pi / 2)^2 scale (about 5e-50: 0 in float, nothing in a sum).
  // With c = floor(p orig / out), |t| <= 6 needs |j - p orig / out| <= 6 orig / base <= width,
  // so j in [c - width, c + width + 1]. p orig < 2^64 (rates below 2^32): exact in uint64.
  Index band_first(Index p) const {
    const auto c = static_cast<std::uint64_t>(p) * static_cast<std::uint64_t>(orig) /
                   static_cast<std::uint64_t>(out);
    return static_cast<Index>(c) - width;
  }
  Index band() const { return 2 * width + 2; }
};

// How resample evaluates the sum above (docs/audio.md, "Two plans"):
//   polyphase  torchaudio's dense kernel [out, taps], applied as one Eigen matrix product per
//              chunk of blocks. Fast where out * taps is small, the common pairs
//              (44100 -> 16000: [160, 475]; 48000 -> 16000: [1, 41]).
//   direct     per output phase p only its band of 2 * width + 2 taps (see band_first), each
//              used phase's band built once ([min(out, output), band] values), then one dot
//              product of band taps per output sample. Work O(output * band) = about
//              12 N + 4 output multiply-adds and memory O(N + output) whatever the rates, where
//              the dense kernel of an awkward pair explodes (44101 -> 16000: [16000, 44135],
//              2.8 GB in float; torchaudio builds it).
// Both round each kernel value, computed by ResampleGeometry::kernel, to Scalar; polyphase
// sums in Scalar (Eigen's product), direct in double, rounded once: they agree to the
// rounding of the sums. `automatic` picks polyphase when its kernel has at most
// resample_max_kernel entries and at most resample_max_waste times the taps of a band
// (each output of polyphase computes all `taps` products, most of them with tail zeros),
// otherwise direct.
enum class ResamplePlan : std::uint8_t { automatic, polyphase, direct };

// 2^20 kernel entries (4 MiB in float, 8 MiB in double): polyphase's whole cost for a short
// input, and more than the common pairs need (44100 -> 16000: 76,000; 11025 -> 16000:
// [640, 455] = 291,000, though direct is faster there).
inline constexpr Index resample_max_kernel = Index{1} << 20;
// Polyphase computes all `taps` products per output, direct about `band`; the dense product
// runs about this many times faster per multiply-add, so polyphase is the faster while
// taps <= this * band. Measured on 30 s, one thread, -O3 -march=native: 44100 -> 16000
// (taps / band = 13) polyphase 13 ms, direct 10 ms; 16000 -> 22050 (21) both 10 ms;
// 11025 -> 16000 (28) polyphase 21 ms, direct 4 ms.
inline constexpr Index resample_max_waste = 16;

template <class Scalar>
Vector<Scalar> resample_polyphase(const Vector<Scalar>& samples /* [N] */,
                                  const ResampleGeometry& geometry, Index out_length) {
  const Index n = samples.size(), orig = geometry.orig, out = geometry.out;
  const Index width = geometry.width, taps = geometry.taps;
  // kernel [out, taps], column-major so that kernel * frames is a plain product
  Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> kernel(out, taps);
  for (Index p = 0; p < out; ++p) {
    for (Index k = 0; k < taps; ++k) kernel(p, k) = static_cast<Scalar>(geometry.kernel(p, k - width));
  }
  // x zero-padded by width on the left and width + orig on the right; block i reads
  // padded[i*orig .. i*orig + taps): a strided view whose columns overlap.
  const Index blocks = n / orig + 1;
  Vector<Scalar> padded = Vector<Scalar>::Zero(n + 2 * width + orig);
  padded.segment(width, n) = samples;
  using ColMajor = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;
  using Strided = Eigen::Map<const ColMajor, 0, Eigen::OuterStride<>>;
  // y as [out, blocks] column-major: column i holds y[i*out .. i*out + out), so its storage is
  // the output sequence.
  Vector<Scalar> y(out * blocks);
  const Index chunks = (blocks + resample_chunk - 1) / resample_chunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (Index chunk = 0; chunk < chunks; ++chunk) {
    const Index first = chunk * resample_chunk;
    const Index count = std::min(resample_chunk, blocks - first);
    const Strided frames(padded.data() + first * orig, taps, count, Eigen::OuterStride<>(orig));
    Eigen::Map<ColMajor> target(y.data() + first * out, out, count);
    target.noalias() = kernel * frames;
  }
  return y.head(out_length);
}

template <class Scalar>
Vector<Scalar> resample_direct(const Vector<Scalar>& samples /* [N] */,
                               const ResampleGeometry& geometry, Index out_length) {
  const Index n = samples.size(), orig = geometry.orig, out = geometry.out;
  // The phases the output uses (p < output length) and, for each, the offsets j its outputs
  // can meet: its band, cut to the taps of torchaudio's kernel (j < taps - width) and to the
  // input (0 <= i*orig + j < N for its blocks i = 0 .. last). Cutting to the input keeps the
  // table within O(N + output) when a band is longer than the input (a huge reduced rate).
  const Index phases = std::min(out, out_length);
  std::vector<Index> lo(static_cast<std::size_t>(phases));
  std::vector<Index> offset(static_cast<std::size_t>(phases) + 1, 0);  // row p: kernel[offset[p] ..)
  for (Index p = 0; p < phases; ++p) {
    const Index first = geometry.band_first(p), last_block = (out_length - 1 - p) / out;
    const Index begin = std::max(first, -last_block * orig);
    const Index end = std::min({first + geometry.band(), geometry.taps - geometry.width, n});
    lo[static_cast<std::size_t>(p)] = begin;
    offset[static_cast<std::size_t>(p) + 1] =
        offset[static_cast<std::size_t>(p)] + std::max<Index>(0, end - begin);
  }
  std::vector<Scalar> kernel(static_cast<std::size_t>(offset.back()));
#pragma omp parallel for schedule(static) if (offset.back() > 65536)
  for (Index p = 0; p < phases; ++p) {
    const auto row = static_cast<std::size_t>(p);
    for (Index e = offset[row]; e < offset[row + 1]; ++e) {
      kernel[static_cast<std::size_t>(e)] =
          static_cast<Scalar>(geometry.kernel(p, lo[row] + (e - offset[row])));
    }
  }
  Vector<Scalar> y(out_length);
  const Scalar* x = samples.data();
  const Index chunks = (out_length + resample_direct_chunk - 1) / resample_direct_chunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (Index chunk = 0; chunk < chunks; ++chunk) {
    const Index begin = chunk * resample_direct_chunk;
    const Index end = std::min(out_length, begin + resample_direct_chunk);
    for (Index m = begin; m < end; ++m) {
      const auto p = static_cast<std::size_t>(m % out);
      const Index start = (m / out) * orig;  // input index of j = 0 for this block
      const Index row_length = offset[p + 1] - offset[p];
      // j in [lo, lo + row_length) and 0 <= start + j < N (x is zero outside)
      const Index e_begin = std::max<Index>(0, -start - lo[p]);
      const Index e_end = std::min(row_length, n - start - lo[p]);
      const Scalar* row = kernel.data() + offset[p];
      const Scalar* input = x + start + lo[p];
      // four partial sums (taps e = 4q + r into sum r), added in a fixed order: independent
      // add chains run ~4x faster than one, and the result depends on nothing but the data
      double sum[4] = {0, 0, 0, 0};
      Index e = e_begin;
      for (; e + 4 <= e_end; e += 4) {
        for (int r = 0; r < 4; ++r) {
          sum[r] += static_cast<double>(row[e + r]) * static_cast<double>(input[e + r]);
        }
      }
      for (int r = 0; e < e_end; ++e, ++r) {
        sum[r] += static_cast<double>(row[e]) * static_cast<double>(input[e]);
      }
      y(m) = static_cast<Scalar>((sum[0] + sum[1]) + (sum[2] + sum[3]));
    }
  }
  return y;
}

// The plan `automatic` takes for these rates (see ResamplePlan).
inline ResamplePlan choose_resample_plan(const ResampleGeometry& geometry) {
  const bool small_kernel = geometry.out <= resample_max_kernel / geometry.taps;  // <= 2^20
  const bool little_waste = geometry.taps <= resample_max_waste * geometry.band();
  return small_kernel && little_waste ? ResamplePlan::polyphase : ResamplePlan::direct;
}

// resample with the plan chosen by the caller (tests compare the two plans).
template <class Scalar>
Vector<Scalar> resample_with_plan(const Vector<Scalar>& samples /* [N] */, Index from_rate,
                                  Index to_rate, Index max_samples, ResamplePlan plan) {
  static_assert(std::is_floating_point_v<Scalar>, "resample: Scalar is float or double");
  check(from_rate > 0 && to_rate > 0, "resample: sample rates must be positive (got ", from_rate,
        " -> ", to_rate, ")");
  check(from_rate <= resample_max_rate && to_rate <= resample_max_rate,
        "resample: sample rates must be at most ", resample_max_rate, " Hz (got ", from_rate,
        " -> ", to_rate, ")");
  if (from_rate == to_rate) return samples;
  const Index n = samples.size();
  if (n == 0) return Vector<Scalar>(0);
  const ResampleGeometry geometry(from_rate, to_rate);
  const Index orig = geometry.orig, out = geometry.out;
  // ceil(N * out / orig), bounded before it is computed exactly (N * out can overflow)
  const double estimate =
      static_cast<double>(n) * static_cast<double>(out) / static_cast<double>(orig);
  const auto too_long = [&](const auto& length) {
    fail("resample: ", n, " samples at ", from_rate, " Hz become ", length, " samples at ",
         to_rate, " Hz, more than the limit of ", max_samples, " (WavLimits::max_samples)");
  };
  if (estimate > static_cast<double>(max_samples) + 1.0) too_long(static_cast<std::uint64_t>(std::ceil(estimate)));
  const auto rest = static_cast<std::uint64_t>(n % orig) * static_cast<std::uint64_t>(out);
  const Index out_length = (n / orig) * out +
                           static_cast<Index>((rest + static_cast<std::uint64_t>(orig) - 1) /
                                              static_cast<std::uint64_t>(orig));
  if (out_length > max_samples) too_long(out_length);
  check_finite_waveform(samples, "resample");
  if (plan == ResamplePlan::automatic) plan = choose_resample_plan(geometry);
  if (plan == ResamplePlan::polyphase) {
    check(out <= resample_max_kernel / geometry.taps, "resample: the polyphase kernel of ",
          from_rate, " -> ", to_rate, " Hz would have ", out, " x ", geometry.taps,
          " entries, more than ", resample_max_kernel);
    return resample_polyphase(samples, geometry, out_length);
  }
  return resample_direct(samples, geometry, out_length);
}

}  // namespace detail

template <class Scalar>
Vector<Scalar> resample(const Vector<Scalar>& samples /* [N] */, Index from_rate, Index to_rate,
                        Index max_samples) {
  return detail::resample_with_plan(samples, from_rate, to_rate, max_samples,
                                    detail::ResamplePlan::automatic);
}

template <class Scalar>
Matrix<Scalar> kaldi_fbank(const Vector<Scalar>& waveform /* [N] */, Index sample_rate,
                           Index n_mels) {
  static_assert(std::is_floating_point_v<Scalar>, "kaldi_fbank: Scalar is float or double");
  check(sample_rate > 0, "kaldi_fbank: sample rate must be positive (got ", sample_rate, ")");
  check(n_mels > 3, "kaldi_fbank: n_mels must be at least 4 (got ", n_mels, ")");
  // torchaudio: int(sample_frequency * frame_length * 0.001), in double
  const auto window = static_cast<Index>(static_cast<double>(sample_rate) * 25.0 * 0.001);
  const auto shift = static_cast<Index>(static_cast<double>(sample_rate) * 10.0 * 0.001);
  check(window >= 2 && shift > 0, "kaldi_fbank: sample rate ", sample_rate,
        " Hz is too low for 25 ms frames");
  const Index n = waveform.size();
  check(n >= window, "kaldi_fbank: audio of ", n, " samples is shorter than one frame (", window,
        " samples = 25 ms at ", sample_rate, " Hz)");
  detail::check_finite_waveform(waveform, "kaldi_fbank");
  Index padded = 1;
  while (padded < window) padded *= 2;  // round_to_power_of_two
  const Index frames = 1 + (n - window) / shift;  // snip_edges
  const auto banks = detail::kaldi_mel_banks(n_mels, padded, static_cast<double>(sample_rate));

  // SPEC: subtract the waveform mean first (ImageBind's waveform - waveform.mean()).
  double total = 0;
  for (Index i = 0; i < n; ++i) total += static_cast<double>(waveform(i));
  const double mean = total / static_cast<double>(n);

  // Symmetric Hann window (torch.hann_window(window, periodic=False)).
  std::vector<double> hann(static_cast<std::size_t>(window));
  for (Index j = 0; j < window; ++j) {
    hann[static_cast<std::size_t>(j)] =
        0.5 - 0.5 * std::cos(2.0 * std::numbers::pi * static_cast<double>(j) /
                                 static_cast<double>(window - 1));
  }
  const double epsilon = std::numeric_limits<float>::epsilon();  // Kaldi's floor in any dtype
  constexpr double preemphasis = 0.97;

  Matrix<Scalar> features(n_mels, frames);  // [M, T]
#pragma omp parallel
  {
    Eigen::FFT<double> fft;
    fft.SetFlag(Eigen::FFT<double>::HalfSpectrum);
    std::vector<double> frame(static_cast<std::size_t>(padded), 0.0);
    // full length: only the first padded/2 + 1 bins are written (HalfSpectrum), but
    // the compiler cannot see that fwd never mirrors into the rest
    std::vector<std::complex<double>> spectrum(static_cast<std::size_t>(padded));
    std::vector<double> power(static_cast<std::size_t>(padded / 2 + 1));
#pragma omp for schedule(static)
    for (Index t = 0; t < frames; ++t) {
      // the frame minus the waveform mean, then minus its own mean (remove_dc_offset)
      double* x = frame.data();
      const Scalar* source = waveform.data() + t * shift;
      double sum = 0;
      for (Index j = 0; j < window; ++j) {
        x[j] = static_cast<double>(source[j]) - mean;
        sum += x[j];
      }
      const double frame_mean = sum / static_cast<double>(window);
      for (Index j = 0; j < window; ++j) x[j] -= frame_mean;
      // preemphasis x[j] -= 0.97 x[max(j-1, 0)], from the end so x[j-1] is still unchanged
      for (Index j = window - 1; j > 0; --j) x[j] -= preemphasis * x[j - 1];
      x[0] -= preemphasis * x[0];
      for (Index j = 0; j < window; ++j) x[j] *= hann[static_cast<std::size_t>(j)];
      // x[window .. padded) stays zero
      fft.fwd(spectrum.data(), x, padded);
      for (Index k = 0; k <= padded / 2; ++k) {
        power[static_cast<std::size_t>(k)] = std::norm(spectrum[static_cast<std::size_t>(k)]);
      }
      for (Index m = 0; m < n_mels; ++m) {
        const double energy = detail::apply_filter(banks[static_cast<std::size_t>(m)], power.data());
        features(m, t) = static_cast<Scalar>(std::log(std::max(energy, epsilon)));
      }
    }
  }
  return features;
}

template <class Scalar>
Matrix<Scalar> whisper_logmel(const Vector<Scalar>& waveform /* [N] */, Index n_mels,
                              Index sample_rate) {
  static_assert(std::is_floating_point_v<Scalar>, "whisper_logmel: Scalar is float or double");
  constexpr Index n_fft = 400, hop = 160, half = n_fft / 2;
  check(n_mels >= 1, "whisper_logmel: n_mels must be positive (got ", n_mels, ")");
  check(sample_rate > 0, "whisper_logmel: sample rate must be positive (got ", sample_rate, ")");
  const Index n = waveform.size();
  check(n > half, "whisper_logmel: audio of ", n, " samples is too short (the centered STFT's "
        "reflect padding needs more than ", half, ")");
  detail::check_finite_waveform(waveform, "whisper_logmel");
  const Index frames = n / hop;  // 1 + n/hop centered frames, the last one dropped
  const auto filters = detail::slaney_mel_filters(n_mels, n_fft, static_cast<double>(sample_rate));

  std::vector<double> hann(n_fft);  // periodic: torch.hann_window(400)
  for (Index j = 0; j < n_fft; ++j) {
    hann[static_cast<std::size_t>(j)] =
        0.5 - 0.5 * std::cos(2.0 * std::numbers::pi * static_cast<double>(j) /
                                 static_cast<double>(n_fft));
  }

  Matrix<double> logmel(n_mels, frames);  // [M, T]
#pragma omp parallel
  {
    Eigen::FFT<double> fft;
    fft.SetFlag(Eigen::FFT<double>::HalfSpectrum);
    std::vector<double> frame(n_fft);
    std::vector<std::complex<double>> spectrum(n_fft);  // see kaldi_fbank
    std::vector<double> power(half + 1);
#pragma omp for schedule(static)
    for (Index t = 0; t < frames; ++t) {
      for (Index j = 0; j < n_fft; ++j) {
        // sample t*hop + j of the signal reflect-padded by 200 on each side (no edge repeat)
        Index i = t * hop + j - half;
        if (i < 0) i = -i;
        if (i >= n) i = 2 * (n - 1) - i;
        frame[static_cast<std::size_t>(j)] =
            static_cast<double>(waveform(i)) * hann[static_cast<std::size_t>(j)];
      }
      fft.fwd(spectrum.data(), frame.data(), n_fft);
      for (Index k = 0; k <= half; ++k) {
        power[static_cast<std::size_t>(k)] = std::norm(spectrum[static_cast<std::size_t>(k)]);
      }
      for (Index m = 0; m < n_mels; ++m) {
        const double energy =
            detail::apply_filter(filters[static_cast<std::size_t>(m)], power.data());
        logmel(m, t) = std::log10(std::max(energy, 1e-10));
      }
    }
  }
  // max(x, max(x) - 8), then (x + 4) / 4; the maximum is exact whatever the order.
  const double floor = logmel.maxCoeff() - 8.0;
  return ((logmel.array().max(floor) + 4.0) / 4.0).matrix().template cast<Scalar>();
}

template <class Scalar>
void normalize_features(Matrix<Scalar>& features /* [M, T] */, double mean, double std) {
  check(std > 0 && std::isfinite(std) && std::isfinite(mean),
        "normalize_features: feature_std must be positive and finite (got mean ", mean, ", std ",
        std, ")");
  features = ((features.array() - static_cast<Scalar>(mean)) / static_cast<Scalar>(std)).matrix();
}

inline Matrix<float> preprocess_audio(const Vector<float>& samples /* [N] */, Index sample_rate,
                                      const AudioConfig& audio, const WavLimits& limits) {
  check(audio.features == "kaldi_fbank" || audio.features == "whisper_logmel",
        "preprocess_audio: audio.features must be \"kaldi_fbank\" or \"whisper_logmel\" (got \"",
        audio.features, "\")");
  detail::check_sample_rate(audio.sample_rate, limits, "preprocess_audio: audio.sample_rate");
  detail::check_sample_rate(sample_rate, limits, "preprocess_audio: the audio's sample rate");
  const Vector<float> waveform =
      resample(samples, sample_rate, audio.sample_rate, limits.max_samples);
  if (audio.features == "whisper_logmel") {
    return whisper_logmel(waveform, audio.n_mels, audio.sample_rate);
  }
  Matrix<float> features = kaldi_fbank(waveform, audio.sample_rate, audio.n_mels);
  normalize_features(features, audio.feature_mean, audio.feature_std);
  return features;
}

inline Matrix<float> preprocess_audio(const std::filesystem::path& file, const AudioConfig& audio,
                                      const WavLimits& limits) {
  const Wav<float> wav = read_wav<float>(file, limits);
  try {
    return preprocess_audio(average_channels(wav.samples), wav.sample_rate, audio, limits);
  } catch (const Error& e) {
    throw Error(file.string() + ": " + e.what());
  }
}

template <class Scalar>
std::vector<Matrix<Scalar>> split_into_clips(const Matrix<Scalar>& features /* [M, T] */,
                                             const AudioConfig& audio) {
  check(audio.max_tokens > 0 && audio.patch_frames > 0,
        "split_into_clips: audio.max_tokens and audio.patch_frames must be positive (got ",
        audio.max_tokens, " and ", audio.patch_frames, ")");
  const Index per_clip = audio.max_tokens * audio.patch_frames;  // F
  std::vector<Matrix<Scalar>> clips;
  for (Index first = 0; first < features.cols(); first += per_clip) {
    clips.push_back(features.middleCols(first, std::min(per_clip, features.cols() - first)));
  }
  return clips;
}

}  // namespace tessera
