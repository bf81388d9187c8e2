"""The MIFPE paper's Tables 1-3 and the PGD++ paper's tables on any model: the engine of
``mifpe table1 / table2 / table3 / pgdpp``.

Every number is robust accuracy in % (lower = stronger attack); a sample is robust when it is
classified correctly both clean and after the attack. A table is planned as columns (one attack
with one loss on one model), run by :func:`~mifpe_plugins.engine.run_columns` chunk by chunk
(journaled, resumable, sharded under torchrun), then assembled into a :class:`Report` with the
paper's numbers beside ours. With ``out`` a table writes, as ``<name>.*``: Markdown (the papers'
layout), JSON (``Report.to_json``), a tidy CSV (one line per model x attack x loss), the
per-sample outcomes (``<name>.samples.csv``) and, with ``save_adversarial``, the adversarial
inputs (``<name>.adversarial/*.npy``).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import published
from .engine import CLEAN, Chunks, Column, ColumnResult, Shard, describe, run_columns
from .evaluate import ATTACKS
from .journal import Journal, claim
from .numerics import percent_underflowing, underflow_threshold
from .papers import PAPER_PGDPP, PAPER_TABLE1, PAPER_TABLE2, PAPER_TABLE3
from .provenance import provenance
from .reports import (
    INLINE,
    SCHEMA_VERSION,
    SKIP,
    Record,
    csv_text,
    markdown_table,
    one_line,
    text,
    write_files,
)

__all__ = [
    "AttackRow", "Cell", "ConfigurationRow", "Evaluation", "ModelRow", "PAPER_PGDPP", "PAPER_TABLE1", "PAPER_TABLE2",
    "PAPER_TABLE3", "PgdppRow", "Report", "SAMPLE_FIELDS", "TABLE1_LOSSES", "TIDY_COLUMNS", "compare_columns",
    "comparison_markdown", "pgdpp_table", "table1",
    "table2", "table3", "to_csv", "to_markdown", "write_files", "write_report",
]

TABLE1_LOSSES = ("ce", "cw", "dlr", "mifpe")

#: The PGD++ tables' columns: title -> (norm, label in ``diagnose.pgdpp_attacks``).
_PGDPP_COLUMNS = {
    "FGSM": ("linf", "FGSM CE"), "FGSM beta=0.1": ("linf", "FGSM beta = 0.1"), "FGSM++ NJS": ("linf", "FGSM NJS"),
    "FGSM++ HNS": ("linf", "FGSM HNS"), "PGD": ("linf", "PGD CE"), "PGD beta=0.1": ("linf", "PGD beta = 0.1"),
    "PGD++ NJS": ("linf", "PGD NJS"), "PGD++ HNS": ("linf", "PGD HNS"), "L2 PGD": ("l2", "PGD CE"),
    "L2 PGD++ NJS": ("l2", "PGD NJS"), "L2 PGD++ HNS": ("l2", "PGD HNS"),
}

# Table 3's rows: PGD-100 with the best point kept, adding APGD-style momentum, then the schedule.
TABLE3_CONFIGS = {
    "PGD": {"momentum": None, "schedule": "constant"},
    "+ momentum": {"momentum": 0.75, "schedule": "constant"},
    "+ step-size schedule": {"momentum": 0.75, "schedule": "linear"},
}

#: The CSV's columns: one line per model x attack x loss; empty where a value was not computed
#: (or, for the paper, where the paper has no number).
TIDY_COLUMNS = ("model", "attack", "loss", "robust_accuracy", "clean_accuracy", "paper_robust_accuracy", "n", "seconds",
                "forward_passes", "backward_passes", "interrupted")

#: Per attack column of ``<name>.samples.csv``: ``<column>/<field>``.
SAMPLE_FIELDS = ("success", "margin", "norm", "gradients")


@dataclass
class Cell:
    """One attack's outcome on the whole evaluation set: robust accuracy in %, attack seconds
    (summed over chunks), samples passed forward and backward, and per-sample robustness."""

    robust_accuracy: float
    seconds: float
    forward_passes: int
    backward_passes: int
    robust: np.ndarray = field(repr=False)

    def to_json(self) -> dict:
        return {"robust_accuracy": self.robust_accuracy, "seconds": round(self.seconds, 3),
                "forward_passes": self.forward_passes, "backward_passes": self.backward_passes}


def _measured(cell: Cell | None) -> dict:
    return cell.to_json() if cell is not None else dict.fromkeys(("robust_accuracy", "seconds", "forward_passes", "backward_passes"))


def percent(mask: np.ndarray) -> float:
    """The share of True in a per-sample mask, in %."""
    # From the integer count, so that 937 of 1000 prints as 93.7, not 93.69999694824219.
    return round(100 * int(mask.sum()) / mask.size, 10) if mask.size else math.nan


def _clean_correct(clean: ColumnResult) -> np.ndarray:
    return clean.arrays["prediction"] == clean.arrays["label"]


def column_cell(results: dict, model: str, column: str) -> Cell | None:
    """The column's cell, when the column and its model's clean pass are complete."""
    result, clean = results.get((model, column)), results.get((model, CLEAN))
    if result is None or clean is None:
        return None
    robust = _clean_correct(clean) & ~result.arrays["success"]
    return Cell(percent(robust), result.seconds, result.forward_passes, result.backward_passes, robust)


def clean_summary(clean: ColumnResult, dtype: torch.dtype) -> dict:
    """Clean accuracy, and the share of correctly classified samples whose top-2 logit gap
    exceeds lambda of the dtype."""
    correct = _clean_correct(clean)
    gaps = clean.arrays["top_gap"][correct]
    return {"clean_accuracy": percent(correct), "lambda": underflow_threshold(dtype),
            "margin_median": float(np.median(gaps)) if gaps.size else math.nan,
            "share_of_margins_above_lambda": percent_underflowing(torch.from_numpy(gaps), dtype)}


@dataclass
class Evaluation:
    """A model, an evaluation set and the budget every attack of a table shares.

    Parameters
    ----------
    model : nn.Module
        In eval mode, on ``device`` in ``dtype``.
    inputs, labels : Tensor
        The evaluation set (any device: each chunk is moved to ``device`` when it is attacked); or
        ``inputs`` a map-style dataset of ``(input, label)`` items and ``labels=None``.
    eps : float
        L-inf radius.
    steps : int
        Iterations of PGD and APGD (100 in the paper).
    batch_size : int
        Samples per chunk: every attack runs on one chunk at a time, and the chunk size is part of
        the result (chunk i's randomness is seeded by (seed, i)).
    seed : int
        Seeds every chunk's generator (and AutoAttack's own seed).
    show_progress : bool
        Draw the progress bar on stderr.
    device, dtype : optional
        Where and in which dtype the attacks run; default the inputs' (the model's for a dataset).
    """

    model: nn.Module
    inputs: Tensor | Any
    labels: Tensor | None = None
    _: KW_ONLY
    eps: float
    steps: int = 100
    batch_size: int = 250
    seed: int = 0
    show_progress: bool = True
    device: torch.device | str | None = None
    dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        self.chunks = Chunks(self.inputs, self.labels, size=self.batch_size)
        tensors = itertools.chain(self.model.parameters(), self.model.buffers()) if isinstance(self.model, nn.Module) else ()
        reference = next((t for t in tensors if t.is_floating_point()), None)
        given = self.inputs if isinstance(self.inputs, Tensor) else reference
        self.device = torch.device(self.device if self.device is not None else given.device if given is not None else "cpu")
        if self.dtype is None:
            self.dtype = given.dtype if given is not None and given.is_floating_point() else torch.float32

    @property
    def n(self) -> int:
        return self.chunks.n

    def chunk(self, index: int) -> tuple[Tensor, Tensor]:
        """Chunk ``index`` on the evaluation's device, inputs in its dtype."""
        x, y = self.chunks[index]
        return x.to(device=self.device, dtype=self.dtype), y.to(self.device)

    def materialise(self, n: int | None = None) -> tuple[Tensor, Tensor]:
        """The first ``n`` samples (default all) as two tensors on the device."""
        parts = [self.chunk(i) for i in range(len(self.chunks)) if self.chunks.rows(i).start < (self.n if n is None else n)]
        return tuple(torch.cat(p)[:n] for p in zip(*parts, strict=True)) if parts else (torch.empty(0), torch.empty(0))

    def settings(self) -> dict:
        """What a report says about the run besides its provenance."""
        return {"device": str(self.device), "dtype": str(self.dtype).removeprefix("torch."), "n": self.n,
                "eps": self.eps, "steps": self.steps, "seed": self.seed, "batch_size": self.batch_size}

    def core(self, attack: str, loss: str | Callable, name: str, *, loss_name: str | None = None, **kwargs) -> Column:
        """The column of a core attack (``fgsm``, ``pgd``, ``apgd``) with ``loss``; ``kwargs`` go to
        the attack (``eps`` defaults to the evaluation's, ``steps`` too but for FGSM)."""
        if attack != "fgsm":
            kwargs.setdefault("steps", self.steps)
        eps, function = kwargs.pop("eps", self.eps), ATTACKS[attack]

        def run(model: Callable, x: Tensor, y: Tensor, *, generator: torch.Generator, rows: slice) -> Tensor:
            return function(model, x, y, eps=eps, loss=loss, generator=generator, **kwargs)

        return Column(name, run, norm=kwargs.get("norm", "linf"), eps=eps,
                      settings=describe({"attack": attack, "loss": loss_name or loss, "eps": eps, **kwargs}))

    def autoattack(self, loss: str, name: str) -> Column:
        """The column of AutoAttack (standard version, L-inf) with its own losses (``loss="original"``)
        or with MIFPE in APGD and APGD-T (``loss="mifpe"``), run on each chunk with ``bs`` = the chunk."""
        from .adapters import autoattack as aa

        common = {"norm": "Linf", "eps": self.eps, "version": "standard", "device": self.device, "seed": self.seed,
                  "verbose": False}
        with torch.no_grad():
            classes = int(self.model(self.chunk(0)[0][:1]).shape[1]) if self.n else 2

        def run(model: Callable, x: Tensor, y: Tensor, *, generator: torch.Generator, rows: slice) -> Tensor:
            adversary = stock_autoattack(model, **common) if loss == "original" else aa.mifpe_autoattack(model, loss=loss, **common)
            for member in ("apgd_targeted", "fab"):
                attack = getattr(adversary, member, None)
                if attack is not None and hasattr(attack, "n_target_classes"):
                    attack.n_target_classes = min(attack.n_target_classes, classes - 1)
            return aa.run_standard_evaluation(adversary, x, y, batch_size=x.shape[0])[0]

        return Column(name, run, eps=self.eps, settings={"attack": "autoattack", "loss": loss, "version": "standard",
                                                         "distribution": aa.describe_distribution()})


# The records: one row type per table (its JSON keys, its tidy CSV lines), and the report.


@dataclass
class AttackRow(Record):
    """Table 2: one attack with its original loss and with MIFPE (``None``: not computed yet)."""

    attack: str
    original_loss: str
    original: Cell
    paper: dict
    mifpe: Cell | None = None
    boost: float | None = None

    def records(self, report: Report) -> list[dict]:
        return [{"attack": self.attack, "loss": loss, **_measured(cell), "paper_robust_accuracy": self.paper[key]}
                for key, loss, cell in (("original", self.original_loss, self.original), ("mifpe", "mifpe", self.mifpe))]


@dataclass
class ModelRow(Record):
    """Table 1: one model's clean accuracy and margins, PGD per loss, AutoAttack, the worst case."""

    model: str
    summary: dict = field(metadata=INLINE)
    pgd: dict[str, Cell] = field(default_factory=dict)
    paper: dict | None = None
    autoattack: Cell | None = None
    worst_case: float | None = None

    def records(self, report: Report) -> list[dict]:
        paper, ran_autoattack = self.paper or {"pgd": {}}, "autoattack_distribution" in report.provenance
        lines = [(f"PGD-{report.settings['steps']}", loss, _measured(self.pgd.get(loss)), paper["pgd"].get(loss))
                 for loss in report.settings["losses"]]
        lines += [("AutoAttack", "standard", _measured(self.autoattack), None)] if ran_autoattack else []
        # Robust against every attack above, per sample; the paper's best known attack beside it.
        lines += [("worst case", None, {"robust_accuracy": self.worst_case}, paper.get("best"))]
        return [{"model": self.model, "clean_accuracy": self.summary["clean_accuracy"], "attack": attack, "loss": loss,
                 **measured, "paper_robust_accuracy": value} for attack, loss, measured, value in lines]


@dataclass
class ConfigurationRow(Record):
    """Table 3: one PGD configuration, per loss."""

    configuration: str
    momentum: float | None
    schedule: str
    results: dict[str, Cell]
    paper: dict

    def records(self, report: Report) -> list[dict]:
        names = list(TABLE3_CONFIGS)  # the configurations add up: "+ step-size schedule" keeps the momentum
        attack = " ".join([f"PGD-{report.settings['steps']}", *names[1:names.index(self.configuration) + 1]])
        return [{"attack": attack, "loss": loss, **_measured(self.results.get(loss)), "paper_robust_accuracy": self.paper.get(loss)}
                for loss in report.settings["losses"]]


@dataclass
class PgdppRow(Record):
    """The PGD++ tables: one model's robust accuracy per column, and its mean CLEVER scores."""

    model: str
    clean_accuracy: float
    results: dict[str, float]
    paper: dict | None = None
    clever: dict | None = None

    def records(self, report: Report) -> list[dict]:
        paper = (self.paper or {}).get("results", {})
        return [{"model": self.model, "clean_accuracy": self.clean_accuracy, "attack": ("L2 " if norm == "l2" else "") + label.split()[0],
                 "loss": label.split(" ", 1)[1].lower(), "robust_accuracy": self.results.get(column),
                 "paper_robust_accuracy": paper.get(column)} for column, (norm, label) in _PGDPP_COLUMNS.items()]


@dataclass
class Report(Record):
    """A table's result: where it came from, how it ran, what it measured, whether it finished.

    ``summary`` holds the clean accuracy and margins of a one-model table (empty otherwise);
    ``interrupted`` says why a partial report stopped. :meth:`to_json` writes the report with
    ``schema_version``; :meth:`records` is its tidy form, the CSV's lines; ``results`` holds the
    per-sample outcomes of every column, :meth:`samples` their tidy form (``<name>.samples.csv``);
    ``files`` lists what was written.
    """

    table: str
    provenance: dict = field(metadata=INLINE)
    settings: dict = field(metadata=INLINE)
    summary: dict = field(default_factory=dict, metadata=INLINE)
    rows: list = field(default_factory=list)
    interrupted: str | None = None
    results: dict[tuple[str, str], ColumnResult] = field(default_factory=dict, repr=False, metadata=SKIP)
    files: list[Path] = field(default_factory=list, repr=False, metadata=SKIP)

    def to_json(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, **super().to_json()}

    def records(self) -> list[dict]:
        """One dict per model x attack x loss, keys from :data:`TIDY_COLUMNS`."""
        common = {"model": self.settings.get("model"), "clean_accuracy": self.summary.get("clean_accuracy"),
                  "n": self.settings["n"], "interrupted": self.interrupted}
        return [{**common, **record} for row in self.rows for record in row.records(self)]

    def samples(self) -> tuple[list[str], list[list]]:
        """The per-sample outcomes as (header, rows): one row per model x sample with its label,
        clean prediction and margin, then per attack column its success (the adversarial input is
        misclassified; robust = clean correct and not success), final margin z_y - max other,
        perturbation norm and loss-gradient evaluations (empty where the attack does not count
        them, as AutoAttack's). Floats are written exactly (shortest round-trip form)."""
        names = list(dict.fromkeys(column for _, column in self.results if column != CLEAN))
        header = ["model", "sample", "label", "clean_prediction", "clean_margin",
                  *(f"{name}/{f}" for name in names for f in SAMPLE_FIELDS)]
        rows: list[list] = []
        for model in dict.fromkeys(model for model, _ in self.results):
            clean = self.results.get((model, CLEAN))
            if clean is None:
                continue
            columns = [[model] * clean.n, range(clean.n), *(clean.arrays[k].tolist() for k in ("label", "prediction", "margin"))]
            for name in names:
                result = self.results.get((model, name))
                if result is None:
                    columns += [[None] * clean.n] * len(SAMPLE_FIELDS)
                    continue
                gradients = [None if g < 0 else g for g in result.arrays["gradients"].tolist()]
                columns += [result.arrays["success"].astype(np.int8).tolist(), result.arrays["margin"].tolist(),
                            result.arrays["norm"].tolist(), gradients]
            rows += [list(row) for row in zip(*columns, strict=True)]
        return header, rows

    def to_pandas(self, *, samples: bool = False) -> Any:
        """The tidy table (or, with ``samples=True``, the per-sample outcomes) as a pandas DataFrame."""
        import pandas as pd

        if samples:
            header, rows = self.samples()
            return pd.DataFrame(rows, columns=header)
        return pd.DataFrame(self.records(), columns=TIDY_COLUMNS)


def new_report(table: str, evaluation: Evaluation, command: str, extra: dict | None, *, autoattack: bool = False,
               **settings) -> Report:
    """A report of ``table`` with its provenance (and AutoAttack's distribution) and settings."""
    origin = provenance(command)
    if autoattack:  # which AutoAttack distribution and version runs (the adapter's default)
        from .adapters import autoattack as aa

        origin["autoattack_distribution"] = aa.describe_distribution()
    return Report(table, origin, {**evaluation.settings(), **(extra or {}), **settings})


def _stopped(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted by Ctrl-C"
    return f"stopped by an error: {one_line(error)}"


def run_report(
    report: Report, evaluations: dict[str, Evaluation], columns: dict[str, list[Column]],
    assemble: Callable[[Report, dict], None], *, out: str | Path | None, name: str | None, resume: bool,
    overwrite: bool, save_adversarial: bool,
) -> Report:
    """Run a table's columns through the engine and assemble its report; with ``out``, journal the
    run in ``out/<name>.journal`` and write the report files. If the run stops, the exception
    carries the report of the complete columns (``partial_report``) and the files written (``saved``)."""
    first = next(iter(evaluations.values()))
    shard = Shard.current()
    # Where eps came from (a default or --eps) does not change a number: it is not a setting to resume by.
    settings = {**{k: v for k, v in report.settings.items() if k != "eps_source"}, "table": report.table,
                "device": first.device.type, "save_adversarial": save_adversarial,
                "mifpe_plugins": report.provenance.get("mifpe_plugins"),
                "columns": {model: {c.name: c.settings for c in cols} for model, cols in columns.items()}}
    stem = name or report.table
    journal = Journal(None if out is None else Path(out) / f"{stem}.journal", describe(settings), rank=shard.rank)
    if out is not None and shard.rank == 0:
        claim(Path(out), stem, journal, resume=resume, overwrite=overwrite)
    shard.barrier()
    try:
        results = run_columns(evaluations, columns, journal=journal, shard=shard, keep_adversarial=save_adversarial,
                              desc=report.table, show_progress=first.show_progress)
    except BaseException as error:
        partial = getattr(error, "partial_results", {})
        if any(column != CLEAN for _, column in partial):
            report.results, report.interrupted = partial, _stopped(error)
            assemble(report, partial)
            error.partial_report = report
            error.saved = write_report(report, out, stem) if out is not None else []
        raise
    if shard.rank == 0:
        report.results = results
        assemble(report, results)
        if out is not None:
            report.files = write_report(report, out, stem)
    return report


def model_key(extra: dict | None) -> str:
    """The key of a one-model report's model: its spec, or "model" in the Python API."""
    return str((extra or {}).get("model", "model"))


def table2(
    evaluation: Evaluation, *, attacks: Sequence[str] = ("fgsm", "pgd", "apgd", "autoattack"), command: str = "",
    extra: dict | None = None, out: str | Path | None = None, name: str | None = None, resume: bool = False,
    overwrite: bool = False, save_adversarial: bool = False,
) -> Report:
    """The MIFPE paper's Table 2: each attack with its original loss and with MIFPE, and the boost.

    FGSM and PGD-``steps`` (the Table-1 protocol) use CE originally; APGD-``steps`` uses DLR
    (APGD_DLR); AutoAttack is the standard version, with MIFPE in its APGD and APGD-T.

    The run options, shared by every table function: ``out`` is the folder of the report files
    and the journal (``None``: nothing written, the journal in memory); ``name`` the files' stem
    (default the table's name); ``resume`` continues the journal of a run with the same name and
    settings, ``overwrite`` replaces it (with neither, an existing run is an error);
    ``save_adversarial`` also writes the adversarial inputs. If the run stops (Ctrl-C, an error),
    the exception carries the report of the finished columns as ``partial_report``.
    """
    steps = evaluation.steps
    plan = {"fgsm": ("FGSM", "ce", "FGSM"), "pgd": (f"PGD-{steps}", "ce", "PGD-100"),
            "apgd": (f"APGD_DLR-{steps}", "dlr", "APGD_DLR-100"), "autoattack": ("AutoAttack", "standard", "AA (4900)")}
    unknown = [a for a in attacks if a not in plan]
    if unknown:
        raise ValueError(f"unknown attack(s) {unknown}; choose from {', '.join(plan)}")
    model = model_key(extra)
    report = new_report("table2", evaluation, command, extra, autoattack="autoattack" in attacks)
    columns = []
    for key in attacks:
        title, original_loss, _ = plan[key]
        for loss in (original_loss, "mifpe"):
            columns.append(evaluation.autoattack("original" if loss == "standard" else loss, f"{title} {loss}")
                           if key == "autoattack" else evaluation.core(key, loss, f"{title} {loss}"))

    def assemble(report: Report, results: dict) -> None:
        if (model, CLEAN) in results:
            report.summary = clean_summary(results[(model, CLEAN)], evaluation.dtype)
        for key in attacks:
            title, original_loss, paper_key = plan[key]
            original = column_cell(results, model, f"{title} {original_loss}")
            if original is None:
                continue
            paper = {"attack": paper_key, **dict(zip(("original", "mifpe"), PAPER_TABLE2[paper_key], strict=True))}
            mifpe = column_cell(results, model, f"{title} mifpe")
            report.rows.append(AttackRow(title, original_loss, original, paper, mifpe,
                                         None if mifpe is None else round(original.robust_accuracy - mifpe.robust_accuracy, 10)))

    return run_report(report, {model: evaluation}, {model: columns}, assemble, out=out, name=name, resume=resume,
                    overwrite=overwrite, save_adversarial=save_adversarial)


def table1(
    evaluations: dict[str, Evaluation], *, losses: Sequence[str] = TABLE1_LOSSES, autoattack: bool = True,
    command: str = "", extra: dict | None = None, out: str | Path | None = None, name: str | None = None,
    resume: bool = False, overwrite: bool = False, save_adversarial: bool = False,
) -> Report:
    """The MIFPE paper's Table 1: PGD-``steps`` per loss on each model, clean accuracy, AutoAttack
    (the "best" column) and the per-sample worst case over every attack run. Run options as in
    :func:`table2`."""
    first = next(iter(evaluations.values()))
    report = new_report("table1", first, command, extra, autoattack=autoattack, losses=list(losses))
    columns = {model: [*(e.core("pgd", loss, f"PGD-{e.steps} {loss}") for loss in losses),
                       *([e.autoattack("original", "AutoAttack standard")] if autoattack else [])]
               for model, e in evaluations.items()}

    def assemble(report: Report, results: dict) -> None:
        for model, evaluation in evaluations.items():
            if (model, CLEAN) not in results:
                continue
            paper = (published.paper_table1(model.removeprefix("published:")) if model.startswith("published:")
                     else PAPER_TABLE1.get(model.removeprefix("zoo:")))
            row = ModelRow(model, clean_summary(results[(model, CLEAN)], evaluation.dtype),
                           paper=dict(zip(("row", "clean_accuracy", "pgd", "best"), paper, strict=True)) if paper else None)
            row.pgd = {loss: cell for loss in losses if (cell := column_cell(results, model, f"PGD-{evaluation.steps} {loss}"))}
            row.autoattack = column_cell(results, model, "AutoAttack standard") if autoattack else None
            cells = [*row.pgd.values(), *([row.autoattack] if row.autoattack else [])]
            if len(cells) == len(columns[model]):  # robust against every attack, per sample
                row.worst_case = percent(np.logical_and.reduce([cell.robust for cell in cells]))
            if cells:
                report.rows.append(row)

    return run_report(report, evaluations, columns, assemble, out=out, name=name, resume=resume, overwrite=overwrite,
                    save_adversarial=save_adversarial)


def table3(
    evaluation: Evaluation, *, losses: Sequence[str] = TABLE1_LOSSES, command: str = "", extra: dict | None = None,
    out: str | Path | None = None, name: str | None = None, resume: bool = False, overwrite: bool = False,
    save_adversarial: bool = False,
) -> Report:
    """The MIFPE paper's Table 3 (ablation): PGD-``steps`` per loss, plain (constant step
    2.5 eps / steps), then with momentum 0.75, then with the 2 eps (1 - i / I) schedule. Run
    options as in :func:`table2`."""
    model = model_key(extra)
    report = new_report("table3", evaluation, command, extra, losses=list(losses))
    columns = [evaluation.core("pgd", loss, f"{config} {loss}", **settings)
               for config, settings in TABLE3_CONFIGS.items() for loss in losses]

    def assemble(report: Report, results: dict) -> None:
        if (model, CLEAN) in results:
            report.summary = clean_summary(results[(model, CLEAN)], evaluation.dtype)
        for config, settings in TABLE3_CONFIGS.items():
            cells = {loss: cell for loss in losses if (cell := column_cell(results, model, f"{config} {loss}"))}
            if cells:
                report.rows.append(ConfigurationRow(config, **settings, results=cells, paper=PAPER_TABLE3[config]))

    return run_report(report, {model: evaluation}, {model: columns}, assemble, out=out, name=name, resume=resume,
                    overwrite=overwrite, save_adversarial=save_adversarial)


def pgdpp_table(
    evaluations: dict[str, Evaluation], *, l2_eps: float, clever_samples: int = 0, clever_batches: int = 50,
    command: str = "", extra: dict | None = None, out: str | Path | None = None, name: str | None = None,
    resume: bool = False, overwrite: bool = False, save_adversarial: bool = False,
) -> Report:
    """The PGD++ paper's Tables 2-5 on each model: FGSM / PGD with CE against FGSM++ / PGD++ (NJS,
    HNS) and the beta = 0.1 heuristic, L-inf and L2 (``steps`` iterations, constant step eps/4 or
    eps/8, the last iterate); with ``clever_samples > 0`` also Table 11's mean CLEVER scores
    (computed after the attacks, by rank 0, not journaled). Run options as in :func:`table2`."""
    from .diagnose import clever, pgdpp_attacks

    first = next(iter(evaluations.values()))
    report = new_report("pgdpp", first, command, extra, l2_eps=l2_eps, columns=list(_PGDPP_COLUMNS),
                     clever_samples=clever_samples, clever_batches=clever_batches)

    def planned(evaluation: Evaluation) -> list[Column]:
        protocol = pgdpp_attacks(eps=evaluation.eps, l2_eps=l2_eps, steps=evaluation.steps)
        columns = []
        for title, (norm, label) in _PGDPP_COLUMNS.items():
            attack, kwargs = protocol[norm, label]
            columns.append(evaluation.core(attack, kwargs.pop("loss"), title, loss_name=label, **kwargs))
        return columns

    columns = {model: planned(e) for model, e in evaluations.items()}

    def assemble(report: Report, results: dict) -> None:
        for model in evaluations:
            if (model, CLEAN) not in results:
                continue
            cells = {title: cell.robust_accuracy for title in _PGDPP_COLUMNS if (cell := column_cell(results, model, title))}
            paper = PAPER_PGDPP.get(model.removeprefix("zoo:"))
            if cells:
                report.rows.append(PgdppRow(model, percent(_clean_correct(results[(model, CLEAN)])), cells,
                                            paper={"row": paper[0], "results": paper[1]} if paper else None))

    report = run_report(report, evaluations, columns, assemble, out=out, name=name, resume=resume, overwrite=overwrite,
                      save_adversarial=save_adversarial)
    if clever_samples and report.rows:
        for row in report.rows:
            evaluation = evaluations[row.model]
            row.clever = clever(evaluation.model, evaluation.materialise(clever_samples)[0], samples=clever_samples,
                                batches=clever_batches, seed=evaluation.seed)["means"]
        if out is not None:
            report.files = write_report(report, out, name or report.table)
    return report


# ----------------------------------------------------------------------------------------------
# Rendering: each table's Markdown layout as (caption, column titles, rows of values), drawn by
# reports.markdown_table; the CSV is the report's tidy records.
# ----------------------------------------------------------------------------------------------

_LOSS_TITLES = {"ce": "CE", "cw": "C&W", "dlr": "DLR", "mifpe": "MIFPE"}
Layout = list[tuple[str, list[str], list[list]]]


def _acc(cell: Cell | None) -> float | None:
    return None if cell is None else cell.robust_accuracy


def _table2_layout(report: Report) -> Layout:
    rows = report.rows
    seconds = [" / ".join("–" if c is None else f"{c.seconds:.1f}" for c in (r.original, r.mifpe)) for r in rows]
    papers = [r.paper for r in rows]
    return [
        ("", ["", *(r.attack for r in rows)], [
            ["original loss", *(f"{text(r.original.robust_accuracy)} ({r.original_loss})" for r in rows)],
            ["MIFPE loss", *(_acc(r.mifpe) for r in rows)], ["boost", *(r.boost for r in rows)],
            ["seconds, original / MIFPE", *seconds]]),
        ("The paper's Table 2 (CIFAR-10 Neural level sets RN-18, eps 0.031):", ["", *(p["attack"] for p in papers)], [
            ["original loss", *(p["original"] for p in papers)], ["MIFPE loss", *(p["mifpe"] for p in papers)],
            ["boost", *(p["original"] - p["mifpe"] for p in papers)]]),
    ]


def _table1_layout(report: Report) -> Layout:
    losses = report.settings["losses"]
    known = [x for x in losses if x in TABLE1_LOSSES]
    return [
        ("", ["model", "clean", *(f"{_LOSS_TITLES.get(x, x)} PGD" for x in losses), "AutoAttack", "worst case", "margins > λ %"],
         [[r.model, r.summary["clean_accuracy"], *(_acc(r.pgd.get(x)) for x in losses), _acc(r.autoattack), r.worst_case,
           f"{r.summary['share_of_margins_above_lambda']:.1f}"] for r in report.rows]),
        ("The paper's Table 1 rows these models stand in for (MNIST eps 0.3, CIFAR-10 eps 8/255):",
         ["our model", "paper row", "clean", *(f"{_LOSS_TITLES[x]} PGD" for x in known), "best (>= 4900 its)"],
         [[r.model, r.paper["row"], r.paper["clean_accuracy"], *(r.paper["pgd"][x] for x in known), r.paper["best"]]
          for r in report.rows if r.paper]),
    ]


def _table3_layout(report: Report) -> Layout:
    losses = report.settings["losses"]
    head = ["configuration", *(_LOSS_TITLES.get(x, x) for x in losses)]
    return [
        ("", head, [[r.configuration, *(_acc(r.results.get(x)) for x in losses)] for r in report.rows]),
        ("The paper's Table 3 (CIFAR-10, PGD-100; numbers of the TRADES WRN-34-10 row):", head,
         [[r.configuration, *(r.paper.get(x) for x in losses)] for r in report.rows]),
    ]


def _pgdpp_layout(report: Report) -> Layout:
    columns = report.settings["columns"]
    rules = ("original", "heuristic", "njs", "hns") if any(r.clever for r in report.rows) else ()
    return [
        ("", ["model", "clean", *columns, *(f"CLEVER {rule}" for rule in rules)],
         [[r.model, r.clean_accuracy, *(r.results.get(c) for c in columns),
           *(f"{r.clever[rule]:.4f}" if r.clever else None for rule in rules)] for r in report.rows]),
        ("The PGD++ paper's CIFAR-10 ResNet-18 rows these models stand in for (L-inf 8/255, L2 120/255; Table 11 "
         "CLEVER on BNN-WQ / BNN-WAQ: original 0.8585 / 0.7239, beta = 0.01 0.8845 / 3.1578, NJS 0.4139 / 0.3120, "
         "HNS 0.3450 / 0.2774):", ["our model", "paper row", *columns],
         [[r.model, r.paper["row"], *(r.paper["results"].get(c) for c in columns)] for r in report.rows if r.paper]),
    ]


LAYOUTS: dict[str, Callable[[Report], Layout]] = {
    "table1": _table1_layout, "table2": _table2_layout, "table3": _table3_layout, "pgdpp": _pgdpp_layout,
}


def to_markdown(report: Report) -> str:
    """The report as Markdown: its setting, our table, the paper's numbers, the provenance."""
    settings, summary, origin = report.settings, report.summary, report.provenance
    threat = (f"L-inf eps = {settings['eps']:g}" + (f" ({settings['eps_source']})" if settings.get("eps_source") else "")
              + (f", L2 eps = {settings['l2_eps']:g}" if "l2_eps" in settings else ""))
    lines = [f"Robust accuracy %, lower = stronger attack. {settings['n']} samples, {threat}, {settings['steps']} "
             f"iterations, {settings['dtype']} on {settings['device']}, seed {settings['seed']}."]
    if report.interrupted:
        lines.insert(0, f"**Partial result: {report.interrupted}.** Cells marked – were not computed; the others are final.\n")
    if summary:
        lines.append(f"Clean accuracy {summary['clean_accuracy']:.2f} %; {summary['share_of_margins_above_lambda']:.1f} % of "
                     f"the correctly classified samples have a top-2 logit gap above lambda = {summary['lambda']:.2f} "
                     f"(median {summary['margin_median']:.1f}).")
    for caption, head, body in LAYOUTS[report.table](report):
        if not head:  # a note under the tables
            lines += ["", caption]
        elif body or not caption:
            lines += ["", *([caption, ""] if caption else []), *markdown_table(head, body)]
    autoattack = f"AutoAttack: {origin['autoattack_distribution']}, " if "autoattack_distribution" in origin else ""
    lines += ["", f"`{origin['command']}` — mifpe_plugins {origin['mifpe_plugins']} (commit {origin['commit']}), "
              f"torch {origin['torch']}, {autoattack}{origin['machine']}, {origin['date']}."]
    return "\n".join(lines) + "\n"


def to_csv(report: Report) -> str:
    """The report's tidy table: one line per model x attack x loss under :data:`TIDY_COLUMNS`,
    numbers as numbers, empty cells where nothing was computed (``interrupted`` says why)."""
    return csv_text(TIDY_COLUMNS, report.records())


def write_report(report: Report, out_dir: str | Path, stem: str | None = None) -> list[Path]:
    """Write ``<stem>.md``, ``.json``, ``.csv``, the per-sample ``<stem>.samples.csv`` and, where the
    columns kept them, ``<stem>.adversarial/<model>--<column>.npy`` into ``out_dir`` (atomically, as
    one set: see :func:`~mifpe_plugins.reports.write_files`); return the paths."""
    stem = stem or report.table
    title = f"# {stem}" + (" (partial)" if report.interrupted else "")
    files: dict[str, str | bytes] = {
        f"{stem}.md": f"{title}\n\n" + to_markdown(report),
        f"{stem}.json": json.dumps(report.to_json(), indent=2) + "\n",
        f"{stem}.csv": to_csv(report),
    }
    if report.results:
        header, rows = report.samples()
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        files[f"{stem}.samples.csv"] = buffer.getvalue()
    paths = write_files(out_dir, files)
    adversarial = {f"{_file_name(model)}--{_file_name(column)}.npy": _npy(result.arrays["adversarial"])
                   for (model, column), result in report.results.items() if "adversarial" in result.arrays}
    return paths + (write_files(Path(out_dir) / f"{stem}.adversarial", adversarial) if adversarial else [])


def _file_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def compare_columns(samples: str | Path, first: str, second: str, *, model: str | None = None) -> dict:
    """Per-sample disagreement of two attack columns of a ``<name>.samples.csv``.

    Among the samples classified correctly clean: how many each column leaves robust, how many
    both do (the per-sample worst case of the two), and the indices of the samples each one fools
    that the other does not. ``model`` picks one model of a multi-model table (default: the only one).
    """
    with open(samples, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    names = sorted({key.rsplit("/", 1)[0] for key in (rows[0] if rows else {}) if key.endswith("/success")})
    for column in (first, second):
        if column not in names:
            raise ValueError(f"{samples} has no column {column!r}; its columns are {', '.join(names) or 'none'}")
    models = sorted({row["model"] for row in rows})
    if model is None and len(models) > 1:
        raise ValueError(f"{samples} holds several models ({', '.join(models)}): choose one with --model")
    chosen = [row for row in rows if model is None or row["model"] == model]
    if not chosen:
        raise ValueError(f"{samples} has no model {model!r}; its models are {', '.join(models)}")
    correct = [row for row in chosen if row["label"] == row["clean_prediction"]]
    if any(row[f"{c}/success"] == "" for row in correct for c in (first, second)):
        raise ValueError(f"{samples}: {first!r} or {second!r} was not computed for every sample (a partial run)")
    fooled = {c: {int(row["sample"]) for row in correct if row[f"{c}/success"] == "1"} for c in (first, second)}
    n = len(chosen)
    return {"samples": str(samples), "model": chosen[0]["model"], "n": n, "clean_correct": len(correct),
            "robust": {c: round(100 * (len(correct) - len(fooled[c])) / n, 10) for c in (first, second)},
            "robust_both": round(100 * (len(correct) - len(fooled[first] | fooled[second])) / n, 10),
            "only_first_fools": sorted(fooled[first] - fooled[second]), "only_second_fools": sorted(fooled[second] - fooled[first]),
            "first": first, "second": second}


def comparison_markdown(comparison: dict) -> str:
    """A comparison of :func:`compare_columns` for people."""
    first, second, robust = comparison["first"], comparison["second"], comparison["robust"]
    lines = [f"{comparison['model']}, {comparison['n']} samples ({comparison['clean_correct']} correct clean), "
             f"from `{comparison['samples']}`:", "",
             *markdown_table(["", "robust accuracy %", "fools, the other does not"], [
                 [first, robust[first], len(comparison["only_first_fools"])],
                 [second, robust[second], len(comparison["only_second_fools"])],
                 ["both (per-sample worst case)", comparison["robust_both"], ""]]), ""]
    for key, column in (("only_first_fools", first), ("only_second_fools", second)):
        indices = comparison[key]
        lines.append(f"Samples only {column} fools: " + (", ".join(map(str, indices)) if indices else "none") + ".")
    return "\n".join(lines) + "\n"


def stock_autoattack(model: Callable[[Tensor], Tensor], norm: str | float = "Linf", eps: float = 8 / 255, **kwargs) -> object:
    """The host's own, unmodified AutoAttack: the baseline of the MIFPE paper's Table 2.

    Built with exactly the argument handling of ``mifpe_autoattack`` (its ``loss=None``), so that the
    two differ only in the loss; either distribution's constructor is called in its own spelling.

    Args:
        model, norm, eps: as in ``mifpe_plugins.adapters.autoattack.mifpe_autoattack``.
        **kwargs: its keyword arguments but ``loss`` and ``temperature`` (version, device, seed,
            verbose, log_path, attacks_to_run, distribution, the host's own).

    Run it through ``mifpe_plugins.adapters.autoattack.run_standard_evaluation`` to keep the
    caller's global RNG.
    """
    from .adapters.autoattack import mifpe_autoattack

    return mifpe_autoattack(model, norm, eps, loss=None, **kwargs)
