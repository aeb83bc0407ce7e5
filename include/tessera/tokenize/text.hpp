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

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace tessera {

namespace detail {

// Every id of the vocabulary must be below text.vocab_size, the rows of the model's text
// embedding: the first that is not is refused, by its file and line.
inline void check_ids_fit(const BpeFiles& files, const TextConfig& text) {
  for (std::size_t i = 0; i < files.vocab.size(); ++i) {
    const auto& [token, id] = files.vocab[i];
    check(id < text.vocab_size, files.source.vocab_entry(i), ": the id ", id, " of \"", token,
          "\" is not below the model's text.vocab_size = ", text.vocab_size,
          " (config.json): the text embedding has no row for it");
  }
}

}  // namespace detail

class TextTokenizer {
 public:
  // Reads vocab.json (or encoder.json) + merges.txt (or vocab.bpe) from `dir` with the rules
  // of `text.tokenizer`. Throws tessera::Error naming the directory when they are missing,
  // and naming the file and line of the first entry at fault when they do not make a
  // tokenizer (bpe.hpp, "checks at load") or hold an id the model has no embedding row for
  // (not below text.vocab_size). So a tokenizer that loads encodes every UTF-8 text into ids
  // the model takes.
  static TextTokenizer load(const std::filesystem::path& dir, const TextConfig& text) {
    if (text.tokenizer == "clip_bpe") {
      const auto files = ClipBpe::read_files(dir);
      ClipBpe tokenizer(files);
      detail::check_ids_fit(files, text);
      return TextTokenizer(std::move(tokenizer), text);
    }
    check(text.tokenizer == "gpt2_bpe", "TextTokenizer: unknown tokenizer '", text.tokenizer, "'");
    const auto files = Gpt2Bpe::read_files(dir);
    Gpt2Bpe tokenizer(files);
    detail::check_ids_fit(files, text);
    return TextTokenizer(std::move(tokenizer), text);
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
