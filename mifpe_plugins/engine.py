"""The evaluation engine: attack columns over fixed chunks of the data, journaled, sharded.

A run is a list of columns (one attack with one loss on one model) over the evaluation set cut
into fixed chunks. Each (column, chunk) is one job: its randomness comes from a generator seeded
by (seed, chunk), its per-sample outcomes go to the :class:`~mifpe_plugins.journal.Journal` in
one transaction. So a result depends only on the data, the settings and the chunk size -- not on
which process ran a chunk, in which order, or whether the run was resumed.

Under ``torchrun`` the jobs not yet in the journal are dealt round-robin to the ranks; rank 0
builds the results from the journal once every rank has finished. Nothing is padded: every
sample is attacked exactly once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .attacks._common import check_label_range, check_logits, in_training_mode
from .attacks._loop import per_sample_gradients
from .attacks._steps import norm_of
from .journal import ChunkRecord, Journal
from .losses import logit_margin, top_margin
from .progress import bar

__all__ = ["ChunkOutcome", "Chunks", "Column", "ColumnResult", "PassCounter", "Shard", "chunk_generator", "describe", "run_columns"]

#: The clean pass of every model: a column with no attack.
CLEAN = "clean"

# A chunk's totals travel in its arrays under this name (a 0-d string array of JSON).
_STATS = "__stats__"

#: (model, x, y, generator=, rows=) -> adversarial x; ``rows`` is the chunk's slice of the set.
AttackFn = Callable[..., Tensor]


def describe(value: object) -> object:
    """A JSON value for a setting: JSON types as they are, anything else by its repr without
    memory addresses (so that the same function or loss object describes itself the same way in
    every process)."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if isinstance(value, dict):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)}, {str(value.dtype).removeprefix('torch.')}"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def chunk_seed(seed: int, chunk: int) -> int:
    """The seed of chunk ``chunk``'s generator: a hash of (seed, chunk), so neighbouring chunks
    (and neighbouring seeds) draw unrelated streams."""
    digest = hashlib.sha256(f"mifpe-chunk/{seed}/{chunk}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def chunk_generator(seed: int, chunk: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device`` for chunk ``chunk`` of a run seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(chunk_seed(seed, chunk))


class Chunks:
    """An evaluation set cut into fixed chunks of ``size`` samples, read one chunk at a time.

    Parameters
    ----------
    inputs : Tensor or map-style dataset
        Inputs (N, ...) with ``labels``; or a dataset whose items are ``(input, label)`` (a
        ``torch.utils.data.Dataset``, a memory-mapped array pair wrapped in one, ...): only the
        chunk being attacked is read and stacked.
    labels : Tensor, optional
        Labels (N,) when ``inputs`` is a tensor.
    size : int
        Samples per chunk (the batch size of every attack).
    """

    def __init__(self, inputs: Tensor | Any, labels: Tensor | None = None, *, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {size!r}")
        if isinstance(inputs, Tensor) != isinstance(labels, Tensor):
            raise TypeError("pass inputs and labels as two tensors, or a dataset of (input, label) items with labels=None")
        if labels is None and not (hasattr(inputs, "__getitem__") and hasattr(inputs, "__len__")):
            raise TypeError(f"inputs must be a tensor or a map-style dataset (with __len__ and __getitem__), got {type(inputs).__name__}")
        self.inputs, self.labels, self.size = inputs, labels, size
        self.n = int(inputs.shape[0] if labels is not None else len(inputs))

    def __len__(self) -> int:
        return -(-self.n // self.size)

    def rows(self, chunk: int) -> slice:
        return slice(chunk * self.size, min((chunk + 1) * self.size, self.n))

    def count(self, chunk: int) -> int:
        """Samples in chunk ``chunk`` (the last one may be short)."""
        rows = self.rows(chunk)
        return rows.stop - rows.start

    def __getitem__(self, chunk: int) -> tuple[Tensor, Tensor]:
        rows = self.rows(chunk)
        if self.labels is not None:
            return self.inputs[rows], self.labels[rows]
        items = [self.inputs[i] for i in range(rows.start, rows.stop)]
        return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.as_tensor([int(y) for _, y in items])


class PassCounter(nn.Module):
    """Wraps a model and counts the samples it forwards, and those forwarded with autograd
    recording on inputs that require grad (each is one backward pass: how A3 counts)."""

    def __init__(self, model: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        if isinstance(model, nn.Module):
            self.model = model
        else:
            object.__setattr__(self, "model", model)
        self.training = in_training_mode(model)  # the wrapped model's mode, without touching it
        self.forward_passes = 0
        self.backward_passes = 0

    def forward(self, x: Tensor) -> Tensor:
        self.forward_passes += x.shape[0]
        if torch.is_grad_enabled() and x.requires_grad:
            self.backward_passes += x.shape[0]
        return self.model(x)


@dataclass
class ChunkOutcome:
    """What a column's attack may return instead of the adversarial inputs alone: extra per-sample
    ``arrays`` (tensors or arrays of shape (B,), journaled and joined like the engine's own) and
    chunk totals ``stats`` (name -> number, summed over chunks into :attr:`ColumnResult.stats`)."""

    adversarial: Tensor
    arrays: dict[str, Tensor | np.ndarray] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Column:
    """One attack on one model over the whole evaluation set: a column of a table.

    ``attack(model, x, y, generator=, rows=)`` returns the adversarial inputs of one chunk, or a
    :class:`ChunkOutcome` with them (``model`` counts its passes; ``rows`` is the chunk's slice,
    for per-sample arguments).
    ``eps`` and ``norm`` measure the perturbations; ``settings`` (JSON) goes into the journal's
    settings, so a changed attack is never resumed into.
    """

    name: str
    attack: AttackFn
    norm: str = "linf"
    eps: float | Tensor | None = None
    settings: dict = field(default_factory=dict)


@dataclass
class ColumnResult:
    """Per-sample outcomes of one column, in sample order, and its totals.

    ``arrays`` of the clean column: ``label``, ``prediction``, ``margin`` (z_y - max other
    logit) and ``top_gap`` (top-1 - top-2 logit). Of an attack column: ``success`` (the
    adversarial input is misclassified), ``margin`` (at the adversarial input), ``norm`` (of the
    perturbation), ``gradients`` (loss-gradient evaluations of the sample, -1 where the attack
    does not report them), ``within_eps`` when the column has an ``eps``, and ``adversarial``
    when kept, and whatever extra arrays the attack returned. ``seconds`` sums the chunks' attack
    time, ``stats`` the chunk totals the attack returned.
    """

    model: str
    column: str
    arrays: dict[str, np.ndarray]
    seconds: float
    forward_passes: int
    backward_passes: int
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(next(iter(self.arrays.values())))


@dataclass(frozen=True)
class Shard:
    """Which of ``world`` processes this is (``torch.distributed``'s rank), and how they meet."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Shard:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    def broadcast(self, value: object) -> object:
        """Rank 0's ``value``, on every rank."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _numpy(tensor: Tensor, dtype: type) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float64 if dtype is np.float64 else None).numpy().astype(dtype)


def _clean_job(model: Callable, x: Tensor, y: Tensor) -> dict[str, np.ndarray]:
    with torch.no_grad():
        logits = model(x)
    # Checked here, on every chunk, before any attack work.
    check_logits(logits, x.shape[0])
    check_label_range(y, logits.shape[1])
    return {"label": _numpy(y, np.int64), "prediction": _numpy(logits.argmax(1), np.int64),
            "margin": _numpy(logit_margin(logits, y), np.float64), "top_gap": _numpy(top_margin(logits), np.float64)}


def _attack_job(model: Callable, column: Column, x: Tensor, y: Tensor, generator: torch.Generator, rows: slice,
                keep_adversarial: bool) -> tuple[dict[str, np.ndarray], float, PassCounter]:
    counter = PassCounter(model)
    _synchronize(x.device)
    tic = time.perf_counter()
    with per_sample_gradients() as tallies:
        outcome = column.attack(counter, x, y, generator=generator, rows=rows)
    if not isinstance(outcome, ChunkOutcome):
        outcome = ChunkOutcome(outcome)
    x_adv = outcome.adversarial.detach()
    _synchronize(x.device)
    seconds = time.perf_counter() - tic
    with torch.no_grad():
        logits = model(x_adv)
    norms = norm_of(x_adv - x, column.norm)
    # Tallies of calls on the whole chunk add up per sample; an attack on subsets reports its own.
    whole = tallies and all(t.shape == y.shape for t in tallies)
    gradients = torch.stack(tallies).sum(0) if whole else torch.full_like(y, -1)
    arrays = {"success": _numpy(logits.argmax(1) != y, np.bool_), "margin": _numpy(logit_margin(logits, y), np.float64),
              "norm": _numpy(norms, np.float64), "gradients": _numpy(gradients, np.int64)}
    if column.eps is not None:
        eps = column.eps[rows] if isinstance(column.eps, Tensor) and column.eps.dim() == 1 else column.eps
        radius = torch.as_tensor(eps, dtype=x.dtype, device=x.device).expand(x.shape[0])
        # x0 + eps is rounded at the magnitude of x0, not of eps: allow that rounding.
        tolerance = 4 * torch.finfo(x.dtype).eps * (radius + norm_of(x, column.norm) + norm_of(x_adv, column.norm))
        arrays["within_eps"] = _numpy(norms <= radius + tolerance, np.bool_)
    if keep_adversarial:
        arrays["adversarial"] = x_adv.cpu().numpy()
    for name, values in outcome.arrays.items():
        arrays[name] = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if outcome.stats:
        arrays[_STATS] = np.array(json.dumps(outcome.stats, sort_keys=True))
    return arrays, seconds, counter


@dataclass
class _Job:
    model: str
    column: Column
    chunk: int

    @property
    def key(self) -> tuple[str, str, int]:
        return self.model, self.column.name, self.chunk


def run_columns(
    evaluations: dict[str, Any], columns: dict[str, Sequence[Column]], *, journal: Journal | None = None,
    shard: Shard | None = None, keep_adversarial: bool = False, desc: str = "", show_progress: bool = True,
    log: Callable[[str], None] | None = None, on_chunk: Callable[[int], None] | None = None,
) -> dict[tuple[str, str], ColumnResult]:
    """Run every column of every model, chunk by chunk, skipping chunks already in ``journal``.

    Parameters
    ----------
    evaluations : dict
        Model key -> an object with ``model``, ``chunks`` (:class:`Chunks`), ``chunk(i)`` (that
        chunk on the model's device and dtype) and ``seed``: a :class:`~mifpe_plugins.tables.Evaluation`.
    columns : dict
        Model key -> its attack columns; each model's clean column runs first.
    journal : Journal, optional
        Where finished chunks go (default: in memory).
    shard : Shard, optional
        This process's share of the jobs (default: ``torch.distributed``'s, else everything).
    keep_adversarial : bool
        Journal the adversarial inputs too.
    desc, show_progress, log :
        The progress bar's title, whether to draw it (rank 0 only), where resume notes go.
    on_chunk : callable, optional
        Called with the number of samples of every finished attack chunk.

    Returns
    -------
    dict
        (model, column name) -> :class:`ColumnResult`, every column included ``"clean"``; on
        rank 0 only (other ranks get an empty dict). If the run stops (Ctrl-C, an error), the
        exception carries the complete columns as ``error.partial_results``.
    """
    journal = journal or Journal(None, {})
    shard = shard or Shard.current()
    if shard.world > 1 and journal.folder is None:
        raise ValueError(f"{shard.world} processes share a run through its journal: give the run an output folder (out=, --out)")
    log = log or (lambda message: print(message, file=sys.stderr))
    jobs = [_Job(key, column, chunk) for key, evaluation in evaluations.items()
            for column in (Column(CLEAN, _no_attack), *columns.get(key, ())) for chunk in range(len(evaluation.chunks))]
    finished = shard.broadcast(journal.finished() if shard.rank == 0 else None)
    todo = [job for job in jobs if job.key not in finished]
    names = list(dict.fromkeys((job.model, job.column.name) for job in jobs))
    if finished and shard.rank == 0 and show_progress:
        open_columns = {(job.model, job.column.name) for job in todo}
        log(f"{desc}: resuming {journal.folder}: {len(jobs) - len(todo)} of {len(jobs)} chunks already finished "
            f"({len(names) - len(open_columns)} of {len(names)} columns complete)")
    mine = todo[shard.rank::shard.world]
    try:
        samples = sum(evaluations[job.model].chunks.count(job.chunk) for job in mine)
        with bar(total=samples, desc=desc, enabled=show_progress and shard.rank == 0, unit="sample") as progress:
            for job in mine:
                evaluation = evaluations[job.model]
                column_number = names.index((job.model, job.column.name)) + 1
                progress.set_description(f"{desc} {job.column.name} [{column_number}/{len(names)} columns, chunk "
                                         f"{job.chunk + 1}/{len(evaluation.chunks)}]".strip())
                journal.record(_run_job(evaluation, job, keep_adversarial))
                progress.update(evaluation.chunks.count(job.chunk))
                if on_chunk is not None and job.column.name != CLEAN:
                    on_chunk(evaluation.chunks.count(job.chunk))
    except BaseException as error:
        journal.close()
        if shard.world == 1:
            error.partial_results = collect(journal, evaluations, columns)
        raise
    journal.close()
    shard.barrier()
    return collect(journal, evaluations, columns) if shard.rank == 0 else {}


def _no_attack(*args, **kwargs) -> Tensor:  # the clean column's placeholder: never called
    raise AssertionError("the clean column runs no attack")


def _run_job(evaluation: Any, job: _Job, keep_adversarial: bool) -> ChunkRecord:
    x, y = evaluation.chunk(job.chunk)
    if job.column.name == CLEAN:
        return ChunkRecord(*job.key, arrays=_clean_job(evaluation.model, x, y))
    generator = chunk_generator(evaluation.seed, job.chunk, x.device)
    arrays, seconds, counter = _attack_job(evaluation.model, job.column, x, y, generator,
                                           evaluation.chunks.rows(job.chunk), keep_adversarial)
    return ChunkRecord(*job.key, arrays=arrays, seconds=seconds, forward=counter.forward_passes,
                       backward=counter.backward_passes)


def collect(journal: Journal, evaluations: dict[str, Any], columns: dict[str, Sequence[Column]]
            ) -> dict[tuple[str, str], ColumnResult]:
    """The complete columns in ``journal``, their chunks joined in sample order."""
    wanted = {(key, name): len(evaluation.chunks) for key, evaluation in evaluations.items()
              for name in (CLEAN, *(c.name for c in columns.get(key, ())))}
    parts: dict[tuple[str, str], dict[int, ChunkRecord]] = {}
    for record in journal.records():
        if (record.model, record.column) in wanted:
            parts.setdefault((record.model, record.column), {})[record.chunk] = record
    results = {}
    for key, count in wanted.items():
        chunks = parts.get(key, {})
        if len(chunks) < count:
            continue
        ordered = [chunks[i] for i in range(count)]
        arrays = {name: np.concatenate([r.arrays[name] for r in ordered]) for name in ordered[0].arrays if name != _STATS}
        stats: dict[str, float] = {}
        for record in ordered:
            for name, value in json.loads(str(record.arrays.get(_STATS, "{}"))).items():
                stats[name] = stats.get(name, 0) + value
        results[key] = ColumnResult(*key, arrays, sum(r.seconds for r in ordered), sum(r.forward for r in ordered),
                                    sum(r.backward for r in ordered), stats)
    return results


def default_threads(local_world: int | None = None) -> int:
    """Intra-op threads per process: the cores this process may use divided by the processes on
    this machine (``LOCAL_WORLD_SIZE`` under torchrun), at least 1."""
    local_world = local_world or int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_world))
