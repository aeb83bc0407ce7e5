// Fuzz target: BPE merges, merges.txt / vocab.bpe (tokenize/bpe_merges.hpp), parsed and used by
// a tokenizer whose vocabulary holds every byte and every merge result.

#include "fuzz.hpp"

#include <tessera/tokenize/gpt2_bpe.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz::refuse_with_error_only([&] {
    const auto merges = tessera::detail::parse_merges(fuzz::as_text(data, size), "fuzz");
    const tessera::Gpt2Bpe tokenizer(fuzz::byte_vocabulary(merges), merges);
    (void)tokenizer.encode("Hello world, this is 2026's tessera!");
  });
}
