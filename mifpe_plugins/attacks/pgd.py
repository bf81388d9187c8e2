"""Projected gradient descent with the MIFPE paper's protocol, and FGSM as its one-step case."""

from __future__ import annotations

from typing import Literal

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
    check_eps,
    check_positive_int,
    check_run_settings,
    in_training_mode,
    prepare,
    resolve_generator,
    resolve_norm,
)
from ._steps import Ball

__all__ = ["pgd", "fgsm"]

Schedule = Literal["linear", "constant"]

# Shrink the attacked batch to the not-yet-fooled samples every _COMPACT_EVERY steps, when at most
# _COMPACT_BELOW of the current rows are still active.
_COMPACT_EVERY = 5
_COMPACT_BELOW = 0.75


def pgd(
    model: Model,
    inputs: Tensor,
    labels: Tensor,
    *,
    eps: EpsLike,
    norm: str | float = "linf",
    steps: int = 100,
    step_size: EpsLike | None = None,
    schedule: Schedule = "linear",
    momentum: float | None = 0.75,
    loss: str | Loss = "mifpe",
    targeted: bool = False,
    target_classes: int | None = None,
    restarts: int = 1,
    random_start: bool = True,
    keep_best: bool = True,
    bounds: Bounds = (0.0, 1.0),
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Projected gradient ascent on a per-sample loss; defaults follow the MIFPE paper's Table 1.

    Protocol (MIFPE paper, Sec. 5): 100 steps, step size ``2 eps (1 - i / I)`` at step ``i`` of
    ``I``, APGD-style momentum 0.75, one start from a uniform point of the ball, the first
    successful adversarial example of each sample kept, and only not-yet-fooled samples move.

    Fooled samples cost nothing: every 5 steps the attacked batch shrinks to the samples still
    robust (the only host synchronisation in the loop, once per 5 steps), and the run ends when
    none is left. With a ``callback`` the whole batch is kept so that every report covers it.

    Parameters
    ----------
    model : callable
        Maps inputs (B, ...) to logits (B, K). Used as given (call ``model.eval()`` first); its
        parameters' ``.grad`` and its mode are never touched.
    inputs : Tensor
        Clean inputs (B, ...), any floating dtype; the attack runs in that dtype.
    labels : Tensor
        True classes (B,), or the target classes when ``targeted=True``.
    eps : float or Tensor
        Radius of the threat model, a number or per-sample (B,).
    norm : {"linf", "l2"}
        Threat model.
    steps : int
        Number of gradient evaluations per run (``I``).
    step_size : float or Tensor, optional
        Base step size. With ``schedule="linear"`` the step at iteration ``i`` is
        ``step_size * (1 - i / I)`` (default ``2 eps``); with ``"constant"`` it is ``step_size``
        (default ``2.5 eps / I``, Madry et al.).
    schedule : {"linear", "constant"}
        Step-size schedule (the paper's Table 3 ablates it).
    momentum : float or None
        ``alpha`` of APGD's update ``x <- P(x + alpha (z - x) + (1 - alpha)(x - x_prev))``;
        0.75 in the paper, ``None`` for plain PGD.
    loss : str or Loss
        A name for :func:`mifpe_plugins.losses.get_loss` or a callable
        ``loss(logits, labels, *, targeted=False) -> (B,)``. Default ``"mifpe"`` (eq. 7 / eq. 8).
    targeted : bool
        ``labels`` are targets; success means predicting the target.
    target_classes : int, optional
        Multi-targeted attack: run a targeted attack against each of the ``target_classes``
        highest-scoring wrong classes in turn (each with ``steps`` steps and ``restarts`` runs);
        success is any misclassification. Only with ``targeted=False``.
    restarts : int
        Number of runs; later runs only move samples not fooled yet. Needs ``random_start``.
    random_start : bool
        Start from a uniform point of the ball (MIFPE paper, Sec. 2) instead of the clean input.
    keep_best : bool
        The paper's protocol (default): a sample stops at its first adversarial example and that
        example is returned; a sample never fooled returns its highest-loss point. ``False`` is
        plain PGD as in Madry et al. and torchattacks/Foolbox: every sample takes every step and
        the last iterate is returned (with ``restarts > 1``, the last run's for samples not fooled
        by an earlier run).
    bounds : (float, float) or None
        Valid input range; inputs outside it are an error.
    generator : torch.Generator, optional
        Source of randomness; a fresh generator seeded with 0 when omitted (the global RNG is
        never used).
    callback : callable, optional
        Called with a :class:`StepInfo` after every gradient evaluation.

    Returns
    -------
    Tensor
        Adversarial inputs, same shape, dtype and device as ``inputs``. For samples never fooled,
        the point of highest loss found.
    """
    norm_name = resolve_norm(norm)
    check_positive_int(steps, "steps")
    if schedule not in ("linear", "constant"):
        raise ValueError(f"schedule must be 'linear' or 'constant', got {schedule!r}")
    if momentum is not None and not 0 < momentum <= 1:
        raise ValueError(f"momentum must be in (0, 1] or None, got {momentum!r}")
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
    if step_size is None:
        base_step = 2.0 * batch.eps if schedule == "linear" else 2.5 * batch.eps / steps
    else:
        base_step = check_eps(step_size, batch.inputs, name="step_size")
    runner = _PGDRunner(
        model, batch, norm=norm_name, steps=steps, base_step=base_step, schedule=schedule,
        momentum=momentum, restarts=restarts, random_start=random_start, keep_best=keep_best,
        generator=resolve_generator(generator, batch.inputs.device), callback=callback,
    )
    return runner.run(targeted=targeted, target_classes=target_classes)


def fgsm(
    model: Model,
    inputs: Tensor,
    labels: Tensor,
    *,
    eps: EpsLike,
    norm: str | float = "linf",
    step_size: EpsLike | None = None,
    loss: str | Loss = "mifpe",
    targeted: bool = False,
    random_start: bool = False,
    bounds: Bounds = (0.0, 1.0),
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Fast gradient (sign) method: one step of size ``step_size`` (default ``eps``), projected.

    ``x' = P(x + eps * sign(grad))`` for L-inf, ``x' = P(x + eps * grad / ||grad||_2)`` for L2, with
    any loss: ``loss="mifpe"`` is MIFPE-FGSM (MIFPE paper, Table 2), ``loss="njs"``/``"hns"`` is
    FGSM++ (PGD++ paper). As in :func:`pgd` with ``keep_best=True``, samples already
    misclassified (untargeted) are returned unchanged, and a sample the step does not fool comes
    back at whichever of the clean and the stepped point has the higher loss. Parameters as in
    :func:`pgd`.
    """
    return pgd(
        model, inputs, labels, eps=eps, norm=norm, steps=1,
        step_size=eps if step_size is None else step_size, schedule="constant", momentum=None,
        loss=loss, targeted=targeted, restarts=1, random_start=random_start, bounds=bounds,
        generator=generator, callback=callback,
    )


class _PGDRunner:
    def __init__(
        self,
        model: Model,
        batch: Batch,
        *,
        norm: str,
        steps: int,
        base_step: Tensor,
        schedule: Schedule,
        momentum: float | None,
        restarts: int,
        random_start: bool,
        keep_best: bool,
        generator: torch.Generator,
        callback: Callback | None,
    ) -> None:
        self.model = model
        self.batch = batch
        self.ball = Ball(norm, batch.inputs, batch.eps, batch.bounds)
        self.steps = steps
        self.base_step = base_step
        self.schedule = schedule
        self.momentum = momentum
        self.restarts = restarts
        self.random_start = random_start
        self.keep_best = keep_best
        self.generator = generator
        self.callback = callback

    def run(self, *, targeted: bool, target_classes: int | None) -> Tensor:
        b = self.batch
        outcome = Outcome(b.inputs)
        runs = attack_objectives(self.model, b, targeted=targeted, target_classes=target_classes)
        if self.keep_best:
            outcome.found = runs[0][1].success(b.clean_logits)
        for target, objective in runs:
            for restart in range(self.restarts):
                self._run_once(objective, outcome, restart=restart, target=target)
        return outcome.result()

    def _step_sizes(self, iteration: int, base_step: Tensor) -> Tensor:
        if self.schedule == "linear":
            return base_step * (1.0 - iteration / self.steps)
        return base_step

    def _run_once(self, objective: Objective, outcome: Outcome, *, restart: int, target: int | None) -> None:
        ball = self.ball
        base_step = self.base_step
        x = ball.random_start(self.generator) if self.random_start else ball.center
        # Samples fooled before this run starts stay where they are.
        run_start_found = outcome.found.clone()
        x = torch.where(ball.per_sample(run_start_found), outcome.best, x)
        x_prev = x
        # With the paper's protocol fooled samples never move again, so every few steps the batch
        # is shrunk to the samples still being attacked (one host sync per check). Not with a
        # callback, which reports on the whole batch, nor for plain PGD, which moves every sample,
        # nor in train() mode, where BatchNorm cannot take the one-row batches shrinking can leave.
        compact = self.keep_best and self.callback is None and not in_training_mode(self.model)
        index: Tensor | None = None  # positions in the full batch of the rows being attacked
        for iteration in range(self.steps):
            if compact and iteration % _COMPACT_EVERY == 0:
                active = ~(outcome.found if index is None else outcome.found[index])
                n_active = int(active.sum())
                if n_active == 0:
                    return
                if n_active <= _COMPACT_BELOW * active.numel():
                    keep = active.nonzero().squeeze(1)
                    index = keep if index is None else index[keep]
                    x, x_prev, base_step = x[keep], x_prev[keep], base_step[keep]
                    ball, objective = ball.subset(keep), objective.subset(keep)
            loss, grad, logits = objective(x)
            success = objective.success(logits)
            if self.keep_best:
                outcome.record(success, x, loss, index)
            if self.callback is not None:
                succeeded = outcome.found if self.keep_best else run_start_found | success
                self._report(objective, iteration, restart, target, loss, logits, succeeded)
            step = ball.per_sample(self._step_sizes(iteration, base_step))
            candidate = ball.project_(torch.addcmul(x, step, ball.direction(grad)))
            if self.momentum is not None and iteration > 0:
                a = self.momentum
                # x + a (z - x) + (1 - a)(x - x_prev) = a z + 2 (1 - a) x - (1 - a) x_prev,
                # in place on z: three passes over the input instead of six.
                candidate = ball.project_(
                    candidate.mul_(a).add_(x, alpha=2 * (1 - a)).sub_(x_prev, alpha=1 - a)
                )
            x_prev = x
            # Plain PGD moves every sample except those an earlier run already fooled.
            if self.keep_best:
                frozen = outcome.found if index is None else outcome.found[index]
            else:
                frozen = run_start_found
            x = torch.where(ball.per_sample(frozen), x, candidate)
        with torch.no_grad():
            logits = self.model(x)
            success = objective.success(logits)
            if self.keep_best:
                loss = objective.loss(logits, objective.loss_labels, targeted=objective.targeted, **objective.extra)
                outcome.record(success, x, loss, index)
            else:
                outcome.take_last(x, success, keep=run_start_found)

    def _report(self, objective, iteration, restart, target, loss, logits, found) -> None:
        self.callback(
            StepInfo(
                iteration=iteration, restart=restart, target=target, loss=loss,
                margin=objective.margin(logits), success=found.clone(),
            )
        )
