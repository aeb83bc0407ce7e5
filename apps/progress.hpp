#pragma once
// A progress bar for a program's long loop (tessera-train's steps).

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace tessera::apps {

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

}  // namespace tessera::apps
