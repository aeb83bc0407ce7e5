#pragma once
// What the example programs share: running a program body with tessera's error contract
// (one line on stderr, exit status 1), parsing options and their values, a progress bar, and
// printing embeddings and their similarity.

#include <tessera/tessera.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <initializer_list>
#include <iostream>
#include <string>
#include <string_view>

namespace example {

// Runs body(); an exception becomes one line "<program>: error: <what>" and exit status 1.
template <class Body>
int run(const char* program, Body&& body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    std::cerr << program << ": error: " << e.what() << "\n";
    return 1;
  }
}

// Parses `--name value` options and the value-less `flags`: --help or -h prints `usage` and
// exits 0; every other option goes to handle(name, value) (value "" for a flag), which returns
// false for an option it does not know. A missing value or an unknown option is an Error
// naming it, followed by the usage.
template <class Handle>
void for_each_option(int argc, char** argv, std::string_view usage,
                     std::initializer_list<std::string_view> flags, Handle&& handle) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << usage << "\n";
      std::exit(0);
    }
    std::string value;
    if (std::find(flags.begin(), flags.end(), arg) == flags.end()) {
      tessera::check(i + 1 < argc, "option ", arg, " needs a value (", usage, ")");
      value = argv[++i];
    }
    if (!handle(arg, value)) tessera::fail("unknown option ", arg, " (", usage, ")");
  }
}

// Throws the usage line unless the program got `count` arguments (argv[1..count]).
inline void expect_arguments(int argc, int count, std::string_view usage) {
  tessera::check(argc == count + 1, "usage: ", usage);
}

// The value of `option` as a positive integer (at most 100000), or an Error naming it.
inline int positive_integer(std::string_view option, std::string_view text) {
  int value = 0;
  for (char c : text) {
    tessera::check(c >= '0' && c <= '9' && value < 100000, option,
                   " expects a positive integer, got '", text, "'");
    value = value * 10 + (c - '0');
  }
  tessera::check(!text.empty() && value >= 1, option, " expects a positive integer, got '", text, "'");
  return value;
}

// The value of `option` as a positive number, or an Error naming it.
inline double positive_number(std::string_view option, const std::string& text) {
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  tessera::check(used == text.size() && value > 0, option, " expects a positive number, got '",
                 text, "'");
  return value;
}

// Progress of a loop on stderr. On a terminal, one line redrawn in place (at most 10 times a
// second): `step 240/1200 [#####.........]  20%  <status>  1:36 left`; otherwise (a log file,
// ctest) the same line, once per tenth of the work. The time left extrapolates the rate of
// the steps done since the Progress was made (a resumed run counts from where it resumed).
class Progress {
 public:
  Progress(std::int64_t total, std::int64_t first)
      : total_(total), first_(first), last_tenth_(first * 10 / std::max<std::int64_t>(total, 1)),
        terminal_(::isatty(::fileno(stderr)) != 0) {}

  // `done` steps of `total` are done.
  void update(std::int64_t done, std::string_view status) {
    const auto now = Clock::now();
    const std::int64_t tenth = done * 10 / std::max<std::int64_t>(total_, 1);
    if (terminal_) {
      if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    } else if (tenth == last_tenth_ && done < total_) {
      return;
    }
    last_draw_ = now;
    last_tenth_ = tenth;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double left = done > first_ ? elapsed / static_cast<double>(done - first_) *
                                            static_cast<double>(total_ - done)
                                      : 0;
    constexpr int width = 24;
    const auto filled = static_cast<int>(width * done / std::max<std::int64_t>(total_, 1));
    const auto seconds = static_cast<long>(left + 0.5);
    std::fprintf(stderr, "%sstep %*ld/%ld [%s%s] %3d%%  %.*s  %ld:%02ld left%s",
                 terminal_ ? "\r" : "", static_cast<int>(std::to_string(total_).size()),
                 static_cast<long>(done), static_cast<long>(total_),
                 std::string(static_cast<std::size_t>(filled), '#').c_str(),
                 std::string(static_cast<std::size_t>(width - filled), '.').c_str(),
                 static_cast<int>(100 * done / std::max<std::int64_t>(total_, 1)),
                 static_cast<int>(status.size()), status.data(), seconds / 60, seconds % 60,
                 terminal_ ? "\x1b[K" : "\n");
    if (terminal_ && done >= total_) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  using Clock = std::chrono::steady_clock;
  std::int64_t total_, first_, last_tenth_;
  bool terminal_;
  Clock::time_point start_ = Clock::now(), last_draw_{};
};

// "<label>: 72 tokens, e[:4] = [+0.1234, -0.0567, ...]" (one line per encoding).
inline void print_encoding(std::string_view label, const tessera::Encoding<float>& encoding) {
  std::printf("%.*s: %ld tokens, e[:4] = [", static_cast<int>(label.size()), label.data(),
              static_cast<long>(encoding.hidden.rows()));
  for (tessera::Index j = 0; j < 4 && j < encoding.embedding.size(); ++j) {
    std::printf("%s%+.4f", j > 0 ? ", " : "", encoding.embedding[j]);
  }
  std::printf(", ...]\n");
}

// Embeddings have unit length, so their cosine similarity is their dot product.
inline void print_similarity(const tessera::Encoding<float>& a, const tessera::Encoding<float>& b) {
  std::printf("cosine similarity: %.4f\n", a.embedding.dot(b.embedding));
}

}  // namespace example
