"""Foolbox 3 adapter: MIFPE and PGD++ losses inside Foolbox's own gradient attacks.

Foolbox's gradient attacks (``LinfPGD``, ``L2PGD``, ``FGSM``, ``L2FastGradientAttack``) build their
objective in ``get_loss_fn(model, labels)``, a method Foolbox documents as the place to override.
The classes here subclass those attacks and override only that seam (plus ``value_and_grad``, the
host's other documented override point, so that gradients are taken with respect to the inputs
alone); Foolbox's own loop does everything else: random start, steps, projection, clipping,
criteria, and the ``(raw, clipped, success)`` result.

Usage::

    import foolbox as fb
    from mifpe_plugins.adapters.foolbox import LinfMIFPEPGD

    fmodel = fb.PyTorchModel(net.eval(), bounds=(0, 1))
    attack = LinfMIFPEPGD(steps=100)
    raw, clipped, success = attack(fmodel, images, fb.criteria.Misclassification(labels),
                                   epsilons=[8 / 255])

Targeted attacks: Foolbox descends its loss on the target class when the criterion is
``TargetedMisclassification``. The loss handed to Foolbox is then ``-L(z, t, targeted=True)``, the
negation of this package's targeted loss, so Foolbox's descent ascends the targeted loss: for MIFPE
that is ``CE(T z / Delta_detach, t)`` descended, i.e. eq. 8 of the MIFPE paper; for CE it is
exactly the loss stock Foolbox descends.

References
----------
MIFPE : Y. Yu, C.-Z. Xu, CVPR 2023 (eq. 7 untargeted, eq. 8 targeted).
PGD++ : K. Gupta, T. Ajanthan, AAAI 2022 (Alg. 1 NJS, Alg. 2 HNS).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..attacks._common import check_bounds, check_eps, check_inputs, check_label_range, check_logits
from ..losses import Loss, Tempered, get_loss, mifpe
from ..temperature import HNS, NJS
from ._host import require

fb = require("foolbox", "foolbox")
ep = require("eagerpy", "foolbox")

__all__ = [
    "LinfMIFPEPGD",
    "L2MIFPEPGD",
    "LinfMIFPEFGSM",
    "L2MIFPEFGSM",
    "LinfPGDPP",
    "L2PGDPP",
    "LinfFGSMPP",
    "L2FGSMPP",
    "BETA_NAMES",
]

#: Names accepted by the PGD++ classes' ``beta=`` (besides a positive number or a rule object).
BETA_NAMES = ("njs", "hns")

BetaChoice = str | float | NJS | HNS | Callable[[Tensor, Tensor], Tensor]


# ---------------------------------------------------------------------------------------------
# Argument resolution (done once, in the constructors)
# ---------------------------------------------------------------------------------------------


def _mifpe_family_loss(loss: str | Loss, temperature: float | None) -> Loss:
    """The loss of the MIFPE classes: MIFPE at temperature ``T`` by default, any loss on request."""
    is_mifpe_name = isinstance(loss, str) and loss.strip().lower() == "mifpe"
    if temperature is not None and not is_mifpe_name:
        raise ValueError(
            f"temperature applies only to loss='mifpe', got loss={loss!r} with "
            f"temperature={temperature!r}"
        )
    if is_mifpe_name:
        t = 1.0 if temperature is None else temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < float("inf"):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        return mifpe(float(t))
    return get_loss(loss)


def _beta_rule(beta: BetaChoice) -> float | NJS | HNS | Callable[[Tensor, Tensor], Tensor]:
    """Resolve ``beta=`` of the PGD++ classes to a rule for :class:`~mifpe_plugins.losses.Tempered`."""
    if isinstance(beta, str):
        key = beta.strip().lower()
        if key == "njs":
            return NJS()
        if key == "hns":
            return HNS()
        raise ValueError(
            f"beta must be one of {', '.join(map(repr, BETA_NAMES))}, a finite number > 0, or a "
            f"rule (NJS(...), HNS(...), callable); got {beta!r}"
        )
    if isinstance(beta, bool):
        raise TypeError(f"beta must be a name, a number or a rule, got {beta!r}")
    if isinstance(beta, (int, float)):
        if not 0 < beta < float("inf"):
            raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
        return float(beta)
    if callable(beta):
        return beta
    raise TypeError(
        f"beta must be one of {', '.join(map(repr, BETA_NAMES))}, a number or a rule, "
        f"got {type(beta).__name__}"
    )


def _pgdpp_loss(loss: str | Loss, beta: BetaChoice) -> Tempered:
    base = get_loss(loss)
    rule = _beta_rule(beta)
    base_name = loss.strip().lower() if isinstance(loss, str) else getattr(loss, "__name__", loss)
    rule_name = beta.strip().lower() if isinstance(beta, str) else repr(rule)
    return Tempered(base, rule, name=f"{base_name}@beta={rule_name}")


# ---------------------------------------------------------------------------------------------
# Validation of what a Foolbox call receives
# ---------------------------------------------------------------------------------------------


def _check_model(model: Any) -> None:
    if not isinstance(model, fb.models.Model):
        hint = ""
        if isinstance(model, torch.nn.Module):
            hint = " Wrap it first: foolbox.PyTorchModel(net.eval(), bounds=(0, 1))."
        raise TypeError(
            f"model must be a Foolbox model (foolbox.PyTorchModel or another foolbox.models.Model "
            f"around a PyTorch network), got {type(model).__name__}.{hint}"
        )


def _check_inputs(model: Any, inputs: Any) -> Tensor:
    """The raw torch inputs, checked as the core checks them, with the Foolbox model's bounds.

    Foolbox itself only asserts the bounds in ``__call__`` (an ``AssertionError`` without a
    message, gone under ``python -O``) and not at all in ``run``.
    """
    raw = inputs.raw if isinstance(inputs, ep.Tensor) else inputs
    if not isinstance(raw, torch.Tensor):
        raise TypeError(
            "inputs must be a torch.Tensor: the mifpe_plugins losses run in PyTorch, so this "
            f"adapter supports PyTorch-backed Foolbox models only; got {type(raw).__name__}"
        )
    bounds = check_bounds(tuple(model.bounds))
    check_inputs(raw, None)  # a floating tensor (batch, ...), finite
    try:
        check_inputs(raw, bounds)
    except ValueError:
        low, high = float(raw.min()), float(raw.max())
        raise ValueError(
            f"inputs must lie within the Foolbox model's bounds [{bounds[0]:g}, {bounds[1]:g}], got "
            f"values in [{low:g}, {high:g}]: scale the inputs into the bounds, or wrap the network "
            "with the inputs' own range, e.g. fb.PyTorchModel(net, bounds=(0, 255), "
            "preprocessing=dict(std=255)) for [0, 255] inputs to a network that expects [0, 1]"
        ) from None
    return raw


def _check_epsilons(epsilons: Any, inputs: Tensor, name: str = "epsilons") -> None:
    """Each epsilon by the core's rule (a finite number >= 0), before Foolbox runs any of them."""
    # Foolbox's own reading: one number, or an iterable of them. ``None`` entries are left to
    # Foolbox, which refuses them for fixed-epsilon attacks.
    values = epsilons if isinstance(epsilons, Iterable) else [epsilons]
    for eps in values:
        if eps is None:
            continue
        # NumPy scalars are numbers to Foolbox; the core takes Python numbers and tensors.
        number = float(eps) if isinstance(eps, numbers.Real) and not isinstance(eps, bool) else eps
        check_eps(number, inputs, name=name)


def _torch_model(model: Any) -> Callable[[Tensor], Tensor]:
    """The Foolbox model as a plain ``Tensor -> Tensor`` callable (preprocessing included)."""

    def logits_of(x: Tensor) -> Tensor:
        return model(ep.astensor(x)).raw

    return logits_of


class _RunContext:
    """What ``get_loss_fn`` needs from ``run`` but Foolbox does not pass it: the clean inputs
    (PGD++ rules are fitted on them) and whether the criterion is targeted."""

    def __init__(self, clean_inputs: Tensor, targeted: bool) -> None:
        self.clean_inputs = clean_inputs
        self.targeted = targeted


# ---------------------------------------------------------------------------------------------
# The seam
# ---------------------------------------------------------------------------------------------


class _LossSeam:
    """Mixin for Foolbox gradient attacks: our per-sample loss behind Foolbox's ``get_loss_fn``.

    Put it first in the bases, before the Foolbox attack class it extends.
    """

    loss: Loss

    # FixedEpsilonAttack.__call__ is marked @final for type checkers only; it is extended here (and
    # still called) because Foolbox reads ``model.bounds`` before anything else, which on a bare
    # nn.Module fails with an AttributeError that does not say what to do, and because Foolbox
    # accepts NaN or negative epsilons: every epsilon is checked before the first one runs.
    def __call__(  # type: ignore[misc]
        self,
        model: Any,
        inputs: Any,
        criterion: Any,
        *,
        epsilons: Sequence[float | None] | float | None,
        **kwargs: Any,
    ) -> Any:
        _check_model(model)
        _check_epsilons(epsilons, _check_inputs(model, inputs))
        return super().__call__(model, inputs, criterion, epsilons=epsilons, **kwargs)  # type: ignore[misc]

    def run(self, model: Any, inputs: Any, criterion: Any, *, epsilon: float, **kwargs: Any) -> Any:
        """Foolbox's ``run`` with the clean inputs and the attack's direction made available to
        :meth:`get_loss_fn`; the loop itself is Foolbox's."""
        _check_model(model)
        raw = _check_inputs(model, inputs)
        _check_epsilons(epsilon, raw, name="epsilon")
        clean = raw.detach()
        # The same test Foolbox's loop applies to decide the step sign.
        targeted = not isinstance(criterion, fb.criteria.Misclassification) and hasattr(
            criterion, "target_classes"
        )
        self._run_context = _RunContext(clean, targeted)
        try:
            return super().run(model, inputs, criterion, epsilon=epsilon, **kwargs)  # type: ignore[misc]
        finally:
            del self._run_context

    def get_loss_fn(self, model: Any, labels: Any) -> Callable[[Any], Any]:
        """Foolbox's seam: the summed objective whose gradient Foolbox steps along.

        Untargeted (``Misclassification``): ``sum_b L(z_b, y_b)``, ascended by Foolbox.
        Targeted (``TargetedMisclassification``, ``labels`` = targets): ``-sum_b L(z_b, t_b,
        targeted=True)``, descended by Foolbox. Loss rules that need the network (PGD++'s NJS and
        HNS, Alg. 1 and 2) are fitted here on the clean inputs, once per ``run`` (i.e. per
        epsilon), before Foolbox draws its random start.
        """
        context: _RunContext | None = getattr(self, "_run_context", None)
        targeted = context.targeted if context is not None else False
        network = _torch_model(model)
        loss = self.loss
        label_values = labels.raw if isinstance(labels, ep.Tensor) else labels
        if context is not None:
            target_raw = torch.as_tensor(label_values, device=context.clean_inputs.device).long()
            loss = self._prepare_loss(network, context.clean_inputs, target_raw, targeted)
        else:
            target_raw = torch.as_tensor(label_values).long()

        def loss_fn(inputs: Any) -> Any:
            logits = network(inputs.raw)
            per_sample = loss(logits, target_raw.to(logits.device), targeted=targeted)
            # Foolbox descends when targeted: hand it -L so that its descent ascends L.
            objective = -per_sample if targeted else per_sample
            return ep.astensor(objective.sum())

        return loss_fn

    def _prepare_loss(
        self, network: Callable[[Tensor], Tensor], clean: Tensor, labels: Tensor, targeted: bool
    ) -> Loss:
        with torch.no_grad():
            clean_logits = network(clean)
        check_logits(clean_logits, clean.shape[0])
        check_label_range(labels, clean_logits.shape[1], name="criterion labels")
        loss = self.loss
        bind = getattr(loss, "bind", None)
        if bind is not None:
            loss = bind(network, clean, labels)
        # One evaluation on the clean logits surfaces the loss's own errors before any step.
        loss(clean_logits, labels, targeted=targeted)
        return loss

    def value_and_grad(self, loss_fn: Callable[[Any], Any], x: Any) -> tuple[Any, Any]:
        """Loss and input gradient, by ``torch.autograd.grad`` with respect to ``x`` only.

        Foolbox's default (eagerpy's ``value_and_grad``) calls ``backward()``, which also adds
        into the ``.grad`` of every model parameter that requires grad; this leaves them alone.
        The input gradient is the same computation, so results match stock Foolbox bitwise.
        """
        point = x.raw.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            value = loss_fn(ep.astensor(point)).raw
            (grad,) = torch.autograd.grad(value, point)
        return ep.astensor(value.detach()), ep.astensor(grad)


# ---------------------------------------------------------------------------------------------
# MIFPE attacks
# ---------------------------------------------------------------------------------------------



class LinfMIFPEPGD(_LossSeam, fb.attacks.LinfPGD):
    """Foolbox's L-inf PGD with the MIFPE loss ``CE(T z / Delta_detach, y)`` (MIFPE paper, eq. 7).

    Foolbox's protocol is kept: constant step ``rel_stepsize * epsilon`` (or ``abs_stepsize``), no
    momentum, optional uniform random start (drawn from torch's global RNG, as stock Foolbox does),
    and the last iterate is returned. For the MIFPE paper's protocol (linear step schedule,
    momentum 0.75, best point kept) use :func:`mifpe_plugins.pgd`.

    Parameters
    ----------
    loss : str or Loss
        ``"mifpe"`` (default; MIFPE paper eq. 7, and eq. 8 under ``TargetedMisclassification``),
        any name of :func:`mifpe_plugins.get_loss` (``"ce"`` reproduces stock Foolbox bitwise), or
        a callable ``loss(logits, labels, *, targeted=False) -> (B,)``, larger = more adversarial.
    temperature : float, optional
        MIFPE's ``T``, the top-logit margin after scaling (1 by default, as in the paper; the
        authors' code uses 10). Only with ``loss="mifpe"``.
    rel_stepsize, abs_stepsize, steps, random_start
        As in ``foolbox.attacks.LinfPGD`` (same defaults).
    """

    def __init__(
        self,
        *,
        loss: str | Loss = "mifpe",
        temperature: float | None = None,
        rel_stepsize: float = 0.01 / 0.3,
        abs_stepsize: float | None = None,
        steps: int = 40,
        random_start: bool = True,
    ) -> None:
        super().__init__(
            rel_stepsize=rel_stepsize, abs_stepsize=abs_stepsize, steps=steps,
            random_start=random_start,
        )
        self.loss = _mifpe_family_loss(loss, temperature)


class L2MIFPEPGD(_LossSeam, fb.attacks.L2PGD):
    """Foolbox's L2 PGD with the MIFPE loss (MIFPE paper, eq. 7 / eq. 8); see :class:`LinfMIFPEPGD`.

    Parameters
    ----------
    loss : str or Loss
        ``"mifpe"`` (default; MIFPE paper eq. 7, and eq. 8 under ``TargetedMisclassification``),
        any name of :func:`mifpe_plugins.get_loss` (``"ce"`` reproduces stock Foolbox bitwise), or
        a callable ``loss(logits, labels, *, targeted=False) -> (B,)``, larger = more adversarial.
    temperature : float, optional
        MIFPE's ``T``, the top-logit margin after scaling (1 by default, as in the paper; the
        authors' code uses 10). Only with ``loss="mifpe"``.
    rel_stepsize, abs_stepsize, steps, random_start
        As in ``foolbox.attacks.L2PGD`` (same defaults).
    """

    def __init__(
        self,
        *,
        loss: str | Loss = "mifpe",
        temperature: float | None = None,
        rel_stepsize: float = 0.025,
        abs_stepsize: float | None = None,
        steps: int = 50,
        random_start: bool = True,
    ) -> None:
        super().__init__(
            rel_stepsize=rel_stepsize, abs_stepsize=abs_stepsize, steps=steps,
            random_start=random_start,
        )
        self.loss = _mifpe_family_loss(loss, temperature)


class LinfMIFPEFGSM(_LossSeam, fb.attacks.FGSM):
    """Foolbox's FGSM (one signed step of size epsilon) on the MIFPE loss (MIFPE paper, eq. 7;
    Table 2's "FGSM with MIFPE"). Untargeted only, as Foolbox's FGSM.

    Parameters
    ----------
    loss : str or Loss
        ``"mifpe"`` (default; MIFPE paper eq. 7, and eq. 8 under ``TargetedMisclassification``),
        any name of :func:`mifpe_plugins.get_loss` (``"ce"`` reproduces stock Foolbox bitwise), or
        a callable ``loss(logits, labels, *, targeted=False) -> (B,)``, larger = more adversarial.
    temperature : float, optional
        MIFPE's ``T``, the top-logit margin after scaling (1 by default, as in the paper; the
        authors' code uses 10). Only with ``loss="mifpe"``.
    random_start : bool
        As in ``foolbox.attacks.FGSM``.
    """

    def __init__(
        self, *, loss: str | Loss = "mifpe", temperature: float | None = None,
        random_start: bool = False,
    ) -> None:
        super().__init__(random_start=random_start)
        self.loss = _mifpe_family_loss(loss, temperature)


class L2MIFPEFGSM(_LossSeam, fb.attacks.L2FastGradientAttack):
    """Foolbox's L2 fast gradient method (``fb.attacks.FGM``) on the MIFPE loss (MIFPE paper,
    eq. 7). Untargeted only, as Foolbox's FGM.

    Parameters
    ----------
    loss : str or Loss
        ``"mifpe"`` (default; MIFPE paper eq. 7, and eq. 8 under ``TargetedMisclassification``),
        any name of :func:`mifpe_plugins.get_loss` (``"ce"`` reproduces stock Foolbox bitwise), or
        a callable ``loss(logits, labels, *, targeted=False) -> (B,)``, larger = more adversarial.
    temperature : float, optional
        MIFPE's ``T``, the top-logit margin after scaling (1 by default, as in the paper; the
        authors' code uses 10). Only with ``loss="mifpe"``.
    random_start : bool
        As in ``foolbox.attacks.L2FastGradientAttack``.
    """

    def __init__(
        self, *, loss: str | Loss = "mifpe", temperature: float | None = None,
        random_start: bool = False,
    ) -> None:
        super().__init__(random_start=random_start)
        self.loss = _mifpe_family_loss(loss, temperature)


# ---------------------------------------------------------------------------------------------
# PGD++ / FGSM++ attacks
# ---------------------------------------------------------------------------------------------



class LinfPGDPP(_LossSeam, fb.attacks.LinfPGD):
    """PGD++ in L-inf: Foolbox's ``LinfPGD`` on ``CE(beta z, y)`` with ``beta`` from NJS (PGD++
    paper, Alg. 1) or HNS (Alg. 2).

    The rule is fitted on the clean inputs at the start of each ``run`` (once per epsilon), before
    Foolbox's random start; HNS costs one forward and K backward passes there.

    Parameters
    ----------
    beta : {"njs", "hns"}, float, or rule
        The temperature of ``CE(beta z, y)``. ``"njs"``: Network Jacobian Scaling (PGD++ paper,
        Alg. 1), with ``beta_1`` from the Jacobian of the first 100 clean inputs of each attacked
        batch (pass ``NJS(beta1=njs_beta1(net, x100))`` for the paper's one-``beta_1``-per-network
        protocol). ``"hns"``: Hessian Norm Scaling (Alg. 2), one ``beta`` per sample chosen on the
        clean input. A number is a fixed temperature (``1.0`` is stock Foolbox). Any rule object
        of :mod:`mifpe_plugins.temperature`, or ``rule(logits_detached, labels) -> (B,)``.
    loss : str or Loss
        The loss that ``beta`` scales; ``"ce"`` (the paper's) by default.
    rel_stepsize, abs_stepsize, steps, random_start
        As in ``foolbox.attacks.LinfPGD`` (same defaults).
    """

    def __init__(
        self,
        *,
        beta: BetaChoice = "njs",
        loss: str | Loss = "ce",
        rel_stepsize: float = 0.01 / 0.3,
        abs_stepsize: float | None = None,
        steps: int = 40,
        random_start: bool = True,
    ) -> None:
        super().__init__(
            rel_stepsize=rel_stepsize, abs_stepsize=abs_stepsize, steps=steps,
            random_start=random_start,
        )
        self.loss = _pgdpp_loss(loss, beta)


class L2PGDPP(_LossSeam, fb.attacks.L2PGD):
    """PGD++ in L2: Foolbox's ``L2PGD`` on ``CE(beta z, y)``, ``beta`` from NJS (PGD++ paper,
    Alg. 1) or HNS (Alg. 2); see :class:`LinfPGDPP`.

    Parameters
    ----------
    beta : {"njs", "hns"}, float, or rule
        The temperature of ``CE(beta z, y)``. ``"njs"``: Network Jacobian Scaling (PGD++ paper,
        Alg. 1), with ``beta_1`` from the Jacobian of the first 100 clean inputs of each attacked
        batch (pass ``NJS(beta1=njs_beta1(net, x100))`` for the paper's one-``beta_1``-per-network
        protocol). ``"hns"``: Hessian Norm Scaling (Alg. 2), one ``beta`` per sample chosen on the
        clean input. A number is a fixed temperature (``1.0`` is stock Foolbox). Any rule object
        of :mod:`mifpe_plugins.temperature`, or ``rule(logits_detached, labels) -> (B,)``.
    loss : str or Loss
        The loss that ``beta`` scales; ``"ce"`` (the paper's) by default.
    rel_stepsize, abs_stepsize, steps, random_start
        As in ``foolbox.attacks.L2PGD`` (same defaults).
    """

    def __init__(
        self,
        *,
        beta: BetaChoice = "njs",
        loss: str | Loss = "ce",
        rel_stepsize: float = 0.025,
        abs_stepsize: float | None = None,
        steps: int = 50,
        random_start: bool = True,
    ) -> None:
        super().__init__(
            rel_stepsize=rel_stepsize, abs_stepsize=abs_stepsize, steps=steps,
            random_start=random_start,
        )
        self.loss = _pgdpp_loss(loss, beta)


class LinfFGSMPP(_LossSeam, fb.attacks.FGSM):
    """FGSM++: Foolbox's FGSM on ``CE(beta z, y)``, ``beta`` from NJS (PGD++ paper, Alg. 1) or HNS
    (Alg. 2). Untargeted only, as Foolbox's FGSM.

    Parameters
    ----------
    beta : {"njs", "hns"}, float, or rule
        The temperature of ``CE(beta z, y)``. ``"njs"``: Network Jacobian Scaling (PGD++ paper,
        Alg. 1), with ``beta_1`` from the Jacobian of the first 100 clean inputs of each attacked
        batch (pass ``NJS(beta1=njs_beta1(net, x100))`` for the paper's one-``beta_1``-per-network
        protocol). ``"hns"``: Hessian Norm Scaling (Alg. 2), one ``beta`` per sample chosen on the
        clean input. A number is a fixed temperature (``1.0`` is stock Foolbox). Any rule object
        of :mod:`mifpe_plugins.temperature`, or ``rule(logits_detached, labels) -> (B,)``.
    loss : str or Loss
        The loss that ``beta`` scales; ``"ce"`` (the paper's) by default.
    random_start : bool
        As in ``foolbox.attacks.FGSM``.
    """

    def __init__(
        self, *, beta: BetaChoice = "njs", loss: str | Loss = "ce", random_start: bool = False
    ) -> None:
        super().__init__(random_start=random_start)
        self.loss = _pgdpp_loss(loss, beta)


class L2FGSMPP(_LossSeam, fb.attacks.L2FastGradientAttack):
    """FGM++ in L2: Foolbox's ``L2FastGradientAttack`` on ``CE(beta z, y)``, ``beta`` from NJS
    (PGD++ paper, Alg. 1) or HNS (Alg. 2). Untargeted only, as Foolbox's FGM.

    Parameters
    ----------
    beta : {"njs", "hns"}, float, or rule
        The temperature of ``CE(beta z, y)``. ``"njs"``: Network Jacobian Scaling (PGD++ paper,
        Alg. 1), with ``beta_1`` from the Jacobian of the first 100 clean inputs of each attacked
        batch (pass ``NJS(beta1=njs_beta1(net, x100))`` for the paper's one-``beta_1``-per-network
        protocol). ``"hns"``: Hessian Norm Scaling (Alg. 2), one ``beta`` per sample chosen on the
        clean input. A number is a fixed temperature (``1.0`` is stock Foolbox). Any rule object
        of :mod:`mifpe_plugins.temperature`, or ``rule(logits_detached, labels) -> (B,)``.
    loss : str or Loss
        The loss that ``beta`` scales; ``"ce"`` (the paper's) by default.
    random_start : bool
        As in ``foolbox.attacks.L2FastGradientAttack``.
    """

    def __init__(
        self, *, beta: BetaChoice = "njs", loss: str | Loss = "ce", random_start: bool = False
    ) -> None:
        super().__init__(random_start=random_start)
        self.loss = _pgdpp_loss(loss, beta)
