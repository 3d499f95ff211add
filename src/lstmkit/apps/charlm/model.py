"""The char-LM's model: embedding (or one-hot) -> :class:`lstmkit.LSTM` -> linear decoder, and its config.

The model is char-rnn's (Karpathy 2015) and Dive into Deep Learning's (D2L, "Long Short-Term Memory").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ... import engines
from ...modules import LSTM
from ...variants import check_variants


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class CharLMConfig:
    """The model: embedding -> lstmkit.LSTM -> linear decoder."""

    vocab_size: int
    embedding_dim: int = 64  # 0: one-hot input, as D2L does
    hidden_size: int = 256
    num_layers: int = 2
    # between LSTM layers and before the decoder (training only); 0 by default: a few CPU minutes on a corpus of
    # any size do not overfit, and dropout slowed learning there (docs/charlm.md); raise it for long runs
    dropout: float = 0.0
    proj_size: int = 0  # LSTMP (Sak et al. 2014): h_t projected down to this size, 0 for none
    bias: bool = True
    engine: str = "auto"  # any lstmkit engine
    # The LSTM variants (lstmkit.variants.NAMES -> value), e.g. {"peephole": True, "zoneout": 0.1}; those not
    # named keep their defaults, which is torch.nn.LSTM's cell.
    variants: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.vocab_size >= 1, f"vocab_size must be >= 1, got {self.vocab_size}")
        _check(self.embedding_dim >= 0, f"embedding_dim must be >= 0 (0 for one-hot), got {self.embedding_dim}")
        _check(self.hidden_size >= 1, f"hidden_size must be >= 1, got {self.hidden_size}")
        _check(self.num_layers >= 1, f"num_layers must be >= 1, got {self.num_layers}")
        _check(0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}")
        _check(0 <= self.proj_size < self.hidden_size,
               f"proj_size must be in [0, hidden_size={self.hidden_size}), got {self.proj_size}")
        _check(self.engine in engines.ENGINE_CHOICES,
               f"engine must be one of {', '.join(engines.ENGINE_CHOICES)}, got {self.engine!r}")
        _check(isinstance(self.variants, dict), f"variants must be a dict, got {type(self.variants).__name__}")
        try:
            check_variants(**self.variants, proj_size=self.proj_size, bias=self.bias)
        except TypeError as error:
            raise ValueError(str(error)) from None


class CharLM(nn.Module):
    """Embedding (or one-hot) -> :class:`lstmkit.LSTM` -> dropout -> linear decoder to next-character logits."""

    def __init__(self, config: CharLMConfig) -> None:
        super().__init__()
        self.config = config
        V = config.vocab_size
        self.embedding = nn.Embedding(V, config.embedding_dim) if config.embedding_dim else None
        self.lstm = LSTM(
            config.embedding_dim or V,
            config.hidden_size,
            num_layers=config.num_layers,
            bias=config.bias,
            # torch.nn's dropout sits between layers only; with one layer it would do nothing (and warn).
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            proj_size=config.proj_size,
            engine=config.engine,
            **config.variants,
        )
        self.drop = nn.Dropout(config.dropout)
        self.decoder = nn.Linear(config.proj_size or config.hidden_size, V)

    def forward(self, ids: Tensor, state: tuple[Tensor, ...] | None = None) -> tuple[Tensor, tuple[Tensor, ...]]:
        """ids: ``(T, B)`` int64 -> logits ``(T, B, vocab_size)`` and the final state ``(h, c)``.

        state: ``None`` (zeros) or the state a previous call returned (``(h, c, n, m)`` for the sLSTM cell).
        """
        if self.embedding is not None:
            x = self.embedding(ids)  # (T, B, E)
        else:
            x = F.one_hot(ids, self.config.vocab_size).to(self.decoder.weight.dtype)  # (T, B, V)
        out, state = self.lstm(x, state)  # (T, B, H)
        return self.decoder(self.drop(out)), state  # (T, B, V)
