"""The engines: interchangeable ways of computing the same recurrent stack.

``reference`` is the equations (the oracle), ``native`` is PyTorch's own fused kernel, ``fused`` is lstmkit's
compiled time loop with a hand-written backward (C++, built on first use). Each implements the ``Engine``
protocol of ``base.py`` (``unsupported``, ``runs_reset``, ``forward``); which variants an engine runs is declared
with each variant (``lstmkit.variants``). Which engine runs a call is decided in one place, ``choice.py``
(:func:`choose`): a request by name, or ``auto`` from the facts of the call, every rule backed by a row of
``docs/benchmarks.md``; for small calls ``autotune`` measures.
"""

from __future__ import annotations

from . import autotune, choice
from .autotune import set_auto_tuning
from .base import Engine, RNNSpec
from .choice import AUTO_ORDER, CELL_CHOICES, ENGINE_CHOICES, ENGINES, Call, choose, choose_cell

__all__ = [
    "AUTO_ORDER", "CELL_CHOICES", "Call", "ENGINES", "ENGINE_CHOICES", "Engine", "RNNSpec", "autotune", "choice",
    "choose", "choose_cell", "set_auto_tuning",
]
