"""Evaluation suites: staged ensembles of the core's attacks, each stage on the samples still robust.

A suite is data, an entry of ``_data/suites.json``: a list of stages, each a core attack (``pgd``,
``apgd``, ``fgsm``, or the gradient-free ``square``) with its options (``loss``, MIFPE's
``temperature``, ``steps``, ``target_classes``, ``restarts``, ``queries``, ...).
:func:`evaluate_suite` runs one suite through the evaluation engine: in every chunk, stage k
attacks only the samples that are still classified correctly after stages 1 ... k-1, so a sample
costs nothing once it is fooled, and a search stage starts from the point of smallest margin the
stages before it found. The log and the report give the clean accuracy and the robust accuracy
after each stage with its time and its forward and backward passes (counted
separately, as A3 counts them), the per-sample worst case, a sanity check of the model in the
spirit of AutoAttack's flags, and, with ``autoattack=True``, AutoAttack standard on the same
samples with the per-sample disagreement.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .attacks._common import looks_like_probabilities
from .attacks._loop import per_sample_gradients
from .engine import CLEAN, ChunkOutcome, Column, Shard
from .evaluate import ATTACKS
from .losses import ce_loss, logit_margin, resolve_loss
from .progress import log_above_bars
from .reports import Record
from .tables import (
    LAYOUTS,
    Cell,
    Evaluation,
    Layout,
    Report,
    clean_summary,
    column_cell,
    model_key,
    new_report,
    percent,
    run_report,
)

__all__ = ["Stage", "StageRow", "evaluate_suite", "get_suite", "sanity_check", "suite_names"]

_LOG = logging.getLogger(__name__)

# What a stage cannot set: the suite passes these (the chunk, its eps and generator).
_SET_BY_SUITE = {"model", "inputs", "labels", "eps", "norm", "bounds", "generator", "callback", "targeted"}
# The suite's own stage options: "start": "smallest_margin" starts the attack from the point of
# smallest margin the stages before found; "smallest_margins": s attacks only the share s of the
# samples still robust whose margin there is smallest (the ones closest to being fooled).
_START_POINTS = ("smallest_margin",)


@dataclass(frozen=True)
class Stage:
    """One stage of a suite: a core attack and its options."""

    name: str
    attack: str
    options: dict = field(default_factory=dict)

    @property
    def share(self) -> float:
        """The share of the samples still robust this stage attacks (those of smallest margin)."""
        return self.options.get("smallest_margins", 1.0)

    def run(self, model, x: Tensor, y: Tensor, *, eps: float, generator: torch.Generator, start: Tensor) -> Tensor:
        """Attack ``x``; with the option ``"start": "smallest_margin"`` from ``start``, the points of
        smallest margin the stages before found."""
        options = {k: v for k, v in self.options.items() if k != "smallest_margins"}
        if "loss" in _parameters(self.attack):
            options["loss"] = resolve_loss(options.pop("loss", "mifpe"), temperature=options.pop("temperature", None))
        if options.pop("start", None) is not None:
            options["start"] = start
        return ATTACKS[self.attack](model, x, y, eps=eps, generator=generator, **options)


def _parameters(attack: str) -> set[str]:
    return set(inspect.signature(ATTACKS[attack]).parameters)


def _options(attack: str) -> set[str]:
    """The options a suite's stage may set for ``attack``: its keywords but the suite's own, MIFPE's
    temperature beside a loss, and the share of samples to attack."""
    options = (_parameters(attack) - _SET_BY_SUITE) | {"smallest_margins"}
    return options | {"temperature"} if "loss" in options else options


def _check_stage(suite: str, name: str, attack: str, options: dict) -> None:
    where = f"suite {suite!r}, stage {name!r}"
    if attack not in ATTACKS:
        raise ValueError(f"{where}: attack must be one of {', '.join(ATTACKS)}, got {attack!r}")
    unknown = set(options) - _options(attack)
    if unknown:
        raise ValueError(f"{where}: {attack} takes the options {', '.join(sorted(_options(attack)))}; "
                         f"got {', '.join(sorted(unknown))}")
    if options.get("start", _START_POINTS[0]) not in _START_POINTS:
        raise ValueError(f"{where}: start must be one of {', '.join(map(repr, _START_POINTS))}, got {options['start']!r}")
    share = options.get("smallest_margins", 1.0)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise ValueError(f"{where}: smallest_margins must be a share in (0, 1], got {share!r}")


@functools.cache
def _registry() -> dict:
    return json.loads(resources.files("mifpe_plugins").joinpath("_data/suites.json").read_text(encoding="utf-8"))


def suite_names() -> list[str]:
    return list(_registry())


def get_suite(name: str) -> tuple[Stage, ...]:
    """The stages of the suite ``name`` (see :func:`suite_names`)."""
    entry = _registry().get(name)
    if entry is None:
        raise ValueError(f"unknown suite {name!r}; choose from {', '.join(suite_names())}")
    stages = []
    for spec in entry["stages"]:
        spec = dict(spec)
        name_, attack = spec.pop("name"), spec.pop("attack")
        _check_stage(name, name_, attack, spec)
        stages.append(Stage(name_, attack, spec))
    return tuple(stages)


def sanity_check(model, x: Tensor, y: Tensor) -> dict:
    """AutoAttack-style flags on one chunk: the share of correctly classified samples whose
    cross-entropy input gradient is exactly zero, whether the outputs look like a softmax's, and
    whether two forward passes on the same inputs differ (a randomised defence). Warnings point to
    ``mifpe diagnose``."""
    with torch.no_grad():
        first, second = model(x), model(x)
    inputs = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(ce_loss(model(inputs), y).sum(), inputs)
    correct = first.argmax(1) == y
    zero = (gradient.flatten(1) == 0).all(1) & correct
    share = 100 * int(zero.sum()) / max(1, int(correct.sum()))
    flags = {"samples": int(x.shape[0]), "zero_gradient_percent": round(share, 10),
             "softmax_outputs": looks_like_probabilities(first), "random_outputs": not torch.equal(first, second)}
    warnings = []
    if share > 0:
        warnings.append(f"the cross-entropy gradient is exactly zero on {share:.1f} % of the correctly classified samples "
                        "checked: CE-based attacks see nothing there (MIFPE does); run mifpe diagnose for the audit")
    if flags["softmax_outputs"]:
        warnings.append("the model's outputs look like probabilities: attacks expect logits (remove the final softmax)")
    if flags["random_outputs"]:
        warnings.append("two forward passes on the same inputs differ: a randomised model needs EOT attacks, and its "
                        "robust accuracy here is not a worst case")
    return {**flags, "warnings": warnings}


def _suite_column(evaluation: Evaluation, stages: tuple[Stage, ...], name: str) -> Column:
    totals = {"samples": 0, "correct": 0, **{f"{k}/{what}": 0 for k in range(len(stages)) for what in ("robust", "seconds")}}

    def run(model, x: Tensor, y: Tensor, *, generator: torch.Generator, rows: slice) -> ChunkOutcome:
        with torch.no_grad():
            logits = model(x)
        # Per sample, the point of smallest margin so far: the adversarial example once fooled.
        x_adv, margin, still_robust = x.clone(), logit_margin(logits, y), logits.argmax(1) == y
        fooled_by, gradients = torch.full_like(y, -1), torch.zeros_like(y)
        stats: dict[str, float] = {"correct": int(still_robust.sum())}
        for k, stage in enumerate(stages):
            tic, forward, backward = time.perf_counter(), model.forward_passes, model.backward_passes
            index = still_robust.nonzero().squeeze(1)  # one host sync per stage
            if stage.share < 1:
                closest = margin[index].argsort()[:math.ceil(stage.share * index.numel())]
                index = index[closest.sort().values]
            if index.numel():
                with per_sample_gradients() as tallies:
                    adversarial = stage.run(model, x[index], y[index], eps=evaluation.eps, generator=generator,
                                            start=x_adv[index])
                for tally in tallies:
                    gradients.index_add_(0, index, tally)
                with torch.no_grad():
                    logits = model(adversarial)
                stage_margin, fooled = logit_margin(logits, y[index]), logits.argmax(1) != y[index]
                take = fooled | (stage_margin < margin[index])
                x_adv[index[take]] = adversarial[take]
                margin[index[take]] = stage_margin[take]
                fooled_by[index[fooled]] = k
                still_robust[index[fooled]] = False
            stats.update({f"{k}/attacked": int(index.numel()), f"{k}/robust": int(still_robust.sum()),
                          f"{k}/seconds": time.perf_counter() - tic, f"{k}/forward": model.forward_passes - forward,
                          f"{k}/backward": model.backward_passes - backward})
        _log_chunk(totals, stats, stages, x.shape[0], rows, evaluation.n)
        return ChunkOutcome(x_adv, {"stage": fooled_by, "gradients": gradients}, stats)

    settings = {"suite": name, "stages": [{"name": s.name, "attack": s.attack, **s.options} for s in stages], "eps": evaluation.eps}
    return Column(f"suite {name}", run, eps=evaluation.eps, settings=settings)


def _log_chunk(totals: dict, stats: dict, stages: tuple[Stage, ...], size: int, rows: slice, n: int) -> None:
    """Log, as AutoAttack does, the clean accuracy and the robust accuracy after each stage with its
    time, over the chunks this process has attacked so far (one line per chunk)."""
    totals["samples"] += size
    for key in totals.keys() - {"samples"}:
        totals[key] += stats[key]
    share = 100 / totals["samples"]
    _LOG.info(f"samples {rows.start}-{rows.stop - 1} done ({totals['samples']} of {n} attacked by this process): clean "
              f"{share * totals['correct']:.2f} %" + "".join(
                  f", after {stage.name} {share * totals[f'{k}/robust']:.2f} % ({totals[f'{k}/seconds']:.1f} s)"
                  for k, stage in enumerate(stages)))


@dataclass
class StageRow(Record):
    """One stage of a suite: robust accuracy after it, the samples it attacked and its passes."""

    stage: str
    attack: str
    robust_accuracy: float
    attacked: int
    seconds: float
    forward_passes: int
    backward_passes: int

    def records(self, report: Report) -> list[dict]:
        return [{"attack": f"suite {report.settings['suite']}: {self.stage}", "robust_accuracy": self.robust_accuracy,
                 "seconds": self.seconds, "forward_passes": self.forward_passes, "backward_passes": self.backward_passes}]


def evaluate_suite(
    evaluation: Evaluation, *, suite: str = "fast", autoattack: bool = False, command: str = "", extra: dict | None = None,
    out: str | Path | None = None, name: str | None = None, resume: bool = False, overwrite: bool = False,
    save_adversarial: bool = False,
) -> Report:
    """Run the suite ``suite`` (and, with ``autoattack``, AutoAttack standard on the same samples).

    Run options as in :func:`mifpe_plugins.tables.table2`. The report's rows are the stages (robust
    accuracy after each); ``summary`` holds the clean accuracy, the sanity flags, the suite's and
    AutoAttack's totals and their per-sample disagreement.
    """
    stages = get_suite(suite)
    model = model_key(extra)
    report = new_report("suite", evaluation, command, extra, autoattack=autoattack, suite=suite)
    columns = [_suite_column(evaluation, stages, suite), *([evaluation.autoattack("original", "AutoAttack standard")]
                                                            if autoattack else [])]
    flags = sanity_check(evaluation.model, *evaluation.chunk(0)) if evaluation.n else {"warnings": []}

    def assemble(report: Report, results: dict) -> None:
        if (model, CLEAN) not in results:
            return
        report.summary = {**clean_summary(results[(model, CLEAN)], evaluation.dtype), "sanity": flags}
        ours = results.get((model, f"suite {suite}"))
        if ours is not None:
            correct = results[(model, CLEAN)].arrays["prediction"] == results[(model, CLEAN)].arrays["label"]
            fooled_by = ours.arrays["stage"]
            for k, stage in enumerate(stages):
                robust = correct & ((fooled_by < 0) | (fooled_by > k))
                report.rows.append(StageRow(stage.name, stage.attack, percent(robust), int(ours.stats.get(f"{k}/attacked", 0)),
                                            round(ours.stats.get(f"{k}/seconds", 0.0), 3), int(ours.stats.get(f"{k}/forward", 0)),
                                            int(ours.stats.get(f"{k}/backward", 0))))
            report.summary["suite_result"] = column_cell(results, model, f"suite {suite}").to_json()
        reference: Cell | None = column_cell(results, model, "AutoAttack standard") if autoattack else None
        if ours is not None and reference is not None:
            suite_cell = column_cell(results, model, f"suite {suite}")
            report.summary["autoattack"] = reference.to_json()
            report.summary["worst_case"] = percent(suite_cell.robust & reference.robust)
            report.summary["only_autoattack_fools"] = np.flatnonzero(suite_cell.robust & ~reference.robust).tolist()
            report.summary["only_suite_fools"] = np.flatnonzero(~suite_cell.robust & reference.robust).tolist()

    with log_above_bars(__name__, f"suite {suite}", enabled=evaluation.show_progress and Shard.current().rank == 0):
        return run_report(report, {model: evaluation}, {model: columns}, assemble, out=out, name=name, resume=resume,
                          overwrite=overwrite, save_adversarial=save_adversarial)


def _suite_layout(report: Report) -> Layout:
    summary = report.summary
    layout: Layout = [("", ["stage", "attack", "robust accuracy % after it", "samples attacked", "seconds",
                            "forward passes", "backward passes"],
                       [[r.stage, r.attack, r.robust_accuracy, r.attacked, r.seconds, r.forward_passes, r.backward_passes]
                        for r in report.rows])]
    if "autoattack" in summary:
        ours, theirs = summary["suite_result"], summary["autoattack"]

        def ratio(key: str) -> str:
            return f"{ours[key] / theirs[key]:.3f}" if theirs[key] else "–"

        layout.append(("Against AutoAttack (standard) on the same samples:",
                       ["", "robust accuracy %", "seconds", "forward passes", "backward passes"], [
                           [f"suite {report.settings['suite']}", ours["robust_accuracy"], ours["seconds"],
                            ours["forward_passes"], ours["backward_passes"]],
                           ["AutoAttack standard", theirs["robust_accuracy"], theirs["seconds"], theirs["forward_passes"],
                            theirs["backward_passes"]],
                           ["suite / AutoAttack", f"{ours['robust_accuracy'] - theirs['robust_accuracy']:+.2f} points",
                            "", ratio("forward_passes"), ratio("backward_passes")],
                           ["per-sample worst case of both", summary["worst_case"], "", "", ""]]))
        layout.append((f"Samples only AutoAttack fools: {summary['only_autoattack_fools'] or 'none'}; samples only the "
                       f"suite fools: {summary['only_suite_fools'] or 'none'}.", [], []))
    for warning in summary.get("sanity", {}).get("warnings", []):
        layout.append((f"**Warning:** {warning}.", [], []))
    return layout


LAYOUTS["suite"] = _suite_layout
