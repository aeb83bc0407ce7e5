// Fuzz target: a BPE vocabulary, vocab.json / encoder.json (tokenize/gpt2_bpe.hpp), parsed
// and built into the id <-> token tables the tokenizers use.

#include "fuzz.hpp"

#include <tessera/tokenize/gpt2_bpe.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz::refuse_with_error_only([&] {
    const auto vocab = tessera::detail::VocabJsonParser(fuzz::as_text(data, size), "fuzz").parse();
    const tessera::Gpt2Bpe tokenizer(vocab, {});
    (void)tokenizer.encode("fuzz");
  });
}
