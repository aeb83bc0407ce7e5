#pragma once
// Decoding image files to 8-bit RGB (SPEC 5.2), the way PIL.Image.open(f).convert("RGB") does,
// and writing PNG.
//
//   decode_image(path, limits)                 a PNG, JPEG, BMP or binary PPM/PGM file
//   decode_image_memory(bytes, name, limits)   the same from memory; `name` is used in errors
//   write_png(path, image)                     8-bit RGB PNG (stb_image_write), atomically
//
// What comes out, per input kind (each checked against Pillow 9.4, see docs/image.md):
//   gray, gray + alpha         gray replicated to R, G, B; alpha dropped
//   RGB, RGBA, palette (+tRNS) the colours; alpha dropped, never composited or premultiplied
//   1, 2, 4-bit PNG            scaled to 0..255 as Pillow does (x 255, 85, 17)
//   16-bit RGB(A), gray+alpha  the high byte of each sample (as Pillow's "RGB;16B" unpacker)
//   16-bit gray PNG            refused: Pillow opens it as mode "I" and convert("RGB") clips
//                              every value above 255 to white, which no caller wants
//   PPM/PGM (P6/P5)            maxval 255 only; other maxvals (which Pillow rescales) refused
//   JPEG (baseline, progressive, gray, YCbCr 4:4:4/4:2:2/4:2:0, Adobe CMYK/YCCK)
//                              with TESSERA_HAS_LIBJPEG: decoded by libjpeg-turbo set up as
//                              Pillow sets it up, so the pixels are Pillow's (same library);
//                              without it: by stb_image, a few levels off, more in one column
//                              of 4:2:2 files (docs/image.md)
// EXIF orientation is ignored, as by PIL.Image.open.
//
// Errors (tessera::Error, naming the file and the problem): a missing or unreadable file, an
// empty file, an unsupported format (GIF, TIFF, WebP, ... or an unknown signature), a header
// that does not parse, an image of 0 pixels, more pixels than ImageLimits::max_pixels
// (checked from the header, before anything is allocated or decoded), truncated data
// (PNG, JPEG, BMP, PPM/PGM), corrupt data (stb_image's or libjpeg's reason is quoted).
//
// Thread safety: every function may run on several threads at once. stb_image keeps its
// failure reason in a global that Debian's libstb builds thread-local (stb_image.h defines
// STBI_THREAD_LOCAL for C11/C++11 compilers; `objdump -t libstb.a` shows
// stbi__g_failure_reason in .tbss), and the reason is read right after the failing call on
// the same thread. The other stb globals (vertical flip, iPhone PNG, unpremultiply) are never
// set by tessera and must not be set by the application. libjpeg keeps all its state in the
// decompress object, one per call.
//
// Needs stb_image (Debian: libstb-dev), linked by the tessera CMake target, which then
// defines TESSERA_HAS_STB. The implementation is in libstb, so STB_IMAGE_IMPLEMENTATION must
// not be defined. libjpeg-turbo (Debian: libjpeg62-turbo-dev) is optional: the target links
// it when found and defines TESSERA_HAS_LIBJPEG.

#ifndef TESSERA_HAS_STB
#error "tessera/io/image.hpp decodes images with stb_image, which this build does not have: install libstb-dev (pkg-config module 'stb') and reconfigure with TESSERA_USE_STB=ON, or link tessera::tessera, which defines TESSERA_HAS_STB when stb is found"
#endif

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/io/atomic_file.hpp>
#include <tessera/io/read_file.hpp>
#include <tessera/core/image.hpp>

#include <stb_image.h>
#include <stb_image_write.h>
#if TESSERA_HAS_LIBJPEG
#include <csetjmp>
#include <cstdio>  // jpeglib.h uses FILE and size_t without declaring them
#include <jpeglib.h>
#endif

#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

namespace tessera {

// Guards against hostile or mistaken inputs; checked from the header before decoding.
struct ImageLimits {
  // width * height: 100 megapixels, 300 MB of RGB (larger than any camera's photo). A side
  // is also at most 2^31 - 1, what stb_image and libjpeg index with an int.
  Index max_pixels = 100'000'000;
};

// An image's size as its header states it.
struct ImageSize {
  Index width = 0, height = 0;
};

namespace detail {

enum class ImageFormat { png, jpeg, bmp, pnm };

inline const char* image_format_name(ImageFormat format) {
  switch (format) {
    case ImageFormat::png: return "PNG";
    case ImageFormat::jpeg: return "JPEG";
    case ImageFormat::bmp: return "BMP";
    case ImageFormat::pnm: return "PPM/PGM";
  }
  return "image";
}

inline bool starts_with_bytes(std::span<const std::uint8_t> bytes, const char* magic,
                              std::size_t length) {
  return bytes.size() >= length && std::memcmp(bytes.data(), magic, length) == 0;
}

// The format from the file's signature (never from its extension, which may lie).
inline ImageFormat sniff_image_format(std::span<const std::uint8_t> bytes,
                                      const std::string& name) {
  if (starts_with_bytes(bytes, "\x89PNG\r\n\x1a\n", 8)) return ImageFormat::png;
  if (starts_with_bytes(bytes, "\xFF\xD8\xFF", 3)) return ImageFormat::jpeg;
  if (starts_with_bytes(bytes, "BM", 2)) return ImageFormat::bmp;
  if (starts_with_bytes(bytes, "P5", 2) || starts_with_bytes(bytes, "P6", 2))
    return ImageFormat::pnm;
  const char* known = "unknown signature";
  if (starts_with_bytes(bytes, "P1", 2) || starts_with_bytes(bytes, "P2", 2) ||
      starts_with_bytes(bytes, "P3", 2) || starts_with_bytes(bytes, "P4", 2))
    known = "plain (ASCII) or 1-bit PNM (P1-P4)";
  else if (starts_with_bytes(bytes, "P7", 2)) known = "PAM (P7)";
  else if (starts_with_bytes(bytes, "GIF8", 4)) known = "GIF";
  else if (starts_with_bytes(bytes, "II*\0", 4) || starts_with_bytes(bytes, "MM\0*", 4))
    known = "TIFF";
  else if (bytes.size() >= 12 && starts_with_bytes(bytes, "RIFF", 4) &&
           std::memcmp(bytes.data() + 8, "WEBP", 4) == 0)
    known = "WebP";
  else if (starts_with_bytes(bytes, "8BPS", 4)) known = "PSD";
  else if (starts_with_bytes(bytes, "#?RADIANCE", 10) || starts_with_bytes(bytes, "#?RGBE", 6))
    known = "Radiance HDR";
  else if (bytes.size() >= 12 && std::memcmp(bytes.data() + 4, "ftyp", 4) == 0)
    known = "HEIF/AVIF";
  fail(name, ": unsupported image format (", known,
       "); tessera reads PNG, JPEG, BMP and binary PPM/PGM (P6/P5)");
}

inline std::uint32_t read_le32(std::span<const std::uint8_t> bytes, std::size_t at) {
  return static_cast<std::uint32_t>(bytes[at]) | (static_cast<std::uint32_t>(bytes[at + 1]) << 8) |
         (static_cast<std::uint32_t>(bytes[at + 2]) << 16) |
         (static_cast<std::uint32_t>(bytes[at + 3]) << 24);
}

inline std::uint32_t read_be32(std::span<const std::uint8_t> bytes, std::size_t at) {
  return (static_cast<std::uint32_t>(bytes[at]) << 24) |
         (static_cast<std::uint32_t>(bytes[at + 1]) << 16) |
         (static_cast<std::uint32_t>(bytes[at + 2]) << 8) | static_cast<std::uint32_t>(bytes[at + 3]);
}

// Width and height as the header states them, read by tessera so that the size checks come
// before stb_image allocates anything. (stbi_info is not used: it tries every format in turn
// and reports only the last one's failure, usually "unknown image type"; stbi_load's reason
// names the actual problem.)
using HeaderSize = ImageSize;

inline HeaderSize png_header_size(std::span<const std::uint8_t> bytes, const std::string& name) {
  check(bytes.size() >= 26 && std::memcmp(bytes.data() + 12, "IHDR", 4) == 0, name,
        ": invalid PNG header (the IHDR chunk does not follow the signature)");
  return {Index{read_be32(bytes, 16)}, Index{read_be32(bytes, 20)}};
}

inline HeaderSize bmp_header_size(std::span<const std::uint8_t> bytes, const std::string& name) {
  check(bytes.size() >= 26, name, ": invalid BMP header (", bytes.size(), " bytes)");
  const std::uint32_t header_size = read_le32(bytes, 14);
  check(header_size == 12 || header_size == 40 || header_size == 56 || header_size == 108 ||
            header_size == 124,
        name, ": invalid or unsupported BMP header (DIB header size ", header_size,
        "; expected 12, 40, 56, 108 or 124)");
  if (header_size == 12)  // OS/2 BITMAPCOREHEADER: 16-bit sizes
    return {Index{bytes[18]} | (Index{bytes[19]} << 8), Index{bytes[20]} | (Index{bytes[21]} << 8)};
  const auto width = static_cast<std::int32_t>(read_le32(bytes, 18));
  const auto height = static_cast<std::int32_t>(read_le32(bytes, 22));  // < 0: top-down rows
  return {Index{width}, height < 0 ? -Index{height} : Index{height}};
}

// The file size an uncompressed BMP needs (stb_image reads past the end of a short one as
// zeros, where Pillow raises "image file is truncated"); 0 when the layout is not one to check.
inline std::size_t bmp_required_size(std::span<const std::uint8_t> bytes, Index width,
                                     Index height) {
  if (bytes.size() < 34) return 0;
  const std::uint32_t offset = read_le32(bytes, 10);
  const std::uint32_t header_size = read_le32(bytes, 14);
  if (header_size < 40) return 0;  // OS/2 headers: stb judges
  const unsigned bpp = static_cast<unsigned>(bytes[28]) | (static_cast<unsigned>(bytes[29]) << 8);
  const std::uint32_t compression = read_le32(bytes, 30);
  if (compression != 0 && compression != 3) return 0;  // RLE etc.: stb refuses those itself
  const std::size_t stride = (static_cast<std::size_t>(width) * bpp + 31) / 32 * 4;
  return static_cast<std::size_t>(offset) + stride * static_cast<std::size_t>(height);
}

// Binary PPM/PGM header: "P6" or "P5", whitespace and #-comments, width, height, maxval, one
// whitespace byte, then the samples.
struct PnmHeader {
  Index width = 0, height = 0, maxval = 0, channels = 0;
  std::size_t data_offset = 0;
};

inline PnmHeader parse_pnm_header(std::span<const std::uint8_t> bytes, const std::string& name) {
  PnmHeader h;
  h.channels = bytes[1] == '6' ? 3 : 1;
  std::size_t i = 2;
  auto is_space = [](std::uint8_t c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
  };
  auto number = [&](const char* what) -> Index {
    for (;;) {
      while (i < bytes.size() && is_space(bytes[i])) ++i;
      if (i < bytes.size() && bytes[i] == '#') {
        while (i < bytes.size() && bytes[i] != '\n' && bytes[i] != '\r') ++i;
        continue;
      }
      break;
    }
    check(i < bytes.size() && bytes[i] >= '0' && bytes[i] <= '9', name,
          ": invalid PPM/PGM header: expected the ", what, " (a decimal number) at byte ", i);
    Index value = 0;
    while (i < bytes.size() && bytes[i] >= '0' && bytes[i] <= '9') {
      value = value * 10 + (bytes[i++] - '0');
      check(value <= (Index{1} << 31), name, ": invalid PPM/PGM header: the ", what,
            " is too large");
    }
    return value;
  };
  h.width = number("width");
  h.height = number("height");
  h.maxval = number("maxval");
  check(i < bytes.size() && is_space(bytes[i]), name,
        ": invalid PPM/PGM header: expected one whitespace byte after the maxval");
  h.data_offset = i + 1;
  return h;
}

// JPEG: the size and number of components (from the first SOF marker) and whether an
// end-of-image marker follows the first scan. stb_image decodes a JPEG cut short without
// complaint (it pads the entropy-coded data with zeros), while Pillow raises "image file is
// truncated"; the missing EOI marker is how a cut file is recognised.
struct JpegLayout {
  Index width = 0, height = 0;
  int components = 0;  // 0: no frame header (SOF) before the first scan
  bool has_end = false;
};

inline JpegLayout scan_jpeg(std::span<const std::uint8_t> bytes) {
  JpegLayout layout;
  std::size_t i = 2;  // after SOI
  while (i + 4 <= bytes.size()) {
    if (bytes[i] != 0xFF) return layout;  // not at a marker: corrupt, stb says more
    const std::uint8_t marker = bytes[i + 1];
    if (marker == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (marker == 0xD9) return layout;  // EOI before any scan
    const std::size_t length = (static_cast<std::size_t>(bytes[i + 2]) << 8) | bytes[i + 3];
    const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 &&
                     marker != 0xCC;
    if (sof && layout.components == 0 && i + 9 < bytes.size()) {
      layout.height = (Index{bytes[i + 5]} << 8) | bytes[i + 6];
      layout.width = (Index{bytes[i + 7]} << 8) | bytes[i + 8];
      layout.components = bytes[i + 9];
    }
    if (marker == 0xDA) {  // start of scan; in entropy-coded data 0xFF is followed by 0 or RSTn
      for (std::size_t j = i + 2 + length; j + 1 < bytes.size(); ++j)
        if (bytes[j] == 0xFF && bytes[j + 1] == 0xD9) {
          layout.has_end = true;
          break;
        }
      return layout;
    }
    i += 2 + length;
  }
  return layout;
}

// Frees stb_image's buffer.
struct StbiFree {
  void operator()(stbi_uc* p) const { stbi_image_free(p); }
};

inline std::string stbi_reason() {
  const char* reason = stbi_failure_reason();
  // Some stb failures (an unknown chunk type of zero bytes, as in a cut PNG) leave an empty
  // reason.
  return reason && *reason ? reason : "corrupt or truncated data";
}

#if TESSERA_HAS_LIBJPEG
// ---- JPEG with libjpeg-turbo, set up as Pillow 9.4 sets it up -------------------------------
// Pillow (JpegImagePlugin.py, libImaging/JpegDecode.c) for Image.open(f).convert("RGB"):
//   - the mode comes from the number of components in SOF: 1 -> "L", 3 -> "RGB", 4 -> "CMYK";
//   - jpeg_color_space is left as libjpeg guesses it (JFIF/Adobe markers, component ids):
//     Pillow passes an empty "jpegmode";
//   - out_color_space is JCS_GRAYSCALE, JCS_RGB (JCS_EXT_RGBX with libjpeg-turbo: the same
//     values plus a pad byte) or JCS_CMYK (libjpeg turns YCCK into CMYK);
//   - dct_method, do_fancy_upsampling, do_block_smoothing are libjpeg's defaults (JDCT_ISLOW,
//     TRUE, TRUE); only draft(), which open/convert never call, changes them. tessera sets the
//     first two explicitly so that a libjpeg built with another default still gives these;
//   - CMYK is unpacked as "CMYK;I" (every byte inverted: Adobe's convention, assumed for any
//     4-component file) and convert("RGB") is Convert.c's cmyk2rgb (cmyk_to_rgb below);
//   - L is replicated to R, G, B by convert("RGB").
// Warnings (corrupt entropy data, extraneous bytes) are ignored, as Pillow ignores them. The
// data running out before the last row is an error (Pillow: "image file is truncated"); after
// it, while libjpeg reads the markers up to EOI, it is not (Pillow returns the image then).
// A file with no end-of-image marker at all is refused before decoding (scan_jpeg), as Pillow
// refuses all but a few of them (when libjpeg happened not to look ahead).
//
// libjpeg reports a fatal error by calling error_exit, which must not return. tessera's jumps
// back (longjmp) into run_libjpeg, whose own locals are trivially destructible and never read
// after the jump, and which is only called from C++ code that no jump crosses: no destructor
// is skipped. The decompress object lives in the caller (LibjpegDecoder), not among
// run_libjpeg's locals, so its members are not indeterminate after the jump.

struct LibjpegError {
  jpeg_error_mgr pub;  // first member: libjpeg's `cinfo->err` points here
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
  bool rows_done;  // every row is out; only the markers up to EOI are left to read
  bool truncated;  // the data ran out before the last row
};

struct LibjpegDecoder {
  jpeg_decompress_struct cinfo;
  LibjpegError error;
  jpeg_source_mgr source;  // the whole file, in memory
};

inline LibjpegError& libjpeg_error(j_common_ptr cinfo) {
  return *reinterpret_cast<LibjpegError*>(cinfo->err);
}

inline void libjpeg_error_exit(j_common_ptr cinfo) {
  LibjpegError& error = libjpeg_error(cinfo);
  (*cinfo->err->format_message)(cinfo, error.message);
  std::longjmp(error.jump, 1);
}

inline void libjpeg_ignore_message(j_common_ptr) {}

inline void libjpeg_source_nothing(j_decompress_ptr) {}

// Called only once every byte has been consumed: a premature end.
inline boolean libjpeg_source_fill(j_decompress_ptr cinfo) {
  LibjpegError& error = libjpeg_error(reinterpret_cast<j_common_ptr>(cinfo));
  if (error.rows_done) {  // an end-of-image marker lets jpeg_finish_decompress finish
    static constexpr JOCTET end_of_image[2] = {0xFF, JPEG_EOI};
    cinfo->src->next_input_byte = end_of_image;
    cinfo->src->bytes_in_buffer = 2;
    return TRUE;
  }
  error.truncated = true;
  std::longjmp(error.jump, 1);
}

inline void libjpeg_source_skip(j_decompress_ptr cinfo, long count) {
  if (count <= 0) return;
  if (static_cast<unsigned long>(count) > cinfo->src->bytes_in_buffer) {
    libjpeg_source_fill(cinfo);
    return;
  }
  cinfo->src->next_input_byte += count;
  cinfo->src->bytes_in_buffer -= static_cast<std::size_t>(count);
}

// Pillow's cmyk2rgb (libImaging/Convert.c) after the "CMYK;I" unpacker's inversion:
// with c' = 255 - c (likewise m, y, k), nk = 255 - k' and
// R = clip(nk - c' * nk / 255), the division rounded as Pillow's MULDIV255.
inline std::uint8_t cmyk_to_rgb(std::uint8_t stored_c, std::uint8_t stored_k) {
  const int c = 255 - stored_c, k = 255 - stored_k;
  const int nk = 255 - k;
  const int t = c * nk + 128;
  const int value = nk - (((t >> 8) + t) >> 8);
  return static_cast<std::uint8_t>(value < 0 ? 0 : value > 255 ? 255 : value);
}

// Decodes decoder.source's bytes into rgb ([height, width, 3], sized from the header by the
// caller). Returns false after a libjpeg error (decoder.error says which).
inline bool run_libjpeg(LibjpegDecoder& decoder, std::uint8_t* rgb, JDIMENSION width,
                        JDIMENSION height, int components) {
  j_decompress_ptr cinfo = &decoder.cinfo;
  if (setjmp(decoder.error.jump)) {
    jpeg_destroy_decompress(&decoder.cinfo);
    return false;
  }
  jpeg_create_decompress(cinfo);
  cinfo->src = &decoder.source;
  jpeg_read_header(cinfo, TRUE);
  if (cinfo->image_width != width || cinfo->image_height != height ||
      cinfo->num_components != components) {
    std::snprintf(decoder.error.message, sizeof decoder.error.message,
                  "libjpeg reads a different frame header (%u x %u, %d components)",
                  static_cast<unsigned>(cinfo->image_width),
                  static_cast<unsigned>(cinfo->image_height), cinfo->num_components);
    jpeg_destroy_decompress(cinfo);
    return false;
  }
  cinfo->out_color_space = components == 1 ? JCS_GRAYSCALE
                           : components == 3 ? JCS_RGB
                                             : JCS_CMYK;
  cinfo->dct_method = JDCT_ISLOW;
  cinfo->do_fancy_upsampling = TRUE;
  jpeg_start_decompress(cinfo);
  if (cinfo->output_width != width || cinfo->output_height != height ||
      cinfo->output_components != components) {
    std::snprintf(decoder.error.message, sizeof decoder.error.message,
                  "libjpeg gives %u x %u pixels of %d components",
                  static_cast<unsigned>(cinfo->output_width),
                  static_cast<unsigned>(cinfo->output_height), cinfo->output_components);
    jpeg_destroy_decompress(cinfo);
    return false;
  }
  // gray and CMYK rows go through a row of libjpeg's own (freed by jpeg_destroy_decompress)
  JSAMPARRAY scratch = components == 3 ? nullptr
                       : (*cinfo->mem->alloc_sarray)(reinterpret_cast<j_common_ptr>(cinfo),
                                                     JPOOL_IMAGE, width * components, 1);
  while (cinfo->output_scanline < height) {
    std::uint8_t* out = rgb + static_cast<std::size_t>(cinfo->output_scanline) * width * 3;
    JSAMPROW row = components == 3 ? out : scratch[0];
    if (jpeg_read_scanlines(cinfo, &row, 1) != 1) {  // only a suspending source returns 0
      std::snprintf(decoder.error.message, sizeof decoder.error.message,
                    "libjpeg returned no row at row %u",
                    static_cast<unsigned>(cinfo->output_scanline));
      jpeg_destroy_decompress(cinfo);
      return false;
    }
    if (components == 1) {
      for (JDIMENSION x = 0; x < width; ++x) out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = row[x];
    } else if (components == 4) {
      for (JDIMENSION x = 0; x < width; ++x)
        for (int ch = 0; ch < 3; ++ch)
          out[3 * x + ch] = cmyk_to_rgb(row[4 * x + ch], row[4 * x + 3]);
    }
  }
  decoder.error.rows_done = true;
  jpeg_finish_decompress(cinfo);
  jpeg_destroy_decompress(cinfo);
  return true;
}

// `jpeg` is the layout scan_jpeg read, already checked (size, limits, components, EOI).
inline Image decode_jpeg_libjpeg(std::span<const std::uint8_t> bytes, const JpegLayout& jpeg,
                                 const std::string& name) {
  Image out(jpeg.width, jpeg.height);
  LibjpegDecoder decoder{};
  decoder.cinfo.err = jpeg_std_error(&decoder.error.pub);
  decoder.error.pub.error_exit = libjpeg_error_exit;
  decoder.error.pub.output_message = libjpeg_ignore_message;
  decoder.source.next_input_byte = bytes.data();
  decoder.source.bytes_in_buffer = bytes.size();
  decoder.source.init_source = libjpeg_source_nothing;
  decoder.source.fill_input_buffer = libjpeg_source_fill;
  decoder.source.skip_input_data = libjpeg_source_skip;
  decoder.source.resync_to_restart = jpeg_resync_to_restart;
  decoder.source.term_source = libjpeg_source_nothing;
  if (!run_libjpeg(decoder, out.rgb.data(), static_cast<JDIMENSION>(jpeg.width),
                   static_cast<JDIMENSION>(jpeg.height), jpeg.components)) {
    check(!decoder.error.truncated, name, ": truncated JPEG data (the data ends before the "
          "last row)");
    fail(name, ": cannot decode the JPEG data: ", decoder.error.message);
  }
  return out;
}
#endif  // TESSERA_HAS_LIBJPEG

}  // namespace detail

namespace detail {

// What decode_image_memory reads before decoding: the format, the size (checked against the
// limits), and the format's own header.
struct ImageHeader {
  ImageFormat format = ImageFormat::png;
  ImageSize size;
  std::optional<PnmHeader> pnm;
  JpegLayout jpeg;
};

inline ImageHeader read_image_header(std::span<const std::uint8_t> bytes, const std::string& name,
                                     const ImageLimits& limits) {
  check(!bytes.empty(), name, ": the file is empty, not an image");
  check(bytes.size() <= static_cast<std::size_t>(INT_MAX), name, ": ", bytes.size(),
        " bytes is more than stb_image can read (2 GiB)");
  ImageHeader header;
  header.format = sniff_image_format(bytes, name);
  const std::string kind = image_format_name(header.format);
  auto& [format, size, pnm, jpeg] = header;
  switch (format) {
    case ImageFormat::png: size = detail::png_header_size(bytes, name); break;
    case ImageFormat::bmp: size = detail::bmp_header_size(bytes, name); break;
    case ImageFormat::pnm:
      pnm = detail::parse_pnm_header(bytes, name);
      size = {pnm->width, pnm->height};
      break;
    case ImageFormat::jpeg:
      jpeg = detail::scan_jpeg(bytes);
      check(jpeg.components != 0, name, ": invalid JPEG header (no frame header before the "
            "scan data)");
      size = {jpeg.width, jpeg.height};
      break;
  }
  check(size.width > 0 && size.height > 0, name, ": the ", kind, " header gives an image of ",
        size.width, " x ", size.height, " pixels");
  check(size.width < (Index{1} << 31) && size.height < (Index{1} << 31), name, ": the ", kind,
        " header gives an image of ", size.width, " x ", size.height, " pixels, more than 2^31 "
        "per side");
  check(size.width * size.height <= limits.max_pixels, name, ": the image is ", size.width,
        " x ", size.height, " = ", size.width * size.height,
        " pixels, more than ImageLimits::max_pixels = ", limits.max_pixels);
  return header;
}

}  // namespace detail

// The size an image's header states (PNG, JPEG, BMP, PPM/PGM), checked against `limits`, without
// decoding anything: what a caller bounding the work of many images (io/video.hpp) reads first.
inline ImageSize read_image_size(std::span<const std::uint8_t> bytes, const std::string& name,
                                 const ImageLimits& limits = {}) {
  return detail::read_image_header(bytes, name, limits).size;
}

// Decodes PNG, JPEG, BMP or binary PPM/PGM bytes to 8-bit RGB (see the top of this file).
// `name` (usually the file name) starts every error message.
inline Image decode_image_memory(std::span<const std::uint8_t> bytes, const std::string& name,
                                 const ImageLimits& limits = {}) {
  using detail::ImageFormat;
  // ---- the header: size and limits, before anything is decoded ---------------------------
  const detail::ImageHeader header = detail::read_image_header(bytes, name, limits);
  const auto& [format, size, pnm, jpeg] = header;
  const std::string kind = detail::image_format_name(format);
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int length = static_cast<int>(bytes.size());

  // ---- what is refused or checked before decoding ----------------------------------------
  if (format == ImageFormat::pnm) {
    check(pnm->maxval == 255, name, ": PPM/PGM with maxval ", pnm->maxval,
          " is not supported (only 255: 8-bit samples)");
    const std::size_t needed = pnm->data_offset + static_cast<std::size_t>(size.width) *
                               static_cast<std::size_t>(size.height) *
                               static_cast<std::size_t>(pnm->channels);
    check(bytes.size() >= needed, name, ": truncated PPM/PGM data (", bytes.size(),
          " bytes, the header needs ", needed, ")");
  }
  if (format == ImageFormat::png)  // IHDR: bit depth at byte 24, colour type (0: gray) at 25
    check(!(bytes[24] == 16 && bytes[25] == 0), name,
          ": 16-bit grayscale PNG is not supported (Pillow opens it as 32-bit integers and "
          "convert(\"RGB\") clips them at 255); convert it to 8 bits first");
  if (format == ImageFormat::jpeg) {
    check(jpeg.has_end, name, ": truncated JPEG data (no end-of-image marker after the scan "
          "data)");
    check(jpeg.components == 1 || jpeg.components == 3 || jpeg.components == 4, name,
          ": JPEG with ", jpeg.components, " components is not supported (1, 3 or 4)");
  }
  if (format == ImageFormat::bmp) {
    const std::size_t needed = detail::bmp_required_size(bytes, size.width, size.height);
    check(bytes.size() >= needed, name, ": truncated BMP data (", bytes.size(),
          " bytes, the header needs ", needed, ")");
  }

  // ---- decode ----------------------------------------------------------------------------
#if TESSERA_HAS_LIBJPEG
  if (format == ImageFormat::jpeg) return detail::decode_jpeg_libjpeg(bytes, jpeg, name);
#endif
  int w = 0, h = 0, n = 0;
  std::unique_ptr<stbi_uc, detail::StbiFree> pixels(
      stbi_load_from_memory(data, length, &w, &h, &n, 3));
  if (!pixels) fail(name, ": cannot decode the ", kind, " data: ", detail::stbi_reason());
  check(w == size.width && h == size.height, name, ": the ", kind, " data is ", w, " x ", h,
        " pixels but its header says ", size.width, " x ", size.height);
  Image out(w, h);
  std::memcpy(out.rgb.data(), pixels.get(), out.rgb.size());
  return out;
}

// The bytes of an image file: refuses a missing file, a directory, or more than stb_image
// reads (ReadLimits::image_file, 2 GiB; from the size, before reading).
inline std::vector<std::uint8_t> read_image_file(const std::filesystem::path& path) {
  const std::string name = path.string();
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  check(std::filesystem::exists(status), name, ": no such image file");
  check(!std::filesystem::is_directory(status), name, ": is a directory, not an image file");
  return read_file<std::vector<std::uint8_t>>(path, {}, ReadLimits::image_file);
}

// Reads and decodes an image file (see decode_image_memory).
inline Image decode_image(const std::filesystem::path& path, const ImageLimits& limits = {}) {
  return decode_image_memory(read_image_file(path), path.string(), limits);
}

// Writes `image` as an 8-bit RGB PNG (stb_image_write), through a temporary file renamed into
// place, so `file` is either the old file or the whole new one.
inline void write_png(const std::filesystem::path& file, const Image& image) {
  check(image.width >= 1 && image.height >= 1 &&
            image.rgb.size() == static_cast<std::size_t>(image.width * image.height * 3) &&
            image.width <= INT_MAX / 3 && image.height <= INT_MAX,
        file.string(), ": cannot write a ", image.width, " x ", image.height, " image of ",
        image.rgb.size(), " bytes as PNG");
  std::vector<std::uint8_t> bytes;
  const auto append = [](void* context, void* data, int size) {
    auto* out = static_cast<std::vector<std::uint8_t>*>(context);
    const auto* begin = static_cast<const std::uint8_t*>(data);
    out->insert(out->end(), begin, begin + size);
  };
  const int ok = stbi_write_png_to_func(append, &bytes, static_cast<int>(image.width),
                                        static_cast<int>(image.height), 3, image.rgb.data(),
                                        static_cast<int>(image.width * 3));
  check(ok != 0 && !bytes.empty(), file.string(), ": stb_image_write could not encode the PNG");
  detail::write_file_atomically(file, bytes.data(), bytes.size());
}

}  // namespace tessera
