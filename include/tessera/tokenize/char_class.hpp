#pragma once
// The character classes of the pre-tokenizer patterns (letter = \p{L}, number = \p{N},
// space = the pattern's \s, other), and a text decoded into code points with their classes:
// what Gpt2Bpe's and ClipBpe's pre-tokenizers (and train_bpe, through Gpt2Bpe's) walk.

#ifndef TESSERA_HAS_ICU
#error "tessera/tokenize/char_class.hpp needs ICU for Unicode character properties: install libicu-dev (Debian/Ubuntu) and reconfigure, so that CMake finds ICU and defines TESSERA_HAS_ICU"
#endif

#include <tessera/core/error.hpp>
#include <tessera/tokenize/utf8.hpp>

#include <unicode/uchar.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tessera::detail {

enum class CharClass : std::uint8_t { letter, number, space, other };

// The class of a code point for a pattern whose \s is `is_space`: letter = \p{L}, number =
// \p{N}, space = \s, other = the rest.
template <class IsSpace>
CharClass classify(char32_t cp, IsSpace is_space) {
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return CharClass::letter;
    if (cp >= '0' && cp <= '9') return CharClass::number;
    return is_space(cp) ? CharClass::space : CharClass::other;
  }
  if (is_space(cp)) return CharClass::space;
  switch (u_charType(static_cast<UChar32>(cp))) {
    case U_UPPERCASE_LETTER:
    case U_LOWERCASE_LETTER:
    case U_TITLECASE_LETTER:
    case U_MODIFIER_LETTER:
    case U_OTHER_LETTER: return CharClass::letter;
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER: return CharClass::number;
    default: return CharClass::other;
  }
}

// A text decoded for a pre-tokenizer: code point i is text[offset[i], offset[i+1]).
struct DecodedText {
  std::u32string code_points;
  std::vector<std::size_t> offset;
  std::vector<CharClass> classes;
};

template <class IsSpace>
DecodedText decode_and_classify(std::string_view text, std::string_view context, IsSpace is_space) {
  DecodedText out;
  out.code_points.reserve(text.size());
  out.offset.reserve(text.size() + 1);
  out.classes.reserve(text.size());
  Utf8Problem problem;
  char32_t cp = 0;
  std::size_t length = 0;
  for (std::size_t pos = 0; pos < text.size(); pos += length) {
    if (!decode_one_utf8(text, pos, &cp, &length, &problem)) {
      fail(context, ": invalid UTF-8 at byte ", problem.offset, ": ", problem.reason);
    }
    out.code_points.push_back(cp);
    out.offset.push_back(pos);
    out.classes.push_back(classify(cp, is_space));
  }
  out.offset.push_back(text.size());
  return out;
}

}  // namespace tessera::detail
