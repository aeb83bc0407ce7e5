#pragma once
// The page tessera-serve answers at GET / (docs/serving.md, "The page"): try the model by
// hand. Type captions (one per line), drop or pick images, WAVs or videos; "Compare" sends
// them all to POST /similarity (every input against every other) and shows the matrix of
// cosine similarities, each cell shaded by its value. One static HTML file, no outside
// resources (a loopback server must work offline); the API key, when the server asks for one,
// is typed into the page and sent as Authorization: Bearer.

namespace tessera::serve {

inline constexpr const char* index_html = R"HTML(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tessera-serve</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2em; max-width: 60em; color: #222; }
  h1 { font-size: 1.4em; }
  textarea { width: 100%; height: 6em; font: inherit; }
  #drop { border: 2px dashed #888; padding: 1.5em; text-align: center; margin: 1em 0; }
  #drop.over { background: #eef; }
  table { border-collapse: collapse; margin-top: 1em; }
  td, th { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; font-variant-numeric: tabular-nums; }
  th { font-weight: normal; text-align: left; max-width: 14em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  #status { margin-top: 1em; color: #a00; }
  #info { color: #555; }
</style>
</head>
<body>
<h1>tessera-serve</h1>
<p id="info">loading the model's description...</p>
<label for="captions">Captions, one per line</label>
<textarea id="captions" placeholder="a dog barking"></textarea>
<div id="drop">Drop images, WAV files or videos here, or <input type="file" id="files" multiple></div>
<ul id="list"></ul>
<p><label>API key (if the server asks for one) <input type="password" id="key"></label></p>
<button id="compare">Compare</button>
<div id="status"></div>
<div id="result"></div>
<script>
"use strict";
const files = [];
const kinds = { image: /^image\//, audio: /^audio\//, video: /^video\// };
function kindOf(file) {
  for (const [kind, pattern] of Object.entries(kinds)) if (pattern.test(file.type)) return kind;
  if (/\.(png|jpe?g|bmp|ppm|pgm)$/i.test(file.name)) return "image";
  if (/\.wav$/i.test(file.name)) return "audio";
  if (/\.(y4m|mp4|webm|avi|mkv|mov)$/i.test(file.name)) return "video";
  return null;
}
function addFiles(list) {
  for (const file of list) {
    const kind = kindOf(file);
    if (!kind) { status(file.name + ": not an image, WAV or video"); continue; }
    files.push({ file, kind });
    const item = document.createElement("li");
    item.textContent = kind + ": " + file.name;
    document.getElementById("list").appendChild(item);
  }
}
function status(text) { document.getElementById("status").textContent = text; }
function base64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.slice(reader.result.indexOf(",") + 1));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}
function headers() {
  const h = { "Content-Type": "application/json" };
  const key = document.getElementById("key").value;
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}
async function compare() {
  status("");
  const samples = [], names = [];
  for (const line of document.getElementById("captions").value.split("\n")) {
    if (line.trim()) { samples.push({ text: line.trim() }); names.push(line.trim()); }
  }
  for (const { file, kind } of files) { samples.push({ [kind]: await base64(file) }); names.push(file.name); }
  if (samples.length === 0) { status("give a caption or a file first"); return; }
  const response = await fetch("/similarity", { method: "POST", headers: headers(),
                                                body: JSON.stringify({ a: samples, b: samples }) });
  const body = await response.json();
  if (!response.ok) { status(response.status + ": " + body.error.message); return; }
  const table = document.createElement("table");
  table.id = "matrix";
  const head = table.insertRow();
  head.appendChild(document.createElement("th"));
  for (const name of names) { const th = document.createElement("th"); th.textContent = name; head.appendChild(th); }
  body.scores.forEach((row, i) => {
    const tr = table.insertRow();
    const th = document.createElement("th");
    th.textContent = names[i];
    tr.appendChild(th);
    for (const score of row) {
      const td = tr.insertCell();
      td.textContent = score.toFixed(3);
      const shade = Math.round(255 - 120 * Math.max(0, score));
      td.style.background = "rgb(" + shade + "," + shade + ",255)";
    }
  });
  const result = document.getElementById("result");
  result.replaceChildren(table);
  result.dataset.done = "1";
}
document.getElementById("compare").addEventListener("click", () => compare().catch(e => status(String(e))));
document.getElementById("files").addEventListener("change", e => addFiles(e.target.files));
const drop = document.getElementById("drop");
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => { e.preventDefault(); drop.classList.remove("over"); addFiles(e.dataTransfer.files); });
fetch("/info", { headers: headers() }).then(r => r.json()).then(info => {
  document.getElementById("info").textContent = info.model
    ? "model " + info.model.name + " (" + info.model.kind + "): " + info.model.modalities.join(", ") +
      "; embeddings of " + info.model.embedding_size + " values"
    : "the server asks for an API key: type it below";
}).catch(() => {});
</script>
</body>
</html>
)HTML";

}  // namespace tessera::serve
