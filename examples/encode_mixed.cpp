// encode_mixed: one sample holding all four modalities, compared with its text alone.
//
//   tessera-encode-mixed MODEL_DIR TEXT IMAGE SOUND.wav VIDEO
//
// The encoder puts a sample's tokens in one sequence, text, image, audio, video, so every
// token attends to all the others, and pools them into one embedding. Prints how many
// tokens each modality gave, both embeddings' first values and their cosine similarity.

#include "example_util.hpp"

int main(int argc, char** argv) {
  return example::run("tessera-encode-mixed", [&] {
    example::expect_arguments(argc, 5, "tessera-encode-mixed MODEL_DIR TEXT IMAGE SOUND.wav VIDEO");
    const auto model = tessera::load_model<float>(argv[1]);
    const tessera::FrontEnds front(model.config, argv[1]);

    // Any subset of the four inputs makes a sample: here all of them, and then the text only.
    tessera::SampleFiles mixed, text_only;
    mixed.text = text_only.text = argv[2];
    mixed.image = argv[3];
    mixed.audio = argv[4];
    mixed.video = argv[5];
    const auto out = model.encode_batch(std::vector{front.load(mixed), front.load(text_only)});

    // Encoding::modality tells each token's source (a built-in modality, a custom one, cls).
    int count[4] = {0, 0, 0, 0};
    for (tessera::ModalityId m : out[0].modality) {
      if (m.is_builtin()) ++count[m.index()];
    }
    std::printf("tokens: text %d, image %d, audio %d, video %d\n", count[0], count[1], count[2],
                count[3]);
    example::print_encoding("all four", out[0]);
    example::print_encoding("text only", out[1]);
    example::print_similarity(out[0], out[1]);
  });
}
