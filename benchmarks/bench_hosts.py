"""Side-by-side speed of our core PGD and the host libraries' own attacks, and of our adapters.

Same model, same batch, same budget (L-inf eps = 8/255, the same number of steps, one random
start) in one run on the CPU:

- hosts: ``torchattacks.PGD``, Foolbox ``LinfPGD``, ART ``ProjectedGradientDescent`` (PyTorch
  variant, float32 numpy in and out) and AutoAttack's ``APGDAttack`` (pyautoattack) with CE;
- ours: ``mifpe_plugins.pgd`` with CE and with MIFPE (the paper's protocol: momentum, step
  schedule, best example kept — same number of gradient evaluations);
- adapters: each host's MIFPE adapter, against the core (torchattacks, which runs our engine) or
  against the host's stock attack (Foolbox, ART, AutoAttack, which run the host's loop with our
  loss).

Each variant gets one untimed warm-up, then ``--repeats`` timed runs in rotating order; the median
is reported. Ratios are ``host / ours`` (> 1: ours is faster) and ``adapter / base``.
On the random-weight models the labels are the clean predictions, so every sample starts correctly
classified and none is fooled (no attack can skip work); the third case is a trained model attacked
with its true labels, where our PGD stops working on samples once they are fooled.

Run ``python benchmarks/bench_hosts.py``; results go to ``docs/benchmarks/hosts.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import (  # noqa: E402
    ResNet18,
    SmallCNN,
    _randomise_batchnorm,
    machine_info,
)

import mifpe_plugins  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
EPS = 8 / 255


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def host_variants(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, eps: float = EPS
) -> dict[str, Callable[[], object]]:
    """Zero-argument callables, one per attack, all with the same budget."""
    alpha = 2.5 * eps / steps
    variants: dict[str, Callable[[], object]] = {
        "ours: pgd ce": lambda: mifpe_plugins.pgd(model, x, y, eps=eps, steps=steps, loss="ce"),
        "ours: pgd mifpe": lambda: mifpe_plugins.pgd(model, x, y, eps=eps, steps=steps, loss="mifpe"),
    }
    if _have("torchattacks"):
        import torchattacks

        ta_pgd = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        variants["torchattacks.PGD"] = lambda: ta_pgd(x, y)
        if hasattr(torchattacks, "MIFPE") or _have("mifpe_plugins.adapters.torchattacks"):
            from mifpe_plugins.adapters import torchattacks as ta_adapter

            ours = ta_adapter.MIFPE(model, eps=eps, steps=steps)
            variants["adapter: torchattacks.MIFPE"] = lambda: ours(x, y)
    if _have("foolbox"):
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0, 1))
        fb_pgd = fb.attacks.LinfPGD(steps=steps, abs_stepsize=alpha, random_start=True)
        variants["foolbox LinfPGD"] = lambda: fb_pgd(fmodel, x, y, epsilons=eps)
        if _have("mifpe_plugins.adapters.foolbox"):
            from mifpe_plugins.adapters import foolbox as fb_adapter

            fb_ours = fb_adapter.LinfMIFPEPGD(steps=steps, abs_stepsize=alpha, random_start=True)
            variants["adapter: foolbox LinfMIFPEPGD"] = lambda: fb_ours(fmodel, x, y, epsilons=eps)
    if _have("art"):
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        def art_attack(loss: nn.Module) -> Callable[[], object]:
            clf = PyTorchClassifier(
                model, loss=loss, input_shape=tuple(x.shape[1:]), nb_classes=10, clip_values=(0.0, 1.0)
            )
            attack = ProjectedGradientDescent(
                clf, norm=np.inf, eps=eps, eps_step=alpha, max_iter=steps, num_random_init=1,
                batch_size=x.shape[0], verbose=False,
            )
            x_np, y_np = x.numpy(), y.numpy()
            return lambda: attack.generate(x_np, y_np)

        variants["ART ProjectedGradientDescent"] = art_attack(nn.CrossEntropyLoss())
        if _have("mifpe_plugins.adapters.art"):
            from mifpe_plugins.adapters.art import MIFPELoss

            variants["adapter: ART MIFPELoss"] = art_attack(MIFPELoss())
    if _have("pyautoattack") or _have("autoattack"):
        try:
            from autoattack.autopgd_base import APGDAttack
        except ImportError:
            from pyautoattack.autopgd_base import APGDAttack
        apgd = APGDAttack(model, n_iter=steps, norm="Linf", eps=eps, loss="ce", device="cpu", seed=0)
        rng = torch.get_rng_state()

        def run_apgd(attack=apgd):
            try:
                return attack.perturb(x, y)
            finally:
                torch.set_rng_state(rng)

        variants["AutoAttack APGD-CE"] = run_apgd
        if _have("mifpe_plugins.adapters.autoattack"):
            from mifpe_plugins.adapters import autoattack as aa_adapter

            ours_apgd = aa_adapter.mifpe_apgd(model, n_iter=steps, norm="Linf", eps=eps, device="cpu", seed=0)
            variants["adapter: AutoAttack APGD-MIFPE"] = lambda: run_apgd(ours_apgd)
    return variants


def _adversarial(output: object) -> torch.Tensor:
    """The adversarial inputs out of whatever an attack returned."""
    if isinstance(output, tuple):  # Foolbox: (raw, clipped, success); pyautoattack: (x, y)
        output = output[1] if len(output) == 3 else output[0]
    if isinstance(output, np.ndarray):
        output = torch.from_numpy(output)
    return output


def time_variants(
    variants: dict[str, Callable[[], object]], repeats: int, log, model: nn.Module, y: torch.Tensor
) -> dict[str, dict]:
    names = list(variants)
    robust = {}
    for name in names:
        x_adv = _adversarial(variants[name]())  # warm-up, also scored
        with torch.no_grad():
            robust[name] = float((model(x_adv).argmax(1) == y).float().mean())
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            tic = time.perf_counter()
            variants[name]()
            samples[name].append(time.perf_counter() - tic)
        log(f"  repeat {r + 1}/{repeats} done")
    return {
        name: {"median_s": statistics.median(v), "runs_s": v, "robust_accuracy": robust[name]}
        for name, v in samples.items()
    }


def ratios(timings: dict[str, dict]) -> dict[str, float]:
    med = {k: v["median_s"] for k, v in timings.items()}
    ours = med["ours: pgd ce"]
    out = {}
    for host in ("torchattacks.PGD", "foolbox LinfPGD", "ART ProjectedGradientDescent", "AutoAttack APGD-CE"):
        if host in med:
            out[f"{host} / ours"] = med[host] / ours
    pairs = {
        "adapter: torchattacks.MIFPE": "ours: pgd mifpe",
        "adapter: foolbox LinfMIFPEPGD": "foolbox LinfPGD",
        "adapter: ART MIFPELoss": "ART ProjectedGradientDescent",
        "adapter: AutoAttack APGD-MIFPE": "AutoAttack APGD-CE",
    }
    for adapter, base in pairs.items():
        if adapter in med and base in med:
            out[f"{adapter} / {base}"] = med[adapter] / med[base]
    return out


def render(report: dict) -> str:
    lines = [
        "# Speed: our core and adapters vs the host libraries",
        "",
        f"Machine: {report['machine']['cpu_model']}, {report['machine']['cpu_count']} cores, torch {report['machine']['torch_version']}. "
        f"Date: {report['date']}. Commit: {report['commit']}.",
        f"Command: `{report['command']}`. L-inf eps = 8/255, {report['steps']} steps, one random start, "
        f"median of {report['repeats']} runs.",
        "",
    ]
    for case in report["cases"]:
        lines += [
            f"## {case['model']} (batch {case['batch']}, eps {case['eps']:.4g}, "
            f"clean accuracy {100 * case['clean_accuracy']:.1f} %)",
            "", "| attack | median s | robust accuracy % |", "|---|---|---|",
        ]
        for name, t in case["timings"].items():
            lines.append(f"| {name} | {t['median_s']:.3f} | {100 * t['robust_accuracy']:.1f} |")
        lines += ["", "| ratio | value |", "|---|---|"]
        for name, value in case["ratios"].items():
            lines.append(f"| {name} | {value:.2f} |")
        lines.append("")
    lines += [
        "Host / ours > 1 means our core is faster; the goal is ours <= 0.9 of the fastest host "
        "(every host / ours >= 1.11). Adapter / base is the adapter's overhead (goal <= 1.05).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--out-dir", default=str(REPO_ROOT / "docs" / "benchmarks"))
    args = parser.parse_args(argv)
    steps, repeats = (3, 1) if args.quick else (args.steps, args.repeats)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    torch.manual_seed(0)
    cases: list[tuple] = [("SmallCNN (1x28x28)", SmallCNN().eval(), torch.rand(128 if not args.quick else 8, 1, 28, 28))]
    if not args.quick:
        resnet = ResNet18()
        _randomise_batchnorm(resnet)  # as in bench_core: confident logits, so PGD fools nothing
        cases.append(("ResNet-18 (3x32x32)", resnet.eval(), torch.rand(32, 3, 32, 32)))
    # A trained model on which the attack succeeds: our PGD stops working on fooled samples.
    from mifpe_plugins.cli import large_margin_mlp, synthetic_clusters

    trained = large_margin_mlp(dim=3072, hinge_epochs=0, log=lambda *a: None)
    x_trained, y_trained = synthetic_clusters(512 if not args.quick else 16, dim=3072, seed=5)
    cases.append(("CE-trained MLP (3072 features)", trained, x_trained, y_trained, 0.11))
    report = {
        "command": " ".join(["python benchmarks/bench_hosts.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": machine_info()["git_commit"],
        "machine": machine_info(),
        "steps": steps,
        "repeats": repeats,
        "cases": [],
    }
    for name, model, x, *rest in cases:
        if rest:
            y, eps = rest
        else:
            with torch.no_grad():
                y = model(x).argmax(1)
            eps = EPS
        with torch.no_grad():
            clean = float((model(x).argmax(1) == y).float().mean())
        log(f"{name}: timing {steps} steps, {repeats} repeats")
        timings = time_variants(host_variants(model, x, y, steps, eps), repeats, log, model, y)
        report["cases"].append({
            "model": name, "batch": x.shape[0], "eps": eps, "clean_accuracy": clean,
            "timings": timings, "ratios": ratios(timings),
        })
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hosts.json").write_text(json.dumps(report, indent=2))
    (out / "hosts.md").write_text(render(report))
    print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
