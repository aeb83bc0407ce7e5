// encode_audio: embed two sounds with a model and compare them.
//
//   tessera-encode-audio MODEL_DIR SOUND.wav OTHER_SOUND.wav
//
// The audio front end averages the channels, resamples to the model's sample rate and
// computes its features [M, T] (SPEC 5.3); the encoder cuts them into chunks of
// patch_frames frames, one token each. Prints each embedding's token count and first
// values, then their cosine similarity.

#include "example_util.hpp"

int main(int argc, char** argv) {
  return example::run("tessera-encode-audio", [&] {
    example::expect_arguments(argc, 3, "tessera-encode-audio MODEL_DIR SOUND.wav OTHER_SOUND.wav");
    const auto model = tessera::load_model<float>(argv[1]);
    const tessera::FrontEnds front(model.config, argv[1]);

    tessera::SampleFiles first, second;
    first.audio = argv[2];
    second.audio = argv[3];
    const tessera::Sample<float> a = front.load(first), b = front.load(second);
    std::printf("features: [%ld, %ld] and [%ld, %ld]\n", static_cast<long>(a.audio->rows()),
                static_cast<long>(a.audio->cols()), static_cast<long>(b.audio->rows()),
                static_cast<long>(b.audio->cols()));

    // Samples of different lengths share one batch: it is packed, not padded.
    const auto out = model.encode_batch(std::vector{a, b});
    example::print_encoding(argv[2], out[0]);
    example::print_encoding(argv[3], out[1]);
    example::print_similarity(out[0], out[1]);
  });
}
