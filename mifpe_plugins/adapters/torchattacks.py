"""torchattacks adapter: MIFPE and PGD++ attacks as :class:`torchattacks.attack.Attack` subclasses.

torchattacks 3.5.1 has no loss hook in its PGD, FGSM or APGD, so these classes subclass its
``Attack`` base and run the :mod:`mifpe_plugins.attacks` engine inside ``forward``, calling the model
through ``Attack.get_logits`` so that ``set_normalization_used``, ``set_model_training_mode``,
``set_mode_targeted_*`` and ``MultiAttack`` keep working as for torchattacks' own attacks.

After ``import mifpe_plugins`` the classes are also reachable as ``torchattacks.MIFPE`` etc. (see
:mod:`mifpe_plugins.adapters._register`); importing this module imports torchattacks.

References
----------
MIFPE : Y. Yu, C.-Z. Xu, "Efficient Loss Function by Minimizing the Detrimental Effect of
    Floating-point Errors on Gradient-based Attacks", CVPR 2023 (eq. 7 untargeted, eq. 8 targeted,
    Table 1 protocol, Table 2 for FGSM / APGD / AutoAttack with the MIFPE loss).
PGD++ : K. Gupta, T. Ajanthan, "Improved Gradient based Adversarial Attacks for Quantized
    Networks", AAAI 2022 (Alg. 1 NJS, Alg. 2 HNS).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ..attacks import apgd, fgsm, pgd
from ..attacks._common import resolve_norm
from ..losses import Loss, get_loss, mifpe, tempered
from ..temperature import HNS, NJS
from . import _register
from ._host import require

_torchattacks = require("torchattacks", "torchattacks")
Attack = _torchattacks.attack.Attack

__all__ = [
    "MIFPE",
    "MIFPEFGSM",
    "APGDMIFPE",
    "APGDTMIFPE",
    "PGDPP",
    "FGSMPP",
    "MIFPEAutoAttack",
]

#: torchattacks' attacks assume inputs in [0, 1]; models on normalised inputs use
#: ``set_normalization_used`` instead of other bounds.
_BOUNDS = (0.0, 1.0)
_NORMS = "'Linf' or 'L2'"

LossSpec = str | Loss
BetaSpec = str | float | NJS | HNS | Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------------------------
# Validation shared by the constructors (errors name the argument and what is allowed)
# --------------------------------------------------------------------------------------------


def _check_model(model: Any, owner: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{owner}: model must be a torch.nn.Module that maps images to logits (torchattacks "
            f"calls it directly), got {type(model).__module__}.{type(model).__qualname__}. "
            "If it is another library's wrapper (e.g. a Foolbox PyTorchModel or an ART "
            "classifier), pass the torch.nn.Module you wrapped instead"
        )


def _check_number(value: Any, name: str, owner: str, *, positive: bool = False) -> None:
    if isinstance(value, Tensor):
        # Per-sample tensors are checked against the batch by the engine.
        return
    bad = isinstance(value, bool) or not isinstance(value, (int, float))
    if bad or not math.isfinite(value) or value < 0 or (positive and value == 0):
        need = "> 0" if positive else ">= 0"
        raise ValueError(f"{owner}: {name} must be a finite number {need}, got {value!r}")


def _check_int(value: Any, name: str, owner: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")


def _check_seed(seed: Any, owner: str) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"{owner}: seed must be an integer or None, got {seed!r}")


def _norm_name(norm: Any, owner: str) -> str:
    try:
        return resolve_norm(norm)
    except ValueError:
        raise ValueError(f"{owner}: norm must be {_NORMS}, got {norm!r}") from None


def _resolve_loss(loss: LossSpec, temperature: float, owner: str) -> Loss:
    """The engine's loss for ``loss=``; ``temperature`` is MIFPE's ``T`` (eq. 7 / eq. 8)."""
    if not (isinstance(temperature, (int, float)) and not isinstance(temperature, bool)) or not (
        0 < temperature < math.inf
    ):
        raise ValueError(f"{owner}: temperature must be a finite number > 0, got {temperature!r}")
    if isinstance(loss, str) and loss.strip().lower() == "mifpe":
        return mifpe(float(temperature))
    if temperature != 1.0:
        raise ValueError(
            f"{owner}: temperature is MIFPE's T and applies only to loss='mifpe', got loss={loss!r}"
        )
    try:
        return get_loss(loss)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{owner}: {error}") from None


def _resolve_beta(beta: BetaSpec, base: LossSpec, owner: str) -> Loss:
    """PGD++'s tempered loss ``base(beta * z, y)`` (NJS: Alg. 1, HNS: Alg. 2)."""
    rule: Any = beta
    if isinstance(beta, str):
        named = {"njs": NJS, "hns": HNS}
        key = beta.strip().lower()
        if key not in named:
            raise ValueError(
                f"{owner}: beta must be 'njs', 'hns', a number > 0, an NJS/HNS instance or a rule "
                f"(logits, labels) -> (batch,) tensor, got {beta!r}"
            )
        rule = named[key]()
    try:
        return tempered(base, rule, name=f"{base}-{beta}")
    except (TypeError, ValueError) as error:
        raise type(error)(f"{owner}: {error}") from None


# --------------------------------------------------------------------------------------------
# The shared base
# --------------------------------------------------------------------------------------------


class _EngineAttack(Attack):
    """A torchattacks ``Attack`` whose ``forward`` runs the mifpe_plugins engine.

    Everything torchattacks' base class does is kept; three methods are specialised here, on the
    subclass only:

    * ``__call__`` additionally restores every submodule's ``training`` flag afterwards (the base
      calls ``model.train()``, which would also switch submodules the caller froze in eval mode)
      and restores the normalisation flag if the attack raises;
    * ``normalize`` / ``inverse_normalize`` keep the inputs' dtype (the base's float32 mean/std
      would promote float16 inputs and crash a float16 model).
    """

    def __init__(self, name: str, model: nn.Module, *, seed: int | None) -> None:
        _check_model(model, name)
        _check_seed(seed, name)
        super().__init__(name, model)
        self.seed = seed

    # --- torchattacks' hooks -------------------------------------------------------------------

    def __call__(self, inputs: Tensor, labels: Tensor | None = None, *args: Any, **kwargs: Any) -> Tensor:
        modes = [(module, module.training) for module in self.model.modules()]
        normalization_applied = self._normalization_applied
        try:
            return super().__call__(inputs, labels, *args, **kwargs)
        finally:
            for module, training in modes:
                module.training = training
            if self._normalization_applied is not normalization_applied:
                self._set_normalization_applied(normalization_applied)

    def normalize(self, inputs: Tensor) -> Tensor:
        mean, std = self._normalization_stats(inputs)
        return (inputs - mean) / std

    def inverse_normalize(self, inputs: Tensor) -> Tensor:
        mean, std = self._normalization_stats(inputs)
        return inputs * std + mean

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        r"""
        Overridden.
        """
        if not isinstance(images, Tensor):
            raise TypeError(f"{self.attack}: images must be a torch.Tensor, got {type(images).__name__}")
        if not isinstance(labels, Tensor):
            raise TypeError(
                f"{self.attack}: labels must be a torch.Tensor of class indices, got "
                f"{type(labels).__name__}"
            )
        device = self.device if self.device is not None else images.device
        images = images.detach().to(device)
        labels = labels.detach().to(device)
        if self._normalization_applied is False:
            # Attack.__call__ undid the normalisation; the round trip may leave values an ulp
            # outside [0, 1], which the engine would reject.
            images = images.clamp(*_BOUNDS)
        elif images.numel() and (bool((images < _BOUNDS[0]).any()) or bool((images > _BOUNDS[1]).any())):
            raise ValueError(
                f"{self.attack}: images must lie in [0, 1] (torchattacks' convention), got values in "
                f"[{float(images.min()):g}, {float(images.max()):g}]; for a model on normalised "
                "inputs pass [0, 1] images and call attack.set_normalization_used(mean, std)"
            )
        if self.targeted:
            # Random targets come from torchattacks' own sampler, which draws from the global RNG:
            # fork it so the caller's RNG state is as it was.
            with torch.random.fork_rng(devices=[]):
                target_labels = self.get_target_label(images, labels)
            return self._run(images, target_labels.to(device), targeted=True)
        return self._run(images, labels, targeted=False)

    # --- for subclasses ----------------------------------------------------------------------

    def _run(self, images: Tensor, labels: Tensor, *, targeted: bool) -> Tensor:
        raise NotImplementedError

    def _generator(self, device: torch.device) -> torch.Generator:
        """A private generator: ``seed`` makes runs repeatable, ``None`` draws a fresh OS seed.

        The global RNG is never read or reseeded (torchattacks' APGD reseeds it on every call).
        """
        generator = torch.Generator(device=device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        return generator

    def _normalization_stats(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        stats = self.normalization_used
        like = {"device": inputs.device, "dtype": inputs.dtype}
        return stats["mean"].to(**like), stats["std"].to(**like)


# --------------------------------------------------------------------------------------------
# PGD and FGSM: one engine call each; the subclasses only choose the loss
# --------------------------------------------------------------------------------------------


class _PGDAttack(_EngineAttack):
    """PGD through :func:`mifpe_plugins.pgd`; subclasses provide ``_build_loss``."""

    def __init__(
        self,
        model: nn.Module,
        eps: float | Tensor,
        alpha: float | None,
        steps: int,
        random_start: bool,
        *,
        norm: str,
        momentum: float | None,
        schedule: str,
        keep_best: bool,
        loss: LossSpec,
        seed: int | None,
    ) -> None:
        name = type(self).__name__
        super().__init__(name, model, seed=seed)
        _check_number(eps, "eps", name)
        if alpha is not None:
            _check_number(alpha, "alpha", name, positive=True)
        _check_int(steps, "steps", name)
        if momentum is not None and (
            isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 < momentum <= 1
        ):
            raise ValueError(f"{name}: momentum must be in (0, 1] or None, got {momentum!r}")
        if schedule not in ("linear", "constant"):
            raise ValueError(f"{name}: schedule must be 'linear' or 'constant', got {schedule!r}")
        self.eps = eps
        self.alpha = alpha
        self.steps = steps
        self.random_start = bool(random_start)
        self.norm = norm
        self.momentum = momentum
        self.schedule = schedule
        self.keep_best = bool(keep_best)
        self.loss = loss
        self._norm = _norm_name(norm, name)
        self.supported_mode = ["default", "targeted"]

    def _run(self, images: Tensor, labels: Tensor, *, targeted: bool) -> Tensor:
        return pgd(
            self.get_logits, images, labels, eps=self.eps, norm=self._norm, steps=self.steps,
            step_size=self.alpha, schedule=self.schedule, momentum=self.momentum,
            loss=self._loss_fn, targeted=targeted, random_start=self.random_start,
            keep_best=self.keep_best, bounds=_BOUNDS, generator=self._generator(images.device),
        )


class _FGSMAttack(_EngineAttack):
    """One FGSM step through :func:`mifpe_plugins.fgsm`; subclasses set ``_loss_fn``."""

    def __init__(self, model: nn.Module, eps: float | Tensor, *, norm: str, loss: LossSpec) -> None:
        name = type(self).__name__
        # FGSM has no randomness; the seed only feeds the (unused) generator argument.
        super().__init__(name, model, seed=0)
        _check_number(eps, "eps", name)
        self.eps = eps
        self.norm = norm
        self.loss = loss
        self._norm = _norm_name(norm, name)
        self.supported_mode = ["default", "targeted"]

    def _run(self, images: Tensor, labels: Tensor, *, targeted: bool) -> Tensor:
        return fgsm(
            self.get_logits, images, labels, eps=self.eps, norm=self._norm, loss=self._loss_fn,
            targeted=targeted, bounds=_BOUNDS, generator=self._generator(images.device),
        )


class MIFPE(_PGDAttack):
    r"""
    PGD with the MIFPE loss in the paper 'Efficient Loss Function by Minimizing the Detrimental
    Effect of Floating-point Errors on Gradient-based Attacks' (CVPR 2023)
    [https://openaccess.thecvf.com/content/CVPR2023/html/Yu_Efficient_Loss_Function_by_Minimizing_the_Detrimental_Effect_of_Floating-Point_CVPR_2023_paper.html]

    The loss is :math:`CE(T z / \Delta, y)` with :math:`\Delta = z_{\pi_1} - z_{\pi_2}` detached
    (eq. 7), and :math:`-CE(T z / \Delta, y_t)` in targeted mode (eq. 8). Defaults follow the
    paper's protocol (Table 1): 100 steps, step size :math:`2\epsilon(1 - i/I)`, momentum 0.75, one
    random start, each sample's first adversarial example kept. The attack runs in the images'
    dtype, so float16 / bfloat16 / float64 models work.

    Distance Measure : Linf, L2

    Arguments:
        model (nn.Module): model to attack.
        eps (float): maximum perturbation. (Default: 8/255)
        alpha (float): base step size; None for the paper's :math:`2\epsilon` with the linear
            schedule (:math:`2.5\epsilon/\text{steps}` with the constant one). (Default: None)
        steps (int): number of steps. (Default: 100)
        random_start (bool): start from a uniform point of the eps-ball. (Default: True)
        norm (str): Lp-norm of the attack. ['Linf', 'L2'] (Default: 'Linf')
        temperature (float): MIFPE's T, the top logit margin after scaling. (Default: 1.0)
        momentum (float or None): APGD-style momentum; None for plain PGD. (Default: 0.75)
        schedule (str): step-size schedule. ['linear', 'constant'] (Default: 'linear')
        keep_best (bool): return each sample's first adversarial example (paper); False returns
            the last iterate like torchattacks.PGD. (Default: True)
        loss (str or callable): 'mifpe', 'ce', 'cw', 'dlr', 'njs', 'hns', 'fnz-<n>' or
            loss(logits, labels, *, targeted=False) -> (N,), larger = more adversarial.
            (Default: 'mifpe')
        seed (int or None): seed of the attack's private random generator; None for a fresh
            one. The global RNG is not used. (Default: 0)

    Shape:
        - images: :math:`(N, C, H, W)` where `N = number of batches`, `C = number of channels`,
          `H = height` and `W = width`. It must have a range [0, 1].
        - labels: :math:`(N)` where each value :math:`y_i` is :math:`0 \leq y_i \leq` `number of labels`.
        - output: :math:`(N, C, H, W)`.

    Examples::
        >>> attack = torchattacks.MIFPE(model, eps=8/255, steps=100)
        >>> adv_images = attack(images, labels)

    """

    def __init__(
        self,
        model: nn.Module,
        eps: float | Tensor = 8 / 255,
        alpha: float | None = None,
        steps: int = 100,
        random_start: bool = True,
        *,
        norm: str = "Linf",
        temperature: float = 1.0,
        momentum: float | None = 0.75,
        schedule: str = "linear",
        keep_best: bool = True,
        loss: LossSpec = "mifpe",
        seed: int | None = 0,
    ) -> None:
        super().__init__(
            model, eps, alpha, steps, random_start, norm=norm, momentum=momentum,
            schedule=schedule, keep_best=keep_best, loss=loss, seed=seed,
        )
        self.temperature = temperature
        self._loss_fn = _resolve_loss(loss, temperature, self.attack)


class MIFPEFGSM(_FGSMAttack):
    r"""
    FGSM with the MIFPE loss (CVPR 2023, Table 2, "FGSM (1 it)"; eq. 7, eq. 8 in targeted mode).

    One step of size eps: :math:`x' = \Pi(x + \epsilon\,\mathrm{sign}(\nabla L))` (Linf) or
    :math:`\Pi(x + \epsilon \nabla L / \|\nabla L\|_2)` (L2). Unlike torchattacks.FGSM, samples
    already misclassified are returned unchanged, and a sample the step does not fool gets the
    point of higher loss (the clean image or the step).

    Distance Measure : Linf, L2

    Arguments:
        model (nn.Module): model to attack.
        eps (float): maximum perturbation. (Default: 8/255)
        norm (str): Lp-norm of the attack. ['Linf', 'L2'] (Default: 'Linf')
        temperature (float): MIFPE's T. (Default: 1.0)
        loss (str or callable): as in MIFPE. (Default: 'mifpe')

    Shape:
        - images: :math:`(N, C, H, W)` where `N = number of batches`, `C = number of channels`,
          `H = height` and `W = width`. It must have a range [0, 1].
        - labels: :math:`(N)` where each value :math:`y_i` is :math:`0 \leq y_i \leq` `number of labels`.
        - output: :math:`(N, C, H, W)`.

    Examples::
        >>> attack = torchattacks.MIFPEFGSM(model, eps=8/255)
        >>> adv_images = attack(images, labels)

    """

    def __init__(
        self,
        model: nn.Module,
        eps: float | Tensor = 8 / 255,
        *,
        norm: str = "Linf",
        temperature: float = 1.0,
        loss: LossSpec = "mifpe",
    ) -> None:
        super().__init__(model, eps, norm=norm, loss=loss)
        self.temperature = temperature
        self._loss_fn = _resolve_loss(loss, temperature, self.attack)


# --------------------------------------------------------------------------------------------
# PGD++ / FGSM++: temperature scaling (NJS, HNS)
# --------------------------------------------------------------------------------------------


class PGDPP(_PGDAttack):
    r"""
    PGD++ in the paper 'Improved Gradient based Adversarial Attacks for Quantized Networks'
    (AAAI 2022) [https://arxiv.org/abs/2003.13511]

    PGD on :math:`CE(\beta z, y)` with :math:`\beta` from Network Jacobian Scaling (Alg. 1:
    :math:`\beta_1` from the mean Jacobian singular value over the first 100 images of the batch,
    then :math:`\beta_2` per step by Proposition 1) or Hessian Norm Scaling (Alg. 2: per image,
    chosen once on the clean images). Defaults are plain PGD as in torchattacks.PGD with the
    paper's CIFAR-10 setting (eps 8/255, alpha 2/255, 20 steps); with ``beta=1.0`` it is
    torchattacks.PGD.

    Distance Measure : Linf, L2

    Arguments:
        model (nn.Module): model to attack.
        eps (float): maximum perturbation. (Default: 8/255)
        alpha (float): step size. (Default: 2/255)
        steps (int): number of steps. (Default: 20)
        random_start (bool): start from a uniform point of the eps-ball. (Default: True)
        norm (str): Lp-norm of the attack. ['Linf', 'L2'] (Default: 'Linf')
        beta (str, float or rule): 'njs', 'hns', a fixed temperature > 0, an
            ``mifpe_plugins.NJS(beta1=...)`` / ``HNS(...)`` instance, or a rule
            (logits, labels) -> (N,). (Default: 'njs')
        loss (str or callable): the loss that beta scales. (Default: 'ce')
        momentum (float or None): as in MIFPE. (Default: None)
        schedule (str): as in MIFPE. (Default: 'constant')
        keep_best (bool): as in MIFPE. (Default: False)
        seed (int or None): as in MIFPE. (Default: 0)

    Shape:
        - images: :math:`(N, C, H, W)` where `N = number of batches`, `C = number of channels`,
          `H = height` and `W = width`. It must have a range [0, 1].
        - labels: :math:`(N)` where each value :math:`y_i` is :math:`0 \leq y_i \leq` `number of labels`.
        - output: :math:`(N, C, H, W)`.

    Examples::
        >>> attack = torchattacks.PGDPP(model, eps=8/255, alpha=2/255, steps=20, beta='hns')
        >>> adv_images = attack(images, labels)

    """

    def __init__(
        self,
        model: nn.Module,
        eps: float | Tensor = 8 / 255,
        alpha: float = 2 / 255,
        steps: int = 20,
        random_start: bool = True,
        *,
        norm: str = "Linf",
        beta: BetaSpec = "njs",
        loss: LossSpec = "ce",
        momentum: float | None = None,
        schedule: str = "constant",
        keep_best: bool = False,
        seed: int | None = 0,
    ) -> None:
        super().__init__(
            model, eps, alpha, steps, random_start, norm=norm, momentum=momentum,
            schedule=schedule, keep_best=keep_best, loss=loss, seed=seed,
        )
        self.beta = beta
        self._loss_fn = _resolve_beta(beta, loss, self.attack)


class FGSMPP(_FGSMAttack):
    r"""
    FGSM++ in the paper 'Improved Gradient based Adversarial Attacks for Quantized Networks'
    (AAAI 2022): one FGSM step on :math:`CE(\beta z, y)`, :math:`\beta` from NJS (Alg. 1) or
    HNS (Alg. 2). Paper setting: eps = step = 8/255. Misclassified samples are returned
    unchanged, as in MIFPEFGSM.

    Distance Measure : Linf, L2

    Arguments:
        model (nn.Module): model to attack.
        eps (float): maximum perturbation and step size. (Default: 8/255)
        norm (str): Lp-norm of the attack. ['Linf', 'L2'] (Default: 'Linf')
        beta (str, float or rule): as in PGDPP. (Default: 'njs')
        loss (str or callable): the loss that beta scales. (Default: 'ce')

    Shape:
        - images: :math:`(N, C, H, W)` where `N = number of batches`, `C = number of channels`,
          `H = height` and `W = width`. It must have a range [0, 1].
        - labels: :math:`(N)` where each value :math:`y_i` is :math:`0 \leq y_i \leq` `number of labels`.
        - output: :math:`(N, C, H, W)`.

    Examples::
        >>> attack = torchattacks.FGSMPP(model, eps=8/255, beta='njs')
        >>> adv_images = attack(images, labels)

    """

    def __init__(
        self,
        model: nn.Module,
        eps: float | Tensor = 8 / 255,
        *,
        norm: str = "Linf",
        beta: BetaSpec = "njs",
        loss: LossSpec = "ce",
    ) -> None:
        super().__init__(model, eps, norm=norm, loss=loss)
        self.beta = beta
        self._loss_fn = _resolve_beta(beta, loss, self.attack)


# --------------------------------------------------------------------------------------------
# APGD with the MIFPE loss, and AutoAttack built on it
# --------------------------------------------------------------------------------------------


class APGDMIFPE(_EngineAttack):
    r"""
    APGD (Croce & Hein, ICML 2020) with the MIFPE loss in place of CE/DLR: the MIFPE paper's
    "APGD_DLR with MIFPE" (CVPR 2023, Table 2; eq. 7, eq. 8 in targeted mode).

    Follows the APGD paper's Alg. 1 (step-size halving at checkpoints, momentum 0.75); differs from
    torchattacks.APGD, a port of AutoAttack's code, in using the paper's strict ``<`` in the
    oscillation test and resetting the momentum when a sample restarts from its best point. The
    start is a uniform point of the ball, drawn from a private generator (torchattacks' APGD reseeds
    the global RNG). Runs in the images' dtype (torchattacks' APGD needs float32).

    Distance Measure : Linf, L2

    Arguments:
        model (nn.Module): model to attack.
        norm (str): Lp-norm of the attack. ['Linf', 'L2'] (Default: 'Linf')
        eps (float): maximum perturbation. (Default: 8/255)
        steps (int): number of steps. (Default: 100)
        n_restarts (int): number of random restarts. (Default: 1)
        seed (int or None): seed of the attack's private random generator. (Default: 0)
        loss (str or callable): 'mifpe', 'ce', 'dlr', ... as in MIFPE. (Default: 'mifpe')
        rho (float): parameter for step-size update. (Default: 0.75)
        temperature (float): MIFPE's T. (Default: 1.0)
        momentum (float): APGD's momentum. (Default: 0.75)

    Shape:
        - images: :math:`(N, C, H, W)` where `N = number of batches`, `C = number of channels`,
          `H = height` and `W = width`. It must have a range [0, 1].
        - labels: :math:`(N)` where each value :math:`y_i` is :math:`0 \leq y_i \leq` `number of labels`.
        - output: :math:`(N, C, H, W)`.

    Examples::
        >>> attack = torchattacks.APGDMIFPE(model, norm='Linf', eps=8/255, steps=100, n_restarts=1)
        >>> adv_images = attack(images, labels)

    """

    def __init__(
        self,
        model: nn.Module,
        norm: str = "Linf",
        eps: float | Tensor = 8 / 255,
        steps: int = 100,
        n_restarts: int = 1,
        seed: int | None = 0,
        loss: LossSpec = "mifpe",
        *,
        rho: float = 0.75,
        temperature: float = 1.0,
        momentum: float = 0.75,
    ) -> None:
        name = type(self).__name__
        super().__init__(name, model, seed=seed)
        _check_number(eps, "eps", name)
        _check_int(steps, "steps", name)
        _check_int(n_restarts, "n_restarts", name)
        for value, argument in ((rho, "rho"), (momentum, "momentum")):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ValueError(f"{name}: {argument} must be in (0, 1], got {value!r}")
        self.eps = eps
        self.norm = norm
        self.steps = steps
        self.n_restarts = n_restarts
        self.loss = loss
        self.rho = rho
        self.temperature = temperature
        self.momentum = momentum
        self._norm = _norm_name(norm, name)
        self._loss_fn = _resolve_loss(loss, temperature, name)
        self.supported_mode = ["default", "targeted"]

    def _run(self, images: Tensor, labels: Tensor, *, targeted: bool) -> Tensor:
        return apgd(
            self.get_logits, images, labels, eps=self.eps, norm=self._norm, steps=self.steps,
            loss=self._loss_fn, targeted=targeted, restarts=self.n_restarts,
            momentum=self.momentum, rho=self.rho, bounds=_BOUNDS,
            generator=self._generator(images.device), **self._multi_target(),
        )

    def _multi_target(self) -> dict[str, int]:
        return {}


class APGDTMIFPE(APGDMIFPE):
    r"""
    Multi-targeted APGD with the MIFPE loss: for each of the ``n_classes - 1`` highest-scoring wrong
    classes in turn, APGD on the targeted MIFPE loss :math:`-CE(T z / \Delta, y_t)` (CVPR 2023,
    eq. 8), as torchattacks.APGDT does with the targeted DLR loss. Success is any
    misclassification.

    Distance Measure : Linf, L2

    Arguments:
        model (nn.Module): model to attack.
        norm (str): Lp-norm of the attack. ['Linf', 'L2'] (Default: 'Linf')
        eps (float): maximum perturbation. (Default: 8/255)
        steps (int): number of steps per target class. (Default: 100)
        n_restarts (int): number of random restarts per target class. (Default: 1)
        seed (int or None): seed of the attack's private random generator. (Default: 0)
        loss (str or callable): the targeted loss; 'dlr' is APGDT's. (Default: 'mifpe')
        rho (float): parameter for step-size update. (Default: 0.75)
        n_classes (int): number of classes; ``n_classes - 1`` targets. (Default: 10)
        temperature (float): MIFPE's T. (Default: 1.0)

    Shape:
        - images: :math:`(N, C, H, W)` where `N = number of batches`, `C = number of channels`,
          `H = height` and `W = width`. It must have a range [0, 1].
        - labels: :math:`(N)` where each value :math:`y_i` is :math:`0 \leq y_i \leq` `number of labels`.
        - output: :math:`(N, C, H, W)`.

    Examples::
        >>> attack = torchattacks.APGDTMIFPE(model, norm='Linf', eps=8/255, steps=100, n_classes=10)
        >>> adv_images = attack(images, labels)

    """

    def __init__(
        self,
        model: nn.Module,
        norm: str = "Linf",
        eps: float | Tensor = 8 / 255,
        steps: int = 100,
        n_restarts: int = 1,
        seed: int | None = 0,
        loss: LossSpec = "mifpe",
        *,
        rho: float = 0.75,
        n_classes: int = 10,
        temperature: float = 1.0,
        momentum: float = 0.75,
    ) -> None:
        _check_int(n_classes, "n_classes", type(self).__name__, minimum=2)
        super().__init__(
            model, norm, eps, steps, n_restarts, seed, loss, rho=rho, temperature=temperature,
            momentum=momentum,
        )
        self.n_classes = n_classes
        # Multi-targeted: one targeted run per class, the true label given; like torchattacks'
        # APGDT it has no targeted mode of its own.
        self.supported_mode = ["default"]

    def _multi_target(self) -> dict[str, int]:
        return {"target_classes": self.n_classes - 1}


class MIFPEAutoAttack(_EngineAttack):
    r"""
    AutoAttack with the MIFPE loss: torchattacks.AutoAttack's 'standard' composition with
    APGDMIFPE in place of APGD-CE and APGDTMIFPE in place of APGD-T; FAB-T and Square are
    torchattacks' own, untouched (MIFPE paper, Table 2, "AA").

    Runs in a torchattacks MultiAttack: each attack only sees the images the previous ones did not
    fool. FAB and Square reseed the global RNG on every call (as in torchattacks.AutoAttack); this
    class saves the caller's RNG state before and restores it after. FAB and Square compute in
    float32, so a float16 model only works while the APGD stages fool every image.

    Distance Measure : Linf, L2

    Arguments:
        model (nn.Module): model to attack.
        norm (str) : Lp-norm to minimize. ['Linf', 'L2'] (Default: 'Linf')
        eps (float): maximum perturbation. (Default: 8/255)
        version (str): version. ['standard'] (Default: 'standard')
        n_classes (int): number of classes. (Default: 10)
        seed (int or None): random seed; None for a time-based one as in
            torchattacks.AutoAttack. (Default: None)
        verbose (bool): print progress of MultiAttack, FAB and Square. (Default: False)
        loss (str or callable): loss of the two APGD stages. (Default: 'mifpe')
        temperature (float): MIFPE's T. (Default: 1.0)
        steps (int): steps of each APGD stage; torchattacks.AutoAttack uses its APGD default
            of 10, the original AutoAttack 100. (Default: 100)

    Shape:
        - images: :math:`(N, C, H, W)` where `N = number of batches`, `C = number of channels`,
          `H = height` and `W = width`. It must have a range [0, 1].
        - labels: :math:`(N)` where each value :math:`y_i` is :math:`0 \leq y_i \leq` `number of labels`.
        - output: :math:`(N, C, H, W)`.

    Examples::
        >>> attack = torchattacks.MIFPEAutoAttack(model, norm='Linf', eps=8/255, n_classes=10)
        >>> adv_images = attack(images, labels)

    """

    def __init__(
        self,
        model: nn.Module,
        norm: str = "Linf",
        eps: float = 8 / 255,
        version: str = "standard",
        n_classes: int = 10,
        seed: int | None = None,
        verbose: bool = False,
        *,
        loss: LossSpec = "mifpe",
        temperature: float = 1.0,
        steps: int = 100,
    ) -> None:
        name = type(self).__name__
        super().__init__(name, model, seed=seed)
        if version != "standard":
            raise ValueError(
                f"{name}: version must be 'standard' (APGD-MIFPE, APGDT-MIFPE, FAB-T, Square), "
                f"got {version!r}"
            )
        _check_number(eps, "eps", name)
        _check_int(n_classes, "n_classes", name, minimum=2)
        _check_int(steps, "steps", name)
        # torchattacks' FAB and Square take 'Linf' / 'L2' spelled exactly so.
        host_norm = {"linf": "Linf", "l2": "L2"}[_norm_name(norm, name)]
        self.norm = host_norm
        self.eps = eps
        self.version = version
        self.n_classes = n_classes
        self.verbose = verbose
        self.loss = loss
        self.temperature = temperature
        self.steps = steps
        self.supported_mode = ["default"]
        apgd_options = {
            "norm": host_norm, "eps": eps, "steps": steps, "n_restarts": 1, "seed": seed,
            "loss": loss, "temperature": temperature,
        }
        self._autoattack = _torchattacks.MultiAttack(
            [
                APGDMIFPE(model, **apgd_options),
                APGDTMIFPE(model, n_classes=n_classes, **apgd_options),
                _torchattacks.FAB(
                    model, eps=eps, norm=host_norm, seed=self._host_seed(), verbose=verbose,
                    multi_targeted=True, n_classes=n_classes, n_restarts=1,
                ),
                _torchattacks.Square(
                    model, eps=eps, norm=host_norm, seed=self._host_seed(), verbose=verbose,
                    n_queries=5000, n_restarts=1,
                ),
            ],
            verbose=verbose,
        )

    def _host_seed(self) -> float:
        # FAB and Square call torch.manual_seed(seed) themselves; None means "different each
        # time", which torchattacks.AutoAttack implements with the clock.
        return time.time() if self.seed is None else self.seed

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        r"""
        Overridden.
        """
        device = torch.device(self.device if self.device is not None else images.device)
        cuda = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            return self._autoattack(images.detach().to(device), labels.detach().to(device))


# Registration as `torchattacks.<Name>` waits for this module to be complete (see _register).
_READY_FOR_REGISTRATION = True
_register.register_if_host_loaded()
