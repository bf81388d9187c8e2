"""The MIFPE paper's Tables 1-3 and the PGD++ paper's tables on any model: the engine of
``mifpe table1 / table2 / table3 / pgdpp``.

Every number is robust accuracy in % (lower = stronger attack); a sample is robust when it is
classified correctly both clean and after the attack. Each function returns a :class:`Report`
with the paper's numbers beside ours; :func:`write_report` writes it as Markdown (the papers'
layout), JSON (``Report.to_json``) and a tidy CSV (one line per model x attack x loss).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from . import published
from .evaluate import evaluate
from .losses import top_margin
from .numerics import percent_underflowing, underflow_threshold
from .papers import PAPER_PGDPP, PAPER_TABLE1, PAPER_TABLE2, PAPER_TABLE3
from .progress import bar, keep_partial, log_above_bars
from .provenance import provenance
from .reports import INLINE, SCHEMA_VERSION, Record, csv_text, markdown_table, text, write_files

__all__ = [
    "AttackRow", "Cell", "ConfigurationRow", "Evaluation", "ModelRow", "PAPER_PGDPP", "PAPER_TABLE1", "PAPER_TABLE2",
    "PAPER_TABLE3", "PgdppRow", "Report", "TABLE1_LOSSES", "TIDY_COLUMNS", "pgdpp_table", "table1", "table2", "table3",
    "to_csv", "to_markdown", "write_files", "write_report",
]

TABLE1_LOSSES = ("ce", "cw", "dlr", "mifpe")

#: The PGD++ tables' columns: title -> (norm, label in ``diagnose.pgdpp_comparison``).
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
                "gradient_evaluations", "interrupted")


@dataclass
class Cell:
    """One attack's outcome on the whole evaluation set."""

    robust_accuracy: float
    seconds: float
    gradient_evaluations: int | None
    robust: Tensor = field(repr=False)

    def to_json(self) -> dict:
        return {"robust_accuracy": self.robust_accuracy, "seconds": round(self.seconds, 3),
                "gradient_evaluations": self.gradient_evaluations}


def _measured(cell: Cell | None) -> dict:
    return cell.to_json() if cell is not None else dict.fromkeys(("robust_accuracy", "seconds", "gradient_evaluations"))


@dataclass
class Evaluation:
    """A model, an evaluation set and the budget every attack of a table shares.

    Parameters
    ----------
    model : nn.Module
        In eval mode, on the inputs' device and dtype.
    inputs, labels : Tensor
        The evaluation set, on the model's device.
    eps : float
        L-inf radius.
    steps : int
        Iterations of PGD and APGD (100 in the paper).
    batch_size : int
        Samples per attack call.
    seed : int
        Seeds every attack's generator (and AutoAttack's own seed).
    show_progress : bool
        Draw progress bars (and AutoAttack's log) on stderr.
    """

    model: nn.Module
    inputs: Tensor
    labels: Tensor
    eps: float
    steps: int = 100
    batch_size: int = 250
    seed: int = 0
    show_progress: bool = True
    _clean: Tensor | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return int(self.labels.numel())

    def settings(self) -> dict:
        """What a report says about the run besides its provenance."""
        return {"device": str(self.inputs.device), "dtype": str(self.inputs.dtype).removeprefix("torch."), "n": self.n,
                "eps": self.eps, "steps": self.steps, "seed": self.seed, "batch_size": self.batch_size}

    def clean_correct(self) -> Tensor:
        if self._clean is None:
            self._clean = self._correct(self.inputs)
        return self._clean

    def _correct(self, inputs: Tensor) -> Tensor:
        with torch.no_grad():
            return torch.cat([self.model(x).argmax(1) == y for x, y in
                              zip(inputs.split(self.batch_size), self.labels.split(self.batch_size), strict=True)])

    def summary(self) -> dict:
        """Clean accuracy, and the share of correctly classified samples whose top-2 logit gap
        exceeds lambda of the dtype."""
        with torch.no_grad():
            logits = torch.cat([self.model(x) for x in self.inputs.split(self.batch_size)])
        correct = logits.argmax(1) == self.labels
        delta = top_margin(logits)[correct]
        median = float(delta.float().median()) if delta.numel() else float("nan")
        return {"clean_accuracy": 100 * float(self.clean_correct().float().mean()),
                "lambda": underflow_threshold(self.inputs.dtype), "margin_median": median,
                "share_of_margins_above_lambda": percent_underflowing(delta, self.inputs.dtype)}

    def core(self, attack: str, loss: str, desc: str, *, progress: tqdm | None = None, **kwargs) -> Cell:
        """Robust accuracy under a core attack (``fgsm``, ``pgd``, ``apgd``) with ``loss``;
        ``progress`` is a bar to name the attack on and count its samples in."""
        generator = torch.Generator(device=self.inputs.device).manual_seed(self.seed)
        if attack != "fgsm":
            kwargs.setdefault("steps", self.steps)
        progress = bar(enabled=False) if progress is None else progress
        progress.set_description(desc)
        result = evaluate(self.model, self.inputs, self.labels, attack=attack, loss=loss, eps=self.eps,
                          batch_size=self.batch_size, generator=generator, progress=progress.update, **kwargs)
        return Cell(100 * result.robust_accuracy, result.seconds, result.gradient_evaluations, result.robust_correct)

    def autoattack(self, loss: str, desc: str, *, progress: tqdm | None = None) -> Cell:
        """Robust accuracy under AutoAttack (standard version, L-inf) with its own losses
        (``loss="original"``) or with MIFPE in APGD and APGD-T (``loss="mifpe"``)."""
        from .adapters import autoattack as aa

        # verbose=False keeps both distributions off stdout (upstream prints its log there).
        common = {"norm": "Linf", "eps": self.eps, "version": "standard", "device": self.inputs.device, "seed": self.seed,
                  "verbose": self.show_progress}
        adversary = stock_autoattack(self.model, **common) if loss == "original" else aa.mifpe_autoattack(self.model, loss=loss, **common)
        with torch.no_grad():
            classes = int(self.model(self.inputs[:1]).shape[1])
        for member in ("apgd_targeted", "fab"):
            attack = getattr(adversary, member, None)
            if attack is not None and hasattr(attack, "n_target_classes"):
                attack.n_target_classes = min(attack.n_target_classes, classes - 1)
        progress = bar(enabled=False) if progress is None else progress
        progress.set_description(desc)
        tic = time.perf_counter()
        with log_above_bars("auto-attack", desc, enabled=self.show_progress):
            x_adv, _ = aa.run_standard_evaluation(adversary, self.inputs, self.labels, batch_size=self.batch_size)
        seconds = time.perf_counter() - tic
        progress.update(self.n)
        robust = self.clean_correct() & self._correct(x_adv)
        return Cell(100 * float(robust.float().mean()), seconds, None, robust)


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
    ``schema_version``; :meth:`records` is its tidy form, the CSV's lines.
    """

    table: str
    provenance: dict = field(metadata=INLINE)
    settings: dict = field(metadata=INLINE)
    summary: dict = field(default_factory=dict, metadata=INLINE)
    rows: list = field(default_factory=list)
    interrupted: str | None = None

    def to_json(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, **super().to_json()}

    def records(self) -> list[dict]:
        """One dict per model x attack x loss, keys from :data:`TIDY_COLUMNS`."""
        common = {"model": self.settings.get("model"), "clean_accuracy": self.summary.get("clean_accuracy"),
                  "n": self.settings["n"], "interrupted": self.interrupted}
        return [{**common, **record} for row in self.rows for record in row.records(self)]


def _report(table: str, evaluation: Evaluation, command: str, extra: dict | None, *, one_model: bool = True,
            autoattack: bool = False, **settings) -> Report:
    origin = provenance(command)
    if autoattack:  # which AutoAttack distribution and version runs (the adapter's default)
        from .adapters import autoattack as aa

        origin["autoattack_distribution"] = aa.describe_distribution()
    return Report(table, origin, {**evaluation.settings(), **(extra or {}), **settings},
                  evaluation.summary() if one_model else {})


def _bar(report: Report, evaluation: Evaluation, runs: int):
    """One bar over a table's attack runs, counted in samples, named after the running attack."""
    return bar(total=runs * evaluation.n, desc=report.table, enabled=evaluation.show_progress, unit="sample")


def table2(
    evaluation: Evaluation, *, attacks: Sequence[str] = ("fgsm", "pgd", "apgd", "autoattack"), command: str = "", extra: dict | None = None,
) -> Report:
    """The MIFPE paper's Table 2: each attack with its original loss and with MIFPE, and the boost.

    FGSM and PGD-``steps`` (the Table-1 protocol) use CE originally; APGD-``steps`` uses DLR
    (APGD_DLR); AutoAttack is the standard version, with MIFPE in its APGD and APGD-T. If the run
    is stopped (Ctrl-C or an error) after a column, the exception carries the finished columns as
    ``partial_report`` (this holds for every table function here).
    """
    steps = evaluation.steps
    plan = {"fgsm": ("FGSM", "ce", "FGSM"), "pgd": (f"PGD-{steps}", "ce", "PGD-100"),
            "apgd": (f"APGD_DLR-{steps}", "dlr", "APGD_DLR-100"), "autoattack": ("AutoAttack", "standard", "AA (4900)")}
    unknown = [a for a in attacks if a not in plan]
    if unknown:
        raise ValueError(f"unknown attack(s) {unknown}; choose from {', '.join(plan)}")
    report = _report("table2", evaluation, command, extra, autoattack="autoattack" in attacks)
    with keep_partial(report, lambda: bool(report.rows)), _bar(report, evaluation, 2 * len(attacks)) as progress:
        for key in attacks:
            title, original_loss, paper_key = plan[key]
            run = evaluation.autoattack if key == "autoattack" else partial(evaluation.core, key)
            original = run("original" if key == "autoattack" else original_loss, f"{title} original loss", progress=progress)
            paper = {"attack": paper_key, **dict(zip(("original", "mifpe"), PAPER_TABLE2[paper_key], strict=True))}
            row = AttackRow(title, original_loss, original, paper)
            report.rows.append(row)
            row.mifpe = run("mifpe", f"{title} MIFPE", progress=progress)
            row.boost = original.robust_accuracy - row.mifpe.robust_accuracy
    return report


def table1(
    evaluations: dict[str, Evaluation], *, losses: Sequence[str] = TABLE1_LOSSES, autoattack: bool = True,
    command: str = "", extra: dict | None = None,
) -> Report:
    """The MIFPE paper's Table 1: PGD-``steps`` per loss on each model, clean accuracy, AutoAttack
    (the "best" column) and the per-sample worst case over every attack run."""
    first = next(iter(evaluations.values()))
    report = _report("table1", first, command, extra, one_model=False, autoattack=autoattack, losses=list(losses))
    runs = len(evaluations) * (len(losses) + autoattack)
    with keep_partial(report, lambda: bool(report.rows)), _bar(report, first, runs) as progress:
        for name, evaluation in evaluations.items():
            paper = (published.paper_table1(name.removeprefix("published:")) if name.startswith("published:")
                     else PAPER_TABLE1.get(name.removeprefix("zoo:")))
            row = ModelRow(name, evaluation.summary(),
                           paper=dict(zip(("row", "clean_accuracy", "pgd", "best"), paper, strict=True)) if paper else None)
            robust_everywhere = evaluation.clean_correct().clone()
            for loss in losses:
                row.pgd[loss] = evaluation.core("pgd", loss, f"{name} PGD-{evaluation.steps} {loss}", progress=progress)
                robust_everywhere &= row.pgd[loss].robust
                if len(row.pgd) == 1:
                    report.rows.append(row)
            if autoattack:
                row.autoattack = evaluation.autoattack("original", f"{name} AutoAttack", progress=progress)
                robust_everywhere &= row.autoattack.robust
            row.worst_case = 100 * float(robust_everywhere.float().mean())
    return report


def table3(evaluation: Evaluation, *, losses: Sequence[str] = TABLE1_LOSSES, command: str = "", extra: dict | None = None) -> Report:
    """The MIFPE paper's Table 3 (ablation): PGD-``steps`` per loss, plain (constant step
    2.5 eps / steps), then with momentum 0.75, then with the 2 eps (1 - i / I) schedule."""
    report = _report("table3", evaluation, command, extra, losses=list(losses))
    with keep_partial(report, lambda: bool(report.rows)), _bar(report, evaluation, len(TABLE3_CONFIGS) * len(losses)) as progress:
        for config, settings in TABLE3_CONFIGS.items():
            row = ConfigurationRow(config, **settings, results={}, paper=PAPER_TABLE3[config])
            for loss in losses:
                row.results[loss] = evaluation.core("pgd", loss, f"{config} {loss}", progress=progress, **settings)
                if len(row.results) == 1:
                    report.rows.append(row)
    return report


def pgdpp_table(
    evaluations: dict[str, Evaluation], *, l2_eps: float, clever_samples: int = 0, clever_batches: int = 50,
    command: str = "", extra: dict | None = None,
) -> Report:
    """The PGD++ paper's Tables 2-5 on each model: FGSM / PGD with CE against FGSM++ / PGD++ (NJS,
    HNS) and the beta = 0.1 heuristic, L-inf and L2 (``steps`` iterations, constant step eps/4 or
    eps/8, the last iterate); with ``clever_samples > 0`` also Table 11's mean CLEVER scores."""
    from .diagnose import clever, pgdpp_comparison

    first = next(iter(evaluations.values()))
    report = _report("pgdpp", first, command, extra, one_model=False, l2_eps=l2_eps, columns=list(_PGDPP_COLUMNS),
                     clever_samples=clever_samples, clever_batches=clever_batches)
    # pgdpp_comparison runs FGSM and PGD with 4 losses in 2 norms and counts each attack.
    with keep_partial(report, lambda: bool(report.rows)), bar(total=16 * len(evaluations), desc="pgdpp",
                                                               enabled=first.show_progress, unit="attack") as progress:
        for name, evaluation in evaluations.items():
            paper = PAPER_PGDPP.get(name.removeprefix("zoo:"))
            row = PgdppRow(name, 100 * float(evaluation.clean_correct().float().mean()), {},
                           paper={"row": paper[0], "results": paper[1]} if paper else None)
            found: dict = {}
            progress.set_description(f"{name} PGD++")
            try:
                pgdpp_comparison(evaluation.model, evaluation.inputs, evaluation.labels, eps=evaluation.eps,
                                 l2_eps=l2_eps, steps=evaluation.steps, seed=evaluation.seed, bar=progress, into=found)
            finally:  # the attacks finished so far count even when the rest is interrupted
                row.results = {column: found[norm][label] for column, (norm, label) in _PGDPP_COLUMNS.items()
                               if label in found.get(norm, {})}
                if row.results:
                    report.rows.append(row)
            if clever_samples:
                row.clever = clever(evaluation.model, evaluation.inputs, samples=clever_samples, batches=clever_batches,
                                    seed=evaluation.seed)["means"]
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


_LAYOUTS: dict[str, Callable[[Report], Layout]] = {
    "table1": _table1_layout, "table2": _table2_layout, "table3": _table3_layout, "pgdpp": _pgdpp_layout,
}


def to_markdown(report: Report) -> str:
    """The report as Markdown: its setting, our table, the paper's numbers, the provenance."""
    settings, summary, origin = report.settings, report.summary, report.provenance
    threat = f"L-inf eps = {settings['eps']:g}" + (f", L2 eps = {settings['l2_eps']:g}" if "l2_eps" in settings else "")
    lines = [f"Robust accuracy %, lower = stronger attack. {settings['n']} samples, {threat}, {settings['steps']} "
             f"iterations, {settings['dtype']} on {settings['device']}, seed {settings['seed']}."]
    if report.interrupted:
        lines.insert(0, f"**Partial result: {report.interrupted}.** Cells marked – were not computed; the others are final.\n")
    if summary:
        lines.append(f"Clean accuracy {summary['clean_accuracy']:.2f} %; {summary['share_of_margins_above_lambda']:.1f} % of "
                     f"the correctly classified samples have a top-2 logit gap above lambda = {summary['lambda']:.2f} "
                     f"(median {summary['margin_median']:.1f}).")
    for caption, head, body in _LAYOUTS[report.table](report):
        if body or not caption:
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
    """Write ``<stem>.md``, ``<stem>.json`` and ``<stem>.csv`` into ``out_dir`` (atomically, as one set:
    see :func:`~mifpe_plugins.reports.write_files`); return the paths."""
    stem = stem or report.table
    title = f"# {stem}" + (" (partial)" if report.interrupted else "")
    return write_files(out_dir, {
        f"{stem}.md": f"{title}\n\n" + to_markdown(report),
        f"{stem}.json": json.dumps(report.to_json(), indent=2) + "\n",
        f"{stem}.csv": to_csv(report),
    })


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
