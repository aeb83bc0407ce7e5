// stream_video: encode a video window by window, each window attending to the earlier ones
// through a KV cache instead of encoding everything again.
//
//   tessera-stream-video MODEL_DIR VIDEO [FRAMES_PER_WINDOW]
//
// The video front end samples frames at the model's rate and preprocesses them (SPEC 5.4);
// SlidingWindow cuts them into windows of FRAMES_PER_WINDOW frames (default: two tubelets),
// without overlap. MultiModalEncoder::encode_append appends each window's tokens to the
// sample encoded so far: the new tokens attend to the cached keys and values of every earlier
// window, and the earlier tokens are not recomputed. Prints, per window, its time, the tokens
// so far and the running embedding, then the similarity of the last embedding to the first.

#include "example_util.hpp"

int main(int argc, char** argv) {
  return example::run("tessera-stream-video", [&] {
    tessera::check(argc == 3 || argc == 4,
                   "usage: tessera-stream-video MODEL_DIR VIDEO [FRAMES_PER_WINDOW]");
    const auto model = tessera::load_model<float>(argv[1]);
    tessera::check(model.config.video.has_value(), argv[1], ": the model has no video modality");
    tessera::WindowOptions options;
    options.window = argc == 4 ? example::positive_integer("FRAMES_PER_WINDOW", argv[3])
                               : 2 * model.config.video->tubelet;
    tessera::SlidingWindow<float> windows(tessera::VideoReader::open(argv[2]), model.config,
                                          options);

    tessera::EncoderCache<float> cache;
    tessera::Encoding<float> first, last;
    while (auto window = windows.next()) {
      tessera::Sample<float> part;
      part.video = std::move(window->video);
      last = model.encode_append(cache, part);
      if (window->index == 0) first = last;
      char label[64];
      std::snprintf(label, sizeof label, "window %ld at %.2f s", static_cast<long>(window->index),
                    window->start_time);
      example::print_encoding(label, last);
    }
    std::printf("first window vs the whole stream: ");
    example::print_similarity(first, last);
  });
}
