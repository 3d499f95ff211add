"""The gate viewer of a trained character model: ``lstmkit inspect``'s work, from a checkpoint to the files.

An application of :mod:`lstmkit.viz` (which knows nothing of checkpoints or text) to :mod:`lstmkit.apps.charlm`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..viz import Inspection, inspect_sequence, record_charlm
from .charlm import load_model, preprocess

__all__ = ["inspect_charlm"]


def inspect_charlm(checkpoint: str | Path, text: str, out: str | Path, **options: Any) -> Inspection:
    """Load a ``lstmkit train`` checkpoint, run it over ``text`` and write everything :func:`inspect_sequence` does.

    The text is preprocessed as the model's training text was; characters the model never saw raise
    ``ValueError`` naming them.
    """
    model, vocab, run = load_model(checkpoint)
    text = preprocess(text, run.data.preprocess)
    if not text:
        raise ValueError("text is empty (after the model's preprocessing)")
    gates = record_charlm(model, vocab.encode(text))
    options.setdefault("title", f"lstmkit gate viewer: {Path(checkpoint).name}")
    return inspect_sequence(gates, list(text), out, **options)
