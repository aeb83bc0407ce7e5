#pragma once
// The safetensors format (SPEC 4): reading with validation, and atomic writing.
//
// A file is: an 8-byte little-endian u64 N, then N bytes of JSON header, then the data section.
// The header maps every tensor name to {"dtype", "shape", "data_offsets": [begin, end]}, the
// offsets relative to the data section; an optional "__metadata__" entry maps strings to
// strings. tessera accepts a file only when the tensors tile the data section exactly: in
// bounds, not overlapping, no gaps, no trailing bytes. Every violation throws tessera::Error
// naming the file and the problem (the list is in docs/model-files.md).
//
// SafetensorsFile memory-maps the file (POSIX mmap, read-only; the whole file is read into
// memory when mapping fails or is unavailable) and converts tensors on request; element data
// is little-endian and read with memcpy, so unaligned offsets are fine. save_safetensors
// writes names in sorted order, offsets contiguous, the header padded with spaces to a
// multiple of 8 bytes, through a temporary file renamed into place.
//
// A file may carry a checksum, the metadata entry "tessera.crc32" (a CRC-32 of the data
// section, the tensor table and the other metadata; the exact definition is at checksum_key):
// save_safetensors writes it on request (model files and checkpoints always do), and
// SafetensorsFile verifies it whenever it is present, refusing a file whose contents no longer
// match. Files written elsewhere usually have none and are read as before.
//
// Pages of a mapped file that have been read (by the checksum, by read) are given back at once
// (madvise MADV_DONTNEED: the kernel's page cache keeps them, the process does not), so loading
// a model costs its own memory, not the file's as well; a tensor read again is paged in again.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/io/atomic_file.hpp>
#include <tessera/io/json.hpp>
#include <tessera/io/read_file.hpp>

#include <nlohmann/json.hpp>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#define TESSERA_SAFETENSORS_POSIX 1
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#else
#define TESSERA_SAFETENSORS_POSIX 0
#endif

namespace tessera {

// ---------------------------------------------------------------------------------------------
// Element types

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

inline constexpr std::array<DType, 10> all_dtypes = {
    DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64,
    DType::I32, DType::I16, DType::I8,  DType::U8,   DType::BOOL};

// The name safetensors uses in its header ("F32", "BF16", ...).
inline const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "unknown";
}

// Bytes per element.
inline std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F64:
    case DType::I64: return 8;
    case DType::F32:
    case DType::I32: return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16: return 2;
    case DType::I8:
    case DType::U8:
    case DType::BOOL: return 1;
  }
  return 0;
}

// The dtype of a header name ("F32" -> F32); nullopt for a name tessera does not know.
inline std::optional<DType> parse_dtype(std::string_view name) {
  for (DType dtype : all_dtypes) {
    if (name == dtype_name(dtype)) return dtype;
  }
  return std::nullopt;
}

inline bool is_floating(DType dtype) {
  return dtype == DType::F64 || dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16;
}

// I64, I32, I16, I8, U8 and BOOL (read as 0 / 1).
inline bool is_integer(DType dtype) { return !is_floating(dtype); }

// ---------------------------------------------------------------------------------------------
// Half and bfloat16 conversions (bit patterns held in std::uint16_t)

// IEEE binary16 -> float, exact: subnormals, infinities and NaN payloads are kept.
inline float half_to_float(std::uint16_t half) {
  const std::uint32_t sign = static_cast<std::uint32_t>(half & 0x8000u) << 16;
  const std::uint32_t exponent = (half >> 10) & 0x1Fu;
  const std::uint32_t mantissa = half & 0x3FFu;
  if (exponent == 0) {
    // zero or subnormal: mantissa * 2^-24, exact in float
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign != 0 ? -magnitude : magnitude;
  }
  if (exponent == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (mantissa << 13));
  return std::bit_cast<float>(sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13));
}

// bfloat16 -> float, exact (bfloat16 is the top half of a float).
inline float bfloat16_to_float(std::uint16_t bf16) {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bf16) << 16);
}

namespace detail {

// Rounds a double to a binary floating format with `mantissa_bits` stored fraction bits and
// `exponent_bits` exponent bits (IEEE layout, no implicit bit stored): round to nearest, ties
// to even, overflow to infinity, gradual underflow; NaN stays NaN (quiet, top payload bits
// kept). Rounding straight from double avoids the double rounding of double -> float -> half.
inline std::uint16_t round_to_narrow_float(double value, int mantissa_bits, int exponent_bits) {
  const auto bits = std::bit_cast<std::uint64_t>(value);
  const std::uint64_t sign = (bits >> 63) << (mantissa_bits + exponent_bits);
  const int biased_exponent = static_cast<int>((bits >> 52) & 0x7FF);
  const std::uint64_t fraction = bits & ((std::uint64_t{1} << 52) - 1);
  const std::uint64_t infinity = ((std::uint64_t{1} << exponent_bits) - 1) << mantissa_bits;

  if (biased_exponent == 0x7FF) {
    if (fraction == 0) return static_cast<std::uint16_t>(sign | infinity);
    const std::uint64_t quiet = std::uint64_t{1} << (mantissa_bits - 1);
    return static_cast<std::uint16_t>(sign | infinity | quiet | (fraction >> (52 - mantissa_bits)));
  }
  // value = significand * 2^(exponent - 52)
  const std::uint64_t significand =
      biased_exponent == 0 ? fraction : (fraction | (std::uint64_t{1} << 52));
  const int exponent = biased_exponent == 0 ? -1022 : biased_exponent - 1023;
  if (significand == 0) return static_cast<std::uint16_t>(sign);

  const int bias = (1 << (exponent_bits - 1)) - 1;
  const int min_normal_exponent = 1 - bias;
  if (exponent > bias) return static_cast<std::uint16_t>(sign | infinity);

  // Keep mantissa_bits + 1 significant bits for a normal result, fewer below the normal range.
  const int drop = 52 - mantissa_bits + std::max(0, min_normal_exponent - exponent);
  if (drop > 53) return static_cast<std::uint16_t>(sign);  // below half the smallest subnormal
  std::uint64_t kept = significand >> drop;
  const std::uint64_t rest = significand & ((std::uint64_t{1} << drop) - 1);
  const std::uint64_t halfway = std::uint64_t{1} << (drop - 1);
  if (rest > halfway || (rest == halfway && (kept & 1) != 0)) ++kept;

  // A carry out of the fraction lands in the exponent field, which is the right encoding
  // (subnormal -> smallest normal, 1.11..1 x 2^e -> 1.0 x 2^(e+1), largest finite -> inf).
  std::uint64_t magnitude = kept;
  if (exponent >= min_normal_exponent) {
    magnitude =
        (static_cast<std::uint64_t>(exponent - min_normal_exponent) << mantissa_bits) + kept;
  }
  if (magnitude >= infinity) magnitude = infinity;
  return static_cast<std::uint16_t>(sign | magnitude);
}

}  // namespace detail

// double (or float, converted exactly) -> IEEE binary16, round to nearest even.
inline std::uint16_t float_to_half(double value) {
  return detail::round_to_narrow_float(value, 10, 5);
}

// double (or float, converted exactly) -> bfloat16, round to nearest even.
inline std::uint16_t float_to_bfloat16(double value) {
  return detail::round_to_narrow_float(value, 7, 8);
}

// ---------------------------------------------------------------------------------------------
// Little-endian element access and the Scalar <-> dtype conversions

namespace detail {

template <class T>
T load_le(const std::byte* source) {
  std::array<std::byte, sizeof(T)> raw;
  std::memcpy(raw.data(), source, sizeof(T));
  if constexpr (std::endian::native == std::endian::big) std::reverse(raw.begin(), raw.end());
  return std::bit_cast<T>(raw);
}

template <class T>
void store_le(T value, std::byte* target) {
  auto raw = std::bit_cast<std::array<std::byte, sizeof(T)>>(value);
  if constexpr (std::endian::native == std::endian::big) std::reverse(raw.begin(), raw.end());
  std::memcpy(target, raw.data(), sizeof(T));
}

template <class Scalar>
inline constexpr bool is_tensor_scalar = std::is_floating_point_v<Scalar> ||
                                         (std::is_integral_v<Scalar> &&
                                          !std::is_same_v<Scalar, bool>);

// "float", "double", "int32", "uint8", ...: the C++ side of a conversion, for messages.
template <class Scalar>
std::string scalar_name() {
  if constexpr (std::is_same_v<Scalar, float>) {
    return "float";
  } else if constexpr (std::is_same_v<Scalar, double>) {
    return "double";
  } else if constexpr (std::is_floating_point_v<Scalar>) {
    return "long double";
  } else {
    return concat(std::is_signed_v<Scalar> ? "int" : "uint", 8 * sizeof(Scalar));
  }
}

inline std::string shape_string(std::span<const std::int64_t> shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

// The element count of a shape, or nullopt when a dimension is negative or the count (times
// `element_size`) does not fit in 63 bits.
inline std::optional<std::int64_t> checked_num_elements(std::span<const std::int64_t> shape,
                                                        std::size_t element_size = 1) {
  constexpr auto max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  std::uint64_t count = 1;
  for (std::int64_t dim : shape) {
    if (dim < 0) return std::nullopt;
    const auto d = static_cast<std::uint64_t>(dim);
    if (d != 0 && count > max / d) return std::nullopt;
    count *= d;
  }
  if (element_size != 0 && count > max / element_size) return std::nullopt;
  return static_cast<std::int64_t>(count);
}

// Decodes `count` elements of a floating dtype into floating Scalars.
template <class Scalar>
void decode_floating(DType dtype, const std::byte* source, std::size_t count, Scalar* out) {
  switch (dtype) {
    case DType::F64:
      for (std::size_t i = 0; i < count; ++i) {
        out[i] = static_cast<Scalar>(load_le<double>(source + 8 * i));
      }
      return;
    case DType::F32:
      if constexpr (std::is_same_v<Scalar, float> && std::endian::native == std::endian::little) {
        if (count > 0) std::memcpy(out, source, count * sizeof(float));
      } else {
        for (std::size_t i = 0; i < count; ++i) {
          out[i] = static_cast<Scalar>(load_le<float>(source + 4 * i));
        }
      }
      return;
    case DType::F16:
      for (std::size_t i = 0; i < count; ++i) {
        out[i] = static_cast<Scalar>(half_to_float(load_le<std::uint16_t>(source + 2 * i)));
      }
      return;
    case DType::BF16:
      for (std::size_t i = 0; i < count; ++i) {
        out[i] = static_cast<Scalar>(bfloat16_to_float(load_le<std::uint16_t>(source + 2 * i)));
      }
      return;
    default: TESSERA_ASSERT(false && "decode_floating on an integer dtype");
  }
}

// Element i of an integer dtype, widened to int64 (BOOL: 0 for a zero byte, else 1).
inline std::int64_t load_integer(DType dtype, const std::byte* source, std::size_t i) {
  switch (dtype) {
    case DType::I64: return load_le<std::int64_t>(source + 8 * i);
    case DType::I32: return load_le<std::int32_t>(source + 4 * i);
    case DType::I16: return load_le<std::int16_t>(source + 2 * i);
    case DType::I8: return load_le<std::int8_t>(source + i);
    case DType::U8: return load_le<std::uint8_t>(source + i);
    case DType::BOOL: return load_le<std::uint8_t>(source + i) != 0 ? 1 : 0;
    default: TESSERA_ASSERT(false && "load_integer on a floating dtype");
  }
  return 0;
}

// Encodes values into `out` (count * dtype_size bytes). Floating Scalars go to floating
// dtypes, integer Scalars to integer dtypes (range-checked); `what` names the tensor.
template <class Scalar>
void encode_elements(std::span<const Scalar> values, DType dtype, std::byte* out,
                     const std::string& what) {
  static_assert(is_tensor_scalar<Scalar>, "tensor elements are floating point or integers");
  if constexpr (std::is_floating_point_v<Scalar>) {
    check(is_floating(dtype), what, ": cannot store ", scalar_name<Scalar>(), " values as ",
          dtype_name(dtype), " (expected F64, F32, F16 or BF16)");
    for (std::size_t i = 0; i < values.size(); ++i) {
      const auto value = static_cast<double>(values[i]);
      switch (dtype) {
        case DType::F64: store_le<double>(value, out + 8 * i); break;
        case DType::F32: store_le<float>(static_cast<float>(value), out + 4 * i); break;
        case DType::F16: store_le<std::uint16_t>(float_to_half(value), out + 2 * i); break;
        case DType::BF16: store_le<std::uint16_t>(float_to_bfloat16(value), out + 2 * i); break;
        default: break;
      }
    }
  } else {
    check(is_integer(dtype), what, ": cannot store ", scalar_name<Scalar>(), " values as ",
          dtype_name(dtype), " (expected I64, I32, I16, I8, U8 or BOOL)");
    for (std::size_t i = 0; i < values.size(); ++i) {
      const Scalar value = values[i];
      const auto out_of_range = [&](const char* type) {
        fail(what, ": element ", i, " (value ", +value, ") does not fit in ", type);
      };
      switch (dtype) {
        case DType::I64:
          if (!std::in_range<std::int64_t>(value)) out_of_range("I64");
          store_le<std::int64_t>(static_cast<std::int64_t>(value), out + 8 * i);
          break;
        case DType::I32:
          if (!std::in_range<std::int32_t>(value)) out_of_range("I32");
          store_le<std::int32_t>(static_cast<std::int32_t>(value), out + 4 * i);
          break;
        case DType::I16:
          if (!std::in_range<std::int16_t>(value)) out_of_range("I16");
          store_le<std::int16_t>(static_cast<std::int16_t>(value), out + 2 * i);
          break;
        case DType::I8:
          if (!std::in_range<std::int8_t>(value)) out_of_range("I8");
          store_le<std::int8_t>(static_cast<std::int8_t>(value), out + i);
          break;
        case DType::U8:
          if (!std::in_range<std::uint8_t>(value)) out_of_range("U8");
          store_le<std::uint8_t>(static_cast<std::uint8_t>(value), out + i);
          break;
        case DType::BOOL:
          if (value != 0 && value != 1) out_of_range("BOOL (0 or 1)");
          store_le<std::uint8_t>(static_cast<std::uint8_t>(value), out + i);
          break;
        default: break;
      }
    }
  }
}

// The dtype a Scalar is stored as by default: F32 for floating values (SPEC 4: weights are
// float32), the integer dtype of the same width and signedness for integers.
template <class Scalar>
constexpr DType default_dtype() {
  static_assert(is_tensor_scalar<Scalar>, "tensor elements are floating point or integers");
  if constexpr (std::is_floating_point_v<Scalar>) {
    return DType::F32;
  } else if constexpr (sizeof(Scalar) == 1) {
    return std::is_signed_v<Scalar> ? DType::I8 : DType::U8;
  } else if constexpr (sizeof(Scalar) == 2) {
    return DType::I16;
  } else if constexpr (sizeof(Scalar) == 4) {
    return DType::I32;
  } else {
    return DType::I64;
  }
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Tensors to write

// One tensor as stored: raw little-endian element bytes.
// Invariant checked by save_safetensors: bytes.size() == product(shape) * dtype_size(dtype).
struct TensorData {
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::vector<std::byte> bytes;

  bool operator==(const TensorData&) const = default;

  // `values` in row-major order with the given shape, stored as `out`. Floating values go
  // to F64/F32/F16/BF16 (round to nearest even), integers to I64/I32/I16/I8/U8/BOOL (an
  // out-of-range value is an Error).
  template <class Scalar>
  static TensorData from_span(std::span<const Scalar> values, std::vector<std::int64_t> shape,
                              DType out = detail::default_dtype<Scalar>()) {
    const auto count = detail::checked_num_elements(shape, dtype_size(out));
    check(count.has_value(), "TensorData: invalid shape ", detail::shape_string(shape));
    check(static_cast<std::uint64_t>(*count) == values.size(), "TensorData: shape ",
          detail::shape_string(shape), " needs ", *count, " values, got ", values.size());
    TensorData tensor{out, std::move(shape),
                      std::vector<std::byte>(values.size() * dtype_size(out))};
    detail::encode_elements<Scalar>(values, out, tensor.bytes.data(), "TensorData");
    return tensor;
  }

  template <class Scalar>
  static TensorData from_vector(const std::vector<Scalar>& values, std::vector<std::int64_t> shape,
                                DType out = detail::default_dtype<Scalar>()) {
    return from_span(std::span<const Scalar>(values), std::move(shape), out);
  }

  // A rank-1 tensor [values.size()].
  template <class Scalar>
  static TensorData from_vector(const std::vector<Scalar>& values,
                                DType out = detail::default_dtype<Scalar>()) {
    return from_vector(values, {static_cast<std::int64_t>(values.size())}, out);
  }

  // A rank-0 tensor (shape []), e.g. logit_scale.
  template <class Scalar>
  static TensorData from_scalar(Scalar value, DType out = detail::default_dtype<Scalar>()) {
    return from_span(std::span<const Scalar>(&value, 1), {}, out);
  }

  // A rank-2 tensor [rows, cols] from any Eigen matrix expression (read in row-major order).
  template <class Derived>
  static TensorData from_matrix(const Eigen::MatrixBase<Derived>& matrix,
                                DType out = detail::default_dtype<typename Derived::Scalar>()) {
    using Scalar = typename Derived::Scalar;
    const Matrix<Scalar> row_major = matrix;
    return from_span(
        std::span<const Scalar>(row_major.data(), static_cast<std::size_t>(row_major.size())),
        {static_cast<std::int64_t>(row_major.rows()), static_cast<std::int64_t>(row_major.cols())},
        out);
  }
};

// ---------------------------------------------------------------------------------------------
// Reading

struct SafetensorsLimits {
  std::uint64_t max_header_bytes = 100'000'000;  // SPEC 4: a JSON header of at most 100 MB
};

// One tensor of an open file. `bytes` points into the file's mapping: valid while the
// SafetensorsFile lives (moving the file keeps it valid).
struct TensorInfo {
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  std::int64_t num_elements = 0;  // product(shape); 1 for a rank-0 tensor
  std::uint64_t begin = 0;        // data_offsets, relative to the data section
  std::uint64_t end = 0;
  std::span<const std::byte> bytes;  // little-endian, not necessarily aligned

  std::size_t rank() const { return shape.size(); }
};

// ---------------------------------------------------------------------------------------------
// The checksum (docs/model-files.md, "Checksum")
//
// tessera writes into the metadata of every model file and checkpoint the entry
//   "tessera.crc32": 8 lowercase hex digits
// the CRC-32 (zlib's crc32, the one of Python's zlib.crc32 and of gzip) of, in this order:
//   1. the data section: the file's bytes from 8 + N to its end;
//   2. the tensor table: for each tensor in order of name (by UTF-8 bytes), the four fields
//      name, dtype ("F32"), shape (decimal dimensions joined by ","; empty for rank 0) and
//      "begin,end" (the data_offsets in decimal), each followed by one NUL byte;
//   3. the metadata: for each entry but "tessera.crc32" itself, in order of key (by UTF-8
//      bytes), the key and the value, each followed by one NUL byte.
// Parts 2 and 3 are the header's content, not its JSON text, so a tool that writes the same
// tensors and metadata with other spacing or key order keeps the checksum valid.
// SafetensorsFile::open verifies the entry whenever a file carries it (any file, not only
// tessera's); a file without it is accepted unverified, except by load_checkpoint.

// The metadata key of the checksum.
inline constexpr const char* checksum_key = "tessera.crc32";

// Whether save_safetensors writes the checksum entry.
enum class Checksum { none, crc32 };

namespace detail {

// A running CRC-32 over byte ranges, through zlib.
class Crc32 {
 public:
  void update(const void* data, std::size_t size) {
    const auto* bytes = static_cast<const Bytef*>(data);
    // zlib's crc32 takes a 32-bit length: feed at most 1 GiB at a time
    constexpr std::size_t chunk = std::size_t{1} << 30;
    while (size > 0) {
      const std::size_t n = std::min(size, chunk);
      value_ = ::crc32(value_, bytes, static_cast<uInt>(n));
      bytes += n;
      size -= n;
    }
  }
  // `text` followed by one NUL byte: a field of the tensor table or the metadata.
  void update_field(std::string_view text) {
    update(text.data(), text.size());
    update("", 1);
  }
  std::uint32_t value() const { return static_cast<std::uint32_t>(value_); }

 private:
  uLong value_ = ::crc32(0L, Z_NULL, 0);
};

// Part 2 of the checksum for one tensor.
inline void checksum_tensor_entry(Crc32& crc, std::string_view name, DType dtype,
                                  std::span<const std::int64_t> shape, std::uint64_t begin,
                                  std::uint64_t end) {
  std::string dims;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) dims += ',';
    dims += std::to_string(shape[i]);
  }
  crc.update_field(name);
  crc.update_field(dtype_name(dtype));
  crc.update_field(dims);
  crc.update_field(std::to_string(begin) + ',' + std::to_string(end));
}

// Part 3 of the checksum: every entry but the checksum's own, in key order (std::map's order
// is the order of the keys' bytes).
inline void checksum_metadata(Crc32& crc, const std::map<std::string, std::string>& metadata) {
  for (const auto& [key, value] : metadata) {
    if (key == checksum_key) continue;
    crc.update_field(key);
    crc.update_field(value);
  }
}

inline std::string checksum_hex(std::uint32_t value) {
  constexpr const char* digits = "0123456789abcdef";
  std::string out(8, '0');
  for (int i = 7; i >= 0; --i, value >>= 4) out[static_cast<std::size_t>(i)] = digits[value & 0xF];
  return out;
}

// Exactly 8 lowercase hex digits as a value; nullopt otherwise. Only the form checksum_hex
// writes is accepted, so that no one-bit change of the entry ('a' -> 'A') goes unnoticed.
inline std::optional<std::uint32_t> parse_checksum_hex(std::string_view text) {
  if (text.size() != 8) return std::nullopt;
  std::uint32_t value = 0;
  for (char c : text) {
    int digit = -1;
    if (c >= '0' && c <= '9') digit = c - '0';
    if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    if (digit < 0) return std::nullopt;
    value = value << 4 | static_cast<std::uint32_t>(digit);
  }
  return value;
}

}  // namespace detail

class SafetensorsFile {
 public:
  // Opens and validates `file`; throws tessera::Error naming the file and the problem.
  static SafetensorsFile open(const std::filesystem::path& file,
                              const SafetensorsLimits& limits = {}) {
    SafetensorsFile result;
    result.path_ = file;
    result.load_bytes();
    result.parse_header(limits);
    return result;
  }

  // Validates a safetensors image held in memory; `name` stands for the file in messages.
  static SafetensorsFile from_bytes(std::vector<std::byte> bytes,
                                    const std::string& name = "<memory>",
                                    const SafetensorsLimits& limits = {}) {
    SafetensorsFile result;
    result.path_ = name;
    result.buffer_ = std::move(bytes);
    result.data_ = result.buffer_.data();
    result.size_ = result.buffer_.size();
    result.check_minimum_size();
    result.parse_header(limits);
    return result;
  }

  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;
  SafetensorsFile(SafetensorsFile&& other) noexcept { swap(other); }
  SafetensorsFile& operator=(SafetensorsFile&& other) noexcept {
    if (this != &other) {
      SafetensorsFile moved(std::move(other));
      swap(moved);
    }
    return *this;
  }
  ~SafetensorsFile() { unmap(); }

  const std::filesystem::path& path() const { return path_; }
  // The number of tensors.
  std::size_t size() const { return tensors_.size(); }
  // Tensor names in sorted order.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (const auto& [name, info] : tensors_) out.push_back(name);
    return out;
  }
  bool contains(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }
  // Throws tessera::Error when the file has no tensor `name`.
  const TensorInfo& info(std::string_view name) const {
    const auto found = tensors_.find(name);
    check(found != tensors_.end(), "tensor '", name, "' not found in ", path_.string());
    return found->second;
  }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Whether the file carries the checksum entry "tessera.crc32" (which open verified: a file
  // whose contents do not match it is not opened).
  bool has_checksum() const { return checksum_.has_value(); }

  // The elements in row-major order. Floating Scalars accept F64/F32/F16/BF16; integer
  // Scalars accept I64/I32/I16/I8/U8/BOOL (a value out of the Scalar's range is an Error).
  template <class Scalar>
  std::vector<Scalar> read(std::string_view name) const {
    const TensorInfo& tensor = info(name);
    std::vector<Scalar> out(static_cast<std::size_t>(tensor.num_elements));
    read_into(name, tensor, out.data());
    return out;
  }

  // A rank-2 tensor [rows, cols]; any other rank is an Error naming the tensor and shape.
  template <class Scalar>
  Matrix<Scalar> read_matrix(std::string_view name) const {
    const TensorInfo& tensor = info(name);
    check(tensor.rank() == 2, "tensor '", name, "' in ", path_.string(), " has shape ",
          detail::shape_string(tensor.shape), ", expected a matrix (rank 2)");
    Matrix<Scalar> out(static_cast<Index>(tensor.shape[0]), static_cast<Index>(tensor.shape[1]));
    read_into(name, tensor, out.data());
    return out;
  }

  // A rank-2 tensor that must have shape [rows, cols].
  template <class Scalar>
  Matrix<Scalar> read_matrix(std::string_view name, Index rows, Index cols) const {
    expect_shape(name, {static_cast<std::int64_t>(rows), static_cast<std::int64_t>(cols)});
    return read_matrix<Scalar>(name);
  }

  // A rank-1 tensor [n]; any other rank is an Error.
  template <class Scalar>
  Vector<Scalar> read_vector(std::string_view name) const {
    const TensorInfo& tensor = info(name);
    check(tensor.rank() == 1, "tensor '", name, "' in ", path_.string(), " has shape ",
          detail::shape_string(tensor.shape), ", expected a vector (rank 1)");
    Vector<Scalar> out(static_cast<Index>(tensor.shape[0]));
    read_into(name, tensor, out.data());
    return out;
  }

  // A rank-1 tensor that must have shape [size].
  template <class Scalar>
  Vector<Scalar> read_vector(std::string_view name, Index size) const {
    expect_shape(name, {static_cast<std::int64_t>(size)});
    return read_vector<Scalar>(name);
  }

  // A rank-0 tensor (shape []); any other shape is an Error.
  template <class Scalar>
  Scalar read_scalar(std::string_view name) const {
    expect_shape(name, {});
    Scalar out{};
    read_into(name, info(name), &out);
    return out;
  }

  // Throws tessera::Error unless tensor `name` has exactly `shape`:
  // "tensor 'x' in FILE has shape [a, b], expected [rows, cols]".
  void expect_shape(std::string_view name, std::span<const std::int64_t> shape) const {
    const TensorInfo& tensor = info(name);
    check(std::equal(tensor.shape.begin(), tensor.shape.end(), shape.begin(), shape.end()),
          "tensor '", name, "' in ", path_.string(), " has shape ",
          detail::shape_string(tensor.shape), ", expected ", detail::shape_string(shape));
  }
  void expect_shape(std::string_view name, std::initializer_list<std::int64_t> shape) const {
    expect_shape(name, std::span<const std::int64_t>(shape.begin(), shape.size()));
  }

  // A copy of the stored tensor, bytes unchanged (for re-saving or raw access).
  TensorData tensor_data(std::string_view name) const {
    const TensorInfo& tensor = info(name);
    return {tensor.dtype, tensor.shape,
            std::vector<std::byte>(tensor.bytes.begin(), tensor.bytes.end())};
  }

  // Whether the file is memory-mapped (false: it was read into memory).
  bool is_mapped() const { return mapped_; }

  // Gives back the pages that tensor `name`'s bytes were read through (read does this itself;
  // a caller reading TensorInfo::bytes directly calls it when done). The bytes stay valid: a
  // later access pages them in again from the file. Nothing happens for a file held in memory.
  void release(std::string_view name) const {
    const TensorInfo& tensor = info(name);
    release_pages(tensor.bytes.data(), tensor.bytes.size());
  }

 private:
  SafetensorsFile() = default;

  void swap(SafetensorsFile& other) noexcept {
    std::swap(path_, other.path_);
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(mapped_, other.mapped_);
    std::swap(buffer_, other.buffer_);
    std::swap(tensors_, other.tensors_);
    std::swap(metadata_, other.metadata_);
    std::swap(checksum_, other.checksum_);
  }

  // madvise(MADV_DONTNEED) over the pages holding [begin, begin + size) of a mapped file: the
  // mapping is private and read-only, so a page dropped is read from the file when next used.
  void release_pages(const std::byte* begin, std::size_t size) const noexcept {
#if TESSERA_SAFETENSORS_POSIX
    if (!mapped_ || size == 0) return;
    const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
    const auto first = reinterpret_cast<std::uintptr_t>(begin) / page * page;
    const auto end = reinterpret_cast<std::uintptr_t>(begin) + size;
    ::madvise(reinterpret_cast<void*>(first), end - first, MADV_DONTNEED);  // advice: no error
#else
    (void)begin;
    (void)size;
#endif
  }

  void unmap() noexcept {
#if TESSERA_SAFETENSORS_POSIX
    if (mapped_ && data_ != nullptr) {
      ::munmap(const_cast<std::byte*>(data_), size_);
    }
#endif
    mapped_ = false;
    data_ = nullptr;
  }

  template <class... Args>
  [[noreturn]] void fail_file(Args&&... args) const {
    fail(path_.string(), ": ", std::forward<Args>(args)...);
  }

  void check_minimum_size() const {
    if (size_ < 8) fail_file("file is ", size_, " bytes, shorter than the 8-byte header length");
  }

  // Maps the file, or reads it into buffer_ when mapping is impossible.
  void load_bytes() {
#if TESSERA_SAFETENSORS_POSIX
    int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail_file("cannot open: ", std::strerror(errno));
    struct ::stat status {};
    if (::fstat(fd, &status) != 0) {
      const int error = errno;
      ::close(fd);
      fail_file("cannot stat: ", std::strerror(error));
    }
    if (!S_ISREG(status.st_mode)) {
      ::close(fd);
      fail_file("not a regular file");
    }
    size_ = static_cast<std::size_t>(status.st_size);
    if (size_ < 8) {
      ::close(fd);
      check_minimum_size();
    }
    void* mapping = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapping != MAP_FAILED) {
      ::close(fd);
      data_ = static_cast<const std::byte*>(mapping);
      mapped_ = true;
      return;
    }
    // Fall back to reading the whole file.
    ::close(fd);
#endif
    buffer_ = read_file<std::vector<std::byte>>(path_, {}, ReadLimits::whole_file);
    size_ = buffer_.size();
    check_minimum_size();
    data_ = buffer_.data();
  }

  void parse_header(const SafetensorsLimits& limits) {
    const std::uint64_t header_size = detail::load_le<std::uint64_t>(data_);
    if (header_size > size_ - 8) {
      fail_file("header length ", header_size, " exceeds the file size (", size_, " bytes)");
    }
    if (header_size > limits.max_header_bytes) {
      fail_file("header length ", header_size, " exceeds the limit of ", limits.max_header_bytes,
                " bytes");
    }
    const std::string_view text(reinterpret_cast<const char*>(data_ + 8),
                                static_cast<std::size_t>(header_size));
    nlohmann::json header;
    std::string problem;
    try {
      header = detail::parse_json_checked(text, &problem);
    } catch (const nlohmann::json::exception& e) {
      fail_file("header is not valid JSON: ", e.what());
    }
    if (!problem.empty()) fail_file("header: ", problem);
    if (!header.is_object()) {
      fail_file("header is not a JSON object (got ", header.type_name(), ")");
    }

    const std::byte* data_section = data_ + 8 + header_size;
    const std::uint64_t data_size = size_ - 8 - header_size;
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") {
        parse_metadata(entry);
      } else {
        tensors_.emplace(name, parse_entry(name, entry, data_section, data_size));
      }
    }
    check_coverage(data_size);
    verify_checksum(data_section, data_size);
  }

  // The checksum entry, when present, must match the contents (see checksum_key).
  void verify_checksum(const std::byte* data_section, std::uint64_t data_size) {
    const auto entry = metadata_.find(checksum_key);
    if (entry == metadata_.end()) return;
    const auto expected = detail::parse_checksum_hex(entry->second);
    if (!expected) {
      fail_file("metadata '", checksum_key, "' is '", entry->second,
                "', expected 8 lowercase hex digits (a CRC-32, docs/model-files.md)");
    }
    detail::Crc32 crc;
    constexpr std::size_t chunk = std::size_t{64} << 20;  // each given back once summed
    for (std::size_t at = 0; at < data_size; at += chunk) {
      const std::size_t n = std::min<std::size_t>(chunk, static_cast<std::size_t>(data_size) - at);
      crc.update(data_section + at, n);
      release_pages(data_section + at, n);
    }
    for (const auto& [name, tensor] : tensors_) {
      detail::checksum_tensor_entry(crc, name, tensor.dtype, tensor.shape, tensor.begin,
                                    tensor.end);
    }
    detail::checksum_metadata(crc, metadata_);
    if (crc.value() != *expected) {
      fail_file("checksum mismatch: metadata '", checksum_key, "' is ",
                detail::checksum_hex(*expected), " but the contents give ",
                detail::checksum_hex(crc.value()),
                ": the file changed after it was written (damaged on disk or in transfer)");
    }
    checksum_ = *expected;
  }

  void parse_metadata(const nlohmann::json& entry) {
    if (!entry.is_object()) {
      fail_file("__metadata__ must be an object mapping strings to strings, got ",
                entry.type_name());
    }
    for (const auto& [key, value] : entry.items()) {
      if (!value.is_string()) {
        fail_file("__metadata__ must map strings to strings; key '", key, "' has a ",
                  value.type_name(), " (", detail::json_excerpt(value), ")");
      }
      metadata_.emplace(key, value.get<std::string>());
    }
  }

  // A JSON integer >= 0 as uint64, or nullopt.
  static std::optional<std::uint64_t> non_negative_integer(const nlohmann::json& value) {
    if (value.is_number_unsigned()) return value.get<std::uint64_t>();
    if (value.is_number_integer() && value.get<std::int64_t>() >= 0) {
      return static_cast<std::uint64_t>(value.get<std::int64_t>());
    }
    return std::nullopt;
  }

  TensorInfo parse_entry(const std::string& name, const nlohmann::json& entry,
                         const std::byte* data_section, std::uint64_t data_size) const {
    const auto fail_tensor = [&](auto&&... args) {
      fail_file("tensor '", name, "': ", std::forward<decltype(args)>(args)...);
    };
    if (!entry.is_object()) {
      fail_tensor("entry is not a JSON object (got ", detail::json_excerpt(entry), ")");
    }
    for (const auto& [key, value] : entry.items()) {
      if (key != "dtype" && key != "shape" && key != "data_offsets") {
        fail_tensor("unknown field \"", key, "\" (expected dtype, shape, data_offsets)");
      }
    }
    for (const char* key : {"dtype", "shape", "data_offsets"}) {
      if (!entry.contains(key)) fail_tensor("missing \"", key, "\"");
    }

    TensorInfo tensor;
    const nlohmann::json& dtype = entry.at("dtype");
    if (!dtype.is_string()) {
      fail_tensor("\"dtype\" must be a string, got ", detail::json_excerpt(dtype));
    }
    const auto parsed_dtype = parse_dtype(dtype.get<std::string>());
    if (!parsed_dtype) {
      fail_tensor("unknown dtype '", dtype.get<std::string>(),
                  "' (expected F64, F32, F16, BF16, I64, I32, I16, I8, U8 or BOOL)");
    }
    tensor.dtype = *parsed_dtype;

    const nlohmann::json& shape = entry.at("shape");
    const auto bad_shape = [&] {
      fail_tensor("\"shape\" must be an array of non-negative integers, got ",
                  detail::json_excerpt(shape));
    };
    if (!shape.is_array()) bad_shape();
    for (const nlohmann::json& dim : shape) {
      const auto value = non_negative_integer(dim);
      if (!value || *value > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        bad_shape();
      }
      tensor.shape.push_back(static_cast<std::int64_t>(*value));
    }
    const auto count = detail::checked_num_elements(tensor.shape, dtype_size(tensor.dtype));
    if (!count) {
      fail_tensor("shape ", detail::shape_string(tensor.shape), " of dtype ",
                  dtype_name(tensor.dtype), " overflows: too many bytes");
    }
    tensor.num_elements = *count;

    const nlohmann::json& offsets = entry.at("data_offsets");
    std::optional<std::uint64_t> begin, end;
    if (offsets.is_array() && offsets.size() == 2) {
      begin = non_negative_integer(offsets[0]);
      end = non_negative_integer(offsets[1]);
    }
    if (!begin || !end) {
      fail_tensor("\"data_offsets\" must be [begin, end] with non-negative integers, got ",
                  detail::json_excerpt(offsets));
    }
    if (*begin > *end) {
      fail_tensor("data_offsets [", *begin, ", ", *end, "] have begin > end");
    }
    const std::uint64_t needed = static_cast<std::uint64_t>(*count) * dtype_size(tensor.dtype);
    if (*end - *begin != needed) {
      fail_tensor("data_offsets [", *begin, ", ", *end, "] hold ", *end - *begin,
                  " bytes but shape ", detail::shape_string(tensor.shape), " of dtype ",
                  dtype_name(tensor.dtype), " needs ", needed);
    }
    if (*end > data_size) {
      fail_tensor("data_offsets [", *begin, ", ", *end, "] are out of bounds of the data section (",
                  data_size, " bytes)");
    }
    tensor.begin = *begin;
    tensor.end = *end;
    tensor.bytes =
        std::span<const std::byte>(data_section + *begin, static_cast<std::size_t>(*end - *begin));
    return tensor;
  }

  // The tensors must tile [0, data_size) exactly: sorted by offsets, each begins where the
  // previous one ended.
  void check_coverage(std::uint64_t data_size) const {
    std::vector<std::pair<const std::string*, const TensorInfo*>> order;
    order.reserve(tensors_.size());
    for (const auto& [name, tensor] : tensors_) order.emplace_back(&name, &tensor);
    std::sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
      return std::pair(a.second->begin, a.second->end) < std::pair(b.second->begin, b.second->end);
    });
    std::uint64_t covered = 0;
    const std::string* previous = nullptr;
    for (const auto& [name, tensor] : order) {
      if (tensor->begin < covered) {
        fail_file("tensors '", *previous, "' and '", *name, "' overlap in the data section");
      }
      if (tensor->begin > covered) {
        fail_file("bytes [", covered, ", ", tensor->begin, ") of the data section belong to no ",
                  "tensor (a gap before tensor '", *name, "')");
      }
      covered = tensor->end;
      previous = name;
    }
    if (covered != data_size) {
      fail_file("the data section has ", data_size, " bytes but the tensors cover only ", covered,
                " (", data_size - covered, " trailing bytes)");
    }
  }

  template <class Scalar>
  void read_into(std::string_view name, const TensorInfo& tensor, Scalar* out) const {
    static_assert(detail::is_tensor_scalar<Scalar>,
                  "read tensors as floating point or integer (not bool) values");
    const auto count = static_cast<std::size_t>(tensor.num_elements);
    if constexpr (std::is_floating_point_v<Scalar>) {
      check(is_floating(tensor.dtype), "tensor '", name, "' in ", path_.string(), " has dtype ",
            dtype_name(tensor.dtype), ", which cannot be read as ", detail::scalar_name<Scalar>(),
            " (expected F64, F32, F16 or BF16)");
      detail::decode_floating(tensor.dtype, tensor.bytes.data(), count, out);
    } else {
      check(is_integer(tensor.dtype), "tensor '", name, "' in ", path_.string(), " has dtype ",
            dtype_name(tensor.dtype), ", which cannot be read as ", detail::scalar_name<Scalar>(),
            " (expected I64, I32, I16, I8, U8 or BOOL)");
      for (std::size_t i = 0; i < count; ++i) {
        const std::int64_t value = detail::load_integer(tensor.dtype, tensor.bytes.data(), i);
        check(std::in_range<Scalar>(value), "tensor '", name, "' in ", path_.string(), ": element ",
              i, " (value ", value, ") does not fit in ", detail::scalar_name<Scalar>());
        out[i] = static_cast<Scalar>(value);
      }
    }
    release_pages(tensor.bytes.data(), tensor.bytes.size());
  }

  std::filesystem::path path_;
  const std::byte* data_ = nullptr;  // the whole file: mapping or buffer_.data()
  std::size_t size_ = 0;
  bool mapped_ = false;
  std::vector<std::byte> buffer_;  // the file's bytes when not mapped
  std::map<std::string, TensorInfo, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
  std::optional<std::uint32_t> checksum_;  // the verified checksum entry, when present
};

// ---------------------------------------------------------------------------------------------
// Writing

namespace detail {

// The header of a safetensors file holding `tensors` (sorted by name, contiguous) and
// `metadata`, padded with spaces to a multiple of 8 bytes. A "tessera.crc32" entry in
// `metadata` is replaced by the checksum of these contents (Checksum::crc32) or dropped
// (Checksum::none): it describes the file being written, never the one it was copied from.
// `file` names the file in messages.
inline std::string safetensors_header(const std::filesystem::path& file,
                                      const std::map<std::string, TensorData>& tensors,
                                      std::map<std::string, std::string> metadata,
                                      Checksum checksum) {
  nlohmann::json header = nlohmann::json::object();
  Crc32 crc;
  std::uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    check(name != "__metadata__", file.string(),
          ": '__metadata__' is reserved and cannot name a tensor");
    const auto count = checked_num_elements(tensor.shape, dtype_size(tensor.dtype));
    check(count.has_value(), file.string(), ": tensor '", name, "' has an invalid shape ",
          shape_string(tensor.shape));
    const std::uint64_t needed = static_cast<std::uint64_t>(*count) * dtype_size(tensor.dtype);
    check(tensor.bytes.size() == needed, file.string(), ": tensor '", name, "' has ",
          tensor.bytes.size(), " bytes but shape ", shape_string(tensor.shape), " of dtype ",
          dtype_name(tensor.dtype), " needs ", needed);
    header[name] = {{"dtype", dtype_name(tensor.dtype)},
                    {"shape", tensor.shape},
                    {"data_offsets", {offset, offset + needed}}};
    offset += needed;
    if (checksum == Checksum::crc32) crc.update(tensor.bytes.data(), tensor.bytes.size());
  }
  metadata.erase(checksum_key);
  if (checksum == Checksum::crc32) {
    offset = 0;
    for (const auto& [name, tensor] : tensors) {
      checksum_tensor_entry(crc, name, tensor.dtype, tensor.shape, offset,
                            offset + tensor.bytes.size());
      offset += tensor.bytes.size();
    }
    checksum_metadata(crc, metadata);
    metadata[checksum_key] = checksum_hex(crc.value());
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;

  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(file.string(), ": tensor names and metadata must be valid UTF-8: ", e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

}  // namespace detail

// Writes `tensors` (sorted by name, contiguous) and optional string metadata to `file`,
// atomically; with Checksum::crc32 the metadata gets the entry "tessera.crc32" (see
// checksum_key), which every reader then verifies. Throws tessera::Error naming the path or
// the tensor on an invalid tensor or an I/O failure.
inline void save_safetensors(const std::filesystem::path& file,
                             const std::map<std::string, TensorData>& tensors,
                             const std::map<std::string, std::string>& metadata = {},
                             Checksum checksum = Checksum::none) {
  const std::string header = detail::safetensors_header(file, tensors, metadata, checksum);
  std::array<std::byte, 8> length{};
  detail::store_le<std::uint64_t>(header.size(), length.data());

  detail::AtomicFileWriter out(file);
  out.write(length.data(), length.size());
  out.write(header.data(), header.size());
  for (const auto& [name, tensor] : tensors) out.write(tensor.bytes.data(), tensor.bytes.size());
  out.commit();
}

// The bytes save_safetensors would write, in memory (for SafetensorsFile::from_bytes).
inline std::vector<std::byte> safetensors_bytes(const std::map<std::string, TensorData>& tensors,
                                                const std::map<std::string, std::string>& metadata = {},
                                                Checksum checksum = Checksum::none) {
  const std::string header = detail::safetensors_header("<memory>", tensors, metadata, checksum);
  std::vector<std::byte> out(8);
  detail::store_le<std::uint64_t>(header.size(), out.data());
  const auto* text = reinterpret_cast<const std::byte*>(header.data());
  out.insert(out.end(), text, text + header.size());
  for (const auto& [name, tensor] : tensors) {
    out.insert(out.end(), tensor.bytes.begin(), tensor.bytes.end());
  }
  return out;
}

// Every tensor of a file, bytes unchanged.
inline std::map<std::string, TensorData> load_safetensors(const std::filesystem::path& file,
                                                          const SafetensorsLimits& limits = {}) {
  const SafetensorsFile opened = SafetensorsFile::open(file, limits);
  std::map<std::string, TensorData> out;
  for (const std::string& name : opened.names()) out.emplace(name, opened.tensor_data(name));
  return out;
}

}  // namespace tessera
