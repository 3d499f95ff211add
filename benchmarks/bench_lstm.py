"""Speed and memory of lstmkit's LSTMs against torch.nn.LSTM, measured in one run on this machine.

For every cell of the grid (T in {50, 100, 200}, B in {1, 16, 64}, H in {128, 256, 512, 1024}, I = H/2, 1 and 2
layers) it times torch.nn.LSTM, lstmkit with engine="auto" and engine="fused", and a per-step eager PyTorch loop
(what a user writes by hand), forward only (no_grad) and forward+backward (a training step without the
optimiser), the median of ``--repeats`` (>= 5) runs, the engines interleaved within each repeat so that a change in
the machine's load hits all of them alike. Each variant of lstmkit.LSTM is timed the same way on a smaller grid.
Ratios are speeds relative to torch.nn.LSTM in the same run (> 1: faster than torch.nn.LSTM).

Memory: the bytes each engine keeps for backward (``torch.autograd.graph.saved_tensors_hooks``, each storage
counted once), per layer, time step and batch row.

Cells run shortest sequences first, then cheapest first; when ``--budget-s`` is spent the remaining cells are
listed as not measured, so a run always ends in time and says what it left out.

    python benchmarks/bench_lstm.py            # the full grid, writes docs/benchmarks.md
    python benchmarks/bench_lstm.py --quick    # a few small cells, under a minute; prints only
    python benchmarks/bench_lstm.py --variants-only   # the variant rows only, replaced in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import lstmkit
from lstmkit.engines import fused
from lstmkit.fileio import atomic_write

ROOT = Path(__file__).resolve().parents[1]

VARIANTS: dict[str, dict[str, Any]] = {
    "peephole": {"peephole": True},
    "layer_norm": {"layer_norm": True},
    "coupled_gates": {"coupled_gates": True},
    "forget_bias=1": {"forget_bias": 1.0},
    "recurrent_dropout=0.25": {"recurrent_dropout": 0.25},
    "zoneout=(0.1,0.1)": {"zoneout": (0.1, 0.1)},
    "weight_drop=0.25": {"weight_drop": 0.25},
    "slstm": {"cell": "slstm"},
}


# The sections after this heading in docs/benchmarks.md come from the other scripts; a rewrite keeps them.
OWN_SECTIONS = "## Lengths and small calls"


@dataclass(frozen=True)
class Cell:
    T: int
    B: int
    H: int
    layers: int

    @property
    def I(self) -> int:  # noqa: E743 - the textbook's name for the input size
        return self.H // 2

    @property
    def cost(self) -> float:
        """Multiply-adds of one forward, to order cells and estimate time."""
        first = 4 * self.H * (self.I + self.H)
        rest = 4 * self.H * (2 * self.H) * (self.layers - 1)
        return float(self.T * self.B * (first + rest))

    def __str__(self) -> str:
        return f"T={self.T} B={self.B} H={self.H} L={self.layers}"


@dataclass
class Result:
    cell: Cell
    times: dict[tuple[str, str], float] = field(default_factory=dict)  # (engine, "fwd"|"train") -> seconds


# ---------------------------------------------------------------------------------------------------------
# What is timed
# ---------------------------------------------------------------------------------------------------------


def eager_lstm(x: Tensor, model: nn.LSTM) -> Tensor:
    """The per-step loop a user writes by hand in eager PyTorch (input projection hoisted out of the loop)."""
    T, B, _ = x.shape
    for layer in range(model.num_layers):
        w_ih, w_hh = getattr(model, f"weight_ih_l{layer}"), getattr(model, f"weight_hh_l{layer}")
        b = getattr(model, f"bias_ih_l{layer}") + getattr(model, f"bias_hh_l{layer}")
        x_proj = F.linear(x, w_ih, b)  # (T, B, 4H)
        h = x.new_zeros(B, model.hidden_size)
        c = x.new_zeros(B, model.hidden_size)
        outs = []
        for t in range(T):
            i, f, g, o = (x_proj[t] + h @ w_hh.t()).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        x = torch.stack(outs)
    return x


def steps(model: nn.Module | Callable[[Tensor], Tensor], x: Tensor) -> dict[str, Callable[[], Any]]:
    """The two things timed for a model: an inference forward and a training step (forward + backward)."""

    def run() -> Tensor:
        out = model(x)
        return out[0] if isinstance(out, tuple) else out

    def forward() -> None:
        if isinstance(model, nn.Module):
            model.eval()
        with torch.no_grad():
            run()

    def train() -> None:
        if isinstance(model, nn.Module):
            model.train()
        run().sum().backward()

    return {"fwd": forward, "train": train}


def clock_fn(name: str) -> Callable[[], float]:
    return time.process_time if name == "cpu" else time.perf_counter


def time_interleaved(jobs: dict[str, Callable[[], Any]], repeats: int, clock: Callable[[], float], *,
                     warmups: int = 1, shuffle: bool = False) -> dict[str, float]:
    """Median seconds of each job: ``warmups`` warm-up calls each, then ``repeats`` rounds running every job once
    per round (with ``shuffle``, in a new seeded order each round, so no job always follows the same one)."""
    for job in jobs.values():
        for _ in range(warmups):
            job()
    samples: dict[str, list[float]] = {name: [] for name in jobs}
    order = list(jobs.items())
    for round_ in range(repeats):
        if shuffle:
            random.Random(round_).shuffle(order)
        for name, job in order:
            t0 = clock()
            job()
            samples[name].append(clock() - t0)
    return {name: statistics.median(s) for name, s in samples.items()}


def build(cell: Cell) -> tuple[nn.LSTM, dict[str, nn.Module]]:
    torch.manual_seed(0)
    theirs = nn.LSTM(cell.I, cell.H, cell.layers)
    ours = {}
    for engine in ("auto", "fused"):
        m = lstmkit.LSTM(cell.I, cell.H, cell.layers, engine=engine)
        m.load_state_dict(theirs.state_dict())
        ours[engine] = m
    return theirs, ours


def measure_plain(cell: Cell, repeats: int, clock: Callable[[], float], eager: bool) -> Result:
    theirs, ours = build(cell)
    x = torch.randn(cell.T, cell.B, cell.I)
    models: dict[str, Any] = {"torch.nn": theirs, "auto": ours["auto"], "fused": ours["fused"]}
    if eager:
        models["eager loop"] = lambda inp: eager_lstm(inp, theirs)
    result = Result(cell)
    for mode in ("fwd", "train"):
        jobs = {name: steps(m, x)[mode] for name, m in models.items()}
        for name, t in time_interleaved(jobs, repeats, clock).items():
            result.times[(name, mode)] = t
    return result


def measure_variants(cell: Cell, repeats: int, clock: Callable[[], float]) -> Result:
    torch.manual_seed(0)
    theirs = nn.LSTM(cell.I, cell.H, cell.layers)
    x = torch.randn(cell.T, cell.B, cell.I)
    models: dict[str, Any] = {"torch.nn": theirs, "eager loop": lambda inp: eager_lstm(inp, theirs)}
    for name, kwargs in VARIANTS.items():
        models[name] = lstmkit.LSTM(cell.I, cell.H, cell.layers, **kwargs)
        # The same cell as a per-step eager loop: the reference engine is exactly that loop, written once.
        models[f"{name} eager loop"] = lstmkit.LSTM(cell.I, cell.H, cell.layers, engine="reference", **kwargs)
    result = Result(cell)
    jobs = {name: steps(m, x)["train"] for name, m in models.items()}
    for name, t in time_interleaved(jobs, repeats, clock).items():
        result.times[(name, "train")] = t
    result.times.update({(name, "engine"): 0.0 for name in VARIANTS})
    return result


def saved_bytes(model: Any, x: Tensor) -> int:
    """Bytes autograd keeps for backward after one forward (each storage once)."""
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        if t.layout == torch.strided and t.device.type == "cpu":
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
        del out
    return sum(seen.values())


def measure_memory(cell: Cell) -> dict[str, float]:
    """Bytes saved for backward per layer, step and batch row, beyond the weights."""
    theirs, ours = build(cell)
    reference = lstmkit.LSTM(cell.I, cell.H, cell.layers, engine="reference")
    x = torch.randn(cell.T, cell.B, cell.I)
    weights = sum(p.numel() * p.element_size() for p in theirs.parameters())
    per = cell.layers * cell.T * cell.B
    models: dict[str, Any] = {
        "torch.nn": theirs, "fused": ours["fused"], "reference": reference,
        "eager loop": lambda inp: eager_lstm(inp, theirs),
    }
    out = {}
    for name, m in models.items():
        if isinstance(m, nn.Module):
            m.train()
        out[name] = max(0, saved_bytes(m, x) - weights) / per
    return out


# ---------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------


def cpu_name() -> tuple[str, str]:
    """The CPU's model name and family, from /proc/cpuinfo where there is one."""
    model, family = platform.processor() or platform.machine(), "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("cpu family"):
                family = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return model, family


def machine() -> str:
    model, family = cpu_name()
    return (
        f"{model} (cpu family {family}), {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} torch thread(s), "
        f"Python {platform.python_version()}"
    )


def ratio(result: Result, name: str, mode: str, base: str = "torch.nn") -> str:
    if (name, mode) not in result.times or (base, mode) not in result.times:
        return "-"
    return f"{result.times[(base, mode)] / result.times[(name, mode)]:.2f}"


def plain_table(results: list[Result], skipped: list[Cell], eager: bool) -> list[str]:
    names = ["auto", "fused"] + (["eager loop"] if eager else [])
    head = "| cell | torch.nn fwd ms | torch.nn train ms | " + " | ".join(
        f"{n} fwd | {n} train" for n in names
    ) + " |"
    lines = [head, "|" + "---|" * (3 + 2 * len(names))]
    for r in results:
        row = [str(r.cell), f"{r.times[('torch.nn', 'fwd')] * 1e3:.2f}", f"{r.times[('torch.nn', 'train')] * 1e3:.2f}"]
        for n in names:
            row += [ratio(r, n, "fwd"), ratio(r, n, "train")]
        lines.append("| " + " | ".join(row) + " |")
    for c in skipped:
        lines.append(f"| {c} | not measured (budget spent) |" + " |" * (1 + 2 * len(names)))
    return lines


def variant_table(results: list[Result]) -> list[str]:
    lines = [
        "| cell | variant | engine | train time / torch.nn train | speed-up over the same cell's eager loop "
        "| speed-up over the plain LSTM's eager loop |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for name, kwargs in VARIANTS.items():
            t = r.times[(name, "train")]
            engine = lstmkit.LSTM(r.cell.I, r.cell.H, r.cell.layers, **kwargs).engine
            lines.append(
                f"| {r.cell} | {name} | {engine} | {t / r.times[('torch.nn', 'train')]:.2f} | "
                f"{r.times[(f'{name} eager loop', 'train')] / t:.2f} | {r.times[('eager loop', 'train')] / t:.2f} |"
            )
    return lines


def memory_table(cell: Cell, mem: dict[str, float]) -> list[str]:
    H, P = cell.H, cell.H
    lines = [
        f"Bytes kept for backward per layer, step and batch row at {cell} (float32, weights excluded):",
        "",
        "| engine | bytes | in floats |",
        "|---|---|---|",
    ]
    for name, b in mem.items():
        lines.append(f"| {name} | {b:.0f} | {b / 4:.0f} |")
    lines += [
        "",
        f"The fused engine's minimum: gate activations i, f, g, o (4H = {4 * H}) and the cell state c_t "
        f"(H = {H}) per row and step, {5 * H * 4} bytes; besides these autograd keeps the layer's output h_t "
        f"(P = {P}), which the next layer (or the loss) holds anyway, and the layer input x_t for the weight "
        "gradient of the input projection.",
    ]
    return lines


VARIANTS_HEADING = "## Variants: a training step"


def rerun_variants(
    args: argparse.Namespace, cells: list[Cell], clock: Callable[[], float], argv: list[str] | None, start: float,
    load_before: tuple[float, float, float],
) -> int:
    """Time the variant rows alone and put them, with the run's own machine line, in place of the variants
    section of ``args.out``; the other sections keep the numbers of the run that wrote them."""
    variants = []
    for cell in cells:
        variants.append(measure_variants(cell, args.repeats, clock))
        print(f"variants {cell}: done", file=sys.stderr)
    load_after = os.getloadavg()
    command = " ".join(argv if argv is not None else sys.argv[1:])
    section = [
        VARIANTS_HEADING,
        "",
        f"Measured in a separate run of the variant rows only: machine {machine()}. Clock: {args.clock}. Median of "
        f"{args.repeats} runs, interleaved. Load average (1 min) {load_before[0]:.1f} at the start and "
        f"{load_after[0]:.1f} at the end; {time.perf_counter() - start:.0f} s: "
        f"`python benchmarks/bench_lstm.py {command}`.",
        "",
        *variant_table(variants),
        "",
    ]
    text = "\n".join(section)
    print(text)
    if args.no_write or args.quick:
        return 0
    old = args.out.read_text() if args.out.exists() else ""
    head, found, rest = old.partition(VARIANTS_HEADING)
    if not found:
        raise SystemExit(f"error: {args.out} has no section {VARIANTS_HEADING!r} to replace; run the full benchmark")
    tail = rest[rest.index("\n## ") + 1 :] if "\n## " in rest else ""
    with atomic_write(args.out) as handle:
        handle.write(head + text + "\n" + tail)
    print(f"wrote the variant rows into {args.out}", file=sys.stderr)
    return 0


def parse_cells(text: str) -> list[Cell]:
    """``T:B:H:L`` cells separated by commas, as given to ``--cells``."""
    cells = []
    for item in text.split(","):
        try:
            T, B, H, L = (int(v) for v in item.split(":"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected T:B:H:L, e.g. 100:64:256:1, got {item!r}") from None
        cells.append(Cell(T, B, H, L))
    return cells


def run_cells(cells: list[Cell], repeats: int, clock: Callable[[], float]) -> int:
    """Times the given plain-LSTM cells only and prints their ratios (nothing is written)."""
    print(f"Machine: {machine()}. Load average {os.getloadavg()[0]:.2f} at the start.")
    print("| cell | auto fwd | auto train | fused fwd | fused train |")
    print("|---|---|---|---|---|")
    for cell in cells:
        r = measure_plain(cell, repeats, clock, eager=False)
        print(
            f"| {cell} | {ratio(r, 'auto', 'fwd')} | {ratio(r, 'auto', 'train')} | "
            f"{ratio(r, 'fused', 'fwd')} | {ratio(r, 'fused', 'train')} |"
        )
    print(f"Load average {os.getloadavg()[0]:.2f} at the end.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few small cells, under a minute; prints only")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per engine and cell (median; >= 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall",
        help="wall: elapsed time; cpu: this process's CPU time, steadier on a loaded machine with --threads 1",
    )
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="stop starting new cells after this long (ends in ~10 min)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print the tables without writing --out")
    parser.add_argument(
        "--cells", type=parse_cells, default=None, metavar="T:B:H:L,...",
        help="only these plain-LSTM cells (e.g. the bar sizes 100:64:256:1,100:16:512:1); prints only",
    )
    parser.add_argument(
        "--variants-only", action="store_true",
        help="time the variant rows only and replace that section of --out (the rest of the file is kept)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 5:
        parser.error(f"--repeats must be >= 5 (a median of at least five runs), got {args.repeats}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    clock = clock_fn(args.clock)
    start = time.perf_counter()
    load_before = os.getloadavg()

    if fused.kernel() is None:
        print(f"the fused engine is not there ({fused.build_error()}); build it first", file=sys.stderr)
        return 2

    if args.quick:
        grid = [Cell(50, B, H, 1) for B in (1, 16) for H in (128, 256)]
        variant_cells = [Cell(50, 16, 128, 1)]
        memory_cell = Cell(50, 16, 128, 1)
    else:
        grid = [
            Cell(T, B, H, L) for T in (50, 100, 200) for B in (1, 16, 64) for H in (128, 256, 512, 1024)
            for L in (1, 2)
        ]
        variant_cells = [Cell(100, 64, 256, 1), Cell(100, 16, 512, 1)]  # the sizes the variants are held to
        memory_cell = Cell(100, 16, 256, 2)
    grid.sort(key=lambda c: (c.T, c.cost))  # every B, H and depth at T=50 first, then longer sequences
    eager_max_cost = 5e8  # the eager loop only where it takes well under a second

    if args.cells is not None:
        return run_cells(args.cells, args.repeats, clock)
    if args.variants_only:
        return rerun_variants(args, variant_cells, clock, argv, start, load_before)

    mem = measure_memory(memory_cell)
    variants = []
    for cell in variant_cells:
        variants.append(measure_variants(cell, args.repeats, clock))
        print(f"variants {cell}: done", file=sys.stderr)
    results, skipped = [], []
    for cell in grid:
        if time.perf_counter() - start > args.budget_s:
            skipped.append(cell)
            continue
        r = measure_plain(cell, args.repeats, clock, eager=cell.cost <= eager_max_cost)
        results.append(r)
        print(
            f"{cell}: auto fwd {ratio(r, 'auto', 'fwd')} train {ratio(r, 'auto', 'train')}, "
            f"fused fwd {ratio(r, 'fused', 'fwd')} train {ratio(r, 'fused', 'train')}",
            file=sys.stderr,
        )
    elapsed = time.perf_counter() - start
    load_after = os.getloadavg()

    lines = [
        "# Benchmarks: lstmkit against torch.nn.LSTM",
        "",
        f"Machine: {machine()}. Clock: {args.clock}. Median of {args.repeats} runs per engine, interleaved. "
        f"Load average (1 min) {load_before[0]:.1f} at the start and {load_after[0]:.1f} at the end "
        f"(the machine has {os.cpu_count()} CPUs and was shared). Run took {elapsed:.0f} s: "
        f"`python benchmarks/bench_lstm.py {' '.join(argv if argv is not None else sys.argv[1:])}`.",
        "",
        "## Plain LSTM: speed relative to torch.nn.LSTM (> 1 is faster)",
        "",
        "fwd: inference forward (no_grad). train: forward + backward of the summed output. I = H/2. "
        "The eager loop (the per-step loop a user writes) only where it runs in seconds.",
        "",
        *plain_table(results, skipped, eager=True),
        "",
        VARIANTS_HEADING,
        "",
        *variant_table(variants),
        "",
        "## Memory kept for backward",
        "",
        *memory_table(memory_cell, mem),
        "",
        "## Reading these numbers",
        "",
        "- Every ratio compares engines timed in the same run, interleaved; absolute times on a shared machine",
        "  are not comparable between runs. On a loaded machine use `--threads 1 --clock cpu`: with two OpenMP",
        "  threads and other processes on the cores, spin-waiting threads make wall times swing by 10x.",
        "- A training step costs at least 3x the forward's multiply-adds (backward: dh = dgates W_hh per step,",
        "  then dW_hh, dW_ih and dx, each as large as the forward's products). With one thread torch.nn.LSTM's",
        "  oneDNN kernel already trains at about 3.1x its own inference forward, so an engine built from the",
        "  same GEMMs can win by little there; the fused engine's margin comes from the recurrent GEMMs of",
        "  backward and the weight gradients being single large GEMMs, and grows with H.",
        "- `auto` runs torch.nn.LSTM's own kernel (`native`) for plain LSTMs: its ratio is lstmkit's Python",
        "  overhead around the same kernel, a few tens of microseconds per call. For variants `auto` takes the",
        "  fused engine, which runs every one of them (peephole, layer_norm, coupled_gates, recurrent_dropout,",
        "  zoneout, slstm); forget_bias alone is an initialisation, so torch.nn's kernel runs it.",
        "- 'The same cell's eager loop' is that variant written as a per-step loop in eager PyTorch (our reference",
        "  engine, which hoists the input projection out of the loop as a careful user would); the last column",
        "  compares with the plain LSTM's per-step eager loop.",
        "- layer_norm is the slowest variant: per step it adds two layer norms (over 4H and H) forward and their",
        "  backward, and the input part's LN runs through autograd (measured, one thread, T=50 B=16 H=256: fused",
        "  training step 38 ms with layer_norm against 29 ms without).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out.exists() and OWN_SECTIONS in (old := args.out.read_text()):
        text += "\n" + old[old.index(OWN_SECTIONS):]  # written by bench_lengths.py / bench_small_calls.py: kept
    if not args.no_write and not args.quick:
        with atomic_write(args.out) as handle:
            handle.write(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
