// The README's usage example, built and run by ctest: a model directory's encoder and front
// ends in one object (tessera::Pipeline), two captions and an image file in, their cosine
// similarities out.
//   tessera-pipeline MODEL_DIR IMAGE
#include <tessera/tessera.hpp>
#include <iostream>

int main(int argc, char** argv) try {
  tessera::check(argc == 3, "usage: tessera-pipeline MODEL_DIR IMAGE");
  const auto p = tessera::Pipeline<float>::open(argv[1]);  // config.json, weights, tokenizer
  const tessera::Matrix<float> captions =                  // [2, E], unit rows
      p.encode_texts({"a red circle on the left", "a blue square on the right"});
  const tessera::Matrix<float> image = p.encode_images({argv[2]});  // [1, E]
  std::cout << "similarities:\n" << captions * image.transpose() << "\n";
} catch (const tessera::Error& e) {
  std::cerr << "tessera-pipeline: error: " << e.what() << "\n";
  return 1;
}
