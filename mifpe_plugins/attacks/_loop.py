"""The one outer loop of the iterative attacks: targets x restarts, the outcome, batch shrinking.

PGD and APGD differ only in how they turn a gradient into the next point; that is a
:class:`Stepper`. Everything else -- start points, recording the first adversarial example,
dropping fooled samples from the batch, reporting to the callback, scoring the last iterate -- is
written once here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

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
    check_start,
    in_training_mode,
    prepare,
    resolve_generator,
    resolve_norm,
)
from ._steps import Ball

# Shrink the attacked batch to the not-yet-fooled samples every _COMPACT_EVERY steps, when at most
# _COMPACT_BELOW of the current rows are still active.
_COMPACT_EVERY = 5
_COMPACT_BELOW = 0.75


_TALLIES: ContextVar[list[Tensor] | None] = ContextVar("mifpe_gradient_tallies", default=None)


@contextmanager
def per_sample_gradients() -> Iterator[list[Tensor]]:
    """Inside the block, every iterative attack call appends to the yielded list its per-sample
    count of loss-gradient evaluations (int64, shape (B,)): the steps each sample took, summed over
    targets and restarts. Batch shrinking makes these differ per sample; nothing syncs the host."""
    tallies: list[Tensor] = []
    token = _TALLIES.set(tallies)
    try:
        yield tallies
    finally:
        _TALLIES.reset(token)


class Stepper(Protocol):
    """An attack's update rule, holding whatever per-sample state it needs (step sizes, momentum)."""

    def start(self, ball: Ball, x: Tensor) -> None:
        """Reset the state for a run starting at ``x`` (all rows of the batch)."""

    def step(self, iteration: int, x: Tensor, loss: Tensor, grad: Tensor, ball: Ball) -> Tensor:
        """The next point for the rows being attacked, from the loss and gradient at ``x``."""

    def subset(self, keep: Tensor) -> None:
        """Keep the state of the rows ``keep`` only (the batch is shrinking)."""


@dataclass
class Plan:
    """How the runs of one attack call go: the settings the loop needs besides the stepper."""

    norm: str
    steps: int
    restarts: int
    random_start: bool
    keep_best: bool
    generator: torch.Generator
    callback: Callback | None
    start: Tensor | None = None


def attack(
    model: Model, inputs: Tensor, labels: Tensor, make_stepper: Callable[[Batch], Stepper], *, eps: EpsLike,
    norm: str | float, steps: int, loss: str | Loss, targeted: bool, target_classes: int | None, restarts: int,
    random_start: bool, keep_best: bool, bounds: Bounds, generator: torch.Generator | None,
    callback: Callback | None, start: Tensor | None = None,
) -> Tensor:
    """Check the settings every iterative attack shares, prepare the batch, and run the attack whose
    update ``make_stepper(batch)`` builds. Returns the adversarial inputs."""
    norm_name = resolve_norm(norm)
    check_positive_int(steps, "steps")
    check_run_settings(restarts=restarts, random_start=random_start, targeted=targeted,
                       target_classes=target_classes, callback=callback)
    batch = prepare(model, inputs, labels, eps=eps, bounds=bounds, loss=loss,
                    targeted=targeted or target_classes is not None)
    check_start(start, inputs)
    if batch is None:
        return inputs.detach().clone()
    plan = Plan(norm_name, steps, restarts, random_start, keep_best,
                resolve_generator(generator, batch.inputs.device), callback,
                None if start is None else start.detach().to(batch.inputs.dtype))
    return run_attack(model, batch, make_stepper(batch), plan, targeted=targeted, target_classes=target_classes)


def run_attack(model: Model, batch: Batch, stepper: Stepper, plan: Plan, *, targeted: bool,
               target_classes: int | None) -> Tensor:
    """Every (target, restart) run of an attack on a batch; returns the adversarial inputs.

    With ``keep_best`` (the MIFPE paper's protocol) a sample stops at its first adversarial example
    and that example is returned, else its highest-loss point; a sample misclassified from the
    start is never moved. Without it (plain PGD) every sample takes every step and the last
    iterate is returned.
    """
    ball = Ball(plan.norm, batch.inputs, batch.eps, batch.bounds)
    outcome = Outcome(batch.inputs)
    runs = attack_objectives(model, batch, targeted=targeted, target_classes=target_classes)
    if plan.keep_best:
        outcome.found = runs[0][1].success(batch.clean_logits)
    # Fooled samples never move again under keep_best, so every few steps the batch is shrunk to
    # the samples still being attacked (one host sync per check). Not with a callback, which
    # reports on the whole batch, nor in train() mode, where BatchNorm cannot take the one-row
    # batches shrinking can leave.
    shrink = plan.keep_best and plan.callback is None and not in_training_mode(model)
    for target, objective in runs:
        for restart in range(plan.restarts):
            _run_once(model, objective, outcome, ball, stepper, plan, shrink=shrink, first=restart == 0,
                      report=_Reporter(plan.callback, objective, restart, target))
    tallies = _TALLIES.get()
    if tallies is not None:
        tallies.append(outcome.gradients)
    return outcome.result()


class _Reporter:
    def __init__(self, callback: Callback | None, objective: Objective, restart: int, target: int | None) -> None:
        self.callback, self.objective, self.restart, self.target = callback, objective, restart, target

    def __call__(self, iteration: int, loss: Tensor, logits: Tensor, success: Tensor) -> None:
        if self.callback is not None:
            self.callback(StepInfo(iteration=iteration, restart=self.restart, target=self.target, loss=loss,
                                   margin=self.objective.margin(logits), success=success.clone()))


def _run_once(model: Model, objective: Objective, outcome: Outcome, ball: Ball, stepper: Stepper,
              plan: Plan, *, shrink: bool, first: bool, report: _Reporter) -> None:
    if plan.start is not None and first:
        x = ball.project_(plan.start.clone())
    else:
        x = ball.random_start(plan.generator) if plan.random_start else ball.center
    # Samples fooled before this run starts stay where they are.
    run_start_found = outcome.found.clone()
    x = torch.where(ball.per_sample(run_start_found), outcome.best, x)
    stepper.start(ball, x)
    index: Tensor | None = None  # positions in the full batch of the rows being attacked
    for iteration in range(plan.steps):
        if shrink and iteration % _COMPACT_EVERY == 0:
            active = ~(outcome.found if index is None else outcome.found[index])
            n_active = int(active.sum())
            if n_active == 0:
                return
            if n_active <= _COMPACT_BELOW * active.numel():
                keep = active.nonzero().squeeze(1)
                index = keep if index is None else index[keep]
                x, ball, objective = x[keep], ball.subset(keep), objective.subset(keep)
                stepper.subset(keep)
        loss, grad, logits = objective(x)
        outcome.count(index)
        success = objective.success(logits)
        if plan.keep_best:
            outcome.record(success, x, loss, index)
            report(iteration, loss, logits, outcome.found)
        else:
            report(iteration, loss, logits, run_start_found | success)
        candidate = stepper.step(iteration, x, loss, grad, ball)
        frozen = (outcome.found if index is None else outcome.found[index]) if plan.keep_best else run_start_found
        x = torch.where(ball.per_sample(frozen), x, candidate)
    # The last iterate is scored but needs no gradient.
    loss, logits = objective.evaluate(x)
    success = objective.success(logits)
    if plan.keep_best:
        outcome.record(success, x, loss, index)
    else:
        outcome.take_last(x, success, keep=run_start_found)
