#pragma once
// The pretrained fixtures of tests/data/pretrained (written by tests/reference/make_*_fixtures.py),
// shared by the tests that load them (test_pretrained.cpp, test_search_index.cpp).

#include "test_util.hpp"

#include <filesystem>
#include <string>

namespace tessera::test {

// A pretrained fixture's directory: tests/data/pretrained/<kind> ("hf_clip", "open_clip",
// "imagebind", "towers_torchvision"), holding model/ and cases.safetensors.
inline std::filesystem::path pretrained_dir(const std::string& kind) {
  return data_dir() / "pretrained" / kind;
}

// The ImageBind fixture's model (text, image, audio and video towers, E 16) copied to `dir`
// with OpenAI's tokenizer file beside it, so that raw text works. Returns `dir`.
inline std::filesystem::path imagebind_with_tokenizer(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  fs::copy(pretrained_dir("imagebind") / "model", dir, fs::copy_options::recursive);
  fs::copy_file(data_dir() / "text" / "clip_tokenizer" / "bpe_simple_vocab_16e6.txt.gz",
                dir / "bpe_simple_vocab_16e6.txt.gz");
  return dir;
}

}  // namespace tessera::test
