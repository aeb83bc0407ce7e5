#pragma once
// gunzip, read_gzip_file: the decompressed bytes of gzip data (RFC 1952) through zlib, as
// Python's gzip module reads a file: one or more members one after the other, each checked
// against its CRC-32 and length, zero bytes allowed between and after members. What Python
// refuses is a tessera::Error naming the file and what is wrong:
//
//   "vocab.txt.gz: not gzip data: it starts with the bytes 0x23 0x76, not 0x1F 0x8B"
//   "vocab.txt.gz: truncated gzip data: it ends inside a member, after 1048576 bytes were decompressed"
//   "vocab.txt.gz: corrupt gzip data at compressed byte 41: incorrect data check"
//
// and so is an empty file (Python reads it as no bytes at all). The decompressed size is
// bounded: more than limit.max_bytes is refused as soon as it is passed, naming the limit and
// the setting that holds it, so a small file that inflates to gigabytes (a "zip bomb") costs
// no more than the limit. The compressed file is read with the same limit (gzip never makes
// data much larger than it was).

#include <tessera/core/error.hpp>
#include <tessera/io/read_file.hpp>

#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace tessera {

namespace detail {

// "0x1F"
inline std::string gzip_byte_name(unsigned char byte) {
  static constexpr char digits[] = "0123456789ABCDEF";
  return std::string{'0', 'x', digits[byte >> 4], digits[byte & 15]};
}

// A zlib inflate stream for gzip members, ended however the caller leaves.
struct GzipInflater {
  z_stream stream{};
  bool open = false;
  ~GzipInflater() {
    if (open) inflateEnd(&stream);
  }
};

}  // namespace detail

// The decompressed bytes of `compressed`, gzip data whose messages call it `name` (a path),
// at most limit.max_bytes of them.
// ensures: the whole content is returned, or tessera::Error naming `name` is thrown (empty,
// not gzip, corrupt, truncated, followed by bytes that are not gzip, or more than the limit
// decompressed; never more than limit.max_bytes + 1 bytes were held).
inline std::string gunzip(std::string_view compressed, const std::string& name, const ReadLimit& limit) {
  check(!compressed.empty(), name, ": holds no gzip data (the file is empty)");
  const auto starts_gzip = [&](std::size_t at) {
    return compressed.size() - at >= 2 && static_cast<unsigned char>(compressed[at]) == 0x1F &&
           static_cast<unsigned char>(compressed[at + 1]) == 0x8B;
  };
  if (!starts_gzip(0)) {
    fail(name, ": not gzip data: it starts with the byte", compressed.size() >= 2 ? "s " : " ",
         detail::gzip_byte_name(static_cast<unsigned char>(compressed[0])),
         compressed.size() >= 2 ? " " + detail::gzip_byte_name(static_cast<unsigned char>(compressed[1])) : "",
         ", not 0x1F 0x8B");
  }
  detail::GzipInflater inflater;
  z_stream& z = inflater.stream;
  check(inflateInit2(&z, 15 + 16) == Z_OK, name, ": zlib could not start inflating: ",
        z.msg != nullptr ? z.msg : "out of memory");  // 15: the largest window; +16: gzip only
  inflater.open = true;

  // zlib counts in 32-bit uInt: input is fed in steps of at most 1 GiB.
  constexpr std::size_t max_feed = std::size_t{1} << 30;
  std::size_t fed = 0;  // bytes of `compressed` given to zlib so far
  const auto consumed = [&] { return fed - z.avail_in; };
  const auto too_much = [&] {
    fail(name, ": decompresses to more than the limit of ", limit.max_bytes, " bytes (",
         detail::byte_size_name(limit.max_bytes), ") set by ", limit.setting);
  };
  const std::uint64_t most = limit.max_bytes + (limit.max_bytes < ~std::uint64_t{0} ? 1 : 0);
  std::string out;
  std::size_t produced = 0;
  while (true) {
    if (z.avail_in == 0 && fed < compressed.size()) {
      const std::size_t step = std::min(max_feed, compressed.size() - fed);
      z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data() + fed));
      z.avail_in = static_cast<uInt>(step);
      fed += step;
    }
    if (produced == out.size()) {
      if (produced >= most) too_much();
      const std::uint64_t grown = std::min<std::uint64_t>(
          most, std::max<std::uint64_t>(std::uint64_t{1} << 16, 2 * std::uint64_t{out.size()}));
      out.resize(static_cast<std::size_t>(grown));
    }
    const std::size_t room = std::min(max_feed, out.size() - produced);
    z.next_out = reinterpret_cast<Bytef*>(out.data() + produced);
    z.avail_out = static_cast<uInt>(room);
    const int status = inflate(&z, Z_NO_FLUSH);
    produced += room - z.avail_out;
    if (produced > limit.max_bytes) too_much();
    if (status == Z_STREAM_END) {
      // A member ended (its CRC-32 and length checked by zlib). Zero bytes may follow; what
      // else follows must be another member.
      std::size_t at = consumed();
      while (at < compressed.size() && compressed[at] == '\0') ++at;
      if (at == compressed.size()) break;
      if (!starts_gzip(at)) {
        fail(name, ": the bytes after the gzip data, from byte ", at,
             ", are not another gzip member (they start with ",
             detail::gzip_byte_name(static_cast<unsigned char>(compressed[at])), ")");
      }
      check(inflateReset(&z) == Z_OK, name, ": zlib could not start the next gzip member");
      z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data() + at));
      z.avail_in = static_cast<uInt>(std::min(max_feed, compressed.size() - at));
      fed = at + z.avail_in;
      continue;
    }
    if (status == Z_OK) continue;
    if (status == Z_BUF_ERROR && z.avail_in == 0 && fed == compressed.size()) {
      fail(name, ": truncated gzip data: it ends inside a member, after ", produced,
           " bytes were decompressed");
    }
    if (status == Z_BUF_ERROR) continue;  // no progress possible without room: made next round
    fail(name, ": corrupt gzip data at compressed byte ", consumed(), ": ",
         z.msg != nullptr ? z.msg : (status == Z_MEM_ERROR ? "out of memory" : "invalid data"));
  }
  out.resize(produced);
  return out;
}

// The decompressed bytes of the gzip file `file`: read_file with `limit` (its messages; with a
// context, "<context>: cannot open <file>: ..."), then gunzip with the same limit.
inline std::string read_gzip_file(const std::filesystem::path& file, std::string_view context,
                                  const ReadLimit& limit) {
  const std::string compressed = read_file(file, context, limit);
  return gunzip(compressed, file.string(), limit);
}

}  // namespace tessera
