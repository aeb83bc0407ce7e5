#pragma once
// Writing a pretrained model back as the kind of directory it was loaded from
// (docs/model-files.md "Writing a pretrained model back"): a fine-tuned CLIP stays a
// transformers / open_clip / ImageBind directory that the family's own code loads.
//
// The weights file keeps the original's header text byte for byte (so every tensor keeps its
// name, shape, dtype, offsets and order, and the metadata stays) and rewrites only the data
// of the tensors the model holds, converted back to each tensor's dtype (F32, F16, BF16,
// F64); tensors the loader passes over (position_ids, ImageBind's depth / thermal / IMU
// towers) are copied byte for byte. Where the model's weights come from and go to is one
// mapping, CheckpointNames (model/pretrained.hpp), walked by the loader as well. A
// "tessera.crc32" entry, when the original has one, is recomputed. The directory's other
// files are copied, except other copies of the weights (pytorch_model.bin, ...), which would
// hold the old ones; a tessera_towers directory gets its config.json from to_json.
//
// Nothing is half-written: the directory is assembled beside `out` and renamed into place
// (an existing non-empty `out` only with SaveTowerModelOptions::replace), and every weight is
// checked (finite, representable in its tensor's dtype) before anything is placed.

#include <tessera/core/error.hpp>
#include <tessera/io/atomic_file.hpp>
#include <tessera/io/safetensors.hpp>
#include <tessera/model/model_kind.hpp>
#include <tessera/model/pretrained.hpp>
#include <tessera/model/tower_model.hpp>
#include <tessera/model/tower_weights.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace tessera {

struct SaveTowerModelOptions {
  // Replace an existing non-empty `out` as a whole (tools/convert_checkpoint.py's --force).
  bool replace = false;
  // Allow `out` to be the directory the model was loaded from: its weights file (and a
  // tessera_towers config.json) are replaced in place, each atomically; its other files stay.
  bool overwrite_source = false;
  // Write into an existing directory, keeping its other files: each of the model's files
  // takes its place by a rename (atomic per file). tessera-train writes a fine-tuned model
  // this way into its MODEL_DIR, which also holds the run's lock, checkpoint and report.
  bool merge = false;
};

namespace detail {

// Files that hold the weights in another form (PyTorch, TensorFlow, Flax, ONNX, an fp16
// variant, a shard index): copied, they would contradict the weights written.
inline bool is_other_weights_file(const std::filesystem::path& file) {
  static constexpr std::array<const char*, 9> extensions = {
      ".bin", ".pt", ".pth", ".ckpt", ".safetensors", ".h5", ".msgpack", ".onnx", ".gguf"};
  const std::string name = file.filename().string();
  const std::string ext = file.extension().string();
  const bool index = name.size() > 11 && name.compare(name.size() - 11, 11, ".index.json") == 0;
  return index || std::find(extensions.begin(), extensions.end(), ext) != extensions.end();
}

// A unique sibling of `path`: ".<name>.<tag>-<pid>-<stamp>-<n>".
inline std::filesystem::path sibling_temporary(const std::filesystem::path& path,
                                               const char* tag) {
  static std::atomic<unsigned long> counter{0};
  const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
#if defined(__unix__) || defined(__APPLE__)
  const long process = static_cast<long>(::getpid());
#else
  const long process = 0;
#endif
  return path.parent_path() /
         concat(".", path.filename().string(), ".", tag, "-", process, "-", stamp, "-", counter++);
}

// The header of a safetensors file as stored: its 8-byte length and its JSON text.
inline std::string safetensors_header_bytes(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::array<std::byte, 8> length{};
  in.read(reinterpret_cast<char*>(length.data()), 8);
  check(in.good(), file.string(), ": cannot read the header length");
  const auto size = load_le<std::uint64_t>(length.data());
  std::string out(8 + static_cast<std::size_t>(size), '\0');
  std::copy(length.begin(), length.end(), reinterpret_cast<std::byte*>(out.data()));
  in.read(out.data() + 8, static_cast<std::streamsize>(size));
  check(in.good(), file.string(), ": cannot read the header");
  return out;
}

// Whether a finite `value` stays finite stored as `dtype` (F16 ends at 65504, F32 and BF16
// near 3.4e38).
inline bool representable(DType dtype, double value) {
  switch (dtype) {
    case DType::F16: return std::isfinite(half_to_float(float_to_half(value)));
    case DType::BF16: return std::isfinite(bfloat16_to_float(float_to_bfloat16(value)));
    case DType::F32: return std::abs(value) <= std::numeric_limits<float>::max();
    default: return true;
  }
}

// Replaces the value of the "tessera.crc32" entry in a header's text, kept otherwise as is
// (the value is 8 hex digits before and after, so no offset moves).
inline void replace_checksum_text(std::string& header, const std::string& old_value,
                                  const std::string& new_value, const std::string& where) {
  const std::string key = std::string("\"") + checksum_key + "\"";
  for (std::size_t at = header.find(key); at != std::string::npos; at = header.find(key, at + 1)) {
    std::size_t i = at + key.size();
    const auto skip_space = [&] {
      while (i < header.size() && (header[i] == ' ' || header[i] == '\t' || header[i] == '\n' ||
                                   header[i] == '\r')) {
        ++i;
      }
    };
    skip_space();
    if (i >= header.size() || header[i] != ':') continue;
    ++i;
    skip_space();
    if (header.compare(i, old_value.size() + 2, "\"" + old_value + "\"") != 0) continue;
    header.replace(i + 1, old_value.size(), new_value);
    return;
  }
  fail(where, ": the metadata entry '", checksum_key, "' is not written as plain JSON text; "
       "cannot update it");
}

// The weights file of `model` as `names` and the original `file` lay it out, handed to
// write(bytes, size) piece by piece in file order. Every tensor of the original is there with
// its name, shape, dtype and offsets; the model's weights replace the values it loaded.
template <class Scalar>
class PretrainedWeightsWriter {
 public:
  PretrainedWeightsWriter(const TowerModel<Scalar>& model, const CheckpointNames& names,
                          const std::filesystem::path& original)
      : file_(SafetensorsFile::open(original)), where_(original.string()) {
    // Every weight is checked here, before anything is written.
    for_each_model_weight(model, names, [&](const WeightSlot<const Scalar>& slot,
                                            const std::string& what) {
      const std::string tower = what.empty() ? "" : " (" + what + ")";
      if (slot.quantized()) {
        fail("save_tower_model: tensor '", slot.name, "'", tower, " is quantized (",
             nn::to_string(slot.layers.front()->format()), "); a quantized model is written in "
             "tessera's native form (save_towers_model); nothing was written");
      }
      if (slot.optional && !file_.contains(slot.name)) return;
      check(file_.contains(slot.name), where_, ": has no tensor '", slot.name, "'", tower,
            ", which the model has: the model was not loaded from this directory");
      const TensorInfo& info = file_.info(slot.name);
      check(drop_leading_ones(info.shape, slot.shape.size()) == slot.shape && is_floating(info.dtype),
            where_, ": tensor '", slot.name, "'", tower, " is ", dtype_name(info.dtype), " ",
            shape_string(info.shape), ", the model's is ", shape_string(slot.shape),
            ": the model was not loaded from this directory");
      const auto values = slot_values(slot);  // in stored order, as the loader names them
      for (std::size_t i = 0; i < values.size(); ++i) {
        const auto v = static_cast<double>(values[i]);
        check(std::isfinite(v), "save_tower_model: tensor '", slot.name, "'", tower,
              " holds a non-finite value (", values[i], ") at flat index ", i,
              "; nothing was written");
        check(representable(info.dtype, v), "save_tower_model: tensor '", slot.name, "'", tower,
              " is stored as ", dtype_name(info.dtype), ", which cannot hold its value ",
              values[i], " at flat index ", i, "; nothing was written");
      }
      slots_.emplace(slot.name, slot);
    });
    for (const auto& name : file_.names()) {
      check(slots_.count(name) == 1 || names.passed_over(name), where_, ": unexpected tensor '",
            name, "' (not part of a model with this configuration)");
      order_.push_back(name);
    }
    std::sort(order_.begin(), order_.end(), [&](const std::string& a, const std::string& b) {
      return file_.info(a).begin < file_.info(b).begin;
    });
    header_ = safetensors_header_bytes(original);
    if (file_.has_checksum()) {
      Crc32 crc;
      write_data([&](const void* data, std::size_t size) { crc.update(data, size); });
      for (const auto& name : file_.names()) {
        const TensorInfo& info = file_.info(name);
        checksum_tensor_entry(crc, name, info.dtype, info.shape, info.begin, info.end);
      }
      checksum_metadata(crc, file_.metadata());
      replace_checksum_text(header_, file_.metadata().at(checksum_key), checksum_hex(crc.value()),
                            where_);
    }
  }

  template <class Write>
  void write(Write&& write) const {
    write(header_.data(), header_.size());
    write_data(write);
  }

 private:
  template <class Write>
  void write_data(Write&& write) const {
    std::vector<std::byte> bytes;
    for (const auto& name : order_) {
      const TensorInfo& info = file_.info(name);
      const auto slot = slots_.find(name);
      if (slot == slots_.end()) {  // passed over: as it was
        write(info.bytes.data(), info.bytes.size());
        continue;
      }
      const std::vector<Scalar> values = slot_values(slot->second);
      bytes.resize(info.bytes.size());
      encode_elements<Scalar>(values, info.dtype, bytes.data(), where_ + ": tensor '" + name + "'");
      write(bytes.data(), bytes.size());
    }
  }

  SafetensorsFile file_;
  std::string where_;
  std::map<std::string, WeightSlot<const Scalar>> slots_;
  std::vector<std::string> order_;  // every tensor, by offset
  std::string header_;              // as stored (8-byte length + JSON), the checksum updated
};

// Writes the weights file of `model` to `target` through an AtomicFileWriter.
template <class Scalar>
void write_pretrained_weights(const PretrainedWeightsWriter<Scalar>& weights,
                              const std::filesystem::path& target) {
  AtomicFileWriter out(target);
  weights.write([&](const void* data, std::size_t size) { out.write(data, size); });
  out.commit();
}

// The native config.json of a tessera_towers model.
inline std::string towers_config_text(const TowerModelConfig& config) {
  return to_json(config).dump(2) + "\n";
}

// Removes a directory being assembled unless it was placed.
class TemporaryDirectory {
 public:
  explicit TemporaryDirectory(std::filesystem::path path) : path_(std::move(path)) {}
  TemporaryDirectory(const TemporaryDirectory&) = delete;
  TemporaryDirectory& operator=(const TemporaryDirectory&) = delete;
  ~TemporaryDirectory() {
    if (!path_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(path_, ignored);
    }
  }
  const std::filesystem::path& path() const { return path_; }
  void release() { path_.clear(); }

 private:
  std::filesystem::path path_;
};

// Where a checked `out` may go (save_tower_model, save_towers_model): its parent an existing
// directory, `out` absent, an empty directory, or (options.replace or merge) any directory.
// Returns whether it exists.
inline bool check_target(const std::filesystem::path& target, const std::filesystem::path& out,
                         const SaveTowerModelOptions& options, const char* what) {
  namespace fs = std::filesystem;
  check(fs::is_directory(target.parent_path()), what, ": ", out.string(), ": its parent ",
        target.parent_path().string(), " is not an existing directory");
  const bool exists = fs::exists(fs::symlink_status(target));
  if (exists) {
    check(fs::is_directory(fs::symlink_status(target)), what, ": ", out.string(),
          " exists and is not a directory");
    check(options.replace || options.merge || fs::is_empty(target), what, ": ", out.string(),
          " exists and is not empty; set SaveTowerModelOptions::replace to replace it");
  }
  return exists;
}

// Puts the directory assembled beside `target` into its place: its files moved in one by one
// (options.merge, into an existing `target`), renamed as a whole onto an absent or empty one,
// or replacing an existing one (the old one steps aside, the new one takes its name, and only
// then is the old one removed; put back if the rename fails).
inline void place_directory(TemporaryDirectory& assembled, const std::filesystem::path& target,
                            bool exists, const SaveTowerModelOptions& options,
                            const char* what) {
  namespace fs = std::filesystem;
  const fs::path& out = target;
  std::error_code error;
  if (exists && options.merge) {
    for (const auto& entry : fs::directory_iterator(assembled.path())) {
      const fs::path into = target / entry.path().filename();
      if (fs::is_directory(fs::symlink_status(into))) fs::remove_all(into, error);
      if (!error) fs::rename(entry.path(), into, error);
      check(!error, what, ": cannot move ", entry.path().string(), " to ",
            into.string(), ": ", error.message());
    }
    return;  // `assembled`, now empty, is removed by its destructor
  }
  if (!exists || fs::is_empty(target)) {  // rename(2) replaces an empty directory
    fs::rename(assembled.path(), target, error);
    check(!error, what, ": cannot rename ", assembled.path().string(), " to ",
          out.string(), ": ", error.message());
    assembled.release();
    return;
  }
  // Replacing a directory: the old one steps aside, the new one takes its name, and only
  // then is the old one removed (put back if the rename fails).
  const fs::path old = detail::sibling_temporary(target, "old");
  fs::rename(target, old, error);
  check(!error, what, ": cannot move ", out.string(), " aside: ", error.message());
  fs::rename(assembled.path(), target, error);
  if (error) {
    std::error_code ignored;
    fs::rename(old, target, ignored);
    fail(what, ": cannot rename ", assembled.path().string(), " to ", out.string(), ": ",
         error.message());
  }
  assembled.release();
  fs::remove_all(old, error);
}

}  // namespace detail

// Writes `model` to directory `out` as the same kind of directory as `from`, the one it was
// loaded from (load_tower_model): the weights file with every tensor of the original in the
// original order, names, shapes and dtypes, the model's current weights in place of the
// loaded ones, tensors the loader passes over copied byte for byte; the other files of `from`
// copied (config.json or open_clip_config.json, tokenizer and preprocessor files), except
// other copies of the weights (*.bin, *.pt, *.pth, *.ckpt, other *.safetensors, *.h5,
// *.msgpack, *.onnx, *.gguf, *.index.json); for tessera_towers, config.json from to_json.
// Requires: model's config is the one `from` describes. Throws tessera::Error, leaving
// nothing new behind, for a model that does not match `from`, a non-finite weight or one its
// tensor's dtype cannot hold (naming the tensor), `out` being `from` (unless
// options.overwrite_source) or inside it, an existing non-empty `out` (unless
// options.replace or options.merge), a missing parent directory, and any I/O failure.
template <class Scalar>
void save_tower_model(const TowerModel<Scalar>& model, const ModelDirectory& from,
                      const std::filesystem::path& out, const SaveTowerModelOptions& options = {}) {
  namespace fs = std::filesystem;
  if (from.kind == ModelKind::tessera) {
    fail("save_tower_model: ", from.dir.string(), " holds a tessera model, not a pretrained "
         "one: save a MultiModalEncoder with save_model");
  }
  ModelDirectory found = from;
  if (!found.config) found.config = detail::read_json_file(found.config_file);
  const TowerModelConfig config = detail::pretrained_config(found);
  check(config == model.config, "save_tower_model: the model's configuration is not the one ",
        found.config_file.string(), " describes: a model is saved back into the kind of "
        "directory it was loaded from");
  const CheckpointNames names = detail::checkpoint_names(found, config);
  const detail::PretrainedWeightsWriter<Scalar> weights(model, names, found.dir / names.weights_file);
  const bool towers = found.kind == ModelKind::tessera_towers;

  std::error_code error;
  const fs::path source = fs::weakly_canonical(found.dir, error);
  check(!error, "save_tower_model: ", found.dir.string(), ": ", error.message());
  fs::path target = fs::weakly_canonical(out, error);
  check(!error, "save_tower_model: ", out.string(), ": ", error.message());
  if (target == source || (fs::exists(out) && fs::equivalent(out, found.dir, error))) {
    check(options.overwrite_source, "save_tower_model: ", out.string(), " is the directory the "
          "model was loaded from; set SaveTowerModelOptions::overwrite_source to replace its "
          "weights in place");
    detail::write_pretrained_weights(weights, found.dir / names.weights_file);
    if (towers) {
      detail::write_file_atomically(found.dir / config_file_name,
                                    detail::towers_config_text(model.config));
    }
    return;
  }
  const auto [in_source, in_target] =
      std::mismatch(source.begin(), source.end(), target.begin(), target.end());
  check(in_source != source.end(), "save_tower_model: ", out.string(), " is inside ",
        found.dir.string(), ", the directory the model was loaded from");
  check(in_target != target.end(), "save_tower_model: ", out.string(), " holds ",
        found.dir.string(), ", the directory the model was loaded from");
  const bool exists = detail::check_target(target, out, options, "save_tower_model");

  // Assembled beside `out`, then renamed into place.
  detail::TemporaryDirectory assembled(detail::sibling_temporary(target, "partial"));
  fs::create_directory(assembled.path(), error);
  check(!error, "save_tower_model: cannot create ", assembled.path().string(), ": ",
        error.message());
  for (const auto& entry : fs::directory_iterator(found.dir)) {
    const fs::path name = entry.path().filename();
    if (name == names.weights_file || (towers && name == config_file_name) ||
        detail::is_other_weights_file(name)) {
      continue;
    }
    fs::copy(entry.path(), assembled.path() / name, fs::copy_options::recursive, error);
    check(!error, "save_tower_model: cannot copy ", entry.path().string(), " to ",
          assembled.path().string(), ": ", error.message());
  }
  detail::write_pretrained_weights(weights, assembled.path() / names.weights_file);
  if (towers) {
    detail::write_file_atomically(assembled.path() / config_file_name,
                                  detail::towers_config_text(model.config));
  }

  detail::place_directory(assembled, target, exists, options, "save_tower_model");
}

// The same, from the directory the model was loaded from.
template <class Scalar>
void save_tower_model(const TowerModel<Scalar>& model, const std::filesystem::path& from,
                      const std::filesystem::path& out, const SaveTowerModelOptions& options = {}) {
  save_tower_model(model, detect_model(from), out, options);
}

// Writes `model`, of any family, as a native tessera_towers directory `out`
// (docs/model-files.md "tessera_towers"): config.json from to_json(native_towers_config),
// model.safetensors with every weight as F32 under the native names, with a checksum (a
// quantized layer's weight as it is held, I8 with a scale or BF16, and config.json then
// records "quantization": docs/model-files.md "Quantized weights"); and
// the files of `files_from` (when not empty) that are neither weights nor a model config:
// the tokenizer (vocab.json, merges.txt, bpe_simple_vocab_16e6.txt.gz) and
// preprocessor_config.json, which the native form's front ends read (TowerFrontEnds). A model
// with a new tower (add_tower) is saved so. The same checks and placing as save_tower_model
// (replace, merge; nothing half-written); `out` may not be files_from or inside it.
template <class Scalar>
void save_towers_model(const TowerModel<Scalar>& model, const std::filesystem::path& out,
                       const std::filesystem::path& files_from = {},
                       const SaveTowerModelOptions& options = {}) {
  namespace fs = std::filesystem;
  constexpr const char* what = "save_towers_model";
  const TowerModelConfig config = native_towers_config(model.config, what);
  std::map<std::string, TensorData> tensors;
  std::optional<nn::WeightFormat> quantization;  // int8 when any layer holds int8, else bf16
  for_each_model_weight(model, detail::towers_names(config),
                        [&](const WeightSlot<const Scalar>& slot, const std::string& tower) {
    if (slot.quantized()) {
      if constexpr (std::is_same_v<Scalar, float>) {
        const nn::WeightFormat format = slot.layers.front()->format();
        if (format == nn::WeightFormat::int8 || !quantization) quantization = format;
        add_quantized_weight(tensors, slot.name, slot.shape,
                             std::span<const nn::Linear<float>* const>(slot.layers));
      }
      return;
    }
    const std::vector<Scalar> values = slot_values(slot);
    for (const Scalar v : values) {
      check(std::isfinite(static_cast<double>(v)), what, ": ", slot.name, " (",
            tower.empty() ? std::string("the logit scale") : tower, ") holds a non-finite value");
    }
    tensors[slot.name] = TensorData::from_span<Scalar>(values, slot.shape, DType::F32);
  });

  std::error_code error;
  const fs::path target = fs::weakly_canonical(out, error);
  check(!error, what, ": ", out.string(), ": ", error.message());
  if (!files_from.empty()) {
    const fs::path source = fs::weakly_canonical(files_from, error);
    check(!error, what, ": ", files_from.string(), ": ", error.message());
    const auto [in_source, in_target] =
        std::mismatch(source.begin(), source.end(), target.begin(), target.end());
    check(in_source != source.end(), what, ": ", out.string(), " is ", files_from.string(),
          " or inside it, whose files it copies");
  }
  const bool exists = detail::check_target(target, out, options, what);
  detail::TemporaryDirectory assembled(detail::sibling_temporary(target, "partial"));
  fs::create_directory(assembled.path(), error);
  check(!error, what, ": cannot create ", assembled.path().string(), ": ", error.message());
  if (!files_from.empty()) {
    for (const auto& entry : fs::directory_iterator(files_from)) {
      const fs::path name = entry.path().filename();
      if (name == config_file_name || name == open_clip_config_name ||
          detail::is_other_weights_file(name) || name.extension() == ".safetensors" ||
          !fs::is_regular_file(entry.path())) {
        continue;
      }
      fs::copy_file(entry.path(), assembled.path() / name, error);
      check(!error, what, ": cannot copy ", entry.path().string(), " to ",
            assembled.path().string(), ": ", error.message());
    }
  }
  save_safetensors(assembled.path() / weights_file_name, tensors,
                   {{"format", "pt"}, {"producer", "tessera"}}, Checksum::crc32);
  nlohmann::json json = to_json(config);
  if (quantization) json[quantization_key] = nn::to_string(*quantization);
  detail::write_file_atomically(assembled.path() / config_file_name, json.dump(2) + "\n");
  detail::place_directory(assembled, target, exists, options, what);
}

}  // namespace tessera
