"""``lstmkit evaluate``: how well a trained character-level model predicts a text (perplexity, bits/char)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..apps import charlm
from ..train import resolve_device
from .common import device


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate", help="score a text with a trained model",
        description="Score each character of a text given all before it: perplexity, bits per character.",
    )
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a run directory (its best/) or a checkpoint")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", nargs="+", metavar="FILE", help="UTF-8 text files to score")
    src.add_argument("--corpus", choices=list(charlm.CORPORA), help="a built-in corpus to score")
    p.add_argument("--json", action="store_true",
                   help='one JSON object: "perplexity", "bits_per_char", "chars", "unknown_chars"')
    p.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:N (cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model, vocab, run_config = charlm.load_model(args.checkpoint, device=resolve_device(args.device))
    text = charlm.read_texts(args.text) if args.text else charlm.load_corpus(args.corpus)
    scores = charlm.evaluate(model, vocab, text, run_config.data.preprocess)
    if args.json:
        print(json.dumps(scores))
    else:
        unknown = f" ({scores['unknown_chars']:,} unknown to the model)" if scores["unknown_chars"] else ""
        print(f"perplexity {scores['perplexity']:.4f}, {scores['bits_per_char']:.4f} bits/char "
              f"over {scores['chars']:,} characters{unknown}")
    return 0
