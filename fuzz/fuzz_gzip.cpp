// Fuzz target: gzip data (io/gzip.hpp) bounded to 1 MiB decompressed, and what the CLIP
// tokenizer builds from OpenAI's decompressed bpe_simple_vocab_16e6.txt
// (tokenize/clip_bpe.hpp); the raw bytes also go through html_unescape, the cleaning step
// SimpleTokenizer applies to every text.

#include "fuzz.hpp"

#include <tessera/io/gzip.hpp>
#include <tessera/tokenize/clip_bpe.hpp>
#include <tessera/tokenize/html_unescape.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes = fuzz::as_text(data, size);
  (void)tessera::html_unescape(bytes);
  return fuzz::refuse_with_error_only([&] {
    const std::string text =
        tessera::gunzip(bytes, "fuzz.gz", tessera::ReadLimit{std::uint64_t{1} << 20, "fuzz"});
    (void)tessera::detail::clip_bpe_from_gz_text(text, "fuzz.gz", 2000);
  });
}
