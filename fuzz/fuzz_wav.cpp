// Fuzz target: a WAV file (io/wav.hpp) read to samples, each channel layout and sample format
// the header may claim.

#include "fuzz.hpp"

#include <tessera/io/wav.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz::refuse_with_error_only([&] {
    (void)tessera::read_wav<float>(std::span<const std::uint8_t>(data, size), {}, "fuzz");
  });
}
