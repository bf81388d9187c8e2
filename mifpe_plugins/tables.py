"""The MIFPE paper's Tables 1-3 on any model: the engine of ``mifpe table1 / table2 / table3``.

Every number is robust accuracy in % (lower = stronger attack); a sample is robust when it is
classified correctly both clean and after the attack. Each function returns a JSON-ready report
with the paper's numbers beside ours; :func:`write_report` writes it as Markdown, JSON and CSV.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from .evaluate import evaluate
from .losses import top_margin
from .numerics import percent_underflowing, underflow_threshold
from .papers import PAPER_PGDPP, PAPER_TABLE1, PAPER_TABLE2, PAPER_TABLE3
from .progress import Progress, keep_partial
from .provenance import provenance

__all__ = [
    "Cell", "Evaluation", "PAPER_PGDPP", "PAPER_TABLE1", "PAPER_TABLE2", "PAPER_TABLE3", "TABLE1_LOSSES", "pgdpp_table",
    "table1", "table2", "table3", "write_files", "write_report",
]

TABLE1_LOSSES = ("ce", "cw", "dlr", "mifpe")

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


@dataclass
class Cell:
    """One attack's outcome on the whole evaluation set."""

    robust_accuracy: float
    seconds: float
    gradient_evaluations: int | None
    robust: Tensor = field(repr=False)

    def to_json(self) -> dict:
        return {
            "robust_accuracy": self.robust_accuracy, "seconds": round(self.seconds, 3),
            "gradient_evaluations": self.gradient_evaluations,
        }


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
        Draw progress bars on stderr.
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

    def clean_correct(self) -> Tensor:
        if self._clean is None:
            with torch.no_grad():
                self._clean = torch.cat([
                    self.model(x).argmax(1) == y
                    for x, y in zip(self.inputs.split(self.batch_size), self.labels.split(self.batch_size), strict=True)
                ])
        return self._clean

    def margin_statistics(self) -> dict:
        """Share of correctly classified samples whose top-2 logit gap exceeds lambda of the dtype."""
        with torch.no_grad():
            logits = torch.cat([self.model(x) for x in self.inputs.split(self.batch_size)])
        correct = logits.argmax(1) == self.labels
        delta = top_margin(logits)[correct]
        median = float(delta.float().median()) if delta.numel() else float("nan")
        return {"lambda": underflow_threshold(self.inputs.dtype), "margin_median": median,
                "share_of_margins_above_lambda": percent_underflowing(delta, self.inputs.dtype)}

    def core(self, attack: str, loss: str, desc: str, **kwargs) -> Cell:
        """Robust accuracy under a core attack (``fgsm``, ``pgd``, ``apgd``) with ``loss``."""
        generator = torch.Generator(device=self.inputs.device).manual_seed(self.seed)
        if attack != "fgsm":
            kwargs.setdefault("steps", self.steps)
        with Progress(self.n, desc, enabled=self.show_progress) as bar:
            result = evaluate(
                self.model, self.inputs, self.labels, attack=attack, loss=loss, eps=self.eps,
                batch_size=self.batch_size, generator=generator, progress=bar.update, **kwargs,
            )
        return Cell(100 * result.robust_accuracy, result.seconds, result.gradient_evaluations, result.robust_correct)

    def autoattack(self, loss: str, desc: str) -> Cell:
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
        logger = logging.getLogger("auto-attack")
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{desc}: %(message)s"))
        previous_level = logger.level
        if self.show_progress:
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
        tic = time.perf_counter()
        try:
            x_adv, _ = aa.run_standard_evaluation(adversary, self.inputs, self.labels, batch_size=self.batch_size)
        finally:
            if self.show_progress:
                logger.removeHandler(handler)
                logger.setLevel(previous_level)
        seconds = time.perf_counter() - tic
        with torch.no_grad():
            adv_correct = torch.cat([
                self.model(x).argmax(1) == y
                for x, y in zip(x_adv.split(self.batch_size), self.labels.split(self.batch_size), strict=True)
            ])
        robust = self.clean_correct() & adv_correct
        return Cell(100 * float(robust.float().mean()), seconds, None, robust)


def _header(evaluation: Evaluation, command: str, extra: dict) -> dict:
    return {
        **provenance(command),
        "device": str(evaluation.inputs.device),
        "dtype": str(evaluation.inputs.dtype).removeprefix("torch."),
        "n": evaluation.n,
        "eps": evaluation.eps,
        "steps": evaluation.steps,
        "seed": evaluation.seed,
        "batch_size": evaluation.batch_size,
        **extra,
    }


def _autoattack_provenance() -> dict:
    """Which AutoAttack distribution and version :meth:`Evaluation.autoattack` runs (the
    adapter's default, as it builds them)."""
    from .adapters import autoattack as aa

    return {"autoattack_distribution": aa.describe_distribution()}


def table2(
    evaluation: Evaluation, *, attacks: Sequence[str] = ("fgsm", "pgd", "apgd", "autoattack"), command: str = "", extra: dict | None = None,
) -> dict:
    """The MIFPE paper's Table 2: each attack with its original loss and with MIFPE, and the boost.

    FGSM and PGD-``steps`` (the Table-1 protocol) use CE originally; APGD-``steps`` uses DLR
    (APGD_DLR); AutoAttack is the standard version, with MIFPE in its APGD and APGD-T. If the run
    is stopped (Ctrl-C or an error) after a column, the exception carries the finished columns as
    ``partial_report`` (this holds for every table function here).
    """
    steps = evaluation.steps
    plan = {
        "fgsm": ("FGSM", lambda loss, desc: evaluation.core("fgsm", loss, desc), "ce"),
        "pgd": (f"PGD-{steps}", lambda loss, desc: evaluation.core("pgd", loss, desc), "ce"),
        "apgd": (f"APGD_DLR-{steps}", lambda loss, desc: evaluation.core("apgd", loss, desc), "dlr"),
        "autoattack": ("AutoAttack", lambda loss, desc: evaluation.autoattack(loss, desc), "standard"),
    }
    unknown = [a for a in attacks if a not in plan]
    if unknown:
        raise ValueError(f"unknown attack(s) {unknown}; choose from {', '.join(plan)}")
    rows: list[dict] = []
    report = {"table": "table2", **_header(evaluation, command, extra or {}),
              "clean_accuracy": 100 * float(evaluation.clean_correct().float().mean()),
              **evaluation.margin_statistics(), "rows": rows}
    if "autoattack" in attacks:
        report.update(_autoattack_provenance())
    with keep_partial(report, lambda: bool(rows)):
        for key in attacks:
            title, run, original_loss = plan[key]
            original = run("original" if key == "autoattack" else original_loss, f"{title} original loss")
            paper_key = {"fgsm": "FGSM", "pgd": "PGD-100", "apgd": "APGD_DLR-100", "autoattack": "AA (4900)"}[key]
            row = {"attack": title, "original_loss": original_loss, "original": original.to_json(),
                   "paper": {"attack": paper_key, **dict(zip(("original", "mifpe"), PAPER_TABLE2[paper_key], strict=True))}}
            rows.append(row)
            improved = run("mifpe", f"{title} MIFPE")
            row.update(mifpe=improved.to_json(), boost=original.robust_accuracy - improved.robust_accuracy)
    return report


def table1(
    evaluations: dict[str, Evaluation], *, losses: Sequence[str] = TABLE1_LOSSES, autoattack: bool = True,
    command: str = "", extra: dict | None = None,
) -> dict:
    """The MIFPE paper's Table 1: PGD-``steps`` per loss on each model, clean accuracy, AutoAttack
    (the "best" column) and the per-sample worst case over every attack run."""
    rows: list[dict] = []
    report = {"table": "table1", **_header(next(iter(evaluations.values())), command, extra or {}),
              "losses": list(losses), "rows": rows}
    if autoattack:
        report.update(_autoattack_provenance())
    with keep_partial(report, lambda: bool(rows)):
        for name, evaluation in evaluations.items():
            row = {"model": name, "clean_accuracy": 100 * float(evaluation.clean_correct().float().mean()),
                   **evaluation.margin_statistics(), "pgd": {}}
            key = name.removeprefix("zoo:")
            if key in PAPER_TABLE1:
                paper_row, clean, pgd, best = PAPER_TABLE1[key]
                row["paper"] = {"row": paper_row, "clean_accuracy": clean, "pgd": pgd, "best": best}
            robust_everywhere = evaluation.clean_correct().clone()
            for loss in losses:
                cell = evaluation.core("pgd", loss, f"{name} PGD-{evaluation.steps} {loss}")
                row["pgd"][loss] = cell.to_json()
                robust_everywhere &= cell.robust
                if len(row["pgd"]) == 1:
                    rows.append(row)
            if autoattack:
                aa = evaluation.autoattack("original", f"{name} AutoAttack")
                row["autoattack"] = aa.to_json()
                robust_everywhere &= aa.robust
            row["worst_case"] = 100 * float(robust_everywhere.float().mean())
    return report


def table3(evaluation: Evaluation, *, losses: Sequence[str] = TABLE1_LOSSES, command: str = "", extra: dict | None = None) -> dict:
    """The MIFPE paper's Table 3 (ablation): PGD-``steps`` per loss, plain (constant step
    2.5 eps / steps), then with momentum 0.75, then with the 2 eps (1 - i / I) schedule."""
    rows: list[dict] = []
    report = {"table": "table3", **_header(evaluation, command, extra or {}),
              "clean_accuracy": 100 * float(evaluation.clean_correct().float().mean()),
              **evaluation.margin_statistics(), "losses": list(losses), "rows": rows}
    with keep_partial(report, lambda: bool(rows)):
        for config, settings in TABLE3_CONFIGS.items():
            row = {"configuration": config, **settings, "results": {}, "paper": PAPER_TABLE3[config]}
            for loss in losses:
                row["results"][loss] = evaluation.core("pgd", loss, f"{config} {loss}", **settings).to_json()
                if len(row["results"]) == 1:
                    rows.append(row)
    return report


def pgdpp_table(
    evaluations: dict[str, Evaluation], *, l2_eps: float, clever_samples: int = 0, clever_batches: int = 50,
    command: str = "", extra: dict | None = None,
) -> dict:
    """The PGD++ paper's Tables 2-5 on each model: FGSM / PGD with CE against FGSM++ / PGD++ (NJS,
    HNS) and the beta = 0.1 heuristic, L-inf and L2 (``steps`` iterations, constant step eps/4 or
    eps/8, the last iterate); with ``clever_samples > 0`` also Table 11's mean CLEVER scores."""
    from .diagnose import clever, pgdpp_comparison

    rows: list[dict] = []
    report = {"table": "pgdpp", **_header(next(iter(evaluations.values())), command, extra or {}), "l2_eps": l2_eps,
              "columns": list(_PGDPP_COLUMNS), "clever_samples": clever_samples, "clever_batches": clever_batches,
              "rows": rows}
    with keep_partial(report, lambda: bool(rows)):
        for name, evaluation in evaluations.items():
            row = {"model": name, "clean_accuracy": 100 * float(evaluation.clean_correct().float().mean()), "results": {}}
            key = name.removeprefix("zoo:")
            if key in PAPER_PGDPP:
                row["paper"] = {"row": PAPER_PGDPP[key][0], "results": PAPER_PGDPP[key][1]}
            found: dict = {}
            try:
                with Progress(8, f"{name} PGD++", enabled=evaluation.show_progress) as bar:
                    pgdpp_comparison(evaluation.model, evaluation.inputs, evaluation.labels, eps=evaluation.eps,
                                     l2_eps=l2_eps, steps=evaluation.steps, seed=evaluation.seed, bar=bar, into=found)
            finally:  # the attacks finished so far count even when the rest is interrupted
                row["results"] = {column: found[norm][label] for column, (norm, label) in _PGDPP_COLUMNS.items()
                                  if label in found.get(norm, {})}
                if row["results"]:
                    rows.append(row)
            if clever_samples:
                row["clever"] = clever(evaluation.model, evaluation.inputs, samples=clever_samples, batches=clever_batches,
                                       seed=evaluation.seed)["means"]
    return report


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------

_LOSS_TITLES = {"ce": "CE", "cw": "C&W", "dlr": "DLR", "mifpe": "MIFPE"}


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _acc(cell: dict | None) -> str:
    """A cell's robust accuracy, or – for a cell an interrupted run did not reach."""
    return _f((cell or {}).get("robust_accuracy"))


def _table(head: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return lines


def _rows_table2(report: dict) -> tuple[list[str], list[list[str]]]:
    head = ["", *[r["attack"] for r in report["rows"]]]
    body = [
        ["original loss", *[f"{_acc(r['original'])} ({r['original_loss']})" for r in report["rows"]]],
        ["MIFPE loss", *[_acc(r.get("mifpe")) for r in report["rows"]]],
        ["boost", *[_f(r.get("boost")) for r in report["rows"]]],
        ["seconds, original / MIFPE", *[" / ".join(f"{r[k]['seconds']:.1f}" if k in r else "–" for k in ("original", "mifpe"))
                                        for r in report["rows"]]],
    ]
    return head, body


def _rows_table1(report: dict) -> tuple[list[str], list[list[str]]]:
    losses = report["losses"]
    head = ["model", "clean", *[f"{_LOSS_TITLES.get(loss, loss)} PGD" for loss in losses], "AutoAttack", "worst case", "margins > λ %"]
    body = []
    for r in report["rows"]:
        body.append([r["model"], _f(r["clean_accuracy"]), *[_acc(r["pgd"].get(loss)) for loss in losses],
                     _acc(r.get("autoattack")), _f(r.get("worst_case")), f"{r['share_of_margins_above_lambda']:.1f}"])
    return head, body


def _rows_table3(report: dict) -> tuple[list[str], list[list[str]]]:
    losses = report["losses"]
    head = ["configuration", *[_LOSS_TITLES.get(loss, loss) for loss in losses]]
    body = [[r["configuration"], *[_acc(r["results"].get(loss)) for loss in losses]] for r in report["rows"]]
    return head, body


def _rows_pgdpp(report: dict) -> tuple[list[str], list[list[str]]]:
    columns = report["columns"]
    clever_rules = ("original", "heuristic", "njs", "hns")
    with_clever = any("clever" in r for r in report["rows"])
    head = ["model", "clean", *columns, *([f"CLEVER {rule}" for rule in clever_rules] if with_clever else [])]
    body = []
    for r in report["rows"]:
        cells = [r["model"], _f(r["clean_accuracy"]), *[_f(r["results"].get(c)) for c in columns]]
        if with_clever:
            cells += [f"{r['clever'][rule]:.4f}" if "clever" in r else "–" for rule in clever_rules]
        body.append(cells)
    return head, body


_RENDERERS: dict[str, Callable[[dict], tuple[list[str], list[list[str]]]]] = {
    "table1": _rows_table1, "table2": _rows_table2, "table3": _rows_table3, "pgdpp": _rows_pgdpp,
}


def _paper_lines(report: dict) -> list[str]:
    kind = report["table"]
    if kind == "table2":
        rows = report["rows"]
        lines = ["", "The paper's Table 2 (CIFAR-10 Neural level sets RN-18, eps 0.031):", ""]
        return lines + _table(
            ["", *[r["paper"]["attack"] for r in rows]],
            [["original loss", *[_f(r["paper"]["original"]) for r in rows]],
             ["MIFPE loss", *[_f(r["paper"]["mifpe"]) for r in rows]],
             ["boost", *[_f(r["paper"]["original"] - r["paper"]["mifpe"]) for r in rows]]],
        )
    if kind == "table3":
        losses = report["losses"]
        lines = ["", "The paper's Table 3 (CIFAR-10, PGD-100; numbers of the TRADES WRN-34-10 row):", ""]
        return lines + _table(["configuration", *[_LOSS_TITLES.get(x, x) for x in losses]],
                              [[r["configuration"], *[_f(r["paper"].get(x)) for x in losses]] for r in report["rows"]])
    rows = [r for r in report["rows"] if "paper" in r]
    if not rows:
        return []
    if kind == "pgdpp":
        columns = report["columns"]
        lines = ["", "The PGD++ paper's CIFAR-10 ResNet-18 rows these models stand in for (L-inf 8/255, L2 120/255; "
                 "Table 11 CLEVER on BNN-WQ / BNN-WAQ: original 0.8585 / 0.7239, beta = 0.01 0.8845 / 3.1578, NJS "
                 "0.4139 / 0.3120, HNS 0.3450 / 0.2774):", ""]
        return lines + _table(["our model", "paper row", *columns],
                              [[r["model"], r["paper"]["row"], *[_f(r["paper"]["results"].get(c)) for c in columns]] for r in rows])
    losses = [x for x in report["losses"] if x in TABLE1_LOSSES]
    lines = ["", "The paper's Table 1 rows these models stand in for (MNIST eps 0.3, CIFAR-10 eps 8/255):", ""]
    return lines + _table(
        ["our model", "paper row", "clean", *[f"{_LOSS_TITLES[x]} PGD" for x in losses], "best (>= 4900 its)"],
        [[r["model"], r["paper"]["row"], _f(r["paper"]["clean_accuracy"]), *[_f(r["paper"]["pgd"][x]) for x in losses],
          _f(r["paper"]["best"])] for r in rows],
    )


def to_markdown(report: dict) -> str:
    """The report as a Markdown table with its provenance and the paper's numbers."""
    head, body = _RENDERERS[report["table"]](report)
    threat = f"L-inf eps = {report['eps']:g}" + (f", L2 eps = {report['l2_eps']:g}" if "l2_eps" in report else "")
    intro = [
        f"Robust accuracy %, lower = stronger attack. {report['n']} samples, {threat}, "
        f"{report['steps']} iterations, {report['dtype']} on {report['device']}, seed {report['seed']}.",
    ]
    if report.get("interrupted"):
        intro.insert(0, f"**Partial result: {report['interrupted']}.** Cells marked – were not computed; the others "
                        "are final.\n")
    if "clean_accuracy" in report:
        intro.append(
            f"Clean accuracy {report['clean_accuracy']:.2f} %; {report['share_of_margins_above_lambda']:.1f} % of the "
            f"correctly classified samples have a top-2 logit gap above lambda = {report['lambda']:.2f} (median "
            f"{report['margin_median']:.1f})."
        )
    autoattack = f"AutoAttack: {report['autoattack_distribution']}, " if "autoattack_distribution" in report else ""
    provenance = (f"`{report['command']}` — mifpe_plugins {report['mifpe_plugins']} (commit {report['commit']}), "
                  f"torch {report['torch']}, {autoattack}{report['machine']}, {report['date']}.")
    return "\n".join([*intro, "", *_table(head, body), *_paper_lines(report), "", provenance]) + "\n"


def to_csv(report: dict) -> str:
    """The report's table as CSV (one line per row of the Markdown table)."""
    head, body = _RENDERERS[report["table"]](report)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    head = [h or "row" for h in head]
    if report.get("interrupted"):
        head[0] += " (partial: interrupted)"
    writer.writerow(head)
    writer.writerows(body)
    return buffer.getvalue()


def write_report(report: dict, out_dir: str | Path, stem: str | None = None) -> list[Path]:
    """Write ``<stem>.md``, ``<stem>.json`` and ``<stem>.csv`` into ``out_dir`` (atomically, as one set:
    see :func:`write_files`); return the paths."""
    stem = stem or report["table"]
    title = f"# {stem}" + (" (partial)" if report.get("interrupted") else "")
    return write_files(out_dir, {
        f"{stem}.md": f"{title}\n\n" + to_markdown(report),
        f"{stem}.json": json.dumps(report, indent=2) + "\n",
        f"{stem}.csv": to_csv(report),
    })


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
