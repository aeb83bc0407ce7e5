// The Python module `tessera`: a model directory's tessera::Pipeline<float> (pipeline.hpp)
// behind `import tessera` (docs/python.md).
//
//   m = tessera.load("my-model")                    # config.json, model.safetensors, tokenizer
//   e = m.encode_texts(["a red circle"])            # numpy float32 [1, E], unit rows
//   f = m.encode([{"text": "a dog", "image": "dog.png"}, {"audio": "bark.wav"}])   # [2, E]
//   p = m.classify(["dog.png"], ["dog", "cat"])     # zero-shot probabilities [1, 2]
//   hits = m.search("photos", "a dog on a beach")   # the folder's index, then the top files
//
// Every encode call releases the GIL while it decodes and encodes, so Python threads encode
// at once; results are handed over without a copy (the numpy array owns the Eigen matrix).
// tessera::Error becomes tessera.Error (a RuntimeError) with tessera's message.

#include <tessera/core/parallel.hpp>
#include <tessera/model/config.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/model/pretrained.hpp>
#include <tessera/pipeline.hpp>
#include <tessera/search_index.hpp>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace {

using Model = tessera::Pipeline<float>;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// The [N, E] embeddings as a numpy array that owns them: the matrix moves to the heap and is
// freed with the array, so nothing is copied.
py::array_t<float> to_numpy(tessera::Matrix<float>&& embeddings) {
  const py::ssize_t rows = embeddings.rows(), cols = embeddings.cols();
  if (embeddings.size() == 0) return py::array_t<float>(std::vector<py::ssize_t>{rows, cols});
  auto* owned = new tessera::Matrix<float>(std::move(embeddings));
  const py::capsule base(owned, [](void* p) { delete static_cast<tessera::Matrix<float>*>(p); });
  const auto row_bytes = static_cast<py::ssize_t>(cols * sizeof(float));
  return py::array_t<float>({rows, cols}, {row_bytes, static_cast<py::ssize_t>(sizeof(float))},
                            owned->data(), base);
}

// Runs encode() (returning Matrix<float>) without the GIL and hands its result to numpy.
template <class Encode>
py::array_t<float> without_gil(Encode&& encode) {
  tessera::Matrix<float> embeddings;
  {
    const py::gil_scoped_release release;
    embeddings = encode();
  }
  return to_numpy(std::move(embeddings));
}

bool is_path_like(const py::handle& value) {
  return py::isinstance<py::str>(value) || py::hasattr(value, "__fspath__");
}

std::string path_string(const py::handle& value) {
  return py::str(py::module_::import("os").attr("fspath")(value)).cast<std::string>();
}

// One sample of Model.encode: raw inputs for the front ends, and preprocessed parts given as
// arrays, which replace what a front end would make.
struct DictSample {
  std::vector<tessera::RawInput> raw;
  tessera::Sample<float> given;
};

// `value` as a float32 array of `rank` dimensions (other numeric dtypes are converted), copied
// into `out` (an Eigen matrix or tensor of that rank, resized here).
template <class Out>
void read_array(Out& out, int rank, const py::handle& value, std::size_t i, const std::string& key,
                const char* shape) {
  const FloatArray array = FloatArray::ensure(value);
  tessera::check(static_cast<bool>(array), "sample ", i, ": ", key,
                 ": expected a path or a numeric array ", shape, ", got a ",
                 py::str(py::type::of(value).attr("__name__")).cast<std::string>());
  tessera::check(array.ndim() == rank, "sample ", i, ": ", key, ": expected an array ", shape,
                 ", got ", array.ndim(), " dimensions");
  if constexpr (std::is_same_v<Out, tessera::Matrix<float>>) {
    out.resize(array.shape(0), array.shape(1));
  } else {
    typename Out::Dimensions dims;
    for (int d = 0; d < rank; ++d) dims[d] = array.shape(d);
    out.resize(dims);
  }
  std::copy(array.data(), array.data() + array.size(), out.data());
}

std::vector<std::int64_t> read_ids(const py::handle& value, std::size_t i) {
  const py::array array = py::array::ensure(value);
  tessera::check(static_cast<bool>(array) && array.ndim() == 1, "sample ", i,
                 ": text_ids: expected a 1-D array or list of integer token ids");
  if (array.size() == 0) return {};
  const char kind = array.dtype().kind();
  tessera::check(kind == 'i' || kind == 'u', "sample ", i,
                 ": text_ids: expected integer token ids, got dtype ",
                 py::str(array.dtype()).cast<std::string>());
  const auto ids = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(array);
  return std::vector<std::int64_t>(ids.data(), ids.data() + ids.size());
}

// A dict of Model.encode: "text" (a string), "text_ids" (ids [n]), "image" / "audio" / "video"
// (a path, or an array [C, S, S] / [M, T] / [T, C, S, S]), "video_fps" (the frame rate of a
// directory of images), or a custom modality's name (its input, a path usually).
DictSample read_sample(const py::handle& item, std::size_t i) {
  tessera::check(py::isinstance<py::dict>(item), "sample ", i,
                 ": expected a dict such as {\"text\": \"...\", \"image\": \"photo.png\"}, got a ",
                 py::str(py::type::of(item).attr("__name__")).cast<std::string>());
  DictSample sample;
  std::optional<double> video_fps;
  for (const auto& [k, value] : item.cast<py::dict>()) {
    tessera::check(py::isinstance<py::str>(k), "sample ", i, ": keys must be modality names (strings)");
    const std::string key = k.cast<std::string>();
    if (key == "text_ids") {
      sample.given.text = read_ids(value, i);
    } else if (key == "video_fps") {
      video_fps = value.cast<double>();
    } else if (key == "text") {
      tessera::check(py::isinstance<py::str>(value), "sample ", i,
                     ": text: expected a string (token ids go under \"text_ids\")");
      sample.raw.push_back({key, value.cast<std::string>(), {}});
    } else if ((key == "image" || key == "audio" || key == "video") && !is_path_like(value)) {
      if (key == "image") read_array(sample.given.image.emplace(), 3, value, i, key, "[C, S, S]");
      if (key == "audio") read_array(sample.given.audio.emplace(), 2, value, i, key, "[M, T]");
      if (key == "video") read_array(sample.given.video.emplace(), 4, value, i, key, "[T, C, S, S]");
    } else {
      tessera::check(is_path_like(value), "sample ", i, ": ", key, ": expected a path (str)");
      sample.raw.push_back({key, path_string(value), {}});
    }
  }
  const bool text_twice = sample.given.text.has_value() &&
                          std::any_of(sample.raw.begin(), sample.raw.end(),
                                      [](const tessera::RawInput& in) { return in.modality == "text"; });
  tessera::check(!text_twice, "sample ", i, ": give \"text\" or \"text_ids\", not both");
  if (video_fps) {
    const auto video = std::find_if(sample.raw.begin(), sample.raw.end(),
                                    [](const tessera::RawInput& in) { return in.modality == "video"; });
    tessera::check(video != sample.raw.end(), "sample ", i,
                   ": video_fps is the frame rate of a video directory, but no video path was given");
    video->options["images_fps"] = *video_fps;
  }
  return sample;
}

py::array_t<float> encode_dicts(const Model& model, const py::list& inputs) {
  std::vector<DictSample> samples;
  samples.reserve(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) samples.push_back(read_sample(inputs[i], i));
  return without_gil([&] {
    return model.encode_each(samples.size(), [&](std::size_t i) {
      DictSample& s = samples[i];  // each i is made once: its arrays may be moved out
      tessera::Sample<float> sample = s.raw.empty() ? tessera::Sample<float>{} : model.load(s.raw);
      if (s.given.text) sample.text = std::move(s.given.text);
      if (s.given.image) sample.image = std::move(s.given.image);
      if (s.given.audio) sample.audio = std::move(s.given.audio);
      if (s.given.video) sample.video = std::move(s.given.video);
      return sample;
    });
  });
}

// The config as a dict: tessera's own model's config.json (every default filled in), or for a
// pretrained model the native tessera_towers config.json (tessera::to_json) with its family
// and logit scale.
py::object config_dict(const Model& model) {
  nlohmann::json json;
  if (!model.is_pretrained()) {
    json = tessera::to_json(model.config());
  } else {
    // the native tessera_towers config.json, and where the model came from
    const tessera::TowerModel<float>& towers = model.tower_model();
    json = tessera::to_json(towers.config);
    json["family"] = towers.config.family;
    json["logit_scale"] = towers.logit_scale;
  }
  return py::module_::import("json").attr("loads")(json.dump());
}

// Model.classify's inputs as Model.encode's dicts: a path becomes {modality: path}, the
// modality from its extension (tessera::file_modality); a dict stays as it is.
py::list classify_inputs(const py::iterable& inputs) {
  py::list dicts;
  std::size_t i = 0;
  for (const py::handle item : inputs) {
    if (py::isinstance<py::dict>(item)) {
      dicts.append(item);
    } else {
      tessera::check(is_path_like(item), "input ", i, ": expected a path or a dict such as "
                     "{\"image\": \"photo.png\"}, got a ",
                     py::str(py::type::of(item).attr("__name__")).cast<std::string>());
      const std::string path = path_string(item);
      const auto modality = tessera::file_modality(path);
      tessera::check(modality.has_value(), "input ", i, ": ", path, ": not a kind of file tessera "
                     "knows by its extension (an image, a .wav, a video); give a dict such as "
                     "{\"video\": path} instead");
      py::dict d;
      d[tessera::modality_name(*modality)] = path;
      dicts.append(d);
    }
    ++i;
  }
  return dicts;
}

// Labels as a list of strings, or one string of comma-separated labels.
std::vector<std::string> classify_labels(const py::object& labels) {
  if (py::isinstance<py::str>(labels)) return tessera::parse_labels(labels.cast<std::string>());
  return tessera::check_labels(labels.cast<std::vector<std::string>>());
}

py::array_t<float> classify(const Model& model, const py::iterable& inputs, const py::object& labels,
                            const std::string& label_template) {
  const std::vector<std::string> names = model.modalities();
  tessera::check(std::find(names.begin(), names.end(), "text") != names.end(),
                 "the model has no text modality: zero-shot classification compares the inputs "
                 "with the labels as texts");
  const std::vector<std::string> texts = tessera::label_texts(classify_labels(labels), label_template);
  const py::array_t<float> embeddings = encode_dicts(model, classify_inputs(inputs));
  return without_gil([&] {
    const tessera::Matrix<float> label_embeddings = model.encode_texts(texts);
    const auto rows = static_cast<tessera::Index>(embeddings.shape(0));
    const Eigen::Map<const tessera::Matrix<float>> input_embeddings(embeddings.data(), rows,
                                                                    model.embed_dim());
    if (rows == 0) return tessera::Matrix<float>(0, static_cast<tessera::Index>(texts.size()));
    return tessera::zero_shot_probabilities<float>(input_embeddings, label_embeddings,
                                                   model.logit_scale()).probabilities;
  });
}

py::dict update_dict(const tessera::SearchIndexUpdate& u, const std::filesystem::path& index_file) {
  py::dict d;
  d["index_file"] = index_file.string();
  d["files"] = u.files;
  d["reused"] = u.reused;
  d["embedded"] = u.embedded;
  d["dropped"] = u.dropped;
  d["failed"] = u.failed;
  d["failed_before"] = u.failed_before;
  d["skipped"] = u.skipped;
  d["rebuilt"] = u.rebuilt;
  d["written"] = u.written;
  py::list failures;
  for (const tessera::FailedFile& f : u.failures) failures.append(py::make_tuple(f.file.path, f.error));
  d["failures"] = failures;
  return d;
}

std::filesystem::path index_path(const std::filesystem::path& dir, const py::object& index_file) {
  return index_file.is_none() ? dir / tessera::default_index_name
                              : std::filesystem::path(path_string(index_file));
}

// The folder's index, brought up to date (tessera::update_search_index), without the GIL.
tessera::SearchIndex updated_index(const Model& model, const std::filesystem::path& dir,
                                   const std::filesystem::path& index_file, std::size_t max_files,
                                   tessera::SearchIndexUpdate& update) {
  tessera::SearchIndexLimits limits;
  limits.max_files = max_files;
  const py::gil_scoped_release release;
  return tessera::update_search_index(model, dir, index_file, &update, limits);
}

py::dict update_index(const Model& model, const std::filesystem::path& dir,
                      const py::object& index_file, std::size_t max_files) {
  tessera::SearchIndexUpdate update;
  const std::filesystem::path file = index_path(dir, index_file);
  updated_index(model, dir, file, max_files, update);
  return update_dict(update, file);
}

py::list search(const Model& model, const std::filesystem::path& dir, const py::object& query,
                const py::object& query_file, std::size_t top, const py::object& index_file,
                std::size_t max_files) {
  tessera::check(query.is_none() != query_file.is_none(),
                 "search: give query (a text) or query_file (a path), not both and not neither");
  tessera::check(top >= 1, "search: top must be at least 1");
  tessera::Vector<float> q;
  if (!query.is_none()) {
    tessera::check(py::isinstance<py::str>(query), "search: query must be a str (a path goes "
                   "in query_file)");
    q = model.encode_texts({query.cast<std::string>()}).row(0).transpose();
  } else {
    const py::array_t<float> e = encode_dicts(model, classify_inputs(py::make_tuple(query_file)));
    q = Eigen::Map<const tessera::Vector<float>>(e.data(), model.embed_dim());
  }
  tessera::SearchIndexUpdate update;
  const tessera::SearchIndex index = updated_index(model, dir, index_path(dir, index_file),
                                                   max_files, update);
  if (!update.failures.empty()) {
    const py::object warn = py::module_::import("warnings").attr("warn");
    for (const tessera::FailedFile& f : update.failures) {
      warn(f.error + " (skipped until the file changes)");
    }
  }
  py::list hits;
  for (const tessera::SearchHit& h : tessera::search(index, q, top)) {
    py::dict d;
    d["path"] = h.path;
    d["modality"] = tessera::modality_name(h.modality);
    d["score"] = h.score;
    hits.append(d);
  }
  return hits;
}

}  // namespace

PYBIND11_MODULE(tessera, m) {
  m.doc() = "tessera: a multimodal encoder (text, images, audio, video) into one embedding "
            "space. tessera.load(model_dir) -> Model; docs/python.md.";
  m.attr("__version__") = TESSERA_VERSION;
  py::register_exception<tessera::Error>(m, "Error", PyExc_RuntimeError);

  py::class_<Model>(m, "Model",
                    "A model directory's encoder and front ends (tessera::Pipeline<float>). "
                    "Every encode method returns a float32 array [N, E] of unit-norm rows, "
                    "row i sample i's embedding.")
      .def("encode_texts",
           [](const Model& p, std::vector<std::string> texts) {
             return without_gil([&] { return p.encode_texts(texts); });
           },
           py::arg("texts"), "One sample per string (UTF-8), tokenized by the model's tokenizer.")
      .def("encode_images",
           [](const Model& p, std::vector<std::filesystem::path> files) {
             return without_gil([&] { return p.encode_images(files); });
           },
           py::arg("paths"), "One sample per image file (PNG, JPEG, BMP, PPM).")
      .def("encode_audio",
           [](const Model& p, std::vector<std::filesystem::path> files) {
             return without_gil([&] { return p.encode_audio(files); });
           },
           py::arg("paths"), "One sample per WAV file.")
      .def("encode_videos",
           [](const Model& p, std::vector<std::filesystem::path> files) {
             return without_gil([&] { return p.encode_videos(files); });
           },
           py::arg("paths"),
           "One sample per video: a Y4M file, a directory of images (30 fps), or with FFmpeg "
           "an MP4/WebM/AVI file.")
      .def("encode", &encode_dicts, py::arg("inputs"),
           "One sample per dict, any mix of modalities: \"text\" (str), \"text_ids\" (int "
           "array [n]), \"image\" (path or float32 array [C, S, S]), \"audio\" (path or [M, T]), "
           "\"video\" (path or [T, C, S, S]), \"video_fps\" (a video directory's frame rate), "
           "or a custom modality's name (its input).")
      .def("classify", &classify, py::arg("inputs"), py::arg("labels"),
           py::arg("template") = tessera::default_label_template,
           "Zero-shot classification, as CLIP's README: a float32 array [N, K], row n the "
           "probabilities of the K labels for input n, softmax over the labels of "
           "exp(logit_scale) x the cosine similarity with the label's text (the template with "
           "the label at every {}). inputs: paths (the modality from the extension) or dicts "
           "as encode takes; labels: a list of str or one comma-separated str (each trimmed; "
           "none empty, none twice).")
      .def("update_index", &update_index, py::arg("index_dir"), py::arg("index_file") = py::none(),
           py::arg("max_files") = tessera::SearchIndexLimits{}.max_files,
           "Brings the search index of a folder up to date (default file: "
           "index_dir/.tessera-index.safetensors): new and changed images, audio and videos "
           "embedded, removed ones dropped, the rest reused. Returns what it did as a dict "
           "(files, reused, embedded, dropped, failed, failed_before, skipped, rebuilt, "
           "written, failures: [(path, error)]).")
      .def("search", &search, py::arg("index_dir"), py::arg("query") = py::none(), py::kw_only(),
           py::arg("query_file") = py::none(), py::arg("top") = 10,
           py::arg("index_file") = py::none(),
           py::arg("max_files") = tessera::SearchIndexLimits{}.max_files,
           "The top files of a folder most similar to a text (query) or a file (query_file), "
           "best first, as dicts {path (relative to index_dir), modality, score (cosine)}. "
           "Updates the folder's index first (update_index); files that fail to decode are "
           "skipped with a warning.")
      .def_property_readonly("config", &config_dict,
                             "The model's config as a dict: tessera's config.json, or for a "
                             "pretrained model its family, embed_dim, logit_scale and towers.")
      .def_property_readonly("is_pretrained", &Model::is_pretrained,
                             "Whether the model is a pretrained one (CLIP, open_clip, ImageBind).")
      .def_property_readonly("logit_scale", &Model::logit_scale,
                             "ln of the factor on cosine similarities (CLIP's logit_scale).")
      .def_property_readonly("model_dir", [](const Model& p) { return p.dir(); },
                             "The model directory it was loaded from.")
      .def_property_readonly("embed_dim", &Model::embed_dim, "E, the embedding width.")
      .def_property_readonly("modalities", &Model::modalities,
                             "The modalities the model encodes, in token order.")
      .def_property_readonly("batch_size", [](const Model& p) { return p.options().batch_size; })
      .def_property_readonly("threads", [](const Model& p) { return p.options().threads; })
      .def("__repr__", [](const Model& p) {
        return "<tessera.Model E=" + std::to_string(p.embed_dim()) + " batch_size=" +
               std::to_string(p.options().batch_size) + ">";
      });

  m.def("load",
        [](const std::filesystem::path& dir, std::size_t batch_size, int threads) {
          tessera::PipelineOptions options;
          options.batch_size = batch_size;
          options.threads = threads;
          const py::gil_scoped_release release;
          return Model::open(dir, options);
        },
        py::arg("model_dir"), py::arg("batch_size") = tessera::PipelineOptions{}.batch_size,
        py::arg("threads") = tessera::PipelineOptions{}.threads,
        "Loads a model directory: tessera's own (config.json, model.safetensors, and the "
        "tokenizer's vocab.json + merges.txt for text) or a pretrained one (transformers' CLIP, "
        "open_clip, ImageBind, tessera_towers; docs/pretrained.md). batch_size: samples per "
        "encoder batch; threads: threads decoding a batch's inputs (0: tessera.num_threads()).");
  m.def("set_num_threads", &tessera::set_num_threads, py::arg("threads"),
        "The number of threads tessera's loops use (OpenMP's global setting).");
  m.def("num_threads", &tessera::num_threads);
}
