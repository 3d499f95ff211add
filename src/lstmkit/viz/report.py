"""Everything ``lstmkit inspect`` writes, from a gate record and the characters: PNGs, JSON and the HTML page.

Files in the output directory (``{k}`` the layer, ``_reverse`` for a backward direction):

* ``gates_l{k}.png``: heatmaps of i, f, g, o, c, h for the most interpretable cells over the first characters;
* ``cells_l{k}.png``: the text coloured by each of those cells' tanh(c);
* ``saturation.png`` and ``saturation.json``: how often i, f, o are below 0.1 or above 0.9, per layer and cell;
* ``cells.json``: every cell ranked by :func:`lstmkit.inspect.cell_scores`;
* ``index.html``: the interactive gate viewer (self-contained; the first :data:`PAGE_VALUES` numbers' worth of
  characters).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..fileio import atomic_write
from ..inspect import GateRecord, cell_scores, saturation
from .heatmaps import plot_gate_heatmaps, plot_saturation, plot_text_cells
from .page import page_data, write_page

__all__ = ["SCORE_DEFINITION", "Inspection", "inspect_sequence"]

SCORE_DEFINITION = "std(tanh c) * max(0, lag-1 autocorrelation of tanh c) over the text, in [0, 1]"
# The page holds every gate and state of every cell at every character as JSON text; past about 3 million
# numbers (some 20 MB) a browser takes seconds to open it, so a longer text is cut there (the PNGs are not).
PAGE_VALUES = 3_000_000


@dataclass(frozen=True)
class Inspection:
    """What was written: the files, and the summary that ``lstmkit inspect --json`` prints."""

    out: Path
    files: tuple[Path, ...]
    summary: dict[str, Any]


def _write_json(path: Path, data: Any) -> Path:
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
        handle.write("\n")
    return path


def inspect_sequence(
    gates: GateRecord,
    chars: Sequence[str],
    out: str | Path,
    *,
    batch: int = 0,
    top_cells: int = 8,
    text_cells: int = 4,
    heatmap_chars: int = 160,
    text_chars: int = 640,
    low: float = 0.1,
    high: float = 0.9,
    title: str = "lstmkit gate viewer",
) -> Inspection:
    """Write the pictures, statistics and page for sequence ``batch`` of ``gates`` read as ``chars``.

    ``chars``: one label per step (a character for a char model); the heatmaps show the first
    ``heatmap_chars``, the coloured text the first ``text_chars``, the page all of them. ``top_cells``: how many
    of the best-scoring cells the heatmaps show; ``text_cells``: how many get their own coloured text.
    """
    if len(chars) != gates.seq_len:
        raise ValueError(f"chars must have one entry per step ({gates.seq_len}), got {len(chars)}")
    for name, value in (("top_cells", top_cells), ("text_cells", text_cells), ("heatmap_chars", heatmap_chars),
                        ("text_chars", text_chars)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    stats = saturation(gates, low, high)
    ranked_layers: list[dict[str, Any]] = []
    page_layers: list[dict[str, Any]] = []
    for layer in range(gates.num_layers):
        for direction in range(gates.num_directions):
            seq = gates.sequence(layer, direction, batch)  # {name: (T, size)}
            scores = cell_scores(seq["c"])  # (H,)
            ranking = torch.argsort(scores, descending=True, stable=True).tolist()
            ranked_layers.append({
                "layer": layer,
                "direction": direction,
                "ranking": [{"cell": j, "score": round(float(scores[j]), 4)} for j in ranking],
            })
            page_layers.append({"layer": layer, "direction": direction, "ranking": ranking,
                                "scores": scores.tolist(), **{k: v.numpy() for k, v in seq.items()}})
            suffix = f"l{layer}" + ("_reverse" if direction else "")
            n = min(heatmap_chars, len(chars))
            files.append(plot_gate_heatmaps(
                {k: v[:n].numpy() for k, v in seq.items()}, chars[:n], ranking[:top_cells], out / f"gates_{suffix}.png",
                title=f"layer {layer}{' backward' if direction else ''}: the {min(top_cells, len(ranking))} "
                      f"highest-scoring cells (rows) over the first {n} characters",
            ))
            n = min(text_chars, len(chars))
            best = ranking[:text_cells]
            files.append(plot_text_cells(
                [torch.tanh(seq["c"][:n, j]).numpy() for j in best], chars[:n],
                [f"layer {layer}{' backward' if direction else ''}, cell {j}: tanh(c), score {float(scores[j]):.3f}"
                 for j in best],
                out / f"cells_{suffix}.png",
            ))
    files.append(plot_saturation(stats, out / "saturation.png"))
    files.append(_write_json(out / "saturation.json", stats))
    files.append(_write_json(out / "cells.json", {"score": SCORE_DEFINITION, "layers": ranked_layers}))
    per_char = sum(6 * np.shape(layer["c"])[1] for layer in page_layers)  # numbers per character
    page_chars = max(1, min(len(chars), PAGE_VALUES // max(per_char, 1)))
    files.append(write_page(page_data(page_layers, list(chars[:page_chars]), title=title), out / "index.html"))
    summary = {
        "out": str(out),
        "chars": len(chars),
        "page_chars": page_chars,  # the page shows the first this many characters
        "engine": gates.engine,
        "files": [p.name for p in files],
        "saturation": [{k: layer[k] for k in ("layer", "direction", "i", "f", "o")} for layer in stats["layers"]],
        "top_cells": [{"layer": r["layer"], "direction": r["direction"], "cells": r["ranking"][:top_cells]}
                      for r in ranked_layers],
    }
    return Inspection(out=out, files=tuple(files), summary=summary)
