"""The copy (memory) task (Hochreiter & Schmidhuber 1997; in this form Arjovsky, Shah & Bengio 2016).

The model sees ``symbols`` symbols drawn uniformly from an alphabet of ``alphabet``, then ``length`` blanks,
then a delimiter that says "recall now", then ``symbols - 1`` more blanks. From the delimiter on, it has to
output the symbols it saw, in order. Symbol k is asked for ``length + symbols`` steps after it was shown.

Inputs are one-hot over ``alphabet + 2`` channels: the symbols, then the blank, then the delimiter. Unlike
Arjovsky et al., the loss counts only the recall steps: a model is not rewarded for outputting blanks.

Chance level: a model that remembers nothing can only guess each symbol, and is wrong with probability
``1 - 1/alphabet`` (7/8 with the default alphabet of 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import ClassificationTask, check_int, one_hot


@dataclass(frozen=True)
class CopyTask(ClassificationTask):
    """Remember ``symbols`` symbols over a delay of ``length`` blanks, then recall them in order.

    ``x``: ``(B, length + 2 * symbols, alphabet + 2)``; ``y``: ``(B, symbols)`` int64 in ``[0, alphabet)``,
    predicted from the last ``symbols`` steps. The metric is the error rate over the recalled symbols.
    """

    symbols: int = 10
    alphabet: int = 8

    name = "copy"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("symbols", self.symbols, 1)
        check_int("alphabet", self.alphabet, 2)

    @property
    def input_size(self) -> int:
        return self.alphabet + 2

    @property
    def output_size(self) -> int:
        return self.alphabet

    @property
    def seq_len(self) -> int:
        return self.length + 2 * self.symbols

    @property
    def readout(self) -> int:
        return self.symbols

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
        return one_hot(codes, self.input_size), y  # (B, T + 2K, alphabet + 2), (B, K)
