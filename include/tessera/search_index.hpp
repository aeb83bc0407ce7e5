#pragma once
// Zero-shot classification and search over a folder of files, on a Pipeline's embeddings
// (docs/pretrained.md, "Zero-shot classification" and "Search"; the programs tessera-classify
// and tessera-search; the Python module's Model.classify and Model.search).
//
//   auto p = tessera::Pipeline<float>::open("imagebind");
//   // classification, as CLIP's README: probabilities over the labels for each input
//   const auto labels = tessera::parse_labels("dog, cat, car");
//   const auto z = tessera::zero_shot_classify(p, {{{"image", "dog.png", {}}}}, labels);
//   // z.probabilities: [1, 3], the row sums to 1
//
//   // search: a folder's images, audio and videos embedded once into an index file, kept up
//   // to date (only new and changed files are embedded again), then queried
//   const auto index = tessera::update_search_index(p, "photos");
//   const auto hits = tessera::search(index, p.encode_texts({"a dog on a beach"}).row(0), 10);
//
// Zero-shot classification (CLIP's README, "Zero-Shot Prediction"): each label becomes a text
// through a template ("a photo of a {}."), the texts and the inputs are embedded, and
//
//   p[n, k] = softmax_k( exp(logit_scale) * cos(input_n, text_k) )      [N, K]
//
// with the model's own logit_scale (CLIP: ln 100, so the factor is 100). Search scores are
// the cosine similarities of the query's embedding with each file's.
//
// The index (a safetensors file, written atomically; by default DIR/.tessera-index.safetensors):
//   tensor "embeddings"           F32 [N, E]  row i the file files[i]'s unit embedding
//   metadata (strings; tessera.crc32 checks the whole file):
//     "tessera.index.version"     "1"
//     "tessera.index.model"       JSON {"dir": the model directory (Pipeline::dir()),
//                                 "files": {name: {"size": bytes, "mtime_ns": ns}} for each
//                                 regular file of the directory not starting with '.'}: the
//                                 model's identity
//     "tessera.index.files"       JSON [{"path": relative to DIR with '/', "modality":
//                                 "image"|"audio"|"video", "size": bytes, "mtime_ns": ns
//                                 since 1970}, ...], row order, sorted by path
//     "tessera.index.failed"      JSON [{"path", "modality", "size", "mtime_ns", "error"}]:
//                                 files that could not be embedded, not retried until their
//                                 size or mtime changes
// A file is unchanged while its size and mtime are; the index is reused while the model's
// identity is, and rebuilt whole when it is not.

#ifndef TESSERA_HAS_ICU
#error "tessera/search_index.hpp needs ICU (the text tokenizer of tessera/pipeline.hpp)"
#endif
#ifndef TESSERA_HAS_STB
#error "tessera/search_index.hpp needs stb_image (the image decoder of tessera/pipeline.hpp)"
#endif

#include <tessera/core/error.hpp>
#include <tessera/core/modality.hpp>
#include <tessera/core/parallel.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/io/json.hpp>
#include <tessera/io/safetensors.hpp>
#include <tessera/io/video.hpp>
#include <tessera/pipeline.hpp>
#include <tessera/tokenize/utf8.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace tessera {

// ---- Zero-shot classification -------------------------------------------------------------

struct ZeroShotLimits {
  // The most labels: 100,000. Each is a text to embed and a column of the [N, K] results;
  // the largest label sets in use (ImageNet-21k: 21,841 classes) fit with room to spare.
  std::size_t max_labels = 100000;
};

// CLIP's README's template for ImageNet's zero-shot prediction.
inline constexpr const char* default_label_template = "a photo of a {}.";

// The labels of a list, each trimmed of surrounding white space; an Error for an empty list,
// an empty label, the same label twice, or more than limits.max_labels.
inline std::vector<std::string> check_labels(std::vector<std::string> labels,
                                             const ZeroShotLimits& limits = {}) {
  check(!labels.empty(), "labels: none given (give at least one, e.g. \"dog,cat,car\")");
  check(labels.size() <= limits.max_labels, "labels: ", labels.size(), " given, more than ",
        limits.max_labels, " (ZeroShotLimits::max_labels)");
  std::set<std::string> seen;
  for (std::size_t k = 0; k < labels.size(); ++k) {
    std::string& label = labels[k];
    const auto blank = [](unsigned char c) { return std::isspace(c) != 0; };
    label.erase(label.begin(), std::find_if_not(label.begin(), label.end(), blank));
    label.erase(std::find_if_not(label.rbegin(), label.rend(), blank).base(), label.end());
    check(!label.empty(), "labels: label ", k + 1, " of ", labels.size(), " is empty");
    check(seen.insert(label).second, "labels: \"", label, "\" is given twice");
  }
  return labels;
}

// The labels of a comma-separated list ("dog, cat,car"), as check_labels.
inline std::vector<std::string> parse_labels(std::string_view comma_separated,
                                             const ZeroShotLimits& limits = {}) {
  std::vector<std::string> labels;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = comma_separated.find(',', start);
    labels.emplace_back(comma_separated.substr(start, comma - start));
    check(labels.size() <= limits.max_labels, "labels: more than ", limits.max_labels,
          " (ZeroShotLimits::max_labels)");
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return check_labels(std::move(labels), limits);
}

// Each label put into the template, at every "{}" ("a photo of a {}." -> "a photo of a dog.");
// an Error for a template without "{}".
inline std::vector<std::string> label_texts(const std::vector<std::string>& labels,
                                            std::string_view label_template) {
  check(label_template.find("{}") != std::string_view::npos, "template \"", label_template,
        "\" has no \"{}\" where the label goes (e.g. \"a photo of a {}.\")");
  std::vector<std::string> texts;
  texts.reserve(labels.size());
  for (const std::string& label : labels) {
    std::string text;
    std::size_t start = 0;
    for (std::size_t at; (at = label_template.find("{}", start)) != std::string_view::npos;
         start = at + 2) {
      text.append(label_template.substr(start, at - start)).append(label);
    }
    text.append(label_template.substr(start));
    texts.push_back(std::move(text));
  }
  return texts;
}

// The cosine similarities of each input with each label text, and the probabilities
// softmax_k(exp(logit_scale) * cos) (CLIP's README).
template <class Scalar>
struct ZeroShotResult {
  Matrix<Scalar> cosines;        // [N, K]
  Matrix<Scalar> probabilities;  // [N, K], each row sums to 1
};

// requires: inputs [N, E] and texts [K, E] with rows of non-zero norm (Pipeline's are unit).
template <class Scalar>
ZeroShotResult<Scalar> zero_shot_probabilities(const Matrix<Scalar>& inputs,  // [N, E]
                                               const Matrix<Scalar>& texts,   // [K, E]
                                               Scalar logit_scale) {
  check(inputs.cols() == texts.cols(), "zero_shot_probabilities: inputs have ", inputs.cols(),
        " values per row, texts ", texts.cols());
  check(std::isfinite(logit_scale), "zero_shot_probabilities: logit_scale is ", logit_scale);
  const auto unit = [](const Matrix<Scalar>& m, const char* what) {
    Matrix<Scalar> out = m;
    for (Index r = 0; r < out.rows(); ++r) {
      const Scalar norm = out.row(r).norm();
      check(norm > 0 && std::isfinite(norm), "zero_shot_probabilities: ", what, " row ", r,
            " has norm ", norm);
      out.row(r) /= norm;
    }
    return out;
  };
  ZeroShotResult<Scalar> result;
  result.cosines = unit(inputs, "input") * unit(texts, "text").transpose();
  const Scalar factor = std::exp(logit_scale);
  check(std::isfinite(static_cast<double>(factor)), "zero_shot_probabilities: logit_scale ",
        logit_scale, " is too large: exp(logit_scale) is not a finite number");
  result.probabilities.resize(result.cosines.rows(), result.cosines.cols());
  for (Index n = 0; n < result.cosines.rows(); ++n) {
    const auto logits = (factor * result.cosines.row(n)).eval();
    const auto e = (logits.array() - logits.maxCoeff()).exp().eval();  // no overflow
    result.probabilities.row(n) = e / e.sum();
  }
  return result;
}

// Classifies each sample of `inputs` (raw inputs, Pipeline::encode's form) among `labels`
// (checked as check_labels does) put into `label_template`. An Error when the model has no
// text (the labels are texts) or does not take an input.
template <class Scalar>
ZeroShotResult<Scalar> zero_shot_classify(const Pipeline<Scalar>& pipeline,
                                          const std::vector<std::vector<RawInput>>& inputs,
                                          const std::vector<std::string>& labels,
                                          std::string_view label_template = default_label_template,
                                          const ZeroShotLimits& limits = {}) {
  const std::vector<std::string> names = pipeline.modalities();
  check(std::find(names.begin(), names.end(), "text") != names.end(),
        "the model has no text modality: zero-shot classification compares the inputs with "
        "the labels as texts");
  const std::vector<std::string> texts = label_texts(check_labels(labels, limits), label_template);
  Matrix<Scalar> input_embeddings;
  try {
    input_embeddings = pipeline.encode(inputs);
  } catch (const Error& e) {
    fail("the inputs: ", e.what());
  }
  Matrix<Scalar> text_embeddings;
  try {
    text_embeddings = pipeline.encode_texts(texts);
  } catch (const Error& e) {
    fail("the labels' texts: ", e.what());
  }
  return zero_shot_probabilities(input_embeddings, text_embeddings, pipeline.logit_scale());
}

// The columns of `row` (a row of probabilities or scores) from the largest value down, ties
// in column order; at most `top` of them.
template <class Row>
std::vector<Index> ranking(const Row& row, std::size_t top) {
  std::vector<Index> order(static_cast<std::size_t>(row.size()));
  std::iota(order.begin(), order.end(), Index{0});
  std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) { return row(a) > row(b); });
  if (order.size() > top) order.resize(top);
  return order;
}

// ---- Files and their modalities -----------------------------------------------------------

// The modality of a file, from its extension (any case): image .png .jpg .jpeg .bmp .ppm .pgm
// .pnm, audio .wav, video .y4m (and, when tessera is built with FFmpeg, .mp4 .webm .avi .mkv
// .mov .m4v); none for anything else.
inline std::optional<Modality> file_modality(const std::filesystem::path& file) {
  if (detail::has_image_extension(file)) return Modality::image;
  std::string ext = file.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (ext == ".wav") return Modality::audio;
  if (ext == ".y4m") return Modality::video;
#if TESSERA_HAS_FFMPEG
  for (const char* known : {".mp4", ".webm", ".avi", ".mkv", ".mov", ".m4v"}) {
    if (ext == known) return Modality::video;
  }
#endif
  return std::nullopt;
}

// A file's size and modification time, which tell whether it changed.
struct FileStamp {
  std::uint64_t size = 0;    // bytes
  std::int64_t mtime_ns = 0;  // nanoseconds since 1970 (the file system's resolution)
  bool operator==(const FileStamp&) const = default;
};

inline FileStamp file_stamp(const std::filesystem::path& file) {
  namespace fs = std::filesystem;
  std::error_code error;
  const auto size = fs::file_size(file, error);
  check(!error, file.string(), ": cannot read its size: ", error.message());
  const auto time = fs::last_write_time(file, error);
  check(!error, file.string(), ": cannot read its modification time: ", error.message());
  const auto since_1970 = std::chrono::file_clock::to_sys(time).time_since_epoch();
  return {static_cast<std::uint64_t>(size),
          static_cast<std::int64_t>(
              std::chrono::duration_cast<std::chrono::nanoseconds>(since_1970).count())};
}

// A file of an indexed folder.
struct IndexedFile {
  std::string path;  // relative to the folder, '/' between names
  Modality modality = Modality::image;
  FileStamp stamp;
  bool operator==(const IndexedFile&) const = default;
};

// A file that could not be embedded, and why.
struct FailedFile {
  IndexedFile file;
  std::string error;
};

// What identifies a model's files: each regular file of its directory (not starting with
// '.') with its size and modification time. An index made with other files is rebuilt.
struct ModelIdentity {
  std::string dir;  // as given, for the reader; not compared
  std::map<std::string, FileStamp> files;
  bool same_files(const ModelIdentity& other) const { return files == other.files; }
};

inline ModelIdentity model_identity(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  ModelIdentity identity;
  identity.dir = dir.string();
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with('.') || !entry.is_regular_file(error)) continue;
    identity.files.emplace(name, file_stamp(entry.path()));
  }
  check(!error, dir.string(), ": cannot list the model directory: ", error.message());
  return identity;
}

// ---- The index ----------------------------------------------------------------------------

struct SearchIndexLimits {
  // The most files a folder may have to index: 100,000. The index keeps its file table in
  // the safetensors header, which readers cap at 100 MB (SafetensorsLimits::
  // max_header_bytes): 100,000 files leave 1 KB per record (a record takes about 100 bytes
  // plus its path). Refused, naming the folder, as soon as the walk finds one more.
  std::size_t max_files = 100000;
  // Seconds of embedding between two saves of the index while it is built, so a run stopped
  // part way keeps most of its work (the next run embeds only what is missing).
  double save_every_seconds = 60;
};

inline constexpr const char* default_index_name = ".tessera-index.safetensors";
inline constexpr const char* search_index_version = "1";

struct SearchIndex {
  ModelIdentity model;
  std::vector<IndexedFile> files;  // sorted by path; row i of embeddings is files[i]'s
  Matrix<float> embeddings;        // [N, E], unit rows
  std::vector<FailedFile> failed;  // sorted by path
};

namespace detail {

inline nlohmann::json stamp_json(const FileStamp& s) {
  return {{"size", s.size}, {"mtime_ns", s.mtime_ns}};
}

// A path that is not UTF-8 (Linux allows any bytes but '/' and NUL in a name) is kept
// exactly as "path_hex", its bytes in hexadecimal, instead of "path".
inline nlohmann::json file_json(const IndexedFile& f) {
  nlohmann::json j = {{"modality", modality_name(f.modality)},
                      {"size", f.stamp.size}, {"mtime_ns", f.stamp.mtime_ns}};
  if (find_invalid_utf8(f.path)) {
    std::string hex;
    for (const unsigned char c : f.path) {
      hex += "0123456789abcdef"[c >> 4];
      hex += "0123456789abcdef"[c & 15];
    }
    j["path_hex"] = hex;
  } else {
    j["path"] = f.path;
  }
  return j;
}

// The metadata entry `key` of an index file, as JSON; errors name the file and the key.
inline nlohmann::json index_entry(const SafetensorsFile& file, const std::string& key) {
  const auto found = file.metadata().find(key);
  check(found != file.metadata().end(), file.path().string(), ": metadata \"", key,
        "\" is missing");
  std::string problem;
  nlohmann::json json;
  try {
    json = parse_json_checked(found->second, &problem);
  } catch (const nlohmann::json::exception& e) {
    fail(file.path().string(), ": metadata \"", key, "\" is not JSON: ", json_error_reason(e));
  }
  check(problem.empty(), file.path().string(), ": metadata \"", key, "\": ", problem);
  return json;
}

inline FileStamp stamp_from(const nlohmann::json& j) {
  const nlohmann::json& size = j.at("size");
  const nlohmann::json& mtime = j.at("mtime_ns");
  check(size.is_number_unsigned(), "\"size\" is ", json_excerpt(size),
        ", expected a non-negative integer");
  check(mtime.is_number_integer(), "\"mtime_ns\" is ", json_excerpt(mtime),
        ", expected an integer");
  return {size.get<std::uint64_t>(), mtime.get<std::int64_t>()};
}

// The path of a file table entry: "path", or "path_hex" (file_json); a relative path in
// normal form inside the folder.
inline std::string path_from(const nlohmann::json& j) {
  std::string path;
  if (j.contains("path_hex")) {
    const std::string hex = j.at("path_hex").get<std::string>();
    const auto digit = [&](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      fail("\"path_hex\" is not lowercase hexadecimal");
    };
    check(hex.size() % 2 == 0, "\"path_hex\" has an odd number of digits");
    for (std::size_t i = 0; i < hex.size(); i += 2) {
      path += static_cast<char>(digit(hex[i]) * 16 + digit(hex[i + 1]));
    }
  } else {
    path = j.at("path").get<std::string>();
  }
  const std::filesystem::path p(path);
  check(!path.empty() && path.find('\0') == std::string::npos && p.is_relative() &&
            p.lexically_normal().generic_string() == path && path != ".." &&
            !path.starts_with("../"),
        "path \"", path, "\" is not a relative path inside the folder");
  return path;
}

inline IndexedFile file_from(const nlohmann::json& j) {
  IndexedFile f;
  f.path = path_from(j);
  const std::string modality = j.at("modality").get<std::string>();
  const auto known = std::find_if(builtin_modalities.begin(), builtin_modalities.end(),
                                  [&](Modality m) { return modality == modality_name(m); });
  check(known != builtin_modalities.end(), "unknown modality \"", modality, "\"");
  f.modality = *known;
  f.stamp = stamp_from(j);
  return f;
}

}  // namespace detail

// Whether `file` is a tessera search index (a safetensors file with the metadata entry
// "tessera.index.version"), without reading its tensors.
inline bool is_search_index(const std::filesystem::path& file) {
  try {
    return SafetensorsFile::open(file).metadata().count("tessera.index.version") == 1;
  } catch (const Error&) {
    return false;
  }
}

// Reads an index file. An Error naming the file when it is not one, or is of another version
// (the message says which), or its tables and embeddings disagree.
inline SearchIndex read_search_index(const std::filesystem::path& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  const std::string where = path.string();
  const auto version = file.metadata().find("tessera.index.version");
  check(version != file.metadata().end(), where, ": not a tessera search index (no metadata "
        "\"tessera.index.version\")");
  check(version->second == search_index_version, where, ": a search index of version ",
        version->second, ", this tessera reads version ", search_index_version);
  SearchIndex index;
  const nlohmann::json model = detail::index_entry(file, "tessera.index.model");
  const nlohmann::json files = detail::index_entry(file, "tessera.index.files");
  const nlohmann::json failed = detail::index_entry(file, "tessera.index.failed");
  check(model.is_object() && model.contains("files") && model.at("files").is_object() &&
            files.is_array() && failed.is_array(),
        where, ": the index's tables are malformed: expected an object \"tessera.index.model\" "
        "with an object \"files\", and arrays \"tessera.index.files\" and "
        "\"tessera.index.failed\"");
  try {
    index.model.dir = model.at("dir").get<std::string>();
    for (const auto& [name, stamp] : model.at("files").items()) {
      index.model.files.emplace(name, detail::stamp_from(stamp));
    }
    for (const auto& f : files) index.files.push_back(detail::file_from(f));
    for (const auto& f : failed) {
      index.failed.push_back({detail::file_from(f), f.at("error").get<std::string>()});
    }
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": the index's tables are malformed: ", e.what());
  } catch (const Error& e) {
    fail(where, ": the index's tables are malformed: ", e.what());
  }
  // Both tables sorted by path, no path twice (write_search_index keeps them so).
  const auto sorted = [&](const auto& table, const auto& path_of) {
    for (std::size_t i = 1; i < table.size(); ++i) {
      const std::string& a = path_of(table[i - 1]);
      const std::string& b = path_of(table[i]);
      check(a < b, where, ": the index's tables are malformed: path \"", b, "\" is ",
            a == b ? "given twice" : "out of order (paths are sorted)");
    }
  };
  sorted(index.files, [](const IndexedFile& f) -> const std::string& { return f.path; });
  sorted(index.failed, [](const FailedFile& f) -> const std::string& { return f.file.path; });
  const TensorInfo& info = file.info("embeddings");
  check(info.rank() == 2 && info.shape[0] == static_cast<std::int64_t>(index.files.size()),
        where, ": tensor 'embeddings' has shape ", detail::shape_string(info.shape),
        ", expected [", index.files.size(), ", E] (one row per file of \"tessera.index.files\")");
  index.embeddings.resize(static_cast<Index>(info.shape[0]), static_cast<Index>(info.shape[1]));
  if (index.embeddings.size() > 0) {
    index.embeddings = file.read_matrix<float>("embeddings");
  }
  return index;
}

// Writes `index` to `path` atomically (io/atomic_file.hpp), with a checksum.
inline void write_search_index(const std::filesystem::path& path, const SearchIndex& index) {
  check(index.embeddings.rows() == static_cast<Index>(index.files.size()), path.string(),
        ": the index has ", index.files.size(), " files but ", index.embeddings.rows(),
        " embeddings");
  nlohmann::json model = {{"dir", index.model.dir}, {"files", nlohmann::json::object()}};
  for (const auto& [name, stamp] : index.model.files) model["files"][name] = detail::stamp_json(stamp);
  nlohmann::json files = nlohmann::json::array();
  for (const IndexedFile& f : index.files) files.push_back(detail::file_json(f));
  nlohmann::json failed = nlohmann::json::array();
  for (const FailedFile& f : index.failed) {
    nlohmann::json j = detail::file_json(f.file);
    j["error"] = f.error;
    failed.push_back(std::move(j));
  }
  const auto dump = [](const nlohmann::json& j) {
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);  // paths need not be UTF-8
  };
  const std::map<std::string, std::string> metadata = {
      {"tessera.index.version", search_index_version},
      {"tessera.index.model", dump(model)},
      {"tessera.index.files", dump(files)},
      {"tessera.index.failed", dump(failed)}};
  std::size_t table_bytes = 0;
  for (const auto& [key, value] : metadata) table_bytes += key.size() + value.size();
  const std::size_t header_limit = SafetensorsLimits{}.max_header_bytes;
  check(table_bytes < header_limit * 9 / 10, path.string(), ": the index's file table takes ",
        table_bytes, " bytes, more than 90% of the ", header_limit, " bytes a safetensors "
        "header may hold (SafetensorsLimits::max_header_bytes); index fewer files");
  TensorData embeddings;
  embeddings.dtype = DType::F32;
  embeddings.shape = {index.embeddings.rows(), index.embeddings.cols()};
  embeddings.bytes.resize(static_cast<std::size_t>(index.embeddings.size()) * sizeof(float));
  if (!embeddings.bytes.empty()) {
    std::memcpy(embeddings.bytes.data(), index.embeddings.data(), embeddings.bytes.size());
  }
  save_safetensors(path, {{"embeddings", std::move(embeddings)}}, metadata, Checksum::crc32);
}

// The files of `dir` an index of a model taking `modalities` holds: every regular file (or
// link to one) below it whose extension names one of them (file_modality), sorted by path.
// Names starting with '.' (the index itself, by default) are skipped, directories included;
// links to directories are not followed. `skipped` (when given) counts the other files.
inline std::vector<IndexedFile> scan_folder(const std::filesystem::path& dir,
                                            const std::set<Modality>& modalities,
                                            const SearchIndexLimits& limits = {},
                                            std::size_t* skipped = nullptr) {
  namespace fs = std::filesystem;
  std::error_code error;
  check(fs::is_directory(dir, error), dir.string(), ": ",
        fs::exists(dir, error) ? "not a directory" : "no such directory",
        " (the folder to index)");
  std::vector<IndexedFile> files;
  std::size_t others = 0;
  try {
    fs::recursive_directory_iterator walk(dir, fs::directory_options::skip_permission_denied);
    for (auto it = fs::begin(walk); it != fs::end(walk); ++it) {
      const fs::path& path = it->path();
      if (path.filename().string().starts_with('.')) {
        if (it->is_directory(error)) it.disable_recursion_pending();
        continue;
      }
      if (!it->is_regular_file(error)) continue;  // directories, devices, FIFOs, broken links
      const std::optional<Modality> m = file_modality(path);
      if (!m || modalities.count(*m) == 0) {
        ++others;
        continue;
      }
      check(files.size() < limits.max_files, dir.string(), ": more than ", limits.max_files,
            " files to index (SearchIndexLimits::max_files); index a smaller folder");
      files.push_back({path.lexically_relative(dir).generic_string(), *m, file_stamp(path)});
    }
  } catch (const fs::filesystem_error& e) {
    fail(dir.string(), ": cannot list the folder: ", e.what());
  }
  std::sort(files.begin(), files.end(),
            [](const IndexedFile& a, const IndexedFile& b) { return a.path < b.path; });
  if (skipped != nullptr) *skipped = others;
  return files;
}

// What update_search_index did.
struct SearchIndexUpdate {
  std::size_t files = 0;     // files in the index now (embedded)
  std::size_t reused = 0;    // embeddings kept from the index file
  std::size_t embedded = 0;  // files embedded by this run (new or changed)
  std::size_t dropped = 0;   // files of the old index gone from the folder (or changed into failures)
  std::size_t failed = 0;    // files that failed in this run
  std::size_t failed_before = 0;  // files that failed before, unchanged since: not retried
  std::size_t skipped = 0;   // files of the folder of no modality the model takes
  std::string rebuilt;       // why the old index was not used ("" when it was, or there was none)
  bool written = false;      // whether the index file was written
  std::vector<FailedFile> failures;  // this run's
};

namespace detail {

// The index made of the reused files and those embedded so far, sorted by path.
inline SearchIndex assemble_index(const ModelIdentity& model, Index embed_dim,
                                  std::vector<std::pair<IndexedFile, Vector<float>>> rows,
                                  std::vector<FailedFile> failed) {
  std::sort(rows.begin(), rows.end(),
            [](const auto& a, const auto& b) { return a.first.path < b.first.path; });
  std::sort(failed.begin(), failed.end(),
            [](const FailedFile& a, const FailedFile& b) { return a.file.path < b.file.path; });
  SearchIndex index;
  index.model = model;
  index.embeddings.resize(static_cast<Index>(rows.size()), embed_dim);
  for (std::size_t i = 0; i < rows.size(); ++i) {
    index.files.push_back(rows[i].first);
    index.embeddings.row(static_cast<Index>(i)) = rows[i].second.transpose();
  }
  index.failed = std::move(failed);
  return index;
}

}  // namespace detail

// The index of folder `dir` for the model of `pipeline` (its files those of pipeline.dir()),
// brought up to date and saved to `index_file` (default: dir / default_index_name):
//   - an index file made with the same model files is reused: a file whose size and mtime
//     are unchanged keeps its row; new and changed files are embedded; files gone from the
//     folder are dropped; a file that failed before is not retried until it changes;
//   - otherwise (no index, another model, another version) every file is embedded;
//   - a file that fails to decode or encode is recorded with its error (on_failure is told
//     at once) and skipped; the others are embedded all the same;
//   - the index is written (atomically) when anything changed, and every
//     limits.save_every_seconds while embedding.
// An Error when `dir` is not a directory, holds more than limits.max_files files, or
// `index_file` exists but is not a search index (it is never overwritten then).
template <class Scalar>
SearchIndex update_search_index(const Pipeline<Scalar>& pipeline,
                                const std::filesystem::path& dir,
                                std::filesystem::path index_file = {},
                                SearchIndexUpdate* report = nullptr,
                                const SearchIndexLimits& limits = {},
                                const std::function<void(const FailedFile&)>& on_failure = {}) {
  namespace fs = std::filesystem;
  SearchIndexUpdate local;
  SearchIndexUpdate& r = report != nullptr ? *report : local;
  r = {};
  if (index_file.empty()) index_file = dir / default_index_name;

  std::set<Modality> modalities;
  for (const std::string& name : pipeline.modalities()) {
    for (const Modality m : {Modality::image, Modality::audio, Modality::video}) {
      if (name == modality_name(m)) modalities.insert(m);
    }
  }
  check(!modalities.empty(), "the model takes no images, audio or video: nothing to index");
  const std::vector<IndexedFile> found = scan_folder(dir, modalities, limits, &r.skipped);
  const ModelIdentity model = model_identity(pipeline.dir());

  // The old index, when it is one of this model's.
  std::optional<SearchIndex> old;
  std::error_code error;
  if (fs::exists(index_file, error)) {
    check(is_search_index(index_file), index_file.string(), ": exists and is not a tessera "
          "search index (or is damaged); remove it or choose another index file");
    try {
      old = read_search_index(index_file);
    } catch (const Error& e) {
      r.rebuilt = e.what();
    }
    if (old && !old->model.same_files(model)) {
      r.rebuilt = "the model's files differ from those the index was made with";
      old.reset();
    } else if (old && old->embeddings.rows() > 0 && old->embeddings.cols() != pipeline.embed_dim()) {
      r.rebuilt = "the index's embeddings are not the model's width";
      old.reset();
    }
  }
  std::map<std::string, Index> old_rows;
  std::map<std::string, const FailedFile*> old_failed;
  if (old) {
    for (std::size_t i = 0; i < old->files.size(); ++i) old_rows[old->files[i].path] = static_cast<Index>(i);
    for (const FailedFile& f : old->failed) old_failed[f.file.path] = &f;
  }

  std::vector<std::pair<IndexedFile, Vector<float>>> rows;
  std::vector<FailedFile> failed;
  std::vector<IndexedFile> to_embed;
  std::set<std::string> present;
  for (const IndexedFile& f : found) {
    present.insert(f.path);
    if (const auto row = old_rows.find(f.path); row != old_rows.end() &&
                                                old->files[static_cast<std::size_t>(row->second)] == f) {
      rows.emplace_back(f, old->embeddings.row(row->second).transpose());
      ++r.reused;
    } else if (const auto before = old_failed.find(f.path); before != old_failed.end() &&
                                                            before->second->file == f) {
      failed.push_back(*before->second);
      ++r.failed_before;
    } else {
      to_embed.push_back(f);
    }
  }
  for (const auto& [path, row] : old_rows) {
    if (present.count(path) == 0) ++r.dropped;
  }

  // Embeds to_embed in batches: each file loaded on its own (in parallel), so one that fails
  // is recorded and skipped; the batch encoded at once, or file by file when that fails.
  const auto fail_file = [&](const IndexedFile& f, const std::string& why) {
    FailedFile record{f, why};
    if (on_failure) on_failure(record);
    r.failures.push_back(record);
    failed.push_back(std::move(record));
    ++r.failed;
    if (old_rows.count(f.path) == 1) ++r.dropped;  // its old row goes
  };
  const std::size_t batch_size = pipeline.options().batch_size;
  const int threads = pipeline.options().threads > 0 ? pipeline.options().threads : num_threads();
  auto last_save = std::chrono::steady_clock::now();
  for (std::size_t first = 0; first < to_embed.size(); first += batch_size) {
    const std::size_t n = std::min(batch_size, to_embed.size() - first);
    std::vector<Sample<Scalar>> batch(n);
    std::vector<std::string> errors(n);
    const auto tasks = static_cast<std::ptrdiff_t>(n);
    (void)threads;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (threads > 1 && tasks > 1)
    for (std::ptrdiff_t j = 0; j < tasks; ++j) {
      const IndexedFile& f = to_embed[first + static_cast<std::size_t>(j)];
      const RawInput input{modality_name(f.modality), (dir / f.path).string(), {}};
      try {
        batch[static_cast<std::size_t>(j)] = pipeline.load(std::span<const RawInput>(&input, 1));
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(j)] = e.what();
        if (errors[static_cast<std::size_t>(j)].empty()) errors[static_cast<std::size_t>(j)] = "failed";
      }
    }
    std::vector<std::size_t> good;  // indices into the batch
    std::vector<Sample<Scalar>> loaded;
    for (std::size_t j = 0; j < n; ++j) {
      const IndexedFile& f = to_embed[first + j];
      if (!errors[j].empty()) {
        const std::string path = (dir / f.path).string();
        fail_file(f, errors[j].find(path) == std::string::npos ? path + ": " + errors[j] : errors[j]);
      } else {
        good.push_back(j);
        loaded.push_back(std::move(batch[j]));
      }
    }
    const auto keep = [&](std::size_t j, const Encoding<Scalar>& e) {
      rows.emplace_back(to_embed[first + j], e.embedding.template cast<float>());
      ++r.embedded;
    };
    if (!loaded.empty()) {
      std::vector<Encoding<Scalar>> encoded;
      bool whole = true;
      try {
        encoded = pipeline.encode_batch(loaded);
      } catch (const Error&) {
        whole = false;
      }
      for (std::size_t k = 0; k < loaded.size(); ++k) {
        if (whole) {
          keep(good[k], encoded[k]);
          continue;
        }
        try {
          keep(good[k], pipeline.encode_batch(std::span<const Sample<Scalar>>(&loaded[k], 1)).front());
        } catch (const Error& e) {
          const IndexedFile& f = to_embed[first + good[k]];
          fail_file(f, (dir / f.path).string() + ": " + e.what());
        }
      }
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - last_save).count();
    if (seconds >= limits.save_every_seconds && first + n < to_embed.size()) {
      write_search_index(index_file, detail::assemble_index(model, pipeline.embed_dim(), rows, failed));
      last_save = std::chrono::steady_clock::now();
    }
  }

  SearchIndex index = detail::assemble_index(model, pipeline.embed_dim(), std::move(rows),
                                             std::move(failed));
  r.files = index.files.size();
  const bool changed = !old || r.embedded > 0 || r.dropped > 0 || r.failed > 0 ||
                       index.failed.size() != old->failed.size() || old->model.dir != model.dir;
  if (changed) {
    write_search_index(index_file, index);
    r.written = true;
  }
  return index;
}

// ---- Search -------------------------------------------------------------------------------

struct SearchHit {
  std::string path;  // relative to the indexed folder
  Modality modality = Modality::image;
  float score = 0;   // cosine similarity with the query
};

// The `top` files of `index` most similar to `query` [E] (a unit embedding), best first, ties
// in path order.
template <class Vec>
std::vector<SearchHit> search(const SearchIndex& index, const Vec& query, std::size_t top) {
  std::vector<SearchHit> hits;
  if (index.files.empty()) return hits;
  const Vector<float> q = query.template cast<float>();
  check(q.size() == index.embeddings.cols(), "search: the query has ", q.size(),
        " values, the index's embeddings ", index.embeddings.cols());
  const Vector<float> scores = index.embeddings * q;  // [N]
  for (const Index i : ranking(scores, top)) {
    const IndexedFile& f = index.files[static_cast<std::size_t>(i)];
    hits.push_back({f.path, f.modality, scores(i)});
  }
  return hits;
}

}  // namespace tessera
