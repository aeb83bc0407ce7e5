#pragma once
// Shared test helpers: fixture paths, reading fixture tensors, and closeness checks that
// print the first mismatches and the largest difference.

#include <tessera/core/error.hpp>
#include <tessera/core/tensor.hpp>
#include <tessera/io/safetensors.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <random>
#include <sstream>
#include <string>

#include <unistd.h>

#ifndef TESSERA_TEST_DATA_DIR
#error "TESSERA_TEST_DATA_DIR must name tests/data"
#endif

namespace tessera::test {

inline std::filesystem::path data_dir() { return TESSERA_TEST_DATA_DIR; }

// A fresh directory under the system temp directory, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("tessera_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" +
             std::to_string(std::random_device{}()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// The message of the tessera::Error `action` throws; fails the test if it throws nothing or
// something else.
inline std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected tessera::Error, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected tessera::Error, nothing was thrown";
  return "";
}

// The tolerance of every comparison against a float64 reference: |a - r| <= atol + rtol*|r|.
template <class Scalar>
struct Tolerance;
template <>
struct Tolerance<float> {
  static constexpr double atol = 2e-5, rtol = 1e-4;
};
template <>
struct Tolerance<double> {
  static constexpr double atol = 1e-10, rtol = 1e-9;
};

// Checks actual against reference element by element; on failure reports the first few
// mismatches and the largest absolute difference.
template <class A, class B>
::testing::AssertionResult all_close(const A& actual, const B& reference, double atol,
                                     double rtol) {
  if (actual.rows() != reference.rows() || actual.cols() != reference.cols()) {
    return ::testing::AssertionFailure() << "shape [" << actual.rows() << ", " << actual.cols()
                                         << "] != reference [" << reference.rows() << ", "
                                         << reference.cols() << "]";
  }
  std::ostringstream report;
  int mismatches = 0;
  double largest = 0;
  for (Index r = 0; r < actual.rows(); ++r) {
    for (Index c = 0; c < actual.cols(); ++c) {
      const double a = static_cast<double>(actual(r, c));
      const double ref = static_cast<double>(reference(r, c));
      const double diff = std::abs(a - ref);
      largest = std::max(largest, std::isnan(diff) ? INFINITY : diff);
      if (!(diff <= atol + rtol * std::abs(ref))) {
        if (mismatches < 5) report << "\n  at (" << r << ", " << c << "): " << a << " vs " << ref;
        ++mismatches;
      }
    }
  }
  if (mismatches == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << mismatches << " mismatches (atol " << atol << ", rtol "
                                       << rtol << "), largest difference " << largest
                                       << report.str();
}

template <class Scalar, class A, class B>
::testing::AssertionResult close_to_reference(const A& actual, const B& reference) {
  return all_close(actual, reference, Tolerance<Scalar>::atol, Tolerance<Scalar>::rtol);
}

// A fixture file of tests/data with typed accessors.
struct Fixture {
  SafetensorsFile file;

  explicit Fixture(const std::filesystem::path& relative)
      : file(SafetensorsFile::open(data_dir() / relative)) {}

  template <class Scalar>
  Matrix<Scalar> matrix(const std::string& name) const {
    const auto& info = file.info(name);
    if (info.rank() == 2) return file.read_matrix<Scalar>(name);
    // any other rank: [first dimension, rest] (a conv weight, an image, ...)
    const auto values = file.read<Scalar>(name);
    const Index rows = info.rank() == 0 ? 1 : static_cast<Index>(info.shape[0]);
    Matrix<Scalar> out(rows, static_cast<Index>(values.size()) / rows);
    std::copy(values.begin(), values.end(), out.data());
    return out;
  }
  template <class Scalar>
  Vector<Scalar> vector(const std::string& name) const {
    const auto values = file.read<Scalar>(name);
    return Eigen::Map<const Vector<Scalar>>(values.data(), static_cast<Index>(values.size()));
  }
  template <class Scalar>
  Scalar scalar(const std::string& name) const {
    return file.read<Scalar>(name).at(0);
  }
  std::vector<std::int64_t> ints(const std::string& name) const {
    return file.read<std::int64_t>(name);
  }
  std::string meta(const std::string& key) const { return file.metadata().at(key); }
  bool has(const std::string& name) const { return file.contains(name); }
};

}  // namespace tessera::test
