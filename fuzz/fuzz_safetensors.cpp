// Fuzz target: a safetensors file (io/safetensors.hpp), from its 8-byte header length through
// the JSON header to every tensor read back in each scalar type it may be read as; and its
// checksum "tessera.crc32": the bytes as given are verified when they carry one (a random
// entry is refused), and a file that opens is written again with a checksum, which must
// verify, and then with one bit of its data flipped, which must be refused.

#include "fuzz.hpp"

#include <tessera/io/safetensors.hpp>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

namespace {

void read_every_tensor(const tessera::SafetensorsFile& file) {
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
}

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors: %s\n", what);
  std::abort();
}

// The file's tensors and metadata written again with a checksum: it opens, with the same
// contents; with one bit of its data section flipped (chosen by `seed`) it is refused.
void check_checksum_round_trip(const tessera::SafetensorsFile& file, std::size_t seed) {
  std::map<std::string, tessera::TensorData> tensors;
  std::size_t data_size = 0;
  for (const auto& name : file.names()) {
    tensors.emplace(name, file.tensor_data(name));
    data_size += tensors.at(name).bytes.size();
  }
  std::vector<std::byte> bytes =
      tessera::safetensors_bytes(tensors, file.metadata(), tessera::Checksum::crc32);
  {
    const auto summed = tessera::SafetensorsFile::from_bytes(bytes, "summed");
    if (!summed.has_checksum()) finding("a file written with a checksum has none");
    for (const auto& [name, tensor] : tensors) {
      if (summed.tensor_data(name) != tensor) finding("a tensor changed in the round trip");
    }
  }
  if (data_size == 0) return;
  const std::size_t at = bytes.size() - data_size + seed % data_size;
  bytes[at] ^= std::byte{static_cast<unsigned char>(1u << (seed / data_size % 8))};
  try {
    (void)tessera::SafetensorsFile::from_bytes(std::move(bytes), "flipped");
  } catch (const tessera::Error&) {
    return;
  }
  finding("a flipped bit in the data section was not refused");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz::refuse_with_error_only([&] {
    const auto* begin = reinterpret_cast<const std::byte*>(data);
    const auto file =
        tessera::SafetensorsFile::from_bytes(std::vector<std::byte>(begin, begin + size), "fuzz");
    read_every_tensor(file);
    std::size_t seed = 0;
    for (std::size_t i = 0; i < size; ++i) seed = seed * 31 + data[i];
    check_checksum_round_trip(file, seed);
  });
}
