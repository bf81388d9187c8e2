"""The ``mifpe`` command.

``mifpe`` (or ``mifpe demo``) runs the embedded default: a classifier trained in seconds on
synthetic clustered data, then fine-tuned with a large-margin hinge objective (in the spirit of the
"Neural level sets" defence) so that most float32 logit margins exceed the underflow threshold
lambda ~ 103. It then runs the MIFPE paper's Table-2 comparison on it: FGSM, PGD-100 and
APGD-100, each with its original loss (CE, CE, DLR) and with MIFPE.
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
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mifpe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mifpe_plugins {__version__}")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="Table-2-style comparison on the embedded large-margin model (default)")
    for p in (parser, demo):
        p.add_argument("--n", type=_positive_int, default=1000, help="test samples (default 1000)")
        p.add_argument("--eps", type=float, default=0.1, help="L-inf radius (default 0.1)")
        p.add_argument("--steps", type=_positive_int, default=100, help="PGD / APGD iterations (default 100)")
        p.add_argument("--batch-size", type=_positive_int, default=500)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="cpu")
        p.add_argument("--dtype", choices=sorted(_DTYPES), default="float32")
        p.add_argument("--out", default=None, help="directory for demo.json and demo.md")
        p.add_argument("--quiet", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.eps < 0 or args.eps != args.eps:
        build_parser().error(f"--eps must be >= 0, got {args.eps}")
    run_demo(args)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
