#pragma once
// What every fuzz target shares (fuzz/CMakeLists.txt, docs/robustness.md).
//
// A target hands libFuzzer's bytes to one parser. Refusing the bytes with tessera::Error is
// the contract; anything else is a finding that libFuzzer reports and saves: a crash or a
// sanitizer report, an exception of another type (it escapes LLVMFuzzerTestOneInput and
// aborts), an internal assertion (TESSERA_ASSERT's Error, turned into an abort here), an
// allocation above -malloc_limit_mb, or an input slower than -timeout.

#include <tessera/core/error.hpp>
#include <tessera/tokenize/bpe_merges.hpp>
#include <tessera/tokenize/bpe_vocab.hpp>
#include <tessera/tokenize/byte_alphabet.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include <unistd.h>

namespace fuzz {

// Runs `parse`; a tessera::Error is an accepted refusal, unless it reports a broken invariant.
template <class Parse>
int refuse_with_error_only(Parse&& parse) {
  try {
    parse();
  } catch (const tessera::Error& error) {
    if (std::string_view(error.what()).starts_with("tessera internal error")) {
      std::fprintf(stderr, "%s\n", error.what());
      std::abort();
    }
  }
  return 0;
}

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// A file of this process in the temp directory ("tessera-fuzz-<pid><suffix>"), removed when
// the object is destroyed: a static one lives for the whole run and is removed at exit.
class ScratchFile {
 public:
  explicit ScratchFile(const std::string& suffix)
      : path_(std::filesystem::temp_directory_path() /
              ("tessera-fuzz-" + std::to_string(::getpid()) + suffix)) {}
  ~ScratchFile() {
    std::error_code ignored;
    std::filesystem::remove(path_, ignored);
  }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;

  const std::filesystem::path& path() const { return path_; }

  // Replaces the file's contents with `size` bytes at `data`; aborts when it cannot.
  const std::filesystem::path& write(const std::uint8_t* data, std::size_t size) const {
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    out.close();
    if (!out) {
      std::fprintf(stderr, "fuzz: cannot write %s\n", path_.c_str());
      std::abort();
    }
    return path_;
  }

 private:
  std::filesystem::path path_;
};

// For the parsers that read a path: the bytes written to one file per process, rewritten for
// every input (the fuzzers run one input at a time). The file is named with the extension of
// the first call; a target passes the same one every time.
inline std::filesystem::path as_file(const std::uint8_t* data, std::size_t size,
                                     const char* extension) {
  static const ScratchFile file(extension);
  return file.write(data, size);
}

// For the BPE targets: a vocabulary of every byte (spelled in the byte alphabet) and every
// merge result, ids in that order, so that a tokenizer with `merges` encodes any text. With
// an end_of_word (CLIP's "</w>"), each byte is followed by itself ending a word.
inline tessera::BpeVocabulary byte_vocabulary(const tessera::BpeMerges& merges,
                                              const std::string& end_of_word = "") {
  tessera::BpeVocabulary vocab;
  std::int64_t next = 0;
  for (int byte = 0; byte < 256; ++byte) {
    const char c = static_cast<char>(byte);
    const std::string token = tessera::detail::bytes_to_token(std::string_view(&c, 1));
    vocab.emplace_back(token, next++);
    if (!end_of_word.empty()) vocab.emplace_back(token + end_of_word, next++);
  }
  for (const auto& [left, right] : merges) vocab.emplace_back(left + right, next++);
  return vocab;
}

}  // namespace fuzz
