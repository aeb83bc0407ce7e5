#pragma once
// JSON helpers shared by the readers of config.json and of safetensors headers.

#include <tessera/core/error.hpp>

#include <nlohmann/json.hpp>

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

// A short rendering of a JSON value for messages.
inline std::string json_excerpt(const nlohmann::json& value) {
  std::string text = value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() > 60) text = text.substr(0, 57) + "...";
  return text;
}

}  // namespace tessera::detail
