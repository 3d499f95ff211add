"""Which engine runs a call: ONE choice that sees the call (Keras' ``use_cudnn="auto"``).

The modules, the cells, the memory calculator and ``autotune`` all ask :func:`choose` (cells: :func:`choose_cell`).
A request by name gets that engine or a ``ValueError`` saying why it cannot run the call; ``"auto"`` is decided
from the facts of the call (:class:`Call`): the device, the dtype the engine computes in (autocast's when on), the
variants the engines see, T and B, whether ``lengths`` or ``reset`` is given, whether autograd records.

Every rule of ``auto`` below names the row of ``docs/benchmarks.md`` that backs it (the table "What
``engine="auto"`` runs" there lists them); a rule whose row changes is revisited with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import autotune
from .base import Engine, RNNSpec
from .fused import ENGINE as FUSED
from .native import ENGINE as NATIVE
from .reference import ENGINE as REFERENCE

ENGINES: dict[str, Engine] = {REFERENCE.name: REFERENCE, NATIVE.name: NATIVE, FUSED.name: FUSED}
ENGINE_CHOICES: tuple[str, ...] = ("auto", *ENGINES)
# The order a plain call (no variants, lengths or resets, not measured) takes: torch's oneDNN kernel first.
# docs/benchmarks.md, "Plain LSTM: speed relative to torch.nn.LSTM": the fused engine's inference forward is
# 0.39-1.06x torch.nn's and its training step 0.49-1.29x, so native (torch.nn's own kernel) is never slower there;
# fused runs what native cannot far faster than the reference loop ("Variants: a training step": 2.3-3.8x over the
# eager loop).
AUTO_ORDER: tuple[str, ...] = ("native", "fused", "reference")
CELL_CHOICES: tuple[str, ...] = ("auto", "reference", "native")


@dataclass(frozen=True)
class Call:
    """The facts of one call that decide its engine."""

    device: torch.device
    dtype: torch.dtype  # what the engine computes in: the input's, or autocast's low dtype under autocast
    steps: int = 0  # T; 0 when not known (the module's repr, a configuration check)
    batch: int = 0  # B; 0 when not known
    lengths: bool = False  # a padded batch with lengths= (or a PackedSequence)
    reset: bool = False  # streaming resets (reset=)
    grad: bool = False  # autograd records the call; False under no_grad/inference_mode
    training: bool = False  # the module's train(): dropout between layers, and the kernels' training mode
    exporting: bool = False  # torch.export / torch.onnx.export is tracing the call


Measure = Callable[[Engine], object]  # runs one call of an engine on the call's own shapes (autotune)


def unsupported(name: str, spec: RNNSpec, call: Call) -> str | None:
    """Why engine ``name`` cannot run ``spec`` for ``call``, or None when it can."""
    engine = ENGINES[name]
    reason = engine.unsupported(spec, call.device, call.dtype)
    if reason is None and call.reset and spec.bidirectional:
        reason = "reset needs a unidirectional stack"
    return reason


def _able(name: str, spec: RNNSpec, call: Call) -> bool:
    return unsupported(name, spec, call) is None


def choose(requested: str, spec: RNNSpec, call: Call, measure: Measure | None = None) -> Engine:
    """The engine that runs ``spec`` for ``call``: the one requested, or for ``"auto"`` the rules below.

    ``measure``, given, lets ``auto`` time the able engines on the call's shapes where ``autotune`` says a call of
    this size is measured (``autotune.should_tune``; the result is kept per shape class). Raises ``ValueError``
    naming the engine and the reason when the requested engine cannot run the call.
    """
    if requested != "auto":
        if requested not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(map(repr, ENGINE_CHOICES))}, got {requested!r}")
        reason = unsupported(requested, spec, call)
        if reason is not None:
            raise ValueError(f"engine={requested!r} cannot run this configuration: {reason}")
        if requested == "fused" and call.exporting:
            # An exported program runs without lstmkit's C++ op (and ONNX has no translation for it): the
            # reference equations, standard ops, are what export records.
            return REFERENCE
        return ENGINES[requested]
    return ENGINES[_auto(spec, call, measure)]


def _auto(spec: RNNSpec, call: Call, measure: Measure | None) -> str:
    fused_ok = not call.exporting  # export records standard ops (see choose)
    if spec.switched_on:
        # torch.nn has no variants. docs/benchmarks.md, "Variants" and "Variants: a training step": the fused
        # engine trains them at 0.60-1.40x torch.nn's plain step's time (0.62-1.28x on the AMD machine), 2.3-3.8x
        # faster than the reference (eager) loop.
        return "fused" if fused_ok and _able("fused", spec, call) else "reference"
    if (call.lengths or call.reset) and call.device.type == "cpu" and fused_ok and _able("fused", spec, call):
        # docs/benchmarks.md, "Variable lengths: lengths= against PackedSequence": at T=500 B=32 H=256 the fused
        # loop skips finished rows and trains in 0.256 s, where torch's packed kernel (what native runs) takes
        # 7.9 s and its padded step 0.311 s. With reset= it resets rows inside its loop, where any other engine
        # runs the sequence in pieces cut at every reset ("The default engine against torch.nn", reset= row).
        return "fused"
    if measure is not None and not (call.lengths or call.reset) and autotune.should_tune(
            call.steps, call.batch, call.grad):
        # docs/benchmarks.md, "Small calls: one step per call": at T=1 the engines' per-call costs differ by 2-3x
        # and which wins depends on the machine, so auto times them once per shape class (autotune.py).
        able = [ENGINES[n] for n in AUTO_ORDER if (n != "fused" or fused_ok) and _able(n, spec, call)]
        if len(able) > 1:
            key = (spec, call.training, call.grad, call.device, call.dtype, torch.get_num_threads(),
                   autotune.bucket(call.steps), autotune.bucket(call.batch))
            return autotune.choose(key, able, measure, call.device).name
    for name in AUTO_ORDER:
        # Native first (see AUTO_ORDER). Under autocast/bfloat16 torch's kernel runs where oneDNN has the
        # primitive (docs/dropin.md, note 12: it raises on CPUs without AVX-512, and native's probe reports that);
        # there the reference equations run (fused is float32/float64 only).
        if (name != "fused" or fused_ok) and _able(name, spec, call):
            return name
    return "reference"


def choose_cell(requested: str, spec: RNNSpec, device: torch.device, dtype: torch.dtype) -> str:
    """The engine of one cell step (``LSTMCell``, ``GRUCell``, ``RNNCell``): ``"native"`` (torch's cell op,
    what torch.nn's cells call) or ``"reference"`` (the equations, which alone run the variants).

    ``auto`` takes native whenever it can: at one step torch's cell op is the same two products and pointwise
    pass as the reference's, in one C++ call (docs/benchmarks.md, "Small calls": one step on the reference engine
    costs 1.1-1.4x the bare step because of its per-op calls). Raises ``ValueError`` for a request that cannot run.
    """
    if requested not in CELL_CHOICES:
        raise ValueError(f"engine must be one of {', '.join(map(repr, CELL_CHOICES))} for a cell, got {requested!r}")
    if requested == "reference":
        return "reference"
    # torch's cell ops run in every dtype (a few pointwise ops): only the variants are out of their reach.
    reason = NATIVE.unsupported(spec, device, torch.float32)
    if requested == "native" and reason is not None:
        raise ValueError(f"engine='native' cannot run this configuration: {reason}")
    return "reference" if reason is not None else "native"


__all__ = ["AUTO_ORDER", "CELL_CHOICES", "Call", "ENGINES", "ENGINE_CHOICES", "choose", "choose_cell", "unsupported"]
