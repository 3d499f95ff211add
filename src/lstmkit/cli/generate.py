"""``lstmkit generate``: sample text from a trained character-level model, printing it as it comes."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..apps import charlm
from ..train import resolve_device
from .common import device, ranged


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "generate", help="write text with a trained model",
        description="Print --prompt and then --length sampled characters, one at a time as they are sampled, "
                    "carrying the LSTM's (h, c) from step to step.",
    )
    p.add_argument("--checkpoint", required=True, metavar="DIR", help="a run directory (its best/) or a checkpoint")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--length", type=ranged(int, 0), default=500, help="characters to generate (500)")
    p.add_argument("--temperature", type=ranged(float, 0), default=0.8,
                   help="below 1 is safer, above 1 wilder; 0 takes the likeliest character (0.8)")
    p.add_argument("--top-k", type=ranged(int, 0), default=0, help="sample among the K likeliest only, 0 for all")
    p.add_argument("--seed", type=int, default=None, help="same seed, same text (default: random)")
    p.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:N (cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model, vocab, run_config = charlm.load_model(args.checkpoint, device=resolve_device(args.device))
    prompt = charlm.preprocess(args.prompt, run_config.data.preprocess, strip=False)
    note = charlm.prompt_ids(vocab, prompt)[1] if prompt else ""
    if note:
        print(f"lstmkit generate: note: {note}", file=sys.stderr)
    stream = charlm.generate(model, vocab, prompt, args.length, temperature=args.temperature, top_k=args.top_k,
                             seed=args.seed)
    first = next(stream, "")  # a prompt the model cannot read fails here, before anything is printed
    sys.stdout.write(prompt + first)
    sys.stdout.flush()
    for char in stream:
        sys.stdout.write(char)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
