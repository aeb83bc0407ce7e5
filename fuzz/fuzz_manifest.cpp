// Fuzz target: manifests (io/manifest.hpp). The first byte picks the form and the options;
// the rest is the manifest's text, parsed under small ManifestLimits (so inputs reach them):
//   bits 0-1: CSV with ',' / TSV / TSV without quoting / JSONL
//   bit 2:    a label and an id column ("label", "id")
//   bit 3:    a custom modality ("point_cloud" in column "cloud")
// Every item read must have a modality, a line after the one before and an id; its held-out
// draw lies in [0, 1). Then the CSV records of the text (detail::CsvReader), when they read,
// are written back with csv_field and read again: the records must come back equal.

#include "fuzz.hpp"

#include <tessera/io/manifest.hpp>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_manifest: %s\n", what);
  std::abort();
}

std::vector<tessera::detail::CsvRecord> records_of(std::string_view text, char separator) {
  tessera::detail::CsvReader reader(text, separator, /*quoted=*/true, tessera::ManifestLimits{},
                                    "fuzz");
  std::vector<tessera::detail::CsvRecord> records;
  tessera::detail::CsvRecord record;
  while (reader.next(&record)) records.push_back(record);
  return records;
}

void check_manifest(std::string_view text, std::uint8_t selector) {
  const int form = selector & 3;
  tessera::ManifestOptions options;
  options.text_key = form == 3 ? "caption" : "title";
  options.image_key = form == 3 ? "image" : "filepath";
  options.quoted = form != 2;
  if (selector & 4) {
    options.label_key = "label";
    options.id_key = "id";
  }
  if (selector & 8) options.custom_keys["point_cloud"] = "cloud";
  options.limits.max_file_bytes = 1 << 16;
  options.limits.max_items = 200;
  options.limits.max_line_bytes = 512;
  options.limits.max_fields = 32;
  options.limits.max_path_bytes = 64;
  static const char* const files[] = {"fuzz/m.csv", "fuzz/m.tsv", "fuzz/m.tsv", "fuzz/m.jsonl"};
  const tessera::Manifest manifest = tessera::parse_manifest(text, files[form], options);

  std::size_t previous_line = 0;
  for (const tessera::ManifestItem& item : manifest.items) {
    if (!item.text && !item.image && !item.audio && !item.video && item.custom.empty()) {
      finding("an item without a modality");
    }
    if (item.line <= previous_line) finding("items out of line order");
    previous_line = item.line;
    if (item.id.empty()) finding("an item without an id");
    const double draw = tessera::held_out_draw(item.id, 18);
    if (!(draw >= 0 && draw < 1)) finding("a held-out draw outside [0, 1)");
    (void)item.empty_caption();
  }
  if (manifest.items.empty() || manifest.items.size() > options.limits.max_items) {
    finding("an item count outside [1, max_items]");
  }
}

void check_csv_round_trip(std::string_view text, char separator) {
  std::vector<tessera::detail::CsvRecord> records;
  try {
    records = records_of(text, separator);
  } catch (const tessera::Error&) {
    return;  // refused: check_manifest covers refusals
  }
  std::string written;
  for (const auto& record : records) {
    for (std::size_t f = 0; f < record.fields.size(); ++f) {
      if (f > 0) written += separator;
      written += tessera::csv_field(record.fields[f], separator);
    }
    written += "\r\n";
  }
  const auto again = records_of(written, separator);
  if (again.size() != records.size()) finding("the CSV round trip changed the record count");
  for (std::size_t r = 0; r < records.size(); ++r) {
    if (again[r].fields != records[r].fields) finding("the CSV round trip changed a record");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view text = fuzz::as_text(data + 1, size - 1);
  fuzz::refuse_with_error_only([&] { check_manifest(text, data[0]); });
  check_csv_round_trip(text, (data[0] & 3) == 0 ? ',' : '\t');
  return 0;
}
