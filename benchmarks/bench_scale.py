"""Scaling benchmark of the evaluation engine: one process against two (torchrun), and the journal's cost.

Two measurements, in one run, on the shipped ``zoo:large-margin`` SmallCNN and the bundled
Fashion-MNIST images (``mifpe table2 --attacks fgsm,pgd,apgd``):

1. **Processes.** The same command with one process (``python -m mifpe_plugins``) and with two
   (``torchrun --nproc-per-node 2``), one intra-op thread each, timed as whole commands (start-up,
   loading, the attacks, the reports), alternating 1 2 1 2 ...; the throughput ratio is
   ``median time of 1 process / median time of 2``. Both runs' per-sample files are compared: they
   must be identical.
2. **The journal.** ``tables.table2`` in this process with the journal in memory (``out=None``)
   and in SQLite (``out=<folder>``), alternating; and, inside the SQLite runs, the time spent in
   ``Journal.record`` (packing the per-sample arrays and committing the transaction) and in reading
   it back, as a share of the run's wall time. The issue's goal: <= 2 %.

Run ``python benchmarks/bench_scale.py`` (about 5 minutes here); ``--quick`` is a smoke run.
Results go to ``docs/benchmarks/scale.json`` and ``docs/benchmarks/scale.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(ranks: int, out: Path, samples: int, steps: int, batch: int) -> list[str]:
    table = ["-m", "mifpe_plugins", "table2", "--samples", str(samples), "--steps", str(steps), "--batch-size", str(batch),
             "--attacks", "fgsm,pgd,apgd", "--threads", "1", "--quiet", "--name", "scale", "--out", str(out)]
    if ranks == 1:
        return [sys.executable, *table]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-addr", "127.0.0.1",
            "--master-port", str(_port()), *table]


def processes(samples: int, steps: int, batch: int, repeats: int) -> dict:
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(repeats):
            for ranks in (1, 2) if repeat % 2 == 0 else (2, 1):
                out = Path(scratch) / f"{ranks}"
                shutil.rmtree(out, ignore_errors=True)
                tic = time.perf_counter()
                subprocess.run(_command(ranks, out, samples, steps, batch), env=ENV, check=True, capture_output=True)
                times[ranks].append(time.perf_counter() - tic)
                print(f"  {ranks} process(es): {times[ranks][-1]:.1f} s", file=sys.stderr)
        identical = (Path(scratch) / "1" / "scale.samples.csv").read_bytes() == (Path(scratch) / "2" / "scale.samples.csv").read_bytes()
    one, two = statistics.median(times[1]), statistics.median(times[2])
    return {"seconds_1_process": times[1], "seconds_2_processes": times[2], "median_1": one, "median_2": two,
            "throughput_ratio_2_over_1": one / two, "per_sample_files_identical": identical}


def journal(samples: int, steps: int, batch: int, repeats: int) -> dict:
    from mifpe_plugins import journal as journal_module
    from mifpe_plugins.data import bundled_fashion_mnist_test
    from mifpe_plugins.tables import Evaluation, table2
    from mifpe_plugins.zoo import load as load_zoo

    torch.set_num_threads(1)
    model = load_zoo("large-margin").eval()
    x, y = bundled_fashion_mnist_test(samples)
    spent = [0.0]
    record, records = journal_module.Journal.record, journal_module.Journal.records

    def timed_record(self, *args, **kwargs):
        tic = time.perf_counter()
        record(self, *args, **kwargs)
        spent[0] += time.perf_counter() - tic

    def timed_records(self, *args, **kwargs):
        iterator = records(self, *args, **kwargs)
        while True:
            tic = time.perf_counter()
            item = next(iterator, None)
            spent[0] += time.perf_counter() - tic
            if item is None:
                return
            yield item

    journal_module.Journal.record, journal_module.Journal.records = timed_record, timed_records
    times: dict[str, list[float]] = {"memory": [], "sqlite": []}
    shares = []
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(repeats):
            for where in ("memory", "sqlite") if repeat % 2 == 0 else ("sqlite", "memory"):
                out = None if where == "memory" else Path(scratch) / str(repeat)
                spent[0] = 0.0
                evaluation = Evaluation(model, x, y, eps=0.1, steps=steps, batch_size=batch, show_progress=False)
                tic = time.perf_counter()
                table2(evaluation, attacks=("fgsm", "pgd", "apgd"), out=out, name="scale")
                times[where].append(time.perf_counter() - tic)
                if where == "sqlite":
                    shares.append(100 * spent[0] / times[where][-1])
                print(f"  journal in {where}: {times[where][-1]:.1f} s", file=sys.stderr)
    memory, sqlite = statistics.median(times["memory"]), statistics.median(times["sqlite"])
    return {"seconds_memory": times["memory"], "seconds_sqlite": times["sqlite"], "median_memory": memory,
            "median_sqlite": sqlite, "ratio_sqlite_over_memory": sqlite / memory,
            "journal_share_percent": shares, "median_journal_share_percent": statistics.median(shares)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer samples and repeats")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"), help="folder for scale.json and scale.md")
    args = parser.parse_args()
    samples, steps, batch, repeats = (100, 10, 25, 2) if args.quick else (1000, 100, 100, 2)
    print(f"table2 on {samples} images, {steps} steps, chunks of {batch}:", file=sys.stderr)
    from mifpe_plugins.provenance import cpu_model

    result = {"machine": f"{cpu_model()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
              "torch": torch.__version__, "command": "python benchmarks/bench_scale.py" + (" --quick" if args.quick else ""),
              "samples": samples, "steps": steps, "chunk": batch, "repeats": repeats,
              "processes": processes(samples, steps, batch, repeats), "journal": journal(samples, steps, batch, repeats)}
    p, j = result["processes"], result["journal"]
    lines = [
        "# Scaling: one process against two, and the journal's cost", "",
        f"`{result['command']}` — {result['machine']}, torch {result['torch']}, {result['date']}. "
        f"`mifpe table2 --attacks fgsm,pgd,apgd` on zoo:large-margin, {samples} bundled images, {steps} steps, chunks of "
        f"{batch}, one thread per process; medians of {repeats} alternating repeats.", "",
        "| | 1 process | 2 processes (torchrun) | ratio |", "|---|---|---|---|",
        f"| wall time, whole command (s) | {p['median_1']:.1f} | {p['median_2']:.1f} | throughput x{p['throughput_ratio_2_over_1']:.2f} |",
        "", f"Per-sample files of the two runs identical: {p['per_sample_files_identical']}.", "",
        "| | journal in memory | journal in SQLite | ratio |", "|---|---|---|---|",
        f"| wall time, table2 in-process (s) | {j['median_memory']:.1f} | {j['median_sqlite']:.1f} | {j['ratio_sqlite_over_memory']:.3f} |",
        "", f"Time inside the SQLite journal (writing every chunk, reading it back): {j['median_journal_share_percent']:.2f} % "
        "of the run (median; goal <= 2 %).",
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
