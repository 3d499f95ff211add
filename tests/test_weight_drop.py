"""``weight_drop=p`` (AWD-LSTM's DropConnect on W_hh, Merity et al. 2018): one mask per forward call, the same at
every step, off in eval(), on every engine; the parameters keep torch.nn's names; it trains and saves."""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

import lstmkit

I, H, T, B, P = 3, 6, 7, 4, 0.4
ENGINES = ["reference", "native", "fused"]


def _masked_weights(module: nn.Module, seed: int) -> dict[str, Tensor]:
    """The recurrent weights the module uses under ``seed``: each W_hh through one F.dropout, layer by layer."""
    torch.manual_seed(seed)
    return {name: F.dropout(p, P, training=True) for name, p in module.named_parameters() if "weight_hh" in name}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 2, "bidirectional": True}], ids=["plain", "2-layers-bi"])
def test_training_uses_one_masked_w_hh_for_every_step(engine: str, kwargs: dict[str, Any]) -> None:
    dropped = lstmkit.LSTM(I, H, weight_drop=P, engine=engine, **kwargs)
    plain = lstmkit.LSTM(I, H, engine="reference", **kwargs)
    plain.load_state_dict(dropped.state_dict())
    x = torch.randn(T, B, I)

    torch.manual_seed(3)
    out, (h, c) = dropped(x)
    (out.sin().sum() + h.sum() + c.sum()).backward()

    masked = _masked_weights(plain, seed=3)  # the same draws, made by hand; each W_hh is a fixed weight in time
    expected, (h_e, c_e) = functional_call(plain, {**dict(plain.named_parameters()), **masked}, (x,))
    (expected.sin().sum() + h_e.sum() + c_e.sum()).backward()

    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, c_e, atol=1e-5, rtol=1e-5)
    for name, p in dropped.named_parameters():
        torch.testing.assert_close(p.grad, plain.get_parameter(name).grad, atol=1e-5, rtol=1e-5)
    # dW_hh reaches the parameter through the mask: zero exactly where the weight was dropped.
    assert (dropped.weight_hh_l0.grad[masked["weight_hh_l0"] == 0] == 0).all()


@pytest.mark.parametrize("engine", ENGINES)
def test_eval_is_the_plain_lstm_and_each_call_draws_a_new_mask(engine: str) -> None:
    dropped = lstmkit.LSTM(I, H, weight_drop=P, engine=engine)
    plain = nn.LSTM(I, H)
    plain.load_state_dict(dropped.state_dict())
    x = torch.randn(T, B, I)
    first, second = dropped(x)[0], dropped(x)[0]
    assert not torch.allclose(first, second)  # a fresh mask per call
    dropped.eval()
    torch.testing.assert_close(dropped(x)[0], plain(x)[0], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("engine", ENGINES)
def test_gradcheck_weight_drop(engine: str) -> None:
    lstm = lstmkit.LSTM(I, H, weight_drop=P, engine=engine, dtype=torch.float64)
    x = torch.randn(4, 2, I, dtype=torch.float64, requires_grad=True)

    def f(x_: Tensor, w_hh: Tensor, w_ih: Tensor) -> tuple[Tensor, ...]:
        torch.manual_seed(7)  # the same mask at every evaluation of the finite differences
        params = {**dict(lstm.named_parameters()), "weight_hh_l0": w_hh, "weight_ih_l0": w_ih}
        out, (h, c) = functional_call(lstm, params, (x_,))
        return out, h, c

    assert torch.autograd.gradcheck(f, (x, lstm.weight_hh_l0.detach().requires_grad_(),
                                        lstm.weight_ih_l0.detach().requires_grad_()))


def test_state_dict_is_torch_nn_s_both_ways_and_torch_save_works() -> None:
    dropped = lstmkit.LSTM(I, H, num_layers=2, weight_drop=P, engine="fused")
    assert list(dropped.state_dict()) == list(nn.LSTM(I, H, num_layers=2).state_dict())  # no _raw copies
    for target in (lstmkit.LSTM(I, H, num_layers=2), nn.LSTM(I, H, num_layers=2)):
        target.load_state_dict(dropped.state_dict())
        back = lstmkit.LSTM(I, H, num_layers=2, weight_drop=P)
        back.load_state_dict(target.state_dict())
        pairs = zip(back.state_dict().values(), dropped.state_dict().values(), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
    buffer = io.BytesIO()
    torch.save(dropped, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals(lstmkit.safe_globals()):
        loaded = torch.load(buffer, weights_only=True)
    assert loaded.variants.weight_drop == P and "weight_drop=0.4" in repr(loaded)
    x = torch.randn(T, B, I)
    torch.testing.assert_close(loaded.eval()(x)[0], dropped.eval()(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("engine", ["fused", "native"])
def test_it_trains(engine: str) -> None:
    """Copy the input from the step before: the loss falls and W_hh receives gradients under weight drop."""
    lstm = lstmkit.LSTM(2, 16, weight_drop=0.3, engine=engine)
    head = nn.Linear(16, 2)
    optimiser = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=2e-2)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(80):
        x = torch.randn(20, 8, 2, generator=generator)
        loss = F.mse_loss(head(lstm(x)[0])[1:], x[:-1])
        optimiser.zero_grad()
        loss.backward()
        assert lstm.weight_hh_l0.grad is not None and lstm.weight_hh_l0.grad.abs().sum() > 0
        optimiser.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) < 0.4 * sum(losses[:10])


@pytest.mark.parametrize("value,error", [(1.0, ValueError), (-0.1, ValueError), ("0.2", TypeError)])
def test_bad_weight_drop_is_refused(value: Any, error: type) -> None:
    with pytest.raises(error, match="weight_drop"):
        lstmkit.LSTM(I, H, weight_drop=value)
