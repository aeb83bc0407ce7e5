#pragma once
// The command-line layer every tessera program shares, on CLI11.
//
// A program builds a CLI::App (its options with their meanings and defaults; `--help` prints
// them) and hands it to run() with the program's body. run() gives every program the same
// contract (docs/programs.md):
//   exit 0  done, or --help printed
//   exit 2  a usage error: an unknown option, a missing value or option, a value that is not
//           a number or out of range, options that contradict each other. One line on
//           stderr: `<program>: error: <what> (see <program> --help)`
//   exit 1  a runtime error (a file that cannot be read, a model that does not fit the
//           inputs, out of memory). One line on stderr: `<program>: error: <what>`, naming
//           the input being processed (Processing, below) when <what> does not already:
//           a std::bad_alloc, std::length_error or std::system_error from deep inside the
//           library never reaches the user bare.
//
// Numbers: CLI11 2.1.2 reads integers with strtoll/strtoull in base 0, so "-1" becomes 2^64-1
// for an unsigned option, "010" is octal 8 and "99999999999999999999" saturates; it reads
// "nan" and "inf" as doubles. The validators below accept plain decimal text only and check
// the range (CLI::Range) and finiteness, before CLI11 converts the value.

#include <tessera/core/error.hpp>

#include <CLI/CLI.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <vector>

namespace tessera::apps {

// A usage error the program finds after parsing (options that contradict each other, a
// required choice left open): exit status 2, as CLI11's own.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {

// `text`, all of it, as a decimal Integer (no sign for an unsigned type, no base prefix, no
// exponent, in the type's range); "" if it is one, else what is wrong.
template <class Integer>
std::string integer_error(const std::string& text) {
  Integer value{};
  const char* end = text.data() + text.size();
  const auto [at, error] = std::from_chars(text.data(), end, value);
  if (error == std::errc::result_out_of_range) {
    return "expected an integer in [" + std::to_string(std::numeric_limits<Integer>::min()) + ", " +
           std::to_string(std::numeric_limits<Integer>::max()) + "], got '" + text + "'";
  }
  if (text.empty() || error != std::errc() || at != end) {
    return "expected " + std::string(std::is_signed_v<Integer> ? "an" : "a non-negative") +
           " integer, got '" + text + "'";
  }
  return "";
}

// `text`, all of it, as a finite decimal number; "" if it is one, else what is wrong.
inline std::string number_error(const std::string& text, double& value) {
  const char* end = text.data() + text.size();
  const auto [at, error] = std::from_chars(text.data(), end, value);
  if (text.empty() || error != std::errc() || at != end || !std::isfinite(value)) {
    return "expected a number, got '" + text + "'";
  }
  return "";
}

}  // namespace detail

// A decimal integer of type Integer (the option's type).
template <class Integer>
CLI::Validator integer() {
  return CLI::Validator([](std::string& text) { return detail::integer_error<Integer>(text); }, "");
}

// A decimal integer of type Integer in [low, high]: integer(), then CLI::Range (which alone
// would take "-1" or "010" as the conversions above do).
template <class Integer>
CLI::Validator integer_in(Integer low, Integer high) {
  const CLI::Range range(low, high);
  return CLI::Validator(
      [range](std::string& text) {
        const std::string error = detail::integer_error<Integer>(text);
        return error.empty() ? range(text) : error;
      },
      range.get_description());
}

// A finite number > 0.
inline const CLI::Validator positive_number(
    [](std::string& text) {
      double value = 0;
      std::string error = detail::number_error(text, value);
      if (error.empty() && !(value > 0)) error = "expected a number > 0, got '" + text + "'";
      return error;
    },
    "POSITIVE");

// A finite number >= 0.
inline const CLI::Validator non_negative_number(
    [](std::string& text) {
      double value = 0;
      std::string error = detail::number_error(text, value);
      if (error.empty() && !(value >= 0)) error = "expected a number >= 0, got '" + text + "'";
      return error;
    },
    "NONNEGATIVE");

// The thread counts a program takes: 1 to 4 times the machine's hardware threads (more would
// only oversubscribe the cores; 0 and negative counts mean nothing).
inline int max_threads() {
  return 4 * static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// --threads N, into `threads` (left as it is when the option is not given: 0 is "OpenMP's
// default", the OMP_NUM_THREADS environment variable or one per core).
inline CLI::Option* add_threads_option(CLI::App& app, int& threads) {
  return app
      .add_option("--threads", threads,
                  "threads for tessera's loops, 1 to " + std::to_string(max_threads()) +
                      " (4 x the hardware threads); default: OMP_NUM_THREADS or one per core")
      ->check(integer_in(1, max_threads()))
      ->type_name("N")
      ->default_str("");
}

// What every program's App does, set before its options are added: --help lists every
// option with its default; an option given twice takes its last value (a repeated option
// such as --image is a std::vector and keeps them all); arguments nobody claims are
// collected, for run() to name the first.
inline void set_conventions(CLI::App& app) {
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast)->always_capture_default();
  app.allow_extras();
  app.get_formatter()->column_width(34);
  app.footer("Exit status: 0 done; 1 a runtime error, 2 a usage error (an unknown option, a\n"
             "missing or invalid value), each with one line on stderr: " + app.get_name() + ": error: ...");
}

// A repeatable option (--image F --image G): one value per occurrence, every one kept, in
// order; app.parse_order() tells how they interleave with other options.
template <class Value>
CLI::Option* add_repeated_option(CLI::App& app, const std::string& name, std::vector<Value>& values,
                                 const std::string& description) {
  return app.add_option(name, values, description)->take_all()->allow_extra_args(false)->default_str("");
}

// What the program is working on, for its error messages: a scoped entry on a stack of this
// thread's,
//
//   for (...) {
//     apps::Processing now("train.jsonl:3 (item red-circle-left-up-0)");
//     apps::Processing file("--image " + path, path);  // the second: how a message names it
//     ...  // an exception thrown here is reported as "<entries>: <what went wrong>"
//   }
//
// An exception unwinds the scopes before run() catches it, so the innermost Processing it
// leaves records the stack as it was; run() puts the entries (outer first) before the
// exception's message, each one unless the message names it already (its `named_by` text, a
// path, say: tessera's errors name their files). A body that catches an exception itself and
// carries on leaves a record behind: the next Processing made (or run()) clears it.
class Processing {
 public:
  explicit Processing(std::string what, std::string named_by = "")
      : exceptions_(std::uncaught_exceptions()) {
    failed().clear();
    if (named_by.empty()) named_by = what;
    stack().push_back({std::move(what), std::move(named_by)});
  }
  ~Processing() {
    if (std::uncaught_exceptions() > exceptions_ && failed().empty()) failed() = stack();
    stack().pop_back();
  }
  Processing(const Processing&) = delete;
  Processing& operator=(const Processing&) = delete;

  // `message` after the entries recorded by the last exception that left a Processing (outer
  // first, each unless `message` names it), joined by ": "; clears the record.
  static std::string describe_failure(const std::string& message) {
    std::string out;
    for (const Entry& entry : failed()) {
      if (message.find(entry.named_by) == std::string::npos) out += entry.what + ": ";
    }
    failed().clear();
    return out + message;
  }

 private:
  struct Entry {
    std::string what, named_by;
  };
  static std::vector<Entry>& stack() {
    thread_local std::vector<Entry> entries;
    return entries;
  }
  static std::vector<Entry>& failed() {
    thread_local std::vector<Entry> entries;
    return entries;
  }
  int exceptions_;
};

namespace detail {

// What an exception says to a user: tessera's own messages as they are; the standard
// library's, which name no input, with what they mean.
inline std::string explain(const std::exception& e) {
  if (dynamic_cast<const tessera::Error*>(&e)) return e.what();
  if (dynamic_cast<const std::bad_alloc*>(&e)) return "out of memory (std::bad_alloc)";
  if (dynamic_cast<const std::length_error*>(&e)) {
    return std::string("out of memory: a size beyond what memory can hold (std::length_error: ") +
           e.what() + ")";
  }
  if (dynamic_cast<const std::filesystem::filesystem_error*>(&e)) return e.what();  // names its paths
  if (dynamic_cast<const std::system_error*>(&e)) return std::string("system error: ") + e.what();
  return e.what();
}

}  // namespace detail

// ---- Sizes --------------------------------------------------------------------------------

// The memory this process may still allocate, in bytes: the machine's physical memory less
// what the process holds (its resident pages), or less when an address-space or data limit
// is set (ulimit -v, prlimit --as) and the process's mappings already take part of it: the
// ceiling the programs check the memory their options imply against (tessera-train's batch)
// before allocating it.
inline std::uint64_t usable_memory_bytes() {
  const auto page = static_cast<std::uint64_t>(std::max(1L, ::sysconf(_SC_PAGE_SIZE)));
  // /proc/self/statm: size resident shared text lib data dt, in pages (0 if unreadable)
  std::uint64_t size = 0, resident = 0, shared = 0, text = 0, lib = 0, data = 0;
  std::ifstream("/proc/self/statm") >> size >> resident >> shared >> text >> lib >> data;
  const auto left = [](std::uint64_t limit, std::uint64_t used) { return limit > used ? limit - used : 0; };
  std::uint64_t bytes = std::numeric_limits<std::uint64_t>::max();
  if (const long pages = ::sysconf(_SC_PHYS_PAGES); pages > 0) {
    bytes = left(static_cast<std::uint64_t>(pages) * page, resident * page);
  }
  for (const auto& [resource, used] : {std::pair{RLIMIT_AS, size}, std::pair{RLIMIT_DATA, data}}) {
    rlimit limit{};
    if (::getrlimit(resource, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
      bytes = std::min(bytes, left(limit.rlim_cur, used * page));
    }
  }
  return bytes;
}

// A byte count for a message: "1.5 GB", "12.0 MB", "512 bytes".
inline std::string bytes_text(double bytes) {
  char text[32];
  if (bytes >= 1e9) std::snprintf(text, sizeof text, "%.1f GB", bytes / 1e9);
  else if (bytes >= 1e6) std::snprintf(text, sizeof text, "%.1f MB", bytes / 1e6);
  else std::snprintf(text, sizeof text, "%.0f bytes", bytes);
  return text;
}

// ---- Output directories -------------------------------------------------------------------

// An output directory held by one run at a time: flock(2) on DIR/<name> (created if need be,
// holding the holder's pid as text), non-blocking. The kernel drops the lock when the process
// ends however it ends (kill -9 included), so a lock file left behind is stale and ignored:
// only a living holder refuses. The file stays after the run (removing it would race with a
// run that has just opened it).
class DirectoryLock {
 public:
  // Creates `dir` if need be and locks it. Throws tessera::Error naming the directory (and the
  // pid holding it, when the file tells) if another process holds it.
  DirectoryLock(const std::filesystem::path& dir, const std::string& name, const std::string& program) {
    std::error_code error;
    std::filesystem::create_directories(dir, error);
    tessera::check(!error, dir.string(), ": cannot create the directory: ", error.message());
    const std::filesystem::path file = dir / name;
    fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    tessera::check(fd_ >= 0, file.string(), ": cannot open the lock file: ", std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int why = errno;
      std::string holder;
      std::ifstream in(file);
      std::getline(in, holder);
      ::close(fd_);
      tessera::check(why != EWOULDBLOCK, dir.string(), ": another ", program,
                     holder.empty() ? std::string() : " (pid " + holder + ")",
                     " is writing this directory (it holds ", file.string(),
                     "); wait for it to end or write elsewhere");
      tessera::fail(file.string(), ": cannot lock: ", std::strerror(why));
    }
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd_, 0) != 0 || ::write(fd_, pid.data(), pid.size()) != static_cast<ssize_t>(pid.size())) {
      // the pid is a courtesy to the next run's message; the lock holds without it
    }
  }
  ~DirectoryLock() { ::close(fd_); }
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

 private:
  int fd_ = -1;
};

// Parses argc/argv into `app`'s options, then runs body() under the contract above.
template <class Body>
int run(CLI::App& app, int argc, const char* const* argv, Body&& body) {
  const std::string program = app.get_name();
  const auto usage_error = [&](const std::string& what) {
    std::cerr << program << ": error: " << what << " (see " << program << " --help)\n";
    return 2;
  };
  // An argument nobody claims is named first: a misspelt option is the likely cause of
  // whatever else went wrong (a required option "missing").
  const auto unclaimed = [&]() -> std::string {
    if (app.remaining().empty()) return "";
    const std::string first = app.remaining().front();
    return first.starts_with('-') ? "unknown option " + first : "unexpected argument '" + first + "'";
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help);  // the help text on stdout, exit status 0
  } catch (const CLI::ParseError& e) {
    const std::string first = unclaimed();
    return usage_error(first.empty() ? e.what() : first);
  }
  if (const std::string first = unclaimed(); !first.empty()) return usage_error(first);
  const auto runtime_error = [&](const std::string& what) {
    std::string line = Processing::describe_failure(what);
    std::replace(line.begin(), line.end(), '\n', ' ');  // one line, whatever the message held
    std::cerr << program << ": error: " << line << "\n";
    return 1;
  };
  Processing::describe_failure("");  // a fresh record
  try {
    body();
    return 0;
  } catch (const UsageError& e) {
    Processing::describe_failure("");
    return usage_error(e.what());
  } catch (const std::exception& e) {
    return runtime_error(detail::explain(e));
  } catch (...) {
    return runtime_error("an unknown exception");
  }
}

// Refuses to write `out` (the value of `option`) over one of the program's inputs: a file
// given as an input, or a file inside an input directory (a model directory). Called before
// any work, so a refused run reads and writes nothing. Links are followed: a link to an
// input is that input.
inline void refuse_output_over_inputs(const std::filesystem::path& out, std::string_view option,
                                      const std::vector<std::filesystem::path>& inputs) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (!fs::exists(out, error)) return;  // nothing there to destroy
  const auto same = [&](const fs::path& input) {
    std::error_code ignored;
    return fs::equivalent(out, input, ignored);
  };
  for (const fs::path& input : inputs) {
    if (fs::is_directory(input, error)) {
      for (const auto& entry : fs::directory_iterator(input, error)) {
        tessera::check(!same(entry.path()), option, " ", out.string(), ": is ",
                       entry.path().string(), ", one of the inputs (of ", input.string(),
                       "); write the output elsewhere");
      }
    } else {
      tessera::check(!same(input), option, " ", out.string(), ": is ", input.string(),
                     ", one of the inputs; write the output elsewhere");
    }
  }
}

// Throws a UsageError made of `what` unless `condition` holds.
inline void require(bool condition, const std::string& what) {
  if (!condition) throw UsageError(what);
}

}  // namespace tessera::apps
