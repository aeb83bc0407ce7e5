#pragma once
// Warnings: things a user should hear about that are not errors (a text cut to max_tokens,
// long audio split into clips). They go to a process-wide handler, stderr by default;
// set_warning_handler replaces it (a test collects them, a program silences them).

#include <tessera/core/error.hpp>

#include <functional>
#include <iostream>
#include <mutex>
#include <string>
#include <utility>

namespace tessera {

using WarningHandler = std::function<void(const std::string& message)>;

namespace detail {

struct WarningState {
  std::mutex mutex;
  WarningHandler handler = [](const std::string& message) {
    std::cerr << "tessera: warning: " << message << "\n";
  };
};

inline WarningState& warning_state() {
  static WarningState state;
  return state;
}

}  // namespace detail

// Replaces the warning handler and returns the previous one. Thread-safe.
inline WarningHandler set_warning_handler(WarningHandler handler) {
  auto& state = detail::warning_state();
  std::lock_guard<std::mutex> lock(state.mutex);
  return std::exchange(state.handler, std::move(handler));
}

// Sends one warning, built from the streamed arguments, to the handler. Thread-safe.
template <class... Args>
void warn(Args&&... args) {
  const std::string message = detail::concat(std::forward<Args>(args)...);
  auto& state = detail::warning_state();
  std::lock_guard<std::mutex> lock(state.mutex);
  if (state.handler) state.handler(message);
}

}  // namespace tessera
