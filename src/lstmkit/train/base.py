"""What the loop and its hooks share: the run's config, what a task and a hook must provide, and the result."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

OPTIMIZERS = ("adamw", "sgd", "rmsprop")
SCHEDULES = ("auto", "cosine", "plateau", "constant")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: optimizer, schedule, when to evaluate and when to stop. (Batches are the task's.)"""

    optimizer: str = "adamw"  # "adamw", "sgd" or "rmsprop"
    lr: float = 6e-3  # with the cosine decay, higher than char-rnn's 2e-3 learned faster (docs/charlm.md)
    weight_decay: float = 0.01  # AdamW's decoupled weight decay (Loshchilov & Hutter 2019)
    clip: float = 1.0  # gradient clipping to this total norm; 0 for none
    schedule: str = "auto"  # cosine decay when the step budget is known, else halve on a validation plateau
    warmup_steps: int = 0  # linear warm-up, for the cosine and constant schedules
    max_steps: int = 0  # stop after this many steps (0: no limit)
    max_epochs: int = 0  # stop after this many passes over the training data (0: no limit)
    max_minutes: float = 0.0  # stop after this much training time (0: no limit; not bit-reproducible)
    # Stop after this much CPU time of this process (all its threads; 0: no limit): a budget that a machine
    # shared with other work does not shrink, as wall-clock minutes are.
    max_cpu_minutes: float = 0.0
    eval_every: int = 100  # score the validation data every this many steps; 0: at the end of every epoch
    patience: int = 10  # stop after this many evaluations without a better validation loss; 0: never
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when there is one), "cpu", "cuda", "cuda:1", ...
    # A step whose loss or gradient is not finite: False stops the run (TrainingDiverged); True skips the step
    # (no update), as mixed-precision loss scaling skips an overflowing step.
    skip_nonfinite: bool = False

    def __post_init__(self) -> None:
        _check(self.optimizer in OPTIMIZERS,
               f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        _check(self.lr > 0 and math.isfinite(self.lr), f"lr must be a finite number > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        _check(self.clip >= 0 and math.isfinite(self.clip), f"clip must be >= 0 (0 for none), got {self.clip}")
        _check(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        _check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(self.max_steps >= 0, f"max_steps must be >= 0 (0 for no limit), got {self.max_steps}")
        _check(self.max_epochs >= 0, f"max_epochs must be >= 0 (0 for no limit), got {self.max_epochs}")
        _check(self.max_minutes >= 0 and math.isfinite(self.max_minutes),
               f"max_minutes must be >= 0 (0 for no limit), got {self.max_minutes}")
        _check(self.max_cpu_minutes >= 0 and math.isfinite(self.max_cpu_minutes),
               f"max_cpu_minutes must be >= 0 (0 for no limit), got {self.max_cpu_minutes}")
        _check(self.eval_every >= 0, f"eval_every must be >= 0 (0 for every epoch), got {self.eval_every}")
        _check(self.patience >= 0, f"patience must be >= 0 (0 for never), got {self.patience}")
        _check(self.schedule != "cosine" or bool(self.max_steps or self.max_epochs or self.max_minutes
                                                 or self.max_cpu_minutes),
               "schedule 'cosine' needs max_steps, max_epochs, max_minutes or max_cpu_minutes to know where it ends")


@dataclass(frozen=True)
class FitResult:
    """What a run did: steps and epochs run, the losses, why it stopped, and the log."""

    steps: int
    epochs: float
    best_val_loss: float
    val_loss: float
    # "max_steps", "max_epochs", "max_minutes", "max_cpu_minutes" or "early_stopping"
    stopped: str
    seconds: float
    history: list[dict[str, float]]
    skipped: int = 0  # steps skipped for a non-finite loss or gradient (``skip_nonfinite``)
    best_step: int = 0  # the step of the evaluation with the lowest validation loss (0: none ran)


def resolve_device(request: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else checked to exist. ValueError if it does not."""
    if request == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(request)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {request!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {request!r} asked for, but this machine has no CUDA device (use --device cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {request!r} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be a CPU or CUDA device, got {request!r}")
    return device


class Task(ABC):
    """What an application brings to the loop: its model, its batches, its loss and its evaluation.

    Subclass it and give ``model`` (an ``nn.Module``) and the methods below; the defaults suit a task with no
    state carried between batches. The loop calls, in order: :meth:`setup` once; then per epoch
    :meth:`epoch_batches` and, for each position in it, :meth:`loss`; :meth:`evaluate` every ``eval_every``
    steps; :meth:`end_epoch` after the last batch of an epoch. Everything a task draws at random must come
    from torch's global generator or from the seed and the epoch number, so that a resumed run reads the same
    batches (the loop saves and restores the generator).
    """

    model: nn.Module
    unit: str = "items"  # what the speed counts, e.g. "chars"
    items_per_step: int = 1  # how many of them one step trains on (per rank)

    def setup(self, device: torch.device, rank: int, world: int) -> None:
        """Move the data to ``device`` and take this rank's shard; ValueError if there is too little."""
        return None  # an optional hook: nothing to do by default

    @abstractmethod
    def steps_per_epoch(self) -> int:
        """How many steps make an epoch (the same on every rank and in every epoch)."""

    @abstractmethod
    def epoch_batches(self, epoch: int) -> Any:
        """The batches of ``epoch``, indexable by position ``0 .. steps_per_epoch() - 1``."""

    @abstractmethod
    def loss(self, net: nn.Module, batch: Any) -> Tensor:
        """The scalar training loss of ``batch`` under ``net`` (the model, or its DDP wrapper), graph attached."""

    def end_epoch(self) -> None:
        """After an epoch's last batch (e.g. drop a carried state)."""
        return None  # an optional hook: nothing to do by default

    def discard_state(self) -> None:
        """A step was skipped as non-finite: drop anything carried from it."""
        return None  # an optional hook: nothing to do by default

    @abstractmethod
    def evaluate(self) -> float:
        """The validation loss (lower is better), the same value on every rank (sum over ranks if sharded)."""

    def metrics(self, train_loss: float, val_loss: float) -> dict[str, float]:
        """More columns for an evaluation's row of ``metrics.csv`` (e.g. perplexity, bits per character)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """This rank's resumable state beyond the weights and the RNG (e.g. a carried recurrent state)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        return None  # an optional hook: nothing to do by default


class Callback:
    """A hook around the loop (Keras's callbacks). Each method is called on every rank; write files on rank 0.

    ``trainer`` is the :class:`lstmkit.train.Trainer` running the loop (typed ``Any`` here: the loop imports
    this module, not the other way round); its attributes are listed in its docstring.

    A hook with state that must survive a resume returns it from :meth:`state_dict` (saved in ``last/``).
    """

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def on_train_begin(self, trainer: Any) -> None:
        """After the model, optimizer and (on resume) the saved state are in place."""

    def on_step_end(self, trainer: Any) -> None:
        """After each step (``trainer.last_loss`` holds its loss)."""

    def on_evaluate(self, trainer: Any, row: dict[str, float]) -> None:
        """After an evaluation; ``row`` was just appended to ``trainer.history``."""

    def on_interrupt(self, trainer: Any) -> None:
        """SIGINT/SIGTERM: the step in flight is done; save what resuming needs."""

    def on_train_end(self, trainer: Any) -> None:
        """After the loop (not after an error)."""
