#pragma once
// Base64 as RFC 4648 section 4 defines it (the standard alphabet, '=' padding), for the
// binary inputs of tessera-serve's JSON requests (images, audio, video, point clouds).
//
// Written by hand rather than on OpenSSL's EVP_EncodeBlock / EVP_DecodeBlock: the decoder must
// look at every character anyway to say which one is wrong, and EVP_DecodeBlock would need
// correcting (it trims whitespace, which is refused here, and counts the bytes padding stands
// for). The decoder is strict where a server should be: no whitespace or line breaks, no
// missing padding, no base64url. The unused low bits of the last character are not checked
// (RFC 4648 3.5 lets a decoder accept them, as Python's b64decode and Go's StdEncoding do).

#include <tessera/core/error.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tessera::serve {

namespace detail {

inline constexpr char base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Each byte's 6-bit value in the alphabet, or -1.
inline constexpr std::array<std::int8_t, 256> base64_values = [] {
  std::array<std::int8_t, 256> values{};
  values.fill(-1);
  for (int i = 0; i < 64; ++i)
    values[static_cast<unsigned char>(base64_alphabet[i])] = static_cast<std::int8_t>(i);
  return values;
}();

// A byte for an error message: 'c' when printable, else its hex value.
inline std::string describe_byte(unsigned char c) {
  if (c >= 0x20 && c < 0x7f) return std::string("'") + static_cast<char>(c) + "'";
  static constexpr char digits[] = "0123456789abcdef";
  return std::string("byte 0x") + digits[c >> 4] + digits[c & 15];
}

}  // namespace detail

// `bytes` in base64 with padding: 4 characters per 3 bytes, rounded up.
inline std::string base64_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  const auto byte = [&](std::size_t at) {
    return static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at]));
  };
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t group = byte(i) << 16 | byte(i + 1) << 8 | byte(i + 2);
    out += detail::base64_alphabet[group >> 18];
    out += detail::base64_alphabet[(group >> 12) & 63];
    out += detail::base64_alphabet[(group >> 6) & 63];
    out += detail::base64_alphabet[group & 63];
  }
  if (const std::size_t rest = bytes.size() - i; rest > 0) {
    const std::uint32_t group = byte(i) << 16 | (rest == 2 ? byte(i + 1) << 8 : 0);
    out += detail::base64_alphabet[group >> 18];
    out += detail::base64_alphabet[(group >> 12) & 63];
    out += rest == 2 ? detail::base64_alphabet[(group >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

// The bytes `text` encodes. Throws tessera::Error starting with `where` (the request field,
// e.g. "samples[2].image") when the text's length is not a multiple of 4, when it would decode
// to more than max_bytes (checked from the length, before decoding), when a character is
// outside the alphabet (whitespace included), or when '=' appears other than as one or two
// final characters. Empty text decodes to empty.
inline std::string base64_decode(std::string_view text, const std::string& where,
                                 std::size_t max_bytes) {
  check(text.size() % 4 == 0, where, ": base64 text of ", text.size(),
        " characters: the length must be a multiple of 4 (padded with '=')");
  std::size_t padding = 0;
  while (padding < 2 && padding < text.size() && text[text.size() - 1 - padding] == '=') ++padding;
  const std::size_t size = text.size() / 4 * 3 - padding;
  check(size <= max_bytes, where, ": base64 text of ", text.size(), " characters decodes to ", size,
        " bytes, over the limit of ", max_bytes, " bytes");

  std::string out;
  out.reserve(size);
  const std::size_t end = text.size() - padding;  // the data characters: text[0, end)
  std::uint32_t group = 0;
  for (std::size_t i = 0; i < end; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    const std::int8_t value = detail::base64_values[c];
    if (value < 0) {
      check(c != '=', where, ": padding '=' at offset ", i,
            " in the middle of the base64 text (only the last one or two characters may be '=')");
      fail(where, ": ", detail::describe_byte(c), " at offset ", i,
           " is not a base64 character (A-Z a-z 0-9 + / and final '=' padding; no whitespace",
           c == '-' || c == '_' ? "; this looks like base64url, send standard base64)" : ")");
    }
    group = group << 6 | static_cast<std::uint32_t>(value);
    if (i % 4 == 3) {
      out += static_cast<char>(group >> 16);
      out += static_cast<char>((group >> 8) & 0xff);
      out += static_cast<char>(group & 0xff);
      group = 0;
    }
  }
  // The last group's 2 or 3 characters hold 1 or 2 bytes (and 4 or 2 unused low bits).
  if (padding == 2) {
    out += static_cast<char>(group >> 4);
  } else if (padding == 1) {
    out += static_cast<char>(group >> 10);
    out += static_cast<char>((group >> 2) & 0xff);
  }
  return out;
}

}  // namespace tessera::serve
