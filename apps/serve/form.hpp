#pragma once
// multipart/form-data bodies (RFC 7578, what `curl -F` and a browser's FormData send) as the
// JSON object the routes take, so that a form's files reach the model as their bytes: no
// base64 to encode on the client or decode here, and no JSON lexer walking through them
// (docs/serving.md, "Forms").
//
// A field's name says where its value goes in that object:
//
//   NAME            body.NAME                  image=@cat.png, allow_partial=true
//   NAME[i]         body.NAME[i]               labels[0]=cat
//   NAME[i].FIELD   body.NAME[i].FIELD         samples[0].image=@cat.png, a[1].text=a dog
//
// NAME and FIELD are lower-case words (letters, digits, '_'); i is a decimal index below
// `max_items` (the server's --max-samples), and a list's indices must run 0, 1, 2, ... with
// none missing. A value under image, audio or video is the file's bytes, a JSON binary value
// (the routes take it wherever they take base64); under text, or as a list's element, the
// value is a string as it is; any other field's value is JSON when it reads as a JSON scalar
// (true, 3, "x") and a string otherwise (encoding_format=base64). A name given twice, one
// that does not parse, or a field that is both a value and a list is refused naming it.

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace tessera::serve {

// One field of a form: its name and its value (a file's bytes, or text).
struct FormField {
  std::string name;
  std::string content;
};

// A form that cannot be a request: status 400 (a malformed name, a repeat, a gap) or 413 (an
// index past max_items).
struct FormError : std::runtime_error {
  FormError(int status, const std::string& message) : std::runtime_error(message), status(status) {}
  int status;
};

namespace detail {

inline bool is_file_field(std::string_view name) {
  return name == "image" || name == "audio" || name == "video";
}

// NAME, NAME[i] or NAME[i].FIELD, taken apart.
struct FieldPath {
  std::string name;
  std::optional<std::size_t> index;
  std::string field;  // empty: none
};

inline FieldPath parse_field_name(const std::string& text, std::size_t max_items) {
  const auto bad = [&](const std::string& why) {
    return FormError(400, "form field \"" + text + "\": " + why +
                              " (names are NAME, NAME[i] or NAME[i].FIELD, as samples[0].image)");
  };
  const auto word = [](std::string_view s) {
    if (s.empty()) return false;
    for (const char c : s) {
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
    }
    return true;
  };
  FieldPath path;
  const std::size_t open = text.find('[');
  path.name = text.substr(0, open);
  if (!word(path.name)) throw bad("not a lower-case word before any '['");
  if (open == std::string::npos) return path;
  const std::size_t close = text.find(']', open);
  if (close == std::string::npos) throw bad("'[' with no ']'");
  const std::string digits = text.substr(open + 1, close - open - 1);
  if (digits.empty() || digits.size() > 9 || digits.find_first_not_of("0123456789") != std::string::npos ||
      (digits.size() > 1 && digits[0] == '0')) {
    throw bad("the index is not a decimal number");
  }
  path.index = std::stoul(digits);
  if (*path.index >= max_items) {
    throw FormError(413, "form field \"" + text + "\": index " + digits + ", past --max-samples " +
                             std::to_string(max_items));
  }
  const std::string rest = text.substr(close + 1);
  if (rest.empty()) return path;
  if (rest[0] != '.' || !word(std::string_view(rest).substr(1))) throw bad("expected .FIELD after the index");
  path.field = rest.substr(1);
  return path;
}

// A field's value as JSON, by where it goes (see the top of this file).
inline nlohmann::json form_value(const FieldPath& path, std::string content) {
  const std::string& key = path.field.empty() ? path.name : path.field;
  if (is_file_field(key)) {
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(content.data());
    return nlohmann::json::binary(std::vector<std::uint8_t>(bytes, bytes + content.size()));
  }
  if (key == "text" || (path.index && path.field.empty())) return nlohmann::json(std::move(content));
  nlohmann::json scalar = nlohmann::json::parse(content, nullptr, false);
  if (!scalar.is_discarded() && scalar.is_primitive()) return scalar;
  return nlohmann::json(std::move(content));
}

}  // namespace detail

// The JSON object of a form's fields (see the top of this file). Throws FormError.
inline nlohmann::json form_body(std::vector<FormField> fields, std::size_t max_items) {
  nlohmann::json body = nlohmann::json::object();
  std::map<std::string, std::size_t> list_sizes;  // NAME -> 1 + its highest index
  for (FormField& f : fields) {
    const detail::FieldPath path = detail::parse_field_name(f.name, max_items);
    const auto repeated = [&] { return FormError(400, "form field \"" + f.name + "\": given twice"); };
    if (!path.index) {
      if (body.contains(path.name)) {
        throw body.at(path.name).is_array() ? FormError(400, "form field \"" + f.name + "\": also given as a list (" +
                                                                 f.name + "[i])")
                                            : repeated();
      }
      body[path.name] = detail::form_value(path, std::move(f.content));
      continue;
    }
    nlohmann::json& list = body[path.name];
    if (!list.is_null() && !list.is_array()) {
      throw FormError(400, "form field \"" + f.name + "\": " + path.name + " is also given as a value");
    }
    if (list.is_null()) list = nlohmann::json::array();
    if (list.size() <= *path.index) list.get_ref<nlohmann::json::array_t&>().resize(*path.index + 1);
    nlohmann::json& item = list[*path.index];
    if (path.field.empty()) {
      if (!item.is_null()) throw repeated();
      item = detail::form_value(path, std::move(f.content));
    } else {
      if (item.is_null()) item = nlohmann::json::object();
      if (!item.is_object()) throw repeated();
      if (item.contains(path.field)) throw repeated();
      item[path.field] = detail::form_value(path, std::move(f.content));
    }
    list_sizes[path.name] = list.size();
  }
  for (const auto& [name, size] : list_sizes) {
    const nlohmann::json& list = body.at(name);
    for (std::size_t i = 0; i < size; ++i) {
      if (list[i].is_null()) {
        throw FormError(400, "form: " + name + "[" + std::to_string(i) + "] is missing (" + name + "[" +
                                 std::to_string(size - 1) + "] is given; a list's indices run 0, 1, 2, ...)");
      }
    }
  }
  return body;
}

}  // namespace tessera::serve
