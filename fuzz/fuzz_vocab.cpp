// Fuzz target: a BPE vocabulary, vocab.json / encoder.json (tokenize/bpe_vocab.hpp), parsed
// and built into the id <-> token tables the tokenizers use.

#include "fuzz.hpp"

#include <tessera/tokenize/gpt2_bpe.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz::refuse_with_error_only([&] {
    const auto vocab = tessera::detail::parse_vocab_json(fuzz::as_text(data, size), "fuzz");
    const tessera::Gpt2Bpe tokenizer(vocab, {});
    (void)tokenizer.encode("fuzz");
  });
}
