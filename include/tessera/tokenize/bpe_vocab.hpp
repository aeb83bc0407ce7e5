#pragma once
// A BPE vocabulary: what vocab.json / encoder.json hold, their reader, and the checked
// id <-> token tables the tokenizers look symbols up in. Nothing here needs ICU.

#include <tessera/core/error.hpp>
#include <tessera/io/json.hpp>
#include <tessera/tokenize/byte_alphabet.hpp>
#include <tessera/tokenize/utf8.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tessera {

// A BPE vocabulary: token (in the bytes_to_unicode alphabet, as in vocab.json) and its id,
// in file order.
using BpeVocabulary = std::vector<std::pair<std::string, std::int64_t>>;

namespace detail {

// A hash for string-keyed maps that looks up a std::string_view without building a string.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

// Reads a vocab.json / encoder.json: one JSON object mapping token strings to non-negative
// integer ids below 2^31, kept in file order. nlohmann/json parses it through its SAX
// interface, which builds no tree (so file order survives, and nesting costs nothing: a
// nested value is refused as it opens) and lets the reader say the line of each token;
// parse_json_checked's tree would sort the tokens and forget their lines. A UTF-8 byte order
// mark is allowed at the very start. Errors name the file and the line: malformed JSON, a
// token or an id twice, an id that is not such an integer, an empty vocabulary.
class VocabJsonReader {
 public:
  VocabJsonReader(std::string_view text, std::string file) : text_(text), file_(std::move(file)) {}

  BpeVocabulary read() {
    json_sax_parse_counting(text_, this, &consumed_);
    if (vocab_.empty()) error_at(line_read(), "the vocabulary is empty");
    return std::move(vocab_);
  }

  // The line of each token read, in file order (for later checks to name an entry).
  std::vector<std::size_t> take_lines() { return std::move(lines_); }

  // nlohmann's SAX events. The top level must be an object; inside it, every value an id.
  bool start_object(std::size_t /*elements*/) {
    if (depth_ > 0) not_an_id("an object");
    depth_ = 1;
    return true;
  }
  bool end_object() {
    depth_ = 0;
    closed_ = true;
    return true;
  }
  bool key(std::string& token) {
    token_ = std::move(token);
    token_line_ = line_read();
    return true;
  }
  bool number_unsigned(std::uint64_t id) {
    if (depth_ == 0) not_an_object();
    if (id >= (std::uint64_t{1} << 31)) {
      error_at(line_read(), "the id of \"" + token_ + "\" must be below 2^31, found " +
                                std::to_string(id));
    }
    add(static_cast<std::int64_t>(id));
    return true;
  }
  // Only negative numbers come as number_integer.
  bool number_integer(std::int64_t id) {
    not_an_id("'" + (id == 0 ? std::string("-0") : std::to_string(id)) + "'");
  }
  bool number_float(double /*value*/, const std::string& spelling) {
    not_an_id("'" + spelling + "'");
  }
  bool string(std::string& /*value*/) { not_an_id("a string"); }
  bool boolean(bool value) { not_an_id(value ? "'true'" : "'false'"); }
  bool null() { not_an_id("'null'"); }
  bool binary(nlohmann::json::binary_t& /*value*/) { not_an_id("binary data"); }
  bool start_array(std::size_t /*elements*/) { not_an_id("an array"); }
  bool end_array() { return true; }  // never reached: an array is refused as it opens
  bool parse_error(std::size_t position, const std::string& /*last_token*/,
                   const nlohmann::json::exception& error) {
    // position counts the bytes read, the failing one included (and an end of input).
    const std::size_t line = json_line_of(text_, std::min(position > 0 ? position - 1 : 0, text_.size()));
    if (closed_) error_at(line, "unexpected content after the vocabulary object");
    if (position > text_.size()) error_at(line, "unexpected end of file");
    const std::string reason = json_error_reason(error);
    if (reason.find("UTF-8") != std::string::npos) {
      if (const auto problem = find_invalid_utf8(text_)) {
        error_at(json_line_of(text_, problem->offset),
                 "invalid UTF-8 in a token string at byte " + std::to_string(problem->offset) +
                     " of the file: " + problem->reason);
      }
    }
    if (reason.find("surrogate") != std::string::npos) {
      error_at(line, "unpaired UTF-16 surrogate in a token string");
    }
    if (depth_ == 0) not_an_object();
    error_at(line, reason);
  }

 private:
  [[noreturn]] void error_at(std::size_t line, const std::string& message) const {
    fail(file_, ":", line, ": ", message);
  }
  [[noreturn]] void not_an_object() {
    error_at(line_read(), "expected '{' (the vocabulary is one JSON object of token: id)");
  }
  [[noreturn]] void not_an_id(const std::string& found) {
    if (depth_ == 0) not_an_object();
    error_at(line_read(), "the id of \"" + token_ +
                              "\" must be a non-negative integer below 2^31, found " + found);
  }

  void add(std::int64_t id) {
    if (auto [it, fresh] = seen_tokens_.emplace(token_, token_line_); !fresh) {
      error_at(token_line_, "token \"" + token_ + "\" appears twice (first on line " +
                                std::to_string(it->second) + ")");
    }
    if (auto [it, fresh] = seen_ids_.emplace(id, token_); !fresh) {
      error_at(token_line_, "id " + std::to_string(id) + " of \"" + token_ +
                                "\" is already the id of \"" + it->second + "\"");
    }
    vocab_.emplace_back(std::move(token_), id);
    lines_.push_back(token_line_);
  }

  // The line of the last byte the parser read, the byte it reads past a number excepted
  // (see json_sax_parse_counting). Counted on from the previous call: the parser only moves
  // forward.
  std::size_t line_read() {
    const std::size_t end = std::min(consumed_ > 0 ? consumed_ - 1 : 0, text_.size());
    for (; counted_ < end; ++counted_) {
      if (text_[counted_] == '\n') ++line_;
    }
    return line_;
  }

  std::string_view text_;
  std::string file_;
  std::size_t consumed_ = 0;  // bytes the parser has read
  std::size_t counted_ = 0;   // bytes whose newlines line_ counts
  std::size_t line_ = 1;
  int depth_ = 0;             // 1 inside the vocabulary object
  bool closed_ = false;       // the vocabulary object has ended
  std::string token_;         // the key whose id comes next
  std::size_t token_line_ = 1;
  BpeVocabulary vocab_;
  std::vector<std::size_t> lines_;  // line of vocab_[i]
  std::unordered_map<std::string, std::size_t> seen_tokens_;  // token -> line
  std::unordered_map<std::int64_t, std::string> seen_ids_;    // id -> token
};

// The vocabulary in vocab.json text; `file` names it in messages. With `lines`, the line of
// each token is stored there.
inline BpeVocabulary parse_vocab_json(std::string_view text, std::string file,
                                      std::vector<std::size_t>* lines = nullptr) {
  VocabJsonReader reader(text, std::move(file));
  BpeVocabulary vocab = reader.read();
  if (lines != nullptr) *lines = reader.take_lines();
  return vocab;
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

}  // namespace tessera
