"""AutoAttack adapter: a core loss (MIFPE, Yu & Xu, CVPR 2023; PGD++'s NJS / HNS) inside AutoAttack's own
APGD and APGD-T, for upstream ``autoattack`` (git) and PyPI ``pyautoattack``. See docs/adapters/autoattack.md."""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..attacks._common import (
    bind_loss,
    check_eps,
    check_inputs,
    check_positive_int,
    other_float_dtypes,
    resolve_norm,
)
from ..losses import Loss, accepts_source_labels, resolve_loss
from ._host import require

__all__ = ["mifpe_autoattack", "swap_loss", "mifpe_apgd", "run_standard_evaluation", "default_distribution",
           "describe_distribution", "DISTRIBUTIONS", "DOMAIN", "VERSIONS", "ATTACK_NAMES", "NORMS"]

DISTRIBUTIONS = ("autoattack", "pyautoattack")  #: import names, in order of preference
VERSIONS = ("standard", "plus", "rand", "custom")
ATTACK_NAMES = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")  #: for version="custom"
NORMS = ("Linf", "L2", "L1")
DOMAIN = (0.0, 1.0)  #: AutoAttack clips every point to [0, 1] and has no bounds option
Model = Callable[[Tensor], Tensor]

_HOSTS: dict[str, Any] = {}  # the importable distributions
for _name in DISTRIBUTIONS:
    with contextlib.suppress(ImportError):
        importlib.import_module(f"{_name}.autopgd_base")  # the package, and AutoAttack's APGD module
        if hasattr(_module := importlib.import_module(_name), "AutoAttack"):  # another project may own "autoattack"
            _HOSTS[_name] = _module
if not _HOSTS:
    require("pyautoattack", "autoattack")  # raises the ImportError naming the extra


def _rng_kept() -> Any:  # the hosts reseed the global RNG in every perturb; the caller's is restored
    return torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else [])


class _Log:
    """Upstream's ``log(str)`` and pyautoattack's ``debug``/``info``/``warning``, sent to the
    ``'auto-attack'`` logger and, with ``path``, to that file; ``drop`` discards everything."""

    def __init__(self, path: str | None = None, *, drop: bool = False) -> None:
        self.path, self.drop = path, drop

    def _emit(self, message: str, level: int) -> None:
        if self.drop:
            return
        if self.path is not None:
            with open(self.path, "a") as file:
                file.write(message + "\n")
        logging.getLogger("auto-attack").log(level, message.removeprefix("Warning: "))

    def log(self, message: str) -> None:  # upstream's checks start with "Warning: "
        self._emit(message, logging.WARNING if message.startswith("Warning: ") else logging.DEBUG)

    debug = functools.partialmethod(_emit, level=logging.DEBUG)
    info = functools.partialmethod(_emit, level=logging.INFO)
    warning = functools.partialmethod(_emit, level=logging.WARNING)


class _Seam:
    """Before the host's APGD class: reading ``loss`` gives the DLR ``branch``, whose methods run our
    loss; what the host writes there (run_standard_evaluation sets 'ce' / 'dlr') is kept for the log."""

    branch: str

    @property
    def loss(self) -> str:
        return self.branch

    @loss.setter
    def loss(self, name: str) -> None:
        self.__dict__["requested_loss"] = name

    def _configure(self, attack_loss: Loss | None, label: str, *, announce: bool = True) -> None:
        if self.is_tf_model:
            raise ValueError("is_tf_model=True: AutoAttack then computes its losses in TensorFlow, where no PyTorch loss can reach")
        self.attack_loss, self.attack_loss_label, self.announce, self._bound = attack_loss, label, announce, attack_loss
        self._source_labels = attack_loss is not None and accepts_source_labels(attack_loss)

    def attack_single_run(self, x: Tensor, y: Tensor, x_init: Tensor | None = None) -> Any:
        targeted, logger = self.branch == "dlr-targeted", self.logger
        if self.attack_loss is not None:  # NJS / HNS bind at the clean inputs of every run; one probe
            labels = self.y_target if targeted else y
            self._bound, _ = bind_loss(self.model, self.attack_loss, x.detach(), labels, targeted=targeted)
        if self.requested_loss not in ("dlr", "dlr-targeted"):  # the stock attack checks zero gradients only there
            self.logger = _Log(drop=True)
        try:
            return super().attack_single_run(x, y, x_init=x_init)
        finally:
            self.logger = logger

    def dlr_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return super().dlr_loss(logits, labels) if self.attack_loss is None else self._bound(logits, labels)

    def dlr_loss_targeted(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.attack_loss is None:
            return super().dlr_loss_targeted(logits, labels)
        extra = {"source_labels": labels} if self._source_labels else {}
        return self._bound(logits, self.y_target, targeted=True, **extra)  # signed: the host negates nothing

    def perturb(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        _check(self.eps, x)
        if self.announce and self.logger is not None:
            asked, targeted = self.requested_loss, self.branch == "dlr-targeted"
            attack = {"ce": "apgd-ce", "dlr": "apgd-dlr", "dlr-targeted": "apgd-t"}.get(asked, f"apgd ({asked})")
            message = (f"{attack}: mifpe_plugins runs APGD{'-T' if targeted else ''} on the loss {self.attack_loss_label}"
                       f" in place of the host's {'targeted DLR' if targeted else repr(asked)}")
            (self.logger.info if hasattr(self.logger, "info") else self.logger.log)(message)
        with _rng_kept():
            return super().perturb(x, *args, **kwargs)


class _RngKept:
    """Before the host's AutoAttack: checks radius and inputs, keeps the caller's global RNG (also for
    run_standard_evaluation_individual, which calls this method)."""

    def run_standard_evaluation(self, x_orig: Tensor, y_orig: Tensor, *args: Any, **kwargs: Any) -> Any:
        _check(self.epsilon, x_orig, "adversary.epsilon")
        with _rng_kept():
            return super().run_standard_evaluation(x_orig, y_orig, *args, **kwargs)


@functools.cache
def _classes(name: str) -> tuple[type, ...]:
    """APGD, APGD-T and AutoAttack of ``name`` with our mixins, registered here (instances pickle)."""
    base, made = importlib.import_module(f"{name}.autopgd_base"), []
    for new, mixin, host, attrs in (("MIFPEAPGDAttack", _Seam, base.APGDAttack, {"branch": "dlr"}),
                                    ("MIFPEAPGDAttackTargeted", _Seam, base.APGDAttack_targeted, {"branch": "dlr-targeted"}),
                                    ("MIFPEAutoAttack", _RngKept, _HOSTS[name].AutoAttack, {})):
        qualname = new + ("" if name == "autoattack" else "_" + name)
        globals()[qualname] = cls = type(new, (mixin, host), {**attrs, "__module__": __name__, "__qualname__": qualname})
        made.append(cls)
    return tuple(made)


def _pick(distribution: str | None) -> str:
    if distribution is None:
        return next(name for name in DISTRIBUTIONS if name in _HOSTS)
    if distribution not in DISTRIBUTIONS:
        raise ValueError("distribution must be None (prefer upstream), 'autoattack' (upstream AutoAttack from git) or "
                         f"'pyautoattack' (PyPI), got {distribution!r}")
    if distribution == "autoattack" and distribution not in _HOSTS:
        raise ImportError("distribution='autoattack' needs upstream AutoAttack, which is not installed: pip install "
                          "git+https://github.com/fra31/auto-attack (or use distribution='pyautoattack')")
    return distribution if distribution in _HOSTS else require(distribution, "autoattack").__name__


def _check(eps: object, inputs: Tensor | None = None, name: str = "eps") -> float:
    """The core's rules: one radius, here > 0 (0 only re-measures accuracy); inputs within [0, 1]."""
    try:
        value = float(check_eps(eps, torch.zeros(1, 1, dtype=torch.float64), name=name)[0])
    except (TypeError, ValueError):
        value = 0.0
    if not value > 0 or (isinstance(eps, Tensor) and eps.dim() != 0):
        raise ValueError(f"{name} must be a finite number > 0, got {eps!r}")
    if inputs is not None:
        check_inputs(inputs, None)  # a finite floating tensor (batch, ...)
        try:
            check_inputs(inputs, DOMAIN)
        except ValueError:
            raise ValueError(f"inputs must lie in [0, 1], AutoAttack's input domain (its attacks clip to it; it has no "
                             f"bounds option), got values in [{float(inputs.min()):g}, {float(inputs.max()):g}]: rescale "
                             "the inputs to [0, 1] and move the scaling (e.g. / 255, normalisation) into the model") from None
    return value


def _checked(model: Model, norm: str | float, eps: object) -> tuple[str, float]:
    """What both builders check: a float32 model, the threat model in AutoAttack's spelling."""
    if not callable(model):
        raise TypeError(f"model must be a callable mapping inputs to logits (e.g. an nn.Module), got {type(model).__name__}")
    others = other_float_dtypes(model) if isinstance(model, nn.Module) else []
    if others:
        raise ValueError(f"model has {others} parameters, but AutoAttack evaluates in float32 (its "
                         "perturb casts inputs with .float()): call model.float(), or use mifpe_plugins.apgd(model, x, "
                         "y, loss='mifpe'), which runs in any dtype")
    if not isinstance(norm, bool) and (norm == 1 or str(norm).strip().lower() in ("l1", "1")):
        return "L1", _check(eps)  # AutoAttack's third threat model; the core has linf and l2
    try:
        norm = {"linf": "Linf", "l2": "L2"}[resolve_norm(norm)]
    except ValueError:
        raise ValueError(f"norm must be one of 'Linf', 'L2', 'L1' (AutoAttack's threat models), got {norm!r}") from None
    return norm, _check(eps)


def _attacks(version: str, attacks: Sequence[str] | None) -> list[str] | None:
    names = ", ".join(map(repr, ATTACK_NAMES))
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {', '.join(map(repr, VERSIONS))}, got {version!r}")
    if version != "custom" and attacks is not None:
        raise ValueError(f"attacks_to_run is only for version='custom'; version={version!r} chooses its own attacks")
    if version == "custom" and (attacks is None or isinstance(attacks, str) or not attacks):
        raise ValueError(f"version='custom' needs attacks_to_run, a non-empty list of names from {names}; got {attacks!r}")
    if unknown := [attack for attack in attacks or () if attack not in ATTACK_NAMES]:
        raise ValueError(f"attacks_to_run: unknown attack(s) {unknown}; choose from {names}")
    return None if attacks is None else list(attacks)


def _resolve(loss: str | Loss, temperature: float | None) -> tuple[Loss | None, str]:
    """The core's loss and its name for the log; ``None`` for "dlr", the host's own formula."""
    key = loss.strip().lower() if isinstance(loss, str) else None
    if key == "dlr" and temperature is None:
        return None, "AutoAttack's DLR"
    resolved = resolve_loss(loss, temperature=temperature)
    return resolved, key if key not in (None, "mifpe") else getattr(resolved, "__name__", None) or repr(resolved)


def _distribution_of(adversary: Any, caller: str) -> str:
    for name, host in _HOSTS.items():
        if isinstance(adversary, host.AutoAttack):
            base = importlib.import_module(f"{name}.autopgd_base")
            if not (isinstance(getattr(adversary, "apgd", None), base.APGDAttack)
                    and isinstance(getattr(adversary, "apgd_targeted", None), base.APGDAttack_targeted)):
                raise ValueError(f"{caller}: this {name}.AutoAttack is of an unknown version: expected members apgd "
                                 "(APGDAttack) and apgd_targeted (APGDAttack_targeted)")
            return name
    raise TypeError(f"{caller}: adversary must be an AutoAttack object (autoattack.AutoAttack or pyautoattack.AutoAttack), "
                    f"got {type(adversary).__module__}.{type(adversary).__qualname__}")


def _swap(adversary: Any, name: str, attack_loss: Loss | None, label: str) -> None:
    for member, cls in zip(("apgd", "apgd_targeted"), _classes(name), strict=False):
        state = dict(vars(getattr(adversary, member)))  # every setting, also ones changed after construction
        requested = state.pop("loss", state.pop("requested_loss", None))
        converted = cls.__new__(cls)
        converted.__dict__.update(state)
        converted.loss = requested
        converted._configure(attack_loss, label, announce=bool(getattr(adversary, "verbose", True)))
        setattr(adversary, member, converted)


def mifpe_autoattack(model: Model, norm: str | float = "Linf", eps: float = 8 / 255, *, version: str = "standard",
                     loss: str | Loss | None = "mifpe", temperature: float | None = None, device: Any = None,
                     seed: int | None = 0, verbose: bool = True, log_path: str | os.PathLike[str] | None = None,
                     attacks_to_run: Sequence[str] | None = None, distribution: str | None = None, **kwargs: Any) -> Any:
    """AutoAttack whose APGD and APGD-T ascend the MIFPE loss (eq. 7; eq. 8 in APGD-T).

    Args:
        model: maps float32 inputs in [0, 1] to logits; FAB and Square get it unwrapped.
        norm, eps: the threat model ("Linf", "L2", "L1"; also "linf", 2, ...), radius > 0.
        version: "standard", "plus", "rand", or "custom" with attacks_to_run (ATTACK_NAMES).
        loss: "mifpe", a name of mifpe_plugins.get_loss, "dlr" (the host's DLR) or a callable;
            None: the host's own, unmodified AutoAttack (the Table-2 baseline).
        temperature: MIFPE's T (1 if None; "mifpe" only).
        device, seed: the host's; default the model's device and 0.
        verbose, log_path: False keeps both distributions off stdout; a log file.
        distribution: "autoattack" or "pyautoattack"; default: default_distribution().
        **kwargs: the host's AutoAttack constructor arguments.
    """
    name = _pick(distribution)
    norm, eps = _checked(model, norm, eps)
    attacks = _attacks(version, attacks_to_run)
    attack_loss, label = (None, "") if loss is None else _resolve(loss, temperature)
    if device is None:
        tensors = [*model.parameters(), *model.buffers()] if isinstance(model, nn.Module) else []
        device = tensors[0].device if tensors else torch.device("cpu")
    cls = _HOSTS[name].AutoAttack if loss is None else _classes(name)[2]
    path = None if log_path is None else os.fspath(log_path)
    if name == "pyautoattack":
        adversary = cls(model, attacks=attacks, device=device, eps=eps, norm=norm, seed=seed, version=version, **kwargs)
        adversary.verbose = verbose  # no constructor argument; read before every log line
        log = None if path is None else _Log(path)
    else:  # upstream prints its checks even when not verbose
        adversary = cls(model, norm=norm, eps=eps, seed=seed, verbose=verbose, version=version,
                        attacks_to_run=attacks or [], device=device, log_path=path, **kwargs)
        log = None if verbose else _Log(path)
    if log is not None:
        adversary.logger = adversary.apgd.logger = adversary.apgd_targeted.logger = log
    if loss is not None:
        _swap(adversary, name, attack_loss, label)
    return adversary


def swap_loss(adversary: Any, loss: str | Loss = "mifpe", *, temperature: float | None = None) -> Any:
    """Put our loss into the APGD and APGD-T of an AutoAttack you built, in place; return it.

    Args:
        adversary: an ``autoattack.AutoAttack`` or ``pyautoattack.AutoAttack``.
        loss, temperature: as in mifpe_autoattack.
    """
    name = _distribution_of(adversary, "swap_loss")
    _check(adversary.epsilon, name="adversary.epsilon")
    _swap(adversary, name, *_resolve(loss, temperature))
    return adversary


def mifpe_apgd(model: Model, *, eps: float, norm: str | float = "Linf", loss: str | Loss = "mifpe",
               temperature: float | None = None, targeted: bool = False, seed: int | None = 0, device: Any = None,
               distribution: str | None = None, **kwargs: Any) -> Any:
    """One AutoAttack APGD (APGD-T if ``targeted``) on our loss; call ``.perturb(x, y)``.

    Args:
        model, eps, norm, loss, temperature, seed, distribution: as in mifpe_autoattack.
        targeted: build APGD-T (``APGDAttack_targeted``) instead of APGD.
        device: the host's; None: the inputs' device.
        **kwargs: the host's (n_iter, n_restarts, rho, eot_iter, n_target_classes, ...).
    """
    name = _pick(distribution)
    norm, eps = _checked(model, norm, eps)
    attack_loss, label = _resolve(loss, temperature)
    untargeted, targeted_cls, _ = _classes(name)
    if targeted:
        attack = targeted_cls(model, eps=eps, norm=norm, seed=seed, device=device, **kwargs)
    else:  # the host is told it runs its own DLR (stock APGD-DLR) or CE (our loss in that slot)
        host_loss = "dlr" if attack_loss is None else "ce"
        attack = untargeted(model, eps=eps, norm=norm, seed=seed, device=device, loss=host_loss, **kwargs)
    attack._configure(attack_loss, label)
    return attack


def run_standard_evaluation(adversary: Any, inputs: Tensor, labels: Tensor, /, *, batch_size: int = 250,
                            state_path: str | os.PathLike[str] | None = None) -> tuple[Tensor, Tensor]:
    """Run any AutoAttack of either distribution with one spelling; keeps the caller's global RNG.

    Args:
        adversary: an AutoAttack of either distribution (ours, stock or swapped).
        inputs, labels: clean inputs in [0, 1] and their classes.
        batch_size, state_path: pyautoattack's batch_size (upstream bs); the hosts' state file.

    Returns:
        (x_adv, y_adv): the adversarial inputs and the model's classes there.
    """
    name = _distribution_of(adversary, "run_standard_evaluation")
    check_positive_int(batch_size, "batch_size")
    _check(adversary.epsilon, inputs, "adversary.epsilon")
    path = None if state_path is None else Path(state_path)  # the hosts call state_path.exists()
    spelling = {"batch_size": batch_size} if name == "pyautoattack" else {"bs": batch_size, "return_labels": True}
    with _rng_kept():
        x_adv, y_adv = adversary.run_standard_evaluation(inputs, labels, state_path=path, **spelling)
    return x_adv, y_adv


def default_distribution() -> str:
    """The AutoAttack used when none is named: upstream "autoattack" if importable, else "pyautoattack"."""
    return _pick(None)


def describe_distribution(distribution: str | None = None) -> str:
    """Which AutoAttack runs, for result files: "pyautoattack 0.2.0", "autoattack (upstream, git 0.1,
    commit a39220048b3c)" (the commit pip recorded, if any) or "autoattack (upstream, git unknown)"."""
    name = _pick(distribution)
    try:
        version = metadata.version(name)
    except metadata.PackageNotFoundError:  # imported from a source tree without installed metadata
        version = str(getattr(_HOSTS[name], "__version__", "unknown"))
    if name == "pyautoattack":
        return f"pyautoattack {version}"
    commit = _vcs_commit(name)
    return f"autoattack (upstream, git {version}" + (f", commit {commit[:12]})" if commit else ")")


def _vcs_commit(name: str) -> str | None:  # PEP 610 direct_url.json, as pip install git+... records it
    try:
        commit = json.loads(metadata.distribution(name).read_text("direct_url.json") or "{}")["vcs_info"]["commit_id"]
    except (metadata.PackageNotFoundError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return commit if isinstance(commit, str) else None
