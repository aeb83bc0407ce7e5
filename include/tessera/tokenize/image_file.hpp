#pragma once
// preprocess_image(path, config): SPEC 5.2 from an image file in one call, decoding
// (io/image.hpp) then the pipeline of tokenize/image.hpp.

#ifndef TESSERA_HAS_STB
#error "tessera/tokenize/image_file.hpp needs stb_image (Debian: libstb-dev); tessera's CMake defines TESSERA_HAS_STB when it finds it"
#endif

#include <tessera/io/image.hpp>
#include <tessera/model/config.hpp>
#include <tessera/tokenize/image.hpp>

#include <filesystem>

namespace tessera {

// SPEC 5.2 from a file: decode, resize the shorter side, center crop, /255, normalize.
template <class Scalar = float>
Tensor3<Scalar> preprocess_image(const std::filesystem::path& path,
                                 const ImageConfig& config,  // -> [C, S, S]
                                 const ImageLimits& limits = {}) {
  return preprocess_image<Scalar>(decode_image(path, limits), config);
}

}  // namespace tessera
