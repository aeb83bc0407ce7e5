#!/usr/bin/python3
"""Writes the manifest cases of the catalogue of bad inputs: tests/bad_inputs/manifest/.

Run from anywhere (standard library only, deterministic); make_bad_inputs.py runs it and puts
CASES into catalogue.json:

    /usr/bin/python3 tests/bad_inputs/make_manifest_cases.py

Each file is a training manifest (docs/data.md; include/tessera/io/manifest.hpp) with one
defect, a few lines long. Its catalogue entry has the option "--manifest", the key options it
is read with ("args": tessera-train's --text-key, --image-key, --label-key, --id-key) and the
whole error after "path: ", which names the line and, where the CSV reader has one, the
column. apps/bad_inputs_tests.cmake runs tessera-train on each, tests/test_bad_inputs.cpp
read_manifest with the same options. No file named in a manifest needs to exist: each is
refused while the manifest is read, before any item is loaded.
"""

import json
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))

# The columns (keys) most cases are read with: open_clip's two, under tessera's names.
KEYS = ["--text-key", "caption", "--image-key", "image"]
HEADER = "caption,image\n"
ROW = "a red square,red.png\n"
LINE = '{"caption": "a red square", "image": "red.png"}\n'

CASES = []


def write(name, data):
    """Writes manifest/<name>: str as UTF-8, bytes as they are."""
    full = os.path.join(HERE, "manifest", name)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def entry(cls, name, error, args=KEYS):
    CASES.append({"class": cls, "file": "manifest/" + name, "option": "--manifest",
                  "args": list(args), "error": error})


def case(cls, name, data, error, args=KEYS):
    """The manifest manifest/<name> holding `data`, refused with `error` after "path: "."""
    write(name, data)
    entry(cls, name, error, args)


def main():
    shutil.rmtree(os.path.join(HERE, "manifest"), ignore_errors=True)
    CASES.clear()
    quote_rule = "(a quote inside a quoted field is written twice: \"\")"

    # -- CSV records that are not RFC 4180's --
    case("malformed CSV", "unclosed_quote.csv", HEADER + ROW + '"a red square,red.png\n',
         'line 3, column "caption": a quoted field is not closed before the end of the file '
         + quote_rule)
    case("malformed CSV", "text_after_quote.csv", HEADER + '"a red" square,red.png\n',
         'line 2, column "caption": text after the closing quote of a quoted field ' + quote_rule)
    case("malformed CSV", "lone_cr.csv", HEADER + "a red\rsquare,red.png\n",
         'line 2, column "caption": a carriage return not followed by a line feed outside quotes '
         "(lines end with LF or CRLF; quote a field that holds a CR)")
    case("malformed CSV", "extra_field.csv", HEADER + ROW + "a blue circle,blue.png,extra\n",
         "line 3: 3 fields, where the header (line 1) has 2 columns")
    case("malformed CSV", "missing_field.tsv", "caption\timage\na red square\n",
         "line 2: 1 field, where the header (line 1) has 2 columns")
    case("malformed CSV", "blank_line.csv", HEADER + ROW + "\n" + ROW,
         "line 3: a blank line, where the header (line 1) has 2 columns (blank lines are allowed "
         "only at the end of the file)")

    # -- columns and keys the options name --
    case("manifest columns", "missing_column.csv", "title,filepath\n" + ROW,
         'line 1: no column "caption" (named by --text-key); the header '
         'has "title", "filepath"')
    case("manifest columns", "duplicate_column.csv", "caption,image,caption\na,red.png,b\n",
         'line 1: column "caption" appears twice in the header (columns 1 and 3)')
    case("manifest columns", "key_on_no_line.jsonl", '{"caption": "a red square"}\n' * 2,
         'no line has the key "image" (named by --image-key)')

    # -- nothing to train on --
    case("empty", "empty.csv", "", "the manifest is empty: expected a header row naming its columns")
    case("empty", "header_only.csv", HEADER, "the manifest has no items")
    case("manifest items", "no_modality.jsonl", LINE + '{"caption": null, "image": null}\n',
         'line 2: the item has no modality (keys "caption", "image" all empty or absent)')
    case("manifest items", "empty_path.jsonl", LINE + '{"caption": "a blue circle", "image": ""}\n',
         'line 2, key "image": an empty path (write null or leave the key out for an item '
         "without it)")
    case("manifest items", "empty_id.csv", "caption,image,id\na red square,red.png,7\n"
         "a blue circle,blue.png,\n",
         'line 3, column "id": an empty id (leave the id column out to number items by line)',
         KEYS + ["--id-key", "id"])

    # -- text that is not UTF-8 --
    case("not UTF-8", "not_utf8.csv", HEADER.encode() + b"a red \xff square,red.png\n",
         'line 2, column "caption": not UTF-8: invalid UTF-8 byte at index 6: 0xFF')

    # -- sizes over ManifestLimits --
    # an absolute path, so that the length does not depend on where the manifest is
    long_path = "/" + "a" * 4999
    case("over a limit", "long_path.csv", HEADER + "a red square," + long_path + "\n",
         'line 2, column "image": a path of 5000 bytes, more than 4096, the limit set by '
         "tessera::ManifestLimits::max_path_bytes (Linux's PATH_MAX)")
    case("over a limit", "too_many_fields.csv", HEADER + "," * 2000 + "\n",
         "line 2: more than 1024 fields, the limit set by tessera::ManifestLimits::max_fields")

    # -- not a manifest at all --
    case("unknown format", "unknown_format.txt", HEADER + ROW,
         'cannot tell the manifest\'s format from the extension ".txt": expected .csv, .tsv, '
         ".jsonl or .ndjson, or set --manifest-format")
    write("directory.csv/README", "This directory stands where a manifest belongs.\n")
    entry("directory as a file", "directory.csv", "cannot read: is a directory, expected a file")

    # -- JSONL lines that are not one JSON object of the right types --
    case("malformed JSON", "array_line.jsonl", LINE + "[1]\n",
         "line 2: expected a JSON object, got [1]")
    case("malformed JSON", "trailing_comma.jsonl",
         LINE + '{"caption": "a blue circle", "image": "blue.png",}\n',
         "line 2: not valid JSON: syntax error while parsing object key - unexpected '}'; "
         "expected string literal")
    case("malformed JSON", "duplicate_key.jsonl",
         '{"caption": "a red square", "image": "red.png", "caption": "a blue circle"}\n',
         'line 1: key "caption" appears twice in one object')
    case("malformed JSON", "nested_too_deep.jsonl",
         '{"caption": "a red square", "image": "red.png", "x": ' + "[" * 100 + "]" * 100 + "}\n",
         "line 1: nested deeper than 64 levels")
    case("wrong type", "image_number.jsonl", LINE + '{"caption": "a blue circle", "image": 5}\n',
         'line 2, key "image": expected a string (a path) or null, got 5')
    case("wrong type", "label_fraction.jsonl",
         '{"caption": "a red square", "image": "red.png", "label": 1.5}\n',
         'line 1, key "label": expected a string, an integer or null, got 1.5',
         KEYS + ["--label-key", "label"])

    for line in CASES:
        print(f"  {line['file']}: {line['error'][:70]}")
    return CASES


if __name__ == "__main__":
    main()
