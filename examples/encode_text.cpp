// encode_text: embed two texts with a model and compare them.
//
//   tessera-encode-text MODEL_DIR TEXT OTHER_TEXT
//
// MODEL_DIR holds config.json, model.safetensors and the tokenizer (vocab.json + merges.txt).
// Prints each embedding's token count and first values, then their cosine similarity.

#include "example_util.hpp"

int main(int argc, char** argv) {
  return example::run("tessera-encode-text", [&] {
    example::expect_arguments(argc, 3, "tessera-encode-text MODEL_DIR TEXT OTHER_TEXT");

    // A model directory loads into an encoder; every tensor is checked on the way in.
    const auto model = tessera::load_model<float>(argv[1]);

    // FrontEnds turns raw inputs into what the encoder takes: here, text into token ids
    // with the tokenizer found in the model directory.
    const tessera::FrontEnds front(model.config, argv[1]);
    tessera::SampleFiles first, second;
    first.text = argv[2];
    second.text = argv[3];

    // Both samples go through the encoder as one batch; out[i] belongs to sample i.
    const auto out = model.encode_batch(std::vector{front.load(first), front.load(second)});
    example::print_encoding(argv[2], out[0]);
    example::print_encoding(argv[3], out[1]);
    example::print_similarity(out[0], out[1]);
  });
}
