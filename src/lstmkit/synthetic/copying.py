"""The copy (memory) task (Hochreiter & Schmidhuber 1997; in this form Arjovsky, Shah & Bengio 2016).

The model sees ``symbols`` symbols drawn uniformly from an alphabet of ``alphabet``, then ``length`` blanks,
then a delimiter that says "recall now", then ``symbols - 1`` more blanks. From the delimiter on, it has to
output the symbols it saw, in order. Symbol k is asked for ``length + symbols`` steps after it was shown.

Inputs are one-hot over ``alphabet + 2`` channels: the symbols, then the blank, then the delimiter. With
``loss_span="sequence"`` (the default, as Arjovsky et al. and Tallec & Ollivier 2018) the model answers at every
step, "blank" until the recall, and the loss is the cross-entropy over the whole sequence; with ``"recall"`` it
answers only at the recall steps and the loss counts only those. Either way the metric is the error rate on the
recalled symbols. Trained with the lab's former setting (AdamW, loss on the recall only, chrono T_max = T,
batch 64) the LSTM sat at an error of 0.68-0.70 for 6,000 steps at T = 100; the published setting, the task's
:attr:`recipe`, solves it (docs/longrange.md).

Chance level: a model that remembers nothing can only guess each symbol, and is wrong with probability
``1 - 1/alphabet`` (7/8 with the default alphabet of 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import ClassificationTask, Recipe, check_int, one_hot

LOSS_SPANS = ("sequence", "recall")


@dataclass(frozen=True)
class CopyTask(ClassificationTask):
    """Remember ``symbols`` symbols over a delay of ``length`` blanks, then recall them in order.

    ``x``: ``(B, length + 2 * symbols, alphabet + 2)``. With ``loss_span="recall"``: ``y`` ``(B, symbols)`` int64
    in ``[0, alphabet)``, predicted from the last ``symbols`` steps. With ``"sequence"``: ``y`` ``(B, seq_len)``,
    the blank class ``alphabet`` everywhere but the last ``symbols`` steps, predicted from every step. The metric
    is the error rate over the recalled symbols; its chance level ``1 - 1/alphabet``.
    """

    symbols: int = 10
    alphabet: int = 8
    loss_span: str = "sequence"  # "sequence": answer (blank) at every step; "recall": only the recall counts

    name = "copy"
    # Tallec & Ollivier (2018): RMSprop at 1e-3, no clipping, batch 32, chrono T_max = 3T/2. Steps: at T = 100 the
    # LSTM left the plateau near step 10,000 and was at 0.010-0.011, just above the threshold, at 40,000
    # (docs/longrange.md).
    recipe: ClassVar[Recipe] = Recipe(optimizer="rmsprop", lr=1e-3, weight_decay=0.0, batch_size=32, clip=0.0,
                                      steps=60_000, chrono_scale=1.5)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("symbols", self.symbols, 1)
        check_int("alphabet", self.alphabet, 2)
        if self.loss_span not in LOSS_SPANS:
            raise ValueError(f"loss_span must be one of {', '.join(map(repr, LOSS_SPANS))}, got {self.loss_span!r}")

    @property
    def input_size(self) -> int:
        return self.alphabet + 2

    @property
    def output_size(self) -> int:
        return self.alphabet + (self.loss_span == "sequence")  # the blank is a class of its own

    @property
    def baseline(self) -> float:
        return 1.0 - 1.0 / self.alphabet  # only the recalled symbols are scored

    @property
    def seq_len(self) -> int:
        return self.length + 2 * self.symbols

    @property
    def readout(self) -> int:
        return self.seq_len if self.loss_span == "sequence" else self.symbols

    @property
    def blank(self) -> int:
        """The channel of the blank input."""
        return self.alphabet

    @property
    def delimiter(self) -> int:
        """The channel of the "recall now" input."""
        return self.alphabet + 1

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        batch_size = check_int("batch_size", batch_size, 1)
        K, T = self.symbols, self.length
        y = torch.randint(0, self.alphabet, (batch_size, K), generator=generator)
        codes = torch.full((batch_size, self.seq_len), self.blank, dtype=torch.int64)
        codes[:, :K] = y
        codes[:, K + T] = self.delimiter  # the first of the last K steps: the recall starts here
        if self.loss_span == "sequence":
            target = torch.full((batch_size, self.seq_len), self.blank, dtype=torch.int64)
            target[:, -K:] = y
            y = target  # (B, T + 2K): blank, then the symbols
        return one_hot(codes, self.input_size), y  # (B, T + 2K, alphabet + 2), (B, K) or (B, T + 2K)

    def loss(self, prediction: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(prediction.reshape(-1, self.output_size), target.reshape(-1))

    def metric(self, prediction: Tensor, target: Tensor) -> float:
        K = self.symbols
        return float((prediction[:, -K:].argmax(-1) != target[:, -K:]).float().mean())
