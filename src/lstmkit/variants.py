"""The LSTM variants, each declared once: its name, argument and check, engines, CLI flag, reference step.

Each variant is a field of :class:`Variants` declared with :func:`variant`; the modules' keyword arguments, the
engines' view (``RNNSpec.variants``), the fused support check, ``parameter_count`` and the CLI flags derive from
the declarations. What each variant computes, the order of operations, the sLSTM's states and how the random
masks reach the engines: docs/variants.md. Adding one: CONTRIBUTING.md.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

import torch
from torch import Tensor

LayerWeights = dict[str, Tensor]  # as engines/base.py's: a layer's parameters and masks by name

CELLS = ("lstm", "slstm", "no_c")  # no_c: the ablation without a memory cell (reference engine only)


# ---------------------------------------------------------------------------------------------------------
# The checks a declaration names: each takes the argument's name and value, returns the value normalised, and
# raises TypeError/ValueError naming the argument, the value and what was expected.
# ---------------------------------------------------------------------------------------------------------


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def check_choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    return check


def check_finite_or_none(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number or None, got {type(value).__name__} {value!r}")
    number = float(value)
    if number != number or abs(number) == float("inf"):
        raise ValueError(f"{name} must be a finite number, got {number}")
    return number


def _probability(name: str, value: Any, upper_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number (a probability), got {type(value).__name__} {value!r}")
    p = float(value)
    if not (0.0 <= p < 1.0 if upper_open else 0.0 <= p <= 1.0):
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"{name} must be a probability in {interval}, got {value}")
    return p


def check_dropout_probability(name: str, value: Any) -> float:
    """A dropout probability in [0, 1): p = 1 would divide by 1 - p."""
    return _probability(name, value, upper_open=True)


def check_zoneout(name: str, value: Any) -> tuple[float, float]:
    """``(z_c, z_h)``, or one number for both; each in [0, 1]."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be a pair (z_c, z_h) or one number, got {value!r}")
        return (_probability(f"{name} z_c", value[0]), _probability(f"{name} z_h", value[1]))
    z = _probability(name, value)
    return (z, z)


# ---------------------------------------------------------------------------------------------------------
# The declaration
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """Everything lstmkit needs to know about one variant; made by :func:`variant`, listed in :data:`VARIANTS`.

    The argument's default is torch.nn's LSTM (the variant off); a value other than the default switches it on.
    """

    name: str  # the keyword argument of LSTM/LSTMCell, the field of Variants (and of RNNSpec unless init_only)
    default: Any
    check: Callable[[str, Any], Any]  # (name, value) -> value normalised; TypeError/ValueError naming them
    help: str  # one line: what it does and where it comes from, for --help and the docs
    step: str  # the function of engines/reference.py that computes it ("init": an initialisation; "module":
    # applied by the module, e.g. drop_recurrent_weights)
    engines: tuple[str, ...]  # the engines beside "reference" that compute it (see the fused engine's check)
    annotation: str  # the argument's type, as the signature of LSTM/LSTMCell shows it
    cli_type: type | None  # what its CLI flag reads: float, str, or None for an on/off switch
    choices: tuple[str, ...] | None = None  # the values a str flag may take
    cells: tuple[str, ...] = CELLS  # the cells it is defined for; with another, check_variants refuses it
    refused_because: str = ""  # why, said when refused with a cell it is not defined for
    needs_bias: str = ""  # when set: why it needs bias=True
    training_only: bool = False  # off in eval(): the engines then see the default
    init_only: bool = False  # an initialisation: the engines never see it, every engine runs it
    in_module: bool = False  # applied by the module to what it hands the engines: the engines never see it
    argument_default: Any = None  # the default the signature shows, when not ``default`` (zoneout's 0.0)

    @property
    def flag(self) -> str:
        """Its command-line flag: the name with dashes (``--layer-norm``)."""
        return "--" + self.name.replace("_", "-")

    def is_on(self, value: Any) -> bool:
        return bool(value != self.default)

    def parameter(self) -> inspect.Parameter:
        """The keyword-only parameter of ``LSTM.__init__``/``LSTMCell.__init__`` it adds."""
        default = self.default if self.argument_default is None else self.argument_default
        return inspect.Parameter(self.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=self.annotation)


def variant(default: Any, **declaration: Any) -> Any:
    """Declare a field of :class:`Variants` as a variant (the arguments of :class:`Variant` but its name)."""
    return field(default=default, metadata={"variant": declaration})


@dataclass(frozen=True)
class Variants:
    """The variant arguments of ``LSTM``/``LSTMCell``, validated: ONE declaration per variant, here.

    Adding a variant starts with a field here (see CONTRIBUTING.md); the defaults are torch.nn's LSTM.
    """

    cell: str = variant(
        "lstm", check=check_choice(CELLS), step="slstm_gated_step", engines=("fused",), annotation="str",
        cli_type=str, choices=CELLS,
        help="lstm; slstm: xLSTM's sLSTM (Beck et al. 2024); no_c: the ablation without a memory cell (reference)",
    )
    peephole: bool = variant(
        False, check=check_bool, step="lstm_variant_gated_step", engines=("fused",), annotation="bool",
        cli_type=None, cells=("lstm",), refused_because="the sLSTM paper's cell has no peepholes",
        help="peephole connections (Gers & Schmidhuber 2000)",
    )
    layer_norm: bool = variant(
        False, check=check_bool, step="lstm_variant_gated_step", engines=("fused",), annotation="bool",
        cli_type=None, cells=("lstm",),
        refused_because="h = o * c / n has no tanh(c_t) to normalise; normalise the outputs",
        help="layer-normalised LSTM (Ba et al. 2016)",
    )
    coupled_gates: bool = variant(
        False, check=check_bool, step="lstm_variant_gated_step", engines=("fused",), annotation="bool",
        cli_type=None, cells=("lstm",), refused_because="i = 1 - f has no meaning for exponential gates",
        help="CIFG: i = 1 - f (Greff et al. 2017)",
    )
    forget_bias: float | None = variant(
        None, check=check_finite_or_none, step="init", engines=(), annotation="float | None", cli_type=float,
        needs_bias="sets the forget gate's bias", init_only=True,
        help="initial forget-gate bias (Jozefowicz et al. 2015); default: torch.nn's init",
    )
    recurrent_dropout: float = variant(
        0.0, check=check_dropout_probability, step="lstm_variant_gated_step", engines=("fused",),
        annotation="float", cli_type=float, training_only=True,
        help="dropout on h_{t-1}, one mask per sequence (Gal & Ghahramani 2016)",
    )
    zoneout: tuple[float, float] = variant(
        (0.0, 0.0), check=check_zoneout, step="lstm_variant_gated_step", engines=("fused",),
        annotation="float | tuple[float, float]", cli_type=float, cells=("lstm",), argument_default=0.0,
        refused_because="zoning out c without n breaks the normaliser c / n",
        help="zoneout rate of c and h (Krueger et al. 2016)",
    )
    weight_drop: float = variant(
        0.0, check=check_dropout_probability, step="module", engines=(), annotation="float",
        cli_type=float, training_only=True, in_module=True,
        help="DropConnect on W_hh, one mask per forward call (AWD-LSTM, Merity et al. 2018)",
    )

    @property
    def gates(self) -> int:
        """Gate blocks in the weight rows: 3 ([f, g, o]) with coupled_gates, else 4."""
        return 3 if self.coupled_gates else 4

    @property
    def num_states(self) -> int:
        return 4 if self.cell == "slstm" else 2

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("h_0", "c_0", "n_0", "m_0") if self.cell == "slstm" else ("h_0", "c_0")

    def forget_rows(self, hidden_size: int) -> slice:
        """The rows of the forget gate in ``bias_ih``/``weight_ih``: the first block with coupled gates."""
        return slice(0, hidden_size) if self.coupled_gates else slice(hidden_size, 2 * hidden_size)

    def describe(self) -> str:
        """The arguments that differ from the defaults, as a module's repr shows them."""
        return ", ".join(f"{v.name}={getattr(self, v.name)!r}" for v in VARIANTS if v.is_on(getattr(self, v.name)))

    def for_engines(self, training: bool) -> Variants:
        """What the engines see (``RNNSpec.variants``): a training-only variant off in eval, and the ones the
        engines never see (initialisations, what the module applies itself) at their defaults."""
        return replace(self, **{v.name: v.default for v in VARIANTS
                                if v.init_only or v.in_module or (v.training_only and not training)})


# Every declaration, in the order of Variants' fields: the order arguments are checked and flags listed in.
VARIANTS: tuple[Variant, ...] = tuple(
    Variant(name=f.name, default=f.default, **f.metadata["variant"]) for f in fields(Variants)
)
REGISTRY: dict[str, Variant] = {v.name: v for v in VARIANTS}
NAMES: tuple[str, ...] = tuple(REGISTRY)


def active(variants: Variants) -> tuple[Variant, ...]:
    """The declarations of the variants the engines see switched on in ``variants`` (an ``RNNSpec``'s)."""
    return tuple(v for v in VARIANTS if not (v.init_only or v.in_module) and v.is_on(getattr(variants, v.name)))


def unknown_argument(owner: str, names: Any) -> None:
    """Raise Python's own TypeError for a keyword argument ``owner`` does not take (none of the variants)."""
    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        raise TypeError(f"{owner}.__init__() got an unexpected keyword argument {unknown[0]!r}")


def check_variants(*, proj_size: int = 0, bias: bool = True, **arguments: Any) -> Variants:
    """Validate the variant arguments (and how they combine with ``proj_size`` and ``bias``).

    Takes any of :data:`NAMES` as keyword arguments (the others keep their defaults). Raises
    ``TypeError``/``ValueError`` naming the argument, the value and what was expected.
    ``zoneout`` is a pair ``(z_c, z_h)`` or one number for both.
    """
    unknown_argument("check_variants", arguments)
    values = {v.name: v.check(v.name, arguments.get(v.name, v.default)) for v in VARIANTS}
    cell = values["cell"]
    if cell == "no_c":
        # The ablation removes c_{t-1} from the recurrence; variants that read or keep c would bring it back.
        for name in ("peephole", "layer_norm", "coupled_gates", "zoneout"):
            if REGISTRY[name].is_on(values[name]):
                raise ValueError(f"cell='no_c' (the ablation without a memory cell) cannot be combined with "
                                 f"{name}={arguments[name]!r}")
        if proj_size > 0:
            raise ValueError(f"cell='no_c' (the ablation without a memory cell) cannot be combined with "
                             f"proj_size={proj_size}")
    for v in VARIANTS:
        if not v.is_on(values[v.name]):
            continue
        if cell not in v.cells:
            # Defined for the sigmoid-gated cell only; refusing beats silently meaning something else.
            given = arguments.get(v.name, v.default)
            raise ValueError(f"cell={cell!r} cannot be combined with {v.name}={given!r}: {v.refused_because}")
        if v.needs_bias and not bias:
            raise ValueError(f"{v.name} {v.needs_bias}, so it needs bias=True (got bias=False)")
    if cell == "slstm" and proj_size > 0:
        raise ValueError(f"cell='slstm' cannot be combined with proj_size={proj_size}: the sLSTM has no projection")
    return Variants(**values)


def variant_signature(function: Callable[..., Any]) -> inspect.Signature:
    """``function``'s signature with its ``**variants`` replaced by one keyword-only parameter per variant (but
    those it names itself)."""
    signature = inspect.signature(function)
    kept = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    named = {p.name for p in kept}  # one the function names itself (parameter_count's cell) stays as it is
    return signature.replace(parameters=[*kept, *(v.parameter() for v in VARIANTS if v.name not in named)])


def initial_state_value(name: str) -> float:
    """What state ``name`` (``h_0``, ``c_0``, ``n_0``, ``m_0``) holds when hx is None.

    0, except the sLSTM's stabiliser: m_0 = -inf, the log of a memory that is empty (n_0 = 0). Starting it at 0
    instead would make ``n_1 = exp(~i - max(~f, ~i))``, which underflows to 0 (and h to 0/0) when ~f >> ~i.
    """
    return float("-inf") if name == "m_0" else 0.0


@dataclass(frozen=True)
class ExtraParameter:
    """A parameter a variant adds to each layer and direction (named ``{name}_l{k}{suffix}`` in a module)."""

    name: str
    shape: tuple[int, ...]
    init: str  # "uniform" (torch.nn's U(-1/sqrt(H), 1/sqrt(H))), "ones" or "zeros"


def extra_parameters(variants: Variants, hidden_size: int) -> list[ExtraParameter]:
    """The parameters the variants add to one layer and direction, in registration order.

    peephole: ``weight_ci`` (absent with coupled_gates), ``weight_cf``, ``weight_co``, each (H,), uniform like
    torch.nn's weights. layer_norm: gains ``layer_norm_ih_weight`` and ``layer_norm_hh_weight`` (gates*H,),
    ones; ``layer_norm_c_weight`` (H,) ones and ``layer_norm_c_bias`` (H,) zeros (LN of c_t before tanh).
    """
    H = hidden_size
    extra: list[ExtraParameter] = []
    if variants.peephole:
        names = ("weight_cf", "weight_co") if variants.coupled_gates else ("weight_ci", "weight_cf", "weight_co")
        extra += [ExtraParameter(name, (H,), "uniform") for name in names]
    if variants.layer_norm:
        G = variants.gates * H
        extra += [
            ExtraParameter("layer_norm_ih_weight", (G,), "ones"),
            ExtraParameter("layer_norm_hh_weight", (G,), "ones"),
            ExtraParameter("layer_norm_c_weight", (H,), "ones"),
            ExtraParameter("layer_norm_c_bias", (H,), "zeros"),
        ]
    return extra


def init_extra_parameter(tensor: Tensor, init: str, hidden_size: int) -> None:
    """Initialise one extra parameter in place, as :class:`ExtraParameter` says."""
    with torch.no_grad():
        if init == "uniform":
            stdv = 1.0 / hidden_size**0.5
            tensor.uniform_(-stdv, stdv)
        elif init == "ones":
            tensor.fill_(1.0)
        else:
            tensor.zero_()


def init_forget_bias(variants: Variants, bias_ih: Tensor, bias_hh: Tensor, hidden_size: int) -> None:
    """Jozefowicz et al. 2015: b_f = forget_bias (in bias_ih; bias_hh's forget slice is 0). No-op when None."""
    if variants.forget_bias is None:
        return
    rows = variants.forget_rows(hidden_size)
    with torch.no_grad():
        bias_ih[rows] = variants.forget_bias
        bias_hh[rows] = 0.0


def init_biases(variants: Variants, bias_ih: Tensor, bias_hh: Tensor, hidden_size: int) -> None:
    """Every initialisation the variants make, after torch.nn's (the modules' ``reset_parameters`` calls this)."""
    init_forget_bias(variants, bias_ih, bias_hh, hidden_size)


def recurrent_dropout_mask(p: float, batch: int, size: int, like: Tensor) -> Tensor:
    """One recurrent-dropout mask ``(batch, size)``: 0 with probability p, else ``1/(1-p)`` (like F.dropout)."""
    keep = torch.full((batch, size), 1.0 - p, device=like.device, dtype=like.dtype)
    return torch.bernoulli(keep) / (1.0 - p)


def drop_recurrent_weights(weights: list[LayerWeights], p: float) -> list[LayerWeights]:
    """Weight drop: each layer's and direction's ``weight_hh`` times one fresh DropConnect mask (F.dropout's
    Bernoulli(1-p)/(1-p)), in training. The engines then see a plain recurrent weight, the same at every step."""
    return [{**w, "weight_hh": torch.nn.functional.dropout(w["weight_hh"], p, training=True)} for w in weights]


def zoneout_mask(z: float, shape: tuple[int, ...], like: Tensor, training: bool) -> Tensor:
    """Zoneout's d: 1 (keep the old value) with probability z in training; the expectation z in eval."""
    if not training:
        return torch.full((1,) * len(shape), z, device=like.device, dtype=like.dtype).expand(shape)
    return torch.bernoulli(torch.full(shape, z, device=like.device, dtype=like.dtype))


class _StackShape(Protocol):
    """What :func:`draw_masks` reads of an ``engines.base.RNNSpec`` (the engines import this file, not the reverse)."""

    @property
    def num_layers(self) -> int: ...
    @property
    def num_directions(self) -> int: ...
    @property
    def hidden_size(self) -> int: ...
    @property
    def output_size(self) -> int: ...
    @property
    def variants(self) -> Variants: ...


def draw_masks(spec: _StackShape, steps: int, batch: int, like: Tensor, training: bool) -> list[LayerWeights]:
    """Every random mask of a forward pass, one dict per layer and direction (index ``layer * D + direction``).

    Drawn from torch's global generator in a fixed order (layer, direction; recurrent dropout, zoneout c,
    zoneout h), so ``torch.manual_seed`` makes them reproducible. Shapes: ``recurrent_dropout_mask``
    (B, output_size), only in training; ``zoneout_mask_c`` (T, B, H) and ``zoneout_mask_h``
    (T, B, output_size), constant z in eval (expanded views: an engine may need ``.contiguous()``).
    """
    z_c, z_h = spec.variants.zoneout
    masks: list[LayerWeights] = []
    for _ in range(spec.num_layers * spec.num_directions):
        m: LayerWeights = {}
        if training and spec.variants.recurrent_dropout > 0:
            p = spec.variants.recurrent_dropout
            m["recurrent_dropout_mask"] = recurrent_dropout_mask(p, batch, spec.output_size, like)
        if z_c > 0:
            m["zoneout_mask_c"] = zoneout_mask(z_c, (steps, batch, spec.hidden_size), like, training)
        if z_h > 0:
            m["zoneout_mask_h"] = zoneout_mask(z_h, (steps, batch, spec.output_size), like, training)
        masks.append(m)
    return masks


__all__ = [
    "CELLS",
    "NAMES",
    "REGISTRY",
    "VARIANTS",
    "ExtraParameter",
    "Variant",
    "Variants",
    "active",
    "check_variants",
    "draw_masks",
    "drop_recurrent_weights",
    "extra_parameters",
    "init_biases",
    "init_forget_bias",
    "initial_state_value",
    "recurrent_dropout_mask",
    "variant",
    "variant_signature",
    "zoneout_mask",
]
