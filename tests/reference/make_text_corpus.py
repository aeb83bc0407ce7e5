#!/usr/bin/env python3
"""Writes tests/data/text/corpus.txt, the text tokenizers' conformance corpus.

Each line of the file is one test case. A case that contains a newline or a carriage return
is written with two-character escapes, which every reader undoes the same way:
"\\n" -> LF, "\\r" -> CR, "\\\\" -> one backslash (any other backslash sequence is an error).
Every other character, tabs and the other control characters included, is written as is.
The file is UTF-8 without a byte order mark, lines end with LF, and the file ends with one.

Deterministic: a fixed seed and no dependency beyond the standard library, so running it
again writes the same bytes. From the repository root:

    python3 tests/reference/make_text_corpus.py

Only characters assigned in Unicode 15.0 or earlier are used, so the system ICU (72) and
Node's newer ICU agree on every character's category.
"""

import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "text", "corpus.txt")

rng = random.Random(20261122)

WORDS = """the of and to in is was he for it with as his on be at by had are but from or have an
they which one you were her all she there would their we him been has when who will more no if
out so said what up its about into than them can only other new some could time these two may
then do first any my now such like our over man me even most made after also did many before
must through back years where much your way well down should because each just those people
how too little state good very make world still own see men work long get here between both
life being under never day same another know while last might us great old year off come since
against go came right used take three language model token encoder transformer attention
weights gradient dataset tokenizer vocabulary merge byte unicode character sentence paragraph
quick brown fox jumps lazy dog hello world python rust javascript function return value
""".split()

FIRST_NAMES = ["Alice", "Bob", "Carol", "Dave", "Eve", "Mallory", "Trent", "Peggy", "Victor",
               "Walter", "Zoë", "José", "Björn", "Søren", "François", "Łukasz", "Ιωάννης", "Дмитрий"]

CONTRACTIONS = ["it's", "It's", "IT'S", "It'S", "we'll", "We'LL", "WE'LL", "they're", "THEY'RE",
                "They'Re", "I've", "I'VE", "I'm", "I'M", "i'm", "you'd", "YOU'D", "don't", "DON'T",
                "Don'T", "can't", "won't", "shouldn't've", "y'all", "rock'n'roll", "'s", "'S",
                "'t", "'T", "'re", "'RE", "'ve", "'m", "'M", "'ll", "'LL", "'Ll", "'d", "'D",
                "''s", "'''", "' s", "O'Brien", "o'clock", "ma'am", "’s", "it’s", "‘quoted’",
                "'sup", "'tis", "'twas", "'em", "'90s", "'s'", "'ss", "'lll", "'dd", "'red"]

LATIN = ["café", "naïve", "Straße", "STRASSE", "Ångström", "façade", "Œuvre", "œuf", "Dvořák",
         "Łódź", "Türkçe", "İstanbul", "ıstakoz", "résumé", "piñata", "São Paulo", "Ærøskøbing",
         "fjörður", "Þór", "ðæt", "crème brûlée", "über", "Müller", "Kraków", "Čeština", "Ĳssel",
         "ﬁnancial ﬂow", "Ǆemal", "ǅ", "ǆ", "æ", "ß", "ẞ", "Ő", "ű", "ą", "ę", "ł", "ñ", "ç"]

GREEK = ["Καλημέρα κόσμε", "ΟΔΟΣ", "οδός", "Σίσυφος", "ΣΊΣΥΦΟΣ", "αβγδεζηθικλμνξοπρστυφχψω",
         "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ", "ἀρχή", "ᾳ", "Ἀθῆναι", "π ≈ 3.14", "μ-ετα", "ς"]

CYRILLIC = ["Привет, мир!", "Съешь же ещё этих мягких французских булок", "ЁЖИК", "ёжик",
            "Україна", "Ґанок", "Српски", "Љубав", "Қазақша", "Ӝ", "щётка", "ЩЁТКА", "й"]

CJK = ["你好，世界！", "我爱自然语言处理。", "東京都", "こんにちは世界", "カタカナとひらがな",
       "ｶﾀｶﾅ", "한국어 텍스트", "안녕하세요", "漢字かな交じり文", "「引用」『二重』", "中文，标点；符号：",
       "〇一二三四五六七八九十", "龍", "𠀀𠀁", "ー", "々", "〜", "・", "ㄅㄆㄇ"]

ARABIC = ["مرحبا بالعالم", "السَّلَامُ عَلَيْكُمْ", "العربية ١٢٣٤", "עברית", "שָׁלוֹם", "فارسی ۱۲۳",
          "اردو", "ـــ", "؟", "،"]

INDIC = ["नमस्ते दुनिया", "हिन्दी", "संस्कृतम्", "क्षत्रिय", "१२३४५", "বাংলা", "தமிழ்", "తెలుగు",
         "ગુજરાતી", "ਪੰਜਾਬੀ", "ไทย", "สวัสดีครับ", "ລາວ", "ພາສາ", "မြန်မာ", "ខ្មែរ", "ᠮᠣᠩᠭᠣᠯ"]

EMOJI = ["😀", "😂", "🤖", "👍", "👍🏽", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸", "🇯🇵", "🇩🇪🇫🇷",
         "❤️", "❤", "✨", "🔥", "1️⃣", "#️⃣", "🧑🏾‍🚀", "🐕", "🎉🎉🎉", "☕", "⚽", "©", "®", "™",
         "🏴‍☠️", "👁️‍🗨️", "🤷‍♀️", "🙋🏻‍♂️", "🏴󠁧󠁢󠁳󠁣󠁴󠁿"]

COMBINING = ["e\u0301", "a\u0308", "n\u0303", "A\u030A", "o\u0302\u0323", "Z\u0351\u0352\u0353",
             "i\u0307", "\u0301", "\u0301\u0301", " \u0301", "x\u20DD", "1\u20E3", "a\u0345",
             "\u0345", "ᾼ", "q\u0332u\u0332", "Ḁ\u0300"]

MATH = ["∑_{i=1}^{n} x_i", "∫₀¹ f(x) dx", "a ≤ b ≥ c ≠ d", "∞", "√2", "π", "∂f/∂x", "∇·E = ρ/ε₀",
        "A ⊂ B ⊆ C", "∀x ∃y", "ℝ ℕ ℤ ℚ ℂ", "x² + y³ = z⁴", "½ ¼ ¾", "Ⅻ Ⅳ ⅷ", "⅓", "０１２３",
        "٣", "①②③", "⑴", "10⁻⁹", "±5%", "×÷", "→ ← ↔ ⇒", "∧ ∨ ¬", "⌈x⌉ ⌊y⌋", "𝔸𝕓𝒞𝓭", "𝟘𝟙𝟚",
        "°C", "µs", "Ω", "Å", "K", "ℏ"]

SPACES = ["\u00A0", "\u2002", "\u2003", "\u2009", "\u200A", "\u202F", "\u205F", "\u3000",
          "\u1680", "\uFEFF", "\u2028", "\u2029", "\u0085", "\u200B", "\u180E", "\u200C", "\u200D",
          "\u2060", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\t", "  ", "   "]

PUNCT = ["!", "!!", "!!!", "?", "?!", "...", "…", "--", "---", "—", "–", "***", "###", "@@",
         "$$", "%", "^^", "&&", "||", "~", "`", "``", "'", "\"", "\"\"", ";", ":", "::", ",", ".",
         "(", ")", "[]", "{}", "<>", "<|endoftext|>", "<|startoftext|>", "/", "\\", "\\\\", "_",
         "__init__", "=", "==", "===", "!=", "->", "=>", "<<", ">>", "+", "++", "-", "*", "**",
         "#!", "¿", "¡", "«", "»", "„", "“", "”", "‘", "’", "§", "¶", "†", "‡", "•", "·", "¨"]

CODE = [
    "def encode(self, text: str) -> list[int]:",
    "    return [self.encoder[t] for t in tokens]",
    "\tif (x != nullptr && *x > 0) { return x->next; }",
    "for (int i = 0; i < n; ++i) sum += a[i] * b[i];",
    "const pat = /'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+/gu;",
    "#include <vector>",
    "std::vector<std::int64_t> ids = tok.encode(\"hello\");",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "<div class=\"container\"><p>Hello &amp; welcome</p></div>",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
    "x = lambda a, b: a**2 + b**2  # comment",
    "fn main() { println!(\"{}\", 42); }",
    "if [ -f \"$FILE\" ]; then echo \"exists\"; fi",
    "git commit -m 'Fix: handle edge-case (#1234)'",
    "C:\\Users\\name\\Documents\\file.txt",
    "printf(\"%d\\n\", value);",
    "    \t    mixed indentation",
    "\t\t\tdeeply->nested[0].value",
    "a_b_c = snake_case_name; camelCaseName = PascalCase;",
    "0x1F600 0b1010 0o777 1e-10 6.02e23 -3.5f 1_000_000",
    "http://example.com/path?query=1&other=two#frag",
    "https://www.wikipedia.org/wiki/Byte_pair_encoding",
    "mailto:someone@example.org",
    "ftp://files.example.net/pub/file-1.2.3.tar.gz",
    "@user #hashtag $TICKER",
    "../../relative/path/../to/file.cpp:123:45: error: expected ';'",
    "$ cmake --build build -j8 && ctest --output-on-failure",
    "   ",
    "return;   ",
    "}",
]


def sentence():
    n = rng.randint(3, 18)
    words = [rng.choice(WORDS) for _ in range(n)]
    if rng.random() < 0.3:
        words[rng.randrange(n)] = rng.choice(FIRST_NAMES)
    if rng.random() < 0.3:
        words[rng.randrange(n)] = rng.choice(CONTRACTIONS)
    if rng.random() < 0.2:
        words[rng.randrange(n)] = str(rng.randint(0, 10 ** rng.randint(1, 12)))
    text = " ".join(words)
    text = text[0].upper() + text[1:]
    return text + rng.choice([".", ".", ".", "!", "?", "...", "", ";", " :)", "!!"])


def prose_line():
    return " ".join(sentence() for _ in range(rng.randint(1, 3)))


def number_line():
    choices = [
        lambda: str(rng.randint(0, 10 ** rng.randint(1, 25))),
        lambda: f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 8)}f}",
        lambda: f"{rng.randint(1, 12)}/{rng.randint(1, 28)}/{rng.randint(1900, 2100)}",
        lambda: f"+1 ({rng.randint(100, 999)}) {rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
        lambda: f"{rng.randint(1, 999):,}".replace(",", rng.choice([",", ".", " ", "'"])) + ",000",
        lambda: f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
        lambda: f"v{rng.randint(0, 9)}.{rng.randint(0, 99)}.{rng.randint(0, 999)}-rc{rng.randint(1, 9)}",
        lambda: f"${rng.randint(0, 99999)}.{rng.randint(0, 99):02d}",
        lambda: f"{rng.randint(0, 100)}%",
        lambda: f"0x{rng.randint(0, 2 ** 64):X}",
        lambda: " ".join(str(rng.randint(0, 9)) for _ in range(rng.randint(2, 12))),
        lambda: f"{rng.random():.3e}",
    ]
    return " ".join(rng.choice(choices)() for _ in range(rng.randint(1, 6)))


def whitespace_line():
    parts = []
    for _ in range(rng.randint(1, 6)):
        parts.append(rng.choice([rng.choice(WORDS), rng.choice(PUNCT), str(rng.randint(0, 99)),
                                 rng.choice(LATIN)]))
        parts.append(rng.choice([" " * rng.randint(1, 12), "\t" * rng.randint(1, 3), " \t ",
                                 "\t ", " \t", "\n", "\n\n", " \n", "\n ", "\r\n", "  \n  ",
                                 rng.choice(SPACES), rng.choice(SPACES) + " "]))
    line = "".join(parts)
    mode = rng.random()
    if mode < 0.25:
        line = " " * rng.randint(1, 5) + line
    elif mode < 0.5:
        line = line + " " * rng.randint(1, 5)
    elif mode < 0.6:
        line = line + "\t"
    return line


FUZZ_POOL = (list("abcXYZ019 '\t.,!?-_/\\\"") + ["\n", "\r", "'s", "'S", "'ll", "'LL"] +
             LATIN[:12] + ["α", "Ω", "я", "Ж", "中", "あ", "한", "ع", "ह", "ि", "्", "ก", "ั"] +
             EMOJI[:12] + COMBINING[:8] + MATH[12:22] + SPACES + PUNCT[:30] +
             ["\U000F0000", "\uE000", "\uFFFD", "\uFFFF", "\x01", "\x7f", "\x80", "\x9f"])


def fuzz_line():
    return "".join(rng.choice(FUZZ_POOL) for _ in range(rng.randint(1, 40)))


def script_line():
    pool = rng.choice([LATIN, GREEK, CYRILLIC, CJK, ARABIC, INDIC, EMOJI, COMBINING, MATH])
    parts = []
    for _ in range(rng.randint(1, 8)):
        parts.append(rng.choice(pool))
        if rng.random() < 0.3:
            parts.append(rng.choice(WORDS))
        if rng.random() < 0.2:
            parts.append(rng.choice(PUNCT))
        if rng.random() < 0.15:
            parts.append(str(rng.randint(0, 999)))
    sep = rng.choice([" ", " ", " ", "", ", ", "  ", "\t"])
    return sep.join(parts)


def escape(text):
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def fixed_cases():
    """Hand-picked edge cases, written unescaped; escape() is applied to them."""
    cases = [
        "hello world", "Hello, world!", "", " ", "  ", "\t", "\n", "\n\n", "\r\n", " \n ",
        "a", "A", "'", "''", "'s", "'S", "'ll", "'LL", " 's", "x's", "X'S", "x'S", "it''s",
        "hello  world", "hello   world", "hello    world", "hello\tworld", "hello\t\tworld",
        "hello \tworld", "hello\t world", "hello\nworld", "hello \nworld", "hello\n world",
        "hello \n world", "hello\n\nworld", "hello\n\n\nworld", "trailing space ",
        "trailing spaces   ", " leading", "   leading three", "\ttab start", "tab end\t",
        "a  b  c", "a\u00A0b", "a\u00A0\u00A0b", "a \u00A0b", "a\u3000b", "a\u2028b", "a\u0085b",
        "a\uFEFFb", "a\u200Bb", "a\u180Eb", "a\u1680b", "a\x0bb", "a\x0cb", "a\x1cb",
        "1234567890", "123 456", " 123", "3.14", "-42", "1,000,000", "1st 2nd 3rd 4th",
        "ab12cd34", "x²", "½", "Ⅻ", "٣٤٥", "１２３", "①",
        "!!!", "?!?!", "...", "—", " !!", " ...", "a!!b", "a!!!!", "!!!!!!!!!!!!!!!!!!!!",
        "=" * 80, "-" * 40, "_" * 20, " " * 40, "\t" * 10, "\n" * 5, " \n" * 4,
        "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
        "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft",
        "12345678901234567890123456789012345678901234567890",
        "<|endoftext|>", "<|endoftext|> hello", "hello<|endoftext|>", "<|startoftext|>a dog",
        "a dog", "A Dog", "A   DOG  ", "The quick brown fox jumps over the lazy dog.",
        "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG!",
        "😀", "😀😀", " 😀", "a😀b", "👨‍👩‍👧‍👦", "🇺🇸🇬🇧", "🏳️‍🌈", "👍🏽", "1️⃣",
        "e\u0301", "cafe\u0301", "caf\u00e9", "\u0301", " \u0301", "a\u0345",
        "İ", "ı", "ǅ", "ΣΑΣ", "ὈΔΥΣΣΕΎΣ", "ﬁ", "ß", "ẞ",
        "中文", "中 文", "日本語のテキスト", "한국어", "العربية", "हिन्दी", "ไทย",
        "\U000F0000", "\uE000", "\uFFFD", "\x00", "\x01\x02\x03", "\x7f",
        "\\", "\\\\", "\\n", "C:\\path\\to", "back\\slash n",
        "https://example.com/a_b-c?d=e&f=g#h", "user@example.com",
    ]
    for c in CONTRACTIONS:
        cases += [c, "word" + c, c.upper(), " " + c]
    for group in (LATIN, GREEK, CYRILLIC, CJK, ARABIC, INDIC, EMOJI, COMBINING, MATH, PUNCT):
        cases += group
    for s in SPACES:
        cases += [s, "a" + s + "b", "a " + s + "b", "a" + s + " b", s + s, "x" + s]
    cases += CODE
    return cases


def main():
    lines = [escape(c) for c in fixed_cases()]
    generators = [(prose_line, 650), (number_line, 150), (whitespace_line, 300),
                  (fuzz_line, 600), (script_line, 400)]
    for generate, count in generators:
        lines += [escape(generate()) for _ in range(count)]
    # A few long lines (paragraphs), for the benchmark and for long pre-tokens.
    for _ in range(20):
        lines.append(escape(" ".join(prose_line() for _ in range(rng.randint(5, 15)))))
    for line in lines:
        assert "\n" not in line and "\r" not in line, repr(line)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "wb") as out:
        out.write(("\n".join(lines) + "\n").encode("utf-8"))
    print(f"wrote {os.path.normpath(OUT)}: {len(lines)} lines, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
