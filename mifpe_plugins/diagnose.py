"""The floating-point audit of a model: is its robustness real, or an artifact of the attack's
arithmetic? The MIFPE paper's Figures 2-8 and the PGD++ paper's gradient-masking tables and
CLEVER comparison, as analyses of any model (``mifpe diagnose``).

Every analysis is a function returning a JSON-ready dict; :func:`diagnose` runs them all and
:func:`write_diagnosis` writes ``report.md``, ``report.json`` and one PNG per figure.
"""

from __future__ import annotations

import copy
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from .attacks import fgsm, pgd
from .losses import get_loss, mifpe, tempered, top_margin
from .numerics import percent_underflowing, underflow_threshold
from .papers import PAPER_CLEVER, PAPER_PGDPP
from .progress import bar, keep_partial
from .reports import SCHEMA_VERSION, markdown_table, write_files

__all__ = [
    "DTYPES", "Budget", "clever", "convergence_and_margins", "diagnose", "fnz_pgd", "ft_pgd", "gradient_relative_error",
    "margin_distribution", "pgdpp_comparison", "softmax_gradient_error", "verdict", "write_diagnosis",
    "zero_gradient_ratio",
]

#: The precisions of the audit, by name.
DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class Budget:
    """How much work the audit does.

    ``quick`` is the few-minutes audit of a SmallCNN on 2 CPU cores; the default is the full one.
    ``samples`` is how many samples ``mifpe diagnose`` audits when ``--n`` is not given.
    """

    samples: int = 500
    steps: int = 100
    pgdpp_steps: int = 20
    temperatures: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
    error_temperatures: tuple[float, ...] = tuple(10 ** (k / 4) for k in range(-12, 13))
    clever_samples: int = 5
    clever_batches: int = 50
    trajectories: int = 8

    @classmethod
    def quick(cls) -> Budget:
        return cls(
            samples=200, steps=20, pgdpp_steps=10, temperatures=(0.1, 1.0, 10.0, 100.0, 1000.0),
            error_temperatures=tuple(10 ** (k / 2) for k in range(-6, 7)), clever_samples=2, clever_batches=5,
        )


def _cast(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    # A copy: the caller's model keeps its dtype, mode and parameters.
    return copy.deepcopy(model).to(dtype).eval()


def _batched_logits(model: Callable[[Tensor], Tensor], x: Tensor, batch_size: int = 500) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(chunk) for chunk in x.split(batch_size)])


def _accuracy(model: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> Tensor:
    return _batched_logits(model, x).argmax(1) == y


def _share(mask: Tensor, among: Tensor | None = None) -> float:
    if among is not None:
        mask = mask[among]
    return 100 * float(mask.float().mean()) if mask.numel() else float("nan")


# ----------------------------------------------------------------------------------------------
# Fig. 2: the margin distribution, and the zero-gradient ratio
# ----------------------------------------------------------------------------------------------


def margin_distribution(model: nn.Module, x: Tensor, y: Tensor) -> dict:
    """Top-1 minus top-2 logit gap Delta of correctly classified samples (MIFPE Fig. 2), computed
    in float64, and the share of them at or above lambda of each precision."""
    logits = _batched_logits(_cast(model, torch.float64), x.double())
    correct = logits.argmax(1) == y
    delta = top_margin(logits)[correct]
    return {
        "n_correct": int(correct.sum()),
        "delta": delta.tolist(),
        "lambda": {name: underflow_threshold(dtype) for name, dtype in DTYPES.items()},
        "share_above_lambda": {name: percent_underflowing(delta, dtype) if delta.numel() else float("nan")
                               for name, dtype in DTYPES.items()},
        "median": float(delta.median()) if delta.numel() else float("nan"),
    }


def zero_gradient_ratio(model: nn.Module, x: Tensor, y: Tensor, dtypes: Sequence[str] = tuple(DTYPES)) -> dict:
    """Share of correctly classified samples whose CE input gradient is exactly zero, per precision.

    A zero gradient means softmax rounded to one-hot: FGSM and CE-PGD cannot move that sample.
    """
    out = {}
    for name in dtypes:
        dtype = DTYPES[name]
        cast = _cast(model, dtype)
        inputs = x.to(dtype)
        correct = _accuracy(cast, inputs, y)
        zero = []
        for chunk, labels in zip(inputs.split(250), y.split(250), strict=True):
            chunk = chunk.clone().requires_grad_(True)
            loss = F.cross_entropy(cast(chunk), labels, reduction="sum")
            (grad,) = torch.autograd.grad(loss, chunk)
            zero.append((grad.flatten(1) == 0).all(1))
        zero_mask = torch.cat(zero)
        out[name] = {"zero_ratio": _share(zero_mask, correct), "n_correct": int(correct.sum())}
    return out


# ----------------------------------------------------------------------------------------------
# Fig. 3: relative error of the gradient vs the scaled margin T
# ----------------------------------------------------------------------------------------------


def softmax_gradient_error(temperatures: Sequence[float], dtype: torch.dtype, classes: int = 2) -> list[float]:
    """Relative error of d CE(z', y) / d z' in ``dtype`` against float64, for logits
    ``z' = (T, 0, ..., 0)`` with y the top class: the K = 2 analysis of MIFPE Fig. 3.

    The gradient is ``p' - e_y``; once ``T`` exceeds lambda of ``dtype`` the other
    probabilities underflow to 0 and the error is 100 %.
    """
    errors = []
    for t in temperatures:
        grads = {}
        for kind in (torch.float64, dtype):
            z = torch.zeros(1, classes, dtype=kind)
            z[0, 0] = t
            z.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(z, torch.zeros(1, dtype=torch.long)), z)
            grads[kind] = grad.double()
        reference = grads[torch.float64]
        errors.append(float((grads[dtype] - reference).norm() / reference.norm()))
    return errors


def gradient_relative_error(
    model: nn.Module, x: Tensor, y: Tensor, temperatures: Sequence[float], dtypes: Sequence[str] = ("float16", "float32"),
) -> dict:
    """Median relative error ``||g_d - g_64|| / ||g_64||`` of the input gradient of
    ``CE(T z / Delta_detach, y)`` (FT-PGD's loss) computed in each dtype, against float64, per T.

    Only samples correctly classified in float64 count. The K = 2 analytic curve
    (:func:`softmax_gradient_error`) is reported beside it.
    """
    reference_model = _cast(model, torch.float64)
    x64 = x.double()
    correct = _accuracy(reference_model, x64, y)
    xs, ys = x64[correct], y[correct]
    out: dict = {"temperatures": list(temperatures), "n": int(correct.sum()), "model": {}, "k2": {}}
    if xs.shape[0] == 0:
        return out

    def input_gradient(net: nn.Module, inputs: Tensor, t: float) -> Tensor:
        inputs = inputs.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(mifpe(t)(net(inputs), ys).sum(), inputs)
        return grad.double().flatten(1)

    references = {t: input_gradient(reference_model, xs, t) for t in temperatures}
    for name in dtypes:
        cast = _cast(model, DTYPES[name])
        medians = []
        for t in temperatures:
            grad = input_gradient(cast, xs.to(DTYPES[name]), t)
            ref = references[t]
            norm = ref.norm(dim=1)
            ok = norm > 0
            error = (grad - ref).norm(dim=1)[ok] / norm[ok]
            medians.append(float(error.median()) if error.numel() else float("nan"))
        out["model"][name] = medians
        out["k2"][name] = softmax_gradient_error(temperatures, DTYPES[name])
    return out


# ----------------------------------------------------------------------------------------------
# Fig. 4-6: FT-PGD and FNZ-PGD
# ----------------------------------------------------------------------------------------------


def _robust(model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, clean: Tensor) -> float:
    return _share(clean & _accuracy(model, x_adv, y))


def ft_pgd(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, steps: int, temperatures: Sequence[float],
    dtypes: Sequence[str] = tuple(DTYPES), seed: int = 0, bar: tqdm | None = None,
) -> dict:
    """Robust accuracy of FT-PGD (PGD on ``CE(T z / Delta_detach)``, MIFPE Fig. 4) per T, in each
    precision (Fig. 5), with CE-PGD per precision as the baseline."""
    out: dict = {"temperatures": list(temperatures), "robust_accuracy": {}, "ce": {}}
    for name in dtypes:
        cast = _cast(model, DTYPES[name])
        inputs = x.to(DTYPES[name])
        clean = _accuracy(cast, inputs, y)
        row = []
        for loss in [*(mifpe(t) for t in temperatures), get_loss("ce")]:
            generator = torch.Generator(device=x.device).manual_seed(seed)
            x_adv = pgd(cast, inputs, y, eps=eps, steps=steps, loss=loss, generator=generator)
            row.append(_robust(cast, inputs, y, x_adv, clean))
            if bar is not None:
                bar.update()
        out["robust_accuracy"][name], out["ce"][name] = row[:-1], row[-1]
    return out


def fnz_pgd(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, steps: int, seed: int = 0, bar: tqdm | None = None,
) -> dict:
    """Robust accuracy of FNZ-PGD (only the top n logits survive, MIFPE Fig. 6) for n = 1..K-1,
    with CE, C&W and DLR PGD as baselines."""
    clean = _accuracy(model, x, y)
    classes = int(_batched_logits(model, x[:1]).shape[1])
    counts = list(range(1, classes))
    out: dict = {"n_logits": counts, "robust_accuracy": [], "baselines": {}}
    for loss in [*(f"fnz-{n}" for n in counts), "ce", "cw", "dlr", "mifpe"]:
        if loss == "dlr" and classes < 3:
            continue
        generator = torch.Generator(device=x.device).manual_seed(seed)
        value = _robust(model, x, y, pgd(model, x, y, eps=eps, steps=steps, loss=loss, generator=generator), clean)
        if loss.startswith("fnz-"):
            out["robust_accuracy"].append(value)
        else:
            out["baselines"][loss] = value
        if bar is not None:
            bar.update()
    return out


# ----------------------------------------------------------------------------------------------
# Fig. 7-8: convergence and margin trajectories
# ----------------------------------------------------------------------------------------------


def convergence_and_margins(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, steps: int, losses: Sequence[str] = ("ce", "cw", "dlr", "mifpe"),
    trajectories: int = 8, seed: int = 0, bar: tqdm | None = None,
) -> dict:
    """Share of still-robust samples after each PGD iteration per loss (MIFPE Fig. 7), and the
    margin Z = z_y - max_{i != y} z_i over the iterations for samples that CE-PGD fails on and
    MIFPE-PGD fools (Fig. 8)."""
    clean = _accuracy(model, x, y)
    curves, margins, fooled = {}, {}, {}
    for loss in losses:
        robust_after, margin_after = [], []

        def record(info, robust_after=robust_after, margin_after=margin_after) -> None:
            robust_after.append(clean & ~info.success)
            margin_after.append(info.margin)

        generator = torch.Generator(device=x.device).manual_seed(seed)
        pgd(model, x, y, eps=eps, steps=steps, loss=loss, generator=generator, callback=record)
        stacked = torch.stack(robust_after)  # (steps, B)
        curves[loss] = [_share(step) for step in stacked]
        margins[loss] = torch.stack(margin_after).double()
        fooled[loss] = ~stacked[-1] & clean
        if bar is not None:
            bar.update()
    out: dict = {"iterations": list(range(1, steps + 1)), "robust_share": curves, "trajectories": {}}
    if "ce" in margins and "mifpe" in margins:
        chosen = (fooled["mifpe"] & ~fooled["ce"]).nonzero().flatten()
        out["n_ce_fails_mifpe_fools"] = int(chosen.numel())
        chosen = chosen[:trajectories]
        out["trajectories"] = {
            "samples": chosen.tolist(),
            "ce": margins["ce"][:, chosen].T.tolist(),
            "mifpe": margins["mifpe"][:, chosen].T.tolist(),
        }
        if chosen.numel():
            out["ce_final_margin_median"] = float(margins["ce"][-1, chosen].median())
    return out


# ----------------------------------------------------------------------------------------------
# PGD++ and CLEVER
# ----------------------------------------------------------------------------------------------


def pgdpp_attacks(*, eps: float, l2_eps: float, steps: int) -> dict[tuple[str, str], tuple[str, dict]]:
    """The PGD++ paper's Tables 2-5 protocol: (norm, label) -> (attack, keyword arguments) for FGSM
    and PGD with CE, NJS, HNS and the beta = 0.1 heuristic, L-inf and L2 (plain PGD, constant step
    eps/4 (L-inf) or eps/8 (L2), ``steps`` iterations, the last iterate)."""
    losses = {"CE": "ce", "NJS": "njs", "HNS": "hns", "beta = 0.1": tempered("ce", 0.1)}
    protocol = {}
    for norm, radius, step in (("linf", eps, eps / 4), ("l2", l2_eps, l2_eps / 8)):
        for label, loss in losses.items():
            protocol[norm, f"FGSM {label}"] = ("fgsm", {"eps": radius, "norm": norm, "loss": loss})
            protocol[norm, f"PGD {label}"] = ("pgd", {"eps": radius, "norm": norm, "loss": loss, "steps": steps, "step_size": step,
                                                      "schedule": "constant", "momentum": None, "keep_best": False})
    return protocol


def pgdpp_comparison(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, l2_eps: float, steps: int, seed: int = 0,
    bar: tqdm | None = None, into: dict | None = None,
) -> dict:
    """Robust accuracy under every attack of :func:`pgdpp_attacks`. ``into``, when given, is filled
    and returned, one result at a time, so a caller keeps the finished ones if the rest is
    interrupted."""
    clean = _accuracy(model, x, y)
    out: dict = into if into is not None else {}
    out.update({"eps": {"linf": eps, "l2": l2_eps}, "steps": steps, "linf": {}, "l2": {}})
    for (norm, label), (attack, kwargs) in pgdpp_attacks(eps=eps, l2_eps=l2_eps, steps=steps).items():
        generator = torch.Generator(device=x.device).manual_seed(seed)
        x_adv = (fgsm if attack == "fgsm" else pgd)(model, x, y, generator=generator, **kwargs)
        out[norm][label] = _robust(model, x, y, x_adv, clean)
        if bar is not None:
            bar.update()
    return out


def clever(model: nn.Module, x: Tensor, *, samples: int, batches: int, seed: int = 0) -> dict:
    """Mean CLEVER score (ART ``clever_u``, L1, radius 5) of softmax(beta z) with beta = 1, 0.01,
    NJS and HNS: the PGD++ paper's Table 11, through the ART adapter."""
    from .clever import clever_comparison

    inputs = x[:samples].float()
    classes = int(_batched_logits(model, inputs[:1]).shape[1])
    result = clever_comparison(
        _cast(model, torch.float32), inputs, nb_classes=classes, input_shape=tuple(inputs.shape[1:]),
        nb_batches=batches, batch_size=10, radius=5.0, norm=1, seed=seed, njs_samples=min(100, inputs.shape[0]),
    )
    return {"samples": int(inputs.shape[0]), "nb_batches": batches, "means": result.means(),
            "paper_bnn_wq_waq": {k: list(v) for k, v in PAPER_CLEVER.items()}}


# ----------------------------------------------------------------------------------------------
# The verdict
# ----------------------------------------------------------------------------------------------


def verdict(report: dict) -> str:
    """One paragraph: how many points CE-PGD overestimates, and which mechanism the numbers point
    to (underflow, rounding near the boundary, vanishing gradients through the network)."""
    dtype = report["dtype"]
    fnz = report["fnz_pgd"]
    ce = fnz["baselines"]["ce"]
    candidates = {f"{name.upper()}-PGD": value for name, value in fnz["baselines"].items()}
    candidates.update({f"FNZ-PGD (n={n})": v for n, v in zip(fnz["n_logits"], fnz["robust_accuracy"], strict=True)})
    if dtype in report["ft_pgd"]["robust_accuracy"]:
        for t, v in zip(report["ft_pgd"]["temperatures"], report["ft_pgd"]["robust_accuracy"][dtype], strict=True):
            candidates[f"FT-PGD (T={t:g})"] = v
    for label, value in report["pgdpp"]["linf"].items():
        if label.startswith("PGD") and label != "PGD CE":
            candidates[label.replace("PGD ", "PGD++ ") if "NJS" in label or "HNS" in label else label] = value
    best_name = min(candidates, key=candidates.get)
    best = candidates[best_name]
    gap = ce - best
    zero = report["zero_gradient"].get(dtype, {}).get("zero_ratio", 0.0)
    above = report["margins"]["share_above_lambda"].get(dtype, 0.0)
    mifpe_gain = ce - fnz["baselines"]["mifpe"]
    pp = report["pgdpp"]["linf"]
    pp_gain = pp["PGD CE"] - min(pp["PGD NJS"], pp["PGD HNS"])
    sentences = [
        f"CE-PGD-{report['steps']} reports {ce:.1f} % robust accuracy in {dtype} at eps = {report['eps']:g}; the "
        f"strongest attack of this audit, {best_name}, reports {best:.1f} %: CE-PGD overestimates robustness "
        f"by {gap:.1f} points."
    ]
    if gap < 0.5:
        sentences.append("That is within noise: the CE-based number holds up, and no floating-point mechanism is at work.")
        return " ".join(sentences)
    if zero >= 10:
        sentences.append(
            f"The main mechanism is **underflow**: {above:.1f} % of the correctly classified samples have a top-2 logit "
            f"gap of at least lambda = {underflow_threshold(DTYPES[dtype]):.2f}, and {zero:.1f} % have an exactly zero "
            f"CE input gradient, so FGSM and CE-PGD cannot move them; MIFPE alone recovers {mifpe_gain:.1f} points."
        )
    elif pp_gain > max(mifpe_gain, 0.0) + 1.0:
        sentences.append(
            f"The evidence points to **vanishing gradients through the network**: no gradient underflows "
            f"({zero:.1f} % zero), but the Jacobian-based temperatures of PGD++ gain {pp_gain:.1f} points over "
            f"PGD with CE (MIFPE gains {mifpe_gain:.1f})."
        )
    else:
        traj = report["convergence"]
        detail = ""
        if traj.get("n_ce_fails_mifpe_fools") and "ce_final_margin_median" in traj:
            detail = (f" For the {traj['n_ce_fails_mifpe_fools']} samples CE-PGD fails on and MIFPE-PGD fools, CE leaves the "
                      f"margin Z at a median of {traj['ce_final_margin_median']:.3g}: stuck just on the right side "
                      "of the boundary (Fig. 8).")
        sentences.append(
            f"The evidence points to **rounding error near the decision boundary**: only {zero:.1f} % of the gradients "
            f"are exactly zero, yet MIFPE-PGD gains {mifpe_gain:.1f} points over CE-PGD.{detail}"
        )
    return " ".join(sentences)


# ----------------------------------------------------------------------------------------------
# The whole audit
# ----------------------------------------------------------------------------------------------


@dataclass
class Audit:
    """What :func:`diagnose` needs besides the model and the data."""

    eps: float
    l2_eps: float
    budget: Budget = field(default_factory=Budget)
    dtypes: tuple[str, ...] = tuple(DTYPES)
    seed: int = 0
    clever: bool = True
    show_progress: bool = True


def diagnose(model: nn.Module, x: Tensor, y: Tensor, audit: Audit, *, header: dict | None = None) -> dict:
    """Run every analysis on ``(x, y)`` and return the report (see :func:`write_diagnosis`),
    which starts with ``header`` (provenance).

    ``model`` is used in its own dtype for the single-precision analyses (FNZ-PGD, convergence,
    PGD++, CLEVER in float32) and copied into each of ``audit.dtypes`` for the per-precision
    ones; the caller's model, inputs and RNG are not changed. If the audit is stopped (Ctrl-C or
    an error), the exception carries the analyses finished so far as ``partial_report``.
    """
    with torch.no_grad():
        logits = model(x[:2])
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"model must return logits of shape (batch, classes >= 2), got {tuple(logits.shape)}")
    if x.shape[0] == 0:
        raise ValueError("n must be >= 1: there is nothing to audit")
    budget = audit.budget
    classes = int(logits.shape[1])
    dtype_name = str(x.dtype).removeprefix("torch.")
    # Attack runs, the bar's unit: FT-PGD (temperatures and CE per precision), FNZ-PGD (n = 1..K-1 and
    # 4 baselines, DLR only for K >= 3), convergence (4 losses), PGD++ (FGSM and PGD x 4 losses x 2 norms).
    attacks = (len(budget.temperatures) + 1) * len(audit.dtypes) + classes - 1 + (4 if classes >= 3 else 3) + 4 + 16
    report: dict = {**(header or {}), "eps": audit.eps, "steps": budget.steps, "n": int(y.numel()), "dtype": dtype_name,
                    "classes": classes}
    with keep_partial(report, lambda: "margins" in report), \
            bar(total=attacks, desc="diagnose", enabled=audit.show_progress, unit="attack") as progress:
        analyses = {
            "margins": lambda: margin_distribution(model, x, y),
            "zero_gradient": lambda: zero_gradient_ratio(model, x, y, audit.dtypes),
            "gradient_error": lambda: gradient_relative_error(model, x, y, budget.error_temperatures,
                                                              [d for d in audit.dtypes if d != "float64"]),
            "ft_pgd": lambda: ft_pgd(model, x, y, eps=audit.eps, steps=budget.steps, temperatures=budget.temperatures,
                                     dtypes=audit.dtypes, seed=audit.seed, bar=progress),
            "fnz_pgd": lambda: fnz_pgd(model, x, y, eps=audit.eps, steps=budget.steps, seed=audit.seed, bar=progress),
            "convergence": lambda: convergence_and_margins(model, x, y, eps=audit.eps, steps=budget.steps,
                                                           trajectories=budget.trajectories, seed=audit.seed, bar=progress),
            "pgdpp": lambda: pgdpp_comparison(model, x, y, eps=audit.eps, l2_eps=audit.l2_eps, steps=budget.pgdpp_steps,
                                              seed=audit.seed, bar=progress),
            "clever": lambda: clever(model, x, samples=budget.clever_samples, batches=budget.clever_batches, seed=audit.seed),
        }
        for key, run in analyses.items():
            if key != "clever" or audit.clever:
                progress.set_description(f"diagnose: {key}")
                report[key] = run()
    report["verdict"] = verdict(report)
    return report


# ----------------------------------------------------------------------------------------------
# Writing the report
# ----------------------------------------------------------------------------------------------


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the figures of `mifpe diagnose` need matplotlib: pip install matplotlib (in a checkout of "
                          "mifpe_plugins: pip install -e \".[diagnose]\")") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_COLOURS = {"float16": "tab:red", "float32": "tab:blue", "float64": "tab:green"}


def _labelled(fig, ax, xlabel: str, ylabel: str, *, xscale: str | None = None, yscale: str | None = None):
    """The figures' common finish: axis labels, log scales where asked, a small legend."""
    if xscale:
        ax.set_xscale(xscale)
    if yscale:
        ax.set_yscale(yscale)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return fig


def _fig_margins(plt, margins: dict):
    fig, ax = plt.subplots(figsize=(6.4, 4))
    delta = [d for d in margins["delta"] if d > 0]
    if delta:
        low, high = math.log10(min(delta)), math.log10(max(max(delta), 800))
        bins = [10 ** (low + (high - low) * k / 40) for k in range(41)]
        ax.hist(delta, bins=bins, color="0.6")
    for name, lam in margins["lambda"].items():
        ax.axvline(lam, color=_COLOURS[name], linestyle="--",
                   label=f"λ {name} = {lam:.1f} ({margins['share_above_lambda'][name]:.1f} % above)")
    return _labelled(fig, ax, "Δ = z_π1 − z_π2 (correctly classified samples)", "samples", xscale="log")


def _fig_relative_error(plt, error: dict):
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, values in error["model"].items():
        ax.plot(error["temperatures"], [100 * v for v in values], "o-", color=_COLOURS[name], label=f"model input gradient, {name}")
        ax.plot(error["temperatures"], [100 * v for v in error["k2"][name]], ":", color=_COLOURS[name], label=f"K = 2 softmax factor, {name}")
        ax.axvline(underflow_threshold(DTYPES[name]), color=_COLOURS[name], alpha=0.3)
    return _labelled(fig, ax, "T (scaled margin the softmax sees)", "relative error vs float64 (%)", xscale="log", yscale="log")


def _fig_ft_pgd(plt, ft: dict):
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, values in ft["robust_accuracy"].items():
        ax.plot(ft["temperatures"], values, "o-", color=_COLOURS[name], label=f"FT-PGD {name}")
        ax.axhline(ft["ce"][name], color=_COLOURS[name], linestyle=":", label=f"CE-PGD {name}")
    return _labelled(fig, ax, "T", "robust accuracy (%)", xscale="log")


def _fig_fnz_pgd(plt, fnz: dict):
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(fnz["n_logits"], fnz["robust_accuracy"], "o-", color="k", label="FNZ-PGD")
    for (name, value), style in zip(fnz["baselines"].items(), ("--", "-.", ":", (0, (5, 1))), strict=False):
        ax.axhline(value, linestyle=style, color="0.4", label=f"{name.upper()}-PGD")
    return _labelled(fig, ax, "n (logit elements that survive)", "robust accuracy (%)")


def _fig_convergence(plt, conv: dict):
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, values in conv["robust_share"].items():
        ax.plot(conv["iterations"], values, label=name.upper())
    return _labelled(fig, ax, "iteration", "still robust (%)")


def _fig_trajectories(plt, conv: dict):
    traj = conv.get("trajectories") or {}
    fig, ax = plt.subplots(figsize=(6.4, 4))
    if traj.get("samples"):
        for k, _ in enumerate(traj["samples"]):
            ax.plot(conv["iterations"], traj["ce"][k], color="tab:blue", alpha=0.7, label="CE" if k == 0 else None)
            ax.plot(conv["iterations"], traj["mifpe"][k], color="tab:orange", alpha=0.7, label="MIFPE" if k == 0 else None)
        ax.axhline(0, color="k", linewidth=0.8)
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no sample that CE-PGD fails on and MIFPE-PGD fools", ha="center", transform=ax.transAxes)
    ax.set_xlabel("iteration")
    ax.set_ylabel("Z = z_y − max_{i≠y} z_i")
    return fig


def _fig_pgdpp(plt, pp: dict):
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
    for ax, norm in zip(axes, ("linf", "l2"), strict=True):
        labels = list(pp[norm])
        ax.bar(range(len(labels)), [pp[norm][k] for k in labels], color=["0.5" if "CE" in k else "tab:purple" for k in labels])
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{'L∞' if norm == 'linf' else 'L2'}, eps = {pp['eps'][norm]:g}")
    axes[0].set_ylabel("robust accuracy (%)")
    return fig


#: report key -> figure file, title, drawing function (from that key's analysis).
_FIGURES = (
    ("margins", "fig2_margins.png", "Logit margin distribution (MIFPE Fig. 2)", _fig_margins),
    ("gradient_error", "fig3_relative_error.png", "Gradient relative error vs T (MIFPE Fig. 3)", _fig_relative_error),
    ("ft_pgd", "fig4_5_ft_pgd.png", "FT-PGD: robust accuracy vs T per precision (MIFPE Fig. 4, 5)", _fig_ft_pgd),
    ("fnz_pgd", "fig6_fnz_pgd.png", "FNZ-PGD: robust accuracy vs n (MIFPE Fig. 6)", _fig_fnz_pgd),
    ("convergence", "fig7_convergence.png", "Convergence of PGD per loss (MIFPE Fig. 7)", _fig_convergence),
    ("convergence", "fig8_margins.png", "Margin trajectories, CE fails / MIFPE fools (MIFPE Fig. 8)", _fig_trajectories),
    ("pgdpp", "pgdpp.png", "FGSM / PGD vs FGSM++ / PGD++ (PGD++ paper, Tables 2-5)", _fig_pgdpp),
)


def _figures(report: dict) -> dict[str, tuple[str, bytes]]:
    """The figures of the analyses ``report`` holds: file name -> (title, PNG bytes)."""
    plt = _pyplot()
    files: dict[str, tuple[str, bytes]] = {}
    for key, name, title, draw in _FIGURES:
        if key in report:
            fig = draw(plt, report[key])
            fig.suptitle(title)
            fig.tight_layout()
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=110)
            plt.close(fig)
            files[name] = (title, buffer.getvalue())
    return files


def _markdown(report: dict, figures: dict[str, str]) -> str:
    if "verdict" in report:
        lead = f"**Verdict.** {report['verdict']}"
    else:
        lead = (f"**Partial audit: {report.get('interrupted', 'interrupted')}.** No verdict; the sections below are "
                "the analyses that finished, and they are final.")
    lines = [f"# Floating-point audit of {report.get('model', 'a model')}", "", lead, ""]
    lines += [f"{report['n']} samples, {report['dtype']}, L∞ eps = {report['eps']:g}, PGD {report['steps']} iterations."]
    if "command" in report:
        lines += ["", f"`{report['command']}` — {report.get('machine', '')}, {report.get('date', '')}, commit {report.get('commit')}."]
    if "margins" in report:
        m, zero = report["margins"], report.get("zero_gradient", {})
        lines += ["", "## Margins and underflow (Fig. 2)", "", *markdown_table(
            ["precision", "λ", "Δ ≥ λ (% of correct)", "exactly zero CE gradient (%)"],
            [[name, f"{lam:.2f}", m["share_above_lambda"][name], zero.get(name, {}).get("zero_ratio")]
             for name, lam in m["lambda"].items()], digits=1)]
    if "ft_pgd" in report:
        ft = report["ft_pgd"]
        lines += ["", "## FT-PGD: robust accuracy vs T (Fig. 4, 5)", "", *markdown_table(
            ["precision", *(f"T={t:g}" for t in ft["temperatures"]), "CE"],
            [[name, *values, ft["ce"][name]] for name, values in ft["robust_accuracy"].items()], digits=1)]
    if "fnz_pgd" in report:
        fnz = report["fnz_pgd"]
        lines += ["", "## FNZ-PGD: robust accuracy vs n (Fig. 6)", "", *markdown_table(
            [*(f"n={n}" for n in fnz["n_logits"]), *(k.upper() for k in fnz["baselines"])],
            [[*fnz["robust_accuracy"], *fnz["baselines"].values()]], digits=1)]
    if "convergence" in report:
        conv = report["convergence"]
        steps = len(conv["iterations"])
        picks = (0, max(steps // 10 - 1, 0), max(steps // 2 - 1, 0), -1)
        lines += ["", "## Convergence (Fig. 7) and margins (Fig. 8)", "", *markdown_table(
            ["loss", "after 1", "after 10 %", "after 50 %", "final"],
            [[name.upper(), *(values[i] for i in picks)] for name, values in conv["robust_share"].items()], digits=1)]
        if "n_ce_fails_mifpe_fools" in conv:
            lines += ["", f"{conv['n_ce_fails_mifpe_fools']} samples survive CE-PGD but not MIFPE-PGD"
                      + (f"; CE leaves their margin Z at a median of {conv['ce_final_margin_median']:.3g}." if "ce_final_margin_median" in conv else ".")]
    if "pgdpp" in report:
        pp = report["pgdpp"]
        lines += ["", f"## PGD++ (PGD++ paper, Tables 2-5; {pp['steps']} iterations)", "",
                  *markdown_table(["attack", "L∞", "L2"], [[label, pp["linf"][label], pp["l2"][label]] for label in pp["linf"]], digits=1)]
        paper_row, paper = PAPER_PGDPP["binarized"]
        lines += ["", f"PGD++ paper for comparison (CIFAR-10 {paper_row}, L∞ 8/255): PGD {paper['PGD']:.2f}, PGD++ NJS "
                  f"{paper['PGD++ NJS']:.2f}, HNS {paper['PGD++ HNS']:.2f}."]
    if "clever" in report:
        c = report["clever"]
        lines += ["", f"## CLEVER (PGD++ paper, Table 11; {c['samples']} samples, {c['nb_batches']} batches of 10, L1, radius 5)", "",
                  *markdown_table(["β rule", "ours", "paper BNN-WQ", "paper BNN-WAQ"],
                                  [[rule, value, *PAPER_CLEVER[rule]] for rule, value in c["means"].items()], digits=4)]
    lines += ["", "## Figures", ""] + [f"![{title}]({name})" for name, title in figures.items()]
    return "\n".join(lines) + "\n"


def write_diagnosis(report: dict, out_dir: str | Path) -> list[Path]:
    """Write ``report.md``, ``report.json`` and one PNG per analysis into ``out_dir``, atomically
    as one set (:func:`mifpe_plugins.reports.write_files`); a partial report (``interrupted``) gets
    the sections and figures of the analyses that finished. The JSON starts with ``schema_version``."""
    figures = _figures(report)
    files = {"report.md": _markdown(report, {name: title for name, (title, _) in figures.items()}),
             "report.json": json.dumps({"schema_version": SCHEMA_VERSION, **report}, indent=1) + "\n", **{name: png for name, (_, png) in figures.items()}}
    return write_files(out_dir, files)
