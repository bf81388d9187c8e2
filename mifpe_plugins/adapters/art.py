"""ART (adversarial-robustness-toolbox) adapter: the MIFPE and PGD++ losses inside ART's attacks.

ART's seam for a loss is the estimator: ``PyTorchClassifier(model, loss=..., ...)``. Its gradient
attacks -- :class:`~art.attacks.evasion.FastGradientMethod`, the PyTorch variant of
:class:`~art.attacks.evasion.ProjectedGradientDescent` and
:class:`~art.attacks.evasion.AutoProjectedGradientDescent` with ``loss_type=None`` -- ask the
estimator for ``loss_gradient(x, y)``, which back-propagates ``loss(logits, labels)``. A loss
module from this file therefore turns every one of those attacks into its MIFPE (or PGD++)
version without touching ART::

    from art.attacks.evasion import ProjectedGradientDescent
    from mifpe_plugins.adapters.art import mifpe_classifier

    classifier = mifpe_classifier(model, input_shape=(1, 28, 28), nb_classes=10)
    x_adv = ProjectedGradientDescent(classifier, eps=0.3, eps_step=0.01, max_iter=100).generate(x)

How ART hands the loss its inputs (ART 1.20.1, ``art/estimators/classification/pytorch.py``):

* The loss receives the model's last output and labels. Because every loss here subclasses
  :class:`torch.nn.CrossEntropyLoss`, ART reduces one-hot labels to class indices first; float
  indices, ``(B, 1)`` columns and one-hot rows are accepted too, soft (probability) labels are not.
* ``compute_loss(x, y, reduction="none")`` sets the module's ``reduction`` attribute for the call
  and restores it; APGD relies on this to compare per-sample losses, so ``reduction`` is honoured
  ('none' | 'mean' | 'sum'). ``loss_gradient`` back-propagates the module's own ``reduction``,
  which must then be 'mean' (the default) or 'sum'.
* Targeted attacks negate the gradient themselves: they *descend* the loss toward the target
  labels. So the loss is always evaluated in its untargeted form -- MIFPE eq. 7,
  ``CE(T z / Delta_detach, y)`` -- and ART descending it toward ``y_t`` is ascending eq. 8,
  ``-CE(T z / Delta_detach, y_t)``.

APGD: with ``loss_type=None`` ART 1.20.1 uses the estimator as given, calls ``loss_gradient`` for
the step and ``compute_loss(..., reduction="none")`` for its per-sample best-point bookkeeping, and
treats a *smaller* loss as better in targeted mode (true of every untargeted-form loss here). With
``loss_type="cross_entropy"`` or ``"difference_logits_ratio"`` ART builds a new classifier with its
own loss and ignores ours. ART's ``AutoAttack`` builds its APGDs that way, so pass it an
``attacks=[AutoProjectedGradientDescent(classifier, loss_type=None, ...), ...]`` list instead.

ART computes in float32 (``ART_NUMPY_DTYPE``); for float16/bfloat16/float64 use the core attacks
(:func:`mifpe_plugins.pgd`). Temperatures are never implemented as ART postprocessors: ART does not
post-process gradients, so a postprocessor would change the predictions' scale but not the attack.

References
----------
MIFPE : Y. Yu, C.-Z. Xu, "Efficient Loss Function by Minimizing the Detrimental Effect of
    Floating-point Errors on Gradient-based Attacks", CVPR 2023 (eq. 7, 8).
PGD++ : K. Gupta, T. Ajanthan, "Improved Gradient based Adversarial Attacks for Quantized
    Networks", AAAI 2022 (Proposition 1, Alg. 1 NJS, Alg. 2 HNS, Table 11 / Appendix C.3 CLEVER).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..losses import BetaRule, Loss, Tempered, get_loss, mifpe, tempered
from ..temperature import HNS, NJS, hns_beta, njs_beta, njs_beta1
from ._host import require

require("art", "art")
_art_classification = require("art.estimators.classification", "art")
PyTorchClassifier = _art_classification.PyTorchClassifier

__all__ = [
    "AttackLoss",
    "MIFPELoss",
    "TemperedLoss",
    "njs_loss",
    "AttackClassifier",
    "mifpe_classifier",
    "with_attack_loss",
    "CleverComparison",
    "clever_comparison",
]

REDUCTIONS = ("none", "mean", "sum")
_CLEVER_NORMS = (1, 2, math.inf)


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def _check_reduction(reduction: object) -> str:
    if reduction not in REDUCTIONS:
        allowed = ", ".join(map(repr, REDUCTIONS))
        raise ValueError(f"reduction must be one of {allowed}, got {reduction!r}")
    return reduction  # type: ignore[return-value]


def _check_positive_number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _reason_it_cannot_run_in_art(part: object) -> str | None:
    """Why a loss (or a part of a tempered loss) cannot be evaluated from logits and labels alone.

    ART calls the loss with the model's logits and labels only: it never hands over the model or
    the clean batch, and it re-batches and sub-selects samples between calls (APGD keeps only the
    samples still robust), so nothing per-sample can be precomputed and looked up by position.
    """
    if isinstance(part, Tempered):
        return _reason_it_cannot_run_in_art(part.base) or _reason_it_cannot_run_in_art(part.beta)
    if isinstance(part, HNS):
        return (
            "HNS (PGD++ Alg. 2) picks beta per sample from the Jacobian at the clean input, and "
            "ART's loss sees neither the model nor the clean batch. Use the core attacks "
            "(mifpe_plugins.pgd(..., loss='hns') or fgsm) for HNS, or TemperedLoss with NJS"
        )
    if isinstance(part, NJS):
        if part.beta1 is None:
            return (
                "NJS (PGD++ Alg. 1) needs the network's beta1, and ART's loss never sees the "
                "model: pass njs_loss(model, reference_inputs) or "
                "TemperedLoss(NJS(beta1=njs_beta1(model, x)))"
            )
        return None
    if isinstance(part, Tensor) and part.dim() > 0:
        return (
            "a per-sample beta tensor cannot follow ART's batching (APGD sub-selects samples); "
            "use a number, a 0-dim tensor, NJS with beta1 or a rule (logits, labels) -> (batch,)"
        )
    if getattr(part, "bind", None) is not None:
        return (
            f"{part!r} must be bound to the model and the clean batch (it has .bind), which "
            "ART's loss interface cannot do"
        )
    return None


def _class_indices(target: Tensor, logits: Tensor) -> Tensor:
    """ART's labels as class indices of shape (B,): indices (int or float), (B, 1) or one-hot."""
    if not isinstance(target, Tensor):
        target = torch.as_tensor(np.asarray(target))
    batch, num_classes = logits.shape[0], logits.shape[1]
    if target.dim() == 2 and target.shape[1] == 1 and num_classes != 1:
        target = target[:, 0]
    if target.dim() == 2:
        if target.shape != logits.shape:
            raise ValueError(
                f"target: one-hot labels must have shape {tuple(logits.shape)}, "
                f"got {tuple(target.shape)}"
            )
        as_float = target.double()
        binary = bool(((as_float == 0) | (as_float == 1)).all())
        one_hot = binary and bool((as_float.sum(dim=1) == 1).all())
        if not one_hot:
            raise ValueError(
                "target: got soft (probability) labels; the attack losses need class indices "
                "or one-hot rows"
            )
        target = target.argmax(dim=1)
    if target.dim() != 1 or target.shape[0] != batch:
        raise ValueError(
            f"target: labels must be class indices of shape ({batch},), ({batch}, 1) or one-hot "
            f"({batch}, {num_classes}); got shape {tuple(target.shape)}"
        )
    if target.dtype.is_floating_point:
        if not bool((target == target.round()).all()):
            raise ValueError("target: float labels must hold whole class indices")
    elif target.dtype == torch.bool or target.dtype.is_complex:
        raise ValueError(f"target: labels must be class indices, got dtype {target.dtype}")
    target = target.to(device=logits.device, dtype=torch.long)
    if target.numel() and (bool((target < 0).any()) or bool((target >= num_classes).any())):
        raise ValueError(
            f"target: class indices must lie in [0, {num_classes - 1}], got values in "
            f"[{int(target.min())}, {int(target.max())}]"
        )
    return target


class AttackLoss(nn.CrossEntropyLoss):
    """Any per-sample loss of this package as a loss module for ART's ``PyTorchClassifier``.

    It subclasses :class:`torch.nn.CrossEntropyLoss` only so that ART hands it class indices
    (ART checks ``isinstance(loss, nn.CrossEntropyLoss)``); none of CrossEntropyLoss's own options
    (``weight``, ``ignore_index``, ``label_smoothing``) is used.

    Parameters
    ----------
    loss : str or Loss
        A name accepted by :func:`mifpe_plugins.get_loss` (``"ce"``, ``"cw"``, ``"dlr"``,
        ``"mifpe"``, ``"fnz-<n>"``) or a callable
        ``loss(logits, labels, *, targeted=False) -> (B,)``.
        It is always evaluated in its untargeted form (larger = further from ``labels``): ART's
        targeted attacks descend it toward the target labels themselves. ``"njs"`` without a
        ``beta1`` and ``"hns"`` are refused (ART never shows the loss the model; see
        :class:`TemperedLoss` and :func:`njs_loss`).
    reduction : {"mean", "sum", "none"}
        As for :class:`torch.nn.CrossEntropyLoss`. ART's ``compute_loss`` sets it per call
        (APGD asks for 'none'); ``loss_gradient`` needs 'mean' or 'sum'. Since every ART gradient
        attack normalises the gradient per sample (sign, L1 or L2), 'mean' and 'sum' give the same
        steps; 'mean' matches ``nn.CrossEntropyLoss()`` bit for bit with ``loss="ce"``.

    Examples
    --------
    >>> classifier = PyTorchClassifier(model, loss=AttackLoss("mifpe"), input_shape=(20,),
    ...                                nb_classes=5, clip_values=(0.0, 1.0))
    """

    def __init__(self, loss: str | Loss = "mifpe", *, reduction: str = "mean") -> None:
        _check_reduction(reduction)
        resolved = get_loss(loss)
        reason = _reason_it_cannot_run_in_art(resolved)
        if reason is not None:
            raise ValueError(f"loss={loss!r} cannot run inside ART: {reason}")
        super().__init__(reduction=reduction)
        self.attack_loss = resolved

    def per_sample(self, logits: Tensor, target: Tensor) -> Tensor:
        """The untargeted loss per sample, shape (B,), for any of ART's label formats."""
        return self.attack_loss(logits, _class_indices(target, logits))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        values = self.per_sample(logits, target)
        # Read at call time: ART's compute_loss assigns .reduction directly around each call.
        reduction = _check_reduction(self.reduction)
        if reduction == "mean":
            return values.mean()
        if reduction == "sum":
            return values.sum()
        return values

    def extra_repr(self) -> str:
        name = getattr(self.attack_loss, "__name__", None) or repr(self.attack_loss)
        return f"loss={name}, reduction={self.reduction!r}"


class MIFPELoss(AttackLoss):
    """The MIFPE loss (MIFPE paper, eq. 7) as an ART loss: ``CE(T * z / Delta_detach, y)``.

    ``Delta = z_pi1 - z_pi2`` per sample, detached, so the scaled logits have top margin exactly
    ``T``: no softmax underflow and near-minimal rounding error in the gradient. ART's targeted
    attacks descend this toward the target labels, which is ascending the targeted form, eq. 8.

    Parameters
    ----------
    temperature : float
        ``T``; the paper uses ``T ~ 1`` (its authors' released code uses 10).
    reduction : {"mean", "sum", "none"}
        See :class:`AttackLoss`.

    Examples
    --------
    >>> from art.attacks.evasion import ProjectedGradientDescent
    >>> classifier = PyTorchClassifier(model, loss=MIFPELoss(), input_shape=(3, 32, 32),
    ...                                nb_classes=10, clip_values=(0.0, 1.0))
    >>> x_adv = ProjectedGradientDescent(classifier, eps=8 / 255, eps_step=2 / 255).generate(x)
    """

    def __init__(self, temperature: float = 1.0, *, reduction: str = "mean") -> None:
        checked = _check_positive_number(temperature, "temperature")
        super().__init__(mifpe(checked), reduction=reduction)
        self.temperature = checked

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}, reduction={self.reduction!r}"


class TemperedLoss(AttackLoss):
    """A temperature-scaled loss (PGD++) as an ART loss: ``base(beta * z, y)``.

    With ``base="ce"`` this is PGD++'s objective, cross-entropy on ``beta * z`` (PGD++ Sec. 4).

    Parameters
    ----------
    beta : float, 0-dim Tensor, NJS or rule
        A positive number (a fixed temperature, e.g. the paper's heuristic 0.1); an
        :class:`~mifpe_plugins.NJS` rule *with* ``beta1`` (PGD++ Alg. 1: ``beta_2 * beta_1`` per
        sample and per step, ``beta_2`` from Proposition 1 when ``1 - p_top <= rho``; see
        :func:`njs_loss`); or any rule ``rule(logits_detached, labels) -> (B,)``.
        Not supported: HNS (PGD++ Alg. 2) and per-sample beta tensors. HNS fixes ``beta`` per
        sample from the Jacobian at the *clean* input, but ART calls the loss with logits and
        labels only, re-batches between calls and (APGD) drops samples already fooled, so a
        per-sample value cannot be matched to its sample. Use the core attacks for HNS.
    base : str or Loss
        The loss to temper, default ``"ce"``.
    reduction : {"mean", "sum", "none"}
        See :class:`AttackLoss`.
    """

    def __init__(
        self,
        beta: float | Tensor | NJS | BetaRule,
        *,
        base: str | Loss = "ce",
        reduction: str = "mean",
    ) -> None:
        if isinstance(beta, HNS) or (isinstance(beta, Tensor) and beta.dim() > 0):
            raise ValueError(f"beta: {_reason_it_cannot_run_in_art(beta)}")
        if isinstance(beta, NJS) and beta.beta1 is None:
            raise ValueError(f"beta: {_reason_it_cannot_run_in_art(beta)}")
        super().__init__(tempered(base, beta), reduction=reduction)
        self.beta = beta

    def extra_repr(self) -> str:
        base = self.attack_loss.base
        base_name = getattr(base, "__name__", None) or repr(base)
        return f"beta={self.beta!r}, base={base_name}, reduction={self.reduction!r}"


def njs_loss(
    model: nn.Module,
    reference_inputs: Tensor | np.ndarray,
    *,
    rho: float = 0.01,
    samples: int = 100,
    reduction: str = "mean",
) -> TemperedLoss:
    """PGD++'s NJS loss for ART (PGD++ Alg. 1): CE on ``beta_2 * beta_1 * z``.

    ``beta_1`` is computed once here, as the paper does, from the input-logit Jacobians of the
    first ``samples`` reference inputs (:func:`mifpe_plugins.njs_beta1`); ``beta_2`` is chosen per
    sample at every step from the current logits (:func:`mifpe_plugins.njs_beta`).

    Parameters
    ----------
    model : nn.Module
        The network that returns logits; used as given (call ``model.eval()`` first).
    reference_inputs : Tensor or ndarray
        Inputs (M, ...) in the model's input space, e.g. 100 test images.
    rho : float
        Lower bound on ``1 - p_top`` (0.01 in the paper).
    samples : int
        ``M``, how many reference inputs to use.
    reduction : {"mean", "sum", "none"}
        See :class:`AttackLoss`.
    """
    _check_module(model, "model")
    inputs = _as_model_tensor(reference_inputs, model, "reference_inputs")
    beta1 = njs_beta1(model, inputs, samples=samples)
    return TemperedLoss(NJS(beta1=beta1, rho=rho, samples=samples), reduction=reduction)


# --------------------------------------------------------------------------------------------
# Classifiers
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _caller_state_kept(model: nn.Module) -> Iterator[None]:
    """Restore every module's ``.training`` and every parameter's ``.grad`` on exit.

    ART's PyTorchClassifier switches the model's mode in every predict/gradient call and leaves
    ``loss.backward()``'s parameter gradients behind. ART clears ``.grad`` with
    ``zero_grad()``, which in torch >= 2.0 sets it to None rather than zeroing in place, so keeping
    references to the caller's gradient tensors is enough to put them back unchanged.
    """
    modes = [(module, module.training) for module in model.modules()]
    grads = [(param, param.grad) for param in model.parameters()]
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode
        for param, grad in grads:
            param.grad = grad


class AttackClassifier(PyTorchClassifier):
    """ART's ``PyTorchClassifier`` that leaves the caller's model as it found it.

    Identical to ``PyTorchClassifier`` (same constructor, same results bit for bit), except that
    after each ``predict``, ``loss_gradient``, ``class_gradient``, ``compute_loss``,
    ``custom_loss_gradient`` and ``get_activations`` call the model's ``.training`` flags and its
    parameters' ``.grad`` are restored. ``fit`` is left alone: training is meant to change them.
    Built by :func:`mifpe_classifier` and :func:`with_attack_loss`.
    """

    def predict(self, *args: Any, **kwargs: Any) -> np.ndarray:
        with _caller_state_kept(self.model):
            return super().predict(*args, **kwargs)

    def loss_gradient(self, *args: Any, **kwargs: Any) -> Any:
        with _caller_state_kept(self.model):
            return super().loss_gradient(*args, **kwargs)

    def class_gradient(self, *args: Any, **kwargs: Any) -> Any:
        with _caller_state_kept(self.model):
            return super().class_gradient(*args, **kwargs)

    def compute_loss(self, *args: Any, **kwargs: Any) -> Any:
        with _caller_state_kept(self.model):
            return super().compute_loss(*args, **kwargs)

    def custom_loss_gradient(self, *args: Any, **kwargs: Any) -> Any:
        with _caller_state_kept(self.model):
            return super().custom_loss_gradient(*args, **kwargs)

    def get_activations(self, *args: Any, **kwargs: Any) -> Any:
        with _caller_state_kept(self.model):
            return super().get_activations(*args, **kwargs)


def _check_module(model: object, name: str) -> nn.Module:
    if isinstance(model, PyTorchClassifier):
        raise TypeError(
            f"{name} must be a torch.nn.Module returning logits, got an ART PyTorchClassifier: "
            "use with_attack_loss(classifier) for an existing classifier, or pass classifier.model"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{name} must be a torch.nn.Module returning logits, got {type(model).__name__}"
        )
    return model


def _check_float32(model: nn.Module, name: str) -> None:
    dtypes = {param.dtype for param in model.parameters()}
    wrong = {dtype for dtype in dtypes if dtype.is_floating_point and dtype != torch.float32}
    if wrong:
        kinds = ", ".join(sorted(str(d) for d in wrong))
        raise ValueError(
            f"{name} has {kinds} parameters, but ART feeds float32 inputs (ART_NUMPY_DTYPE): call "
            f"{name}.float(), or use the core attacks (mifpe_plugins.pgd) for other dtypes"
        )


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _device_type(model: nn.Module) -> str:
    # ART's default "gpu" would move a CPU model to CUDA when one exists (PyTorchClassifier calls
    # model.to(device)); follow the model instead.
    return "gpu" if _model_device(model).type == "cuda" else "cpu"


def _as_model_tensor(values: Tensor | np.ndarray, model: nn.Module, name: str) -> Tensor:
    if isinstance(values, Tensor):
        tensor = values.detach()
    elif isinstance(values, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(values))
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor or a numpy array, got {type(values).__name__}"
        )
    if not tensor.dtype.is_floating_point:
        raise ValueError(f"{name} must be floating point, got {tensor.dtype}")
    if tensor.dim() < 2 or tensor.shape[0] == 0:
        raise ValueError(f"{name} must have shape (batch >= 1, ...), got {tuple(tensor.shape)}")
    return tensor.to(device=_model_device(model), dtype=torch.float32)


def _final_module(model: nn.Module) -> nn.Module:
    while isinstance(model, nn.Sequential) and len(model) > 0:
        model = model[-1]
    return model


def _looks_like_probabilities(outputs: Tensor) -> bool:
    return (
        outputs.dim() == 2
        and bool((outputs >= 0).all())
        and bool((outputs <= 1).all())
        and bool(((outputs.sum(dim=1) - 1).abs() < 1e-3).all())
    )


_PROBABILITY_HELP = (
    "the attack losses need logits: softmax saturates exactly where MIFPE matters (margins above "
    "~103 in float32), and cross-entropy on probabilities is a different function. Remove the "
    "final softmax (nn.LogSoftmax is fine: cross-entropy and MIFPE are unchanged by a per-sample "
    "shift of the logits)"
)


def _probe_inputs(input_shape: tuple[int, ...], clip_values: Any, count: int = 4) -> np.ndarray:
    # A private generator: the probe must not consume or reseed the caller's global RNG.
    rng = np.random.default_rng(0)
    low, high = (0.0, 1.0) if clip_values is None else clip_values
    sample = rng.uniform(size=(count, *input_shape))
    return (np.asarray(low) + (np.asarray(high) - np.asarray(low)) * sample).astype(np.float32)


def _check_input_shape(input_shape: object) -> tuple[int, ...]:
    if (
        not isinstance(input_shape, (tuple, list))
        or not input_shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape)
    ):
        raise ValueError(
            f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}"
        )
    return tuple(input_shape)


def _check_nb_classes(nb_classes: object) -> int:
    if isinstance(nb_classes, bool) or not isinstance(nb_classes, int) or nb_classes < 2:
        raise ValueError(f"nb_classes must be an integer >= 2, got {nb_classes!r}")
    return nb_classes


def _check_logit_outputs(
    model: nn.Module, probe: np.ndarray, *, nb_classes: int, name: str
) -> None:
    """Run the model on a probe batch: right number of outputs, and logits, not probabilities."""
    if isinstance(_final_module(model), (nn.Softmax, nn.Softmax2d)):
        raise ValueError(f"{name} ends with {_final_module(model)!r}; {_PROBABILITY_HELP}")
    inputs = torch.from_numpy(probe).to(_model_device(model))
    with _caller_state_kept(model), torch.no_grad():
        model.eval()
        try:
            outputs = model(inputs)
        except Exception as error:  # the model's own error, re-raised with the argument named
            raise ValueError(
                f"{name} failed on a probe batch of shape {tuple(inputs.shape)} "
                f"(input_shape={tuple(probe.shape[1:])}): {error}"
            ) from error
    if not isinstance(outputs, Tensor) or outputs.dim() != 2 or outputs.shape[1] != nb_classes:
        shape = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise ValueError(
            f"{name} must return logits of shape (batch, nb_classes={nb_classes}), got {shape}"
        )
    if _looks_like_probabilities(outputs):
        raise ValueError(
            f"{name} returns probabilities (rows in [0, 1] summing to 1); {_PROBABILITY_HELP}"
        )


def mifpe_classifier(
    model: nn.Module,
    *,
    input_shape: tuple[int, ...],
    nb_classes: int,
    clip_values: tuple[float, float] | None = (0.0, 1.0),
    temperature: float = 1.0,
    loss: AttackLoss | None = None,
    **kwargs: Any,
) -> AttackClassifier:
    """An ART ``PyTorchClassifier`` whose attacks use the MIFPE loss (MIFPE paper, eq. 7 / eq. 8).

    Every ART attack that calls ``estimator.loss_gradient`` -- ``FastGradientMethod``,
    ``ProjectedGradientDescent``, ``AutoProjectedGradientDescent(loss_type=None)`` -- then attacks
    with MIFPE. The model is checked up front on a small probe batch (shape, number of classes,
    logits rather than probabilities), and the returned :class:`AttackClassifier` leaves the
    model's ``.training`` and parameter ``.grad`` as they were after every call.

    Parameters
    ----------
    model : nn.Module
        Float32 network returning logits (B, nb_classes).
    input_shape : tuple of int
        Shape of one input, as for ``PyTorchClassifier``.
    nb_classes : int
        Number of classes, >= 2.
    clip_values : (float, float) or None
        Valid input range; attacks clip to it.
    temperature : float
        MIFPE's ``T`` (default 1, the paper's value).
    loss : AttackLoss, optional
        Use this loss instead of ``MIFPELoss(temperature)``, e.g. ``AttackLoss("ce")`` or
        ``njs_loss(model, x)``. Do not combine with ``temperature``.
    **kwargs
        Passed on to ``PyTorchClassifier`` (``preprocessing``, ``channels_first``,
        ``device_type``, ...). ``device_type`` defaults to the model's device.

    Returns
    -------
    AttackClassifier
        A ``PyTorchClassifier``.
    """
    _check_module(model, "model")
    shape = _check_input_shape(input_shape)
    classes = _check_nb_classes(nb_classes)
    if loss is None:
        loss = MIFPELoss(temperature)
    elif not isinstance(loss, AttackLoss):
        raise TypeError(
            f"loss must be an AttackLoss (MIFPELoss, TemperedLoss, AttackLoss(...)) or None, got "
            f"{type(loss).__name__}; for other ART losses build PyTorchClassifier directly"
        )
    elif temperature != 1.0:
        raise ValueError("pass either temperature (for the default MIFPELoss) or loss, not both")
    _check_float32(model, "model")
    _check_logit_outputs(model, _probe_inputs(shape, clip_values), nb_classes=classes, name="model")
    kwargs.setdefault("device_type", _device_type(model))
    return AttackClassifier(
        model, loss=loss, input_shape=shape, nb_classes=classes, clip_values=clip_values, **kwargs
    )


def with_attack_loss(
    classifier: PyTorchClassifier,
    loss: AttackLoss | None = None,
    *,
    temperature: float = 1.0,
) -> AttackClassifier:
    """A copy of an existing ART ``PyTorchClassifier`` that attacks with ``loss`` (default MIFPE).

    Everything else is carried over from ``classifier.get_params()`` -- the model (shared, not
    copied), input shape, classes, clip values, preprocessing, pre/post-processing defences,
    channel order, device -- the same way ART's own APGD swaps in its loss. The original
    classifier is not modified.

    Parameters
    ----------
    classifier : PyTorchClassifier
        Its model must output logits (checked on a probe batch).
    loss : AttackLoss, optional
        Default ``MIFPELoss(temperature)``.
    temperature : float
        MIFPE's ``T`` when ``loss`` is None.
    """
    if not isinstance(classifier, PyTorchClassifier):
        raise TypeError(
            "classifier must be an art.estimators.classification.PyTorchClassifier, got "
            f"{type(classifier).__name__}; for a torch.nn.Module use mifpe_classifier(model, ...)"
        )
    if loss is None:
        loss = MIFPELoss(temperature)
    elif not isinstance(loss, AttackLoss):
        raise TypeError(f"loss must be an AttackLoss or None, got {type(loss).__name__}")
    elif temperature != 1.0:
        raise ValueError("pass either temperature (for the default MIFPELoss) or loss, not both")
    model = classifier.model
    _check_float32(model, "classifier.model")
    # The raw model, not classifier.predict: ART's postprocessing defences may turn predictions
    # into probabilities while loss_gradient still sees the model's logits.
    probe = _probe_inputs(tuple(classifier.input_shape), classifier.clip_values)
    _check_logit_outputs(model, probe, nb_classes=classifier.nb_classes, name="classifier.model")
    params = classifier.get_params()
    params["loss"] = loss
    return AttackClassifier(**params)


# --------------------------------------------------------------------------------------------
# CLEVER (PGD++ paper, Table 11, Appendix C.3)
# --------------------------------------------------------------------------------------------


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
    and parameter gradients (ART's ``class_gradient`` back-propagates into them).

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
    about uninformative gradients; the scores are returned as ART computes them.
    """
    _check_module(model, "model")
    classes = _check_nb_classes(nb_classes)
    shape = _check_input_shape(input_shape)
    _check_positive_int(nb_batches, "nb_batches")
    _check_positive_int(batch_size, "batch_size")
    _check_positive_int(pool_factor, "pool_factor")
    _check_positive_int(njs_samples, "njs_samples")
    if hns_points < 2:
        raise ValueError(f"hns_points must be >= 2, got {hns_points!r}")
    if norm not in _CLEVER_NORMS:
        raise ValueError(f"norm must be 1, 2 or numpy.inf (ART clever_u), got {norm!r}")
    _check_positive_number(radius, "radius")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    _check_positive_number(beta_heuristic, "beta_heuristic")
    _check_float32(model, "model")
    inputs = _as_model_tensor(x, model, "x")
    if tuple(inputs.shape[1:]) != shape:
        raise ValueError(
            f"x must have shape (N, *input_shape) = (N, *{shape}), got {tuple(inputs.shape)}"
        )

    metrics = require("art.metrics", "art")
    # ART's clever_u draws from numpy's legacy global RNG, so that is the one to seed and restore.
    numpy_state = np.random.get_state()  # noqa: NPY002
    torch_state = torch.get_rng_state()
    with _caller_state_kept(model):
        model.eval()
        with torch.no_grad():
            logits = model(inputs)
        if logits.dim() != 2 or logits.shape[1] != classes:
            raise ValueError(
                f"model must return logits of shape (N, nb_classes={classes}), "
                f"got {tuple(logits.shape)}"
            )
        ends_with_softmax = isinstance(_final_module(model), (nn.Softmax, nn.Softmax2d))
        if ends_with_softmax or _looks_like_probabilities(logits):
            raise ValueError(f"model returns probabilities; {_PROBABILITY_HELP}")
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
        classifier = PyTorchClassifier(
            probabilities, loss=nn.CrossEntropyLoss(), input_shape=shape, nb_classes=classes,
            clip_values=clip_values, device_type=_device_type(model),
        )
        samples = inputs.cpu().numpy()
        scores: dict[str, np.ndarray] = {}
        try:
            for name, rule_betas in betas.items():
                values = np.empty(count)
                for index in range(count):
                    probabilities.beta = float(rule_betas[index])
                    np.random.seed([seed, index])  # noqa: NPY002
                    values[index] = metrics.clever_u(
                        classifier, samples[index], nb_batches=nb_batches, batch_size=batch_size,
                        radius=radius, norm=norm, c_init=c_init, pool_factor=pool_factor,
                        verbose=False,
                    )
                scores[name] = values
        finally:
            np.random.set_state(numpy_state)  # noqa: NPY002
            torch.set_rng_state(torch_state)
    return CleverComparison(scores=scores, betas=betas)
