"""A streaming LSTM: state carried across calls, reset per row where an episode ends, truncated BPTT over chunks.

A stream here is B endless sequences side by side (B environments, B microphones), cut into chunks of a few
steps as they arrive. Each row is a series of episodes; ``reset`` (T, B) marks the first step of each new
episode (TorchRL's ``is_init``), where that row's state goes back to its initial value (zeros), in any engine.

* Inference: feed the chunks one call at a time, passing the states on. The outputs are bit for bit those of
  one call over the whole stream (``tests/test_streaming.py`` checks it).
* Training, truncated backpropagation through time (Williams & Peng 1990): the same loop, with the states
  detached between chunks, so each backward pass covers one chunk while the forward pass keeps its memory.

The task: each episode shows a random "key" value at its first step and noise afterwards; the target at every
step is the key of the current episode, so the model must remember it, and forget it at the reset.

Run it: ``python examples/streaming.py`` (a few seconds on a CPU). The fused engine applies the resets inside its
time loop; with the other engines the module cuts the sequence where a row resets (same results).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

import lstmkit


def make_stream(steps: int, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """``x`` (steps, batch, 2), ``reset`` (steps, batch) bool and the target (steps, batch, 1)."""
    reset = torch.rand(steps, batch, generator=generator) < 0.04
    reset[0] = True
    key = torch.randn(steps, batch, generator=generator)
    noise = 0.3 * torch.randn(steps, batch, generator=generator)
    x = torch.stack([torch.where(reset, key, noise), reset.float()], dim=-1)  # (steps, batch, 2)
    target = torch.empty(steps, batch)
    current = torch.zeros(batch)
    for t in range(steps):
        current = torch.where(reset[t], key[t], current)
        target[t] = current
    return x, reset, target.unsqueeze(-1)


class StreamModel(nn.Module):
    def __init__(self, hidden_size: int = 32, engine: str = "fused") -> None:
        super().__init__()
        self.lstm = lstmkit.LSTM(2, hidden_size, num_layers=2, engine=engine)
        self.head = nn.Linear(hidden_size, 1)

    def forward(
        self, x: Tensor, state: tuple[Tensor, Tensor] | None, reset: Tensor
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, state = self.lstm(x, state, reset=reset)  # (T, B, H); the states of every layer carry on
        return self.head(out), state


def stream_in_chunks(model: StreamModel, x: Tensor, reset: Tensor, chunk: int) -> Tensor:
    """Inference over a stream that arrives ``chunk`` steps at a time; returns every step's prediction."""
    state = None
    outputs = []
    with torch.no_grad():
        for start in range(0, x.size(0), chunk):
            y, state = model(x[start:start + chunk], state, reset[start:start + chunk])
            outputs.append(y)
    return torch.cat(outputs)


def train_truncated_bptt(
    model: StreamModel, x: Tensor, reset: Tensor, target: Tensor, chunk: int, lr: float = 1e-2
) -> list[float]:
    """One pass over the stream, one optimiser step per chunk; returns the loss of each chunk."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    state = None
    losses = []
    for start in range(0, x.size(0), chunk):
        stop = start + chunk
        y, state = model(x[start:stop], state, reset[start:stop])
        loss = nn.functional.mse_loss(y, target[start:stop])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        # Truncation: the next chunk starts from these values but does not backpropagate into this one.
        state = (state[0].detach(), state[1].detach())
        losses.append(loss.item())
    return losses


def main() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    x, reset, target = make_stream(steps=2000, batch=8, generator=generator)
    model = StreamModel()
    losses = train_truncated_bptt(model, x, reset, target, chunk=50)
    tenth = len(losses) // 10
    print(f"truncated BPTT, chunks of 50: mse {sum(losses[:tenth]) / tenth:.3f} (first tenth) -> "
          f"{sum(losses[-tenth:]) / tenth:.3f} (last tenth); predicting 0 scores {target.pow(2).mean():.3f}")

    x_test, reset_test, _ = make_stream(steps=400, batch=4, generator=generator)
    with torch.no_grad():
        whole, _ = model(x_test, None, reset_test)
    chunked = stream_in_chunks(model, x_test, reset_test, chunk=7)
    print(f"chunked inference (7 steps a call, engine {model.lstm.engine!r}) equals one call over the stream, "
          f"bit for bit: {torch.equal(chunked, whole)}")


if __name__ == "__main__":
    main()
