"""A task for sequence models over one long stream of tokens: truncated BPTT with the state carried.

A model here maps ``ids (T, B)`` int64 and a carried state (``None`` for zeros) to ``logits (T, B, V)`` and the
new state, a tuple of tensors (see :class:`lstmkit.apps.charlm.CharLM`). :class:`TokenStreamTask` trains it
as char-rnn and D2L do: the training stream is cut into ``batch_size`` contiguous rows, read ``seq_len`` steps
at a time, and the state is carried from one batch to the next, detached, so gradients flow back at most
``seq_len`` steps (truncated BPTT, Williams & Peng 1990) while the state sees the whole row. Each epoch starts
the rows at a random offset in ``[0, seq_len]`` (as D2L's ``seq_data_iter_sequential``), drawn from the seed
and the epoch number alone, so a resumed run reads exactly the batches an uninterrupted one would. Under DDP
each rank trains on its own contiguous shard and scores its own shard of the validation stream.

Tokens need not be characters, and the streams may be any 1-D integer sequence that slices like a tensor
(a memory-mapped token file included): only the rows of one epoch's batches are read at a time.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import FitResult, Task, TrainConfig
from .distributed import all_sum
from .loop import train

# The columns of a token stream's metrics.csv.
METRICS = ("step", "epoch", "seconds", "cpu_seconds", "lr", "train_loss", "train_perplexity", "val_loss",
           "val_perplexity", "val_bits_per_char", "chars_per_second")


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


def _shard(ids: Tensor, rank: int, world: int) -> Tensor:
    size = ids.numel() // world
    return ids[rank * size : (rank + 1) * size]


class TokenStreamTask(Task):
    """Next-token prediction over ``train_ids`` (``(N,)`` int64), scored on ``val_ids``, with truncated BPTT.

    val_scale: the validation loss is nats per token times this (e.g. tokens per character, so that a byte
    model's loss is per character of the text); the training loss stays per token.
    """

    unit = "chars"

    def __init__(self, model: nn.Module, train_ids: Tensor, val_ids: Tensor, config: TrainConfig,
                 val_scale: float = 1.0) -> None:
        self.model = model
        self.train_ids, self.val_ids = train_ids, val_ids
        self.B, self.T, self.seed = config.batch_size, config.seq_len, config.seed
        self.val_scale = val_scale
        self.items_per_step = self.B * self.T
        self.carry: tuple[Tensor, ...] | None = None

    def setup(self, device: torch.device, rank: int, world: int) -> None:
        self.device = device
        self.train_shard = _shard(self.train_ids, rank, world).to(device)
        self.val_shard = _shard(self.val_ids, rank, world).to(device)
        B, T = self.B, self.T
        need = B * T + T + 1  # one batch at the largest epoch offset
        per = " per process" if world > 1 else ""
        if self.train_shard.numel() < need:
            raise ValueError(
                f"the training text is too short: {self.train_shard.numel()} characters{per}, and --batch-size {B} "
                f"x --seq-len {T} needs at least {need}; give more text or smaller --batch-size/--seq-len"
            )
        if self.val_shard.numel() < 2:
            raise ValueError(
                f"the validation text is too short ({self.val_shard.numel()} characters{per}); "
                "raise --val-fraction or give more text"
            )
        self.per_epoch = contiguous_batches(self.train_shard, B, T, T)[0].size(0)  # the fewest any epoch has

    def steps_per_epoch(self) -> int:
        return self.per_epoch

    def epoch_batches(self, epoch: int) -> Any:
        generator = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        offset = int(torch.randint(0, self.T + 1, (1,), generator=generator))
        xs, ys = contiguous_batches(self.train_shard, self.B, self.T, offset)
        return _Pairs(xs, ys)

    def loss(self, net: nn.Module, batch: Any) -> Tensor:
        x, y = batch
        logits, state = net(x, self.carry)  # (T, B, V)
        self.carry = tuple(s.detach() for s in state)  # the state goes on; its gradient path ends here
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    def end_epoch(self) -> None:
        self.carry = None

    def discard_state(self) -> None:
        self.carry = None

    def evaluate(self) -> float:
        rows = max(1, min(self.B, (self.val_shard.numel() - 1) // self.T))
        nll, count = score_stream(self.model, self.val_shard, rows=rows)
        total, scored = all_sum([nll, float(count)], self.device)
        return total / scored * self.val_scale

    def metrics(self, train_loss: float, val_loss: float) -> dict[str, float]:
        return {"train_perplexity": math.exp(min(train_loss, 50)) if math.isfinite(train_loss) else math.nan,
                "val_perplexity": math.exp(min(val_loss, 50)), "val_bits_per_char": val_loss / math.log(2)}

    def state_dict(self) -> dict[str, Any]:
        return {"carry": None if self.carry is None else tuple(t.cpu() for t in self.carry)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        carry = state.get("carry")
        self.carry = tuple(t.to(self.device) for t in carry) if carry is not None else None


class _Pairs:
    """Batch k of an epoch: ``(inputs (T, B), targets (T, B))``."""

    def __init__(self, xs: Tensor, ys: Tensor) -> None:
        self.xs, self.ys = xs, ys

    def __getitem__(self, k: int) -> tuple[Tensor, Tensor]:
        return self.xs[k], self.ys[k]


def fit(model: nn.Module, train_ids: Tensor, val_ids: Tensor, config: TrainConfig, out: str | Path, *, kind: str,
        run_config: Any, extra: dict[str, Any] | None = None, resume: bool = False, progress: bool = True,
        val_scale: float = 1.0, resume_hint: str = "") -> FitResult:
    """Train ``model`` on the token stream ``train_ids`` (``(N,)`` int64), scoring ``val_ids`` as it goes.

    Writes to ``out``: ``last/`` (the checkpoint to resume from, at every evaluation, at the end and on
    SIGINT/SIGTERM), ``best/`` (the weights with the lowest validation loss so far), ``metrics.csv`` (one row
    per evaluation, columns :data:`METRICS`) and ``curves.png``. kind, run_config, extra: what the checkpoints
    say they are. resume: continue the run in ``out`` from ``out/last``. Under ``torchrun`` it trains
    data-parallel. Raises ValueError for a text too short for one batch or an ``out`` that holds another run.
    """
    task = TokenStreamTask(model, train_ids, val_ids, config, val_scale=val_scale)
    return train(task, config, out, kind=kind, run_config=run_config, extra=extra, resume=resume, progress=progress,
                 metric_fields=METRICS, resume_hint=resume_hint)
