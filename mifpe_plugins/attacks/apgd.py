"""Auto-PGD (Croce & Hein, ICML 2020) with any per-sample loss."""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from torch import Tensor

from ..losses import Loss
from ._common import (
    Bounds,
    Callback,
    EpsLike,
    Model,
    check_unit_interval,
)
from ._loop import attack
from ._steps import Ball

__all__ = ["apgd", "apgd_checkpoints"]


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations at which APGD may halve its step size (Croce & Hein 2020, Sec. 3.2).

    ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``;
    checkpoints ``w_j = ceil(p_j * steps)``, strictly increasing, inside ``(0, steps)``.
    """
    # Exact rational arithmetic: in floats 0.57 * 100 rounds up to 58.
    fractions = [Fraction(0), Fraction(22, 100)]
    while fractions[-1] < 1:
        gap = fractions[-1] - fractions[-2] - Fraction(3, 100)
        fractions.append(fractions[-1] + max(gap, Fraction(6, 100)))
    points = sorted({math.ceil(p * steps) for p in fractions[1:]})
    return [w for w in points if 0 < w < steps]


def apgd(
    model: Model,
    inputs: Tensor,
    labels: Tensor,
    *,
    eps: EpsLike,
    norm: str | float = "linf",
    steps: int = 100,
    loss: str | Loss = "mifpe",
    targeted: bool = False,
    target_classes: int | None = None,
    restarts: int = 1,
    random_start: bool = True,
    momentum: float = 0.75,
    rho: float = 0.75,
    start: Tensor | None = None,
    bounds: Bounds = (0.0, 1.0),
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Auto-PGD with any loss: ``loss="dlr"`` is APGD-DLR, ``loss="mifpe"`` is the MIFPE paper's
    "APGD_DLR with MIFPE" (MIFPE in place of DLR, Table 2), ``target_classes=9`` with
    ``loss="dlr"`` is APGD-T.

    Algorithm (Croce & Hein 2020, Alg. 1): step size ``eta = 2 eps``; the first step is a plain
    projected step, later ones use momentum ``x <- P(x + a (z - x) + (1 - a)(x - x_prev))`` with
    ``a = momentum``; at each checkpoint ``w_j`` (:func:`apgd_checkpoints`) a sample's step is halved
    and it restarts from its best point when (1) its loss rose in fewer than ``rho`` of the steps
    since ``w_{j-1}``, or (2) its step was not halved at ``w_{j-1}`` and its best loss has not
    improved since. Condition (1) is the paper's strict ``<``; AutoAttack's code uses ``<=``.
    A restart from the best point also resets the momentum there (AutoAttack carries the last
    displacement over). The first adversarial example found for each sample is returned, else
    its highest-loss point. A fooled sample stops there and every 5 steps fooled samples leave the
    batch; step sizes and checkpoints are per sample, so this changes no result.

    Parameters
    ----------
    steps : int
        Number of updates. The gradient is evaluated at the start and after every update but the
        last, whose point is scored by a forward pass: ``steps`` gradient evaluations per run.
    rho : float
        Fraction of increasing steps below which the step is halved (condition 1).
    Other parameters
        As in :func:`mifpe_plugins.attacks.pgd`.

    Returns
    -------
    Tensor
        Adversarial inputs, same shape, dtype and device as ``inputs``.
    """
    check_unit_interval(momentum, "momentum")
    check_unit_interval(rho, "rho")
    return attack(model, inputs, labels,
                  lambda batch: _APGDStep(checkpoints=apgd_checkpoints(steps), momentum=momentum, rho=rho),
                  eps=eps, norm=norm, steps=steps, loss=loss, targeted=targeted, target_classes=target_classes,
                  restarts=restarts, random_start=random_start, keep_best=True, bounds=bounds, generator=generator,
                  callback=callback, start=start)


class _APGDStep:
    """APGD's update (Croce & Hein 2020, Alg. 1): momentum steps, and at each checkpoint a per-sample
    step halving with a restart from the sample's best point."""

    _PER_SAMPLE = ("step_size", "x_prev", "prev_loss", "best_loss", "best_x", "best_grad", "increases",
                   "halved_last", "best_at_last_checkpoint")

    def __init__(self, *, checkpoints: list[int], momentum: float, rho: float) -> None:
        self.checkpoints = set(checkpoints)
        self.momentum = momentum
        self.rho = rho

    def start(self, ball: Ball, x: Tensor) -> None:
        self.step_size = 2.0 * ball.eps
        self.x_prev = x
        self.increases = torch.zeros_like(ball.eps)
        self.halved_last = torch.ones_like(ball.eps, dtype=torch.bool)
        self.since_checkpoint = 0
        # Set from the first evaluated point.
        self.prev_loss = self.best_loss = self.best_x = self.best_grad = self.best_at_last_checkpoint = None

    def subset(self, keep: Tensor) -> None:
        for name in self._PER_SAMPLE:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[keep])

    def step(self, iteration: int, x: Tensor, loss: Tensor, grad: Tensor, ball: Ball) -> Tensor:
        if iteration == 0:
            self.best_loss, self.best_x, self.best_grad = loss, x, grad
            self.prev_loss = self.best_at_last_checkpoint = loss
        else:
            x, grad = self._track(iteration, x, loss, grad, ball)
        candidate = ball.project(x + ball.per_sample(self.step_size) * ball.direction(grad))
        if iteration > 0:
            a = self.momentum
            candidate = ball.project(x + a * (candidate - x) + (1 - a) * (x - self.x_prev))
        self.x_prev = x
        return candidate

    def _track(self, iteration: int, x: Tensor, loss: Tensor, grad: Tensor, ball: Ball) -> tuple[Tensor, Tensor]:
        """Count increases, keep the best point, and at a checkpoint halve the step where (1) the loss
        rose in fewer than ``rho`` of the steps since the last one, or (2) the step was not halved
        there and the best loss has not improved since; those samples restart from their best point."""
        self.increases = self.increases + (loss > self.prev_loss).to(self.increases.dtype)
        self.prev_loss = loss
        improved = loss > self.best_loss
        view = ball.per_sample(improved)
        self.best_x = torch.where(view, x, self.best_x)
        self.best_grad = torch.where(view, grad, self.best_grad)
        self.best_loss = torch.where(improved, loss, self.best_loss)
        self.since_checkpoint += 1
        if iteration not in self.checkpoints:
            return x, grad
        oscillating = self.increases < self.rho * self.since_checkpoint
        stalled = ~self.halved_last & (self.best_loss <= self.best_at_last_checkpoint)
        halve = oscillating | stalled
        self.step_size = torch.where(halve, self.step_size / 2, self.step_size)
        view = ball.per_sample(halve)
        x = torch.where(view, self.best_x, x)
        self.x_prev = torch.where(view, self.best_x, self.x_prev)
        grad = torch.where(view, self.best_grad, grad)
        self.halved_last = halve
        self.best_at_last_checkpoint = self.best_loss
        self.increases = torch.zeros_like(self.increases)
        self.since_checkpoint = 0
        return x, grad
