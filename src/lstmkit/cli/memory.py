"""``lstmkit memory``: what one batch costs an LSTM (parameters, gradients, AdamW, activations, the peak)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .params import add_size_flags, check_sizes


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def register(subparsers: Any) -> None:
    from ..engines import ENGINE_CHOICES
    from ..memory import DTYPES

    parser = subparsers.add_parser(
        "memory", help="estimate the memory of an LSTM and a batch, for inference or a training step",
        description="Estimate the bytes an lstmkit.LSTM of these sizes needs for one batch on the CPU: parameters "
                    "(with the 4*h*(h+x) terms), gradients and AdamW's moments (with --train), the activations "
                    "the engine saves for backward, and the peak (see lstmkit.memory.memory_estimate).")
    add_size_flags(parser, batch=True)
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="parameter dtype (float32)")
    parser.add_argument("--train", action="store_true", help="a training step (forward, backward, AdamW.step)")
    parser.add_argument("--engine", choices=ENGINE_CHOICES, default="auto", help="the engine (auto)")
    parser.add_argument("--json", action="store_true", help="print JSON (keys parameters, parameter_bytes, ...)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..memory import memory_estimate

    check_sizes(args)
    estimate = memory_estimate(
        args.input_size, args.hidden_size, args.num_layers, args.batch, args.seq_len, args.bidirectional,
        args.proj_size, args.dtype, args.train, args.engine,
    )
    if args.json:
        print(json.dumps(estimate.to_dict(), indent=1))
        return 0
    what = "training step (AdamW)" if args.train else "inference (no_grad)"
    print(f"{what}, engine {estimate.engine}, {estimate.dtype}")
    print(f"parameters   {estimate.parameters:,} = {estimate.parameter_formula}")
    for label, value in (("parameters", estimate.parameter_bytes), ("gradients", estimate.gradient_bytes),
                         ("AdamW state", estimate.optimizer_bytes), ("input", estimate.input_bytes),
                         ("activations", estimate.activation_bytes), ("workspace", estimate.workspace_bytes),
                         ("peak", estimate.peak_bytes)):
        print(f"{label:<12} {_size(value)}")
    return 0
