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
//
// Every read is bounded by a ReadLimit: a regular file larger than the limit is refused from
// its size, before anything is allocated; a file without a size (a pipe, /dev/zero, a /proc
// file) is read in steps and refused as soon as it passes the limit, so no read runs forever
// nor ends in std::bad_alloc. The refusal names the path, the limit and the setting that
// holds it:
//
//   "notes.txt: cannot read: the file is 104857600 bytes, more than the limit of 16777216
//    bytes (16 MiB) set by tessera::ReadLimits::text_file"

#include <tessera/core/error.hpp>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <ios>
#include <string>
#include <string_view>
#include <system_error>

namespace tessera {

// The most bytes read_file takes from one file, and the name of the setting that holds the
// number (what a refusal tells the reader to change).
struct ReadLimit {
  std::uint64_t max_bytes = 0;
  const char* setting = "";  // "tessera::ReadLimits::text_file"
};

// The limit of each kind of file tessera reads whole. Each is far above any real file of its
// kind and keeps the work a file at the limit causes within what bad input may cost (about
// 10 s and 2 GB, docs/robustness.md); a caller reading something else passes its own ReadLimit.
// Measured on tessera-encode (2 cores, busy): a 16 MB text 2.6 s and 0.5 GB, a 16 MB
// vocab.json (680k tokens) 6.9 s and 0.2 GB, a 16 MB merges.txt 2.9 s and 0.3 GB.
struct ReadLimits {
  // A text file (tessera-encode --text-file, read_utf8_file). A caption or document for an
  // encoder that keeps text.max_tokens tokens (77 for CLIP) is a few KB. Tokenizing holds
  // about 30 bytes per byte of text (code points, their classes and offsets, pre-tokens, ids)
  // before the ids are cut to max_tokens: 16 MiB of text takes 0.5 GB, 64 MiB took 2 GB.
  static constexpr ReadLimit text_file{std::uint64_t{16} << 20, "tessera::ReadLimits::text_file"};
  // vocab.json / encoder.json. GPT-2's is 1.0 MB (50257 tokens), CLIP's 1.6 MB (49408); a
  // 256k-token vocabulary is about 6 MB.
  static constexpr ReadLimit vocab_json{std::uint64_t{16} << 20, "tessera::ReadLimits::vocab_json"};
  // merges.txt / vocab.bpe. GPT-2's is 0.45 MB (50000 merges), CLIP's 0.5 MB (48894).
  static constexpr ReadLimit merges_txt{std::uint64_t{16} << 20, "tessera::ReadLimits::merges_txt"};
  // config.json. A real one is under 2 KB; its parsed tree takes tens of bytes per byte.
  static constexpr ReadLimit config_json{std::uint64_t{1} << 20, "tessera::ReadLimits::config_json"};
  // Any other file, when the caller names no limit. A file without an end (/dev/zero) is held
  // up to the limit before it is refused: 256 MiB costs tessera-encode 0.3 GB and 0.6 s (4 GiB
  // took 8 GB and 24 s). A reader of larger files (long WAVs, safetensors that cannot be
  // mapped) passes its own limit.
  static constexpr ReadLimit any_file{std::uint64_t{256} << 20, "tessera::ReadLimits::any_file"};
};

namespace detail {

// "64 MiB", "1 GiB", "1.5 KiB": a byte count in the largest binary unit that keeps it >= 1.
inline std::string byte_size_name(std::uint64_t bytes) {
  static constexpr const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  double value = static_cast<double>(bytes);
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  return concat(value, " ", units[unit]);
}

}  // namespace detail

// The bytes of `file`, as a std::string (the default) or another container of bytes
// (std::vector<std::uint8_t>, std::vector<std::byte>), at most limit.max_bytes of them.
// Files without a size (pipes, /dev/stdin, /proc files) are read to their end as well.
// requires: Bytes is a contiguous container of 1-byte elements with resize().
// ensures: the whole content is returned, or tessera::Error naming the file is thrown: it
// cannot be opened (missing, no permission), is a directory, a read fails, or it holds more
// than limit.max_bytes bytes (then never more than limit.max_bytes + 1 bytes were held).
template <class Bytes = std::string>
Bytes read_file(const std::filesystem::path& file, std::string_view context = {},
                const ReadLimit& limit = ReadLimits::any_file) {
  static_assert(sizeof(typename Bytes::value_type) == 1, "read_file reads into a container of bytes");
  const std::string name = file.string();
  // "<file>: <verb>: <detail>", or "<context>: <verb> <file>: <detail>"
  const auto refuse = [&](std::string_view verb, const std::string& detail) {
    if (context.empty()) fail(name, ": ", verb, ": ", detail);
    fail(context, ": ", verb, " ", name, ": ", detail);
  };
  const auto the_limit = [&] {
    return detail::concat("the limit of ", limit.max_bytes, " bytes (",
                          detail::byte_size_name(limit.max_bytes), ") set by ", limit.setting);
  };
  std::error_code no_status;
  const auto status = std::filesystem::status(file, no_status);
  if (std::filesystem::is_directory(status)) {
    refuse("cannot read", "is a directory, expected a file");
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) refuse("cannot open", std::strerror(errno));

  // A regular file's size is checked before anything is allocated, and sizes the first read:
  // one read fills the buffer, a second meets the end. Files that grow or have no size (a
  // /proc file says 0) are read in steps until the end or the limit.
  std::error_code no_size;
  const bool regular = std::filesystem::is_regular_file(status);
  const std::uintmax_t size = regular ? std::filesystem::file_size(file, no_size) : 0;
  if (regular && !no_size && size > limit.max_bytes) {
    refuse("cannot read", detail::concat("the file is ", size, " bytes, more than ", the_limit()));
  }
  constexpr std::size_t min_step = std::size_t{1} << 16;
  std::size_t step = std::max(min_step, static_cast<std::size_t>(size) + 1);
  Bytes bytes;
  while (true) {
    const std::size_t done = bytes.size();
    // Never hold more than one byte past the limit: that byte shows the limit was passed. The
    // buffer grows geometrically but never beyond it, so a file without an end costs the
    // limit plus the half of it being copied while the buffer grows, no more.
    const std::uint64_t room = limit.max_bytes - done;
    if (room <= step) step = static_cast<std::size_t>(room) + 1;
    if (done + step > bytes.capacity()) {
      bytes.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(
          std::max(done + step, 2 * bytes.capacity()), limit.max_bytes + 1)));
    }
    bytes.resize(done + step);
    in.read(reinterpret_cast<char*>(bytes.data()) + done, static_cast<std::streamsize>(step));
    bytes.resize(done + static_cast<std::size_t>(in.gcount()));
    if (bytes.size() > limit.max_bytes) {
      refuse("cannot read", size > 0 ? detail::concat("the file grew to more than ", the_limit())
                                     : detail::concat("more than ", the_limit(),
                                                      " (the file has no size: read until it passed the limit)"));
    }
    if (!in) break;
    step = std::max(step, bytes.size());  // grow geometrically
  }
  if (in.bad()) refuse("cannot read", detail::concat("read failed after ", bytes.size(), " bytes"));
  return bytes;
}

}  // namespace tessera
