"""The engines: interchangeable ways of computing the same recurrent stack.

``reference`` is the equations (the oracle), ``native`` is PyTorch's own fused kernel, ``fused`` is lstmkit's
compiled time loop with a hand-written backward (C++, built on first use). Each implements the ``Engine``
protocol of ``base.py`` (``unsupported``, ``forward``, ``forward_with_gates``); which variants an engine runs
is declared with each variant (``lstmkit.variants``). ``auto`` takes the first
engine in :data:`AUTO_ORDER` that can run the configuration: the fastest first, as measured in
``docs/benchmarks.md``; or, for the calls ``autotune`` measures (small ones by default), the one it timed fastest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from . import autotune
from .autotune import set_auto_tuning
from .base import Engine, RNNSpec
from .fused import ENGINE as FUSED
from .native import ENGINE as NATIVE
from .reference import ENGINE as REFERENCE

ENGINES: dict[str, Engine] = {REFERENCE.name: REFERENCE, NATIVE.name: NATIVE, FUSED.name: FUSED}
# native (torch's oneDNN kernel) first: the fused engine matches it in training only at large sizes, and loses in
# inference (docs/benchmarks.md); fused runs what native cannot (recurrent dropout in training) far faster than
# the reference loop.
AUTO_ORDER: tuple[str, ...] = ("native", "fused", "reference")
ENGINE_CHOICES: tuple[str, ...] = ("auto", *ENGINES)


def select(
    requested: str, spec: RNNSpec, device: torch.device, dtype: torch.dtype,
    tune: Callable[[Sequence[Engine]], Engine] | None = None,
) -> Engine:
    """The engine that runs ``spec``: the one requested, or for ``"auto"`` the fastest able to.

    ``tune``, given, picks among the engines able to run ``spec`` (``autotune.choose`` on the call's shapes).
    Raises ``ValueError`` naming the engine and the reason when the requested engine cannot run it.
    """
    if requested == "auto" and tune is not None:
        able = [ENGINES[name] for name in AUTO_ORDER if ENGINES[name].unsupported(spec, device, dtype) is None]
        return tune(able) if len(able) > 1 else (able[0] if able else REFERENCE)
    if requested == "auto":
        for name in AUTO_ORDER:
            if ENGINES[name].unsupported(spec, device, dtype) is None:
                return ENGINES[name]
        return REFERENCE
    if requested not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINE_CHOICES))}, got {requested!r}")
    engine = ENGINES[requested]
    reason = engine.unsupported(spec, device, dtype)
    if reason is not None:
        raise ValueError(f"engine={requested!r} cannot run this configuration: {reason}")
    return engine


__all__ = ["AUTO_ORDER", "autotune", "ENGINES", "ENGINE_CHOICES", "Engine", "RNNSpec", "select", "set_auto_tuning"]
