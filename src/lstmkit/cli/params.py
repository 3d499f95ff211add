"""``lstmkit params``: the parameters of an LSTM of the given sizes, layer by layer, with the textbook's formula."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

from ..errors import UsageError
from .common import ranged


def add_size_flags(parser: argparse.ArgumentParser, batch: bool) -> None:
    """The flags that size an LSTM (shared by ``params`` and ``memory``); ``batch`` adds --batch and --seq-len."""
    parser.add_argument("--input-size", type=ranged(int, 1), required=True, metavar="X", help="features per step")
    parser.add_argument("--hidden-size", type=ranged(int, 1), required=True, metavar="H", help="hidden units per layer")
    parser.add_argument("--num-layers", type=ranged(int, 1), default=1, metavar="L", help="stacked layers (default 1)")
    parser.add_argument("--bidirectional", action="store_true", help="a backward direction in every layer")
    parser.add_argument("--proj-size", type=ranged(int, 0), default=0, metavar="P",
                        help="project h down to P units (0: no projection; must be < H)")
    if batch:
        parser.add_argument("--batch", type=ranged(int, 1), required=True, metavar="B", help="sequences per batch")
        parser.add_argument("--seq-len", type=ranged(int, 1), required=True, metavar="T", help="steps per sequence")


def check_sizes(args: argparse.Namespace) -> None:
    if args.proj_size >= args.hidden_size:
        raise UsageError(f"--proj-size must be smaller than --hidden-size, got {args.proj_size} >= {args.hidden_size}")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "params", help="count an LSTM's parameters, layer by layer, with the formula",
        description="The parameters of lstmkit.LSTM (= torch.nn.LSTM) of these sizes: per layer and direction "
                    "the gate weights 4*h*(r+x) (r: h, or P with a projection), the two bias vectors 2*4*h and the "
                    "projection P*h.")
    add_size_flags(parser, batch=False)
    parser.add_argument("--no-bias", action="store_true", help="without the bias vectors")
    parser.add_argument("--json", action="store_true", help="print JSON: the total, its parts and every layer")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..params import parameter_count, parameter_table

    check_sizes(args)
    sizes = (args.input_size, args.hidden_size, args.num_layers, args.bidirectional, args.proj_size, not args.no_bias)
    if args.json:
        counts = parameter_count(*sizes)
        data = dataclasses.asdict(counts)
        for entry, layer in zip(data["layers"], counts.layers, strict=True):
            entry["total"], entry["formula"] = layer.total, layer.formula
        print(json.dumps(data, indent=1))
    else:
        print(parameter_table(*sizes))
    return 0
