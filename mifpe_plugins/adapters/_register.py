"""``torchattacks.MIFPE`` & co. after ``import mifpe_plugins``, without importing torchattacks.

torchattacks has no plugin mechanism, so the adapter's classes are added to its module: right away
when torchattacks is already imported, else by a ``sys.meta_path`` finder that lets the normal
finder and loader import torchattacks, then adds them and removes itself. Only names torchattacks
does not define are added; nothing of torchattacks is replaced. Imports neither torch nor torchattacks.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import warnings
from types import ModuleType

__all__ = ["install", "HOST"]

HOST = "torchattacks"
_ADAPTER = "mifpe_plugins.adapters.torchattacks"


def _add_names(host: ModuleType) -> list[str]:
    """Set the adapter's public classes on ``host`` where ``host`` lacks the name; return those added.

    Importing the adapter imports torchattacks: if that import is what brought us here, the adapter
    is still executing (its classes not defined yet) and adds the names itself when complete.
    """
    adapter = importlib.import_module(_ADAPTER)
    names = getattr(adapter, "__all__", ())
    added = [name for name in names if hasattr(adapter, name) and not hasattr(host, name)]
    for name in added:
        setattr(host, name, getattr(adapter, name))
    return added


def _add_names_safely(host: ModuleType) -> None:
    try:  # a failure here must never break the user's `import torchattacks` or `import mifpe_plugins`
        _add_names(host)
    except Exception as error:  # noqa: BLE001 - any adapter failure becomes a warning
        warnings.warn(f"mifpe_plugins could not add its attacks to torchattacks ({error!r}); use "
                      f"`from {_ADAPTER} import MIFPE` instead", RuntimeWarning, stacklevel=2)


class _LoaderThenRegister(importlib.abc.Loader):
    """The real loader, then the names; the module ends up pointing at the real loader."""

    def __init__(self, loader: importlib.abc.Loader, finder: _HostImportFinder) -> None:
        self._loader, self._finder = loader, finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader  # no trace of this wrapper (reload, importlib.resources)
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        self._finder.remove()  # only after a successful import: a failed one may be retried
        _add_names_safely(module)

    def __getattr__(self, name: str):
        return getattr(self._loader, name)


class _HostImportFinder(importlib.abc.MetaPathFinder):
    """Recognises ``import torchattacks`` and wraps the loader the other finders return."""

    def find_spec(self, fullname, path, target=None):
        if fullname != HOST:
            return None
        for finder in list(sys.meta_path):
            find_spec = getattr(finder, "find_spec", None)
            if isinstance(finder, _HostImportFinder) or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None  # not installed: Python raises its usual ModuleNotFoundError
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _LoaderThenRegister(spec.loader, self)
        return spec  # a namespace package or legacy loader is left alone

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def install() -> None:
    """Expose the torchattacks adapter's classes as ``torchattacks.<Name>``, now or on its first
    import. Idempotent; never imports torchattacks itself."""
    if sys.modules.get(HOST) is not None:
        _add_names_safely(sys.modules[HOST])
    elif not any(isinstance(finder, _HostImportFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _HostImportFinder())
