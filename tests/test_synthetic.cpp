// The synthetic world of apps/synthetic.hpp (tessera-synth's, not the installed library's): the same seed gives the same
// bytes, the held-out split holds out combinations and not attribute values, captions follow
// the grammar, every file reads back with tessera's own readers (decode_image, read_wav,
// Y4mReader), and the pixels and sounds carry the attributes: shape fill ratios and positions
// in the images, the direction of the video's motion, the pitch, chord and contour of the audio
// (a plain DFT). Option errors last.

#include <gtest/gtest.h>

#if !defined(TESSERA_HAS_STB)
// synthetic.hpp writes PNG images with stb_image_write.
TEST(Synthetic, NeedsStb) {
  GTEST_SKIP() << "tessera was configured without stb: the synthetic world is not built or tested";
}
#else

#include <tessera/io/image.hpp>
#include <tessera/io/wav.hpp>
#include <tessera/io/y4m.hpp>
#include "../apps/synthetic.hpp"

#include "test_util.hpp"

#include <gmock/gmock.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <numbers>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace tessera {
namespace test_synthetic {

using ::testing::HasSubstr;
using test::error_of;
using test::TempDir;

// A small world for the tests that write files: 192 items of 32 x 32 pixels, 4 frames, 0.25 s.
SyntheticOptions small_options() {
  SyntheticOptions options;
  options.image_size = 32;
  options.frames = 4;
  options.samples_per_combination = 1;
  options.audio_seconds = 0.25;
  return options;
}

std::string read_bytes(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  EXPECT_TRUE(in.is_open()) << file;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Every regular file under `dir` by its path relative to dir, with its bytes.
std::map<std::string, std::string> read_tree(const std::filesystem::path& dir) {
  std::map<std::string, std::string> files;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const std::string name = std::filesystem::relative(entry.path(), dir).generic_string();
    files[name] = read_bytes(entry.path());
  }
  return files;
}

std::vector<std::string> read_lines(const std::filesystem::path& file) {
  std::istringstream in(read_bytes(file));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

template <std::size_t N>
Index index_in(const std::array<std::string_view, N>& values, const std::string& value) {
  const auto at = std::find(values.begin(), values.end(), value);
  EXPECT_NE(at, values.end()) << value;
  return static_cast<Index>(at - values.begin());
}

SyntheticCombination combination_of(const SyntheticItem& item) {
  return {index_in(synthetic_colors, item.color), index_in(synthetic_shapes, item.shape),
          index_in(synthetic_motions, item.motion)};
}

// The first item with these attributes (sample 0), made on its own.
SyntheticItem item_with(const SyntheticOptions& options, std::string_view color,
                        std::string_view shape, std::string_view position,
                        std::string_view motion) {
  const auto at = [](const auto& values, std::string_view v) {
    return static_cast<Index>(std::find(values.begin(), values.end(), v) - values.begin());
  };
  const Index index = (((at(synthetic_colors, color) * 3 + at(synthetic_shapes, shape)) * 4 +
                        at(synthetic_positions, position)) * 4 + at(synthetic_motions, motion)) *
                      options.samples_per_combination;
  SyntheticItem item = make_synthetic_item(options, index);
  EXPECT_EQ(item.id, detail::concat(color, "-", shape, "-", position, "-", motion, "-0"));
  return item;
}

// ---- Determinism ------------------------------------------------------------------------------

TEST(Synthetic, SameSeedGivesTheSameBytesAnotherSeedDiffers) {
  const SyntheticOptions options = small_options();
  TempDir a, b, c;
  write_synthetic_world(a.path(), options);
  write_synthetic_world(b.path(), options);
  const auto first = read_tree(a.path()), second = read_tree(b.path());
  ASSERT_EQ(first.size(), 3u * 192 + 3);  // PNG, WAV, Y4M per item, captions and two lists
  for (const auto& [name, bytes] : first) {
    ASSERT_TRUE(second.count(name)) << name;
    EXPECT_TRUE(bytes == second.at(name)) << name << " differs between two runs with one seed";
  }

  SyntheticOptions other = options;
  other.seed = 2;
  write_synthetic_world(c.path(), other);
  const auto third = read_tree(c.path());
  ASSERT_EQ(third.size(), first.size());
  int media = 0, differ = 0;
  for (const auto& [name, bytes] : first) {
    if (name.ends_with(".png") || name.ends_with(".wav") || name.ends_with(".y4m")) {
      ++media;
      differ += third.at(name) != bytes;
    }
  }
  EXPECT_GT(differ, media * 9 / 10) << "only " << differ << " of " << media
                                    << " media files differ between seeds 1 and 2";
}

TEST(Synthetic, EachItemIsComputedOnItsOwn) {
  const SyntheticOptions options = small_options();
  const auto world = make_synthetic_world(options);
  ASSERT_EQ(static_cast<Index>(world.size()), synthetic_item_count(options));
  for (Index i : {Index{191}, Index{77}, Index{0}}) {  // out of order, alone
    const SyntheticItem item = make_synthetic_item(options, i);
    const SyntheticItem& same = world[static_cast<std::size_t>(i)];
    EXPECT_EQ(item.id, same.id);
    EXPECT_EQ(item.split, same.split);
    EXPECT_TRUE(item.image == same.image) << item.id;
    EXPECT_TRUE(item.audio == same.audio) << item.id;
    EXPECT_TRUE(item.video == same.video) << item.id;
  }
}

// ---- The split --------------------------------------------------------------------------------

TEST(Synthetic, HeldOutCombinationsAreDisjointFromTrainingAndEveryPairStaysInTraining) {
  SyntheticOptions options;
  options.samples_per_combination = 2;
  options.audio_seconds = 0.1;
  const auto world = make_synthetic_world(options);
  std::set<std::tuple<Index, Index, Index>> train, heldout;
  std::map<std::tuple<Index, Index, Index>, std::set<std::string>> heldout_positions;
  Index heldout_items = 0;
  for (const auto& item : world) {
    const auto c = combination_of(item);
    ASSERT_TRUE(item.split == "train" || item.split == "heldout") << item.split;
    if (item.split == "train") {
      train.insert({c.color, c.shape, c.motion});
    } else {
      heldout.insert({c.color, c.shape, c.motion});
      heldout_positions[{c.color, c.shape, c.motion}].insert(item.position);
      ++heldout_items;
    }
  }
  EXPECT_EQ(heldout.size(), 8u);
  EXPECT_EQ(train.size(), 40u);
  EXPECT_EQ(heldout_items, 8 * 4 * 2);  // all positions of a held-out triple, every sample
  for (const auto& [c, positions] : heldout_positions) EXPECT_EQ(positions.size(), 4u);
  for (const auto& c : heldout) EXPECT_FALSE(train.count(c)) << "a triple in both splits";
  std::set<std::tuple<Index, Index, Index>> listed;
  for (const auto& c : synthetic_heldout_combinations(options)) {
    listed.insert({c.color, c.shape, c.motion});
  }
  EXPECT_EQ(listed, heldout);

  // Every single value and every pair of values of two attributes appears in training.
  std::set<std::pair<Index, Index>> color_shape, color_motion, shape_motion;
  std::set<Index> colors, shapes, motions;
  for (const auto& [color, shape, motion] : train) {
    colors.insert(color);
    shapes.insert(shape);
    motions.insert(motion);
    color_shape.insert({color, shape});
    color_motion.insert({color, motion});
    shape_motion.insert({shape, motion});
  }
  EXPECT_EQ(colors.size(), 4u);
  EXPECT_EQ(shapes.size(), 3u);
  EXPECT_EQ(motions.size(), 4u);
  EXPECT_EQ(color_shape.size(), 12u);
  EXPECT_EQ(color_motion.size(), 16u);
  EXPECT_EQ(shape_motion.size(), 12u);
}

TEST(Synthetic, HeldOutTriplesShareNoPairForAnySeedAndCount) {
  for (std::uint64_t seed = 0; seed < 50; ++seed) {
    for (Index count : {0, 1, 8, 12}) {
      SyntheticOptions options;
      options.seed = seed;
      options.heldout_combinations = count;
      const auto held = synthetic_heldout_combinations(options);
      ASSERT_EQ(static_cast<Index>(held.size()), count);
      for (std::size_t i = 0; i < held.size(); ++i) {
        for (std::size_t j = i + 1; j < held.size(); ++j) {
          const auto &a = held[i], &b = held[j];
          EXPECT_FALSE(a.color == b.color && a.shape == b.shape) << "seed " << seed;
          EXPECT_FALSE(a.color == b.color && a.motion == b.motion) << "seed " << seed;
          EXPECT_FALSE(a.shape == b.shape && a.motion == b.motion) << "seed " << seed;
        }
      }
    }
  }
  SyntheticOptions one, two;
  two.seed = 2;
  EXPECT_NE(synthetic_heldout_combinations(one), synthetic_heldout_combinations(two));
}

// ---- Captions ---------------------------------------------------------------------------------

TEST(Synthetic, CaptionsFollowTheGrammar) {
  EXPECT_EQ(synthetic_caption("red", "circle", "left", "up"), "a red circle on the left moving up");
  EXPECT_EQ(synthetic_caption("yellow", "triangle", "bottom", "right"),
            "a yellow triangle at the bottom moving right");
  const std::map<std::string, std::string> phrase = {
      {"left", "on the left"}, {"right", "on the right"}, {"top", "at the top"},
      {"bottom", "at the bottom"}};
  SyntheticOptions options = small_options();
  options.audio_seconds = 0.1;
  std::set<std::string> ids;
  for (const auto& item : make_synthetic_world(options)) {
    EXPECT_EQ(item.caption, "a " + item.color + " " + item.shape + " " + phrase.at(item.position) +
                                " moving " + item.motion);
    EXPECT_TRUE(std::all_of(item.caption.begin(), item.caption.end(),
                            [](char c) { return (c >= 'a' && c <= 'z') || c == ' '; }))
        << item.caption;
    EXPECT_TRUE(item.id.starts_with(item.color + "-" + item.shape + "-" + item.position + "-" +
                                    item.motion + "-"))
        << item.id;
    EXPECT_TRUE(ids.insert(item.id).second) << "duplicate id " << item.id;
  }
}

// ---- Files ------------------------------------------------------------------------------------

TEST(Synthetic, FilesReadBackWithTesserasReaders) {
  const SyntheticOptions options = small_options();
  const Index size = options.image_size;
  TempDir dir;
  const auto summary = write_synthetic_world(dir.path(), options);
  EXPECT_EQ(summary.train, 160);
  EXPECT_EQ(summary.heldout, 32);
  const auto world = make_synthetic_world(options);

  // The lists: one JSON object per item, in item order, split by split.
  const auto train_lines = read_lines(dir / "train.jsonl");
  const auto heldout_lines = read_lines(dir / "heldout.jsonl");
  ASSERT_EQ(static_cast<Index>(train_lines.size()), summary.train);
  ASSERT_EQ(static_cast<Index>(heldout_lines.size()), summary.heldout);
  std::vector<std::string> train_captions;
  std::size_t next_train = 0, next_heldout = 0;
  std::set<std::string> expected_files = {"captions.txt", "train.jsonl", "heldout.jsonl"};
  for (const auto& item : world) {
    const bool train = item.split == "train";
    const auto line =
        nlohmann::json::parse(train ? train_lines[next_train++] : heldout_lines[next_heldout++]);
    ASSERT_EQ(line.size(), 9u) << line.dump();
    EXPECT_EQ(line.at("id"), item.id);
    EXPECT_EQ(line.at("caption"), item.caption);
    EXPECT_EQ(line.at("image"), "images/" + item.id + ".png");
    EXPECT_EQ(line.at("audio"), "audio/" + item.id + ".wav");
    EXPECT_EQ(line.at("video"), "video/" + item.id + ".y4m");
    EXPECT_EQ(line.at("color"), item.color);
    EXPECT_EQ(line.at("shape"), item.shape);
    EXPECT_EQ(line.at("position"), item.position);
    EXPECT_EQ(line.at("motion"), item.motion);
    if (train) train_captions.push_back(item.caption);
    for (const char* key : {"image", "audio", "video"}) {
      expected_files.insert(line.at(key).get<std::string>());
    }

    // The image: the PNG decodes to exactly the item's pixels.
    const Image image = decode_image(dir / line.at("image").get<std::string>());
    EXPECT_EQ(image.width, size);
    EXPECT_EQ(image.height, size);
    EXPECT_TRUE(image == item.image) << item.id;

    // The audio: 16-bit mono at the sample rate, exactly the item's samples.
    const auto wav = read_wav<float>(dir / line.at("audio").get<std::string>());
    EXPECT_EQ(wav.sample_rate, options.sample_rate);
    EXPECT_EQ(wav.format.bits_per_sample, 16);
    ASSERT_EQ(wav.samples.rows(), 1);
    ASSERT_EQ(wav.samples.cols(), 4000);
    EXPECT_TRUE(wav.samples == item.audio) << item.id;

    // The video: T frames of S x S; every 2 x 2 block of one color (one chroma sample of
    // 4:2:0) reads back exactly, blocks on a shape's edge blend its color with the background.
    Y4mReader reader(dir / line.at("video").get<std::string>());
    EXPECT_EQ(reader.header().width, size);
    EXPECT_EQ(reader.header().height, size);
    EXPECT_EQ(reader.header().rate_num, options.frame_rate);
    EXPECT_EQ(reader.header().rate_den, 1);
    EXPECT_EQ(reader.header().colorspace, Y4mColorspace::c420jpeg);
    for (std::size_t t = 0; t < item.video.size(); ++t) {
      const auto frame = reader.read_frame();
      ASSERT_TRUE(frame.has_value()) << item.id << " frame " << t;
      ASSERT_EQ(frame->width, size);
      ASSERT_EQ(frame->height, size);
      const Image& drawn = item.video[t];
      for (Index by = 0; by < size; by += 2) {
        for (Index bx = 0; bx < size; bx += 2) {
          const std::uint8_t* corner = drawn.pixel(by, bx);
          const auto same = [&](Index y, Index x) {
            return std::equal(corner, corner + 3, drawn.pixel(y, x));
          };
          if (!(same(by, bx + 1) && same(by + 1, bx) && same(by + 1, bx + 1))) continue;
          for (Index y = by; y < by + 2; ++y)
            for (Index x = bx; x < bx + 2; ++x)
              ASSERT_TRUE(std::equal(drawn.pixel(y, x), drawn.pixel(y, x) + 3, frame->pixel(y, x)))
                  << item.id << " frame " << t << " pixel (" << y << ", " << x << ")";
        }
      }
    }
    EXPECT_FALSE(reader.read_frame().has_value()) << item.id << ": more frames than T";
  }
  EXPECT_EQ(read_lines(dir / "captions.txt"), train_captions);

  // Nothing else: no temporary file is left behind.
  std::set<std::string> files;
  for (const auto& [name, bytes] : read_tree(dir.path())) files.insert(name);
  EXPECT_EQ(files, expected_files);
}

TEST(Synthetic, NoHeldOutCombinationsPutsEverythingInTraining) {
  SyntheticOptions options = small_options();
  options.heldout_combinations = 0;
  options.image_size = 16;
  options.frames = 2;
  options.audio_seconds = 0.1;
  TempDir dir;
  const auto summary = write_synthetic_world(dir.path(), options);
  EXPECT_EQ(summary.train, 192);
  EXPECT_EQ(summary.heldout, 0);
  EXPECT_TRUE(read_bytes(dir / "heldout.jsonl").empty());
  EXPECT_EQ(read_lines(dir / "captions.txt").size(), 192u);
}

// ---- What the pixels show ---------------------------------------------------------------------

// The pixels of `image` that are not background: their count, centroid and bounding box.
struct ShapePixels {
  double count = 0, x = 0, y = 0;
  Index left = std::numeric_limits<Index>::max(), right = -1;
  Index top = std::numeric_limits<Index>::max(), bottom = -1;
};

// `bright`: decide by luma (for frames read back from Y4M, whose edges blend); otherwise by
// exact color.
ShapePixels shape_pixels(const Image& image, bool bright = false) {
  ShapePixels s;
  for (Index y = 0; y < image.height; ++y) {
    for (Index x = 0; x < image.width; ++x) {
      const std::uint8_t* p = image.pixel(y, x);
      const bool inside = bright ? 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2] > 45
                                 : !std::equal(p, p + 3, synthetic_background_rgb.begin());
      if (!inside) continue;
      s.count += 1;
      s.x += static_cast<double>(x) + 0.5;
      s.y += static_cast<double>(y) + 0.5;
      s.left = std::min(s.left, x);
      s.right = std::max(s.right, x);
      s.top = std::min(s.top, y);
      s.bottom = std::max(s.bottom, y);
    }
  }
  if (s.count > 0) {
    s.x /= s.count;
    s.y /= s.count;
  }
  return s;
}

TEST(Synthetic, ImagesShowTheColorTheShapeAndThePosition) {
  SyntheticOptions options;
  options.samples_per_combination = 2;
  options.audio_seconds = 0.1;
  const double size = static_cast<double>(options.image_size);
  for (const auto& item : make_synthetic_world(options)) {
    const auto color = static_cast<std::size_t>(index_in(synthetic_colors, item.color));
    const auto& rgb = synthetic_color_rgb[color];
    for (Index i = 0; i < item.image.width * item.image.height; ++i) {
      const std::uint8_t* p = item.image.rgb.data() + 3 * i;
      ASSERT_TRUE(std::equal(p, p + 3, rgb.begin()) ||
                  std::equal(p, p + 3, synthetic_background_rgb.begin()))
          << item.id << ": a pixel neither the item's color nor the background";
    }
    const ShapePixels s = shape_pixels(item.image);
    ASSERT_GT(s.count, 0) << item.id;
    // The fraction of its bounding box a shape fills: square 1, circle pi/4, triangle 1/2.
    const double box = static_cast<double>((s.right - s.left + 1) * (s.bottom - s.top + 1));
    const double fill = s.count / box;
    const auto [low, high] = item.shape == "square"   ? std::pair{0.95, 1.0}
                             : item.shape == "circle" ? std::pair{0.62, 0.88}
                                                      : std::pair{0.4, 0.62};
    EXPECT_TRUE(fill >= low && fill <= high) << item.id << " fills " << fill;
    // Area: about the same for the three shapes, 3 to 5% of the image.
    EXPECT_TRUE(s.count > 0.02 * size * size && s.count < 0.06 * size * size)
        << item.id << ": " << s.count << " pixels";
    // Position: the centroid is a quarter of the way in from its side, +-5% of S.
    const double cx = s.x / size, cy = s.y / size;
    const double want_x = item.position == "left" ? 0.27 : item.position == "right" ? 0.73 : 0.5;
    const double want_y = item.position == "top" ? 0.27 : item.position == "bottom" ? 0.73 : 0.5;
    EXPECT_NEAR(cx, want_x, 0.05) << item.id;
    EXPECT_NEAR(cy, want_y, 0.05) << item.id;
  }
}

TEST(Synthetic, VideoShapesMoveInTheirDirection) {
  // Read back from the Y4M files, so the test sees what a reader of the files sees.
  SyntheticOptions options;
  options.samples_per_combination = 1;
  options.audio_seconds = 0.1;
  const double size = static_cast<double>(options.image_size);
  const double travel = size / 4;
  TempDir dir;
  write_synthetic_world(dir.path(), options);
  Index checked = 0;
  for (const char* list : {"train.jsonl", "heldout.jsonl"}) {
    for (const auto& text : read_lines(dir / list)) {
      const auto line = nlohmann::json::parse(text);
      const std::string motion = line.at("motion"), id = line.at("id");
      Y4mReader reader(dir / line.at("video").get<std::string>());
      std::vector<ShapePixels> path;
      while (auto frame = reader.read_frame()) {
        path.push_back(shape_pixels(*frame, /*bright=*/true));
      }
      ASSERT_EQ(static_cast<Index>(path.size()), options.frames) << id;
      const double want_x = motion == "left" ? -1 : motion == "right" ? 1 : 0;
      const double want_y = motion == "up" ? -1 : motion == "down" ? 1 : 0;
      for (std::size_t t = 1; t < path.size(); ++t) {
        // Each step moves travel / (T - 1) along the motion (within a pixel: rounding to
        // pixels, and the edge of the frame clips a shape near it), nothing across it.
        const double step_x = path[t].x - path[t - 1].x, step_y = path[t].y - path[t - 1].y;
        const double along = step_x * want_x + step_y * want_y;
        const double across = step_x * want_y - step_y * want_x;
        EXPECT_NEAR(along, travel / static_cast<double>(options.frames - 1), 1.0)
            << id << " step " << t;
        EXPECT_NEAR(across, 0.0, 0.5) << id << " step " << t;
      }
      const double total = (path.back().x - path.front().x) * want_x +
                           (path.back().y - path.front().y) * want_y;
      EXPECT_NEAR(total, travel, 1.5) << id;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 192);
}

// ---- What the audio says ----------------------------------------------------------------------

// Samples [begin, end) of audio [1, N] times a Hann window.
std::vector<double> windowed(const Matrix<float>& audio, Index begin, Index end) {
  std::vector<double> out;
  const double length = static_cast<double>(end - begin);
  for (Index n = begin; n < end; ++n) {
    const double k = static_cast<double>(n - begin);
    out.push_back((0.5 - 0.5 * std::cos(2 * std::numbers::pi * k / length)) * audio(0, n));
  }
  return out;
}

// |sum_n x[n] e^(-2 pi i f n / rate)|^2: one bin of a DFT, by Goertzel's recurrence.
double power_at(const std::vector<double>& x, double f, double rate) {
  const double coefficient = 2 * std::cos(2 * std::numbers::pi * f / rate);
  double s1 = 0, s2 = 0;
  for (double value : x) {
    const double s = value + coefficient * s1 - s2;
    s2 = s1;
    s1 = s;
  }
  return s1 * s1 + s2 * s2 - coefficient * s1 * s2;
}

// The frequency (1 Hz steps, from `low` to `high` Hz) with the most power in x.
double dominant_frequency(const std::vector<double>& x, double rate, double low = 100,
                          double high = 2000) {
  double best = 0, best_power = -1;
  for (double f = low; f <= high; f += 1) {
    const double p = power_at(x, f, rate);
    if (p > best_power) {
      best_power = p;
      best = f;
    }
  }
  return best;
}

double rms(const Matrix<float>& audio, Index begin, Index end) {
  return std::sqrt(audio.block(0, begin, 1, end - begin).cast<double>().squaredNorm() /
                   static_cast<double>(end - begin));
}

TEST(Synthetic, AudioPitchIsTheShapeChordIsTheColorContourIsTheMotion) {
  const SyntheticOptions options;  // 1 s at 16 kHz
  const double rate = static_cast<double>(options.sample_rate);
  const Index n = 16000, quarter = n / 4;

  // Shape -> root pitch (a steady tone: motion "right" only changes the loudness); +-1.5% detune.
  std::array<double, 3> roots{};
  for (std::size_t s = 0; s < 3; ++s) {
    const auto item = item_with(options, "red", synthetic_shapes[s], "top", "right");
    ASSERT_EQ(item.audio.rows(), 1);
    ASSERT_EQ(item.audio.cols(), n);
    roots[s] = dominant_frequency(windowed(item.audio, n / 2, n), rate);
    EXPECT_NEAR(roots[s] / synthetic_root_hz[s], 1.0, 0.02)
        << synthetic_shapes[s] << ": " << roots[s] << " Hz";
  }
  EXPECT_GT(roots[2], 4 * roots[0]) << "a triangle sounds well above a circle";

  // Color -> chord: which of the major third (5/4) and the fifth (3/2) sound with the root.
  const std::array<std::pair<bool, bool>, 4> third_fifth = {
      {{false, false}, {true, false}, {false, true}, {true, true}}};  // red, green, blue, yellow
  for (std::size_t c = 0; c < 4; ++c) {
    const auto item = item_with(options, synthetic_colors[c], "square", "left", "right");
    // the loudest frequency near the square's root (the chord's notes are equally loud)
    const auto second_half = windowed(item.audio, n / 2, n);
    const double root = dominant_frequency(second_half, rate, 400, 500);
    EXPECT_NEAR(root / synthetic_root_hz[1], 1.0, 0.02) << synthetic_colors[c];
    const double p_root = power_at(second_half, root, rate);
    const double p_third = power_at(second_half, root * 1.25, rate) / p_root;
    const double p_fifth = power_at(second_half, root * 1.5, rate) / p_root;
    const auto [third, fifth] = third_fifth[c];
    if (third) {
      EXPECT_GT(p_third, 0.5) << synthetic_colors[c];
    } else {
      EXPECT_LT(p_third, 1e-3) << synthetic_colors[c];
    }
    if (fifth) {
      EXPECT_GT(p_fifth, 0.5) << synthetic_colors[c];
    } else {
      EXPECT_LT(p_fifth, 1e-3) << synthetic_colors[c];
    }
  }

  // Motion -> contour: up and down glide (the pitch of the last quarter over the first is
  // 2^(3/12) = 1.19 or its inverse), left and right fade (24 dB over the clip, about 18 dB
  // between the first and last quarters), at the same loudness and pitch otherwise.
  for (const std::string_view motion : synthetic_motions) {
    const auto item = item_with(options, "red", "circle", "bottom", motion);
    const double rise = dominant_frequency(windowed(item.audio, 3 * quarter, n), rate) /
                        dominant_frequency(windowed(item.audio, 0, quarter), rate);
    const double louder = rms(item.audio, 3 * quarter, n) / rms(item.audio, 0, quarter);
    if (motion == "up" || motion == "down") {
      EXPECT_NEAR(rise, motion == "up" ? 1.189 : 1 / 1.189, 0.02) << motion;
      EXPECT_NEAR(louder, 1.0, 0.1) << motion;
    } else {
      EXPECT_NEAR(rise, 1.0, 0.01) << motion;
      if (motion == "left") {
        EXPECT_LT(louder, 0.2);
      } else {
        EXPECT_GT(louder, 5.0);
      }
    }
  }
}

TEST(Synthetic, PaletteColorsRoundTripThroughY4m) {
  // Why uniform areas of the video read back exactly: each color is its own round trip.
  TempDir dir;
  Y4mHeader header;
  header.width = header.height = 2;
  header.rate_num = 8;
  Y4mWriter writer(dir / "palette.y4m", header);
  std::vector<SyntheticRgb> colors(synthetic_color_rgb.begin(), synthetic_color_rgb.end());
  colors.push_back(synthetic_background_rgb);
  for (const auto& rgb : colors) {
    Image frame(2, 2);
    for (Index i = 0; i < 4; ++i) std::copy(rgb.begin(), rgb.end(), frame.rgb.data() + 3 * i);
    writer.write(frame);
  }
  writer.close();
  Y4mReader reader(dir / "palette.y4m");
  for (const auto& rgb : colors) {
    const auto frame = reader.read_frame();
    ASSERT_TRUE(frame.has_value());
    for (Index i = 0; i < 4; ++i)
      EXPECT_TRUE(std::equal(rgb.begin(), rgb.end(), frame->rgb.data() + 3 * i))
          << int(rgb[0]) << " " << int(rgb[1]) << " " << int(rgb[2]);
  }
}

// ---- Errors -----------------------------------------------------------------------------------

TEST(Synthetic, OptionErrors) {
  const auto error_for = [](auto change) {
    SyntheticOptions options;
    change(options);
    return error_of([&] { make_synthetic_world(options); });
  };
  EXPECT_THAT(error_for([](auto& o) { o.image_size = 0; }),
              HasSubstr("SyntheticOptions::image_size must be in [16, 1024], got 0"));
  EXPECT_THAT(error_for([](auto& o) { o.frames = 1; }),
              HasSubstr("SyntheticOptions::frames must be in [2, 256], got 1"));
  EXPECT_THAT(error_for([](auto& o) { o.frame_rate = 0; }),
              HasSubstr("SyntheticOptions::frame_rate must be in [1, 1000], got 0"));
  EXPECT_THAT(error_for([](auto& o) { o.samples_per_combination = 0; }),
              HasSubstr("SyntheticOptions::samples_per_combination must be in [1, 10000], got 0"));
  EXPECT_THAT(error_for([](auto& o) { o.sample_rate = 0; }),
              HasSubstr("SyntheticOptions::sample_rate must be in [8000, 192000], got 0"));
  EXPECT_THAT(error_for([](auto& o) { o.heldout_combinations = 13; }),
              HasSubstr("SyntheticOptions::heldout_combinations must be in [0, 12], got 13"));
  EXPECT_THAT(error_for([](auto& o) { o.heldout_combinations = -1; }),
              HasSubstr("heldout_combinations must be in [0, 12], got -1"));
  EXPECT_THAT(error_for([](auto& o) { o.audio_seconds = 0; }),
              HasSubstr("SyntheticOptions::audio_seconds must be in [0.1, 60], got 0"));
  EXPECT_THAT(error_for([](auto& o) { o.audio_seconds = std::nan(""); }),
              HasSubstr("SyntheticOptions::audio_seconds must be in [0.1, 60], got nan"));

  const SyntheticOptions options;
  EXPECT_THAT(error_of([&] { make_synthetic_item(options, 768); }),
              HasSubstr("make_synthetic_item: index 768 is not in [0, 768)"));
  EXPECT_THAT(error_of([] { synthetic_caption("purple", "circle", "left", "up"); }),
              HasSubstr("unknown color \"purple\""));
  EXPECT_THAT(error_of([] { synthetic_caption("red", "circle", "middle", "up"); }),
              HasSubstr("unknown position \"middle\""));
}

TEST(Synthetic, WriteErrorsNameThePathAndBadOptionsWriteNothing) {
  TempDir dir;
  SyntheticOptions bad = small_options();
  bad.image_size = 8;
  EXPECT_THAT(error_of([&] { write_synthetic_world(dir / "world", bad); }),
              HasSubstr("SyntheticOptions::image_size must be in [16, 1024], got 8"));
  EXPECT_FALSE(std::filesystem::exists(dir / "world"));

  // A failure midway (a directory where one video goes, so its temporary file cannot be
  // renamed into place): the error names the file, and the list of the world written there
  // before is gone, so no list points at a mixture of two worlds.
  const auto world = dir / "rewritten";
  write_synthetic_world(world, small_options());
  std::filesystem::remove(world / "video" / "red-circle-top-up-0.y4m");
  std::filesystem::create_directories(world / "video" / "red-circle-top-up-0.y4m" / "blocked");
  EXPECT_THAT(error_of([&] { write_synthetic_world(world, small_options()); }),
              HasSubstr((world / "video" / "red-circle-top-up-0.y4m").string()));
  EXPECT_FALSE(std::filesystem::exists(world / "train.jsonl"));

  std::ofstream(dir / "file") << "not a directory";
  EXPECT_THAT(error_of([&] { write_synthetic_world(dir / "file", small_options()); }),
              HasSubstr((dir / "file" / "images").string() + ": cannot create the directory"));
}

}  // namespace
}  // namespace tessera

#endif  // TESSERA_HAS_STB
