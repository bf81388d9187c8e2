"""torchattacks adapter: MIFPE and PGD++ as ``Attack`` subclasses; see docs/adapters/torchattacks.md."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from ..attacks import apgd, fgsm, pgd
from ..attacks._common import check_positive_int, resolve_norm
from ..losses import BETA_NAMES, Loss, resolve_loss
from . import _register
from ._host import require

_ta = require("torchattacks", "torchattacks")

__all__ = ["MIFPE", "MIFPEFGSM", "APGDMIFPE", "APGDTMIFPE", "PGDPP", "FGSMPP", "MIFPEAutoAttack"]

#: Checks the core makes only per batch or not at all (eps's type: by the probe): argument -> (test, need).
_CHECKS = {
    "seed": (lambda v: v is None or isinstance(v, int) and not isinstance(v, bool), "an integer or None"),
    "eps": (lambda v: not isinstance(v, (int, float)) or 0 <= v < float("inf"), "a finite number >= 0"),
    "alpha": (lambda v: v is None or isinstance(v, Tensor) or isinstance(v, (int, float)) and v is not True
              and 0 < v < float("inf"), "a finite number > 0"),
    "beta": (lambda v: not isinstance(v, str) or v.strip().lower() in BETA_NAMES,
             "'njs', 'hns', a number > 0, an NJS/HNS instance or a rule (logits, labels) -> (batch,) tensor"),
    "version": (lambda v: v == "standard", "'standard' (APGD-MIFPE, APGDT-MIFPE, FAB-T, Square)"),
}
#: torchattacks' argument names the core spells differently; None: not a core keyword.
_CORE_NAMES = {"alpha": "step_size", "n_restarts": "restarts", "seed": None, "loss": None,
               "temperature": None, "beta": None, "n_classes": None}


class _CoreAttack(_ta.attack.Attack):
    """An ``Attack`` whose ``forward`` is one call of ``core``, set up once from a subclass's ``locals()``.
    Beyond the base: images checked in [0, 1], a private generator, the caller's RNG and modes kept."""

    def __init__(self, core: Callable[..., Tensor] | None, args: dict[str, object]) -> None:
        args = {key: value for key, value in args.items() if key not in ("self", "__class__")}
        model, name = args.pop("model"), type(self).__name__
        if not isinstance(model, nn.Module):
            raise TypeError(f"{name}: model must be a torch.nn.Module (for a Foolbox PyTorchModel or an ART "
                            f"classifier: the module it wraps), got {type(model)}")
        super().__init__(name, model)
        vars(self).update({"seed": 0} | args)  # FGSM has no randomness and no seed argument
        self.supported_mode = ["default"] if "n_classes" in args else ["default", "targeted"]  # as APGDT
        try:
            for key, (valid, need) in _CHECKS.items():
                if key in args and not valid(args[key]):
                    raise ValueError(f"{key} must be {need}, got {args[key]!r}")
            for key, minimum in (("steps", 1), ("n_restarts", 1), ("n_classes", 2)):
                check_positive_int(args.get(key, minimum), key, minimum)
            try:
                norm = resolve_norm(args["norm"])
            except ValueError:
                raise ValueError(f"norm must be 'Linf' or 'L2', got {args['norm']!r}") from None
            t = None if (t := args.get("temperature")) == 1.0 and not isinstance(t, bool) else t
            loss = resolve_loss(args["loss"], temperature=t, beta=args.get("beta"))  # T = 1: any loss
            settings = {_CORE_NAMES.get(k, k): value for k, value in args.items() if _CORE_NAMES.get(k, k)}
            settings.update(norm=norm, loss=loss, bounds=(0.0, 1.0))
            if "n_classes" in args:  # multi-targeted over the n_classes - 1 top wrong classes
                settings["target_classes"] = args["n_classes"] - 1
            if core is not None:  # on an empty batch the core checks its settings, never calls the model
                self._attack = partial(core, **settings)
                with torch.inference_mode(False):  # per-sample tensors are checked against each batch
                    self._attack(model, torch.empty(0, 1), torch.empty(0, dtype=torch.long),
                                 **{key: 0.0 for key, value in settings.items() if isinstance(value, Tensor)})
        except (TypeError, ValueError) as error:
            error.args = (f"{name}: {error}",)
            raise

    def __call__(self, *args: object, **kwargs: object) -> Tensor:
        modes, applied = [(m, m.training) for m in self.model.modules()], self._normalization_applied
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        try:  # FAB, Square and torchattacks' random targets use the global RNG: the caller's is restored
            with torch.random.fork_rng(devices=cuda):
                return super().__call__(*args, **kwargs)
        finally:  # the base's model.train() would also flip submodules the caller froze in eval mode,
            for module, training in modes:  # and an attack that raises leaves the flag un-normalised
                module.training = training
            self._set_normalization_applied(applied)

    def normalize(self, x: Tensor) -> Tensor:  # mean/std in the inputs' dtype: fp16 stays fp16
        return (x - self.normalization_used["mean"].to(x)) / self.normalization_used["std"].to(x)

    def inverse_normalize(self, x: Tensor) -> Tensor:
        return x * self.normalization_used["std"].to(x) + self.normalization_used["mean"].to(x)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        if not isinstance(images, Tensor):  # labels: the core checks them and moves them to the images
            raise TypeError(f"{self.attack}: images must be a torch.Tensor, got {type(images).__name__}")
        images = images.detach().to(self.device)  # as torchattacks' attacks do (None: stays)
        if self._normalization_applied is False:  # un-normalised by the base: ulps outside [0, 1]
            images = images.clamp(0.0, 1.0)
        elif images.numel() and bool(((images < 0) | (images > 1)).any()):
            raise ValueError(f"{self.attack}: images must lie in [0, 1], got [{float(images.min()):g}, "
                             f"{float(images.max()):g}]; for normalised models: set_normalization_used")
        labels = self.get_target_label(images, labels) if self.targeted else labels
        generator = torch.Generator(device=images.device)  # seed=None: a fresh OS seed
        generator.manual_seed(generator.seed() if self.seed is None else self.seed)
        return self._attack(self.get_logits, images, labels, targeted=self.targeted, generator=generator)


class MIFPE(_CoreAttack):
    """PGD with the MIFPE loss CE(T·z/Δ, y) (eq. 7; eq. 8 targeted), by default the paper's protocol.

    Args:
        model: the ``torch.nn.Module`` to attack, on images in [0, 1] (or ``set_normalization_used``).
        eps, alpha, steps, random_start: as in torchattacks.PGD (eps may be per sample); alpha=None: 2·eps.
        norm: 'Linf' or 'L2'. temperature: MIFPE's T, the top logit margin after scaling.
        momentum, schedule, keep_best: the paper's protocol; None, 'constant', False: plain PGD.
        loss: 'mifpe', 'ce', 'cw', 'dlr', 'njs', 'hns', 'fnz-<n>' or loss(logits, labels, *, targeted).
        seed: the seed of the attack's own generator; None: a fresh one (the global RNG is never used).
    """
    def __init__(self, model: nn.Module, eps: float | Tensor = 8 / 255, alpha: float | None = None,
                 steps: int = 100, random_start: bool = True, *, norm: str = "Linf", temperature: float = 1.0,
                 momentum: float | None = 0.75, schedule: str = "linear", keep_best: bool = True,
                 loss: str | Loss = "mifpe", seed: int | None = 0) -> None:
        super().__init__(pgd, locals())


class MIFPEFGSM(_CoreAttack):
    """FGSM with the MIFPE loss: one step of size eps. Args: as in :class:`MIFPE`."""
    def __init__(self, model: nn.Module, eps: float | Tensor = 8 / 255, *, norm: str = "Linf",
                 temperature: float = 1.0, loss: str | Loss = "mifpe") -> None:
        super().__init__(fgsm, locals())


class PGDPP(_CoreAttack):
    """PGD++ (Alg. 1 NJS, Alg. 2 HNS): PGD on loss(β·z, y), by default as torchattacks.PGD.

    Args:
        beta: 'njs', 'hns', a number > 0 (1.0: torchattacks.PGD), ``NJS(...)``/``HNS(...)`` or a rule.
        loss: the loss that beta scales. Others: as in :class:`MIFPE`.
    """
    def __init__(self, model: nn.Module, eps: float | Tensor = 8 / 255, alpha: float = 2 / 255,
                 steps: int = 20, random_start: bool = True, *, norm: str = "Linf",
                 beta: str | float | Callable = "njs", loss: str | Loss = "ce", momentum: float | None = None,
                 schedule: str = "constant", keep_best: bool = False, seed: int | None = 0) -> None:
        super().__init__(pgd, locals())


class FGSMPP(_CoreAttack):
    """FGSM++: one FGSM step on loss(β·z, y). Args: as in :class:`PGDPP`."""
    def __init__(self, model: nn.Module, eps: float | Tensor = 8 / 255, *, norm: str = "Linf",
                 beta: str | float | Callable = "njs", loss: str | Loss = "ce") -> None:
        super().__init__(fgsm, locals())


class APGDMIFPE(_CoreAttack):
    """APGD (Croce & Hein 2020, Alg. 1) with the MIFPE loss in place of CE/DLR.

    Args:
        n_restarts: random restarts. rho: step-halving threshold. Others: as in :class:`MIFPE`.
    """
    def __init__(self, model: nn.Module, norm: str = "Linf", eps: float | Tensor = 8 / 255,
                 steps: int = 100, n_restarts: int = 1, seed: int | None = 0, loss: str | Loss = "mifpe", *,
                 rho: float = 0.75, temperature: float = 1.0, momentum: float = 0.75) -> None:
        super().__init__(apgd, locals())


class APGDTMIFPE(_CoreAttack):
    """Multi-targeted APGD with the targeted MIFPE loss (eq. 8), as torchattacks.APGDT with DLR.

    Args:
        n_classes: the n_classes − 1 top wrong classes are targeted in turn. Others: as in APGDMIFPE.
    """
    def __init__(self, model: nn.Module, norm: str = "Linf", eps: float | Tensor = 8 / 255, steps: int = 100,
                 n_restarts: int = 1, seed: int | None = 0, loss: str | Loss = "mifpe", *, rho: float = 0.75,
                 n_classes: int = 10, temperature: float = 1.0, momentum: float = 0.75) -> None:
        super().__init__(apgd, locals())


class MIFPEAutoAttack(_CoreAttack):
    """torchattacks.AutoAttack 'standard' (a ``MultiAttack``) with APGDMIFPE, APGDTMIFPE as APGD stages.

    Args:
        version: 'standard'. verbose: MultiAttack's, FAB's and Square's. steps: per APGD stage.
        seed: FAB's and Square's; None: the clock. Others: as in :class:`APGDTMIFPE`.
    """
    def __init__(self, model: nn.Module, norm: str = "Linf", eps: float = 8 / 255, version: str = "standard",
                 n_classes: int = 10, seed: int | None = None, verbose: bool = False, *,
                 loss: str | Loss = "mifpe", temperature: float = 1.0, steps: int = 100) -> None:
        super().__init__(None, locals())
        self.norm = norm = {"linf": "Linf", "l2": "L2"}[resolve_norm(norm)]  # as FAB and Square spell it
        stage = dict(norm=norm, eps=eps, steps=steps, seed=seed, loss=loss, temperature=temperature)
        host = dict(norm=norm, eps=eps, seed=time.time() if seed is None else seed, verbose=verbose)
        self._autoattack = _ta.MultiAttack([
            APGDMIFPE(model, **stage), APGDTMIFPE(model, n_classes=n_classes, **stage),
            _ta.FAB(model, multi_targeted=True, n_classes=n_classes, n_restarts=1, **host),
            _ta.Square(model, n_queries=5000, n_restarts=1, **host)], verbose=verbose)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:  # its one call: the MultiAttack
        return self._autoattack(images.detach().to(self.device), labels.detach().to(self.device))


_register._add_names(_ta)  # `torchattacks.MIFPE` & co., now that the module is complete
