"""ART adapter: MIFPE and PGD++ losses as the loss of ART's PyTorchClassifier. See docs/adapters/art.md."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..attacks import _common as core
from ..losses import BetaRule, Loss, resolve_loss
from ..temperature import NJS, njs_beta1
from ._host import require

require("art", "art")
PyTorchClassifier = require("art.estimators.classification", "art").PyTorchClassifier

__all__ = ["AttackLoss", "MIFPELoss", "TemperedLoss", "njs_loss", "AttackClassifier", "mifpe_classifier",
           "with_attack_loss"]
_REDUCTIONS = ("none", "mean", "sum")


class AttackLoss(nn.CrossEntropyLoss):
    """A loss of mifpe_plugins as an ART loss module, in its untargeted form (ART's targeted attacks descend
    it toward the targets); a CrossEntropyLoss only so that ART hands it class indices.

    Args:
        loss: a name of mifpe_plugins.get_loss ("mifpe", "ce", "cw", "dlr", "fnz-<n>") or a callable; not
            "hns" or NJS without beta1 (ART's loss never sees the model).
        reduction: "mean" (with "ce": nn.CrossEntropyLoss() bitwise), "sum" or "none".
    """
    def __init__(self, loss: str | Loss = "mifpe", *, reduction: str = "mean") -> None:
        super().__init__(reduction=core.check_choice(reduction, "reduction", _REDUCTIONS))
        self.attack_loss = resolve_loss(loss)  # resolved and checked by the core; refused: what needs more
        if what := core.needs_context(self.attack_loss):  # than logits and labels (APGD re-batches them)
            raise ValueError(f"{type(self).__name__}: {what} needs the model, the clean batch or the sample "
                             "order, which ART's loss never sees: for NJS pass njs_loss(model, x), for HNS "
                             "use mifpe_plugins.pgd(..., loss='hns')")

    def per_sample(self, logits: Tensor, target: Any) -> Tensor:
        """The untargeted loss per sample, shape (B,), for indices (int or float), (B, 1) or one-hot labels."""
        target = torch.as_tensor(target, device=logits.device)
        if target.dim() == 2 and target.shape == logits.shape:
            if not bool((((target == 0) | (target == 1)).all(1) & (target.sum(1) == 1)).all()):
                raise ValueError("target: got soft (probability) labels; the losses need indices or one-hot rows")
            target = target.argmax(dim=1)
        target = target[:, 0] if target.dim() == 2 and target.shape[1] == 1 else target
        if target.dtype.is_floating_point and not bool((target == target.round()).all()):
            raise ValueError("target: float labels must hold whole class indices")
        target = core.check_labels(target.long() if target.is_floating_point() else target, logits, "target")
        core.check_label_range(target, logits.shape[1], name="target")
        return self.attack_loss(logits, target)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        values = self.per_sample(logits, target)
        reduction = core.check_choice(self.reduction, "reduction", _REDUCTIONS)  # per call: ART assigns it
        return values if reduction == "none" else getattr(values, reduction)()

    def extra_repr(self) -> str:
        return f"loss={getattr(self.attack_loss, '__name__', self.attack_loss)}, reduction={self.reduction!r}"


class MIFPELoss(AttackLoss):
    """MIFPE's CE(T z / Delta_detach, y) (eq. 7; ART's targeted attacks make it eq. 8) as an ART loss.

    Args:
        temperature: T, the top logit margin after scaling (the paper's 1). reduction: as in AttackLoss.
    """
    def __init__(self, temperature: float = 1.0, *, reduction: str = "mean") -> None:
        super().__init__(resolve_loss("mifpe", temperature=temperature), reduction=reduction)
        self.temperature = self.attack_loss.beta.temperature

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}, reduction={self.reduction!r}"


class TemperedLoss(AttackLoss):
    """PGD++'s temperature-scaled base(beta z, y) as an ART loss.

    Args:
        beta: a number > 0 (e.g. 0.1), NJS(beta1=...) (Alg. 1, see njs_loss) or a rule (logits, labels) ->
            (B,); not HNS or a per-sample tensor. base: the loss beta scales. reduction: as in AttackLoss.
    """
    def __init__(self, beta: float | Tensor | NJS | BetaRule, *, base: str | Loss = "ce",
                 reduction: str = "mean") -> None:
        super().__init__(resolve_loss(base, beta=beta), reduction=reduction)
        self.beta = beta

    def extra_repr(self) -> str:
        base = getattr(self.attack_loss.base, "__name__", self.attack_loss.base)
        return f"beta={self.beta!r}, base={base}, reduction={self.reduction!r}"


def njs_loss(model: nn.Module, reference_inputs: Tensor | np.ndarray, *, rho: float = 0.01, samples: int = 100,
             reduction: str = "mean") -> TemperedLoss:
    """PGD++'s NJS loss (Alg. 1) for ART: CE on beta_2 beta_1 z, with beta_1 computed here once.

    Args:
        model: the network returning logits, used as given (call model.eval() first).
        reference_inputs: (M, ...) tensor or array in the model's input space, e.g. test images.
        rho: lower bound on 1 - p_top (the paper's 0.01). samples: M. reduction: as in AttackLoss.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"njs_loss: model must be a torch.nn.Module returning logits, got {type(model).__name__}")
    core.check_inputs(inputs := torch.as_tensor(reference_inputs), None)
    device = next(iter([*model.parameters(), *model.buffers()]), inputs).device
    beta1 = njs_beta1(model, inputs.detach().to(device, torch.float32), samples=samples)
    return TemperedLoss(NJS(beta1=beta1, rho=rho, samples=samples), reduction=reduction)


def _kept(host_method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(host_method)
    def method(self: PyTorchClassifier, *args: Any, **kwargs: Any) -> Any:
        with core.model_state_kept(self.model):  # ART's zero_grad() sets .grad to None: the caller's come back
            return host_method(self, *args, **kwargs)
    return method


class AttackClassifier(PyTorchClassifier):
    """ART's PyTorchClassifier (same arguments, same results bitwise) that puts the model's .training flags
    and parameters' .grad and requires_grad back after every call but ``fit``."""
    predict, loss_gradient = _kept(PyTorchClassifier.predict), _kept(PyTorchClassifier.loss_gradient)
    class_gradient, compute_loss = _kept(PyTorchClassifier.class_gradient), _kept(PyTorchClassifier.compute_loss)
    custom_loss_gradient = _kept(PyTorchClassifier.custom_loss_gradient)
    get_activations = _kept(PyTorchClassifier.get_activations)
    _raw_output = _kept(lambda self, x: self.model.eval()(x))  # the model's own output, for the probe


def _built(name: str, temperature: float, **params: Any) -> AttackClassifier:
    # AttackClassifier(**params), once its raw model (not predict(): postprocessing defences) returns logits
    if not isinstance(params["loss"], (AttackLoss, type(None))):
        raise TypeError(f"loss must be an AttackLoss (MIFPELoss, TemperedLoss, AttackLoss(...)) or None, got "
                        f"{type(params['loss']).__name__}; for other losses build PyTorchClassifier directly")
    if params["loss"] is not None and temperature != 1.0:
        raise ValueError("pass either temperature (for the default MIFPELoss) or loss, not both")
    loss = MIFPELoss(temperature) if params["loss"] is None else params["loss"]
    classifier = AttackClassifier(**{**params, "loss": loss})
    if wrong := core.other_float_dtypes(classifier.model):
        raise ValueError(f"{name} has {', '.join(wrong)} parameters, but ART feeds float32 inputs: call "
                         f"{name}.float(), or use mifpe_plugins.pgd for other dtypes")
    low, high = (0.0, 1.0) if classifier.clip_values is None else classifier.clip_values
    unit = np.random.default_rng(0).uniform(size=(4, *classifier.input_shape))  # a private RNG, not the caller's
    probe = torch.from_numpy((low + (high - low) * unit).astype(np.float32))
    try:
        with torch.no_grad():
            out = classifier._raw_output(probe.to(classifier.device))
    except Exception as error:  # the model's own error, naming the argument
        raise ValueError(f"{name} failed on a probe batch of shape {tuple(probe.shape)} (input_shape="
                         f"{tuple(classifier.input_shape)}): {error}") from error
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[1] != classifier.nb_classes:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{name} must return (batch, nb_classes={classifier.nb_classes}) logits, got {got}")
    if core.looks_like_probabilities(out):  # the core warns; here an error
        last = list(classifier.model.modules())[-1]
        ends = f"; it ends with {last!r}" if isinstance(last, (nn.Softmax, nn.Softmax2d)) else ""
        raise ValueError(f"{name} returns probabilities (rows in [0, 1] summing to 1{ends}); the losses "
                         "need logits: remove the final softmax (nn.LogSoftmax is fine)")
    core.check_logits(out, len(out))
    return classifier


def mifpe_classifier(model: nn.Module, *, input_shape: tuple[int, ...], nb_classes: int,
                     clip_values: tuple[float, float] | None = (0.0, 1.0), temperature: float = 1.0,
                     loss: AttackLoss | None = None, **kwargs: Any) -> AttackClassifier:
    """An AttackClassifier whose gradient attacks use MIFPELoss(temperature), or ``loss``.

    Args:
        model: a float32 nn.Module returning logits (batch, nb_classes), checked on a probe batch.
        input_shape, nb_classes, clip_values: as for ART's PyTorchClassifier (nb_classes >= 2).
        temperature: MIFPE's T (default 1, the paper's). loss: instead, e.g. njs_loss(model, x).
        **kwargs: to PyTorchClassifier; device_type defaults to the model's device.
    """
    if not isinstance(model, nn.Module):
        hint = ": use with_attack_loss(classifier)" if isinstance(model, PyTorchClassifier) else ""
        raise TypeError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}{hint}")
    if not (isinstance(input_shape, (tuple, list)) and input_shape
            and all(type(d) is int and d > 0 for d in input_shape)):
        raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}")
    classes = core.check_positive_int(nb_classes, "nb_classes", minimum=2)
    device = next(iter([*model.parameters(), *model.buffers()]), torch.empty(0)).device
    kwargs.setdefault("device_type", "gpu" if device.type == "cuda" else "cpu")  # not ART's "gpu" for a CPU model
    return _built("model", temperature, model=model, loss=loss, input_shape=tuple(input_shape), nb_classes=classes,
                  clip_values=clip_values, **kwargs)


def with_attack_loss(classifier: PyTorchClassifier, loss: AttackLoss | None = None, *,
                     temperature: float = 1.0) -> AttackClassifier:
    """A copy of an ART PyTorchClassifier (its get_params(), the model shared) attacking with ``loss``.

    Args:
        classifier: left as it is; its model must output logits (checked on a probe batch).
        loss: an AttackLoss, default MIFPELoss(temperature). temperature: MIFPE's T.
    """
    if not isinstance(classifier, PyTorchClassifier):
        raise TypeError("classifier must be an art.estimators.classification.PyTorchClassifier, got "
                        f"{type(classifier).__name__}; for a torch.nn.Module use mifpe_classifier(model, ...)")
    return _built("classifier.model", temperature, **{**classifier.get_params(), "loss": loss})
