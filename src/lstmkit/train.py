"""The shared training loop for sequence models over a stream of tokens: truncated BPTT, checkpoints, resume, DDP.

A model here maps ``ids (T, B)`` int64 and a carried state (``None`` for zeros) to ``logits (T, B, V)`` and
the new state, a tuple of tensors (see :class:`lstmkit.apps.charlm.CharLM`). :func:`fit` trains it as char-rnn and
D2L do: the training stream is cut into ``batch_size`` contiguous rows, read ``seq_len`` steps at a time, and
the state is carried from one batch to the next, detached, so gradients flow back at most ``seq_len`` steps
(truncated BPTT, Williams & Peng 1990) while the state sees the whole row. Each epoch starts the rows at a
random offset in ``[0, seq_len]`` (as D2L's ``seq_data_iter_sequential``), drawn from the seed and the epoch
number alone, so a resumed run reads exactly the batches an uninterrupted one would.

Resume is exact: ``DIR/last`` holds the weights, the optimizer and schedule, every rank's RNG state and carried
state, the data position, the early-stopping record and the metrics so far, all written as one checkpoint
(:mod:`lstmkit.checkpoint`), so a run killed at any instant (even by SIGKILL) and resumed ends with the same
weights, bit for bit on CPU, as one never stopped.

Under ``torchrun --nproc_per_node N`` the loop runs data-parallel (DistributedDataParallel; gloo on CPU, nccl
on CUDA): each rank trains on its own contiguous shard of the stream and scores its own shard of the validation
stream; rank 0 alone writes files and shows progress.

The pieces (:func:`make_optimizer`, :func:`make_scheduler`, :func:`score_stream`, :func:`write_metrics`,
:func:`plot_curves`, :func:`contiguous_batches`) are public for other training loops to reuse.
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from .checkpoint import BEST, LAST, CheckpointError, load_checkpoint, save_checkpoint
from .fileio import atomic_write

__all__ = [
    "FitResult",
    "TrainConfig",
    "contiguous_batches",
    "fit",
    "make_optimizer",
    "make_scheduler",
    "plot_curves",
    "resolve_device",
    "score_stream",
    "write_metrics",
]

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("auto", "cosine", "plateau", "constant")
METRICS = ("step", "epoch", "seconds", "cpu_seconds", "lr", "train_loss", "train_perplexity", "val_loss",
           "val_perplexity", "val_bits_per_char", "chars_per_second")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: batches, optimizer, schedule, when to evaluate and when to stop."""

    seq_len: int = 100  # steps of backpropagation through time per batch
    batch_size: int = 32  # contiguous rows per batch (per rank under DDP)
    optimizer: str = "adamw"  # "adamw" or "sgd"
    lr: float = 3e-3
    weight_decay: float = 0.01  # AdamW's decoupled weight decay (Loshchilov & Hutter 2019)
    clip: float = 1.0  # gradient clipping to this total norm; 0 for none
    schedule: str = "auto"  # cosine decay when the step budget is known, else halve on a validation plateau
    warmup_steps: int = 0  # linear warm-up, for the cosine and constant schedules
    max_steps: int = 0  # stop after this many steps (0: no limit)
    max_epochs: int = 0  # stop after this many passes over the training text (0: no limit)
    max_minutes: float = 0.0  # stop after this much training time (0: no limit; not bit-reproducible)
    # Stop after this much CPU time of this process (all its threads; 0: no limit): a budget that a machine
    # shared with other work does not shrink, as wall-clock minutes are.
    max_cpu_minutes: float = 0.0
    eval_every: int = 100  # score the validation text every this many steps; 0: at the end of every epoch
    patience: int = 10  # stop after this many evaluations without a better validation loss; 0: never
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when there is one), "cpu", "cuda", "cuda:1", ...

    def __post_init__(self) -> None:
        _check(self.seq_len >= 1, f"seq_len must be >= 1, got {self.seq_len}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
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
        _check(self.schedule != "cosine" or bool(self.max_steps or self.max_epochs),
               "schedule 'cosine' needs max_steps or max_epochs to know where it ends")


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` did: steps and epochs run, the losses (nats per token), why it stopped, and the log."""

    steps: int
    epochs: float
    best_val_loss: float
    val_loss: float
    stopped: str  # "max_steps", "max_epochs", "max_minutes", "max_cpu_minutes" or "early_stopping"
    seconds: float
    history: list[dict[str, float]]


# ---------------------------------------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------------------------------------


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


def contiguous_batches(ids: Tensor, batch_size: int, seq_len: int, offset: int) -> tuple[Tensor, Tensor]:
    """Inputs and targets for one epoch: each ``(num_batches, seq_len, batch_size)``, batch k follows batch k-1.

    ``ids[offset:]`` is cut into ``batch_size`` rows of equal length; batch k is steps
    ``[k * seq_len, (k+1) * seq_len)`` of every row, so row b of batch k continues row b of batch k-1.
    """
    usable = ((ids.numel() - offset - 1) // batch_size) * batch_size
    xs = ids[offset : offset + usable].view(batch_size, -1)  # (B, L)
    ys = ids[offset + 1 : offset + 1 + usable].view(batch_size, -1)
    n = xs.size(1) // seq_len
    xs = xs[:, : n * seq_len].view(batch_size, n, seq_len).permute(1, 2, 0)  # (n, T, B)
    ys = ys[:, : n * seq_len].view(batch_size, n, seq_len).permute(1, 2, 0)
    return xs, ys


@torch.no_grad()
def score_stream(model: nn.Module, ids: Tensor, rows: int = 1, chunk: int = 256) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of ``ids[1:]`` under ``model``, and how many tokens it scored.

    ids: ``(N,)``. The stream is cut into ``rows`` contiguous rows read side by side, ``chunk`` steps at a time
    with the state carried, so every scored token is predicted from everything before it in its row.
    """
    rows = max(1, min(rows, (ids.numel() - 1)))
    length = (ids.numel() - 1) // rows
    xs = ids[: rows * length].view(rows, length).t()  # (L, rows)
    ys = ids[1 : rows * length + 1].view(rows, length).t()
    state = None
    total = 0.0
    for start in range(0, length, chunk):
        logits, state = model(xs[start : start + chunk], state)  # (t, rows, V)
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), ys[start : start + chunk].flatten(),
                                       reduction="sum"))
    return total, rows * length


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (weight decay on matrices only, as nanoGPT: not on biases) or plain SGD, at ``config.lr``."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> Any:
    """The learning-rate schedule: ``cosine`` to 10% of ``lr`` over ``total_steps``, ``plateau`` (halve after
    two evaluations without improvement), or ``constant``; ``auto`` is cosine when ``total_steps`` > 0."""
    kind = config.schedule
    if kind == "auto":
        kind = "cosine" if total_steps > 0 else "plateau"
    if kind == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
    warmup = config.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def write_metrics(path: str | Path, history: list[dict[str, float]]) -> None:
    """Write ``history`` (one dict per evaluation, keys :data:`METRICS`) as CSV, atomically."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(METRICS), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


def plot_curves(path: str | Path, history: list[dict[str, float]], title: str = "") -> None:
    """Training and validation loss against steps, as a PNG (matplotlib's Agg canvas: no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps = [row["step"] for row in history]
    ax.plot(steps, [row["train_loss"] for row in history], label="training", marker=".")
    ax.plot(steps, [row["val_loss"] for row in history], label="validation", marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per character)")
    ax.set_title(title or "loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png")


# ---------------------------------------------------------------------------------------------------------
# Distributed helpers: all of them are no-ops in a single process
# ---------------------------------------------------------------------------------------------------------


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _sum(values: list[float], device: torch.device) -> list[float]:
    if _world()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _agree(flag: bool, device: torch.device) -> bool:
    """Rank 0's decision, for all ranks (a wall-clock limit must stop every rank at the same step)."""
    if _world()[1] == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.broadcast(t, 0)
    return bool(t.item())


def _shard(ids: Tensor, rank: int, world: int) -> Tensor:
    size = ids.numel() // world
    return ids[rank * size : (rank + 1) * size]


# ---------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


def fit(
    model: nn.Module,
    train_ids: Tensor,
    val_ids: Tensor,
    config: TrainConfig,
    out: str | Path,
    *,
    kind: str,
    run_config: Any,
    extra: dict[str, Any] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> FitResult:
    """Train ``model`` on the token stream ``train_ids`` (``(N,)`` int64), scoring ``val_ids`` as it goes.

    Writes to ``out``: ``last/`` (the checkpoint to resume from, at every evaluation and at the end), ``best/``
    (the weights with the lowest validation loss so far), ``metrics.csv`` (one row per evaluation) and
    ``curves.png``. kind, run_config, extra: what the checkpoints say they are (see
    :func:`lstmkit.checkpoint.save_checkpoint`). resume: continue the run in ``out`` from ``out/last``.
    Under ``torchrun`` (``WORLD_SIZE`` > 1) it joins the process group and trains data-parallel.
    Raises ValueError for a text too short for one batch or a ``out`` that holds another run.
    """
    out = Path(out)
    device = resolve_device(config.device)
    world_env = int(os.environ.get("WORLD_SIZE", "1"))
    started_group = False
    if world_env > 1 and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        started_group = True
    try:
        return _fit(model, train_ids, val_ids, config, out, device, kind, run_config, extra or {}, resume, progress)
    finally:
        if started_group:
            dist.destroy_process_group()


def _fit(
    model: nn.Module,
    train_ids: Tensor,
    val_ids: Tensor,
    config: TrainConfig,
    out: Path,
    device: torch.device,
    kind: str,
    run_config: Any,
    extra: dict[str, Any],
    resume: bool,
    progress: bool,
) -> FitResult:
    rank, world = _world()
    B, T = config.batch_size, config.seq_len
    train_shard = _shard(train_ids, rank, world).to(device)
    val_shard = _shard(val_ids, rank, world).to(device)
    need = B * T + T + 1  # one batch at the largest epoch offset
    if train_shard.numel() < need:
        per = " per process" if world > 1 else ""
        raise ValueError(
            f"the training text is too short: {train_shard.numel()} characters{per}, and --batch-size {B} x "
            f"--seq-len {T} needs at least {need}; give more text or smaller --batch-size/--seq-len"
        )
    if val_shard.numel() < 2:
        raise ValueError(
            f"the validation text is too short ({val_shard.numel()} characters{' per process' if world > 1 else ''}); "
            "raise --val-fraction or give more text"
        )
    if not resume and rank == 0 and ((out / LAST).exists() or (out / (LAST + ".old")).exists()):
        raise ValueError(f"{out} already holds a training run; pass --resume to continue it, or choose another --out")

    model.to(device)
    optimizer = make_optimizer(model, config)
    per_epoch = contiguous_batches(train_shard, B, T, T)[0].size(0)  # the fewest batches any epoch has
    budget = config.max_steps or config.max_epochs * per_epoch
    if config.max_steps and config.max_epochs:
        budget = min(config.max_steps, config.max_epochs * per_epoch)
    scheduler = make_scheduler(optimizer, config, budget)
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    step, epoch, position = 0, 0, 0
    best, bad_evals, elapsed, cpu = math.inf, 0, 0.0, 0.0
    history: list[dict[str, float]] = []
    carry: tuple[Tensor, ...] | None = None
    torch.manual_seed(config.seed * 1009 + rank)  # dropout: each rank its own stream
    if device.type == "cuda":
        torch.cuda.manual_seed(config.seed * 1009 + rank)
    if resume:
        saved = load_checkpoint(out / LAST, kind=kind, map_location=device, trainer=True)
        state = saved.trainer or {}
        if state.get("world_size") != world:
            raise CheckpointError(
                f"the run in {out} was trained by {state.get('world_size')} process(es); "
                f"resume it with as many, not {world}"
            )
        model.load_state_dict(saved.state_dict)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, position = int(state["step"]), int(state["epoch"]), int(state["position"])
        best, bad_evals, elapsed = float(state["best"]), int(state["bad_evals"]), float(state["elapsed"])
        cpu = float(state.get("cpu", 0.0))
        history = [dict(row) for row in state["history"]]
        mine = state["ranks"][rank]
        _set_rng_state(mine["rng"], device)
        carry = tuple(t.to(device) for t in mine["carry"]) if mine["carry"] is not None else None
        if rank == 0:
            write_metrics(out / "metrics.csv", history)  # rows logged after this checkpoint are gone

    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def save(path: Path, with_trainer: bool, info: dict[str, Any]) -> None:
        trainer = None
        if with_trainer:
            mine = {"rng": _rng_state(device), "carry": None if carry is None else tuple(t.cpu() for t in carry)}
            ranks = [mine]
            if world > 1:
                gathered: list[Any] = [None] * world
                dist.all_gather_object(gathered, mine)
                ranks = gathered
            trainer = {
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                "epoch": epoch, "position": position, "best": best, "bad_evals": bad_evals, "elapsed": elapsed,
                "cpu": cpu, "history": history, "ranks": ranks, "world_size": world,
            }
        if rank == 0:
            save_checkpoint(path, model, run_config, kind=kind, extra={**extra, **info}, trainer=trainer)

    def evaluate() -> float:
        model.eval()
        rows = max(1, min(B, (val_shard.numel() - 1) // T))
        nll, count = score_stream(model, val_shard, rows=rows)
        model.train()
        total, scored = _sum([nll, float(count)], device)
        return total / scored

    chars_per_step = B * T * world
    bar = tqdm(total=budget or None, initial=step, disable=not progress or rank != 0, unit="step",
               dynamic_ncols=True, leave=True)
    began = time.monotonic() - elapsed
    cpu_began = time.process_time() - cpu
    interval_loss, interval_steps, interval_elapsed = 0.0, 0, elapsed
    stopped = ""
    if config.max_steps and step >= config.max_steps:
        stopped = "max_steps"  # a finished run resumed with the same budget: nothing left to do
    elif config.max_epochs and epoch >= config.max_epochs:
        stopped = "max_epochs"
    val_loss = history[-1]["val_loss"] if history else math.inf
    model.train()
    while not stopped:
        offset = int(torch.randint(0, T + 1, (1,), generator=torch.Generator().manual_seed(config.seed * 7919 + epoch)))
        xs, ys = contiguous_batches(train_shard, B, T, offset)
        n = min(xs.size(0), per_epoch)  # every rank and every epoch the same number of steps
        while position < n and not stopped:
            logits, state = net(xs[position], carry)  # (T, B, V)
            loss = F.cross_entropy(logits.flatten(0, 1), ys[position].flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip:
                nn.utils.clip_grad_norm_(model.parameters(), config.clip)
            optimizer.step()
            if not plateau:
                scheduler.step()
            carry = tuple(s.detach() for s in state)  # the state goes on; its gradient path ends here
            step += 1
            position += 1
            interval_loss += loss.item()
            interval_steps += 1
            elapsed = time.monotonic() - began
            cpu = time.process_time() - cpu_began
            end_of_epoch = position >= n
            if config.max_steps and step >= config.max_steps:
                stopped = "max_steps"
            elif end_of_epoch and config.max_epochs and epoch + 1 >= config.max_epochs:
                stopped = "max_epochs"
            elif config.max_minutes and _agree(elapsed >= 60 * config.max_minutes, device):
                stopped = "max_minutes"
            elif config.max_cpu_minutes and _agree(cpu >= 60 * config.max_cpu_minutes, device):
                stopped = "max_cpu_minutes"
            due = (step % config.eval_every == 0) if config.eval_every else end_of_epoch
            speed = chars_per_step * interval_steps / max(1e-9, elapsed - interval_elapsed)
            if due or stopped:
                val_loss = evaluate()
                train_loss = _sum([interval_loss / interval_steps], device)[0] / world
                row = {
                    "step": step, "epoch": round(epoch + position / n, 4), "seconds": round(elapsed, 3),
                    "cpu_seconds": round(cpu, 3),
                    "lr": optimizer.param_groups[0]["lr"], "train_loss": train_loss,
                    "train_perplexity": math.exp(min(train_loss, 50)), "val_loss": val_loss,
                    "val_perplexity": math.exp(min(val_loss, 50)), "val_bits_per_char": val_loss / math.log(2),
                    "chars_per_second": round(speed, 1),
                }
                history.append(row)
                interval_loss, interval_steps = 0.0, 0
                if plateau:
                    scheduler.step(val_loss)
                if val_loss < best:
                    best, bad_evals = val_loss, 0
                    save(out / BEST, False, {"step": step, "val_loss": val_loss})
                else:
                    bad_evals += 1
                    if config.patience and bad_evals >= config.patience and not stopped:
                        stopped = "early_stopping"
                if end_of_epoch:
                    epoch, position, carry = epoch + 1, 0, None
                save(out / LAST, True, {"step": step, "val_loss": val_loss})
                if rank == 0:
                    write_metrics(out / "metrics.csv", history)
                    plot_curves(out / "curves.png", history, title=f"{kind}: loss by step")
                interval_elapsed = time.monotonic() - began  # chars/s counts training, not evaluation
            elif end_of_epoch:
                epoch, position, carry = epoch + 1, 0, None
            if bar.total:
                left = (bar.total - step) * (elapsed / max(1, step))
            else:
                left = math.inf
            if config.max_minutes:
                left = min(left, 60 * config.max_minutes - elapsed)
            shown = interval_loss / interval_steps if interval_steps else history[-1]["train_loss"]
            bar.set_postfix_str(
                f"loss {shown:.3f} ppl {math.exp(min(shown, 50)):.2f} val "
                f"{f'{val_loss:.3f}' if math.isfinite(val_loss) else '-'} "
                f"{speed:,.0f} chars/s left {_clock(left)}", refresh=False,
            )
            bar.update(1)
            if end_of_epoch:
                break  # the next epoch reads new batches (a new offset)
    bar.close()
    return FitResult(
        steps=step, epochs=epoch + position / max(1, per_epoch), best_val_loss=best, val_loss=val_loss,
        stopped=stopped, seconds=elapsed, history=history,
    )


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else (
        f"{seconds // 60:02d}:{seconds % 60:02d}")
