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
//           inputs, out of memory). One line on stderr: `<program>: error: <what>`
//
// Numbers: CLI11 2.1.2 reads integers with strtoll/strtoull in base 0, so "-1" becomes 2^64-1
// for an unsigned option, "010" is octal 8 and "99999999999999999999" saturates; it reads
// "nan" and "inf" as doubles. The validators below accept plain decimal text only and check
// the range (CLI::Range) and finiteness, before CLI11 converts the value.

#include <CLI/CLI.hpp>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <exception>
#include <filesystem>
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
  try {
    body();
    return 0;
  } catch (const UsageError& e) {
    return usage_error(e.what());
  } catch (const std::bad_alloc&) {
    std::cerr << program << ": error: out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << program << ": error: " << e.what() << "\n";
    return 1;
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
