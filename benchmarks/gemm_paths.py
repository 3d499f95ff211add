"""The ceiling for the fused engine's inference forward: its GEMMs by every fp32 path, against torch.nn.LSTM.

At the bar sizes of docs/benchmarks.md (T=100, B=64 I=128 H=256 and B=16 I=256 H=512), times in one process,
interleaved within each repeat (median of ``--repeats``), in CPU time (``--clock wall`` for wall time):

* torch.nn.LSTM's whole inference forward (oneDNN's LSTM primitive), the reference every row is divided by;
* the T recurrent step GEMMs ``h (B, H) @ W_hh^T (H, 4H)`` by each path: ``torch.mm``, ``torch.mm`` into a
  preallocated buffer (``out=``), oneDNN through a weight prepacked once (``mkldnn::_linear_pointwise``), and
  oneDNN on mkldnn tensors (``torch._C._nn.mkldnn_linear``);
* the step GEMMs with each step's slice of the input projection added (the read the kernel's gate code makes of
  it), with the projection computed once for all steps beforehand (not counted) or in chunks of 4 steps just
  before their steps (counted): how much reading x_proj back from memory costs;
* the step GEMMs accumulating into x_proj's slices in place (``addmm_``), and the step GEMMs over
  ``[x_t, h_{t-1}] @ [W_ih; W_hh]^T`` (no x_proj at all, both GEMM kinds in one, counted as the whole forward's);
* the input projection ``x (T*B, I) @ W_ih^T`` in one GEMM, by ``F.linear`` (MKL) and by oneDNN prepacked;
* the fused engine's whole inference forward.

A row's ratio is its time / torch.nn's forward: the recurrent steps plus the projection by the best paths is the
least a forward built from separate GEMM calls can cost, before any pointwise work.

    python benchmarks/gemm_paths.py [--threads 1] [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lstm import cpu_name, time_interleaved  # noqa: E402

import lstmkit  # noqa: E402

SIZES = [(100, 64, 128, 256), (100, 16, 256, 512)]


def jobs_for(T: int, B: int, I: int, H: int) -> dict[str, Callable[[], object]]:  # noqa: E741
    torch.manual_seed(0)
    theirs = torch.nn.LSTM(I, H).eval()
    ours = lstmkit.LSTM(I, H, engine="fused").eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(T, B, I)
    h = torch.randn(B, H)
    w_hh, w_ih = theirs.weight_hh_l0.detach().clone(), theirs.weight_ih_l0.detach().clone()
    bias = (theirs.bias_ih_l0 + theirs.bias_hh_l0).detach()
    w_hh_t = w_hh.t()
    buf = torch.empty(B, 4 * H)
    packed_hh = torch.ops.mkldnn._reorder_linear_weight(w_hh, B)
    h_mk, w_hh_mk = h.to_mkldnn(), w_hh.to_mkldnn()
    x2 = x.reshape(T * B, I)
    packed_ih = torch.ops.mkldnn._reorder_linear_weight(w_ih, T * B)

    def steps(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(T):
                fn()
        return run

    def add_projection(chunks: int, steps_per_chunk: int) -> Callable[[], None]:
        # The step GEMMs with each step's slice of the input projection added, as the kernel's gate code reads it:
        # projected once for all steps (chunks=1, its cost not counted), or in chunks just before their steps (all
        # counted), so that x_proj is read back from cache rather than memory.
        packed = torch.ops.mkldnn._reorder_linear_weight(w_ih, B * steps_per_chunk)
        whole = torch.ops.mkldnn._linear_pointwise(x2, packed_ih, bias, "none", [], "").view(T, B, 4 * H)

        def run() -> None:
            for t0 in range(0, T, steps_per_chunk):
                if chunks == 1:
                    part = whole[t0:t0 + steps_per_chunk]
                else:
                    rows = x[t0:t0 + steps_per_chunk].reshape(-1, I)
                    part = torch.ops.mkldnn._linear_pointwise(rows, packed, bias, "none", [], "").view(-1, B, 4 * H)
                for k in range(part.size(0)):
                    torch.ops.mkldnn._linear_pointwise(h, packed_hh, None, "none", [], "").add_(part[k])
        return run

    def accumulate() -> Callable[[], None]:
        # Each step's GEMM added into its slice of x_proj inside the GEMM (C = C + h W^T): no separate read of it.
        xp = F.linear(x2, w_ih, bias).view(T, B, 4 * H)

        def run() -> None:
            for t in range(T):
                xp[t].addmm_(h, w_hh_t)
        return run

    def concatenated() -> Callable[[], None]:
        # No x_proj at all: each step's GEMM takes [x_t, h_{t-1}] against both weights side by side.
        packed = torch.ops.mkldnn._reorder_linear_weight(torch.cat([w_ih, w_hh], 1), B)
        xh = torch.empty(B, I + H)

        def run() -> None:
            for t in range(T):
                xh[:, :I].copy_(x[t])
                xh[:, I:].copy_(h)
                torch.ops.mkldnn._linear_pointwise(xh, packed, bias, "none", [], "")
        return run

    def nn_forward() -> None:
        with torch.no_grad():
            theirs(x)

    def fused_forward() -> None:
        with torch.no_grad():
            ours(x)

    return {
        "torch.nn.LSTM forward": nn_forward,
        "fused engine forward": fused_forward,
        "steps: torch.mm": steps(lambda: torch.mm(h, w_hh_t)),
        "steps: torch.mm out=": steps(lambda: torch.mm(h, w_hh_t, out=buf)),
        "steps: oneDNN prepacked": steps(
            lambda: torch.ops.mkldnn._linear_pointwise(h, packed_hh, None, "none", [], "")),
        "steps: oneDNN mkldnn tensors": steps(lambda: torch._C._nn.mkldnn_linear(h_mk, w_hh_mk, None)),
        "steps: oneDNN prepacked, + x_proj[t]": add_projection(1, T),
        "steps + projection by 4 steps, + x_proj[t]": add_projection(4, 4),
        "steps: torch.addmm_ into x_proj[t] (MKL, beta 1)": accumulate(),
        "steps: [x_t, h] @ [W_ih; W_hh]^T + b, oneDNN prepacked": concatenated(),
        "projection: F.linear": lambda: F.linear(x2, w_ih, bias),
        "projection: oneDNN prepacked": lambda: torch.ops.mkldnn._linear_pointwise(
            x2, packed_ih, bias, "none", [], ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"{cpu_name()[0]}, torch {torch.__version__}, {args.threads} thread(s), {args.clock} time, "
          f"load {os.getloadavg()[0]:.1f}")
    for T, B, I, H in SIZES:  # noqa: E741
        times = time_interleaved(jobs_for(T, B, I, H), args.repeats, clock, warmups=2)
        base = times["torch.nn.LSTM forward"]
        print(f"\nT={T} B={B} I={I} H={H}")
        print("| path | ms | / torch.nn forward | GFLOP/s |")
        print("|---|---|---|---|")
        for name, t in times.items():
            if name.startswith("steps + projection") or "[x_t, h]" in name:
                flops = 2 * T * B * 4 * H * (I + H)
            elif name.startswith("steps"):
                flops = 2 * T * B * H * 4 * H
            elif name.startswith("projection"):
                flops = 2 * T * B * I * 4 * H
            else:
                flops = 2 * T * B * 4 * H * (I + H)
            print(f"| {name} | {t * 1e3:.1f} | {t / base:.2f} | {flops / t / 1e9:.0f} |")
    print(f"\nload {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
