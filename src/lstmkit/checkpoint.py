"""Checkpoints: a directory a model can be rebuilt from, written so that a crash never leaves half of one.

A checkpoint holds ``model.safetensors`` (the weights; no pickle), ``config.json`` (``format``, ``version``,
``kind``, the model's config, an ``extra`` dict, and the size and SHA-256 of every other file) and optionally
``trainer.pt`` (what a resumed run needs). :func:`save_checkpoint` writes a fresh ``NAME.tmp`` and swaps it in
with two renames; :func:`load_checkpoint` checks everything and raises :class:`CheckpointError` in one sentence.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import Tensor, nn

from .errors import CheckpointError
from .fileio import atomic_write

__all__ = [
    "FORMAT",
    "VERSION",
    "Checkpoint",
    "load_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
]

FORMAT = "lstmkit-checkpoint"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRAINER = "trainer.pt"
# In a run directory (``lstmkit train --out DIR``) the checkpoints are these subdirectories.
BEST, LAST = "best", "last"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint. ``state_dict`` is on ``map_location``; ``trainer`` is ``None`` unless asked for."""

    path: Path
    kind: str
    config: dict[str, Any]
    extra: dict[str, Any]
    state_dict: dict[str, Tensor]
    trainer: dict[str, Any] | None = None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _as_dict(config: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, dict):
        return dict(config)
    raise TypeError(f"config must be a dataclass instance or a dict, got {type(config).__name__}")


def _recover(path: Path) -> None:
    """Finish a swap that a crash interrupted: ``NAME`` gone but ``NAME.old`` whole means put it back."""
    old = path.with_name(path.name + ".old")
    if not path.exists() and old.is_dir():
        os.replace(old, path)


def save_checkpoint(
    path: str | Path,
    model: nn.Module | dict[str, Tensor],
    config: Any,
    *,
    kind: str,
    extra: dict[str, Any] | None = None,
    trainer: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory at ``path``, replacing any checkpoint there as one step.

    Every file goes into a fresh ``NAME.tmp`` directory (each through :func:`lstmkit.fileio.atomic_write`), then
    ``NAME`` is swapped for it with two renames (``NAME -> NAME.old``, ``NAME.tmp -> NAME``): a reader finds the
    old checkpoint or the new one, whole; after a crash between the renames, ``NAME.old`` is taken back.

    model: a module (its ``state_dict()`` is saved) or a state dict. config: a dataclass or a JSON-able dict,
    saved under ``"config"``. kind: what model this is (``"charlm"``, ``"forecast"``, ...), checked on load.
    extra: more JSON-able data (a vocabulary, metrics). trainer: the resumable training state, tensors and
    plain Python values only (``torch.load(weights_only=True)`` must accept it). Returns ``path``.
    """
    path = Path(path)
    state = model.state_dict() if isinstance(model, nn.Module) else model
    # safetensors refuses tensors that share memory or are not contiguous; a checkpoint owns its copies.
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in state.items()}
    files: dict[str, bytes] = {WEIGHTS: safetensors_save(tensors, metadata={"format": FORMAT, "kind": kind})}
    if trainer is not None:
        buffer = io.BytesIO()
        torch.save(trainer, buffer)
        files[TRAINER] = buffer.getvalue()
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "config": _as_dict(config),
        "extra": extra or {},
        "files": {name: {"bytes": len(data), "sha256": _sha256(data)} for name, data in files.items()},
    }

    _recover(path)
    tmp = path.with_name(path.name + ".tmp")
    old = path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for name, data in files.items():
            with atomic_write(tmp / name, "wb") as handle:
                handle.write(data)
        with atomic_write(tmp / CONFIG, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True)
            handle.write("\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk leaves no half checkpoint behind
        raise
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint directory that ``path`` names: itself, or in a run directory its ``best`` (else ``last``).

    Raises :class:`CheckpointError` when there is no checkpoint there.
    """
    path = Path(path)
    for candidate in (path, path / BEST, path / LAST):
        _recover(candidate)
        if (candidate / CONFIG).is_file():
            return candidate
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}: the directory does not exist")
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}: it is a file; give the directory that `train --out` wrote")
    raise CheckpointError(f"no checkpoint in {path}: no {CONFIG} there nor in {path / BEST} or {path / LAST}")


def load_checkpoint(
    path: str | Path, *, kind: str | None = None, map_location: str | torch.device = "cpu", trainer: bool = False
) -> Checkpoint:
    """Read and validate the checkpoint at ``path`` (see :func:`resolve_checkpoint` for what ``path`` may be).

    kind: when given, a checkpoint of another kind of model is refused. trainer: also load ``trainer.pt``.
    Raises :class:`CheckpointError` naming the directory and what is wrong with it.
    """
    where = resolve_checkpoint(path)
    try:
        manifest = json.loads((where / CONFIG).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"checkpoint {where} is corrupted: {CONFIG} is not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{where} is not an lstmkit checkpoint: {CONFIG} has no \"format\": \"{FORMAT}\"")
    if manifest.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {where} has format version {manifest.get('version')!r}; this lstmkit reads version {VERSION}"
        )
    found = manifest.get("kind")
    if kind is not None and found != kind:
        raise CheckpointError(f"checkpoint {where} holds a {found!r} model, not a {kind!r} model")
    listed = manifest.get("files")
    if not isinstance(listed, dict) or WEIGHTS not in listed:
        raise CheckpointError(f"checkpoint {where} is corrupted: {CONFIG} does not list {WEIGHTS}")

    def read(name: str) -> bytes:
        file = where / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {where} is incomplete: {name} is missing")
        data = file.read_bytes()
        expected = listed[name]
        if len(data) != expected.get("bytes"):
            raise CheckpointError(
                f"checkpoint {where} is truncated: {name} has {len(data)} bytes, expected {expected.get('bytes')}"
            )
        if _sha256(data) != expected.get("sha256"):
            raise CheckpointError(f"checkpoint {where} is corrupted: {name} does not match its SHA-256 in {CONFIG}")
        return data

    try:
        state_dict = safetensors_load(read(WEIGHTS))
    except SafetensorError as error:
        raise CheckpointError(f"checkpoint {where} is corrupted: {WEIGHTS} does not parse ({error})") from None
    state_dict = {name: t.to(map_location) for name, t in state_dict.items()}
    trainer_state = None
    if trainer:
        if TRAINER not in listed:
            raise CheckpointError(f"checkpoint {where} has no training state ({TRAINER}) to resume from")
        trainer_state = torch.load(io.BytesIO(read(TRAINER)), map_location=map_location, weights_only=True)
    return Checkpoint(
        path=where,
        kind=str(found),
        config=dict(manifest.get("config") or {}),
        extra=dict(manifest.get("extra") or {}),
        state_dict=state_dict,
        trainer=trainer_state,
    )
