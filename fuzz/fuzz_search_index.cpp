// Fuzz target: a search index file (search_index.hpp), the bytes as a file through
// is_search_index and read_search_index; an index that reads is searched, then written again
// and read back, which must give the same index (tables equal, embeddings bit for bit).

#include "fuzz.hpp"

#include <tessera/search_index.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

namespace {

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "fuzz_search_index: %s\n", what);
  std::abort();
}

// The file the round trip writes, one per process, removed at exit.
const std::filesystem::path& round_trip_file() {
  static const fuzz::ScratchFile file("-round-trip.safetensors");
  return file.path();
}

bool same_index(const tessera::SearchIndex& a, const tessera::SearchIndex& b) {
  if (a.model.dir != b.model.dir || a.model.files != b.model.files || a.files != b.files ||
      a.failed.size() != b.failed.size() || a.embeddings.rows() != b.embeddings.rows() ||
      a.embeddings.cols() != b.embeddings.cols()) {
    return false;
  }
  for (std::size_t i = 0; i < a.failed.size(); ++i) {
    if (!(a.failed[i].file == b.failed[i].file) || a.failed[i].error != b.failed[i].error) return false;
  }
  const auto bytes = static_cast<std::size_t>(a.embeddings.size()) * sizeof(float);
  return bytes == 0 || std::memcmp(a.embeddings.data(), b.embeddings.data(), bytes) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::filesystem::path file = fuzz::as_file(data, size, ".safetensors");
  (void)tessera::is_search_index(file);  // never throws
  return fuzz::refuse_with_error_only([&] {
    const tessera::SearchIndex index = tessera::read_search_index(file);
    // a query of ones: NaN and infinite embeddings must not break the ranking
    (void)tessera::search(index, tessera::Vector<float>::Ones(index.embeddings.cols()), 3);
    tessera::write_search_index(round_trip_file(), index);
    if (!tessera::is_search_index(round_trip_file())) finding("the index written is not an index");
    if (!same_index(tessera::read_search_index(round_trip_file()), index)) {
      finding("the index written and read back differs");
    }
  });
}
