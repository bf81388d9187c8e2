"""A dependency-free progress bar for the long loops of the ``mifpe`` command and zoo training.

On a terminal it redraws one line (``\\r``) at most a few times a second; when stderr is a file or a
pipe (CI logs) it prints a line at every tenth of the work, so logs stay short. :func:`keep_partial`
hands the finished part of a long loop to whoever catches its interruption.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager
from typing import TextIO, TypeVar

__all__ = ["Progress", "keep_partial", "progress"]

Item = TypeVar("Item")


class Progress:
    """Counts units of work towards ``total`` and reports to ``stream``.

    Parameters
    ----------
    total : int
        Units of work expected (at least 1).
    desc : str
        What is being done, printed before the count.
    enabled : bool
        ``False`` makes every method a no-op.
    stream : file, optional
        Default ``sys.stderr``.
    """

    def __init__(self, total: int, desc: str = "", *, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total = max(int(total), 1)
        self.desc = desc
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self._start = time.perf_counter()
        self._last_draw = 0.0
        self._last_tenth = -1
        self._interactive = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, count: int = 1) -> None:
        """Record ``count`` more units of work."""
        if not self.enabled:
            return
        self.done = min(self.done + count, self.total)
        now = time.perf_counter()
        if self._interactive:
            if now - self._last_draw >= 0.2 or self.done == self.total:
                self._last_draw = now
                self.stream.write("\r" + self._line(now))
                self.stream.flush()
        else:
            tenth = 10 * self.done // self.total
            if tenth > self._last_tenth:
                self._last_tenth = tenth
                self.stream.write(self._line(now) + "\n")
                self.stream.flush()

    def close(self) -> None:
        """End the bar's line on a terminal."""
        if self.enabled and self._interactive:
            self.stream.write("\n")
            self.stream.flush()

    def _line(self, now: float) -> str:
        elapsed = now - self._start
        share = self.done / self.total
        width = 24
        bar = "#" * round(width * share) + "." * (width - round(width * share))
        remaining = f", ~{elapsed / share - elapsed:.0f} s left" if 0 < share < 1 else ""
        return f"{self.desc} [{bar}] {self.done}/{self.total} {elapsed:.0f} s{remaining}"

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(items: Iterable[Item], desc: str = "", *, total: int | None = None, enabled: bool = True) -> Iterator[Item]:
    """Iterate over ``items`` while drawing a :class:`Progress` bar (one unit per item)."""
    if total is None:
        total = len(items) if isinstance(items, Sized) else 1
    with Progress(total, desc, enabled=enabled) as bar:
        for item in items:
            yield item
            bar.update()


@contextmanager
def keep_partial(report: dict, finished: Callable[[], bool] = lambda: True) -> Iterator[dict]:
    """Fill ``report`` inside the block. If anything (Ctrl-C included) stops it once ``finished()``
    is true, the exception carries the finished part as ``error.partial_report``; it propagates
    unchanged either way."""
    try:
        yield report
    except BaseException as error:
        if finished():
            error.partial_report = report
        raise
