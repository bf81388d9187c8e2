"""Model specifications of the ``mifpe`` command: zoo models, checkpoint files and RobustBench.

``zoo:<name>``
    A model of :mod:`mifpe_plugins.zoo` with its shipped weights.
``published:<name>``
    A checkpoint published by others (:mod:`mifpe_plugins.published`): found in ``model_dir`` or
    the cache folder, downloaded only with ``download=True``, its sha256 checked before it is read.
``robustbench:<name>``
    ``robustbench.utils.load_model(name, model_dir=..., dataset=..., threat_model=...)``. RobustBench
    looks for ``<model_dir>/<dataset>/<threat_model>/<name>.pt`` and downloads only when that file
    is missing, so a checkpoint already in place works offline.
``timm:<name>``
    ``timm.create_model(name, pretrained=False)`` with the state dict ``weights`` (required).
``<path>.pt`` / ``.pth`` / ``.ts``
    A TorchScript archive (``torch.jit.save``), or a state dict loaded into ``architecture`` (a name
    of :data:`mifpe_plugins.zoo.ARCHITECTURES`).
``<path>.pt2``
    A ``torch.export`` archive (``torch.export.save``), exported in eval mode with a dynamic batch.
``package.module:factory``
    A function or class returning the ``torch.nn.Module``, optionally with the state dict ``weights``.

The prefixes ``zoo:``, ``published:``, ``robustbench:`` and ``timm:`` come first, then a path ending
in a model-file suffix, then ``module:qualname`` (see :mod:`mifpe_plugins.user_models`). Every
model can be wrapped in :class:`~mifpe_plugins.user_models.Normalized` (``normalize=``). The
``source`` of a :class:`LoadedModel` records what was loaded, with the sha256 of every model,
weights or checkpoint file read (the zoo's shipped weights are named by the package's version).
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import published, user_models, zoo
from .data import _unreadable, file_digest

__all__ = [
    "LoadedModel", "MODEL_FILE_SUFFIXES", "ROBUSTBENCH_DATASETS", "ROBUSTBENCH_THREAT_MODELS", "load_model", "spec_kind",
    "takes_weights",
]

ROBUSTBENCH_DATASETS = ("cifar10", "cifar100", "imagenet")
ROBUSTBENCH_THREAT_MODELS = ("Linf", "L2", "corruptions")
MODEL_FILE_SUFFIXES = (".pt", ".pth", ".ts", ".pt2")
_PREFIXES = ("zoo", "published", "robustbench", "timm")


@dataclass
class LoadedModel:
    """A model in eval mode and where it came from (recorded in every result file)."""

    model: nn.Module
    spec: str
    source: dict = field(default_factory=dict)


def _is_torchscript(path: Path) -> bool:
    # torch.jit.save writes a zip archive with a code/ folder; torch.save's state dicts have none.
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name or name.startswith("code/") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def spec_kind(spec: str) -> str:
    """What a model specification names: ``zoo``, ``published``, ``robustbench``, ``timm`` (its
    prefix), ``file`` (a path ending in one of :data:`MODEL_FILE_SUFFIXES`), ``factory``
    (``package.module:qualname``) or ``unknown``, in this order of precedence."""
    prefix, colon, _ = spec.partition(":")
    if colon and prefix in _PREFIXES:
        return prefix
    if Path(spec).suffix in MODEL_FILE_SUFFIXES:
        return "file"
    return "factory" if user_models.is_factory_spec(spec) else "unknown"


def takes_weights(spec: str) -> bool:
    """Whether a state dict (``weights=``, ``--weights``) goes with ``spec``: factories and timm models."""
    return spec_kind(spec) in ("factory", "timm")


def _load_file(path: Path, architecture: str | None, device: str | torch.device) -> tuple[nn.Module, dict]:
    if path.suffix == ".pt2":
        return user_models.load_exported(path, device)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    if path.suffix == ".ts" or _is_torchscript(path):
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except Exception as error:  # TorchScript raises RuntimeError and others for a damaged archive
            raise _unreadable(path, "a TorchScript archive (torch.jit.save)", error) from None
        return model, {"kind": "torchscript", "path": str(path), "sha256": file_digest(path)}
    if architecture is None:
        raise ValueError(
            f"{path} is not a TorchScript archive, so it is read as a state dict and needs an architecture: "
            f"pass architecture= (--arch) one of {', '.join(sorted(zoo.ARCHITECTURES))}"
        )
    try:
        model = zoo.load_state_dict_into(zoo.build(architecture), path, architecture=architecture)
    except ValueError:
        raise  # the file was read, and its content is wrong: zoo's message says how
    except Exception as error:  # torch.load raises many types for a damaged or non-tensor file
        raise _unreadable(path, "a state dict saved with torch.save(model.state_dict(), path)", error) from None
    return model, {"kind": "state_dict", "path": str(path), "sha256": file_digest(path), "architecture": architecture}


def _load_robustbench(
    name: str, model_dir: str | Path, dataset: str, threat_model: str, download: bool
) -> tuple[nn.Module, dict]:
    if dataset not in ROBUSTBENCH_DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(ROBUSTBENCH_DATASETS)}, got {dataset!r}")
    if threat_model not in ROBUSTBENCH_THREAT_MODELS:
        raise ValueError(f"threat_model must be one of {', '.join(ROBUSTBENCH_THREAT_MODELS)}, got {threat_model!r}")
    try:
        from robustbench.utils import load_model as robustbench_load_model
    except Exception as error:  # noqa: BLE001 - robustbench fails with ImportError or its deps' errors
        raise ImportError(
            f"`robustbench:` models need the robustbench package, which failed to import ({type(error).__name__}: "
            f"{error}). Install it with `pip install -e \".[robustbench]\"` in a checkout of mifpe_plugins; PyPI's robustbench also "
            "imports upstream AutoAttack (`pip install git+https://github.com/fra31/auto-attack`)"
        ) from None
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    known = model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat_model)]
    if name not in known:
        raise ValueError(
            f"unknown RobustBench model {name!r} for {dataset}/{threat_model}; "
            f"{len(known)} known, e.g. {', '.join(sorted(known)[:6])}"
        )
    checkpoint = Path(model_dir) / dataset / threat_model / f"{name}.pt"
    if not download and not checkpoint.is_file() and known[name].get("gdrive_id") is not None:
        raise FileNotFoundError(
            f"RobustBench checkpoint {checkpoint} is missing and downloading is off: put the file there "
            "(RobustBench's own layout <model_dir>/<dataset>/<threat_model>/<name>.pt) or allow the "
            "download (download=True, `--download`)"
        )
    try:
        model = robustbench_load_model(model_name=name, model_dir=str(model_dir), dataset=dataset, threat_model=threat_model)
    except RuntimeError as error:
        if "state_dict" not in str(error):
            raise
        first_line = str(error).splitlines()[0]
        raise ValueError(f"checkpoint {checkpoint} does not match RobustBench's {name} architecture: {first_line}") from None
    return model, {
        "kind": "robustbench", "name": name, "dataset": dataset, "threat_model": threat_model,
        "checkpoint": str(checkpoint), "sha256": file_digest(checkpoint) if checkpoint.is_file() else None,
    }


def load_model(
    spec: str,
    *,
    architecture: str | None = None,
    weights: str | Path | None = None,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
    model_dir: str | Path = "models",
    dataset: str = "cifar10",
    threat_model: str = "Linf",
    download: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Resolve a model specification into an eval-mode model on ``device`` in ``dtype``.

    Parameters
    ----------
    spec : str
        ``zoo:<name>``, ``published:<name>``, ``robustbench:<name>``, ``timm:<name>``,
        ``package.module:factory``, or a path to a ``.pt`` / ``.pth`` / ``.ts`` / ``.pt2`` file (see
        :func:`spec_kind`).
    architecture : str, optional
        For state-dict files: a name of :data:`mifpe_plugins.zoo.ARCHITECTURES`.
    weights : str or Path, optional
        For ``package.module:factory`` (optional) and ``timm:<name>`` (required): a state dict read
        with ``torch.load(..., weights_only=True)``, possibly under ``"state_dict"`` or ``"model"``,
        with DataParallel ``module.`` prefixes.
    normalize : (mean, std), optional
        Per-channel mean and std the model expects its inputs normalised with: the model is wrapped
        in :class:`~mifpe_plugins.user_models.Normalized`, so attacks stay in [0, 1] pixel space.
    model_dir, dataset, threat_model : optional
        For ``robustbench:``, passed to ``robustbench.utils.load_model``. ``model_dir`` is also the
        first folder searched for a ``published:`` checkpoint (then the cache folder).
    download : bool
        For ``robustbench:`` and ``published:``, allow downloading a missing checkpoint (off by
        default: a missing file is an error).
    device, dtype : optional
        Where the model runs and in which floating dtype.

    Returns
    -------
    LoadedModel
        The model and its ``source``: the kind, what was loaded, the sha256 of the files read (but
        the zoo's shipped weights) and the normalisation.
    """
    kind, name = spec_kind(spec), spec.partition(":")[2]
    if weights is not None and kind not in ("factory", "timm"):
        raise ValueError(f"weights= (--weights) goes with package.module:factory and timm:<name> models, not with {spec}")
    if kind == "zoo":
        model, source = zoo.load(name), {"kind": "zoo", "name": name, **{"log": zoo.training_log(name)}}
    elif kind == "published":
        model, source = published.load(name, model_dir, download=download)
    elif kind == "robustbench":
        model, source = _load_robustbench(name, model_dir, dataset, threat_model, download)
    elif kind == "timm":
        model, source = user_models.load_timm(name, weights)
    elif kind == "file":
        model, source = _load_file(Path(spec), architecture, device)
    elif kind == "factory":
        model, source = user_models.load_factory(spec, weights)
    else:
        raise ValueError(
            f"unknown model {spec!r}: use zoo:<name> (one of {', '.join(sorted(zoo.RECIPES))}), "
            f"published:<name> (one of {', '.join(published.names())}), robustbench:<name>, timm:<name>, "
            "package.module:factory, or a path to a .pt/.pth/.ts/.pt2 file"
        )
    if normalize is not None:
        mean, std = normalize
        model = user_models.Normalized(model, mean, std)
        source = {**source, "normalize": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}}
    return LoadedModel(model.to(device=device, dtype=dtype).eval(), spec, source)
