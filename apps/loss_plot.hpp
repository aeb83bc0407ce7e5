#pragma once
// write_loss_plot: a training run's loss curve as a PNG (tessera::write_png), for
// tessera-train.
//
// The loss of every step in light gray, its moving average (over 2% of the run) in blue, on
// axes from step 0 to the last step and from loss 0 to a round number above the largest
// loss, with tick labels in a small built-in bitmap font (digits and the letters of "step"
// and "loss": no font file, no plotting library).

#include <tessera/io/image.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace tessera::apps {
namespace plot {

// 3 x 5 glyphs, one row per 3 bits (the high bit is the left column).
struct Glyph {
  char c;
  std::array<std::uint8_t, 5> rows;
};
inline constexpr std::array<Glyph, 17> glyphs{{
    {'0', {7, 5, 5, 5, 7}}, {'1', {2, 6, 2, 2, 7}}, {'2', {7, 1, 7, 4, 7}},
    {'3', {7, 1, 7, 1, 7}}, {'4', {5, 5, 7, 1, 1}}, {'5', {7, 4, 7, 1, 7}},
    {'6', {7, 4, 7, 5, 7}}, {'7', {7, 1, 1, 1, 1}}, {'8', {7, 5, 7, 5, 7}},
    {'9', {7, 5, 7, 1, 7}}, {'.', {0, 0, 0, 0, 2}}, {'s', {3, 4, 2, 1, 6}},
    {'t', {2, 7, 2, 2, 3}}, {'e', {2, 5, 7, 4, 3}}, {'p', {6, 5, 6, 4, 4}},
    {'l', {6, 2, 2, 2, 7}}, {'o', {0, 2, 5, 5, 2}},
}};

struct Canvas {
  tessera::Image image;
  Canvas(int width, int height) : image(width, height) {
    std::fill(image.rgb.begin(), image.rgb.end(), std::uint8_t{255});
  }
  void set(int x, int y, std::array<std::uint8_t, 3> color) {
    if (x < 0 || y < 0 || x >= image.width || y >= image.height) return;
    std::copy(color.begin(), color.end(), image.pixel(y, x));
  }
  // Bresenham's line from (x0, y0) to (x1, y1).
  void line(int x0, int y0, int x1, int y1, std::array<std::uint8_t, 3> color) {
    const int dx = std::abs(x1 - x0), dy = -std::abs(y1 - y0);
    const int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int error = dx + dy;
    for (;;) {
      set(x0, y0, color);
      if (x0 == x1 && y0 == y1) return;
      const int e2 = 2 * error;
      if (e2 >= dy) { error += dy; x0 += sx; }
      if (e2 <= dx) { error += dx; y0 += sy; }
    }
  }
  // `text` with its top-left corner at (x, y), each font pixel drawn as scale x scale.
  void text(int x, int y, std::string_view text, int scale, std::array<std::uint8_t, 3> color) {
    for (char c : text) {
      for (const Glyph& g : glyphs) {
        if (g.c != c) continue;
        for (int row = 0; row < 5; ++row) {
          for (int col = 0; col < 3; ++col) {
            if (((g.rows[static_cast<std::size_t>(row)] >> (2 - col)) & 1) == 0) continue;
            for (int i = 0; i < scale * scale; ++i) {
              set(x + col * scale + i % scale, y + row * scale + i / scale, color);
            }
          }
        }
      }
      x += 4 * scale;
    }
  }
  static int text_width(std::string_view text, int scale) {
    return static_cast<int>(text.size()) * 4 * scale - scale;
  }
};

// The smallest of 1, 2, 2.5, 5 x 10^k that is >= x (x > 0).
inline double round_up(double x) {
  const double power = std::pow(10.0, std::floor(std::log10(x)));
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0}) {
    if (m * power >= x * (1 - 1e-12)) return m * power;
  }
  return 10 * power;
}

inline std::string number(double x) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%g", x);
  return buffer;
}

}  // namespace plot

// Writes the plot of `losses` (one per step, finite) to `file`.
inline void write_loss_plot(const std::filesystem::path& file, const std::vector<double>& losses) {
  tessera::check(!losses.empty(), file.string(), ": no losses to plot");
  constexpr int width = 800, height = 450, left = 70, right = 24, top = 28, bottom = 56;
  constexpr int plot_w = width - left - right, plot_h = height - top - bottom;
  constexpr std::array<std::uint8_t, 3> black{0, 0, 0}, grid{225, 225, 225},
      raw{185, 185, 185}, mean{31, 90, 200};
  plot::Canvas canvas(width, height);

  // round tick spacings: 1, 2, 2.5 or 5 x 10^k, about 4 intervals on each axis
  const double max_loss = std::max(1e-6, *std::max_element(losses.begin(), losses.end()));
  const double loss_tick = plot::round_up(max_loss / 4);
  const double top_loss = loss_tick * std::ceil(max_loss / loss_tick);
  const auto steps = static_cast<double>(losses.size());  // loss i is plotted at step i + 1
  const double step_tick = std::max(1.0, std::ceil(plot::round_up(steps / 4)));
  const double last_step = step_tick * std::ceil(steps / step_tick);
  const auto x_of = [&](double step) {
    return left + static_cast<int>(std::lround(step / last_step * plot_w));
  };
  const auto y_of = [&](double loss) {
    return top + plot_h -
           static_cast<int>(std::lround(std::clamp(loss / top_loss, 0.0, 1.0) * plot_h));
  };

  for (double loss = 0; loss <= top_loss * (1 + 1e-9); loss += loss_tick) {
    const int y = y_of(loss);
    canvas.line(left, y, left + plot_w, y, grid);
    const std::string label = plot::number(loss);
    canvas.text(left - 8 - plot::Canvas::text_width(label, 2), y - 5, label, 2, black);
  }
  for (double step = 0; step <= last_step; step += step_tick) {
    const int x = x_of(step);
    canvas.line(x, top, x, top + plot_h, grid);
    const std::string label = plot::number(step);
    canvas.text(x - plot::Canvas::text_width(label, 2) / 2, top + plot_h + 8, label, 2, black);
  }
  canvas.line(left, top, left, top + plot_h, black);
  canvas.line(left, top + plot_h, left + plot_w, top + plot_h, black);
  canvas.text(left + plot_w / 2 - plot::Canvas::text_width("step", 2) / 2, height - 22, "step", 2, black);
  canvas.text(left - plot::Canvas::text_width("loss", 2) / 2, 4, "loss", 2, black);

  // the losses, then their moving average over a centred window
  for (std::size_t i = 1; i < losses.size(); ++i) {
    canvas.line(x_of(static_cast<double>(i)), y_of(losses[i - 1]), x_of(static_cast<double>(i + 1)),
                y_of(losses[i]), raw);
  }
  const auto half = static_cast<std::ptrdiff_t>(losses.size() / 100);
  std::vector<double> smooth(losses.size());
  for (std::size_t i = 0; i < losses.size(); ++i) {
    const auto first = static_cast<std::size_t>(std::max<std::ptrdiff_t>(0, static_cast<std::ptrdiff_t>(i) - half));
    const auto last = std::min(losses.size() - 1, i + static_cast<std::size_t>(half));
    double sum = 0;
    for (std::size_t j = first; j <= last; ++j) sum += losses[j];
    smooth[i] = sum / static_cast<double>(last - first + 1);
  }
  for (std::size_t i = 1; i < smooth.size(); ++i) {
    for (int t = 0; t <= 1; ++t) {  // two pixels thick
      canvas.line(x_of(static_cast<double>(i)), y_of(smooth[i - 1]) + t,
                  x_of(static_cast<double>(i + 1)), y_of(smooth[i]) + t, mean);
    }
  }
  tessera::write_png(file, canvas.image);
}

}  // namespace tessera::apps
