// encode_video: embed two videos with a model and compare them.
//
//   tessera-encode-video MODEL_DIR VIDEO OTHER_VIDEO
//
// A video is a Y4M file, a directory of images (sorted by name, 30 frames per second), or
// with FFmpeg any container. The video front end samples frames at the model's rate and
// preprocesses each like an image (SPEC 5.4), giving frames [T, C, S, S]. Prints each
// embedding's token count and first values, then their cosine similarity.

#include "example_util.hpp"

int main(int argc, char** argv) {
  return example::run("tessera-encode-video", [&] {
    example::expect_arguments(argc, 3, "tessera-encode-video MODEL_DIR VIDEO OTHER_VIDEO");
    const auto model = tessera::load_model<float>(argv[1]);
    const tessera::FrontEnds front(model.config, argv[1]);

    tessera::SampleFiles first, second;
    first.video = argv[2];
    second.video = argv[3];
    const tessera::Sample<float> a = front.load(first), b = front.load(second);
    std::printf("sampled frames: %ld and %ld\n", static_cast<long>(a.video->dimension(0)),
                static_cast<long>(b.video->dimension(0)));

    const auto out = model.encode_batch(std::vector{a, b});
    example::print_encoding(argv[2], out[0]);
    example::print_encoding(argv[3], out[1]);
    example::print_similarity(out[0], out[1]);
  });
}
