#!/usr/bin/python3
"""Writes the tokenizer cases of tests/bad_inputs/models/ (issue 16).

Run from anywhere, after make_bad_inputs.py (which writes model/ and clears models/; stdlib
only, deterministic):

    /usr/bin/python3 tests/bad_inputs/make_text_cases.py

Each case is a copy of model/'s tokenizer (a GPT-2 byte-level BPE of 300 ids for
text.vocab_size = 300) with one defect, in the one file that holds it; the harness copies the
other files of model/ beside it. tessera refuses each when the model loads (FrontEnds, so
tessera-encode, the Pipeline and Python alike), naming the file and line of the first entry at
fault, not at the first text that needs it (docs/text.md, "Checks at load"):

  merges_unknown_token/merges.txt       a last merge "q z" whose result "qz" is no token
  vocab_id_over_vocab_size/vocab.json   the last token's id is 300: the model's text embedding
                                        has rows 0..299 only
  vocab_missing_byte/vocab.json         no token for the byte "a" (0x61): a word holding an
                                        "a" that no merge swallows could not be encoded
  vocab_negative_id/vocab.json          an id of -1
  vocab_duplicate_id/vocab.json         two tokens with one id

vocab.json is written one token per line, so that the line in a message points at the token.
A text file without an end needs no file here: /dev/zero as --text-file is refused at
ReadLimits::text_file (64 MiB) instead of being read until memory runs out.
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def good_tokenizer():
    with open(os.path.join(HERE, "model", "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)  # file order kept (dicts are ordered)
    with open(os.path.join(HERE, "model", "merges.txt"), encoding="utf-8") as f:
        merges = f.read()
    return vocab, merges


def vocab_text(entries):
    """One token per line: token i of `entries` (a list of (token, id)) is on line i + 2."""
    lines = [f" {json.dumps(token, ensure_ascii=False)}: {token_id}" for token, token_id in entries]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def write(case, name, text):
    full = os.path.join(HERE, "models", case, name)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    print(f"  models/{case}/{name}: {len(text.encode('utf-8'))} bytes")


def main():
    vocab, merges = good_tokenizer()
    entries = list(vocab.items())
    assert len(entries) == 300 and max(vocab.values()) == 299, "model/ is not the expected one"
    assert "qz" not in vocab and "q" in vocab and "z" in vocab

    write("merges_unknown_token", "merges.txt", merges + "q z\n")

    over = entries[:-1] + [(entries[-1][0], 300)]
    write("vocab_id_over_vocab_size", "vocab.json", vocab_text(over))

    write("vocab_missing_byte", "vocab.json", vocab_text([e for e in entries if e[0] != "a"]))

    negative = [(token, -1 if token == "z" else token_id) for token, token_id in entries]
    write("vocab_negative_id", "vocab.json", vocab_text(negative))

    duplicate = [(token, vocab["a"] if token == "b" else token_id) for token, token_id in entries]
    write("vocab_duplicate_id", "vocab.json", vocab_text(duplicate))


if __name__ == "__main__":
    main()
