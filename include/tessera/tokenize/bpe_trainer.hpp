#pragma once
// train_bpe: learns a GPT-2 style byte-level BPE vocabulary from a corpus (SPEC 5.1, "a
// trainer builds vocab.json + merges.txt in the same format"), for Gpt2Bpe.
//
// 1. Every text (a line, a document) is cut into pre-tokens by Gpt2Bpe's pre-tokenizer (the
//    GPT-2 pattern, same rules), and the pre-tokens are counted. Pre-tokens never merge
//    across each other, so a learned token never spans two words, as in GPT-2.
// 2. The initial symbols are the 256 bytes, always all present, with ids 0..255 in
//    bytes_to_unicode order (the bytes '!'..'~', 0xA1..0xAC, 0xAE..0xFF, then the other 68
//    in increasing order) - GPT-2's own first 256 ids.
// 3. Repeatedly, the adjacent pair with the highest count (each word weighted by how often
//    it occurs) becomes the next merge, with the next id; it is applied to every word, every
//    occurrence left to right as encode does. Ties: the pair whose first symbol's bytes
//    compare smallest (byte-wise, a shorter prefix first), then the second symbol's bytes.
//    The counts and the tie rule make the result deterministic and independent of the
//    order of the texts.
// 4. It stops at vocab_size ids (with <|endoftext|> if options.end_of_text, which gets the
//    last id, as in GPT-2) or when no pair occurs min_frequency times.
//
// The result's save() writes vocab.json (one "token": id per line, by id) and merges.txt
// (`#version: 0.2`, then "a b" per line), which Gpt2Bpe::load reads.

#ifndef TESSERA_HAS_ICU
#error "tessera/tokenize/bpe_trainer.hpp needs ICU (it uses Gpt2Bpe's pre-tokenizer): install libicu-dev (Debian/Ubuntu) and reconfigure, so that CMake finds ICU and defines TESSERA_HAS_ICU"
#endif

#include <tessera/core/error.hpp>
#include <tessera/io/atomic_file.hpp>
#include <tessera/tokenize/byte_alphabet.hpp>
#include <tessera/tokenize/char_class.hpp>
#include <tessera/tokenize/gpt2_bpe.hpp>
#include <tessera/tokenize/utf8.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <array>
#include <utility>
#include <vector>

namespace tessera {

struct BpeTrainerOptions {
  // A pair seen fewer times than this (over the whole corpus) is never merged.
  std::size_t min_frequency = 2;
  // Add "<|endoftext|>" as the last id (counted in vocab_size), as GPT-2's vocabulary does.
  bool end_of_text = true;
};

// A trained vocabulary: what vocab.json and merges.txt hold.
struct BpeModel {
  BpeVocabulary vocab;  // token (bytes_to_unicode alphabet) -> id, ids 0..size-1 in order
  BpeMerges merges;     // in rank order

  // Writes <directory>/vocab.json and <directory>/merges.txt (creating the directory).
  void save(const std::filesystem::path& directory) const {
    std::filesystem::create_directories(directory);
    std::string vocab_text = "{\n";
    for (std::size_t i = 0; i < vocab.size(); ++i) {
      vocab_text += "  " + nlohmann::json(vocab[i].first).dump(-1, ' ', false) + ": " +
                    std::to_string(vocab[i].second) + (i + 1 < vocab.size() ? ",\n" : "\n");
    }
    vocab_text += "}\n";
    std::string merges_text = "#version: 0.2\n";
    for (const auto& [a, b] : merges) merges_text += a + " " + b + "\n";
    for (const auto& [name, text] : {std::pair<const char*, const std::string&>{"vocab.json", vocab_text},
                                     std::pair<const char*, const std::string&>{"merges.txt", merges_text}}) {
      detail::write_file_atomically(directory / name, text);
    }
  }
};

namespace detail {

// The incremental BPE trainer's state: unique words as symbol-id sequences, pair counts, and
// for each pair the words that (may) contain it.
class BpeTrainerState {
 public:
  explicit BpeTrainerState(const std::unordered_map<std::string, std::int64_t>& word_counts) {
    const auto& alphabet = byte_alphabet();
    // ids 0..255: the bytes in bytes_to_unicode order (printable ones first).
    std::vector<int> order;
    for (int b = 0; b < 256; ++b) {
      if (alphabet.to_char[b] == static_cast<char32_t>(b)) order.push_back(b);
    }
    for (int b = 0; b < 256; ++b) {
      if (alphabet.to_char[b] != static_cast<char32_t>(b)) order.push_back(b);
    }
    std::array<int, 256> byte_id{};
    for (int i = 0; i < 256; ++i) {
      byte_id[order[i]] = i;
      symbols_.push_back(std::string(1, static_cast<char>(order[i])));
      symbol_ids_.emplace(symbols_.back(), i);
    }
    // Words in a fixed order (sorted bytes), so nothing depends on hash-map iteration.
    std::vector<std::pair<std::string, std::int64_t>> sorted(word_counts.begin(), word_counts.end());
    std::sort(sorted.begin(), sorted.end());
    for (const auto& [word, count] : sorted) {
      Word w;
      w.count = count;
      for (const char c : word) w.symbols.push_back(byte_id[static_cast<unsigned char>(c)]);
      words_.push_back(std::move(w));
    }
    for (std::size_t w = 0; w < words_.size(); ++w) add_pairs(w, +1);
    for (const auto& [key, count] : counts_) push(key);
    touched_.clear();
  }

  const std::vector<std::string>& symbols() const { return symbols_; }

  // Makes the best pair (count >= min_frequency) a new symbol; false when there is none.
  bool merge_best(std::int64_t min_frequency, std::pair<int, int>* merged) {
    while (!queue_.empty()) {
      const Entry top = queue_.top();
      queue_.pop();
      const auto it = counts_.find(top.key);
      if (it == counts_.end() || it->second != top.count) continue;  // stale
      if (top.count < min_frequency) return false;
      // A pair merged before can come back when a later merge spells an existing symbol
      // again (which then keeps its id); it is never a second merge.
      if (!merged_keys_.insert(top.key).second) continue;
      const int a = first_of(top.key), b = second_of(top.key);
      std::string spelled = symbols_[a] + symbols_[b];
      int id = static_cast<int>(symbols_.size());
      if (const auto known = symbol_ids_.find(spelled); known != symbol_ids_.end()) {
        id = known->second;
      } else {
        symbol_ids_.emplace(spelled, id);
        symbols_.push_back(std::move(spelled));
      }
      auto candidates = std::move(where_[top.key]);
      where_.erase(top.key);
      std::sort(candidates.begin(), candidates.end());
      candidates.erase(std::unique(candidates.begin(), candidates.end()), candidates.end());
      touched_.clear();
      for (const std::size_t w : candidates) merge_in_word(w, a, b, id);
      for (const std::uint64_t key : touched_) push(key);
      *merged = {a, b};
      return true;
    }
    return false;
  }

 private:
  struct Word {
    std::vector<int> symbols;
    std::int64_t count = 0;
  };
  struct Entry {
    std::int64_t count;
    std::uint64_t key;
  };

  static std::uint64_t key_of(int a, int b) {
    return (static_cast<std::uint64_t>(a) << 32) | static_cast<std::uint32_t>(b);
  }
  static int first_of(std::uint64_t key) { return static_cast<int>(key >> 32); }
  static int second_of(std::uint64_t key) { return static_cast<int>(key & 0xFFFFFFFFu); }

  // The order of the queue: higher count first, then smaller (first bytes, second bytes).
  struct Worse {
    const std::vector<std::string>* symbols;
    bool operator()(const Entry& x, const Entry& y) const {
      if (x.count != y.count) return x.count < y.count;
      const auto& xa = (*symbols)[first_of(x.key)];
      const auto& ya = (*symbols)[first_of(y.key)];
      if (xa != ya) return xa > ya;
      return (*symbols)[second_of(x.key)] > (*symbols)[second_of(y.key)];
    }
  };

  void push(std::uint64_t key) {
    const auto it = counts_.find(key);
    if (it != counts_.end() && it->second > 0) queue_.push({it->second, key});
  }

  void add_pairs(std::size_t w, int sign) {
    const Word& word = words_[w];
    for (std::size_t i = 0; i + 1 < word.symbols.size(); ++i) {
      const std::uint64_t key = key_of(word.symbols[i], word.symbols[i + 1]);
      auto& count = counts_[key];
      count += sign * word.count;
      if (count == 0) counts_.erase(key);
      if (sign > 0) where_[key].push_back(w);
      touched_.push_back(key);
    }
  }

  void merge_in_word(std::size_t w, int a, int b, int id) {
    Word& word = words_[w];
    bool found = false;
    for (std::size_t i = 0; i + 1 < word.symbols.size(); ++i) {
      if (word.symbols[i] == a && word.symbols[i + 1] == b) found = true;
    }
    if (!found) return;
    add_pairs(w, -1);
    std::vector<int> merged;
    merged.reserve(word.symbols.size());
    for (std::size_t i = 0; i < word.symbols.size();) {
      if (i + 1 < word.symbols.size() && word.symbols[i] == a && word.symbols[i + 1] == b) {
        merged.push_back(id);
        i += 2;
      } else {
        merged.push_back(word.symbols[i]);
        i += 1;
      }
    }
    word.symbols = std::move(merged);
    add_pairs(w, +1);
  }

  std::vector<std::string> symbols_;  // id -> bytes
  std::unordered_map<std::string, int> symbol_ids_;  // bytes -> id
  std::unordered_set<std::uint64_t> merged_keys_;
  std::vector<Word> words_;
  std::unordered_map<std::uint64_t, std::int64_t> counts_;
  std::unordered_map<std::uint64_t, std::vector<std::size_t>> where_;
  std::vector<std::uint64_t> touched_;
  std::priority_queue<Entry, std::vector<Entry>, Worse> queue_{Worse{&symbols_}};
};

}  // namespace detail

// Counts the GPT-2 pre-tokens of `texts` (each must be UTF-8) and learns merges until the
// vocabulary has `vocab_size` ids. vocab_size must be at least 256 (+1 with end_of_text).
inline BpeModel train_bpe(std::span<const std::string> texts, std::size_t vocab_size,
                          const BpeTrainerOptions& options = {}) {
  const std::size_t reserved = 256 + (options.end_of_text ? 1 : 0);
  check(vocab_size >= reserved, "train_bpe: vocab_size = ", vocab_size, " is below ", reserved,
        " (the 256 byte symbols", options.end_of_text ? " and <|endoftext|>" : "", ")");
  check(options.min_frequency >= 1, "train_bpe: options.min_frequency must be at least 1");

  std::unordered_map<std::string, std::int64_t> word_counts;
  for (std::size_t t = 0; t < texts.size(); ++t) {
    const std::string_view text = texts[t];
    const auto decoded = detail::decode_and_classify(
        text, detail::concat("train_bpe: text ", t), detail::is_js_space);
    for (const auto& [begin, end] : detail::gpt2_pretokenize(decoded)) {
      ++word_counts[std::string(text.substr(begin, end - begin))];
    }
  }

  detail::BpeTrainerState state(word_counts);
  BpeModel model;
  while (state.symbols().size() + (options.end_of_text ? 1 : 0) < vocab_size) {
    std::pair<int, int> pair;
    if (!state.merge_best(static_cast<std::int64_t>(options.min_frequency), &pair)) break;
    model.merges.emplace_back(detail::bytes_to_token(state.symbols()[pair.first]),
                              detail::bytes_to_token(state.symbols()[pair.second]));
  }
  const auto& symbols = state.symbols();
  model.vocab.reserve(symbols.size() + 1);
  for (std::size_t id = 0; id < symbols.size(); ++id) {
    model.vocab.emplace_back(detail::bytes_to_token(symbols[id]), static_cast<std::int64_t>(id));
  }
  if (options.end_of_text) {
    model.vocab.emplace_back("<|endoftext|>", static_cast<std::int64_t>(symbols.size()));
  }
  return model;
}

// The same for one text (a whole document; its lines are not split apart, which gives the
// same pre-tokens except around line breaks).
inline BpeModel train_bpe(std::string_view text, std::size_t vocab_size,
                          const BpeTrainerOptions& options = {}) {
  const std::string copy(text);
  return train_bpe(std::span<const std::string>(&copy, 1), vocab_size, options);
}

}  // namespace tessera
