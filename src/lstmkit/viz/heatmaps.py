"""PNG pictures of what an LSTM did over a text: gate heatmaps, the text coloured by a cell, gate saturation.

Everything is drawn with matplotlib's Agg backend (no display needed) and written with
:func:`lstmkit.fileio.atomic_write`. The inputs are plain arrays of one sequence of one layer (see
:meth:`lstmkit.inspect.GateRecord.sequence`) and the characters the steps read.

Reference: A. Karpathy, J. Johnson, L. Fei-Fei. Visualizing and Understanding Recurrent Networks. 2016
(figure 2: text coloured by a cell's tanh(c); figure 3: gate saturation per cell).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..fileio import atomic_write  # noqa: E402

__all__ = ["display_char", "plot_gate_heatmaps", "plot_saturation", "plot_text_cells"]

# How each recorded quantity is drawn: its colour map and value range (None: symmetric around 0, from the data).
STYLE: dict[str, tuple[str, tuple[float, float] | None, str]] = {
    "i": ("viridis", (0.0, 1.0), "input gate i"),
    "f": ("viridis", (0.0, 1.0), "forget gate f"),
    "g": ("RdBu_r", (-1.0, 1.0), "candidate g"),
    "o": ("viridis", (0.0, 1.0), "output gate o"),
    "c": ("RdBu_r", None, "cell state c"),
    "h": ("RdBu_r", None, "hidden state h"),
}


def display_char(ch: str, space: str = "\u2423") -> str:
    """A character as a picture shows it: newline and tab made visible, and space as ``space``."""
    return {"\n": "\u23ce", "\t": "\u21e5", " ": space}.get(ch, ch if ch.isprintable() else "\ufffd")


def _save(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=dpi)
    plt.close(fig)
    return path


def plot_gate_heatmaps(
    sequence: Mapping[str, Any], chars: Sequence[str], cells: Sequence[int], path: str | Path, title: str = ""
) -> Path:
    """Six heatmaps, one per gate and state (i, f, g, o, c, h), of the chosen cells (rows) over the characters.

    ``sequence``: ``{name: (T, size)}`` arrays; ``chars``: the T characters read; ``cells``: the cell indices to
    show, top row first (for ``h`` with a projection, indices beyond its size are left out).
    """
    T = len(chars)
    cells = list(cells)
    width = min(3 + 0.11 * T, 40)
    panel = 0.45 + 0.14 * len(cells)  # inches per heatmap
    fig, axes = plt.subplots(6, 1, figsize=(width, 1.0 + 6 * panel), squeeze=False, sharex=True)
    fig.subplots_adjust(left=1.0 / width, right=1 - 0.9 / width, top=1 - 0.45 / (1.0 + 6 * panel),
                        bottom=0.5 / (1.0 + 6 * panel), hspace=0.12)
    for ax, name in zip(axes[:, 0], ("i", "f", "g", "o", "c", "h"), strict=True):
        values = np.asarray(sequence[name], dtype=np.float32)[:T]  # (T, size)
        rows = [j for j in cells if j < values.shape[1]]
        data = values[:, rows].T  # (cells, T)
        cmap, limits, label = STYLE[name]
        if limits is None:
            bound = float(np.abs(data).max()) if data.size else 1.0
            limits = (-bound or -1.0, bound or 1.0)
        image = ax.imshow(data, aspect="auto", cmap=cmap, vmin=limits[0], vmax=limits[1], interpolation="nearest")
        ax.set_ylabel(label, fontsize=8)
        ax.set_yticks(range(len(rows)), [str(j) for j in rows], fontsize=6)
        fig.colorbar(image, ax=ax, fraction=0.015, pad=0.005)
    every = max(1, T // 150)  # a label per character while they fit
    axes[-1, 0].set_xticks(range(0, T, every), [display_char(chars[t]) for t in range(0, T, every)], fontsize=7)
    fig.suptitle(title or "gates and states per cell (rows, ranked) over the text (columns)", fontsize=10)
    return _save(fig, path)


def _lines(chars: Sequence[str], width: int) -> list[list[tuple[int, str]]]:
    """The text wrapped at ``width`` columns and at newlines: per line, (step, character) pairs."""
    lines: list[list[tuple[int, str]]] = [[]]
    for t, ch in enumerate(chars):
        if len(lines[-1]) >= width:
            lines.append([])
        lines[-1].append((t, ch))
        if ch == "\n":
            lines.append([])
    return lines if lines[-1] else lines[:-1] or [[]]


def plot_text_cells(
    activations: Sequence[Any], chars: Sequence[str], labels: Sequence[str], path: str | Path, width: int = 80
) -> Path:
    """The text, once per cell, each character on a background coloured by that cell's value there.

    ``activations``: one ``(T,)`` array per panel, in [-1, 1] (tanh of the cell state: blue -1, red +1);
    ``labels``: a title per panel. Lines wrap at ``width`` characters and at newlines.
    """
    lines = _lines(chars, width)
    rows = len(lines)
    cmap = plt.get_cmap("RdBu_r")
    line_height = 0.2  # inches
    panel = rows * line_height + 0.4
    fig_width = width * 0.11 + 0.4
    fig = plt.figure(figsize=(fig_width, len(activations) * panel))
    # One text artist per line in a monospaced font sized so that a character is exactly one grid cell wide:
    # thousands of single-character artists would take seconds to lay out. DejaVu Sans Mono advances 0.602 em.
    left, right = 0.2 / fig_width, 1 - 0.2 / fig_width
    fontsize = (right - left) * fig_width * 72 / width / 0.602
    for k, (values, label) in enumerate(zip(activations, labels, strict=True)):
        height = len(activations) * panel  # inches; each panel is a title line, then the text
        top = 1 - (k * panel + 0.3) / height
        ax = fig.add_axes((left, top - rows * line_height / height, right - left, rows * line_height / height))
        grid = np.ones((rows, width, 4))  # white where there is no character
        values = np.clip(np.asarray(values, dtype=np.float64), -1, 1)
        for r, line in enumerate(lines):
            for c, (t, _) in enumerate(line):
                grid[r, c] = cmap(0.5 + 0.4 * values[t])  # the darkest ends of the map would hide the text
        ax.imshow(grid, aspect="auto", interpolation="nearest", extent=(-0.5, width - 0.5, rows - 0.5, -0.5))
        for r, line in enumerate(lines):
            ax.text(-0.5, r, "".join(display_char(ch, " ") for _, ch in line), ha="left", va="center",
                    fontsize=fontsize, family="DejaVu Sans Mono")
        ax.set_axis_off()
        ax.set_title(label, fontsize=8, loc="left")
    return _save(fig, path)


def plot_saturation(stats: Mapping[str, Any], path: str | Path) -> Path:
    """Karpathy et al.'s figure 3: per gate, each cell a dot at (fraction of steps below ``low``, above ``high``).

    ``stats``: what :func:`lstmkit.inspect.saturation` returns. A dot near the top-left is a gate that is almost
    always open; bottom-right, almost always shut; near the origin, a gate that works in between.
    """
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.8), squeeze=False, constrained_layout=True)
    low, high = stats["low"], stats["high"]
    colours = plt.get_cmap("tab10")
    for ax, name in zip(axes[0], ("i", "f", "o"), strict=True):
        for k, layer in enumerate(stats["layers"]):
            cells = layer["cells"][name]
            suffix = " (backward)" if layer["direction"] == 1 else ""
            ax.scatter(cells["below"], cells["above"], s=10, alpha=0.7, color=colours(k % 10),
                       label=f"layer {layer['layer']}{suffix}")
        ax.plot([0, 1], [1, 0], color="0.8", linewidth=0.8)  # a gate can be at most always saturated
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"fraction of steps {name} < {low}")
        ax.set_ylabel(f"fraction of steps {name} > {high}")
        ax.set_title(STYLE[name][2])
    axes[0, 0].legend(fontsize=7, loc="upper right")
    return _save(fig, path)
