"""The temporal-order problem, Hochreiter & Schmidhuber 1997, experiment 6a, as published.

"Each sequence starts with an E, ends with a B (the 'trigger symbol') and otherwise consists of randomly chosen
symbols from the set {a, b, c, d} except for two elements at positions t1 and t2 that are either X or Y. The
sequence length is randomly chosen between 100 and 110, t1 is randomly chosen between 10 and 20, and t2 is
randomly chosen between 50 and 60. There are 4 sequence classes Q, R, S, U which depend on the temporal order of
X and Y: X, X -> Q; X, Y -> R; Y, X -> S; Y, Y -> U." (section 5, experiment 6a). Inputs are one-hot over the 8
symbols; the class is read at the last step (the trigger B).

``length`` is the paper's shortest sequence, 100; other lengths scale every window with it: the sequence has
``length`` to ``length + length // 10`` steps, ``t1`` in ``[length // 10, length // 5]`` (at least 2) and ``t2`` in
``[length // 2, 3 * length // 5]`` (1-based positions, E at position 1), which at ``length = 100`` is the
paper's setting exactly. The distractors are never X or Y, so the class depends on the two relevant symbols
only, and the first is 80 to 100 steps before the answer at ``length = 100``.

One batch has one sequence length (drawn per batch), so a batch is one tensor; lengths still vary from batch to
batch as in the paper. Chance level: the 4 classes are uniform, so error ``3/4``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import ClassificationTask, check_int, one_hot

SYMBOLS = ("a", "b", "c", "d", "X", "Y", "E", "B")  # the input channels, in this order
CLASSES = ("Q", "R", "S", "U")  # XX, XY, YX, YY


@dataclass(frozen=True)
class TemporalOrderTask(ClassificationTask):
    """Classify the order of two relevant symbols (X or Y) among distractors, H&S 1997 experiment 6a.

    ``x``: ``(B, L, 8)`` with ``L`` in ``[length, length + length // 10]`` (one ``L`` per batch);
    ``y``: ``(B, 1)`` int64 in ``[0, 4)``: ``2 * [first is Y] + [second is Y]``, predicted at the last step.
    """

    name = "temporal-order"
    min_length = 10

    @property
    def input_size(self) -> int:
        return len(SYMBOLS)

    @property
    def output_size(self) -> int:
        return len(CLASSES)

    @property
    def seq_len(self) -> int:
        """The longest sequence (lengths vary per batch from ``length``)."""
        return self.length + self.length // 10

    @property
    def windows(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The 1-based, inclusive ranges of t1 and t2 (t1 >= 2: position 1 is E)."""
        T = self.length
        return (max(2, T // 10), max(2, T // 5)), (T // 2, 3 * T // 5)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        batch_size = check_int("batch_size", batch_size, 1)
        B = batch_size
        L = int(torch.randint(self.length, self.seq_len + 1, (1,), generator=generator))
        codes = torch.randint(0, 4, (B, L), generator=generator)  # distractors a-d: never X or Y
        codes[:, 0] = SYMBOLS.index("E")
        codes[:, -1] = SYMBOLS.index("B")
        (lo1, hi1), (lo2, hi2) = self.windows
        t1 = torch.randint(lo1, hi1 + 1, (B,), generator=generator) - 1  # 0-based
        t2 = torch.randint(lo2, hi2 + 1, (B,), generator=generator) - 1
        first = torch.randint(0, 2, (B,), generator=generator)  # 0: X, 1: Y
        second = torch.randint(0, 2, (B,), generator=generator)
        rows = torch.arange(B)
        codes[rows, t1] = SYMBOLS.index("X") + first
        codes[rows, t2] = SYMBOLS.index("X") + second
        y = (2 * first + second).unsqueeze(1)  # Q, R, S, U
        return one_hot(codes, self.input_size), y  # (B, L, 8), (B, 1)
