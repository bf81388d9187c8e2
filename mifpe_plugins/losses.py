"""Per-sample attack losses on logits.

Every loss here has one signature and one sign::

    loss(logits, labels, *, targeted=False) -> Tensor of shape (B,)

and *larger is more adversarial*: untargeted losses grow as the true class loses, targeted
losses (``labels`` are then the target classes) grow as the target class wins. The attacks in
:mod:`mifpe_plugins.attacks` ascend whatever loss they are given.

The MIFPE loss and every temperature-scaling variant (FT-PGD, FNZ-PGD, PGD++) are the same thing:
cross-entropy on ``beta * z`` with a different rule for ``beta``. :func:`tempered` is that one
primitive; :func:`mifpe_loss` and :func:`fnz_loss` are rules for it.

References
----------
MIFPE : Y. Yu, C.-Z. Xu, "Efficient Loss Function by Minimizing the Detrimental Effect of
    Floating-point Errors on Gradient-based Attacks", CVPR 2023 (eq. 3, 4, 7, 8).
PGD++ : K. Gupta, T. Ajanthan, "Improved Gradient based Adversarial Attacks for Quantized
    Networks", AAAI 2022 (Proposition 1, eq. 7, 8, Alg. 1, 2).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from .numerics import underflow_threshold

__all__ = [
    "Loss",
    "BetaRule",
    "logit_margin",
    "top_margin",
    "ce_loss",
    "cw_loss",
    "dlr_loss",
    "mifpe_beta",
    "MifpeRule",
    "mifpe_loss",
    "fnz_beta",
    "fnz_loss",
    "tempered",
    "Tempered",
    "get_loss",
    "resolve_loss",
    "BETA_NAMES",
    "mifpe",
    "accepts_source_labels",
    "LOSS_NAMES",
]


@runtime_checkable
class Loss(Protocol):
    """A per-sample attack loss: ``loss(logits, labels, *, targeted=False) -> (B,)``."""

    def __call__(self, logits: Tensor, labels: Tensor, *, targeted: bool = False) -> Tensor: ...


#: A rule that maps detached logits (and labels) to a per-sample temperature ``beta`` of shape (B,).
BetaRule = Callable[[Tensor, Tensor], Tensor]


def _check_logits(logits: Tensor, labels: Tensor, *, min_classes: int = 2, name: str = "loss") -> None:
    # Types and shapes only: a check of the labels' range would cost a host sync on every call.
    if not isinstance(logits, Tensor) or not logits.dtype.is_floating_point:
        kind = logits.dtype if isinstance(logits, Tensor) else type(logits).__name__
        raise TypeError(f"{name}: logits must be a floating-point torch.Tensor, got {kind}")
    if not isinstance(labels, Tensor) or labels.dtype.is_floating_point or labels.dtype.is_complex:
        kind = labels.dtype if isinstance(labels, Tensor) else type(labels).__name__
        raise TypeError(f"{name}: labels must be a torch.Tensor of integer class indices, got {kind}")
    if logits.dim() != 2:
        raise ValueError(f"{name}: logits must have shape (batch, classes), got {tuple(logits.shape)}")
    if logits.shape[1] < min_classes:
        raise ValueError(
            f"{name}: needs at least {min_classes} classes (logits.shape[1] >= {min_classes}), "
            f"got {logits.shape[1]}"
        )
    if labels.shape != logits.shape[:1]:
        raise ValueError(
            f"{name}: labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}"
        )


def _label_logit_and_best_other(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``z_y`` and ``max_{i != y} z_i`` per sample (no Python loop, no host sync)."""
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return z_y, others.amax(dim=1)


def logit_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """Margin ``Z = z_y - max_{i != y} z_i`` per sample (MIFPE paper, Fig. 8).

    Positive while the sample is classified as ``y``; negative once it is not.

    Parameters
    ----------
    logits : Tensor
        Shape (B, K), K >= 2.
    labels : Tensor
        Integer class indices, shape (B,).

    Returns
    -------
    Tensor
        Shape (B,), dtype of ``logits``.
    """
    _check_logits(logits, labels, name="logit_margin")
    z_y, best_other = _label_logit_and_best_other(logits, labels)
    return z_y - best_other


def top_margin(logits: Tensor) -> Tensor:
    """Margin between the largest and second-largest logit, ``Delta = z_pi1 - z_pi2 >= 0``.

    This is the quantity ("DFSL") whose size decides whether softmax cross-entropy underflows
    (MIFPE paper, Sec. 3).
    """
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"top_margin: logits must have shape (batch, classes>=2), got {tuple(logits.shape)}")
    top2 = logits.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def ce_loss(logits: Tensor, labels: Tensor, *, targeted: bool = False) -> Tensor:
    """Softmax cross-entropy, per sample.

    Untargeted: ``CE(z, y)``; targeted: ``-CE(z, y_t)`` (larger = more adversarial).
    """
    _check_logits(logits, labels, name="ce_loss")
    loss = F.cross_entropy(logits, labels, reduction="none")
    return -loss if targeted else loss


def cw_loss(logits: Tensor, labels: Tensor, *, targeted: bool = False) -> Tensor:
    """Carlini & Wagner / difference-of-logits loss (MIFPE paper, eq. 3).

    Untargeted: ``-z_y + max_{i != y} z_i``. Targeted (``labels`` = targets ``t``):
    ``z_t - max_{i != t} z_i``. No clamping at a confidence level, so the attack keeps
    pushing past the boundary.
    """
    _check_logits(logits, labels, name="cw_loss")
    z_label, best_other = _label_logit_and_best_other(logits, labels)
    return z_label - best_other if targeted else best_other - z_label


def dlr_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    targeted: bool = False,
    source_labels: Tensor | None = None,
) -> Tensor:
    """Difference-of-logits-ratio loss (Croce & Hein 2020; MIFPE paper, eq. 4).

    Untargeted: ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``; needs K >= 3.

    Targeted (AutoAttack's form, needs K >= 4):
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` where ``t = labels`` and ``y`` the true
    class from ``source_labels``. Without ``source_labels`` the largest non-target logit stands in
    for ``z_y``, which is the same while the sample is still classified as ``y``.

    AutoAttack adds ``1e-12`` to the denominator (0 in float16, and still an overflow when the top
    three logits tie); here the denominator is floored at the logits' rounding resolution as in
    :func:`mifpe_beta`, so the loss and its gradient stay finite. Above that floor both agree.
    """
    min_classes = 4 if targeted else 3
    _check_logits(logits, labels, min_classes=min_classes, name="dlr_loss")
    floor = _gap_floor(logits.detach())
    ranked = logits.sort(dim=1, descending=True).values
    if not targeted:
        z_y, best_other = _label_logit_and_best_other(logits, labels)
        return -(z_y - best_other) / torch.maximum(ranked[:, 0] - ranked[:, 2], floor)
    z_t = logits.gather(1, labels[:, None]).squeeze(1)
    if source_labels is None:
        z_src = logits.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    else:
        z_src = logits.gather(1, source_labels[:, None]).squeeze(1)
    return -(z_src - z_t) / torch.maximum(ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3]), floor)


def _gap_floor(logits: Tensor) -> Tensor:
    """The smallest top-logit gap a temperature rule divides by, per sample, shape (B,).

    A gap below ``eps * max_i |z_i|`` (``eps`` the dtype's machine epsilon) is below the logits'
    own rounding resolution: a tie. Flooring there bounds ``beta * (z - max z)`` by ``2 T / eps``
    (finite in every dtype) where ``T / Delta`` is ``inf`` at an exact tie and ``beta * z``
    overflows to NaN. Logits that are all exactly 0 floor at 1: every scaled logit is 0 whatever
    ``beta`` is, and a moderate ``beta`` keeps the input gradient finite.
    """
    info = torch.finfo(logits.dtype)
    scale = logits.abs().amax(dim=1)
    return torch.where(scale > 0, (info.eps * scale).clamp_min(info.tiny), torch.ones_like(scale))


def _scale_by_gap(numerator: float, gap: Tensor, logits: Tensor) -> Tensor:
    beta = numerator / torch.maximum(gap, _gap_floor(logits))
    return beta.clamp_max(torch.finfo(logits.dtype).max)


def mifpe_beta(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-sample MIFPE scale ``c = T / Delta`` with ``Delta = z_pi1 - z_pi2`` (detached).

    After scaling, the top margin of ``c * z`` is exactly ``T`` (MIFPE paper, eq. 7). A gap below
    the logits' rounding resolution, ``eps * max_i |z_i|`` (exact ties included), is floored
    there, so ``c * (z - max z)`` stays finite in every dtype and a tied sample still gets a
    gradient (see :func:`_gap_floor`).
    """
    logits = logits.detach()
    return _scale_by_gap(temperature, top_margin(logits), logits)


class MifpeRule:
    """MIFPE's temperature rule ``beta = T / Delta_detach`` (eq. 7) as an object that prints as
    ``mifpe(T=...)`` and carries its ``temperature``."""

    def __init__(self, temperature: float = 1.0) -> None:
        number = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
        value = float(temperature) if number else float("nan")
        if not 0 < value < float("inf"):
            raise ValueError(f"mifpe: temperature must be a finite number > 0, got {temperature!r}")
        self.temperature = value

    def __call__(self, logits: Tensor, labels: Tensor) -> Tensor:
        return mifpe_beta(logits, self.temperature)

    def __repr__(self) -> str:
        return f"mifpe(T={self.temperature:g})"


def mifpe_loss(
    logits: Tensor, labels: Tensor, *, targeted: bool = False, temperature: float = 1.0
) -> Tensor:
    """MIFPE loss (MIFPE paper, eq. 7 and eq. 8).

    ``L = CE(T * z / Delta_detach, y)`` untargeted, ``L = -CE(T * z / Delta_detach, y_t)`` targeted,
    with ``Delta = z_pi1 - z_pi2`` per sample and no gradient through ``Delta``. The same code path
    as :func:`mifpe` and :func:`tempered`: cross-entropy on temperature-scaled logits.

    Parameters
    ----------
    logits : Tensor
        Shape (B, K), any K >= 2, any floating dtype.
    labels : Tensor
        True classes (untargeted) or target classes (targeted), shape (B,).
    targeted : bool
        Sign convention as for every loss here: larger = more adversarial.
    temperature : float
        ``T``, the top margin after scaling. The paper uses ``T ~ 1`` (the authors' released code
        uses ``T = 10``); keep it well below :func:`~mifpe_plugins.numerics.underflow_threshold`.

    Returns
    -------
    Tensor
        Shape (B,).
    """
    return mifpe(temperature)(logits, labels, targeted=targeted)


def fnz_beta(logits: Tensor, n: int) -> Tensor:
    """FNZ-PGD scale: ``c = lambda / (z_pi1 - z_pi(n+1))`` (MIFPE paper, Sec. 3, Fig. 6).

    With this ``c`` every logit ranked ``n+1`` or lower sits at least ``lambda`` (the dtype's
    underflow margin) below the top one, so its softmax probability underflows to 0 and exactly
    the top ``n`` logits take part in the gradient. ``1 <= n <= K - 1``. The paper's ``lambda``
    is where ``exp(-lambda)`` *equals* the smallest subnormal, which is still non-zero; it rounds
    to 0 only past ``lambda + ln 2``, and ``exp`` kernels err in the last bit there, so the gap
    used is ``lambda + 1``. Gaps below the logits' rounding resolution are floored as in
    :func:`mifpe_beta`.
    """
    num_classes = logits.shape[1]
    if not 1 <= n <= num_classes - 1:
        raise ValueError(f"fnz: n must be in [1, {num_classes - 1}] for {num_classes} classes, got {n}")
    logits = logits.detach()
    ranked = logits.topk(n + 1, dim=1).values
    lam = underflow_threshold(logits.dtype) + 1.0
    return _scale_by_gap(lam, ranked[:, 0] - ranked[:, n], logits)


def fnz_loss(n: int) -> Tempered:
    """Cross-entropy restricted to the top ``n`` logits through underflow (FNZ-PGD).

    Returns a loss with the usual signature; see :func:`fnz_beta`.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"fnz_loss: n must be an integer >= 1, got {n!r}")
    return Tempered(ce_loss, lambda logits, labels: fnz_beta(logits, n), name=f"fnz-{n}")


BetaLike = float | Tensor | BetaRule


def _check_beta_values(beta: Tensor, name: str) -> None:
    if beta.dim() > 1 or not beta.dtype.is_floating_point:
        raise ValueError(f"{name} must be a number or a (batch,) floating tensor, got shape {tuple(beta.shape)}, "
                         f"dtype {beta.dtype}")
    if beta.numel() and not bool(((beta > 0) & torch.isfinite(beta)).all()):
        raise ValueError(f"{name} must be finite and > 0 for every sample, got values in "
                         f"[{float(beta.min()):g}, {float(beta.max()):g}]")


class Tempered:
    """A loss evaluated on temperature-scaled logits: ``loss(beta * z, y)``.

    ``beta`` is a positive number, a (B,) tensor, or a rule ``rule(logits_detached, labels) -> (B,)``.
    A rule object that also has ``bind(model, inputs, labels)`` (PGD++'s NJS and HNS, which need the
    network's Jacobian) is bound once per attacked batch by the attack before its first step.
    """

    def __init__(self, base: Loss, beta: BetaLike, *, name: str | None = None) -> None:
        if isinstance(beta, (int, float)) and not isinstance(beta, bool):
            if not (beta > 0 and beta < float("inf")):
                raise ValueError(f"tempered: beta must be a finite number > 0, got {beta!r}")
        elif isinstance(beta, Tensor):
            _check_beta_values(beta.detach(), "tempered: beta")
        elif not callable(beta):
            raise TypeError(
                "tempered: beta must be a number, a (batch,) tensor or a rule "
                f"(logits, labels) -> (batch,) tensor; got {type(beta).__name__}"
            )
        self.base = base
        self.beta = beta
        self.name = name or f"tempered({getattr(base, '__name__', base)!s})"

    def bind(self, model: Callable[[Tensor], Tensor], inputs: Tensor, labels: Tensor) -> Tempered:
        binder = getattr(self.beta, "bind", None)
        base_binder = getattr(self.base, "bind", None)
        base = base_binder(model, inputs, labels) if base_binder is not None else self.base
        beta = binder(model, inputs, labels) if binder is not None else self.beta
        if base is self.base and beta is self.beta:
            return self
        return Tempered(base, beta, name=self.name)

    def subset(self, index: Tensor) -> Tempered:
        """The same loss for the samples ``index`` of the batch (a per-sample ``beta`` is indexed)."""
        if isinstance(self.beta, Tensor) and self.beta.dim() == 1:
            return Tempered(self.base, self.beta[index], name=self.name)
        return self

    def betas(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The per-sample temperature for these logits, shape (B,), detached."""
        beta = self.beta
        if isinstance(beta, Tensor):
            beta = beta.to(device=logits.device, dtype=logits.dtype)
        elif callable(beta):
            beta = beta(logits.detach(), labels)
            if not isinstance(beta, Tensor):
                raise TypeError(f"{self.name}: a beta rule must return a tensor, got {type(beta).__name__}")
            beta = beta.to(logits.dtype)
        else:
            return torch.full((logits.shape[0],), float(beta), dtype=logits.dtype, device=logits.device)
        if beta.dim() == 0:
            return beta.expand(logits.shape[0])
        if beta.shape != logits.shape[:1]:
            raise ValueError(f"{self.name}: beta must be a number or have shape ({logits.shape[0]},), got {tuple(beta.shape)}")
        return beta

    def check_betas(self, logits: Tensor, labels: Tensor) -> None:
        """Raise unless every temperature for these logits is finite and > 0 (one host sync: the
        attacks call it once, on the clean logits, never per step)."""
        beta = self.betas(logits, labels)
        _check_beta_values(beta, f"{self.name}: beta")
        check = getattr(self.base, "check_betas", None)
        if check is not None:
            check((logits - logits.amax(dim=1, keepdim=True)) * beta[:, None], labels)

    def __call__(self, logits: Tensor, labels: Tensor, *, targeted: bool = False, **kwargs) -> Tensor:
        _check_logits(logits, labels, name=self.name)
        beta = self.betas(logits, labels)
        # The base sees beta * (z - max z), max detached: equal to beta * z for the shift-invariant
        # losses here (CE, C&W, DLR) in value and gradient, but its largest entry is 0, so a large
        # beta cannot overflow it to inf and then NaN.
        shifted = logits - logits.detach().amax(dim=1, keepdim=True)
        return self.base(shifted * beta[:, None], labels, targeted=targeted, **kwargs)

    def __repr__(self) -> str:
        return self.name


def tempered(loss: str | Loss, beta: BetaLike, *, name: str | None = None) -> Tempered:
    """Temperature-scale a loss: ``L(z, y) = loss(beta * z, y)``.

    The single primitive behind MIFPE (``beta = T / Delta_detach``), FT-PGD, FNZ-PGD and PGD++
    (``beta`` from NJS or HNS, see :mod:`mifpe_plugins.temperature`). ``beta`` never carries a
    gradient: rules receive detached logits.

    Parameters
    ----------
    loss : str or Loss
        The base loss, a name accepted by :func:`get_loss` or a callable.
    beta : float, Tensor or rule
        A positive number, a per-sample tensor of shape (B,), or
        ``rule(logits_detached, labels) -> (B,)``.
    """
    return Tempered(get_loss(loss), beta, name=name)


def mifpe(temperature: float = 1.0) -> Tempered:
    """The MIFPE loss (eq. 7 / eq. 8) with temperature ``T``: :func:`tempered` cross-entropy with
    :class:`MifpeRule`. Prints as ``mifpe(T=...)``; ``loss.beta.temperature`` is ``T``."""
    rule = MifpeRule(temperature)
    return Tempered(ce_loss, rule, name=repr(rule))


def _loss_table() -> dict[str, Callable[[], Loss]]:
    from .temperature import HNS, NJS

    return {
        "ce": lambda: ce_loss,
        "cw": lambda: cw_loss,
        "dl": lambda: cw_loss,
        "dlr": lambda: dlr_loss,
        "mifpe": mifpe,
        "njs": lambda: Tempered(ce_loss, NJS(), name="ce-njs"),
        "hns": lambda: Tempered(ce_loss, HNS(), name="ce-hns"),
    }


#: Names accepted by :func:`get_loss` (plus ``"fnz-<n>"``).
LOSS_NAMES = ("ce", "cw", "dl", "dlr", "mifpe", "njs", "hns", "fnz-<n>")


def get_loss(loss: str | Loss) -> Loss:
    """Resolve a loss name or pass a callable through. The only place loss names are resolved.

    Names: ``"ce"``, ``"cw"`` (alias ``"dl"``), ``"dlr"``, ``"mifpe"`` (T = 1), ``"njs"`` and
    ``"hns"`` (PGD++ temperature scaling of CE), ``"fnz-<n>"`` (FNZ-PGD with n logits).
    Case-insensitive. A callable must follow ``loss(logits, labels, *, targeted=False) -> (B,)``.
    """
    if callable(loss) and not isinstance(loss, str):
        return loss
    if not isinstance(loss, str):
        raise TypeError(f"loss must be a name or a callable, got {type(loss).__name__}")
    key = loss.strip().lower()
    table = _loss_table()
    if key in table:
        return table[key]()
    if key.startswith("fnz-") and key[4:].isdigit():
        return fnz_loss(int(key[4:]))
    raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSS_NAMES)} or pass a callable")


#: Names accepted by :func:`resolve_loss`'s ``beta=`` (PGD++ Alg. 1 and Alg. 2).
BETA_NAMES = ("njs", "hns")


def resolve_loss(
    loss: str | Loss = "mifpe",
    *,
    temperature: float | None = None,
    beta: str | BetaLike | None = None,
) -> Loss:
    """A loss spec as the adapters take it -- a loss, MIFPE's ``T``, PGD++'s ``beta`` -- as one loss.

    The one place every host's ``loss=``/``temperature=``/``beta=`` arguments are checked and
    combined; the adapters only prefix its errors with their class name.

    Parameters
    ----------
    loss : str or Loss
        A name for :func:`get_loss` or a callable.
    temperature : float, optional
        MIFPE's ``T`` (eq. 7 / eq. 8): only with ``loss="mifpe"``.
    beta : {"njs", "hns"}, float, Tensor or rule, optional
        PGD++ temperature scaling of ``loss``: :func:`tempered` with NJS (Alg. 1), HNS (Alg. 2), a
        number, a per-sample tensor, or ``rule(logits_detached, labels) -> (B,)``.

    Returns
    -------
    Loss
    """
    is_mifpe = isinstance(loss, str) and loss.strip().lower() == "mifpe"
    if temperature is not None:
        if not is_mifpe:
            raise ValueError(
                f"temperature is MIFPE's T and applies only to loss='mifpe', got loss={loss!r} "
                f"with temperature={temperature!r}"
            )
        resolved = mifpe(temperature)
    else:
        resolved = get_loss(loss)
    if beta is None:
        return resolved
    if isinstance(resolved, Tempered) or not isinstance(loss, str):
        base_name = getattr(resolved, "__name__", None) or repr(resolved)
    else:
        base_name = loss.strip().lower()
    rule = _beta_rule(beta)
    return Tempered(resolved, rule, name=f"{base_name}-{beta.strip().lower()}" if isinstance(beta, str) else None)


def _beta_rule(beta: str | BetaLike) -> BetaLike:
    if isinstance(beta, str):
        from .temperature import HNS, NJS

        rules = {"njs": NJS, "hns": HNS}
        key = beta.strip().lower()
        if key not in rules:
            raise ValueError(
                f"beta must be one of {', '.join(map(repr, BETA_NAMES))}, a finite number > 0, a "
                f"(batch,) tensor or a rule (logits, labels) -> (batch,) tensor; got {beta!r}"
            )
        return rules[key]()
    if isinstance(beta, bool):
        raise TypeError(f"beta must be a name, a number, a tensor or a rule, got {beta!r}")
    return beta


def accepts_source_labels(loss: Loss) -> bool:
    """Whether a loss takes the true labels as ``source_labels=`` in targeted mode (DLR does)."""
    target = loss.base if isinstance(loss, Tempered) else loss
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    return "source_labels" in params
