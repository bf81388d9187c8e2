"""Run an attack over a dataset in batches and report per-sample results, accuracy, time and cost."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .attacks import apgd, fgsm, pgd
from .attacks._common import (
    check_callable,
    check_eps,
    check_inputs,
    check_label_range,
    check_labels,
    check_logits,
    in_training_mode,
    resolve_generator,
    resolve_norm,
)
from .attacks._steps import norm_of

__all__ = ["EvaluationResult", "evaluate", "robust_accuracy", "ATTACKS"]

Attack = Callable[..., Tensor]
ATTACKS: dict[str, Attack] = {"fgsm": fgsm, "pgd": pgd, "apgd": apgd}


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
        Samples passed forward with autograd recording, summed over the run: one per sample per
        attack step (plus one per sample per Jacobian for NJS/HNS).
    adversarial : Tensor or None
        The adversarial inputs, when ``keep_adversarial=True``.
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

    @property
    def n(self) -> int:
        return int(self.clean_correct.numel())

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean()) if self.n else float("nan")

    @property
    def robust_accuracy(self) -> float:
        return float(self.robust_correct.float().mean()) if self.n else float("nan")

    def summary(self) -> dict:
        """JSON-ready numbers (accuracies in %, as the papers report them)."""
        return {
            "attack": self.attack,
            "n": self.n,
            "clean_accuracy": 100 * self.clean_accuracy,
            "robust_accuracy": 100 * self.robust_accuracy,
            "seconds": self.seconds,
            "gradient_evaluations": self.gradient_evaluations,
            "max_perturbation_norm": float(self.perturbation_norm.max()) if self.n else 0.0,
            "all_within_eps": None if self.within_eps is None else bool(self.within_eps.all()),
            **{k: v for k, v in self.settings.items() if isinstance(v, (int, float, str, bool, type(None)))},
        }


class _GradientCounter:
    """Wraps a model and counts samples forwarded while autograd records."""

    def __init__(self, model: Callable[[Tensor], Tensor]) -> None:
        self.model = model
        self.count = 0

    @property
    def training(self) -> bool:
        return in_training_mode(self.model)

    def __call__(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            self.count += x.shape[0]
        return self.model(x)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(
    model: Callable[[Tensor], Tensor],
    inputs: Tensor,
    labels: Tensor,
    *,
    attack: str | Attack = "pgd",
    batch_size: int = 256,
    keep_adversarial: bool = False,
    targets: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: Callable[[int], None] | None = None,
    **attack_kwargs,
) -> EvaluationResult:
    """Attack ``inputs`` batch by batch and measure clean and robust accuracy.

    Parameters
    ----------
    model : callable
        Returns logits; used as given (call ``model.eval()`` first).
    inputs, labels : Tensor
        The whole evaluation set (N, ...) and true classes (N,); batches are moved to nothing —
        put them on the model's device first.
    attack : {"fgsm", "pgd", "apgd"} or callable
        A core attack by name, or any ``attack(model, x, y, **kwargs) -> x_adv``.
    batch_size : int
        Samples per attack call.
    keep_adversarial : bool
        Keep the adversarial inputs in the result.
    targets : Tensor, optional
        Target classes (N,) for a targeted attack (``targeted=True``, which needs them): the
        attack aims at ``targets`` while accuracy is measured against the true ``labels``.
    generator : torch.Generator, optional
        Shared by all batches so each gets fresh random starts; seeded with 0 when omitted.
    progress : callable, optional
        Called with the number of samples of each finished batch (e.g. a tqdm bar's ``update``).
    **attack_kwargs
        Passed to the attack (``eps``, ``loss``, ``steps``, ``targeted``, ...). A per-sample
        ``eps`` of shape (N,) is sliced per batch.

    Returns
    -------
    EvaluationResult
    """
    if isinstance(attack, str):
        key = attack.strip().lower()
        if key not in ATTACKS:
            raise ValueError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)} or pass a callable")
        attack_fn, name = ATTACKS[key], key
    elif callable(attack):
        attack_fn, name = attack, getattr(attack, "__name__", type(attack).__name__)
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
    counter = _GradientCounter(model)
    generator = resolve_generator(generator, inputs.device)
    eps = attack_kwargs.pop("eps", None)
    if isinstance(eps, Tensor) and eps.dim() == 1 and eps.shape[0] != total:
        raise ValueError(f"eps must be a number, a 0-dim tensor or shape ({total},), got {tuple(eps.shape)}")

    clean, robust, norms, within, adversarial = [], [], [], [], []
    seconds = 0.0
    for start in range(0, total, batch_size):
        x = inputs[start : start + batch_size]
        y = labels[start : start + batch_size]
        y_attack = attack_labels[start : start + batch_size]
        kwargs = dict(attack_kwargs)
        if eps is not None:
            kwargs["eps"] = eps[start : start + batch_size] if isinstance(eps, Tensor) and eps.dim() == 1 else eps
        if attack_fn in ATTACKS.values():
            kwargs["generator"] = generator
        with torch.no_grad():
            clean_logits = model(x)
        # Checked here, where labels and targets can be told apart, before any attack work.
        check_logits(clean_logits, x.shape[0])
        check_label_range(y, clean_logits.shape[1])
        if y_attack is not y:
            check_label_range(y_attack, clean_logits.shape[1], name="targets")
        _synchronize(x.device)
        tic = time.perf_counter()
        x_adv = attack_fn(counter, x, y_attack, **kwargs)
        _synchronize(x.device)
        seconds += time.perf_counter() - tic
        with torch.no_grad():
            clean_ok = clean_logits.argmax(dim=1) == y
            # A sample counts as robust only if it is correct on both the clean and the attacked
            # input: an attack that moves a misclassified sample onto the right class is no defence.
            clean.append(clean_ok)
            robust.append(clean_ok & (model(x_adv).argmax(dim=1) == y))
        norms.append(norm_of((x_adv - x).detach(), norm))
        if eps is not None:
            within.append(_within_eps(x, x_adv.detach(), kwargs["eps"], norms[-1], norm))
        if keep_adversarial:
            adversarial.append(x_adv.detach())
        if progress is not None:
            progress(x.shape[0])

    def cat(parts: list, dtype: torch.dtype) -> Tensor:
        return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype, device=inputs.device)

    settings = {"eps": eps if not isinstance(eps, Tensor) else "per-sample", **attack_kwargs}
    settings = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)) for k, v in settings.items()}
    return EvaluationResult(
        clean_correct=cat(clean, torch.bool),
        robust_correct=cat(robust, torch.bool),
        perturbation_norm=cat(norms, inputs.dtype),
        seconds=seconds,
        gradient_evaluations=counter.count,
        attack=name,
        settings=settings,
        adversarial=cat(adversarial, inputs.dtype) if keep_adversarial else None,
        within_eps=None if eps is None else cat(within, torch.bool),
    )


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


def _within_eps(x: Tensor, x_adv: Tensor, eps: float | Tensor, norms: Tensor, norm: str) -> Tensor:
    """Whether each perturbation is within ``eps`` up to the rounding of ``x0 + delta``."""
    radius = check_eps(eps, x)
    tolerance = 4 * torch.finfo(x.dtype).eps * (radius + norm_of(x, norm) + norm_of(x_adv, norm))
    return norms <= radius + tolerance


def robust_accuracy(model: Callable[[Tensor], Tensor], inputs: Tensor, labels: Tensor, **kwargs) -> float:
    """Robust accuracy (fraction in [0, 1]) of ``model`` under :func:`evaluate`'s attack."""
    return evaluate(model, inputs, labels, **kwargs).robust_accuracy
