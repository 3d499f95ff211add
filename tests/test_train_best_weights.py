"""The best weights kept in memory: copied at each better evaluation, restored at the end, carried by a resume."""

from __future__ import annotations

import torch
from train_toy import Regression

from lstmkit.train import BestWeights, Callback, TrainConfig, train


class Scripted(Regression):
    """Validation losses given in advance, and the weights at every evaluation recorded."""

    def __init__(self, losses: list[float]) -> None:
        super().__init__()
        self.losses = iter(losses)
        self.seen: list[dict[str, torch.Tensor]] = []

    def evaluate(self) -> float:
        self.seen.append({k: v.clone() for k, v in self.model.state_dict().items()})
        return next(self.losses)


CONFIG = dict(lr=0.05, eval_every=4, patience=0, device="cpu", schedule="constant", max_steps=24)


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_model_ends_with_the_weights_of_the_best_evaluation():
    task = Scripted([5.0, 3.0, 4.0, 2.5, 2.6, 2.7])  # the fourth evaluation (step 16) is the best
    result = train(task, TrainConfig(**CONFIG), None, progress=False, restore_best=True)
    assert result.best_step == 16 and result.best_val_loss == 2.5 and result.steps == 24
    assert _equal(task.model.state_dict(), task.seen[3])
    assert not _equal(task.model.state_dict(), task.seen[5])  # not the last evaluation's weights


def test_without_restore_the_model_keeps_the_last_step_and_the_hook_still_holds_the_best():
    task = Scripted([5.0, 3.0, 4.0, 2.5, 2.6, 2.7])
    keep = BestWeights(restore=False)
    train(task, TrainConfig(**CONFIG), None, progress=False, callbacks=[keep])
    assert keep.evaluation == 4 and keep.row["step"] == 16 and keep.val_loss == 2.5
    assert keep.state is not None and _equal(keep.state, task.seen[3])
    assert not _equal(task.model.state_dict(), task.seen[3])


def test_the_copy_is_not_changed_by_later_steps():
    task = Scripted([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # the first evaluation stays the best
    keep = BestWeights(restore=False)
    train(task, TrainConfig(**CONFIG), None, progress=False, callbacks=[keep])
    assert _equal(keep.state, task.seen[0]) and keep.row["step"] == 4


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.at = step

    def on_step_end(self, trainer) -> None:
        if trainer.step == self.at:
            trainer.stopped = "test"


def test_a_resumed_run_restores_the_best_of_the_whole_run(tmp_path):
    losses = [5.0, 2.0, 4.0, 3.0, 3.5, 3.2]  # the best (step 8) falls before the cut at step 12
    whole = Scripted(losses)
    train(whole, TrainConfig(**CONFIG), tmp_path / "whole", kind="toy", run_config={}, progress=False,
          restore_best=True)
    first = Scripted(losses)
    train(first, TrainConfig(**CONFIG), tmp_path / "cut", kind="toy", run_config={}, progress=False,
          restore_best=True, callbacks=[StopAt(12)])
    second = Scripted(losses[3:])
    result = train(second, TrainConfig(**CONFIG), tmp_path / "cut", kind="toy", run_config={}, progress=False,
                   restore_best=True, resume=True)
    assert result.best_step == 8 and _equal(second.model.state_dict(), whole.model.state_dict())
    assert _equal(second.model.state_dict(), first.seen[1])
