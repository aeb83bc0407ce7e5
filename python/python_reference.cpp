// tessera_python_reference OUT_DIR DATA_DIR: the reference the Python tests compare with
// (tests/python/test_tessera.py, ctest python.reference -> python.pytest).
//
// Writes into OUT_DIR:
//   model/              a four-modality model with seeded random weights and a BPE tokenizer
//   a.y4m, b.y4m        two small videos
//   inputs.json         the inputs: texts, images, audio, videos (paths) and mixed samples
//                       (lists of {"modality": ..., "value": ...})
//   expected.safetensors
//     texts, images, audio, videos, mixed   [N, E] what tessera::Pipeline<float> gives for them
//     pre.text_ids, pre.image, pre.audio, pre.video
//                       what the front ends make of captions[1], chelsea.jpg,
//                       pipeline_whisper.wav and b.y4m
//     preprocessed      [3, E] Pipeline::encode_samples of {text_ids + image}, {audio}, {video}
//     int8.mixed, bf16.mixed
//                       the mixed samples through model-int8/ and model-bf16/: the model
//                       quantized (quantize_model) and saved, as tessera-quantize writes it
// DATA_DIR is tests/data (its images and WAV files).

#include <tessera/core/warning.hpp>
#include <tessera/io/safetensors.hpp>
#include <tessera/io/y4m.hpp>
#include <tessera/model/model_io.hpp>
#include <tessera/model/quantize.hpp>
#include <tessera/pipeline.hpp>
#include <tessera/tokenize/bpe_trainer.hpp>

#include <nlohmann/json.hpp>

#include "../tests/pipeline_fixture.hpp"

#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

const std::vector<std::string>& captions = tessera::test::pipeline_captions;

std::vector<fs::path> paths(const std::vector<std::string>& names, const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& name : names) out.push_back(dir / name);
  return out;
}

tessera::TensorData matrix_tensor(const tessera::Matrix<float>& m) {
  return tessera::TensorData::from_span(std::span<const float>(m.data(), static_cast<std::size_t>(m.size())),
                                        {m.rows(), m.cols()});
}

template <class Tensor>
tessera::TensorData tensor_data(const Tensor& t) {
  std::vector<std::int64_t> shape;
  for (auto d : t.dimensions()) shape.push_back(d);
  return tessera::TensorData::from_span(std::span<const float>(t.data(), static_cast<std::size_t>(t.size())),
                                        shape);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    tessera::check(argc == 3, "usage: tessera_python_reference OUT_DIR DATA_DIR");
    const fs::path out = argv[1], data = argv[2];
    const fs::path model_dir = out / "model";
    tessera::test::write_pipeline_fixture(model_dir, out);
    tessera::set_warning_handler([](const std::string&) {});  // long audio is split, and says so

    const auto images = paths({"coffee.png", "chelsea.jpg", "gray.png", "astronaut.jpg"}, data / "image" / "sources");
    const auto audio = paths({"pipeline_kaldi.wav", "pipeline_whisper.wav"}, data / "audio");
    const auto videos = paths({"a.y4m", "b.y4m"}, out);
    const std::vector<std::vector<tessera::RawInput>> mixed = {
        {{"text", captions[0], {}}, {"image", images[0].string(), {}}},
        {{"audio", audio[0].string(), {}}},
        {{"text", captions[3], {}}, {"audio", audio[1].string(), {}}, {"video", videos[0].string(), {}}},
        {{"image", images[2].string(), {}}, {"video", videos[1].string(), {}}},
        {{"text", captions[2], {}}}};

    const auto pipeline = tessera::Pipeline<float>::open(model_dir);
    std::map<std::string, tessera::TensorData> expected;
    expected["texts"] = matrix_tensor(pipeline.encode_texts(captions));
    expected["images"] = matrix_tensor(pipeline.encode_images(images));
    expected["audio"] = matrix_tensor(pipeline.encode_audio(audio));
    expected["videos"] = matrix_tensor(pipeline.encode_videos(videos));
    expected["mixed"] = matrix_tensor(pipeline.encode(mixed));

    // Preprocessed inputs, as the Python tests give them as numpy arrays.
    const auto& front = pipeline.front_ends();
    tessera::SampleFiles first;
    first.text = captions[1];
    first.image = images[1];
    tessera::SampleFiles second;
    second.audio = audio[1];
    tessera::SampleFiles third;
    third.video = videos[1];
    const std::vector<tessera::Sample<float>> preprocessed = {front.load(first), front.load(second),
                                                              front.load(third)};
    const auto& ids = *preprocessed[0].text;
    expected["pre.text_ids"] = tessera::TensorData::from_vector(ids, {static_cast<std::int64_t>(ids.size())});
    expected["pre.image"] = tensor_data(*preprocessed[0].image);
    expected["pre.audio"] = matrix_tensor(*preprocessed[1].audio);
    expected["pre.video"] = tensor_data(*preprocessed[2].video);
    expected["preprocessed"] = matrix_tensor(pipeline.encode_samples(preprocessed));
    // The model quantized, saved beside it with its tokenizer, and its embeddings of the mixed samples.
    for (const auto& [name, format] : {std::pair{"int8", tessera::nn::WeightFormat::int8},
                                       std::pair{"bf16", tessera::nn::WeightFormat::bf16}}) {
      const fs::path dir = out / (std::string("model-") + name);
      auto quantized = tessera::load_model<float>(model_dir);
      tessera::quantize_model(quantized, {format, {}});
      fs::remove_all(dir);
      fs::copy(model_dir, dir, fs::copy_options::recursive);  // the tokenizer's files
      tessera::save_model(quantized, dir);
      expected[std::string(name) + ".mixed"] = matrix_tensor(tessera::Pipeline<float>::open(dir).encode(mixed));
    }
    tessera::save_safetensors(out / "expected.safetensors", expected, {{"producer", "tessera_python_reference"}});

    nlohmann::json inputs;
    inputs["model"] = model_dir.string();
    inputs["texts"] = captions;
    for (const auto& [key, list] : {std::pair{"images", &images}, {"audio", &audio}, {"videos", &videos}}) {
      inputs[key] = nlohmann::json::array();
      for (const auto& p : *list) inputs[key].push_back(p.string());
    }
    inputs["mixed"] = nlohmann::json::array();
    for (const auto& sample : mixed) {
      nlohmann::json entry = nlohmann::json::object();
      for (const auto& in : sample) entry[in.modality] = in.value;
      inputs["mixed"].push_back(entry);
    }
    inputs["preprocessed_sources"] = {{{"text", captions[1]}, {"image", images[1].string()}},
                                      {{"audio", audio[1].string()}},
                                      {{"video", videos[1].string()}}};
    std::ofstream json_file(out / "inputs.json");
    json_file << inputs.dump(2) << "\n";
    tessera::check(static_cast<bool>(json_file), (out / "inputs.json").string(), ": cannot write");
    std::cout << "tessera_python_reference: wrote " << out.string() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "tessera_python_reference: error: " << e.what() << "\n";
    return 1;
  }
}
