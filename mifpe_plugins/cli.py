"""The mifpe command: the MIFPE paper's tables on any model, and the zoo.

mifpe with no arguments runs mifpe table2 on the shipped large-margin Fashion-MNIST model
(zoo:large-margin, whose float32 logit margins mostly exceed the underflow threshold
lambda ~ 103) and the shipped 1 000 test images: FGSM, PGD-100, APGD-DLR-100 and AutoAttack, each
with its original loss and with MIFPE, and the boost MIFPE gives.

Subcommands: table2, table1, table3 (the MIFPE paper's tables), pgdpp (the PGD++ paper's tables),
diagnose (the floating-point audit of a model, with the papers' figures), compare (which samples
one attack fools that another does not, from a result's per-sample file), zoo (list or retrain
the model zoo) and demo (the same comparison on a synthetic problem, in seconds).

Everything that can be checked is checked before the first attack: the options, the device and
dtype, the output folder (created and written to), the host libraries a run needs, the data and
the model (one forward pass). A problem ends the command with its usage and one line,
"mifpe <subcommand>: error: ...", exit status 2. Ctrl-C stops a run, writes the columns already
finished (marked partial) and exits with status 130; every finished chunk is journaled, and the
same command with --resume continues the run (also under torchrun, with any number of ranks).
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from . import __version__
from .diagnose import Budget
from .engine import default_threads
from .models import (
    MODEL_FILE_SUFFIXES,
    ROBUSTBENCH_DATASETS,
    ROBUSTBENCH_THREAT_MODELS,
    takes_weights,
)
from .reports import one_line

if TYPE_CHECKING:
    from .tables import Report

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}
_TABLE2_ATTACKS = ("fgsm", "pgd", "apgd", "autoattack")
# What the handler reports in one line; any other exception is a bug and keeps its traceback.
_ERRORS = (ValueError, OSError, ImportError, KeyError, RuntimeError)


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
    hinge_lr: float = 3e-3, log=print, show_progress: bool = False
):
    """Train an MLP one epoch with CE, then fine-tune it with a hinge on the logit margin."""
    from .progress import bar

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
            batches = torch.randperm(len(x)).split(128)
            for index in bar(batches, f"demo model, epoch {epoch + 1}/{1 + hinge_epochs}", enabled=show_progress, unit="batch"):
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


# ----------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    return parse


_positive_int, _non_negative_int = _int_at_least(1), _int_at_least(0)


def _radius(text: str) -> float:
    """A number >= 0, written as users write radii: 0.1, 1e-2 or a fraction such as 8/255."""
    numerator, slash, denominator = text.partition("/")
    try:
        value = float(numerator) / float(denominator) if slash else float(numerator)
    except (ValueError, ZeroDivisionError):
        value = math.nan
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number >= 0 such as 0.1 or 8/255, got {text!r}")
    return value


def _numbers(text: str) -> list[float]:
    """Comma-separated finite numbers, each also as a fraction: 0.4914,0.4822,0.4465 or 123.675/255,..."""
    values = []
    for item in text.split(","):
        numerator, slash, denominator = item.strip().partition("/")
        try:
            values.append(float(numerator) / float(denominator) if slash else float(numerator))
        except (ValueError, ZeroDivisionError):
            values.append(math.nan)
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers, one per channel, such as 0.4914,0.4822,0.4465 "
                                         f"or 0.5, got {text!r}")
    return values


_MODEL_FORMS = ("zoo:<name>, published:<name>, robustbench:<name>, timm:<name> (with --weights), package.module:factory "
                "(a function or class in a module importable from the current folder, called with no arguments, "
                "returning the torch.nn.Module; with --weights optionally), a TorchScript .pt/.pth/.ts, a state-dict "
                ".pt/.pth with --arch, or a torch.export .pt2 (exported in eval mode, with a dynamic batch dimension)")

_EPILOG = ("Every check that needs no attack runs first; an error stops the command before any work. Ctrl-C writes "
           "the columns already finished, marked partial, and exits with status 130; the same command with --resume "
           "continues from the journal. Under torchrun (python -m mifpe_plugins) the chunks are shared by the ranks.")


def _add_run_options(
    p: argparse.ArgumentParser, *, model: bool = True, n: int | None = None, n_help: str = "all",
    eps: float | None = None, steps: int | None = 100, steps_help: str = "100, the paper's", batch_size: int = 250,
    dtype_help: str = "", out: str | None = "mifpe-results", journal: bool = True,
) -> None:
    if model:
        p.add_argument("--data", default="bundled", help="bundled (default: 1 000 Fashion-MNIST test images shipped with the "
                       "package), fashion-mnist[:DIR], mnist:DIR (the official IDX files in DIR, or torchvision's layout), "
                       "cifar10:ROOT, cifar100:ROOT, imagenet:DIR (the validation images in one folder per WordNet id; "
                       "resized to 256, centre-cropped to 224, in [0, 1]), imagefolder:DIR (one folder of images per "
                       "class, labelled in sorted name order, read at their own size; needs --eps), or an .npz/.pt file "
                       "(needs --eps). Image folders are read one chunk at a time, --n taking the first images of every "
                       "class in turn")
        p.add_argument("--download", action="store_true", help="allow downloading a missing torchvision dataset, RobustBench checkpoint "
                       "or published:<name> checkpoint (sha256-checked, into $MIFPE_CACHE/published, default "
                       "~/.cache/mifpe_plugins/published)")
        p.add_argument("--no-verify", action="store_true", help="read CIFAR files whose MD5 is not the published one "
                       "(a re-encoded copy you trust); they are still read with an unpickler that builds data only")
    p.add_argument("--n", "--samples", dest="n", type=_positive_int, default=n, help=f"the first N samples of the data "
                   f"(default: {n_help}); under torchrun write --samples, as torchrun takes --n for its own --nnodes")
    eps_default = ("the data's standard: 0.3 MNIST, 8/255 CIFAR-10/100, 4/255 ImageNet, 0.1 Fashion-MNIST and bundled (the "
                   "zoo's); a published:<name> model's own; required for .npz/.pt files and imagefolder:DIR"
                   if eps is None else f"{eps:g}")
    p.add_argument("--eps", type=_radius, default=eps, help=f"L-inf radius, a number or a fraction such as 8/255 (default {eps_default})")
    p.add_argument("--steps", type=_positive_int, default=steps, help=f"PGD / APGD iterations (default {steps_help})")
    p.add_argument("--batch-size", type=_positive_int, default=batch_size, help=f"samples per attack batch (default {batch_size})")
    p.add_argument("--seed", type=int, default=0, help="random seed of the attacks' random starts and AutoAttack "
                   "(and of the demo's training and data) (default 0)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, mps; checked before anything runs")
    p.add_argument("--dtype", choices=sorted(_DTYPES), default="float32", help="dtype of the model and the attacks (default float32)" + dtype_help)
    if model:
        p.add_argument("--arch", default=None, help="architecture of a state-dict model file (a zoo architecture name)")
        p.add_argument("--weights", default=None, metavar="FILE", help="state dict for a package.module:factory model "
                       "(optional) or a timm:<name> model (required), read with torch.load(weights_only=True); a file "
                       "holding {'state_dict': ...} or {'model': ...} and DataParallel 'module.' prefixes are accepted. "
                       "With --models: for the one factory or timm model listed")
        p.add_argument("--normalize", nargs=2, default=None, metavar=("MEAN", "STD"), type=_numbers,
                       help="for models trained on normalised inputs: one mean and one std per channel, comma-separated, "
                       "e.g. --normalize 0.4914,0.4822,0.4465 0.2471,0.2435,0.2616 (CIFAR-10) or --normalize "
                       "0.485,0.456,0.406 0.229,0.224,0.225 (ImageNet, timm's default); the model gets (x - MEAN) / STD "
                       "while the attacks stay in [0, 1] pixel space. Applies to every model of the run; recorded in "
                       "the report")
        p.add_argument("--model-dir", default="models", help="RobustBench's model_dir for robustbench:<name>, and the first folder searched "
                       "for a published:<name> checkpoint file, before the cache folder (default ./models)")
        p.add_argument("--dataset", choices=ROBUSTBENCH_DATASETS, default="cifar10", help="RobustBench dataset for robustbench:<name> (default cifar10)")
        p.add_argument("--threat-model", choices=ROBUSTBENCH_THREAT_MODELS, default="Linf",
                       help="RobustBench threat model for robustbench:<name> (default Linf); it must fit the attacks: Linf for "
                       "table1, table2, table3 and diagnose, Linf or L2 for pgdpp")
    where = f"default {out}" if out else "default: print only"
    p.add_argument("--out", default=out, help=f"folder for the results ({where}); created and test-written before the run")
    if journal:
        p.add_argument("--name", default=None, help="stem of the result files (default: the table, model, data, norm and eps, "
                       "dtype and n, e.g. table2-zoo-large-margin-bundled-linf-eps0.1-float32-n1000)")
        again = p.add_mutually_exclusive_group()
        again.add_argument("--resume", action="store_true", help="continue the run of the same name from its journal "
                           "(<name>.journal in --out), skipping finished chunks; refused if its settings differ")
        again.add_argument("--overwrite", action="store_true", help="replace the run of the same name (its reports and journal)")
        p.add_argument("--save-adversarial", action="store_true", help="also write the adversarial inputs, one .npy per "
                       "column, into <name>.adversarial")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch intra-op threads (default: the cores "
                   "this process may use divided by the processes on this machine under torchrun)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _command(sub, name: str, run: Callable, help: str, description: str, **defaults) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=description, epilog=_EPILOG if "norms" in defaults else None)
    p.set_defaults(run=run, parser=p, **defaults)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mifpe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mifpe_plugins {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{table2,table1,table3,pgdpp,evaluate,diagnose,compare,zoo,demo}")
    full, quick = Budget(), Budget.quick()
    aa_float32 = (". AutoAttack runs in float32 only: another dtype with the AutoAttack column is refused before "
                  "the run starts; leave the column out with {}")

    t2 = _command(sub, "table2", run_table2, "Table 2: FGSM, PGD, APGD-DLR, AutoAttack with their original loss vs MIFPE (default)",
                  "The MIFPE paper's Table 2 on any model: FGSM, PGD, APGD-DLR and AutoAttack, each with its original loss "
                  "and with MIFPE, and the boost MIFPE gives. Writes <name>.md, .json, .csv and .samples.csv (see --name). Plain mifpe runs "
                  "this on zoo:large-margin.", norms=("Linf",))
    t2.add_argument("--model", default="zoo:large-margin", help=_MODEL_FORMS + " (default zoo:large-margin)")
    t2.add_argument("--attacks", default=",".join(_TABLE2_ATTACKS), help="comma-separated subset of fgsm,pgd,apgd,autoattack (default all)")
    _add_run_options(t2, dtype_help=aa_float32.format("--attacks fgsm,pgd,apgd"))

    t1 = _command(sub, "table1", run_table1, "Table 1: PGD-100 per loss on several models, with clean accuracy and AutoAttack",
                  "The MIFPE paper's Table 1: PGD per loss (CE, C&W, DLR, MIFPE) on several models, with clean accuracy, "
                  "AutoAttack and the per-sample worst case over all of them. Writes <name>.md, .json, .csv and .samples.csv (see --name).", norms=("Linf",))
    t1.add_argument("--models", default=None, help="comma-separated model specs, each as --model of table2 (default: every zoo "
                    "model with weights)")
    t1.add_argument("--losses", default="ce,cw,dlr,mifpe", help="comma-separated loss names (default ce,cw,dlr,mifpe)")
    t1.add_argument("--no-autoattack", action="store_true", help="skip the AutoAttack column")
    _add_run_options(t1, dtype_help=aa_float32.format("--no-autoattack"))

    t3 = _command(sub, "table3", run_table3, "Table 3: plain PGD, + momentum, + step-size schedule, per loss",
                  "The MIFPE paper's Table 3 (ablation): PGD with a constant step, then with momentum, then with the "
                  "step-size schedule, per loss. Writes <name>.md, .json, .csv and .samples.csv (see --name).", norms=("Linf",))
    t3.add_argument("--model", default="zoo:large-margin", help="as for table2 (default zoo:large-margin)")
    t3.add_argument("--losses", default="ce,cw,dlr,mifpe", help="comma-separated loss names (default ce,cw,dlr,mifpe)")
    _add_run_options(t3)

    pp = _command(sub, "pgdpp", run_pgdpp, "PGD++ paper Tables 2-5 (and 11): FGSM/PGD vs FGSM++/PGD++ (NJS, HNS), beta = 0.1, L-inf and L2",
                  "The PGD++ paper's Tables 2-5 on several models: FGSM and PGD with CE against FGSM++ and PGD++ (NJS, HNS) "
                  "and the beta = 0.1 heuristic, L-inf and L2, with the paper's protocol (constant step, 20 iterations, "
                  "the last iterate); optionally Table 11's CLEVER scores. Writes <name>.md, .json, .csv and .samples.csv (see --name).",
                  norms=("Linf", "L2"))
    pp.add_argument("--models", default=None, help="comma-separated model specs, each as --model of table2 (default: every zoo "
                    "model with weights)")
    pp.add_argument("--l2-eps", type=_radius, default=1.5, help="L2 radius, a number or a fraction such as 120/255 (default 1.5)")
    pp.add_argument("--clever-samples", type=_non_negative_int, default=0,
                    help="also mean CLEVER scores (Table 11) over this many samples; needs ART (default 0: off)")
    pp.add_argument("--clever-batches", type=_positive_int, default=50, help="CLEVER nb_batches (default 50, the paper's)")
    _add_run_options(pp, steps=full.pgdpp_steps, steps_help=f"{full.pgdpp_steps}, the PGD++ paper's")

    dg = _command(sub, "diagnose", run_diagnose, "floating-point audit of a model: margins, zero gradients, FT/FNZ-PGD, convergence, PGD++, CLEVER, verdict",
                  "Is a model's robustness real, or an artifact of the attack's arithmetic? The margins against lambda, "
                  "exactly-zero CE gradients per precision, FT-PGD and FNZ-PGD, convergence, PGD++, CLEVER and a one-paragraph "
                  "verdict. Writes report.md, report.json and one PNG per analysis into --out.", norms=("Linf",))
    dg.add_argument("--model", default="zoo:large-margin", help="as for table2 (default zoo:large-margin)")
    dg.add_argument("--quick", action="store_true", help=f"a few-minute audit: {quick.samples} samples, {quick.steps} iterations, "
                    f"{len(quick.temperatures)} temperatures, short CLEVER")
    dg.add_argument("--dtypes", default="float16,float32,float64", help="precisions of the per-precision analyses (default float16,float32,float64)")
    dg.add_argument("--l2-eps", type=_radius, default=1.5, help="L2 radius of the PGD++ comparison (default 1.5)")
    dg.add_argument("--no-clever", action="store_true", help="skip the CLEVER comparison (it needs ART)")
    _add_run_options(dg, n_help=f"{full.samples}, or {quick.samples} with --quick; all if the data has fewer", steps=None,
                     steps_help=f"{full.steps}, or {quick.steps} with --quick", out="mifpe-diagnosis", journal=False)

    zoo_parser = _command(sub, "zoo", run_zoo, "list the model zoo, or retrain a model",
                          "List the model zoo (mifpe zoo list) or retrain one of its models on the CPU (mifpe zoo train NAME).")
    zoo_sub = zoo_parser.add_subparsers(dest="zoo_command", required=True, metavar="{list,train}")
    _command(zoo_sub, "list", run_zoo, "every recipe, whether its weights ship, and its logged clean accuracy",
             "Every zoo recipe, whether its weights ship with the package, and its logged clean accuracy.")
    train = _command(zoo_sub, "train", run_zoo, "retrain a zoo model on the Fashion-MNIST training split",
                     "Retrain a zoo model on the Fashion-MNIST training split (Debian's dataset-fashion-mnist gives it offline).")
    train.add_argument("name", help="a recipe name (see mifpe zoo list)")
    train.add_argument("--root", default=None, help="Fashion-MNIST IDX directory (default /usr/share/datasets/fashion-mnist)")
    train.add_argument("--out", default=None, help="where to write NAME.pt and NAME.json (default: the package's zoo)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    ev = _command(sub, "evaluate", run_evaluate, "a staged suite of our attacks (e.g. --suite fast), optionally beside AutoAttack",
                  "Run an evaluation suite: stages of MIFPE attacks and a gradient-free search, each on the samples still "
                  "robust, logging the robust accuracy after each stage with its time as chunks finish; the report has "
                  "each stage's forward and backward passes, a sanity check of the model, and with "
                  "--autoattack AutoAttack standard on the same samples and the per-sample disagreement.", norms=("Linf",))
    ev.add_argument("--model", default="zoo:large-margin", help="as for table2 (default zoo:large-margin)")
    ev.add_argument("--suite", default="fast", help="a suite of mifpe_plugins/_data/suites.json (default fast)")
    ev.add_argument("--autoattack", action="store_true", help="also run AutoAttack standard on the same samples")
    _add_run_options(ev, dtype_help=aa_float32.format("leaving out --autoattack"), steps=None,
                     steps_help="none: each stage of a suite sets its own, and --steps is refused")

    compare = _command(sub, "compare", run_compare, "per-sample disagreement of two attack columns of a result",
                       "Which samples one attack column fools that another does not, from a <name>.samples.csv written by "
                       "table1, table2, table3 or pgdpp: both robust accuracies, their per-sample worst case, and the "
                       "indices of the samples each one alone fools.")
    compare.add_argument("samples", help="a <name>.samples.csv")
    compare.add_argument("first", help="an attack column, as in the file's '<column>/success' headers, e.g. 'AutoAttack standard'")
    compare.add_argument("second", help="another attack column, e.g. 'PGD-100 mifpe'")
    compare.add_argument("--model", default=None, help="the model, for a file of several models (table1, pgdpp)")

    demo = _command(sub, "demo", run_demo, "Table-2-style comparison on a synthetic large-margin problem (seconds)",
                    "The Table-2 comparison without AutoAttack (FGSM, PGD and APGD-DLR with their original loss and with MIFPE) "
                    "on a synthetic problem: trains a small MLP to large logit margins (under a minute on a CPU), then "
                    "attacks it in seconds. With --out, writes <name>.md, .json, .csv and .samples.csv (see --name).", norms=())
    _add_run_options(demo, model=False, n=1000, n_help="1000", eps=0.1, batch_size=500, out=None)
    train.add_argument("--threads", type=_positive_int, default=None, help="torch intra-op threads (default: the cores this process may use)")
    return parser


# ----------------------------------------------------------------------------------------------
# Checks before any work
# ----------------------------------------------------------------------------------------------


def _split_list(text: str, option: str, allowed: Sequence[str] | None = None) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError(f"{option} needs at least one name")
    if allowed is not None:
        unknown = [item for item in items if item not in allowed]
        if unknown:
            raise ValueError(f"{option}: unknown {', '.join(unknown)}; choose from {', '.join(allowed)}")
    repeated = sorted({item for item in items if items.count(item) > 1})
    if repeated:
        raise ValueError(f"{option} lists {', '.join(repeated)} more than once")
    return items


def _device_and_dtype(device_name: str, dtype_name: str) -> tuple[torch.device, torch.dtype]:
    try:
        device = torch.device(device_name)
    except RuntimeError:
        raise ValueError(f"--device {device_name!r} is not a device (e.g. cpu, cuda, cuda:1, mps)") from None
    dtype = _DTYPES[dtype_name]
    try:
        probe = torch.ones(2, 2, device=device, dtype=dtype)
        (probe @ probe).sum().item()
    except (RuntimeError, AssertionError, NotImplementedError) as error:
        raise ValueError(f"--device {device_name} cannot run --dtype {dtype_name} here ({one_line(error)}); "
                         "use --device cpu, or a device and dtype this machine has") from None
    return device, dtype


def _check_out(out: str) -> Path | None:
    """Create the output folder and write a file into it now, rather than fail after the run.
    Returns the folder if it is new (:func:`main` removes it again if the command fails before
    writing anything there)."""
    folder = Path(out)
    try:
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"--out {out} is a file; pass --out a folder (it is created if missing)")
        created = None if folder.exists() else folder
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".mifpe-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except (OSError, ValueError) as error:  # ValueError: a path with a NUL byte
        if str(error).startswith("--out"):
            raise
        reason = getattr(error, "strerror", None) or error
        raise ValueError(f"cannot write to --out {out} ({reason}); pass --out a folder you can write to") from None
    return created


def _validate(args: argparse.Namespace) -> None:
    """Every check that needs neither data nor model, for every subcommand, before anything is
    loaded, trained or attacked. Normalises the list options in place."""
    if args.command == "compare":
        return
    if args.command == "zoo":
        if args.zoo_command == "train":
            torch.set_num_threads(args.threads or default_threads())
            if args.out:
                args.new_out = _check_out(args.out)
        return
    args.torch_device, args.torch_dtype = _device_and_dtype(args.device, args.dtype)
    command = args.command
    torch.set_num_threads(args.threads or default_threads())
    if command == "diagnose":
        from .diagnose import DTYPES, _pyplot

        args.dtypes = tuple(_split_list(args.dtypes, "--dtypes", tuple(DTYPES)))
        for name in args.dtypes:
            _device_and_dtype(args.device, name)
        _pyplot()  # the figures need matplotlib: fail now, not after the audit
    if command == "table2":
        args.attacks = _split_list(args.attacks, "--attacks", _TABLE2_ATTACKS)
    if command in ("table1", "table3"):
        from .losses import get_loss

        args.losses = _split_list(args.losses, "--losses")
        for loss in args.losses:
            get_loss(loss)
    if command in ("table1", "pgdpp"):
        args.models = _zoo_or_listed(args.models)
    if command != "demo":
        _check_model_options(args)
    if args.eps is None:
        args.eps, args.eps_source = _default_eps(args.data, [args.model] if getattr(args, "model", None) else getattr(args, "models", ()))
    if args.norms and args.threat_model not in args.norms:
        hint = "; mifpe pgdpp also runs L2 attacks" if args.threat_model == "L2" else ""
        raise ValueError(f"mifpe {command} attacks in {' and '.join(args.norms)} only, but --threat-model {args.threat_model} "
                         f"selects a model for another threat; use --threat-model {args.norms[0]}{hint}")
    if command == "evaluate":
        from .suites import get_suite

        get_suite(args.suite)
        if args.steps is not None:
            raise ValueError(f"--steps does not apply to mifpe evaluate: each stage of the suite {args.suite!r} sets its own "
                             "steps (see mifpe_plugins/_data/suites.json); leave --steps out")
        args.steps = 100  # the Evaluation's default; no stage reads it
    if ("autoattack" in getattr(args, "attacks", ()) or (command == "table1" and not args.no_autoattack)
            or (command == "evaluate" and args.autoattack)):
        others = [a for a in getattr(args, "attacks", ()) if a != "autoattack"]
        leave_out = (f"--attacks {','.join(others)}" if others else "--no-autoattack" if command == "table1"
                     else "no --autoattack" if command == "evaluate" else "")
        if args.dtype != "float32":
            raise ValueError(f"AutoAttack runs in float32 only, so --dtype {args.dtype} cannot run its column: use --dtype "
                             f"float32" + (f", or leave AutoAttack out with {leave_out}" if leave_out else ""))
        if args.eps == 0:
            raise ValueError("AutoAttack needs --eps > 0" + (f"; or leave it out with {leave_out}" if leave_out else ""))
        importlib.import_module(".adapters.autoattack", __package__)
    if (command == "pgdpp" and args.clever_samples) or (command == "diagnose" and not args.no_clever):
        importlib.import_module(".clever", __package__).require_art()  # CLEVER runs through ART
    if args.out:
        args.new_out = _check_out(args.out)


#: Each dataset's L-inf radius when --eps is not given, and how the report names it: the standard
#: threat models of MNIST, CIFAR and ImageNet, and for Fashion-MNIST the radius the zoo is trained for.
_STANDARD_EPS = {
    "mnist": (0.3, "the MNIST standard"),
    "fashion-mnist": (0.1, "the Fashion-MNIST radius of the zoo"),
    "cifar10": (8 / 255, "the CIFAR-10 standard 8/255"),
    "cifar100": (8 / 255, "the CIFAR-100 standard 8/255"),
    "imagenet": (4 / 255, "the ImageNet standard 4/255"),
}


def _default_eps(data: str, specs: Sequence[str] = ()) -> tuple[float, str]:
    """The L-inf radius of a run without --eps, and where it comes from (for the report header).

    published:<name> models carry their threat model's eps: it is used when every model of the
    run is published and they agree. Otherwise the data's dataset decides (:data:`_STANDARD_EPS`);
    data whose dataset is unknown (an .npz or .pt file, imagefolder:DIR) needs --eps.
    """
    from . import published
    from .data import dataset_of

    known = published.registry()
    names = [spec.partition(":")[2] for spec in specs]
    if specs and all(spec.startswith("published:") and name in known for spec, name in zip(specs, names, strict=True)):
        radii = {known[name]["eps"] for name in names}
        if len(radii) == 1:
            owner = f"{specs[0]}'s own" if len(set(specs)) == 1 else "the published models' own"
            return float(radii.pop()), owner
    dataset = dataset_of(data)
    if dataset is None:
        raise ValueError(f"--data {data} needs --eps: its dataset, and so its standard radius, is unknown; give the "
                         "L-inf radius of your threat model, e.g. --eps 8/255 (CIFAR), --eps 0.3 (MNIST) or --eps 4/255 (ImageNet)")
    return _STANDARD_EPS[dataset]


def _check_model_options(args: argparse.Namespace) -> None:
    """--weights goes with exactly one factory or timm model, and every timm model has it;
    --normalize has as many finite means as stds > 0; timm is installed if a timm model runs."""
    from .models import spec_kind
    from .user_models import check_normalization, require_timm

    specs = [args.model] if getattr(args, "model", None) else list(getattr(args, "models", ()))
    takers = [spec for spec in specs if takes_weights(spec)]
    if args.weights is not None:
        if not takers:
            raise ValueError(f"--weights goes with a package.module:factory or timm:<name> model, and {', '.join(specs)} "
                             "is none; a state dict of a zoo architecture is --model FILE.pt --arch NAME")
        if len(takers) > 1:
            raise ValueError(f"--weights goes with one model, but {len(takers)} listed take weights ({', '.join(takers)}); "
                             "evaluate them in separate runs")
        if not Path(args.weights).is_file():
            raise ValueError(f"--weights {args.weights} is not a file")
    timm_models = [spec for spec in specs if spec_kind(spec) == "timm"]
    if timm_models:
        if args.weights is None:
            raise ValueError(f"{timm_models[0]} needs --weights FILE: timm builds it with random weights (pretrained=False; "
                             "nothing is downloaded), and the robustness of an untrained network means nothing")
        require_timm()
    if args.normalize is not None:
        check_normalization(*args.normalize)


def _zoo_or_listed(models: str | None) -> list[str]:
    from . import zoo

    # None: every zoo model; an empty string is a mistake, not "all".
    return [f"zoo:{name}" for name in zoo.available()] if models is None else _split_list(models, "--models")


def _load_data(args: argparse.Namespace):
    from .data import load_data

    return load_data(args.data, n=args.n, download=args.download, verify=not args.no_verify)


def _evaluation(spec: str, args: argparse.Namespace, data) -> tuple:
    from .models import load_model
    from .tables import Evaluation

    loaded = load_model(
        spec, architecture=args.arch, weights=args.weights if takes_weights(spec) else None, normalize=args.normalize,
        model_dir=args.model_dir, dataset=args.dataset, threat_model=args.threat_model, download=args.download,
        device=args.torch_device, dtype=args.torch_dtype,
    )
    # tensors stay where they are and a dataset (imagefolder:, imagenet:) is read one chunk at a time:
    # each chunk goes to the device when it is attacked
    x, y = data if isinstance(data, tuple) else (data, None)
    evaluation = Evaluation(
        loaded.model, x, y, eps=args.eps, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
        show_progress=not args.quiet, device=args.torch_device, dtype=args.torch_dtype,
    )
    _check_outputs(evaluation, spec)
    source = {k: v for k, v in loaded.source.items() if k != "log"}
    return evaluation, source


def _check_outputs(evaluation, spec: str) -> None:
    """One forward pass on one sample: the model takes the data's inputs and has an output per label."""
    sample = evaluation.chunk(0)[0][:1]
    try:
        with torch.no_grad():
            logits = evaluation.model(sample)
    except Exception as error:  # whatever a model raises on inputs it cannot take
        raise ValueError(f"model {spec} cannot take the data's inputs (shape {tuple(sample.shape[1:])} per sample): "
                         f"{one_line(error)}") from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[1] < 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"model {spec} must return logits of shape (batch, classes >= 2), got {shape}")
    if evaluation.labels is None:  # a dataset read in chunks: its class list fixes the labels
        from .data import check_classes

        check_classes(evaluation.inputs, logits.shape[1], f"model {spec}")
        return
    top = int(evaluation.labels.max())
    if top >= logits.shape[1]:
        raise ValueError(f"the data has label {top} but model {spec} has only {logits.shape[1]} outputs")


# ----------------------------------------------------------------------------------------------
# Running and writing
# ----------------------------------------------------------------------------------------------


def _command_line(argv: Sequence[str]) -> str:
    return " ".join(["mifpe", *argv])


def _run_and_write(compute: Callable[[], Report | dict], write: Callable[[Report | dict], list]) -> Report | dict:
    """Run ``compute()`` and ``write`` its report. If the run is stopped (Ctrl-C or an error) after
    some work finished, that part is written, marked partial, and the exception goes on with the
    written paths as ``saved``."""
    try:
        report = compute()
    except BaseException as error:
        partial = getattr(error, "partial_report", None)
        if partial is not None:
            stopped = "interrupted by Ctrl-C" if isinstance(error, KeyboardInterrupt) else f"stopped by an error: {one_line(error)}"
            marked = {**partial, "interrupted": stopped} if isinstance(partial, dict) else replace(partial, interrupted=stopped)
            error.saved = write(marked)
        raise
    write(report)
    return report


def _run_table(args: argparse.Namespace, table: Callable[..., Report], *positional, **kwargs) -> Report:
    """Run a table function with the run options, print its Markdown (rank 0) and the files it wrote.
    If it stops after some columns finished, their report is printed and already written."""
    from .tables import to_markdown

    options = {"out": args.out or None, "name": args.stem, "resume": args.resume, "overwrite": args.overwrite,
               "save_adversarial": args.save_adversarial}
    try:
        report = table(*positional, **kwargs, **options)
    except BaseException as error:
        partial = getattr(error, "partial_report", None)
        if partial is not None:
            print(to_markdown(partial))
        raise
    if report.rows or report.results:  # ranks other than 0 have nothing to print
        print(to_markdown(report))
        if report.files and not args.quiet:
            print("wrote " + ", ".join(str(p) for p in report.files), file=sys.stderr)
    return report


def _stem(args: argparse.Namespace, models: Sequence[str], n: int) -> str:
    """The result files' stem: --name, or what changes the numbers (table, models, data, norm and
    eps, dtype, n), so that runs with other settings never share files."""
    if args.name:
        if not args.name.strip("._-") or any(not (c.isalnum() or c in "._-") for c in args.name) or args.name.startswith("."):
            raise ValueError(f"--name {args.name!r} must be a file name: letters, digits, '-', '_' and '.' only")
        return args.name
    weights = f"-{_slug(Path(args.weights).name)}" if getattr(args, "weights", None) else ""
    slugs = [_slug(m) + (weights if takes_weights(m) else "") for m in models]
    model = "-".join(slugs) if len("-".join(slugs)) <= 60 else f"{slugs[0]}-and-{len(slugs) - 1}-more"
    kind, _, where = args.data.partition(":")
    data = _slug(f"{kind}-{Path(where).name}" if where else Path(kind).stem if kind.endswith((".npz", ".pt")) else kind)
    threat = f"linf-eps{args.eps:.4g}" + (f"-l2-eps{args.l2_eps:.4g}" if args.command == "pgdpp" else "")
    command = f"evaluate-{args.suite}" if args.command == "evaluate" else args.command
    return f"{command}-{model}-{data}-{threat}-{args.dtype}-n{n}"


def _one_model(args: argparse.Namespace):
    """The evaluation of ``--model`` on ``--data``, and the report fields that say what they were."""
    evaluation, source = _evaluation(args.model, args, _load_data(args))
    args.stem = _stem(args, [args.model], evaluation.n)
    return evaluation, {"model": args.model, "model_source": source, "data": args.data, "eps_source": _eps_source(args)}


def _all_models(args: argparse.Namespace):
    """Every ``--models`` entry's evaluation, each loaded and checked before the first attack."""
    data = _load_data(args)
    evaluations, sources = {}, {}
    for spec in args.models:
        evaluations[spec], sources[spec] = _evaluation(spec, args, data)
    args.stem = _stem(args, args.models, evaluations[args.models[0]].n)
    return evaluations, {"models": args.models, "model_sources": sources, "data": args.data, "eps_source": _eps_source(args)}


def _eps_source(args: argparse.Namespace) -> str:
    """Where the run's eps came from: :func:`_default_eps` says it when --eps was not given."""
    return getattr(args, "eps_source", "set by --eps")


def run_table2(args: argparse.Namespace, argv: Sequence[str]) -> Report:
    from .tables import table2

    evaluation, extra = _one_model(args)
    return _run_table(args, table2, evaluation, attacks=args.attacks, command=_command_line(argv), extra=extra)


def run_table1(args: argparse.Namespace, argv: Sequence[str]) -> Report:
    from .tables import table1

    evaluations, extra = _all_models(args)
    return _run_table(args, table1, evaluations, losses=args.losses, autoattack=not args.no_autoattack,
                      command=_command_line(argv), extra=extra)


def run_table3(args: argparse.Namespace, argv: Sequence[str]) -> Report:
    from .tables import table3

    evaluation, extra = _one_model(args)
    return _run_table(args, table3, evaluation, losses=args.losses, command=_command_line(argv), extra=extra)


def run_pgdpp(args: argparse.Namespace, argv: Sequence[str]) -> Report:
    from .tables import pgdpp_table

    evaluations, extra = _all_models(args)
    return _run_table(args, pgdpp_table, evaluations, l2_eps=args.l2_eps, clever_samples=args.clever_samples,
                      clever_batches=args.clever_batches, command=_command_line(argv), extra=extra)


def run_diagnose(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    from .data import as_tensors
    from .diagnose import Audit, Budget, diagnose, write_diagnosis
    from .provenance import provenance

    budget = Budget.quick() if args.quick else Budget()
    if args.steps is not None:
        budget = replace(budget, steps=args.steps)
    # the audit needs the samples as tensors: the budget's number (all when there are fewer), or --n
    x, y = as_tensors(_load_data(args), budget.samples if args.n is None else None)
    evaluation, source = _evaluation(args.model, args, (x, y))
    audit = Audit(eps=args.eps, l2_eps=args.l2_eps, budget=budget, dtypes=args.dtypes, seed=args.seed,
                  clever=not args.no_clever, show_progress=not args.quiet)
    evaluation.steps = budget.steps
    header = {**provenance(_command_line(argv)), **evaluation.settings(), "model": args.model, "model_source": source,
              "data": args.data, "eps_source": _eps_source(args)}

    def compute() -> dict:
        tic = time.perf_counter()
        report = diagnose(evaluation.model, evaluation.inputs, evaluation.labels, audit, header=header)
        report["seconds"] = round(time.perf_counter() - tic, 1)
        return report

    def write(report: dict) -> list:
        print(report.get("verdict") or f"Partial audit ({report['interrupted']}): no verdict.")
        paths = write_diagnosis(report, args.out)
        if not args.quiet:
            print(f"wrote {len(paths)} files to {args.out}", file=sys.stderr)
        return paths

    return _run_and_write(compute, write)


def run_demo(args: argparse.Namespace, argv: Sequence[str]) -> Report:
    from .tables import Evaluation, table2

    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    model = large_margin_mlp(seed=args.seed, log=log, show_progress=not args.quiet).to(device=args.torch_device, dtype=args.torch_dtype)
    x, y = synthetic_clusters(args.n, seed=args.seed + 2)
    evaluation = Evaluation(model, x, y, eps=args.eps, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                            show_progress=not args.quiet, device=args.torch_device, dtype=args.torch_dtype)
    extra = {"model": "demo MLP 64-256-256-10, CE then a hinge on the logit margin (target 250)",
             "data": f"{args.n} synthetic clustered samples (64 features, 10 classes)"}
    args.stem = args.name or f"demo-linf-eps{args.eps:.4g}-{args.dtype}-n{args.n}-seed{args.seed}"
    return _run_table(args, table2, evaluation, attacks=("fgsm", "pgd", "apgd"), command=_command_line(argv), extra=extra)


def run_evaluate(args: argparse.Namespace, argv: Sequence[str]) -> Report:
    from .suites import evaluate_suite

    evaluation, extra = _one_model(args)
    return _run_table(args, evaluate_suite, evaluation, suite=args.suite, autoattack=args.autoattack,
                      command=_command_line(argv), extra=extra)


def run_compare(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    from .tables import compare_columns, comparison_markdown

    comparison = compare_columns(args.samples, args.first, args.second, model=args.model)
    print(comparison_markdown(comparison), end="")
    return comparison


def run_zoo(args: argparse.Namespace, argv: Sequence[str]) -> None:
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
        return
    zoo.train(args.name, root=args.root, out_dir=args.out, log=(lambda *a: None) if args.quiet else print,
              show_progress=not args.quiet)


def _slug(spec: str) -> str:
    """A file-name-safe stem for a model specification (zoo:large-margin -> zoo-large-margin)."""
    text = Path(spec).stem if spec.endswith(MODEL_FILE_SUFFIXES) else spec.replace(":", "-")
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def _remove_if_unused(folder: Path | None) -> None:
    if folder is not None and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _saved(error: BaseException, args: argparse.Namespace) -> str:
    paths = getattr(error, "saved", None)
    stem = getattr(args, "stem", None)
    journal = Path(args.out) / f"{stem}.journal" if args.out and stem else None
    resume = (f"; the finished chunks are journaled in {journal}: rerun with --resume to continue"
              if journal is not None and any(journal.glob("part-*.sqlite")) else "")
    if paths is None:
        return "no column had finished, no report was written" + resume
    return (f"the finished columns, marked partial, are in {args.out}" if paths else "the finished part is printed above") + resume


_SHARDED = ("table1", "table2", "table3", "pgdpp", "evaluate")


@contextmanager
def _torchrun(args: argparse.Namespace) -> Iterator[None]:
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on CUDA with each rank on its
    LOCAL_RANK device, gloo otherwise); every rank but 0 prints nothing but errors."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        yield
        return
    if args.command not in _SHARDED:
        raise ValueError(f"mifpe {args.command} runs in one process; torchrun shards {', '.join(_SHARDED)}")
    if not args.out:
        raise ValueError("under torchrun --out is needed: the ranks share the journal there")
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if args.torch_device.type == "cuda":
        args.torch_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(args.torch_device)
    dist.init_process_group("nccl" if args.torch_device.type == "cuda" else "gloo")
    stdout = sys.stdout
    if dist.get_rank() != 0:
        args.quiet, sys.stdout = True, open(os.devnull, "w")  # noqa: SIM115 -- closed below
    try:
        yield
    finally:
        if sys.stdout is not stdout:
            sys.stdout.close()
            sys.stdout = stdout
        dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    """The mifpe command. Every subcommand goes through :func:`_validate` and one error handler:
    a problem prints the subcommand's usage and one line (exit status 2); Ctrl-C writes what
    finished, prints one line and returns 130."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        # `mifpe` alone (or with options only) is `mifpe table2` on the shipped large-margin model.
        argv = ["table2", *argv]
    args = parser.parse_args(argv)
    try:
        _validate(args)
        with _torchrun(args):
            args.run(args, argv)
    except KeyboardInterrupt as stop:
        _remove_if_unused(getattr(args, "new_out", None))
        print(f"{args.parser.prog}: interrupted (Ctrl-C); {_saved(stop, args)}", file=sys.stderr)
        return 130
    except _ERRORS as error:
        _remove_if_unused(getattr(args, "new_out", None))
        written = f" ({_saved(error, args)})" if getattr(error, "saved", None) is not None else ""
        args.parser.error(one_line(error) + written)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
