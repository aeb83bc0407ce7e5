// Fuzz target: a safetensors file (io/safetensors.hpp), from its 8-byte header length through
// the JSON header to every tensor read back in each scalar type it may be read as.

#include "fuzz.hpp"

#include <tessera/io/safetensors.hpp>

#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz::refuse_with_error_only([&] {
    const auto* begin = reinterpret_cast<const std::byte*>(data);
    const auto file =
        tessera::SafetensorsFile::from_bytes(std::vector<std::byte>(begin, begin + size), "fuzz");
    for (const auto& name : file.names()) {
      if (tessera::is_floating(file.info(name).dtype)) {
        (void)file.read<float>(name);
        (void)file.read<double>(name);
      } else {
        (void)file.read<std::int64_t>(name);
        try {
          (void)file.read<std::int32_t>(name);  // an Error when a value does not fit
        } catch (const tessera::Error&) {
        }
      }
    }
  });
}
