"""lstmkit.convert: Keras 3 LSTM/GRU weights to lstmkit and back, checked by running Keras itself.

Keras runs on its torch backend (``KERAS_BACKEND=torch``, set before Keras is imported); each test feeds the
same input to the Keras layer and to the lstmkit module and compares outputs and final states within 1e-5.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

import lstmkit  # noqa: E402
from lstmkit.convert import from_keras, to_keras  # noqa: E402

B, T, I, H = 3, 6, 4, 5
pytestmark = [
    pytest.mark.skipif(keras.backend.backend() != "torch", reason="these tests run Keras on torch"),
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),  # Keras' own, numpy 2
]


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _keras_layer(kind: str, **kwargs):
    layer = getattr(keras.layers, kind)(H, return_sequences=True, return_state=True, **kwargs)
    layer.build((None, None, I))
    # Random weights, biases included (Keras initialises the bias to zeros or to the unit forget bias).
    rng = np.random.default_rng(0)
    layer.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()])
    return layer


def _keras_run(layer, x: np.ndarray):
    out, *states = layer(x)
    return _numpy(out), [_numpy(s) for s in states]


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_from_keras_computes_what_keras_computes(kind, use_bias):
    layer = _keras_layer(kind, use_bias=use_bias)
    x = np.random.default_rng(1).standard_normal((B, T, I)).astype(np.float32)
    out_k, states_k = _keras_run(layer, x)

    module = from_keras(layer)
    assert isinstance(module, getattr(lstmkit, kind)) and module.batch_first and module.bias == use_bias
    out, final = module(torch.from_numpy(x))
    np.testing.assert_allclose(out.detach().numpy(), out_k, atol=1e-5, rtol=0)
    finals = final if kind == "LSTM" else (final,)
    for ours, theirs in zip(finals, states_k, strict=True):  # Keras returns h (and c) of the last step
        np.testing.assert_allclose(ours[0].detach().numpy(), theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("engine", ["reference", "native"])
@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_to_keras_makes_keras_compute_what_the_module_computes(kind, engine):
    torch.manual_seed(2)
    module = getattr(lstmkit, kind)(I, H, batch_first=True, engine=engine)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.5, 0.5)  # bias_hh nonzero too, so its sum with bias_ih matters
    layer = getattr(keras.layers, kind)(H, return_sequences=True, return_state=True)  # unbuilt: to_keras builds it
    assert to_keras(module, layer) is layer
    x = torch.randn(B, T, I)
    out_k, states_k = _keras_run(layer, x.numpy())
    out, final = module(x)
    np.testing.assert_allclose(out.detach().numpy(), out_k, atol=1e-5, rtol=0)
    finals = final if kind == "LSTM" else (final,)
    for ours, theirs in zip(finals, states_k, strict=True):
        np.testing.assert_allclose(ours[0].detach().numpy(), theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_round_trip_and_torch_nn_modules(kind):
    """torch.nn's own modules go to Keras too, and Keras -> lstmkit -> Keras gives back the same weights."""
    torch.manual_seed(3)
    reference = getattr(nn, kind)(I, H, batch_first=True)
    layer = to_keras(reference, getattr(keras.layers, kind)(H, return_sequences=True, return_state=True))
    x = torch.randn(B, T, I)
    out_k, _ = _keras_run(layer, x.numpy())
    np.testing.assert_allclose(reference(x)[0].detach().numpy(), out_k, atol=1e-5, rtol=0)

    back = to_keras(from_keras(layer), getattr(keras.layers, kind)(H, return_sequences=True, return_state=True))
    for a, b in zip(layer.get_weights(), back.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_cells_both_ways(kind):
    rng = np.random.default_rng(4)
    cell = getattr(keras.layers, f"{kind}Cell")(H)
    cell.build((None, I))
    cell.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for w in cell.get_weights()])
    x = rng.standard_normal((B, I)).astype(np.float32)
    states = [rng.standard_normal((B, H)).astype(np.float32) for _ in range(2 if kind == "LSTM" else 1)]
    h_k, new_k = cell(x, states)

    module = from_keras(cell)
    assert isinstance(module, getattr(lstmkit, f"{kind}Cell"))
    torch_states = [torch.from_numpy(s) for s in states]
    new = module(torch.from_numpy(x), tuple(torch_states) if kind == "LSTM" else torch_states[0])
    new = new if kind == "LSTM" else (new,)
    for ours, theirs in zip(new, new_k, strict=True):
        np.testing.assert_allclose(ours.detach().numpy(), _numpy(theirs), atol=1e-5, rtol=0)

    fresh = to_keras(module, getattr(keras.layers, f"{kind}Cell")(H))
    h_back, _ = fresh(x, states)
    np.testing.assert_allclose(_numpy(h_back), _numpy(h_k), atol=1e-5, rtol=0)


def test_refusals_name_what_does_not_map():
    gru = keras.layers.GRU(H, reset_after=False)
    gru.build((None, None, I))
    with pytest.raises(ValueError, match="reset_after=False"):
        from_keras(gru)
    relu = keras.layers.LSTM(H, activation="relu")
    relu.build((None, None, I))
    with pytest.raises(ValueError, match="activation='relu'"):
        from_keras(relu)
    backwards = keras.layers.LSTM(H, go_backwards=True)
    backwards.build((None, None, I))
    with pytest.raises(ValueError, match="go_backwards"):
        from_keras(backwards)
    with pytest.raises(ValueError, match="not built"):
        from_keras(keras.layers.LSTM(H))
    with pytest.raises(TypeError, match="Keras 3 LSTM, GRU"):
        from_keras(keras.layers.Dense(H))

    with pytest.raises(ValueError, match="num_layers=1"):
        to_keras(lstmkit.LSTM(I, H, num_layers=2), keras.layers.LSTM(H))
    with pytest.raises(ValueError, match="proj_size=0"):
        to_keras(lstmkit.LSTM(I, H, proj_size=2), keras.layers.LSTM(H))
    with pytest.raises(ValueError, match="hidden_size"):
        to_keras(lstmkit.LSTM(I, H), keras.layers.LSTM(H + 1))
    with pytest.raises(ValueError, match="use_bias"):
        to_keras(lstmkit.LSTM(I, H, bias=False), keras.layers.LSTM(H))
    with pytest.raises(TypeError, match="GRU"):
        to_keras(lstmkit.GRU(I, H), keras.layers.LSTM(H))
    with pytest.raises(TypeError, match="cell"):
        to_keras(lstmkit.LSTMCell(I, H), keras.layers.LSTM(H))
