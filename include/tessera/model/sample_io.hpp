#pragma once
// Encoder inputs and outputs as safetensors files (the format of tessera-encode).
//
// An inputs file holds any of: `text_ids` (I32 or I64, [n]), `image` ([C, S, S]),
// `audio` ([M, T]), `video` ([T, C, S, S]); image, audio and video in F32, F16, BF16 or F64.
// Any other name is a custom modality's input (Sample::custom): `<name>` ([n, input_dim],
// floating) and optionally `<name>.positions` (I32 or I64, [n, 3]).
// An outputs file holds `embeddings` [N, E] and `hidden.0`, `hidden.1`, ... ([L_i, D]).

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/io/safetensors.hpp>
#include <tessera/model/encoder.hpp>

#include <array>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace tessera {

// Reads one sample from an inputs file. Unknown tensor names, wrong ranks and wrong dtypes
// are errors naming the file and the tensor; whether the sample fits a model is checked by
// the encoder.
template <class Scalar>
Sample<Scalar> read_sample(const std::filesystem::path& file) {
  const auto st = SafetensorsFile::open(file);
  const std::string where = file.string();
  auto tensor = [&](const char* name, std::size_t rank, const char* layout) -> const TensorInfo& {
    const TensorInfo& info = st.info(name);
    check(info.rank() == rank, where, ": tensor '", name, "' has shape ",
          detail::shape_string(info.shape), ", expected ", layout);
    check(is_floating(info.dtype) == (std::string(name) != "text_ids"), where, ": tensor '",
          name, "' has dtype ", dtype_name(info.dtype), ", expected ",
          std::string(name) == "text_ids" ? "I32 or I64" : "F32, F16, BF16 or F64");
    return info;
  };
  Sample<Scalar> sample;
  for (const auto& name : st.names()) {
    if (name == "text_ids") {
      const auto& info = tensor("text_ids", 1, "[n]");
      check(info.dtype == DType::I32 || info.dtype == DType::I64, where,
            ": tensor 'text_ids' has dtype ", dtype_name(info.dtype), ", expected I32 or I64");
      sample.text = st.read<std::int64_t>(name);
    } else if (name == "image") {
      const auto& info = tensor("image", 3, "[C, S, S]");
      const auto values = st.read<Scalar>(name);
      sample.image = Tensor3<Scalar>(info.shape[0], info.shape[1], info.shape[2]);
      std::copy(values.begin(), values.end(), sample.image->data());
    } else if (name == "audio") {
      const auto& info = tensor("audio", 2, "[M, T]");
      (void)info;
      sample.audio = st.read_matrix<Scalar>(name);
    } else if (name == "video") {
      const auto& info = tensor("video", 4, "[T, C, S, S]");
      const auto values = st.read<Scalar>(name);
      sample.video = Tensor4<Scalar>(info.shape[0], info.shape[1], info.shape[2], info.shape[3]);
      std::copy(values.begin(), values.end(), sample.video->data());
    } else if (name.ends_with(".positions")) {
      const std::string modality = name.substr(0, name.size() - std::string(".positions").size());
      const TensorInfo& info = st.info(name);
      check(info.rank() == 2 && info.shape[1] == 3, where, ": tensor '", name, "' has shape ",
            detail::shape_string(info.shape), ", expected [n, 3]");
      check(info.dtype == DType::I32 || info.dtype == DType::I64, where, ": tensor '", name,
            "' has dtype ", dtype_name(info.dtype), ", expected I32 or I64");
      check(st.contains(modality), where, ": tensor '", name, "' has no tensor '", modality,
            "' of features beside it");
      const auto values = st.read<std::int64_t>(name);
      Positions& positions = sample.custom[modality].positions;
      positions.resize(info.shape[0], 3);
      std::copy(values.begin(), values.end(), positions.data());
    } else {
      const TensorInfo& info = st.info(name);
      check(info.rank() == 2 && is_floating(info.dtype), where, ": unexpected tensor '", name,
            "' of shape ", detail::shape_string(info.shape), " and dtype ", dtype_name(info.dtype),
            " (an inputs file holds text_ids, image, audio, video, and custom modalities' "
            "[n, input_dim] floating-point features)");
      sample.custom[name].features = st.read_matrix<Scalar>(name);
    }
  }
  check(!sample.empty(), where, ": no input tensor (text_ids, image, audio, video or a custom modality)");
  return sample;
}

// Writes a sample in the inputs format (text_ids as I64, the rest as `dtype`).
template <class Scalar>
void write_sample(const std::filesystem::path& file, const Sample<Scalar>& sample,
                  DType dtype = DType::F32) {
  std::map<std::string, TensorData> tensors;
  auto dims = [](const auto& t) {
    std::vector<std::int64_t> shape;
    for (auto d : t.dimensions()) shape.push_back(d);
    return shape;
  };
  if (sample.text) tensors["text_ids"] = TensorData::from_vector(*sample.text, DType::I64);
  if (sample.image) {
    tensors["image"] = TensorData::from_span(
        std::span<const Scalar>(sample.image->data(), static_cast<std::size_t>(sample.image->size())),
        dims(*sample.image), dtype);
  }
  if (sample.audio) tensors["audio"] = TensorData::from_matrix(*sample.audio, dtype);
  if (sample.video) {
    tensors["video"] = TensorData::from_span(
        std::span<const Scalar>(sample.video->data(), static_cast<std::size_t>(sample.video->size())),
        dims(*sample.video), dtype);
  }
  for (const auto& [name, in] : sample.custom) {
    tensors[name] = TensorData::from_matrix(in.features, dtype);
    if (in.positions.rows() > 0) {
      tensors[name + ".positions"] = TensorData::from_matrix(in.positions, DType::I64);
    }
  }
  save_safetensors(file, tensors);
}

// Writes `embeddings` [N, E] and `hidden.<i>` [L_i, D] as `dtype`.
template <class Scalar>
void write_encodings(const std::filesystem::path& file,
                     std::span<const Encoding<Scalar>> encodings, DType dtype = DType::F32) {
  check(!encodings.empty(), "write_encodings: no encodings to write to ", file.string());
  Matrix<Scalar> embeddings(static_cast<Index>(encodings.size()), encodings[0].embedding.size());
  std::map<std::string, TensorData> tensors;
  for (std::size_t i = 0; i < encodings.size(); ++i) {
    embeddings.row(static_cast<Index>(i)) = encodings[i].embedding.transpose();
    tensors["hidden." + std::to_string(i)] = TensorData::from_matrix(encodings[i].hidden, dtype);
  }
  tensors["embeddings"] = TensorData::from_matrix(embeddings, dtype);
  save_safetensors(file, tensors);
}

}  // namespace tessera
