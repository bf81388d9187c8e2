"""Lazy import of host libraries, with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise ImportError naming ``pip install mifpe-plugins[extra]``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"this adapter needs the host library '{module}', which is not installed: "
            f"pip install mifpe-plugins[{extra}]"
        ) from error
