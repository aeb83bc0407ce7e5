// Fuzz target: a WAV file (io/wav.hpp) read to samples, each channel layout and sample format
// the header may claim, then, when it decodes, the rest of the audio front end
// (tokenize/audio.hpp: channels averaged, resampled from the file's rate to 16 kHz, features)
// under the default WavLimits: the header's sample rate alone once scaled the work and memory
// of resampling (issue 16), so the target goes through resample with whatever rate the bytes
// claim. The last byte's parity picks kaldi_fbank or whisper_logmel.

#include "fuzz.hpp"

#include <tessera/io/wav.hpp>
#include <tessera/model/config.hpp>
#include <tessera/tokenize/audio.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz::refuse_with_error_only([&] {
    const tessera::WavLimits limits;
    const auto wav =
        tessera::read_wav<float>(std::span<const std::uint8_t>(data, size), limits, "fuzz");
    tessera::AudioConfig audio;  // 16 kHz, 128 mels
    if (size % 2 == 1) {
      audio.features = "whisper_logmel";
      audio.n_mels = 80;
    }
    const tessera::Matrix<float> features = tessera::preprocess_audio(
        tessera::average_channels(wav.samples), wav.sample_rate, audio, limits);
    (void)features;
  });
}
