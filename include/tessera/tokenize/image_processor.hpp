#pragma once
// Image preprocessing as the CLIP families' own code does it, from 8-bit RGB to [C, H, W]:
//
//   ImageProcessing                    the settings: resize rule and size, resample filter,
//                                      crop size and rule, rescale, mean/std
//   image_processing_from_hf(path)     from transformers' preprocessor_config.json
//                                      (CLIPImageProcessor)
//   image_processing_from_open_clip(.) from open_clip's preprocess_cfg (open_clip_config.json)
//   image_processing_from_config(c)    SPEC 5.2's own pipeline (tessera's ImageConfig)
//   resize_and_crop(image, p)          the 8-bit image after resize and crop
//   preprocess_image(image, p)         the float32 tensor [3, H, W] the model reads
//
// The references, followed step by step:
// - transformers src/transformers/models/clip/image_processing_clip.py,
//   CLIPImageProcessor.preprocess: resize (image_transforms.get_resize_output_image_size with
//   default_to_square=False: shorter side = shortest_edge, longer int(edge * long / short); or
//   {"height", "width"}: exactly that size) through PIL.Image.resize with `resample`; then
//   image_transforms.center_crop (start (side - crop) // 2: CropRule::transformers); then
//   rescale (image.astype(float64) * rescale_factor, cast to float32); then normalize
//   ((x - mean) / std in float32, mean and std cast to float32).
// - open_clip src/open_clip/transform.py, image_transform(is_train=False) from PreprocessCfg:
//   resize_mode "shortest": torchvision Resize(size, interpolation) + CenterCrop(size)
//   (for a non-square size: ResizeKeepRatio(size), which resizes bicubic whatever the
//   interpolation, + CenterCrop); "longest": ResizeKeepRatio(size, interpolation, longest=1)
//   + CenterCropOrPad(size, fill_color); "squash": Resize((h, w), interpolation); then
//   ToTensor (float32 byte / 255) and Normalize ((x - mean) / std in float32).
//
// Exactness: the resize is Pillow 9.4's (tokenize/image.hpp, bit-identical for bicubic and
// bilinear), the crops are integer windows, and the float steps are the references' float32
// operations in the same order, so the tensors are bit-identical to theirs
// (tests/test_image.cpp, fixtures by tests/reference/make_image_processor_fixtures.py).
//
// Parsing rules (docs/image.md has the tables): each file's keys take that library's default
// when absent; a key present with the wrong type or an unsupported value is a tessera::Error
// naming the file and the key (`preprocessor_config.json: key "resample": ...`). Keys the
// libraries ignore (processor_class, ...) are ignored here too.

#include <tessera/core/error.hpp>
#include <tessera/core/image.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/io/json.hpp>
#include <tessera/io/read_file.hpp>
#include <tessera/model/config.hpp>
#include <tessera/tokenize/image.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace tessera {

// Bounds on what a preprocessing config may ask for.
struct ImageProcessingLimits {
  // The largest resize or crop side a config may name: 8192. Published CLIP-family models read
  // 224 to 448 pixels (a few up to 1024); at 8192 x 8192 the float tensor is 805 MB.
  static constexpr Index max_side = 8192;
  // The most pixels one preprocessed image may have: 2^26 = 8192 x 8192 (805 MB as float32,
  // within the 2 GB bad input may cost). Only reachable without a crop (do_center_crop false
  // or "squash"), where the output's size follows the image's.
  static constexpr Index max_output_pixels = Index{1} << 26;
};

// How the image is resized before the crop.
enum class ResizeRule {
  none,           // not resized (transformers' do_resize false)
  shortest_edge,  // shorter side = shortest_edge, longer int(edge * long / short) (torchvision's
                  // Resize(int), transformers' {"shortest_edge"})
  exact,          // to resize_height x resize_width (transformers' {"height", "width"},
                  // open_clip's "squash")
  fit_shortest,   // open_clip's ResizeKeepRatio(longest=0): both sides / r, rounded half to
                  // even, r = min(h / resize_height, w / resize_width)
  fit_longest,    // ResizeKeepRatio(longest=1): the same with r = max(...)
};

// How bytes become floats before the normalization.
enum class RescaleRule {
  none,          // float32(byte) (transformers' do_rescale false)
  to_tensor,     // float32(byte) / 255 in float32 (torchvision's ToTensor)
  times_factor,  // float32(double(byte) * rescale_factor) (transformers' rescale)
};

inline const char* resize_rule_name(ResizeRule rule) {
  switch (rule) {
    case ResizeRule::none: return "none";
    case ResizeRule::shortest_edge: return "shortest_edge";
    case ResizeRule::exact: return "exact";
    case ResizeRule::fit_shortest: return "fit_shortest";
    case ResizeRule::fit_longest: return "fit_longest";
  }
  return "?";
}

// The settings of one family's preprocessing. The defaults are SPEC 5.2's (= OpenAI CLIP's
// and open_clip's default at 224): shorter side 224 bicubic, torchvision's 224 x 224 center
// crop, ToTensor, CLIP's mean and std.
struct ImageProcessing {
  ResizeRule resize = ResizeRule::shortest_edge;
  Index shortest_edge = 224;   // ResizeRule::shortest_edge
  Index resize_height = 224;   // ResizeRule::exact, fit_shortest, fit_longest: the target box
  Index resize_width = 224;
  ResampleFilter filter = ResampleFilter::bicubic;
  bool crop = true;            // center crop after the resize
  CropRule crop_rule = CropRule::torchvision;
  Index crop_height = 224;
  Index crop_width = 224;
  std::uint8_t crop_fill = 0;  // padding value where the crop is larger than the image
  RescaleRule rescale = RescaleRule::to_tensor;
  double rescale_factor = 1.0 / 255.0;  // RescaleRule::times_factor
  bool normalize = true;
  std::vector<double> mean = {0.48145466, 0.4578275, 0.40821073};   // [3]
  std::vector<double> std = {0.26862954, 0.26130258, 0.27577711};   // [3]

  bool operator==(const ImageProcessing&) const = default;
};

// Checks a hand-built ImageProcessing (the parsers' results always pass); `what` leads the
// message.
inline void check_image_processing(const ImageProcessing& p, const std::string& what) {
  const auto side_ok = [](Index side) {
    return side > 0 && side <= ImageProcessingLimits::max_side;
  };
  if (p.resize == ResizeRule::shortest_edge)
    check(side_ok(p.shortest_edge), what, ": shortest_edge must be in 1..",
          ImageProcessingLimits::max_side, " (ImageProcessingLimits::max_side), got ",
          p.shortest_edge);
  if (p.resize == ResizeRule::exact || p.resize == ResizeRule::fit_shortest ||
      p.resize == ResizeRule::fit_longest)
    check(side_ok(p.resize_height) && side_ok(p.resize_width), what,
          ": the resize size must be in 1..", ImageProcessingLimits::max_side,
          " (ImageProcessingLimits::max_side) per side, got ", p.resize_height, " x ",
          p.resize_width);
  if (p.crop)
    check(side_ok(p.crop_height) && side_ok(p.crop_width), what,
          ": the crop size must be in 1..", ImageProcessingLimits::max_side,
          " (ImageProcessingLimits::max_side) per side, got ", p.crop_height, " x ", p.crop_width);
  if (p.rescale == RescaleRule::times_factor)
    check(std::isfinite(p.rescale_factor) && p.rescale_factor > 0.0, what,
          ": rescale_factor must be a positive finite number, got ", p.rescale_factor);
  if (p.normalize) {
    check(p.mean.size() == 3 && p.std.size() == 3, what,
          ": mean and std need one value per RGB channel (3), got ", p.mean.size(), " and ",
          p.std.size());
    for (std::size_t c = 0; c < 3; ++c) {
      // float32, as the references normalize: a std that rounds to 0 would divide by zero
      const auto s = static_cast<float>(p.std[c]), m = static_cast<float>(p.mean[c]);
      check(std::isfinite(m) && std::isfinite(s) && s != 0.0f, what, ": mean[", c, "] = ",
            p.mean[c], " and std[", c, "] = ", p.std[c],
            " must be finite in float32, std nonzero");
    }
  }
}

// The size (width, height) the resize step gives an image of width x height.
inline std::pair<Index, Index> processed_resize_size(Index width, Index height,
                                                     const ImageProcessing& p) {
  check(width > 0 && height > 0, "processed_resize_size: the image is empty (", width, " x ",
        height, " pixels)");
  switch (p.resize) {
    case ResizeRule::none: return {width, height};
    case ResizeRule::shortest_edge: return shorter_side_size(width, height, p.shortest_edge);
    case ResizeRule::exact: return {p.resize_width, p.resize_height};
    case ResizeRule::fit_shortest:
    case ResizeRule::fit_longest: {
      // open_clip's ResizeKeepRatio.get_params, in Python's doubles
      const double ratio_h = static_cast<double>(height) / static_cast<double>(p.resize_height);
      const double ratio_w = static_cast<double>(width) / static_cast<double>(p.resize_width);
      const double ratio = p.resize == ResizeRule::fit_longest ? std::max(ratio_h, ratio_w)
                                                               : std::min(ratio_h, ratio_w);
      // round(x * 1.0 / ratio): half to even, as Python's round (the default rounding mode)
      const auto new_h = static_cast<Index>(std::nearbyint(static_cast<double>(height) / ratio));
      const auto new_w = static_cast<Index>(std::nearbyint(static_cast<double>(width) / ratio));
      check(new_h > 0 && new_w > 0, "preprocess_image: resizing a ", width, " x ", height,
            " image to fit ", p.resize_width, " x ", p.resize_height, " (",
            resize_rule_name(p.resize), ") gives ", new_w, " x ", new_h,
            " pixels: a side of 0 (open_clip fails on it too)");
      return {new_w, new_h};
    }
  }
  return {width, height};
}

// Resize and crop by `p`: the 8-bit image [H, W, 3] before rescaling. Only the part of the
// resized image that the crop keeps is computed (resize_window), so the work follows the input
// and the output, not the resized size.
inline Image resize_and_crop(const Image& image,  // [H, W, 3]
                             const ImageProcessing& p) {
  detail::check_image(image, "preprocess_image");
  check_image_processing(p, "preprocess_image");
  const auto [resized_w, resized_h] = processed_resize_size(image.width, image.height, p);
  const Index out_w = p.crop ? p.crop_width : resized_w;
  const Index out_h = p.crop ? p.crop_height : resized_h;
  check(out_w <= ImageProcessingLimits::max_output_pixels / out_h,
        "preprocess_image: the ", image.width, " x ", image.height, " image would become ", out_w,
        " x ", out_h, " pixels, more than ImageProcessingLimits::max_output_pixels = ",
        ImageProcessingLimits::max_output_pixels);
  const Index left = p.crop ? center_crop_offset(resized_w, out_w, p.crop_rule) : 0;
  const Index top = p.crop ? center_crop_offset(resized_h, out_h, p.crop_rule) : 0;
  // The part of the crop inside the resized image; the rest is padding.
  const Index x0 = std::max<Index>(left, 0), x1 = std::min(left + out_w, resized_w);
  const Index y0 = std::max<Index>(top, 0), y1 = std::min(top + out_h, resized_h);
  if (x0 == left && y0 == top && x1 - x0 == out_w && y1 - y0 == out_h)  // no padding
    return resize_window(image, p.filter, resized_w, resized_h, left, top, out_w, out_h);
  Image out(out_w, out_h);
  std::fill(out.rgb.begin(), out.rgb.end(), p.crop_fill);
  if (x1 <= x0 || y1 <= y0) return out;
  const Image inside = resize_window(image, p.filter, resized_w, resized_h, x0, y0, x1 - x0, y1 - y0);
  for (Index y = 0; y < inside.height; ++y)
    std::memcpy(out.pixel(y0 - top + y, x0 - left), inside.pixel(y, 0),
                static_cast<std::size_t>(3 * inside.width));
  return out;
}

// Rescale and normalize an 8-bit image by `p`, in float32 as the references compute.
inline Tensor3<float> rescale_and_normalize(const Image& image,  // [H, W, 3]
                                            const ImageProcessing& p) {  // -> [3, H, W]
  detail::check_image(image, "preprocess_image");
  check_image_processing(p, "preprocess_image");
  // Each channel's 256 possible values, computed once.
  std::array<std::array<float, 256>, 3> table{};
  for (int c = 0; c < 3; ++c) {
    const auto m = static_cast<float>(p.normalize ? p.mean[static_cast<std::size_t>(c)] : 0.0);
    const auto s = static_cast<float>(p.normalize ? p.std[static_cast<std::size_t>(c)] : 1.0);
    for (int b = 0; b < 256; ++b) {
      float v = static_cast<float>(b);
      if (p.rescale == RescaleRule::to_tensor) v = detail::rounded(v / 255.0f);
      if (p.rescale == RescaleRule::times_factor)
        v = static_cast<float>(detail::rounded(static_cast<double>(b) * p.rescale_factor));
      if (p.normalize) v = detail::rounded(v - m) / s;
      table[static_cast<std::size_t>(c)][static_cast<std::size_t>(b)] = v;
    }
  }
  Tensor3<float> out(3, image.height, image.width);  // [C, H, W]
  for (Index c = 0; c < 3; ++c)
    for (Index y = 0; y < image.height; ++y)
      for (Index x = 0; x < image.width; ++x)
        out(c, y, x) = table[static_cast<std::size_t>(c)][image.pixel(y, x)[c]];
  return out;
}

// The whole pipeline: resize, crop, rescale, normalize -> [3, H, W] float32 (H x W the crop
// size, or the resized size without a crop).
inline Tensor3<float> preprocess_image(const Image& image,  // [H, W, 3]
                                       const ImageProcessing& p) {
  return rescale_and_normalize(resize_and_crop(image, p), p);
}

// SPEC 5.2's pipeline for a tessera model's image section (what preprocess_image(image,
// config) computes).
inline ImageProcessing image_processing_from_config(const ImageConfig& config) {
  ImageProcessing p;
  p.shortest_edge = p.crop_height = p.crop_width = config.size;
  p.mean = config.mean;
  p.std = config.std;
  return p;
}

namespace detail {

// Reads the keys of one preprocessing JSON object, naming `where` and the key in errors.
class ImageProcessingReader {
 public:
  ImageProcessingReader(const nlohmann::json& object, std::string where, std::string prefix)
      : object_(object), where_(std::move(where)), prefix_(std::move(prefix)) {}

  template <class... Args>
  [[noreturn]] void fail_key(const std::string& key, Args&&... args) const {
    fail(where_, ": key \"", prefix_, key, "\": ", std::forward<Args>(args)...);
  }

  // The value of `key`, or nullptr when absent (or null, when null means "the default").
  const nlohmann::json* find(const std::string& key, bool null_is_absent) const {
    const auto found = object_.find(key);
    if (found == object_.end()) return nullptr;
    if (found->is_null() && null_is_absent) return nullptr;
    return &*found;
  }

  bool read_bool(const std::string& key, bool fallback) const {
    const nlohmann::json* value = find(key, false);
    if (!value) return fallback;
    if (!value->is_boolean()) fail_key(key, "expected true or false, got ", json_excerpt(*value));
    return value->get<bool>();
  }

  // A side length: a JSON integer in 1..max_side.
  Index side(const std::string& key, const nlohmann::json& value) const {
    const bool integer = value.is_number_integer() || value.is_number_unsigned();
    if (!integer || value.get<double>() < 1 ||
        value.get<double>() > static_cast<double>(ImageProcessingLimits::max_side))
      fail_key(key, "expected an integer in 1..", ImageProcessingLimits::max_side,
               " (ImageProcessingLimits::max_side), got ", json_excerpt(value));
    return value.get<Index>();
  }

  // One number, or a list of 3 (a single number is used for every channel, as both libraries
  // do).
  std::vector<double> channels(const std::string& key, const nlohmann::json& value) const {
    std::vector<double> out;
    if (value.is_number()) {
      out.assign(3, value.get<double>());
    } else if (value.is_array() && value.size() == 3) {
      for (const auto& v : value) {
        if (!v.is_number()) break;
        out.push_back(v.get<double>());
      }
    }
    if (out.size() != 3)
      fail_key(key, "expected a number or a list of 3 numbers (R, G, B), got ",
               json_excerpt(value));
    for (std::size_t c = 0; c < 3; ++c)
      if (!std::isfinite(static_cast<float>(out[c])) ||
          (key.ends_with("std") && static_cast<float>(out[c]) == 0.0f))
        fail_key(key, "value ", c, " is ", out[c], "; expected a finite number in float32",
                 key.ends_with("std") ? ", nonzero" : "");
    return out;
  }

  // A size given as an integer (n x n), [n] or [height, width].
  std::pair<Index, Index> height_width(const std::string& key, const nlohmann::json& value) const {
    if (value.is_array() && (value.size() == 1 || value.size() == 2))
      return {side(key, value.front()), side(key, value.back())};
    if (value.is_number()) {
      const Index n = side(key, value);
      return {n, n};
    }
    fail_key(key, "expected an integer or a list [height, width], got ", json_excerpt(value));
  }

 private:
  const nlohmann::json& object_;
  std::string where_, prefix_;
};

inline nlohmann::json read_processing_json(const std::filesystem::path& file) {
  const nlohmann::json json = read_json_file(file);
  if (!json.is_object())
    fail(file.string(), ": expected a JSON object at the top level, got ", json_excerpt(json));
  return json;
}

}  // namespace detail

// transformers' CLIPImageProcessor from the parsed preprocessor_config.json; `where` names it
// in errors. Keys, their defaults (CLIPImageProcessor.__init__) and what tessera takes:
//   do_resize true | size {"shortest_edge": 224}: an integer n (= {"shortest_edge": n}),
//     {"shortest_edge": n} (a "longest_edge" beside it is ignored, as CLIP's resize ignores it),
//     {"height": h, "width": w} or [h, w]; null = the default
//   resample 3: 3 (bicubic) or 2 (bilinear); Pillow's other filters are refused by name
//   do_center_crop true | crop_size 224 x 224: n, {"height", "width"} or [h, w]; null = default
//   do_rescale true | rescale_factor 1/255 | do_normalize true
//   image_mean, image_std: CLIP's; a number or 3; null = the default
//   do_convert_rgb (images are RGB already), use_square_size (Kosmos-2: shortest_edge n
//     becomes n x n), image_processor_type / feature_extractor_type (must name CLIP's)
// Other keys are ignored, as transformers keeps them as unused attributes.
inline ImageProcessing image_processing_from_hf_json(const nlohmann::json& json,
                                                     const std::string& where) {
  if (!json.is_object())
    fail(where, ": expected a JSON object at the top level, got ", detail::json_excerpt(json));
  const detail::ImageProcessingReader read(json, where, "");
  for (const char* key : {"image_processor_type", "feature_extractor_type"}) {
    if (const nlohmann::json* value = read.find(key, true)) {
      const std::string name = value->is_string() ? value->get<std::string>() : "";
      if (name != "CLIPImageProcessor" && name != "CLIPImageProcessorFast" &&
          name != "CLIPFeatureExtractor")
        read.fail_key(key, "expected \"CLIPImageProcessor\" (or \"CLIPImageProcessorFast\", "
                      "\"CLIPFeatureExtractor\"), got ", detail::json_excerpt(*value),
                      "; tessera follows CLIP's image processor only");
    }
  }
  ImageProcessing p;
  p.crop_rule = CropRule::transformers;
  p.rescale = RescaleRule::times_factor;

  // resize
  if (!read.read_bool("do_resize", true)) {
    p.resize = ResizeRule::none;
  }
  if (const nlohmann::json* size = read.find("size", true)) {
    if (size->is_object()) {
      // get_size_dict accepts exactly these key sets (and others CLIP's resize refuses)
      const std::size_t n = size->size();
      const bool edge = size->contains("shortest_edge") &&
                        (n == 1 || (n == 2 && size->contains("longest_edge")));
      const bool box = n == 2 && size->contains("height") && size->contains("width");
      if (!edge && !box)
        read.fail_key("size", "expected {\"shortest_edge\": n} or {\"height\": h, \"width\": w}, "
                      "got ", detail::json_excerpt(*size),
                      " (CLIPImageProcessor.resize takes no other form)");
      if (edge) {
        p.shortest_edge = read.side("size.shortest_edge", size->at("shortest_edge"));
        if (const auto longest = size->find("longest_edge"); longest != size->end())
          read.side("size.longest_edge", *longest);  // checked, then ignored like transformers
      } else {
        p.resize_height = read.side("size.height", size->at("height"));
        p.resize_width = read.side("size.width", size->at("width"));
        if (p.resize != ResizeRule::none) p.resize = ResizeRule::exact;
      }
    } else if (size->is_array()) {
      std::tie(p.resize_height, p.resize_width) = read.height_width("size", *size);
      if (p.resize != ResizeRule::none) p.resize = ResizeRule::exact;
    } else if (size->is_number()) {
      p.shortest_edge = read.side("size", *size);
    } else {
      read.fail_key("size", "expected an integer, {\"shortest_edge\": n} or {\"height\": h, "
                    "\"width\": w}, got ", detail::json_excerpt(*size));
    }
  }
  if (read.read_bool("use_square_size", false) && p.resize == ResizeRule::shortest_edge) {
    p.resize = ResizeRule::exact;
    p.resize_height = p.resize_width = p.shortest_edge;
  }
  if (const nlohmann::json* resample = read.find("resample", false)) {
    const bool integer = resample->is_number_integer() || resample->is_number_unsigned();
    const auto code = integer ? resample->get<std::int64_t>() : -1;
    static const char* const pillow_names[] = {"NEAREST", "LANCZOS", "BILINEAR", "BICUBIC", "BOX",
                                               "HAMMING"};
    if (code == 2) {
      p.filter = ResampleFilter::bilinear;
    } else if (code == 3) {
      p.filter = ResampleFilter::bicubic;
    } else if (code >= 0 && code <= 5) {
      read.fail_key("resample", "Pillow's ", pillow_names[code], " (", code,
                    ") is not supported; tessera resamples with BICUBIC (3) or BILINEAR (2)");
    } else {
      read.fail_key("resample", "expected a Pillow filter code, 3 (BICUBIC) or 2 (BILINEAR), got ",
                    detail::json_excerpt(*resample));
    }
  }

  // crop
  p.crop = read.read_bool("do_center_crop", true);
  if (const nlohmann::json* crop = read.find("crop_size", true)) {
    if (crop->is_object()) {
      if (crop->size() != 2 || !crop->contains("height") || !crop->contains("width"))
        read.fail_key("crop_size", "expected {\"height\": h, \"width\": w}, got ",
                      detail::json_excerpt(*crop));
      p.crop_height = read.side("crop_size.height", crop->at("height"));
      p.crop_width = read.side("crop_size.width", crop->at("width"));
    } else {
      std::tie(p.crop_height, p.crop_width) = read.height_width("crop_size", *crop);
    }
  }

  // rescale, normalize
  if (!read.read_bool("do_rescale", true)) p.rescale = RescaleRule::none;
  if (const nlohmann::json* factor = read.find("rescale_factor", false)) {
    if (!factor->is_number() || !std::isfinite(factor->get<double>()) ||
        factor->get<double>() <= 0.0)
      read.fail_key("rescale_factor", "expected a positive number, got ",
                    detail::json_excerpt(*factor));
    p.rescale_factor = factor->get<double>();
  }
  p.normalize = read.read_bool("do_normalize", true);
  if (const nlohmann::json* mean = read.find("image_mean", true))
    p.mean = read.channels("image_mean", *mean);
  if (const nlohmann::json* std = read.find("image_std", true))
    p.std = read.channels("image_std", *std);
  read.read_bool("do_convert_rgb", true);  // checked; tessera's images are RGB already
  return p;
}

// transformers' CLIPImageProcessor from a preprocessor_config.json file.
inline ImageProcessing image_processing_from_hf(const std::filesystem::path& preprocessor_config) {
  return image_processing_from_hf_json(detail::read_processing_json(preprocessor_config),
                                       preprocessor_config.string());
}

// open_clip's inference transform (image_transform(is_train=False)) from the parsed
// preprocess_cfg object; `where` names it in errors. Keys and their defaults (PreprocessCfg):
//   size 224 (an integer or [h, w]): replaced by `model_image_size` when given, as open_clip's
//     factory replaces it by the vision tower's image_size
//   mode "RGB" (the only one) | mean, std: CLIP's; a number or 3
//   interpolation "bicubic": "bicubic", "bilinear" or "random" (bicubic at inference)
//   resize_mode "shortest": "shortest", "longest" or "squash" | fill_color 0 (0..255)
// A null value takes the default and other keys are ignored, as merge_preprocess_dict does.
inline ImageProcessing image_processing_from_open_clip(
    const nlohmann::json& preprocess_cfg, const std::string& where,
    std::optional<std::pair<Index, Index>> model_image_size = std::nullopt) {  // (height, width)
  if (!preprocess_cfg.is_object())
    fail(where, ": key \"preprocess_cfg\": expected an object, got ",
         detail::json_excerpt(preprocess_cfg));
  const detail::ImageProcessingReader read(preprocess_cfg, where, "preprocess_cfg.");
  const auto string_choice = [&](const char* key, std::initializer_list<const char*> choices,
                                 const char* fallback) -> std::string {
    const nlohmann::json* value = read.find(key, true);
    if (!value) return fallback;
    if (value->is_string())
      for (const char* choice : choices)
        if (value->get<std::string>() == choice) return choice;
    std::string names;
    for (const char* choice : choices) names += (names.empty() ? "\"" : ", \"") + std::string(choice) + "\"";
    read.fail_key(key, "expected one of ", names, ", got ", detail::json_excerpt(*value));
  };
  string_choice("mode", {"RGB"}, "RGB");
  const std::string interpolation =
      string_choice("interpolation", {"bicubic", "bilinear", "random"}, "bicubic");
  const std::string resize_mode =
      string_choice("resize_mode", {"shortest", "longest", "squash"}, "shortest");
  std::pair<Index, Index> size{224, 224};
  if (const nlohmann::json* value = read.find("size", true)) size = read.height_width("size", *value);
  if (model_image_size) size = *model_image_size;
  check(size.first >= 1 && size.first <= ImageProcessingLimits::max_side && size.second >= 1 &&
            size.second <= ImageProcessingLimits::max_side,
        where, ": the image size ", size.first, " x ", size.second, " is not in 1..",
        ImageProcessingLimits::max_side, " (ImageProcessingLimits::max_side) per side");
  std::uint8_t fill = 0;
  if (const nlohmann::json* value = read.find("fill_color", true)) {
    const bool integer = value->is_number_integer() || value->is_number_unsigned();
    if (!integer || value->get<double>() < 0 || value->get<double>() > 255)
      read.fail_key("fill_color", "expected an integer in 0..255, got ", detail::json_excerpt(*value));
    fill = static_cast<std::uint8_t>(value->get<int>());
  }

  ImageProcessing p;
  p.filter = interpolation == "bilinear" ? ResampleFilter::bilinear : ResampleFilter::bicubic;
  p.crop_rule = CropRule::torchvision;
  p.crop_height = size.first;
  p.crop_width = size.second;
  p.resize_height = size.first;
  p.resize_width = size.second;
  if (resize_mode == "shortest") {
    if (size.first == size.second) {
      p.resize = ResizeRule::shortest_edge;  // torchvision Resize(size)
      p.shortest_edge = size.first;
    } else {
      p.resize = ResizeRule::fit_shortest;   // ResizeKeepRatio(size): its default, bicubic
      p.filter = ResampleFilter::bicubic;
    }
  } else if (resize_mode == "longest") {
    p.resize = ResizeRule::fit_longest;      // + CenterCropOrPad(size, fill_color)
    p.crop_fill = fill;
  } else {
    p.resize = ResizeRule::exact;            // squash: Resize((h, w)), no crop
    p.crop = false;
  }
  p.rescale = RescaleRule::to_tensor;
  if (const nlohmann::json* mean = read.find("mean", true)) p.mean = read.channels("mean", *mean);
  if (const nlohmann::json* std = read.find("std", true)) p.std = read.channels("std", *std);
  return p;
}

// open_clip's inference transform from an open_clip_config.json file: its "preprocess_cfg"
// (absent = all defaults) with the size of "model_cfg"."vision_cfg"."image_size" (absent =
// 224, CLIPVisionCfg's default), as open_clip's create_model sets it.
inline ImageProcessing image_processing_from_open_clip_config(const std::filesystem::path& file) {
  const nlohmann::json json = detail::read_processing_json(file);
  const std::string where = file.string();
  std::pair<Index, Index> image_size{224, 224};
  if (const auto model = json.find("model_cfg"); model != json.end()) {
    if (!model->is_object())
      fail(where, ": key \"model_cfg\": expected an object, got ", detail::json_excerpt(*model));
    if (const auto vision = model->find("vision_cfg"); vision != model->end()) {
      if (!vision->is_object())
        fail(where, ": key \"model_cfg.vision_cfg\": expected an object, got ",
             detail::json_excerpt(*vision));
      const detail::ImageProcessingReader read(*vision, where, "model_cfg.vision_cfg.");
      if (const nlohmann::json* value = read.find("image_size", false))
        image_size = read.height_width("image_size", *value);
    }
  }
  const auto cfg = json.find("preprocess_cfg");
  return image_processing_from_open_clip(
      cfg == json.end() || cfg->is_null() ? nlohmann::json::object() : *cfg, where, image_size);
}

}  // namespace tessera
