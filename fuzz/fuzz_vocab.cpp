// Fuzz target: a BPE vocabulary, vocab.json / encoder.json (tokenize/bpe_vocab.hpp), parsed,
// built into the id <-> token tables the tokenizers use, and checked as a model's tokenizer
// is at load (tokenize/bpe.hpp "checks at load", text.hpp's ids against text.vocab_size).
// Once the checks pass, encoding valid UTF-8 must never fail.

#include "fuzz.hpp"

#include <tessera/tokenize/gpt2_bpe.hpp>
#include <tessera/tokenize/text.hpp>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz::refuse_with_error_only([&] {
    tessera::detail::BpeFiles files;
    files.source = {"Gpt2Bpe", "fuzz.json", "fuzz.txt", {}, {}};
    files.vocab = tessera::detail::parse_vocab_json(fuzz::as_text(data, size), "fuzz.json",
                                                    &files.source.vocab_lines);
    // As read: refused unless it holds the token of every byte.
    fuzz::refuse_with_error_only([&] { (void)tessera::Gpt2Bpe(files); });

    // Completed with the byte tokens it lacks (ids after its largest) and one merge, so that
    // the later checks run on it too.
    std::set<std::string> tokens;
    std::int64_t next = 0;
    for (const auto& [token, id] : files.vocab) {
      tokens.insert(token);
      next = std::max(next, id + 1);
    }
    for (int byte = 0; byte < 256; ++byte) {
      const char c = static_cast<char>(byte);
      const std::string token = tessera::detail::bytes_to_token(std::string_view(&c, 1));
      if (tokens.insert(token).second) files.vocab.emplace_back(token, next++);
    }
    files.merges = {{"f", "u"}};
    if (tokens.insert("fu").second) files.vocab.emplace_back("fu", next++);
    const tessera::Gpt2Bpe tokenizer(files);
    tessera::TextConfig text;
    text.vocab_size = 300 + static_cast<tessera::Index>(size % 64);
    fuzz::refuse_with_error_only([&] { tessera::detail::check_ids_fit(files, text); });
    // Checked, the tokenizer encodes any UTF-8 text: an Error now is a check that let it pass.
    try {
      (void)tokenizer.encode("fuzz \xC3\xA9t\xC3\xA9 2026!");
    } catch (const tessera::Error& error) {
      std::fprintf(stderr, "a checked tokenizer failed to encode: %s\n", error.what());
      std::abort();
    }
  });
}
