// The image front end (SPEC 5.2): decoding (io/image.hpp) and the resize / crop / normalize
// pipeline (tokenize/image.hpp), against Pillow 9.4 + torchvision 0.14 fixtures written by
// tests/reference/make_image_fixtures.py (tests/data/image/manifest.json lists the cases).
//
// Tolerances, stated once (in 8-bit levels):
//   lossless files (PNG, BMP, PPM/PGM) decoded           0 (bit-exact)
//   resize + crop of Pillow's decoded pixels             0 (bit-exact)
//   JPEG decoded vs Pillow's libjpeg-turbo               kJpegDecodeLevels
//   JPEG file -> resize + crop vs Pillow                 kJpegPipelineLevels
//   normalization vs torchvision float32                 0 for float, 1e-6 for double
//   ImageProcessing (HF CLIPImageProcessor, open_clip)   0: bytes after resize + crop, and
//     vs tests/reference/make_image_processor_fixtures   the float32 tensors (kProcessorFloat)
// The JPEG tolerances are 0 when tessera decodes JPEG with libjpeg-turbo (TESSERA_HAS_LIBJPEG),
// set up as Pillow sets it up, and 3 when stb_image decodes it. With stb_image, one column of
// 4:2:2 JPEGs is also excepted: stb_image 2.27's horizontal chroma upsampler
// (stbi__resample_row_h_2) weights the next-to-last output pair's left pixel as
// 3*in[w-2] + in[w-1] where libjpeg uses 3*in[w-1] + in[w-2], so output column 2*(w-1)
// (w = chroma width) can be tens of levels off. Those tests report that column separately and
// check the rest of the pipeline with Pillow's values put back into it.

#include <tessera/core/parallel.hpp>
#include <tessera/io/image.hpp>
#include <tessera/tokenize/image.hpp>
#include <tessera/tokenize/image_file.hpp>
#include <tessera/tokenize/image_processor.hpp>

#include "test_util.hpp"

#include <gmock/gmock.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <set>

namespace tessera {
namespace test_image {

using ::testing::HasSubstr;
using test::data_dir;
using test::Fixture;

#if TESSERA_HAS_LIBJPEG
constexpr const char* kJpegDecoder = "libjpeg-turbo";
constexpr int kJpegDecodeLevels = 0;
constexpr int kJpegPipelineLevels = 0;
#else
constexpr const char* kJpegDecoder = "stb_image";
constexpr int kJpegDecodeLevels = 3;
constexpr int kJpegPipelineLevels = 3;
#endif

std::filesystem::path image_dir() { return data_dir() / "image"; }
std::filesystem::path source_path(const std::string& name) {
  return image_dir() / "sources" / name;
}

struct Case {
  std::string name, source, format, jpeg_sampling;
  Index size = 0;
  bool has_resized = false, has_normalized = false;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> all = [] {
    std::ifstream in(image_dir() / "manifest.json");
    const auto manifest = nlohmann::json::parse(in);
    std::vector<Case> out;
    for (const auto& c : manifest.at("cases"))
      out.push_back({c.at("case"), c.at("source"), c.at("format"), c.at("jpeg_sampling"),
                     c.at("size").get<Index>(),
                     c.at("has_resized").get<bool>(), c.at("has_normalized").get<bool>()});
    return out;
  }();
  return all;
}

// A U8 [H, W, 3] fixture tensor as an Image.
Image fixture_image(const Fixture& fixture, const std::string& name) {
  const auto& info = fixture.file.info(name);
  EXPECT_EQ(info.rank(), 3u);
  const auto values = fixture.file.read<std::uint8_t>(name);
  Image out(static_cast<Index>(info.shape[1]), static_cast<Index>(info.shape[0]));
  std::copy(values.begin(), values.end(), out.rgb.begin());
  return out;
}

Image pillow_decoded(const std::string& source) {
  return fixture_image(Fixture(std::filesystem::path("image") / "decoded" /
                               (source + ".safetensors")),
                       "decoded");
}

#if !TESSERA_HAS_LIBJPEG
// The column stb_image's 4:2:2 upsampler gets wrong (see the top), or -1.
Index stb_h2v1_column(const Case& c, Index width) {
  return c.jpeg_sampling == "4:2:2" && width > 2 ? 2 * ((width + 1) / 2 - 1) : -1;
}

// `image` with column x taken from `from`.
Image with_column(Image image, const Image& from, Index x) {
  for (Index y = 0; y < image.height; ++y)
    for (int ch = 0; ch < 3; ++ch) image.pixel(y, x)[ch] = from.pixel(y, x)[ch];
  return image;
}
#endif

int max_difference(const Image& a, const Image& b) {
  int largest = 0;
  for (std::size_t i = 0; i < a.rgb.size(); ++i)
    largest = std::max(largest, std::abs(int{a.rgb[i]} - int{b.rgb[i]}));
  return largest;
}

// Passes when the images have the same size and differ by at most `levels` everywhere; a
// failure lists the first mismatches and the largest difference.
::testing::AssertionResult images_close(const Image& actual, const Image& expected, int levels) {
  if (actual.width != expected.width || actual.height != expected.height)
    return ::testing::AssertionFailure() << "size " << actual.width << " x " << actual.height
                                         << " != expected " << expected.width << " x "
                                         << expected.height;
  std::ostringstream report;
  int mismatches = 0;
  for (Index y = 0; y < actual.height; ++y)
    for (Index x = 0; x < actual.width; ++x)
      for (int c = 0; c < 3; ++c) {
        const int a = actual.pixel(y, x)[c], e = expected.pixel(y, x)[c];
        if (std::abs(a - e) > levels) {
          if (mismatches < 5)
            report << "\n  at (y " << y << ", x " << x << ", c " << c << "): " << a << " vs " << e;
          ++mismatches;
        }
      }
  if (mismatches == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << mismatches << " values differ by more than " << levels
                                       << ", largest difference "
                                       << max_difference(actual, expected) << report.str();
}

// ---- decoding ------------------------------------------------------------------------------

TEST(ImageDecode, MatchesPillow) {
  std::set<std::string> seen;
  int jpeg_largest = 0;
  for (const Case& c : cases()) {
    if (!seen.insert(c.source).second) continue;
    SCOPED_TRACE(c.source);
    Image decoded = decode_image(source_path(c.source));
    const Image expected = pillow_decoded(c.source);
    const bool jpeg = c.format == "jpeg";
    ASSERT_EQ(decoded.width, expected.width);
    ASSERT_EQ(decoded.height, expected.height);
    if (jpeg) {
#if !TESSERA_HAS_LIBJPEG
      const Index bad = stb_h2v1_column(c, decoded.width);
      if (bad >= 0) {
        const int d = max_difference(decoded, expected);
        decoded = with_column(decoded, expected, bad);
        std::printf("  %-20s column %d of this 4:2:2 JPEG: max %d levels (stb_image's "
                    "upsampler)\n", c.source.c_str(), static_cast<int>(bad), d);
      }
#endif
      const int d = max_difference(decoded, expected);
      jpeg_largest = std::max(jpeg_largest, d);
      std::printf("  %-20s %s vs Pillow: max %d levels\n", c.source.c_str(), kJpegDecoder, d);
    }
    EXPECT_TRUE(images_close(decoded, expected, jpeg ? kJpegDecodeLevels : 0));
  }
  EXPECT_GE(seen.size(), 25u);
  std::printf("  JPEG decode (%s): largest difference %d levels (tolerance %d)\n", kJpegDecoder,
              jpeg_largest, kJpegDecodeLevels);
}

TEST(ImageDecode, FromMemoryEqualsFromFile) {
  const auto path = source_path("chelsea.png");
  std::ifstream in(path, std::ios::binary);
  const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(in)),
                                        std::istreambuf_iterator<char>());
  EXPECT_EQ(decode_image_memory(bytes, "chelsea"), decode_image(path));
}

// ---- resize and crop on Pillow's decoded pixels (independent of the JPEG decoder) --------

TEST(ImageResize, BitExactAgainstPillow) {
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    const Fixture expected(std::filesystem::path("image") / "expected" /
                           (c.name + ".safetensors"));
    const Image decoded = pillow_decoded(c.source);
    const Image resized = resize_shorter_side(decoded, c.size);
    if (c.has_resized) {
      EXPECT_TRUE(images_close(resized, fixture_image(expected, "resized"), 0));
    }
    const Image cropped = center_crop(resized, c.size);
    EXPECT_TRUE(images_close(cropped, fixture_image(expected, "cropped"), 0));
    EXPECT_EQ(preprocess_image_u8(decoded, c.size), cropped);
  }
}

TEST(ImageResize, ShorterSideRule) {
  // torchvision: shorter side = size, longer = int(size * long / short)
  EXPECT_EQ(shorter_side_size(97, 61, 32), (std::pair<Index, Index>{50, 32}));
  EXPECT_EQ(shorter_side_size(61, 97, 32), (std::pair<Index, Index>{32, 50}));
  EXPECT_EQ(shorter_side_size(640, 480, 224), (std::pair<Index, Index>{298, 224}));
  EXPECT_EQ(shorter_side_size(224, 224, 224), (std::pair<Index, Index>{224, 224}));
  EXPECT_EQ(shorter_side_size(3, 1000, 224), (std::pair<Index, Index>{224, 74666}));
  EXPECT_THROW(shorter_side_size(10, 10, 0), Error);
}

TEST(ImageResize, SameSizeIsACopy) {
  const Image image = pillow_decoded("noise_64.png");
  EXPECT_EQ(resize_bicubic(image, 64, 64), image);
}

TEST(ImageResize, OneOrTwoThreadsGiveTheSameBytes) {
  const Image image = pillow_decoded("lines.png");
  Image one, two;
  {
    ScopedThreads threads(1);
    one = resize_bicubic(image, 301, 97);
  }
  {
    ScopedThreads threads(2);
    two = resize_bicubic(image, 301, 97);
  }
  EXPECT_EQ(one, two);
}

// A deterministic pattern with detail in both directions (so every tap matters).
Image pattern(Index width, Index height) {
  Image image(width, height);
  for (Index y = 0; y < height; ++y)
    for (Index x = 0; x < width; ++x)
      for (Index c = 0; c < 3; ++c)
        image.pixel(y, x)[c] = static_cast<std::uint8_t>((x * 37 + y * 91 + c * 53 + x * y) % 251);
  return image;
}

Image crop_of(const Image& image, Index left, Index top, Index width, Index height) {
  Image out(width, height);
  for (Index y = 0; y < height; ++y)
    std::memcpy(out.pixel(y, 0), image.pixel(top + y, left), static_cast<std::size_t>(3 * width));
  return out;
}

TEST(ImageResize, AWindowEqualsTheSameWindowOfTheWholeResize) {
  // Up, down, one axis unchanged, both unchanged; windows at the edges and inside.
  const Image image = pattern(23, 17);
  struct Case {
    Index width, height, left, top, crop_width, crop_height;
  };
  for (const Case& c : {Case{50, 40, 0, 0, 50, 40}, Case{50, 40, 13, 7, 20, 30},
                        Case{9, 6, 2, 1, 5, 5}, Case{9, 40, 0, 39, 9, 1}, Case{23, 40, 5, 3, 10, 30},
                        Case{50, 17, 49, 0, 1, 17}, Case{23, 17, 3, 4, 10, 10},
                        Case{7, 70, 3, 33, 4, 4}}) {
    SCOPED_TRACE(::testing::Message() << c.width << "x" << c.height << " window " << c.crop_width
                                      << "x" << c.crop_height << " at " << c.left << "," << c.top);
    const Image whole = resize_bicubic(image, c.width, c.height);
    EXPECT_EQ(resize_bicubic_window(image, c.width, c.height, c.left, c.top, c.crop_width,
                                    c.crop_height),
              crop_of(whole, c.left, c.top, c.crop_width, c.crop_height));
  }
  EXPECT_THROW(resize_bicubic_window(image, 10, 10, 5, 0, 6, 10), Error);
}

TEST(ImagePipeline, ThinImagesCostTheirCropNotTheirResize) {
  // Moderately thin: the crop-only pipeline equals resize-then-crop.
  for (const auto& [w, h] : {std::pair<Index, Index>{1, 500}, {700, 3}, {2, 333}}) {
    const Image image = pattern(w, h);
    EXPECT_EQ(preprocess_image_u8(image, 32), center_crop(resize_shorter_side(image, 32), 32))
        << w << "x" << h;
  }
  // 1 x 1000000 pixels (3 MB) to a shorter side of 224 would be 224 x 224000000 pixels
  // (150 GB) resized whole; the pipeline resizes only the 224 x 224 it keeps.
  const Image thin = pattern(1, 1'000'000);
  const Image out = preprocess_image_u8(thin, 224);
  EXPECT_EQ(out.width, 224);
  EXPECT_EQ(out.height, 224);
  ImageConfig config;
  config.size = 224;
  EXPECT_EQ(preprocess_image<float>(pattern(1'000'000, 1), config).dimension(2), 224);
}

TEST(ImageCrop, RoundsHalfToEvenLikeTorchvision) {
  // (H - S) / 2 = 6.5 -> 6, 7.5 -> 8, 1.5 -> 2 (Python's round); whole values unchanged
  Image tall(1, 47);
  for (Index y = 0; y < 47; ++y) tall.pixel(y, 0)[0] = static_cast<std::uint8_t>(y);
  EXPECT_EQ(center_crop(tall, 1).pixel(0, 0)[0], 23);  // 46 / 2 = 23
  Image wide45(45, 30);
  for (Index x = 0; x < 45; ++x) wide45.pixel(0, x)[1] = static_cast<std::uint8_t>(x);
  // 45 - 32 = 13 -> 6.5 -> 6 ; 35 - 32 = 3 -> 1.5 -> 2 ; 45 - 30 = 15 -> 7.5 -> 8
  EXPECT_EQ(detail::round_half_even_half(13), 6);
  EXPECT_EQ(detail::round_half_even_half(3), 2);
  EXPECT_EQ(detail::round_half_even_half(15), 8);
  EXPECT_EQ(detail::round_half_even_half(1), 0);
  EXPECT_EQ(detail::round_half_even_half(0), 0);
  EXPECT_EQ(center_crop(wide45, 30).pixel(0, 0)[1], 8);
}

TEST(ImageCrop, PadsASmallerImageWithZerosLikeTorchvision) {
  // torchvision pads (S - W) // 2 on the left/top and the rest on the right/bottom
  Image image(2, 3);
  for (std::size_t i = 0; i < image.rgb.size(); ++i) image.rgb[i] = static_cast<std::uint8_t>(i + 1);
  const Image out = center_crop(image, 5);
  ASSERT_EQ(out.width, 5);
  for (Index y = 0; y < 5; ++y)
    for (Index x = 0; x < 5; ++x) {
      const bool inside = y >= 1 && y < 4 && x >= 1 && x < 3;
      for (int c = 0; c < 3; ++c)
        EXPECT_EQ(out.pixel(y, x)[c], inside ? image.pixel(y - 1, x - 1)[c] : 0)
            << "y " << y << " x " << x;
    }
}

// ---- the whole pipeline from the file ------------------------------------------------------

TEST(ImagePipeline, FromFilesMatchesPillowAndTorchvision) {
  int jpeg_largest = 0;
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    const Fixture expected(std::filesystem::path("image") / "expected" /
                           (c.name + ".safetensors"));
    Image decoded = decode_image(source_path(c.source));
#if !TESSERA_HAS_LIBJPEG
    const Index bad = stb_h2v1_column(c, decoded.width);
    if (bad >= 0) {
      const int d = max_difference(preprocess_image_u8(decoded, c.size),
                                   fixture_image(expected, "cropped"));
      std::printf("  %-22s as decoded by stb (4:2:2 column %d off): max %d levels\n",
                  c.name.c_str(), static_cast<int>(bad), d);
      decoded = with_column(decoded, pillow_decoded(c.source), bad);
    }
#endif
    const Image cropped = preprocess_image_u8(decoded, c.size);
    const bool jpeg = c.format == "jpeg";
    const Image reference = fixture_image(expected, "cropped");
    EXPECT_TRUE(images_close(cropped, reference, jpeg ? kJpegPipelineLevels : 0));
    if (jpeg && cropped.width == reference.width) {
      const int d = max_difference(cropped, reference);
      jpeg_largest = std::max(jpeg_largest, d);
      std::printf("  %-22s JPEG file -> crop vs Pillow: max %d levels\n", c.name.c_str(), d);
    }
  }
  std::printf("  JPEG pipeline (%s): largest difference %d levels (tolerance %d)\n",
              kJpegDecoder, jpeg_largest, kJpegPipelineLevels);
}

TEST(ImagePipeline, NormalizationMatchesTorchvision) {
  int checked = 0;
  for (const Case& c : cases()) {
    if (!c.has_normalized) continue;
    SCOPED_TRACE(c.name);
    ++checked;
    const Fixture expected(std::filesystem::path("image") / "expected" /
                           (c.name + ".safetensors"));
    const Matrix<float> reference = expected.matrix<float>("normalized");  // [3, S*S]
    ImageConfig config;
    config.size = c.size;
    const Tensor3<float> f = preprocess_image<float>(pillow_decoded(c.source), config);
    const Tensor3<double> d = preprocess_image<double>(pillow_decoded(c.source), config);
    ASSERT_EQ(f.dimension(0), 3);
    ASSERT_EQ(f.dimension(1), c.size);
    ASSERT_EQ(f.dimension(2), c.size);
    const Eigen::Map<const Matrix<float>> ff(f.data(), 3, c.size * c.size);
    const Eigen::Map<const Matrix<double>> dd(d.data(), 3, c.size * c.size);
    EXPECT_TRUE(test::all_close(ff, reference, 0, 0));  // float: torchvision's bits
    EXPECT_TRUE(test::all_close(dd, reference.cast<double>(), 1e-6, 0));
    // and the one-call path from the file
    const Tensor3<float> from_file = preprocess_image<float>(source_path(c.source), config);
    const Eigen::Map<const Matrix<float>> fp(from_file.data(), 3, c.size * c.size);
    EXPECT_TRUE(test::all_close(fp, reference, 0, 0));
  }
  EXPECT_GE(checked, 2);
}

TEST(ImagePipeline, ConfigErrors) {
  const Image image = pillow_decoded("noise_64.png");
  ImageConfig config;
  config.channels = 1;
  EXPECT_THAT([&] { preprocess_image(image, config); },
              ::testing::ThrowsMessage<Error>(HasSubstr("image.channels = 1")));
  config = ImageConfig{};
  config.std = {1.0, 0.0, 1.0};
  EXPECT_THAT([&] { preprocess_image(image, config); },
              ::testing::ThrowsMessage<Error>(HasSubstr("std nonzero")));
  EXPECT_THAT([&] { resize_shorter_side(Image{}, 8); },
              ::testing::ThrowsMessage<Error>(HasSubstr("the image is empty")));
}

// ---- errors, one by one --------------------------------------------------------------------

std::vector<std::uint8_t> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::string decode_error(const std::vector<std::uint8_t>& bytes, const std::string& name,
                         const ImageLimits& limits = {}) {
  try {
    decode_image_memory(bytes, name, limits);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

void put_be32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<std::uint8_t>(v >> s));
}

// A PNG signature and an IHDR chunk (CRCs are not checked by stb_image; written as 0), and
// no image data at all: decoding it would fail, so an error about the size proves the size
// was checked from the header.
std::vector<std::uint8_t> png_header_only(std::uint32_t width, std::uint32_t height) {
  std::vector<std::uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  put_be32(out, 13);
  for (char c : std::string("IHDR")) out.push_back(static_cast<std::uint8_t>(c));
  put_be32(out, width);
  put_be32(out, height);
  for (std::uint8_t b : {8, 2, 0, 0, 0}) out.push_back(b);  // 8-bit RGB
  put_be32(out, 0);
  return out;
}

// ---- ImageProcessing: transformers' CLIPImageProcessor and open_clip's transform ----------
// Fixtures: tests/data/image/processor/ (make_image_processor_fixtures.py). Both references
// compute in float32 with the operations tessera repeats in the same order, so the tensors are
// compared bit for bit.
constexpr double kProcessorFloat = 0.0;

std::filesystem::path processor_dir() { return image_dir() / "processor"; }

ImageProcessing processing_of(const std::string& kind, const std::string& name) {
  const auto path = processor_dir() / (name + ".json");
  return kind == "hf" ? image_processing_from_hf(path)
                      : image_processing_from_open_clip_config(path);
}

TEST(ImageProcessor, MatchesTransformersAndOpenClip) {
  std::ifstream in(processor_dir() / "manifest.json");
  const auto manifest = nlohmann::json::parse(in);
  const Fixture sources(std::filesystem::path("image") / "processor" / "sources.safetensors");
  int compared = 0;
  for (const auto& config : manifest.at("configs")) {
    const std::string name = config.at("name"), kind = config.at("kind");
    const ImageProcessing p = processing_of(kind, name);
    const Fixture expected(std::filesystem::path("image") / "processor" / (name + ".safetensors"));
    for (const auto& source : manifest.at("sources")) {
      const std::string s = source;
      SCOPED_TRACE(name + " / " + s);
      const Image image = fixture_image(sources, s);
      const Image u8 = resize_and_crop(image, p);
      EXPECT_TRUE(images_close(u8, fixture_image(expected, s + ".u8"), 0));
      const Tensor3<float> x = preprocess_image(image, p);
      const auto& info = expected.file.info(s + ".pixels");
      ASSERT_EQ(info.rank(), 3u);
      ASSERT_EQ(x.dimension(0), 3);
      ASSERT_EQ(x.dimension(1), static_cast<Index>(info.shape[1]));
      ASSERT_EQ(x.dimension(2), static_cast<Index>(info.shape[2]));
      const auto want = expected.file.read<float>(s + ".pixels");
      double largest = 0;
      for (std::size_t i = 0; i < want.size(); ++i)
        largest = std::max(largest, std::abs(double{x.data()[i]} - double{want[i]}));
      EXPECT_LE(largest, kProcessorFloat);
      ++compared;
    }
  }
  EXPECT_EQ(compared, 15 * 6);
}

TEST(ImageProcessor, ParsesWhatEachConfigSays) {
  const ImageProcessing legacy = processing_of("hf", "hf_legacy_bicubic");
  EXPECT_EQ(legacy.resize, ResizeRule::shortest_edge);
  EXPECT_EQ(legacy.shortest_edge, 28);
  EXPECT_EQ(legacy.crop_height, 24);
  EXPECT_EQ(legacy.crop_width, 24);
  EXPECT_EQ(legacy.filter, ResampleFilter::bicubic);
  EXPECT_EQ(legacy.crop_rule, CropRule::transformers);
  EXPECT_EQ(legacy.rescale, RescaleRule::times_factor);
  const ImageProcessing bilinear = processing_of("hf", "hf_current_bilinear");
  EXPECT_EQ(bilinear.filter, ResampleFilter::bilinear);
  EXPECT_EQ(bilinear.rescale_factor, 0.00392156862745098);
  const ImageProcessing exact = processing_of("hf", "hf_exact_no_crop");
  EXPECT_EQ(exact.resize, ResizeRule::exact);
  EXPECT_FALSE(exact.crop);
  EXPECT_EQ(exact.mean, (std::vector<double>{0.5, 0.5, 0.5}));
  const ImageProcessing none = processing_of("hf", "hf_no_resize_no_rescale");
  EXPECT_EQ(none.resize, ResizeRule::none);
  EXPECT_EQ(none.rescale, RescaleRule::none);
  EXPECT_EQ(none.crop_height, 11);
  EXPECT_EQ(none.crop_width, 9);
  const ImageProcessing squash = processing_of("open_clip", "open_clip_squash");
  EXPECT_EQ(squash.resize, ResizeRule::exact);
  EXPECT_EQ(squash.resize_height, 24);
  EXPECT_EQ(squash.resize_width, 18);
  EXPECT_FALSE(squash.crop);
  const ImageProcessing longest = processing_of("open_clip", "open_clip_longest_fill");
  EXPECT_EQ(longest.resize, ResizeRule::fit_longest);
  EXPECT_EQ(longest.crop_fill, 128);
  EXPECT_EQ(longest.crop_rule, CropRule::torchvision);
  // open_clip's non-square "shortest" resizes bicubic whatever the interpolation says
  const ImageProcessing nonsquare = processing_of("open_clip", "open_clip_shortest_nonsquare");
  EXPECT_EQ(nonsquare.resize, ResizeRule::fit_shortest);
  EXPECT_EQ(nonsquare.filter, ResampleFilter::bicubic);
  // the vision tower's image_size wins over preprocess_cfg.size, as in open_clip's factory
  EXPECT_EQ(processing_of("open_clip", "open_clip_random_interpolation").shortest_edge, 24);
}

TEST(ImageProcessor, DefaultsAreEachLibrarysDefaults) {
  // open_clip's PreprocessCfg() is SPEC 5.2's pipeline at 224
  EXPECT_EQ(image_processing_from_open_clip(nlohmann::json::object(), "cfg"), ImageProcessing{});
  EXPECT_EQ(image_processing_from_config(ImageConfig{}), ImageProcessing{});
  // CLIPImageProcessor(): the same sizes and statistics, transformers' crop and rescale
  ImageProcessing hf;
  hf.crop_rule = CropRule::transformers;
  hf.rescale = RescaleRule::times_factor;
  EXPECT_EQ(image_processing_from_hf_json(nlohmann::json::object(), "p.json"), hf);
  EXPECT_EQ(image_processing_from_hf_json(
                nlohmann::json::parse(R"({"size": null, "crop_size": null, "image_mean": null})"),
                "p.json"),
            hf);
}

TEST(ImageProcessor, SpecPipelineEqualsPreprocessImage) {
  ImageConfig config;
  config.size = 32;
  const ImageProcessing p = image_processing_from_config(config);
  for (const auto& [w, h] : {std::pair<Index, Index>{45, 61}, {83, 37}, {13, 9}, {1, 500}}) {
    const Image image = pattern(w, h);
    const Tensor3<float> a = preprocess_image(image, p);
    const Tensor3<float> b = preprocess_image<float>(image, config);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_TRUE(std::equal(a.data(), a.data() + a.size(), b.data())) << w << "x" << h;
  }
}

TEST(ImageResize, BilinearWindowEqualsTheSameWindowOfTheWholeResize) {
  const Image image = pattern(23, 17);
  for (const auto& [w, h] : {std::pair<Index, Index>{50, 40}, {9, 6}, {23, 40}, {7, 70}}) {
    const Image whole = resize(image, w, h, ResampleFilter::bilinear);
    EXPECT_EQ(resize_window(image, ResampleFilter::bilinear, w, h, 1, 2, w - 2, h - 3),
              crop_of(whole, 1, 2, w - 2, h - 3));
  }
  // bilinear and bicubic differ (the fixtures check each against Pillow)
  EXPECT_NE(resize(image, 9, 6, ResampleFilter::bilinear), resize(image, 9, 6, ResampleFilter::bicubic));
}

TEST(ImageCrop, TransformersFloorsWhereTorchvisionRoundsHalfToEven) {
  // 27 -> 24: 1.5; torchvision rounds to 2, transformers floors to 1
  EXPECT_EQ(center_crop_offset(27, 24, CropRule::torchvision), 2);
  EXPECT_EQ(center_crop_offset(27, 24, CropRule::transformers), 1);
  // 25 -> 24: 0.5; both 0.  29 -> 24: 2.5; both 2
  EXPECT_EQ(center_crop_offset(25, 24, CropRule::torchvision), 0);
  EXPECT_EQ(center_crop_offset(25, 24, CropRule::transformers), 0);
  EXPECT_EQ(center_crop_offset(29, 24, CropRule::torchvision), 2);
  EXPECT_EQ(center_crop_offset(29, 24, CropRule::transformers), 2);
  // smaller than the crop: torchvision pads (27 - 16) // 2 = 5 before, transformers ceil = 6
  EXPECT_EQ(center_crop_offset(16, 27, CropRule::torchvision), -5);
  EXPECT_EQ(center_crop_offset(16, 27, CropRule::transformers), -6);
  EXPECT_EQ(center_crop_offset(16, 26, CropRule::torchvision), -5);
  EXPECT_EQ(center_crop_offset(16, 26, CropRule::transformers), -5);
  // the torchvision rule is center_crop(image, S)'s
  const Image image = pattern(27, 30);
  EXPECT_EQ(center_crop(image, 24, 24, CropRule::torchvision), center_crop(image, 24));
  EXPECT_NE(center_crop(image, 24, 24, CropRule::transformers), center_crop(image, 24));
  // padding takes the fill value
  const Image padded = center_crop(pattern(3, 3), 5, 4, CropRule::torchvision, 77);
  EXPECT_EQ(padded.pixel(0, 0)[0], 77);
  EXPECT_EQ(padded.pixel(1, 0)[2], pattern(3, 3).pixel(0, 0)[2]);
}

TEST(ImageProcessor, OutputSizeIsBounded) {
  ImageProcessing p;
  p.crop = false;
  p.shortest_edge = 8192;
  // 1 x 10000 to a shorter side of 8192: 8192 x 81920000 pixels, refused before allocating
  EXPECT_THAT(test::error_of([&] { resize_and_crop(pattern(1, 10000), p); }),
              HasSubstr("more than ImageProcessingLimits::max_output_pixels = 67108864"));
  p.shortest_edge = 9000;
  EXPECT_THAT(test::error_of([&] { resize_and_crop(pattern(5, 5), p); }),
              HasSubstr("shortest_edge must be in 1..8192"));
  // a fit that rounds a side to 0 pixels (open_clip fails there too)
  ImageProcessing fit;
  fit.resize = ResizeRule::fit_longest;
  EXPECT_THAT(test::error_of([&] { resize_and_crop(pattern(1, 10000), fit); }),
              HasSubstr("a side of 0"));
  // a thin image with a crop costs its crop
  ImageProcessing shortest;
  shortest.shortest_edge = shortest.crop_height = shortest.crop_width = 224;
  EXPECT_EQ(resize_and_crop(pattern(1, 1'000'000), shortest).height, 224);
}

TEST(ImageProcessor, HfConfigErrorsNameTheFileAndKey) {
  test::TempDir dir;
  const auto error = [&](const std::string& text) {
    const auto path = dir / "preprocessor_config.json";
    std::ofstream(path) << text;
    return test::error_of([&] { image_processing_from_hf(path); });
  };
  const std::string file = (dir / "preprocessor_config.json").string();
  EXPECT_THAT(error(R"({"resample": 1})"),
              HasSubstr(file + ": key \"resample\": Pillow's LANCZOS (1) is not supported"));
  EXPECT_THAT(error(R"({"resample": 0})"), HasSubstr("NEAREST (0) is not supported"));
  EXPECT_THAT(error(R"({"resample": 7})"), HasSubstr("key \"resample\": expected a Pillow filter code"));
  EXPECT_THAT(error(R"({"resample": "bicubic"})"), HasSubstr("key \"resample\""));
  EXPECT_THAT(error(R"({"resample": null})"), HasSubstr("key \"resample\""));
  EXPECT_THAT(error(R"({"size": {"longest_edge": 224}})"),
              HasSubstr("key \"size\": expected {\"shortest_edge\": n} or {\"height\": h"));
  EXPECT_THAT(error(R"({"size": {"shortest_edge": 224, "height": 3}})"), HasSubstr("key \"size\""));
  EXPECT_THAT(error(R"({"size": {"max_height": 224, "max_width": 3}})"),
              HasSubstr("key \"size\": expected {\"shortest_edge\": n} or"));
  EXPECT_THAT(error(R"({"size": {"shortest_edge": 0}})"),
              HasSubstr("key \"size.shortest_edge\": expected an integer in 1..8192"));
  EXPECT_THAT(error(R"({"size": 100000})"), HasSubstr("ImageProcessingLimits::max_side"));
  EXPECT_THAT(error(R"({"size": 224.5})"), HasSubstr("key \"size\": expected an integer in 1..8192"));
  EXPECT_THAT(error(R"({"size": "224"})"), HasSubstr("key \"size\": expected an integer,"));
  EXPECT_THAT(error(R"({"crop_size": {"height": 224}})"),
              HasSubstr("key \"crop_size\": expected {\"height\": h, \"width\": w}"));
  EXPECT_THAT(error(R"({"crop_size": [1, 2, 3]})"), HasSubstr("key \"crop_size\""));
  EXPECT_THAT(error(R"({"do_resize": "yes"})"),
              HasSubstr("key \"do_resize\": expected true or false, got \"yes\""));
  EXPECT_THAT(error(R"({"do_center_crop": 1})"), HasSubstr("key \"do_center_crop\""));
  EXPECT_THAT(error(R"({"rescale_factor": -1})"),
              HasSubstr("key \"rescale_factor\": expected a positive number"));
  EXPECT_THAT(error(R"({"image_mean": [0.5, 0.5]})"),
              HasSubstr("key \"image_mean\": expected a number or a list of 3 numbers"));
  EXPECT_THAT(error(R"({"image_std": [0.5, 0, 0.5]})"), HasSubstr("key \"image_std\": value 1 is 0"));
  EXPECT_THAT(error(R"({"image_std": 1e-50})"), HasSubstr("key \"image_std\""));
  EXPECT_THAT(error(R"({"image_processor_type": "ViTImageProcessor"})"),
              HasSubstr("key \"image_processor_type\": expected \"CLIPImageProcessor\""));
  EXPECT_THAT(error(R"([1, 2])"), HasSubstr(file + ": expected a JSON object at the top level"));
  EXPECT_THAT(error(R"({"size": 224,)"), HasSubstr(file + ": not valid JSON"));
  EXPECT_THAT(error(R"({"size": 224, "size": 336})"), HasSubstr("appears twice"));
  EXPECT_THAT(test::error_of([&] { image_processing_from_hf(dir / "missing.json"); }),
              HasSubstr("missing.json"));
  // keys transformers keeps as unused attributes are ignored
  const auto ok = dir / "ok.json";
  std::ofstream(ok) << R"({"processor_class": "CLIPProcessor", "_valid_processor_keys": []})";
  EXPECT_NO_THROW(image_processing_from_hf(ok));
}

TEST(ImageProcessor, OpenClipConfigErrorsNameTheFileAndKey) {
  test::TempDir dir;
  const auto error = [&](const std::string& text) {
    const auto path = dir / "open_clip_config.json";
    std::ofstream(path) << text;
    return test::error_of([&] { image_processing_from_open_clip_config(path); });
  };
  const std::string file = (dir / "open_clip_config.json").string();
  EXPECT_THAT(error(R"({"preprocess_cfg": {"interpolation": "nearest"}})"),
              HasSubstr(file + ": key \"preprocess_cfg.interpolation\": expected one of \"bicubic\", "
                        "\"bilinear\", \"random\", got \"nearest\""));
  EXPECT_THAT(error(R"({"preprocess_cfg": {"resize_mode": "fill"}})"),
              HasSubstr("key \"preprocess_cfg.resize_mode\""));
  EXPECT_THAT(error(R"({"preprocess_cfg": {"mode": "L"}})"), HasSubstr("key \"preprocess_cfg.mode\""));
  EXPECT_THAT(error(R"({"preprocess_cfg": {"fill_color": 300}})"),
              HasSubstr("key \"preprocess_cfg.fill_color\": expected an integer in 0..255"));
  EXPECT_THAT(error(R"({"preprocess_cfg": {"mean": "x"}})"), HasSubstr("key \"preprocess_cfg.mean\""));
  EXPECT_THAT(error(R"({"preprocess_cfg": {"std": [1, 1, 0]}})"),
              HasSubstr("key \"preprocess_cfg.std\": value 2 is 0"));
  EXPECT_THAT(error(R"({"preprocess_cfg": {"size": [1, 2, 3]}})"),
              HasSubstr("key \"preprocess_cfg.size\""));
  EXPECT_THAT(error(R"({"preprocess_cfg": [1]})"), HasSubstr("key \"preprocess_cfg\": expected an object"));
  EXPECT_THAT(error(R"({"model_cfg": {"vision_cfg": {"image_size": "224"}}})"),
              HasSubstr("key \"model_cfg.vision_cfg.image_size\""));
  EXPECT_THAT(error(R"({"model_cfg": {"vision_cfg": {"image_size": 10000}}})"),
              HasSubstr("ImageProcessingLimits::max_side"));
  EXPECT_THAT(error(R"({"model_cfg": 3})"), HasSubstr("key \"model_cfg\": expected an object"));
  // null takes the default; unknown keys are dropped, as merge_preprocess_dict does
  const auto path = dir / "ok.json";
  std::ofstream(path) << R"({"preprocess_cfg": {"mean": null, "other": 1}})";
  EXPECT_EQ(image_processing_from_open_clip_config(path), ImageProcessing{});
}

TEST(ImageErrors, MissingFileAndDirectory) {
  EXPECT_THAT([] { decode_image(image_dir() / "no_such.png"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("no_such.png: no such image file")));
  EXPECT_THAT([] { decode_image(image_dir()); },
              ::testing::ThrowsMessage<Error>(HasSubstr("is a directory")));
  test::TempDir dir;
  std::ofstream(dir / "empty.png").flush();
  EXPECT_THAT([&] { decode_image(dir / "empty.png"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("empty.png: the file is empty")));
}

TEST(ImageErrors, UnsupportedFormats) {
  const std::string gif = "GIF89a\x01\x00\x01\x00";
  EXPECT_THAT(decode_error({gif.begin(), gif.end()}, "anim.gif"),
              HasSubstr("anim.gif: unsupported image format (GIF)"));
  const std::string plain = "P3\n1 1\n255\n0 0 0\n";
  EXPECT_THAT(decode_error({plain.begin(), plain.end()}, "plain.ppm"),
              HasSubstr("plain.ppm: unsupported image format (plain (ASCII) or 1-bit PNM"));
  const std::string text = "hello, world";
  EXPECT_THAT(decode_error({text.begin(), text.end()}, "notes.jpg"),
              HasSubstr("notes.jpg: unsupported image format (unknown signature)"));
  EXPECT_THAT([] { decode_image(source_path("gray16.png")); },
              ::testing::ThrowsMessage<Error>(
                  HasSubstr("gray16.png: 16-bit grayscale PNG is not supported")));
  const std::string ppm16 = "P6 1 1 65535\n\x01\x02\x03\x04\x05\x06";
  EXPECT_THAT(decode_error({ppm16.begin(), ppm16.end()}, "deep.ppm"),
              HasSubstr("deep.ppm: PPM/PGM with maxval 65535 is not supported"));
}

TEST(ImageErrors, TruncatedFiles) {
  struct Cut {
    const char* file;
    double keep;
    const char* message;
  };
  for (const Cut& cut : {Cut{"chelsea.png", 0.5, "cannot decode the PNG data"},
                         Cut{"chelsea.png", 0.0005, "invalid PNG header"},
                         Cut{"chelsea.jpg", 0.01, "invalid JPEG header"},
                         Cut{"chelsea.png", 0.02, "cannot"},
                         Cut{"chelsea.jpg", 0.6, "truncated JPEG data"},
                         Cut{"progressive.jpg", 0.8, "truncated JPEG data"},
                         Cut{"image.bmp", 0.7, "truncated BMP data"},
                         Cut{"image.ppm", 0.9, "truncated PPM/PGM data"}}) {
    SCOPED_TRACE(cut.file);
    auto bytes = read_bytes(source_path(cut.file));
    bytes.resize(static_cast<std::size_t>(static_cast<double>(bytes.size()) * cut.keep));
    const std::string error = decode_error(bytes, cut.file);
    EXPECT_THAT(error, HasSubstr(cut.file));
    EXPECT_THAT(error, HasSubstr(cut.message));
  }
}

#if TESSERA_HAS_LIBJPEG
// The header check (an end-of-image marker after the first scan) passes in both files below
// because a comment segment holds the bytes FF D9; what happens then is libjpeg's source
// running dry. Pillow 9.4 gives the same outcomes (checked when this test was written).
std::vector<std::uint8_t> with_bytes(std::vector<std::uint8_t> bytes, std::size_t at,
                                     std::initializer_list<std::uint8_t> insert) {
  bytes.insert(bytes.begin() + static_cast<std::ptrdiff_t>(at), insert);
  return bytes;
}

std::size_t find_marker(const std::vector<std::uint8_t>& bytes, std::uint8_t marker,
                        std::size_t from) {
  for (std::size_t i = from; i + 1 < bytes.size(); ++i)
    if (bytes[i] == 0xFF && bytes[i + 1] == marker) return i;
  return bytes.size();
}

TEST(ImageErrors, JpegDataEndingBeforeTheLastRowWithLibjpeg) {
  // progressive: a comment "FF D9" before the second scan, the file cut at 80%: libjpeg needs
  // every scan before the first row (Pillow: "image file is truncated")
  const auto progressive = read_bytes(source_path("progressive.jpg"));
  const std::size_t first_scan = find_marker(progressive, 0xDA, 2);
  const std::size_t second_scan = find_marker(progressive, 0xDA, first_scan + 2);
  ASSERT_LT(second_scan, progressive.size());
  auto cut = with_bytes(progressive, second_scan, {0xFF, 0xFE, 0x00, 0x04, 0xFF, 0xD9});
  cut.resize(cut.size() * 8 / 10);
  EXPECT_THAT(decode_error(cut, "cut.jpg"),
              HasSubstr("cut.jpg: truncated JPEG data (the data ends before the last row)"));
  // baseline: the EOI replaced by a comment segment claiming 4094 bytes: every row is there,
  // only the trailing markers are cut, and Pillow returns the image
  auto baseline = read_bytes(source_path("image_420.jpg"));
  ASSERT_EQ(baseline[baseline.size() - 1], 0xD9);
  baseline.resize(baseline.size() - 2);
  for (std::uint8_t b : {0xFF, 0xFE, 0x10, 0x00, 0xFF, 0xD9}) baseline.push_back(b);
  EXPECT_TRUE(images_close(decode_image_memory(baseline, "tail.jpg"),
                           pillow_decoded("image_420.jpg"), 0));
}

TEST(ImageDecode, CorruptJpegScanDataIsDecodedLikePillowWithLibjpeg) {
  // 40 bytes of the entropy-coded data overwritten: libjpeg warns (ignored, as by Pillow) and
  // decodes what it can; Pillow returns the same pixels (max difference 0 when written).
  const auto original = read_bytes(source_path("chelsea.jpg"));
  auto bytes = original;
  const std::size_t scan = find_marker(bytes, 0xDA, 2);
  const std::size_t middle = (scan + bytes.size()) / 2;
  ASSERT_NE(bytes[middle - 1], 0xFF);
  for (std::size_t i = middle; i < middle + 40; ++i) bytes[i] = 0x55;
  const Image decoded = decode_image_memory(bytes, "scribbled.jpg");
  EXPECT_EQ(decoded.width, 210);
  EXPECT_EQ(decoded.height, 140);
  EXPECT_NE(decoded, decode_image_memory(original, "chelsea.jpg"));
}
#endif

TEST(ImageErrors, CorruptData) {
  // PNG: the compressed data overwritten
  auto png = read_bytes(source_path("noise_64.png"));
  for (std::size_t i = 60; i < png.size() - 40; ++i) png[i] = static_cast<std::uint8_t>(i * 7);
  EXPECT_THAT(decode_error(png, "noise.png"), HasSubstr("noise.png: cannot decode the PNG data: "));
  // JPEG: garbage instead of the marker segments after SOI
  auto jpeg = read_bytes(source_path("image_420.jpg"));
  for (std::size_t i = 4; i < 200; ++i) jpeg[i] = static_cast<std::uint8_t>(i * 13);
  EXPECT_THAT(decode_error(jpeg, "broken.jpg"), HasSubstr("broken.jpg: invalid JPEG header"));
  // JPEG: a frame header claiming 12-bit samples
  auto deep = read_bytes(source_path("image_420.jpg"));
  for (std::size_t i = 2; i + 4 < deep.size(); ++i)
    if (deep[i] == 0xFF && deep[i + 1] == 0xC0) {
      deep[i + 4] = 12;
      break;
    }
  EXPECT_THAT(decode_error(deep, "deep.jpg"), HasSubstr("deep.jpg: cannot decode the JPEG data: "));
#if TESSERA_HAS_LIBJPEG
  EXPECT_THAT(decode_error(deep, "deep.jpg"), HasSubstr("Unsupported JPEG data precision 12"));
#endif
  // BMP: a header whose sizes make no sense
  auto bmp = read_bytes(source_path("image.bmp"));
  bmp[14] = 7;  // header size 7
  EXPECT_THAT(decode_error(bmp, "odd.bmp"), HasSubstr("odd.bmp: invalid or unsupported BMP header (DIB header size 7"));
}

TEST(ImageErrors, ZeroPixels) {
  EXPECT_THAT(decode_error(png_header_only(0, 0), "empty.png"),
              HasSubstr("empty.png: the PNG header gives an image of 0 x 0 pixels"));
  EXPECT_THAT(decode_error(png_header_only(5, 0), "flat.png"),
              HasSubstr("flat.png: the PNG header gives an image of 5 x 0 pixels"));
  const std::string pgm = "P5 0 0 255\n";
  EXPECT_THAT(decode_error({pgm.begin(), pgm.end()}, "empty.pgm"),
              HasSubstr("empty.pgm: the PPM/PGM header gives an image of 0 x 0 pixels"));
  auto bmp = read_bytes(source_path("image.bmp"));
  for (std::size_t i = 18; i < 26; ++i) bmp[i] = 0;  // width and height 0
  EXPECT_THAT(decode_error(bmp, "empty.bmp"),
              HasSubstr("empty.bmp: the BMP header gives an image of 0 x 0 pixels"));
}

TEST(ImageErrors, PixelLimitCheckedBeforeDecoding) {
  EXPECT_THAT(decode_error(png_header_only(20000, 20000), "huge.png"),
              HasSubstr("huge.png: the image is 20000 x 20000 = 400000000 pixels, more than "
                        "ImageLimits::max_pixels = 100000000"));
  EXPECT_THAT(decode_error(png_header_only(0xFFFFFFFFu, 0xFFFFFFFFu), "wild.png"),
              HasSubstr("wild.png: the PNG header gives an image of 4294967295 x 4294967295 "
                        "pixels, more than 2^31 per side"));
  // a configurable limit, on a real file
  ImageLimits limits;
  limits.max_pixels = 1000;
  EXPECT_THAT([&] { decode_image(source_path("chelsea.jpg"), limits); },
              ::testing::ThrowsMessage<Error>(HasSubstr("more than ImageLimits::max_pixels = 1000")));
  limits.max_pixels = 210 * 140;
  EXPECT_EQ(decode_image(source_path("chelsea.jpg"), limits).width, 210);
}

TEST(ImageDecode, ReadImageSizeReadsTheHeaderOnly) {
  // The header of a 20000 x 30 PNG with no data: its size, nothing decoded.
  const ImageSize size = read_image_size(png_header_only(20000, 30), "header.png");
  EXPECT_EQ(size.width, 20000);
  EXPECT_EQ(size.height, 30);
  EXPECT_EQ(read_image_size(read_bytes(source_path("chelsea.jpg")), "chelsea.jpg").width, 210);
  ImageLimits limits;
  limits.max_pixels = 1000;
  EXPECT_THAT([&] { read_image_size(png_header_only(100, 100), "big.png", limits); },
              ::testing::ThrowsMessage<Error>(HasSubstr(
                  "big.png: the image is 100 x 100 = 10000 pixels, more than ImageLimits::max_pixels = 1000")));
  EXPECT_THAT([&] { read_image_file("no-such-image.png"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("no-such-image.png: no such image file")));
}

TEST(ImageErrors, ThreadsDecodeAndFailIndependently) {
  // stb_image's failure reason is thread-local in Debian's build: failures and successes on
  // several threads at once each get their own message.
  const auto good = read_bytes(source_path("chelsea.png"));
  auto bad = read_bytes(source_path("noise_64.png"));
  for (std::size_t i = 60; i < bad.size() - 40; ++i) bad[i] = static_cast<std::uint8_t>(i * 7);
  const Image expected = decode_image_memory(good, "good");
  const std::string expected_error = decode_error(bad, "bad");
  int failures = 0;
#pragma omp parallel for reduction(+ : failures) num_threads(4)
  for (int i = 0; i < 64; ++i) {
    if (i % 2 == 0) {
      if (!(decode_image_memory(good, "good") == expected)) ++failures;
    } else {
      if (decode_error(bad, "bad") != expected_error) ++failures;
    }
  }
  EXPECT_EQ(failures, 0);
  // JPEG likewise (with libjpeg: one decompress object per call)
  const auto good_jpeg = read_bytes(source_path("chelsea.jpg"));
  auto bad_jpeg = read_bytes(source_path("image_420.jpg"));
  for (std::size_t i = 2; i + 4 < bad_jpeg.size(); ++i)
    if (bad_jpeg[i] == 0xFF && bad_jpeg[i + 1] == 0xC0) {
      bad_jpeg[i + 4] = 12;  // 12-bit samples
      break;
    }
  const Image expected_jpeg = decode_image_memory(good_jpeg, "good.jpg");
  const std::string expected_jpeg_error = decode_error(bad_jpeg, "bad.jpg");
  EXPECT_THAT(expected_jpeg_error, HasSubstr("bad.jpg: cannot decode the JPEG data: "));
  failures = 0;
#pragma omp parallel for reduction(+ : failures) num_threads(4)
  for (int i = 0; i < 64; ++i) {
    if (i % 2 == 0) {
      if (!(decode_image_memory(good_jpeg, "good.jpg") == expected_jpeg)) ++failures;
    } else {
      if (decode_error(bad_jpeg, "bad.jpg") != expected_jpeg_error) ++failures;
    }
  }
  EXPECT_EQ(failures, 0);
}

}  // namespace
}  // namespace tessera
