"""AutoAttack adapter: the MIFPE loss (or any core loss) inside AutoAttack's own APGD and APGD-T.

AutoAttack has no loss plug-in; its APGD picks the loss from a string attribute (``apgd.loss``,
``'ce'`` or ``'dlr'``) and calls the bound methods ``dlr_loss(logits, y)`` /
``dlr_loss_targeted(logits, y)`` (the target class in ``self.y_target``) for the DLR branches. The
seam used here is a subclass of the host's ``APGDAttack`` / ``APGDAttack_targeted`` whose ``loss``
attribute always selects the DLR branch and whose DLR methods evaluate our loss instead. Everything
else -- the step-size schedule, momentum, checkpoints, restarts, target selection, seeding, FAB and
Square -- is the host's own code, run unchanged.

Two distributions are supported by their import names: upstream AutoAttack from git (``autoattack``,
``from autoattack import AutoAttack``; preferred when importable) and PyPI ``pyautoattack`` (the
``mifpe-plugins[autoattack]`` extra), whose ``AutoAttack`` has a keyword-only constructor and logs
through :mod:`logging`. Both share the same ``autopgd_base`` module.

Entry points: :func:`mifpe_autoattack` builds a ready AutoAttack, :func:`swap_loss` converts one the
user already built, :func:`mifpe_apgd` builds a single APGD / APGD-T, and
:func:`run_standard_evaluation` runs any AutoAttack with the caller's global RNG kept.

References
----------
MIFPE : Y. Yu, C.-Z. Xu, CVPR 2023: ``CE(T z / Delta_detach, y)`` (eq. 7), targeted
    ``-CE(T z / Delta_detach, y_t)`` (eq. 8).
PGD++ : K. Gupta, T. Ajanthan, AAAI 2022: NJS (Alg. 1) and HNS (Alg. 2) temperature scaling,
    ``loss="njs"`` / ``loss="hns"``.
AutoAttack : F. Croce, M. Hein, "Reliable evaluation of adversarial robustness with an ensemble of
    diverse parameter-free attacks", ICML 2020.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from ..losses import Loss, accepts_source_labels, get_loss, mifpe
from ._host import require

__all__ = [
    "mifpe_autoattack",
    "swap_loss",
    "stock_autoattack",
    "mifpe_apgd",
    "run_standard_evaluation",
    "AutoAttackLike",
    "DISTRIBUTIONS",
    "VERSIONS",
    "ATTACK_NAMES",
    "NORMS",
]

EXTRA = "autoattack"
#: Import names of the supported AutoAttack distributions, in order of preference.
DISTRIBUTIONS = ("autoattack", "pyautoattack")
#: AutoAttack versions (the host's ``version=`` argument).
VERSIONS = ("standard", "plus", "rand", "custom")
#: Attack names AutoAttack knows, for ``version="custom"``.
ATTACK_NAMES = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")
#: Threat models AutoAttack supports, in its spelling.
NORMS = ("Linf", "L2", "L1")

_NORM_ALIASES = {"linf": "Linf", "inf": "Linf", "l_inf": "Linf", "l2": "L2", "2": "L2", "l1": "L1", "1": "L1"}
_UPSTREAM_INSTALL = "pip install git+https://github.com/fra31/auto-attack"


def _importable_hosts() -> dict[str, ModuleType]:
    hosts = {}
    for name in DISTRIBUTIONS:
        try:
            module = importlib.import_module(name)
            importlib.import_module(f"{name}.autopgd_base")
        except ImportError:
            continue
        # Another project could own the name "autoattack"; only AutoAttack's layout counts.
        if hasattr(module, "AutoAttack"):
            hosts[name] = module
    return hosts


_HOSTS = _importable_hosts()
if not _HOSTS:
    # Neither distribution imports: let the shared helper raise the ImportError naming the extra.
    require("pyautoattack", EXTRA)


class AutoAttackLike(Protocol):
    """What this adapter returns: an AutoAttack object of either distribution."""

    model: Callable[[Tensor], Tensor]
    apgd: Any
    apgd_targeted: Any
    attacks_to_run: list[str]

    def run_standard_evaluation(self, x_orig: Tensor, y_orig: Tensor, *args: Any, **kwargs: Any) -> Any: ...


# ----------------------------------------------------------------------------------------------
# The caller's global RNG
# ----------------------------------------------------------------------------------------------


@contextmanager
def _global_rng_preserved() -> Iterator[None]:
    """Restore the caller's global torch RNG (CPU, and the current CUDA device) on exit.

    AutoAttack's APGD, FAB and Square call ``torch.random.manual_seed(seed)`` and
    ``torch.cuda.random.manual_seed(seed)`` at the start of every ``perturb``; the host needs that
    for its reproducibility, the caller's own random stream must not pay for it.
    """
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        yield


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a number > 0, got {type(temperature).__name__}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def _resolve_loss(loss: str | Loss, temperature: float) -> tuple[Loss | None, str]:
    """Resolve ``loss`` once: (callable, or ``None`` for AutoAttack's own DLR; a name for the log)."""
    temperature = _check_temperature(temperature)
    if isinstance(loss, str):
        key = loss.strip().lower()
        if key == "mifpe":
            return mifpe(temperature), f"mifpe(T={temperature:g})"
        if temperature != 1.0:
            raise ValueError(f"temperature applies to loss='mifpe' only, got loss={loss!r}")
        if key == "dlr":
            # The host's own formula (its 1e-12 floor, its targeted form), so that loss="dlr" is
            # stock APGD-DLR / APGD-T exactly.
            return None, "AutoAttack's DLR"
        return get_loss(key), key
    if callable(loss):
        if temperature != 1.0:
            raise ValueError("temperature applies to loss='mifpe' only; a callable loss carries its own")
        return loss, getattr(loss, "__name__", None) or repr(loss)
    raise TypeError(
        f"loss must be a name (e.g. 'mifpe', 'ce', 'dlr', 'njs', 'hns') or a callable "
        f"loss(logits, labels, *, targeted=False) -> (batch,), got {type(loss).__name__}"
    )


def _log(logger: Any, message: str) -> None:
    # pyautoattack logs through the logging module; upstream through its own Logger with .log(str).
    if logger is None:
        return
    if isinstance(logger, (logging.Logger, logging.LoggerAdapter)):
        logger.info(message)
    else:
        logger.log(message)


# ----------------------------------------------------------------------------------------------
# The APGD subclasses
# ----------------------------------------------------------------------------------------------


class _LossSeam:
    """Behaviour shared by both APGD subclasses; mixed in before the host's class.

    ``loss`` is a property: the host's code reads it to pick the loss branch and
    ``AutoAttack.run_standard_evaluation`` writes ``'ce'`` / ``'dlr'`` into it before every APGD
    run. Reading always gives the DLR branch (whose methods this class overrides); writing only
    records what the host asked for, for the log.
    """

    _dlr_branch: ClassVar[str]
    attack_loss: Loss | None
    attack_loss_label: str
    requested_loss: str
    announce: bool
    _bound_loss: Loss | None

    @property
    def loss(self) -> str:
        return self._dlr_branch

    @loss.setter
    def loss(self, name: str) -> None:
        self.__dict__["requested_loss"] = name

    def _configure(self, attack_loss: Loss | None, label: str, *, announce: bool = True) -> None:
        self.attack_loss = attack_loss
        self.attack_loss_label = label
        # Whether perturb logs which loss runs; upstream's logger prints whatever it is given, so
        # an AutoAttack built with verbose=False stays quiet.
        self.announce = announce
        self._bound_loss = attack_loss
        self._wants_source_labels = attack_loss is not None and accepts_source_labels(attack_loss)

    def attack_single_run(self, x: Tensor, y: Tensor, x_init: Tensor | None = None) -> Any:
        # PGD++'s NJS / HNS temperatures come from the model's Jacobian at the clean inputs of the
        # run (Alg. 1 l. 3, Alg. 2): bind once per run, before the host's first gradient.
        # AutoAttack calls this under torch.no_grad(), hence enable_grad.
        bind = getattr(self.attack_loss, "bind", None)
        if bind is not None:
            with torch.enable_grad():
                self._bound_loss = bind(self.model, x.detach(), y)
        return super().attack_single_run(x, y, x_init=x_init)

    def perturb(self, *args: Any, **kwargs: Any) -> Tensor:
        if self.announce:
            _log(getattr(self, "logger", None), self._announcement())
        with _global_rng_preserved():
            return super().perturb(*args, **kwargs)

    def _announcement(self) -> str:
        raise NotImplementedError


class _UntargetedSeam(_LossSeam):
    _dlr_branch = "dlr"

    def dlr_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Our loss, untargeted (MIFPE eq. 7 by default), per sample; the host maximises it."""
        if self.attack_loss is None:
            return super().dlr_loss(logits, labels)
        return self._bound_loss(logits, labels, targeted=False)

    def _announcement(self) -> str:
        requested = getattr(self, "requested_loss", "ce")
        attack = {"ce": "apgd-ce", "dlr": "apgd-dlr"}.get(requested, f"apgd ({requested})")
        return (
            f"{attack}: mifpe_plugins runs APGD on the loss {self.attack_loss_label} "
            f"in place of the host's '{requested}'"
        )


class _TargetedSeam(_LossSeam):
    _dlr_branch = "dlr-targeted"

    def dlr_loss_targeted(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Our loss towards ``self.y_target`` (MIFPE eq. 8 by default), signed so the host maximises.

        ``labels`` are the true classes; a loss that takes ``source_labels`` (the core's DLR)
        receives them.
        """
        if self.attack_loss is None:
            return super().dlr_loss_targeted(logits, labels)
        extra = {"source_labels": labels} if self._wants_source_labels else {}
        return self._bound_loss(logits, self.y_target, targeted=True, **extra)

    def _announcement(self) -> str:
        return (
            f"apgd-t: mifpe_plugins runs APGD-T on the loss {self.attack_loss_label} "
            "in place of the host's targeted DLR"
        )


class _CallerRngKept:
    """Mixed into the host's AutoAttack: its evaluations leave the caller's global RNG as it was."""

    def run_standard_evaluation(self, *args: Any, **kwargs: Any) -> Any:
        with _global_rng_preserved():
            return super().run_standard_evaluation(*args, **kwargs)

    def run_standard_evaluation_individual(self, *args: Any, **kwargs: Any) -> Any:
        with _global_rng_preserved():
            return super().run_standard_evaluation_individual(*args, **kwargs)


def _register(cls: type, name: str) -> type:
    # Registered under a unique module-level name so that instances pickle by reference.
    cls.__module__ = __name__
    cls.__qualname__ = name
    globals()[name] = cls
    return cls


@functools.cache
def _apgd_classes(distribution: str) -> tuple[type, type]:
    base = importlib.import_module(f"{distribution}.autopgd_base")
    suffix = "" if distribution == "autoattack" else "_" + distribution
    untargeted = type(
        "MIFPEAPGDAttack", (_UntargetedSeam, base.APGDAttack),
        {"__doc__": f"{distribution}'s APGDAttack with a mifpe_plugins loss (see mifpe_apgd)."},
    )
    targeted = type(
        "MIFPEAPGDAttackTargeted", (_TargetedSeam, base.APGDAttack_targeted),
        {"__doc__": f"{distribution}'s APGDAttack_targeted with a mifpe_plugins loss."},
    )
    return (
        _register(untargeted, "MIFPEAPGDAttack" + suffix),
        _register(targeted, "MIFPEAPGDAttackTargeted" + suffix),
    )


@functools.cache
def _autoattack_class(distribution: str) -> type:
    host = _HOSTS[distribution]
    suffix = "" if distribution == "autoattack" else "_" + distribution
    cls = type(
        "MIFPEAutoAttack", (_CallerRngKept, host.AutoAttack),
        {"__doc__": f"{distribution}'s AutoAttack that keeps the caller's global RNG (see mifpe_autoattack)."},
    )
    return _register(cls, "MIFPEAutoAttack" + suffix)


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def _pick_distribution(distribution: str | None) -> str:
    if distribution is None:
        return next(name for name in DISTRIBUTIONS if name in _HOSTS)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            "distribution must be None (prefer upstream), 'autoattack' (upstream AutoAttack from "
            f"git) or 'pyautoattack' (PyPI), got {distribution!r}"
        )
    if distribution not in _HOSTS:
        if distribution == "autoattack":
            raise ImportError(
                f"distribution='autoattack' needs upstream AutoAttack, which is not installed: "
                f"{_UPSTREAM_INSTALL} (or use distribution='pyautoattack')"
            )
        require(distribution, EXTRA)
    return distribution


def _check_norm(norm: str | float) -> str:
    if isinstance(norm, str) and norm in NORMS:
        return norm
    if isinstance(norm, bool):
        key = None
    elif isinstance(norm, (int, float)):
        key = "inf" if norm == math.inf else ("2" if norm == 2 else "1" if norm == 1 else None)
    else:
        key = norm.strip().lower() if isinstance(norm, str) else None
    if key not in _NORM_ALIASES:
        raise ValueError(f"norm must be one of {', '.join(map(repr, NORMS))} (AutoAttack's threat models), got {norm!r}")
    return _NORM_ALIASES[key]


def _check_eps(eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    return float(eps)


def _check_model(model: Callable[[Tensor], Tensor]) -> None:
    if not callable(model):
        raise TypeError(f"model must be a callable mapping inputs to logits (e.g. an nn.Module), got {type(model).__name__}")
    if isinstance(model, nn.Module):
        dtypes = {p.dtype for p in model.parameters() if p.dtype.is_floating_point}
        if dtypes - {torch.float32}:
            raise ValueError(
                f"model has {sorted(map(str, dtypes))} parameters, but AutoAttack evaluates in "
                "float32 (its perturb casts inputs with .float()): call model.float(), or use "
                "mifpe_plugins.apgd(model, x, y, loss='mifpe'), which runs in any dtype"
            )


def _check_attacks(version: str, attacks_to_run: Sequence[str] | None) -> list[str] | None:
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {', '.join(map(repr, VERSIONS))}, got {version!r}")
    if version != "custom":
        if attacks_to_run is not None:
            raise ValueError(
                f"attacks_to_run is only for version='custom'; version={version!r} chooses its own attacks"
            )
        return None
    if attacks_to_run is None or isinstance(attacks_to_run, str) or len(attacks_to_run) == 0:
        raise ValueError(
            "version='custom' needs attacks_to_run, a non-empty list of names from "
            f"{', '.join(map(repr, ATTACK_NAMES))}; got {attacks_to_run!r}"
        )
    unknown = [name for name in attacks_to_run if name not in ATTACK_NAMES]
    if unknown:
        raise ValueError(f"attacks_to_run: unknown attack(s) {unknown}; choose from {', '.join(map(repr, ATTACK_NAMES))}")
    return list(attacks_to_run)


def _default_device(model: Callable[[Tensor], Tensor]) -> torch.device:
    # The host's own defaults are 'cpu' (pyautoattack) and 'cuda' (upstream); the model knows best.
    if isinstance(model, nn.Module):
        for tensor in (*model.parameters(), *model.buffers()):
            return tensor.device
    return torch.device("cpu")


def _distribution_of(adversary: object, caller: str) -> str:
    for name, host in _HOSTS.items():
        if isinstance(adversary, host.AutoAttack):
            base = importlib.import_module(f"{name}.autopgd_base")
            members_ok = isinstance(getattr(adversary, "apgd", None), base.APGDAttack) and isinstance(
                getattr(adversary, "apgd_targeted", None), base.APGDAttack_targeted
            )
            if not members_ok:
                raise ValueError(
                    f"{caller}: this {name}.AutoAttack is of an unknown version: expected members "
                    "apgd (APGDAttack) and apgd_targeted (APGDAttack_targeted)"
                )
            if getattr(adversary, "is_tf_model", False):
                raise ValueError(
                    f"{caller}: AutoAttack built with is_tf_model=True computes its losses inside "
                    "the TensorFlow model, where no PyTorch loss can reach; use a PyTorch model"
                )
            return name
    kind = f"{type(adversary).__module__}.{type(adversary).__qualname__}"
    known = " or ".join(f"{name}.AutoAttack" for name in DISTRIBUTIONS)
    raise TypeError(f"{caller}: adversary must be an AutoAttack object ({known}), got {kind}")


# ----------------------------------------------------------------------------------------------
# Building and converting
# ----------------------------------------------------------------------------------------------


def _converted(member: Any, cls: type, attack_loss: Loss | None, label: str, announce: bool) -> Any:
    """A ``cls`` instance with every setting of ``member`` (restarts, targets, seed, logger, ...)."""
    state = dict(vars(member))
    for ours in ("attack_loss", "attack_loss_label", "announce", "_bound_loss", "_wants_source_labels"):
        state.pop(ours, None)
    requested = state.pop("loss", state.pop("requested_loss", None))
    # Built without __init__ so that settings the host derived or the user changed after
    # construction (n_iter_2, n_target_classes, use_largereps, ...) carry over as they are.
    converted = cls.__new__(cls)
    converted.__dict__.update(state)
    converted.loss = requested
    converted._configure(attack_loss, label, announce=announce)
    return converted


def _swap_members(adversary: Any, distribution: str, attack_loss: Loss | None, label: str) -> None:
    untargeted, targeted = _apgd_classes(distribution)
    announce = bool(getattr(adversary, "verbose", True))
    adversary.apgd = _converted(adversary.apgd, untargeted, attack_loss, label, announce)
    adversary.apgd_targeted = _converted(adversary.apgd_targeted, targeted, attack_loss, label, announce)


def _log_to_file(adversary: Any, log_path: str | os.PathLike[str]) -> None:
    """pyautoattack has no ``log_path``: give this adversary its own logger writing to the file.

    The logger is created directly (not through ``logging.getLogger``), so nothing global is
    configured: the shared ``'auto-attack'`` logger and the root logger are untouched. Warnings
    (the host's checks) still go to stderr, as they do with logging's defaults.
    """
    logger = logging.Logger(f"auto-attack:{os.fspath(log_path)}", level=logging.DEBUG)
    file_handler = logging.FileHandler(log_path, delay=True)
    file_handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(file_handler)
    warnings_handler = logging.StreamHandler()
    warnings_handler.setLevel(logging.WARNING)
    logger.addHandler(warnings_handler)
    adversary.logger = logger
    adversary.apgd.logger = logger
    adversary.apgd_targeted.logger = logger


def mifpe_autoattack(
    model: Callable[[Tensor], Tensor],
    *,
    norm: str | float = "Linf",
    eps: float = 8 / 255,
    version: str = "standard",
    loss: str | Loss = "mifpe",
    temperature: float = 1.0,
    device: str | torch.device | None = None,
    seed: int | None = 0,
    log_path: str | os.PathLike[str] | None = None,
    attacks_to_run: Sequence[str] | None = None,
    distribution: str | None = None,
    **kwargs: Any,
) -> AutoAttackLike:
    """AutoAttack whose APGD and APGD-T ascend the MIFPE loss (or another core loss).

    APGD-CE (and APGD-DLR in the ``"plus"`` / ``"rand"`` versions) runs APGD on
    ``CE(T z / Delta_detach, y)`` (MIFPE eq. 7) and APGD-T on ``-CE(T z / Delta_detach, y_t)``
    towards each of its target classes (MIFPE eq. 8), inside the host's own APGD loop; FAB and
    Square run unchanged on the unwrapped ``model``. This is the MIFPE paper's "AA with MIFPE"
    (Table 2).

    Parameters
    ----------
    model : callable
        Maps float32 inputs in [0, 1] to logits; used as given (call ``model.eval()`` first).
    norm : {"Linf", "L2", "L1"}
        Threat model (also ``"linf"``, ``"l2"``, ``"l1"``, ``float("inf")``, 2, 1).
    eps : float
        Radius of the threat model.
    version : {"standard", "plus", "rand", "custom"}
        The host's version; ``"custom"`` runs ``attacks_to_run``.
    loss : str or callable
        ``"mifpe"`` (default), any name of :func:`mifpe_plugins.get_loss` (``"ce"``, ``"cw"``,
        ``"njs"`` for PGD++ Alg. 1, ``"hns"`` for Alg. 2, ``"fnz-<n>"``), ``"dlr"`` for AutoAttack's
        own DLR (exactly the stock attack), or a callable ``loss(logits, labels, *,
        targeted=False) -> (batch,)``, larger = more adversarial. Used by APGD and APGD-T alike.
    temperature : float
        MIFPE's ``T`` (eq. 7; the paper uses T ~ 1); only with ``loss="mifpe"``.
    device : str or torch.device, optional
        Where the host moves inputs; default: the model's device (else CPU).
    seed : int or None
        The host's seed for every attack (``None``: the host's time-based seed).
    log_path : path, optional
        Log file. Upstream: its ``log_path``. pyautoattack: this adversary's log (debug lines
        included) goes to the file instead of the ``'auto-attack'`` logger; warnings also to stderr.
    attacks_to_run : list of str, optional
        With ``version="custom"`` only: names from :data:`ATTACK_NAMES`.
    distribution : {"autoattack", "pyautoattack"}, optional
        Which AutoAttack to use; default upstream ``autoattack`` if importable, else ``pyautoattack``.
    **kwargs
        Passed to the host's ``AutoAttack`` constructor (e.g. upstream ``verbose``).

    Returns
    -------
    AutoAttackLike
        An instance of a subclass of the host's ``AutoAttack``. Its ``run_standard_evaluation``
        (the host's signature and return value) restores the caller's global torch RNG afterwards.
        With fewer than 10 classes, set ``adversary.apgd_targeted.n_target_classes`` (and
        ``adversary.fab.n_target_classes``) to at most ``classes - 1``, as with the stock host.
    """
    name = _pick_distribution(distribution)
    _check_model(model)
    norm = _check_norm(norm)
    eps = _check_eps(eps)
    attacks = _check_attacks(version, attacks_to_run)
    attack_loss, label = _resolve_loss(loss, temperature)
    if kwargs.get("is_tf_model"):
        raise ValueError("is_tf_model=True: AutoAttack then computes its losses in TensorFlow, where no PyTorch loss can reach")
    if device is None:
        device = _default_device(model)
    adversary = _construct(_autoattack_class(name), name, model, norm, eps, version, attacks, device, seed, log_path, kwargs)
    _swap_members(adversary, name, attack_loss, label)
    return adversary


def _construct(
    cls: type, name: str, model: Callable[[Tensor], Tensor], norm: str, eps: float, version: str,
    attacks: list[str] | None, device: str | torch.device, seed: int | None,
    log_path: str | os.PathLike[str] | None, kwargs: dict[str, Any],
) -> Any:
    # The two distributions spell the attack list and the log differently.
    if name == "pyautoattack":
        adversary = cls(model, attacks=attacks, device=device, eps=eps, norm=norm, seed=seed, version=version, **kwargs)
        if log_path is not None:
            _log_to_file(adversary, log_path)
        return adversary
    return cls(
        model, norm=norm, eps=eps, seed=seed, version=version, attacks_to_run=attacks or [],
        device=device, log_path=None if log_path is None else os.fspath(log_path), **kwargs,
    )


def stock_autoattack(
    model: Callable[[Tensor], Tensor],
    *,
    norm: str | float = "Linf",
    eps: float = 8 / 255,
    version: str = "standard",
    device: str | torch.device | None = None,
    seed: int | None = 0,
    log_path: str | os.PathLike[str] | None = None,
    attacks_to_run: Sequence[str] | None = None,
    distribution: str | None = None,
    **kwargs: Any,
) -> AutoAttackLike:
    """The host's own, unmodified ``AutoAttack`` (the baseline of the MIFPE paper's Table 2).

    Same arguments and validation as :func:`mifpe_autoattack`, so that the two differ only in the
    loss; either distribution's constructor is called with its own spelling. Run it through
    :func:`run_standard_evaluation` to keep the caller's global RNG.
    """
    name = _pick_distribution(distribution)
    _check_model(model)
    norm = _check_norm(norm)
    eps = _check_eps(eps)
    attacks = _check_attacks(version, attacks_to_run)
    if device is None:
        device = _default_device(model)
    return _construct(_HOSTS[name].AutoAttack, name, model, norm, eps, version, attacks, device, seed, log_path, kwargs)


def swap_loss(adversary: object, loss: str | Loss = "mifpe", *, temperature: float = 1.0) -> AutoAttackLike:
    """Put our loss into an AutoAttack the caller already built, in place; return it.

    ``adversary.apgd`` and ``adversary.apgd_targeted`` are replaced by the adapter's subclasses
    carrying over every setting (restarts, iterations, target classes, seed, EOT, logger, ...);
    FAB, Square, the model and the attack list are untouched. Loss choices as in
    :func:`mifpe_autoattack` (MIFPE eq. 7 / eq. 8 by default).

    The adversary's own ``run_standard_evaluation`` still reseeds the global RNG (through FAB and
    Square); call :func:`run_standard_evaluation` (this module's) to keep the caller's.

    Raises
    ------
    TypeError
        ``adversary`` is not an ``autoattack.AutoAttack`` / ``pyautoattack.AutoAttack``.
    ValueError
        An AutoAttack of an unknown version (no APGD members), or one built for TensorFlow.
    """
    name = _distribution_of(adversary, "swap_loss")
    attack_loss, label = _resolve_loss(loss, temperature)
    _swap_members(adversary, name, attack_loss, label)
    return adversary  # type: ignore[return-value]


def mifpe_apgd(
    model: Callable[[Tensor], Tensor],
    *,
    eps: float,
    norm: str | float = "Linf",
    loss: str | Loss = "mifpe",
    temperature: float = 1.0,
    targeted: bool = False,
    seed: int | None = 0,
    device: str | torch.device | None = None,
    distribution: str | None = None,
    **kwargs: Any,
) -> Any:
    """One AutoAttack APGD (or APGD-T with ``targeted=True``) on our loss.

    Untargeted: APGD ascends ``loss(logits, y)`` (MIFPE eq. 7 by default). Targeted: the host's
    APGD-T picks its ``n_target_classes`` targets and ascends ``loss(logits, y_t, targeted=True)``
    (MIFPE eq. 8 by default). ``loss="ce"`` and ``loss="dlr"`` reproduce the stock
    ``APGDAttack(loss='ce' / 'dlr')`` and ``APGDAttack_targeted`` bit for bit.

    Parameters
    ----------
    model, eps, norm, loss, temperature, seed, device, distribution
        As in :func:`mifpe_autoattack`; ``device=None`` lets the host use the inputs' device.
    targeted : bool
        Build APGD-T (``APGDAttack_targeted``) instead of APGD.
    **kwargs
        The host's constructor arguments: ``n_iter``, ``n_restarts``, ``rho``, ``eot_iter``,
        ``n_target_classes`` (targeted), ``use_largereps``, ``verbose``, ``logger``.

    Returns
    -------
    object
        An instance of a subclass of the host's ``APGDAttack`` / ``APGDAttack_targeted``; call
        ``.perturb(x, y)``. ``perturb`` restores the caller's global RNG afterwards.
    """
    name = _pick_distribution(distribution)
    _check_model(model)
    norm = _check_norm(norm)
    eps = _check_eps(eps)
    attack_loss, label = _resolve_loss(loss, temperature)
    if kwargs.get("is_tf_model"):
        raise ValueError("is_tf_model=True: AutoAttack then computes its losses in TensorFlow, where no PyTorch loss can reach")
    untargeted, targeted_cls = _apgd_classes(name)
    cls = targeted_cls if targeted else untargeted
    attack = cls(model, eps=eps, norm=norm, seed=seed, device=device, **kwargs)
    attack._configure(attack_loss, label)
    return attack


def run_standard_evaluation(adversary: object, inputs: Tensor, labels: Tensor, /, **kwargs: Any) -> Any:
    """``adversary.run_standard_evaluation(inputs, labels, **kwargs)`` keeping the caller's global RNG.

    For any AutoAttack of either distribution (with or without :func:`swap_loss`). Returns what the
    host returns: pyautoattack ``(x_adv, y_adv)``; upstream ``x_adv`` (``(x_adv, y_adv)`` with
    ``return_labels=True``). Keyword names are the host's (pyautoattack ``batch_size``, upstream ``bs``).
    """
    _distribution_of(adversary, "run_standard_evaluation")
    with _global_rng_preserved():
        return adversary.run_standard_evaluation(inputs, labels, **kwargs)  # type: ignore[attr-defined]
