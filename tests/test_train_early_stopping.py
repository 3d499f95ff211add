"""Early stopping: stops after `patience` evaluations without improvement, and its count survives a resume."""

from __future__ import annotations

from types import SimpleNamespace

from train_toy import Regression

from lstmkit.train import EarlyStopping, TrainConfig, train


def test_it_counts_evaluations_since_the_best_and_stops_at_patience():
    hook = EarlyStopping(patience=3)
    trainer = SimpleNamespace(improved=True, stopped="")
    for improved in (True, False, False, True, False, False):
        trainer.improved = improved
        hook.on_evaluate(trainer, {})
        assert trainer.stopped == ""
    trainer.improved = False
    hook.on_evaluate(trainer, {})
    assert trainer.stopped == "early_stopping" and hook.state_dict() == {"bad_evals": 3}
    restored = EarlyStopping(patience=3)
    restored.load_state_dict(hook.state_dict())
    assert restored.bad_evals == 3


def test_patience_zero_never_stops():
    hook, trainer = EarlyStopping(0), SimpleNamespace(improved=False, stopped="")
    for _ in range(50):
        hook.on_evaluate(trainer, {})
    assert trainer.stopped == ""


class Scripted(Regression):
    """Validation losses given in advance."""

    def __init__(self, losses: list[float]) -> None:
        super().__init__()
        self.losses = iter(losses)

    def evaluate(self) -> float:
        return next(self.losses)


def test_a_run_stops_at_the_evaluation_that_exhausts_patience(tmp_path):
    config = TrainConfig(lr=0.01, eval_every=2, patience=2, max_steps=200, device="cpu")
    result = train(Scripted([5.0, 4.0, 4.5, 3.9, 4.0, 4.1, 1.0]), config, tmp_path, kind="toy", run_config={},
                   progress=False)
    assert result.stopped == "early_stopping" and result.steps == 12 and result.best_val_loss == 3.9
