"""The default path against torch.nn.LSTM and against the machine's limit, in one run: the speed targets of
docs/benchmarks.md ("The default engine against torch.nn and the limit").

Every figure is a ratio to torch.nn.LSTM measured in the same run (jobs interleaved within each repeat, the median
of ``--repeats``), and every engine's forward and training step is also given as achieved GFLOP/s beside this
machine's GEMM peak (a 2048^3 fp32 GEMM at the same thread count). FLOPs count the LSTM's products only:
``2 * 4H * (I + H)`` per step and row for the forward, three times that for a training step (backward's two
products per forward one). The sections:

1. GEMM peak.
2. ``lengths=`` at T=500 B=32 H=256 (lengths uniform in [1, T]), a training step: the default engine against
   torch.nn's PackedSequence and its padded step (target: >= 10x the packed, >= 1x the padded).
3. ``reset=`` resetting 1% of the (t, b) pairs, a training step, against torch.nn's plain step without resets
   (target: <= 1.15x its time).
4. Plain LSTM at T=100, B=64 H=256 and B=16 H=512 (I = H/2): torch.nn, the default engine and each engine,
   inference forward (no_grad) and training step, speed ratio and GFLOP/s (targets: fused forward >= 1x torch.nn;
   the default engine never slower than torch.nn), and where the fused forward's time goes: its step GEMMs and
   its input projection alone against torch.nn's whole forward.
5. Every variant's training step with the default engine at the same sizes, as time / plain torch.nn's
   (target: <= 1.3).
6. The small call: T=1 B=1 H=256, 2 layers, one thread, inference: the default engine against the bare step (two
   addmm and the pointwise ops per layer; target <= 1.5x) and torch.nn.

Two to four minutes on 2 cores at the defaults (the PackedSequence steps are most of it). Run it on a quiet
machine; it prints markdown tables and the load average before and after.

    python benchmarks/bench_default.py --threads 2
    python benchmarks/bench_default.py --threads 2 --quick     # smaller sizes, a minute; for a smoke test
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_lstm import clock_fn, machine, time_interleaved  # noqa: E402

import lstmkit  # noqa: E402
from lstmkit.engines import fused  # noqa: E402

VARIANTS: dict[str, dict[str, Any]] = {
    "peephole": {"peephole": True},
    "layer_norm": {"layer_norm": True},
    "coupled_gates": {"coupled_gates": True},
    "recurrent_dropout=0.25": {"recurrent_dropout": 0.25},
    "zoneout=(0.1,0.1)": {"zoneout": (0.1, 0.1)},
    "weight_drop=0.25": {"weight_drop": 0.25},
    "slstm": {"cell": "slstm"},
}
ENGINES = ("native", "fused", "reference")


def interleaved(jobs: dict[str, Callable[[], Any]], repeats: int, clock: Callable[[], float]) -> dict[str, float]:
    """Median seconds per job, the jobs in a new order each round (no job always follows the same one)."""
    return time_interleaved(jobs, repeats, clock, shuffle=True)


def lstm_flops(T: int, B: int, I: int, H: int) -> float:  # noqa: E741
    """The forward's multiply-adds, times 2: ``2 * 4H * (I + H)`` per step and row."""
    return 2.0 * 4 * H * (I + H) * T * B


def gemm_peak(repeats: int, clock: Callable[[], float]) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    seconds = interleaved({"gemm": lambda: torch.mm(a, b)}, repeats, clock)["gemm"]
    return 2.0 * 2048**3 / seconds / 1e9


def train(model: nn.Module, x: Tensor, **kwargs: Any) -> Callable[[], None]:
    def step() -> None:
        out = model(x, **kwargs)[0]
        if isinstance(out, tuple):  # a PackedSequence
            out = out[0]
        out.sum().backward()

    return step


def infer(model: nn.Module, x: Tensor) -> Callable[[], None]:
    def forward() -> None:
        with torch.no_grad():
            model(x)

    return forward


def pair(I: int, H: int, layers: int = 1, engine: str = "auto", **variants: Any) -> tuple[nn.LSTM, Any]:  # noqa: E741
    torch.manual_seed(0)
    theirs = nn.LSTM(I, H, layers)
    ours = lstmkit.LSTM(I, H, layers, engine=engine, **variants)
    if not variants:
        ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def section_lengths(T: int, B: int, H: int, repeats: int, clock: Callable[[], float]) -> list[str]:
    I = H // 2  # noqa: E741
    theirs, ours = pair(I, H)
    x = torch.randn(T, B, I)
    lengths = torch.randint(1, T + 1, (B,))
    lengths[0] = T

    def packed() -> None:
        out, _ = theirs(pack_padded_sequence(x, lengths, enforce_sorted=False))
        pad_packed_sequence(out, total_length=T)[0].sum().backward()

    jobs = {"torch.nn packed": packed, "torch.nn padded": train(theirs, x), "default lengths=": train(
        ours, x, lengths=lengths)}
    times = interleaved(jobs, repeats, clock)
    real = float(lengths.sum()) / (T * B)
    d = times["default lengths="]
    return [
        f"### lengths= (T={T} B={B} H={H} I={I}, lengths uniform in [1, T]: {real:.0%} of the padded steps are real; "
        f"training step; default engine: {ours.last_engine})",
        "",
        "| job | s | default's speed-up over it | target |",
        "|---|---|---|---|",
        f"| torch.nn PackedSequence | {times['torch.nn packed']:.3f} | {times['torch.nn packed'] / d:.2f}x | >= 10x |",
        f"| torch.nn padded | {times['torch.nn padded']:.3f} | {times['torch.nn padded'] / d:.2f}x | >= 1x |",
        f"| default, lengths= | {d:.3f} | 1.00x | |",
        "",
    ]


def section_reset(sizes: list[tuple[int, int, int]], repeats: int, clock: Callable[[], float]) -> list[str]:
    lines = ["### reset= (1% of the (t, b) pairs reset; training step)", "",
             "| T, B, H | torch.nn plain ms | default with reset= ms | engine | time / torch.nn's | target |",
             "|---|---|---|---|---|---|"]
    for T, B, H in sizes:
        I = H // 2  # noqa: E741
        theirs, ours = pair(I, H)
        x = torch.randn(T, B, I)
        gen = torch.Generator().manual_seed(1)
        reset = torch.rand(T, B, generator=gen) < 0.01
        times = interleaved({"torch.nn": train(theirs, x), "reset": train(ours, x, reset=reset)}, repeats, clock)
        r = times["reset"] / times["torch.nn"]
        lines.append(f"| {T}, {B}, {H} | {times['torch.nn'] * 1e3:.1f} | {times['reset'] * 1e3:.1f} | "
                     f"{ours.last_engine} | {r:.2f} | <= 1.15 |")
    return [*lines, ""]


def section_plain(sizes: list[tuple[int, int, int]], repeats: int, clock: Callable[[], float],
                  peak: float) -> list[str]:
    lines = [f"### Plain LSTM: speed / torch.nn's (> 1 is faster) and achieved GFLOP/s (GEMM peak {peak:.0f})", "",
             "| T, B, H | mode | job | ms | speed / torch.nn | GFLOP/s | % of GEMM peak |",
             "|---|---|---|---|---|---|---|"]
    for T, B, H in sizes:
        I = H // 2  # noqa: E741
        theirs, default = pair(I, H)
        models: dict[str, Any] = {"torch.nn": theirs, "default": default}
        for engine in ENGINES:
            models[engine] = pair(I, H, engine=engine)[1]
        x = torch.randn(T, B, I)
        jobs: dict[str, Callable[[], Any]] = {}
        for name, m in models.items():
            jobs[f"{name} fwd"] = infer(m, x)
            jobs[f"{name} train"] = train(m, x)
        times = interleaved(jobs, repeats, clock)
        flops = lstm_flops(T, B, I, H)
        for mode, factor in (("fwd", 1), ("train", 3)):
            base = times[f"torch.nn {mode}"]
            for name in models:
                s = times[f"{name} {mode}"]
                label = f"default ({default.last_engine})" if name == "default" else name
                rate = factor * flops / s / 1e9
                lines.append(f"| {T}, {B}, {H} | {mode} | {label} | {s * 1e3:.1f} | {base / s:.2f} | {rate:.0f} | "
                             f"{rate / peak:.0%} |")
    return [*lines, "",
            "Targets: fused fwd >= 1.00; default >= 1.00 in fwd and train (it runs native for plain calls).", ""]


def step_gemms(T: int, B: int, w_hh: Tensor, onednn: bool) -> Callable[[], None]:
    """T products h @ W_hh^T as the fused kernel makes them: oneDNN with a prepacked weight, or torch.mm."""
    h = torch.randn(B, w_hh.size(1))
    packed = torch.ops.mkldnn._reorder_linear_weight(w_hh, B) if onednn else None

    def run() -> None:
        for _ in range(T):
            if packed is not None:
                torch.ops.mkldnn._linear_pointwise(h, packed, None, "none", [], "")
            else:
                torch.mm(h, w_hh.t())

    return run


def projection(x: Tensor, w_ih: Tensor, bias: Tensor) -> Callable[[], None]:
    """The input projection of all steps as the fused engine's inference forward computes it (``fused._project``:
    oneDNN with the weight's packed copy kept between calls, where oneDNN is there)."""

    def run() -> None:
        with torch.no_grad():
            fused._project(x, w_ih, bias)

    return run


def section_fused_profile(sizes: list[tuple[int, int, int]], repeats: int, clock: Callable[[], float]) -> list[str]:
    """Where the fused forward's time goes, beside torch.nn's whole forward: its two kinds of GEMM alone (the
    T recurrent products through oneDNN with a prepacked weight, as the kernel calls them for these shapes, and
    the input projection of all steps, as the engine's inference forward makes it) against the whole fused forward."""
    lines = ["### The fused inference forward: its GEMMs alone against torch.nn's whole forward", "",
             "| T, B, H | torch.nn fwd ms | fused fwd ms | T step GEMMs ms | input projection ms | "
             "GEMMs alone / torch.nn fwd |", "|---|---|---|---|---|---|"]
    for T, B, H in sizes:
        I = H // 2  # noqa: E741
        theirs, fast = pair(I, H, engine="fused")
        x = torch.randn(T, B, I)
        w_hh, w_ih = theirs.weight_hh_l0.detach(), theirs.weight_ih_l0.detach()
        bias = (theirs.bias_ih_l0 + theirs.bias_hh_l0).detach()
        onednn = torch.backends.mkldnn.is_available() and B * 4 * H * H > 1 << 20  # the kernel's rule (StepGemm)
        jobs = {"torch.nn": infer(theirs, x), "fused": infer(fast, x), "steps": step_gemms(T, B, w_hh, onednn),
                "x_proj": projection(x, w_ih, bias)}
        t = interleaved(jobs, repeats, clock)
        gemms = t["steps"] + t["x_proj"]
        lines.append(f"| {T}, {B}, {H} | {t['torch.nn'] * 1e3:.1f} | {t['fused'] * 1e3:.1f} | {t['steps'] * 1e3:.1f} "
                     f"| {t['x_proj'] * 1e3:.1f} | {gemms / t['torch.nn']:.2f} |")
    return [*lines, "", "Above 1.00 in the last column, no pointwise work can bring the fused forward to torch.nn's "
            "speed: its GEMMs alone cost more than torch.nn's whole oneDNN LSTM primitive.", ""]


def section_variants(sizes: list[tuple[int, int, int]], repeats: int, clock: Callable[[], float]) -> list[str]:
    lines = ["### Variants: training step with the default engine, time / plain torch.nn's (target <= 1.3)", "",
             "| T, B, H | variant | engine | ms | time / torch.nn plain |", "|---|---|---|---|---|"]
    for T, B, H in sizes:
        I = H // 2  # noqa: E741
        theirs, _ = pair(I, H)
        x = torch.randn(T, B, I)
        models = {name: pair(I, H, **kwargs)[1].train() for name, kwargs in VARIANTS.items()}
        jobs = {"torch.nn": train(theirs, x), **{name: train(m, x) for name, m in models.items()}}
        times = interleaved(jobs, repeats, clock)
        for name, m in models.items():
            lines.append(f"| {T}, {B}, {H} | {name} | {m.last_engine} | {times[name] * 1e3:.1f} | "
                         f"{times[name] / times['torch.nn']:.2f} |")
    return [*lines, ""]


def bare_step(ref: nn.LSTM) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """The LSTM step as two addmm and the pointwise ops per layer (biases summed once, outside the timing)."""
    layers = [(getattr(ref, f"weight_ih_l{k}"), getattr(ref, f"weight_hh_l{k}"),
               (getattr(ref, f"bias_ih_l{k}") + getattr(ref, f"bias_hh_l{k}")).detach()) for k in range(ref.num_layers)]

    def step(x: Tensor, h0: Tensor, c0: Tensor) -> Tensor:
        inp = x[0]
        for k, (w_ih, w_hh, b) in enumerate(layers):
            i, f, g, o = torch.addmm(torch.addmm(b, inp, w_ih.t()), h0[k], w_hh.t()).chunk(4, 1)
            c = torch.sigmoid(f) * c0[k] + torch.sigmoid(i) * torch.tanh(g)
            inp = torch.sigmoid(o) * torch.tanh(c)
        return inp

    return step


def section_small_call(repeats: int, clock: Callable[[], float]) -> list[str]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        theirs, ours = pair(64, 256, 2)
        theirs.eval(), ours.eval()
        x = torch.randn(1, 1, 64)
        h0, c0 = torch.zeros(2, 1, 256), torch.zeros(2, 1, 256)
        bare = bare_step(theirs)
        calls = 50

        def many(f: Callable[[], Any]) -> Callable[[], None]:
            def run() -> None:
                with torch.no_grad():
                    for _ in range(calls):
                        f()

            return run

        jobs = {"torch.nn": many(lambda: theirs(x, (h0, c0))), "bare": many(lambda: bare(x, h0, c0)),
                "default": many(lambda: ours(x, (h0, c0)))}
        times = {k: v / calls for k, v in interleaved(jobs, repeats, clock).items()}
    finally:
        torch.set_num_threads(threads)
    d = times["default"]
    return [
        "### The small call (T=1 B=1 I=64 H=256, 2 layers, one thread, inference)", "",
        "| job | us per call | default / it | target |", "|---|---|---|---|",
        f"| bare step (2 addmm + pointwise per layer) | {times['bare'] * 1e6:.0f} | {d / times['bare']:.2f} | <= 1.5 |",
        f"| torch.nn.LSTM | {times['torch.nn'] * 1e6:.0f} | {d / times['torch.nn']:.2f} | |",
        f"| default ({ours.last_engine}) | {d * 1e6:.0f} | 1.00 | |", "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per job (median); lengths: 3")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test (no targets)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    clock = clock_fn(args.clock)
    if fused.kernel() is None:
        print(f"warning: the fused engine is not there ({fused.build_error()})", file=sys.stderr)
    sizes = [(100, 64, 256), (100, 16, 512)] if not args.quick else [(20, 8, 64)]
    lengths_cell = (500, 32, 256) if not args.quick else (60, 8, 64)
    start, load = time.perf_counter(), os.getloadavg()[0]
    print(f"Machine: {machine()}. Clock: {args.clock}. Load average (1 min) {load:.2f} at the start.")
    print(f"Command: python benchmarks/bench_default.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print()
    peak = gemm_peak(args.repeats, clock)
    print(f"GEMM peak: 2048^3 fp32 torch.mm at {torch.get_num_threads()} thread(s): {peak:.0f} GFLOP/s")
    print()
    for lines in (
        section_lengths(*lengths_cell, max(3, args.repeats // 2), clock),
        section_reset(sizes, args.repeats, clock),
        section_plain(sizes, args.repeats, clock, peak),
        section_fused_profile(sizes, args.repeats, clock),
        section_variants(sizes, args.repeats, clock),
        section_small_call(max(args.repeats, 15), clock),
    ):
        print("\n".join(lines), flush=True)
    print(f"Took {time.perf_counter() - start:.0f} s; load average (1 min) {os.getloadavg()[0]:.2f} at the end.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
