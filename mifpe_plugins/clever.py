"""CLEVER scores of the original and the temperature-scaled networks (PGD++ paper, Table 11, App. C.3).

An analysis that uses ART's ``clever_u`` (the ``art`` extra, imported when the
comparison runs), next to the other audits (:mod:`mifpe_plugins.diagnose`). It depends on the core
only: the temperature rules of :mod:`mifpe_plugins.temperature` and the core's input and logits checks.

References
----------
PGD++ : K. Gupta, T. Ajanthan, "Improved Gradient based Adversarial Attacks for Quantized
    Networks", AAAI 2022 (Alg. 1 NJS, Alg. 2 HNS, Table 11 / Appendix C.3 CLEVER).
CLEVER : T.-W. Weng et al., "Evaluating the Robustness of Neural Networks: An Extreme Value
    Theory Approach", ICLR 2018.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .attacks._common import (
    check_inputs,
    check_logits,
    check_positive_int,
    looks_like_probabilities,
    model_state_kept,
    other_float_dtypes,
)
from .temperature import hns_beta, njs_beta, njs_beta1

__all__ = ["CleverComparison", "clever_comparison", "require_art"]

_NORMS = (1, 2, math.inf)
_PROBABILITY_HELP = (
    "CLEVER is computed here on softmax(beta * logits), so the model must return logits: remove "
    "the final softmax (nn.LogSoftmax is fine)"
)


def require_art() -> tuple[Callable[..., float], type]:
    """ART's ``clever_u`` and ``PyTorchClassifier``, or an ImportError naming the ``art`` extra."""
    try:
        metrics = importlib.import_module("art.metrics")
        classification = importlib.import_module("art.estimators.classification")
    except ImportError as error:
        raise ImportError(
            "the CLEVER comparison needs the library 'art' (adversarial-robustness-toolbox), which "
            "is not installed. From a checkout of mifpe_plugins: pip install -e \".[art]\" "
            "(mifpe-plugins is not on PyPI yet; once it is: pip install mifpe-plugins[art])"
        ) from error
    return metrics.clever_u, classification.PyTorchClassifier


class _SoftmaxOfScaledLogits(nn.Module):
    """``softmax(beta * model(x))``: the probability output whose CLEVER score depends on beta."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.beta = 1.0

    def forward(self, x: Tensor) -> Tensor:
        return (self.beta * self.model(x)).softmax(dim=1)


@dataclass(frozen=True)
class CleverComparison:
    """Per-sample CLEVER scores (ART ``clever_u``) of ``softmax(beta * z)`` for several beta rules.

    Attributes
    ----------
    scores : dict of str to ndarray
        ``"original"`` (beta = 1), ``"heuristic"``, ``"njs"``, ``"hns"``; each of shape (N,).
        Lower is a tighter (more informative) robustness estimate.
    betas : dict of str to ndarray
        The temperature used for each sample under each rule, same keys, shape (N,).
    """

    scores: dict[str, np.ndarray]
    betas: dict[str, np.ndarray]

    def means(self) -> dict[str, float]:
        """Mean score per rule, as reported in the PGD++ paper's Table 11."""
        return {name: float(np.mean(values)) for name, values in self.scores.items()}


def _positive_number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _float32_samples(x: Any, model: nn.Module, input_shape: Any) -> Tensor:
    """``x`` (tensor or array) checked with the core's input rules, as float32 on the model's device."""
    inputs = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    try:
        check_inputs(inputs, None)
    except (TypeError, ValueError) as error:
        error.args = (f"clever_comparison: x: {error}",)
        raise
    if not isinstance(input_shape, (tuple, list)) or tuple(inputs.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"x must have shape (N, *input_shape) = (N, *{input_shape!r}), got {tuple(inputs.shape)}"
        )
    if inputs.shape[0] == 0:
        raise ValueError("x must hold at least one sample")
    device = next(iter([*model.parameters(), *model.buffers()]), torch.empty(0)).device
    return inputs.detach().to(device=device, dtype=torch.float32)


def _check_logits(logits: Tensor, classes: int) -> None:
    """(N, nb_classes) logits; what the core warns about (probabilities) is an error here."""
    if logits.dim() != 2 or logits.shape[1] != classes:
        raise ValueError(
            f"model must return logits of shape (N, nb_classes={classes}), got {tuple(logits.shape)}"
        )
    if looks_like_probabilities(logits):
        raise ValueError(f"model returns probabilities; {_PROBABILITY_HELP}")
    check_logits(logits, logits.shape[0])


def clever_comparison(
    model: nn.Module,
    x: Tensor | np.ndarray,
    *,
    nb_classes: int,
    input_shape: tuple[int, ...],
    nb_batches: int = 50,
    batch_size: int = 10,
    radius: float = 5.0,
    norm: float = 1,
    seed: int = 0,
    beta_heuristic: float = 0.01,
    njs_rho: float = 0.01,
    njs_samples: int = 100,
    hns_points: int = 100,
    clip_values: tuple[float, float] | None = None,
    pool_factor: int = 10,
    c_init: float = 1.0,
) -> CleverComparison:
    """CLEVER scores of the original and temperature-scaled networks (PGD++ Table 11, App. C.3).

    For each sample, ART's ``clever_u`` is computed on the probability output
    ``softmax(beta * z)`` with beta from four rules:

    * ``"original"``: beta = 1;
    * ``"heuristic"``: beta = ``beta_heuristic`` (0.01 in the paper's table);
    * ``"njs"``: ``beta_2 * beta_1`` (PGD++ Alg. 1), ``beta_1`` from :func:`mifpe_plugins.njs_beta1`
      on the first ``njs_samples`` of ``x``, ``beta_2`` from Proposition 1 where
      ``1 - p_top <= njs_rho`` (else 1), per sample (:func:`mifpe_plugins.njs_beta`);
    * ``"hns"``: the per-sample ``beta*`` of HNS (PGD++ Alg. 2, :func:`mifpe_plugins.hns_beta`).

    Why probabilities: CLEVER is the ratio of the output margin ``f_c - f_j`` to an estimate of
    the largest local gradient norm of ``f_c - f_j``. On *logits* both scale linearly with beta,
    so the score is invariant to beta (up to the tolerance of the Weibull fit); only a
    probability output, where beta changes how saturated the softmax is, makes beta matter.

    Randomness: ``clever_u`` draws from numpy's *global* RNG. It is reseeded with
    ``(seed, i)`` before sample ``i`` under every rule, so all rules see the same random points
    (a paired comparison) and a sample's scores do not depend on the other samples; the caller's
    numpy and torch RNG states are restored afterwards, as are the model's ``.training`` flags
    and its parameters' gradients and ``requires_grad`` (ART's ``class_gradient`` back-propagates
    into them). The betas are computed with the model in eval mode.

    Parameters
    ----------
    model : nn.Module
        Float32 network returning logits (not probabilities).
    x : Tensor or ndarray
        Samples (N, \\*input_shape).
    nb_classes, input_shape
        As for ART's ``PyTorchClassifier``.
    nb_batches, batch_size, radius, norm, pool_factor, c_init
        ART ``clever_u`` parameters; defaults are the paper's (L1 norm, 50 batches of 10,
        radius 5).
    seed : int
        Non-negative seed for numpy's global RNG during the computation.
    beta_heuristic : float
        The fixed temperature of the heuristic row.
    njs_rho, njs_samples
        NJS's ``rho`` and ``M``.
    hns_points : int
        Size of HNS's beta grid.
    clip_values : (float, float) or None
        If given, ART clips CLEVER's random points to this range. None (the default) samples the
        whole ball, as ``clever_u`` does on a classifier without clip values.

    Returns
    -------
    CleverComparison
        Scores and temperatures per sample and rule.

    Notes
    -----
    Where the softmax is saturated (margins above ~103 in float32) the gradients are exactly 0, so
    the Weibull fit is degenerate and ART's score is not meaningful -- which is the paper's point
    about uninformative gradients; the scores are returned as ART computes them. Cost: ``clever_u``
    runs 4 x N times, each with ``nb_classes - 1`` targeted estimates; with the paper's settings
    that is minutes for tens of samples on a CPU.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module returning logits, got {type(model).__name__} (for an "
            "ART classifier pass classifier.model)"
        )
    classes = check_positive_int(nb_classes, "nb_classes", minimum=2)
    for value, name in [(nb_batches, "nb_batches"), (batch_size, "batch_size"),
                        (pool_factor, "pool_factor"), (njs_samples, "njs_samples")]:
        check_positive_int(value, name)
    check_positive_int(hns_points, "hns_points", minimum=2)
    if norm not in _NORMS:
        raise ValueError(f"norm must be 1, 2 or numpy.inf (ART clever_u), got {norm!r}")
    _positive_number(radius, "radius")
    check_positive_int(seed, "seed", minimum=0)
    _positive_number(beta_heuristic, "beta_heuristic")
    if wrong := other_float_dtypes(model):
        raise ValueError(
            f"model has {', '.join(wrong)} parameters, but ART feeds float32 inputs: call "
            "model.float()"
        )
    inputs = _float32_samples(x, model, input_shape)
    clever_u, pytorch_classifier = require_art()

    # ART's clever_u draws from numpy's legacy global RNG, so that is the one to seed and restore.
    numpy_state = np.random.get_state()  # noqa: NPY002
    torch_state = torch.get_rng_state()
    with model_state_kept(model):
        model.eval()
        with torch.no_grad():
            logits = model(inputs)
        _check_logits(logits, classes)
        count = inputs.shape[0]
        beta1 = njs_beta1(model, inputs, samples=njs_samples)
        betas = {
            "original": np.ones(count),
            "heuristic": np.full(count, float(beta_heuristic)),
            "njs": njs_beta(logits, beta1, rho=njs_rho).double().cpu().numpy(),
            "hns": hns_beta(model, inputs, points=hns_points).double().cpu().numpy(),
        }
        probabilities = _SoftmaxOfScaledLogits(model)
        # The loss is never used by CLEVER (only predict and class_gradient are), but ART needs one.
        # device_type follows the model: ART's default "gpu" would move a CPU model to CUDA.
        classifier = pytorch_classifier(
            probabilities, loss=nn.CrossEntropyLoss(), input_shape=tuple(input_shape),
            nb_classes=classes, clip_values=clip_values,
            device_type="gpu" if inputs.device.type == "cuda" else "cpu",
        )
        samples = inputs.cpu().numpy()
        scores: dict[str, np.ndarray] = {}
        try:
            for name, rule_betas in betas.items():
                values = np.empty(count)
                for index in range(count):
                    probabilities.beta = float(rule_betas[index])
                    np.random.seed([seed, index])  # noqa: NPY002
                    values[index] = clever_u(
                        classifier, samples[index], nb_batches=nb_batches, batch_size=batch_size,
                        radius=radius, norm=norm, c_init=c_init, pool_factor=pool_factor,
                        verbose=False,
                    )
                scores[name] = values
        finally:
            np.random.set_state(numpy_state)  # noqa: NPY002
            torch.set_rng_state(torch_state)
    return CleverComparison(scores=scores, betas=betas)
