"""Auto-PGD (Croce & Hein, ICML 2020) with any per-sample loss."""

from __future__ import annotations

import math
from fractions import Fraction

import torch
from torch import Tensor

from ..losses import Loss
from ._common import (
    Batch,
    Bounds,
    Callback,
    EpsLike,
    Model,
    Objective,
    Outcome,
    StepInfo,
    attack_objectives,
    check_positive_int,
    check_run_settings,
    prepare,
    resolve_generator,
    resolve_norm,
)
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
    displacement over). All samples keep moving, as in the paper; the first adversarial example
    found for each sample is returned, else its highest-loss point.

    Parameters
    ----------
    steps : int
        Number of iterations (gradient evaluations after the initial one).
    rho : float
        Fraction of increasing steps below which the step is halved (condition 1).
    Other parameters
        As in :func:`mifpe_plugins.attacks.pgd`.

    Returns
    -------
    Tensor
        Adversarial inputs, same shape, dtype and device as ``inputs``.
    """
    norm_name = resolve_norm(norm)
    check_positive_int(steps, "steps")
    if not 0 < momentum <= 1:
        raise ValueError(f"momentum must be in (0, 1], got {momentum!r}")
    if not 0 < rho <= 1:
        raise ValueError(f"rho must be in (0, 1], got {rho!r}")
    check_run_settings(
        restarts=restarts, random_start=random_start, targeted=targeted,
        target_classes=target_classes,
    )
    batch = prepare(
        model, inputs, labels, eps=eps, bounds=bounds, loss=loss,
        targeted=targeted or target_classes is not None,
    )
    if batch is None:
        return inputs.detach().clone()
    runner = _APGDRunner(
        model, batch, norm=norm_name, steps=steps, momentum=momentum, rho=rho,
        random_start=random_start, generator=resolve_generator(generator, batch.inputs.device),
        callback=callback,
    )
    state = Outcome(batch.inputs)
    runs = attack_objectives(model, batch, targeted=targeted, target_classes=target_classes)
    state.found = runs[0][1].success(batch.clean_logits)
    for target, objective in runs:
        for restart in range(restarts):
            runner.run(objective, state, restart=restart, target=target)
    return state.result()


class _APGDRunner:
    def __init__(
        self,
        model: Model,
        batch: Batch,
        *,
        norm: str,
        steps: int,
        momentum: float,
        rho: float,
        random_start: bool,
        generator: torch.Generator,
        callback: Callback | None,
    ) -> None:
        self.model = model
        self.batch = batch
        self.ball = Ball(norm, batch.inputs, batch.eps, batch.bounds)
        self.steps = steps
        self.momentum = momentum
        self.rho = rho
        self.random_start = random_start
        self.generator = generator
        self.callback = callback
        self.checkpoints = set(apgd_checkpoints(steps))

    def run(self, objective: Objective, state: Outcome, *, restart: int, target: int | None) -> None:
        ball = self.ball
        x = ball.random_start(self.generator) if self.random_start else ball.center
        loss, grad, logits = objective(x)
        state.record(objective.success(logits), x, loss)
        self._report(objective, 0, restart, target, loss, logits, state)

        step = 2.0 * self.batch.eps
        best_loss, best_x, best_grad = loss, x, grad
        prev_loss = loss
        x_prev = x
        increases = torch.zeros_like(loss)
        since_checkpoint = 0
        halved_last = torch.ones_like(loss, dtype=torch.bool)
        best_at_last_checkpoint = best_loss

        for iteration in range(self.steps):
            candidate = ball.project(x + ball.per_sample(step) * ball.direction(grad))
            if iteration > 0:
                a = self.momentum
                candidate = ball.project(x + a * (candidate - x) + (1 - a) * (x - x_prev))
            x_prev, x = x, candidate
            loss, grad, logits = objective(x)
            state.record(objective.success(logits), x, loss)
            self._report(objective, iteration + 1, restart, target, loss, logits, state)

            increases = increases + (loss > prev_loss).to(increases.dtype)
            prev_loss = loss
            improved = loss > best_loss
            view = ball.per_sample(improved)
            best_x = torch.where(view, x, best_x)
            best_grad = torch.where(view, grad, best_grad)
            best_loss = torch.where(improved, loss, best_loss)
            since_checkpoint += 1

            if iteration + 1 in self.checkpoints:
                oscillating = increases < self.rho * since_checkpoint
                stalled = ~halved_last & (best_loss <= best_at_last_checkpoint)
                halve = oscillating | stalled
                step = torch.where(halve, step / 2, step)
                view = ball.per_sample(halve)
                x = torch.where(view, best_x, x)
                x_prev = torch.where(view, best_x, x_prev)
                grad = torch.where(view, best_grad, grad)
                halved_last = halve
                best_at_last_checkpoint = best_loss
                increases = torch.zeros_like(increases)
                since_checkpoint = 0

    def _report(self, objective, iteration, restart, target, loss, logits, state: Outcome) -> None:
        if self.callback is None:
            return
        self.callback(
            StepInfo(
                iteration=iteration, restart=restart, target=target, loss=loss,
                margin=objective.margin(logits), success=state.found.clone(),
            )
        )
