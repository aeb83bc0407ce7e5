#pragma once
// Linear: y = x W^T + b (torch.nn.functional.linear).
//
// Backward (given d_y = dLoss/dy):  d_x = d_y W,  d_W += d_y^T x,  d_b += sum over rows of d_y.
//
// Gradient convention of every layer: the gradient of an input (d_x) is assigned; the
// gradients of weights, held in a `grad` object of the layer's own type and shapes, are
// accumulated into (so micro-batches add up, and a weight used twice gets both parts).
//
// Quantized weights (Linear<float> only; docs/model-files.md "Quantized weights"): the weight
// may be held instead as int8 with one fp32 scale per output row (w(r, c) ~= value(r, c) *
// scale[r]) or as bfloat16; `weight` is then empty, so the memory really shrinks, and forward
// runs detail::int8_matmul / bf16_matmul (the inputs narrowed too: int8 per token, or bfloat16),
// once, or twice (QuantizedInputs). Such a layer only runs forward: backward throws.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/detail/matmul.hpp>
#include <tessera/detail/quantized_matmul.hpp>

#include <cstddef>
#include <type_traits>
#include <utility>
#include <variant>

namespace tessera::nn {

// How a layer holds its weight.
enum class WeightFormat { f32, int8, bf16 };

inline const char* to_string(WeightFormat f) {
  switch (f) {
    case WeightFormat::f32: return "f32";
    case WeightFormat::int8: return "int8";
    case WeightFormat::bf16: return "bf16";
  }
  return "unknown";
}

// What a forward with a quantized weight does with its inputs: narrows them as the weight
// (int8 per token, or bfloat16) for one product; or, with_residual, also narrows what that
// leaves out (detail::int8_residual, bf16_residual) for a second product added to the first:
// the inputs then lose about as much as a 16-bit number would, for twice the product's time.
// Either way the sums are the kernels' (the same bits on every CPU path and thread count).
// nn::PatchEmbed asks for with_residual: see there.
enum class QuantizedInputs { narrowed, with_residual };

// What a new layer's weight matrices hold: zeros, or nothing yet (allocated, not written), for
// a loader that writes every one of them next. An unset weight's pages are not touched, so a
// loader that replaces a weight by its int8 or bfloat16 form (quantized_weights.hpp) never
// makes the fp32 one resident: the model's peak memory while loading is its quantized size.
enum class WeightInit { zeros, unset };

template <class Scalar>
struct Linear {
  Matrix<Scalar> weight;  // [out, in]; empty when the weight is quantized
  Vector<Scalar> bias;    // [out], or empty for a layer without bias
  // The weight [out, in] when held in fewer bits (Linear<float> only): int8 rows with their
  // scales, or bfloat16; monostate for a weight held in `weight`.
  std::variant<std::monostate, detail::Int8Rows, detail::BF16Rows> quantized;

  Linear() = default;
  // The weight [out, in] zero (or unset: see WeightInit), the bias zero.
  Linear(Index in_features, Index out_features, bool with_bias,
         WeightInit init = WeightInit::zeros)
      : weight(out_features, in_features),
        bias(with_bias ? Vector<Scalar>::Zero(out_features) : Vector<Scalar>()) {
    if (init == WeightInit::zeros) weight.setZero();
  }

  Index in_features() const {
    if (const auto* q = std::get_if<detail::Int8Rows>(&quantized)) return q->cols();
    if (const auto* q = std::get_if<detail::BF16Rows>(&quantized)) return q->cols();
    return weight.cols();
  }
  Index out_features() const {
    if (const auto* q = std::get_if<detail::Int8Rows>(&quantized)) return q->rows();
    if (const auto* q = std::get_if<detail::BF16Rows>(&quantized)) return q->rows();
    return weight.rows();
  }
  bool has_bias() const { return bias.size() != 0; }

  WeightFormat format() const {
    if (std::holds_alternative<detail::Int8Rows>(quantized)) return WeightFormat::int8;
    if (std::holds_alternative<detail::BF16Rows>(quantized)) return WeightFormat::bf16;
    return WeightFormat::f32;
  }
  bool is_quantized() const { return format() != WeightFormat::f32; }

  // Holds the weight as `w` (int8 rows or bfloat16), `weight` released.
  // requires: w is [out_features(), in_features()] of the layer as it was.
  template <class Rows>
  void set_quantized(Rows w) {
    static_assert(std::is_same_v<Scalar, float>, "only a float Linear holds a quantized weight");
    static_assert(std::is_same_v<Rows, detail::Int8Rows> || std::is_same_v<Rows, detail::BF16Rows>);
    TESSERA_ASSERT(w.rows() == out_features() && w.cols() == in_features());
    weight = Matrix<Scalar>();
    quantized = std::move(w);
  }

  // Converts an fp32 weight to `format` (int8: symmetric per row; bf16: round to nearest
  // even); f32 on an fp32 weight does nothing. A quantized weight is not converted again.
  void quantize(WeightFormat format) {
    static_assert(std::is_same_v<Scalar, float>, "only a float Linear holds a quantized weight");
    check(!is_quantized() || format == this->format(), "nn::Linear: the weight is already ",
          to_string(this->format()), ", not converted to ", to_string(format));
    if (is_quantized()) return;
    if (format == WeightFormat::int8) set_quantized(detail::Int8Rows::quantize(weight));
    if (format == WeightFormat::bf16) set_quantized(detail::BF16Rows::round(weight));
  }

  // The bytes the weight takes in memory (its bias not counted).
  std::size_t weight_bytes() const {
    if (const auto* q = std::get_if<detail::Int8Rows>(&quantized)) return q->bytes();
    if (const auto* q = std::get_if<detail::BF16Rows>(&quantized)) return q->bytes();
    return static_cast<std::size_t>(weight.size()) * sizeof(Scalar);
  }

  // requires: in.cols() == in_features(); out is [in.rows(), out_features()].
  // ensures: out is assigned (not accumulated into). `inputs` matters only for a quantized
  // weight (QuantizedInputs).
  void forward(MatrixRef<Scalar> out,              // [L, out]
               const ConstMatrixRef<Scalar>& in,   // [L, in]
               QuantizedInputs inputs = QuantizedInputs::narrowed) const {
    TESSERA_ASSERT(in.cols() == in_features() && out.rows() == in.rows() &&
                   out.cols() == out_features());
    if (is_quantized()) return quantized_forward(out, in, false, inputs);
    detail::matmul<false, true, Scalar>(out, in, weight, false, has_bias() ? &bias : nullptr);
  }

  // out += in W^T + b: forward added to what out holds (a residual connection) in the same
  // pass over out (the bias added to it, then the product).
  // requires: as forward. ensures: out is accumulated into.
  void forward_accumulate(MatrixRef<Scalar> out,            // [L, out]
                          const ConstMatrixRef<Scalar>& in  // [L, in]
  ) const {
    TESSERA_ASSERT(in.cols() == in_features() && out.rows() == in.rows() &&
                   out.cols() == out_features());
    if (is_quantized()) return quantized_forward(out, in, true, QuantizedInputs::narrowed);
    detail::matmul<false, true, Scalar>(out, in, weight, true, has_bias() ? &bias : nullptr);
  }

  // Backward of forward(out, in).
  // requires: grad has this layer's shapes; d_out [L, out]; in [L, in], forward's input.
  // ensures: d_in is assigned; grad.weight and grad.bias are accumulated into.
  void backward(MatrixRef<Scalar> d_in,              // [L, in]
                Linear& grad,                        // weight [out, in], bias [out]
                const ConstMatrixRef<Scalar>& d_out, // [L, out]
                const ConstMatrixRef<Scalar>& in     // [L, in]
  ) const {
    check_trainable();
    TESSERA_ASSERT(d_in.rows() == in.rows() && d_in.cols() == in_features());
    backward_weights(grad, d_out, in);
    detail::matmul<false, false, Scalar>(d_in, d_out, weight);
  }

  // The weight gradients alone, for a layer whose input needs none (patches, say).
  // ensures: grad.weight and grad.bias are accumulated into.
  void backward_weights(Linear& grad,                        // weight [out, in], bias [out]
                        const ConstMatrixRef<Scalar>& d_out, // [L, out]
                        const ConstMatrixRef<Scalar>& in     // [L, in]
  ) const {
    check_trainable();
    TESSERA_ASSERT(d_out.rows() == in.rows() && d_out.cols() == out_features() &&
                   in.cols() == in_features() && grad.weight.rows() == out_features() &&
                   grad.weight.cols() == in_features() && grad.bias.size() == bias.size());
    detail::matmul<true, false, Scalar>(grad.weight, d_out, in, true);
    if (has_bias()) grad.bias += d_out.colwise().sum().transpose();
  }

  Matrix<Scalar> forward(const ConstMatrixRef<Scalar>& in) const {  // [L, in] -> [L, out]
    Matrix<Scalar> out(in.rows(), out_features());
    forward(out, in);
    return out;
  }

  // Throws tessera::Error when the weight is quantized: backward needs the fp32 weight.
  void check_trainable() const {
    check(!is_quantized(), "nn::Linear: the weight is quantized (", to_string(format()),
          "); a quantized model cannot be trained");
  }

 private:
  void quantized_forward(MatrixRef<Scalar> out, const ConstMatrixRef<Scalar>& in,
                         bool accumulate, QuantizedInputs inputs) const {
    if constexpr (std::is_same_v<Scalar, float>) {
      const Vector<float>* b = has_bias() ? &bias : nullptr;
      const bool twice = inputs == QuantizedInputs::with_residual;
      if (const auto* q = std::get_if<detail::Int8Rows>(&quantized)) {
        detail::int8_matmul(out, in, *q, b, accumulate);
        if (twice) detail::int8_matmul(out, detail::int8_residual(in), *q, nullptr, true);
      } else {
        const auto& w = std::get<detail::BF16Rows>(quantized);
        detail::bf16_matmul(out, in, w, b, accumulate);
        if (twice) detail::bf16_matmul(out, detail::bf16_residual(in), w, nullptr, true);
      }
    } else {
      TESSERA_ASSERT(false && "a quantized weight in a Linear<double>");
    }
  }
};

}  // namespace tessera::nn
