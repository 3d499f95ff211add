"""Small calls: the per-call cost of an LSTM at one time step, as streaming and generation call it.

T=1, B=1, I=64, H=256, two layers by default, inference (no_grad), one thread by default: torch.nn.LSTM's call,
lstmkit.LSTM's call with each engine, and the same step as a bare eager loop of two ``addmm`` and the pointwise
ops per layer (the floor for any Python-level module). Jobs interleaved, the median of many calls per repeat.

    python benchmarks/bench_small_calls.py
    python benchmarks/bench_small_calls.py --batch 16 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lstm import clock_fn, machine, time_interleaved  # noqa: E402

import lstmkit  # noqa: E402
from lstmkit import engines  # noqa: E402


def bare_step(model: nn.LSTM) -> object:
    """One step of the stack as two addmm and five pointwise ops per layer (weights transposed once, outside)."""
    layers = [
        (getattr(model, f"weight_ih_l{k}").t().contiguous(), getattr(model, f"weight_hh_l{k}").t().contiguous(),
         getattr(model, f"bias_ih_l{k}") + getattr(model, f"bias_hh_l{k}"))
        for k in range(model.num_layers)
    ]

    def step(x: Tensor, h: list[Tensor], c: list[Tensor]) -> Tensor:
        for k, (w_ih, w_hh, b) in enumerate(layers):
            gates = torch.addmm(torch.addmm(b, x, w_ih), h[k], w_hh)
            i, f, g, o = gates.chunk(4, dim=1)
            c[k] = torch.sigmoid(f) * c[k] + torch.sigmoid(i) * torch.tanh(g)
            h[k] = x = torch.sigmoid(o) * torch.tanh(c[k])
        return x

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--input", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--calls", type=int, default=200, help="calls per timed repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu")
    parser.add_argument("--engines", default="native,fused,reference")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clock = clock_fn(args.clock)
    torch.manual_seed(0)
    B, H, L = args.batch, args.hidden, args.layers
    ref = nn.LSTM(args.input, H, L).eval()
    x = torch.randn(1, B, args.input)
    hx = (torch.zeros(L, B, H), torch.zeros(L, B, H))

    def repeat(call: object) -> object:
        def run() -> None:
            with torch.no_grad():
                for _ in range(args.calls):
                    call()  # type: ignore[operator]
        return run

    step = bare_step(ref)
    jobs = {
        "torch.nn.LSTM": repeat(lambda: ref(x, hx)),
        "bare addmm step": repeat(lambda: step(x[0], list(hx[0]), list(hx[1]))),  # type: ignore[operator]
    }
    for engine in args.engines.split(","):
        ours = lstmkit.LSTM(args.input, H, L, engine=engine).eval()
        ours.load_state_dict(ref.state_dict())
        jobs[f"lstmkit {engine} ({ours.engine})"] = repeat(lambda m=ours: m(x, hx))
    engines.benchmark(True)  # "auto" in benchmark mode: measures once on its first call, then keeps its choice
    measured = lstmkit.LSTM(args.input, H, L).eval()
    measured.load_state_dict(ref.state_dict())
    with torch.no_grad():
        measured(x, hx)
    jobs[f"lstmkit auto, benchmark mode ({measured.engine})"] = repeat(lambda: measured(x, hx))
    times = time_interleaved(jobs, args.repeats, clock)
    print(f"Machine: {machine()}. Load average {os.getloadavg()[0]:.2f}. Clock: {args.clock}.")
    print(f"T=1 B={B} I={args.input} H={H} layers={L}, inference, {args.threads} thread(s)")
    print("| call | microseconds | vs torch.nn.LSTM (speed) | vs bare step (cost) |")
    print("|---|---|---|---|")
    base, bare = times["torch.nn.LSTM"], times["bare addmm step"]
    for name, seconds in times.items():
        print(f"| {name} | {1e6 * seconds / args.calls:.0f} | {base / seconds:.2f}x | {seconds / bare:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
