"""The gate viewer of a trained character model: ``lstmkit inspect``'s work, from a checkpoint to the files.

An application of :mod:`lstmkit.viz` (which knows nothing of checkpoints or text) to :mod:`lstmkit.apps.charlm`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import TextError
from ..inspect import GateRecord, record
from ..viz import Inspection, inspect_sequence
from .charlm import CharLM, load_model, preprocess

__all__ = ["inspect_charlm", "record_charlm"]


def record_charlm(model: CharLM, ids: torch.Tensor) -> GateRecord:
    """The gates of a character model reading ``ids`` ``(T,)`` from a zero state."""
    weight = model.decoder.weight
    with torch.no_grad():
        if model.embedding is not None:
            x = model.embedding(ids.to(weight.device))  # (T, E)
        else:
            x = F.one_hot(ids.to(weight.device), model.config.vocab_size).to(weight.dtype)  # (T, V)
        return record(model.lstm, x.unsqueeze(1))  # (T, 1, E): one sequence


def inspect_charlm(checkpoint: str | Path, text: str, out: str | Path, **options: Any) -> Inspection:
    """Load a ``lstmkit train`` checkpoint, run it over ``text`` and write everything :func:`inspect_sequence` does.

    The text is preprocessed as the model's training text was; characters the model never saw are read as its
    unknown class. :class:`TextError` for a text that is empty after preprocessing.
    """
    model, vocab, run = load_model(checkpoint)
    text = preprocess(text, run.data.preprocess)
    if not text:
        raise TextError("the text is empty (after the model's preprocessing)")
    gates = record_charlm(model, vocab.encode(text))
    options.setdefault("title", f"lstmkit gate viewer: {Path(checkpoint).name}")
    return inspect_sequence(gates, list(text), out, **options)
