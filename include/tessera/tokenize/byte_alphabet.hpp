#pragma once
// GPT-2's bytes_to_unicode: the reversible map between bytes and the characters that spell
// them in a byte-level BPE vocabulary (vocab.json, merges.txt), so that every token is
// printable text. Gpt2Bpe, ClipBpe and train_bpe spell their symbols in it. Nothing here
// needs ICU.

#include <tessera/tokenize/utf8.hpp>

#include <array>
#include <cstddef>
#include <string>
#include <string_view>

namespace tessera::detail {

// GPT-2's reversible byte -> character map: the bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF
// stand for themselves; the other 68 bytes, in increasing order, get U+0100, U+0101, ...
struct ByteAlphabet {
  std::array<char32_t, 256> to_char{};
  std::array<std::string, 256> to_utf8{};  // UTF-8 of to_char
  std::array<int, 0x144> to_byte{};        // character -> byte, -1 outside the alphabet

  ByteAlphabet() {
    to_byte.fill(-1);
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      to_char[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      append_utf8(to_utf8[b], to_char[b]);
      to_byte[to_char[b]] = b;
    }
  }
};

inline const ByteAlphabet& byte_alphabet() {
  static const ByteAlphabet alphabet;
  return alphabet;
}

// The characters of `token` (UTF-8) mapped back to bytes; a character outside the byte
// alphabet stands for its own UTF-8 (an added token such as "<|endoftext|>" is plain ASCII
// anyway). `token` must be valid UTF-8.
inline std::string token_to_bytes(std::string_view token) {
  const auto& alphabet = byte_alphabet();
  std::string out;
  std::size_t pos = 0;
  while (pos < token.size()) {
    char32_t cp = 0;
    std::size_t length = 1;
    Utf8Problem ignored;
    if (!decode_one_utf8(token, pos, &cp, &length, &ignored)) {
      out += token[pos];
      length = 1;
    } else if (cp < alphabet.to_byte.size() && alphabet.to_byte[cp] >= 0) {
      out += static_cast<char>(alphabet.to_byte[cp]);
    } else {
      out.append(token.substr(pos, length));
    }
    pos += length;
  }
  return out;
}

// The bytes of `raw` mapped to the alphabet (UTF-8), the inverse of token_to_bytes.
inline std::string bytes_to_token(std::string_view raw) {
  const auto& alphabet = byte_alphabet();
  std::string out;
  out.reserve(raw.size() * 2);
  for (const char c : raw) out += alphabet.to_utf8[static_cast<unsigned char>(c)];
  return out;
}

}  // namespace tessera::detail
