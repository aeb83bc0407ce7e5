// tessera-serve's page (GET /, apps/serve/page.hpp) used as a person would, in headless
// Chromium driven by the npm package playwright-core: captions typed, files (images, WAVs)
// picked, "Compare" clicked, the matrix read from the page. For tests/serve/test_serve.cpp
// (Page.filled_in_by_chromium), which compares it with the server's own POST /similarity.
//
//   npm install --no-audit --no-fund --prefix build/browser-test playwright-core@1.65.2
//   node tests/serve/page_test.mjs build/browser-test /usr/bin/chromium http://127.0.0.1:PORT \
//     SCREENSHOT.png "$(printf 'a caption\nanother')" IMAGE WAV
//
// The captions are one argument, typed as is (one per line). Prints one line of JSON:
// {"info": the model line, "names": the matrix's row names, "scores": its cells as the page
// shows them (three decimals), row by row}; saves a PNG screenshot of the whole page. Any
// failure (the page's own error line included) goes to stderr with exit status 1. Every
// wait is bounded.

import { createRequire } from "node:module";
import path from "node:path";

const [prefix, chromium, url, screenshot, captions, ...files] = process.argv.slice(2);
if (captions === undefined) {
  console.error("usage: node page_test.mjs <npm prefix dir> <chromium> <server url> <screenshot.png> <captions> <file>...");
  process.exit(1);
}
// playwright-core lives in <prefix>/node_modules, not beside this script
const { chromium: launcher } = createRequire(path.resolve(prefix, "package.json"))("playwright-core");

const timeout = 30_000;  // ms, for each step; the C++ test bounds the whole run too

// CI runs as root, where Chromium refuses to start with its sandbox.
const browser = await launcher.launch({ executablePath: chromium, headless: true, args: ["--no-sandbox"], timeout });
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 700 } });
  page.setDefaultTimeout(timeout);
  page.on("pageerror", error => console.error("page error: " + error.message));
  await page.goto(url + "/");
  await page.fill("#captions", captions);
  await page.setInputFiles("#files", files);
  // the page lists each file it took
  await page.waitForFunction(n => document.querySelectorAll("#list li").length === n, files.length);
  // the model line comes from GET /info, asked for when the page loads
  await page.waitForFunction(() => !document.getElementById("info").textContent.startsWith("loading"));
  await page.click("#compare");
  // done: the matrix, or the page's error line
  await page.waitForFunction(() => document.getElementById("result").dataset.done === "1" ||
                                   document.getElementById("status").textContent !== "");
  const error = await page.textContent("#status");
  if (error) throw new Error("the page says: " + error);
  const shown = await page.$eval("#matrix", table => ({
    columns: Array.from(table.rows[0].cells).slice(1).map(cell => cell.textContent),
    rows: Array.from(table.rows).slice(1).map(row => ({
      name: row.cells[0].textContent,
      cells: Array.from(row.cells).slice(1).map(cell => cell.textContent),
    })),
  }));
  if (JSON.stringify(shown.columns) !== JSON.stringify(shown.rows.map(r => r.name))) {
    throw new Error("the matrix's columns " + JSON.stringify(shown.columns) + " are not its rows");
  }
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({
    info: await page.textContent("#info"),
    names: shown.columns,
    scores: shown.rows.map(r => r.cells.map(Number)),
  }));
} catch (error) {
  console.error("page_test.mjs: " + error.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
