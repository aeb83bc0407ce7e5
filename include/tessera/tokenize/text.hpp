#pragma once
// TextTokenizer: a model directory's text tokenizer (SPEC 1 and 5.1). config.json's
// text.tokenizer picks the rules (gpt2_bpe or clip_bpe); vocab.json + merges.txt beside it
// hold the vocabulary. encode() cuts to text.max_tokens with a tessera::warn, as SPEC 5.1 asks.

#ifndef TESSERA_HAS_ICU
#error "tessera/tokenize/text.hpp needs ICU (through the tokenizers): install libicu-dev and reconfigure, so that CMake finds ICU and defines TESSERA_HAS_ICU"
#endif

#include <tessera/core/error.hpp>
#include <tessera/model/config.hpp>
#include <tessera/tokenize/clip_bpe.hpp>
#include <tessera/tokenize/gpt2_bpe.hpp>

#include <cstdint>
#include <filesystem>
#include <string_view>
#include <variant>
#include <vector>

namespace tessera {

class TextTokenizer {
 public:
  // Reads vocab.json (or encoder.json) + merges.txt (or vocab.bpe) from `dir` with the rules
  // of `text.tokenizer`. Throws tessera::Error naming the directory when they are missing.
  static TextTokenizer load(const std::filesystem::path& dir, const TextConfig& text) {
    if (text.tokenizer == "clip_bpe") return TextTokenizer(ClipBpe::load(dir), text);
    check(text.tokenizer == "gpt2_bpe", "TextTokenizer: unknown tokenizer '", text.tokenizer, "'");
    return TextTokenizer(Gpt2Bpe::load(dir), text);
  }

  // The ids of `text` (UTF-8), at most text.max_tokens of them.
  std::vector<std::int64_t> encode(std::string_view text) const {
    const auto max_tokens = static_cast<std::size_t>(config_.max_tokens);
    return std::visit([&](const auto& t) { return t.encode(text, max_tokens); }, tokenizer_);
  }

  const TextConfig& config() const { return config_; }

 private:
  TextTokenizer(std::variant<Gpt2Bpe, ClipBpe> tokenizer, const TextConfig& text)
      : tokenizer_(std::move(tokenizer)), config_(text) {}

  std::variant<Gpt2Bpe, ClipBpe> tokenizer_;
  TextConfig config_;
};

}  // namespace tessera
