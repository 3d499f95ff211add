"""What a module's calls share, kept between calls: the spec, the weights by layer, the engine per kind of call."""

from __future__ import annotations

import dataclasses
import operator
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .. import engines
from ..engines.base import LayerWeights, RNNSpec, States
from ..engines.reference import (
    lstm_one_step,
    one_step_applies,
)

# ---------------------------------------------------------------------------------------------------------
# What a module's calls share, kept between calls (see _RNNBase._prepared)
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class _Prepared:
    """What a module's calls share while its configuration and its parameters stay the same."""

    key: tuple[Any, ...]  # _config_key(): the configuration it was made for
    params: tuple[Tensor, ...]  # the tensors the parameter names gave (identity tells a substitution)
    dtype: torch.dtype
    device: torch.device
    spec: RNNSpec
    weights: list[LayerWeights]  # params by layer and direction, as the engines take them
    rows: int  # num_layers * num_directions: the states' first dimension
    state_sizes: tuple[tuple[str, int], ...]  # each state's name and last dimension
    state_names: tuple[str, ...]
    masks: bool  # a variant draws random masks (variants.draw_masks)
    one_step: bool  # reference.lstm_one_step computes a one-step call of this spec
    fetch: Callable[[nn.Module], tuple[Tensor, ...]]  # the parameters by name, in params' order
    engines: dict[tuple[Any, ...], engines.Engine]  # the choice per kind of call (_RNNBase._choose)
    last: str | None = None  # the engine of the latest call

    @staticmethod
    def make(module: Any, key: tuple[Any, ...], params: tuple[Tensor, ...]) -> _Prepared:
        """``module`` is the _RNNBase asking (typed Any: modules/base.py imports this file, not the reverse)."""
        spec = module._spec()
        it = iter(params)
        weights = [{name.rsplit("_l", 1)[0]: next(it) for name in names} for names in module._all_weights]
        z_c, z_h = spec.variants.zoneout
        return _Prepared(
            key=key, params=params, dtype=params[0].dtype, device=params[0].device, spec=spec, weights=weights,
            rows=spec.num_layers * spec.num_directions, state_sizes=tuple(module._state_sizes()),
            state_names=tuple(name for name, _ in module._state_sizes()),
            masks=bool(spec.variants.recurrent_dropout > 0 or z_c > 0 or z_h > 0),
            one_step=one_step_applies(spec, 1), engines={},
            fetch=operator.attrgetter(*(name for names in module._all_weights for name in names)),
        )


# Kept beside the modules, not on them: a module's own attributes stay plain values (torch.load(weights_only=True)),
# and a copy (deepcopy, pickling) makes its own.
_PREPARED: weakref.WeakKeyDictionary[nn.Module, _Prepared] = weakref.WeakKeyDictionary()


@dataclasses.dataclass(eq=False)
class _Call:
    """One call, checked and in the engines' form: time-major ``x`` (T, B, I), states (rows, B, size)."""

    prep: _Prepared
    x: Tensor
    states: States
    lengths: Tensor | None
    reset: Tensor | None
    unbatched: bool
    engine: engines.Engine
    traced: bool


def _compute(engine: engines.Engine, prep: _Prepared, x: Tensor, states: States, weights: list[LayerWeights],
             lengths: Tensor | None, training: bool) -> tuple[Tensor, States]:
    """The engine's forward; one step of a plain LSTM on the reference engine, on the CPU, takes its one-step form
    (bit for bit the same; on the CPU only: there torch's cell op is these very ops, CUDA's fuses its pointwise
    part into one kernel)."""
    if prep.one_step and lengths is None and x.size(0) == 1 and engine.name == "reference" and x.is_cpu:
        return lstm_one_step(prep.spec, x, states, weights, training)
    return engine.forward(prep.spec, x, states, weights, lengths, training)
