#pragma once
// The byte-level BPE core that Gpt2Bpe and ClipBpe share: the merge ranks, the merge loop, the
// per-thread word cache, and BpeEncoder, which turns one pre-token into ids with a vocabulary
// (tokenize/bpe_vocab.hpp) and merges (tokenize/bpe_merges.hpp). What differs between the
// two tokenizers stays in theirs: GPT-2's pre-tokenizer (gpt2_bpe.hpp); CLIP's lowercasing,
// its pattern and "</w>" (clip_bpe.hpp). Nothing here needs ICU.

#include <tessera/core/error.hpp>
#include <tessera/io/read_file.hpp>
#include <tessera/tokenize/bpe_merges.hpp>
#include <tessera/tokenize/bpe_vocab.hpp>
#include <tessera/tokenize/byte_alphabet.hpp>

#include <atomic>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace tessera::detail {

// ---- files ---------------------------------------------------------------------------------
// Where a tokenizer's vocabulary and merges came from, so that a check names the entry at
// fault: the files and the line of each entry, or, for tokens and merges built in memory
// (train_bpe, tests), the tokenizer and the entry's index.
struct BpeSource {
  std::string who;                      // "Gpt2Bpe"
  std::string vocab_file, merges_file;  // empty: built in memory
  std::vector<std::size_t> vocab_lines;  // line of vocabulary entry i in vocab_file
  std::vector<std::size_t> merge_lines;  // line of merge i (its rank) in merges_file

  // "model/vocab.json:12" or "Gpt2Bpe: vocabulary entry 11"
  std::string vocab_entry(std::size_t i) const {
    if (vocab_file.empty()) return concat(who, ": vocabulary entry ", i);
    return i < vocab_lines.size() ? concat(vocab_file, ":", vocab_lines[i]) : vocab_file;
  }
  // "model/merges.txt:5" or "Gpt2Bpe: merge 3"
  std::string merge_entry(std::size_t i) const {
    if (merges_file.empty()) return concat(who, ": merge ", i);
    return i < merge_lines.size() ? concat(merges_file, ":", merge_lines[i]) : merges_file;
  }
  // "model/vocab.json" or "Gpt2Bpe: the vocabulary"
  std::string vocab_name() const { return vocab_file.empty() ? who + ": the vocabulary" : vocab_file; }
  // " (model/vocab.json)" or ""
  std::string in_vocab_file() const { return vocab_file.empty() ? "" : " (" + vocab_file + ")"; }
};

// The vocabulary and merges of vocab_file (vocab.json) and merges_file (merges.txt), read
// within ReadLimits::vocab_json and ReadLimits::merges_txt, with the line of every entry.
// `who` names the caller in messages about the files ("Gpt2Bpe::load"), `tokenizer` the
// tokenizer they are for ("Gpt2Bpe").
struct BpeFiles {
  BpeVocabulary vocab;
  BpeMerges merges;
  BpeSource source;
};

inline BpeFiles read_bpe_files(const std::filesystem::path& vocab_file,
                               const std::filesystem::path& merges_file, std::string_view who,
                               std::string_view tokenizer) {
  const std::string vocab_text = read_file(vocab_file, who, ReadLimits::vocab_json);
  const std::string merges_text = read_file(merges_file, who, ReadLimits::merges_txt);
  BpeFiles files;
  files.source.who = tokenizer;
  files.source.vocab_file = vocab_file.string();
  files.source.merges_file = merges_file.string();
  files.vocab = parse_vocab_json(vocab_text, files.source.vocab_file, &files.source.vocab_lines);
  files.merges = parse_merges(merges_text, files.source.merges_file, &files.source.merge_lines);
  return files;
}

// ---- the BPE merge loop --------------------------------------------------------------------
// Merge ranks keyed by the string a + separator + b. GPT-2 uses ',' (the reference's
// JavaScript object keys, see the header comment); CLIP uses ' ', which no symbol contains, so
// every pair has its own key.
class BpeRanks {
 public:
  static constexpr int none = INT_MAX;

  BpeRanks() = default;
  BpeRanks(const BpeMerges& merges, char separator) : separator_(separator) {
    ranks_.reserve(merges.size());
    for (std::size_t i = 0; i < merges.size(); ++i) {
      // A repeated key takes the later rank, as a JavaScript object or Python dict does.
      ranks_[merges[i].first + separator + merges[i].second] = static_cast<int>(i);
    }
  }

  int rank(std::string_view a, std::string_view b, std::string& scratch) const {
    scratch.assign(a);
    scratch += separator_;
    scratch.append(b);
    const auto it = ranks_.find(std::string_view(scratch));
    return it == ranks_.end() ? none : it->second;
  }

 private:
  std::unordered_map<std::string, int, StringHash, std::equal_to<>> ranks_;
  char separator_ = ',';
};

// Reusable buffers of the merge loop.
struct BpeWorkspace {
  std::vector<std::uint32_t> bounds, new_bounds;  // symbol i = word[bounds[i], bounds[i+1])
  std::vector<int> ranks, new_ranks;              // rank of the pair (i, i+1)
  std::vector<std::uint32_t> origin;              // old index of a new symbol, or merged
  std::string scratch;
};

// Runs the merge loop on `word` whose initial symbols are given by ws.bounds (n+1 offsets);
// on return ws.bounds holds the final symbols. The lowest rank is merged first, every
// occurrence of that pair left to right; of several pairs with the same rank (possible only
// through the ',' key) the last one in the word is the pair merged.
inline void apply_bpe(const BpeRanks& ranks, std::string_view word, BpeWorkspace& ws) {
  constexpr std::uint32_t merged = UINT32_MAX;
  auto& bounds = ws.bounds;
  const auto symbol = [&](const std::vector<std::uint32_t>& b, std::size_t i) {
    return word.substr(b[i], b[i + 1] - b[i]);
  };
  std::size_t n = bounds.size() - 1;
  ws.ranks.resize(n > 0 ? n - 1 : 0);
  for (std::size_t i = 0; i + 1 < n; ++i) {
    ws.ranks[i] = ranks.rank(symbol(bounds, i), symbol(bounds, i + 1), ws.scratch);
  }
  while (n > 1) {
    int best = BpeRanks::none;
    std::size_t at = 0;
    for (std::size_t i = 0; i + 1 < n; ++i) {
      if (ws.ranks[i] <= best && ws.ranks[i] != BpeRanks::none) {
        best = ws.ranks[i];
        at = i;
      }
    }
    if (best == BpeRanks::none) break;
    const std::string_view first = symbol(bounds, at);
    const std::string_view second = symbol(bounds, at + 1);

    ws.new_bounds.clear();
    ws.origin.clear();
    for (std::size_t i = 0; i < n;) {
      ws.new_bounds.push_back(bounds[i]);
      if (i + 1 < n && symbol(bounds, i) == first && symbol(bounds, i + 1) == second) {
        ws.origin.push_back(merged);
        i += 2;
      } else {
        ws.origin.push_back(static_cast<std::uint32_t>(i));
        i += 1;
      }
    }
    ws.new_bounds.push_back(bounds[n]);
    const std::size_t new_n = ws.new_bounds.size() - 1;
    ws.new_ranks.resize(new_n > 0 ? new_n - 1 : 0);
    for (std::size_t k = 0; k + 1 < new_n; ++k) {
      // A pair of two untouched symbols keeps its rank.
      ws.new_ranks[k] = (ws.origin[k] != merged && ws.origin[k + 1] != merged)
                            ? ws.ranks[ws.origin[k]]
                            : ranks.rank(symbol(ws.new_bounds, k), symbol(ws.new_bounds, k + 1),
                                         ws.scratch);
    }
    std::swap(bounds, ws.new_bounds);
    std::swap(ws.ranks, ws.new_ranks);
    n = new_n;
  }
}

// ---- the word cache ------------------------------------------------------------------------
inline std::uint64_t next_tokenizer_id() {
  static std::atomic<std::uint64_t> counter{0};
  return ++counter;
}

// A thread's word -> ids cache, for the one tokenizer (by id) that filled it last.
struct WordCache {
  static constexpr std::size_t max_entries = std::size_t{1} << 17;
  static constexpr std::size_t max_word_bytes = 64;
  std::uint64_t owner = 0;
  std::unordered_map<std::string, std::vector<std::int64_t>, StringHash, std::equal_to<>> words;

  void claim(std::uint64_t tokenizer) {
    if (owner != tokenizer || words.size() >= max_entries) {
      words.clear();
      owner = tokenizer;
    }
  }
};

// One cache per thread and tokenizer class (Tag), so a Gpt2Bpe and a ClipBpe used in turn
// do not evict each other.
template <class Tag>
WordCache& thread_word_cache() {
  thread_local WordCache cache;
  return cache;
}

// ---- checks at load ------------------------------------------------------------------------
// What makes encoding fail later, or give wrong ids, is refused when the tokenizer is made,
// naming the file and the first entry at fault (docs/text.md, "Checks at load"). With these
// checks no text can make BPE produce a symbol that is not in the vocabulary.

// Every symbol a pre-token starts as must be a token: each byte's character of the byte
// alphabet and, with an end-of-word mark ("</w>" for CLIP), each byte's character followed
// by it (the last symbol of a word). A missing one would fail the first text holding that
// byte where no merge swallows it.
inline void check_byte_alphabet(const VocabTable& vocab, std::string_view end_of_word,
                                const BpeSource& source) {
  const auto& alphabet = byte_alphabet();
  std::string symbol;
  for (int b = 0; b < 256; ++b) {
    for (const bool last : {false, true}) {
      if (last && end_of_word.empty()) continue;
      symbol = alphabet.to_utf8[b];
      if (last) symbol += end_of_word;
      if (!vocab.encoder.contains(symbol)) {
        fail(source.vocab_name(), ": the token \"", symbol, "\" (byte ", hex_byte(static_cast<unsigned char>(b)),
             last ? concat(" ending a word with \"", end_of_word, "\"") : std::string(),
             ") is missing: ", source.who, " starts every word from such tokens, one per byte",
             end_of_word.empty() ? "" : " (the last one with the end-of-word mark)",
             ", so a text holding that byte could not be encoded");
      }
    }
  }
}

// Every merge must make a token: its result a + b is what BPE writes when the merge applies.
// The rank of a pair (p, q) is looked up under the key p + separator + q; when the separator
// can occur inside symbols (GPT-2's ',', as gpt-3-encoder does), another pair (p, q) whose
// key is the same string takes the merge's rank and makes p + q, which must then be a token
// too (when p and q are both tokens, so that they can meet in a word). Merges whose parts are
// not tokens never apply; they are allowed, as in the references.
inline void check_merges_make_tokens(const VocabTable& vocab, const BpeMerges& merges,
                                     char separator, const BpeSource& source) {
  std::string key, made;
  for (std::size_t i = 0; i < merges.size(); ++i) {
    const auto& [a, b] = merges[i];
    made.assign(a);
    made += b;
    if (!vocab.encoder.contains(made)) {
      fail(source.merge_entry(i), ": the merge \"", a, " ", b, "\" makes \"", made,
           "\", which is not in the vocabulary", source.in_vocab_file());
    }
    // Another split of the key needs the separator inside a or b: never for CLIP's ' ' (no
    // symbol holds a space, it is spelled "\u0120"), rarely for GPT-2's ','.
    if (a.find(separator) == std::string::npos && b.find(separator) == std::string::npos) continue;
    key.assign(a);
    key += separator;
    key += b;
    for (std::size_t at = key.find(separator); at != std::string::npos; at = key.find(separator, at + 1)) {
      if (at == a.size()) continue;
      const std::string_view p = std::string_view(key).substr(0, at);
      const std::string_view q = std::string_view(key).substr(at + 1);
      if (!vocab.encoder.contains(p) || !vocab.encoder.contains(q)) continue;
      made.assign(p);
      made += q;
      if (!vocab.encoder.contains(made)) {
        fail(source.merge_entry(i), ": the merge \"", a, " ", b, "\" gives its rank to the pair \"",
             p, "\" \"", q, "\" (both ranks are looked up under \"", key, "\", as gpt-3-encoder does), "
             "which makes \"", made, "\", not in the vocabulary", source.in_vocab_file());
      }
    }
  }
}

// ---- one pre-token to ids ------------------------------------------------------------------
// The vocabulary and merge ranks of a tokenizer, and the encoding of one pre-token with them:
// its bytes spelled in the byte alphabet, `end_of_word` appended to the last symbol ("</w>"
// for CLIP, nothing for GPT-2), the merge loop, each resulting symbol looked up in the
// vocabulary. `separator` keys the ranks (see BpeRanks); `source` says where the vocabulary
// and merges came from, and source.who names the tokenizer in messages ("Gpt2Bpe").
//
// The encoder is checked when it is made (check_byte_alphabet, check_merges_make_tokens), so
// append_ids's "BPE produced the symbol ..., which is not in the vocabulary" cannot happen.
class BpeEncoder {
 public:
  BpeEncoder() = default;
  BpeEncoder(const BpeVocabulary& vocab, const BpeMerges& merges, char separator,
             std::string_view end_of_word, const BpeSource& source)
      : vocab_(vocab, source.who.c_str()),
        ranks_(merges, separator),
        end_of_word_(end_of_word),
        encode_context_(concat(source.who, "::encode")),
        id_(next_tokenizer_id()) {
    check_byte_alphabet(vocab_, end_of_word, source);
    check_merges_make_tokens(vocab_, merges, separator, source);
  }

  const VocabTable& vocab() const { return vocab_; }

  // The calling thread's word cache for tokenizers of class Tag, emptied first unless this
  // encoder (or a copy) filled it last.
  template <class Tag>
  WordCache& thread_cache() const {
    WordCache& cache = thread_word_cache<Tag>();
    cache.claim(id_);
    return cache;
  }

  // Appends the ids of one pre-token (its raw bytes), taken from `cache` when it holds them
  // and kept there when the pre-token is short enough.
  void encode_piece(std::string_view piece, WordCache& cache, BpeWorkspace& ws,
                    std::vector<std::int64_t>& ids) const {
    const bool cacheable = piece.size() <= WordCache::max_word_bytes;
    if (cacheable) {
      if (const auto it = cache.words.find(piece); it != cache.words.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    const std::size_t first_id = ids.size();
    const auto& alphabet = byte_alphabet();
    std::string word;
    word.reserve(piece.size() * 2 + end_of_word_.size());
    ws.bounds.clear();
    for (const char c : piece) {
      ws.bounds.push_back(static_cast<std::uint32_t>(word.size()));
      word += alphabet.to_utf8[static_cast<unsigned char>(c)];
    }
    word += end_of_word_;
    ws.bounds.push_back(static_cast<std::uint32_t>(word.size()));
    apply_bpe(ranks_, word, ws);
    vocab_.append_ids(word, ws.bounds, ids, encode_context_.c_str());
    if (cacheable) {
      cache.words.emplace(std::string(piece),
                          std::vector<std::int64_t>(ids.begin() + static_cast<std::ptrdiff_t>(first_id),
                                                    ids.end()));
    }
  }

 private:
  VocabTable vocab_;
  BpeRanks ranks_;
  std::string end_of_word_;
  std::string encode_context_;  // "Gpt2Bpe::encode"
  std::uint64_t id_ = 0;        // identifies the contents for the thread_local word cache
};

}  // namespace tessera::detail
