// encode_image: embed two images with a model and compare them.
//
//   tessera-encode-image MODEL_DIR IMAGE OTHER_IMAGE
//
// IMAGE and OTHER_IMAGE are PNG, JPEG, BMP or PPM files of any size: the image front end
// resizes and center-crops them to the model's image size, then normalizes them (SPEC 5.2).
// Prints each embedding's token count and first values, then their cosine similarity.

#include "example_util.hpp"

int main(int argc, char** argv) {
  return example::run("tessera-encode-image", [&] {
    example::expect_arguments(argc, 3, "tessera-encode-image MODEL_DIR IMAGE OTHER_IMAGE");
    const auto model = tessera::load_model<float>(argv[1]);

    // FrontEnds decodes and preprocesses each file into an image tensor [C, S, S].
    const tessera::FrontEnds front(model.config, argv[1]);
    tessera::SampleFiles first, second;
    first.image = argv[2];
    second.image = argv[3];
    const tessera::Sample<float> a = front.load(first), b = front.load(second);
    std::printf("image tensor: [%ld, %ld, %ld]\n", static_cast<long>(a.image->dimension(0)),
                static_cast<long>(a.image->dimension(1)), static_cast<long>(a.image->dimension(2)));

    // encode() takes one sample; its embedding is unit length.
    const tessera::Encoding<float> ea = model.encode(a), eb = model.encode(b);
    example::print_encoding(argv[2], ea);
    example::print_encoding(argv[3], eb);
    example::print_similarity(ea, eb);
  });
}
