#pragma once
// Image: an 8-bit RGB picture in memory, what decoders (io/image.hpp, io/y4m.hpp, io/video.hpp)
// produce and the image pipeline (tokenize/image.hpp) consumes.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>

#include <cstdint>
#include <vector>

namespace tessera {

// An 8-bit RGB image, rows top to bottom: channel c of pixel (y, x) is
// rgb[(y * width + x) * 3 + c].
struct Image {
  Index width = 0;
  Index height = 0;
  std::vector<std::uint8_t> rgb;  // [H, W, 3] row-major, interleaved R, G, B

  Image() = default;
  Image(Index width_, Index height_)
      : width(width_), height(height_), rgb(static_cast<std::size_t>(width_ * height_ * 3)) {}

  std::uint8_t* pixel(Index y, Index x) { return rgb.data() + 3 * (y * width + x); }
  const std::uint8_t* pixel(Index y, Index x) const { return rgb.data() + 3 * (y * width + x); }
  bool operator==(const Image&) const = default;
};

namespace detail {

inline void check_image(const Image& image, const char* what) {
  check(image.width > 0 && image.height > 0, what, ": the image is empty (", image.width, " x ",
        image.height, " pixels)");
  check(image.rgb.size() == static_cast<std::size_t>(image.width * image.height * 3), what,
        ": the image holds ", image.rgb.size(), " bytes, expected width * height * 3 = ",
        image.width * image.height * 3);
}

}  // namespace detail

}  // namespace tessera
