"""The journal of a run: every finished (model, column, chunk) with its per-sample outcomes.

A run's journal is a folder ``<stem>.journal`` beside its reports: ``settings.json`` (what the
numbers depend on, and its hash) and one SQLite file per process, ``part-<rank>.sqlite``. Each
process writes only its own part, one transaction per chunk, in WAL mode with an exclusive lock
(no shared memory, so a part can live on a network folder that several machines share). A chunk
is in the journal completely or not at all, whenever the process is killed.

Rank 0 reads every part: before the run, to list what is finished (``--resume``), and after it,
to build the reports. Parts of earlier runs with other numbers of processes are read the same way.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .reports import write_files

__all__ = ["ChunkRecord", "Journal", "JournalMismatch", "claim", "settings_hash"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    model TEXT NOT NULL, column TEXT NOT NULL, chunk INTEGER NOT NULL, samples INTEGER NOT NULL,
    seconds REAL NOT NULL, forward INTEGER NOT NULL, backward INTEGER NOT NULL, arrays BLOB NOT NULL,
    PRIMARY KEY (model, column, chunk)
);
"""


class JournalMismatch(ValueError):
    """``--resume`` into a journal written with other settings."""


@dataclass
class ChunkRecord:
    """One finished (model, column, chunk): per-sample arrays, its wall time and its passes."""

    model: str
    column: str
    chunk: int
    arrays: dict[str, np.ndarray]
    seconds: float = 0.0
    forward: int = 0
    backward: int = 0

    @property
    def key(self) -> tuple[str, str, int]:
        return self.model, self.column, self.chunk


def settings_hash(settings: dict) -> str:
    """sha256 of the settings' canonical JSON."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _flat(settings: dict, prefix: str = "") -> dict:
    """Nested settings as {"columns/model/column/steps": value}, so a difference names its leaf."""
    flat: dict = {}
    for key, value in settings.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _pack(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _unpack(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    # Exclusive locking before WAL: SQLite then keeps the WAL index in process memory, never in a
    # shared-memory file (which network file systems do not support).
    connection.execute("PRAGMA locking_mode=EXCLUSIVE")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")  # a killed process loses no committed chunk
    connection.executescript(_SCHEMA)
    return connection


class Journal:
    """The journal folder of one run.

    Parameters
    ----------
    folder : path or None
        ``<out>/<stem>.journal``; ``None`` keeps the journal in memory (nothing survives the process).
    settings : dict
        Everything the numbers depend on; a journal written with other settings is refused.
    rank : int
        This process's rank: it writes ``part-<rank>.sqlite`` only.
    """

    def __init__(self, folder: str | Path | None, settings: dict, *, rank: int = 0) -> None:
        self.folder = None if folder is None else Path(folder)
        self.settings, self.hash, self.rank = settings, settings_hash(settings), rank
        self._memory: dict[tuple[str, str, int], ChunkRecord] = {}
        self._writer: sqlite3.Connection | None = None

    # -- before the run (rank 0) ------------------------------------------------------------

    def exists(self) -> bool:
        return self.folder is not None and (self.folder / "settings.json").exists()

    def check(self) -> None:
        """Refuse a journal written with other settings, naming what differs."""
        if not self.exists():
            return
        stored = json.loads((self.folder / "settings.json").read_text(encoding="utf-8"))
        if stored.get("hash") == self.hash:
            return
        old, new = _flat(stored.get("settings", {})), _flat(self.settings)
        differences = [f"{key}: {json.dumps(old.get(key))} in the journal, {json.dumps(new.get(key))} now"
                       for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
        shown = differences[:6] + ([f"and {len(differences) - 6} more"] if len(differences) > 6 else [])
        raise JournalMismatch(f"cannot resume {self.folder}: it was written with other settings ("
                              + "; ".join(shown or ["the settings hash differs"]) + "); rerun with the journal's "
                              "settings, or pass --overwrite to start again")

    def start(self, *, overwrite: bool = False) -> None:
        """Create the folder (emptied first with ``overwrite``) and write ``settings.json``."""
        if self.folder is None:
            return
        if overwrite and self.folder.exists():
            shutil.rmtree(self.folder)
        if not self.exists():
            write_files(self.folder, {"settings.json": json.dumps({"hash": self.hash, "settings": self.settings},
                                                                   indent=2, sort_keys=True) + "\n"})

    def finished(self) -> set[tuple[str, str, int]]:
        """Keys of every chunk in the journal, over all parts."""
        return {record.key for record in self.records(arrays=False)}

    # -- during the run (every rank) --------------------------------------------------------

    def record(self, record: ChunkRecord) -> None:
        """Add one finished chunk, in one transaction."""
        if self.folder is None:
            self._memory[record.key] = record
            return
        if self._writer is None:
            self._writer = _connect(self.folder / f"part-{self.rank}.sqlite")
            self._writer.execute("INSERT OR REPLACE INTO meta VALUES ('settings_hash', ?)", (self.hash,))
        with self._writer:
            self._writer.execute("BEGIN")
            self._writer.execute("INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 (record.model, record.column, record.chunk, next(len(a) for a in record.arrays.values() if np.ndim(a)),
                                  record.seconds, record.forward, record.backward, _pack(record.arrays)))

    def close(self) -> None:
        """Close this process's part (checkpointing its WAL into the database file)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- after the run (rank 0) -------------------------------------------------------------

    def records(self, *, arrays: bool = True) -> Iterator[ChunkRecord]:
        """Every chunk in the journal (the first copy of a chunk found in two parts)."""
        if self.folder is None:
            yield from self._memory.values()
            return
        seen: set[tuple[str, str, int]] = set()
        for part in sorted(self.folder.glob("part-*.sqlite")):
            if self._writer is not None and part.name == f"part-{self.rank}.sqlite":
                connection, opened = self._writer, False
            else:
                connection, opened = _connect(part), True
            try:
                stored = connection.execute("SELECT value FROM meta WHERE key = 'settings_hash'").fetchone()
                if stored is not None and stored[0] != self.hash:
                    raise JournalMismatch(f"{part} was written with other settings than {self.folder / 'settings.json'}; "
                                          "pass --overwrite to start again")
                columns = "model, column, chunk, seconds, forward, backward" + (", arrays" if arrays else "")
                for row in connection.execute(f"SELECT {columns} FROM chunks ORDER BY model, column, chunk"):
                    key = (row[0], row[1], row[2])
                    if key not in seen:
                        seen.add(key)
                        yield ChunkRecord(*key, arrays=_unpack(row[6]) if arrays else {}, seconds=row[3],
                                          forward=row[4], backward=row[5])
            finally:
                if opened:
                    connection.close()


def claim(out: Path, stem: str, journal: Journal, *, resume: bool, overwrite: bool) -> None:
    """Make ``out/<stem>.*`` this run's, and start its journal: never replace another run's files
    silently. ``overwrite`` deletes them first; ``resume`` checks the journal's settings."""
    if journal.folder is not None and journal.folder.is_dir() and not any(journal.folder.glob("part-*.sqlite")):
        shutil.rmtree(journal.folder)  # a run stopped before its first chunk: nothing to keep
    existing = sorted(out.glob(f"{stem}.*")) if out.is_dir() else []
    if overwrite:
        for path in existing:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif existing and not resume:
        raise FileExistsError(f"{existing[0]} exists (a run named {stem!r}): pass --resume (resume=True) to continue it, "
                              f"--overwrite (overwrite=True) to replace it, or --name (name=) to keep both")
    elif resume:
        journal.check()
    journal.start()
