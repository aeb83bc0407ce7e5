#pragma once
// UTF-8 validation and decoding for the text tokenizers, and reading a UTF-8 text file.
//
// Strict UTF-8 as RFC 3629 defines it: a code point is written in its shortest form only
// (no overlong sequences), UTF-16 surrogates U+D800..U+DFFF are not code points, nothing
// above U+10FFFF, and every sequence is complete. A violation is a tessera::Error naming the
// byte offset of the first byte of the offending sequence:
//
//   "Gpt2Bpe::encode: invalid UTF-8 at byte 17: overlong 2-byte encoding of U+002F"
//
// Nothing here needs ICU.

#include <tessera/core/error.hpp>
#include <tessera/io/read_file.hpp>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

// Where and why a byte string is not UTF-8.
struct Utf8Problem {
  std::size_t offset = 0;  // byte offset of the first byte of the bad sequence
  std::string reason;      // e.g. "truncated 3-byte sequence (the text ends)"
};

namespace detail {

inline std::string hex_byte(unsigned char byte) {
  static constexpr char digits[] = "0123456789ABCDEF";
  return std::string("0x") + digits[byte >> 4] + digits[byte & 15];
}

inline std::string code_point_name(char32_t cp) {
  static constexpr char digits[] = "0123456789ABCDEF";
  std::string hex;
  for (int shift = cp > 0xFFFF ? 20 : 12; shift >= 0; shift -= 4) hex += digits[(cp >> shift) & 15];
  return "U+" + hex;
}

// Decodes the code point starting at text[pos]. On success stores it in *cp, its length in
// *length and returns true; otherwise fills *problem (offset = pos) and returns false.
inline bool decode_one_utf8(std::string_view text, std::size_t pos, char32_t* cp,
                            std::size_t* length, Utf8Problem* problem) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(pos);
  if (lead < 0x80) {
    *cp = lead;
    *length = 1;
    return true;
  }
  std::size_t need = 0;
  char32_t value = 0;
  if (lead >= 0xC0 && lead <= 0xDF) {
    need = 2;
    value = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3;
    value = lead & 0x0F;
  } else if (lead >= 0xF0 && lead <= 0xF7) {
    need = 4;
    value = lead & 0x07;
  } else {
    problem->offset = pos;
    problem->reason = lead < 0xC0 ? "unexpected continuation byte " + hex_byte(lead)
                                  : "invalid lead byte " + hex_byte(lead);
    return false;
  }
  for (std::size_t k = 1; k < need; ++k) {
    if (pos + k >= text.size()) {
      problem->offset = pos;
      problem->reason = "truncated " + std::to_string(need) + "-byte sequence (the text ends)";
      return false;
    }
    const unsigned char next = byte(pos + k);
    if ((next & 0xC0) != 0x80) {
      problem->offset = pos;
      problem->reason = "truncated " + std::to_string(need) + "-byte sequence (byte " +
                        std::to_string(pos + k) + " is " + hex_byte(next) +
                        ", not a continuation byte)";
      return false;
    }
    value = (value << 6) | (next & 0x3F);
  }
  static constexpr char32_t smallest[5] = {0, 0, 0x80, 0x800, 0x10000};
  if (value < smallest[need]) {
    problem->offset = pos;
    problem->reason = "overlong " + std::to_string(need) + "-byte encoding of " +
                      code_point_name(value);
    return false;
  }
  if (value >= 0xD800 && value <= 0xDFFF) {
    problem->offset = pos;
    problem->reason = "UTF-16 surrogate " + code_point_name(value) + " is not a code point";
    return false;
  }
  if (value > 0x10FFFF) {
    problem->offset = pos;
    problem->reason = "code point " + code_point_name(value) + " is above U+10FFFF";
    return false;
  }
  *cp = value;
  *length = need;
  return true;
}

}  // namespace detail

// The first problem of `text` as UTF-8, or nothing when it is valid.
inline std::optional<Utf8Problem> find_invalid_utf8(std::string_view text) {
  Utf8Problem problem;
  char32_t cp = 0;
  std::size_t length = 0;
  for (std::size_t pos = 0; pos < text.size(); pos += length) {
    if (!detail::decode_one_utf8(text, pos, &cp, &length, &problem)) return problem;
  }
  return std::nullopt;
}

// Throws tessera::Error "<context>: invalid UTF-8 at byte N: <reason>" unless `text` is valid.
inline void validate_utf8(std::string_view text, std::string_view context = "text") {
  if (auto problem = find_invalid_utf8(text)) {
    fail(context, ": invalid UTF-8 at byte ", problem->offset, ": ", problem->reason);
  }
}

// The text of `file` (read_file), which must be UTF-8; invalid UTF-8 throws as validate_utf8
// does, named by the file: "notes.txt: invalid UTF-8 at byte 6: invalid lead byte 0xFF". A file
// over `limit` (16 MiB: ReadLimits::text_file) is refused before it is read whole.
inline std::string read_utf8_file(const std::filesystem::path& file,
                                  const ReadLimit& limit = ReadLimits::text_file) {
  std::string text = read_file(file, {}, limit);
  validate_utf8(text, file.string());
  return text;
}

// The code points of `text`; invalid UTF-8 throws as validate_utf8 does.
inline std::u32string decode_utf8(std::string_view text, std::string_view context = "text") {
  std::u32string out;
  out.reserve(text.size());
  Utf8Problem problem;
  char32_t cp = 0;
  std::size_t length = 0;
  for (std::size_t pos = 0; pos < text.size(); pos += length) {
    if (!detail::decode_one_utf8(text, pos, &cp, &length, &problem)) {
      fail(context, ": invalid UTF-8 at byte ", problem.offset, ": ", problem.reason);
    }
    out.push_back(cp);
  }
  return out;
}

// Appends the UTF-8 encoding of `cp` (which must be a code point, not a surrogate).
inline void append_utf8(std::string& out, char32_t cp) {
  TESSERA_ASSERT(cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF));
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// The UTF-8 encoding of code points.
inline std::string encode_utf8(std::u32string_view code_points) {
  std::string out;
  out.reserve(code_points.size());
  for (const char32_t cp : code_points) append_utf8(out, cp);
  return out;
}

}  // namespace tessera
