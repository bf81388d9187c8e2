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
:func:`run_standard_evaluation` runs any AutoAttack of either distribution with one spelling and one
result, keeping the caller's global RNG. :func:`describe_distribution` names the distribution and
version that runs, for result files.

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
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from ..attacks._common import check_eps, check_inputs, check_positive_int
from ..losses import Loss, accepts_source_labels, get_loss, mifpe
from ._host import require

__all__ = [
    "mifpe_autoattack",
    "swap_loss",
    "stock_autoattack",
    "mifpe_apgd",
    "run_standard_evaluation",
    "default_distribution",
    "describe_distribution",
    "AutoAttackLike",
    "DISTRIBUTIONS",
    "DOMAIN",
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
#: AutoAttack's input domain: its attacks clip every point to [0, 1], and it has no bounds option.
DOMAIN = (0.0, 1.0)

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


class _QuietUpstreamLog:
    """Upstream's ``Logger`` interface (``log(str)``) for an AutoAttack built with ``verbose=False``.

    Upstream's own Logger prints every line to stdout, and its checks (randomised or dynamic
    defence, too many target classes, zero gradients, Square beating the rest) log their warnings
    whatever ``verbose`` says. Here a warning goes where pyautoattack sends it, the
    ``'auto-attack'`` logger (stderr unless logging is configured), and nothing reaches stdout;
    with a ``log_path`` every line is also appended to that file, as upstream does.
    """

    def __init__(self, log_path: str | None) -> None:
        self.log_path = log_path

    def log(self, message: str) -> None:
        if self.log_path is not None:
            with open(self.log_path, "a") as file:
                file.write(message + "\n")
        logger = logging.getLogger("auto-attack")
        if message.startswith("Warning: "):
            logger.warning(message.removeprefix("Warning: "))
        else:
            logger.debug(message)


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None


class _Discard:
    """A logger that drops every message, whatever method the host calls on it."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return _ignore


_DISCARD = _Discard()
#: The losses after whose first gradient the host's APGD runs ``check_zero_gradients``.
_ZERO_GRADIENT_CHECKED = ("dlr", "dlr-targeted")


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
        with self._zero_gradient_check_as_stock():
            return super().attack_single_run(x, y, x_init=x_init)

    @contextmanager
    def _zero_gradient_check_as_stock(self) -> Iterator[None]:
        """Let the host report its zero-gradient check only where the stock attack runs it.

        After its first gradient the host calls ``check_zero_gradients`` when ``self.loss`` names
        a DLR branch, which our ``loss`` property always does (that branch is the seam). Stock
        APGD-CE never runs the check, so an APGD-CE slot with our loss would warn where the stock
        attack is silent. Within ``attack_single_run`` both distributions use ``self.logger`` for
        that report alone, so where the host asked for a loss it does not check, the run gets a
        logger that drops the report.
        """
        if getattr(self, "requested_loss", self._dlr_branch) in _ZERO_GRADIENT_CHECKED:
            yield
            return
        logger = getattr(self, "logger", None)
        self.logger = _DISCARD
        try:
            yield
        finally:
            self.logger = logger

    def perturb(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        _check_eps(getattr(self, "eps", None))
        _check_inputs(x)
        if self.announce:
            _log(getattr(self, "logger", None), self._announcement())
        with _global_rng_preserved():
            return super().perturb(x, *args, **kwargs)

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
    """Mixed into the host's AutoAttack: its evaluations leave the caller's global RNG as it was,
    and check the radius and the inputs first."""

    def run_standard_evaluation(self, x_orig: Tensor, y_orig: Tensor, *args: Any, **kwargs: Any) -> Any:
        _check_eps(getattr(self, "epsilon", None), "adversary.epsilon")
        _check_inputs(x_orig)
        with _global_rng_preserved():
            return super().run_standard_evaluation(x_orig, y_orig, *args, **kwargs)

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


# One sample in float64: the core's check_eps then returns eps exactly, without float32 rounding.
_ONE_SAMPLE = torch.zeros(1, 1, dtype=torch.float64)


def _check_eps(eps: object, name: str = "eps") -> float:
    """The core's rule for a radius (a finite number >= 0), and > 0: AutoAttack has one radius for
    all samples, and at 0 it would only re-measure clean accuracy at the full cost."""
    try:
        value = check_eps(eps, _ONE_SAMPLE, name=name)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = None
    if value is None or (isinstance(eps, Tensor) and eps.dim() != 0) or not bool(value[0] > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {eps!r}")
    return float(value[0])


def _check_inputs(inputs: Tensor) -> None:
    """The core's input checks, with AutoAttack's fixed domain [0, 1] as the bounds."""
    check_inputs(inputs, None)  # a floating tensor (batch, ...), finite
    try:
        check_inputs(inputs, DOMAIN)
    except ValueError:
        low, high = float(inputs.min()), float(inputs.max())
        raise ValueError(
            f"inputs must lie in [0, 1], AutoAttack's input domain (its attacks clip to it; it has "
            f"no bounds option), got values in [{low:g}, {high:g}]: rescale the inputs to [0, 1] "
            "and move the scaling (e.g. / 255, normalisation) into the model"
        ) from None


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
    _set_logger(adversary, logger)


def _set_logger(adversary: Any, logger: Any) -> None:
    # The AutoAttack and its APGD members share one logger (the host passes its own to both).
    adversary.logger = logger
    adversary.apgd.logger = logger
    adversary.apgd_targeted.logger = logger


def mifpe_autoattack(
    model: Callable[[Tensor], Tensor],
    norm: str | float = "Linf",
    eps: float = 8 / 255,
    *,
    version: str = "standard",
    loss: str | Loss = "mifpe",
    temperature: float = 1.0,
    device: str | torch.device | None = None,
    seed: int | None = 0,
    verbose: bool = True,
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
        Threat model (also ``"linf"``, ``"l2"``, ``"l1"``, ``float("inf")``, 2, 1). Like ``eps``,
        positional as in the host's ``AutoAttack(model, norm, eps)``.
    eps : float
        Radius of the threat model, a finite number > 0.
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
    verbose : bool
        ``False``: no progress log and no line naming the loss, for both distributions (upstream's
        own ``verbose``; pyautoattack's attribute of that name). The hosts' check warnings are
        still reported: pyautoattack's on its ``'auto-attack'`` logger, and upstream's, which it
        prints to stdout whatever ``verbose`` says, there too (stderr unless logging is configured).
    log_path : path, optional
        Log file. Upstream: its ``log_path``. pyautoattack: this adversary's log (debug lines
        included) goes to the file instead of the ``'auto-attack'`` logger; warnings also to stderr.
    attacks_to_run : list of str, optional
        With ``version="custom"`` only: names from :data:`ATTACK_NAMES`.
    distribution : {"autoattack", "pyautoattack"}, optional
        Which AutoAttack to use; default upstream ``autoattack`` if importable, else ``pyautoattack``
        (:func:`default_distribution`).
    **kwargs
        Passed to the host's ``AutoAttack`` constructor.

    Returns
    -------
    AutoAttackLike
        An instance of a subclass of the host's ``AutoAttack``. Run it with this module's
        :func:`run_standard_evaluation` (one spelling and result for both distributions); its own
        ``run_standard_evaluation`` has the host's signature and return value. Both restore the
        caller's global torch RNG afterwards and reject inputs outside [0, 1].
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
    adversary = _construct(
        _autoattack_class(name), name, model, norm, eps, version, attacks, device, seed, verbose, log_path, kwargs,
    )
    _swap_members(adversary, name, attack_loss, label)
    return adversary


def _construct(
    cls: type, name: str, model: Callable[[Tensor], Tensor], norm: str, eps: float, version: str,
    attacks: list[str] | None, device: str | torch.device, seed: int | None, verbose: bool,
    log_path: str | os.PathLike[str] | None, kwargs: dict[str, Any],
) -> Any:
    # The two distributions spell the attack list, verbosity and the log differently.
    if name == "pyautoattack":
        adversary = cls(model, attacks=attacks, device=device, eps=eps, norm=norm, seed=seed, version=version, **kwargs)
        # No constructor argument: its evaluation reads the attribute before every log line.
        adversary.verbose = verbose
        if log_path is not None:
            _log_to_file(adversary, log_path)
        return adversary
    path = None if log_path is None else os.fspath(log_path)
    adversary = cls(
        model, norm=norm, eps=eps, seed=seed, verbose=verbose, version=version, attacks_to_run=attacks or [],
        device=device, log_path=path, **kwargs,
    )
    if not verbose:
        _set_logger(adversary, _QuietUpstreamLog(path))
    return adversary


def stock_autoattack(
    model: Callable[[Tensor], Tensor],
    norm: str | float = "Linf",
    eps: float = 8 / 255,
    *,
    version: str = "standard",
    device: str | torch.device | None = None,
    seed: int | None = 0,
    verbose: bool = True,
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
    return _construct(
        _HOSTS[name].AutoAttack, name, model, norm, eps, version, attacks, device, seed, verbose, log_path, kwargs,
    )


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
    _check_eps(getattr(adversary, "epsilon", None), "adversary.epsilon")
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
    ``APGDAttack(loss='ce' / 'dlr')`` and ``APGDAttack_targeted`` bit for bit, the host's
    zero-gradient check included (run by APGD-DLR and APGD-T, not by APGD-CE).

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
    if targeted:
        attack = targeted_cls(model, eps=eps, norm=norm, seed=seed, device=device, **kwargs)
    else:
        # What the host is told it runs: its own DLR is stock APGD-DLR (checks and log included);
        # any other loss stands in for APGD-CE's.
        host_loss = "dlr" if attack_loss is None else "ce"
        attack = untargeted(model, eps=eps, norm=norm, seed=seed, device=device, loss=host_loss, **kwargs)
    attack._configure(attack_loss, label)
    return attack


def run_standard_evaluation(
    adversary: object,
    inputs: Tensor,
    labels: Tensor,
    /,
    *,
    batch_size: int = 250,
    state_path: str | os.PathLike[str] | None = None,
) -> tuple[Tensor, Tensor]:
    """Run any AutoAttack of either distribution with one spelling and one result.

    The hosts' own methods differ: pyautoattack's ``run_standard_evaluation(x, y, *,
    batch_size=250, state_path=None)`` returns ``(x_adv, y_adv)``; upstream's
    ``run_standard_evaluation(x, y, bs=250, return_labels=False, state_path=None)`` returns
    ``x_adv`` alone unless ``return_labels=True``. This function calls either with its own
    spelling, so code written against it does not change with the distribution installed.

    Parameters
    ----------
    adversary : AutoAttackLike
        Any AutoAttack of either distribution (from :func:`mifpe_autoattack`,
        :func:`stock_autoattack`, or built by the caller, with or without :func:`swap_loss`).
    inputs : Tensor
        Clean inputs in [0, 1] (AutoAttack's domain; anything else is rejected).
    labels : Tensor
        True classes.
    batch_size : int
        Samples per attack call (pyautoattack ``batch_size``, upstream ``bs``).
    state_path : path, optional
        The hosts' ``state_path``: resume from / record to an evaluation state file.

    Returns
    -------
    x_adv : Tensor
        The adversarial examples (the clean input where no attack succeeded).
    y_adv : Tensor
        The model's predicted classes at ``x_adv``.

    The caller's global torch RNG is restored afterwards (the hosts reseed it).
    """
    name = _distribution_of(adversary, "run_standard_evaluation")
    check_positive_int(batch_size, "batch_size")
    _check_eps(getattr(adversary, "epsilon", None), "adversary.epsilon")
    _check_inputs(inputs)
    path = None if state_path is None else Path(state_path)  # the hosts call state_path.exists()
    if name == "pyautoattack":
        spelling: dict[str, Any] = {"batch_size": batch_size, "state_path": path}
    else:
        spelling = {"bs": batch_size, "return_labels": True, "state_path": path}
    with _global_rng_preserved():
        x_adv, y_adv = adversary.run_standard_evaluation(inputs, labels, **spelling)  # type: ignore[attr-defined]
    return x_adv, y_adv


# ----------------------------------------------------------------------------------------------
# Provenance
# ----------------------------------------------------------------------------------------------


def default_distribution() -> str:
    """The import name of the AutoAttack used when ``distribution`` is not given: upstream
    ``"autoattack"`` when importable, else ``"pyautoattack"``."""
    return _pick_distribution(None)


def describe_distribution(distribution: str | None = None) -> str:
    """Which AutoAttack runs, and its version, for result files.

    Returns e.g. ``"pyautoattack 0.2.0"``, ``"autoattack (upstream, git 0.1, commit a39220048b3c)"``
    (the commit when pip recorded one, as ``pip install git+...`` does) or ``"autoattack
    (upstream, git unknown)"`` when no installed metadata names a version.
    """
    name = _pick_distribution(distribution)
    version = _installed_version(name)
    if name == "pyautoattack":
        return f"pyautoattack {version}"
    commit = _vcs_commit(name)
    return f"autoattack (upstream, git {version}" + (f", commit {commit[:12]})" if commit else ")")


def _installed_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        # Imported from a source tree (e.g. on PYTHONPATH) without installed metadata.
        return str(getattr(_HOSTS[name], "__version__", "unknown"))


def _vcs_commit(name: str) -> str | None:
    """The commit pip recorded (PEP 610 ``direct_url.json``) for a VCS install, else ``None``."""
    try:
        record = metadata.distribution(name).read_text("direct_url.json")
        commit = json.loads(record or "{}").get("vcs_info", {}).get("commit_id")
    except (metadata.PackageNotFoundError, ValueError, AttributeError):
        return None
    return commit if isinstance(commit, str) else None
