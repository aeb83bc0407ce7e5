#pragma once
// BPE merges: what merges.txt / vocab.bpe hold, and their reader. Nothing here needs ICU.

#include <tessera/core/error.hpp>
#include <tessera/tokenize/utf8.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tessera {

// BPE merges in rank order (rank = index): the two symbols merged, spelled in the
// bytes_to_unicode alphabet (tokenize/byte_alphabet.hpp) as the vocabulary is.
using BpeMerges = std::vector<std::pair<std::string, std::string>>;

namespace detail {

// Parses merges.txt / vocab.bpe: an optional first line starting with '#' (`#version: 0.2`),
// then one merge per line, two symbols separated by spaces or tabs; blank lines are skipped
// (a '\r' before the line end is allowed). Errors name the file and the line. With `lines`,
// the line of each merge is stored there.
inline BpeMerges parse_merges(std::string_view text, const std::string& file,
                              std::vector<std::size_t>* lines = nullptr) {
  BpeMerges merges;
  if (lines != nullptr) lines->clear();
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
    if (lines != nullptr) lines->push_back(line_number);
  }
  return merges;
}

}  // namespace detail

}  // namespace tessera
