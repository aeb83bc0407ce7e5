// Fuzz target: the GPT-2 and CLIP BPE encoders (tokenize/gpt2_bpe.hpp, clip_bpe.hpp) on
// arbitrary bytes: invalid UTF-8 is an Error, anything else encodes (the tokenizers passed
// their checks at load, so no valid text may fail), and GPT-2's ids decode back to the same
// bytes.

#include "fuzz.hpp"

#include <tessera/tokenize/clip_bpe.hpp>
#include <tessera/tokenize/gpt2_bpe.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>

namespace {

// Every byte as a token, plus a few merges so that the merge loop has work to do.
tessera::BpeMerges some_merges(const std::string& end_of_word) {
  return {{"t", "h"}, {"th", "e" + end_of_word}, {"\xC4\xA0", "t"}, {"e", "r"},
          {"i", "n"}, {"a", "n"}, {"o", "n" + end_of_word}, {"\xC4\xA0t", "he"}};
}

// The CLIP vocabulary also holds its two special tokens.
tessera::BpeVocabulary clip_vocabulary(const tessera::BpeMerges& merges) {
  tessera::BpeVocabulary vocab = fuzz::byte_vocabulary(merges, "</w>");
  const auto next = static_cast<std::int64_t>(vocab.size());
  vocab.emplace_back("<|startoftext|>", next);
  vocab.emplace_back("<|endoftext|>", next + 1);
  return vocab;
}

const tessera::Gpt2Bpe& gpt2() {
  static const tessera::Gpt2Bpe tokenizer(fuzz::byte_vocabulary(some_merges("")), some_merges(""));
  return tokenizer;
}

const tessera::ClipBpe& clip() {
  static const tessera::ClipBpe tokenizer(clip_vocabulary(some_merges("</w>")), some_merges("</w>"));
  return tokenizer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fuzz::as_text(data, size);
  const bool valid = !tessera::find_invalid_utf8(text).has_value();
  // An Error is the refusal of invalid UTF-8 only.
  const auto only_invalid_text_fails = [&](auto&& encode) {
    try {
      encode();
    } catch (const tessera::Error& error) {
      if (valid || std::string_view(error.what()).find("invalid UTF-8") == std::string_view::npos) {
        std::fprintf(stderr, "%s\n", error.what());
        std::abort();
      }
    }
  };
  only_invalid_text_fails([&] {
    const auto ids = gpt2().encode(text);
    if (gpt2().decode(ids) != text) std::abort();
  });
  only_invalid_text_fails([&] { (void)clip().encode(text); });
  return 0;
}
