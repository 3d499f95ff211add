"""The one training loop of lstmkit, with hooks: every command that trains runs on it.

An application brings what is its own and nothing else:

* a :class:`Task` (its model, its batches, its loss, its evaluation, and any state it carries between
  batches), subclassed from :class:`lstmkit.train.Task`;
* its config (a :class:`TrainConfig`, plus its own model and data dataclasses, saved with every checkpoint);
* optionally more hooks (:class:`Callback` subclasses).

and calls :func:`train`::

    from lstmkit.train import Task, TrainConfig, train

    class Forecast(Task):
        unit = "windows"                          # what the speed counts
        def __init__(self, model, data):          # the application's own model and data
            self.model, self.data = model, data
            self.items_per_step = data.batch_size
        def setup(self, device, rank, world):     # move data to the device, take this rank's shard, check sizes
            self.x, self.y = self.data.windows(device, rank, world)
        def steps_per_epoch(self):                # the same on every rank and epoch
            return len(self.x)
        def epoch_batches(self, epoch):           # indexable by position; shuffle from torch's generator
            order = torch.randperm(len(self.x))
            return [(self.x[i], self.y[i]) for i in order]
        def loss(self, net, batch):               # net is the model or its DDP wrapper
            x, y = batch
            return F.mse_loss(net(x), y)
        def evaluate(self):                       # the validation loss, the same on every rank
            return float(F.mse_loss(self.model(self.vx), self.vy))
        def metrics(self, train_loss, val_loss):  # more columns for metrics.csv (optional)
            return {"val_rmse": val_loss ** 0.5}

    result = train(Forecast(model, data), TrainConfig(lr=1e-3, max_steps=2000), "runs/f", kind="forecast",
                   run_config=run.to_dict(), extra={"scaler": ...}, resume=False, progress=True,
                   resume_hint="resume it with: lstmkit forecast train --out runs/f --resume")

Optional task methods: ``end_epoch`` (drop a carried state), ``discard_state`` (after a skipped step),
``state_dict``/``load_state_dict`` (what a resume needs beyond weights and RNG, e.g. the carried state).
:class:`TokenStreamTask` (truncated BPTT over one long token stream, used by the char-LM) is a complete
example; :func:`fit` is it with :func:`train`.

What every run gets, each in its own module with its own test (``tests/test_train_*.py``):

* ``early_stopping.EarlyStopping``: stop after ``patience`` evaluations without a better validation loss;
* ``checkpoints.Checkpoints``: ``DIR/best`` (lowest validation loss) and ``DIR/last`` (weights, optimizer,
  schedule, every rank's RNG and task state, data position, hooks' state, metrics so far), written whole
  (:mod:`lstmkit.checkpoint`), so resuming after anything, even SIGKILL, ends bit for bit where an
  uninterrupted run does on CPU;
* ``metrics_csv.MetricsCSV``: ``DIR/metrics.csv`` (one row per evaluation) and ``DIR/curves.png``;
* ``progress.ProgressBar``: a tqdm bar with the loss, the validation loss, the speed and the time left;
* ``interrupt.StopSignals``: SIGINT/SIGTERM finish the step in flight, write ``DIR/last``, print how to resume
  (``resume_hint``) and raise :class:`TrainingInterrupted` (a KeyboardInterrupt: the CLI exits 130);
* ``nonfinite.NonFiniteGuard``: a NaN/inf loss or gradient norm raises :class:`TrainingDiverged` before the
  bad update (``DIR/last`` keeps the last finite weights), or with ``TrainConfig.skip_nonfinite`` skips the
  step, as mixed-precision loss scaling does (counted in ``FitResult.skipped``);
* ``lock.RunLock``: ``DIR/.lock`` held with ``flock`` by the live run: a second run on the same directory
  raises :class:`RunLocked` at once; the kernel frees it when the holder dies, so a crash leaves no stale lock;
* data parallel: under ``torchrun --nproc_per_node N`` the loop joins the process group (gloo on CPU, nccl on
  CUDA), wraps the model in DistributedDataParallel, and rank 0 alone writes files and shows progress.

Hooks run in list order after each step (``on_step_end``) and evaluation (``on_evaluate``); the
:class:`Trainer`'s attributes (``step``, ``history``, ``val_loss``, ``improved``, ``stopped``, ...) are what
they read, and setting ``trainer.stopped`` ends the run.
"""

from __future__ import annotations

from .base import (
    OPTIMIZERS,
    SCHEDULES,
    Callback,
    FitResult,
    RunLocked,
    Task,
    TrainConfig,
    TrainingDiverged,
    TrainingError,
    TrainingInterrupted,
    resolve_device,
)
from .checkpoints import Checkpoints
from .early_stopping import EarlyStopping
from .loop import Trainer, default_callbacks, train
from .metrics_csv import MetricsCSV, plot_curves, write_metrics
from .optim import make_optimizer, make_scheduler
from .progress import ProgressBar
from .streams import METRICS, TokenStreamTask, contiguous_batches, fit, score_stream

__all__ = [
    "METRICS",
    "OPTIMIZERS",
    "SCHEDULES",
    "Callback",
    "Checkpoints",
    "EarlyStopping",
    "FitResult",
    "MetricsCSV",
    "ProgressBar",
    "RunLocked",
    "Task",
    "TokenStreamTask",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "TrainingError",
    "TrainingInterrupted",
    "contiguous_batches",
    "default_callbacks",
    "fit",
    "make_optimizer",
    "make_scheduler",
    "plot_curves",
    "resolve_device",
    "score_stream",
    "train",
    "write_metrics",
]
