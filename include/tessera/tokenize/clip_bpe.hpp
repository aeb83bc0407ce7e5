#pragma once
// ClipBpe: OpenAI CLIP's tokenizer (SPEC 5.1 `clip_bpe`), following simple_tokenizer.py of
// github.com/openai/CLIP and its clip.tokenize. The rules, in the order encode applies them
// (docs/text.md has the details):
//
// 1. The text must be UTF-8 (else tessera::Error with the byte offset).
// 2. Lowercased with the full Unicode mapping (ICU, root locale: "İ" -> "i̇", final sigma),
//    which is what Python's str.lower does.
// 3. Whitespace: leading and trailing characters that Python's str.strip removes are dropped
//    (the `regex` \s set plus U+001C..U+001F); inside the text whitespace only separates
//    tokens (CLIP collapses runs to one space, which its pattern then skips).
//    \s here is the `regex` module's: TAB..CR, SPACE, U+0085, U+00A0, U+1680, U+2000..U+200A,
//    U+2028, U+2029, U+202F, U+205F, U+3000 (not U+FEFF, unlike JavaScript).
// 4. Pre-tokens by CLIP's pattern (Python `regex`, IGNORECASE), left to right:
//      <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//    so letters run together, every digit is a token of its own, and other characters run
//    together. Characters matching no alternative are skipped: whitespace, and U+0345 (which
//    IGNORECASE makes neither a letter nor a non-letter). 'ſ counts as 's (case folding).
// 5. Each pre-token's bytes map to characters by bytes_to_unicode; the last character gets
//    "</w>" appended; BPE with the merges (lowest rank first, every occurrence left to
//    right). "<|startoftext|>" / "<|endoftext|>" in the text become their ids directly.
// 6. ids = [<|startoftext|>] + tokens + [<|endoftext|>]. With max_tokens, a longer list is
//    cut to max_tokens and its last id set to <|endoftext|> (clip.tokenize(truncate=True)),
//    with a tessera::warn saying so.
//
// Not done: ftfy.fix_text and html.unescape of CLIP's basic_clean (mojibake repair, NFC,
// HTML entities); give the tokenizer clean NFC text.
//
// encode is const and safe to call from several threads at once (thread_local word cache).
//
// What ClipBpe shares with Gpt2Bpe (vocabulary, merges, the merge loop, the word cache) is in
// tokenize/bpe.hpp; CLIP's own part (lowercasing, its pattern and whitespace, "</w>", the
// special tokens) is here.

#ifndef TESSERA_HAS_ICU
#error "tessera/tokenize/clip_bpe.hpp needs ICU for lowercasing and Unicode character properties: install libicu-dev (Debian/Ubuntu) and reconfigure, so that CMake finds ICU and defines TESSERA_HAS_ICU"
#endif

#include <tessera/core/error.hpp>
#include <tessera/core/warning.hpp>
#include <tessera/tokenize/bpe.hpp>
#include <tessera/tokenize/char_class.hpp>
#include <tessera/tokenize/utf8.hpp>

#include <unicode/uchar.h>
#include <unicode/ustring.h>
#include <unicode/utypes.h>

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

// Python `regex`'s \s (the White_Space property).
inline bool is_python_regex_space(char32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= '\t' && cp <= '\r');
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

// Full Unicode lowercase of UTF-8 text (ICU root locale), as Python's str.lower.
inline std::string unicode_lower(std::string_view text, std::string_view context) {
  if (text.empty()) return {};
  UErrorCode status = U_ZERO_ERROR;
  std::u16string utf16(text.size() + 1, u'\0');
  int32_t utf16_length = 0;
  u_strFromUTF8(reinterpret_cast<UChar*>(utf16.data()), static_cast<int32_t>(utf16.size()),
                &utf16_length, text.data(), static_cast<int32_t>(text.size()), &status);
  check(U_SUCCESS(status), context, ": ICU could not convert the text to UTF-16: ",
        u_errorName(status));
  std::u16string lower(static_cast<std::size_t>(utf16_length) + 16, u'\0');
  for (int attempt = 0; attempt < 2; ++attempt) {
    status = U_ZERO_ERROR;
    const int32_t length =
        u_strToLower(reinterpret_cast<UChar*>(lower.data()), static_cast<int32_t>(lower.size()),
                     reinterpret_cast<const UChar*>(utf16.data()), utf16_length, "", &status);
    if (status == U_BUFFER_OVERFLOW_ERROR) {
      lower.assign(static_cast<std::size_t>(length) + 1, u'\0');
      continue;
    }
    check(U_SUCCESS(status), context, ": ICU could not lowercase the text: ", u_errorName(status));
    lower.resize(static_cast<std::size_t>(length));
    break;
  }
  std::string out(lower.size() * 3 + 1, '\0');
  int32_t out_length = 0;
  status = U_ZERO_ERROR;
  u_strToUTF8(out.data(), static_cast<int32_t>(out.size()), &out_length,
              reinterpret_cast<const UChar*>(lower.data()), static_cast<int32_t>(lower.size()),
              &status);
  check(U_SUCCESS(status), context, ": ICU could not convert the text to UTF-8: ",
        u_errorName(status));
  out.resize(static_cast<std::size_t>(out_length));
  return out;
}

// A CLIP pre-token: bytes [begin, end) of the lowercased text, or a special token.
struct ClipPiece {
  std::size_t begin = 0, end = 0;
  int special = 0;  // 0: text, 1: <|startoftext|>, 2: <|endoftext|>
};

inline std::vector<ClipPiece> clip_pretokenize(std::string_view lower, const DecodedText& d) {
  static constexpr std::string_view start_text = "<|startoftext|>";
  static constexpr std::string_view end_text = "<|endoftext|>";
  const auto& cps = d.code_points;
  const auto& cls = d.classes;
  const auto skipped = [&](std::size_t i) {
    return cls[i] == CharClass::space || cps[i] == 0x345;
  };
  // str.strip: leading and trailing whitespace, U+001C..U+001F included.
  const auto strippable = [&](std::size_t i) {
    return cls[i] == CharClass::space || (cps[i] >= 0x1C && cps[i] <= 0x1F);
  };
  std::size_t first = 0, last = cps.size();
  while (first < last && strippable(first)) ++first;
  while (last > first && strippable(last - 1)) --last;

  std::vector<ClipPiece> pieces;
  std::size_t i = first;
  while (i < last) {
    if (skipped(i)) {
      ++i;
      continue;
    }
    const std::string_view rest = lower.substr(d.offset[i], d.offset[last] - d.offset[i]);
    if (rest.starts_with(start_text) || rest.starts_with(end_text)) {
      const bool is_start = rest.starts_with(start_text);
      const std::size_t bytes = is_start ? start_text.size() : end_text.size();
      pieces.push_back({d.offset[i], d.offset[i] + bytes, is_start ? 1 : 2});
      i += bytes;  // the special strings are ASCII: one code point per byte
      continue;
    }
    std::size_t end = i + 1;
    if (cps[i] == U'\'' && i + 1 < last &&
        (cps[i + 1] == U's' || cps[i + 1] == 0x17F || cps[i + 1] == U't' || cps[i + 1] == U'm' ||
         cps[i + 1] == U'd')) {
      end = i + 2;
    } else if (cps[i] == U'\'' && i + 2 < last &&
               ((cps[i + 1] == U'r' && cps[i + 2] == U'e') ||
                (cps[i + 1] == U'v' && cps[i + 2] == U'e') ||
                (cps[i + 1] == U'l' && cps[i + 2] == U'l'))) {
      end = i + 3;
    } else if (cls[i] == CharClass::letter) {
      while (end < last && cls[end] == CharClass::letter) ++end;
    } else if (cls[i] == CharClass::number) {
      // [\p{N}]: one character
    } else {
      while (end < last && cls[end] == CharClass::other && cps[end] != 0x345) ++end;
    }
    pieces.push_back({d.offset[i], d.offset[end], 0});
    i = end;
  }
  return pieces;
}

}  // namespace detail

class ClipBpe {
 public:
  static constexpr std::string_view start_token = "<|startoftext|>";
  static constexpr std::string_view end_token = "<|endoftext|>";
  static constexpr std::string_view end_of_word = "</w>";

  // From tokens and merges in memory. Checked as load checks files (bpe.hpp, "checks at
  // load"), the messages naming entries by their index; the vocabulary must also hold
  // <|startoftext|> and <|endoftext|>.
  ClipBpe(const BpeVocabulary& vocab, const BpeMerges& merges)
      : ClipBpe(vocab, merges, detail::BpeSource{"ClipBpe", {}, {}, {}, {}}) {}

  // From files read by read_files: the checks name the file and line of the entry at fault.
  explicit ClipBpe(const detail::BpeFiles& files) : ClipBpe(files.vocab, files.merges, files.source) {}

  // vocab.json and merges.txt of a directory (CLIP's files in the Hugging Face layout: tokens
  // with "</w>", merges.txt with a `#version` first line), read and parsed, not yet checked.
  static detail::BpeFiles read_files(const std::filesystem::path& directory) {
    return read_files(directory / "vocab.json", directory / "merges.txt");
  }
  static detail::BpeFiles read_files(const std::filesystem::path& vocab_file,
                                     const std::filesystem::path& merges_file) {
    return detail::read_bpe_files(vocab_file, merges_file, "ClipBpe::load", "ClipBpe");
  }

  // From a directory holding vocab.json and merges.txt.
  static ClipBpe load(const std::filesystem::path& directory) { return ClipBpe(read_files(directory)); }

  static ClipBpe load(const std::filesystem::path& vocab_file,
                      const std::filesystem::path& merges_file) {
    return ClipBpe(read_files(vocab_file, merges_file));
  }

  // [<|startoftext|>, tokens..., <|endoftext|>], not cut.
  std::vector<std::int64_t> encode(std::string_view text) const {
    validate_utf8(text, "ClipBpe::encode");
    const std::string lower = detail::unicode_lower(text, "ClipBpe::encode");
    const auto decoded =
        detail::decode_and_classify(lower, "ClipBpe::encode", detail::is_python_regex_space);
    std::vector<std::int64_t> ids{start_id_};
    auto& cache = bpe_.thread_cache<ClipBpe>();
    detail::BpeWorkspace ws;
    for (const auto& piece : detail::clip_pretokenize(lower, decoded)) {
      if (piece.special != 0) {
        ids.push_back(piece.special == 1 ? start_id_ : end_id_);
        continue;
      }
      bpe_.encode_piece(std::string_view(lower).substr(piece.begin, piece.end - piece.begin), cache,
                        ws, ids);
    }
    ids.push_back(end_id_);
    return ids;
  }

  // encode, cut to max_tokens (>= 2) ids ending with <|endoftext|> when longer, with a
  // tessera::warn saying so.
  std::vector<std::int64_t> encode(std::string_view text, std::size_t max_tokens) const {
    check(max_tokens >= 2, "ClipBpe::encode: max_tokens = ", max_tokens,
          " leaves no room for <|startoftext|> and <|endoftext|> (at least 2)");
    auto ids = encode(text);
    if (ids.size() > max_tokens) {
      warn("ClipBpe::encode: the text has ", ids.size(),
           " tokens with <|startoftext|> and <|endoftext|>, more than max_tokens = ", max_tokens,
           "; cut to ", max_tokens, ", the last one set to <|endoftext|>");
      ids.resize(max_tokens);
      ids.back() = end_id_;
    }
    return ids;
  }

  // CLIP's decode: the tokens' bytes concatenated, every "</w>" replaced by a space. The
  // special tokens decode to their text. Bytes are returned as they are (no U+FFFD).
  std::string decode(std::span<const std::int64_t> ids) const {
    const std::string bytes = bpe_.vocab().bytes(ids, "ClipBpe::decode");
    std::string out;
    out.reserve(bytes.size());
    for (std::size_t pos = 0; pos < bytes.size();) {
      if (std::string_view(bytes).substr(pos).starts_with(end_of_word)) {
        out += ' ';
        pos += end_of_word.size();
      } else {
        out += bytes[pos++];
      }
    }
    return out;
  }

  std::int64_t start_id() const { return start_id_; }
  std::int64_t end_id() const { return end_id_; }
  std::size_t size() const { return bpe_.vocab().encoder.size(); }
  std::int64_t token_to_id(std::string_view token) const { return bpe_.vocab().id(token); }

 private:
  ClipBpe(const BpeVocabulary& vocab, const BpeMerges& merges, const detail::BpeSource& source)
      : bpe_(vocab, merges, ' ', end_of_word, source),
        start_id_(token_to_id(start_token)),
        end_id_(token_to_id(end_token)) {
    for (const std::string_view special : {start_token, end_token}) {
      check(token_to_id(special) >= 0, source.vocab_name(), ": the special token \"", special,
            "\" is missing: ClipBpe begins every text with <|startoftext|> and ends it with "
            "<|endoftext|> (CLIP's ids 49406 and 49407)");
    }
  }

  detail::BpeEncoder bpe_;  // the vocabulary, the merges keyed by a + " " + b, "</w>"
  std::int64_t start_id_ = -1, end_id_ = -1;
};

}  // namespace tessera
