"""A "France ... French" task: the deciding symbol comes first, the question about it comes last.

"I grew up in France ... [many words] ... I speak fluent ___": the answer depends on one word at the start.
Here the first step shows one of ``classes`` key symbols (the country), then come ``length`` filler symbols
(the words in between), then a query symbol. At the query the model has to name the key it saw
``length + 1`` steps before (the language). This is the temporal-order idea of Hochreiter & Schmidhuber's
experiment 6 reduced to its core: one relevant symbol, as far from the question as the sequence allows.

The fillers are drawn uniformly from all ``classes + distractors`` symbols, keys included, as "France" can
occur again later in a text: a model cannot answer by noting which key occurred anywhere, it has to hold the
first one and ignore the later ones.

Inputs are one-hot over ``classes + distractors + 1`` channels: the keys, the other fillers, the query.

Chance level: the keys are uniform and nothing after the first step depends on the first one, so a model that forgot
the first step is wrong with probability ``1 - 1/classes`` (3/4 with the default 4 classes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .base import ClassificationTask, check_int, one_hot


@dataclass(frozen=True)
class OrderTask(ClassificationTask):
    """Name the key shown at the first step after ``length`` distractors.

    ``x``: ``(B, length + 2, classes + distractors + 1)``; ``y``: ``(B, 1)`` int64 in ``[0, classes)``,
    predicted at the last (query) step. The metric is the error rate.
    """

    classes: int = 4
    distractors: int = 8
    key_position: int = 0  # fillers before the key (ablation: is it the first input that a tanh RNN latches?)
    keys_in_fillers: bool = True  # ablation: False draws the fillers from the distractors only

    name = "order"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("classes", self.classes, 2)
        check_int("distractors", self.distractors, 1)
        check_int("key_position", self.key_position, 0)
        if self.key_position > self.length:
            raise ValueError(f"key_position must be at most length ({self.length}), got {self.key_position}")
        if not isinstance(self.keys_in_fillers, bool):
            raise TypeError(f"keys_in_fillers must be True or False, got {self.keys_in_fillers!r}")

    @property
    def input_size(self) -> int:
        return self.classes + self.distractors + 1

    @property
    def output_size(self) -> int:
        return self.classes

    @property
    def seq_len(self) -> int:
        return self.length + 2

    @property
    def query(self) -> int:
        """The channel of the query symbol."""
        return self.classes + self.distractors

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        batch_size = check_int("batch_size", batch_size, 1)
        keys = torch.randint(0, self.classes, (batch_size,), generator=generator)
        low = 0 if self.keys_in_fillers else self.classes
        fillers = torch.randint(low, self.classes + self.distractors, (batch_size, self.length), generator=generator)
        query = torch.full((batch_size, 1), self.query, dtype=torch.int64)
        k = self.key_position  # the key has k fillers before it and length - k after it
        codes = torch.cat([fillers[:, :k], keys.unsqueeze(1), fillers[:, k:], query], dim=1)  # (B, length + 2)
        return one_hot(codes, self.input_size), keys.unsqueeze(1)  # (B, length + 2, C + D + 1), (B, 1)
