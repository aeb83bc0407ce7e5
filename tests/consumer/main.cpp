// Shared by both consumer projects (find_package/ and add_subdirectory/).
// Uses tessera the way an application would: through the umbrella header and the
// tessera::tessera target only. Prints what it did, then "tessera consumer: ok".

// tessera::tessera must carry these to every consumer (checked before any tessera header,
// which could define them itself).
#ifndef EIGEN_DONT_PARALLELIZE
#error "tessera::tessera should define EIGEN_DONT_PARALLELIZE"
#endif
#if defined(TESSERA_EXPECT_OPENMP) && TESSERA_EXPECT_OPENMP && !defined(_OPENMP)
#error "tessera was built with OpenMP, but tessera::tessera did not enable it here"
#endif
#if defined(TESSERA_EXPECT_OPENMP) && !TESSERA_EXPECT_OPENMP && defined(_OPENMP)
#error "tessera was built without OpenMP, but tessera::tessera enabled it here"
#endif

#include <tessera/tessera.hpp>

#if defined(TESSERA_EXPECT_OPENBLAS)
static_assert(tessera::detail::matmul_uses_blas<float> == static_cast<bool>(TESSERA_EXPECT_OPENBLAS),
              "tessera::tessera should route float products through OpenBLAS exactly when "
              "tessera was configured with it");
#endif

#include <cmath>
#include <cstdint>
#include <iostream>
#include <vector>
#include <string>

int main() {
  // A tiny two-modality model with random weights, one sample encoded: the whole public path.
  const auto config = tessera::parse_config(nlohmann::json::parse(R"({
      "hidden_dim": 16, "num_layers": 1, "num_heads": 2, "ffn_dim": 32, "embed_dim": 8,
      "text": {"vocab_size": 50, "max_tokens": 8}, "image": {"size": 8, "patch": 4}})"));
  tessera::MultiModalEncoder<float> model(config);
  model.init_random(1);
  tessera::Sample<float> sample;
  sample.text = std::vector<std::int64_t>{1, 2, 3};
  sample.image = tessera::Tensor3<float>(3, 8, 8);
  sample.image->setConstant(0.5f);
  const auto encoding = model.encode(sample);  // 3 text tokens + 4 image patches

  std::string message;
  try {
    sample.text = std::vector<std::int64_t>{50};
    model.encode(sample);
  } catch (const tessera::Error& e) {
    message = e.what();
  }

  const int threads = tessera::num_threads();
  std::cout << "tessera consumer: encoded " << encoding.hidden.rows() << " tokens into a unit "
            << encoding.embedding.size() << "-vector (norm " << encoding.embedding.norm()
            << "); num_threads() = " << threads << "; products through "
            << (tessera::detail::matmul_uses_blas<float> ? "OpenBLAS" : "Eigen")
            << "; a bad id threw \"" << message << "\"\n";

  const bool ok = encoding.hidden.rows() == 7 && encoding.embedding.size() == 8 &&
                  std::abs(encoding.embedding.norm() - 1.0f) < 1e-5f &&
                  message.find("text id 50") != std::string::npos && threads >= 1;
  if (!ok) {
    std::cerr << "tessera consumer: FAILED\n";
    return 1;
  }
  std::cout << "tessera consumer: ok\n";
  return 0;
}
