"""Benchmark mode: ``engine="auto"`` measures the engines once per kind of call and keeps the fastest, without
touching the random number generator or the gradients; off by default; a named engine is never replaced."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import lstmkit
from lstmkit import engines


@pytest.fixture
def bench() -> Iterator[None]:
    engines.benchmark(True)
    yield
    engines.benchmark(False)


def test_off_by_default_and_auto_stays_static() -> None:
    assert engines.benchmark() is False
    lstm = lstmkit.LSTM(4, 8)
    lstm(torch.randn(3, 2, 4))
    assert lstm.engine == "native" and not engines._measured


def test_measures_once_per_kind_of_call_and_reports_the_choice(bench: None) -> None:
    lstm = lstmkit.LSTM(4, 8, num_layers=2)
    with torch.no_grad():
        lstm(torch.randn(5, 3, 4))
    assert len(engines._measured) == 1
    (choice,) = engines._measured.values()
    assert lstm.engine == choice and choice in ("native", "fused", "reference")
    with torch.no_grad():
        lstm(torch.randn(6, 3, 4))  # the same kind (T and B in the same power-of-two buckets): from the cache
        assert len(engines._measured) == 1
        lstm(torch.randn(1, 1, 4))  # a new kind: measured afresh
    assert len(engines._measured) == 2


def test_measuring_leaves_no_trace(bench: None) -> None:
    """The first call (which measures) gives what its chosen engine gives alone from the same seed, in training
    with dropout between layers, and no weight gradient appears before backward."""
    lstm = lstmkit.LSTM(4, 8, num_layers=3, dropout=0.5)
    x = torch.randn(5, 3, 4)
    torch.manual_seed(1)
    out, _ = lstm(x)
    assert all(p.grad is None for p in lstm.parameters())
    chosen = lstm.engine
    pinned = lstmkit.LSTM(4, 8, num_layers=3, dropout=0.5, engine=chosen)
    pinned.load_state_dict(lstm.state_dict())
    torch.manual_seed(1)
    assert torch.equal(pinned(x)[0], out)


def test_a_named_engine_is_kept_and_variants_choose_among_able_engines(bench: None) -> None:
    pinned = lstmkit.LSTM(4, 8, engine="reference")
    pinned(torch.randn(5, 3, 4))
    assert pinned.engine == "reference" and not engines._measured
    ln = lstmkit.LSTM(4, 8, layer_norm=True)
    ln(torch.randn(5, 3, 4))
    assert ln.engine in ("fused", "reference")
