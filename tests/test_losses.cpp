// The contrastive losses of include/tessera/train/losses.hpp against PyTorch fixtures.

#include <tessera/train/losses.hpp>

#include "test_util.hpp"

namespace tessera {
namespace test_losses {

template <class Scalar>
class LossTest : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(LossTest, Scalars);

template <class Scalar>
void expect_close(Scalar actual, double reference, const char* what) {
  const double tolerance =
      test::Tolerance<Scalar>::atol + test::Tolerance<Scalar>::rtol * std::abs(reference);
  EXPECT_NEAR(static_cast<double>(actual), reference, tolerance) << what;
}

TYPED_TEST(LossTest, InfoNceBindingAndTriplet) {
  using Scalar = TypeParam;
  const test::Fixture f("layers/losses.safetensors");
  const Matrix<Scalar> a = f.matrix<Scalar>("a"), b = f.matrix<Scalar>("b"), c = f.matrix<Scalar>("c");
  const Scalar scale = f.scalar<Scalar>("logit_scale");
  expect_close(info_nce_loss<Scalar>(a, b, scale), f.scalar<double>("infonce"), "infonce");
  expect_close(info_nce_loss<Scalar>(a, b, f.scalar<Scalar>("logit_scale_clamped")),
               f.scalar<double>("infonce_clamped"), "infonce with logit_scale above ln(100)");
  expect_close(binding_loss<Scalar>(a, {b, c}, scale), f.scalar<double>("binding"), "binding");
  expect_close(triplet_loss<Scalar>(a, b, c, static_cast<Scalar>(std::stod(f.meta("margin")))),
               f.scalar<double>("triplet"), "triplet");
}

TYPED_TEST(LossTest, RejectMismatchedShapes) {
  using Scalar = TypeParam;
  const Matrix<Scalar> a = Matrix<Scalar>::Ones(3, 4), b = Matrix<Scalar>::Ones(2, 4);
  EXPECT_THROW(info_nce_loss<Scalar>(a, b, Scalar(1)), Error);
  EXPECT_THROW(triplet_loss<Scalar>(a, a, b, Scalar(0.2)), Error);
}

}  // namespace
}  // namespace tessera
