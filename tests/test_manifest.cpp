// Manifests (include/tessera/io/manifest.hpp): CSV/TSV and JSONL read into items, every
// quoting rule of RFC 4180 (quoted separators, doubled quotes, line breaks inside quotes,
// CRLF, a byte order mark), paths joined to the manifest's directory, empty captions kept and
// marked, every malformed manifest and every limit refused with an Error naming the file,
// line and column or key, fields written by csv_field read back exactly, and the held-out
// split: deterministic, pinned to its formula, and stable when items are appended.

#include <tessera/io/manifest.hpp>

#include "test_util.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace tessera {
namespace test_manifest {

using ::testing::HasSubstr;
namespace fs = std::filesystem;
using test::error_of;
using test::TempDir;

// open_clip's column names: --csv-img-key filepath --csv-caption-key title
ManifestOptions open_clip_options() {
  ManifestOptions options;
  options.image_key = "filepath";
  options.text_key = "title";
  return options;
}

Manifest parse(std::string_view text, const ManifestOptions& options = open_clip_options(),
               const fs::path& file = "data/train.csv") {
  return parse_manifest(text, file, options);
}

std::string parse_error(std::string_view text, const ManifestOptions& options = open_clip_options(),
                        const fs::path& file = "data/train.csv") {
  return error_of([&] { parse_manifest(text, file, options); });
}

void write_file(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// ---- CSV and TSV -----------------------------------------------------------------------------

TEST(Manifest, ReadsAnOpenClipTsv) {
  const Manifest m = parse("filepath\ttitle\nimages/a.jpg\ta dog\n/abs/b.jpg\ta cat\n",
                           open_clip_options(), "data/train.tsv");
  EXPECT_EQ(m.file, fs::path("data/train.tsv"));
  EXPECT_EQ(m.modalities, (std::vector<std::string>{"text", "image"}));
  ASSERT_EQ(m.items.size(), 2u);
  EXPECT_EQ(m.items[0].line, 2u);
  EXPECT_EQ(m.items[0].id, "2");
  EXPECT_EQ(*m.items[0].image, "data/images/a.jpg");
  EXPECT_EQ(*m.items[0].text, "a dog");
  EXPECT_FALSE(m.items[0].audio);
  EXPECT_FALSE(m.items[0].label);
  EXPECT_EQ(*m.items[1].image, std::string("/abs/b.jpg"));  // absolute: kept
  EXPECT_EQ(m.items[1].id, "3");
  EXPECT_EQ(m.items[1].file(Modality::image), &*m.items[1].image);
  EXPECT_EQ(m.items[1].file(Modality::video), nullptr);
  EXPECT_EQ(m.empty_captions(), 0u);
}

TEST(Manifest, ReadsQuotedFields) {
  // a separator, a doubled quote, a line break and CRLF inside quotes; quoted empty caption
  const Manifest m = parse(
      "filepath,title\r\n"
      "a.jpg,\"red, green\"\r\n"
      "\"b.jpg\",\"she said \"\"hi\"\"\"\r\n"
      "c.jpg,\"two\r\nlines\nthree\"\r\n"
      "d.jpg,\"\"\r\n"
      "e.jpg,a \"mid\" quote\r\n");
  ASSERT_EQ(m.items.size(), 5u);
  EXPECT_EQ(*m.items[0].text, "red, green");
  EXPECT_EQ(*m.items[1].text, "she said \"hi\"");
  EXPECT_EQ(*m.items[1].image, std::string("data/b.jpg"));
  EXPECT_EQ(*m.items[2].text, "two\r\nlines\nthree");
  EXPECT_EQ(m.items[2].line, 4u);
  EXPECT_EQ(m.items[3].line, 7u);  // the item before spans lines 4 to 6
  EXPECT_EQ(*m.items[3].text, "");
  EXPECT_TRUE(m.items[3].empty_caption());
  EXPECT_EQ(*m.items[4].text, "a \"mid\" quote");  // as Python's csv and pandas read it
  EXPECT_EQ(m.items[4].line, 8u);
}

TEST(Manifest, ByteOrderMarkAndNoFinalNewline) {
  const Manifest m = parse("\xEF\xBB\xBF" "filepath,title\na.jpg,x");
  ASSERT_EQ(m.items.size(), 1u);
  EXPECT_EQ(*m.items[0].text, "x");
}

TEST(Manifest, UnquotedModeKeepsQuotes) {
  ManifestOptions options = open_clip_options();
  options.quoted = false;
  const Manifest m = parse("filepath\ttitle\na.jpg\t\"quoted\" start\n", options, "d/m.tsv");
  EXPECT_EQ(*m.items[0].text, "\"quoted\" start");
}

TEST(Manifest, SeparatorOption) {
  ManifestOptions options = open_clip_options();
  options.separator = ';';
  const Manifest m = parse("filepath;title\na.jpg;x, y\n", options);
  EXPECT_EQ(*m.items[0].text, "x, y");
  // the default is ',' for .csv, '\t' for .tsv: a TSV read as .csv has one column
  EXPECT_THAT(parse_error("filepath\ttitle\na.jpg\tx\n"), HasSubstr("no column \"title\""));
  for (const char bad : {'"', '\n', '\r', '\xC3'}) {
    options.separator = bad;
    EXPECT_THAT(parse_error("filepath,title\na,b\n", options),
                HasSubstr("ManifestOptions::separator: expected an ASCII character"));
  }
}

TEST(Manifest, BlankLines) {
  // at the end: skipped
  EXPECT_EQ(parse("filepath,title\na.jpg,x\n\n\r\n\n").items.size(), 1u);
  // inside a file of several columns: an error
  EXPECT_THAT(parse_error("filepath,title\na.jpg,x\n\nb.jpg,y\n"),
              HasSubstr("data/train.csv: line 3: a blank line, where the header (line 1) has 2 "
                        "columns (blank lines are allowed only at the end of the file)"));
  // in a one-column file: an empty caption, kept and marked, never dropped silently
  ManifestOptions captions;
  captions.text_key = "title";
  const Manifest m = parse("title\na dog\n\n   \nlast\n", captions);
  ASSERT_EQ(m.items.size(), 4u);
  EXPECT_TRUE(m.items[1].empty_caption());
  EXPECT_EQ(m.items[1].line, 3u);
  EXPECT_TRUE(m.items[2].empty_caption());  // white space only
  EXPECT_EQ(m.empty_captions(), 2u);
}

TEST(Manifest, RefusesBadQuoting) {
  EXPECT_EQ(parse_error("filepath,title\na.jpg,x\nb.jpg,\"never closed\n"),
            "data/train.csv: line 3, column \"title\": a quoted field is not closed before the end "
            "of the file (a quote inside a quoted field is written twice: \"\")");
  EXPECT_EQ(parse_error("filepath,title\na.jpg,\"closed\"early\n"),
            "data/train.csv: line 2, column \"title\": text after the closing quote of a quoted "
            "field (a quote inside a quoted field is written twice: \"\")");
  // in the header: fields by number
  EXPECT_THAT(parse_error("\"filepath,title\n"), HasSubstr("line 1, field 1: a quoted field is not closed"));
  // a CR that does not end a line
  EXPECT_THAT(parse_error("filepath,title\na.jpg,x\ry\n"),
              HasSubstr("line 2, column \"title\": a carriage return not followed by a line feed"));
  EXPECT_THAT(parse_error("filepath,title\na.jpg,x\r"), HasSubstr("a carriage return"));
}

TEST(Manifest, RefusesWrongFieldCounts) {
  EXPECT_EQ(parse_error("filepath,title\na.jpg,x,extra\n"),
            "data/train.csv: line 2: 3 fields, where the header (line 1) has 2 columns");
  EXPECT_THAT(parse_error("filepath,title\na.jpg\n"), HasSubstr("line 2: 1 field, where"));
}

TEST(Manifest, RefusesMissingAndDuplicatedColumns) {
  EXPECT_EQ(parse_error("path,caption\na.jpg,x\n"),
            "data/train.csv: line 1: no column \"title\" (named by "
            "tessera::ManifestOptions::text_key); the header has \"path\", \"caption\"");
  ManifestOptions options = open_clip_options();
  options.label_key = "class";
  EXPECT_THAT(parse_error("filepath,title\na.jpg,x\n", options),
              HasSubstr("no column \"class\" (named by tessera::ManifestOptions::label_key)"));
  options = open_clip_options();
  options.custom_keys["point_cloud"] = "cloud";
  EXPECT_THAT(parse_error("filepath,title\na.jpg,x\n", options),
              HasSubstr("(named by tessera::ManifestOptions::custom_keys[\"point_cloud\"])"));
  EXPECT_THAT(parse_error("title,filepath,title\nx,a.jpg,y\n"),
              HasSubstr("line 1: column \"title\" appears twice in the header (columns 1 and 3)"));
  // an unused column may repeat
  EXPECT_EQ(parse("filepath,title,x,x\na.jpg,t,1,2\n").items.size(), 1u);
  // a header with many columns is cut in the message
  std::string header = "filepath";
  for (int c = 0; c < 100; ++c) header += ",column_" + std::to_string(c);
  EXPECT_THAT(parse_error(header + "\n"), HasSubstr("..."));
}

TEST(Manifest, RefusesEmptyManifests) {
  EXPECT_EQ(parse_error(""), "data/train.csv: the manifest is empty: expected a header row naming its columns");
  EXPECT_EQ(parse_error("\n\n"), parse_error(""));
  EXPECT_EQ(parse_error("filepath,title\n"), "data/train.csv: the manifest has no items");
  EXPECT_EQ(parse_error("", open_clip_options(), "d/m.jsonl"), "d/m.jsonl: the manifest has no items");
}

TEST(Manifest, OptionsMustNameAModality) {
  ManifestOptions none;
  none.label_key = "label";
  EXPECT_THAT(parse_error("label\nx\n", none), HasSubstr("data/train.csv: the manifest options name "
                                                         "no modality"));
  ManifestOptions builtin;
  builtin.custom_keys["image"] = "filepath";
  EXPECT_THAT(parse_error("filepath\na\n", builtin), HasSubstr("\"image\" is a built-in modality; "
                                                               "name its column with image_key"));
  ManifestOptions unnamed;
  unnamed.custom_keys[""] = "x";
  EXPECT_THAT(parse_error("x\na\n", unnamed), HasSubstr("a custom modality without a name"));
  ManifestOptions no_column;
  no_column.custom_keys["depth"] = "";
  EXPECT_THAT(parse_error("x\na\n", no_column), HasSubstr("modality \"depth\" names no column"));
}

TEST(Manifest, ItemsWithoutAModality) {
  ManifestOptions options;
  options.image_key = "image";
  options.audio_key = "audio";
  // a multimodal manifest: an empty cell is a modality the item lacks
  const Manifest m = parse("image,audio\na.jpg,\n,b.wav\n", options);
  EXPECT_TRUE(m.items[0].image && !m.items[0].audio);
  EXPECT_TRUE(!m.items[1].image && m.items[1].audio);
  EXPECT_EQ(parse_error("image,audio\na.jpg,\n,\n", options),
            "data/train.csv: line 3: the item has no modality (columns \"image\", \"audio\" all "
            "empty or absent)");
}

TEST(Manifest, RefusesInvalidUtf8) {
  EXPECT_EQ(parse_error("filepath,title\na.jpg,caf\xE9\n"),
            "data/train.csv: line 2, column \"title\": not UTF-8: incomplete UTF-8 string; last byte: 0xE9");
  EXPECT_THAT(parse_error("filepath,title\na.jpg,\xFF caption\n"),
              HasSubstr("line 2, column \"title\": not UTF-8: invalid UTF-8 byte at index 0: 0xFF"));
  EXPECT_THAT(parse_error("filepath,title\n\xC3\x28.jpg,x\n"),
              HasSubstr("line 2, column \"filepath\": not UTF-8"));
  EXPECT_THAT(parse_error("filepath,title\na.jpg,\xE2\x82\n"), HasSubstr("not UTF-8"));  // truncated
  EXPECT_THAT(parse_error("filepath,title\na.jpg,\xED\xA0\x80\n"), HasSubstr("not UTF-8"));  // surrogate
  EXPECT_THAT(parse_error("filepath,title\na.jpg,\xC0\xAF\n"), HasSubstr("not UTF-8"));  // overlong
  EXPECT_THAT(parse_error("filepath,ti\xFFtle\n"), HasSubstr("line 1, field 2 of the header: not UTF-8"));
  // a column no option names is not read
  EXPECT_EQ(parse("filepath,title,other\na.jpg,x,\xFF\n").items.size(), 1u);
  // multi-byte text is kept byte for byte
  EXPECT_EQ(*parse("filepath,title\na.jpg,caf\xC3\xA9 \xF0\x9F\x90\x95\n").items[0].text,
            "caf\xC3\xA9 \xF0\x9F\x90\x95");
}

TEST(Manifest, Paths) {
  EXPECT_EQ(*parse("filepath,title\nsub/a.jpg,x\n", open_clip_options(), "m.csv").items[0].image,
            std::string("sub/a.jpg"));  // a manifest in the working directory
  EXPECT_EQ(*parse("filepath,title\n../img/a.jpg,x\n", open_clip_options(), "/data/set/m.csv")
                 .items[0].image,
            std::string("/data/set/../img/a.jpg"));
  EXPECT_THAT(parse_error(std::string("filepath,title\na\0b.jpg,x\n", 24)),
              HasSubstr("line 2, column \"filepath\": a path holding a NUL byte"));
}

TEST(Manifest, LabelIdAndCustomColumns) {
  ManifestOptions options = open_clip_options();
  options.label_key = "class";
  options.id_key = "image_id";
  options.custom_keys["point_cloud"] = "cloud";
  const Manifest m = parse(
      "image_id,filepath,title,class,cloud\n"
      "17,a.jpg,a dog,dog,a.xyz\n"
      "17,a.jpg,another dog,,\n", options);
  EXPECT_EQ(m.modalities, (std::vector<std::string>{"text", "image", "point_cloud"}));
  ASSERT_EQ(m.items.size(), 2u);
  EXPECT_EQ(m.items[0].id, "17");
  EXPECT_EQ(*m.items[0].label, "dog");
  EXPECT_EQ(m.items[0].custom.at("point_cloud"), std::string("data/a.xyz"));
  EXPECT_FALSE(m.items[1].label);  // an empty label cell: no label
  EXPECT_TRUE(m.items[1].custom.empty());
  EXPECT_EQ(m.items[1].id, "17");  // ids need not be unique: captions of one image share it
  EXPECT_EQ(parse_error("image_id,filepath,title,class,cloud\n,a.jpg,x,y,z\n", options),
            "data/train.csv: line 2, column \"image_id\": an empty id (leave the id column out "
            "to number items by line)");
}

// ---- JSONL -----------------------------------------------------------------------------------

ManifestOptions jsonl_options() {
  ManifestOptions options;
  options.text_key = "caption";
  options.image_key = "image";
  options.audio_key = "audio";
  return options;
}

std::string jsonl_error(std::string_view text, ManifestOptions options = jsonl_options()) {
  return parse_error(text, options, "sets/pairs.jsonl");
}

TEST(Manifest, ReadsJsonl) {
  ManifestOptions options = jsonl_options();
  options.label_key = "label";
  options.id_key = "id";
  options.custom_keys["imu"] = "imu";
  const Manifest m = parse(
      "\xEF\xBB\xBF{\"image\": \"a.jpg\", \"caption\": \"a dog\", \"label\": 3, \"extra\": [1, {}]}\r\n"
      "\n"
      "   \n"
      "{\"audio\": \"/abs/b.wav\", \"caption\": null, \"id\": \"clip-9\", \"label\": \"bark\"}\n"
      "{\"imu\": \"c.npy\", \"image\": null, \"caption\": \"\", \"id\": 12}",
      options, "sets/pairs.jsonl");
  ASSERT_EQ(m.items.size(), 3u);
  EXPECT_EQ(m.items[0].line, 1u);
  EXPECT_EQ(m.items[0].id, "1");
  EXPECT_EQ(*m.items[0].image, std::string("sets/a.jpg"));
  EXPECT_EQ(*m.items[0].text, "a dog");
  EXPECT_EQ(*m.items[0].label, "3");
  EXPECT_EQ(m.items[1].line, 4u);  // blank lines skipped, still counted
  EXPECT_FALSE(m.items[1].text);   // null: absent, not an empty caption
  EXPECT_EQ(*m.items[1].audio, std::string("/abs/b.wav"));
  EXPECT_EQ(m.items[1].id, "clip-9");
  EXPECT_EQ(*m.items[1].label, "bark");
  EXPECT_EQ(m.items[2].custom.at("imu"), std::string("sets/c.npy"));
  EXPECT_FALSE(m.items[2].image);
  EXPECT_TRUE(m.items[2].empty_caption());
  EXPECT_EQ(m.items[2].id, "12");
  EXPECT_EQ(m.empty_captions(), 1u);
}

TEST(Manifest, RefusesBadJsonl) {
  EXPECT_EQ(jsonl_error("{\"image\": \"a.jpg\", \"caption\": 5}\n"),
            "sets/pairs.jsonl: line 1, key \"caption\": expected a string (the caption) or null, got 5");
  EXPECT_THAT(jsonl_error("{\"image\": \"a.jpg\"}\n{\"image\": [\"b.jpg\"]}\n"),
              HasSubstr("line 2, key \"image\": expected a string (a path) or null, got [\"b.jpg\"]"));
  EXPECT_THAT(jsonl_error("{\"image\": \"\"}\n"), HasSubstr("line 1, key \"image\": an empty path"));
  EXPECT_THAT(jsonl_error("{\"image\": \"a.jpg\"}\n[1, 2]\n"),
              HasSubstr("line 2: expected a JSON object, got [1,2]"));
  EXPECT_THAT(jsonl_error("{\"image\": \"a.jpg\"}\n{\"image\": \"b.jpg\",}\n"),
              HasSubstr("sets/pairs.jsonl: line 2: not valid JSON: "));
  EXPECT_THAT(jsonl_error("{\"image\": \"a.jpg\"} {}\n"), HasSubstr("line 1: not valid JSON"));
  EXPECT_THAT(jsonl_error("{\"image\": \"a.jpg\", \"image\": \"b.jpg\"}\n"),
              HasSubstr("line 1: key \"image\" appears twice in one object"));
  EXPECT_THAT(jsonl_error("{\"image\": \"caf\xE9.jpg\"}\n"), HasSubstr("line 1: not valid JSON"));
  EXPECT_THAT(jsonl_error("{\"image\": \"a.jpg\", \"x\": " + std::string(100, '[') +
                          std::string(100, ']') + "}\n"),
              HasSubstr("line 1: nested deeper than 64 levels"));
  EXPECT_EQ(jsonl_error("{\"other\": 1}\n"),
            "sets/pairs.jsonl: line 1: the item has no modality (keys \"caption\", \"image\", "
            "\"audio\" all empty or absent)");
  // a key the options name that no line has: a typo, most likely
  EXPECT_EQ(jsonl_error("{\"image\": \"a.jpg\", \"caption\": \"x\"}\n"),
            "sets/pairs.jsonl: no line has the key \"audio\" (named by "
            "tessera::ManifestOptions::audio_key)");
  ManifestOptions options = jsonl_options();
  options.audio_key.clear();
  options.label_key = "label";
  EXPECT_THAT(jsonl_error("{\"image\": \"a.jpg\", \"label\": 1.5}\n", options),
              HasSubstr("line 1, key \"label\": expected a string, an integer or null, got 1.5"));
  options.label_key.clear();
  options.id_key = "id";
  EXPECT_THAT(jsonl_error("{\"image\": \"a.jpg\", \"id\": \"\"}\n", options),
              HasSubstr("line 1, key \"id\": an empty id"));
  EXPECT_THAT(jsonl_error("{\"image\": \"a\\u0000b.jpg\", \"id\": 1}\n", options),
              HasSubstr("line 1, key \"image\": a path holding a NUL byte"));
}

TEST(Manifest, Formats) {
  EXPECT_EQ(manifest_format("a.csv", {}), ManifestFormat::csv);
  EXPECT_EQ(manifest_format("a.tsv", {}), ManifestFormat::csv);
  EXPECT_EQ(manifest_format("a.jsonl", {}), ManifestFormat::jsonl);
  EXPECT_EQ(manifest_format("a.ndjson", {}), ManifestFormat::jsonl);
  EXPECT_EQ(error_of([] { manifest_format("data/a.txt", {}); }),
            "data/a.txt: cannot tell the manifest's format from the extension \".txt\": expected "
            ".csv, .tsv, .jsonl or .ndjson, or set tessera::ManifestOptions::format");
  ManifestOptions options = jsonl_options();
  options.audio_key.clear();
  options.text_key.clear();
  options.format = ManifestFormat::jsonl;
  EXPECT_EQ(parse("{\"image\": \"a.jpg\"}\n", options, "data/list.txt").items.size(), 1u);
  options = open_clip_options();
  options.format = ManifestFormat::csv;
  options.separator = '\t';
  EXPECT_EQ(parse("filepath\ttitle\na\tb\n", options, "data/list.txt").items.size(), 1u);
}

// ---- Limits ----------------------------------------------------------------------------------

TEST(Manifest, LimitOfFileSize) {
  TempDir dir;
  const fs::path file = dir / "m.csv";
  write_file(file, "filepath,title\na.jpg,x\n");
  ManifestOptions options = open_clip_options();
  options.limits.max_file_bytes = 10;
  const std::string error = error_of([&] { read_manifest(file, options); });
  EXPECT_THAT(error, HasSubstr(file.string() + ": cannot read: the file is 23 bytes, more than the "
                               "limit of 10 bytes"));
  EXPECT_THAT(error, HasSubstr("tessera::ManifestLimits::max_file_bytes"));
  EXPECT_EQ(parse_error("filepath,title\na.jpg,x\n", options),
            "data/train.csv: the manifest is 23 bytes, more than 10 bytes, the limit set by "
            "tessera::ManifestLimits::max_file_bytes");
  options.limits.max_file_bytes = 23;
  EXPECT_EQ(read_manifest(file, options).items.size(), 1u);
}

TEST(Manifest, LimitOfItems) {
  ManifestOptions options = open_clip_options();
  options.limits.max_items = 2;
  EXPECT_EQ(parse("filepath,title\na,x\nb,y\n", options).items.size(), 2u);
  EXPECT_EQ(parse_error("filepath,title\na,x\nb,y\nc,z\n", options),
            "data/train.csv: line 4: more than 2 items, the limit set by "
            "tessera::ManifestLimits::max_items");
  options = jsonl_options();
  options.audio_key.clear();
  options.limits.max_items = 1;
  EXPECT_THAT(jsonl_error("{\"image\": \"a\"}\n{\"image\": \"b\"}\n", options),
              HasSubstr("line 2: more than 1 items"));
}

TEST(Manifest, LimitOfLineLength) {
  ManifestOptions options = open_clip_options();
  options.limits.max_line_bytes = 16;
  EXPECT_EQ(parse("filepath,title\na.jpg,0123456789\n", options).items.size(), 1u);  // 16 bytes
  EXPECT_EQ(parse_error("filepath,title\na.jpg,01234567890\n", options),
            "data/train.csv: line 2: the record is longer than 16 bytes, the limit set by "
            "tessera::ManifestLimits::max_line_bytes (is a quote not closed?)");
  // a quote left open is refused where its record passes the limit, not at the end of the file
  std::string text = "filepath,title\na.jpg,\"open\n";
  for (int i = 0; i < 1000; ++i) text += "b.jpg,x\n";
  EXPECT_THAT(parse_error(text, options), HasSubstr("line 2: the record is longer than 16 bytes"));
  // the line breaks inside quotes count
  EXPECT_THAT(parse_error("filepath,title\na.jpg,\"\n\n\n\n\n\n\n\n\n\n\n\"\n", options),
              HasSubstr("line 2: the record is longer"));
  options.quoted = false;
  EXPECT_EQ(parse_error("filepath,title\na.jpg,01234567890\n", options),
            "data/train.csv: line 2: the record is longer than 16 bytes, the limit set by "
            "tessera::ManifestLimits::max_line_bytes");
  options = jsonl_options();
  options.audio_key.clear();
  options.limits.max_line_bytes = 16;
  EXPECT_EQ(jsonl_error("{\"image\": \"abcdefghijklmnop\"}\n", options),
            "sets/pairs.jsonl: line 1: longer than 16 bytes, the limit set by "
            "tessera::ManifestLimits::max_line_bytes");
}

TEST(Manifest, LimitOfFields) {
  ManifestOptions options = open_clip_options();
  options.limits.max_fields = 3;
  EXPECT_EQ(parse("filepath,title,x\na,b,c\n", options).items.size(), 1u);
  EXPECT_EQ(parse_error("filepath,title,x,y\na,b,c,d\n", options),
            "data/train.csv: line 1: more than 3 fields, the limit set by "
            "tessera::ManifestLimits::max_fields");
  EXPECT_THAT(parse_error("filepath,title,x\na,b,c,,,,,,,\n", options), HasSubstr("line 2: more than 3 fields"));
  options = jsonl_options();
  options.audio_key.clear();
  options.limits.max_fields = 2;
  EXPECT_THAT(jsonl_error("{\"image\": \"a\", \"b\": 1, \"c\": 2}\n", options),
              HasSubstr("line 1: more than 2 keys, the limit set by tessera::ManifestLimits::max_fields"));
}

TEST(Manifest, LimitOfPathLength) {
  ManifestOptions options = open_clip_options();
  options.limits.max_path_bytes = 16;
  EXPECT_EQ(*parse("filepath,title\n1234567890a,x\n", options).items[0].image, "data/1234567890a");
  EXPECT_EQ(parse_error("filepath,title\n1234567890ab,x\n", options),
            "data/train.csv: line 2, column \"filepath\": a path of 17 bytes, more than 16, the limit "
            "set by tessera::ManifestLimits::max_path_bytes (Linux's PATH_MAX)");
  // captions are not paths
  EXPECT_EQ(parse("filepath,title\na,a caption longer than sixteen bytes\n", options).items.size(), 1u);
  // the default: PATH_MAX
  EXPECT_THAT(parse_error("filepath,title\n" + std::string(5000, 'a') + ",x\n"),
              HasSubstr("a path of 5005 bytes, more than 4096"));
}

TEST(Manifest, ReadsFilesAndNamesMissingOnes) {
  TempDir dir;
  fs::create_directories(dir / "set");
  write_file(dir / "set" / "train.csv", "filepath,title\nimg/a.jpg,x\n");
  write_file(dir / "set" / "val.csv", "filepath,title\nimg/b.jpg,y\n");
  const Manifest train = read_manifest(dir / "set" / "train.csv", open_clip_options());
  const Manifest held_out = read_manifest(dir / "set" / "val.csv", open_clip_options());
  EXPECT_EQ(*train.items[0].image, (dir / "set" / "img/a.jpg").string());
  EXPECT_EQ(*held_out.items[0].image, (dir / "set" / "img/b.jpg").string());
  EXPECT_THAT(error_of([&] { read_manifest(dir / "missing.csv", open_clip_options()); }),
              HasSubstr((dir / "missing.csv").string() + ": cannot open"));
}

// ---- Round trips -----------------------------------------------------------------------------

TEST(Manifest, CsvFieldRoundTrip) {
  EXPECT_EQ(csv_field("plain"), "plain");
  EXPECT_EQ(csv_field(""), "\"\"");
  EXPECT_EQ(csv_field("a,b"), "\"a,b\"");
  EXPECT_EQ(csv_field("a\tb", '\t'), "\"a\tb\"");
  EXPECT_EQ(csv_field("a\tb"), "a\tb");
  EXPECT_EQ(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(csv_field("two\nlines"), "\"two\nlines\"");

  // random captions over an alphabet of every character that matters, written and read back
  const std::vector<std::string> alphabet = {"a", " ", ",", "\t", "\"", "\n", "\r", "\r\n",
                                             "\xC3\xA9", "\xF0\x9F\x90\x95", ";", "'"};
  std::mt19937 gen(18);
  for (const char separator : {',', '\t', ';'}) {
    std::vector<std::string> captions;
    std::string text = csv_field("title", separator) + separator + "filepath\r\n";
    for (int row = 0; row < 200; ++row) {
      std::string caption;
      const int length = static_cast<int>(gen() % 12);
      for (int i = 0; i < length; ++i) caption += alphabet[gen() % alphabet.size()];
      captions.push_back(caption);
      text += csv_field(caption, separator) + separator + csv_field("p" + std::to_string(row), separator) +
              (row % 2 ? "\n" : "\r\n");
    }
    ManifestOptions options = open_clip_options();
    options.separator = separator;
    const Manifest m = parse(text, options);
    ASSERT_EQ(m.items.size(), captions.size()) << "separator " << int(separator);
    for (std::size_t i = 0; i < captions.size(); ++i) {
      EXPECT_EQ(*m.items[i].text, captions[i]) << "row " << i;
      EXPECT_EQ(*m.items[i].image, "data/p" + std::to_string(i));
    }
  }
}

TEST(Manifest, JsonlRoundTrip) {
  std::vector<std::string> captions = {"", "a \"quoted\" caption", "tab\there", "line\nbreak",
                                       "caf\xC3\xA9", "back\\slash"};
  std::string text;
  for (const std::string& caption : captions) {
    text += nlohmann::json{{"caption", caption}, {"image", "x.jpg"}}.dump() + "\n";
  }
  ManifestOptions options = jsonl_options();
  options.audio_key.clear();
  const Manifest m = parse(text, options, "pairs.jsonl");
  ASSERT_EQ(m.items.size(), captions.size());
  for (std::size_t i = 0; i < captions.size(); ++i) EXPECT_EQ(*m.items[i].text, captions[i]);
}

// ---- The held-out split ----------------------------------------------------------------------

std::vector<ManifestItem> numbered_items(std::size_t count) {
  std::string text = "filepath,title\n";
  for (std::size_t i = 0; i < count; ++i) text += "img" + std::to_string(i) + ".jpg,caption\n";
  return parse(text).items;
}

std::vector<std::string> ids_of(const std::vector<ManifestItem>& items) {
  std::vector<std::string> ids;
  for (const ManifestItem& item : items) ids.push_back(item.id);
  return ids;
}

TEST(ManifestSplit, DrawIsPinnedToItsFormula) {
  // SplitMix64{seed ^ FNV-1a-64(id)}.uniform(), computed independently in Python
  EXPECT_EQ(held_out_draw("7", 42), 0.98947223210103);
  EXPECT_EQ(held_out_draw("img_001", 0), 0.803310234819101);
  EXPECT_EQ(held_out_draw("2", 1), 0.5689016603222087);
  EXPECT_TRUE(is_held_out("2", 0.6, 1));
  EXPECT_FALSE(is_held_out("2", 0.5, 1));
}

TEST(ManifestSplit, DeterministicWithTheRequestedFraction) {
  const std::vector<ManifestItem> items = numbered_items(4000);
  const ManifestSplit a = split_manifest(items, 0.1, 7);
  const ManifestSplit b = split_manifest(items, 0.1, 7);
  EXPECT_EQ(ids_of(a.held_out), ids_of(b.held_out));
  EXPECT_EQ(a.train.size() + a.held_out.size(), items.size());
  // about 400 held out: binomial standard deviation sqrt(4000 * 0.1 * 0.9) = 19, allow 5 of them
  EXPECT_NEAR(static_cast<double>(a.held_out.size()), 400.0, 95.0);
  // another seed, another split
  EXPECT_NE(ids_of(split_manifest(items, 0.1, 8).held_out), ids_of(a.held_out));
  // both parts keep manifest order
  EXPECT_TRUE(std::is_sorted(a.held_out.begin(), a.held_out.end(),
                             [](const auto& x, const auto& y) { return x.line < y.line; }));
  EXPECT_TRUE(split_manifest(items, 0.0, 7).held_out.empty());
  EXPECT_TRUE(split_manifest(items, 1.0, 7).train.empty());
  for (const double bad : {-0.1, 1.5, std::nan("")}) {
    EXPECT_THAT(error_of([&] { split_manifest(items, bad, 7); }),
                HasSubstr("split_manifest: the held-out fraction must be in [0, 1]"));
  }
}

TEST(ManifestSplit, AppendingItemsMovesNoOtherItem) {
  const ManifestSplit before = split_manifest(numbered_items(500), 0.2, 3);
  const ManifestSplit after = split_manifest(numbered_items(800), 0.2, 3);
  std::vector<std::string> kept_held_out;
  for (const ManifestItem& item : after.held_out) {
    if (item.line <= 501) kept_held_out.push_back(item.id);
  }
  EXPECT_EQ(kept_held_out, ids_of(before.held_out));
  EXPECT_GT(after.held_out.size(), before.held_out.size());  // new items join both sides
}

TEST(ManifestSplit, ByIdColumnInsertionsAndSharedIds) {
  ManifestOptions options = open_clip_options();
  options.id_key = "id";
  std::string text = "id,filepath,title\n", inserted = text;
  for (int i = 0; i < 300; ++i) {
    const std::string row = "img" + std::to_string(i) + ",a.jpg,x\n";
    text += row;
    inserted += "new" + std::to_string(i) + ",b.jpg,y\n" + row;  // items inserted in between
    inserted += row;  // a second caption of the same image: the same id
  }
  const ManifestSplit a = split_manifest(parse(text, options).items, 0.3, 11);
  const ManifestSplit b = split_manifest(parse(inserted, options).items, 0.3, 11);
  std::vector<std::string> old_held_out;
  for (const ManifestItem& item : b.held_out) {
    if (item.id.starts_with("img")) old_held_out.push_back(item.id);
  }
  std::vector<std::string> doubled;
  for (const std::string& id : ids_of(a.held_out)) doubled.insert(doubled.end(), {id, id});
  EXPECT_EQ(old_held_out, doubled);  // the same images, both captions of each together
}

// A program names the options its own way (tessera-train: --csv-caption-key), and its users
// read that name in the errors, not the library's member.
TEST(Manifest, ErrorsNameTheCallersOptions) {
  ManifestOptions options = open_clip_options();
  options.option_names = {{"text_key", "--csv-caption-key"}, {"label_key", "--label-key"},
                          {"audio_key", "--audio-key"}, {"format", "--manifest-format"}};
  EXPECT_EQ(parse_error("path,caption\na.jpg,x\n", options),
            "data/train.csv: line 1: no column \"title\" (named by --csv-caption-key); the header "
            "has \"path\", \"caption\"");
  options.label_key = "class";
  EXPECT_THAT(parse_error("filepath,title\na.jpg,x\n", options),
              HasSubstr("no column \"class\" (named by --label-key)"));
  ManifestOptions jsonl = jsonl_options();
  jsonl.option_names = options.option_names;
  EXPECT_EQ(jsonl_error("{\"image\": \"a.jpg\", \"caption\": \"x\"}\n", jsonl),
            "sets/pairs.jsonl: no line has the key \"audio\" (named by --audio-key)");
  EXPECT_THAT(error_of([&] { manifest_format("data/a.txt", options); }),
              HasSubstr("or set --manifest-format"));
  ManifestOptions none;
  none.option_names = {{"text_key", "--text-key"}};
  EXPECT_THAT(parse_error("label\nx\n", none),
              HasSubstr("set --text-key, tessera::ManifestOptions::image_key, "));
}

}  // namespace test_manifest
}  // namespace tessera
