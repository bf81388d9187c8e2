"""Progress bars (tqdm) for the long loops of the ``mifpe`` command and zoo training.

A bar shows the count, percent, rate and time left on stderr. On a terminal it redraws a few times a
second; when stderr is a file or a pipe (CI logs) it writes when its description changes (a table's
bar names the attack it is running) and otherwise at most every 30 s, so logs stay short.
``enabled=False`` (``--quiet``) draws nothing. :func:`keep_partial` hands the finished part of a
long loop to whoever catches its interruption.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tqdm import tqdm

__all__ = ["bar", "keep_partial", "log_above_bars"]

Filled = TypeVar("Filled")


def bar(iterable: Iterable | None = None, desc: str = "", *, total: int | None = None, enabled: bool = True,
        unit: str = "it") -> tqdm:
    """A tqdm bar on stderr over ``iterable`` (or ``total`` units counted with ``.update(n)``)."""
    stream = sys.stderr
    terminal = bool(getattr(stream, "isatty", lambda: False)())
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not enabled, file=stream,
                dynamic_ncols=terminal, mininterval=0.2 if terminal else 30.0)


class _AboveBars(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # the logging module's contract: a handler never raises
            self.handleError(record)


@contextmanager
def log_above_bars(name: str, prefix: str, *, enabled: bool = True) -> Iterator[None]:
    """Show every record of logger ``name`` on stderr as ``prefix: message`` inside the block,
    printed above the progress bars rather than through them."""
    if not enabled:
        yield
        return
    logger, handler = logging.getLogger(name), _AboveBars()
    handler.setFormatter(logging.Formatter(f"{prefix}: %(message)s"))
    previous_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)


@contextmanager
def keep_partial(report: Filled, finished: Callable[[], bool] = lambda: True) -> Iterator[Filled]:
    """Fill ``report`` inside the block. If anything (Ctrl-C included) stops it once ``finished()``
    is true, the exception carries the finished part as ``error.partial_report``; it propagates
    unchanged either way."""
    try:
        yield report
    except BaseException as error:
        if finished():
            error.partial_report = report
        raise
