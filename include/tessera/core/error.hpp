#pragma once
// tessera::Error: the one exception type of the library, and the internal assert.
//
// Every failure a user can cause (a malformed file, a wrong shape, an id out of range)
// throws tessera::Error with a message naming what is wrong and where. TESSERA_ASSERT
// guards internal invariants only; it compiles out with TESSERA_NO_ASSERT.

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace tessera {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {

// Concatenates any streamable arguments into one message.
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}

[[noreturn]] inline void assert_failed(const char* condition, const char* file, int line) {
  throw Error(concat("tessera internal error: assertion `", condition, "` failed at ", file, ":",
                     line));
}

}  // namespace detail

// Throws tessera::Error built from the streamed arguments.
template <class... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(detail::concat(std::forward<Args>(args)...));
}

// Throws tessera::Error built from the arguments when `condition` is false.
template <class... Args>
void check(bool condition, Args&&... args) {
  if (!condition) fail(std::forward<Args>(args)...);
}

}  // namespace tessera

#ifdef TESSERA_NO_ASSERT
#define TESSERA_ASSERT(condition) ((void)0)
#else
#define TESSERA_ASSERT(condition) \
  ((condition) ? (void)0 : ::tessera::detail::assert_failed(#condition, __FILE__, __LINE__))
#endif
