"""Question 4 of the course's Q&A: how is the output Y of an LSTM/GRU computed?

Y is the top layer's hidden state h_t at every step (both directions concatenated when bidirectional), and the
final state h_n is Y's last step for the forward direction and Y's FIRST step for the backward direction (it
read the sequence from the end). The same for lstmkit's and torch.nn's classes.
"""

from __future__ import annotations

import pytest
import torch

import lstmkit

CLASSES = {
    "lstmkit.LSTM": lambda **kw: lstmkit.LSTM(**kw),
    "lstmkit.GRU": lambda **kw: lstmkit.GRU(**kw),
    "torch.nn.LSTM": lambda **kw: torch.nn.LSTM(**kw),
    "torch.nn.GRU": lambda **kw: torch.nn.GRU(**kw),
}


def _h_steps(cell_module: torch.nn.Module, layer: int, suffix: str, x: torch.Tensor, lstm: bool) -> torch.Tensor:
    """Run one layer and direction step by step with torch.nn's cell on the module's weights: (T, B, H)."""
    H = cell_module.hidden_size
    cell = (torch.nn.LSTMCell if lstm else torch.nn.GRUCell)(x.size(-1), H).double()
    cell.load_state_dict({name: getattr(cell_module, f"{name}_l{layer}{suffix}") for name in
                          ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
    h = torch.zeros(x.size(1), H, dtype=x.dtype)
    c = torch.zeros_like(h)
    steps = range(x.size(0) - 1, -1, -1) if suffix else range(x.size(0))
    out = [torch.empty(0)] * x.size(0)
    for t in steps:
        if lstm:
            h, c = cell(x[t], (h, c))
        else:
            h = cell(x[t], h)
        out[t] = h
    return torch.stack(out)  # (T, B, H), in the sequence's order


@pytest.mark.parametrize("name", list(CLASSES))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_y_is_the_top_layer_h_at_every_step_and_h_n_its_last(name: str, bidirectional: bool) -> None:
    torch.manual_seed(0)
    T, B, I, H, L = 6, 3, 4, 5, 2
    module = CLASSES[name](input_size=I, hidden_size=H, num_layers=L, bidirectional=bidirectional).double()
    lstm = "LSTM" in name
    x = torch.randn(T, B, I, dtype=torch.float64)
    y, state = module(x)
    h_n = state[0] if lstm else state
    D = 2 if bidirectional else 1
    assert y.shape == (T, B, D * H) and h_n.shape == (L * D, B, H)

    # Y is the top layer's h_t: recompute every layer with a cell, step by step
    inp = x
    for layer in range(L):
        outs = [_h_steps(module, layer, suffix, inp, lstm) for suffix in (["", "_reverse"][:D])]
        inp = torch.cat(outs, dim=-1)  # (T, B, D*H): the next layer's input, and at the top, Y
    torch.testing.assert_close(y, inp)

    # h_n: forward direction = Y's last step; backward direction = Y's first step (its own last)
    top = h_n.view(L, D, B, H)[-1]
    torch.testing.assert_close(top[0], y[-1, :, :H])
    if bidirectional:
        torch.testing.assert_close(top[1], y[0, :, H:])
        assert not torch.allclose(top[1], y[-1, :, H:])  # not the last step: that is where it began
