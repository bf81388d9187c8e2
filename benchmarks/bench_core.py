"""CPU benchmark of the PGD core: iteration cost against a bare forward+backward, MIFPE against CE.

Two numbers are measured for each model, in one run:

1. ``PGD / fwd+bwd``: the time of one iteration of :func:`mifpe_plugins.pgd` divided by the time
   of a bare input-gradient evaluation of the same model on the same batch,
   ``torch.autograd.grad(F.cross_entropy(model(x), y, reduction="none").sum(), x)``.
   Goal: <= 1.05.
2. ``MIFPE / CE``: the PGD iteration time with ``loss="mifpe"`` divided by the one with
   ``loss="ce"``. Goal: <= 1.02.

How a PGD iteration is timed
----------------------------
A call ``pgd(steps=S)`` costs ``setup + S * iteration``, where ``setup`` is everything done once
per call: validation of the inputs (with its host synchronisations), the clean forward pass, the
random start and the final no-grad forward pass that scores the last iterate. Dividing the total by
``S`` would charge ``setup / S`` to every iteration, an amount that depends on ``S`` alone. So each
variant is timed with ``steps=S`` and with ``steps=1`` and the per-iteration time is the difference
``(T(S) - T(1)) / (S - 1)``; the fixed cost ``T(1) - iteration`` is reported separately, and so is
the amortised ``T(S) / S`` for reference. The bare forward+backward is timed as a loop of ``S``
evaluations divided by ``S`` (it has no setup).

Every repeat runs all variants of a model back to back, in an order that rotates from one repeat
to the next, after one untimed warm-up of each; the reported value of each variant is the median
over repeats. PGD runs the whole batch at every step whether or not a sample is already fooled
(fooled samples are frozen by masking), so the timings do not depend on how fast the attack
succeeds. Models have random weights (``torch.manual_seed``) and are in eval mode; the labels are
the clean predictions, so every sample starts correctly classified.

The direct ratios compare two timings of the big model and so carry its run-to-run noise (a few
percent on a shared machine). So each batch is also run through a linear probe model (flatten +
one linear layer) whose forward+backward costs almost nothing: there the difference between a PGD
iteration and a bare forward+backward is PGD's own per-step work (masking, projection, momentum,
success bookkeeping), measured with little noise, and ``1 + that / fwd+bwd`` is reported as the
*implied* ratio next to the direct one. The same is done for MIFPE's extra cost over CE.

On a 2-core machine another busy process does not slow multi-threaded PyTorch by a few percent but
by up to 10x, so the script reads ``/proc/stat`` around every timed sample: it waits for the CPU to
be idle before each repeat, and a sample during which other processes used CPU time is run again
(``--max-retries``); the counts of discarded and still-disturbed samples are in the JSON.

Run ``python benchmarks/bench_core.py`` (about 4 minutes on an otherwise idle 2-core machine);
``--quick`` is a smoke run.
Results go to ``docs/benchmarks/core.json`` and ``docs/benchmarks/core.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mifpe_plugins import pgd
from mifpe_plugins.provenance import cpu_model, provenance

REPO_ROOT = Path(__file__).resolve().parent.parent
EPS = 8 / 255
PROBE_STEPS = 200
PGD_GOAL = 1.05
MIFPE_GOAL = 1.02


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    """The TRADES MNIST SmallCNN: conv32-conv32-pool-conv64-conv64-pool-fc200-fc200-fc10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(),
            nn.Conv2d(32, 32, 3), nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, 3), nn.ReLU(),
            nn.Conv2d(64, 64, 3), nn.ReLU(),
            nn.MaxPool2d(2, 2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(64 * 4 * 4, 200), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(200, 200), nn.ReLU(),
            nn.Linear(200, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """The usual CIFAR-10 ResNet-18 (3x3 stem, no max-pool, four stages of two basic blocks)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            for s in (stride, 1):
                layers.append(BasicBlock(in_planes, planes, s))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


class LinearProbe(nn.Module):
    """Flatten + one linear layer: so cheap that PGD's own per-step work is most of an iteration."""

    def __init__(self, features: int, num_classes: int = 10) -> None:
        super().__init__()
        self.linear = nn.Linear(features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1))


def _randomise_batchnorm(model: nn.Module) -> None:
    # Non-trivial running statistics so that eval-mode BatchNorm is not the identity.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.1, 0.1)


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def fwd_bwd_loop(model: nn.Module, x0: Tensor, y: Tensor, steps: int) -> Tensor:
    """``steps`` bare input-gradient evaluations (the baseline)."""
    grad = x0
    for _ in range(steps):
        x = x0.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="none").sum(), x)
    return grad


_CLOCK_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent not idle (all processes, incl. hypervisor steal)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICK


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _minor_page_faults() -> int | None:
    try:
        import resource
    except ImportError:  # not on Unix
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(fn: Callable[[], object]) -> tuple[float, float | None, int | None]:
    """Wall time of ``fn()``, the CPU time the rest of the machine used meanwhile, page faults.

    The second number (from ``/proc/stat`` minus this process's own CPU time, so with a
    resolution of a few clock ticks) is ``None`` where ``/proc/stat`` is not available. The third
    is this process's minor page faults: glibc's allocator returns large freed blocks to the
    system and faults them in again, a cost every forward+backward pays and one that varies from
    sample to sample.
    """
    faults0 = _minor_page_faults()
    busy0, own0 = _machine_busy_seconds(), _own_cpu_seconds()
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    own, busy1 = _own_cpu_seconds() - own0, _machine_busy_seconds()
    faults1 = _minor_page_faults()
    foreign = None if busy0 is None or busy1 is None else max(0.0, busy1 - busy0 - own)
    faults = None if faults0 is None or faults1 is None else faults1 - faults0
    return wall, foreign, faults


def is_quiet(wall: float, foreign: float | None) -> bool:
    """Whether a sample ran without competition for the CPU (3 clock ticks + 0.5% of slack).

    A few clock ticks is the resolution of the counters; the relative part is kept small because
    stolen CPU time slows the 2-thread team by at least as much wall time.
    """
    return foreign is None or foreign <= 3 / _CLOCK_TICK + 0.005 * wall


def wait_for_quiet(*, window: float = 1.0, max_wait: float = 120.0) -> bool:
    """Block until other processes have left the CPU idle for ``window`` seconds (or give up)."""
    if _machine_busy_seconds() is None:
        return True
    deadline = time.perf_counter() + max_wait
    quiet_for = 0.0
    while time.perf_counter() < deadline:
        busy0, own0 = _machine_busy_seconds(), _own_cpu_seconds()
        time.sleep(0.25)
        busy1, own1 = _machine_busy_seconds(), _own_cpu_seconds()
        foreign = (busy1 or 0.0) - (busy0 or 0.0) - (own1 - own0)
        quiet_for = quiet_for + 0.25 if foreign <= 3 / _CLOCK_TICK else 0.0
        if quiet_for >= window:
            return True
    return False


def timed_quiet(fn: Callable[[], object], *, max_retries: int, log: Callable[[str], None], label: str) -> dict:
    """Time ``fn()``; retry a sample during which other processes took CPU time.

    On a shared machine another process competing for the 2 cores does not slow a multi-threaded
    PyTorch call down by a few percent but by up to 10x (threads wait at barriers for a core),
    so such samples are detected and run again, up to ``max_retries`` times. If every attempt
    was disturbed, the fastest one is kept and the sample is marked ``quiet=False``.
    """
    attempts = []
    for attempt in range(max_retries + 1):
        wall, foreign, faults = timed(fn)
        attempts.append({"seconds": wall, "foreign_cpu_seconds": foreign, "minor_page_faults": faults})
        if is_quiet(wall, foreign):
            return dict(attempts[-1], quiet=True, discarded=attempts[:-1])
        log(f"    {label}: {wall * 1e3:.1f} ms with {foreign:.2f} CPU s used by other processes, retrying")
        if attempt < max_retries:
            wait_for_quiet()
    best = min(attempts, key=lambda a: a["seconds"])
    return dict(best, quiet=False, discarded=[a for a in attempts if a is not best])


def bench_model(
    name: str,
    model: nn.Module,
    x0: Tensor,
    y: Tensor,
    *,
    steps: int,
    repeats: int,
    max_retries: int,
    log: Callable[[str], None],
    eps: float = EPS,
) -> dict:
    """Time the baseline and PGD (CE, MIFPE; ``steps`` and 1 step) on one model and batch."""

    def run_pgd(loss: str, n: int) -> Callable[[], object]:
        return lambda: pgd(model, x0, y, eps=eps, steps=n, loss=loss, random_start=True)

    variants: dict[str, Callable[[], object]] = {
        "fwd_bwd": lambda: fwd_bwd_loop(model, x0, y, steps),
        "ce_S": run_pgd("ce", steps),
        "ce_1": run_pgd("ce", 1),
        "mifpe_S": run_pgd("mifpe", steps),
        "mifpe_1": run_pgd("mifpe", 1),
    }
    names = list(variants)
    # Warm-up: allocator, oneDNN primitive caches, lazy imports.
    wait_for_quiet()
    for key in names:
        variants[key]()
    raw: dict[str, list[float]] = {key: [] for key in names}
    samples: dict[str, list[dict]] = {key: [] for key in names}
    for r in range(repeats):
        wait_for_quiet()
        shift = r % len(names)
        order = names[shift:] + names[:shift]
        if r % 2 == 1:
            order = order[::-1]
        for key in order:
            sample = timed_quiet(variants[key], max_retries=max_retries, log=log, label=f"{name} {key}")
            samples[key].append(sample)
            raw[key].append(sample["seconds"])
        log(f"  {name} repeat {r + 1}/{repeats}: " + ", ".join(f"{k}={raw[k][-1] * 1e3:.1f}ms" for k in names))

    med = {key: statistics.median(values) for key, values in raw.items()}
    # Minima as a second estimate: interference from other work on the machine only adds time.
    low = {key: min(values) for key, values in raw.items()}
    fwd_bwd = med["fwd_bwd"] / steps
    out: dict = {
        "model": name,
        "batch": int(x0.shape[0]),
        "input_shape": list(x0.shape[1:]),
        "steps": steps,
        "repeats": repeats,
        "raw_seconds": raw,
        "foreign_cpu_seconds": {k: [smp["foreign_cpu_seconds"] for smp in v] for k, v in samples.items()},
        "minor_page_faults": {k: [smp["minor_page_faults"] for smp in v] for k, v in samples.items()},
        "disturbed_samples_kept": sum(not smp["quiet"] for v in samples.values() for smp in v),
        "discarded_attempts": {k: [a for smp in v for a in smp["discarded"]] for k, v in samples.items()},
        "median_seconds": med,
        "min_seconds": low,
        "fwd_bwd_ms": fwd_bwd * 1e3,
    }
    for loss in ("ce", "mifpe"):
        t_s, t_1 = med[f"{loss}_S"], med[f"{loss}_1"]
        per_iter = (t_s - t_1) / (steps - 1)
        # Same estimate per repeat, for a spread that shows how much to trust the medians.
        per_repeat = [(s - o) / (steps - 1) for s, o in zip(raw[f"{loss}_S"], raw[f"{loss}_1"], strict=True)]
        out[loss] = {
            "iter_ms": per_iter * 1e3,
            "iter_ms_per_repeat": [v * 1e3 for v in per_repeat],
            "setup_ms": (t_1 - per_iter) * 1e3,
            "amortised_iter_ms": t_s / steps * 1e3,
            "ratio_to_fwd_bwd": per_iter / fwd_bwd,
            "amortised_ratio_to_fwd_bwd": t_s / steps / fwd_bwd,
            # Paired within each repeat (the samples ran next to each other): shows the noise.
            "ratio_to_fwd_bwd_per_repeat": [
                v / (f / steps) for v, f in zip(per_repeat, raw["fwd_bwd"], strict=True)
            ],
            "ratio_to_fwd_bwd_from_minima": (low[f"{loss}_S"] - low[f"{loss}_1"])
            / (steps - 1) / (low["fwd_bwd"] / steps),
        }
    out["ratio_mifpe_ce"] = out["mifpe"]["iter_ms"] / out["ce"]["iter_ms"]
    faults = {k: [smp["minor_page_faults"] for smp in v] for k, v in samples.items()}
    if all(f is not None for v in faults.values() for f in v):
        med_faults = {k: statistics.median(v) for k, v in faults.items()}
        out["minor_page_faults_per_iter"] = {
            "fwd_bwd": med_faults["fwd_bwd"] / steps,
            "ce": (med_faults["ce_S"] - med_faults["ce_1"]) / (steps - 1),
            "mifpe": (med_faults["mifpe_S"] - med_faults["mifpe_1"]) / (steps - 1),
        }
    out["ratio_mifpe_ce_per_repeat"] = [
        m / c for m, c in zip(out["mifpe"]["iter_ms_per_repeat"], out["ce"]["iter_ms_per_repeat"], strict=True)
    ]
    return out


# --------------------------------------------------------------------------------------------
# Machine and reporting
# --------------------------------------------------------------------------------------------


def machine_info() -> dict:
    """The package's one provenance record, in the keys the benchmark reports use."""
    record = provenance(" ".join(["python", *sys.argv]))
    commit = record["commit"]
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python_version": record["python"],
        "platform": platform.platform(),
        "mifpe_plugins_version": record["mifpe_plugins"],
        "git_commit": commit.removesuffix("+dirty") if commit else None,
        "package_has_uncommitted_changes": commit.endswith("+dirty") if commit else None,
        "date": record["date"],
        "libraries": record["libraries"],
    }


def _verdict(value: float, goal: float) -> str:
    return "(ok)" if value <= goal else "(over goal)"


def _spread(values: list[float]) -> str:
    return f"[{min(values):.3f}, {max(values):.3f}]"


def render_markdown(report: dict) -> str:
    m = report["machine"]
    s = report["settings"]
    lines = [
        "# Core PGD benchmark (CPU)",
        "",
        f"Generated by `benchmarks/bench_core.py` on {m['date']}"
        + (f" at commit `{m['git_commit']}`" if m["git_commit"] else "")
        + (" (with uncommitted changes to `mifpe_plugins/`)" if m["package_has_uncommitted_changes"] else "")
        + ".",
        "",
        f"- Machine: {m['cpu_model']}, {m['cpu_count']} cores, torch {m['torch_version']} "
        f"({m['torch_num_threads']} threads), Python {m['python_version']}",
        f"- Settings: eps = 8/255 (L-inf), PGD defaults otherwise (random start, linear step "
        f"schedule, momentum 0.75), steps S = {s['steps']}, median of {s['repeats']} repeats"
        + (" (**--quick smoke run, not representative**)" if s["quick"] else ""),
        "- Rerun: `python benchmarks/bench_core.py`",
        "",
        "| model | batch | fwd+bwd ms | PGD iteration ms | ratio PGD / fwd+bwd | CE iter ms "
        "| MIFPE iter ms | ratio MIFPE / CE |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        ce, mi = r["ce"], r["mifpe"]
        pgd_ratio, mifpe_ratio = ce["ratio_to_fwd_bwd"], r["ratio_mifpe_ce"]
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['fwd_bwd_ms']:.2f} | {ce['iter_ms']:.2f} "
            f"| **{pgd_ratio:.3f}** {_spread(ce['ratio_to_fwd_bwd_per_repeat'])} "
            f"{_verdict(pgd_ratio, PGD_GOAL)} "
            f"| {ce['iter_ms']:.2f} | {mi['iter_ms']:.2f} "
            f"| **{mifpe_ratio:.3f}** {_spread(r['ratio_mifpe_ce_per_repeat'])} "
            f"{_verdict(mifpe_ratio, MIFPE_GOAL)} |"
        )
    lines += [
        "",
        f"Goals: PGD / fwd+bwd <= {PGD_GOAL}, MIFPE / CE <= {MIFPE_GOAL}. Brackets: smallest and "
        "largest ratio over the repeats, each repeat's variants paired (they ran back to back); "
        "the bold value is the ratio of the medians.",
        "",
        "Both losses, with the fixed per-call cost and the amortised ratio:",
        "",
        "| model | loss | iteration ms | iteration / fwd+bwd | fixed cost per call ms "
        "| amortised T(S)/S ms | amortised / fwd+bwd |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        for loss in ("ce", "mifpe"):
            v = r[loss]
            lines.append(
                f"| {r['model']} | {loss} | {v['iter_ms']:.2f} | {v['ratio_to_fwd_bwd']:.3f} "
                f"| {v['setup_ms']:.1f} | {v['amortised_iter_ms']:.2f} "
                f"| {v['amortised_ratio_to_fwd_bwd']:.3f} |"
            )
    lines += [
        "",
        "What PGD itself adds per iteration, measured by running the same batch through a linear "
        "model (`Flatten` + `Linear`, S = "
        + ", ".join(sorted({str(r["linear_probe"]["steps"]) for r in report["results"]}))
        + ") where the forward+backward costs almost "
        "nothing, so these small differences are not buried in the noise of the big models:",
        "",
        "| model | probe fwd+bwd ms | probe PGD iter ms (CE) | PGD bookkeeping ms "
        "| MIFPE - CE ms | implied PGD / fwd+bwd | implied MIFPE / CE |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        p, o = r["linear_probe"], r["overhead"]
        lines.append(
            f"| {r['model']} | {p['fwd_bwd_ms']:.3f} | {p['ce']['iter_ms']:.3f} "
            f"| {o['pgd_bookkeeping_ms']:.3f} | {o['mifpe_minus_ce_ms']:.3f} "
            f"| {o['implied_ratio_pgd_to_fwd_bwd']:.4f} | {o['implied_ratio_mifpe_ce']:.4f} |"
        )
    lines += [
        "",
        "How to read it:",
        "",
        "- *fwd+bwd*: one bare input gradient, "
        "`torch.autograd.grad(F.cross_entropy(model(x), y, reduction='none').sum(), x)`, "
        "timed as a loop of S evaluations divided by S.",
        "- *PGD iteration* (= *CE iter*): `pgd(..., loss='ce')`, per-iteration time "
        "`(T(steps=S) - T(steps=1)) / (S - 1)`, so the fixed per-call cost (input validation, "
        "clean forward, random start, final scoring forward) is not spread over the iterations; "
        "it is the *fixed cost* column, `T(1) - iteration`. The baseline uses cross-entropy, so "
        "the PGD ratio is taken with `loss='ce'`.",
        "- *MIFPE iter*: the same with `loss='mifpe'`; *MIFPE / CE* compares the two iteration times.",
        "- *amortised*: `T(steps=S) / S`, i.e. the fixed cost spread over S iterations; it shrinks "
        "towards the iteration time as S grows (the paper's protocol uses S = 100).",
        "- PGD computes the whole batch at every step (fooled samples are frozen by masking), so "
        "timings do not depend on attack success. Random weights, eval mode.",
        "- A timed sample during which other processes used the CPU (read from `/proc/stat`) is "
        f"run again, up to {s['max_retries']} times: on 2 cores a competing process slows "
        "multi-threaded PyTorch by up to 10x. Disturbed samples kept after all retries: "
        + ", ".join(f"{r['model']}: {r['disturbed_samples_kept']}" for r in report["results"])
        + ". Raw timings of every sample (and of discarded ones) are in `core.json`.",
        "- Minor page faults per iteration (medians; fwd+bwd / PGD CE / PGD MIFPE): "
        + "; ".join(
            f"{r['model']}: " + " / ".join(f"{v:.0f}" for v in r["minor_page_faults_per_iter"].values())
            for r in report["results"] if "minor_page_faults_per_iter" in r
        )
        + ". glibc hands large freed activation buffers back to the kernel and faults them in "
        "again at every forward+backward; this costs the baseline and PGD alike, and how much "
        "varies from sample to sample.",
        "- *implied* ratios: `1 + bookkeeping / fwd+bwd` (and `1 + (MIFPE - CE) / CE iter`), with "
        "the bookkeeping measured on the probe and fwd+bwd on the real model. They leave out "
        "cache effects of the real model but are far less noisy than the direct ratios.",
    ]
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def overhead_estimate(result: dict) -> dict:
    """PGD's per-iteration work beyond the forward+backward, from the linear probe."""
    probe = result["linear_probe"]
    ce_extra = probe["ce"]["iter_ms"] - probe["fwd_bwd_ms"]
    mifpe_extra = probe["mifpe"]["iter_ms"] - probe["ce"]["iter_ms"]
    return {
        "pgd_bookkeeping_ms": ce_extra,
        "mifpe_minus_ce_ms": mifpe_extra,
        "implied_ratio_pgd_to_fwd_bwd": 1 + ce_extra / result["fwd_bwd_ms"],
        "implied_ratio_mifpe_ce": 1 + mifpe_extra / result["ce"]["iter_ms"],
    }


def build_cases(quick: bool) -> list[tuple[str, nn.Module, Tensor, Tensor, int]]:
    """(name, model, inputs, labels, default steps) per model."""
    cases = []
    torch.manual_seed(0)
    small = SmallCNN().eval()
    x_small = torch.rand(16 if quick else 128, 1, 28, 28)
    cases.append(("SmallCNN (MNIST)", small, x_small, 30))
    torch.manual_seed(1)
    resnet = ResNet18().eval()
    _randomise_batchnorm(resnet)
    x_resnet = torch.rand(4 if quick else 32, 3, 32, 32)
    cases.append(("ResNet-18 (CIFAR)", resnet, x_resnet, 10))
    out = []
    for name, model, x, steps in cases:
        with torch.no_grad():
            y = model(x).argmax(dim=1)  # every sample starts correctly classified
        out.append((name, model, x, y, steps))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (default 9; 2 with --quick)")
    parser.add_argument(
        "--steps", type=int, default=None,
        help="PGD steps S (>= 2) for every model (default: 30 for SmallCNN, 10 for ResNet-18; 3 with --quick); "
        f"the linear probes always use {PROBE_STEPS}",
    )
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "docs" / "benchmarks", help="where core.json and core.md go")
    parser.add_argument("--quick", action="store_true", help="tiny batches, steps and repeats: a smoke run only")
    parser.add_argument(
        "--max-retries", type=int, default=3,
        help="re-runs of a sample during which other processes used the CPU (default 3)",
    )
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 9
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.max_retries < 0:
        parser.error("--max-retries must be >= 0")
    if args.steps is not None and args.steps < 2:
        parser.error("--steps must be >= 2 (the per-iteration time is a difference of steps=S and steps=1)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.perf_counter()
    machine = machine_info()
    log(f"{machine['cpu_model']}, {machine['cpu_count']} cores, torch {machine['torch_version']}, "
        f"{machine['torch_num_threads']} threads")
    results = []
    for name, model, x, y, default_steps in build_cases(args.quick):
        steps = args.steps if args.steps is not None else (3 if args.quick else default_steps)
        log(f"{name}: batch {x.shape[0]}, S = {steps}, {args.repeats} repeats")
        result = bench_model(
            name, model, x, y, steps=steps, repeats=args.repeats, max_retries=args.max_retries, log=log
        )
        # The same batch through a linear model: what PGD adds per iteration, almost free of the
        # model's cost and so of its noise.
        torch.manual_seed(2)
        probe = LinearProbe(x[0].numel()).eval()
        with torch.no_grad():
            y_probe = probe(x).argmax(dim=1)
        probe_steps = 3 if args.quick else PROBE_STEPS
        log(f"{name} linear probe: S = {probe_steps}, {args.repeats} repeats")
        # PGD stops working on fooled samples, and the random linear probe is fooled at 8/255;
        # at eps = 1e-6 no sample is, so every step does its full work on the whole batch.
        result["linear_probe"] = bench_model(
            f"{name} linear probe", probe, x, y_probe, steps=probe_steps, repeats=args.repeats,
            max_retries=args.max_retries, log=log, eps=1e-6,
        )
        result["overhead"] = overhead_estimate(result)
        results.append(result)
    elapsed = time.perf_counter() - started
    report = {
        "machine": machine,
        "settings": {
            "eps": EPS,
            "norm": "linf",
            "steps": args.steps if args.steps is not None else {r["model"]: r["steps"] for r in results},
            "repeats": args.repeats,
            "max_retries": args.max_retries,
            "quick": args.quick,
            "command": "python benchmarks/bench_core.py" + (" --quick" if args.quick else ""),
            "argv": sys.argv[1:] if argv is None else argv,
            "per_iteration_method": "(T(steps=S) - T(steps=1)) / (S - 1), medians over repeats",
            "goals": {"pgd_over_fwd_bwd": PGD_GOAL, "mifpe_over_ce": MIFPE_GOAL},
        },
        "results": results,
        "wall_seconds": elapsed,
    }
    if isinstance(report["settings"]["steps"], dict):
        # A readable "S = ..." for the Markdown header.
        steps_text = ", ".join(f"{k}: {v}" for k, v in report["settings"]["steps"].items())
    else:
        steps_text = str(report["settings"]["steps"])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "core.json").write_text(json.dumps(report, indent=2) + "\n")
    md_report = dict(report, settings=dict(report["settings"], steps=steps_text))
    (args.out_dir / "core.md").write_text(render_markdown(md_report))
    print(render_markdown(md_report))
    log(f"wrote {args.out_dir / 'core.json'} and {args.out_dir / 'core.md'} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
