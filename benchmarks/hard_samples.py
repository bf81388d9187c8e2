"""The samples of TRADES' MNIST model that only AutoAttack fools: how many queries a search needs.

Reads the committed Table 1 run on the first 1 000 MNIST test images
(``docs/results/trades-mnist/table1-autoattack-n1000.samples.csv``) and takes the samples AutoAttack
standard fools but MIFPE-PGD-100 does not. It prints how far MIFPE-PGD-100 moved the logit margin
on the samples it left robust (median of final / clean margin: near 1 means the gradient attack
barely moved it), then attacks the hard samples with our Square search, from random stripes and
from MIFPE-PGD-100's smallest-margin points, at several query budgets and three random starts,
and counts the samples left robust.

Run ``python benchmarks/hard_samples.py`` (needs ../shared/data; about a minute with one thread).
Results go to ``docs/benchmarks/hard-samples.md``.
"""

from __future__ import annotations

import csv
import os
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
TABLE1 = ROOT / "docs" / "results" / "trades-mnist" / "table1-autoattack-n1000.samples.csv"


def main() -> None:
    from mifpe_plugins.attacks import pgd, square
    from mifpe_plugins.data import load_mnist
    from mifpe_plugins.models import load_model
    from mifpe_plugins.provenance import cpu_model

    torch.set_num_threads(1)
    with TABLE1.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["label"] == r["clean_prediction"]]
    survivors = [r for r in rows if r["PGD-100 mifpe/success"] == "0"]
    moved = statistics.median(float(r["PGD-100 mifpe/margin"]) / float(r["clean_margin"]) for r in survivors)
    hard = [int(r["sample"]) for r in survivors if r["AutoAttack standard/success"] == "1"]
    model = load_model("published:trades-mnist-smallcnn", model_dir=SHARED).model.eval()
    x, y = load_mnist(SHARED / "mnist", n=1000)
    x, y = x[hard], y[hard]
    lines = ["# TRADES' MNIST model: the samples only AutoAttack fools", "",
             f"`python benchmarks/hard_samples.py` — {cpu_model()}, {os.cpu_count()} cores, one thread, "
             f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}.", "",
             f"On the {len(survivors)} samples MIFPE-PGD-100 leaves robust in the committed Table 1 run, the median of "
             f"final / clean logit margin is {moved:.3f}. AutoAttack standard alone fools {len(hard)} of them: "
             f"{', '.join(map(str, hard))}. Samples left robust by our Square search (of {len(hard)}), three random "
             "starts:", "",
             "| start | queries | left robust, starts 0 / 1 / 2 |", "|---|---|---|"]
    for queries in (1000, 3000):
        for start_name in ("random stripes", "MIFPE-PGD-100's smallest-margin point"):
            left = []
            for seed in range(3):
                generator = torch.Generator().manual_seed(seed)
                start = pgd(model, x, y, eps=0.3, steps=100, generator=generator) if start_name != "random stripes" else None
                found = square(model, x, y, eps=0.3, queries=queries, start=start, generator=generator)
                with torch.no_grad():
                    left.append(int((model(found).argmax(1) == y).sum()))
            lines.append(f"| {start_name} | {queries} | {' / '.join(map(str, left))} |")
            print(lines[-1], flush=True)
    out = ROOT / "docs" / "benchmarks" / "hard-samples.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
