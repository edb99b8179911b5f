"""The web page at ``/``: plain HTML and a little JavaScript, no build step, no external URL.

Drop a photo (or pick one): the page shows the original, sends it to ``POST /protect`` and shows the protected
photo (with a download link); with the receiver's key typed in, it sends the protected PNG to ``POST /recover``
and shows the recovered photo beside them. The key stays in the page (a password field), sent only as the
``Authorization`` header of ``/recover``.
"""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ipmn serve: protect a photo</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; background: #fafafa; }
  h1 { font-size: 1.4rem; margin: 0 0 .3rem; }
  p.lead { margin: 0 0 1rem; color: #555; }
  #drop { border: 2px dashed #888; border-radius: 10px; padding: 1.5rem; text-align: center; background: #fff;
          cursor: pointer; }
  #drop.over { border-color: #1a73e8; background: #eef4ff; }
  .controls { margin: 1rem 0; display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; }
  .row { display: flex; gap: 1rem; flex-wrap: wrap; }
  figure { margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: .6rem; width: 260px; }
  figure img { width: 100%; height: 240px; object-fit: contain; image-rendering: pixelated; background: #eee; }
  figcaption { font-size: .9rem; margin-top: .3rem; }
  #status { font-size: .9rem; color: #555; min-height: 1.2em; }
  #status.error { color: #b00020; }
</style>
</head>
<body>
<h1>ipmn serve: protect a photo</h1>
<p class="lead">The service swaps the face for another identity, embeds the owner's watermark and hides the real
face inside; the receiver's key takes the mask off again.</p>
<div id="drop" tabindex="0">Drop a photo here, or click to choose one
  <input id="file" type="file" accept="image/*" hidden></div>
<div class="controls">
  <label>Receiver's key <input id="key" type="password" autocomplete="off" size="34"
    placeholder="optional: to see the recovered photo"></label>
  <a id="download" href="#" download="protected.png" hidden>download the protected PNG</a>
</div>
<div id="status" role="status"></div>
<div class="row">
  <figure><img id="original" alt="original"><figcaption>original</figcaption></figure>
  <figure><img id="protected" alt="protected"><figcaption>protected (what is shared)</figcaption></figure>
  <figure><img id="recovered" alt="recovered"><figcaption>recovered (receiver's key)</figcaption></figure>
</div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const status = (text, error) => { $("status").textContent = text; $("status").className = error ? "error" : ""; };
async function post(path, blob, key) {
  const headers = { "Content-Type": blob.type || "application/octet-stream" };
  if (key) headers["Authorization"] = "Bearer " + key;
  const answer = await fetch(path, { method: "POST", body: blob, headers });
  if (!answer.ok) {
    let message = answer.status + " " + answer.statusText;
    try { message = (await answer.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(path + ": " + message);
  }
  return answer.blob();
}
async function run(file) {
  for (const id of ["protected", "recovered"]) $(id).removeAttribute("src");
  $("download").hidden = true;
  $("original").src = URL.createObjectURL(file);
  try {
    status("protecting ...");
    const protectedPng = await post("/protect", file);
    $("protected").src = URL.createObjectURL(protectedPng);
    $("download").href = $("protected").src;
    $("download").hidden = false;
    const key = $("key").value.trim();
    if (!key) { status("protected; type the receiver's key to see the recovered photo"); return; }
    status("recovering ...");
    $("recovered").src = URL.createObjectURL(await post("/recover", protectedPng, key));
    status("done");
  } catch (err) { status(err.message, true); }
}
$("drop").addEventListener("click", () => $("file").click());
$("file").addEventListener("change", () => { if ($("file").files.length) run($("file").files[0]); });
$("drop").addEventListener("dragover", (e) => { e.preventDefault(); $("drop").classList.add("over"); });
$("drop").addEventListener("dragleave", () => $("drop").classList.remove("over"));
$("drop").addEventListener("drop", (e) => {
  e.preventDefault(); $("drop").classList.remove("over");
  if (e.dataTransfer.files.length) run(e.dataTransfer.files[0]);
});
</script>
</body>
</html>
"""
