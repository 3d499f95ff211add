"""The char-LM's training task: truncated BPTT over one long token stream, the state carried between batches.

A model here maps ``ids (T, B)`` int64 and a carried state (``None`` for zeros) to ``logits (T, B, V)`` and the
new state (:class:`lstmkit.apps.charlm.CharLM`). As char-rnn and D2L train it, the training stream is cut into
``batch_size`` contiguous rows read ``seq_len`` steps at a time, the state carried from batch to batch,
detached (truncated BPTT, Williams & Peng 1990). Each epoch starts the rows at an offset in ``[0, seq_len]``
drawn from the seed and the epoch number alone, so a resumed run reads the batches an uninterrupted one would.
An evaluation scores a fixed sample of the validation part (``eval_tokens``, the same at every evaluation), so
it costs the same on a corpus of any size. The streams may be memory-mapped token files: only the rows of one
epoch's batches are read at a time.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import TextError
from ...train import Task, TrainConfig
from ...train.distributed import all_sum

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
def score_rows(model: nn.Module, xs: Tensor, ys: Tensor, chunk: int = 256) -> float:
    """Summed negative log-likelihood (nats) of the targets ``ys`` given the inputs ``xs``, both ``(L, rows)``:
    the rows read side by side from a zero state, ``chunk`` steps at a time with the state carried."""
    state = None
    total = 0.0
    for start in range(0, xs.size(0), chunk):
        logits, state = model(xs[start : start + chunk].long(), state)  # (t, rows, V)
        total += float(F.cross_entropy(logits.flatten(0, 1).float(), ys[start : start + chunk].flatten().long(),
                                       reduction="sum"))
    return total


def score_stream(model: nn.Module, ids: Tensor, rows: int = 1, chunk: int = 256) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of ``ids[1:]`` under ``model``, and how many tokens it scored.

    ids: ``(N,)``. The stream is cut into ``rows`` contiguous rows read side by side, ``chunk`` steps at a time
    with the state carried, so every scored token is predicted from everything before it in its row.
    """
    rows = max(1, min(rows, (ids.numel() - 1)))
    length = (ids.numel() - 1) // rows
    xs = ids[: rows * length].view(rows, length).t()  # (L, rows)
    ys = ids[1 : rows * length + 1].view(rows, length).t()
    return score_rows(model, xs, ys, chunk), rows * length


def evaluation_sample(ids: Tensor, tokens: int, rows: int) -> tuple[Tensor, Tensor]:
    """The fixed sample an evaluation scores: ``rows`` windows of ``tokens // rows + 1`` ids spread evenly
    over ``ids`` (all of it, cut into ``rows`` contiguous rows, when it has no more than ``tokens + 1``), as
    inputs and targets ``(L, rows)``. The same ids give the same sample: no random draw."""
    n = ids.numel()
    rows = max(1, min(rows, n - 1))
    if n <= tokens + 1:
        length = (n - 1) // rows
        starts = [r * length for r in range(rows)]
    else:
        length = max(1, tokens // rows)
        last = n - length - 1  # integer arithmetic: a float linspace rounds past the end of a long stream
        starts = [r * last // max(1, rows - 1) for r in range(rows)]
    windows = torch.stack([ids[s : s + length + 1] for s in starts])  # (rows, L + 1), copied out of a memory map
    return windows[:, :-1].t().contiguous(), windows[:, 1:].t().contiguous()


def _shard(ids: Tensor, rank: int, world: int) -> Tensor:
    size = ids.numel() // world
    return ids[rank * size : (rank + 1) * size]


class TokenStreamTask(Task):
    """Next-token prediction over ``train_ids`` (``(N,)`` integers of any width, e.g. a memory-mapped token
    file), scored on a fixed sample of ``eval_tokens`` tokens of ``val_ids`` (all of it if shorter), with
    truncated BPTT.

    val_scale: the validation loss is nats per token times this (e.g. tokens per character, so that a byte
    model's loss is per character of the text); the training loss stays per token.
    """

    unit = "chars"

    def __init__(self, model: nn.Module, train_ids: Tensor, val_ids: Tensor, config: TrainConfig, *,
                 eval_tokens: int, val_scale: float = 1.0) -> None:
        self.model = model
        self.train_ids, self.val_ids = train_ids, val_ids
        self.B, self.T, self.seed = config.batch_size, config.seq_len, config.seed
        self.eval_tokens = eval_tokens
        self.val_scale = val_scale
        self.items_per_step = self.B * self.T
        self.carry: tuple[Tensor, ...] | None = None

    def setup(self, device: torch.device, rank: int, world: int) -> None:
        """Take this rank's shards; :class:`TextError` when the training part is too short for one batch or
        the validation part for one prediction."""
        self.device = device
        self.train_shard = _shard(self.train_ids, rank, world).to(device)
        val_shard = _shard(self.val_ids, rank, world)
        B, T = self.B, self.T
        need = B * T + T + 1  # one batch at the largest epoch offset
        per = " per process" if world > 1 else ""
        if self.train_shard.numel() < need:
            raise TextError(
                f"the text is too short: {self.train_shard.numel():,} characters to train on{per}, and "
                f"--batch-size {B} x --seq-len {T} needs at least {need:,}; give more text or smaller "
                "--batch-size/--seq-len"
            )
        if val_shard.numel() < 2:
            raise TextError(f"the validation part is too short ({val_shard.numel()} characters{per}); "
                            "raise --val-fraction or give more text")
        rows = max(1, min(B, (val_shard.numel() - 1) // T))  # rows of at least T tokens when the part is short
        xs, ys = evaluation_sample(val_shard, max(1, self.eval_tokens // world), rows)
        self.val_x, self.val_y = xs.to(device), ys.to(device)
        self.per_epoch = contiguous_batches(self.train_shard, B, T, T)[0].size(0)  # the fewest any epoch has

    def steps_per_epoch(self) -> int:
        return self.per_epoch

    def epoch_batches(self, epoch: int) -> Any:
        generator = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        offset = int(torch.randint(0, self.T + 1, (1,), generator=generator))
        xs, ys = contiguous_batches(self.train_shard, self.B, self.T, offset)
        return _Pairs(xs, ys)

    def loss(self, net: nn.Module, batch: Any) -> Tensor:
        x, y = batch  # token files hold uint8/uint16 ids: widened a batch at a time
        logits, state = net(x.long(), self.carry)  # (T, B, V)
        self.carry = tuple(s.detach() for s in state)  # the state goes on; its gradient path ends here
        return F.cross_entropy(logits.flatten(0, 1), y.flatten().long())

    def end_epoch(self) -> None:
        self.carry = None

    def discard_state(self) -> None:
        self.carry = None

    def evaluate(self) -> float:
        nll = score_rows(self.model, self.val_x, self.val_y)
        total, scored = all_sum([nll, float(self.val_y.numel())], self.device)
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
