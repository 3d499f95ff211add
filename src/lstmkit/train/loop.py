"""The one training loop: steps, evaluations and stopping rules; everything else is a hook around it."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..checkpoint import LAST, Checkpoint, load_checkpoint
from ..errors import CheckpointError, RunExists, TrainingInterrupted
from .base import Callback, FitResult, Task, TrainConfig, resolve_device
from .best_weights import BestWeights
from .checkpoints import Checkpoints
from .distributed import agree, any_rank, broadcast, gather, world
from .early_stopping import EarlyStopping
from .interrupt import StopEvaluation, StopSignals
from .lock import RunLock
from .metrics_csv import MetricsCSV
from .nonfinite import NonFiniteGuard, gradient_norm
from .optim import BudgetCosine, make_optimizer, make_scheduler
from .progress import ProgressBar


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


# What ``last/``'s trainer state holds (see :meth:`Trainer.resume_state`); a state without them is refused.
RESUME_KEYS = ("optimizer", "scheduler", "step", "epoch", "position", "best", "best_step", "elapsed", "cpu",
               "history", "ranks", "world_size", "interval", "hooks", "guard", "evaluation_due")


class Trainer:
    """One run of ``task`` under ``config``, writing into ``out`` (None: nothing is written). Call :meth:`fit`.

    Hooks see the run through these attributes: ``config``, ``task``, ``model``, ``optimizer``,
    ``scheduler``, ``out``, ``rank``, ``world``, ``device``, ``step``, ``epoch``, ``position`` (step within the
    epoch), ``elapsed`` and ``cpu`` (seconds), ``history`` (one dict per evaluation), ``val_loss``, ``best``,
    ``best_step``, ``improved`` (the last evaluation beat the best), ``stopped`` (why the run ends; set it to stop),
    ``total_steps`` (0: open-ended), ``resumed``, ``speed`` (``task.unit`` per second) and ``last_loss``.
    """

    def __init__(self, task: Task, config: TrainConfig, out: str | Path | None = None, *,
                 callbacks: Sequence[Callback] = (), resume: bool = False, resume_hint: str = "",
                 resume_from: Checkpoint | None = None) -> None:
        if resume and out is None:
            raise ValueError("resume needs the output directory of the run to continue (out), got None")
        self.task = task
        self.model: nn.Module = task.model
        self.config = config
        self.out = None if out is None else Path(out)
        self.callbacks = list(callbacks)
        self.resumed = resume
        self.resume_from = resume_from  # out/last already read (with its trainer state), or None: read it here
        self.evaluation_due = False  # an evaluation a signal cut short: the resumed run does it first
        self.resume_hint = resume_hint
        self.guard = NonFiniteGuard(config.skip_nonfinite)
        self.step = self.epoch = self.position = 0
        self.elapsed = self.cpu = 0.0
        self.history: list[dict[str, float]] = []
        self.val_loss = self.best = math.inf
        self.best_step = 0
        self.improved = False
        self.stopped = ""
        self.speed = 0.0
        self.last_loss = math.nan
        self.total_steps = 0
        self._interval = [0.0, 0]  # training loss summed since the last evaluation, and over how many steps
        self._epoch_rng: dict[str, Any] | None = None  # the RNG state this epoch's batches were drawn from

    # -- state ---------------------------------------------------------------------------------------------

    def interval_mean(self) -> float:
        """The mean training loss since the last evaluation (the last row's when none since)."""
        if self._interval[1]:
            return self._interval[0] / self._interval[1]
        return self.history[-1]["train_loss"] if self.history else math.nan

    def resume_state(self) -> dict[str, Any]:
        """Everything ``last/`` holds beyond the weights. Every rank must call it (it gathers their states)."""
        mine = {"rng": _rng_state(self.device), "epoch_rng": self._epoch_rng, **self.task.state_dict()}
        hooks = {type(c).__name__: c.state_dict() for c in self.callbacks}
        return {
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "step": self.step,
            "epoch": self.epoch, "position": self.position, "best": self.best, "best_step": self.best_step,
            "elapsed": self.elapsed,
            "cpu": self.cpu, "history": self.history, "ranks": gather(mine), "world_size": self.world,
            "interval": list(self._interval), "hooks": hooks, "guard": self.guard.state_dict(),
            "evaluation_due": self.evaluation_due,
        }

    def _load(self, state: dict[str, Any]) -> None:
        missing = sorted(set(RESUME_KEYS) - set(state))
        if missing:
            raise CheckpointError(
                f"the run in {self.out} was saved by an older lstmkit (its {LAST}/ lacks {', '.join(missing)}) "
                "and cannot be resumed; train it again with this version"
            )
        if state.get("world_size") != self.world:
            raise CheckpointError(
                f"the run in {self.out} was trained by {state.get('world_size')} process(es); "
                f"resume it with as many, not {self.world}"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.position = int(state["step"]), int(state["epoch"]), int(state["position"])
        self.best, self.elapsed = float(state["best"]), float(state["elapsed"])
        self.best_step, self.cpu = int(state["best_step"]), float(state["cpu"])
        self.history = [dict(row) for row in state["history"]]
        self.val_loss = self.history[-1]["val_loss"] if self.history else math.inf
        self._interval = [float(state["interval"][0]), int(state["interval"][1])]
        for callback in self.callbacks:
            callback.load_state_dict(state["hooks"].get(type(callback).__name__, {}))
        self.guard.load_state_dict(state["guard"])
        self.evaluation_due = bool(state["evaluation_due"])
        mine = state["ranks"][self.rank]
        _set_rng_state(mine["rng"], self.device)
        self._epoch_rng = mine.get("epoch_rng")
        self.task.load_state_dict(mine)

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    # -- the run -------------------------------------------------------------------------------------------

    def fit(self) -> FitResult:
        """Train until a limit, early stopping or a signal; joins the process group under ``torchrun``.

        With ``out`` None nothing is written and no lock is taken. Raises ValueError for data the task refuses
        or an ``out`` that holds another run, :class:`RunLocked` when a live run holds ``out``,
        :class:`TrainingDiverged` for a non-finite step (unless skipped), :class:`TrainingInterrupted` (a
        KeyboardInterrupt) after SIGINT/SIGTERM.
        """
        device = resolve_device(self.config.device)
        started_group = False
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
            if device.type == "cuda":
                device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            started_group = True
        self.device = device
        self.rank, self.world = world()
        lock = None if self.out is None else RunLock(self.out)
        try:
            if self.rank == 0 and lock is not None:
                lock.acquire()
            with StopSignals() as signals:
                return self._run(signals)
        finally:
            for callback in self.callbacks:
                if isinstance(callback, ProgressBar):
                    callback.close()
            if lock is not None:
                lock.release()
            if started_group:
                dist.destroy_process_group()

    def _run(self, signals: StopSignals) -> FitResult:
        config, task, device = self.config, self.task, self.device
        self.signals = signals
        last = None if self.out is None else self.out / LAST
        if (not self.resumed and self.rank == 0 and last is not None
                and (last.exists() or last.with_name(LAST + ".old").exists())):
            raise RunExists(
                f"{self.out} already holds a training run; pass --resume to continue it, or choose another --out"
            )
        task.setup(device, self.rank, self.world)
        self.model.to(device)
        self.optimizer = make_optimizer(self.model, config)
        per_epoch = task.steps_per_epoch()
        budget = config.max_steps or config.max_epochs * per_epoch
        if config.max_steps and config.max_epochs:
            budget = min(config.max_steps, config.max_epochs * per_epoch)
        self.total_steps = budget
        self.scheduler = make_scheduler(self.optimizer, config, budget)
        plateau = isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        by_time = isinstance(self.scheduler, BudgetCosine)
        seed = config.seed * 1009 + self.rank  # dropout: each rank its own stream
        torch.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        if self.resumed and last is not None:
            saved = self.resume_from or load_checkpoint(last, map_location=device, trainer=True)
            self.model.load_state_dict(saved.state_dict)
            self._load(saved.trainer or {})
            self.resume_from = None  # the run owns its state now; the loaded copy can go
        net: nn.Module = self.model
        if self.world > 1:
            net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)

        self._emit("on_train_begin")
        began = time.monotonic() - self.elapsed
        cpu_began = time.process_time() - self.cpu
        interval_began, interval_step = self.elapsed, self.step
        if self.evaluation_due:  # a signal cut the last evaluation short: do it before any step
            self._evaluate(per_epoch, self.position >= per_epoch, plateau)
        if config.max_steps and self.step >= config.max_steps:
            self.stopped = "max_steps"  # a finished run resumed with the same budget: nothing left to do
        elif config.max_epochs and self.epoch >= config.max_epochs:
            self.stopped = "max_epochs"
        self.model.train()
        while not self.stopped:
            batches = self._epoch_batches()
            while self.position < per_epoch and not self.stopped:
                loss = task.loss(net, batches[self.position])
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.last_loss = loss.item()
                norm = gradient_norm(self.model, config.clip)
                if self.guard.step_ok(self.last_loss, norm, device, step=self.step + 1, last=last):
                    self.optimizer.step()
                    self._interval[0] += self.last_loss
                    self._interval[1] += 1
                else:
                    self.optimizer.zero_grad(set_to_none=True)
                    task.discard_state()
                self.step += 1
                self.position += 1
                self.elapsed = time.monotonic() - began
                self.cpu = time.process_time() - cpu_began
                if by_time:
                    self.scheduler.step(self._progress())
                elif not plateau:
                    self.scheduler.step()
                end_of_epoch = self.position >= per_epoch
                if config.max_steps and self.step >= config.max_steps:
                    self.stopped = "max_steps"
                elif end_of_epoch and config.max_epochs and self.epoch + 1 >= config.max_epochs:
                    self.stopped = "max_epochs"
                elif config.max_minutes and agree(self.elapsed >= 60 * config.max_minutes, device):
                    self.stopped = "max_minutes"
                elif config.max_cpu_minutes and agree(self.cpu >= 60 * config.max_cpu_minutes, device):
                    self.stopped = "max_cpu_minutes"
                due = (self.step % config.eval_every == 0) if config.eval_every else end_of_epoch
                self.speed = task.items_per_step * self.world * (self.step - interval_step) / max(
                    1e-9, self.elapsed - interval_began)
                if due or self.stopped:
                    self._evaluate(per_epoch, end_of_epoch, plateau)
                    interval_began = time.monotonic() - began  # the speed counts training, not evaluation
                    interval_step = self.step
                elif end_of_epoch:
                    self._next_epoch()
                self._emit("on_step_end")
                if any_rank(bool(signals.received), device):
                    self._interrupted(signals.received or "a signal on another rank")
                if end_of_epoch:
                    break  # the next epoch reads new batches
        self._emit("on_train_end")
        return FitResult(
            steps=self.step, epochs=self.epoch + self.position / max(1, per_epoch), best_val_loss=self.best,
            val_loss=self.val_loss, stopped=self.stopped, seconds=self.elapsed, history=self.history,
            skipped=self.guard.skipped, best_step=self.best_step,
        )

    def _progress(self) -> float:
        """How much of the time budget is spent, 0 to 1: rank 0's measure, for every rank."""
        parts = []
        if self.config.max_minutes:
            parts.append(self.elapsed / (60 * self.config.max_minutes))
        if self.config.max_cpu_minutes:
            parts.append(self.cpu / (60 * self.config.max_cpu_minutes))
        return broadcast(max(parts, default=0.0), self.device)

    def _epoch_batches(self) -> Any:
        """The task's batches for this epoch. The RNG state they were drawn from is saved with ``last/``: a run
        resumed mid-epoch draws them again from it, then goes on from the RNG state it was saved with."""
        if self.position and self._epoch_rng is not None:
            now = _rng_state(self.device)
            _set_rng_state(self._epoch_rng, self.device)
            batches = self.task.epoch_batches(self.epoch)
            _set_rng_state(now, self.device)
            return batches
        self._epoch_rng = _rng_state(self.device)
        return self.task.epoch_batches(self.epoch)

    def _next_epoch(self) -> None:
        self.epoch, self.position = self.epoch + 1, 0
        self.task.end_epoch()

    def _evaluate(self, per_epoch: int, end_of_epoch: bool, plateau: bool) -> None:
        self.model.eval()
        self.evaluation_due = True
        rng = _rng_state(self.device)  # last/ saved mid-evaluation must hold the state from before it
        try:
            # A signal stops an evaluation at once (on one process: under DDP the others wait in a collective)
            with self.signals.urgent(self.world == 1):
                self.val_loss = self.task.evaluate()
        except StopEvaluation as stop:
            _set_rng_state(rng, self.device)
            self.model.train()
            self._interrupted(str(stop))
        self.evaluation_due = False
        self.model.train()
        self.guard.check_model(self.model, self.val_loss, self.device, step=self.step,
                               last=None if self.out is None else self.out / LAST)
        loss_sum, count = self._interval
        train_loss = sum(gather(loss_sum / count if count else math.nan)) / self.world  # type: ignore[arg-type]
        row: dict[str, float] = {
            "step": self.step, "epoch": round(self.epoch + self.position / per_epoch, 4),
            "seconds": round(self.elapsed, 3), "cpu_seconds": round(self.cpu, 3),
            "lr": self.optimizer.param_groups[0]["lr"], "train_loss": train_loss, "val_loss": self.val_loss,
            f"{self.task.unit}_per_second": round(self.speed, 1),
        }
        row.update(self.task.metrics(train_loss, self.val_loss))
        self.history.append(row)
        self._interval = [0.0, 0]
        if plateau:
            self.scheduler.step(self.val_loss)
        self.improved = self.val_loss < self.best
        if self.improved:
            self.best, self.best_step = self.val_loss, self.step
        if end_of_epoch:
            self._next_epoch()  # before the checkpoints: a resume starts the next epoch
        self._emit("on_evaluate", row)

    def _interrupted(self, name: str) -> None:
        self._emit("on_interrupt")
        if self.rank == 0:
            for callback in self.callbacks:
                if isinstance(callback, ProgressBar):
                    callback.close()
            if self.out is None:
                print(f"lstmkit: {name} received; stopped after step {self.step} (nothing is saved: the run has no "
                      "output directory)", file=sys.stderr, flush=True)
            else:
                hint = self.resume_hint or "resume it with the same command and --resume"
                print(f"lstmkit: {name} received; finished step {self.step} and saved the run in "
                      f"{self.out / LAST}; {hint}", file=sys.stderr, flush=True)
        raise TrainingInterrupted(name)


def default_callbacks(out: str | Path | None, config: TrainConfig, *, kind: str = "", run_config: Any = None,
                      extra: dict[str, Any] | None = None, progress: bool = True,
                      metric_fields: Sequence[str] | None = None, curves_title: str | None = None,
                      restore_best: bool = False) -> list[Callback]:
    """The hooks every run gets, in the order they run after an evaluation: early stopping; with an ``out``,
    checkpoints (``best/``, ``last/``), ``metrics.csv`` and ``curves.png``; with ``restore_best``, the best
    weights kept in memory and put back at the end (:class:`BestWeights`); and the progress bar (quiet unless
    ``progress``)."""
    hooks: list[Callback] = [EarlyStopping(config.patience)]
    if out is not None:
        if run_config is None or not kind:
            raise ValueError("a run with an output directory needs kind and run_config for its checkpoints")
        hooks += [Checkpoints(out, kind=kind, run_config=run_config, extra=extra),
                  MetricsCSV(out, fields=metric_fields, curves=curves_title or f"{kind}: loss by step")]
    if restore_best:
        hooks.append(BestWeights(restore=True))
    hooks.append(ProgressBar(progress))
    return hooks


def train(task: Task, config: TrainConfig, out: str | Path | None = None, *, kind: str = "", run_config: Any = None,
          extra: dict[str, Any] | None = None, resume: bool = False, progress: bool = True,
          callbacks: Sequence[Callback] = (), metric_fields: Sequence[str] | None = None,
          resume_hint: str = "", restore_best: bool = False, resume_from: Checkpoint | None = None) -> FitResult:
    """Train ``task`` with the default hooks plus ``callbacks``; see :class:`Trainer` and the package docstring.

    out: the run directory (checkpoints, metrics), or None to write nothing (then kind and run_config are not
    needed, and ``resume`` is refused). restore_best: end with the weights of the best evaluation (kept in
    memory) rather than the last step's. progress: show the tqdm bar. resume_from: ``out/last`` when the
    caller has already read it (``load_checkpoint(..., trainer=True)``), so that it is read once.
    """
    hooks = default_callbacks(out, config, kind=kind, run_config=run_config, extra=extra, progress=progress,
                              metric_fields=metric_fields, restore_best=restore_best)
    hooks[-1:-1] = list(callbacks)  # the progress bar last, so it shows what the others did
    return Trainer(task, config, out, callbacks=hooks, resume=resume, resume_hint=resume_hint,
                   resume_from=resume_from).fit()
