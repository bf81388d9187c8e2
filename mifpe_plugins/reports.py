"""The report layer: records that write themselves as JSON, one renderer for tables, and the
atomic writer of a result's files.

A table here is rows of values under column titles. :func:`markdown_table` draws it for people
(``–`` for a value not computed); :func:`csv_text` writes tidy records (one dict per row, numbers
as numbers, empty cells for missing values) for ``pandas.read_csv`` and the like.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

__all__ = ["INLINE", "SCHEMA_VERSION", "SKIP", "Record", "csv_text", "markdown_table", "one_line", "text", "write_files"]

#: Version of the JSON layout of every report; raise it when a key changes meaning or goes away.
SCHEMA_VERSION = 2

#: Field metadata: the field is a dict whose keys go into the parent's JSON object.
INLINE = {"inline": True}

#: Field metadata: the field stays out of the JSON (per-sample data, paths written).
SKIP = {"skip": True}


class Record:
    """Mixin for a dataclass that writes itself as JSON: its fields by name, values with a
    ``to_json`` through it, ``INLINE`` fields merged into the object, ``SKIP`` fields left out, and
    a field left out when it is ``None`` and ``None`` is its default (a value not computed, as in a
    partial run)."""

    def to_json(self) -> dict:
        out: dict = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("skip"):
                continue
            if f.metadata.get("inline"):
                out.update(_json(value))
            elif value is not None or f.default is not None:
                out[f.name] = _json(value)
        return out


def _json(value: object) -> object:
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, dict):
        return {key: _json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(item) for item in value]
    return value


def one_line(error: BaseException) -> str:
    """An error as one line for people: its message's first non-empty line (a KeyError's message,
    not its repr), or the exception's type when it has no message."""
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return next((line.strip() for line in message.splitlines() if line.strip()), type(error).__name__)


def text(value: object, digits: int = 2) -> str:
    """A Markdown cell: ``–`` for ``None`` (not computed), floats to ``digits`` places."""
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(head: Sequence[str], body: Iterable[Sequence[object]], digits: int = 2) -> list[str]:
    """The lines of a Markdown table: ``head`` titles the columns, each row of ``body`` holds values."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(text(value, digits) for value in row) + " |" for row in body]


def csv_text(columns: Sequence[str], records: Iterable[dict], digits: int = 4) -> str:
    """Tidy CSV: a header of ``columns``, then one line per record; ``None`` and absent keys are
    empty cells, floats are rounded to ``digits`` places (not padded)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: round(v, digits) if isinstance(v, float) else v for k, v in r.items()} for r in records)
    return buffer.getvalue()


def write_files(out_dir: str | Path, files: dict[str, str | bytes]) -> list[Path]:
    """Write ``files`` (name -> text or bytes) into ``out_dir`` as one set.

    Each goes to a temporary file in the same folder first; only when all are complete are they
    moved into place with ``os.replace`` (Ctrl-C held back for those renames), so an interruption
    leaves the old set or the new one, never a mix or a half-written file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staged = {out / name: out / f".{name}.{os.getpid()}.tmp" for name in files}
    try:
        for temporary, content in zip(staged.values(), files.values(), strict=True):
            if isinstance(content, bytes):
                temporary.write_bytes(content)
            else:
                temporary.write_text(content, encoding="utf-8")
        with _ctrl_c_held():
            for final, temporary in staged.items():
                os.replace(temporary, final)
    finally:
        for temporary in staged.values():
            temporary.unlink(missing_ok=True)
    return list(staged)


@contextmanager
def _ctrl_c_held() -> Iterator[None]:
    # Only the main thread can swap the SIGINT handler; a handler set outside Python stays.
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is None:
        yield
        return
    received: list = []
    previous = signal.signal(signal.SIGINT, lambda *_: received.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt
