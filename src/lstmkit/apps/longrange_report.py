"""``lstmkit longrange report``: the lab's whole table in one resumable command.

The table is tasks x lengths x models (tanh RNN, GRU, LSTM, each task with its own defaults: the task's
:class:`~lstmkit.synthetic.Recipe`), plus two ablations of the LSTM: its gate-bias initialisation (zeros, torch,
forget bias 1, chrono) and the memory cell (``cell="no_c"``). Every cell runs ``seeds`` seeds, and each run is
exactly the single command printed beside its cell (:func:`~lstmkit.apps.longrange.rerun_command`), capped by
steps and, with a CPU budget, by CPU time (the budget divided evenly over the runs). Each result is appended to
``DIR/results.jsonl`` as soon as it ends: a killed report, started again with the same arguments, skips what is
already there. ``DIR/table.md`` and the plots (``DIR/<section>_<task>_T<length>.png``, the held-out metric
against the step) are rewritten after every task.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..fileio import atomic_write
from .longrange import LongRangeConfig, LongRangeResult, plot_history, rerun_command, train

MODELS = ("rnn", "gru", "lstm")


@dataclass(frozen=True)
class Run:
    """One row of the plan: which section of the table it belongs to, the config and the seed it trains."""

    section: str  # "main", "init" or "no_c"
    label: str  # the column: a model, an init, or a cell
    config: LongRangeConfig

    @property
    def key(self) -> str:
        c = self.config
        return f"{self.section}|{c.task}|{c.length}|{self.label}|{c.seed}"


# The report's rows: (task, length). The digits tasks have one length each (their pixels).
MAIN = (("adding", 100), ("adding", 200), ("adding", 400), ("copy", 100), ("temporal-order", 100),
        ("digits", 64), ("digits-permuted", 64), ("digits-long", 784), ("digits-long-permuted", 784))
ABLATIONS = (("adding", 200), ("copy", 100))
# --quick: the same sections on short lengths and small models, for minutes (the digits keep their pixels).
QUICK_MAIN = (("adding", 20), ("copy", 10), ("temporal-order", 20), ("digits", 64), ("digits-long", 784))
QUICK_ABLATIONS = (("adding", 20), ("copy", 10))
QUICK: dict[str, Any] = {"hidden_size": 32, "steps": 400, "eval_every": 20}
# digits-long at 784 steps: a smoke test
QUICK_LONG: dict[str, Any] = {"hidden_size": 8, "steps": 20, "eval_every": 10, "batch_size": 8}


def plan(seeds: int = 3, quick: bool = False, budget_cpu_minutes: float | None = None) -> list[Run]:
    """Every run of the report, in table order. Each run is the task's defaults (its recipe's optimizer, lr,
    batch, steps); ``budget_cpu_minutes`` (None: no limit) also caps each run at an even share of it."""
    if budget_cpu_minutes is not None and not budget_cpu_minutes > 0:
        raise ValueError(f"budget_cpu_minutes must be > 0 or None, got {budget_cpu_minutes}")
    main, ablations = (QUICK_MAIN, QUICK_ABLATIONS) if quick else (MAIN, ABLATIONS)

    def config(task: str, length: int, **settings: Any) -> LongRangeConfig:
        small = (QUICK_LONG if task.startswith("digits-long") else QUICK) if quick else {}
        return LongRangeConfig(task=task, length=length, **small, **settings)

    runs: list[Run] = []
    for task, length in main:
        for model in MODELS:
            for seed in range(seeds):
                runs.append(Run("main", model, config(task, length, model=model, seed=seed)))
    for task, length in ablations:
        for init in ("zeros", "torch", "forget1", "chrono"):
            for seed in range(seeds):
                runs.append(Run("init", init, config(task, length, init=init, seed=seed)))
        for cell in ("lstm", "no_c"):
            for seed in range(seeds):
                variants = {"cell": cell} if cell != "lstm" else {}
                runs.append(Run("no_c", cell, config(task, length, variants=variants, seed=seed)))
    if budget_cpu_minutes is None:
        return runs
    per_run = budget_cpu_minutes * 60.0 / len(runs)
    return [replace(r, config=replace(r.config, max_cpu_seconds=per_run)) for r in runs]


def _load(path: Path) -> dict[str, dict[str, Any]]:
    """The rows of ``results.jsonl`` by key; a line cut short by a kill is dropped (its run is done again) and
    the file rewritten without it, so that the next row starts on a line of its own."""
    done: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return done
    text = path.read_text()
    good = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[row["key"]] = row
        good.append(line)
    clean = "".join(line + "\n" for line in good)
    if clean != text:
        with atomic_write(path) as handle:
            handle.write(clean)
    return done


def _cell(rows: Sequence[dict[str, Any]], command: str) -> str:
    """"solved 3/3, median 1,200 steps (900-1,500)" or "not solved in N steps (metric m)"; digits: accuracy;
    then the median CPU time of a run and the command that reruns one seed."""
    first = rows[0]
    n = len(rows)
    cpu = statistics.median(r["cpu_seconds"] for r in rows)
    seeds = ", ".join(str(r["config"]["seed"]) for r in rows)
    tail = f"; seed{'s' * (n > 1)} {seeds}; {_minutes(cpu)} CPU per run<br>`{command}`"
    if first["task"].startswith("digits"):
        accuracies = [1 - r["final_metric"] for r in rows]
        spread = f" ({min(accuracies):.1%}-{max(accuracies):.1%})" if n > 1 else ""
        return (f"test accuracy {statistics.median(accuracies):.1%}{spread}, "
                f"{statistics.median(r['steps'] for r in rows):,.0f} steps" + tail)
    solved = sorted(r["steps_to_solve"] for r in rows if r["steps_to_solve"] is not None)
    metric = statistics.median(r["final_metric"] for r in rows)
    chance = first["baseline"]
    if not solved:
        steps = max(r["steps"] for r in rows)
        return f"not solved in {steps:,} steps ({metric / chance:.0%} of chance), {n} of {n}" + tail
    text = f"solved {len(solved)}/{n}, median {statistics.median(solved):,.0f} steps"
    if len(solved) > 1:
        text += f" ({solved[0]:,}-{solved[-1]:,})"
    if len(solved) < n:
        text += f"; others at {metric / chance:.0%} of chance"
    return text + tail


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


SECTIONS = {
    "main": "Tasks x lengths x models (the lab's defaults; LSTM with its default init)",
    "init": "Ablation: the LSTM's gate-bias initialisation",
    "no_c": "Ablation: the LSTM without its memory cell (cell='no_c': c_t = f*h_{t-1} + i*g)",
}


def table(rows: Iterable[dict[str, Any]], runs: Sequence[Run]) -> str:
    """The markdown table of ``rows`` (results.jsonl), one block per section, in the order of ``runs``."""
    by_cell: dict[tuple[str, str, int, str], list[dict[str, Any]]] = {}
    for row in rows:
        by_cell.setdefault((row["section"], row["task"], row["length"], row["label"]), []).append(row)
    lines: list[str] = []
    for section, title in SECTIONS.items():
        mine = [r for r in runs if r.section == section]
        if not mine:
            continue
        labels = list(dict.fromkeys(r.label for r in mine))
        rows_ = list(dict.fromkeys((r.config.task, int(r.config.length or 0)) for r in mine))
        cpu = sum(x["cpu_seconds"] for k, v in by_cell.items() if k[0] == section for x in v if "same_as" not in x)
        seeds = sorted({r.config.seed for r in mine})
        lines += [f"### {title}", "", f"CPU time of the runs this section trained: {cpu / 60:.1f} min, one thread "
                  f"(a cell that is another section's run is shown, not trained again). Seeds S = "
                  f"{', '.join(map(str, seeds))}.", "",
                  "| task | T | " + " | ".join(labels) + " |", "|---|---:|" + "---|" * len(labels)]
        for task, length in rows_:
            cells = []
            for label in labels:
                got = by_cell.get((section, task, length, label), [])
                first = next(r for r in mine if (r.config.task, r.config.length, r.label) == (task, length, label))
                command = rerun_command(first.config).replace(f"--seed {first.config.seed}", "--seed S")
                cells.append(_cell(got, command) if got else f"(not run yet)<br>`{command}`")
            lines.append(f"| {task} | {length} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _twin(done: dict[str, dict[str, Any]], run: Run) -> dict[str, Any] | None:
    """A finished row whose config is exactly ``run``'s (JSON's view of it), trained by the report itself."""
    config = json.loads(json.dumps(run.config.to_dict()))
    return next((row for row in done.values() if "same_as" not in row and row["config"] == config), None)


def report(out: str | Path, budget_cpu_minutes: float | None = None, seeds: int = 3, quick: bool = False,
           progress: bool = True) -> str:
    """Run (or continue) the report into directory ``out``; returns the markdown table it wrote.

    ``budget_cpu_minutes``: None runs every cell with its task's defaults (many CPU hours, docs/longrange.md);
    a number caps each run at an even share of it."""
    if seeds < 1:
        raise ValueError(f"seeds must be an int >= 1, got {seeds}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    runs = plan(seeds, quick, budget_cpu_minutes)
    done = _load(results)
    todo = [r for r in runs if r.key not in done]
    bar = tqdm(total=len(runs), initial=len(runs) - len(todo), disable=not progress, file=sys.stderr,
               desc="longrange report", unit="run")
    with bar:
        for run in todo:
            bar.set_postfix_str(f"{run.section} {run.config.task} T={run.config.length} {run.label} "
                                f"seed {run.config.seed}")
            twin = _twin(done, run)
            if twin is not None:  # the same run in another section (the main LSTM is the chrono column): reuse it
                row = {**twin, "key": run.key, "section": run.section, "label": run.label, "same_as": twin["key"]}
            else:
                result: LongRangeResult = train(run.config)
                row = {"key": run.key, "section": run.section, "label": run.label, **result.to_dict()}
            with results.open("a") as handle:  # one line per run: a kill loses at most the run in progress
                handle.write(json.dumps(row) + "\n")
            done[run.key] = row
            bar.update()
            following = todo[todo.index(run) + 1] if run is not todo[-1] else None
            if following is None or (following.section, following.config.task) != (run.section, run.config.task):
                _write(out, done, runs, plots={(run.section, run.config.task)})  # this task's table and plots
    return _write(out, done, runs)


def _write(out: Path, done: dict[str, dict[str, Any]], runs: Sequence[Run],
           plots: set[tuple[str, str]] | None = None) -> str:
    """Rewrite ``table.md`` and the plots of the (section, task) pairs in ``plots`` (None: all)."""
    rows = [done[r.key] for r in runs if r.key in done]
    text = table(rows, runs)
    with atomic_write(out / "table.md") as handle:
        handle.write(text)
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in rows:
        if plots is None or (row["section"], row["task"]) in plots:
            groups.setdefault((row["section"], row["task"], row["length"]), []).append(row)
    for (section, task, length), mine in groups.items():
        plot_history(mine, out / f"{section}_{task}_T{length}.png",
                     f"{SECTIONS[section].split(':')[0]}: {task}, T={length}")
    return text


__all__ = ["Run", "plan", "report", "table"]
