// Fuzz target: BPE merges, merges.txt / vocab.bpe (tokenize/bpe_merges.hpp), parsed and checked
// as a model's tokenizer is at load (tokenize/bpe.hpp "checks at load"): with a vocabulary of
// every byte and every merge result (GPT-2 and CLIP), and with one that lacks the last result.
// A tokenizer the checks accept must encode any UTF-8 text; an Error then is a finding.

#include "fuzz.hpp"

#include <tessera/tokenize/clip_bpe.hpp>
#include <tessera/tokenize/gpt2_bpe.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

namespace {

constexpr std::string_view text = "Hello world, this is 2026's tessera! ,,x,y \xC3\xA9\xE2\x82\xAC";

// Every byte (spelled in the byte alphabet; with an end_of_word, also ending a word) and every
// merge result, each once, ids in that order: the vocabulary the checks accept for `merges`.
tessera::BpeVocabulary vocabulary_of(const tessera::BpeMerges& merges, const std::string& end_of_word) {
  tessera::BpeVocabulary vocab;
  std::set<std::string> seen;
  const auto add = [&](const std::string& token) {
    if (seen.insert(token).second) vocab.emplace_back(token, static_cast<std::int64_t>(vocab.size()));
  };
  for (int byte = 0; byte < 256; ++byte) {
    const char c = static_cast<char>(byte);
    const std::string token = tessera::detail::bytes_to_token(std::string_view(&c, 1));
    add(token);
    if (!end_of_word.empty()) add(token + end_of_word);
  }
  for (const auto& [left, right] : merges) add(left + right);
  return vocab;
}

template <class Tokenizer>
void must_encode(const Tokenizer& tokenizer) {
  try {
    (void)tokenizer.encode(text);
  } catch (const tessera::Error& error) {
    std::fprintf(stderr, "a checked tokenizer failed to encode: %s\n", error.what());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz::refuse_with_error_only([&] {
    tessera::detail::BpeFiles files;
    files.source = {"Gpt2Bpe", "fuzz.json", "fuzz.txt", {}, {}};
    files.merges = tessera::detail::parse_merges(fuzz::as_text(data, size), "fuzz.txt",
                                                 &files.source.merge_lines);
    files.vocab = vocabulary_of(files.merges, "");
    fuzz::refuse_with_error_only([&] { must_encode(tessera::Gpt2Bpe(files)); });

    // CLIP's layout: "</w>" forms and the special tokens.
    tessera::BpeVocabulary clip = vocabulary_of(files.merges, "</w>");
    const auto next = static_cast<std::int64_t>(clip.size());
    clip.emplace_back("<|startoftext|>", next);
    clip.emplace_back("<|endoftext|>", next + 1);
    fuzz::refuse_with_error_only([&] { must_encode(tessera::ClipBpe(clip, files.merges)); });

    // Without the last merge's result: refused (by the merge check, or the byte check when the
    // result is a byte's token).
    if (!files.merges.empty()) {
      const std::string last = files.merges.back().first + files.merges.back().second;
      std::erase_if(files.vocab, [&](const auto& entry) { return entry.first == last; });
      try {
        (void)tessera::Gpt2Bpe(files);
      } catch (const tessera::Error&) {
        return;
      }
      std::fprintf(stderr, "a vocabulary without \"%s\" passed the checks\n", last.c_str());
      std::abort();
    }
  });
}
