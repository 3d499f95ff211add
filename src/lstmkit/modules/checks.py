"""Argument checks shared by the sequence modules and the cells: each names the argument and what was expected."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

from torch import Tensor

from .. import engines
from ..variants import (
    Variants,
)

# ---------------------------------------------------------------------------------------------------------
# Argument checks shared by every module
# ---------------------------------------------------------------------------------------------------------


def _check_size(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def _check_engine(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"engine must be a string, one of {engines.ENGINE_CHOICES}, got {type(value).__name__}")
    if value not in engines.ENGINE_CHOICES:
        raise ValueError(f"engine must be one of {', '.join(map(repr, engines.ENGINE_CHOICES))}, got {value!r}")
    return value


def _get_variants(self: Any) -> Variants:
    return Variants(**self._variant_args)


def _set_variants(self: Any, value: Variants) -> None:
    self._variant_args = dataclasses.asdict(value)


# A module keeps its variants as a dict of plain values, not as the Variants object, so that a whole saved
# module loads with torch.load(weights_only=True) (which refuses unknown classes); ``module.variants`` rebuilds it.
_variants_property = property(_get_variants, _set_variants, doc="The LSTM variants switched on (variants.py).")


def _describe(t: Tensor) -> str:
    return f"{t.dim()}-D tensor of shape {tuple(t.shape)}"
