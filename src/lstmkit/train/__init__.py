"""The one training loop of lstmkit, with hooks: every command that trains runs on it.

An application brings its :class:`Task` (model, batches, loss, evaluation, any state carried between batches),
a :class:`TrainConfig`, and optionally more hooks (:class:`Callback` subclasses), and calls :func:`train`::

    result = train(MyTask(model, data), TrainConfig(lr=1e-3, max_epochs=50, eval_every=0), None,
                   restore_best=True, progress=False)           # nothing written; ends with the best weights

    result = train(task, config, "runs/x", kind="mine", run_config=run.to_dict(), resume=False,
                   resume_hint="resume it with: lstmkit mine --out runs/x --resume")   # a run directory

With ``out=None`` nothing is written (no lock, no checkpoint, no metrics file). With a directory every run gets
``best/`` and ``last/`` (everything a resume needs, written whole: resuming after anything, even SIGKILL, ends
bit for bit where an uninterrupted run does on CPU), ``metrics.csv`` and ``curves.png``, and ``DIR/.lock``.

The hooks, each in its own module with its own test (``tests/test_train_*.py``): ``EarlyStopping``,
``BestWeights`` (the best evaluation's weights in memory, restored at the end), ``Checkpoints``, ``MetricsCSV``,
``ProgressBar`` (tqdm, or quiet) and ``ProgressReport`` (each step's or evaluation's figures to a function),
``StopSignals`` (SIGINT/SIGTERM end the run after the step in flight, saving ``last/``), ``NonFiniteGuard`` and
``RunLock``. Under ``torchrun`` the loop trains data-parallel and rank 0 alone writes.
"""

from __future__ import annotations

from .base import (
    OPTIMIZERS,
    SCHEDULES,
    Callback,
    FitResult,
    Task,
    TrainConfig,
    resolve_device,
)
from .best_weights import BestWeights
from .checkpoints import Checkpoints
from .early_stopping import EarlyStopping
from .loop import Trainer, default_callbacks, train
from .metrics_csv import MetricsCSV, plot_curves, write_metrics
from .optim import make_optimizer, make_scheduler
from .progress import ProgressBar, ProgressReport

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "BestWeights",
    "Callback",
    "Checkpoints",
    "EarlyStopping",
    "FitResult",
    "MetricsCSV",
    "ProgressBar",
    "ProgressReport",
    "Task",
    "TrainConfig",
    "Trainer",
    "default_callbacks",
    "make_optimizer",
    "make_scheduler",
    "plot_curves",
    "resolve_device",
    "train",
    "write_metrics",
]
