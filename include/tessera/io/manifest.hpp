#pragma once
// Manifests: the list of a data set's items as researchers keep it, one item per row of a
// CSV/TSV file with a header (open_clip's --dataset-type csv) or one JSON object per line of
// a JSONL file (ImageBind-style data sets). docs/data.md describes both with examples.
//
//   tessera::ManifestOptions options;
//   options.image_key = "filepath";   // open_clip's --csv-img-key
//   options.text_key = "title";       // open_clip's --csv-caption-key
//   tessera::Manifest train = tessera::read_manifest("data/train.tsv", options);
//   train.items[0].image;   // "data/images/0001.jpg": relative to the manifest's directory
//   train.items[0].text;    // the caption itself
//   tessera::ManifestSplit split = tessera::split_manifest(std::move(train.items), 0.05, 42);
//
// Each item holds its manifest line (1-based, of its first line), for each modality the
// options name either a file (image, audio, video, custom modalities: a relative path is
// joined to the manifest's directory, an absolute one kept) or, for text, the caption; an
// optional label and an id (the id column's value, or the line number). Every malformed
// manifest is a tessera::Error naming the file, the line and the column or key:
//
//   "data/train.csv: line 7, column \"filepath\": a quoted field is not closed before the
//    end of the file (a quote inside a quoted field is written twice: \"\")"
//
// An empty caption is not an error: the item is kept and says so (ManifestItem::
// empty_caption()), for the streaming loader to skip and count it with its line; nothing is
// dropped here.
//
// The CSV reader is written here (about 100 lines) rather than taken from libcsv (Debian's
// libcsv-dev 3.0.3, a C library, last released in 2013): tessera is header-only and libcsv
// is a compiled LGPL library every program using manifests would then link; its parse
// errors carry no position, where a manifest error must name the line and the column; and
// its default mode accepts malformed quoting silently. The rules below are RFC 4180's, plus
// what real manifests need (a configurable separator, LF or CRLF, a UTF-8 byte order mark).
//
// CSV/TSV (ManifestFormat::csv):
//   - the first record is the header; every later record has as many fields as the header;
//   - fields are separated by ManifestOptions::separator (',' by default, '\t' for .tsv);
//     records end with LF or CRLF (a CR alone outside quotes is an error);
//   - a field that starts with '"' is quoted: it ends at the next '"' not followed by
//     another '"'; "" inside it is one quote; separators, CR and LF inside it are data; the
//     closing quote is followed by a separator or the end of the record. A '"' elsewhere in
//     an unquoted field is an ordinary character (as Python's csv and pandas read it).
//     With ManifestOptions::quoted false every '"' is ordinary (TSV files written without
//     quoting, CC3M's);
//   - a blank line is a record of one empty field: an empty caption in a one-column file, an
//     error in any other; blank lines at the end of the file are skipped;
//   - every header name and every field the options use is valid UTF-8.
// JSONL (ManifestFormat::jsonl): each line one JSON object (LF or CRLF; blank lines are
// skipped; no key twice in one object); a key the options name holds a string or null
// (absent), the label and id keys also an integer; other keys are ignored.
//
// The held-out split is a pure function of (seed, item id): split_manifest puts an item in
// the held-out part when the hash of its id (held_out_draw) falls below the fraction, so
// adding items to a manifest never moves the items already in it, and rows sharing an id
// (five captions of one image) fall on the same side. An explicit held-out set is a second
// manifest read with read_manifest.

#include <tessera/core/error.hpp>
#include <tessera/core/modality.hpp>
#include <tessera/core/random.hpp>
#include <tessera/io/json.hpp>
#include <tessera/io/read_file.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tessera {

// How big a manifest may be; beyond each limit read_manifest refuses it with an Error naming
// the setting. Each is far above real data sets tessera trains on and keeps what a manifest
// at the limit costs within what bad input may cost (about 10 s and 2 GB,
// docs/robustness.md); raise one for a larger data set.
struct ManifestLimits {
  // 256 MiB: the file is read whole. A row of a caption and a path is 70-100 bytes, so a
  // million items take 70-100 MB (a 20,000-item manifest 2 MB); CC3M's 3.3M rows, about
  // 330 MB, need this and max_items raised.
  std::uint64_t max_file_bytes = std::uint64_t{256} << 20;
  // 1,000,000 items: an item holds 288 bytes of its own plus its strings. Measured (-O1, a
  // busy 2-core machine): a million rows of a path and a 60-byte caption, 0.47 GB peak and
  // 0.5 s of CPU as CSV (2.7 s as JSONL); a 252 MB CSV of a million rows of seven 35-byte
  // fields (every modality, label and id) 0.97 GB and 1.4 s. At 2,000,000 the second took
  // 1.7 GB; without the limit a 256 MiB file of tiny rows would make 128M items.
  std::size_t max_items = 1'000'000;
  // 1 MiB per record (a CSV record, with the line breaks inside its quoted fields, or a
  // JSONL line): a caption is under 1 KB, a long document tens of KB; an unclosed quote is
  // then refused where it starts, not after scanning the whole file into one field.
  std::size_t max_line_bytes = std::size_t{1} << 20;
  // 1024 fields of a CSV record (or keys of a JSONL object): manifests have a few to tens
  // of columns; the limit bounds the work of a record of separators only.
  std::size_t max_fields = 1024;
  // 4096 bytes per file path, joined to the manifest's directory: Linux's PATH_MAX, beyond
  // which open() fails (ENAMETOOLONG) anyway. It also bounds what a std::filesystem::path
  // made from it costs: libstdc++'s holds every component apart, and 20 paths of 500,000
  // components (20 MB of text) took 20 GB.
  std::size_t max_path_bytes = 4096;
};

enum class ManifestFormat {
  from_extension,  // .csv and .tsv: csv; .jsonl and .ndjson: jsonl; anything else an error
  csv,             // CSV or TSV with a header row
  jsonl,           // one JSON object per line
};

// Which columns (CSV) or keys (JSONL) hold what. An empty key means the manifest has no
// such column; at least one modality must be named. A named column missing from a CSV
// header, or a named key that no JSONL line has, is an error.
struct ManifestOptions {
  ManifestFormat format = ManifestFormat::from_extension;
  // CSV: the byte between fields (open_clip's --csv-separator); 0: '\t' for a .tsv file,
  // ',' otherwise. Not '"', CR or LF, and ASCII.
  char separator = 0;
  // CSV: whether '"' starts a quoted field (RFC 4180). false: quotes are ordinary characters.
  bool quoted = true;
  std::string text_key;   // the caption (open_clip's --csv-caption-key, "title" there)
  std::string image_key;  // an image file (open_clip's --csv-img-key, "filepath" there)
  std::string audio_key;  // an audio file (WAV)
  std::string video_key;  // a video file
  // Custom modalities (docs/extending.md): modality name -> the column holding its file.
  std::map<std::string, std::string> custom_keys;
  std::string label_key;  // optional: a class label (zero-shot classification)
  std::string id_key;     // optional: the item's identity; the line number when empty
  ManifestLimits limits;
  // How messages name these options: a member's name ("text_key", "format") -> the caller's
  // own name for it (a program's "--csv-caption-key"). Members not in the map are named as
  // members ("tessera::ManifestOptions::text_key").
  std::map<std::string, std::string> option_names;

  std::string option_name(const std::string& member) const {
    const auto found = option_names.find(member);
    return found != option_names.end() ? found->second : "tessera::ManifestOptions::" + member;
  }
};

// One row of a manifest. A modality the row does not have is std::nullopt (a JSONL key
// absent or null, an empty CSV cell); the text of a manifest with a text column is always
// present in CSV, empty when the cell is. Files are paths as text, ready to open
// (std::filesystem::path(*item.image)): a std::filesystem::path holds each component of a
// path apart, so a million of them would take several times the memory (see
// ManifestLimits::max_path_bytes).
struct ManifestItem {
  std::size_t line = 0;  // 1-based line in the manifest where the item starts
  std::string id;        // the id column's value, or the line number ("7")
  std::optional<std::string> text;  // the caption, verbatim
  std::optional<std::string> image, audio, video;  // files, joined to the manifest's directory
  std::map<std::string, std::string> custom;       // files by custom modality name
  std::optional<std::string> label;

  // The caption is present but holds nothing but ASCII white space: the loader skips the
  // item and counts it (issue 18), never this reader.
  bool empty_caption() const {
    return text && text->find_first_not_of(" \t\n\r\f\v") == std::string::npos;
  }
  // The file of a built-in file modality (image, audio, video) or nullptr when absent.
  // requires m != Modality::text
  const std::string* file(Modality m) const {
    TESSERA_ASSERT(m != Modality::text);
    const auto& slot = m == Modality::image ? image : m == Modality::audio ? audio : video;
    return slot ? &*slot : nullptr;
  }
};

struct Manifest {
  std::filesystem::path file;      // as passed to read_manifest
  std::vector<std::string> modalities;  // the names the options read: "text", "image", ..., custom ones
  std::vector<ManifestItem> items;      // in file order

  std::size_t empty_captions() const {
    return static_cast<std::size_t>(std::count_if(
        items.begin(), items.end(), [](const ManifestItem& item) { return item.empty_caption(); }));
  }
};

namespace detail {

// The reason `text` is not UTF-8 ("invalid UTF-8 byte at index 3: 0xFF"), empty when it is.
// io/ cannot reach tokenize/utf8.hpp (a layer above), so the check is nlohmann's strict
// encoder, which the JSON readers of this layer already use.
inline std::string utf8_problem(std::string_view text) {
  if (std::all_of(text.begin(), text.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x80; })) {
    return {};
  }
  try {
    (void)nlohmann::json(std::string(text)).dump();
  } catch (const nlohmann::json::type_error& error) {
    const std::string_view what = error.what();  // "[json.exception.type_error.316] invalid ..."
    const std::size_t bracket = what.find("] ");
    return std::string(bracket == std::string_view::npos ? what : what.substr(bracket + 2));
  }
  return {};
}

// Whether a path written in a manifest is absolute (kept) rather than relative to it.
inline bool is_absolute_path(const std::string& path) {
#ifdef _WIN32
  return std::filesystem::path(path).is_absolute();
#else
  return !path.empty() && path[0] == '/';  // what std::filesystem::path says on POSIX, in O(1)
#endif
}

// One CSV record: its fields and the line it starts on.
struct CsvRecord {
  std::size_t line = 0;
  std::vector<std::string> fields;
};

// Reads `text` (a whole CSV file without its byte order mark) one record at a time by the
// rules in this file's header comment. Errors name `file`, the line and the field: by its
// column name once set_names has the header's, by its 1-based number before.
class CsvReader {
 public:
  CsvReader(std::string_view text, char separator, bool quoted, const ManifestLimits& limits,
            std::string file)
      : text_(text), separator_(separator), quoted_(quoted), limits_(limits),
        file_(std::move(file)), content_end_(end_of_content(text)) {}

  void set_names(std::vector<std::string> names) { names_ = std::move(names); }

  // Reads the next record into *record; false at the end of the text (trailing blank lines
  // included).
  bool next(CsvRecord* record) {
    if (only_blank_lines_remain()) return false;
    record->line = line_;
    record->fields.clear();
    record_start_ = pos_;
    record_line_ = line_;
    while (true) {
      if (record->fields.size() == limits_.max_fields) {
        fail(file_, ": line ", record_line_, ": more than ", limits_.max_fields,
             " fields, the limit set by tessera::ManifestLimits::max_fields");
      }
      record->fields.emplace_back();
      std::string& field = record->fields.back();
      const std::size_t column = record->fields.size();
      if (quoted_ && pos_ < text_.size() && text_[pos_] == '"') {
        read_quoted(&field, column);
      } else {
        read_unquoted(&field, column);
      }
      if (pos_ == text_.size()) return true;
      const char c = text_[pos_++];
      if (c == separator_) continue;
      if (c == '\n') {
        ++line_;
        return true;
      }
      // read_* stop only at the separator, LF, CRLF or the end
      TESSERA_ASSERT(c == '\r' && pos_ < text_.size() && text_[pos_] == '\n');
      ++pos_;
      ++line_;
      return true;
    }
  }

  // "column \"title\"" or "field 3": how an error names a field.
  std::string field_name(std::size_t column) const {
    if (column >= 1 && column <= names_.size()) return concat("column \"", names_[column - 1], "\"");
    return concat("field ", column);
  }

 private:
  // Only the blank lines that end the text remain (LF or CRLF each).
  bool only_blank_lines_remain() const { return pos_ >= content_end_; }

  // Where the blank lines that end `text` start.
  static std::size_t end_of_content(std::string_view text) {
    std::size_t end = text.size();
    while (end > 0 && text[end - 1] == '\n') end -= end >= 2 && text[end - 2] == '\r' ? 2 : 1;
    return end;
  }

  void check_length(std::size_t end) const {
    if (end - record_start_ > limits_.max_line_bytes) {
      fail(file_, ": line ", record_line_, ": the record is longer than ", limits_.max_line_bytes,
           " bytes, the limit set by tessera::ManifestLimits::max_line_bytes",
           quoted_ ? " (is a quote not closed?)" : "");
    }
  }

  void read_unquoted(std::string* field, std::size_t column) {
    const std::size_t start = pos_;
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c == separator_ || c == '\n') break;
      if (c == '\r') {
        if (pos_ + 1 < text_.size() && text_[pos_ + 1] == '\n') break;
        fail(file_, ": line ", line_, ", ", field_name(column),
             ": a carriage return not followed by a line feed outside quotes (lines end with "
             "LF or CRLF; quote a field that holds a CR)");
      }
      ++pos_;
    }
    check_length(pos_);
    field->assign(text_.substr(start, pos_ - start));
  }

  void read_quoted(std::string* field, std::size_t column) {
    const std::size_t opening_line = line_;
    ++pos_;  // the opening quote
    while (true) {
      const std::size_t quote = text_.find('"', pos_);
      check_length(quote == std::string_view::npos ? text_.size() : quote);
      if (quote == std::string_view::npos) {
        fail(file_, ": line ", opening_line, ", ", field_name(column),
             ": a quoted field is not closed before the end of the file (a quote inside a "
             "quoted field is written twice: \"\")");
      }
      const std::string_view chunk = text_.substr(pos_, quote - pos_);
      line_ += static_cast<std::size_t>(std::count(chunk.begin(), chunk.end(), '\n'));
      field->append(chunk);
      pos_ = quote + 1;
      if (pos_ < text_.size() && text_[pos_] == '"') {  // "" is one quote
        field->push_back('"');
        ++pos_;
        continue;
      }
      break;
    }
    const bool ends = pos_ == text_.size() || text_[pos_] == separator_ || text_[pos_] == '\n' ||
                      (text_[pos_] == '\r' && pos_ + 1 < text_.size() && text_[pos_ + 1] == '\n');
    if (!ends) {
      fail(file_, ": line ", line_, ", ", field_name(column),
           ": text after the closing quote of a quoted field (a quote inside a quoted field is "
           "written twice: \"\")");
    }
  }

  std::string_view text_;
  char separator_;
  bool quoted_;
  ManifestLimits limits_;
  std::string file_;
  std::vector<std::string> names_;
  std::size_t content_end_;  // end_of_content(text_)
  std::size_t pos_ = 0;
  std::size_t line_ = 1;
  std::size_t record_start_ = 0;
  std::size_t record_line_ = 1;
};

// What the options name, in the order Manifest::modalities lists them: (modality, key).
inline std::vector<std::pair<std::string, std::string>> named_modalities(
    const ManifestOptions& options) {
  std::vector<std::pair<std::string, std::string>> named;
  const std::pair<Modality, const std::string*> builtin[] = {
      {Modality::text, &options.text_key}, {Modality::image, &options.image_key},
      {Modality::audio, &options.audio_key}, {Modality::video, &options.video_key}};
  for (const auto& [modality, key] : builtin) {
    if (!key->empty()) named.emplace_back(modality_name(modality), *key);
  }
  for (const auto& [name, key] : options.custom_keys) named.emplace_back(name, key);
  return named;
}

// Builds the items of one manifest, whichever the format: each value a row gives goes
// through set_*, then finish_item checks and keeps the item.
class ManifestBuilder {
 public:
  ManifestBuilder(const std::filesystem::path& file, const ManifestOptions& options)
      : options_(options), name_(file.string()),
        directory_(file.has_parent_path() ? (file.parent_path() / "").string() : "") {
    manifest_.file = file;
    check(!options.text_key.empty() || !options.image_key.empty() || !options.audio_key.empty() ||
              !options.video_key.empty() || !options.custom_keys.empty(),
          name_, ": the manifest options name no modality: set ", options.option_name("text_key"),
          ", ", options.option_name("image_key"), ", ", options.option_name("audio_key"), ", ",
          options.option_name("video_key"), " or ", options.option_name("custom_keys"),
          " to the column that holds it");
    for (const auto& [name, key] : options.custom_keys) {
      check(!name.empty(), name_, ": ManifestOptions::custom_keys: a custom modality without a name");
      for (const Modality m : builtin_modalities) {
        check(name != modality_name(m), name_, ": ManifestOptions::custom_keys: \"", name,
              "\" is a built-in modality; name its column with ", name, "_key");
      }
      check(!key.empty(), name_, ": ManifestOptions::custom_keys: modality \"", name,
            "\" names no column");
    }
    for (const auto& [modality, key] : named_modalities(options)) {
      manifest_.modalities.push_back(modality);
    }
  }

  const std::string& name() const { return name_; }
  bool has_items() const { return !manifest_.items.empty(); }
  // Room for `count` items at once: growing by doubling would hold the old and the new
  // array together (3 times the items' size). Pages of room never used stay unmapped.
  void reserve(std::size_t count) {
    manifest_.items.reserve(std::min(count, options_.limits.max_items));
  }

  void start_item(std::size_t line) {
    if (manifest_.items.size() == options_.limits.max_items) {
      fail(name_, ": line ", line, ": more than ", options_.limits.max_items,
           " items, the limit set by tessera::ManifestLimits::max_items");
    }
    item_ = ManifestItem{};
    item_.line = line;
  }
  // `where` names the column or key in messages: "column \"title\"", "key \"caption\"".
  void set(const std::string& modality, std::string value, const std::string& where) {
    if (modality == "text") {
      item_.text = std::move(value);
      return;
    }
    if (value.empty()) return;  // an empty cell: the item has no such file
    check(value.find('\0') == std::string::npos, name_, ": line ", item_.line, ", ", where,
          ": a path holding a NUL byte");
    std::string path = is_absolute_path(value) ? std::move(value) : directory_ + value;
    if (path.size() > options_.limits.max_path_bytes) {
      fail(name_, ": line ", item_.line, ", ", where, ": a path of ", path.size(),
           " bytes, more than ", options_.limits.max_path_bytes,
           ", the limit set by tessera::ManifestLimits::max_path_bytes (Linux's PATH_MAX)");
    }
    if (modality == "image") item_.image = std::move(path);
    else if (modality == "audio") item_.audio = std::move(path);
    else if (modality == "video") item_.video = std::move(path);
    else item_.custom[modality] = std::move(path);
  }
  void set_label(std::string value) { item_.label = std::move(value); }
  void set_id(std::string value, const std::string& where) {
    check(!value.empty(), name_, ": line ", item_.line, ", ", where,
          ": an empty id (leave the id column out to number items by line)");
    item_.id = std::move(value);
  }
  void finish_item(const std::string& keys) {
    const bool any = item_.text || item_.image || item_.audio || item_.video || !item_.custom.empty();
    check(any, name_, ": line ", item_.line, ": the item has no modality (", keys,
          " all empty or absent)");
    if (item_.id.empty()) item_.id = std::to_string(item_.line);
    manifest_.items.push_back(std::move(item_));
  }

  Manifest finish() {
    check(!manifest_.items.empty(), name_, ": the manifest has no items");
    return std::move(manifest_);
  }

 private:
  const ManifestOptions& options_;
  std::string name_;
  std::string directory_;  // the manifest's directory ending in '/', or "" for the working one
  Manifest manifest_;
  ManifestItem item_;
};

// "\"title\", \"filepath\"" / "columns \"title\", \"filepath\"": the keys an item may use.
inline std::string quoted_list(const std::vector<std::string>& keys) {
  std::string list;
  for (const std::string& key : keys) list += (list.empty() ? "\"" : ", \"") + key + "\"";
  return list;
}

inline Manifest parse_csv_manifest(std::string_view text, ManifestBuilder& builder,
                                   const ManifestOptions& options, char separator) {
  const std::string& name = builder.name();
  CsvReader reader(text, separator, options.quoted, options.limits, name);
  CsvRecord header;
  check(reader.next(&header), name, ": the manifest is empty: expected a header row naming "
        "its columns");
  for (std::size_t c = 0; c < header.fields.size(); ++c) {
    const std::string problem = utf8_problem(header.fields[c]);
    check(problem.empty(), name, ": line ", header.line, ", field ", c + 1,
          " of the header: not UTF-8: ", problem);
  }
  // column index of each key the options name
  const auto column_of = [&](const std::string& key, const std::string& option) {
    const auto found = std::find(header.fields.begin(), header.fields.end(), key);
    if (found == header.fields.end()) {
      std::string names = quoted_list(header.fields);
      if (names.size() > 200) names = names.substr(0, 197) + "...";
      fail(name, ": line ", header.line, ": no column \"", key, "\" (named by ",
           option, "); the header has ", names);
    }
    const auto second = std::find(found + 1, header.fields.end(), key);
    check(second == header.fields.end(), name, ": line ", header.line, ": column \"", key,
          "\" appears twice in the header (columns ", found - header.fields.begin() + 1, " and ",
          second - header.fields.begin() + 1, ")");
    return static_cast<std::size_t>(found - header.fields.begin());
  };
  struct Column {
    std::string modality;
    std::size_t index;
    std::string where;  // "column \"title\"", for messages
  };
  std::vector<Column> columns;
  std::vector<std::string> keys;
  for (const auto& [modality, key] : named_modalities(options)) {
    const bool custom = options.custom_keys.count(modality) > 0;
    const std::string option = custom ? options.option_name("custom_keys") + "[\"" + modality + "\"]"
                                      : options.option_name(modality + "_key");
    const std::size_t index = column_of(key, option);
    columns.push_back({modality, index, concat("column \"", key, "\"")});
    keys.push_back(key);
  }
  const std::optional<std::size_t> label_column =
      options.label_key.empty() ? std::nullopt
                                : std::optional<std::size_t>(column_of(options.label_key, options.option_name("label_key")));
  const std::optional<std::size_t> id_column =
      options.id_key.empty() ? std::nullopt
                             : std::optional<std::size_t>(column_of(options.id_key, options.option_name("id_key")));
  const std::string id_where = concat("column \"", options.id_key, "\"");
  reader.set_names(header.fields);
  const std::string keys_text = "columns " + quoted_list(keys);

  CsvRecord record;
  while (reader.next(&record)) {
    if (record.fields.size() != header.fields.size()) {
      const bool blank = record.fields.size() == 1 && record.fields[0].empty();
      fail(name, ": line ", record.line, ": ", blank ? "a blank line"
                   : concat(record.fields.size(), record.fields.size() == 1 ? " field" : " fields"),
           ", where the header (line ", header.line, ") has ", header.fields.size(), " columns",
           blank ? " (blank lines are allowed only at the end of the file)" : "");
    }
    const auto field = [&](std::size_t c) -> std::string& {
      const std::string problem = utf8_problem(record.fields[c]);
      if (!problem.empty()) {
        fail(name, ": line ", record.line, ", ", reader.field_name(c + 1), ": not UTF-8: ", problem);
      }
      return record.fields[c];
    };
    builder.start_item(record.line);
    for (const Column& column : columns) {
      builder.set(column.modality, std::move(field(column.index)), column.where);
    }
    if (label_column && !field(*label_column).empty()) {
      builder.set_label(std::move(field(*label_column)));
    }
    if (id_column) builder.set_id(std::move(field(*id_column)), id_where);
    builder.finish_item(keys_text);
  }
  return builder.finish();
}

inline Manifest parse_jsonl_manifest(std::string_view text, ManifestBuilder& builder,
                                     const ManifestOptions& options) {
  const std::string& name = builder.name();
  struct NamedKey {
    std::string modality, key, where;  // where: "key \"caption\"", for messages
  };
  std::vector<NamedKey> named_keys;
  std::vector<std::string> keys;
  for (const auto& [modality, key] : named_modalities(options)) {
    named_keys.push_back({modality, key, concat("key \"", key, "\"")});
    keys.push_back(key);
  }
  const std::string id_where = concat("key \"", options.id_key, "\"");
  const std::string keys_text = "keys " + quoted_list(keys);
  std::map<std::string, bool> key_seen;  // each key the options name: in some line?
  std::map<std::string, std::string> key_option;  // and the option that names it
  for (const auto& [modality, key] : named_modalities(options)) {
    key_seen[key] = false;
    key_option[key] = options.custom_keys.count(modality) > 0
                          ? options.option_name("custom_keys") + "[\"" + modality + "\"]"
                          : options.option_name(modality + "_key");
  }
  for (const auto& [key, member] : {std::pair{options.label_key, "label_key"},
                                    std::pair{options.id_key, "id_key"}}) {
    if (key.empty()) continue;
    key_seen[key] = false;
    key_option[key] = options.option_name(member);
  }

  // A label or id: a string, or an integer written in decimal.
  const auto label_text = [&](const nlohmann::json& value, std::size_t line,
                              const std::string& key) -> std::optional<std::string> {
    if (value.is_null()) return std::nullopt;
    if (value.is_string()) return value.get<std::string>();
    if (value.is_number_integer()) return value.dump();
    fail(name, ": line ", line, ", key \"", key, "\": expected a string, an integer or null, got ",
         json_excerpt(value));
  };

  std::size_t line = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    ++line;
    const std::size_t newline = text.find('\n', pos);
    const std::size_t end = newline == std::string_view::npos ? text.size() : newline;
    std::string_view row = text.substr(pos, end - pos);
    pos = end == text.size() ? end : end + 1;
    if (row.size() > options.limits.max_line_bytes) {
      fail(name, ": line ", line, ": longer than ", options.limits.max_line_bytes,
           " bytes, the limit set by tessera::ManifestLimits::max_line_bytes");
    }
    if (!row.empty() && row.back() == '\r') row.remove_suffix(1);
    if (row.find_first_not_of(" \t\r") == std::string_view::npos) continue;  // blank

    std::string problem;
    nlohmann::json object;
    try {
      object = parse_json_checked(row, &problem);
    } catch (const nlohmann::json::exception& e) {
      fail(name, ": line ", line, ": not valid JSON: ", json_error_reason(e));
    }
    check(problem.empty(), name, ": line ", line, ": ", problem);
    if (!object.is_object()) {
      fail(name, ": line ", line, ": expected a JSON object, got ", json_excerpt(object));
    }
    check(object.size() <= options.limits.max_fields, name, ": line ", line, ": more than ",
          options.limits.max_fields, " keys, the limit set by tessera::ManifestLimits::max_fields");

    builder.start_item(line);
    for (const auto& [modality, key, where] : named_keys) {
      const auto found = object.find(key);
      if (found == object.end()) continue;
      key_seen[key] = true;
      if (found->is_null()) continue;
      if (!found->is_string()) {
        fail(name, ": line ", line, ", key \"", key, "\": expected a string (",
             modality == "text" ? "the caption" : "a path", ") or null, got ", json_excerpt(*found));
      }
      std::string value = found->get<std::string>();
      if (modality != "text") {
        check(!value.empty(), name, ": line ", line, ", key \"", key,
              "\": an empty path (write null or leave the key out for an item without it)");
      }
      builder.set(modality, std::move(value), where);
    }
    if (!options.label_key.empty()) {
      if (const auto found = object.find(options.label_key); found != object.end()) {
        key_seen[options.label_key] = true;
        if (auto label = label_text(*found, line, options.label_key)) builder.set_label(*label);
      }
    }
    if (!options.id_key.empty()) {
      if (const auto found = object.find(options.id_key); found != object.end()) {
        key_seen[options.id_key] = true;
        if (auto id = label_text(*found, line, options.id_key)) {
          builder.set_id(*id, id_where);
        }
      }
    }
    builder.finish_item(keys_text);
  }
  for (const auto& [key, seen] : key_seen) {
    if (!builder.has_items()) break;  // "the manifest has no items" says more
    check(seen, name, ": no line has the key \"", key, "\" (named by ", key_option.at(key), ")");
  }
  return builder.finish();
}

// FNV-1a, 64 bits, of `bytes`: a fixed hash (std::hash differs between standard libraries).
inline std::uint64_t fnv1a_64(std::string_view bytes) {
  std::uint64_t hash = 0xCBF29CE484222325ull;
  for (const char c : bytes) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001B3ull;
  }
  return hash;
}

}  // namespace detail

// The format of `file` from options.format, or from its extension.
inline ManifestFormat manifest_format(const std::filesystem::path& file,
                                      const ManifestOptions& options) {
  if (options.format != ManifestFormat::from_extension) return options.format;
  const std::string extension = file.extension().string();
  if (extension == ".csv" || extension == ".tsv") return ManifestFormat::csv;
  if (extension == ".jsonl" || extension == ".ndjson") return ManifestFormat::jsonl;
  fail(file.string(), ": cannot tell the manifest's format from the extension \"", extension,
       "\": expected .csv, .tsv, .jsonl or .ndjson, or set ", options.option_name("format"));
}

// The manifest held in `text`, as if read from `file` (named in messages; relative paths
// are joined to its directory). read_manifest is this over the file's bytes.
// ensures: every item has a modality; or tessera::Error naming the file, the line and the
// column or key.
inline Manifest parse_manifest(std::string_view text, const std::filesystem::path& file,
                               const ManifestOptions& options) {
  const std::string name = file.string();
  if (text.size() > options.limits.max_file_bytes) {
    fail(name, ": the manifest is ", text.size(), " bytes, more than ", options.limits.max_file_bytes,
         " bytes, the limit set by tessera::ManifestLimits::max_file_bytes");
  }
  const ManifestFormat format = manifest_format(file, options);
  detail::ManifestBuilder builder(file, options);
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);  // a UTF-8 byte order mark
  // at most one item per line
  builder.reserve(static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')) + 1);
  if (format == ManifestFormat::jsonl) return detail::parse_jsonl_manifest(text, builder, options);

  const char separator =
      options.separator != 0 ? options.separator : file.extension() == ".tsv" ? '\t' : ',';
  check(separator != '"' && separator != '\n' && separator != '\r' &&
            static_cast<unsigned char>(separator) < 0x80,
        name, ": tessera::ManifestOptions::separator: expected an ASCII character other than '\"', "
        "CR and LF, got byte ", static_cast<int>(static_cast<unsigned char>(separator)));
  return detail::parse_csv_manifest(text, builder, options, separator);
}

// The manifest at `file` (CSV/TSV or JSONL, see the header comment), at most
// options.limits.max_file_bytes bytes.
inline Manifest read_manifest(const std::filesystem::path& file, const ManifestOptions& options) {
  const ReadLimit limit{options.limits.max_file_bytes, "tessera::ManifestLimits::max_file_bytes"};
  const std::string text = read_file(file, {}, limit);
  return parse_manifest(text, file, options);
}

// `value` as one CSV field between `separator`s: quoted (its quotes doubled) when it holds
// the separator, a quote, CR or LF, or is empty (so a one-column row is never a blank line).
inline std::string csv_field(std::string_view value, char separator = ',') {
  const bool quote = value.empty() || value.find_first_of(std::string{separator, '"', '\r', '\n'}) !=
                                          std::string_view::npos;
  if (!quote) return std::string(value);
  std::string field = "\"";
  for (const char c : value) {
    if (c == '"') field += '"';
    field += c;
  }
  return field + "\"";
}

// ---- The held-out split ----------------------------------------------------------------------

// The draw of item `id` under `seed`, uniform in [0, 1): SplitMix64 seeded with
// seed ^ FNV-1a-64(id's bytes), first uniform() (53 bits). A fixed formula (no standard
// library hash), so a split is the same everywhere.
inline double held_out_draw(std::string_view id, std::uint64_t seed) {
  SplitMix64 rng{seed ^ detail::fnv1a_64(id)};
  return rng.uniform();
}

// Whether the item with `id` is in the held-out part of a split of `fraction` under `seed`:
// held_out_draw(id, seed) < fraction. requires 0 <= fraction <= 1.
inline bool is_held_out(std::string_view id, double fraction, std::uint64_t seed) {
  return held_out_draw(id, seed) < fraction;
}

struct ManifestSplit {
  std::vector<ManifestItem> train;     // in manifest order
  std::vector<ManifestItem> held_out;  // in manifest order
};

// Splits `items` by is_held_out(item.id, fraction, seed). The held-out part holds about
// fraction * items.size() items (each item independently; not exactly). An item's side
// depends only on its id and the seed: appending items, or inserting them when ids come
// from an id column, leaves every other item where it was.
// requires 0 <= fraction <= 1 (else tessera::Error)
inline ManifestSplit split_manifest(std::vector<ManifestItem> items, double fraction,
                                    std::uint64_t seed) {
  check(fraction >= 0 && fraction <= 1, "split_manifest: the held-out fraction must be in [0, 1], got ",
        fraction);
  ManifestSplit split;
  for (ManifestItem& item : items) {
    (is_held_out(item.id, fraction, seed) ? split.held_out : split.train).push_back(std::move(item));
  }
  return split;
}

}  // namespace tessera
