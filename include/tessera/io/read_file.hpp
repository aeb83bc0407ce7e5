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
  // A WAV file (read_wav): its chunk sizes are 32-bit, so no RIFF file is larger than 4 GiB;
  // the samples it may hold are bounded again by WavLimits::max_samples.
  static constexpr ReadLimit wav_file{std::uint64_t{4} << 30, "tessera::ReadLimits::wav_file"};
  // An image file (decode_image): stb_image takes at most INT_MAX bytes; the pixels it may
  // decode are bounded by ImageLimits::max_pixels from the header.
  static constexpr ReadLimit image_file{std::uint64_t{0x7FFFFFFF}, "tessera::ReadLimits::image_file"};
  // A file whose format bounds what it makes of its size, read whole only when it cannot be
  // mapped (safetensors): no limit but its size, and without_size when it has none.
  static constexpr ReadLimit whole_file{~std::uint64_t{0}, "tessera::ReadLimits::whole_file"};
  // Any other file, when the caller names no limit: 256 MiB (a captions file of a million
  // lines is about 50 MB).
  static constexpr ReadLimit any_file{std::uint64_t{256} << 20, "tessera::ReadLimits::any_file"};
  // A file without a size (/dev/zero, a pipe, /proc) is read in steps, and held up to the
  // limit before it can be refused, so its limit is at most this one whatever the caller's:
  // /dev/zero read as a WAV or an image costs 0.3 GB and 0.6 s before the refusal (at 4 GiB it
  // took 8 GB and 24 s). A regular file's size is known before anything is read.
  static constexpr ReadLimit without_size{std::uint64_t{256} << 20,
                                          "tessera::ReadLimits::without_size"};
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
// Files without a size (pipes, /dev/stdin, /proc files) are read to their end as well, at
// most min(limit, ReadLimits::without_size) bytes.
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
  std::uintmax_t size = regular ? std::filesystem::file_size(file, no_size) : 0;
  if (no_size) size = 0;
  // A file without a size is held up to its limit before the limit shows: without_size caps it.
  const ReadLimit& bound =
      (regular && size > 0) || limit.max_bytes <= ReadLimits::without_size.max_bytes ? limit
                                                                        : ReadLimits::without_size;
  const auto the_limit = [&] {
    return detail::concat("the limit of ", bound.max_bytes, " bytes (",
                          detail::byte_size_name(bound.max_bytes), ") set by ", bound.setting);
  };
  // the most bytes ever held: one past the limit (that byte shows the limit was passed)
  const std::uint64_t most = bound.max_bytes + (bound.max_bytes < ~std::uint64_t{0} ? 1 : 0);
  if (size > bound.max_bytes) {
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
    const std::uint64_t room = bound.max_bytes - done;
    if (room <= step) step = static_cast<std::size_t>(room) + 1;
    if (done + step > bytes.capacity()) {
      bytes.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(
          std::max(done + step, 2 * bytes.capacity()), most)));
    }
    bytes.resize(done + step);
    in.read(reinterpret_cast<char*>(bytes.data()) + done, static_cast<std::streamsize>(step));
    bytes.resize(done + static_cast<std::size_t>(in.gcount()));
    if (bytes.size() > bound.max_bytes) {
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
