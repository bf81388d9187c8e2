"""A suite against AutoAttack, side by side on the same samples: robust accuracy, passes and time.

For each model the script runs the two commands a user would, each journaled on its own in
``--work`` so that a changed suite never reruns the reference:

- the reference, ``mifpe table1`` (PGD-100 with CE, C&W, DLR and MIFPE, and AutoAttack standard),
- the suite, ``mifpe evaluate --suite NAME`` (default ``fast``),

on the same images, and prints and writes the robust accuracy of both and its difference (goal:
suite <= AutoAttack + 0.1 points), the suite's backward and forward passes over AutoAttack's (goal:
backward <= 0.1), wall times, and the samples each one alone fools. Killed, it resumes where it
stopped (``python benchmarks/bench_suite.py`` again).

Run ``python benchmarks/bench_suite.py`` for every shipped zoo model on the first 300 bundled
images (about 7 minutes of AutoAttack per model with one thread here, once), with ``--published``
also on TRADES' MNIST model (first 1 000 images, needs ../shared/data; AutoAttack about 40 minutes,
once). ``--quick`` is a smoke run. Results go to ``docs/benchmarks/suite.json`` and ``.md``
(``suite-NAME.*`` for another suite).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
AUTOATTACK = "AutoAttack standard"


def _model_options(spec: str, option: str) -> list[str]:
    """The model and data options of ``spec``, relative to the repository (as the CLI records them)."""
    if spec.startswith("published:"):
        return [option, spec, "--model-dir", "../shared/data", "--data", "mnist:../shared/data/mnist"]
    return [option, spec]


def _run(argv: list[str]) -> None:
    from mifpe_plugins.cli import main

    code = main(argv)
    if code:
        raise SystemExit(f"mifpe {' '.join(argv)} failed with exit code {code}")


def _robust(samples: Path, column: str) -> np.ndarray:
    """Per sample: classified correctly and not fooled by ``column``."""
    with samples.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return np.array([r["label"] == r["clean_prediction"] and r[f"{column}/success"] == "0" for r in rows])


def _autoattack_cell(tidy: Path) -> dict:
    with tidy.open(newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["attack"] == "AutoAttack")
    return {key: float(row[key]) for key in ("robust_accuracy", "seconds", "forward_passes", "backward_passes")}


def _stages_hash(suite: str) -> str:
    from mifpe_plugins.suites import get_suite

    stages = [{"name": s.name, "attack": s.attack, **s.options} for s in get_suite(suite)]
    return hashlib.sha256(json.dumps(stages, sort_keys=True).encode()).hexdigest()[:8]


def compare(spec: str, n: int, suite: str, work: Path, seed: int = 0) -> dict:
    """Run (or resume) the reference and the suite (its random starts seeded with ``seed``; the
    reference always with 0) on ``spec``'s first ``n`` images; one row of the table."""
    stem = spec.replace(":", "-")
    common = ["--n", str(n), "--threads", "1", "--out", str(work), "--resume", "--quiet"]
    # The suite's journal is named by its stages too: a redesigned suite starts its own run.
    reference, ours = f"{stem}-table1-n{n}", f"{stem}-{suite}-{_stages_hash(suite)}-n{n}{f'-seed{seed}' if seed else ''}"
    _run(["table1", *_model_options(spec, "--models"), *common, "--name", reference])
    _run(["evaluate", *_model_options(spec, "--model"), "--suite", suite, "--seed", str(seed), *common, "--name", ours])
    theirs = _autoattack_cell(work / f"{reference}.csv")
    result = json.loads((work / f"{ours}.json").read_text())["suite_result"]
    suite_robust = _robust(work / f"{ours}.samples.csv", f"suite {suite}")
    aa_robust = _robust(work / f"{reference}.samples.csv", AUTOATTACK)
    theirs["robust_accuracy"] = round(100 * float(aa_robust.mean()), 10)  # the tidy CSV's is rounded to 4 places
    return {"model": spec, "n": n, "suite": result["robust_accuracy"], "autoattack": theirs["robust_accuracy"],
            "difference": round(result["robust_accuracy"] - theirs["robust_accuracy"], 10) + 0.0,  # no -0.00
            "backward_ratio": result["backward_passes"] / theirs["backward_passes"],
            "forward_ratio": result["forward_passes"] / theirs["forward_passes"],
            "suite_seconds": result["seconds"], "autoattack_seconds": theirs["seconds"],
            "worst_case": round(100 * float((suite_robust & aa_robust).mean()), 10),
            "only_autoattack_fools": np.flatnonzero(suite_robust & ~aa_robust).tolist(),
            "only_suite_fools": np.flatnonzero(~suite_robust & aa_robust).tolist()}


def main() -> None:
    from mifpe_plugins import zoo
    from mifpe_plugins.provenance import cpu_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="fast")
    parser.add_argument("--seed", type=int, default=0, help="seed of the suite's random starts (the reference keeps 0)")
    parser.add_argument("--models", default=None, help="comma-separated model specs (default: every shipped zoo model)")
    parser.add_argument("--n", type=int, default=300, help="images per zoo model (default 300)")
    parser.add_argument("--published", action="store_true", help="also TRADES' MNIST model on its first 1 000 images")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one zoo model, 20 images")
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / ".suite-runs"), help="journals of the runs")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"), help="folder for suite.json and suite.md")
    args = parser.parse_args()
    os.chdir(ROOT)  # the model and data paths are recorded relative to the repository
    torch.set_num_threads(1)
    specs = (args.models.split(",") if args.models else [f"zoo:{name}" for name in zoo.available()])
    plan = [(spec, 20 if args.quick else args.n) for spec in (specs[:1] if args.quick else specs)]
    if args.published and not args.quick:
        plan.append(("published:trades-mnist-smallcnn", 1000))
    rows = []
    for spec, n in plan:
        tic = time.perf_counter()
        rows.append(compare(spec, n, args.suite, Path(args.work).resolve(), args.seed))
        r = rows[-1]
        print(f"{spec}: suite {r['suite']:.2f} vs AutoAttack {r['autoattack']:.2f} ({r['difference']:+.2f}), "
              f"backward x{r['backward_ratio']:.3f}, {time.perf_counter() - tic:.0f} s", file=sys.stderr)
    met = [r for r in rows if r["difference"] <= 0.1 and r["backward_ratio"] <= 0.1]
    lines = [f"# Suite `{args.suite}` against AutoAttack standard", "",
             f"`python benchmarks/bench_suite.py{' --quick' if args.quick else ''}{' --published' if args.published else ''}"
             f"{'' if args.suite == 'fast' else ' --suite ' + args.suite}{f' --seed {args.seed}' if args.seed else ''}"
             f"{' --models ' + args.models if args.models else ''}` — {cpu_model()}, {os.cpu_count()} cores, "
             f"one thread, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}. Goal: robust accuracy <= AutoAttack + 0.1 "
             f"points with <= 0.1 of its backward passes; met on {len(met)} of {len(rows)} models. Worst case: robust "
             "against both, per sample.", "",
             "| model | n | suite % | AutoAttack % | difference | worst case % | backward ratio | forward ratio | "
             "seconds, suite / AA | only AA fools | only the suite fools |",
             "|---|---|---|---|---|---|---|---|---|---|---|",
             *(f"| {r['model']} | {r['n']} | {r['suite']:.2f} | {r['autoattack']:.2f} | {r['difference']:+.2f} | "
               f"{r['worst_case']:.2f} | {r['backward_ratio']:.3f} | {r['forward_ratio']:.3f} | "
               f"{r['suite_seconds']:.1f} / {r['autoattack_seconds']:.1f} | {_listed(r['only_autoattack_fools'])} | "
               f"{_listed(r['only_suite_fools'])} |" for r in rows)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = ("suite" if args.suite == "fast" else f"suite-{args.suite}") + (f"-seed{args.seed}" if args.seed else "")
    (out / f"{stem}.json").write_text(json.dumps({"suite": args.suite, "rows": rows}, indent=2) + "\n")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _listed(samples: list[int]) -> str:
    return ", ".join(map(str, samples)) or "none"


if __name__ == "__main__":
    main()
