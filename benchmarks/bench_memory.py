"""The memory calculator (``lstmkit memory``) beside the peak measured for real, for a few sizes and engines.

Each row runs one step (a forward under ``no_grad``, or a training step: forward, backward, ``AdamW.step``)
once to warm up and once under ``torch.profiler`` (:func:`lstmkit.memory.measure_peak_bytes`), and prints the
estimate, the measurement and their difference as a markdown table (the one in ``docs/inspect.md``). Bytes do
not depend on the machine's load; they do depend on the torch build (oneDNN's workspace).

    python benchmarks/bench_memory.py
"""

from __future__ import annotations

import argparse
import platform
import warnings

import torch

from lstmkit.memory import measure_peak_bytes, memory_estimate

SIZES = [
    dict(input_size=64, hidden_size=128, num_layers=1, batch=16, seq_len=50),
    dict(input_size=32, hidden_size=256, num_layers=2, batch=8, seq_len=100),
    dict(input_size=64, hidden_size=128, num_layers=1, batch=16, seq_len=50, bidirectional=True),
    dict(input_size=64, hidden_size=128, num_layers=1, batch=16, seq_len=50, proj_size=32),
    dict(input_size=512, hidden_size=512, num_layers=1, batch=1, seq_len=5),
    dict(input_size=128, hidden_size=512, num_layers=1, batch=32, seq_len=64),
]


def describe(sizes: dict) -> str:
    text = f"I={sizes['input_size']} H={sizes['hidden_size']} L={sizes['num_layers']} B={sizes['batch']} " \
           f"T={sizes['seq_len']}"
    if sizes.get("bidirectional"):
        text += " bidir"
    if sizes.get("proj_size"):
        text += f" P={sizes['proj_size']}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", nargs="+", default=["reference", "native"], help="engines to measure")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {platform.machine()}, {platform.python_version()}\n")
    print("| sizes | engine | step | estimate (MiB) | measured (MiB) | difference |")
    print("|---|---|---|---:|---:|---:|")
    for sizes in SIZES:
        for engine in args.engines:
            for train in (False, True):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch: projections fall back from oneDNN
                    measured = measure_peak_bytes(**sizes, train=train, engine=engine)
                estimate = memory_estimate(**sizes, train=train, engine=engine).peak_bytes
                print(f"| {describe(sizes)} | {engine} | {'train' if train else 'inference'} | "
                      f"{estimate / 2**20:.2f} | {measured / 2**20:.2f} | {100 * (estimate / measured - 1):+.1f}% |",
                      flush=True)


if __name__ == "__main__":
    main()
