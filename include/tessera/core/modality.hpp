#pragma once
// Modalities: the four built-in ones (Modality) and the id of any modality a model has
// (ModalityId): a built-in one, the k-th custom modality of its config, or the cls token.

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>

namespace tessera {

// The four built-in modalities, in the order their tokens are concatenated (SPEC 2).
enum class Modality : std::int8_t { text = 0, image = 1, audio = 2, video = 3 };
inline constexpr int num_modalities = 4;

inline constexpr std::array<Modality, num_modalities> builtin_modalities{
    Modality::text, Modality::image, Modality::audio, Modality::video};

// m's place among the built-in modalities (0..3), for arrays indexed by modality.
constexpr std::size_t modality_index(Modality m) { return static_cast<std::size_t>(m); }

inline const char* modality_name(Modality m) {
  switch (m) {
    case Modality::text: return "text";
    case Modality::image: return "image";
    case Modality::audio: return "audio";
    case Modality::video: return "video";
  }
  return "unknown";
}

// Which modality a token (Encoding::modality), an input or a pooled part belongs to. Its
// index() is the modality's row in modality_embed and in the router: 0..3 the built-in
// ones, 4 + k the k-th custom modality (Config::custom). The cls token has no index.
class ModalityId {
 public:
  constexpr ModalityId(Modality m) : value_(static_cast<int>(m)) {}  // NOLINT: a built-in is an id

  static constexpr ModalityId custom(int k) { return ModalityId(num_modalities + k); }
  static constexpr ModalityId cls() { return ModalityId(-1); }
  // The modality whose index() is `index` (>= 0): built-in below 4, custom from 4 on.
  static constexpr ModalityId from_index(int index) { return ModalityId(index); }

  constexpr bool is_cls() const { return value_ < 0; }
  constexpr bool is_builtin() const { return value_ >= 0 && value_ < num_modalities; }
  constexpr bool is_custom() const { return value_ >= num_modalities; }
  // requires is_builtin()
  constexpr Modality builtin() const { return static_cast<Modality>(value_); }
  // requires is_custom(): k for the k-th custom modality
  constexpr int custom_index() const { return value_ - num_modalities; }
  // requires !is_cls(): the row in modality_embed and the router
  constexpr int index() const { return value_; }

  constexpr auto operator<=>(const ModalityId&) const = default;

 private:
  explicit constexpr ModalityId(int value) : value_(value) {}
  int value_;  // -1 cls, 0..3 built-in, 4 + k custom
};

}  // namespace tessera
