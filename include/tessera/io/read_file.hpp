#pragma once
// read_file: how tessera reads a whole file into memory (vocabularies, merges, WAV files,
// safetensors files that cannot be mapped, text files). Every reader of whole files calls it,
// so every one refuses the same things with the same words, naming the path:
//
//   "data/a.wav: cannot open: No such file or directory"
//   "data: cannot read: is a directory, expected a file"
//
// With a context (the caller's name), the context leads and the path follows the verb:
//
//   "Gpt2Bpe::load: cannot open model/vocab.json: No such file or directory"

#include <tessera/core/error.hpp>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <ios>
#include <string>
#include <string_view>
#include <system_error>

namespace tessera {

// The bytes of `file`, as a std::string (the default) or another container of bytes
// (std::vector<std::uint8_t>, std::vector<std::byte>). Files without a size (pipes,
// /dev/stdin) are read to their end as well.
// requires: Bytes is a contiguous container of 1-byte elements with resize().
// ensures: the whole content is returned, or tessera::Error naming the file is thrown: it
// cannot be opened (missing, no permission), is a directory, or a read fails.
template <class Bytes = std::string>
Bytes read_file(const std::filesystem::path& file, std::string_view context = {}) {
  static_assert(sizeof(typename Bytes::value_type) == 1, "read_file reads into a container of bytes");
  const std::string name = file.string();
  // "<file>: <verb>: <detail>", or "<context>: <verb> <file>: <detail>"
  const auto refuse = [&](std::string_view verb, const std::string& detail) {
    if (context.empty()) fail(name, ": ", verb, ": ", detail);
    fail(context, ": ", verb, " ", name, ": ", detail);
  };
  std::error_code ignored;
  if (std::filesystem::is_directory(file, ignored)) {
    refuse("cannot read", "is a directory, expected a file");
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) refuse("cannot open", std::strerror(errno));

  // The size, when the file has one, is a hint: one read fills the buffer, a second meets
  // the end. Files that grow or have no size are read in steps until the end.
  std::error_code no_size;
  const auto size = std::filesystem::file_size(file, no_size);
  constexpr std::size_t min_step = std::size_t{1} << 16;
  std::size_t step = no_size ? min_step : std::max(min_step, static_cast<std::size_t>(size) + 1);
  Bytes bytes;
  while (true) {
    const std::size_t done = bytes.size();
    bytes.resize(done + step);
    in.read(reinterpret_cast<char*>(bytes.data()) + done, static_cast<std::streamsize>(step));
    bytes.resize(done + static_cast<std::size_t>(in.gcount()));
    if (!in) break;
    step = std::max(step, bytes.size());  // grow geometrically
  }
  if (in.bad()) refuse("cannot read", detail::concat("read failed after ", bytes.size(), " bytes"));
  return bytes;
}

}  // namespace tessera
