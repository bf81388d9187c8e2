"""Our Square search against AutoAttack's own ``SquareAttack`` (pyautoattack), same images, same queries.

Both start from the paper's random stripes (ours without ``start``), use p_init = 0.8 and the same
window schedule, and stop a sample at its first adversarial example. They differ in one design
choice: AutoAttack's draws one window position and one sign per channel for the whole batch at
each query; ours draws them per sample, and flips the signs when a window would not change the
point. The script reports, per model and query budget, robust accuracy after each search,
forward passes (samples through the model) and wall time, and the ratios ours / AutoAttack's.

Run ``python benchmarks/bench_square.py`` (zoo:fast-at on the first 300 bundled images; with
``--published`` also TRADES' MNIST model on its first 200 test images, needs ../shared/data).
Results go to ``docs/benchmarks/square.json`` and ``.md``.
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


def _problem(spec: str, n: int):
    from mifpe_plugins.data import bundled_fashion_mnist_test, load_mnist
    from mifpe_plugins.models import load_model

    if spec.startswith("published:"):
        x, y = load_mnist(SHARED / "mnist", n=n)
        return load_model(spec, model_dir=SHARED).model.eval(), x, y, 0.3
    x, y = bundled_fashion_mnist_test(n)
    return load_model(spec).model.eval(), x, y, 0.1


def _robust(model, adversarial: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: float) -> float:
    with torch.no_grad():
        correct = (model(x).argmax(1) == y) & (model(adversarial).argmax(1) == y)
    assert float((adversarial - x).abs().max()) <= eps + 1e-6, "a search left the ball"
    return 100 * float(correct.float().mean())


def measure(spec: str, n: int, queries: int) -> dict:
    from pyautoattack.square import SquareAttack

    from mifpe_plugins.attacks import square
    from mifpe_plugins.engine import PassCounter

    model, x, y, eps = _problem(spec, n)
    row = {"model": spec, "n": n, "queries": queries}
    for name in ("ours", "autoattack"):
        counter = PassCounter(model)
        tic = time.perf_counter()
        if name == "ours":
            adversarial = square(counter, x, y, eps=eps, queries=queries, p_init=0.8,
                                 generator=torch.Generator().manual_seed(0))
        else:
            with torch.random.fork_rng():  # AutoAttack's Square seeds the global generator
                host = SquareAttack(counter, norm="Linf", eps=eps, n_queries=queries, p_init=0.8, seed=0, device="cpu")
                adversarial = host.perturb(x, y)
        row[name] = {"robust_accuracy": _robust(model, adversarial, x, y, eps), "seconds": time.perf_counter() - tic,
                     "forward_passes": counter.forward_passes}
    row["time_ratio"] = row["ours"]["seconds"] / row["autoattack"]["seconds"]
    row["forward_ratio"] = row["ours"]["forward_passes"] / row["autoattack"]["forward_passes"]
    return row


def main() -> None:
    from mifpe_plugins.provenance import cpu_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", default="100,1000", help="comma-separated query budgets (default 100,1000)")
    parser.add_argument("--published", action="store_true", help="also TRADES' MNIST model, first 200 images")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    plan = [("zoo:fast-at", 300)] + ([("published:trades-mnist-smallcnn", 200)] if args.published else [])
    rows = []
    for spec, n in plan:
        for queries in args.queries.split(","):
            rows.append(measure(spec, n, int(queries)))
            r = rows[-1]
            print(f"{spec}, {queries} queries: ours {r['ours']['robust_accuracy']:.2f} %, AutoAttack's "
                  f"{r['autoattack']['robust_accuracy']:.2f} %, time ratio {r['time_ratio']:.2f}", file=sys.stderr, flush=True)
    lines = ["# Square: ours against AutoAttack's SquareAttack", "",
             f"`python benchmarks/bench_square.py{' --published' if args.published else ''}` — {cpu_model()}, "
             f"{os.cpu_count()} cores, one thread, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}. Same images, "
             "same query budget, both from random stripes; robust accuracy after the search (lower = stronger).", "",
             "| model | n | queries | ours % | AutoAttack's % | forward passes, ours / AA | seconds, ours / AA |",
             "|---|---|---|---|---|---|---|",
             *(f"| {r['model']} | {r['n']} | {r['queries']} | {r['ours']['robust_accuracy']:.2f} | "
               f"{r['autoattack']['robust_accuracy']:.2f} | {r['ours']['forward_passes']} / {r['autoattack']['forward_passes']} "
               f"= {r['forward_ratio']:.2f} | {r['ours']['seconds']:.1f} / {r['autoattack']['seconds']:.1f} = "
               f"{r['time_ratio']:.2f} |" for r in rows)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "square.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "square.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
