"""Make ``torchattacks.MIFPE`` & co. available after ``import mifpe_plugins``, lazily.

torchattacks has no plugin mechanism, so the only way for ``torchattacks.MIFPE(model, eps=8/255)``
to work as written is to add our classes to the torchattacks module. That must not make
``import mifpe_plugins`` import torchattacks (slow, and an optional extra). :func:`install` therefore

* adds the names right away when torchattacks is already imported, or
* puts a finder on ``sys.meta_path`` that recognises the first ``import torchattacks``, lets the
  normal finder and loader do all the work, and adds the names once the module has executed.

Only names torchattacks does not already define are added; nothing of torchattacks is replaced.
This module imports neither torch nor torchattacks.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

__all__ = ["install", "HOST"]

#: The host module whose namespace receives the adapter classes.
HOST = "torchattacks"
_ADAPTER = "mifpe_plugins.adapters.torchattacks"


def _add_names(host: ModuleType) -> list[str]:
    """Set each of the adapter's public classes on ``host`` unless ``host`` has that name already."""
    adapter = importlib.import_module(_ADAPTER)
    added = []
    for name in adapter.__all__:
        if not hasattr(host, name):
            setattr(host, name, getattr(adapter, name))
            added.append(name)
    return added


def _adapter_mid_import() -> bool:
    # When the adapter module itself triggers the first `import torchattacks`, it is still
    # executing: it registers its names itself once complete (see `register_if_host_loaded`).
    adapter = sys.modules.get(_ADAPTER)
    return adapter is not None and not getattr(adapter, "_READY_FOR_REGISTRATION", False)


def register_if_host_loaded() -> None:
    """Called by the adapter module when it has finished executing."""
    host = sys.modules.get(HOST)
    if host is not None:
        _add_names_safely(host)


def _add_names_safely(host: ModuleType) -> None:
    if _adapter_mid_import():
        return
    # A failure here must never break the user's `import torchattacks`.
    try:
        _add_names(host)
    except Exception as error:  # noqa: BLE001 - any adapter failure becomes a warning
        warnings.warn(
            f"mifpe_plugins could not add its attacks to torchattacks ({error!r}); use "
            f"`from {_ADAPTER} import MIFPE` instead",
            RuntimeWarning,
            stacklevel=2,
        )


class _LoaderThenRegister(importlib.abc.Loader):
    """Runs the real loader, then registers; the module ends up pointing at the real loader."""

    def __init__(self, loader: importlib.abc.Loader, finder: _HostImportFinder) -> None:
        self._loader = loader
        self._finder = finder

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        # Leave no trace of this wrapper on the module (reload, importlib.resources use these).
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        # Reached only if torchattacks imported without error; after a failed import the finder
        # stays in place so that a later successful import still registers.
        self._finder.remove()
        _add_names_safely(module)

    def __getattr__(self, name: str):
        return getattr(self._loader, name)


class _HostImportFinder(importlib.abc.MetaPathFinder):
    """Recognises ``import torchattacks`` and wraps the spec the other finders return."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ):
        if fullname != HOST:
            return None
        for finder in list(sys.meta_path):
            if finder is self or isinstance(finder, _HostImportFinder):
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None  # not installed: Python raises its usual ModuleNotFoundError
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec  # namespace package or legacy loader: leave the import alone
        spec.loader = _LoaderThenRegister(spec.loader, self)
        return spec

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def install() -> None:
    """Expose the torchattacks adapter classes as ``torchattacks.<Name>``, now or on first import.

    Idempotent; never imports torchattacks itself.
    """
    host = sys.modules.get(HOST)
    if host is not None:
        _add_names_safely(host)
        return
    if any(isinstance(finder, _HostImportFinder) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _HostImportFinder())
