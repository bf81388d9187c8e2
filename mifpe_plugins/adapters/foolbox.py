"""Foolbox 3 adapter: MIFPE (Yu & Xu, CVPR 2023) and PGD++ (Gupta & Ajanthan, AAAI 2022) losses
behind the ``get_loss_fn`` seam of Foolbox's own gradient attacks. See docs/adapters/foolbox.md."""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ..attacks._common import bind_loss, check_bounds, check_eps, check_inputs
from ..losses import BETA_NAMES, Loss, resolve_loss
from ._host import require

fb = require("foolbox", "foolbox")
ep = require("eagerpy", "foolbox")

__all__ = ["LinfMIFPEPGD", "L2MIFPEPGD", "LinfMIFPEFGSM", "L2MIFPEFGSM", "LinfPGDPP", "L2PGDPP",
           "LinfFGSMPP", "L2FGSMPP", "BETA_NAMES"]

#: The Foolbox attack a class extends, by kind (PGD, or one step: FGSM/FGM) and norm.
_HOSTS = {"pgd": {"linf": fb.attacks.LinfPGD, "l2": fb.attacks.L2PGD},
          "fgsm": {"linf": fb.attacks.FGSM, "l2": fb.attacks.FGM}}


def _checked_inputs(model: Any, inputs: Any, epsilons: Any, name: str) -> Tensor:
    """The raw torch inputs, checked with the core's rules within ``model.bounds``, and every
    epsilon, before Foolbox runs any (it runs NaN or negative ones and only asserts the bounds)."""
    if not isinstance(model, fb.models.Model):
        raise TypeError("model must be a Foolbox model around a PyTorch network, e.g. foolbox."
                        f"PyTorchModel(net.eval(), bounds=(0, 1)); got {type(model).__name__}")
    raw = inputs.raw if isinstance(inputs, ep.Tensor) else inputs
    if not isinstance(raw, Tensor):
        raise TypeError(
            "inputs must be a torch.Tensor: the mifpe_plugins losses run in PyTorch, so this "
            f"adapter supports PyTorch-backed Foolbox models only; got {type(raw).__name__}")
    low, high = check_bounds(tuple(model.bounds))
    check_inputs(raw, None)  # a finite floating tensor (batch, ...)
    try:
        check_inputs(raw, (low, high))
    except ValueError:
        raise ValueError(
            f"inputs must lie within the Foolbox model's bounds [{low:g}, {high:g}], got values in "
            f"[{float(raw.min()):g}, {float(raw.max()):g}]: rescale them, or give the model their "
            "range, e.g. fb.PyTorchModel(net, bounds=(0, 255), preprocessing=dict(std=255)) for "
            "[0, 255] inputs to a network that expects [0, 1]"
        ) from None
    for eps in epsilons if isinstance(epsilons, Iterable) else [epsilons]:
        if eps is not None:  # None is Foolbox's to refuse; NumPy scalars are numbers to Foolbox
            real = isinstance(eps, numbers.Real) and not isinstance(eps, bool)
            check_eps(float(eps) if real else eps, raw, name=name)
    return raw


class _Seam:
    """Our loss behind the seams of the Foolbox attack after it in the bases. ``class C(_Seam,
    Host, loss="mifpe", temperature=None)``: C's constructor takes these (for resolve_loss), then
    Host's own keyword arguments with Host's defaults, as ``help()`` and ``inspect`` show."""

    loss: Loss

    def __init_subclass__(cls, **spec: Any) -> None:
        super().__init_subclass__()
        if not spec:  # a subclass of one of ours keeps its constructor
            return
        host_init = super().__init__  # the host's: next after _Seam in the MRO
        own, *host_params = inspect.signature(host_init).parameters.values()
        ours = [inspect.Parameter(k, own.KEYWORD_ONLY, default=v) for k, v in spec.items()]

        def __init__(self: _Seam, **kwargs: Any) -> None:
            loss_spec = {name: kwargs.pop(name, default) for name, default in spec.items()}
            host_init(self, **kwargs)
            self.loss = resolve_loss(**loss_spec)

        __init__.__qualname__ = f"{cls.__qualname__}.__init__"
        __init__.__signature__ = inspect.Signature([own, *ours, *host_params])  # type: ignore
        cls.__init__ = __init__  # type: ignore[method-assign]

    # Foolbox's @final __call__ (final for type checkers only), extended and still called: the
    # model, inputs and every epsilon are checked before Foolbox reads model.bounds or runs any.
    def __call__(self, model: Any, inputs: Any, criterion: Any, *, epsilons: Any,  # type: ignore
                 **kwargs: Any) -> Any:
        _checked_inputs(model, inputs, epsilons, "epsilons")
        return super().__call__(model, inputs, criterion, epsilons=epsilons, **kwargs)

    def run(self, model: Any, inputs: Any, criterion: Any, *, epsilon: float, **kwargs: Any) -> Any:
        """Foolbox's ``run``, keeping the clean inputs and its direction for get_loss_fn."""
        clean = _checked_inputs(model, inputs, epsilon, "epsilon").detach()
        self._run = clean, hasattr(criterion, "target_classes")  # Foolbox's test for targeted
        try:
            return super().run(model, inputs, criterion, epsilon=epsilon, **kwargs)
        finally:
            del self._run

    def get_loss_fn(self, model: Any, labels: Any) -> Callable[[Any], Any]:
        """Foolbox's seam: the summed loss it ascends, or descends when targeted (then ``-L(z, t,
        targeted=True)``); bound (NJS, HNS) and probed on the clean inputs first."""
        def network(x: Tensor) -> Tensor:
            return model(ep.astensor(x)).raw

        clean, targeted = getattr(self, "_run", (None, False))
        labels = torch.as_tensor(labels.raw if isinstance(labels, ep.Tensor) else labels).long()
        loss = self.loss
        if clean is not None:
            labels = labels.to(clean.device)
            loss, _ = bind_loss(network, loss, clean, labels, targeted=targeted,
                                labels_name="criterion labels")

        def loss_fn(inputs: Any) -> Any:
            logits = network(inputs.raw)
            per_sample = loss(logits, labels.to(logits.device), targeted=targeted)
            return ep.astensor((-per_sample if targeted else per_sample).sum())

        return loss_fn

    def value_and_grad(self, loss_fn: Callable[[Any], Any], x: Any) -> tuple[Any, Any]:
        """Loss and gradient with respect to the inputs only (Foolbox's ``backward()`` also fills
        every parameter's ``.grad``); the same input gradient, bitwise."""
        point = x.raw.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            value = loss_fn(ep.astensor(point)).raw
            (grad,) = torch.autograd.grad(value, point)
        return ep.astensor(value.detach()), ep.astensor(grad)


class LinfMIFPEPGD(_Seam, _HOSTS["pgd"]["linf"], loss="mifpe", temperature=None):
    """Foolbox's LinfPGD on the MIFPE loss (MIFPE paper, eq. 7; eq. 8 when targeted).

    Args:
        loss: "mifpe", a name of mifpe_plugins.get_loss ("ce" is stock Foolbox) or a callable.
        temperature: MIFPE's T, the top-logit margin after scaling (1 if None; "mifpe" only).
        rel_stepsize, abs_stepsize, steps, random_start: as in foolbox.attacks.LinfPGD.
    """


class L2MIFPEPGD(_Seam, _HOSTS["pgd"]["l2"], loss="mifpe", temperature=None):
    """Foolbox's L2PGD on the MIFPE loss (MIFPE paper, eq. 7; eq. 8 when targeted).

    Args:
        loss, temperature: as in LinfMIFPEPGD.
        rel_stepsize, abs_stepsize, steps, random_start: as in foolbox.attacks.L2PGD.
    """


class LinfMIFPEFGSM(_Seam, _HOSTS["fgsm"]["linf"], loss="mifpe", temperature=None):
    """Foolbox's FGSM on the MIFPE loss (MIFPE paper, eq. 7); untargeted only, as FGSM.

    Args:
        loss, temperature: as in LinfMIFPEPGD.
        random_start: as in foolbox.attacks.FGSM.
    """


class L2MIFPEFGSM(_Seam, _HOSTS["fgsm"]["l2"], loss="mifpe", temperature=None):
    """Foolbox's FGM on the MIFPE loss (MIFPE paper, eq. 7); untargeted only, as FGM.

    Args:
        loss, temperature: as in LinfMIFPEPGD.
        random_start: as in foolbox.attacks.FGM.
    """


class LinfPGDPP(_Seam, _HOSTS["pgd"]["linf"], beta="njs", loss="ce"):
    """PGD++: Foolbox's LinfPGD on CE(beta z, y) (PGD++ paper, Alg. 1 NJS, Alg. 2 HNS).

    Args:
        beta: "njs", "hns", a number > 0 (1.0 is stock Foolbox), a (batch,) tensor or a rule.
        loss: the loss beta scales, a name of mifpe_plugins.get_loss or a callable.
        rel_stepsize, abs_stepsize, steps, random_start: as in foolbox.attacks.LinfPGD.
    """


class L2PGDPP(_Seam, _HOSTS["pgd"]["l2"], beta="njs", loss="ce"):
    """PGD++: Foolbox's L2PGD on CE(beta z, y) (PGD++ paper, Alg. 1 NJS, Alg. 2 HNS).

    Args:
        beta, loss: as in LinfPGDPP.
        rel_stepsize, abs_stepsize, steps, random_start: as in foolbox.attacks.L2PGD.
    """


class LinfFGSMPP(_Seam, _HOSTS["fgsm"]["linf"], beta="njs", loss="ce"):
    """FGSM++: Foolbox's FGSM on CE(beta z, y) (PGD++ paper); untargeted only, as FGSM.

    Args:
        beta, loss: as in LinfPGDPP.
        random_start: as in foolbox.attacks.FGSM.
    """


class L2FGSMPP(_Seam, _HOSTS["fgsm"]["l2"], beta="njs", loss="ce"):
    """FGM++: Foolbox's FGM on CE(beta z, y) (PGD++ paper); untargeted only, as FGM.

    Args:
        beta, loss: as in LinfPGDPP.
        random_start: as in foolbox.attacks.FGM.
    """
