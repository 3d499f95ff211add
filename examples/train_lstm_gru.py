"""A plain training script written for torch.nn.LSTM and torch.nn.GRU: train, save, reload, evaluate.

Nothing in it knows about lstmkit. ``tests/test_toolchain.py`` runs it as it is and again with
``torch.nn.LSTM``/``torch.nn.GRU`` replaced by ``lstmkit.LSTM``/``lstmkit.GRU``, and checks that both runs
end at the same loss; that is what "a drop-in" means for code that already exists.

The task: from a noisy sum of two sines, predict the next value of the clean signal (a small regression a
recurrent network learns in a few dozen steps). Run it: ``python examples/train_lstm_gru.py [workdir]``.
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn


class SequenceModel(nn.Module):
    """An LSTM encoder, a GRU on top of it, and a linear read-out of every step."""

    def __init__(self, hidden_size: int = 8) -> None:
        super().__init__()
        self.encoder = nn.LSTM(1, hidden_size, num_layers=2, batch_first=True, dropout=0.1)
        self.decoder = nn.GRU(hidden_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, 1) -> (B, T, 1)
        h, (h_n, c_n) = self.encoder(x)
        h, _ = self.decoder(h, h_n[-1:].contiguous())
        return self.head(h)


def make_data(n: int, steps: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    phase = torch.rand(n, 1, generator=generator) * 2 * math.pi
    t = torch.arange(steps + 1).float() * 0.3 + phase  # (n, steps + 1)
    clean = torch.sin(t) + 0.5 * torch.sin(2.3 * t)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=generator)
    return noisy[:, :-1, None], clean[:, 1:, None]  # inputs (n, steps, 1), next clean values (n, steps, 1)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(nn.functional.mse_loss(model(x), y))


def main(workdir: str | Path, epochs: int = 6, seed: int = 0) -> dict[str, float]:
    """Train, save, reload and evaluate; returns the losses along the way."""
    workdir = Path(workdir)
    torch.manual_seed(seed)
    data = torch.Generator().manual_seed(seed)
    x_train, y_train = make_data(32, 24, data)
    x_test, y_test = make_data(16, 24, data)

    model = SequenceModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(epochs):
        model.train()
        for i in range(0, len(x_train), 16):
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x_train[i : i + 16]), y_train[i : i + 16])
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    trained = evaluate(model, x_test, y_test)

    # Save the whole model and its weights, as scripts do, then load both back.
    torch.save(model, workdir / "model.pt")
    torch.save(model.state_dict(), workdir / "weights.pt")
    with torch.serialization.safe_globals([SequenceModel, nn.LSTM, nn.GRU, nn.Linear]):
        reloaded = torch.load(workdir / "model.pt")
    reloaded.encoder.flatten_parameters()
    reloaded.decoder.flatten_parameters()
    fresh = SequenceModel()
    fresh.load_state_dict(torch.load(workdir / "weights.pt"))
    return {
        "train": float(loss.detach()),
        "test": trained,
        "test_reloaded": evaluate(reloaded, x_test, y_test),
        "test_from_state_dict": evaluate(fresh, x_test, y_test),
    }


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        losses = main(sys.argv[1] if len(sys.argv) > 1 else tmp)
    print(" ".join(f"{k}={v:.6f}" for k, v in losses.items()))
