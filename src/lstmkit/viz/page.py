"""The gate viewer: one self-contained HTML page (data, script and style inline; it loads nothing).

A reader picks a layer, a cell and a quantity; the text is coloured by that cell's value at each character.
Moving over a character shows every gate and state of the chosen cell at that step, a strip of all the cells
at that step (click one to pick it), and the chosen cell's gates over the whole text with the step marked.
A link can open a chosen view: ``index.html#layer=0&cell=12&q=f&step=40`` (``layer`` counts layers and
directions together, in the order of the layer menu). When the script has drawn the page it sets
``<body data-ready="1">`` (what the browser test waits for).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import atomic_write

__all__ = ["page_data", "render_page", "write_page"]

NAMES = ("i", "f", "g", "o", "c", "h")


def page_data(
    layers: Sequence[Mapping[str, Any]], chars: Sequence[str], title: str = "lstmkit gate viewer", decimals: int = 3
) -> dict[str, Any]:
    """The page's data as a JSON-ready dict.

    ``layers``: one dict per layer and direction with ``layer``, ``direction``, ``ranking`` (cell indices, most
    interpretable first), ``scores`` (one per cell) and ``i, f, g, o, c, h``: ``(T, size)`` arrays.
    Values are rounded to ``decimals`` places and stored row-major (step by step) to keep the page small.
    """
    T = len(chars)
    out = []
    for entry in layers:
        record: dict[str, Any] = {
            "layer": int(entry["layer"]),
            "direction": int(entry["direction"]),
            "ranking": [int(j) for j in entry["ranking"]],
            "scores": [round(float(s), 4) for s in entry["scores"]],
        }
        for name in NAMES:
            values = np.asarray(entry[name], dtype=np.float64)[:T]  # (T, size)
            record[name] = {"size": int(values.shape[1]), "values": np.round(values, decimals).ravel().tolist()}
        out.append(record)
    return {"title": title, "chars": list(chars), "layers": out}


def render_page(data: Mapping[str, Any]) -> str:
    """The whole page as one string; ``data`` as :func:`page_data` makes it."""
    # "</" inside a <script> block would end it early: escape the slash (JSON reads "<\/" as "</").
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("</", "<\\/")
    return (
        _TEMPLATE.replace("__TITLE__", html.escape(str(data.get("title", "lstmkit gate viewer"))))
        .replace("__STYLE__", _STYLE)
        .replace("__SCRIPT__", _SCRIPT)
        .replace("__DATA__", payload)
    )


def write_page(data: Mapping[str, Any], path: str | Path) -> Path:
    """Write the page to ``path`` (atomically) and return the path."""
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8") as handle:
        handle.write(render_page(data))
    return path


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>__STYLE__</style>
</head>
<body>
<header>
  <h1>__TITLE__</h1>
  <div id="controls">
    <label>layer <select id="layer"></select></label>
    <label>cell <select id="cell"></select></label>
    <label>colour by <select id="quantity"></select></label>
    <span id="status">loading&hellip;</span>
  </div>
</header>
<main>
  <section id="text" aria-label="the text, coloured by the chosen cell"></section>
  <aside>
    <h2 id="step-title">step</h2>
    <table id="values"><tbody></tbody></table>
    <h3>every cell at this step <small>(click a column to pick its cell)</small></h3>
    <canvas id="strip" width="480" height="132"></canvas>
    <h3>the chosen cell over the text</h3>
    <canvas id="timeline" width="480" height="220"></canvas>
    <p class="legend">i, f, o: sigmoid gates in [0, 1]; g: candidate in [-1, 1]; c: cell state;
      h: hidden state.<br>c<sub>t</sub> = f&middot;c<sub>t-1</sub> + i&middot;g;
      h<sub>t</sub> = o&middot;tanh(c<sub>t</sub>).</p>
  </aside>
</main>
<script id="data" type="application/json">__DATA__</script>
<script>__SCRIPT__</script>
</body>
</html>
"""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; color: #222; background: #fff; }
header { padding: 8px 16px; border-bottom: 1px solid #ddd; background: #f7f7f7; }
h1 { font-size: 18px; margin: 0 0 6px 0; }
h2 { font-size: 15px; margin: 0 0 6px 0; }
h3 { font-size: 13px; margin: 12px 0 4px 0; }
#controls label { margin-right: 14px; font-size: 13px; }
#status { font-size: 12px; color: #666; }
main { display: flex; gap: 16px; padding: 12px 16px; align-items: flex-start; }
#text { flex: 1 1 auto; font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 15px; line-height: 1.6;
        white-space: pre-wrap; word-break: break-all; max-height: 82vh; overflow-y: auto; }
#text span { cursor: pointer; padding: 1px 0; }
#text span.active { outline: 2px solid #000; }
#text span.ctl { color: #888; }
aside { flex: 0 0 500px; font-size: 13px; }
#values { border-collapse: collapse; width: 100%; }
#values td { padding: 2px 6px; border-bottom: 1px solid #eee; }
#values td.bar div { height: 10px; background: #4a78b5; }
#values td.bar { width: 55%; }
canvas { border: 1px solid #ddd; display: block; }
.legend { color: #666; font-size: 12px; }
"""

_SCRIPT = r"""
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("data").textContent);
  const NAMES = ["i", "f", "g", "o", "c", "h"];
  const LABELS = {i: "input gate i", f: "forget gate f", g: "candidate g", o: "output gate o",
                  c: "cell state c", h: "hidden state h"};
  const COLOURS = {i: "#1b9e77", f: "#d95f02", g: "#7570b3", o: "#e7298a", c: "#111111", h: "#66a61e"};
  const T = data.chars.length;
  const state = {layer: 0, cell: 0, quantity: "c", step: 0};

  function value(layer, name, t, j) {
    const q = layer[name];
    return j < q.size ? q.values[t * q.size + j] : NaN;
  }
  function mix(a, b, x) { return a.map((v, k) => Math.round(v + (b[k] - v) * x)); }
  // Diverging (blue, white, red) for values in [-1, 1]; sequential (white to green) for gates in [0, 1].
  function colour(v, name) {
    if (!isFinite(v)) return "rgb(255,255,255)";
    let rgb;
    if (name === "i" || name === "f" || name === "o") {
      rgb = mix([255, 255, 255], [0, 109, 44], Math.min(Math.max(v, 0), 1));
    } else {
      const x = name === "c" ? Math.tanh(v) : Math.max(-1, Math.min(1, v));
      rgb = x < 0 ? mix([255, 255, 255], [33, 102, 172], -x) : mix([255, 255, 255], [178, 24, 43], x);
    }
    return "rgb(" + rgb.join(",") + ")";
  }
  function shown(ch) { return ch === "\n" ? "\u23ce\n" : ch === "\t" ? "\u21e5" : ch; }

  const layerSelect = document.getElementById("layer");
  const cellSelect = document.getElementById("cell");
  const quantitySelect = document.getElementById("quantity");
  const textBox = document.getElementById("text");

  data.layers.forEach(function (layer, k) {
    const option = document.createElement("option");
    option.value = k;
    option.textContent = "layer " + layer.layer + (layer.direction ? " (backward)" : "");
    layerSelect.appendChild(option);
  });
  NAMES.forEach(function (name) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = LABELS[name] + (name === "c" ? " (as tanh c)" : "");
    quantitySelect.appendChild(option);
  });
  quantitySelect.value = "c";

  function fillCells() {
    const layer = data.layers[state.layer];
    cellSelect.innerHTML = "";
    layer.ranking.forEach(function (j, rank) {
      const option = document.createElement("option");
      option.value = j;
      option.textContent = "#" + (rank + 1) + ": cell " + j + " (score " + layer.scores[j].toFixed(3) + ")";
      cellSelect.appendChild(option);
    });
    state.cell = layer.ranking[0];
    cellSelect.value = state.cell;
  }

  const spans = [];
  data.chars.forEach(function (ch, t) {
    const span = document.createElement("span");
    span.textContent = shown(ch);
    if (ch === "\n" || ch === "\t") span.className = "ctl";
    span.dataset.t = t;
    span.addEventListener("mouseenter", function () { showStep(t); });
    span.addEventListener("click", function () { showStep(t); });
    spans.push(span);
    textBox.appendChild(span);
  });

  function colourText() {
    const layer = data.layers[state.layer];
    for (let t = 0; t < T; t++) {
      spans[t].style.background = colour(value(layer, state.quantity, t, state.cell), state.quantity);
    }
  }

  function showStep(t) {
    if (spans[state.step]) spans[state.step].classList.remove("active");
    state.step = t;
    if (spans[t]) spans[t].classList.add("active");
    const layer = data.layers[state.layer];
    const ch = data.chars[t] === undefined ? "" : data.chars[t];
    document.getElementById("step-title").textContent =
      "step " + t + ": " + JSON.stringify(ch) + ", cell " + state.cell;
    const body = document.querySelector("#values tbody");
    body.innerHTML = "";
    NAMES.forEach(function (name) {
      const v = value(layer, name, t, state.cell);
      const row = document.createElement("tr");
      row.dataset.name = name;
      const width = name === "i" || name === "f" || name === "o" ? v : (Math.tanh(v) + 1) / 2;
      row.innerHTML = "<td>" + LABELS[name] + "</td><td class=\"num\">" + (isFinite(v) ? v.toFixed(3) : "-") +
        "</td><td class=\"bar\"><div style=\"width:" + Math.round(100 * Math.max(0, Math.min(1, width))) +
        "%;background:" + COLOURS[name] + "\"></div></td>";
      body.appendChild(row);
    });
    drawStrip();
    drawTimeline();
  }

  function drawStrip() {
    const canvas = document.getElementById("strip");
    const ctx = canvas.getContext("2d");
    const layer = data.layers[state.layer];
    const H = layer.i.size;
    const w = canvas.width / H, h = canvas.height / NAMES.length;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    NAMES.forEach(function (name, r) {
      for (let j = 0; j < H; j++) {
        ctx.fillStyle = colour(value(layer, name, state.step, j), name);
        ctx.fillRect(j * w, r * h, Math.ceil(w), Math.ceil(h));
      }
      ctx.fillStyle = "#000";
      ctx.font = "10px sans-serif";
      ctx.fillText(name, 2, r * h + 12);
    });
    ctx.strokeStyle = "#000";
    ctx.strokeRect(state.cell * w, 0, Math.max(w, 1), canvas.height);
  }

  function drawTimeline() {
    const canvas = document.getElementById("timeline");
    const ctx = canvas.getContext("2d");
    const layer = data.layers[state.layer];
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const x = function (t) { return T > 1 ? 4 + (canvas.width - 8) * t / (T - 1) : canvas.width / 2; };
    const y = function (v) { return canvas.height / 2 - (canvas.height / 2 - 6) * Math.max(-1, Math.min(1, v)); };
    ctx.strokeStyle = "#ccc";
    ctx.beginPath(); ctx.moveTo(0, y(0)); ctx.lineTo(canvas.width, y(0)); ctx.stroke();
    NAMES.forEach(function (name) {
      ctx.strokeStyle = COLOURS[name];
      ctx.lineWidth = name === "c" ? 2 : 1;
      ctx.beginPath();
      for (let t = 0; t < T; t++) {
        const v = value(layer, name, t, state.cell);
        const py = y(name === "c" ? Math.tanh(v) : v);
        if (t === 0) ctx.moveTo(x(t), py); else ctx.lineTo(x(t), py);
      }
      ctx.stroke();
    });
    ctx.strokeStyle = "#000";
    ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(x(state.step), 0); ctx.lineTo(x(state.step), canvas.height); ctx.stroke();
    ctx.font = "10px sans-serif";
    NAMES.forEach(function (name, k) {
      ctx.fillStyle = COLOURS[name];
      ctx.fillText(name === "c" ? "tanh c" : name, 6 + k * 46, 12);
    });
  }

  document.getElementById("strip").addEventListener("click", function (event) {
    const canvas = event.target;
    const H = data.layers[state.layer].i.size;
    const j = Math.floor((event.offsetX / canvas.clientWidth) * H);
    if (j >= 0 && j < H) { state.cell = j; cellSelect.value = j; refresh(); }
  });
  layerSelect.addEventListener("change", function () { state.layer = +layerSelect.value; fillCells(); refresh(); });
  cellSelect.addEventListener("change", function () { state.cell = +cellSelect.value; refresh(); });
  quantitySelect.addEventListener("change", function () { state.quantity = quantitySelect.value; refresh(); });

  function refresh() { colourText(); showStep(state.step); }

  // A link can open the page at a chosen view: index.html#layer=0&cell=12&q=f&step=40
  const wanted = {};
  location.hash.replace(/^#/, "").split("&").forEach(function (pair) {
    const kv = pair.split("=");
    if (kv.length === 2) wanted[kv[0]] = decodeURIComponent(kv[1]);
  });
  if (wanted.layer !== undefined && +wanted.layer >= 0 && +wanted.layer < data.layers.length) {
    state.layer = +wanted.layer;
    layerSelect.value = state.layer;
  }
  fillCells();
  if (wanted.cell !== undefined && +wanted.cell >= 0 && +wanted.cell < data.layers[state.layer].i.size) {
    state.cell = +wanted.cell;
    cellSelect.value = state.cell;
  }
  if (NAMES.indexOf(wanted.q) >= 0) { state.quantity = wanted.q; quantitySelect.value = wanted.q; }
  if (wanted.step !== undefined && +wanted.step >= 0 && +wanted.step < T) state.step = +wanted.step;
  refresh();
  document.getElementById("status").textContent =
    T + " characters, " + data.layers.length + " layer(s), " + data.layers[0].i.size + " cells";
  document.body.dataset.ready = "1";
})();
"""
