"""Checkpoints: a round trip keeps everything; every kind of damage gets one clear CheckpointError."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from lstmkit.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from lstmkit.errors import CheckpointError


@dataclass(frozen=True)
class Config:
    width: int = 3
    name: str = "tiny"


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def test_round_trip_keeps_weights_config_extra_and_trainer(tmp_path):
    model = _model()
    trainer = {"step": 7, "rng": torch.get_rng_state(), "history": [{"loss": 1.5}], "carry": (torch.ones(2),)}
    save_checkpoint(tmp_path / "ck", model, Config(), kind="toy", extra={"vocabulary": ["a", "b"]}, trainer=trainer)
    ck = load_checkpoint(tmp_path / "ck", kind="toy", trainer=True)
    assert ck.kind == "toy" and ck.config == {"width": 3, "name": "tiny"} and ck.extra == {"vocabulary": ["a", "b"]}
    for name, value in model.state_dict().items():
        assert torch.equal(ck.state_dict[name], value)
    assert ck.trainer is not None and ck.trainer["step"] == 7 and torch.equal(ck.trainer["rng"], trainer["rng"])
    assert ck.trainer["history"] == [{"loss": 1.5}] and torch.equal(ck.trainer["carry"][0], torch.ones(2))


def test_saving_again_replaces_the_checkpoint_whole(tmp_path):
    first, second = _model(), _model()
    save_checkpoint(tmp_path / "ck", first, {"v": 1}, kind="toy")
    save_checkpoint(tmp_path / "ck", second, {"v": 2}, kind="toy")
    ck = load_checkpoint(tmp_path / "ck")
    assert ck.config == {"v": 2}
    assert torch.equal(ck.state_dict["0.weight"], second.state_dict()["0.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temporary or old directory left


def test_a_crash_between_the_two_renames_leaves_the_old_checkpoint_usable(tmp_path):
    model = _model()
    save_checkpoint(tmp_path / "ck", model, {"v": 1}, kind="toy")
    os.replace(tmp_path / "ck", tmp_path / "ck.old")  # as if killed after NAME -> NAME.old
    (tmp_path / "ck.tmp").mkdir()  # and a half-written new one beside it
    assert load_checkpoint(tmp_path / "ck").config == {"v": 1}
    save_checkpoint(tmp_path / "ck", model, {"v": 2}, kind="toy")
    assert load_checkpoint(tmp_path / "ck").config == {"v": 2}


def test_a_run_directory_resolves_to_best_then_last(tmp_path):
    save_checkpoint(tmp_path / "last", _model(), {"v": "last"}, kind="toy")
    assert resolve_checkpoint(tmp_path) == tmp_path / "last"
    save_checkpoint(tmp_path / "best", _model(), {"v": "best"}, kind="toy")
    assert load_checkpoint(tmp_path).config == {"v": "best"}


def _damage(path, how: str) -> None:
    weights = path / "model.safetensors"
    if how == "truncated":
        weights.write_bytes(weights.read_bytes()[:-10])
    elif how == "corrupted":
        data = bytearray(weights.read_bytes())
        data[-5] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif how == "weights missing":
        weights.unlink()
    elif how == "config not json":
        (path / "config.json").write_text('{"format": "lstmkit-chec')
    elif how == "not a checkpoint":
        (path / "config.json").write_text(json.dumps({"hello": 1}))
    elif how == "future version":
        config = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**config, "version": 99}))


@pytest.mark.parametrize(
    "how, message",
    [
        ("truncated", "is truncated"),
        ("corrupted", "is corrupted"),
        ("weights missing", "model.safetensors is missing"),
        ("config not json", "not valid JSON"),
        ("not a checkpoint", "not an lstmkit checkpoint"),
        ("future version", "format version 99"),
    ],
)
def test_damage_is_named(tmp_path, how, message):
    save_checkpoint(tmp_path / "ck", _model(), {"v": 1}, kind="toy")
    _damage(tmp_path / "ck", how)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "ck")


def test_missing_other_kind_and_no_trainer_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        load_checkpoint(tmp_path / "empty")
    save_checkpoint(tmp_path / "ck", _model(), {"v": 1}, kind="forecast")
    with pytest.raises(CheckpointError, match="holds a 'forecast' model, not a 'charlm' model"):
        load_checkpoint(tmp_path / "ck", kind="charlm")
    with pytest.raises(CheckpointError, match="no training state"):
        load_checkpoint(tmp_path / "ck", trainer=True)
