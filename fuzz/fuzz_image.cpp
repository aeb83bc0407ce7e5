// Fuzz target: an image file (io/image.hpp) through the decode path, whichever of PNG, JPEG,
// BMP or PPM/PGM its first bytes say it is, then the resize and crop of SPEC 5.2
// (tokenize/image.hpp), whose work must follow the crop whatever the aspect ratio. The pixel
// limit is lowered so that a valid header of a large image is refused before libFuzzer's
// memory limit is reached.

#include "fuzz.hpp"

#include <tessera/io/image.hpp>
#include <tessera/tokenize/image.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz::refuse_with_error_only([&] {
    tessera::ImageLimits limits;
    limits.max_pixels = 4'000'000;
    const std::span<const std::uint8_t> bytes(data, size);
    (void)tessera::read_image_size(bytes, "fuzz", limits);
    const tessera::Image image = tessera::decode_image_memory(bytes, "fuzz", limits);
    (void)tessera::preprocess_image_u8(image, 16);
  });
}
