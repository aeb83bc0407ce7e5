#pragma once
// A small synthetic multimodal world for the training demo: colored shapes that sit at a
// position and move, each seen as a caption, an image, a sound and a short video.
//
//   tessera::SyntheticOptions options;                      // seed 1, 64 x 64, 8 frames, 1 s
//   auto items = tessera::make_synthetic_world(options);    // in memory
//   tessera::write_synthetic_world("synth", options);       // PNG, WAV, Y4M and JSONL files
//
// An item is a color (red, green, blue, yellow), a shape (circle, square, triangle), a
// position (left, right, top, bottom) and a motion (left, right, up, down):
//   caption  "a <color> <shape> <on the left | on the right | at the top | at the bottom>
//            moving <motion>", e.g. "a red circle on the left moving up"
//   image    [S, S, 3] 8-bit RGB: the shape in its color on a dark background, at its position
//   video    T frames [S, S, 3]: the same shape travelling S/4 in its motion's direction, on a
//            path centred on its position
//   audio    [1, N] at sample_rate: the shape sets the root pitch (circle 200 Hz, square 450 Hz,
//            triangle 1000 Hz), the color the chord (red: the root alone, green: + major third,
//            blue: + fifth, yellow: + both), the motion the contour (up: glides up 4
//            semitones, down: glides down 4, left: fades out by 24 dB, right: fades in by 24 dB).
//            The position is not heard.
// Every (color, shape, position, motion) combination has samples_per_combination items, which
// differ by a small jitter drawn from the seed (position, size, detuning, loudness, phases,
// noise). heldout_combinations of the 48 (color, shape, motion) triples form the held-out
// split, with all their positions; the rest is the training split. The held-out triples never
// share a (color, shape), (color, motion) or (shape, motion) pair with each other, so every
// pair of attribute values (and every single value) still appears in training: the held-out
// split tests combining known attributes in new ways.
//
// Determinism: item i depends only on (options, i) through its own stream of a SplitMix64
// generator, so the same seed gives the same bytes in every file, whatever the order in which
// items are made. Pixels come from integer geometry and are the same on every platform; audio
// goes through sin/exp2/pow and could move by one 16-bit step with another libm or compiler.
// docs/synthetic-data.md describes the world and the files.
//
// Needs stb_image_write (Debian: libstb-dev) for the PNG images; the tessera CMake target
// links libstb, which holds the implementation, and defines TESSERA_HAS_STB (as for
// io/image.hpp, STB_IMAGE_WRITE_IMPLEMENTATION must not be defined).

#ifndef TESSERA_HAS_STB
#error "apps/synthetic.hpp writes PNG images with stb_image_write, which this build does not have: install libstb-dev (pkg-config module 'stb') and reconfigure with TESSERA_USE_STB=ON, or link tessera::tessera, which defines TESSERA_HAS_STB when stb is found"
#endif

#include <tessera/core/error.hpp>
#include <tessera/core/random.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/io/atomic_file.hpp>
#include <tessera/io/image.hpp>
#include <tessera/io/wav.hpp>
#include <tessera/io/y4m.hpp>
#include <tessera/tokenize/image.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <numbers>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace tessera {

// The attribute values, in the order items are enumerated.
inline constexpr std::array<std::string_view, 4> synthetic_colors = {"red", "green", "blue",
                                                                     "yellow"};
inline constexpr std::array<std::string_view, 3> synthetic_shapes = {"circle", "square",
                                                                     "triangle"};
inline constexpr std::array<std::string_view, 4> synthetic_positions = {"left", "right", "top",
                                                                        "bottom"};
inline constexpr std::array<std::string_view, 4> synthetic_motions = {"left", "right", "up",
                                                                      "down"};

// The pixel colors: each is its own round trip through the Y4M writer's BT.601 limited-range
// conversion (RGB -> YUV codes -> RGB gives the same bytes), so uniform areas of the video
// read back exactly.
using SyntheticRgb = std::array<std::uint8_t, 3>;
inline constexpr SyntheticRgb synthetic_background_rgb = {19, 20, 29};
inline constexpr std::array<SyntheticRgb, 4> synthetic_color_rgb = {{
    {225, 45, 45},   // red
    {50, 201, 70},   // green
    {55, 95, 241},   // blue
    {239, 216, 39},  // yellow
}};

// The sound: root pitch per shape, the notes of each color's chord as ratios to the root
// (just intonation: a major third is 5/4, a fifth 3/2), and the motion's contour.
inline constexpr std::array<double, 3> synthetic_root_hz = {200.0, 450.0, 1000.0};
inline constexpr double synthetic_glide_semitones = 4.0;  // up/down: from -2 to +2 or back
inline constexpr double synthetic_fade_db = 24.0;         // left/right: fade out / fade in
inline std::vector<double> synthetic_chord(Index color) {
  switch (color) {
    case 0: return {1.0};              // red: the root alone
    case 1: return {1.0, 1.25};        // green: root + major third
    case 2: return {1.0, 1.5};         // blue: root + fifth
    default: return {1.0, 1.25, 1.5};  // yellow: major triad
  }
}

struct SyntheticOptions {
  std::uint64_t seed = 1;
  Index image_size = 64;              // S: images and video frames are S x S pixels
  Index frames = 8;                   // T: frames per video
  Index frame_rate = 8;               // video frames per second (the Y4M header's F8:1)
  Index samples_per_combination = 4;  // items per (color, shape, position, motion)
  Index heldout_combinations = 8;     // (color, shape, motion) triples held out, 0..12
  double audio_seconds = 1.0;
  Index sample_rate = 16000;          // Hz

  // Throws tessera::Error naming the first option out of its range.
  void validate() const;
};

// A (color, shape, motion) triple as indices into the arrays above.
struct SyntheticCombination {
  Index color = 0, shape = 0, motion = 0;
  bool operator==(const SyntheticCombination&) const = default;
};

struct SyntheticItem {
  std::string id;       // "<color>-<shape>-<position>-<motion>-<sample>": "red-circle-left-up-0"
  std::string caption;  // "a red circle on the left moving up"
  std::string split;    // "train" or "heldout"
  std::string color, shape, position, motion;
  Image image;               // [S, S, 3], as decode_image reads the PNG back (exactly)
  Matrix<float> audio;       // [1, N], on 16-bit steps: as read_wav reads the WAV back (exactly)
  std::vector<Image> video;  // T frames of [S, S, 3] as drawn; the Y4M file reads back exactly
                             // except in the 2 x 2 blocks a shape's edge crosses (4:2:0 chroma
                             // mixes the two colors there)
};

struct SyntheticWorldSummary {
  Index train = 0;    // items in train.jsonl
  Index heldout = 0;  // items in heldout.jsonl
};

// "a <color> <shape> <position phrase> moving <motion>"; throws on an unknown value.
std::string synthetic_caption(std::string_view color, std::string_view shape,
                              std::string_view position, std::string_view motion);

// The held-out (color, shape, motion) triples, in the order the seed picked them.
std::vector<SyntheticCombination> synthetic_heldout_combinations(const SyntheticOptions& options);

// 4 colors x 3 shapes x 4 positions x 4 motions x samples_per_combination.
Index synthetic_item_count(const SyntheticOptions& options);

// Item `index` (0 <= index < synthetic_item_count): items are enumerated by color, shape,
// position, motion, then sample; each is computed on its own.
SyntheticItem make_synthetic_item(const SyntheticOptions& options, Index index);

// An upper bound of the bytes write_synthetic_world writes: per item a PNG no larger than its
// raw pixels (S*S*3 + 1 KB of chunks), the WAV's 16-bit samples, the Y4M's 4:2:0 frames and
// 512 bytes of list lines and caption; the lists (train.jsonl, heldout.jsonl, captions.txt)
// are also held in memory until written, about 512 bytes an item.
double synthetic_world_bytes(const SyntheticOptions& options);

// Every item, in index order (about 170 KB each at the default sizes).
std::vector<SyntheticItem> make_synthetic_world(const SyntheticOptions& options);

// Writes the world under `dir` (created if needed):
//   images/<id>.png, audio/<id>.wav (16-bit PCM, mono), video/<id>.y4m (C420jpeg)
//   captions.txt    the caption of every training item, one per line, in train.jsonl's order
//   heldout.jsonl   one JSON object per held-out item: id, caption, image, audio, video
//                   (paths relative to dir), color, shape, position, motion
//   train.jsonl     the same for the training items; written last
// Every file goes to a temporary name first and is renamed into place when complete. Items
// are generated and written one at a time. Throws tessera::Error naming the path on any I/O
// failure, or the option for bad options (before anything is written).
SyntheticWorldSummary write_synthetic_world(const std::filesystem::path& dir,
                                            const SyntheticOptions& options);

// ---------------------------------------------------------------------------------------------
// Implementation

namespace detail {

// Independent streams of one seed (core/random.hpp): the held-out choice and one per item.
inline SplitMix64 synthetic_stream(std::uint64_t seed, std::uint64_t stream) {
  SplitMix64 mixer{seed ^ (0xD1B54A32D192ED03ull * (stream + 1))};
  return SplitMix64{mixer.next()};
}

inline Index synthetic_index_of(std::string_view value, std::span<const std::string_view> values,
                                const char* attribute) {
  const auto at = std::find(values.begin(), values.end(), value);
  check(at != values.end(), "synthetic_caption: unknown ", attribute, " \"", value, "\"");
  return static_cast<Index>(at - values.begin());
}

// Geometry is integer arithmetic in 1/16 pixel, so every pixel is decided exactly whatever the
// compiler does with floating point (no fused multiply-add can move a shape's edge).
inline constexpr std::int64_t subpixels = 16;

// Where the shape of an item is: centre (x, y) and size r in subpixels.
struct ShapePlacement {
  std::int64_t x = 0, y = 0, r = 0;
};

// Whether the point (px, py) (subpixels, relative to the centre) is inside the shape of size r.
//   circle: radius r;  square: half side 9r/10;  triangle: equilateral, pointing up, its
//   vertices 3r/2 from the centre (so the three shapes look about equally large)
inline bool synthetic_inside(Index shape, std::int64_t px, std::int64_t py, std::int64_t r) {
  if (shape == 0) return px * px + py * py <= r * r;
  if (shape == 1) {
    const std::int64_t half = r * 9 / 10;
    return px >= -half && px <= half && py >= -half && py <= half;
  }
  const std::int64_t big = r * 3 / 2;                                      // circumradius
  const std::int64_t half_base = static_cast<std::int64_t>(std::llround(  // R sqrt(3) / 2
      static_cast<double>(big) * (std::numbers::sqrt3 / 2)));
  const std::int64_t vx[3] = {0, half_base, -half_base};  // top, bottom right, bottom left
  const std::int64_t vy[3] = {-big, big / 2, big / 2};
  bool any_negative = false, any_positive = false;
  for (int e = 0; e < 3; ++e) {
    const int f = (e + 1) % 3;
    const std::int64_t side = (vx[f] - vx[e]) * (py - vy[e]) - (vy[f] - vy[e]) * (px - vx[e]);
    any_negative = any_negative || side < 0;
    any_positive = any_positive || side > 0;
  }
  return !(any_negative && any_positive);
}

// Fills `image` [S, S, 3] with the background and draws the shape: a pixel takes the shape's
// color when its centre is inside the shape.
inline void draw_synthetic_shape(Image& image, Index shape, const ShapePlacement& at,
                                 const SyntheticRgb& color) {
  for (Index y = 0; y < image.height; ++y) {
    for (Index x = 0; x < image.width; ++x) {
      const std::int64_t px = x * subpixels + subpixels / 2 - at.x;
      const std::int64_t py = y * subpixels + subpixels / 2 - at.y;
      const bool inside = synthetic_inside(shape, px, py, at.r);
      const SyntheticRgb& rgb = inside ? color : synthetic_background_rgb;
      std::copy(rgb.begin(), rgb.end(), image.pixel(y, x));
    }
  }
}

// The audio of one item, [1, N], rounded to 16-bit steps. Per sample n (u = n / (N - 1)):
//   x[n] = gain * edge(n) * 10^(level_db(u) / 20) * sum_k sin(phase_k[n]) + noise[n]
//   phase_k advances by 2 pi * root * ratio_k * 2^(semitones(u) / 12) / rate per sample
//   semitones: up -2 + 4u, down 2 - 4u, else 0;  level_db: left -24u, right -24(1 - u), else 0
//   edge: a 10 ms linear ramp at both ends (no clicks);  noise: uniform in +-0.003
inline Matrix<float> synthetic_audio(const SyntheticOptions& options, Index shape, Index color,
                                     Index motion, SplitMix64& rng) {
  const Index n_samples = static_cast<Index>(
      std::llround(options.audio_seconds * static_cast<double>(options.sample_rate)));
  const double rate = static_cast<double>(options.sample_rate);
  const std::vector<double> chord = synthetic_chord(color);
  const double detune = rng.uniform(0.985, 1.015);
  const double root = synthetic_root_hz[static_cast<std::size_t>(shape)] * detune;
  const double gain = 0.6 * rng.uniform(0.9, 1.1) / static_cast<double>(chord.size());
  constexpr double two_pi = 2 * std::numbers::pi;
  std::vector<double> phase(chord.size());
  for (double& p : phase) p = rng.uniform(0.0, two_pi);
  const double ramp = 0.01 * rate;  // samples
  const double last = static_cast<double>(std::max<Index>(n_samples - 1, 1));

  Matrix<float> audio(1, n_samples);  // [1, N]
  for (Index n = 0; n < n_samples; ++n) {
    const double u = static_cast<double>(n) / last;
    const double glide = synthetic_glide_semitones, fade = synthetic_fade_db;
    const double semitones = motion == 2 ? glide * (u - 0.5) : motion == 3 ? glide * (0.5 - u) : 0;
    const double level_db = motion == 0 ? -fade * u : motion == 1 ? -fade * (1 - u) : 0;
    const double edge = std::min({1.0, static_cast<double>(n) / ramp,
                                  static_cast<double>(n_samples - 1 - n) / ramp});
    const double step = two_pi * root * std::exp2(semitones / 12) / rate;
    double sum = 0;
    for (std::size_t k = 0; k < chord.size(); ++k) {
      sum += std::sin(phase[k]);
      phase[k] += step * chord[k];
      if (phase[k] >= two_pi) phase[k] -= two_pi;
    }
    const double x = gain * edge * std::pow(10.0, level_db / 20) * sum + rng.uniform(-0.003, 0.003);
    // On 16-bit steps already, so the WAV file holds exactly these values.
    const double step16 = std::clamp(std::nearbyint(x * 32768.0), -32768.0, 32767.0);
    audio(0, n) = static_cast<float>(step16 / 32768.0);
  }
  return audio;
}

// Where position p puts a shape's centre, in subpixels of an S x S image: 27% of the way in
// from its side, centred along the other axis.
inline std::int64_t synthetic_position_x(Index position, std::int64_t size) {
  return position == 0 ? size * 27 / 100 : position == 1 ? size * 73 / 100 : size / 2;
}
inline std::int64_t synthetic_position_y(Index position, std::int64_t size) {
  return position == 2 ? size * 27 / 100 : position == 3 ? size * 73 / 100 : size / 2;
}

// The frames as 4:2:0 Y4M through Y4mWriter (which writes a temporary file and renames it
// into place, as write_file_atomically does for the other files).
inline void write_synthetic_y4m(const std::filesystem::path& file, const std::vector<Image>& frames,
                                Index frame_rate) {
  Y4mHeader header;
  header.width = frames.front().width;
  header.height = frames.front().height;
  header.rate_num = frame_rate;
  header.rate_den = 1;
  header.colorspace = Y4mColorspace::c420jpeg;
  Y4mWriter writer(file, header);
  for (const Image& frame : frames) writer.write(frame);
  writer.close();
}

inline void create_synthetic_directory(const std::filesystem::path& dir) {
  std::error_code error;
  std::filesystem::create_directories(dir, error);
  check(!error, dir.string(), ": cannot create the directory: ", error.message());
  check(std::filesystem::is_directory(dir), dir.string(), ": exists and is not a directory");
}

}  // namespace detail

inline void SyntheticOptions::validate() const {
  const auto in_range = [](const char* name, Index value, Index low, Index high) {
    check(value >= low && value <= high, "SyntheticOptions::", name, " must be in [", low, ", ",
          high, "], got ", value);
  };
  in_range("image_size", image_size, 16, 1024);
  in_range("frames", frames, 2, 256);  // motion needs two frames
  in_range("frame_rate", frame_rate, 1, 1000);
  in_range("samples_per_combination", samples_per_combination, 1, 10000);
  in_range("sample_rate", sample_rate, 8000, 192000);  // the highest note is below 1.8 kHz
  check(heldout_combinations >= 0 && heldout_combinations <= 12,
        "SyntheticOptions::heldout_combinations must be in [0, 12], got ", heldout_combinations,
        ": at most 12 of the 48 (color, shape, motion) triples can be held out while every "
        "pair of attribute values keeps appearing in training");
  check(std::isfinite(audio_seconds) && audio_seconds >= 0.1 && audio_seconds <= 60.0,
        "SyntheticOptions::audio_seconds must be in [0.1, 60], got ", audio_seconds);
}

inline std::string synthetic_caption(std::string_view color, std::string_view shape,
                                     std::string_view position, std::string_view motion) {
  detail::synthetic_index_of(color, synthetic_colors, "color");
  detail::synthetic_index_of(shape, synthetic_shapes, "shape");
  detail::synthetic_index_of(motion, synthetic_motions, "motion");
  constexpr std::array<std::string_view, 4> phrases = {"on the left", "on the right", "at the top",
                                                       "at the bottom"};
  const Index p = detail::synthetic_index_of(position, synthetic_positions, "position");
  return detail::concat("a ", color, " ", shape, " ", phrases[static_cast<std::size_t>(p)],
                        " moving ", motion);
}

// The 12 candidates form a Latin rectangle, motion = (color + shape + offset) mod 4: for a
// fixed shape the four colors get four different motions, for a fixed color the three shapes
// three different ones, so no two candidates share any pair of values. The seed picks the
// offset and which candidates are held out.
inline std::vector<SyntheticCombination> synthetic_heldout_combinations(
    const SyntheticOptions& options) {
  options.validate();
  SplitMix64 rng = detail::synthetic_stream(options.seed, 0);
  const Index offset = rng.integer(0, 3);
  std::vector<SyntheticCombination> candidates;
  for (Index color = 0; color < 4; ++color) {
    for (Index shape = 0; shape < 3; ++shape)
      candidates.push_back({color, shape, (color + shape + offset) % 4});
  }
  shuffle(candidates, rng);
  candidates.resize(static_cast<std::size_t>(options.heldout_combinations));
  return candidates;
}

inline Index synthetic_item_count(const SyntheticOptions& options) {
  options.validate();
  return 4 * 3 * 4 * 4 * options.samples_per_combination;
}

inline SyntheticItem make_synthetic_item(const SyntheticOptions& options, Index index) {
  const Index count = synthetic_item_count(options);
  check(index >= 0 && index < count, "make_synthetic_item: index ", index, " is not in [0, ",
        count, ")");
  // index = (((color * 3 + shape) * 4 + position) * 4 + motion) * samples + sample
  const Index sample = index % options.samples_per_combination;
  Index rest = index / options.samples_per_combination;
  const Index motion = rest % 4;
  rest /= 4;
  const Index position = rest % 4;
  rest /= 4;
  const Index shape = rest % 3;
  const Index color = rest / 3;
  const auto name = [](const auto& values, Index i) {
    return std::string(values[static_cast<std::size_t>(i)]);
  };

  SyntheticItem item;
  item.color = name(synthetic_colors, color);
  item.shape = name(synthetic_shapes, shape);
  item.position = name(synthetic_positions, position);
  item.motion = name(synthetic_motions, motion);
  item.id = detail::concat(item.color, "-", item.shape, "-", item.position, "-", item.motion, "-",
                           sample);
  item.caption = synthetic_caption(item.color, item.shape, item.position, item.motion);
  const auto heldout = synthetic_heldout_combinations(options);
  const bool held = std::find(heldout.begin(), heldout.end(),
                              SyntheticCombination{color, shape, motion}) != heldout.end();
  item.split = held ? "heldout" : "train";

  // The jitter, drawn in a fixed order from the item's own stream: centre +-3% of S, size
  // (circle radius) 11% of S +-10%.
  auto rng = detail::synthetic_stream(options.seed, static_cast<std::uint64_t>(index) + 1);
  const std::int64_t size = options.image_size * detail::subpixels;  // S in subpixels
  const std::int64_t jitter = size * 3 / 100;
  detail::ShapePlacement at;
  at.x = detail::synthetic_position_x(position, size) + rng.integer(-jitter, jitter);
  at.y = detail::synthetic_position_y(position, size) + rng.integer(-jitter, jitter);
  at.r = size * 11 / 100 * rng.integer(90, 110) / 100;
  const SyntheticRgb& rgb = synthetic_color_rgb[static_cast<std::size_t>(color)];

  item.image = Image(options.image_size, options.image_size);  // [S, S, 3]
  detail::draw_synthetic_shape(item.image, shape, at, rgb);

  // Frame t's centre: the position + travel * (t / (T - 1) - 1/2) along the motion, with
  // travel = S / 4, so the path is centred on the position.
  const std::int64_t travel = size / 4, steps = options.frames - 1;
  const std::int64_t dx = motion == 0 ? -1 : motion == 1 ? 1 : 0;
  const std::int64_t dy = motion == 2 ? -1 : motion == 3 ? 1 : 0;
  for (Index t = 0; t < options.frames; ++t) {
    const std::int64_t along = travel * (2 * t - steps) / (2 * steps);
    detail::ShapePlacement moved = at;
    moved.x += dx * along;
    moved.y += dy * along;
    Image frame(options.image_size, options.image_size);  // [S, S, 3]
    detail::draw_synthetic_shape(frame, shape, moved, rgb);
    item.video.push_back(std::move(frame));
  }

  item.audio = detail::synthetic_audio(options, shape, color, motion, rng);  // [1, N]
  return item;
}

inline double synthetic_world_bytes(const SyntheticOptions& options) {
  const auto s = static_cast<double>(options.image_size);
  const double png = s * s * 3 + 1024;
  const double wav = 44 + 2 * std::ceil(options.audio_seconds * static_cast<double>(options.sample_rate));
  const double y4m = 64 + static_cast<double>(options.frames) * (6 + s * s * 3 / 2);
  return static_cast<double>(synthetic_item_count(options)) * (png + wav + y4m + 512);
}

inline std::vector<SyntheticItem> make_synthetic_world(const SyntheticOptions& options) {
  const Index count = synthetic_item_count(options);
  std::vector<SyntheticItem> items;
  items.reserve(static_cast<std::size_t>(count));
  for (Index i = 0; i < count; ++i) items.push_back(make_synthetic_item(options, i));
  return items;
}

inline SyntheticWorldSummary write_synthetic_world(const std::filesystem::path& dir,
                                                   const SyntheticOptions& options) {
  const Index count = synthetic_item_count(options);  // validates the options
  for (const char* sub : {"images", "audio", "video"}) {
    detail::create_synthetic_directory(dir / sub);
  }
  // The list of an earlier world goes first, so a directory with a train.jsonl always holds a
  // complete world: this one's is written last.
  std::error_code error;
  std::filesystem::remove(dir / "train.jsonl", error);
  check(!error, (dir / "train.jsonl").string(), ": cannot remove the earlier list: ",
        error.message());

  SyntheticWorldSummary summary;
  std::string train_lines, heldout_lines, captions;
  for (Index i = 0; i < count; ++i) {
    const SyntheticItem item = make_synthetic_item(options, i);
    const std::string image = "images/" + item.id + ".png";
    const std::string audio = "audio/" + item.id + ".wav";
    const std::string video = "video/" + item.id + ".y4m";
    write_png(dir / image, item.image);
    write_wav(dir / audio, item.audio, options.sample_rate);
    detail::write_synthetic_y4m(dir / video, item.video, options.frame_rate);

    const nlohmann::ordered_json line = {
        {"id", item.id},       {"caption", item.caption},   {"image", image},
        {"audio", audio},      {"video", video},            {"color", item.color},
        {"shape", item.shape}, {"position", item.position}, {"motion", item.motion}};
    if (item.split == "train") {
      train_lines += line.dump() + "\n";
      captions += item.caption + "\n";
      ++summary.train;
    } else {
      heldout_lines += line.dump() + "\n";
      ++summary.heldout;
    }
  }
  detail::write_file_atomically(dir / "captions.txt", captions);
  detail::write_file_atomically(dir / "heldout.jsonl", heldout_lines);
  detail::write_file_atomically(dir / "train.jsonl", train_lines);
  return summary;
}

}  // namespace tessera
