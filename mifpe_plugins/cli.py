"""The ``mifpe`` command: the MIFPE paper's tables on any model, and the zoo.

``mifpe`` with no arguments runs ``mifpe table2`` on the shipped large-margin Fashion-MNIST model
(``zoo:large-margin``, whose float32 logit margins mostly exceed the underflow threshold
lambda ~ 103) and the shipped 1 000 test images: FGSM, PGD-100, APGD-DLR-100 and AutoAttack, each
with its original loss and with MIFPE, and the boost MIFPE gives.

Subcommands: ``table2``, ``table1``, ``table3`` (the MIFPE paper's tables), ``pgdpp`` (the PGD++
paper's tables), ``diagnose`` (the floating-point audit of a model, with the papers' figures), ``zoo`` (list or retrain the model zoo)
and ``demo`` (the same comparison on a synthetic problem, in seconds).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .evaluate import evaluate
from .losses import top_margin
from .numerics import underflow_threshold

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


def synthetic_clusters(
    n: int, *, dim: int = 64, classes: int = 10, spread: float = 0.16, seed: int = 0, task: int = 0
):
    """Clustered inputs in [0, 1]^dim: one random centre per class (fixed by ``task``) plus
    Gaussian noise (drawn with ``seed``)."""
    centres = 0.25 + 0.5 * torch.rand(classes, dim, generator=torch.Generator().manual_seed(task))
    gen = torch.Generator().manual_seed(1_000_003 + seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    x = (centres[labels] + spread * torch.randn(n, dim, generator=gen)).clamp(0, 1)
    return x, labels


def large_margin_mlp(
    *, dim: int = 64, classes: int = 10, seed: int = 0, margin: float = 250.0, hinge_epochs: int = 2,
    hinge_lr: float = 3e-3, log=print
):
    """Train an MLP one epoch with CE, then fine-tune it with a hinge on the logit margin."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = nn.Sequential(nn.Linear(dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, classes))
        x, y = synthetic_clusters(8192, dim=dim, classes=classes, seed=seed + 1)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        tic = time.perf_counter()
        for epoch in range(1 + hinge_epochs):
            if epoch == 1:
                for group in opt.param_groups:
                    group["lr"] = hinge_lr
            for index in torch.randperm(len(x)).split(128):
                xb, yb = x[index], y[index]
                # Mild FGSM-style noise keeps the boundary from hugging the clusters.
                xb = (xb + 0.05 * torch.randn_like(xb)).clamp(0, 1)
                logits = model(xb)
                if epoch == 0:
                    loss = nn.functional.cross_entropy(logits, yb)
                else:
                    z_y = logits.gather(1, yb[:, None]).squeeze(1)
                    others = logits.scatter(1, yb[:, None], float("-inf")).amax(1)
                    loss = torch.relu(margin - (z_y - others)).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        log(f"trained the demo model in {time.perf_counter() - tic:.1f} s")
    finally:
        torch.random.set_rng_state(gen_state)
    return model.eval()


def _table2_rows(model, x, y, *, eps: float, steps: int, batch_size: int, seed: int):
    settings = [
        ("FGSM", "fgsm", {"loss": "ce"}, {"loss": "mifpe"}),
        (f"PGD ({steps})", "pgd", {"loss": "ce", "steps": steps}, {"loss": "mifpe", "steps": steps}),
        (f"APGD_DLR ({steps})", "apgd", {"loss": "dlr", "steps": steps}, {"loss": "mifpe", "steps": steps}),
    ]
    rows = []
    for title, attack, original, mifpe in settings:
        results = {}
        for key, kwargs in (("original", original), ("mifpe", mifpe)):
            gen = torch.Generator(device=x.device).manual_seed(seed)
            results[key] = evaluate(
                model, x, y, attack=attack, eps=eps, batch_size=batch_size, generator=gen, **kwargs
            ).summary()
        rows.append({"attack": title, **results})
    return rows


def _markdown(rows, clean: float) -> str:
    head = "| | " + " | ".join(r["attack"] for r in rows) + " |"
    sep = "|---|" + "---|" * len(rows)
    orig = "| original loss | " + " | ".join(f"{r['original']['robust_accuracy']:.2f}" for r in rows) + " |"
    mif = "| MIFPE loss | " + " | ".join(f"{r['mifpe']['robust_accuracy']:.2f}" for r in rows) + " |"
    boost = "| boost | " + " | ".join(
        f"{r['original']['robust_accuracy'] - r['mifpe']['robust_accuracy']:.2f}" for r in rows
    ) + " |"
    return "\n".join([f"Clean accuracy: {clean:.2f} %. Robust accuracy %, lower = stronger attack.", "", head, sep, orig, mif, boost])


def run_demo(args: argparse.Namespace) -> dict:
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    device = torch.device(args.device)
    dtype = _DTYPES[args.dtype]
    model = large_margin_mlp(seed=args.seed, log=log).to(device=device, dtype=dtype)
    x, y = synthetic_clusters(args.n, seed=args.seed + 2)
    x, y = x.to(device=device, dtype=dtype), y.to(device)
    with torch.no_grad():
        logits = model(x)
    correct = logits.argmax(1) == y
    lam = underflow_threshold(dtype)
    margins = top_margin(logits)[correct]
    share_above = float((margins >= lam).float().mean()) if margins.numel() else 0.0
    log(f"{int(correct.sum())}/{args.n} correct; {100 * share_above:.1f} % of their margins >= lambda = {lam:.2f} ({args.dtype})")
    tic = time.perf_counter()
    rows = _table2_rows(model, x, y, eps=args.eps, steps=args.steps, batch_size=args.batch_size, seed=args.seed)
    clean = 100 * float(correct.float().mean())
    report = {
        "command": "mifpe " + " ".join(sys.argv[1:]),
        "version": __version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads".strip(),
        "torch": torch.__version__,
        "device": str(device),
        "dtype": args.dtype,
        "n": args.n,
        "eps": args.eps,
        "clean_accuracy": clean,
        "share_of_margins_above_lambda": 100 * share_above,
        "lambda": lam,
        "rows": rows,
        "seconds": time.perf_counter() - tic,
    }
    table = _markdown(rows, clean)
    print(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "demo.json").write_text(json.dumps(report, indent=2))
        (out / "demo.md").write_text(f"# mifpe demo\n\n`{report['command']}` on {report['machine']}, {report['date']}\n\n{table}\n")
        log(f"wrote {out / 'demo.json'} and {out / 'demo.md'}")
    return report


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def _add_run_options(p: argparse.ArgumentParser, *, n_default: int | None, out_default: str | None) -> None:
    p.add_argument("--data", default="bundled", help="bundled (default: 1 000 Fashion-MNIST test images shipped with the "
                   "package), fashion-mnist[:DIR], cifar10:ROOT, cifar100:ROOT, mnist:ROOT, or an .npz/.pt file")
    p.add_argument("--download", action="store_true", help="allow downloading a missing torchvision dataset or RobustBench checkpoint")
    p.add_argument("--n", type=_positive_int, default=n_default, help="the first N samples of the data (default: all)")
    p.add_argument("--eps", type=_non_negative_float, default=None,
                   help="L-inf radius (default 0.1 for (Fashion-)MNIST, as the zoo is trained; 8/255 for CIFAR)")
    p.add_argument("--steps", type=_positive_int, default=100, help="PGD / APGD iterations (default 100, the paper's)")
    p.add_argument("--batch-size", type=_positive_int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="e.g. cpu, cuda, cuda:1, mps")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="float32", help="dtype of the model and the attack")
    p.add_argument("--arch", default=None, help="architecture of a state-dict model file (a zoo architecture name)")
    p.add_argument("--model-dir", default="models", help="RobustBench's model_dir for robustbench:<name> (default ./models)")
    p.add_argument("--dataset", default="cifar10", help="RobustBench dataset for robustbench:<name> (default cifar10)")
    p.add_argument("--threat-model", default="Linf", help="RobustBench threat model for robustbench:<name> (default Linf)")
    p.add_argument("--out", default=out_default, help=f"directory for the .md, .json and .csv results (default {out_default})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mifpe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mifpe_plugins {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{table2,table1,table3,pgdpp,diagnose,zoo,demo}")

    t2 = sub.add_parser("table2", help="Table 2: FGSM, PGD, APGD-DLR, AutoAttack with their original loss vs MIFPE (default)")
    t2.add_argument("--model", default="zoo:large-margin", help="zoo:<name>, robustbench:<name> or a .pt/.pth/.ts file (default zoo:large-margin)")
    t2.add_argument("--attacks", default="fgsm,pgd,apgd,autoattack", help="comma-separated subset of fgsm,pgd,apgd,autoattack")
    _add_run_options(t2, n_default=None, out_default="mifpe-results")

    t1 = sub.add_parser("table1", help="Table 1: PGD-100 per loss on several models, with clean accuracy and AutoAttack")
    t1.add_argument("--models", default=None, help="comma-separated model specs (default: every zoo model with weights)")
    t1.add_argument("--losses", default="ce,cw,dlr,mifpe", help="comma-separated loss names (default ce,cw,dlr,mifpe)")
    t1.add_argument("--no-autoattack", action="store_true", help="skip the AutoAttack column")
    _add_run_options(t1, n_default=None, out_default="mifpe-results")

    t3 = sub.add_parser("table3", help="Table 3: plain PGD, + momentum, + step-size schedule, per loss")
    t3.add_argument("--model", default="zoo:large-margin", help="as for table2 (default zoo:large-margin)")
    t3.add_argument("--losses", default="ce,cw,dlr,mifpe", help="comma-separated loss names (default ce,cw,dlr,mifpe)")
    _add_run_options(t3, n_default=None, out_default="mifpe-results")

    pp = sub.add_parser("pgdpp", help="PGD++ paper Tables 2-5 (and 11): FGSM/PGD vs FGSM++/PGD++ (NJS, HNS), beta = 0.1, L-inf and L2")
    pp.add_argument("--models", default=None, help="comma-separated model specs (default: every zoo model with weights)")
    pp.add_argument("--l2-eps", type=_non_negative_float, default=1.5, help="L2 radius (default 1.5)")
    pp.add_argument("--clever-samples", type=int, default=0, help="also mean CLEVER scores (Table 11) over this many samples (default 0: off)")
    pp.add_argument("--clever-batches", type=_positive_int, default=50, help="CLEVER nb_batches (default 50, the paper's)")
    _add_run_options(pp, n_default=None, out_default="mifpe-results")
    pp.set_defaults(steps=20)

    dg = sub.add_parser("diagnose", help="floating-point audit of a model: margins, zero gradients, FT/FNZ-PGD, convergence, PGD++, CLEVER, verdict")
    dg.add_argument("--model", default="zoo:large-margin", help="as for table2 (default zoo:large-margin)")
    dg.add_argument("--quick", action="store_true", help="a few-minute audit: 200 samples, 20 iterations, 5 temperatures, short CLEVER")
    dg.add_argument("--dtypes", default="float16,float32,float64", help="precisions of the per-precision analyses")
    dg.add_argument("--l2-eps", type=_non_negative_float, default=1.5, help="L2 radius of the PGD++ comparison (default 1.5)")
    dg.add_argument("--no-clever", action="store_true", help="skip the CLEVER comparison (needs ART)")
    _add_run_options(dg, n_default=None, out_default="mifpe-diagnosis")
    dg.set_defaults(steps=None)

    zoo_parser = sub.add_parser("zoo", help="list the model zoo, or retrain a model")
    zoo_sub = zoo_parser.add_subparsers(dest="zoo_command", required=True, metavar="{list,train}")
    zoo_sub.add_parser("list", help="every recipe, whether its weights ship, and its logged clean accuracy")
    train = zoo_sub.add_parser("train", help="retrain a zoo model on the Fashion-MNIST training split")
    train.add_argument("name", help="a recipe name (see `mifpe zoo list`)")
    train.add_argument("--root", default=None, help="Fashion-MNIST IDX directory (default /usr/share/datasets/fashion-mnist)")
    train.add_argument("--out", default=None, help="where to write NAME.pt and NAME.json (default: the package's zoo)")
    train.add_argument("--quiet", action="store_true")

    demo = sub.add_parser("demo", help="Table-2-style comparison on a synthetic large-margin problem (seconds)")
    demo.add_argument("--n", type=_positive_int, default=1000, help="test samples (default 1000)")
    demo.add_argument("--eps", type=_non_negative_float, default=0.1, help="L-inf radius (default 0.1)")
    demo.add_argument("--steps", type=_positive_int, default=100, help="PGD / APGD iterations (default 100)")
    demo.add_argument("--batch-size", type=_positive_int, default=500)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default="cpu")
    demo.add_argument("--dtype", choices=sorted(_DTYPES), default="float32")
    demo.add_argument("--out", default=None, help="directory for demo.json and demo.md")
    demo.add_argument("--quiet", action="store_true")
    return parser


def _split_list(text: str, option: str, allowed: Sequence[str] | None = None) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError(f"{option} needs at least one name")
    if allowed is not None:
        unknown = [item for item in items if item not in allowed]
        if unknown:
            raise ValueError(f"{option}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return items


def _device_and_dtype(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise ValueError(f"--device {args.device!r} is not a device (e.g. cpu, cuda, cuda:1, mps)") from None
    dtype = _DTYPES[args.dtype]
    try:
        probe = torch.ones(2, 2, device=device, dtype=dtype)
        (probe @ probe).sum().item()
    except (RuntimeError, AssertionError) as error:
        raise ValueError(f"--device {args.device} cannot run --dtype {args.dtype}: {str(error).splitlines()[0]}") from None
    return device, dtype


def _default_eps(data: str) -> float:
    return 8 / 255 if data.startswith(("cifar10:", "cifar100:")) else 0.1


def _evaluation(spec: str, args: argparse.Namespace, device: torch.device, dtype: torch.dtype, data) -> tuple:
    from .models import load_model
    from .tables import Evaluation

    loaded = load_model(
        spec, architecture=args.arch, model_dir=args.model_dir, dataset=args.dataset, threat_model=args.threat_model,
        download=args.download, device=device, dtype=dtype,
    )
    x, y = data
    evaluation = Evaluation(
        loaded.model, x.to(device=device, dtype=dtype), y.to(device), eps=args.eps, steps=args.steps,
        batch_size=args.batch_size, seed=args.seed, show_progress=not args.quiet,
    )
    _check_outputs(evaluation, spec)
    source = {k: v for k, v in loaded.source.items() if k != "log"}
    return evaluation, source


def _check_outputs(evaluation, spec: str) -> None:
    with torch.no_grad():
        logits = evaluation.model(evaluation.inputs[:2])
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"model {spec} must return logits of shape (batch, classes >= 2), got {tuple(logits.shape)}")
    top = int(evaluation.labels.max())
    if top >= logits.shape[1]:
        raise ValueError(f"the data has label {top} but model {spec} has only {logits.shape[1]} outputs")


def _load_data(args: argparse.Namespace):
    from .data import load_data

    return load_data(args.data, n=args.n, download=args.download)


def _finish(report: dict, args: argparse.Namespace, stem: str) -> dict:
    from .tables import to_markdown, write_report

    print(to_markdown(report))
    if args.out:
        paths = write_report(report, args.out, stem)
        if not args.quiet:
            print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return report


def _command_line(argv: Sequence[str]) -> str:
    return " ".join(["mifpe", *argv])


def run_table2(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    from .tables import table2

    attacks = _split_list(args.attacks, "--attacks", ("fgsm", "pgd", "apgd", "autoattack"))
    device, dtype = _device_and_dtype(args)
    evaluation, source = _evaluation(args.model, args, device, dtype, _load_data(args))
    report = table2(evaluation, attacks=attacks, command=_command_line(argv), extra={"model": args.model, "model_source": source, "data": args.data})
    return _finish(report, args, f"table2-{_slug(args.model)}")


def run_table1(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    from .losses import get_loss
    from .tables import table1

    specs = _zoo_or_listed(args.models)
    losses = _split_list(args.losses, "--losses")
    for loss in losses:
        get_loss(loss)  # an unknown name fails here, before any model is attacked
    device, dtype = _device_and_dtype(args)
    data = _load_data(args)
    evaluations, sources = {}, {}
    for spec in specs:
        evaluations[spec], sources[spec] = _evaluation(spec, args, device, dtype, data)
    report = table1(evaluations, losses=losses, autoattack=not args.no_autoattack, command=_command_line(argv),
                    extra={"models": specs, "model_sources": sources, "data": args.data})
    return _finish(report, args, "table1")


def run_table3(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    from .losses import get_loss
    from .tables import table3

    losses = _split_list(args.losses, "--losses")
    for loss in losses:
        get_loss(loss)
    device, dtype = _device_and_dtype(args)
    evaluation, source = _evaluation(args.model, args, device, dtype, _load_data(args))
    report = table3(evaluation, losses=losses, command=_command_line(argv), extra={"model": args.model, "model_source": source, "data": args.data})
    return _finish(report, args, f"table3-{_slug(args.model)}")


def _zoo_or_listed(models: str | None) -> list[str]:
    from . import zoo

    specs = _split_list(models, "--models") if models else [f"zoo:{name}" for name in zoo.available()]
    repeated = sorted({spec for spec in specs if specs.count(spec) > 1})
    if repeated:
        raise ValueError(f"--models lists {', '.join(repeated)} more than once")
    return specs


def run_pgdpp(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    from .tables import pgdpp_table

    if args.clever_samples < 0:
        raise ValueError(f"--clever-samples must be >= 0, got {args.clever_samples}")
    specs = _zoo_or_listed(args.models)
    device, dtype = _device_and_dtype(args)
    data = _load_data(args)
    evaluations, sources = {}, {}
    for spec in specs:
        evaluations[spec], sources[spec] = _evaluation(spec, args, device, dtype, data)
    report = pgdpp_table(evaluations, l2_eps=args.l2_eps, clever_samples=args.clever_samples, clever_batches=args.clever_batches,
                         command=_command_line(argv), extra={"models": specs, "model_sources": sources, "data": args.data})
    return _finish(report, args, "pgdpp")


def run_diagnose(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    from dataclasses import replace

    from .diagnose import DTYPES, Audit, Budget, diagnose, write_diagnosis
    from .tables import _header

    budget = Budget.quick() if args.quick else Budget()
    if args.steps is not None:
        budget = replace(budget, steps=args.steps)
    dtypes = tuple(_split_list(args.dtypes, "--dtypes", tuple(DTYPES)))
    device, dtype = _device_and_dtype(args)
    for name in dtypes:
        _device_and_dtype(argparse.Namespace(device=args.device, dtype=name))
    x, y = _load_data(args)
    if args.n is None:
        # without --n: the first 200 (--quick) or 500 samples, or all when there are fewer
        count = min(200 if args.quick else 500, x.shape[0])
        x, y = x[:count], y[:count]
    evaluation, source = _evaluation(args.model, args, device, dtype, (x, y))
    audit = Audit(eps=args.eps, l2_eps=args.l2_eps, budget=budget, dtypes=dtypes, seed=args.seed,
                  clever=not args.no_clever, show_progress=not args.quiet)
    evaluation.steps = budget.steps
    header = _header(evaluation, _command_line(argv), {"model": args.model, "model_source": source, "data": args.data})
    tic = time.perf_counter()
    report = {**header, **diagnose(evaluation.model, evaluation.inputs, evaluation.labels, audit)}
    report["seconds"] = round(time.perf_counter() - tic, 1)
    print(report["verdict"])
    paths = write_diagnosis(report, args.out)
    if not args.quiet:
        print(f"wrote {len(paths)} files to {args.out}", file=sys.stderr)
    return report


def run_zoo(args: argparse.Namespace) -> int:
    from . import zoo

    if args.zoo_command == "list":
        shipped = set(zoo.available())
        for name, recipe in zoo.RECIPES.items():
            if name in shipped:
                stats = zoo.training_log(name)["bundled_test_subset"]
                status = f"clean {stats['clean_accuracy']:.1f} %, {stats.get('share_above_lambda_fp32', 0):.1f} % of fp32 margins > lambda"
            else:
                status = "no shipped weights"
            print(f"zoo:{name:<18} {status}\n    {recipe.description}")
        return 0
    zoo.train(args.name, root=args.root, out_dir=args.out, log=(lambda *a: None) if args.quiet else print,
              show_progress=not args.quiet)
    return 0


def _slug(spec: str) -> str:
    """A file-name-safe stem for a model specification (zoo:large-margin -> zoo-large-margin)."""
    text = Path(spec).stem if spec.endswith((".pt", ".pth", ".ts")) else spec.replace(":", "-")
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        # `mifpe` alone (or with options only) is `mifpe table2` on the shipped large-margin model.
        argv = ["table2", *argv]
    args = parser.parse_args(argv)
    if args.command == "demo":
        run_demo(args)
        return 0
    if args.command == "zoo":
        try:
            return run_zoo(args)
        except (ValueError, FileNotFoundError, ImportError) as error:
            parser.error(str(error))
    if args.eps is None:
        args.eps = _default_eps(args.data)
    runners = {"table1": run_table1, "table2": run_table2, "table3": run_table3, "diagnose": run_diagnose, "pgdpp": run_pgdpp}
    try:
        runners[args.command](args, argv)
    except (ValueError, FileNotFoundError, ImportError, KeyError) as error:
        parser.error(str(error).strip("'\""))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
