"""The checkpoints hook: best/ follows the lowest validation loss, last/ the latest evaluation."""

from __future__ import annotations

from test_train_early_stopping import Scripted

from lstmkit.checkpoint import load_checkpoint
from lstmkit.train import TrainConfig, train


def test_best_keeps_the_lowest_validation_loss_and_last_the_latest(tmp_path):
    config = TrainConfig(lr=0.01, eval_every=3, patience=0, max_steps=12, device="cpu")
    train(Scripted([5.0, 2.0, 3.0, 4.0]), config, tmp_path, kind="toy", run_config={"w": 1}, extra={"note": "x"},
          progress=False)
    best = load_checkpoint(tmp_path / "best", kind="toy")
    last = load_checkpoint(tmp_path / "last", kind="toy", trainer=True)
    assert best.extra == {"note": "x", "step": 6, "val_loss": 2.0} and best.config == {"w": 1}
    assert last.extra == {"note": "x", "step": 12, "val_loss": 4.0}
    assert last.trainer is not None and last.trainer["step"] == 12 and last.trainer["best"] == 2.0
    assert last.trainer["hooks"]["EarlyStopping"] == {"bad_evals": 2}
