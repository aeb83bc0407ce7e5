#pragma once
// The check test_front_end.cpp and test_pretrained.cpp share: an image's and a WAV's bytes in
// memory (RawInput::bytes, as tessera-serve gives them) load as their files do, bit for bit;
// bytes cut in half are an error naming the input's value; the modalities in `refusing` take
// no bytes in memory at all.

#include <tessera/io/read_file.hpp>
#include <tessera/model/sample.hpp>
#include <tessera/tokenize/front_end.hpp>

#include "test_util.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <span>
#include <string>
#include <utility>

namespace tessera::test {

// load(const RawInput&) -> Sample<float>: one input through the front ends under test.
template <class Load>
void expect_bytes_load_as_their_files(Load&& load, std::initializer_list<const char*> refusing) {
  using ::testing::HasSubstr;
  for (const auto& [modality, file] :
       {std::pair{"image", data_dir() / "image" / "sources" / "coffee.png"},
        std::pair{"audio", data_dir() / "audio" / "pipeline_kaldi.wav"}}) {
    SCOPED_TRACE(modality);
    const std::string bytes = read_file(file);
    RawInput in{modality, "request.sample", {}};
    in.bytes = std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
    const Sample<float> from_bytes = load(in);
    const Sample<float> from_file = load(RawInput{modality, file.string(), {}});
    if (from_file.image) {
      ASSERT_TRUE(from_bytes.image);
      EXPECT_EQ(std::memcmp(from_bytes.image->data(), from_file.image->data(),
                            sizeof(float) * static_cast<std::size_t>(from_file.image->size())),
                0);
    } else {
      ASSERT_TRUE(from_bytes.audio && from_file.audio);
      EXPECT_EQ(*from_bytes.audio, *from_file.audio);
    }
    in.bytes = in.bytes.first(in.bytes.size() / 2);  // cut: named by the input's value
    EXPECT_THAT(error_of([&] { (void)load(in); }), HasSubstr("request.sample"));
  }
  const std::string some = "bytes";
  for (const char* modality : refusing) {
    RawInput in{modality, "request.sample", {}};
    in.bytes = std::span(reinterpret_cast<const std::uint8_t*>(some.data()), some.size());
    EXPECT_THAT(error_of([&] { (void)load(in); }),
                HasSubstr(std::string("request.sample: ") + modality +
                          " input takes no bytes in memory"));
  }
}

}  // namespace tessera::test
