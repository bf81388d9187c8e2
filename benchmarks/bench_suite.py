"""A suite against AutoAttack, side by side on the same samples: robust accuracy, passes and time.

For each model, ``suites.evaluate_suite(..., autoattack=True)`` runs the suite (default ``fast``)
and AutoAttack standard on the same images, chunk by chunk, and the script prints and writes:
robust accuracy of both and its difference (goal: suite <= AutoAttack + 0.1 points), backward and
forward passes of the suite over AutoAttack's (goal: backward <= 0.1), wall times, and the samples
each one alone fools. Every run is journaled in ``--work`` and resumes (``python
benchmarks/bench_suite.py`` again continues where a killed run stopped).

Run ``python benchmarks/bench_suite.py`` for every shipped zoo model on the first 300 bundled
images (about 7 minutes per model with one thread here, nearly all of it AutoAttack), with
``--published`` also on TRADES' MNIST model (first 1 000 images, needs ../shared/data; about 40
minutes). ``--quick`` is a smoke run. Results go to ``docs/benchmarks/suite.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def _evaluation(spec: str, n: int):
    from mifpe_plugins.data import bundled_fashion_mnist_test, load_mnist
    from mifpe_plugins.models import load_model
    from mifpe_plugins.tables import Evaluation

    if spec.startswith("published:"):
        model = load_model(spec, model_dir=SHARED).model
        x, y = load_mnist(SHARED / "mnist", n=n)
        eps = 0.3
    else:
        model = load_model(spec).model
        x, y = bundled_fashion_mnist_test(n)
        eps = 0.1
    return Evaluation(model.eval(), x, y, eps=eps, show_progress=False)


def main() -> None:
    from mifpe_plugins import zoo
    from mifpe_plugins.provenance import cpu_model
    from mifpe_plugins.suites import evaluate_suite

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="fast")
    parser.add_argument("--models", default=None, help="comma-separated model specs (default: every shipped zoo model)")
    parser.add_argument("--n", type=int, default=300, help="images per zoo model (default 300)")
    parser.add_argument("--published", action="store_true", help="also TRADES' MNIST model on its first 1 000 images")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one zoo model, 20 images")
    parser.add_argument("--work", default=str(ROOT / "benchmarks" / ".suite-runs"), help="journals of the runs")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"), help="folder for suite.json and suite.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    specs = (args.models.split(",") if args.models else [f"zoo:{name}" for name in zoo.available()])
    plan = [(spec, 20 if args.quick else args.n) for spec in (specs[:1] if args.quick else specs)]
    if args.published and not args.quick:
        plan.append(("published:trades-mnist-smallcnn", 1000))
    rows = []
    for spec, n in plan:
        tic = time.perf_counter()
        report = evaluate_suite(_evaluation(spec, n), suite=args.suite, autoattack=True, out=args.work,
                                name=f"{spec.replace(':', '-')}-{args.suite}-n{n}", resume=True)
        s = report.summary
        ours, theirs = s["suite_result"], s["autoattack"]
        rows.append({"model": spec, "n": n, "suite": ours["robust_accuracy"], "autoattack": theirs["robust_accuracy"],
                     "difference": round(ours["robust_accuracy"] - theirs["robust_accuracy"], 10),
                     "backward_ratio": ours["backward_passes"] / theirs["backward_passes"],
                     "forward_ratio": ours["forward_passes"] / theirs["forward_passes"],
                     "suite_seconds": ours["seconds"], "autoattack_seconds": theirs["seconds"],
                     "only_autoattack_fools": s["only_autoattack_fools"], "only_suite_fools": s["only_suite_fools"]})
        print(f"{spec}: suite {rows[-1]['suite']:.2f} vs AutoAttack {rows[-1]['autoattack']:.2f} "
              f"({rows[-1]['difference']:+.2f}), backward x{rows[-1]['backward_ratio']:.3f}, "
              f"{time.perf_counter() - tic:.0f} s", file=sys.stderr)
    met = [r for r in rows if r["difference"] <= 0.1 and r["backward_ratio"] <= 0.1]
    lines = [f"# Suite `{args.suite}` against AutoAttack standard", "",
             f"`python benchmarks/bench_suite.py{' --quick' if args.quick else ''}` — {cpu_model()}, {os.cpu_count()} cores, "
             f"one thread, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}. Goal: robust accuracy <= AutoAttack + 0.1 "
             f"points with <= 0.1 of its backward passes; met on {len(met)} of {len(rows)} models.", "",
             "| model | n | suite % | AutoAttack % | difference | backward ratio | forward ratio | seconds, suite / AA |",
             "|---|---|---|---|---|---|---|---|",
             *(f"| {r['model']} | {r['n']} | {r['suite']:.2f} | {r['autoattack']:.2f} | {r['difference']:+.2f} | "
               f"{r['backward_ratio']:.3f} | {r['forward_ratio']:.3f} | {r['suite_seconds']:.1f} / {r['autoattack_seconds']:.1f} |"
               for r in rows)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "suite.json").write_text(json.dumps({"suite": args.suite, "rows": rows}, indent=2) + "\n")
    (out / "suite.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
