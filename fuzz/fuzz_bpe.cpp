// Fuzz target: the GPT-2 and CLIP BPE encoders (tokenize/gpt2_bpe.hpp, clip_bpe.hpp) on
// arbitrary bytes: invalid UTF-8 is an Error, anything else encodes, and GPT-2's ids decode
// back to the same bytes.

#include "fuzz.hpp"

#include <tessera/tokenize/clip_bpe.hpp>
#include <tessera/tokenize/gpt2_bpe.hpp>

#include <cstdlib>
#include <string>
#include <utility>

namespace {

// Every byte as a token, plus a few merges so that the merge loop has work to do.
tessera::BpeMerges some_merges(const std::string& end_of_word) {
  return {{"t", "h"}, {"th", "e" + end_of_word}, {"\xC4\xA0", "t"}, {"e", "r"},
          {"i", "n"}, {"a", "n"}, {"o", "n" + end_of_word}, {"\xC4\xA0t", "he"}};
}

tessera::BpeVocabulary vocabulary(const tessera::BpeMerges& merges, const std::string& end_of_word,
                                  bool clip) {
  tessera::BpeVocabulary vocab;
  std::int64_t next = 0;
  for (int byte = 0; byte < 256; ++byte) {
    const char c = static_cast<char>(byte);
    const std::string token = tessera::detail::bytes_to_token(std::string_view(&c, 1));
    vocab.emplace_back(token, next++);
    if (clip) vocab.emplace_back(token + end_of_word, next++);
  }
  for (const auto& [left, right] : merges) vocab.emplace_back(left + right, next++);
  if (clip) {
    vocab.emplace_back("<|startoftext|>", next++);
    vocab.emplace_back("<|endoftext|>", next++);
  }
  return vocab;
}

const tessera::Gpt2Bpe& gpt2() {
  static const tessera::Gpt2Bpe tokenizer(vocabulary(some_merges(""), "", false), some_merges(""));
  return tokenizer;
}

const tessera::ClipBpe& clip() {
  static const tessera::ClipBpe tokenizer(vocabulary(some_merges("</w>"), "</w>", true),
                                          some_merges("</w>"));
  return tokenizer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fuzz::as_text(data, size);
  fuzz::refuse_with_error_only([&] {
    const auto ids = gpt2().encode(text);
    if (gpt2().decode(ids) != text) std::abort();
  });
  return fuzz::refuse_with_error_only([&] { (void)clip().encode(text); });
}
