#pragma once
// JSON helpers shared by the readers of config.json, safetensors headers and BPE vocabularies.

#include <tessera/core/error.hpp>
#include <tessera/io/read_file.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <exception>
#include <filesystem>
#include <iterator>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace tessera::detail {

// The deepest nesting of objects and arrays accepted in a file tessera reads (config.json,
// safetensors headers). Real files nest 3 levels; the limit keeps every later walk of the
// parsed value (messages print parts of it recursively) far from the end of the stack.
inline constexpr int max_json_depth = 64;

// Parses JSON text that must not repeat a key in one object (nlohmann keeps the last value
// silently) nor nest deeper than max_json_depth. The first such problem is described in
// *problem ("key \"x\" appears twice in one object"), left empty when there is none; values
// nested too deep are dropped, never built. Throws nlohmann::json::parse_error on malformed
// text.
inline nlohmann::json parse_json_checked(std::string_view text, std::string* problem,
                                         bool ignore_comments = false) {
  std::vector<std::set<std::string>> open_objects;
  const nlohmann::json::parser_callback_t callback =
      [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
        using event_t = nlohmann::json::parse_event_t;
        const bool opens = event == event_t::object_start || event == event_t::array_start;
        if (opens && depth >= max_json_depth) {
          if (problem->empty()) {
            *problem = concat("nested deeper than ", max_json_depth, " levels");
          }
          return false;  // dropped: the parser skips the value without building it
        }
        switch (event) {
          case event_t::object_start: open_objects.emplace_back(); break;
          case event_t::object_end:
            if (!open_objects.empty()) open_objects.pop_back();
            break;
          case event_t::key:
            if (!open_objects.empty() && parsed.is_string() &&
                !open_objects.back().insert(parsed.get<std::string>()).second &&
                problem->empty()) {
              *problem = concat("key \"", parsed.get<std::string>(),
                                "\" appears twice in one object");
            }
            break;
          default: break;
        }
        return true;
      };
  return nlohmann::json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true,
                               ignore_comments);
}

// nlohmann's message for a parse error without its "[json.exception.parse_error.101] parse
// error at line 3, column 1: " prefix, for messages that say the place themselves.
inline std::string json_error_reason(const std::exception& error) {
  const std::string_view what = error.what();
  const std::size_t column = what.find(", column ");
  const std::size_t colon = column == std::string_view::npos ? column : what.find(": ", column);
  return std::string(colon == std::string_view::npos ? what : what.substr(colon + 2));
}

// The 1-based line of byte `offset` of `text`.
inline std::size_t json_line_of(std::string_view text, std::size_t offset) {
  const std::string_view before = text.substr(0, offset);
  return 1 + static_cast<std::size_t>(std::count(before.begin(), before.end(), '\n'));
}

// A character iterator that counts, in *consumed, how many characters were stepped over: handed
// to nlohmann's SAX parser, it tells the handler how far the parser has read.
class CountingCharIterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char*;
  using reference = const char&;

  CountingCharIterator(const char* at, std::size_t* consumed) : at_(at), consumed_(consumed) {}
  reference operator*() const { return *at_; }
  CountingCharIterator& operator++() {
    ++at_;
    ++*consumed_;
    return *this;
  }
  CountingCharIterator operator++(int) {
    CountingCharIterator before = *this;
    ++*this;
    return before;
  }
  bool operator==(const CountingCharIterator& other) const { return at_ == other.at_; }

 private:
  const char* at_;
  std::size_t* consumed_;
};

// nlohmann::json::sax_parse of `text` (strict: nothing may follow the value) that keeps
// *consumed at the number of bytes the parser has read. Inside a SAX event that is the end of
// the token just parsed (one byte more after a number: the lexer reads a byte past it), so a
// handler can name the line of a key or a value: json_line_of(text, *consumed - 1). The SAX
// parser builds nothing and does not recurse, so nesting depth costs it no stack; the
// handler decides what to accept.
template <class Sax>
bool json_sax_parse_counting(std::string_view text, Sax* sax, std::size_t* consumed) {
  *consumed = 0;
  return nlohmann::json::sax_parse(CountingCharIterator(text.data(), consumed),
                                   CountingCharIterator(text.data() + text.size(), consumed), sax);
}

// A short rendering of a JSON value for messages.
inline std::string json_excerpt(const nlohmann::json& value) {
  std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

// A JSON file (a model's configuration, a preprocessing config) read within
// ReadLimits::config_json and parsed by parse_json_checked, every error naming the file.
inline nlohmann::json read_json_file(const std::filesystem::path& file) {
  const std::string text = read_file(file, {}, ReadLimits::config_json);
  std::string problem;
  nlohmann::json json;
  try {
    json = parse_json_checked(text, &problem);
  } catch (const nlohmann::json::exception& e) {
    fail(file.string(), ": not valid JSON: ", json_error_reason(e));
  }
  check(problem.empty(), file.string(), ": ", problem);
  return json;
}

}  // namespace tessera::detail
