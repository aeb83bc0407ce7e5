// Fuzz target: an image file (io/image.hpp) through the decode path, whichever of PNG, JPEG,
// BMP or PPM/PGM its first bytes say it is. The pixel limit is lowered so that a valid
// header of a large image is refused before libFuzzer's memory limit is reached.

#include "fuzz.hpp"

#include <tessera/io/image.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz::refuse_with_error_only([&] {
    tessera::ImageLimits limits;
    limits.max_pixels = 4'000'000;
    (void)tessera::decode_image_memory(std::span<const std::uint8_t>(data, size), "fuzz", limits);
  });
}
