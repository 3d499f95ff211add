"""``lstmkit inspect``: gate heatmaps, saturation statistics and the HTML gate viewer of a trained char model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .common import ranged

MAX_CHARS = 5000  # the page holds every gate of every cell at every character: keep it a size a browser likes



def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "inspect", help="look inside a trained model: gate heatmaps, statistics and an HTML viewer",
        description="Run a model trained by `lstmkit train` over a text and write, into --out: gates_l*.png "
                    "(heatmaps of i, f, g, o, c, h of the most interpretable cells), cells_l*.png (the text "
                    "coloured by those cells), saturation.png and saturation.json (how often i, f, o are below "
                    "0.1 or above 0.9), cells.json (every cell ranked) and index.html (the interactive viewer; "
                    "open it in a browser, it needs no network).")
    parser.add_argument("--checkpoint", required=True, metavar="DIR",
                        help="a run directory of `lstmkit train` (its best checkpoint) or a checkpoint in it")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", metavar="TEXT", help="the text to read")
    source.add_argument("--text-file", metavar="FILE", help="read the text from this UTF-8 file instead")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write into (created if needed)")
    parser.add_argument("--top-cells", type=ranged(int, 1), default=8, metavar="N",
                        help="how many of the best-scoring cells the heatmaps show (default 8)")
    parser.add_argument("--text-cells", type=ranged(int, 1), default=4, metavar="N",
                        help="how many cells get the text coloured by them (default 4)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of the list of files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..apps.gate_viewer import inspect_charlm

    text = Path(args.text_file).read_text(encoding="utf-8") if args.text_file else args.text
    if not text:
        raise UsageError("--text is empty: give the text the model should read")
    if len(text) > MAX_CHARS:
        raise UsageError(f"the text has {len(text)} characters; inspect reads at most {MAX_CHARS}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    result = inspect_charlm(args.checkpoint, text, out, top_cells=args.top_cells, text_cells=args.text_cells)
    if args.json:
        print(json.dumps(result.summary, indent=1))
    else:
        for path in result.files:
            print(path)
    return 0
