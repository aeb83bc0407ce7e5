#!/usr/bin/env node
// The speed of the reference GPT-2 encoder (npm gpt-3-encoder) on the conformance corpus,
// to compare with bench/bench_tokenizer.cpp (BM_gpt2_encode) on the same text:
//
//   node tests/reference/gpt2_bench.js build/gpt2-reference [seconds]
//
// The argument is the npm prefix of tests/reference/gpt2_reference.js. MB/s counts the
// corpus' UTF-8 bytes (after unescaping) per second, one thread. "cold" is the first pass
// (the package's word cache empty), "warm" the passes after it, as in a long-running program.

'use strict';
const fs = require('fs');
const path = require('path');

const prefix = process.argv[2];
const seconds = Number(process.argv[3] || 3);
if (!prefix) {
  console.error('usage: node tests/reference/gpt2_bench.js <npm prefix dir> [seconds]');
  process.exit(1);
}
const packageDir = path.resolve(prefix, 'node_modules', 'gpt-3-encoder');
const { encode } = require(packageDir);
const version = JSON.parse(fs.readFileSync(path.join(packageDir, 'package.json'), 'utf-8')).version;

const text = fs.readFileSync(path.resolve(__dirname, '..', 'data', 'text', 'corpus.txt'), 'utf-8');
const lines = text.slice(0, -1).split('\n').map(line =>
  line.replace(/\\(.)/g, (_, e) => (e === 'n' ? '\n' : e === 'r' ? '\r' : e)));
const bytes = lines.reduce((n, line) => n + Buffer.byteLength(line, 'utf-8'), 0);

function pass() {
  let tokens = 0;
  for (const line of lines) tokens += encode(line).length;
  return tokens;
}

let start = process.hrtime.bigint();
const tokens = pass();
const cold = Number(process.hrtime.bigint() - start) / 1e9;

let passes = 0;
start = process.hrtime.bigint();
let elapsed = 0;
while (elapsed < seconds) {
  pass();
  passes++;
  elapsed = Number(process.hrtime.bigint() - start) / 1e9;
}
const mb = bytes / 1e6;
console.log(`gpt-3-encoder ${version} on node ${process.version}: corpus ${lines.length} lines, ` +
            `${bytes} bytes, ${tokens} tokens`);
console.log(`  cold (first pass): ${(mb / cold).toFixed(2)} MB/s`);
console.log(`  warm (${passes} passes): ${(mb * passes / elapsed).toFixed(2)} MB/s, ` +
            `${(tokens * passes / elapsed / 1e6).toFixed(2)} M tokens/s`);
