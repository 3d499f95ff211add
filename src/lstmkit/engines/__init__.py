"""The engines: interchangeable ways of computing the same recurrent stack.

``reference`` is the equations (the oracle), ``native`` is PyTorch's own fused kernel, ``fused`` is lstmkit's
compiled time loop with a hand-written backward (C++, built on first use). Each implements the ``Engine``
protocol of ``base.py`` (``unsupported``, ``forward``, ``forward_with_gates``); which variants an engine runs
is declared with each variant (``lstmkit.variants``). ``auto`` takes the first
engine in :data:`AUTO_ORDER` that can run the configuration: the fastest first, as measured in
``docs/benchmarks.md``. In benchmark mode (:func:`benchmark`), ``auto`` instead times the able engines once per kind
of call and keeps the fastest.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor

from .base import Engine, LayerWeights, RNNSpec, States
from .fused import ENGINE as FUSED
from .native import ENGINE as NATIVE
from .reference import ENGINE as REFERENCE

ENGINES: dict[str, Engine] = {REFERENCE.name: REFERENCE, NATIVE.name: NATIVE, FUSED.name: FUSED}
# native (torch's oneDNN kernel) first: the fused engine matches it in training only at large sizes, and loses in
# inference (docs/benchmarks.md); fused runs what native cannot (recurrent dropout in training) far faster than
# the reference loop.
AUTO_ORDER: tuple[str, ...] = ("native", "fused", "reference")
ENGINE_CHOICES: tuple[str, ...] = ("auto", *ENGINES)


def select(requested: str, spec: RNNSpec, device: torch.device, dtype: torch.dtype) -> Engine:
    """The engine that runs ``spec``: the one requested, or for ``"auto"`` the fastest able to.

    Raises ``ValueError`` naming the engine and the reason when the requested engine cannot run it.
    """
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


# ---------------------------------------------------------------------------------------------------------
# Benchmark mode (as torch.backends.cudnn.benchmark): "auto" measures the engines once per kind of call
# ---------------------------------------------------------------------------------------------------------

_benchmark = {"on": False}
_measured: dict[tuple, str] = {}


def benchmark(on: bool | None = None) -> bool:
    """Turn benchmark mode on or off (with ``on``) and return whether it is on. Off by default.

    On, ``engine="auto"`` times every engine able to run a call the first time it meets that kind of call (the
    configuration, sequence length and batch size rounded up to a power of two, dtype, device, training, whether
    gradients are recorded) and keeps the fastest for every later call of that kind (measured: at T=1, B=1,
    H=256, two layers, one thread, the reference loop beats torch's kernel 2x, which wins at T=100). The choice
    depends on the machine and its load, so a run that must be bit-reproducible leaves it off or names its
    engine; ``module.engine`` says which engine the last call used, to record beside a checkpoint.
    """
    if on is not None:
        _benchmark["on"] = bool(on)
        _measured.clear()
    return _benchmark["on"]


def _bucket(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def measured(
    spec: RNNSpec, x: Tensor, hx: States, weights: Sequence[LayerWeights], lengths: Tensor | None, training: bool
) -> Engine:
    """The fastest engine for this kind of call, timed on this call's tensors on first meeting it, then cached.

    Timing runs leave no trace: the random number generator is restored, and weight gradients are not touched
    (the backward, when gradients are recorded, is taken with respect to a copy of the input only).
    """
    grad = torch.is_grad_enabled()
    key = (spec, _bucket(x.size(0)), _bucket(x.size(1)), x.dtype, x.device.type, training, grad, lengths is None)
    name = _measured.get(key)
    if name is not None:
        return ENGINES[name]
    able = [ENGINES[n] for n in AUTO_ORDER if n in ENGINES and ENGINES[n].unsupported(spec, x.device, x.dtype) is None]
    best, best_time = able[0], float("inf")
    with torch.random.fork_rng(devices=[]):
        for engine in able:
            elapsed = []
            for _ in range(3):  # the first run also builds or warms up; the best of the other two counts
                x_ = x.detach().requires_grad_(grad)
                start = time.perf_counter()
                out, _ = engine.forward(spec, x_, hx, weights, lengths, training)
                if grad:
                    torch.autograd.grad(out.sum(), x_)
                elapsed.append(time.perf_counter() - start)
            if min(elapsed[1:]) < best_time:
                best, best_time = engine, min(elapsed[1:])
    _measured[key] = best.name
    return best


__all__ = ["AUTO_ORDER", "ENGINES", "ENGINE_CHOICES", "Engine", "RNNSpec", "benchmark", "measured", "select"]
