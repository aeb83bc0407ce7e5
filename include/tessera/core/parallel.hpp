#pragma once
// Thread control. tessera threads its own outer loops with OpenMP (samples, heads, row
// blocks) and never lets Eigen thread a product, so results do not depend on the number of
// threads: every output element is computed by the same code in the same order whatever
// thread computes it.

#ifdef _OPENMP
#include <omp.h>
#endif

namespace tessera {

// Sets the number of threads tessera's parallel loops use (>= 1).
inline void set_num_threads(int threads) {
#ifdef _OPENMP
  omp_set_num_threads(threads < 1 ? 1 : threads);
#else
  (void)threads;
#endif
}

// The number of threads tessera's parallel loops will use.
inline int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Sets the thread count for a scope and restores the previous one when it ends:
//   { tessera::ScopedThreads one(1); model.encode(sample); }
class ScopedThreads {
 public:
  explicit ScopedThreads(int threads) : previous_(num_threads()) { set_num_threads(threads); }
  ~ScopedThreads() { set_num_threads(previous_); }
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int previous_;
};

}  // namespace tessera
