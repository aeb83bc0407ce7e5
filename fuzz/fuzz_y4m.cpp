// Fuzz target: a Y4M video (io/y4m.hpp) read through VideoReader (io/video.hpp) and sampled
// at a fixed rate by FrameSampler (tokenize/video.hpp): the header, every frame converted to
// RGB, the frame times and the sampler's walk over them. The limits are lowered so that a
// valid header of a large video is refused (per frame, in all, in samples) before libFuzzer's
// memory or time limit is reached, and so that every VideoLimits check is reachable.

#include "fuzz.hpp"

#include <tessera/io/video.hpp>
#include <tessera/io/y4m.hpp>
#include <tessera/tokenize/video.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto file = fuzz::as_file(data, size, ".y4m");
  return fuzz::refuse_with_error_only([&] {
    tessera::VideoOptions options;
    options.limits.max_pixels = 4'000'000;
    options.limits.max_total_pixels = 16'000'000;  // 4 frames of the largest size
    options.limits.max_samples = 10'000;
    tessera::FrameSampler sampler(tessera::VideoReader::open_y4m(file, options), 7.0);
    while (sampler.next()) {
    }
  });
}
