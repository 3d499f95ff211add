"""Small calls: one time step per call (streaming, generation), where per-call cost decides.

Times, at T=1, one call of

* ``torch.nn.LSTM`` (oneDNN's kernel on the CPU),
* the bare step: the same LSTM step written as two ``addmm`` and five pointwise ops per layer in eager PyTorch
  (the biases summed beforehand), the least a Python caller can do per step,
* ``lstmkit.LSTM`` with ``engine="auto"`` (and which engine it chose) and pinned to each engine,

interleaved (every candidate once per round, in a new order each round, many rounds) and reports the median per
call and each one's ratio to torch.nn.LSTM's time in the same run; all share one set of weight tensors. One thread
by default (``torch.set_num_threads``) and CPU time (``time.process_time``), which stay fair on a machine shared
with other work; ``--clock wall`` for wall time.
The first use of the fused engine builds its C++ kernel (about half a minute, cached afterwards).

Loading that kernel changes torch.nn.LSTM's own small calls: on the AMD EPYC (Zen 3) machine of 2026-12-01 its
call at T=1 B=1 H=256 (two layers, one thread) took 1.96-2.0 ms in a process without the kernel and 0.54 ms in one
with it (the kernel is built with OpenMP, and oneDNN's calls then cost less). ``--engines reference,native``
leaves the kernel out, for torch.nn as a process without lstmkit's kernel sees it; the header says which.

    python benchmarks/bench_small_calls.py                       # the table of docs/benchmarks.md
    python benchmarks/bench_small_calls.py --grad                # the same with autograd recording
    python benchmarks/bench_small_calls.py --batches 1 --hidden 256 --layers 2 --rounds 60
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lstm import cpu_name  # noqa: E402

import lstmkit  # noqa: E402

ENGINES = ("reference", "native", "fused")
engines_timed: tuple[str, ...] = ENGINES


def bare_step(ref: torch.nn.LSTM) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The LSTM step as two addmm and the pointwise ops per layer (biases summed once, outside the timing)."""
    layers = [
        (getattr(ref, f"weight_ih_l{k}"), getattr(ref, f"weight_hh_l{k}"),
         (getattr(ref, f"bias_ih_l{k}") + getattr(ref, f"bias_hh_l{k}")).detach())
        for k in range(ref.num_layers)
    ]

    def step(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
        inp = x[0]
        for k, (w_ih, w_hh, b) in enumerate(layers):
            gates = torch.addmm(torch.addmm(b, inp, w_ih.t()), h0[k], w_hh.t())
            i, f, g, o = gates.chunk(4, 1)
            c = torch.sigmoid(f) * c0[k] + torch.sigmoid(i) * torch.tanh(g)
            inp = torch.sigmoid(o) * torch.tanh(c)
        return inp

    return step


def measure(batch: int, hidden: int, layers: int, args: argparse.Namespace) -> dict[str, float | str]:
    torch.manual_seed(0)
    ref = torch.nn.LSTM(args.input_size, hidden, layers).eval()
    ours = {"auto": lstmkit.LSTM(args.input_size, hidden, layers).eval()}
    for name in engines_timed:
        ours[name] = lstmkit.LSTM(args.input_size, hidden, layers, engine=name).eval()
    for m in ours.values():  # the very same weight tensors: every candidate reads the same memory (caches)
        for name, param in ref.named_parameters():
            setattr(m, name, param)
    x = torch.randn(1, batch, args.input_size)
    h0, c0 = torch.zeros(layers, batch, hidden), torch.zeros(layers, batch, hidden)
    bare = bare_step(ref)
    calls: dict[str, Callable[[], object]] = {
        "torch.nn": lambda: ref(x, (h0, c0)),
        "bare": lambda: bare(x, h0, c0),
        **{name: (lambda m=m: m(x, (h0, c0))) for name, m in ours.items()},
    }
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.set_grad_enabled(args.grad):
        for call in calls.values():
            for _ in range(args.warmup):
                call()
        order = list(calls.items())
        shuffle = random.Random(0).shuffle
        for _ in range(args.rounds):
            shuffle(order)  # a new order each round: no candidate always follows the same one (caches)
            for name, call in order:
                start = clock()
                for _ in range(args.calls):
                    call()
                times[name].append((clock() - start) / args.calls * 1e3)
    result: dict[str, float | str] = {name: statistics.median(t) for name, t in times.items()}
    result["chosen"] = ours["auto"].engine
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", default="1,16", help="batch sizes, comma-separated")
    parser.add_argument("--hidden", default="128,256", help="hidden sizes, comma-separated")
    parser.add_argument("--layers", default="1,2", help="layer counts, comma-separated")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds (the median is over these)")
    parser.add_argument("--calls", type=int, default=20, help="calls per candidate per round")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--grad", action="store_true", help="with autograd recording (no backward)")
    parser.add_argument("--engines", default=",".join(ENGINES), help="lstmkit engines to time, comma-separated")
    args = parser.parse_args()
    global engines_timed
    engines_timed = tuple(e for e in args.engines.split(",") if e)
    unknown = set(engines_timed) - set(ENGINES)
    if unknown:
        parser.error(f"--engines: unknown {', '.join(sorted(unknown))}; choose from {', '.join(ENGINES)}")
    torch.set_num_threads(args.threads)
    if "fused" in engines_timed:
        lstmkit.engines.fused.kernel()  # loaded before anything is timed, so that every row sees the same process

    print(f"CPU: {cpu_name()[0]}, torch {torch.__version__}, {args.threads} thread(s), {args.clock} time, "
          f"T=1, I={args.input_size}, {'autograd recording' if args.grad else 'no_grad, eval()'}, "
          f"median of {args.rounds} interleaved rounds of {args.calls} calls, fused kernel "
          f"{'loaded' if 'fused' in engines_timed else 'not loaded'}")
    print()
    columns = ["torch.nn", "bare", "auto", *engines_timed]
    print("| B | H | layers | " + " | ".join(f"{c} ms" for c in columns) + " | auto chose | auto / torch.nn "
          "| auto / bare |")
    print("|" + "---|" * (len(columns) + 6))
    for layers in (int(v) for v in args.layers.split(",")):
        for hidden in (int(v) for v in args.hidden.split(",")):
            for batch in (int(v) for v in args.batches.split(",")):
                r = measure(batch, hidden, layers, args)
                base, bare, auto = float(r["torch.nn"]), float(r["bare"]), float(r["auto"])
                cells = [f"{float(r[c]):.3f} ({float(r[c]) / base:.2f}x)" for c in columns]
                print(f"| {batch} | {hidden} | {layers} | " + " | ".join(cells)
                      + f" | {r['chosen']} | {auto / base:.2f} | {auto / bare:.2f} |", flush=True)
    print()
    print("(x) = time / torch.nn.LSTM's time in the same run; lower is faster.")


if __name__ == "__main__":
    main()
