#pragma once
// What the example programs share: running a program body with tessera's error contract
// (one line on stderr, exit status 1), checking the argument count, and printing embeddings
// and their similarity. (The programs in apps/ share apps/cli.hpp instead.)

#include <tessera/tessera.hpp>

#include <cstdio>
#include <exception>
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
