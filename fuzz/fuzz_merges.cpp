// Fuzz target: BPE merges, merges.txt / vocab.bpe (tokenize/gpt2_bpe.hpp), parsed and used by
// a tokenizer whose vocabulary holds every byte and every merge result.

#include "fuzz.hpp"

#include <tessera/tokenize/gpt2_bpe.hpp>

#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz::refuse_with_error_only([&] {
    const auto merges = tessera::detail::parse_merges(fuzz::as_text(data, size), "fuzz");
    tessera::BpeVocabulary vocab;
    std::int64_t next = 0;
    for (int byte = 0; byte < 256; ++byte) {
      const char c = static_cast<char>(byte);
      vocab.emplace_back(tessera::detail::bytes_to_token(std::string_view(&c, 1)), next++);
    }
    for (const auto& [left, right] : merges) vocab.emplace_back(left + right, next++);
    const tessera::Gpt2Bpe tokenizer(vocab, merges);
    (void)tokenizer.encode("Hello world, this is 2026's tessera!");
  });
}
