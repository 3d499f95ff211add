"""The long-range memory lab: train an LSTM, GRU or simple RNN on a task from :mod:`lstmkit.synthetic` and measure
what it remembers.

The claim under test is the one every LSTM text makes (Hochreiter & Schmidhuber 1997; Bengio, Simard &
Frasconi 1994): a simple RNN's gradients vanish across long gaps, so it cannot learn a dependency that spans
them, while the LSTM's cell state carries both the information and its gradient. :func:`train` runs one
model on one task and length and says whether, and after how many steps, it solved the task;
:func:`sweep` does that for lengths x models; :func:`gradient_flow` measures ``||dL/dh_t||`` against ``t``.

Hidden 128 and the LSTM's chrono initialisation (Tallec & Ollivier 2018) by default; the optimizer, learning
rate, batch, clipping and step budget a config leaves out are its task's :class:`~lstmkit.synthetic.Recipe`.
Runs train on the one loop of :mod:`lstmkit.train`, with no run directory. Measurements: docs/longrange.md.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import engines
from ..fileio import atomic_write
from ..modules import GRU, LSTM, RNN
from ..synthetic import DEFAULT_LENGTHS, TASKS, LongRangeTask, make_task
from ..synthetic.base import OPTIMIZERS
from ..train import Callback, ProgressBar, ProgressReport, TrainConfig, Trainer
from ..train import Task as TrainTask
from ..variants import NAMES

MODELS: tuple[str, ...] = ("lstm", "gru", "rnn")

# The lstmkit.LSTM variant arguments a run may switch on: every declared variant (lstmkit.variants); others,
# like return_gates, change what the module returns and are not for this lab; the initialisation is ``init``.
VARIANT_NAMES: tuple[str, ...] = NAMES


def lstm_variant_options() -> dict[str, inspect.Parameter]:
    """The variant arguments of :data:`VARIANT_NAMES` that :class:`lstmkit.LSTM` takes, with their defaults."""
    parameters = inspect.signature(LSTM.__init__).parameters
    return {name: parameters[name] for name in VARIANT_NAMES if name in parameters}


# The gate-bias initialisations the lab compares (--init): lstmkit.init's three, and "forget1", torch.nn's init
# with the forget-gate bias set to ``forget_bias`` (1 by default; Gers et al. 2000, Jozefowicz et al. 2015).
INITS: tuple[str, ...] = ("torch", "zeros", "forget1", "chrono")


@dataclass(frozen=True)
class LongRangeConfig:
    """One training run: which task, which model, and how it is trained. Serialised to JSON with the result."""

    task: str = "adding"  # a key of lstmkit.synthetic.TASKS: "adding", "copy", "temporal-order", "digits", ...
    length: int | None = None  # the gap T the task makes the model bridge; None: the task's DEFAULT_LENGTHS
    model: str = "lstm"  # "lstm", "gru" or "rnn" (tanh)
    hidden_size: int = 128
    num_layers: int = 1
    # None below: the task's recipe (lstmkit.synthetic.Recipe), the setting measured to work for that task.
    optimizer: str | None = None  # "adamw" or "rmsprop"
    lr: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    clip: float | None = None  # max gradient norm; 0 turns clipping off
    init: str = "chrono"  # the LSTM gate biases (INITS): chrono solved temporal order and adding fastest (measured)
    chrono_max: int | None = None  # T_max of init="chrono"; None: the task's (a multiple of T, or its seq_len)
    forget_bias: float = 1.0  # the forget-gate bias of init="forget1"
    steps: int | None = None  # at most; the run stops at the first validation that solves the task
    eval_every: int = 100  # validate every this many steps; steps_to_solve is a multiple of it
    eval_size: int = 512  # held-out sequences, drawn once per run from their own seed
    seed: int = 0
    engine: str = "auto"  # lstmkit engine; "auto" takes torch's fused kernel when it can run the model
    device: str = "cpu"
    stop_when_solved: bool = True  # stop at the first validation that solves the task
    max_cpu_seconds: float = 0.0  # also stop (at a validation) once the run used this much CPU time; 0: no limit
    variants: Mapping[str, Any] = field(default_factory=dict)  # extra lstmkit.LSTM arguments (LSTM only)
    task_options: Mapping[str, Any] = field(default_factory=dict)  # extra arguments of the task's class

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(map(repr, TASKS))}, got {self.task!r}")
        if self.length is None:
            object.__setattr__(self, "length", DEFAULT_LENGTHS[self.task])
        recipe = TASKS[self.task].recipe
        if self.lr is None:
            object.__setattr__(self, "lr", recipe.lr_for(self.model))
        for name in ("optimizer", "weight_decay", "batch_size", "clip", "steps"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(recipe, name))
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))}, got {self.optimizer!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {', '.join(map(repr, INITS))}, got {self.init!r}")
        if self.chrono_max is not None and self.init != "chrono":
            raise ValueError(f"chrono_max is for init='chrono', got init={self.init!r}")
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(map(repr, MODELS))}, got {self.model!r}")
        self.make_task()  # checks length against the task's minimum
        for name, minimum in (("hidden_size", 1), ("num_layers", 1), ("batch_size", 1), ("steps", 0),
                              ("eval_every", 1), ("eval_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (isinstance(self.max_cpu_seconds, (int, float)) and self.max_cpu_seconds >= 0):
            raise ValueError(f"max_cpu_seconds must be a number >= 0 (0: no limit), got {self.max_cpu_seconds!r}")
        if not (isinstance(self.clip, (int, float)) and math.isfinite(self.clip) and self.clip >= 0):
            raise ValueError(f"clip must be a number >= 0 (0: no clipping), got {self.clip!r}")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        if not (isinstance(self.forget_bias, (int, float)) and math.isfinite(self.forget_bias)):
            raise ValueError(f"forget_bias must be a finite number, got {self.forget_bias!r}")
        if self.engine not in engines.ENGINE_CHOICES:
            raise ValueError(f"engine must be one of {', '.join(map(repr, engines.ENGINE_CHOICES))}, "
                             f"got {self.engine!r}")
        known = lstm_variant_options()
        unknown = sorted(set(self.variants) - set(known))
        if unknown:
            raise ValueError(f"variants: lstmkit.LSTM has no argument {', '.join(map(repr, unknown))} "
                             f"(it takes {', '.join(known) or 'none'})")
        if self.variants and self.model != "lstm":
            raise ValueError(f"variants ({', '.join(self.variants)}) are lstmkit.LSTM arguments; "
                             f"model is {self.model!r}")
        # A tiny module checks the variants' values and that the engine can run them, before any training.
        recurrent = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[self.model]
        recurrent(1, 2, num_layers=self.num_layers, engine=self.engine, **self.lstm_options(2))


    def make_task(self) -> LongRangeTask:
        assert self.length is not None
        return make_task(self.task, self.length, **dict(self.task_options))

    def lstm_options(self, chrono_max: int) -> dict[str, Any]:
        """The lstmkit.LSTM keyword arguments of this run (variants and initialisation); {} for GRU and RNN.

        ``chrono_max``: T_max when ``chrono_max`` is not set (the task's, :attr:`LongRangeTask.chrono_max`).
        """
        if self.model != "lstm":
            return {}
        options = dict(self.variants)
        if self.init == "forget1":
            options["forget_bias"] = self.forget_bias
        elif self.init == "chrono":
            options.update(init="chrono", chrono_max=self.chrono_max or chrono_max)
        else:
            options["init"] = self.init
        return options

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["variants"] = dict(self.variants)
        out["task_options"] = dict(self.task_options)
        return out


class LongRangeModel(nn.Module):
    """A recurrent stack (lstmkit.LSTM, GRU or tanh RNN) and a linear head on its last ``readout`` outputs.

    ``forward``: ``x`` ``(B, L, input_size)`` -> ``(B, readout, output_size)``.
    """

    def __init__(self, config: LongRangeConfig, task: LongRangeTask) -> None:
        super().__init__()
        self.readout = task.readout
        common: dict[str, Any] = {"num_layers": config.num_layers, "batch_first": True, "engine": config.engine}
        self.rnn: nn.Module
        if config.model == "lstm":
            self.rnn = LSTM(task.input_size, config.hidden_size, **common, **config.lstm_options(task.chrono_max))
        elif config.model == "gru":
            self.rnn = GRU(task.input_size, config.hidden_size, **common)
        else:
            self.rnn = RNN(task.input_size, config.hidden_size, nonlinearity="tanh", **common)
        self.head = nn.Linear(config.hidden_size, task.output_size)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)  # (B, L, hidden)
        return self.head(out[:, -self.readout:])  # (B, readout, output_size)


@dataclass(frozen=True)
class LongRangeResult:
    """What a run measured. ``to_dict`` gives the ``lstmkit longrange --json`` object."""

    task: str
    model: str
    length: int
    final_metric: float  # the metric on the held-out set at the last validation
    baseline: float  # the task's chance level for that metric
    solved: bool  # final_metric <= threshold
    steps_to_solve: int | None  # the first validated step at which the metric reached the threshold
    seconds: float  # wall time of the run, training and validation
    cpu_seconds: float  # CPU time of this process during the run (fair under load with one thread)
    metric: str  # "MSE" or "error rate"
    threshold: float  # lstmkit.synthetic.SOLVED_FRACTION * baseline
    steps: int  # steps trained
    engine: str  # the engine that ran the model
    history: tuple[tuple[int, float], ...]  # (step, metric) at every validation, step 0 included
    config: LongRangeConfig

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task, "model": self.model, "length": self.length, "final_metric": self.final_metric,
            "baseline": self.baseline, "solved": self.solved, "steps_to_solve": self.steps_to_solve,
            "seconds": round(self.seconds, 3), "cpu_seconds": round(self.cpu_seconds, 3), "metric": self.metric,
            "threshold": self.threshold,
            "steps": self.steps, "engine": self.engine, "history": [list(h) for h in self.history],
            "config": self.config.to_dict(),
        }


def _seeds(seed: int) -> tuple[int, int, int]:
    """Independent seeds for the model's initialisation, the training data and the validation data."""
    g = torch.Generator().manual_seed(seed)
    a, b, c = torch.randint(0, 2**62, (3,), generator=g).tolist()
    return a, b, c


def build_model(config: LongRangeConfig, task: LongRangeTask | None = None) -> LongRangeModel:
    """The seeded, initialised model of ``config`` for ``task`` (``config.make_task()`` when not given)."""
    task = task or config.make_task()
    torch.manual_seed(_seeds(config.seed)[0])
    return LongRangeModel(config, task).to(config.device)


@torch.no_grad()
def evaluate(model: nn.Module, task: LongRangeTask, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
    """``task.metric`` of ``model`` on ``(x, y)``, in chunks of ``batch_size`` sequences (weighted by size)."""
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, x.size(0), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        total += task.metric(model(xb), yb) * xb.size(0)
    model.train(was_training)
    return total / x.size(0)


class _Batches:
    """One "epoch" of fresh batches, drawn when the loop asks for them (a lab run never resumes)."""

    def __init__(self, task: LongRangeTask, batch_size: int, generator: torch.Generator, device: torch.device):
        self.task, self.batch_size, self.generator, self.device = task, batch_size, generator, device

    def __getitem__(self, position: int) -> tuple[Tensor, Tensor]:
        x, y = self.task.sample(self.batch_size, self.generator)
        return x.to(self.device), y.to(self.device)


class _LabTask(TrainTask):
    """The lab's run as a task of the one training loop: fresh batches every step, the task's metric as the
    validation loss (lower is better)."""

    unit = "sequences"

    def __init__(self, model: nn.Module, task: LongRangeTask, config: LongRangeConfig, data_seed: int,
                 validation: tuple[Tensor, Tensor]) -> None:
        self.model, self.task, self.config = model, task, config
        self.items_per_step = self.batch_size = int(config.batch_size or 1)  # filled by the recipe: never None
        self.steps = int(config.steps or 0)
        self.generator = torch.Generator().manual_seed(data_seed)
        self.validation = validation

    def setup(self, device: torch.device, rank: int, world: int) -> None:
        self.device = device
        self.validation = (self.validation[0].to(device), self.validation[1].to(device))

    def steps_per_epoch(self) -> int:
        return self.steps

    def epoch_batches(self, epoch: int) -> _Batches:
        return _Batches(self.task, self.batch_size, self.generator, self.device)

    def loss(self, net: nn.Module, batch: Any) -> Tensor:
        x, y = batch
        return self.task.loss(net(x), y)

    def evaluate(self) -> float:
        return evaluate(self.model, self.task, *self.validation)


class _Solved(Callback):
    """Records the first validation that solves the task and, with ``stop_when_solved``, ends the run there."""

    def __init__(self, task: LongRangeTask, stop: bool) -> None:
        self.task, self.stop = task, stop
        self.steps_to_solve: int | None = None

    def on_evaluate(self, trainer: Any, row: dict[str, float]) -> None:
        if self.steps_to_solve is None and self.task.solved(row["val_loss"]):
            self.steps_to_solve = int(row["step"])
            if self.stop:
                trainer.stopped = "solved"


def train(config: LongRangeConfig, progress: bool = False,
          log: Callable[[int, float, float], None] | None = None) -> LongRangeResult:
    """Train ``config.model`` on ``config.task`` at ``config.length`` and report what it reached.

    Runs on lstmkit's one training loop (:mod:`lstmkit.train`) with the config's optimizer (AdamW with weight
    decay on matrices only, or RMSprop) at a constant learning rate, gradient norm clipped unless ``clip`` is 0;
    the settings a config leaves out are the task's recipe. Each step draws a fresh batch from the seeded generator;
    every ``eval_every`` steps the metric is measured on a held-out set (the validation loss of the loop).
    With ``stop_when_solved`` the run ends at the first validation that solves the task; ``max_cpu_seconds``
    ends it when its CPU time is spent. ``progress`` shows a tqdm bar on stderr; ``log`` is called with
    ``(step, metric, cpu_seconds)`` at every validation, step 0 included.
    """
    task = config.make_task()
    _, data_seed, val_seed = _seeds(config.seed)
    model = build_model(config, task)
    validation = task.validation_set(config.eval_size, torch.Generator().manual_seed(val_seed))
    start, cpu_start = time.perf_counter(), time.process_time()
    metric = evaluate(model, task, validation[0].to(config.device), validation[1].to(config.device))
    history = [(0, metric)]
    if log is not None:
        log(0, metric, time.process_time() - cpu_start)
    solved = _Solved(task, config.stop_when_solved)
    steps = 0
    # __post_init__ filled every setting a config left to the task's recipe
    assert config.optimizer and config.lr and config.weight_decay is not None and config.clip is not None
    assert config.steps is not None
    if config.steps > 0 and not (task.solved(metric) and config.stop_when_solved):
        loop = TrainConfig(optimizer=config.optimizer, lr=config.lr, weight_decay=config.weight_decay,
                           clip=config.clip, schedule="constant", max_steps=config.steps,
                           max_cpu_minutes=config.max_cpu_seconds / 60, eval_every=config.eval_every,
                           patience=0, seed=config.seed, device=config.device)
        hooks: list[Callback] = [solved]
        if log is not None:
            hooks.append(ProgressReport(lambda row: log(int(row["step"]), float(row["val_loss"]),
                                                        float(row["cpu_seconds"]))))
        hooks.append(ProgressBar(progress, desc=f"{config.task} T={config.length} {config.model}",
                                 val_name=task.metric_name, leave=False))  # the bar last: it shows what came before
        result = Trainer(_LabTask(model, task, config, data_seed, validation), loop, None, callbacks=hooks).fit()
        steps = result.steps
        history += [(int(row["step"]), float(row["val_loss"])) for row in result.history]
        metric = history[-1][1]
    elif task.solved(metric):
        solved.steps_to_solve = 0
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return LongRangeResult(
        task=config.task, model=config.model, length=task.length, final_metric=metric,
        baseline=task.baseline, solved=task.solved(metric), steps_to_solve=solved.steps_to_solve, seconds=seconds,
        cpu_seconds=cpu_seconds,
        metric=task.metric_name, threshold=task.threshold, steps=steps, engine=getattr(model.rnn, "engine", ""),
        history=tuple(history), config=config,
    )


def for_model(config: LongRangeConfig, model: str) -> LongRangeConfig:
    """``config`` for ``model``: the variants stay with the LSTM, and a learning rate that was the task's recipe
    for ``config.model`` becomes the recipe's for ``model`` (a task may give each model its own)."""
    recipe = TASKS[config.task].recipe
    lr = None if config.lr == recipe.lr_for(config.model) else config.lr
    return replace(config, model=model, lr=lr, variants=config.variants if model == "lstm" else {})


def rerun_command(config: LongRangeConfig) -> str:
    """The ``lstmkit longrange`` command line that trains ``config`` again: the flags of the settings that
    differ from the task's defaults (eval_size has no flag and is left out)."""
    from ..variants import VARIANTS

    default = LongRangeConfig(task=config.task, length=config.length, model=config.model)
    parts = ["lstmkit longrange", f"--task {config.task}", f"--length {config.length}", f"--model {config.model}"]
    flags = {"hidden_size": "--hidden-size", "num_layers": "--num-layers", "optimizer": "--optimizer",
             "lr": "--lr", "weight_decay": "--weight-decay", "batch_size": "--batch-size", "clip": "--clip",
             "init": "--init", "chrono_max": "--chrono-max", "forget_bias": "--forget-bias", "steps": "--steps",
             "eval_every": "--eval-every", "engine": "--engine", "device": "--device"}
    for name, flag in flags.items():
        value = getattr(config, name)
        if value != getattr(default, name):
            parts.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    if config.max_cpu_seconds:
        parts.append(f"--max-cpu-minutes {config.max_cpu_seconds / 60:.6g}")
    if not config.stop_when_solved:
        parts.append("--keep-training")
    for variant in VARIANTS:
        if variant.name in config.variants:
            value = config.variants[variant.name]
            if isinstance(value, bool):
                parts.append(variant.flag if value else "--no-" + variant.flag[2:])
            else:
                parts.append(f"{variant.flag} {value}")
    if "split" in config.task_options:
        parts.append(f"--split {config.task_options['split']}")
    parts.append(f"--seed {config.seed}")
    return " ".join(parts)


def sweep(config: LongRangeConfig, lengths: Sequence[int], models: Sequence[str] = MODELS,
          progress: bool = False, on_result: Callable[[LongRangeResult], None] | None = None
          ) -> list[LongRangeResult]:
    """:func:`train` for every length x model, one after the other; ``config.variants`` apply to the LSTM only.

    ``on_result`` is called with each result as soon as its run ends (a sweep can take hours).
    """
    if not lengths:
        raise ValueError("lengths must name at least one length")
    if not models:
        raise ValueError("models must name at least one model")
    for name in models:
        if name not in MODELS:
            raise ValueError(f"models must be among {', '.join(map(repr, MODELS))}, got {name!r}")
    runs = [for_model(replace(config, length=length), name)
            for length in lengths for name in models]  # validates every run before the first one starts
    results = []
    for run in runs:
        results.append(train(run, progress=progress))
        if on_result is not None:
            on_result(results[-1])
    return results


def _format_metric(value: float) -> str:
    return f"{value:.2e}" if value < 1e-2 else f"{value:.3f}"


def sweep_table(results: Iterable[LongRangeResult]) -> str:
    """A markdown table: one row per length, one column per model; each cell the final metric, and when
    solved, after how many steps."""
    results = list(results)
    if not results:
        raise ValueError("results is empty")
    models = list(dict.fromkeys(r.model for r in results))
    lengths = sorted({r.length for r in results})
    cells = {(r.length, r.model): r for r in results}
    first = results[0]
    lines = [
        f"Task `{first.task}`: {first.metric} on held-out data after at most {first.config.steps} steps; chance "
        f"level {_format_metric(first.baseline)}, solved at <= {_format_metric(first.threshold)}.",
        "",
        "| T | " + " | ".join(models) + " |",
        "|---:|" + "---|" * len(models),
    ]
    for length in lengths:
        row = [str(length)]
        for name in models:
            r = cells.get((length, name))
            if r is None:
                row.append("")
            elif r.solved:
                row.append(f"{_format_metric(r.final_metric)}, solved at step {r.steps_to_solve} ({r.seconds:.0f} s)")
            else:
                row.append(f"{_format_metric(r.final_metric)}, not solved in {r.steps} steps ({r.seconds:.0f} s)")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _save_figure(figure: Any, path: str | Path) -> None:
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=120, bbox_inches="tight")


def plot_sweep(results: Iterable[LongRangeResult], path: str | Path) -> None:
    """A PNG at ``path``: the final metric against the length, one line per model, with the chance level."""
    from matplotlib.figure import Figure  # the object API renders with Agg, whatever pyplot's backend

    results = list(results)
    if not results:
        raise ValueError("results is empty")
    figure = Figure(figsize=(6.4, 4.2))
    ax = figure.add_subplot()
    first = results[0]
    floor = first.threshold / 10  # where a metric of exactly 0 is drawn: a log scale has no 0
    for name in dict.fromkeys(r.model for r in results):
        mine = sorted((r for r in results if r.model == name), key=lambda r: r.length)
        ax.plot([r.length for r in mine], [max(r.final_metric, floor) for r in mine], marker="o", label=name)
    ax.axhline(first.baseline, color="grey", linestyle="--", label="chance level")
    ax.axhline(first.threshold, color="grey", linestyle=":", label="solved at or below")
    lengths = sorted({r.length for r in results})
    ax.set_xscale("log")
    ax.set_xticks(lengths, [str(length) for length in lengths])
    ax.minorticks_off()
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, max(first.baseline, *(r.final_metric for r in results)) * 3)
    ax.set_xlabel("length T")
    ax.set_ylabel(f"held-out {first.metric} (0 drawn at {floor:.0e})")
    ax.set_title(f"{first.task}: {first.metric} after at most {first.config.steps} steps")
    ax.legend()
    _save_figure(figure, path)


def plot_history(runs: Iterable[LongRangeResult | Mapping[str, Any]], path: str | Path, title: str = "") -> None:
    """A PNG at ``path``: the held-out metric against the training step, one line per run, one colour per
    label (a row's ``"label"``, else its model), with the chance level and the solved threshold.

    ``runs``: results, or their ``to_dict()`` objects (a ``--json`` line, a report's ``results.jsonl`` row).
    """
    from matplotlib.figure import Figure

    rows = [r.to_dict() if isinstance(r, LongRangeResult) else dict(r) for r in runs]
    if not rows:
        raise ValueError("runs is empty")
    figure = Figure(figsize=(6.4, 4.2))
    ax = figure.add_subplot()
    colours: dict[str, str] = {}
    for row in rows:
        label = str(row.get("label", row["model"]))
        steps, metrics = zip(*row["history"], strict=True)
        first = label not in colours
        colour = colours.setdefault(label, f"C{len(colours)}")
        ax.plot(steps, metrics, color=colour, alpha=0.8, label=label if first else None)
    ax.axhline(rows[0]["baseline"], color="grey", linestyle="--", label="chance level")
    ax.axhline(rows[0]["threshold"], color="grey", linestyle=":", label="solved at or below")
    ax.set_xlabel("training step")
    ax.set_ylabel(f"held-out {rows[0]['metric']}")
    ax.set_title(title or f"{rows[0]['task']}, T={rows[0]['length']}")
    ax.legend()
    _save_figure(figure, path)


def gradient_flow(config: LongRangeConfig, models: Sequence[str] = ("rnn", "gru", "lstm"),
                  batch_size: int = 64) -> dict[str, list[float]]:
    """``||dL/dh_t||`` for every step t of the task's sequence, for each model at initialisation.

    Each model is built from ``config`` (its seed, sizes, and for the LSTM its forget bias and variants) and
    gets the same batch. It runs in float64: in float32 the simple RNN's gradient underflows to 0 within 100
    steps, and the plot would show the floating-point format rather than the model. The stack runs one step
    per call with the state passed on by hand, so ``h_t`` is a tensor of the graph and its gradient is the
    total derivative of the loss, through every later step: the signal that reaches step t from the answer.
    Returns, per model, the batch mean of the norm of the top layer's gradient, one value per step
    (``task.seq_len`` values).
    """
    task = config.make_task()
    x, y = task.sample(batch_size, torch.Generator().manual_seed(_seeds(config.seed)[2]))
    x = x.to(config.device, torch.float64)
    y = y.to(config.device, torch.float64) if y.is_floating_point() else y.to(config.device)
    flows: dict[str, list[float]] = {}
    for name in models:
        run = replace(config, model=name, variants=config.variants if name == "lstm" else {})
        model = build_model(run, task).double()
        model.eval()  # no dropout or zoneout noise in the measurement
        state: Any = None
        hs: list[Tensor] = []
        for t in range(x.size(1)):
            _, state = model.rnn(x[:, t:t + 1], state)
            h = state[0] if isinstance(state, tuple) else state  # (num_layers, B, H)
            h.retain_grad()
            hs.append(h)
        top = torch.stack([h[-1] for h in hs[-task.readout:]], dim=1)  # (B, readout, H)
        task.loss(model.head(top), y).backward()
        flows[name] = [float(h.grad[-1].norm(dim=-1).mean()) if h.grad is not None else 0.0 for h in hs]
    return flows


def plot_gradient_flow(flows: Mapping[str, Sequence[float]], path: str | Path, title: str = "") -> None:
    """A PNG at ``path``: ``||dL/dh_t||`` against t (log scale), one line per model."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.2))
    ax = figure.add_subplot()
    for name, norms in flows.items():
        steps = [(t, n) for t, n in enumerate(norms) if n > 0]  # a log scale has no place for an exact 0
        ax.plot([t for t, _ in steps], [n for _, n in steps], label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step t")
    ax.set_ylabel("||dL/dh_t||")
    ax.set_title(title or "gradient reaching each step from the loss, at initialisation")
    ax.legend()
    _save_figure(figure, path)


__all__ = [
    "MODELS",
    "VARIANT_NAMES",
    "LongRangeConfig",
    "LongRangeModel",
    "LongRangeResult",
    "build_model",
    "evaluate",
    "for_model",
    "gradient_flow",
    "lstm_variant_options",
    "plot_gradient_flow",
    "plot_history",
    "plot_sweep",
    "rerun_command",
    "sweep",
    "sweep_table",
    "train",
]
