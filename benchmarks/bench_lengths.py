"""Variable-length batches: lstmkit's ``lengths=`` against torch.nn.LSTM on a PackedSequence and on the padded batch.

A training step (forward + backward, no optimiser) on a batch whose lengths are uniform in [1, T], the jobs
interleaved within each repeat (bench_lstm.time_interleaved), the median of ``--repeats``:

* ``torch.nn packed``: ``nn.LSTM(pack_padded_sequence(x, lengths, enforce_sorted=False))``, what users write;
* ``torch.nn padded``: ``nn.LSTM(x)``, every padded step computed (wrong results past each row's end; a bound);
* ``lstmkit <engine> lengths``: ``lstmkit.LSTM(engine=...)(x, lengths=lengths)``, same results as the packed one.

Ratios are speeds relative to ``torch.nn packed`` and to ``torch.nn padded`` (> 1: faster). Prints a table only.

    python benchmarks/bench_lengths.py                        # T=500 B=32 H=256 and T=2000 B=8 H=128
    python benchmarks/bench_lengths.py --cells 500:32:256 --threads 1 --clock cpu
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lstm import clock_fn, machine, time_interleaved  # noqa: E402

import lstmkit  # noqa: E402


def parse_cells(text: str) -> list[tuple[int, int, int]]:
    try:
        return [tuple(int(v) for v in item.split(":")) for item in text.split(",")]  # type: ignore[misc]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected T:B:H,..., e.g. 500:32:256, got {text!r}") from None


def jobs_for(T: int, B: int, H: int, engines: list[str], seed: int = 0) -> dict[str, object]:
    torch.manual_seed(seed)
    I = H // 2  # noqa: E741 (the usual name)
    ref = nn.LSTM(I, H)
    x = torch.randn(T, B, I)
    lengths = torch.randint(1, T + 1, (B,))
    lengths[0] = T  # the padded batch is T long

    def nn_packed() -> None:
        out, _ = ref(pack_padded_sequence(x, lengths, enforce_sorted=False))
        pad_packed_sequence(out, total_length=T)[0].sum().backward()

    def nn_padded() -> None:
        ref(x)[0].sum().backward()

    jobs = {"torch.nn packed": nn_packed, "torch.nn padded": nn_padded}
    for engine in engines:
        ours = lstmkit.LSTM(I, H, engine=engine)
        ours.load_state_dict(ref.state_dict())

        def run(model: nn.Module = ours) -> None:
            model(x, lengths=lengths)[0].sum().backward()

        jobs[f"lstmkit {engine} lengths"] = run
    real = float(lengths.sum()) / (T * B)
    print(f"T={T} B={B} H={H} I={I}: {real:.0%} of the padded steps are real")
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=parse_cells, default=[(500, 32, 256), (2000, 8, 128)], metavar="T:B:H,...")
    parser.add_argument("--engines", default="fused,native", help="lstmkit engines to time (comma-separated)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per job (median)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    clock = clock_fn(args.clock)
    print(f"Machine: {machine()}. Load average {os.getloadavg()[0]:.2f}. Clock: {args.clock}.")
    print("| cell | job | seconds | vs torch.nn packed | vs torch.nn padded |")
    print("|---|---|---|---|---|")
    for T, B, H in args.cells:
        times = time_interleaved(jobs_for(T, B, H, args.engines.split(",")), args.repeats, clock)  # type: ignore[arg-type]
        packed, padded = times["torch.nn packed"], times["torch.nn padded"]
        for name, seconds in times.items():
            print(f"| T={T} B={B} H={H} | {name} | {seconds:.3f} | {packed / seconds:.2f}x | {padded / seconds:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
