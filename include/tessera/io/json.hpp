#pragma once
// JSON helpers shared by the readers of config.json and of safetensors headers.

#include <nlohmann/json.hpp>

#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace tessera::detail {

// Parses JSON text, reporting the first key that appears twice in one object (nlohmann keeps
// the last value silently). Throws nlohmann::json::parse_error on malformed text.
inline nlohmann::json parse_json_unique_keys(std::string_view text, std::string* duplicate_key,
                                             bool ignore_comments = false) {
  std::vector<std::set<std::string>> open_objects;
  const nlohmann::json::parser_callback_t callback =
      [&](int /*depth*/, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
        switch (event) {
          case nlohmann::json::parse_event_t::object_start: open_objects.emplace_back(); break;
          case nlohmann::json::parse_event_t::object_end:
            if (!open_objects.empty()) open_objects.pop_back();
            break;
          case nlohmann::json::parse_event_t::key:
            if (!open_objects.empty() && parsed.is_string() &&
                !open_objects.back().insert(parsed.get<std::string>()).second &&
                duplicate_key->empty()) {
              *duplicate_key = parsed.get<std::string>();
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
