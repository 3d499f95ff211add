"""A guard against divergence: a step whose loss or gradient norm is NaN or infinite is stopped or skipped."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import TrainingDiverged
from .distributed import any_rank


def gradient_norm(model: nn.Module, clip: float) -> float:
    """The total 2-norm of the gradients, clipped to ``clip`` on the way when ``clip`` > 0."""
    params = [p for p in model.parameters() if p.grad is not None]
    if clip:
        return float(nn.utils.clip_grad_norm_(params, clip))
    grads = [p.grad for p in params if p.grad is not None]
    return float(nn.utils.get_total_norm(grads)) if grads else 0.0


class NonFiniteGuard:
    """Decides what a step with a non-finite loss or gradient does: ``skip`` True drops the update (counted in
    :attr:`skipped`), False raises :class:`TrainingDiverged` with a message that says what to do."""

    def __init__(self, skip: bool) -> None:
        self.skip = skip
        self.skipped = 0

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped = int(state.get("skipped", 0))

    def step_ok(self, loss: float, grad_norm: float, device: torch.device, *, step: int, last: Path | None) -> bool:
        """True for a finite step; False for one to skip; raises TrainingDiverged otherwise. Every rank agrees
        (a NaN on one rank reaches all through the averaged gradients, but its loss may be the only sign)."""
        bad = any_rank(not (math.isfinite(loss) and math.isfinite(grad_norm)), device)
        if not bad:
            return True
        if self.skip:
            self.skipped += 1
            return False
        raise TrainingDiverged(
            f"training diverged at step {step}: the loss is {loss:.4g} and the gradient norm {grad_norm:.4g}; "
            f"stopped without applying that step. {_where(last)} Lower the learning rate (--lr), or pass "
            "--skip-nonfinite to skip such steps"
        )

    def check_model(self, model: nn.Module, val_loss: float, device: torch.device, *, step: int,
                    last: Path | None) -> None:
        """Before a checkpoint is written: the weights and the validation loss must be finite. (An update from
        finite gradients can still overflow the weights; no step after it can be skipped back.)"""
        finite = math.isfinite(val_loss) and all(bool(torch.isfinite(p).all()) for p in model.parameters())
        if any_rank(not finite, device):
            raise TrainingDiverged(
                f"training diverged by step {step}: the weights or the validation loss ({val_loss:.4g}) are no "
                f"longer finite; stopped before saving them. {_where(last)} Lower the learning rate (--lr)"
            )


def _where(last: Path | None) -> str:
    if last is None:
        return "Nothing is saved (the run has no output directory)."
    if last.exists():
        return f"The last checkpoint, with finite weights, is {last}."
    return "No checkpoint had been written yet."
