#pragma once
// ClipBpe: OpenAI CLIP's tokenizer (SPEC 5.1 `clip_bpe`), following simple_tokenizer.py of
// github.com/openai/CLIP (SimpleTokenizer) and its clip.tokenize. The rules, in the order
// encode applies them (docs/text.md has the details):
//
// 1. The text must be UTF-8 (else tessera::Error with the byte offset).
// 2. Cleaning, CLIP's basic_clean: ftfy.fix_text's Unicode normalisation (NFC, through ICU;
//    ftfy's other fixes are not done: docs/text.md lists them), then Python's html.unescape
//    twice (tokenize/html_unescape.hpp: "&amp;amp;" -> "&", "&#x41;" -> "A").
// 3. Lowercased with the full Unicode mapping (ICU, root locale: "İ" -> "i̇", final sigma),
//    which is what Python's str.lower does.
// 4. Whitespace: leading and trailing characters that Python's str.strip removes are dropped
//    (the `regex` \s set plus U+001C..U+001F); inside the text whitespace only separates
//    tokens (CLIP collapses runs to one space, which its pattern then skips).
//    \s here is the `regex` module's: TAB..CR, SPACE, U+0085, U+00A0, U+1680, U+2000..U+200A,
//    U+2028, U+2029, U+202F, U+205F, U+3000 (not U+FEFF, unlike JavaScript).
// 5. Pre-tokens by CLIP's pattern (Python `regex`, IGNORECASE), left to right:
//      <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//    so letters run together, every digit is a token of its own, and other characters run
//    together. Characters matching no alternative are skipped: whitespace, and U+0345 (which
//    IGNORECASE makes neither a letter nor a non-letter). 'ſ counts as 's (case folding).
// 6. Each pre-token's bytes map to characters by bytes_to_unicode; the last character gets
//    "</w>" appended; BPE with the merges (lowest rank first, every occurrence left to
//    right). "<|startoftext|>" / "<|endoftext|>" in the text become their ids directly.
//    These ids are SimpleTokenizer.encode's: encode_simple(text).
// 7. encode(text) = [<|startoftext|>] + encode_simple(text) + [<|endoftext|>]. With
//    max_tokens, a longer list is cut to max_tokens and its last id set to <|endoftext|>
//    (clip.tokenize(truncate=True)), with a tessera::warn saying so. tokenize(text,
//    context_length, overflow) is clip.tokenize's row: refused when too long unless
//    Overflow::truncate, as clip.tokenize raises unless truncate=True.
//
// Files, in either form (load / read_files of a directory): Hugging Face's vocab.json +
// merges.txt, or OpenAI's bpe_simple_vocab_16e6.txt.gz (what CLIP, open_clip and ImageBind
// ship), from which the vocabulary is built as SimpleTokenizer.__init__ builds it.
//
// encode is const and safe to call from several threads at once (thread_local word cache).
//
// What ClipBpe shares with Gpt2Bpe (vocabulary, merges, the merge loop, the word cache) is in
// tokenize/bpe.hpp; CLIP's own part (cleaning, lowercasing, its pattern and whitespace,
// "</w>", the special tokens, the .gz form) is here.

#ifndef TESSERA_HAS_ICU
#error "tessera/tokenize/clip_bpe.hpp needs ICU for lowercasing and Unicode character properties: install libicu-dev (Debian/Ubuntu) and reconfigure, so that CMake finds ICU and defines TESSERA_HAS_ICU"
#endif

#include <tessera/core/error.hpp>
#include <tessera/core/warning.hpp>
#include <tessera/io/gzip.hpp>
#include <tessera/io/read_file.hpp>
#include <tessera/tokenize/bpe.hpp>
#include <tessera/tokenize/byte_alphabet.hpp>
#include <tessera/tokenize/char_class.hpp>
#include <tessera/tokenize/html_unescape.hpp>
#include <tessera/tokenize/utf8.hpp>

#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <unicode/utypes.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
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

// UTF-8 (valid) to UTF-16 and back, through ICU.
inline std::u16string icu_utf16(std::string_view text, std::string_view context) {
  UErrorCode status = U_ZERO_ERROR;
  std::u16string utf16(text.size() + 1, u'\0');
  int32_t length = 0;
  u_strFromUTF8(reinterpret_cast<UChar*>(utf16.data()), static_cast<int32_t>(utf16.size()), &length,
                text.data(), static_cast<int32_t>(text.size()), &status);
  check(U_SUCCESS(status), context, ": ICU could not convert the text to UTF-16: ",
        u_errorName(status));
  utf16.resize(static_cast<std::size_t>(length));
  return utf16;
}

inline std::string icu_utf8(std::u16string_view utf16, std::string_view context) {
  std::string out(utf16.size() * 3 + 1, '\0');
  int32_t length = 0;
  UErrorCode status = U_ZERO_ERROR;
  u_strToUTF8(out.data(), static_cast<int32_t>(out.size()), &length,
              reinterpret_cast<const UChar*>(utf16.data()), static_cast<int32_t>(utf16.size()),
              &status);
  check(U_SUCCESS(status), context, ": ICU could not convert the text to UTF-8: ",
        u_errorName(status));
  out.resize(static_cast<std::size_t>(length));
  return out;
}

inline bool is_ascii(std::string_view text) {
  for (const char c : text) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

// Full Unicode lowercase of UTF-8 text (ICU root locale), as Python's str.lower.
inline std::string unicode_lower(std::string_view text, std::string_view context) {
  if (text.empty()) return {};
  const std::u16string utf16 = icu_utf16(text, context);
  std::u16string lower(utf16.size() + 16, u'\0');
  for (int attempt = 0; attempt < 2; ++attempt) {
    UErrorCode status = U_ZERO_ERROR;
    const int32_t length =
        u_strToLower(reinterpret_cast<UChar*>(lower.data()), static_cast<int32_t>(lower.size()),
                     reinterpret_cast<const UChar*>(utf16.data()),
                     static_cast<int32_t>(utf16.size()), "", &status);
    if (status == U_BUFFER_OVERFLOW_ERROR) {
      lower.assign(static_cast<std::size_t>(length) + 1, u'\0');
      continue;
    }
    check(U_SUCCESS(status), context, ": ICU could not lowercase the text: ", u_errorName(status));
    lower.resize(static_cast<std::size_t>(length));
    break;
  }
  return icu_utf8(lower, context);
}

// Unicode normalisation form C of UTF-8 text (ICU), as Python's unicodedata.normalize("NFC")
// and so ftfy.fix_text's default normalisation. ASCII text is NFC as it is.
inline std::string unicode_nfc(std::string_view text, std::string_view context) {
  if (is_ascii(text)) return std::string(text);
  UErrorCode status = U_ZERO_ERROR;
  const UNormalizer2* nfc = unorm2_getNFCInstance(&status);
  check(U_SUCCESS(status), context, ": ICU has no NFC normaliser: ", u_errorName(status));
  const std::u16string utf16 = icu_utf16(text, context);
  // Room for the text and a little growth; ICU says what a longer result needs.
  std::u16string normal(utf16.size() + 16, u'\0');
  for (int attempt = 0; attempt < 2; ++attempt) {
    status = U_ZERO_ERROR;
    const int32_t length = unorm2_normalize(
        nfc, reinterpret_cast<const UChar*>(utf16.data()), static_cast<int32_t>(utf16.size()),
        reinterpret_cast<UChar*>(normal.data()), static_cast<int32_t>(normal.size()), &status);
    if (status == U_BUFFER_OVERFLOW_ERROR) {
      normal.assign(static_cast<std::size_t>(length) + 1, u'\0');
      continue;
    }
    check(U_SUCCESS(status), context, ": ICU could not normalise the text (NFC): ",
          u_errorName(status));
    normal.resize(static_cast<std::size_t>(length));
    break;
  }
  return icu_utf8(normal, context);
}

// CLIP's basic_clean before its strip (which the pre-tokenizer does): ftfy.fix_text's NFC,
// then html.unescape twice. `text` must be valid UTF-8.
inline std::string clip_clean(std::string_view text, std::string_view context) {
  const std::string normal = unicode_nfc(text, context);
  return html_unescape(html_unescape(normal));
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

// Python's str.isspace (what str.split() splits on): the `regex` \s set and U+001C..U+001F.
inline bool is_python_str_space(char32_t cp) {
  return is_python_regex_space(cp) || (cp >= 0x1C && cp <= 0x1F);
}

// The vocabulary and merges SimpleTokenizer.__init__ builds from the decompressed text of
// bpe_simple_vocab_16e6.txt.gz (`file` names it in messages):
//   lines = text.split('\n'); merges = lines[1 : 49152 - 256 - 2 + 1]   (line 1 is skipped)
//   vocab = the 256 characters of bytes_to_unicode in its order, the same with "</w>", the
//           result of each merge, "<|startoftext|>", "<|endoftext|>"; ids in that order.
// So at most `max_merges` (48894) merges are used; a shorter file gives fewer (as in Python).
// Refused where Python would build something no tokenizer means: invalid UTF-8 (Python's
// decode raises too), a merge line that is not two symbols (Python would make a tuple of
// another length, which never merges but still takes an id), a merge whose result is already
// a token (Python's dict keeps the later id and orphans the earlier). An empty last line (the
// file's final newline) is not a merge.
inline BpeFiles clip_bpe_from_gz_text(std::string_view text, const std::string& file,
                                      std::size_t max_merges) {
  if (const auto problem = find_invalid_utf8(text)) {
    fail(file, ": invalid UTF-8 at byte ", problem->offset, " of the decompressed text: ",
         problem->reason);
  }
  BpeFiles files;
  files.source.who = "ClipBpe";
  files.source.vocab_file = file;
  files.source.merges_file = file;

  std::unordered_map<std::string, std::size_t, StringHash, std::equal_to<>> line_of_token;
  // The tokens of the merges come first in files.vocab, so that vocab_lines names their line;
  // the bytes and the special tokens follow (named by the file alone).
  const std::int64_t first_merge_id = 512;
  std::size_t pos = text.find('\n');
  std::size_t line_number = 1;  // the first line ("#version: 0.2") is skipped unread
  while (pos != std::string_view::npos && files.merges.size() < max_merges) {
    const std::size_t begin = pos + 1;
    pos = text.find('\n', begin);
    const std::string_view line =
        text.substr(begin, (pos == std::string_view::npos ? text.size() : pos) - begin);
    ++line_number;
    if (line.empty() && pos == std::string_view::npos) break;  // after the final newline
    const std::u32string cps = decode_utf8(line, file);
    std::vector<std::string> parts;
    std::string part;
    for (const char32_t cp : cps) {
      if (is_python_str_space(cp)) {
        if (!part.empty()) parts.push_back(std::move(part));
        part.clear();
      } else {
        append_utf8(part, cp);
      }
    }
    if (!part.empty()) parts.push_back(std::move(part));
    if (parts.size() != 2) {
      fail(file, ":", line_number, ": expected a merge of two symbols separated by a space, found ",
           parts.size(), " field", parts.size() == 1 ? "" : "s", " in '", line,
           "' (SimpleTokenizer takes lines 2 to ", max_merges + 1, " as merges)");
    }
    std::string made = parts[0] + parts[1];
    const auto [it, fresh] = line_of_token.emplace(made, line_number);
    if (!fresh) {
      fail(file, ":", line_number, ": the merge \"", parts[0], " ", parts[1], "\" makes \"", made,
           "\", which line ", it->second, " made already: SimpleTokenizer would give the token two "
           "ids and keep the later");
    }
    files.vocab.emplace_back(std::move(made),
                             first_merge_id + static_cast<std::int64_t>(files.merges.size()));
    files.source.vocab_lines.push_back(line_number);
    files.source.merge_lines.push_back(line_number);
    files.merges.emplace_back(std::move(parts[0]), std::move(parts[1]));
  }
  // bytes_to_unicode's values in order: the bytes that stand for themselves, then the others
  // (U+0100, U+0101, ...): that is, the characters of the alphabet by increasing code point.
  const auto& alphabet = byte_alphabet();
  std::vector<std::string> bytes;
  for (const bool printable : {true, false}) {
    for (std::size_t b = 0; b < 256; ++b) {
      if ((alphabet.to_char[b] < 256) == printable) bytes.push_back(alphabet.to_utf8[b]);
    }
  }
  const std::int64_t special_id = first_merge_id + static_cast<std::int64_t>(files.merges.size());
  for (std::size_t k = 0; k < 512; ++k) {
    std::string token = k < 256 ? bytes[k] : bytes[k - 256] + "</w>";
    if (const auto it = line_of_token.find(token); it != line_of_token.end()) {
      fail(file, ":", it->second, ": the merge makes \"", token, "\", which is already the token of ",
           k < 256 ? "a byte" : "a byte ending a word",
           ": SimpleTokenizer would give the token two ids and keep the later");
    }
    files.vocab.emplace_back(std::move(token), static_cast<std::int64_t>(k));
  }
  for (const std::string_view special : {"<|startoftext|>", "<|endoftext|>"}) {
    if (const auto it = line_of_token.find(special); it != line_of_token.end()) {
      fail(file, ":", it->second, ": the merge makes \"", special, "\", a special token of CLIP");
    }
    files.vocab.emplace_back(std::string(special),
                             special_id + (special == "<|startoftext|>" ? 0 : 1));
  }
  return files;
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

  // OpenAI's file of merges, which CLIP, open_clip and ImageBind ship.
  static constexpr std::string_view openai_file = "bpe_simple_vocab_16e6.txt.gz";
  // The merges SimpleTokenizer takes from it: lines 2 .. 48895 (49152 - 256 - 2 of them).
  static constexpr std::size_t openai_merges = 49152 - 256 - 2;
  // The most bytes of bpe_simple_vocab_16e6.txt.gz, compressed and decompressed. The real
  // file is 1.3 MB, 3.2 MB decompressed (262145 lines, of which SimpleTokenizer reads 48895);
  // 16 MiB is 5 times that, and bounds what a small file that inflates to gigabytes costs.
  static constexpr ReadLimit openai_file_limit{std::uint64_t{16} << 20,
                                               "tessera::ClipBpe::openai_file_limit"};

  // Whether `directory` holds a CLIP tokenizer's files in either form (or half of the Hugging
  // Face pair, which read_files then refuses by name).
  static bool has_files(const std::filesystem::path& directory) {
    std::error_code ignored;
    return std::filesystem::exists(directory / "vocab.json", ignored) ||
           std::filesystem::exists(directory / "merges.txt", ignored) ||
           std::filesystem::exists(directory / openai_file, ignored);
  }

  // The tokenizer files of a directory, read and parsed, not yet checked: vocab.json and
  // merges.txt (CLIP's files in the Hugging Face layout: tokens with "</w>", merges.txt with a
  // `#version` first line) when both are there, else bpe_simple_vocab_16e6.txt.gz (OpenAI's,
  // see read_openai_file). One of vocab.json / merges.txt without the other and without the
  // .gz is refused by name, and so is a directory with none of them.
  static detail::BpeFiles read_files(const std::filesystem::path& directory) {
    std::error_code ignored;
    const bool vocab = std::filesystem::exists(directory / "vocab.json", ignored);
    const bool merges = std::filesystem::exists(directory / "merges.txt", ignored);
    if (vocab && merges) return read_files(directory / "vocab.json", directory / "merges.txt");
    if (std::filesystem::exists(directory / openai_file, ignored)) {
      return read_openai_file(directory / openai_file);
    }
    if (vocab || merges) {
      fail("ClipBpe::load: ", directory.string(), " holds ", vocab ? "vocab.json" : "merges.txt",
           " but not ", vocab ? "merges.txt" : "vocab.json",
           ": a CLIP tokenizer needs both (or OpenAI's ", openai_file, ")");
    }
    fail("ClipBpe::load: ", directory.string(), " holds no CLIP tokenizer: neither vocab.json + "
         "merges.txt (the Hugging Face form) nor ", openai_file, " (OpenAI's)");
  }
  static detail::BpeFiles read_files(const std::filesystem::path& vocab_file,
                                     const std::filesystem::path& merges_file) {
    return detail::read_bpe_files(vocab_file, merges_file, "ClipBpe::load", "ClipBpe");
  }
  // OpenAI's bpe_simple_vocab_16e6.txt.gz (any name): decompressed within openai_file_limit
  // (io/gzip.hpp: a corrupt, truncated or empty file is refused naming it), its vocabulary
  // built as SimpleTokenizer.__init__ builds it (detail::clip_bpe_from_gz_text). Errors name
  // the file and, for a merge, its line in the decompressed text.
  static detail::BpeFiles read_openai_file(const std::filesystem::path& file) {
    const std::string text = read_gzip_file(file, "ClipBpe::load", openai_file_limit);
    return detail::clip_bpe_from_gz_text(text, file.string(), openai_merges);
  }

  // From a directory holding either form (read_files).
  static ClipBpe load(const std::filesystem::path& directory) { return ClipBpe(read_files(directory)); }

  static ClipBpe load(const std::filesystem::path& vocab_file,
                      const std::filesystem::path& merges_file) {
    return ClipBpe(read_files(vocab_file, merges_file));
  }

  // SimpleTokenizer.encode(text): the ids of the cleaned, lowercased text, without
  // <|startoftext|> and <|endoftext|>, not cut. Throws tessera::Error for text that is not UTF-8.
  std::vector<std::int64_t> encode_simple(std::string_view text) const {
    std::vector<std::int64_t> ids;
    append_ids(text, ids);
    return ids;
  }

  // [<|startoftext|>] + encode_simple(text) + [<|endoftext|>], not cut.
  std::vector<std::int64_t> encode(std::string_view text) const {
    std::vector<std::int64_t> ids{start_id_};
    append_ids(text, ids);
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

  // What tokenize does with a text longer than the context.
  enum class Overflow {
    refuse,    // tessera::Error, as clip.tokenize raises RuntimeError (truncate=False, its default)
    truncate,  // cut, the last id set to <|endoftext|>, as clip.tokenize(truncate=True)
  };
  // CLIP's context length: every CLIP model's text tower takes 77 positions.
  static constexpr std::size_t context_length = 77;

  // clip.tokenize(text, context_length, truncate)'s row without its padding: encode(text),
  // at most `context` (>= 2) ids. clip.tokenize pads the row with zeros to `context`
  // (ids.resize(context, 0) gives it). No warning: the caller chose the overflow rule.
  std::vector<std::int64_t> tokenize(std::string_view text, std::size_t context = context_length,
                                     Overflow overflow = Overflow::refuse) const {
    check(context >= 2, "ClipBpe::tokenize: context_length = ", context,
          " leaves no room for <|startoftext|> and <|endoftext|> (at least 2)");
    auto ids = encode(text);
    if (ids.size() > context) {
      check(overflow == Overflow::truncate, "ClipBpe::tokenize: the text has ", ids.size(),
            " tokens with <|startoftext|> and <|endoftext|>, more than the context length ",
            context, " (clip.tokenize raises here too; ClipBpe::Overflow::truncate cuts it, as "
            "truncate=True does)");
      ids.resize(context);
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

  // Appends SimpleTokenizer.encode(text)'s ids to `ids`.
  void append_ids(std::string_view text, std::vector<std::int64_t>& ids) const {
    validate_utf8(text, "ClipBpe::encode");
    const std::string clean = detail::clip_clean(text, "ClipBpe::encode");
    const std::string lower = detail::unicode_lower(clean, "ClipBpe::encode");
    const auto decoded =
        detail::decode_and_classify(lower, "ClipBpe::encode", detail::is_python_regex_space);
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
  }

  detail::BpeEncoder bpe_;  // the vocabulary, the merges keyed by a + " " + b, "</w>"
  std::int64_t start_id_ = -1, end_id_ = -1;
};

}  // namespace tessera
