#!/usr/bin/env python3
"""Writes tests/data/text/clip_tokenizer/cases.json: texts and the ids OpenAI CLIP's tokenizer
gives them, for tests/test_tokenize_text.cpp (ClipBpeOpenAi.*).

This is an independent implementation of github.com/openai/CLIP clip/simple_tokenizer.py
(SimpleTokenizer) and clip/clip.py (tokenize), written from reading them; each function says
which one it follows. It reads the real bpe_simple_vocab_16e6.txt.gz beside the output.

One difference from the reference, forced by this machine: ftfy is not available (Debian has
no python3-ftfy), so basic_clean's ftfy.fix_text is replaced by what tessera reproduces of it,
unicodedata.normalize("NFC"). The corpus therefore avoids nothing: it holds texts ftfy would
change further (curly quotes, ligatures, fullwidth letters, mojibake, control characters), and
their expected ids are those of NFC + html.unescape twice (docs/text.md says what ftfy does
beyond that). The pattern uses the real `regex` module (Debian's python3-regex).

Each case: {"text": str, "ids": SimpleTokenizer.encode(text),
            "tokenize": clip.tokenize(text, truncate=True)[0] without its zero padding,
            "too_long": whether clip.tokenize(text) (truncate=False) raises}.

Run from the repository root (deterministic; rewrites only cases.json):

    /usr/bin/python3 tests/reference/make_clip_tokenizer_fixtures.py
"""

import gzip
import html
import json
import os
import random
import unicodedata

import regex

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "text", "clip_tokenizer")
CONTEXT_LENGTH = 77  # clip.tokenize's default


# simple_tokenizer.py: bytes_to_unicode
def byte_alphabet():
    """Byte -> character: the printable Latin-1 bytes stand for themselves, the other 68 get
    U+0100, U+0101, ... in increasing byte order. Returned in the reference's order (the
    printable bytes first)."""
    printable = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
    others = [b for b in range(256) if b not in printable]
    mapping = {b: chr(b) for b in printable}
    for n, b in enumerate(others):
        mapping[b] = chr(256 + n)
    return mapping


# simple_tokenizer.py: basic_clean and whitespace_clean (ftfy.fix_text replaced by NFC)
def clean(text):
    text = unicodedata.normalize("NFC", text)
    text = html.unescape(html.unescape(text))
    text = text.strip()
    text = regex.sub(r"\s+", " ", text)
    return text.strip()


class ClipTokenizer:
    # simple_tokenizer.py: SimpleTokenizer.__init__
    def __init__(self, gz_path):
        with gzip.open(gz_path) as f:
            lines = f.read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
        self.alphabet = byte_alphabet()
        symbols = list(self.alphabet.values())
        vocab = symbols + [s + "</w>" for s in symbols]
        vocab += ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        assert len(set(vocab)) == len(vocab) == 49408
        self.ids = {token: i for i, token in enumerate(vocab)}
        self.ranks = {m: r for r, m in enumerate(merges)}
        self.words = {"<|startoftext|>": ["<|startoftext|>"], "<|endoftext|>": ["<|endoftext|>"]}
        self.pattern = regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE)

    # simple_tokenizer.py: SimpleTokenizer.bpe (with get_pairs)
    def bpe(self, word):
        if word in self.words:
            return self.words[word]
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            pairs = {(a, b) for a, b in zip(symbols, symbols[1:])}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        self.words[word] = symbols
        return symbols

    # simple_tokenizer.py: SimpleTokenizer.encode
    def encode(self, text):
        ids = []
        for piece in self.pattern.findall(clean(text).lower()):
            spelled = "".join(self.alphabet[b] for b in piece.encode("utf-8"))
            ids.extend(self.ids[s] for s in self.bpe(spelled))
        return ids

    # clip.py: tokenize (one text, truncate=True, without the zero padding)
    def tokenize(self, text):
        ids = [self.ids["<|startoftext|>"]] + self.encode(text) + [self.ids["<|endoftext|>"]]
        too_long = len(ids) > CONTEXT_LENGTH
        if too_long:
            ids = ids[:CONTEXT_LENGTH]
            ids[-1] = self.ids["<|endoftext|>"]
        return ids, too_long


def corpus():
    texts = [
        # ASCII, case, whitespace
        "a photo of a dog.", "A PHOTO OF A CAT", "Hello, World!", "", "   ", "\t\n",
        "  lead and trail  ", "tab\tsep\nnew\r\nline", "many     spaces   between",
        # contractions and apostrophes
        "it's", "don't", "they're", "we've", "I'm", "you'll", "he'd", "IT'S", "WE'LL", "rock'n'roll",
        "'s'", "x'S", "o'clock", "''quoted''", "cat's toy's", "x'\u017f",
        # digits and punctuation runs
        "1234567890", "3.14159", "2nd place", "10,000 m\u00b2", "x\u00b2 + y\u00b3", "\u00bd \u00be",
        "!!!???...", "--->", "(a)[b]{c}", "@user #hashtag", "http://example.com/a?b=c&d=e",
        "C++ and C#", "~`^|\\", "$100.00 (USD)", "e.g. i.e. etc.", "\u2160\u2161\u216b",
        # accents: NFC and NFD, and characters NFC composes or replaces
        "caf\u00e9", "cafe\u0301", "CAFE\u0301", "\u00c5ngstr\u00f6m", "A\u030angstro\u0308m",
        "\u212b", "e\u0301\u0301", "Ti\u1ebfng Vi\u1ec7t", unicodedata.normalize("NFD", "Ti\u1ebfng Vi\u1ec7t"),
        "\u1100\u1161\u11a8", "\ud55c\uad6d\uc5b4", "na\u00efve r\u00e9sum\u00e9", "\u0301", "a\u0345b",
        "\u1e9b\u0323",
        # scripts
        "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8", "\u4e2d\u6587\u5b57\u7b26",
        "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!", "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
        "\u05e9\u05dc\u05d5\u05dd", "\u0928\u092e\u0938\u094d\u0924\u0947", "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
        "\u0391\u03b8\u03ae\u03bd\u03b1", "\u2211\u222b\u221a\u221e", "\u2116 42",
        # emoji
        "\U0001f44d", "I \u2764\ufe0f NY", "\U0001f468\u200d\U0001f469\u200d\U0001f467", "\U0001f3f3\ufe0f\u200d\U0001f308",
        "\U0001f1fa\U0001f1f8", "a\U0001f600b\U0001f600c", "\U0001f44d\U0001f3fd",
        # upper case beyond ASCII
        "\u0130stanbul", "STRASSE \u1e9e", "\u039f\u0394\u039f\u03a3 \u03a3\u0391", "\u01c5\u01c8\u01cb",
        "\u038c\u03a3\u039f", "\u03a3", "\u0130", "\u1e9e", "\u00c9COLE", "\u0178",
        # what ftfy would change beyond NFC (expected ids here are NFC's: see the docstring)
        "it\u2019s \u201cquoted\u201d", "\ufb01nance \ufb02ow", "\uff21\uff22\uff23 \uff11\uff12\uff13",
        "\u00c3\u00a9t\u00c3\u00a9", "\ufeffbom", "a\x1cb", "\x1c a \x1f", "\x00\x07\x7f", "\u200bzero width",
        "\x1b[31mred\x1b[0m",
        # HTML entities: named, double-escaped, legacy without ';', prefixes, unknown
        "&amp;", "&amp;amp;", "&amp;amp;amp;", "&lt;b&gt;bold&lt;/b&gt;", "&quot;quoted&quot;",
        "&notit;", "&not", "&notin;", "&AMP;", "&Amp;", "&amp", "AT&T", "a & b", "a&b&c",
        "&&amp;", "&ampamp;", "&acE;", "&nbsp;x&nbsp;", "&NewLine;x&Tab;y", "&eacute;", "&Eacute;",
        "&EACUTE;", "&unknown;", "&lt;|endoftext|&gt;", "&amp;lt;|startoftext|&amp;gt;",
        "&" + "a" * 40 + ";", "&" + "b" * 31 + ";", "&" + "c" * 32 + ";", "&\u00e9;", "&copy2024",
        "&hellip;&mdash;&ndash;", "&frac12;&sup2;", "&nGt;", "&fjlig;",
        # numeric entities and html.unescape's rules for invalid code points
        "&#39;s", "&#x27;t", "&#X41;", "&#65", "&#0;", "&#128;", "&#x80;", "&#x9F;", "&#x81;",
        "&#xD800;", "&#xDFFF;", "&#1114111;", "&#1114112;", "&#99999999999999999999;",
        "&#x" + "F" * 30 + ";", "&#1;a", "&#xFFFE;", "&#x10FFFF;", "&#xFDD0;", "&#11;", "&#13;",
        "&#;", "&#x;", "&#xg;", "&#0065;", "&#x0041;", "e&#769;", "e&#x301;&#x301;",
        "&#12288;a&#12288;", "&#x2028;b", "&#x85;c", "&#160;d", "&amp;#65;", "&amp;amp;#65;",
        "&#38;amp;", "&#38;#38;amp;",
        # whitespace beyond ASCII
        "a\u00a0b", "a\u3000b", "a\u2028b", "a\u0085b", "a\u2009b\u200ac", "a\u1680b", "a\u202fb",
        "\u3000\u3000full\u3000width\u3000\u3000",
        # special tokens
        "<|startoftext|>hello<|endoftext|>", "<|ENDOFTEXT|>", "<|endoftext|", "<|endoftext|><|endoftext|>",
        # long words and long texts
        "a" * 300, "supercalifragilisticexpialidocious" * 5, "pneumonoultramicroscopicsilicovolcanoconiosis",
        "\u6f22" * 100, "1" * 100, "!" * 200,
        " ".join(["a photo of a dog"] * 20), "word " * 75, "word " * 74 + "end",
    ]
    # Random mixtures of the pieces above, so that their interactions are covered too.
    pieces = [
        "a", "B", "dog", "CAT", "'s", "'T", "'re", " ", "  ", "\t", "\n", "\u00a0", "\u3000", "1", "23",
        "!", "?!", ".", "-", "&amp;", "&lt;", "&gt;", "&amp;amp;", "&#65;", "&#x301;", "&#0;", "&not",
        "&", "#", ";", "\u00e9", "e\u0301", "\u0301", "\u0130", "\u1e9e", "\u03a3", "\u65e5", "\u672c",
        "\U0001f44d", "\u200d", "\ufe0f", "<|endoftext|>", "\u2019", "\ufb01", "\uff21", "\u0345",
        "\u017f", "\x1c", "\u00c3\u00a9",
    ]
    rng = random.Random(17)
    for _ in range(300):
        texts.append("".join(rng.choice(pieces) for _ in range(rng.randint(1, 24))))
    return texts


def main():
    tokenizer = ClipTokenizer(os.path.join(DATA, "bpe_simple_vocab_16e6.txt.gz"))
    # The reference's own examples (CLIP's README: clip.tokenize(["a diagram", "a dog", "a cat"])).
    assert tokenizer.encode("a dog") == [320, 1929]
    cases = []
    for text in corpus():
        ids = tokenizer.encode(text)
        row, too_long = tokenizer.tokenize(text)
        cases.append({"text": text, "ids": ids, "tokenize": row, "too_long": too_long})
    about = ("OpenAI CLIP SimpleTokenizer.encode and clip.tokenize(truncate=True) on each text, "
             "with ftfy.fix_text replaced by NFC: tests/reference/make_clip_tokenizer_fixtures.py")
    path = os.path.join(DATA, "cases.json")
    with open(path, "w", encoding="ascii", newline="\n") as f:  # one case a line
        f.write('{"about": %s,\n "context_length": %d,\n "cases": [\n'
                % (json.dumps(about), CONTEXT_LENGTH))
        f.write(",\n".join(json.dumps(c, ensure_ascii=True, separators=(",", ":")) for c in cases))
        f.write("\n]}\n")
    print("wrote %s: %d texts, %d too long for %d, %d ids in all"
          % (os.path.normpath(path), len(cases), sum(c["too_long"] for c in cases), CONTEXT_LENGTH,
             sum(len(c["ids"]) for c in cases)))


if __name__ == "__main__":
    main()
