"""Sequential digits: scikit-learn's 8x8 handwritten digits read one pixel per step, the small brother of
sequential and permuted MNIST (Le, Jaitly & Hinton 2015).

The data set ships with scikit-learn (``sklearn.datasets.load_digits``: 1,797 images, 10 classes, pixels 0-16;
nothing is downloaded). Each image is read row by row, one pixel per step (64 steps, one input scaled to
[0, 1]), and the class is read at the last step. ``digits-permuted`` reads the pixels in one fixed order drawn
from a seeded generator (seed :data:`PERMUTATION_SEED`), the same for every image and run: neighbouring pixels
end up far apart in time, so the model has to hold what it saw across the whole sequence.

A fixed, seeded split holds out :data:`TEST_FRACTION` of the images (359): training batches are drawn from the
other 1,438, and the metric is the error rate on the held-out images (test accuracy = 1 - error). Chance level
``1 - 1/10``. A run counts as "solved" by the lab's common rule (1% of chance: 99.1% test accuracy), which a
small model rarely reaches: for this task, read the accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from .base import ClassificationTask, check_int

PERMUTATION_SEED = 0
SPLIT_SEED = 0
TEST_FRACTION = 0.2
PIXELS = 64


def sklearn_available() -> bool:
    """Whether scikit-learn (which ships the data) can be imported."""
    try:
        import sklearn.datasets  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=1)
def _load() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x_train, y_train, x_test, y_test): ``(N, 64)`` float32 in [0, 1] and ``(N,)`` int64."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("the digits tasks read scikit-learn's bundled 8x8 digits: pip install scikit-learn "
                          "(or lstmkit[lab])") from None
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0  # (1797, 64)
    y = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(x.size(0), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = round(TEST_FRACTION * x.size(0))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def permutation() -> Tensor:
    """The fixed pixel order of ``digits-permuted``: ``(64,)`` int64."""
    return torch.randperm(PIXELS, generator=torch.Generator().manual_seed(PERMUTATION_SEED))


@dataclass(frozen=True)
class DigitsTask(ClassificationTask):
    """Classify an 8x8 digit read pixel by pixel. ``x``: ``(B, 64, 1)``; ``y``: ``(B, 1)`` int64 in ``[0, 10)``.

    ``length`` must be 64 (the pixels). :meth:`sample` draws training images with replacement;
    :meth:`validation_set` is the held-out split, whatever the size asked for.
    """

    length: int = PIXELS
    name = "digits"
    permuted = False

    def __post_init__(self) -> None:
        check_int("length", self.length, 1)
        if self.length != PIXELS:
            raise ValueError(f"length must be {PIXELS} for {self.name} (8 x 8 pixels, one per step), got {self.length}")

    @property
    def input_size(self) -> int:
        return 1

    @property
    def output_size(self) -> int:
        return 10

    @property
    def seq_len(self) -> int:
        return PIXELS

    def _sequences(self, x: Tensor) -> Tensor:
        if self.permuted:
            x = x[:, permutation()]
        return x.unsqueeze(-1)  # (N, 64, 1)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        batch_size = check_int("batch_size", batch_size, 1)
        x, y, _, _ = _load()
        index = torch.randint(0, x.size(0), (batch_size,), generator=generator)
        return self._sequences(x[index]), y[index].unsqueeze(1)

    def validation_set(self, size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        _, _, x, y = _load()
        return self._sequences(x), y.unsqueeze(1)


@dataclass(frozen=True)
class PermutedDigitsTask(DigitsTask):
    """:class:`DigitsTask` with the pixels in one fixed, seeded order (:func:`permutation`)."""

    name = "digits-permuted"
    permuted = True
