"""``_RNNBase``: the arguments, parameters, validation and the one forward path shared by LSTM, GRU and RNN."""

from __future__ import annotations

import math
import numbers
import operator
import warnings
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .. import engines
from ..engines.autotune import bucket, should_tune
from ..engines.base import LayerWeights, RNNSpec, States, run_with_resets
from ..engines.gates import GateRecord
from ..engines.reference import record_gates
from ..errors import InputError
from ..init import init_gate_biases
from ..variants import (
    Variants,
    draw_masks,
    drop_recurrent_weights,
    extra_parameters,
    init_biases,
    init_extra_parameter,
    initial_state_value,
)
from .checks import _check_bool, _check_engine, _check_size, _describe, _variants_property
from .prepared import _PREPARED, _Call, _compute, _Prepared

# ---------------------------------------------------------------------------------------------------------
# Whole sequences: LSTM, GRU, RNN
# ---------------------------------------------------------------------------------------------------------


class _RNNBase(nn.Module):
    """Parameters, validation and dispatch shared by :class:`LSTM`, :class:`GRU` and :class:`RNN`."""

    mode: str  # "LSTM", "GRU", "RNN_TANH", "RNN_RELU"
    variants = _variants_property
    return_gates: bool = False  # LSTM only: forward also returns a GateRecord
    init: str = "torch"  # LSTM only: the gate-bias initialisation (lstmkit.init)
    chrono_max: float | None = None  # LSTM only: T_max of init="chrono"

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        engine: str = "auto",
        device: Any = None,
        dtype: Any = None,
        variants: Variants | None = None,
    ) -> None:
        super().__init__()
        self.mode = mode
        self.variants = variants if variants is not None else Variants()  # LSTM only; see variants.py
        self.input_size = _check_size("input_size", input_size)
        self.hidden_size = _check_size("hidden_size", hidden_size)
        self.num_layers = _check_size("num_layers", num_layers)
        self.bias = _check_bool("bias", bias)
        self.batch_first = _check_bool("batch_first", batch_first)
        self.bidirectional = _check_bool("bidirectional", bidirectional)
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Number):
            raise TypeError(f"dropout must be a number in [0, 1], got {type(dropout).__name__} {dropout!r}")
        if not 0 <= float(dropout) <= 1:  # type: ignore[arg-type]
            raise ValueError(f"dropout must be a number in [0, 1] (a probability), got {dropout}")
        self.dropout = float(dropout)  # type: ignore[arg-type]
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(
                f"dropout={self.dropout} has no effect with num_layers=1: it is applied between layers, "
                "to the outputs of every layer but the last",
                stacklevel=3,
            )
        self.proj_size = _check_size("proj_size", proj_size, minimum=0)
        if self.proj_size and mode != "LSTM":
            raise ValueError("proj_size is an LSTM argument; GRU and RNN have no projection")
        if self.proj_size >= self.hidden_size:
            raise ValueError(
                f"proj_size must be smaller than hidden_size (it projects h_t down), "
                f"got proj_size={self.proj_size} and hidden_size={self.hidden_size}"
            )
        self._engine_request = _check_engine(engine)

        factory = {"device": device, "dtype": dtype}
        gate_size = self._spec().gates * self.hidden_size
        real_hidden = self.proj_size or self.hidden_size
        D = 2 if self.bidirectional else 1
        extra = extra_parameters(self.variants, self.hidden_size)
        self._flat_weights_names: list[str] = []  # torch.nn's parameters only
        self._all_weights: list[list[str]] = []  # torch.nn's, then each variant's, per layer and direction
        for layer in range(self.num_layers):
            for direction in range(D):
                layer_input = self.input_size if layer == 0 else real_hidden * D
                suffix = "_reverse" if direction == 1 else ""
                shapes: list[tuple[str, tuple[int, ...]]] = [
                    ("weight_ih", (gate_size, layer_input)),
                    ("weight_hh", (gate_size, real_hidden)),
                ]
                if self.bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if self.proj_size:
                    shapes += [("weight_hr", (self.proj_size, self.hidden_size))]
                # The variants' parameters come after torch.nn's, so its state_dict maps 1:1 onto the plain ones.
                shapes += [(e.name, e.shape) for e in extra]
                names = []
                for base, shape in shapes:
                    name = f"{base}_l{layer}{suffix}"
                    self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
                    names.append(name)
                self._flat_weights_names.extend(names[: len(names) - len(extra)])
                self._all_weights.append(names)
        # Validates a named engine against the configuration now, so a bad choice fails at construction.
        if self._engine_request != "auto":
            engines.choose(self._engine_request, self._spec(), self._static_call())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn's initialisation: every parameter uniform in [-1/sqrt(H), 1/sqrt(H)], in the same order.

        The variants' parameters come after all of torch.nn's (so one seed gives torch.nn's plain weights), then
        the forget-gate bias when ``forget_bias`` is set (see variants.py).
        """
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for name in self._flat_weights_names:
            nn.init.uniform_(getattr(self, name), -stdv, stdv)
        extra = extra_parameters(self.variants, self.hidden_size)
        for names in self._all_weights:
            for e, name in zip(extra, names[len(names) - len(extra):], strict=True):
                init_extra_parameter(getattr(self, name), e.init, self.hidden_size)
            if self.bias:
                init_gate_biases(getattr(self, names[2]), getattr(self, names[3]), self.hidden_size, self.init,
                                 self.chrono_max, self.variants.coupled_gates)
                init_biases(self.variants, getattr(self, names[2]), getattr(self, names[3]), self.hidden_size)

    # -- what the engines see --------------------------------------------------------------------------
    def _spec(self) -> RNNSpec:
        return RNNSpec(
            mode=self.mode,
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            bias=self.bias,
            bidirectional=self.bidirectional,
            proj_size=self.proj_size,
            dropout=self.dropout,
            # A training-only variant (recurrent dropout) is off in eval(), so such a module runs on any engine.
            variants=self.variants.for_engines(self.training),
        )

    def _layer_weights(self) -> list[LayerWeights]:
        # getattr, not a cached list: torch.func.functional_call and parametrizations substitute attributes.
        return [
            {name.rsplit("_l", 1)[0]: getattr(self, name) for name in names} for names in self._all_weights
        ]

    def _config_key(self) -> tuple[Any, ...]:
        """What the prepared state depends on besides the parameters: the configuration as it is now."""
        return (
            self.training, self._engine_request, self.mode, self.input_size, self.hidden_size, self.num_layers,
            self.bias, self.bidirectional, self.proj_size, self.dropout, self._variant_args,
        )

    def _prepared(self, traced: bool) -> _Prepared:
        """What every call of this module shares while its configuration and parameters stay the same: the spec,
        the weights by layer, the engine chosen per kind of call. Kept beside the module (``_PREPARED``) and
        checked against it at each call: the parameters are fetched with getattr every time (functional_call and
        parametrizations substitute them) and a new tensor, dtype or device, or another configuration, makes it
        anew. Under torch.compile/export and torch.func transforms nothing is kept: it is made for the call."""
        prep = None if traced else _PREPARED.get(self)
        if prep is None:
            params = tuple(getattr(self, name) for names in self._all_weights for name in names)
            if traced:
                return _Prepared.make(self, self._config_key(), params)
        else:
            params = prep.fetch(self)  # one C call over the names (operator.attrgetter)
        ref = params[0]
        if prep is None or prep.key != self._config_key() or prep.dtype != ref.dtype or prep.device != ref.device \
                or not all(map(operator.is_, params, prep.params)):
            last = prep.last if prep is not None else None
            prep = _PREPARED[self] = _Prepared.make(self, self._config_key(), params)
            prep.last = last
        return prep

    def _choose(self, prep: _Prepared, x: Tensor, lengths: bool, reset: bool, measure: Any = None
                ) -> engines.Engine:
        """engines.choose for this call (choice.py): the one choice, remembered per kind of call."""
        steps, batch, grad = x.size(0), x.size(1), torch.is_grad_enabled()
        exporting = torch.compiler.is_exporting()
        tuned = measure is not None and self._engine_request == "auto" and not (lengths or reset) and \
            should_tune(steps, batch, grad)
        # The input's dtype, not the weights': under autocast the LSTM computes in the autocast dtype.
        facts: tuple[Any, ...] = (x.device, x.dtype, lengths, reset, grad, exporting)
        if tuned:  # the shape class autotune measures for (its cache is process-wide; this one per module)
            facts += (torch.get_num_threads(), bucket(steps), bucket(batch))
        engine = prep.engines.get(facts)
        if engine is None:
            call = engines.Call(x.device, x.dtype, steps, batch, lengths, reset, grad, self.training, exporting)
            engine = engines.choose(self._engine_request, prep.spec, call, measure if tuned else None)
            if not exporting:
                prep.engines[facts] = engine
        return engine

    def _static_call(self, dtype: torch.dtype | None = None) -> engines.Call:
        """The call the module's configuration alone describes (no input yet): on its weights' device, in their
        dtype (autocast's for the LSTM when on), recording a gradient when autograd is on."""
        ref = cast(Tensor, self.weight_ih_l0)
        if dtype is None:
            dtype = ref.dtype
            if self.mode == "LSTM" and torch.is_autocast_enabled(ref.device.type):
                dtype = torch.get_autocast_dtype(ref.device.type)  # the LSTM computes in autocast's dtype (_run)
        return engines.Call(ref.device, dtype, grad=torch.is_grad_enabled(), training=self.training)

    @property
    def engine(self) -> str:
        """The name of the engine that runs this module as it is now (``auto`` resolved): the one its latest call
        ran on (:attr:`last_engine`) while the configuration is the same, else the choice for a plain call of its
        configuration. Set it to pin an engine (``"auto"`` to choose again); a name that cannot run raises
        ValueError and changes nothing."""
        prep, ref = _PREPARED.get(self), cast(Tensor, self.weight_ih_l0)
        if prep is not None and prep.last is not None and prep.key == self._config_key() and \
                prep.params[0] is ref and prep.dtype == ref.dtype:
            return prep.last
        return engines.choose(self._engine_request, self._spec(), self._static_call()).name

    @engine.setter
    def engine(self, value: str) -> None:
        value = _check_engine(value)
        if value != "auto":
            engines.choose(value, self._spec(), self._static_call())
        self._engine_request = value

    @property
    def last_engine(self) -> str | None:
        """The name of the engine that ran this module's latest call (None before the first): for a call with
        ``lengths`` or ``reset``, or one ``auto`` measured, the one that call took; ``"reference"`` for a call
        that recorded the gates. Calls traced by torch.compile/export are not counted."""
        prep = _PREPARED.get(self)
        return prep.last if prep is not None else None

    def resolved_engine(self, input: Tensor | PackedSequence, hx: Any = None, lengths: Any = None,
                        reset: Any = None) -> str:
        """The name of the engine a call ``self(input, hx, lengths=lengths, reset=reset)`` runs on, ``auto``
        resolved (measuring now when ``auto`` measures this shape and has not met its class yet). Nothing is
        computed. For a record of the choice, as in a checkpoint: pin it later with ``module.engine = name`` to
        compute the same bits."""
        return self._prepare_call(input, hx, self.return_gates, lengths, reset).engine.name

    # -- torch.nn.LSTM's surface -----------------------------------------------------------------------
    @property
    def all_weights(self) -> list[list[Tensor]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """A no-op: lstmkit's engines take the parameters as they are (cuDNN's flat buffer is torch.nn's)."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        if self.variants.describe():
            s += f", {self.variants.describe()}"
        if self.init != "torch":
            s += f", init={self.init!r}" + (f", chrono_max={self.chrono_max}" if self.chrono_max is not None else "")
        engine = self.engine
        s += f", engine={engine!r}" if engine == self._engine_request else f", engine='auto'->{engine!r}"
        return s

    # -- forward -----------------------------------------------------------------------------------------
    def _state_sizes(self) -> list[tuple[str, int]]:
        return [("h_0", self.proj_size or self.hidden_size)]

    def _check_input(self, x: Tensor, packed: bool, ref: Tensor) -> None:
        if not packed and x.dim() not in (2, 3):
            layout = "(batch, seq_len, input_size)" if self.batch_first else "(seq_len, batch, input_size)"
            raise InputError(
                f"input must be a 3-D tensor {layout} or a 2-D unbatched tensor (seq_len, input_size), "
                f"got a {_describe(x)}"
            )
        if x.size(-1) != self.input_size:
            raise InputError(
                f"input.size(-1) must be equal to input_size: expected {self.input_size}, got {x.size(-1)} "
                f"(input is a {_describe(x)})"
            )
        if not packed and x.size(1 if self.batch_first and x.dim() == 3 else 0) == 0:
            raise InputError(f"input must have at least one time step (seq_len > 0), got a {_describe(x)}")
        if not x.is_floating_point():
            raise InputError(f"input must be a floating-point tensor, got dtype {x.dtype}")
        if x.dtype != ref.dtype and not torch.is_autocast_enabled(x.device.type):
            raise InputError(
                f"input must have the dtype of the module's weights, {ref.dtype}, got {x.dtype} "
                f"(convert one of them, e.g. module.to({x.dtype}) or input.to({ref.dtype}))"
            )
        if x.device != ref.device:
            raise InputError(f"input is on {x.device} but the module's weights are on {ref.device}")

    def _check_state(self, name: str, s: Any, size: int, batch: int, unbatched: bool, x: Tensor) -> None:
        if not isinstance(s, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(s).__name__}")
        rows = self.num_layers * (2 if self.bidirectional else 1)
        expected = (rows, size) if unbatched else (rows, batch, size)
        if tuple(s.shape) != expected:
            what = "(num_layers * num_directions, hidden)" if unbatched else (
                "(num_layers * num_directions, batch, hidden)"
            )
            raise InputError(
                f"{name} must have shape {expected} {what}, got {tuple(s.shape)}"
                + (" (an unbatched input needs a 2-D state)" if unbatched and s.dim() == 3 else "")
                + (" (a batched input needs a 3-D state)" if not unbatched and s.dim() == 2 else "")
            )
        if s.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
            raise InputError(f"{name} must have dtype {x.dtype} like the input, got {s.dtype}")
        if s.device != x.device:
            raise InputError(f"{name} is on {s.device} but the input is on {x.device}")

    def _unpack_hx(self, hx: Any, names: tuple[str, ...]) -> tuple[Tensor, ...] | None:
        """``hx`` as a tuple of the states ``names`` (``_state_sizes``' names), or None."""
        if hx is None:
            return None
        if not isinstance(hx, Tensor):
            raise TypeError(f"{type(self).__name__} takes hx as a tensor h_0, got {type(hx).__name__}")
        return (hx,)

    def _pack_hx(self, states: States) -> Any:
        return states[0]

    def forward(
        self, input: Tensor | PackedSequence, hx: Any = None, *, lengths: Any = None, reset: Tensor | None = None
    ) -> tuple[Any, ...]:
        """Run the stack over a sequence; shapes as in torch.nn (``(output, h_n)`` or ``(output, (h_n, c_n))``).

        input: ``(T, B, input_size)`` (``(B, T, input_size)`` with batch_first), ``(T, input_size)`` unbatched,
        or a ``PackedSequence``. output: ``(T, B, D * output_size)`` in the same layout, or a PackedSequence.
        An LSTM built with ``return_gates=True`` returns ``(output, (h_n, c_n), gates)``, see
        :meth:`forward_with_gates`.

        lengths: ``(B,)`` integers in ``[1, T]``, any order, for a padded batch: what a ``PackedSequence``
        (``enforce_sorted=False``) of the same data computes, without packing. Outputs past a row's length are 0,
        the final states are each row's at its last step, and the backward direction starts there.
        reset: ``(T, B)`` bool (``(B, T)`` with batch_first, ``(T,)`` unbatched): where true, that row's states are
        set to their initial value (what ``hx=None`` starts from) before that step, for streaming across calls
        (TorchRL's ``is_init``). Unidirectional stacks only; differentiable.
        """
        output, final, gates = self._run(input, hx, self.return_gates, lengths, reset)
        return (output, final) if gates is None else (output, final, gates)

    def forward_with_gates(
        self, input: Tensor | PackedSequence, hx: Any = None, *, lengths: Any = None
    ) -> tuple[Any, Any, GateRecord]:
        """``forward`` that also returns every gate and state of every step: ``(output, (h_n, c_n), gates)``.

        ``gates`` is a :class:`lstmkit.inspect.GateRecord` (tensors ``(num_layers, num_directions, T, B,
        size)``, time-major whatever ``batch_first`` says), recorded by the reference equations on the module's
        weights (``reference.record_gates``), which then give the output and states too: the fast kernels keep
        their gates inside. ``module.last_engine`` is then ``"reference"``.
        """
        if self.mode != "LSTM":
            raise TypeError(f"gates are recorded for the LSTM only, not for {type(self).__name__}")
        output, final, gates = self._run(input, hx, True, lengths)
        assert gates is not None
        return output, final, gates

    def _check_lengths(self, lengths: Any, x: Tensor, packed: bool, unbatched: bool) -> Tensor:
        """``lengths`` as a CPU int64 tensor ``(B,)``, checked against the time-major input ``x`` (T, B, I)."""
        if packed:
            raise InputError("lengths must not be given with a PackedSequence, which carries its own lengths")
        if unbatched:
            raise InputError("lengths needs a batched input (one length per sequence); this input is unbatched")
        if isinstance(lengths, (list, tuple)):
            lengths = torch.tensor(lengths) if lengths else torch.empty(0, dtype=torch.int64)
        if not isinstance(lengths, Tensor):
            raise InputError(f"lengths must be a 1-D integer tensor of batch size, got {type(lengths).__name__}")
        T, B = x.size(0), x.size(1)
        if lengths.dtype == torch.bool or lengths.is_floating_point() or lengths.is_complex():
            raise InputError(f"lengths must be an integer tensor (int64 or int32), got dtype {lengths.dtype}")
        if tuple(lengths.shape) != (B,):
            raise InputError(f"lengths must have shape (batch,) = ({B},), one per sequence, got {tuple(lengths.shape)}")
        lengths = lengths.to(device="cpu", dtype=torch.int64)
        if B and (int(lengths.min()) < 1 or int(lengths.max()) > T):
            raise InputError(
                f"lengths must be in [1, seq_len] = [1, {T}] (torch.nn packs no empty sequence), "
                f"got min {int(lengths.min())} and max {int(lengths.max())}"
            )
        return lengths

    def _check_reset(self, reset: Any, x: Tensor, unbatched: bool) -> Tensor:
        """``reset`` as a time-major bool tensor ``(T, B)`` on the input's device."""
        if self.bidirectional:
            raise InputError("reset is for streaming, unidirectional stacks: the backward direction has no past")
        if not isinstance(reset, Tensor):
            raise InputError(f"reset must be a bool tensor, got {type(reset).__name__}")
        T, B = x.size(0), x.size(1)
        layout = "(seq_len,)" if unbatched else ("(batch, seq_len)" if self.batch_first else "(seq_len, batch)")
        expected = (T,) if unbatched else ((B, T) if self.batch_first else (T, B))
        if reset.dtype != torch.bool:
            raise InputError(f"reset must be a bool tensor {layout}, got dtype {reset.dtype}")
        if tuple(reset.shape) != expected:
            raise InputError(f"reset must have shape {layout} = {expected}, got {tuple(reset.shape)}")
        if unbatched:
            reset = reset.unsqueeze(1)
        elif self.batch_first:
            reset = reset.transpose(0, 1)
        return reset.to(x.device)

    def _prepare_call(
        self, input: Tensor | PackedSequence, hx: Any, with_gates: bool, given_lengths: Any = None,
        reset: Any = None,
    ) -> _Call:
        """Check a call's arguments, put them in the engines' canonical form and choose its engine (choice.py)."""
        traced = (torch.compiler.is_compiling() or torch.compiler.is_exporting()
                  or torch._C._are_functorch_transforms_active())
        prep = self._prepared(traced)
        packed = isinstance(input, PackedSequence)
        if not packed and not isinstance(input, Tensor):
            raise TypeError(f"input must be a Tensor or a PackedSequence, got {type(input).__name__}")
        data = input.data if isinstance(input, PackedSequence) else input
        self._check_input(data, packed, prep.params[0])

        lengths: Tensor | None = None
        unbatched = False
        if isinstance(input, PackedSequence):
            x, lengths = pad_packed_sequence(input)  # (T, B, I) in the caller's batch order
        else:
            unbatched = input.dim() == 2
            x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first else input)
        if given_lengths is not None:
            lengths = self._check_lengths(given_lengths, x, packed, unbatched)
        if reset is not None:
            if with_gates:
                raise InputError("reset cannot be combined with gate recording (return_gates, forward_with_gates)")
            reset = self._check_reset(reset, x, unbatched)
        batch = x.size(1)

        sizes = prep.state_sizes
        states = self._unpack_hx(hx, prep.state_names)
        if states is None:
            states = tuple(x.new_full((prep.rows, batch, size), initial_state_value(name)) for name, size in sizes)
        else:
            for (name, size), s in zip(sizes, states, strict=True):
                self._check_state(name, s, size, batch, unbatched, data)
            if unbatched:
                states = tuple(s.unsqueeze(1) for s in states)
        if torch.is_autocast_enabled(x.device.type):
            # Under autocast the matrix products run in the low dtype; the states follow the input's. torch.nn's
            # LSTM kernel is itself on autocast's low-precision list (its output is in the low dtype), so the
            # LSTM casts its input too, whatever the engine; GRU and RNN follow the per-op rules, as torch.nn's.
            if self.mode == "LSTM":
                x = x.to(torch.get_autocast_dtype(x.device.type))
            states = tuple(s.to(x.dtype) for s in states)

        if with_gates:
            engine: engines.Engine = engines.ENGINES["reference"]  # the kernels keep their gates inside
        else:
            measure = None if traced else self._measure(prep, x, states)
            engine = self._choose(prep, x, lengths is not None, reset is not None, measure)
        return _Call(prep, x, states, lengths, reset, unbatched, engine, traced)

    def _measure(self, prep: _Prepared, x: Tensor, states: States) -> Any:
        """autotune's timing of one engine on this call's shapes: on clones of the input and states, plain
        weights, no masks (what the measurement needs is the time, see autotune.py)."""
        training = self.training

        def run(engine: engines.Engine) -> object:
            clones = tuple(s.detach().clone() for s in states)
            return _compute(engine, prep, x.detach().clone(), clones, prep.weights, None, training)

        return run

    def _run(
        self, input: Tensor | PackedSequence, hx: Any, with_gates: bool, given_lengths: Any = None,
        reset: Any = None,
    ) -> tuple[Any, Any, GateRecord | None]:
        call = self._prepare_call(input, hx, with_gates, given_lengths, reset)
        prep, x, states, lengths, engine = call.prep, call.x, call.states, call.lengths, call.engine
        spec, weights = prep.spec, prep.weights
        if prep.masks:
            # The random masks are drawn here, once, so that every engine computes with the same ones.
            masks = draw_masks(spec, x.size(0), x.size(1), x, self.training)
            weights = [{**w, **m} for w, m in zip(weights, masks, strict=True)]
        if self.training and self.variants.weight_drop > 0:
            weights = drop_recurrent_weights(weights, self.variants.weight_drop)
        gates: GateRecord | None = None
        if with_gates:
            out, final, gates = record_gates(spec, x, states, weights, lengths, self.training)
        elif call.reset is not None and engine.runs_reset(spec):
            reset = call.reset
            if lengths is not None:  # a reset past a row's end changes nothing
                reset = reset & (torch.arange(x.size(0)).unsqueeze(1) < lengths.unsqueeze(0)).to(reset.device)
            weights = [{**w, "reset": reset} for w in weights]
            out, final = engine.forward(spec, x, states, weights, lengths, self.training)
        elif call.reset is not None:
            initial = tuple(x.new_full((prep.rows, x.size(1), size), initial_state_value(name))
                            for name, size in prep.state_sizes)
            initial = tuple(s.to(states[0].dtype) for s in initial)

            def stretch(x_: Tensor, hx_: States, w_: Any, n_: Tensor | None) -> tuple[Tensor, States]:
                return engine.forward(spec, x_, hx_, w_, n_, self.training)

            out, final = run_with_resets(stretch, x, states, weights, lengths, call.reset, initial)
        else:
            out, final = _compute(engine, prep, x, states, weights, lengths, self.training)
        if not call.traced:
            prep.last = engine.name

        if isinstance(input, PackedSequence):
            # Repack in the input's own sorted order so that batch_sizes and indices match it.
            order = input.sorted_indices
            assert lengths is not None
            sorted_out = out if order is None else out.index_select(1, order)
            sorted_lengths = lengths if order is None else lengths.index_select(0, order.cpu())
            repacked = pack_padded_sequence(sorted_out, sorted_lengths, enforce_sorted=True)
            output: Any = PackedSequence(
                repacked.data, input.batch_sizes, input.sorted_indices, input.unsorted_indices
            )
        elif call.unbatched:
            output = out.squeeze(1)
            final = tuple(s.squeeze(1) for s in final)
        else:
            output = out.transpose(0, 1) if self.batch_first else out
        return output, self._pack_hx(final), gates
