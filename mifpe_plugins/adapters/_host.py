"""Lazy import of host libraries, with an error that says how to install the missing one."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise ImportError saying how to install the ``extra`` that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"this adapter needs the host library '{module}', which is not installed. From a "
            f"checkout of mifpe_plugins: pip install -e \".[{extra}]\" (mifpe-plugins is not on PyPI "
            f"yet; once it is: pip install mifpe-plugins[{extra}])"
        ) from error
