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
    check_eps,
    check_unit_interval,
)
from ._loop import attack
from ._steps import Ball

__all__ = ["pgd", "fgsm"]

Schedule = Literal["linear", "constant"]


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
    start: Tensor | None = None,
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
    start : Tensor, optional
        Where the first run (of each target) starts, projected onto the ball, instead of a random
        or the clean point: for example the smallest-margin points an earlier attack found, to
        refine them. Later restarts start at random. Same shape as ``inputs``.
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
    if schedule not in ("linear", "constant"):
        raise ValueError(f"schedule must be 'linear' or 'constant', got {schedule!r}")
    check_unit_interval(momentum, "momentum", optional=True)

    def make_stepper(batch: Batch) -> _PGDStep:
        if step_size is None:
            base_step = 2.0 * batch.eps if schedule == "linear" else 2.5 * batch.eps / steps
        else:
            base_step = check_eps(step_size, batch.inputs, name="step_size")
        return _PGDStep(base_step, steps=steps, schedule=schedule, momentum=momentum)

    return attack(model, inputs, labels, make_stepper, eps=eps, norm=norm, steps=steps, loss=loss, targeted=targeted,
                  target_classes=target_classes, restarts=restarts, random_start=random_start, keep_best=keep_best,
                  bounds=bounds, generator=generator, callback=callback, start=start)


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


class _PGDStep:
    """PGD's update: a (scheduled) step along the ball's steepest-ascent direction, then momentum."""

    def __init__(self, base_step: Tensor, *, steps: int, schedule: Schedule, momentum: float | None) -> None:
        self.base_step = base_step
        self.steps = steps
        self.schedule = schedule
        self.momentum = momentum

    def start(self, ball: Ball, x: Tensor) -> None:
        self.step_size = self.base_step
        self.x_prev = x

    def subset(self, keep: Tensor) -> None:
        self.step_size, self.x_prev = self.step_size[keep], self.x_prev[keep]

    def step(self, iteration: int, x: Tensor, loss: Tensor, grad: Tensor, ball: Ball) -> Tensor:
        size = self.step_size * (1.0 - iteration / self.steps) if self.schedule == "linear" else self.step_size
        candidate = ball.project_(torch.addcmul(x, ball.per_sample(size), ball.direction(grad)))
        if self.momentum is not None and iteration > 0:
            a = self.momentum
            # x + a (z - x) + (1 - a)(x - x_prev) = a z + 2 (1 - a) x - (1 - a) x_prev,
            # in place on z: three passes over the input instead of six.
            candidate = ball.project_(candidate.mul_(a).add_(x, alpha=2 * (1 - a)).sub_(self.x_prev, alpha=1 - a))
        self.x_prev = x
        return candidate
