// The encoder below the front door (the README's example uses tessera::Pipeline), built and
// run by ctest: encode token ids and a preprocessed image with a model directory
// (config.json + model.safetensors) and compare their embeddings.
//   tessera-quickstart MODEL_DIR
#include <tessera/tessera.hpp>
#include <iostream>

int main(int argc, char** argv) try {
  if (argc != 2) return std::cerr << "usage: tessera-quickstart MODEL_DIR\n", 1;
  const auto model = tessera::load_model<float>(argv[1]);       // validated against SPEC 4
  tessera::check(model.config.text && model.config.image, argv[1], ": not a text+image model");
  const auto& image = *model.config.image;
  tessera::Sample<float> caption, picture;
  caption.text = std::vector<std::int64_t>{17, 4, 42};            // token ids
  picture.image = tessera::Tensor3<float>(image.channels, image.size, image.size);
  picture.image->setConstant(0.5f);                               // a preprocessed image [C, S, S]
  const auto out = model.encode_batch(std::vector{caption, picture});  // one packed batch
  std::cout << "cosine similarity: " << out[0].embedding.dot(out[1].embedding) << "\n";
} catch (const tessera::Error& e) {
  std::cerr << "tessera-quickstart: error: " << e.what() << "\n";
  return 1;
}
