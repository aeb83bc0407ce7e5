#pragma once
// The image pipeline of SPEC 5.2, from decoded 8-bit RGB to the image tensor [C, S, S]:
//
//   resize_shorter_side(image, S)   Pillow's Image.resize(..., Image.BICUBIC): shorter side
//                                   = S, longer side = int(S * long / short) (torchvision's
//                                   Resize rule)
//   center_crop(image, S)           torchvision.transforms.functional.center_crop
//   resize(image, w, h, filter)     Pillow's Image.resize with BICUBIC or BILINEAR
//   center_crop(image, h, w, rule)  torchvision's or transformers' center crop (CropRule)
//   normalize_image(image, m, s)    ToTensor (/255) then Normalize ((x - mean) / std)
//   preprocess_image(image, config) all three; preprocess_image_u8 stops before normalizing
//
// Decoding files lives in io/image.hpp (it needs stb_image); tokenize/image_file.hpp has the
// one-call preprocess_image(path, config). This one needs nothing but Eigen, so video
// frames from any source can go through the same pipeline.
//
// The settings of HF's CLIPImageProcessor and open_clip's transform, and the pipeline they
// drive, are in tokenize/image_processor.hpp.
//
// Exactness: the resize is Pillow's (libImaging/Resample.c, Pillow 9.4) step by step, so the
// 8-bit result is bit-identical to Pillow's, not merely close. The bicubic kernel
// (a = -0.5, support 2) or the bilinear one (the triangle, support 1) is stretched by the
// downscale factor when shrinking (antialiasing); its taps
// are computed in double, normalized to sum 1, rounded to 22-bit fixed point; the
// horizontal pass runs first and its output is rounded and clamped to 8 bits before the
// vertical pass, exactly as Pillow does. docs/image.md lists what was measured.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/core/image.hpp>
#include <tessera/detail/rounding.hpp>
#include <tessera/model/config.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

namespace tessera {

namespace detail {


// ---- Pillow's separable resampling (libImaging/Resample.c) ---------------------------------
// Fixed point: 8 bits of result, 2 bits of headroom for the negative lobes and for sums
// above 1, so 32 - 8 - 2 = 22 fraction bits in an int32 accumulator.
inline constexpr int resample_precision_bits = 22;

// The bicubic convolution kernel with a = -0.5 (Keys), support 2.
inline double bicubic_kernel(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  // each product rounded before its sum, as Pillow's C (built without FMA) computes it
  if (x < 1.0) return rounded((rounded((a + 2.0) * x) - (a + 3.0)) * x * x) + 1;
  if (x < 2.0) return (rounded((rounded((x - 5) * x) + 8) * x) - 4) * a;
  return 0.0;
}

// The triangle (bilinear) kernel, support 1: Pillow's bilinear_filter.
inline double bilinear_kernel(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

}  // namespace detail

// The resampling filters of Pillow's Image.resize that tessera reproduces. The values are
// Pillow's filter codes (PIL.Image.Resampling), which transformers' preprocessor_config.json
// stores as "resample"; Pillow's others (NEAREST 0, LANCZOS 1, BOX 4, HAMMING 5) are not
// implemented.
enum class ResampleFilter { bilinear = 2, bicubic = 3 };

inline const char* resample_filter_name(ResampleFilter filter) {
  return filter == ResampleFilter::bilinear ? "bilinear" : "bicubic";
}

namespace detail {

// The kernel's half width at scale 1 (Pillow's filter support).
inline double filter_support(ResampleFilter filter) {
  return filter == ResampleFilter::bilinear ? 1.0 : 2.0;
}

inline double filter_kernel(ResampleFilter filter, double x) {
  return filter == ResampleFilter::bilinear ? bilinear_kernel(x) : bicubic_kernel(x);
}

// The taps of one pass over outputs [out_begin, out_begin + n): output pixel out_begin + i
// reads input pixels first[i] .. first[i] + count[i] - 1 with weights[i * taps + j] (22-bit
// fixed point).
struct ResampleTaps {
  Index taps = 0;
  std::vector<int> first;             // [n]
  std::vector<int> count;             // [n]
  std::vector<std::int32_t> weights;  // [n, taps]
};

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for the box [0, in_size], for outputs
// [out_begin, out_begin + out_count) of out_size (all of them by default): every expression is
// evaluated in the same order and precision as there, so the rounded weights are the same
// integers. An output's taps depend only on its own index, so computing a range of them gives
// the taps of the whole pass restricted to it; their size is out_count * taps, at most about
// 4 * in_size + 5 * out_count.
inline ResampleTaps resample_taps(ResampleFilter filter, Index in_size, Index out_size,
                                  Index out_begin = 0, Index out_count = -1) {
  if (out_count < 0) out_count = out_size - out_begin;
  TESSERA_ASSERT(out_begin >= 0 && out_count >= 1 && out_begin + out_count <= out_size);
  const double support_unscaled = filter_support(filter);
  const float in0 = 0.0f, in1 = static_cast<float>(in_size);  // Pillow's box is float
  const double scale = static_cast<double>(in1 - in0) / static_cast<double>(out_size);
  const double filter_scale = scale < 1.0 ? 1.0 : scale;  // stretch the kernel when shrinking
  const double support = support_unscaled * filter_scale;
  const double inverse_filter_scale = 1.0 / filter_scale;

  ResampleTaps out;
  out.taps = static_cast<Index>(std::ceil(support)) * 2 + 1;
  out.first.resize(static_cast<std::size_t>(out_count));
  out.count.resize(static_cast<std::size_t>(out_count));
  out.weights.assign(static_cast<std::size_t>(out_count * out.taps), 0);
  std::vector<double> w(static_cast<std::size_t>(out.taps));
  const int in = static_cast<int>(in_size);
  for (Index i = 0; i < out_count; ++i) {
    const double center = in0 + rounded((static_cast<double>(out_begin + i) + 0.5) * scale);
    int xmin = static_cast<int>(center - support + 0.5);  // truncation, as Pillow's (int)
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in) xmax = in;
    const int n = xmax - xmin;
    double sum = 0.0;
    for (int x = 0; x < n; ++x) {
      w[static_cast<std::size_t>(x)] =
          filter_kernel(filter, (x + xmin - center + 0.5) * inverse_filter_scale);
      sum += w[static_cast<std::size_t>(x)];
    }
    std::int32_t* k = out.weights.data() + i * out.taps;
    for (int x = 0; x < n; ++x) {
      double v = w[static_cast<std::size_t>(x)];
      if (sum != 0.0) v /= sum;
      const double fixed = v * static_cast<double>(1 << resample_precision_bits);
      k[x] = static_cast<std::int32_t>(v < 0 ? -0.5 + fixed : 0.5 + fixed);
    }
    out.first[static_cast<std::size_t>(i)] = xmin;
    out.count[static_cast<std::size_t>(i)] = n;
  }
  return out;
}

inline ResampleTaps bicubic_taps(Index in_size, Index out_size, Index out_begin = 0,
                                 Index out_count = -1) {
  return resample_taps(ResampleFilter::bicubic, in_size, out_size, out_begin, out_count);
}

// Rounds a fixed-point sum (which started at one half) to 8 bits, clamping to [0, 255].
inline std::uint8_t clip_fixed_to_u8(std::int32_t sum) {
  const std::int32_t v = sum >> resample_precision_bits;  // arithmetic shift: floor
  return static_cast<std::uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Horizontal pass over input rows [row_begin, row_begin + out.height): out row r is input
// row row_begin + r.
inline void resample_horizontal(Image& out,             // [rows, out_w, 3]
                                const Image& in,        // [H, W, 3]
                                Index row_begin, const ResampleTaps& taps) {
  const Index rows = out.height, width = out.width;
  constexpr std::int32_t half = std::int32_t{1} << (resample_precision_bits - 1);
#pragma omp parallel for schedule(static) if (rows * width >= 4096)
  for (Index r = 0; r < rows; ++r) {
    const std::uint8_t* src = in.pixel(row_begin + r, 0);
    std::uint8_t* dst = out.pixel(r, 0);
    for (Index x = 0; x < width; ++x) {
      const int first = taps.first[static_cast<std::size_t>(x)];
      const int n = taps.count[static_cast<std::size_t>(x)];
      const std::int32_t* k = taps.weights.data() + x * taps.taps;
      std::int32_t s0 = half, s1 = half, s2 = half;
      for (int j = 0; j < n; ++j) {
        const std::uint8_t* p = src + 3 * (first + j);
        s0 += p[0] * k[j];
        s1 += p[1] * k[j];
        s2 += p[2] * k[j];
      }
      dst[3 * x + 0] = clip_fixed_to_u8(s0);
      dst[3 * x + 1] = clip_fixed_to_u8(s1);
      dst[3 * x + 2] = clip_fixed_to_u8(s2);
    }
  }
}

// Vertical pass: output row y reads taps.count[y] rows of `in` from taps.first[y] - row_offset
// (row_offset = the input row that `in` starts at: the horizontal pass kept only those used).
inline void resample_vertical(Image& out,       // [out_h, W, 3]
                              const Image& in,  // [rows, W, 3]
                              Index row_offset, const ResampleTaps& taps) {
  const Index rows = out.height, values = out.width * 3;
  constexpr std::int32_t half = std::int32_t{1} << (resample_precision_bits - 1);
#pragma omp parallel for schedule(static) if (rows * values >= 12288)
  for (Index y = 0; y < rows; ++y) {
    const Index first = taps.first[static_cast<std::size_t>(y)] - row_offset;
    const int n = taps.count[static_cast<std::size_t>(y)];
    const std::int32_t* k = taps.weights.data() + y * taps.taps;
    // Whole rows at a time (contiguous, vectorizable); integer sums do not depend on the order.
    std::vector<std::int32_t> sum(static_cast<std::size_t>(values), half);
    for (int j = 0; j < n; ++j) {
      const std::uint8_t* src = in.rgb.data() + (first + j) * values;
      const std::int32_t weight = k[j];
      for (Index v = 0; v < values; ++v) sum[static_cast<std::size_t>(v)] += src[v] * weight;
    }
    std::uint8_t* dst = out.pixel(y, 0);
    for (Index v = 0; v < values; ++v) dst[v] = clip_fixed_to_u8(sum[static_cast<std::size_t>(v)]);
  }
}

// Python's round() of (excess / 2.0) for an integer excess >= 0: halves go to the even side.
inline Index round_half_even_half(Index excess) {
  const Index q = excess / 2;
  return (excess % 2 != 0 && q % 2 != 0) ? q + 1 : q;
}

}  // namespace detail

// The window [left, left + crop_width) x [top, top + crop_height) of Pillow's
// Image.resize((width, height), filter) of an 8-bit RGB image, computing only that
// window: horizontal pass first (over the input rows the window's vertical taps read, for the
// window's columns), 8-bit intermediate, then the vertical pass; a pass whose size does not
// change is skipped (as in Pillow). Every output pixel depends only on its own taps, so the
// window holds exactly the pixels of the whole resize; the work and memory follow the window
// and the input, not width * height, which for a thin image resized by its shorter side can
// be far larger than either (1 x 10000 pixels to a shorter side of 224: 224 x 2240000).
inline Image resize_window(const Image& image,  // [H, W, 3]
                           ResampleFilter filter, Index width, Index height, Index left,
                           Index top, Index crop_width, Index crop_height) {  // -> [ch, cw, 3]
  const char* const what = filter == ResampleFilter::bicubic ? "resize_bicubic" : "resize_bilinear";
  detail::check_image(image, what);
  check(width > 0 && height > 0, what, ": the target size must be positive, got ", width,
        " x ", height);
  check(left >= 0 && top >= 0 && crop_width > 0 && crop_height > 0 &&
            crop_width <= width - left && crop_height <= height - top,
        what, ": the window ", crop_width, " x ", crop_height, " at (", left, ", ", top,
        ") is not inside the ", width, " x ", height, " result");
  const bool horizontal = width != image.width;
  const bool vertical = height != image.height;

  // The input rows the window reads: through the vertical taps, or the same rows without them.
  std::optional<detail::ResampleTaps> rows;
  Index row_begin = top, row_end = top + crop_height;
  if (vertical) {
    rows = detail::resample_taps(filter, image.height, height, top, crop_height);
    row_begin = rows->first.front();
    row_end = rows->first.back() + rows->count.back();
  }
  // Those rows, restricted to the window's columns: [row_end - row_begin, crop_width, 3].
  Image columns(crop_width, row_end - row_begin);
  if (horizontal) {
    detail::resample_horizontal(columns, image, row_begin,
                                detail::resample_taps(filter, image.width, width, left,
                                                      crop_width));
  } else {
    for (Index r = 0; r < columns.height; ++r)
      std::memcpy(columns.pixel(r, 0), image.pixel(row_begin + r, left),
                  static_cast<std::size_t>(3 * crop_width));
  }
  if (!vertical) return columns;
  Image out(crop_width, crop_height);
  detail::resample_vertical(out, columns, row_begin, *rows);
  return out;
}

// resize_window with Pillow's Image.BICUBIC.
inline Image resize_bicubic_window(const Image& image,  // [H, W, 3]
                                   Index width, Index height, Index left, Index top,
                                   Index crop_width, Index crop_height) {  // -> [ch, cw, 3]
  return resize_window(image, ResampleFilter::bicubic, width, height, left, top, crop_width,
                       crop_height);
}

// Pillow's Image.resize((width, height), filter) of an 8-bit RGB image (the window of
// resize_window that is the whole result). Bit-identical to Pillow 9.4 for both filters
// (tests/test_image.cpp).
inline Image resize(const Image& image,  // [H, W, 3]
                    Index width, Index height, ResampleFilter filter) {  // -> [height, width, 3]
  if (width == image.width && height == image.height) {
    detail::check_image(image, "resize");
    return image;
  }
  return resize_window(image, filter, width, height, 0, 0, width, height);
}

// Pillow's Image.resize((width, height), Image.BICUBIC) of an 8-bit RGB image (the window of
// resize_bicubic_window that is the whole result). Bit-identical to Pillow 9.4
// (tests/test_image.cpp).
inline Image resize_bicubic(const Image& image,  // [H, W, 3]
                            Index width, Index height) {
  if (width == image.width && height == image.height) {
    detail::check_image(image, "resize_bicubic");
    return image;
  }
  return resize_bicubic_window(image, width, height, 0, 0, width, height);
}

// The size torchvision's Resize(size) gives an image of width x height: the shorter side
// becomes `size`, the longer int(size * long / short) (truncated, from a double division).
inline std::pair<Index, Index> shorter_side_size(Index width, Index height,
                                                 Index size) {  // -> (width, height)
  check(width > 0 && height > 0, "shorter_side_size: the image is empty (", width, " x ", height,
        " pixels)");
  check(size > 0, "shorter_side_size: the target size must be positive, got ", size);
  const Index shorter = std::min(width, height), longer = std::max(width, height);
  const auto resized_long = static_cast<Index>(static_cast<double>(size * longer) /
                                               static_cast<double>(shorter));
  return width <= height ? std::pair{size, resized_long} : std::pair{resized_long, size};
}

// Resizes so that the shorter side is `size` (SPEC 5.2), with Pillow's antialiased bicubic.
inline Image resize_shorter_side(const Image& image,  // [H, W, 3]
                                 Index size) {
  detail::check_image(image, "resize_shorter_side");
  const auto [width, height] = shorter_side_size(image.width, image.height, size);
  return resize_bicubic(image, width, height);
}

// torchvision.transforms.functional.center_crop(image, [size, size]): the top-left corner is
// (int(round((H - size) / 2.0)), int(round((W - size) / 2.0))) with Python's round half to
// even. A side shorter than `size` is first padded with zeros, (size - side) / 2 before and
// the rest after, as torchvision does.
inline Image center_crop(const Image& image,  // [H, W, 3]
                         Index size) {        // -> [size, size, 3]
  detail::check_image(image, "center_crop");
  check(size > 0, "center_crop: the crop size must be positive, got ", size);
  const Index pad_left = image.width < size ? (size - image.width) / 2 : 0;
  const Index pad_top = image.height < size ? (size - image.height) / 2 : 0;
  const Index padded_w = std::max(image.width, size), padded_h = std::max(image.height, size);
  const Index left = detail::round_half_even_half(padded_w - size) - pad_left;
  const Index top = detail::round_half_even_half(padded_h - size) - pad_top;
  Image out(size, size);  // zero-filled
  for (Index y = 0; y < size; ++y) {
    const Index sy = top + y;
    if (sy < 0 || sy >= image.height) continue;
    const Index x_begin = std::max<Index>(0, -left), x_end = std::min(size, image.width - left);
    if (x_end <= x_begin) continue;
    std::memcpy(out.pixel(y, x_begin), image.pixel(sy, left + x_begin),
                static_cast<std::size_t>(3 * (x_end - x_begin)));
  }
  return out;
}

// Where a center crop starts, per library. They agree when (side - crop) is even, and when it is
// odd half the time: at (side - crop) = 4k + 3 torchvision's round(k + 1.5) = 2k + 2 where
// transformers' floor gives 2k + 1 (a 227-pixel side cropped to 224: row 2 vs row 1).
enum class CropRule {
  // torchvision.transforms.functional.center_crop (CLIP, open_clip, ImageBind, SPEC 5.2):
  // start int(round((side - crop) / 2.0)), half to even; a side shorter than the crop is
  // first padded, (crop - side) // 2 before it.
  torchvision,
  // transformers.image_transforms.center_crop (CLIPImageProcessor): start
  // (side - crop) // 2 (floor); a side shorter than the crop is padded ceil((crop - side) / 2)
  // before it, which is the same formula: a negative start.
  transformers,
};

inline const char* crop_rule_name(CropRule rule) {
  return rule == CropRule::torchvision ? "torchvision" : "transformers";
}

// The index in a side of `side` pixels that the first of `crop` output pixels reads, by `rule`;
// negative when the output starts with padding.
inline Index center_crop_offset(Index side, Index crop, CropRule rule) {
  if (rule == CropRule::transformers) {
    const Index excess = side - crop;
    return excess >= 0 ? excess / 2 : -((-excess + 1) / 2);  // Python's floor division by 2
  }
  if (side < crop) return -((crop - side) / 2);
  return detail::round_half_even_half(side - crop);
}

// A center crop of `crop_height` x `crop_width` by `rule`, padding with `fill` in every channel
// where the image is smaller than the crop (torchvision and transformers pad with 0;
// open_clip's CenterCropOrPad with its fill_color).
inline Image center_crop(const Image& image,  // [H, W, 3]
                         Index crop_height, Index crop_width, CropRule rule,
                         std::uint8_t fill = 0) {  // -> [crop_height, crop_width, 3]
  detail::check_image(image, "center_crop");
  check(crop_height > 0 && crop_width > 0, "center_crop: the crop size must be positive, got ",
        crop_height, " x ", crop_width, " (height x width)");
  const Index top = center_crop_offset(image.height, crop_height, rule);
  const Index left = center_crop_offset(image.width, crop_width, rule);
  Image out(crop_width, crop_height);
  std::fill(out.rgb.begin(), out.rgb.end(), fill);
  const Index x_begin = std::max<Index>(0, -left), x_end = std::min(crop_width, image.width - left);
  for (Index y = 0; y < crop_height; ++y) {
    const Index sy = top + y;
    if (sy < 0 || sy >= image.height || x_end <= x_begin) continue;
    std::memcpy(out.pixel(y, x_begin), image.pixel(sy, left + x_begin),
                static_cast<std::size_t>(3 * (x_end - x_begin)));
  }
  return out;
}

// torchvision's ToTensor + Normalize: x = byte / 255, then (x - mean[c]) / std[c], evaluated
// in Scalar (float gives torchvision's float32 values bit for bit).
template <class Scalar>
Tensor3<Scalar> normalize_image(const Image& image,  // [H, W, 3]
                                const std::vector<double>& mean, const std::vector<double>& std) {
  detail::check_image(image, "normalize_image");
  check(mean.size() == 3 && std.size() == 3, "normalize_image: mean and std need one value per "
        "RGB channel (3), got ", mean.size(), " and ", std.size());
  for (std::size_t c = 0; c < 3; ++c)
    check(std::isfinite(std[c]) && std[c] != 0.0 && std::isfinite(mean[c]),
          "normalize_image: mean[", c, "] = ", mean[c], " and std[", c, "] = ", std[c],
          " must be finite, std nonzero");
  const Index h = image.height, w = image.width;
  Tensor3<Scalar> out(3, h, w);  // [C, H, W]
  for (Index c = 0; c < 3; ++c) {
    const auto m = static_cast<Scalar>(mean[static_cast<std::size_t>(c)]);
    const auto s = static_cast<Scalar>(std[static_cast<std::size_t>(c)]);
    for (Index y = 0; y < h; ++y)
      for (Index x = 0; x < w; ++x) {
        const Scalar v = static_cast<Scalar>(image.pixel(y, x)[c]) / static_cast<Scalar>(255);
        out(c, y, x) = (v - m) / s;
      }
  }
  return out;
}

// Resize and crop (SPEC 5.2 up to, not including, the division by 255): the 8-bit image the
// conformance tests compare with Pillow + torchvision. Equal to
// center_crop(resize_shorter_side(image, size), size), but only the crop is resized (both
// sides of the resized image are at least `size`, so the crop needs no padding): the work is
// proportional to the input and S^2, whatever the aspect ratio.
inline Image preprocess_image_u8(const Image& image,  // [H, W, 3]
                                 Index size) {        // -> [S, S, 3]
  detail::check_image(image, "resize_shorter_side");
  const auto [width, height] = shorter_side_size(image.width, image.height, size);
  return resize_bicubic_window(image, width, height,
                               detail::round_half_even_half(width - size),
                               detail::round_half_even_half(height - size), size, size);
}

// The whole SPEC 5.2 pipeline after decoding: resize, crop, /255, normalize.
template <class Scalar = float>
Tensor3<Scalar> preprocess_image(const Image& image,  // [H, W, 3]
                                 const ImageConfig& config) {  // -> [C, S, S]
  check(config.channels == 3, "preprocess_image: the image pipeline gives 3 (RGB) channels, but "
        "image.channels = ", config.channels);
  check(config.size > 0, "preprocess_image: image.size must be positive, got ", config.size);
  return normalize_image<Scalar>(preprocess_image_u8(image, config.size), config.mean, config.std);
}

}  // namespace tessera
