// Fuzz target: a Y4M video (io/y4m.hpp), header and every frame converted to RGB.

#include "fuzz.hpp"

#include <tessera/io/y4m.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto file = fuzz::as_file(data, size, ".y4m");
  return fuzz::refuse_with_error_only([&] {
    tessera::VideoLimits limits;
    limits.max_pixels = 4'000'000;
    tessera::Y4mReader reader(file, limits);
    while (reader.read_frame()) {
    }
  });
}
