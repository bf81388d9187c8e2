"""Run an attack over a dataset in batches and report per-sample results, accuracy, time and cost."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .attacks import apgd, fgsm, pgd, square
from .attacks._common import (
    check_callable,
    check_inputs,
    check_label_range,
    check_labels,
    resolve_norm,
)
from .engine import CLEAN, Chunks, Column, Shard, describe, run_columns
from .journal import Journal, claim

__all__ = ["EvaluationResult", "evaluate", "robust_accuracy", "ATTACKS"]

Attack = Callable[..., Tensor]
ATTACKS: dict[str, Attack] = {"fgsm": fgsm, "pgd": pgd, "apgd": apgd, "square": square}


@dataclass
class EvaluationResult:
    """Outcome of :func:`evaluate`.

    Attributes
    ----------
    clean_correct, robust_correct : Tensor
        Per-sample booleans, shape (N,): correct on the clean input / correct on both the clean
        and the attacked input.
    perturbation_norm : Tensor
        Per-sample norm of ``x_adv - x`` in the attack's threat model, shape (N,). It can exceed
        ``eps`` by a rounding error of the inputs' dtype: ``x0 + eps`` is rounded at the magnitude
        of ``x0``, not of ``eps`` (e.g. 0.0313725769 for eps = 8/255 = 0.0313725490 in float32).
    within_eps : Tensor or None
        Per-sample booleans, shape (N,): the perturbation is within ``eps`` up to that rounding,
        ``4 * finfo(dtype).eps * (eps + ||x0|| + ||x_adv||)`` in the threat model's norm. ``None``
        when the attack was given no ``eps``.
    seconds : float
        Wall time of the attack calls (the device is synchronised before the clock stops).
    gradient_evaluations : int
        Backward passes: samples passed forward with autograd recording, summed over the run: one
        per sample per attack step (plus one per sample per Jacobian for NJS/HNS).
    adversarial : Tensor or None
        The adversarial inputs, when ``keep_adversarial=True``.
    forward_passes : int
        Samples passed forward by the attack, with or without autograd.
    margin : Tensor
        Per-sample margin ``z_y - max_{i != y} z_i`` at the adversarial input (float64).
    gradients : Tensor
        Per-sample loss-gradient evaluations (the steps the sample took; -1 for an attack that does
        not report them).
    """

    clean_correct: Tensor
    robust_correct: Tensor
    perturbation_norm: Tensor
    seconds: float
    gradient_evaluations: int
    attack: str
    settings: dict = field(default_factory=dict)
    adversarial: Tensor | None = None
    within_eps: Tensor | None = None
    forward_passes: int = 0
    margin: Tensor | None = None
    gradients: Tensor | None = None

    @property
    def n(self) -> int:
        return int(self.clean_correct.numel())

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean()) if self.n else float("nan")

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust_correct.float().mean()) if self.n else float("nan")

    def per_sample(self) -> dict[str, list]:
        """The per-sample outcomes as columns: sample, clean and robust correctness, the final margin,
        the perturbation norm, whether it is within eps, and gradient evaluations."""
        n = self.n
        def column(values: Tensor | None) -> list:
            return [None] * n if values is None else values.detach().cpu().tolist()
        return {"sample": list(range(n)), "clean_correct": [int(v) for v in column(self.clean_correct)],
                "robust": [int(v) for v in column(self.robust_correct)], "margin": column(self.margin),
                "norm": column(self.perturbation_norm.double()), "within_eps": column(self.within_eps),
                "gradients": [None if g is None or g < 0 else g for g in column(self.gradients)]}

    def to_pandas(self) -> Any:
        """The per-sample outcomes as a pandas DataFrame (pandas must be installed)."""
        import pandas as pd

        return pd.DataFrame(self.per_sample())

    def summary(self) -> dict:
        """JSON-ready numbers (accuracies in %, as the papers report them)."""
        return {
            "attack": self.attack,
            "n": self.n,
            "clean_accuracy": 100 * self.clean_accuracy,
            "robust_accuracy": 100 * self.robust_accuracy,
            "seconds": self.seconds,
            "gradient_evaluations": self.gradient_evaluations,
            "forward_passes": self.forward_passes,
            "max_perturbation_norm": float(self.perturbation_norm.max()) if self.n else 0.0,
            "all_within_eps": None if self.within_eps is None else bool(self.within_eps.all()),
            **{k: v for k, v in self.settings.items() if isinstance(v, (int, float, str, bool, type(None)))},
        }


def evaluate(
    model: Callable[[Tensor], Tensor],
    inputs: Tensor,
    labels: Tensor,
    *,
    attack: str | Attack = "pgd",
    batch_size: int = 256,
    keep_adversarial: bool = False,
    targets: Tensor | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
    progress: Callable[[int], None] | None = None,
    out: str | Path | None = None,
    name: str = "evaluate",
    resume: bool = False,
    overwrite: bool = False,
    **attack_kwargs,
) -> EvaluationResult:
    """Attack ``inputs`` chunk by chunk and measure clean and robust accuracy.

    Runs through the evaluation engine (:mod:`mifpe_plugins.engine`): chunk ``i`` (``batch_size``
    samples) draws its random start from a generator seeded by (``seed``, i), so the result
    depends on the data, the settings and the chunk size only. With ``out`` every finished chunk
    is journaled in ``out/<name>.journal`` and the per-sample outcomes are written to
    ``out/<name>.samples.csv``; ``resume=True`` continues a stopped run.

    Parameters
    ----------
    model : callable
        Returns logits; used as given (call ``model.eval()`` first).
    inputs, labels : Tensor
        The whole evaluation set (N, ...) and true classes (N,), on the model's device.
    attack : {"fgsm", "pgd", "apgd", "square"} or callable
        A core attack by name, or any ``attack(model, x, y, **kwargs) -> x_adv``.
    batch_size : int
        Samples per chunk (per attack call).
    keep_adversarial : bool
        Keep the adversarial inputs in the result.
    targets : Tensor, optional
        Target classes (N,) for a targeted attack (``targeted=True``, which needs them): the
        attack aims at ``targets`` while accuracy is measured against the true ``labels``.
    seed : int
        Seeds every chunk's generator.
    generator : torch.Generator, optional
        Kept for compatibility: its ``initial_seed()`` is used as ``seed``.
    progress : callable, optional
        Called with the number of samples of each finished chunk (e.g. a tqdm bar's ``update``).
    out, name, resume, overwrite : optional
        The folder and stem of the journal and per-sample file, and whether to continue or replace
        an earlier run of that name (with neither, an existing one is an error).
    **attack_kwargs
        Passed to the attack (``eps``, ``loss``, ``steps``, ``targeted``, ...). A per-sample
        ``eps`` of shape (N,) is sliced per chunk.

    Returns
    -------
    EvaluationResult
    """
    if isinstance(attack, str):
        key = attack.strip().lower()
        if key not in ATTACKS:
            raise ValueError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)} or pass a callable")
        attack_fn, attack_name = ATTACKS[key], key
    elif callable(attack):
        attack_fn, attack_name = attack, getattr(attack, "__name__", type(attack).__name__)
    else:
        raise TypeError(f"attack must be a name or a callable, got {type(attack).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    check_callable(model, "model")
    check_callable(progress, "progress", optional=True)
    check_inputs(inputs, None)
    labels = check_labels(labels, inputs)
    total = inputs.shape[0]
    attack_labels = _attack_labels(labels, targets, inputs, targeted=bool(attack_kwargs.get("targeted")))
    norm = resolve_norm(attack_kwargs.get("norm", "linf"))
    if generator is not None:
        seed = generator.initial_seed()
    eps = attack_kwargs.pop("eps", None)
    if isinstance(eps, Tensor) and eps.dim() == 1 and eps.shape[0] != total:
        raise ValueError(f"eps must be a number, a 0-dim tensor or shape ({total},), got {tuple(eps.shape)}")
    core = attack_fn in ATTACKS.values()

    def run(counted: Callable, x: Tensor, y: Tensor, *, generator: torch.Generator, rows: slice) -> Tensor:
        kwargs = dict(attack_kwargs)
        if eps is not None:
            kwargs["eps"] = eps[rows] if isinstance(eps, Tensor) and eps.dim() == 1 else eps
        if core:
            kwargs["generator"] = generator
        y_attack = attack_labels[rows] if attack_labels is not labels else y
        if y_attack is not y:
            with torch.no_grad():
                check_label_range(y_attack, model(x[:1]).shape[1], name="targets")
        return attack_fn(counted, x, y_attack, **kwargs)

    settings = {"eps": eps if not isinstance(eps, Tensor) else "per-sample", **attack_kwargs}
    settings = {k: v if isinstance(v, (int, float, str, bool, type(None))) else describe(v) for k, v in settings.items()}
    if total == 0:
        empty = inputs.new_zeros(0, dtype=torch.bool)
        return EvaluationResult(empty, empty, inputs.new_zeros(0), 0.0, 0, attack_name, settings,
                                inputs[:0].clone() if keep_adversarial else None, None if eps is None else empty)
    data = _Data(model, Chunks(inputs, labels, size=batch_size), seed)
    column = Column(attack_name, run, norm=norm, eps=eps, settings={"attack": attack_name, **settings})
    journal_settings = {"table": "evaluate", "n": total, "batch_size": batch_size, "seed": seed, "keep_adversarial": keep_adversarial,
                        "dtype": str(inputs.dtype), "device": inputs.device.type, "column": column.settings}
    journal = Journal(None if out is None else Path(out) / f"{name}.journal", journal_settings)
    if out is not None:
        claim(Path(out), name, journal, resume=resume, overwrite=overwrite)
    results = run_columns({"model": data}, {"model": [column]}, journal=journal, shard=Shard(),
                          keep_adversarial=keep_adversarial, show_progress=False, on_chunk=progress)
    clean, attacked = results[("model", CLEAN)].arrays, results[("model", attack_name)]
    device = inputs.device
    clean_correct = torch.from_numpy(clean["prediction"] == clean["label"]).to(device)
    arrays = attacked.arrays
    result = EvaluationResult(
        clean_correct=clean_correct,
        robust_correct=clean_correct & ~torch.from_numpy(arrays["success"]).to(device),
        perturbation_norm=torch.from_numpy(arrays["norm"]).to(device, inputs.dtype),
        seconds=attacked.seconds,
        gradient_evaluations=attacked.backward_passes,
        attack=attack_name,
        settings=settings,
        adversarial=torch.from_numpy(arrays["adversarial"]).to(device) if keep_adversarial else None,
        within_eps=torch.from_numpy(arrays["within_eps"]).to(device) if "within_eps" in arrays else None,
        forward_passes=attacked.forward_passes,
        margin=torch.from_numpy(arrays["margin"]).to(device),
        gradients=torch.from_numpy(arrays["gradients"]).to(device),
    )
    if out is not None:
        _write_samples(result, Path(out) / f"{name}.samples.csv")
    return result


@dataclass
class _Data:
    """One model and its chunks, as the engine takes them; chunks stay where the inputs are."""

    model: Callable[[Tensor], Tensor]
    chunks: Chunks
    seed: int

    def chunk(self, index: int) -> tuple[Tensor, Tensor]:
        return self.chunks[index]


def _write_samples(result: EvaluationResult, path: Path) -> None:
    from .reports import write_files

    frame = result.per_sample()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(frame)
    writer.writerows(zip(*frame.values(), strict=True))
    write_files(path.parent, {path.name: buffer.getvalue()})


def _attack_labels(labels: Tensor, targets: Tensor | None, inputs: Tensor, *, targeted: bool) -> Tensor:
    """The labels the attack receives: the true ones, or the targets of a targeted attack."""
    if not targeted:
        if targets is not None:
            raise ValueError("targets is only for targeted attacks: pass targeted=True as well")
        return labels
    if targets is None:
        raise ValueError(
            "evaluate(targeted=True) needs targets=<target classes, shape (N,)>: labels are the "
            "true classes that accuracy is measured against"
        )
    return check_labels(targets, inputs, name="targets")


def robust_accuracy(model: Callable[[Tensor], Tensor], inputs: Tensor, labels: Tensor, **kwargs) -> float:
    """Robust accuracy (fraction in [0, 1]) of ``model`` under :func:`evaluate`'s attack."""
    return evaluate(model, inputs, labels, **kwargs).robust_accuracy
