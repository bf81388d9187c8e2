"""Checkpoints published by others, loaded as ``published:<name>``.

The registry is data, ``mifpe_plugins/_data/published.json``: per name the file name, download
URL(s), sha256, architecture (a name of :data:`mifpe_plugins.zoo.ARCHITECTURES`) with the mapping
from the released file's key prefixes to that architecture's, dataset, threat model and eps, the
paper rows the model appears in (with their published numbers), and licence and source.

No checkpoint is shipped with the package. :func:`locate` looks for ``<file>`` in ``model_dir``
(the ``mifpe`` command's ``--model-dir``) and then in :func:`cache_dir`
(``$MIFPE_CACHE/published``, by default ``~/.cache/mifpe_plugins/published``), and downloads into
the cache only when ``download=True`` (``--download``). Every file's sha256 is checked before
``torch.load(..., weights_only=True)`` reads it.
"""

from __future__ import annotations

import json
import os
import urllib.request
from functools import cache
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from . import zoo
from .data import _unreadable, file_digest

__all__ = ["cache_dir", "candidates", "entry", "fetch", "load", "locate", "names", "paper_table1", "registry", "verify"]

_REGISTRY = "published.json"


@cache
def _registry_text() -> str:
    return (resources.files("mifpe_plugins") / "_data" / _REGISTRY).read_text(encoding="utf-8")


def registry() -> dict[str, dict]:
    """Every published checkpoint: name -> entry (a fresh copy of the JSON registry)."""
    return json.loads(_registry_text())["checkpoints"]


def names() -> list[str]:
    """The names ``published:<name>`` accepts, sorted."""
    return sorted(registry())


def entry(name: str) -> dict:
    """The registry entry of ``name``; a ValueError listing the known names otherwise."""
    known = registry()
    if name not in known:
        raise ValueError(f"unknown published checkpoint {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def paper_table1(name: str) -> tuple[str, float, dict[str, float], float] | None:
    """The MIFPE paper's Table-1 row of ``name`` as :data:`mifpe_plugins.papers.PAPER_TABLE1` holds
    its rows, ``(row, clean, {loss: PGD-100}, best known)``; None for a model not in that table
    (or not in the registry)."""
    for row in registry().get(name, {}).get("paper_rows", []):
        if row.get("paper", "").startswith("MIFPE") and row.get("table") == "Table 1":
            return row["row"], row["clean"], dict(row["pgd100"]), row["best_known"]
    return None


def cache_dir() -> Path:
    """Where downloaded checkpoints go: ``$MIFPE_CACHE/published``, default
    ``~/.cache/mifpe_plugins/published``."""
    root = os.environ.get("MIFPE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "mifpe_plugins") / "published"


def candidates(name: str, model_dir: str | Path | None = None) -> list[Path]:
    """The paths searched for ``name``'s file, in order: ``model_dir`` (if given), then the cache."""
    file = entry(name)["file"]
    folders = ([Path(model_dir)] if model_dir is not None else []) + [cache_dir()]
    return [folder / file for folder in folders]


def verify(name: str, path: str | Path) -> None:
    """Raise a ValueError unless ``path`` has the sha256 the registry records for ``name``."""
    record = entry(name)
    path = Path(path)
    actual, expected = file_digest(path), record["sha256"]
    if actual != expected:
        raise ValueError(
            f"published checkpoint {name!r}: {path} is not the published file: its sha256 is {actual}, "
            f"expected {expected} (mifpe_plugins/_data/published.json). It is corrupted, truncated or another "
            f"file, and it was not loaded. Delete it and put a good copy there (from {record['urls'][0]}), "
            f"or rerun with --download (download=True) to fetch one into {cache_dir()}"
        )


def fetch(url: str, destination: Path) -> None:
    """Download ``url`` to ``destination`` (the only function here that uses the network)."""
    with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as handle:  # noqa: S310 - https URLs of the registry
        for chunk in iter(lambda: response.read(1 << 20), b""):
            handle.write(chunk)


def _download(name: str) -> Path:
    record = entry(name)
    target = cache_dir() / record["file"]
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    failures = []
    for url in record["urls"]:
        try:
            fetch(url, partial)
        except OSError as error:  # urllib's URLError and HTTPError are OSErrors
            partial.unlink(missing_ok=True)
            failures.append(f"{url}: {error}")
            continue
        try:
            verify(name, partial)  # a bad download never lands under the checkpoint's name
        except ValueError:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, target)
        return target
    raise OSError(f"published checkpoint {name!r}: every download failed ({'; '.join(failures)}); "
                  f"put the file at {target} yourself")


def locate(name: str, model_dir: str | Path | None = None, *, download: bool = False) -> Path:
    """The verified checkpoint file of ``name``: found in ``model_dir`` or the cache, or downloaded
    into the cache when ``download`` is true. The first file found is checked and used (a damaged
    copy is an error, never skipped)."""
    record = entry(name)
    places = candidates(name, model_dir)
    for path in places:
        if path.is_file():
            verify(name, path)
            return path
    if download:
        return _download(name)
    looked = " and ".join(str(path.parent) for path in places)
    raise FileNotFoundError(
        f"published checkpoint {name!r} ({record['file']}) not found in {looked}, and downloading is off. "
        f"Put the file in one of those folders (--model-dir DIR, or the cache folder {cache_dir()}; "
        f"$MIFPE_CACHE moves it), or allow the download (download=True, `--download`) from "
        f"{' or '.join(record['urls'])} (sha256 {record['sha256']})"
    )


def _renamed(name: str, state: dict, mapping: dict[str, str], path: Path) -> dict:
    if not mapping:
        return state
    renamed = {}
    for key, value in state.items():
        prefix = next((p for p in mapping if key.startswith(p)), None)
        if prefix is None:
            raise ValueError(f"published checkpoint {name!r}: {path} has tensor {key!r}, which the registry's "
                             f"key mapping does not cover ({', '.join(mapping)})")
        renamed[mapping[prefix] + key.removeprefix(prefix)] = value
    return renamed


def load(name: str, model_dir: str | Path | None = None, *, download: bool = False) -> tuple[nn.Module, dict]:
    """The published model ``name`` in eval mode on the CPU (float32), and where it came from.

    The file is located (and downloaded only if ``download``) by :func:`locate`, its sha256 checked,
    then read with ``torch.load(weights_only=True)`` and its keys renamed by the registry's
    ``state_dict_keys`` into the registry's architecture, every tensor required.
    """
    record = entry(name)
    path = locate(name, model_dir, download=download)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a damaged or non-tensor file
        raise _unreadable(path, "a state dict saved with torch.save", error) from None
    if not isinstance(state, dict):
        raise ValueError(f"published checkpoint {name!r}: {path} holds a {type(state).__name__}, not a state dict")
    state = _renamed(name, state, record.get("state_dict_keys", {}), path)
    model = zoo.build(record["architecture"])
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise ValueError(f"published checkpoint {name!r}: {path} does not fit the {record['architecture']} "
                         f"architecture: {first_line}") from None
    source = {
        "kind": "published", "name": name, "path": str(path), "sha256": record["sha256"], "url": record["urls"][0],
        "architecture": record["architecture"], "dataset": record["dataset"], "threat_model": record["threat_model"],
        "eps": record["eps"], "licence": record["licence"],
    }
    return model.eval(), source
