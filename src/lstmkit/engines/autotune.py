"""``engine="auto"`` by measurement: the fastest engine for a shape class, timed once and remembered (cuDNN's
benchmark mode).

By default only calls with ``T * B <= SMALL_CALL`` that record no gradient are tuned (every other call takes the
fixed choice of ``choice.py``, so no training step depends on a timing); ``set_auto_tuning`` or
``LSTMKIT_AUTOTUNE=0`` change that. A measurement runs on detached clones, never calls backward, restores the
random generators and never builds the fused kernel. Pin ``module.engine`` for bit-reproducible runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import fused
from .base import Engine

SMALL_CALL = 64  # the default policy tunes calls with seq_len * batch at or below this
_setting: list[bool | None] = [None]  # None: the default policy; True: always; False: never
_CACHE: dict[tuple[Any, ...], str] = {}
WARMUP, TIMED = 1, 5  # rounds; a round calls each candidate once
SETTLED, CLEARLY_SLOWER = 2, 1.5  # after 2 timed rounds, an engine 1.5x the best is out


def set_auto_tuning(on: bool | None) -> None:
    """``True``: ``engine="auto"`` measures every shape class; ``False``: never (the fixed ``AUTO_ORDER``);
    ``None``: the default (tune small calls, see the module's docstring). Overrides ``LSTMKIT_AUTOTUNE``."""
    if on is not None and not isinstance(on, bool):
        raise TypeError(f"set_auto_tuning takes True, False or None, got {type(on).__name__} {on!r}")
    _setting[0] = on


def _from_environment() -> bool | None:
    env = os.environ.get("LSTMKIT_AUTOTUNE", "").strip().lower()
    if env in ("0", "false", "off", "no"):
        return False
    if env in ("1", "true", "on", "yes"):
        return True
    return None


_ENVIRONMENT = _from_environment()  # read once, when lstmkit is imported (a call should not pay for os.environ)


def auto_tuning() -> bool | None:
    """The policy in force: ``set_auto_tuning``'s, else ``LSTMKIT_AUTOTUNE`` (``0``/``1``, read at import), else
    None (the default)."""
    return _setting[0] if _setting[0] is not None else _ENVIRONMENT


def should_tune(steps: int, batch: int, grad: bool) -> bool:
    """Whether ``auto`` measures for a call of ``steps`` time steps and ``batch`` rows (``grad``: autograd records
    it) under the policy in force.

    The default policy measures small calls that record no gradient (streaming, generation): a training step
    whose engine followed a timing would compute other last bits on a busier machine, and a training run, resumed
    or repeated, must give the same weights (measured: tiny training runs diverged between two runs under load).
    """
    policy = auto_tuning()
    if policy is None:
        return steps * batch <= SMALL_CALL and not grad
    return policy


def bucket(n: int) -> int:
    """The size class of ``n``: 1 -> 1, 2-3 -> 2, 4-7 -> 3, ... (one measurement serves a whole class)."""
    return n.bit_length()


def cache() -> dict[tuple[Any, ...], str]:
    """A copy of the choices made so far in this process: shape-class key -> engine name."""
    return dict(_CACHE)


def clear_cache() -> None:
    """Forget every choice (the next call of each shape class measures again)."""
    _CACHE.clear()


def candidates(able: Sequence[Engine]) -> list[Engine]:
    """The engines worth timing among those able to run the call: ``fused`` only once its kernel is loaded."""
    return [e for e in able if e.name != "fused" or fused._state["module"] is not None]


def choose(
    key: tuple[Any, ...], able: Sequence[Engine], run: Callable[[Engine], object], device: torch.device | None = None
) -> Engine:
    """The fastest of ``able`` for the shape class ``key``: remembered, or measured now with ``run(engine)``.

    ``run`` makes one call of the engine on the call's shapes (on clones, the caller's tensors untouched); an
    engine whose call raises is not chosen. The random number generators are restored afterwards. On a CUDA
    ``device`` each timed call is synchronised (kernels run asynchronously: the clock would see only the launch).
    """
    pool = candidates(able) or list(able)
    key = (*key, tuple(e.name for e in pool))
    name = _CACHE.get(key)
    if name is not None:
        return next(e for e in pool if e.name == name)
    if len(pool) == 1:
        _CACHE[key] = pool[0].name
        return pool[0]
    with _rng_kept():
        sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else None
        best = {e.name: t for e, t in zip(pool, _time(run, pool, sync), strict=True)}
    winner = min(pool, key=lambda e: best[e.name])  # ties go to the earlier in AUTO_ORDER
    _CACHE[key] = winner.name
    return winner


def _time(run: Callable[[Engine], object], pool: Sequence[Engine], sync: Callable[[], None] | None = None
          ) -> list[float]:
    """Each engine's least time over up to ``TIMED`` rounds, the engines taking turns (a burst of load elsewhere
    then slows all of them, not one). An engine at more than ``CLEARLY_SLOWER`` times the best after
    ``SETTLED`` timed rounds stops being called (a slow candidate costs the most); one whose call raises gets
    infinity."""
    seconds = [float("inf")] * len(pool)
    out = [False] * len(pool)
    for round_ in range(WARMUP + TIMED):
        for k, engine in enumerate(pool):
            if out[k]:
                continue
            if sync is not None:
                sync()
            start = time.perf_counter()
            try:
                run(engine)
                if sync is not None:
                    sync()
            except Exception:  # an engine that fails here is not the fastest; the call itself will say why
                out[k], seconds[k] = True, float("inf")
                continue
            if round_ >= WARMUP:
                seconds[k] = min(seconds[k], time.perf_counter() - start)
        if round_ + 1 >= WARMUP + SETTLED:
            best = min(seconds)
            out = [o or t > CLEARLY_SLOWER * best for o, t in zip(out, seconds, strict=True)]
    return seconds


class _rng_kept:
    """Saves torch's CPU generator (and every CUDA device's, when CUDA is up) and restores them on exit."""

    def __enter__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    def __exit__(self, *exc: object) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


__all__ = [
    "SMALL_CALL", "auto_tuning", "bucket", "cache", "candidates", "choose", "clear_cache", "set_auto_tuning",
    "should_tune",
]
