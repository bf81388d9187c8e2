"""Validation and the pieces every attack shares: the objective, targets, callbacks."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

from ..losses import Loss, Tempered, accepts_source_labels, get_loss, logit_margin

Model = Callable[[Tensor], Tensor]
EpsLike = float | Tensor
Bounds = Sequence[float] | None
_T = TypeVar("_T")

_NORM_NAMES = {"linf": "linf", "inf": "linf", "l_inf": "linf", "l2": "l2", "2": "l2", "l_2": "l2"}
NORM_CHOICES = "'linf' (also 'Linf', 'inf', float('inf')) or 'l2' (also 'L2', 2)"


@dataclass(frozen=True)
class StepInfo:
    """What an attack reports to ``callback`` after each gradient evaluation.

    All tensors have shape (B,) over the whole attacked batch and are detached; reading them is
    the caller's choice (the attack itself never synchronises with the host to build them).

    Attributes
    ----------
    iteration : int
        0-based index of the gradient evaluation within the current run.
    restart : int
        0-based restart index.
    target : int or None
        For multi-targeted attacks, which of the top-k other classes is being targeted.
    loss : Tensor
        Loss value at the evaluated point (larger = more adversarial).
    margin : Tensor
        ``Z = z_y - max_{i != y} z_i`` for the labels the caller passed (true labels, or the target
        labels of a targeted attack), at the evaluated point (MIFPE paper, Fig. 8).
    success : Tensor
        Whether an adversarial example has been found for the sample so far.
    """

    iteration: int
    restart: int
    target: int | None
    loss: Tensor
    margin: Tensor
    success: Tensor


Callback = Callable[[StepInfo], None]


def resolve_norm(norm: str | float | int) -> str:
    if isinstance(norm, bool):
        raise ValueError(f"norm must be {NORM_CHOICES}, got {norm!r}")
    if isinstance(norm, (int, float)):
        if math.isinf(norm) and norm > 0:
            return "linf"
        if norm == 2:
            return "l2"
    elif isinstance(norm, str) and norm.strip().lower() in _NORM_NAMES:
        return _NORM_NAMES[norm.strip().lower()]
    raise ValueError(f"norm must be {NORM_CHOICES}, got {norm!r}")


def check_positive_int(value: int, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_choice(value: _T, name: str, choices: Sequence[object]) -> _T:
    """``value`` if it is one of ``choices``, else a ValueError naming ``name`` and the choices."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_callable(value: object, name: str, *, optional: bool = False) -> None:
    if not (callable(value) or (optional and value is None)):
        allowed = "a callable" + (" or None" if optional else "")
        raise TypeError(f"{name} must be {allowed}, got {type(value).__name__}")


def check_unit_interval(value: float | None, name: str, *, optional: bool = False) -> None:
    """``value`` is a number in (0, 1] (or ``None`` where ``optional``)."""
    if value is None and optional:
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1]{' or None' if optional else ''}, got {value!r}")


def check_bounds(bounds: Bounds) -> tuple[float, float] | None:
    if bounds is None:
        return None
    if isinstance(bounds, (str, bytes)):
        raise ValueError(f"bounds must be (low, high) or None, got {bounds!r}")
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be (low, high) or None, got {bounds!r}") from None
    if not low < high:
        raise ValueError(f"bounds must satisfy low < high, got {bounds!r}")
    return low, high


def check_eps(eps: EpsLike, inputs: Tensor, name: str = "eps") -> Tensor:
    """Return a per-sample (B,) tensor in the inputs' dtype and device."""
    batch = inputs.shape[0]
    if isinstance(eps, Tensor):
        if eps.dtype.is_complex or eps.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers, got a tensor of dtype {eps.dtype}")
        values = eps.detach()
        if values.dim() == 0:
            values = values.expand(batch)
        elif values.shape != (batch,):
            raise ValueError(f"{name} must be a number, a 0-dim tensor or shape ({batch},), got {tuple(eps.shape)}")
    elif isinstance(eps, (int, float)) and not isinstance(eps, bool):
        # Built directly in the inputs' dtype: going through float32 would round eps for float64.
        values = torch.full((batch,), float(eps), dtype=torch.float64)
    else:
        raise TypeError(f"{name} must be a number or a tensor, got {type(eps).__name__}")
    if bool(torch.isnan(values).any()) or bool((values < 0).any()) or bool(torch.isinf(values).any()):
        raise ValueError(f"{name} must be finite and >= 0, got {eps!r}")
    return values.to(device=inputs.device, dtype=inputs.dtype).contiguous()


def check_inputs(inputs: Tensor, bounds: tuple[float, float] | None) -> None:
    if not isinstance(inputs, Tensor):
        hint = " (convert a NumPy array with torch.from_numpy(x))" if hasattr(inputs, "__array__") else ""
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}{hint}")
    if not inputs.dtype.is_floating_point:
        raise ValueError(f"inputs must have a floating dtype, got {inputs.dtype}")
    if inputs.dim() < 2:
        raise ValueError(
            f"inputs must have shape (batch, ...) with at least 2 dimensions, got {tuple(inputs.shape)}"
            " (a single sample needs a batch dimension: inputs[None])"
        )
    if inputs.numel() == 0:
        return
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError("inputs contain NaN or inf")
    if bounds is not None and (bool((inputs < bounds[0]).any()) or bool((inputs > bounds[1]).any())):
        lo, hi = float(inputs.min()), float(inputs.max())
        raise ValueError(
            f"inputs lie outside bounds={bounds}: their range is [{lo:g}, {hi:g}]. Pass the bounds "
            "of your input space (e.g. bounds=(-2.5, 2.6) for normalised inputs) or bounds=None"
        )


def check_start(start: Tensor | None, inputs: Tensor) -> None:
    """``start`` is None or a tensor of the inputs' shape (where an attack's first run begins)."""
    if start is not None and (not isinstance(start, Tensor) or start.shape != inputs.shape):
        shape = tuple(start.shape) if isinstance(start, Tensor) else type(start).__name__
        raise ValueError(f"start must be a tensor of the inputs' shape {tuple(inputs.shape)}, got {shape}")


def check_labels(labels: Tensor, inputs: Tensor, name: str = "labels") -> Tensor:
    if not isinstance(labels, Tensor):
        hint = " (convert a NumPy array with torch.from_numpy(y))" if hasattr(labels, "__array__") else ""
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(labels).__name__}{hint}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    if labels.shape != inputs.shape[:1]:
        raise ValueError(f"{name} must have shape ({inputs.shape[0]},), got {tuple(labels.shape)}")
    return labels.to(device=inputs.device, dtype=torch.long)


def check_label_range(labels: Tensor, num_classes: int, name: str = "labels") -> None:
    if labels.numel() and (bool((labels < 0).any()) or bool((labels >= num_classes).any())):
        raise ValueError(
            f"{name} must lie in [0, {num_classes - 1}] for a model with {num_classes} outputs, "
            f"got values in [{int(labels.min())}, {int(labels.max())}]"
        )


def looks_like_probabilities(outputs: Tensor) -> bool:
    """Whether ``outputs`` look like a softmax's: floating (B, K >= 2) rows in [0, 1] summing to 1.

    ``check_logits`` warns when this holds; a host seam that cannot work on probabilities (ART's
    CLEVER on softmax(beta z), its estimator's loss) makes it an error instead.
    """
    if not (isinstance(outputs, Tensor) and outputs.dtype.is_floating_point and outputs.dim() == 2
            and outputs.shape[1] >= 2):
        return False
    return (
        bool((outputs >= 0).all())
        and bool((outputs <= 1).all())
        and bool(((outputs.sum(dim=1) - 1).abs() < 1e-3).all())
    )


def check_logits(logits: Tensor, batch: int) -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != batch:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"model must return logits of shape ({batch}, classes), got {shape}")
    if logits.shape[1] < 2:
        raise ValueError(f"model must return at least 2 logits per sample, got {logits.shape[1]}")
    if not logits.dtype.is_floating_point:
        raise ValueError(f"model must return floating-point logits, got {logits.dtype}")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError(
            "model returned NaN or inf logits on the clean inputs: no gradient attack can be trusted "
            "on them (check the model's dtype range and its inputs' preprocessing)"
        )
    if looks_like_probabilities(logits):
        warnings.warn(
            "the model's outputs are in [0, 1] and sum to 1: they look like probabilities. "
            "The attacks and losses here expect logits (remove the final softmax); on "
            "probabilities cross-entropy and MIFPE are computed on the wrong quantity.",
            UserWarning,
            stacklevel=3,
        )


def in_training_mode(model: Model) -> bool:
    """Whether ``model`` (or any of its submodules) is in ``train()`` mode."""
    if isinstance(model, torch.nn.Module):
        return any(module.training for module in model.modules())
    return bool(getattr(model, "training", False))


def warn_if_training(model: Model) -> None:
    if in_training_mode(model):
        warnings.warn(
            "the model is in train() mode: dropout makes the attack random and BatchNorm updates "
            "its running statistics on the adversarial inputs. Call model.eval() before attacking "
            "(the attack never changes the model's mode).",
            UserWarning,
            stacklevel=4,
        )


def other_float_dtypes(model: torch.nn.Module, dtype: torch.dtype = torch.float32) -> list[str]:
    """The floating dtypes of ``model``'s parameters other than ``dtype``, sorted: what a host that
    computes in one dtype must refuse (ART feeds float32 inputs)."""
    return sorted({str(p.dtype) for p in model.parameters() if p.is_floating_point() and p.dtype != dtype})


@contextlib.contextmanager
def model_state_kept(model: torch.nn.Module) -> Iterator[None]:
    """Put the caller's state of ``model`` back on exit, also when the body raises: every
    submodule's ``.training`` and every parameter's ``.grad`` and ``requires_grad``.

    For host code that switches the mode or back-propagates into the parameters (ART's estimators
    call ``model.train()``/``eval()`` and ``zero_grad()``). The caller's ``.grad`` tensors are
    put back by reference, not copied: a ``zero_grad()`` that sets them to None (torch >= 2.0)
    leaves them intact, a body writing into them in place would not.
    """
    modes = [(module, module.training) for module in model.modules()]
    params = [(param, param.grad, param.requires_grad) for param in model.parameters()]
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode
        for param, grad, requires_grad in params:
            param.requires_grad_(requires_grad)
            param.grad = grad


def check_loss_values(values: object, batch: int) -> None:
    if not isinstance(values, Tensor) or values.shape != (batch,):
        shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(
            f"loss must return one value per sample, shape ({batch},), got {shape}: use "
            "reduction='none' (the attacks ascend every sample's loss separately)"
        )


def resolve_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator:
    """The caller's generator, or a fresh one seeded with 0 (never the global RNG)."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        return generator
    fresh = torch.Generator(device=device)
    fresh.manual_seed(0)
    return fresh


class Objective:
    """Loss, gradient and success test of one attack run on a batch."""

    def __init__(
        self,
        model: Model,
        loss: Loss,
        loss_labels: Tensor,
        *,
        targeted: bool,
        true_labels: Tensor | None,
        report_labels: Tensor,
    ) -> None:
        self.model = model
        self.loss = loss
        self.loss_labels = loss_labels
        self.targeted = targeted
        self.report_labels = report_labels
        self.extra = {}
        if targeted and true_labels is not None and accepts_source_labels(loss):
            self.extra["source_labels"] = true_labels
        # Success: a targeted run without known true labels must hit its target; otherwise any
        # class other than the true one will do (untargeted and multi-targeted attacks).
        self._true = true_labels
        self._target = loss_labels if targeted and true_labels is None else None

    def subset(self, index: Tensor) -> Objective:
        """The same objective for the samples ``index`` of the batch."""
        sub = Objective.__new__(Objective)
        sub.model = self.model
        subset_loss = getattr(self.loss, "subset", None)
        sub.loss = subset_loss(index) if subset_loss is not None else self.loss
        sub.loss_labels = self.loss_labels[index]
        sub.targeted = self.targeted
        sub.report_labels = self.report_labels[index]
        sub.extra = {key: value[index] for key, value in self.extra.items()}
        sub._true = None if self._true is None else self._true[index]
        sub._target = None if self._target is None else self._target[index]
        return sub

    def success(self, logits: Tensor) -> Tensor:
        pred = logits.argmax(dim=1)
        return pred == self._target if self._target is not None else pred != self._true

    def margin(self, logits: Tensor) -> Tensor:
        return logit_margin(logits, self.report_labels)

    def loss_value(self, logits: Tensor) -> Tensor:
        """The per-sample loss of these logits for this run's labels and mode."""
        return self.loss(logits, self.loss_labels, targeted=self.targeted, **self.extra)

    def evaluate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return (per-sample loss, logits) at ``x`` without a gradient."""
        with torch.no_grad():
            logits = self.model(x)
            return self.loss_value(logits), logits

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return (per-sample loss, input gradient, logits), all detached."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(x)
            loss = self.loss_value(logits)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad, logits.detach()


@dataclass
class Batch:
    """A validated batch: inputs, labels, per-sample eps, bounds, clean logits, bound loss."""

    inputs: Tensor
    labels: Tensor
    eps: Tensor
    bounds: tuple[float, float] | None
    clean_logits: Tensor
    loss: Loss


def prepare(
    model: Model,
    inputs: Tensor,
    labels: Tensor,
    *,
    eps: EpsLike,
    bounds: Bounds,
    loss: str | Loss,
    targeted: bool,
) -> Batch | None:
    """Validate everything up front; ``None`` for an empty batch."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "gradient attacks cannot run under torch.inference_mode(): they need autograd. "
            "Call the attack outside the inference_mode() block"
        )
    check_callable(model, "model")
    bounds_t = check_bounds(bounds)
    check_inputs(inputs, bounds_t)
    labels = check_labels(labels, inputs)
    eps_t = check_eps(eps, inputs)
    loss_fn = get_loss(loss)
    if inputs.shape[0] == 0:
        return None
    warn_if_training(model)
    # A tensor made under inference_mode cannot enter autograd; a copy outside it can.
    x0 = inputs.detach().clone() if inputs.is_inference() else inputs.detach()
    loss_fn, clean_logits = bind_loss(model, loss_fn, x0, labels, targeted=targeted)
    return Batch(x0, labels, eps_t, bounds_t, clean_logits, loss_fn)


def needs_context(loss: Loss) -> str | None:
    """What in ``loss`` needs more than the logits and labels of the batch it is called on, or None.

    PGD++'s HNS and NJS without ``beta1`` bind to the model and the clean inputs (``bind``); a
    per-sample beta tensor needs the samples in their original order. A host that hands a loss
    only logits and labels, possibly re-batched (ART's estimator loss, which APGD calls on subsets),
    must refuse these. Looks through ``Tempered`` into its base loss and beta.
    """
    parts = [loss]
    for part in parts:
        unbound = hasattr(part, "bind") and getattr(part, "beta1", None) is None  # HNS, NJS without beta1
        if isinstance(part, Tempered):
            parts += [part.base, part.beta]
        elif unbound or isinstance(part, Tensor) and part.dim() > 0:
            return "a per-sample beta tensor" if isinstance(part, Tensor) else repr(part)
    return None


def bind_loss(
    model: Model, loss: Loss, inputs: Tensor, labels: Tensor, *, targeted: bool, labels_name: str = "labels"
) -> tuple[Loss, Tensor]:
    """Check the model's clean logits against the labels, bind a loss that needs the model (PGD++'s
    NJS and HNS take the Jacobian at the clean inputs), and evaluate it once on the clean logits.

    The bind-and-probe step every attack does before its first gradient, core or host: a loss's
    own errors (DLR with K < 3, a scalar where one value per sample is needed) surface before any
    work. Returns the bound loss and the detached clean logits.
    """
    with torch.no_grad():
        clean_logits = model(inputs)
    check_logits(clean_logits, inputs.shape[0])
    check_label_range(labels, clean_logits.shape[1], name=labels_name)
    bind = getattr(loss, "bind", None)
    if bind is not None:
        # Hosts may call this under torch.no_grad() (AutoAttack does); the Jacobian needs autograd.
        with torch.enable_grad():
            loss = bind(model, inputs, labels)
    check_loss_values(loss(clean_logits, labels, targeted=targeted), labels.shape[0])
    check_betas = getattr(loss, "check_betas", None)
    if check_betas is not None:
        check_betas(clean_logits, labels)
    return loss, clean_logits



def top_other_classes(logits: Tensor, labels: Tensor, count: int) -> Tensor:
    """The ``count`` highest-scoring classes other than ``labels``, shape (B, count)."""
    num_classes = logits.shape[1]
    if not 1 <= count <= num_classes - 1:
        raise ValueError(f"target_classes must be in [1, {num_classes - 1}] for {num_classes} classes, got {count}")
    masked = logits.scatter(1, labels[:, None], float("-inf"))
    return masked.topk(count, dim=1).indices



def check_run_settings(
    *, restarts: int, random_start: bool, targeted: bool, target_classes: int | None,
    callback: Callback | None = None,
) -> None:
    """Checks shared by the iterative attacks' restart, multi-target and callback options."""
    check_callable(callback, "callback", optional=True)
    check_positive_int(restarts, "restarts")
    if restarts > 1 and not random_start:
        raise ValueError("restarts > 1 repeats the same run unless random_start=True")
    if target_classes is not None:
        if targeted:
            raise ValueError(
                "target_classes (multi-targeted) needs targeted=False: labels are the true classes"
            )
        check_positive_int(target_classes, "target_classes")


def attack_objectives(
    model: Model, batch: Batch, *, targeted: bool, target_classes: int | None
) -> list[tuple[int | None, Objective]]:
    """The runs of an attack on a batch: ``(target index, objective)`` pairs.

    One objective for an untargeted or targeted attack; for a multi-targeted attack one targeted
    objective per top-k wrong class (MIFPE eq. 8), each succeeding on any misclassification.
    """
    if target_classes is None:
        true = None if targeted else batch.labels
        return [(None, Objective(model, batch.loss, batch.labels, targeted=targeted,
                                 true_labels=true, report_labels=batch.labels))]
    targets = top_other_classes(batch.clean_logits, batch.labels, target_classes)
    return [
        (index, Objective(model, batch.loss, targets[:, index], targeted=True,
                          true_labels=batch.labels, report_labels=batch.labels))
        for index in range(target_classes)
    ]


class Outcome:
    """Per-sample outcome across an attack's runs: the first adversarial example found, else the
    point of highest loss. One tensor holds both (a fooled sample's point never changes again),
    updated with ``torch.where`` only, so recording never syncs the host."""

    def __init__(self, x0: Tensor) -> None:
        self.best = x0.clone()
        self.found = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)
        self.best_loss = torch.full((x0.shape[0],), float("-inf"), dtype=x0.dtype, device=x0.device)
        # Loss-gradient evaluations per sample: the steps it took, over every run.
        self.gradients = torch.zeros(x0.shape[0], dtype=torch.int64, device=x0.device)

    def count(self, index: Tensor | None = None) -> None:
        """One gradient evaluation more for the samples ``index`` (all when ``None``)."""
        if index is None:
            self.gradients += 1
        else:
            self.gradients.index_add_(0, index, torch.ones_like(index))

    def record(self, success: Tensor, x: Tensor, loss: Tensor, index: Tensor | None = None) -> None:
        """Record the evaluated points ``x`` of the samples ``index`` (all samples when ``None``)."""
        view = (-1,) + (1,) * (x.dim() - 1)
        found = self.found if index is None else self.found[index]
        best_loss = self.best_loss if index is None else self.best_loss[index]
        improved = ~found & (loss > best_loss)
        take = improved | (success & ~found)
        if index is None:
            self.best = torch.where(take.view(view), x, self.best)
            self.found = found | success
            self.best_loss = torch.where(improved, loss, best_loss)
        else:
            self.best[index] = torch.where(take.view(view), x, self.best[index])
            self.found[index] = found | success
            self.best_loss[index] = torch.where(improved, loss, best_loss)

    def result(self) -> Tensor:
        return self.best

    def take_last(self, x: Tensor, success: Tensor, *, keep: Tensor) -> None:
        """Plain PGD's outcome: the last iterate ``x``, except where ``keep`` (fooled earlier)."""
        view = (-1,) + (1,) * (x.dim() - 1)
        self.best = torch.where(keep.view(view), self.best, x)
        self.found = keep | success
