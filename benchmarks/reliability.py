"""Reliability probe: bad inputs, the caller's state, exact ties and planted files, counted.

Five categories, each a table of cases; every case is tried once and is either *as promised* or
listed, with a reproduction, in the output:

1. **Bad inputs -> clear errors (Python API).** Malformed arguments to ``pgd``, ``apgd``,
   ``fgsm``, ``evaluate`` and the losses (``get_loss``, ``mifpe_loss``, ``tempered``,
   ``resolve_loss``, ...). As promised: a ``ValueError``, ``TypeError`` or ``RuntimeError`` whose
   message contains a per-case substring naming the offending argument -- or, where a warning is
   the documented contract (a model in ``train()`` mode, a model returning probabilities), a
   ``UserWarning`` that does.
2. **Bad inputs -> clear errors (``mifpe`` CLI).** ``mifpe_plugins.cli.main(argv)`` in-process
   on bad options, blocked ``--out`` folders, damaged data and model files, dtype x AutoAttack
   conflicts. As promised: exit status 2, exactly one line with ``error:`` on stderr and no
   traceback. Whether that line names the offending option or file (a per-case substring) is
   counted separately. Runs use ``--n 2 --steps 1 --attacks fgsm`` so that a case wrongly
   accepted costs a second, not an AutoAttack run.
3. **Caller state untouched.** Every core attack (and ``evaluate``) with the losses mifpe, ce and
   hns, on a model with BatchNorm in ``train()`` and ``eval()`` mode, parameters with and without
   a preset ``.grad`` (and one frozen), inputs with and without ``requires_grad`` (and a preset ``.grad``), called
   with autograd on and under ``torch.no_grad()``. As promised: afterwards every module's mode,
   every ``requires_grad``, every ``.grad`` (bitwise), the parameters, the inputs and labels, the
   global torch / NumPy / ``random`` RNG states and the grad mode are as before, the returned
   tensor does not share memory with the inputs, and in ``eval()`` mode the buffers are
   unchanged (in ``train()`` mode BatchNorm updating its running statistics is documented).
4. **Ties.** (a) Random logits with exact top-2 / top-3 / all-equal ties at magnitudes
   1e-30 ... 1e30, clipped to each dtype's range, in float16, bfloat16, float32 and float64: every
   loss (ce, cw, dlr, mifpe, mifpe(T=10), fnz-1, tempered) and its gradient are finite, untargeted
   and targeted. (b) A linear model whose two top logits tie exactly at every clean input: MIFPE
   (T = 1 and 10) and FNZ-1 with FGSM, PGD and APGD fool every sample that the same attack with CE
   fools.
5. **Planted files.** Pickles whose unpickling runs ``os.system``, ``open(..., 'w')``,
   ``builtins.exec``, ``builtins.eval`` or ``subprocess.call`` (each would create a marker
   file), planted as CIFAR batches (``--data cifar10:ROOT``, with and without the MD5 check, four
   pickle protocols, and CIFAR-100), as ``.pt``/``.pth``/``.npz`` data files and as state dicts
   and TorchScript-looking archives for ``--model``. As promised: the marker never appears. A
   control unpickles each payload with plain ``pickle.loads`` to show it is live.

Everything is seeded and runs on the CPU. Run ``OMP_NUM_THREADS=1 python benchmarks/reliability.py``
(about 10 s on one thread). Results go to ``docs/benchmarks/reliability.json`` and
``docs/benchmarks/reliability.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import machine_info  # noqa: E402

from mifpe_plugins import apgd, evaluate, fgsm, get_loss, mifpe, pgd, tempered  # noqa: E402
from mifpe_plugins.cli import main as cli_main  # noqa: E402
from mifpe_plugins.losses import (  # noqa: E402
    ce_loss,
    cw_loss,
    dlr_loss,
    fnz_loss,
    mifpe_loss,
    resolve_loss,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
CLEAR_ERRORS = (ValueError, TypeError, RuntimeError)
NAN, INF = float("nan"), float("inf")


@dataclass
class Result:
    """One tried case: as promised or not, what happened, and how to reproduce it."""

    category: str
    group: str
    case: str
    ok: bool
    detail: str = ""
    extra: dict = field(default_factory=dict)


def _one_line(text: str, limit: int = 220) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ==============================================================================================
# 1. Bad inputs -> clear errors (Python API)
# ==============================================================================================

CLASSES, FEATURES, BATCH = 5, 12, 4
API_SETUP = (
    "import torch; from torch import nn; import mifpe_plugins as mp; "
    "torch.manual_seed(0); model = nn.Linear(12, 5).eval(); x = torch.rand(4, 12); "
    "y = model(x).argmax(1); z = torch.randn(4, 5); t = torch.tensor([0, 1, 2, 3])"
)


class Arg(NamedTuple):
    """An argument and how it is written in the report."""

    value: object
    text: str


def _fmt(value: object) -> str:
    if isinstance(value, Arg):
        return value.text
    if isinstance(value, float) and not math.isfinite(value):
        return f"float('{value}')"
    if isinstance(value, tuple):
        inner = ", ".join(_fmt(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


def _fresh(value: object) -> object:
    value = value.value if isinstance(value, Arg) else value
    return value.clone() if isinstance(value, Tensor) else value


@dataclass
class ApiCase:
    group: str
    call: str
    run: Callable[[], object]
    expect: str
    warning: bool = False


def call_case(group: str, name: str, fn: Callable, args: list, kwargs: dict, expect: str, *,
              warning: bool = False, inference: bool = False) -> ApiCase:
    """A call ``fn(*args, **kwargs)`` that must raise (or warn) naming ``expect``."""
    text = f"{name}(" + ", ".join([_fmt(a) for a in args] + [f"{k}={_fmt(v)}" for k, v in kwargs.items()]) + ")"
    if inference:
        text = f"with torch.inference_mode(): {text}"

    def run() -> object:
        values = [_fresh(a) for a in args]
        named = {k: _fresh(v) for k, v in kwargs.items()}
        with torch.inference_mode() if inference else contextlib.nullcontext():
            return fn(*values, **named)

    return ApiCase(group, text, run, expect, warning)


class Head(nn.Module):
    """The toy linear model followed by a transformation of its logits (a malformed model)."""

    def __init__(self, base: nn.Module, post: Callable[[Tensor], object]) -> None:
        super().__init__()
        self.base, self.post = base, post

    def forward(self, x: Tensor) -> object:
        return self.post(self.base(x))


def api_fixtures() -> dict:
    torch.manual_seed(0)
    model = nn.Linear(FEATURES, CLASSES).eval()
    x = torch.rand(BATCH, FEATURES)
    with torch.no_grad():
        y = model(x).argmax(1)
    z = torch.randn(BATCH, CLASSES)
    trained = nn.Linear(FEATURES, CLASSES)
    trained.load_state_dict(model.state_dict())
    return {"model": model, "x": x, "y": y, "train_model": trained.train(), "z": z, "t": torch.arange(BATCH)}


def _model_variants(f: dict) -> list[tuple[Arg, str, bool]]:
    """(model, expected substring, warning is the contract) for malformed models."""
    base = f["model"]

    def head(post: Callable, text: str) -> Arg:
        return Arg(Head(base, post).eval(), text)

    return [
        (head(lambda z: z.softmax(1), "nn.Sequential(model, nn.Softmax(1))"), "probabilities", True),
        (Arg(f["train_model"], "model.train()"), "train()", True),
        (head(lambda z: z[:, 0], "lambda x: model(x)[:, 0]"), "model", False),
        (head(lambda z: z[:, :1], "lambda x: model(x)[:, :1]"), "logits", False),
        (head(lambda z: z[..., None], "lambda x: model(x)[..., None]"), "model", False),
        (head(lambda z: z[1:], "lambda x: model(x)[1:]"), "model", False),
        (head(lambda z: z.round().long(), "lambda x: model(x).round().long()"), "logits", False),
        (head(lambda z: (z, z), "lambda x: (model(x), model(x))"), "model", False),
        (head(lambda z: None, "lambda x: None"), "model", False),
        (head(lambda z: z * NAN, "lambda x: model(x) * float('nan')"), "NaN", False),
        (head(lambda z: z.detach().numpy(), "lambda x: model(x).detach().numpy()"), "model", False),
        (Arg("not a model", "'not a model'"), "model", False),
    ]


def _input_variants(f: dict) -> list[tuple[dict, str]]:
    """(overrides of inputs / labels / bounds, expected substring)."""
    x, y = f["x"], f["y"]
    with_nan = x.clone()
    with_nan[1, 3] = NAN
    with_inf = x.clone()
    with_inf[2, 0] = INF
    return [
        ({"inputs": Arg(x + 2, "x + 2")}, "bounds"),
        ({"inputs": Arg(x - 1, "x - 1")}, "bounds"),
        ({"inputs": Arg(with_nan, "x with x[1, 3] = nan")}, "inputs"),
        ({"inputs": Arg(with_inf, "x with x[2, 0] = inf"), "bounds": None}, "inputs"),
        ({"inputs": Arg(x[0], "x[0]")}, "inputs"),
        ({"inputs": Arg(x.numpy(), "x.numpy()")}, "inputs"),
        ({"inputs": Arg(x.tolist(), "x.tolist()")}, "inputs"),
        ({"inputs": Arg((x * 255).to(torch.uint8), "(x * 255).to(torch.uint8)")}, "inputs"),
        ({"inputs": Arg(x.to(torch.complex64), "x.to(torch.complex64)")}, "inputs"),
        ({"inputs": Arg(None, "None")}, "inputs"),
        ({"inputs": Arg(x.double(), "x.double()")}, "dtype"),
        ({"labels": Arg(y.float(), "y.float()")}, "labels"),
        ({"labels": Arg(y + CLASSES, "y + 5")}, "labels"),
        ({"labels": Arg(y - CLASSES, "y - 5")}, "labels"),
        ({"labels": Arg(y[:3], "y[:3]")}, "labels"),
        ({"labels": Arg(y[:, None], "y[:, None]")}, "labels"),
        ({"labels": Arg(y[0], "y[0]")}, "labels"),
        ({"labels": Arg(y.numpy(), "y.numpy()")}, "labels"),
        ({"labels": Arg(y.tolist(), "y.tolist()")}, "labels"),
        ({"labels": Arg(y.bool(), "y.bool()")}, "labels"),
        ({"labels": Arg(None, "None")}, "labels"),
    ]


COMMON_BAD_KWARGS: list[tuple[dict, str]] = [
    ({"eps": NAN}, "eps"), ({"eps": INF}, "eps"), ({"eps": -0.1}, "eps"), ({"eps": "0.1"}, "eps"),
    ({"eps": None}, "eps"), ({"eps": True}, "eps"), ({"eps": [0.1] * BATCH}, "eps"),
    ({"eps": Arg(np.full(BATCH, 0.1), "np.full(4, 0.1)")}, "eps"),
    ({"eps": Arg(torch.full((3,), 0.1), "torch.full((3,), 0.1)")}, "eps"),
    ({"eps": Arg(torch.full((BATCH, 1), 0.1), "torch.full((4, 1), 0.1)")}, "eps"),
    ({"eps": Arg(torch.tensor([0.1, NAN, 0.1, 0.1]), "torch.tensor([0.1, nan, 0.1, 0.1])")}, "eps"),
    ({"eps": Arg(torch.tensor([0.1, -0.1, 0.1, 0.1]), "torch.tensor([0.1, -0.1, 0.1, 0.1])")}, "eps"),
    ({"eps": Arg(torch.full((BATCH,), 0.1, dtype=torch.complex64), "torch.full((4,), 0.1, dtype=torch.complex64)")}, "eps"),
    ({"norm": "l3"}, "norm"), ({"norm": ""}, "norm"), ({"norm": None}, "norm"), ({"norm": 1}, "norm"),
    ({"norm": True}, "norm"), ({"norm": -INF}, "norm"), ({"norm": NAN}, "norm"),
    ({"bounds": (1.0, 0.0)}, "bounds"), ({"bounds": (0.5, 0.5)}, "bounds"), ({"bounds": (0.0,)}, "bounds"),
    ({"bounds": (0.0, 1.0, 2.0)}, "bounds"), ({"bounds": "01"}, "bounds"), ({"bounds": 1.0}, "bounds"),
    ({"bounds": (0.0, NAN)}, "bounds"), ({"bounds": (NAN, 1.0)}, "bounds"), ({"bounds": ("a", "b")}, "bounds"),
    ({"loss": "nope"}, "loss"), ({"loss": 42}, "loss"), ({"loss": None}, "loss"), ({"loss": "fnz-0"}, "fnz"),
    ({"loss": "fnz-5"}, "fnz"),
    ({"loss": Arg(lambda z, y, targeted=False: z.sum(), "lambda z, y, targeted=False: z.sum()")}, "loss"),
    ({"loss": Arg(lambda z, y, targeted=False: z[:, :1], "lambda z, y, targeted=False: z[:, :1]")}, "loss"),
    ({"loss": Arg(lambda z, y, targeted=False: z.tolist(), "lambda z, y, targeted=False: z.tolist()")}, "loss"),
    ({"loss": Arg(lambda z, y: z[:, 0], "lambda z, y: z[:, 0]")}, "targeted"),
    ({"generator": "seed"}, "generator"), ({"generator": 0}, "generator"),
    ({"generator": Arg(np.random.default_rng(0), "np.random.default_rng(0)")}, "generator"),
    ({"callback": 5}, "callback"),
]

ITERATIVE_BAD_KWARGS: list[tuple[dict, str]] = [
    ({"steps": 0}, "steps"), ({"steps": -1}, "steps"), ({"steps": 2.5}, "steps"), ({"steps": "3"}, "steps"),
    ({"steps": True}, "steps"), ({"steps": None}, "steps"),
    ({"restarts": 0}, "restarts"), ({"restarts": 1.5}, "restarts"), ({"restarts": "2"}, "restarts"),
    ({"restarts": 2, "random_start": False}, "restarts"),
    ({"momentum": 0.0}, "momentum"), ({"momentum": 1.5}, "momentum"), ({"momentum": -0.5}, "momentum"),
    ({"momentum": NAN}, "momentum"), ({"momentum": "0.5"}, "momentum"),
    ({"target_classes": 0}, "target_classes"), ({"target_classes": CLASSES}, "target_classes"),
    ({"target_classes": 1.5}, "target_classes"), ({"target_classes": 2, "targeted": True}, "target_classes"),
]

ATTACK_SPECIFIC: dict[str, list[tuple[dict, str]]] = {
    "pgd": [({"step_size": -0.1}, "step_size"), ({"step_size": NAN}, "step_size"), ({"step_size": "a"}, "step_size"),
            ({"schedule": "cosine"}, "schedule"), ({"schedule": None}, "schedule")],
    "apgd": [({"rho": 0.0}, "rho"), ({"rho": 1.5}, "rho"), ({"rho": NAN}, "rho"), ({"rho": "x"}, "rho")],
    "fgsm": [({"step_size": -0.1}, "step_size"), ({"step_size": INF}, "step_size"), ({"step_size": "a"}, "step_size")],
}


def attack_cases(f: dict) -> list[ApiCase]:
    attacks = {"pgd": (pgd, {"eps": 0.1, "steps": 2}), "apgd": (apgd, {"eps": 0.1, "steps": 2}),
               "fgsm": (fgsm, {"eps": 0.1})}
    model, x, y = Arg(f["model"], "model"), Arg(f["x"], "x"), Arg(f["y"], "y")
    cases = []
    for name, (fn, base) in attacks.items():
        table = COMMON_BAD_KWARGS + ATTACK_SPECIFIC[name] + (ITERATIVE_BAD_KWARGS if name != "fgsm" else [])
        table = table + _input_variants(f)

        def make(over: dict, expect: str, *, warning: bool = False, inference: bool = False,
                 fn: Callable = fn, name: str = name, base: dict = base) -> ApiCase:
            args = {"model": model, "inputs": x, "labels": y, **base, **over}
            positional = [args.pop("model"), args.pop("inputs"), args.pop("labels")]
            return call_case(name, f"mp.{name}", fn, positional, args, expect, warning=warning, inference=inference)

        cases += [make(over, expect) for over, expect in table]
        cases += [make({"model": m}, expect, warning=warn) for m, expect, warn in _model_variants(f)]
        cases.append(make({}, "inference_mode", inference=True))
    return cases


def evaluate_cases(f: dict) -> list[ApiCase]:
    model, x, y = Arg(f["model"], "model"), Arg(f["x"], "x"), Arg(f["y"], "y")
    base = {"attack": "pgd", "eps": 0.1, "steps": 2, "batch_size": 2}
    table: list[tuple[dict, str]] = [
        ({"attack": "foo"}, "attack"), ({"attack": 5}, "attack"), ({"attack": None}, "attack"),
        ({"batch_size": 0}, "batch_size"), ({"batch_size": -1}, "batch_size"), ({"batch_size": 2.5}, "batch_size"),
        ({"batch_size": True}, "batch_size"), ({"batch_size": "8"}, "batch_size"),
        ({"targets": Arg(f["y"], "y")}, "targets"), ({"targeted": True}, "targets"),
        ({"targeted": True, "targets": Arg(f["y"].float(), "y.float()")}, "targets"),
        ({"targeted": True, "targets": Arg(f["y"][:3], "y[:3]")}, "targets"),
        ({"targeted": True, "targets": Arg(f["y"] + CLASSES, "y + 5")}, "targets"),
        ({"eps": Arg(torch.full((3,), 0.1), "torch.full((3,), 0.1)")}, "eps"), ({"eps": NAN}, "eps"),
        ({"eps": -1.0}, "eps"), ({"norm": "l3"}, "norm"), ({"stpes": 3}, "stpes"),
        ({"generator": "seed"}, "generator"), ({"progress": 5}, "progress"),
        ({"bounds": (1.0, 0.0)}, "bounds"), ({"loss": "nope"}, "loss"),
    ] + [(over, expect) for over, expect in _input_variants(f) if "bounds" not in over]
    cases = []

    def make(over: dict, expect: str, *, warning: bool = False, inference: bool = False) -> ApiCase:
        args = {"model": model, "inputs": x, "labels": y, **base, **over}
        positional = [args.pop("model"), args.pop("inputs"), args.pop("labels")]
        return call_case("evaluate", "mp.evaluate", evaluate, positional, args, expect, warning=warning,
                         inference=inference)

    cases += [make(over, expect) for over, expect in table]
    without_eps = {k: v for k, v in base.items() if k != "eps"}
    cases.append(call_case("evaluate", "mp.evaluate", evaluate, [model, x, y], without_eps, "eps"))
    cases += [make({"model": m}, expect, warning=warn) for m, expect, warn in _model_variants(f)]
    cases.append(make({}, "inference_mode", inference=True))
    return cases


def loss_cases(f: dict) -> list[ApiCase]:
    z, t = Arg(f["z"], "z"), Arg(f["t"], "t")
    zt = f["z"]
    cases = []

    def add(name: str, fn: Callable, args: list, kwargs: dict, expect: str) -> None:
        cases.append(call_case("losses", name, fn, args, kwargs, expect))

    for bad in (None, 3, "nope", "", "fnz-x", "fnz--1", b"ce", ["ce"]):
        add("mp.get_loss", get_loss, [bad], {}, "loss")
    add("mp.get_loss", get_loss, ["fnz-0"], {}, "fnz")
    for bad in (0, 1.5, "2", -1, None):
        add("mp.fnz_loss", fnz_loss, [bad], {}, "n")
    add("mp.get_loss('fnz-9')", get_loss("fnz-9"), [z, t], {}, "fnz")
    for bad in (0, -1.0, NAN, INF, "abc", True, None, [1.0]):
        add("mp.tempered", tempered, ["ce", bad], {}, "beta")
    add("mp.tempered", tempered, ["nope", 1.0], {}, "loss")
    add("mp.tempered", tempered, [None, 1.0], {}, "loss")
    for beta, text in ((torch.tensor([1.0, 2.0, 3.0]), "torch.tensor([1., 2., 3.])"),
                       (torch.tensor([1.0, -1.0, 1.0, 1.0]), "torch.tensor([1., -1., 1., 1.])"),
                       (torch.zeros(BATCH), "torch.zeros(4)"),
                       (torch.tensor([1.0, NAN, 1.0, 1.0]), "torch.tensor([1., nan, 1., 1.])"),
                       (lambda logits, labels: torch.ones(3), "lambda z, y: torch.ones(3)")):
        # Built inside the case: a bad tensor beta may be refused when the loss is made.
        add(f"mp.tempered('ce', {text})", lambda *args, beta=beta: tempered("ce", beta)(*args), [z, t], {}, "beta")
    # A rule's values are checked once per attack, on the clean logits (not on every loss call,
    # which would cost a host sync per step).
    model, x, y = Arg(f["model"], "model"), Arg(f["x"], "x"), Arg(f["y"], "y")
    negative = tempered("ce", lambda logits, labels: -torch.ones(logits.shape[0]))
    add("mp.pgd(model, x, y, eps=0.1, loss=mp.tempered('ce', lambda z, y: -torch.ones(len(z))))", pgd,
        [model, x, y], {"eps": 0.1, "loss": negative}, "beta")
    for kwargs, expect in (({"temperature": 2.0}, "temperature"), ({"beta": "xyz"}, "beta"),
                           ({"beta": True}, "beta"), ({"beta": -1.0}, "beta"), ({"beta": 0}, "beta"),
                           ({"beta": NAN}, "beta"), ({"beta": [1.0]}, "beta")):
        add("mp.losses.resolve_loss", resolve_loss, ["ce"], kwargs, expect)
    for bad in (0, -1.0, NAN, INF, "1", True):
        add("mp.losses.resolve_loss", resolve_loss, ["mifpe"], {"temperature": bad}, "temperature")
    for bad in (None, "nope", 3):
        add("mp.losses.resolve_loss", resolve_loss, [bad], {}, "loss")
    for bad in (0, -1.0, NAN, INF, "1", True, None):
        add("mp.mifpe_loss", mifpe_loss, [z, t], {"temperature": bad}, "temperature")
        add("mp.mifpe", mifpe, [bad], {}, "temperature")
    logits_variants = [
        (Arg(zt[0], "z[0]"), t, "logits"), (Arg(zt[:, :1], "z[:, :1]"), t, "classes"),
        (Arg(zt[..., None], "z[..., None]"), t, "logits"), (Arg(zt.numpy(), "z.numpy()"), t, "logits"),
        (Arg(zt.tolist(), "z.tolist()"), t, "logits"), (Arg(zt.round().long(), "z.round().long()"), t, "logits"),
        (z, Arg(f["t"][:3], "t[:3]"), "labels"), (z, Arg(f["t"].float(), "t.float()"), "labels"),
        (z, Arg(f["t"] + CLASSES, "t + 5"), "labels"), (z, Arg(f["t"] - CLASSES, "t - 5"), "labels"),
        (z, Arg(f["t"].numpy(), "t.numpy()"), "labels"), (z, Arg(f["t"][:, None], "t[:, None]"), "labels"),
    ]
    for name, fn in (("mp.mifpe_loss", mifpe_loss), ("mp.ce_loss", ce_loss), ("mp.cw_loss", cw_loss)):
        for logits, labels, expect in logits_variants:
            add(name, fn, [logits, labels], {}, expect)
    add("mp.dlr_loss", dlr_loss, [Arg(zt[:, :2], "z[:, :2]"), Arg(f["t"] % 2, "t % 2")], {}, "classes")
    add("mp.dlr_loss", dlr_loss, [Arg(zt[:, :3], "z[:, :3]"), Arg(f["t"] % 3, "t % 3")], {"targeted": True}, "classes")
    return cases


def check_api(case: ApiCase) -> Result:
    raised: BaseException | None = None
    returned: object = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            returned = case.run()
        except Exception as error:  # every exception is a finding to classify
            raised = error
    warned = [w for w in caught if issubclass(w.category, UserWarning)]
    if case.warning:
        ok = any(case.expect in str(w.message) for w in warned)
    else:
        ok = isinstance(raised, CLEAR_ERRORS) and case.expect in str(raised)
    if raised is not None:
        detail = f"raised {type(raised).__name__}: {_one_line(raised)}"
    elif warned:
        detail = f"warned {warned[0].category.__name__}: {_one_line(warned[0].message)}"
    else:
        shape = f" of shape {tuple(returned.shape)}" if isinstance(returned, Tensor) else ""
        finite = ""
        if isinstance(returned, Tensor) and returned.is_floating_point():
            finite = ", all finite" if bool(torch.isfinite(returned).all()) else ", containing NaN/inf"
        detail = f"no error: returned {type(returned).__name__}{shape}{finite}"
    return Result("api", case.group, case.call, ok, detail, {"expected": case.expect, "warning": case.warning})


def api_controls(f: dict) -> list[tuple[str, Callable[[], object]]]:
    """Valid calls next to the bad ones: each must run without an error or a warning."""
    model, x, y, z, t = f["model"], f["x"], f["y"], f["z"], f["t"]
    return [
        ("mp.pgd(model, x, y, eps=0.1, steps=2)", lambda: pgd(model, x, y, eps=0.1, steps=2)),
        ("mp.apgd(model, x, y, eps=0.1, steps=2)", lambda: apgd(model, x, y, eps=0.1, steps=2)),
        ("mp.fgsm(model, x, y, eps=0.1)", lambda: fgsm(model, x, y, eps=0.1)),
        ("mp.evaluate(model, x, y, attack='pgd', eps=0.1, steps=2, batch_size=2)",
         lambda: evaluate(model, x, y, attack="pgd", eps=0.1, steps=2, batch_size=2)),
        ("mp.pgd(model, x, y, eps=torch.full((4,), 0.1), steps=2, target_classes=2, loss='fnz-2')",
         lambda: pgd(model, x, y, eps=torch.full((BATCH,), 0.1), steps=2, target_classes=2, loss="fnz-2")),
        ("mp.mifpe_loss(z, t, temperature=2.0)", lambda: mifpe_loss(z, t, temperature=2.0)),
        ("mp.tempered('ce', torch.full((4,), 2.0))(z, t)", lambda: tempered("ce", torch.full((BATCH,), 2.0))(z, t)),
        ("mp.losses.resolve_loss('ce', beta='njs')", lambda: resolve_loss("ce", beta="njs")),
        ("mp.dlr_loss(z, t, targeted=True)", lambda: dlr_loss(z, t, targeted=True)),
    ]


def check_control_call(category: str, call: str, run: Callable[[], object]) -> Result:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            run()
        except Exception as error:  # reported as a finding
            return Result(category, "control: valid call", call, False, f"raised {type(error).__name__}: {_one_line(error)}")
    if caught:
        return Result(category, "control: valid call", call, False, f"warned: {_one_line(caught[0].message)}")
    return Result(category, "control: valid call", call, True, "ran")


def run_api() -> list[Result]:
    f = api_fixtures()
    cases = attack_cases(f) + evaluate_cases(f) + loss_cases(f)
    controls = [check_control_call("api", call, run) for call, run in api_controls(f)]
    return controls + [check_api(case) for case in cases]


# ==============================================================================================
# 2. Bad inputs -> clear errors (CLI)
# ==============================================================================================


@dataclass
class CliCase:
    group: str
    argv: list[str]
    expect: str


def _small_torchscript(path: Path, outputs: int) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, outputs)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's deprecation notice
        torch.jit.script(model).save(str(path))


def make_cli_files(root: Path) -> dict[str, str]:
    """Data and model files, good and damaged; returns name -> path."""
    rng = np.random.default_rng(0)
    x = rng.random((4, 1, 28, 28), dtype=np.float32)
    y = np.arange(4)
    p = {name: root / name for name in (
        "good.npz", "good.pt", "float-labels.npz", "float-labels.pt", "negative-labels.npz", "big-labels.npz",
        "text-labels.npz", "labels-2d.npz", "no-y.npz", "flat.npz", "cifar-shape.npz", "nan-inputs.npz",
        "0-255.npz", "empty-set.npz", "truncated.npz", "random.npz", "empty.npz", "truncated.pt", "random.pt",
        "empty.pt", "triple.pt", "wrong-keys.pt", "strings.pt", "object-labels.npz", "weights-random.pt",
        "weights-linear.pt", "pickled-module.pt", "fake.ts", "random.ts", "truncated.ts", "three-outputs.ts",
        "one-output.ts", "a-file", "labels-2d.pt",
    )}
    np.savez(p["good.npz"], x=x, y=y)
    torch.save((torch.from_numpy(x), torch.from_numpy(y)), p["good.pt"])
    np.savez(p["float-labels.npz"], x=x, y=np.array([0.0, 1.0, 2.5, 3.0]))
    torch.save((torch.from_numpy(x), torch.tensor([0.0, 1.0, 2.5, 3.0])), p["float-labels.pt"])
    np.savez(p["negative-labels.npz"], x=x, y=np.array([0, -1, 2, 3]))
    np.savez(p["big-labels.npz"], x=x, y=np.array([12, 1, 2, 3]))  # first: --n 2 keeps it
    np.savez(p["text-labels.npz"], x=x, y=np.array(["a", "b", "c", "d"]))
    np.savez(p["labels-2d.npz"], x=x, y=y[:, None])
    torch.save((torch.from_numpy(x), torch.from_numpy(y)[:, None]), p["labels-2d.pt"])
    np.savez(p["no-y.npz"], x=x, labels=y)
    np.savez(p["flat.npz"], x=x.reshape(4, -1)[:, :100], y=y)
    np.savez(p["cifar-shape.npz"], x=rng.random((4, 3, 32, 32), dtype=np.float32), y=y)
    nan_x = x.copy()
    nan_x[1, 0, 3, 3] = np.nan
    np.savez(p["nan-inputs.npz"], x=nan_x, y=y)
    np.savez(p["0-255.npz"], x=x * 255, y=y)
    np.savez(p["empty-set.npz"], x=x[:0], y=y[:0])
    np.savez(p["object-labels.npz"], x=x, y=np.array([0, 1, "two", None], dtype=object))
    npz, pt = p["good.npz"].read_bytes(), p["good.pt"].read_bytes()
    noise = rng.bytes(400)
    p["truncated.npz"].write_bytes(npz[: len(npz) // 2])
    p["random.npz"].write_bytes(noise)
    p["empty.npz"].write_bytes(b"")
    p["truncated.pt"].write_bytes(pt[: len(pt) // 2])
    p["random.pt"].write_bytes(noise)
    p["empty.pt"].write_bytes(b"")
    torch.save((torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(y)), p["triple.pt"])
    torch.save({"images": torch.from_numpy(x), "targets": torch.from_numpy(y)}, p["wrong-keys.pt"])
    torch.save(["x", "y"], p["strings.pt"])
    p["weights-random.pt"].write_bytes(noise)
    torch.save(nn.Linear(784, 10).state_dict(), p["weights-linear.pt"])
    torch.save(nn.Linear(784, 10), p["pickled-module.pt"])
    with zipfile.ZipFile(p["fake.ts"], "w") as archive:
        archive.writestr("fake/code/model.py", "not TorchScript")
    p["random.ts"].write_bytes(noise)
    _small_torchscript(p["three-outputs.ts"], 3)
    _small_torchscript(p["one-output.ts"], 1)
    _small_torchscript(p["truncated.ts"], 10)
    script = p["truncated.ts"].read_bytes()
    p["truncated.ts"].write_bytes(script[: len(script) // 2])
    p["a-file"].write_text("")
    (root / "cifar100" / "cifar-100-python").mkdir(parents=True)
    return {name: str(path) for name, path in p.items()} | {"root": str(root)}


FILE_RECIPES = (
    "x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32), y = np.arange(4); "
    "good.npz = np.savez(x=x, y=y); good.pt = torch.save((x, y)); damaged files are halves or "
    "400 random bytes; the .ts models are torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(784, k)))"
)


def cli_cases(f: dict[str, str]) -> list[CliCase]:
    out = str(Path(f["root"]) / "out")
    t2 = ["table2", "--attacks", "fgsm", "--n", "2", "--steps", "1", "--quiet", "--out", out]
    t1 = ["table1", "--models", "zoo:standard", "--losses", "ce", "--no-autoattack", "--n", "2", "--steps", "1",
          "--quiet", "--out", out]
    t3 = ["table3", "--model", "zoo:standard", "--losses", "ce", "--n", "2", "--steps", "1", "--quiet", "--out", out]
    pp = ["pgdpp", "--models", "zoo:standard", "--n", "2", "--steps", "1", "--quiet", "--out", out]
    dg = ["diagnose", "--model", "zoo:standard", "--quick", "--no-clever", "--n", "2", "--steps", "1",
          "--dtypes", "float32", "--quiet", "--out", out]
    demo = ["demo", "--n", "2", "--steps", "1", "--quiet"]
    cases: list[CliCase] = []

    def add(group: str, base: list[str], extra: list[str], expect: str) -> None:
        cases.append(CliCase(group, [*base, *extra], expect))

    for text in ("abc", "-1", "nan", "inf", "-inf", "1e400", "1/0", "8/", "", "0.1.2"):
        add("options", t2, ["--eps", text], "--eps")
    add("options", pp, ["--l2-eps", "-1"], "--l2-eps")
    add("options", dg, ["--l2-eps", "nan"], "--l2-eps")
    add("options", demo, ["--eps", "nan"], "--eps")
    for option in ("--n", "--steps", "--batch-size"):
        for text in ("0", "-3", "abc", "2.5"):
            add("options", t2, [option, text], option)
    add("options", t2, ["--n", "5000"], "5000")
    add("options", demo, ["--n", "0"], "--n")
    add("options", t2, ["--seed", "abc"], "--seed")
    add("options", t2, ["--dtype", "float8"], "--dtype")
    add("options", t2, ["--device", "nope"], "--device")
    add("options", t2, ["--device", "cuda"], "--device")
    add("options", t2, ["--device", "cuda:99"], "--device")
    add("options", t2, ["--frobnicate"], "--frobnicate")
    add("options", [], ["--frobnicate"], "--frobnicate")
    add("options", [], ["tabel2"], "tabel2")
    add("options", t2, ["--threat-model", "L2"], "--threat-model")
    add("options", t2, ["--dataset", "mnist"], "--dataset")
    add("options", dg, ["--dtypes", "float8"], "--dtypes")
    add("options", dg, ["--dtypes", ","], "--dtypes")
    add("options", pp, ["--clever-batches", "0"], "--clever-batches")
    add("options", ["zoo"], [], "zoo")
    add("options", ["zoo", "frob"], [], "frob")
    add("options", ["zoo", "train", "nope", "--out", out, "--quiet"], [], "nope")
    add("options", ["zoo", "train", "standard", "--root", "/nonexistent-mifpe", "--out", out, "--quiet"], [],
        "/nonexistent-mifpe")
    add("lists", t2, ["--attacks", "foo"], "foo")
    add("lists", t2, ["--attacks", ""], "--attacks")
    add("lists", t2, ["--attacks", ","], "--attacks")
    add("lists", t2, ["--attacks", "fgsm,fgsm"], "--attacks")
    add("lists", t1, ["--losses", "foo"], "foo")
    add("lists", t1, ["--losses", "fnz-0"], "fnz")
    add("lists", t1, ["--losses", "ce,ce"], "--losses")
    add("lists", t3, ["--losses", "nope"], "nope")
    add("lists", t1, ["--models", "zoo:nope"], "nope")
    add("lists", t1, ["--models", "zoo:standard,zoo:standard"], "--models")
    add("lists", pp, ["--models", ""], "--models")
    aa = ("AutoAttack", "float32")
    add("dtype x AutoAttack", t2, ["--dtype", "float16", "--attacks", "fgsm,autoattack"], aa[0])
    add("dtype x AutoAttack", t2, ["--dtype", "bfloat16", "--attacks", "autoattack"], aa[0])
    add("dtype x AutoAttack", t2, ["--dtype", "float64", "--attacks", "pgd,autoattack"], aa[0])
    t1_with_autoattack = [a for a in t1 if a != "--no-autoattack"]
    add("dtype x AutoAttack", t1_with_autoattack, ["--dtype", "bfloat16"], aa[0])
    add("dtype x AutoAttack", t2, ["--eps", "0", "--attacks", "fgsm,autoattack"], aa[0])
    blocked = {"existing file": f["a-file"], "under a file": f["a-file"] + "/sub", "/proc": "/proc/mifpe-reliability",
               "/sys": "/sys/mifpe-reliability", "/dev/null": "/dev/null/sub", "name too long": "x" * 300,
               "NUL byte": "bad\0name"}
    for where in blocked.values():
        add("--out", t2, ["--out", where], "--out")
    add("--out", dg, ["--out", "/proc/mifpe-reliability"], "--out")
    add("--out", demo, ["--out", f["a-file"]], "--out")
    add("--out", ["zoo", "train", "standard", "--quiet"], ["--out", "/proc/mifpe-reliability"], "--out")
    for spec in ("cifar10:/nonexistent-mifpe", "mnist:/nonexistent-mifpe", "fashion-mnist:/nonexistent-mifpe",
                 "foo", "data.csv", str(Path(f["root"]) / "missing.npz"), str(Path(f["root"]) / "missing.pt"),
                 f"cifar100:{Path(f['root']) / 'cifar100'}"):
        add("data files", t2, ["--data", spec], spec.split(":", 1)[-1])
    data_files = {
        "float-labels.npz": "2.5", "float-labels.pt": "2.5", "negative-labels.npz": "-1", "big-labels.npz": "12",
        "text-labels.npz": "labels", "labels-2d.npz": "shape", "labels-2d.pt": "shape", "no-y.npz": "'y'",
        "flat.npz": "inputs", "cifar-shape.npz": "inputs", "nan-inputs.npz": "NaN", "0-255.npz": "bounds",
        "empty-set.npz": "no samples", "object-labels.npz": "object-labels.npz", "truncated.npz": "truncated.npz",
        "random.npz": "random.npz", "empty.npz": "empty.npz", "truncated.pt": "truncated.pt",
        "random.pt": "random.pt", "empty.pt": "empty.pt", "triple.pt": "triple.pt", "wrong-keys.pt": "wrong-keys.pt",
        "strings.pt": "strings.pt",
    }
    for name, expect in data_files.items():
        add("data files", t2, ["--data", f[name]], expect)
    model_files = {
        ("weights-random.pt", "smallcnn"): "weights-random.pt", ("weights-linear.pt", "smallcnn"): "weights-linear.pt",
        ("pickled-module.pt", "smallcnn"): "pickled-module.pt", ("good.pt", "smallcnn"): "good.pt",
        ("weights-linear.pt", None): "--arch", ("weights-linear.pt", "nope"): "nope", ("fake.ts", None): "fake.ts",
        ("random.ts", None): "random.ts", ("truncated.ts", None): "truncated.ts",
        ("three-outputs.ts", None): "three-outputs.ts", ("one-output.ts", None): "one-output.ts",
        ("missing.pt", "smallcnn"): "missing.pt",
    }
    for (name, arch), expect in model_files.items():
        path = f.get(name, str(Path(f["root"]) / name))
        add("model files", t2, ["--model", path] + (["--arch", arch] if arch else []), expect)
    for spec, expect in (("zoo:nope", "nope"), ("zoo:", "zoo model ''"), ("nope", "nope"), (f["good.npz"], "good.npz"),
                         ("robustbench:Standard", "robustbench")):
        add("model files", t2, ["--model", spec], expect)
    add("model files", t2, ["--data", f["cifar-shape.npz"], "--model", f["three-outputs.ts"]], "three-outputs.ts")
    return cases


def run_cli(argv: list[str]) -> tuple[object, str, BaseException | None]:
    """(exit status, stderr, exception that escaped main) of one in-process run."""
    err, out = io.StringIO(), io.StringIO()
    code: object = None
    raised = None
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # library deprecation chatter is not what is measured
        try:
            code = cli_main(argv)
        except SystemExit as stop:
            code = stop.code
        except Exception as error:  # a raw exception is a finding
            raised = error
    return code, err.getvalue(), raised


def check_cli_control(argv: list[str]) -> Result:
    """A valid command next to the bad ones: it must run (exit status 0)."""
    code, stderr, raised = run_cli(argv)
    ok = raised is None and code == 0
    detail = "ran" if ok else (f"raised {type(raised).__name__}: {_one_line(raised)}" if raised is not None
                               else f"exit status {code!r}: {_one_line(stderr[-300:])}")
    return Result("cli", "control: valid command", "mifpe " + " ".join(argv), ok, detail)


def _shell_word(arg: str) -> str:
    """An argument as the report shows it: '' for empty, \\0 for NUL, long ones abbreviated."""
    if not arg:
        return "''"
    if len(arg) > 80:
        return f"<{arg[0]!r} x {len(arg)}>" if len(set(arg)) == 1 else arg[:77] + "..."
    return arg.replace("\0", "\\0")


def check_cli(case: CliCase) -> Result:
    code, stderr, raised = run_cli(case.argv)
    error_lines = [line for line in stderr.splitlines() if "error:" in line]
    clear = raised is None and code == 2 and len(error_lines) == 1 and "Traceback" not in stderr
    names = clear and case.expect in error_lines[0]
    if raised is not None:
        detail = f"raised {type(raised).__name__} out of main(): {_one_line(raised)}"
    elif code != 2:
        detail = f"exit status {code!r}" + (": the command ran" if code == 0 else "")
    else:
        long_args = [a for a in case.argv if len(a) > 80]
        for arg in long_args:
            error_lines = [line.replace(arg, _shell_word(arg)) for line in error_lines]
        detail = " | ".join(_one_line(line) for line in error_lines) or _one_line(stderr[-300:])
    shown = " ".join(_shell_word(a) for a in case.argv)
    return Result("cli", case.group, f"mifpe {shown}", clear, detail,
                  {"names_the_problem": names, "expected": case.expect, "exit_status": code})


def _relative_to(results: list[Result], root: Path) -> list[Result]:
    """Write the temporary folder as $TMP, so that reruns give the same report."""
    for r in results:
        r.case, r.detail = r.case.replace(str(root), "$TMP"), r.detail.replace(str(root), "$TMP")
        r.extra = {k: v.replace(str(root), "$TMP") if isinstance(v, str) else v for k, v in r.extra.items()}
    return results


def run_cli_category(root: Path) -> list[Result]:
    files = make_cli_files(root)
    previous = Path.cwd()
    os.chdir(root)  # default output folders land here, never in the checkout
    try:
        out = str(root / "out")
        base = ["--n", "2", "--steps", "1", "--quiet", "--out", out]
        controls = [check_cli_control(argv) for argv in (
            ["table2", "--attacks", "fgsm", *base],
            ["table2", "--attacks", "fgsm,pgd", "--data", files["good.npz"], "--dtype", "float64", *base],
            ["table2", "--attacks", "apgd", "--data", files["good.pt"], "--eps", "8/255", *base],
            ["table3", "--model", "zoo:standard", "--losses", "ce,mifpe", *base],
        )]
        return _relative_to(controls + [check_cli(case) for case in cli_cases(files)], root)
    finally:
        os.chdir(previous)


# ==============================================================================================
# 3. Caller state untouched
# ==============================================================================================


def state_model() -> nn.Module:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(FEATURES, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, CLASSES))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.1, 0.1)
        model[1].running_var.uniform_(0.5, 1.5)
    return model


def snapshot(model: nn.Module, x: Tensor, y: Tensor) -> dict:
    params = list(model.parameters())
    return {
        "module modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in params] + [x.requires_grad],
        ".grad": [None if t.grad is None else t.grad.clone() for t in [*params, x]],
        "parameters": [p.detach().clone() for p in params],
        "buffers": [b.clone() for b in model.buffers()],
        "inputs": x.detach().clone(),
        "labels": y.clone(),
        "torch RNG": torch.get_rng_state(),
        "NumPy RNG": pickle.dumps(np.random.get_state()),  # noqa: NPY002 - the global state is what is checked
        "random RNG": random.getstate(),
        "grad mode": torch.is_grad_enabled(),
    }


def _same(a: object, b: object) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (isinstance(a, Tensor) and isinstance(b, Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and torch.equal(a, b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b, strict=True))
    return a == b


STATE_ATTACKS: dict[str, Callable] = {
    "pgd": lambda m, x, y, loss: pgd(m, x, y, eps=0.1, steps=3, loss=loss),
    "apgd": lambda m, x, y, loss: apgd(m, x, y, eps=0.1, steps=3, loss=loss),
    "fgsm": lambda m, x, y, loss: fgsm(m, x, y, eps=0.1, loss=loss),
    "evaluate": lambda m, x, y, loss: evaluate(m, x, y, attack="pgd", eps=0.1, steps=3, loss=loss, batch_size=3,
                                               keep_adversarial=True).adversarial,
}


def check_state(attack: str, loss: str, mode: str, requires_grad: bool, grad_mode: str) -> Result:
    model = state_model().train(mode == "train")
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(6, FEATURES, generator=gen)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    model.train(mode == "train")
    # Preset .grad on some parameters, none on others, one frozen; the inputs too when they need grad.
    model[0].weight.grad = torch.randn(model[0].weight.shape, generator=gen)
    model[3].bias.grad = torch.randn(model[3].bias.shape, generator=gen)
    model[3].weight.requires_grad_(False)
    if requires_grad:
        x.requires_grad_(True)
        x.grad = torch.randn(x.shape, generator=gen)
    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002 - the global state is what is checked
    random.seed(123)
    raised = None
    adversarial = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the train() warning is the documented contract
        with torch.no_grad() if grad_mode == "no_grad" else contextlib.nullcontext():
            before = snapshot(model, x, y)
            try:
                adversarial = STATE_ATTACKS[attack](model, x, y, loss)
            except Exception as error:  # reported as a finding
                raised = error
            after = snapshot(model, x, y)
    changed = [key for key in before if not (key == "buffers" and mode == "train") and not _same(before[key], after[key])]
    if isinstance(adversarial, Tensor) and adversarial.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
        changed.append("result shares memory with the inputs")
    if raised is not None:
        changed.append(f"raised {type(raised).__name__}: {_one_line(raised)}")
    name = f"{attack}, loss={loss}, model.{mode}(), inputs.requires_grad={requires_grad}, {grad_mode}"
    return Result("state", attack, name, not changed, "; ".join(changed) or "unchanged")


def run_state() -> list[Result]:
    return [
        check_state(attack, loss, mode, requires_grad, grad_mode)
        for attack in STATE_ATTACKS for loss in ("mifpe", "ce", "hns") for mode in ("eval", "train")
        for requires_grad in (False, True) for grad_mode in ("grad", "no_grad")
    ]


# ==============================================================================================
# 4. Ties
# ==============================================================================================

TIE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}
TIE_EXPONENTS = range(-30, 31)


def tie_losses() -> dict[str, Callable]:
    return {"ce": get_loss("ce"), "cw": get_loss("cw"), "dlr": get_loss("dlr"), "mifpe": get_loss("mifpe"),
            "mifpe(T=10)": mifpe(10.0), "fnz-1": get_loss("fnz-1"), "tempered(ce, 2)": tempered("ce", 2.0)}


def tie_unit(dtype: torch.dtype, exponent: int) -> float:
    """``10**exponent`` clipped to the dtype's normal range, with |z| <= max / 16 (room for z - max z)."""
    info = torch.finfo(dtype)
    return min(max(10.0**exponent, info.tiny), info.max / 64)


def tied_logits(dtype: torch.dtype, exponent: int, seed: int) -> tuple[Tensor, Tensor]:
    """8 rows of 10 logits with exact ties: rows 0-3 top-2, rows 4-5 top-3, row 6 all equal,
    row 7 all zero; labels on a tied class in even rows, elsewhere in odd rows."""
    gen = torch.Generator().manual_seed(seed)
    scale = tie_unit(dtype, exponent)
    digits = torch.randint(-4, 5, (8, 10), generator=gen).double()
    for row, tied in ((0, 2), (1, 2), (2, 2), (3, 2), (4, 3), (5, 3), (6, 10)):
        order = digits[row].argsort(descending=True)
        digits[row, order[:tied]] = digits[row].max().clamp_min(1)
    digits[7] = 0
    top = digits.argmax(1)
    other = (top + 1 + torch.randint(0, 9, (8,), generator=gen)) % 10
    labels = torch.where(torch.arange(8) % 2 == 0, top, other)
    return (digits * scale).to(dtype), labels


def check_tied_loss(dtype_name: str, exponent: int, loss_name: str, loss: Callable, targeted: bool) -> Result:
    logits, labels = tied_logits(TIE_DTYPES[dtype_name], exponent, seed=exponent + 100)
    z = logits.clone().requires_grad_(True)
    unit = tie_unit(TIE_DTYPES[dtype_name], exponent)
    clipped = f" (clipped to {unit:.3g})" if unit != 10.0**exponent else ""
    name = f"{loss_name}, {dtype_name}, logits = integers in [-4, 4] x 1e{exponent}{clipped}, targeted={targeted}"
    try:
        value = loss(z, labels, targeted=targeted)
        (grad,) = torch.autograd.grad(value.sum(), z)
    except Exception as error:  # reported as a finding
        return Result("ties", "losses", name, False, f"raised {type(error).__name__}: {_one_line(error)}")
    bad_value = (~torch.isfinite(value)).nonzero().flatten().tolist()
    bad_grad = (~torch.isfinite(grad).all(1)).nonzero().flatten().tolist()
    ok = not bad_value and not bad_grad
    detail = "finite" if ok else f"non-finite loss in rows {bad_value}, gradient in rows {bad_grad}"
    return Result("ties", "losses finite", name, ok, detail, {"unit": unit, "dtype": dtype_name, "loss": loss_name})


class TwinTop(nn.Module):
    """``z_0 = top x_0 + s``, ``z_1 = top x_1 + s`` with ``s = x_rest . u`` shared, and lower other
    logits: wherever ``x_0 == x_1`` the two top logits are the same float, bitwise."""

    def __init__(self, dtype: torch.dtype, top: float, dim: int = 8, classes: int = 5) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.top = top
        self.u = nn.Parameter(torch.randn(dim - 2, generator=gen).to(dtype))
        self.v = nn.Parameter(torch.randn(classes - 2, dim - 2, generator=gen).to(dtype))
        self.register_buffer("below", torch.full((classes - 2,), -(8.0 + top), dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        shared = x[:, 2:] @ self.u
        twins = self.top * x[:, :2] + shared[:, None]
        return torch.cat([twins, self.below + x[:, 2:] @ self.v.T], dim=1)


TIE_ATTACKS: dict[str, Callable] = {
    "fgsm": lambda m, x, y, loss: fgsm(m, x, y, eps=0.1, loss=loss),
    "pgd": lambda m, x, y, loss: pgd(m, x, y, eps=0.1, steps=5, loss=loss, random_start=False),
    "apgd": lambda m, x, y, loss: apgd(m, x, y, eps=0.1, steps=5, loss=loss, random_start=False),
}
TIE_TOPS = (1.0, 10.0, 100.0, 1000.0)


def tied_problem(dtype: torch.dtype, top: float) -> tuple[nn.Module, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(8, 8, generator=gen)
    x[:, 1] = x[:, 0] = 0.3 + 0.4 * torch.rand(8, generator=gen)
    x = x.to(dtype)
    model = TwinTop(dtype, top).eval()
    y = torch.zeros(8, dtype=torch.long)  # argmax of a tie is the first index
    with torch.no_grad():
        logits = model(x)
    if not (torch.equal(logits[:, 0], logits[:, 1]) and bool((logits.argmax(1) == 0).all())):
        raise AssertionError(f"the tied problem is not tied in {dtype} at top={top}")
    return model, x, y


def _fooled(model: nn.Module, x_adv: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x_adv).argmax(1) != 0


def run_ties() -> list[Result]:
    results = [
        check_tied_loss(dtype_name, exponent, loss_name, loss, targeted)
        for dtype_name in TIE_DTYPES for exponent in TIE_EXPONENTS
        for loss_name, loss in tie_losses().items() for targeted in (False, True)
    ]
    for dtype_name, dtype in TIE_DTYPES.items():
        for top in TIE_TOPS:
            model, x, y = tied_problem(dtype, top)
            for attack_name, attack in TIE_ATTACKS.items():
                by_ce = _fooled(model, attack(model, x, y, "ce"))
                for loss_name, loss in (("mifpe", "mifpe"), ("mifpe(T=10)", mifpe(10.0)), ("fnz-1", "fnz-1")):
                    name = f"{attack_name}, {loss_name}, {dtype_name}, top logits {top:g}"
                    try:
                        by_loss = _fooled(model, attack(model, x, y, loss))
                    except Exception as error:  # reported as a finding
                        results.append(Result("ties", "tied model", name, False, f"raised {type(error).__name__}: {_one_line(error)}"))
                        continue
                    missed = (by_ce & ~by_loss).nonzero().flatten().tolist()
                    detail = f"CE fools {int(by_ce.sum())}/8, {loss_name} fools {int(by_loss.sum())}/8"
                    if missed:
                        detail += f"; missed samples {missed}"
                    results.append(Result("ties", "tied model", name, not missed, detail,
                                          {"ce_fooled": int(by_ce.sum()), "fooled": int(by_loss.sum())}))
    return results


# ==============================================================================================
# 5. Planted files
# ==============================================================================================


class Planted:
    """An object whose unpickling calls ``function(*args)``: what an attacker plants in a file."""

    def __init__(self, function: Callable, args: tuple) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple:
        return self.function, self.args


def payloads(marker: Path) -> dict[str, Planted]:
    code = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": Planted(os.system, (f"touch {marker}",)),
        "open(..., 'w')": Planted(open, (str(marker), "w")),
        "builtins.exec": Planted(exec, (code,)),
        "builtins.eval": Planted(eval, (code,)),
        "subprocess.call": Planted(subprocess.call, (["touch", str(marker)],)),
    }


def _cifar_batch(payload: Planted, label_key: str = "labels") -> dict:
    images = np.random.default_rng(0).integers(0, 256, (2, 3072), dtype=np.uint8)
    return {"batch_label": payload, "data": images, label_key: [0, 1]}


def _plant_cifar(root: Path, payload: Planted, protocol: int, *, cifar100: bool = False) -> str:
    folder = root / ("cifar-100-python" if cifar100 else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    batch = _cifar_batch(payload, "fine_labels" if cifar100 else "labels")
    (folder / ("test" if cifar100 else "test_batch")).write_bytes(pickle.dumps(batch, protocol=protocol))
    return f"{'cifar100' if cifar100 else 'cifar10'}:{root}"


def _plant_torch(path: Path, obj: object, *, legacy: bool = False) -> str:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return str(path)


def _data_dict(payload: Planted) -> dict:
    return {"x": payload, "y": torch.arange(2)}


def _plant_npz(path: Path, payload: Planted) -> str:
    np.savez(path, x=np.array([payload, payload], dtype=object), y=np.arange(2))
    return str(path)


def _plant_raw(path: Path, payload: Planted) -> str:
    path.write_bytes(pickle.dumps({"state_dict": payload}, protocol=4))
    return str(path)


# vector -> (how the file is planted, which CLI options point at it)
VECTORS: dict[str, Callable[[Path, Planted], list[str]]] = {
    "CIFAR-10 test_batch, protocol 2 (MD5 check on)": lambda d, p: ["--data", _plant_cifar(d, p, 2)],
    "CIFAR-10 test_batch, protocol 0, --no-verify": lambda d, p: ["--data", _plant_cifar(d, p, 0), "--no-verify"],
    "CIFAR-10 test_batch, protocol 2, --no-verify": lambda d, p: ["--data", _plant_cifar(d, p, 2), "--no-verify"],
    "CIFAR-10 test_batch, protocol 4, --no-verify": lambda d, p: ["--data", _plant_cifar(d, p, 4), "--no-verify"],
    "CIFAR-10 test_batch, protocol 5, --no-verify": lambda d, p: ["--data", _plant_cifar(d, p, 5), "--no-verify"],
    "CIFAR-100 test, protocol 4, --no-verify": lambda d, p: ["--data", _plant_cifar(d, p, 4, cifar100=True), "--no-verify"],
    "--data file.pt (torch.save)": lambda d, p: ["--data", _plant_torch(d / "data.pt", _data_dict(p))],
    "--data file.pth (legacy torch.save)": lambda d, p: ["--data", _plant_torch(d / "data.pth", _data_dict(p), legacy=True)],
    "--data file.npz (object array)": lambda d, p: ["--data", _plant_npz(d / "data.npz", p)],
    "--model state dict .pt --arch smallcnn": lambda d, p: ["--model", _plant_torch(d / "weights.pt", {"state_dict": p}),
                                                            "--arch", "smallcnn"],
    "--model legacy .pth --arch smallcnn": lambda d, p: ["--model", _plant_torch(d / "weights.pth", {"model": p}, legacy=True),
                                                         "--arch", "smallcnn"],
    "--model code.pt (torch.save archive named code/: read as TorchScript)": lambda d, p: [
        "--model", _plant_torch(d / "code.pt", {"state_dict": p})],
    "--model file.ts (a raw pickle)": lambda d, p: ["--model", _plant_raw(d / "model.ts", p)],
}


def check_control(payload_name: str, folder: Path) -> Result:
    """The payload is live: plain ``pickle.loads`` runs it."""
    folder.mkdir(parents=True)
    marker = folder / "marker"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            pickle.loads(pickle.dumps(payloads(marker)[payload_name], protocol=4))
        except Exception:  # the marker is what counts
            pass
    fired = marker.exists()
    return Result("planted", "control: plain pickle.loads", payload_name, fired,
                  "payload ran (marker created)" if fired else "payload did not run: the control is broken")


def check_planted(vector: str, payload_name: str, folder: Path) -> Result:
    folder.mkdir(parents=True)
    marker = folder / "marker"
    options = VECTORS[vector](folder, payloads(marker)[payload_name])
    argv = ["table2", *options, "--attacks", "fgsm", "--n", "2", "--steps", "1", "--quiet", "--out", str(folder / "out")]
    code, stderr, raised = run_cli(argv)
    ran = marker.exists()
    error_lines = [line for line in stderr.splitlines() if "error:" in line]
    outcome = (f"raised {type(raised).__name__}" if raised is not None
               else f"exit {code}: " + (_one_line(error_lines[-1], 160) if error_lines else "no error line"))
    detail = ("PAYLOAD RAN (marker created); " if ran else "refused; ") + outcome
    clear = raised is None and code == 2 and len(error_lines) == 1
    return Result("planted", vector, f"{payload_name} via {vector}", not ran, detail,
                  {"clear_error": clear, "argv": " ".join(argv)})


def run_planted(root: Path) -> list[Result]:
    names = list(payloads(root / "unused"))
    results = [check_control(name, root / f"control-{i}") for i, name in enumerate(names)]
    cases = [(vector, name) for vector in VECTORS for name in names]
    results += [check_planted(vector, name, root / f"case-{i}") for i, (vector, name) in enumerate(cases)]
    return _relative_to(results, root)


# ==============================================================================================
# Report
# ==============================================================================================

CATEGORIES = {
    "api": "1. Bad inputs -> clear errors (Python API)",
    "cli": "2. Bad inputs -> clear errors (`mifpe` CLI)",
    "state": "3. Caller state untouched",
    "ties": "4. Ties: finite losses and gradients, MIFPE moves what CE moves",
    "planted": "5. Planted files never run",
}
PROMISES = {
    "api": "a ValueError/TypeError/RuntimeError whose message contains the per-case substring naming the "
           "argument (or the documented UserWarning, for a train()-mode model and a model returning probabilities)",
    "cli": "exit status 2, exactly one `error:` line on stderr, no traceback",
    "state": "modes, requires_grad, .grad (bitwise), parameters, inputs, labels, global torch/NumPy/random RNG "
             "states and grad mode unchanged; no memory shared with the inputs; buffers unchanged in eval()",
    "ties": "loss and gradient finite in every row; MIFPE / FNZ-1 fool every sample CE fools",
    "planted": "the payload's marker file never appears (the control rows must show it does with plain pickle)",
}


NOTES = [
    "Not covered: `robustbench:` checkpoints (RobustBench cannot be imported without upstream AutoAttack, so a "
    "planted checkpoint is never reached), CUDA devices, and models that are not `nn.Module`s in the state cases.",
    "The caller-state model has BatchNorm but no Dropout: a Dropout layer in train() mode draws from the global "
    "torch RNG in the model's own forward passes, which no attack can prevent (the train() warning says the "
    "attack is then random).",
]


def summarise(results: list[Result]) -> dict:
    summary: dict = {}
    for key in CATEGORIES:
        rows = [r for r in results if r.category == key and not _is_control(r)]
        controls = [r for r in results if r.category == key and _is_control(r)]
        groups: dict[str, dict[str, int]] = {}
        for r in rows:
            tally = groups.setdefault(r.group, {"tried": 0, "as_promised": 0})
            tally["tried"] += 1
            tally["as_promised"] += r.ok
        summary[key] = {"tried": len(rows), "as_promised": sum(r.ok for r in rows), "groups": groups,
                        "controls": {"tried": len(controls), "passed": sum(r.ok for r in controls)}}
    cli_clear = [r for r in results if r.category == "cli" and r.ok and not _is_control(r)]
    summary["cli"]["error_line_names_the_problem"] = sum(r.extra["names_the_problem"] for r in cli_clear)
    planted = [r for r in results if r.category == "planted" and not _is_control(r)]
    summary["planted"]["refused_with_a_clear_error"] = sum(r.extra["clear_error"] for r in planted)
    by_dtype: dict[str, dict[str, list[int]]] = {}
    for r in results:
        if r.group == "losses finite":
            cell = by_dtype.setdefault(r.extra["dtype"], {}).setdefault(r.extra["loss"], [0, 0])
            cell[0] += r.ok
            cell[1] += 1
    summary["ties"]["losses_finite_by_dtype"] = {d: {k: f"{o}/{t}" for k, (o, t) in row.items()}
                                                 for d, row in by_dtype.items()}
    tied = [r for r in results if r.group == "tied model"]
    summary["ties"]["tied_model_cases_where_ce_fools_all_8"] = sum(r.extra.get("ce_fooled") == 8 for r in tied)
    return summary


def _is_control(result: Result) -> bool:
    return result.group.startswith("control")


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict) -> str:
    m, s, results = report["machine"], report["summary"], [Result(**r) for r in report["results"]]
    lines = [
        "# Reliability probe",
        "",
        f"Generated by `benchmarks/reliability.py` on {m['date']}"
        + (f" at commit `{m['git_commit']}`" if m["git_commit"] else "")
        + (" (with uncommitted changes to `mifpe_plugins/`)" if m["package_has_uncommitted_changes"] else "")
        + ".",
        "",
        f"- Machine: {m['cpu_model']}, {m['cpu_count']} cores, torch {m['torch_version']} "
        f"({m['torch_num_threads']} threads), Python {m['python_version']}, NumPy {report['numpy_version']}",
        f"- Rerun: `{report['command']}` ({report['wall_seconds']:.0f} s wall time here)",
        "",
        "| category | tried | as promised | not as promised | controls passed |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, title in CATEGORIES.items():
        t, o, c = s[key]["tried"], s[key]["as_promised"], s[key]["controls"]
        controls = f"{c['passed']}/{c['tried']}" if c["tried"] else "–"
        lines.append(f"| {title} | {t} | {o} | {t - o} | {controls} |")
    lines += [
        "",
        f"Of the clear CLI errors, {s['cli']['error_line_names_the_problem']} of {s['cli']['as_promised']} name "
        "the offending option or file in their error line. Of the planted files, "
        f"{s['planted']['refused_with_a_clear_error']} of {s['planted']['tried']} were refused with one clear "
        f"error line (exit status 2). In {s['ties']['tied_model_cases_where_ce_fools_all_8']} of "
        f"{s['ties']['groups'].get('tied model', {}).get('tried', 0)} tied-model cases CE fools all 8 samples, so "
        "MIFPE had to as well.",
        "",
        "What counts as *as promised*:",
        "",
    ]
    lines += [f"- {CATEGORIES[k].split(' ', 1)[0]} {v}." for k, v in PROMISES.items()]
    lines += ["- Controls: valid calls and commands next to the bad ones must run (exit status 0, no "
              "warning); planted payloads must run under plain `pickle.loads`.", "", "Notes:", ""]
    lines += [f"- {note}" for note in NOTES]
    lines += ["", "## By group", "", "| category | group | tried | as promised |", "|---|---|---:|---:|"]
    for key in CATEGORIES:
        for group, tally in s[key]["groups"].items():
            lines.append(f"| {key} | {_md_escape(group)} | {tally['tried']} | {tally['as_promised']} |")
    by_dtype = s["ties"]["losses_finite_by_dtype"]
    if by_dtype:
        names = list(next(iter(by_dtype.values())))
        lines += ["", "Ties, finite loss and gradient per dtype and loss (cases as promised / tried; each case "
                  "is 8 rows of tied logits at one magnitude, untargeted or targeted):", "",
                  "| dtype | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        lines += [f"| {d} | " + " | ".join(row[n] for n in names) + " |" for d, row in by_dtype.items()]
    failed = [r for r in results if not r.ok]
    lines += ["", "## Not as promised", ""]
    if not failed:
        lines.append("None.")
    else:
        lines += [
            f"Python API cases run after `{API_SETUP}`; CLI files: {FILE_RECIPES} (see `make_cli_files`); "
            "tie cases use the logits of `tied_logits(dtype, exponent, seed=exponent + 100)` in the script.",
            "",
            "| category | case | what happened | expected to mention |",
            "|---|---|---|---|",
        ]
        lines += [f"| {r.category} | `{_md_escape(r.case)}` | {_md_escape(r.detail)} "
                  f"| {_md_escape(r.extra.get('expected', ''))} |" for r in failed]
    unnamed = [r for r in results if r.category == "cli" and r.ok and not r.extra.get("names_the_problem", True)]
    if unnamed:
        lines += ["", "CLI errors that are clear but do not name the offending option or file:", "",
                  "| case | error line | expected to mention |", "|---|---|---|"]
        lines += [f"| `{_md_escape(r.case)}` | {_md_escape(r.detail)} | `{_md_escape(r.extra['expected'])}` |"
                  for r in unnamed]
    lines.append("")
    return "\n".join(lines)


def to_json(report: dict) -> str:
    """The report as JSON, one result per line (a few hundred of them)."""
    head = {k: v for k, v in report.items() if k != "results"}
    text = json.dumps(head, indent=1, default=str)
    rows = ",\n".join("  " + json.dumps(r, default=str) for r in report["results"])
    return text[: -len("\n}")] + ',\n "results": [\n' + rows + "\n ]\n}\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "docs" / "benchmarks",
                        help="where reliability.json and reliability.md go")
    parser.add_argument("--only", default=None, help="comma-separated subset of api,cli,state,ties,planted (a smoke run)")
    args = parser.parse_args(argv)
    args.only = set(CATEGORIES) if args.only is None else {c.strip() for c in args.only.split(",")}
    unknown = args.only - set(CATEGORIES)
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}; choose from {', '.join(CATEGORIES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.perf_counter()
    machine = machine_info()
    results: list[Result] = []
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mifpe-reliability-") as tmp:
        root = Path(tmp)
        steps = {"api": run_api, "cli": lambda: run_cli_category(root / "cli"), "state": run_state,
                 "ties": run_ties, "planted": lambda: run_planted(root / "planted")}
        (root / "cli").mkdir()
        (root / "planted").mkdir()
        for key, step in steps.items():
            if key not in args.only:
                continue
            tic = time.perf_counter()
            rows = step()
            seconds[key] = time.perf_counter() - tic
            results += rows
            cases = [r for r in rows if not _is_control(r)]
            log(f"{CATEGORIES[key]}: {sum(r.ok for r in cases)}/{len(cases)} as promised, controls "
                f"{sum(r.ok for r in rows if _is_control(r))}/{len(rows) - len(cases)} ({seconds[key]:.1f} s)")
    elapsed = time.perf_counter() - started
    report = {
        "machine": machine,
        "numpy_version": np.__version__,
        "command": "OMP_NUM_THREADS=1 python benchmarks/reliability.py"
                   + (f" --only {','.join(sorted(args.only))}" if args.only != set(CATEGORIES) else ""),
        "argv": sys.argv[1:] if argv is None else argv,
        "api_setup": API_SETUP,
        "cli_files": FILE_RECIPES,
        "payloads": list(payloads(Path("marker"))),
        "summary": summarise(results),
        "seconds_per_category": seconds,
        "wall_seconds": elapsed,
        # every case, except the passing tie-loss cases (counted in the summary): a few thousand rows
        "results": [asdict(r) for r in results if not (r.group == "losses finite" and r.ok)],
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "reliability.json").write_text(to_json(report))
    markdown = render_markdown(report)
    (args.out_dir / "reliability.md").write_text(markdown)
    print(markdown)
    log(f"wrote {args.out_dir / 'reliability.json'} and {args.out_dir / 'reliability.md'} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
