#pragma once
// html_unescape: Python's html.unescape (CPython Lib/html/__init__.py), which CLIP's
// basic_clean (simple_tokenizer.py) applies twice. Character references are found left to
// right by Python's pattern
//
//     &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)
//
// and each is replaced:
//   - numeric (&#NN; &#xHH;, the ';' optional): html._invalid_charrefs first (&#0; -> U+FFFD,
//     &#13; -> CR, &#x80;..&#x9F; -> their Windows-1252 characters), else a surrogate or a
//     number above U+10FFFF -> U+FFFD, else html._invalid_codepoints (U+0001..U+0008, U+000B,
//     U+000E..U+001F, U+007F..U+009F, U+FDD0..U+FDEF, U+xFFFE/U+xFFFF) -> nothing, else the
//     character itself;
//   - named: the name (at most 32 characters, up to the optional ';') if it is in
//     html.entities.html5 ("amp;", or a legacy name without ';': "amp"); else the longest
//     prefix of at least 2 characters that is ("&notit;" -> "¬it;"); else left as it is.
// Everything else is copied. The tables are generated from Python's own
// (tokenize/detail/html5_entities.hpp, by tests/reference/make_html_entities.py).
//
// One difference: Python refuses to convert a decimal number of more than 4300 digits
// (sys.int_info.default_max_str_digits), so html.unescape raises ValueError on such a
// reference; here it is a number above U+10FFFF like any other, so U+FFFD.

#include <tessera/tokenize/detail/html5_entities.hpp>
#include <tessera/tokenize/utf8.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tessera {

namespace detail {

// The value of the html5 entity named exactly `name` ("amp;" or "amp"), if there is one.
inline std::optional<std::string_view> html5_entity(std::string_view name) {
  const auto* const begin = std::begin(html5_entities);
  const auto* const end = std::end(html5_entities);
  const auto* it = std::lower_bound(begin, end, name,
                                    [](const Html5Entity& e, std::string_view n) { return e.name < n; });
  if (it == end || it->name != name) return std::nullopt;
  return it->value;
}

// What the numeric reference of value `number` becomes (UTF-8 appended to `out`); `number`
// is saturated above 0x10FFFF by the caller.
inline void append_numeric_charref(std::string& out, std::uint32_t number) {
  const auto* const replaced = std::find_if(
      std::begin(html_invalid_charrefs), std::end(html_invalid_charrefs),
      [&](const HtmlCharrefReplacement& r) { return r.number == number; });
  if (replaced != std::end(html_invalid_charrefs)) {
    append_utf8(out, replaced->replacement);
    return;
  }
  if ((number >= 0xD800 && number <= 0xDFFF) || number > 0x10FFFF) {
    append_utf8(out, U'\uFFFD');
    return;
  }
  if (std::binary_search(std::begin(html_invalid_codepoints), std::end(html_invalid_codepoints),
                         number)) {
    return;
  }
  append_utf8(out, static_cast<char32_t>(number));
}

inline bool is_ascii_digit(char c) { return c >= '0' && c <= '9'; }
inline int hex_digit_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The length in bytes of the UTF-8 sequence that starts with `lead` (text known valid).
inline std::size_t utf8_sequence_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

}  // namespace detail

// Python's html.unescape of `text`, which must be valid UTF-8 (the result is too).
inline std::string html_unescape(std::string_view text) {
  if (text.find('&') == std::string_view::npos) return std::string(text);
  std::string out;
  out.reserve(text.size());
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t amp = text.find('&', pos);
    if (amp == std::string_view::npos) {
      out.append(text.substr(pos));
      break;
    }
    out.append(text.substr(pos, amp - pos));
    std::size_t i = amp + 1;
    if (i < text.size() && text[i] == '#') {
      // #[0-9]+;?  or  #[xX][0-9a-fA-F]+;?  (the named alternative excludes '#')
      constexpr std::uint32_t above = 0x110000;  // saturation: every larger number acts alike
      std::uint32_t number = 0;
      std::size_t j = i + 1;
      const bool hex = j < text.size() && (text[j] == 'x' || text[j] == 'X') && j + 1 < text.size() &&
                       detail::hex_digit_value(text[j + 1]) >= 0;
      if (hex) {
        ++j;
        for (; j < text.size() && detail::hex_digit_value(text[j]) >= 0; ++j) {
          number = std::min<std::uint32_t>(above, number * 16 + static_cast<std::uint32_t>(detail::hex_digit_value(text[j])));
        }
      } else if (j < text.size() && detail::is_ascii_digit(text[j])) {
        for (; j < text.size() && detail::is_ascii_digit(text[j]); ++j) {
          number = std::min<std::uint32_t>(above, number * 10 + static_cast<std::uint32_t>(text[j] - '0'));
        }
      } else {
        out += '&';  // no reference here: go on after the '&'
        pos = i;
        continue;
      }
      if (j < text.size() && text[j] == ';') ++j;
      detail::append_numeric_charref(out, number);
      pos = j;
      continue;
    }
    // [^\t\n\f <&#;]{1,32};?  -- 32 characters (code points), not bytes
    std::size_t j = i;
    std::size_t boundaries[34];  // byte offset of the end of each prefix of s, in characters
    std::size_t characters = 0;
    while (j < text.size() && characters < 32) {
      const char c = text[j];
      if (c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' ||
          c == ';') {
        break;
      }
      j = std::min(text.size(), j + detail::utf8_sequence_length(static_cast<unsigned char>(c)));
      boundaries[++characters] = j;
    }
    if (characters == 0) {
      out += '&';
      pos = i;
      continue;
    }
    if (j < text.size() && text[j] == ';') {
      ++j;
      boundaries[++characters] = j;
    }
    const std::string_view s = text.substr(i, j - i);  // the name with its ';'
    pos = j;
    if (const auto value = detail::html5_entity(s)) {
      out.append(*value);
      continue;
    }
    // the longest prefix s[:x] in the table, x from len(s) - 1 down to 2
    bool found = false;
    for (std::size_t x = characters - 1; x >= 2; --x) {
      const std::size_t bytes = boundaries[x] - i;
      if (const auto value = detail::html5_entity(s.substr(0, bytes))) {
        out.append(*value);
        out.append(s.substr(bytes));
        found = true;
        break;
      }
    }
    if (!found) {
      out += '&';
      out.append(s);
    }
  }
  return out;
}

}  // namespace tessera
