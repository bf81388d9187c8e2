"""The floating-point audit (`mifpe diagnose`) on tiny models with known answers."""

import json
import math

import pytest
import torch
from conftest import ScaledLinear, make_mlp_data

from mifpe_plugins import diagnose as d
from mifpe_plugins.cli import main
from mifpe_plugins.reports import SCHEMA_VERSION


def between_lambdas(n: int = 16, dim: int = 20, classes: int = 5):
    """A linear model whose every top-logit margin lies in [200, 600]: above lambda(float32) =
    103.28 (and lambda(float16)), below lambda(float64) = 744.44."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(classes, dim, generator=gen, dtype=torch.float64)
    x = 0.25 + 0.5 * torch.rand(50 * n, dim, generator=gen, dtype=torch.float64)
    top2 = (x @ weight.T).topk(2, dim=1).values
    gap = top2[:, 0] - top2[:, 1]
    keep = (gap >= 0.5) & (gap <= 1.5)
    x = x[keep][:n]
    assert x.shape[0] == n
    model = ScaledLinear(weight, 400.0).float().eval()
    return model, x.float(), (x @ weight.T).argmax(1)


@pytest.fixture(scope="module")
def toy():
    return between_lambdas()


def test_zero_ratio_is_one_above_lambda_and_zero_in_float64(toy):
    model, x, y = toy
    ratio = d.zero_gradient_ratio(model, x, y)
    assert ratio["float16"]["zero_ratio"] == 100.0
    assert ratio["float32"]["zero_ratio"] == 100.0
    assert ratio["float64"]["zero_ratio"] == 0.0
    assert ratio["float64"]["n_correct"] == 16
    margins = d.margin_distribution(model, x, y)
    assert margins["share_above_lambda"] == {"float16": 100.0, "float32": 100.0, "float64": 0.0}
    assert len(margins["delta"]) == margins["n_correct"] == 16
    assert model.linear.weight.dtype == torch.float32  # the caller's model is not cast


def test_k2_relative_error_in_float16():
    temperatures = [0.5, 1.0, 2.0, 10.0, 16.0, 18.0, 20.0, 100.0]
    errors = dict(zip(temperatures, d.softmax_gradient_error(temperatures, torch.float16), strict=True))
    # Above lambda = 16.64 (plus ln 2, where a value rounds down to 0 rather than up to the smallest
    # subnormal) the other probability underflows: the whole gradient is lost.
    for t in (18.0, 20.0, 100.0):
        assert errors[t] == pytest.approx(1.0)
    assert errors[16.0] > 10 * errors[1.0]  # subnormal: few significant bits left
    for t in (0.5, 1.0, 2.0):
        assert errors[t] < 1e-2  # orders of magnitude below 100 %
    fp32 = dict(zip(temperatures, d.softmax_gradient_error(temperatures, torch.float32), strict=True))
    # float32: the rounding error grows with T (p_y - 1 cancels) but the gradient survives T = 100 < 103.28
    assert fp32[1.0] < 1e-5 < fp32[10.0] < errors[10.0] and fp32[10.0] < fp32[100.0] < 0.5


def test_gradient_error_on_a_model_grows_past_lambda(toy):
    model, x, y = toy
    out = d.gradient_relative_error(model, x, y, [1.0, 30.0], ["float16", "float32"])
    assert out["n"] == 16 and set(out["model"]) == {"float16", "float32"}
    assert out["model"]["float16"][1] == pytest.approx(1.0)  # T = 30 > 16.64: the fp16 gradient is zero
    assert out["model"]["float16"][0] < 0.1
    # float32 keeps a gradient at T = 30, but 1 - p_y has cancelled: the error grows with T (Fig. 3)
    assert out["model"]["float32"][0] < 1e-3 < out["model"]["float32"][1] < 1.0


def test_attack_analyses_have_the_right_shapes(toy):
    model, x, y = toy
    ft = d.ft_pgd(model, x, y, eps=0.3, steps=5, temperatures=[1.0, 1000.0], dtypes=["float32", "float64"])
    assert set(ft["robust_accuracy"]) == {"float32", "float64"} and len(ft["robust_accuracy"]["float32"]) == 2
    # T = 1 keeps the gradient alive; T = 1000 is far above lambda(float32): FT-PGD freezes like CE
    assert ft["robust_accuracy"]["float32"][0] < ft["robust_accuracy"]["float32"][1]
    assert ft["robust_accuracy"]["float32"][1] == ft["ce"]["float32"]
    fnz = d.fnz_pgd(model, x, y, eps=0.3, steps=5)
    assert fnz["n_logits"] == [1, 2, 3, 4] and len(fnz["robust_accuracy"]) == 4
    assert set(fnz["baselines"]) == {"ce", "cw", "dlr", "mifpe"}
    conv = d.convergence_and_margins(model, x, y, eps=0.3, steps=6, trajectories=3)
    assert all(len(v) == 6 for v in conv["robust_share"].values())
    assert conv["robust_share"]["mifpe"][-1] <= conv["robust_share"]["mifpe"][0]
    assert len(conv["trajectories"]["samples"]) == min(3, conv["n_ce_fails_mifpe_fools"])
    assert all(len(z) == 6 for z in conv["trajectories"]["ce"])
    pp = d.pgdpp_comparison(model, x, y, eps=0.3, l2_eps=1.0, steps=3)
    assert set(pp["linf"]) == set(pp["l2"]) and "PGD NJS" in pp["linf"] and "FGSM beta = 0.1" in pp["l2"]


def test_clever_through_art():
    model, x, _ = make_mlp_data(n=4, dtype=torch.float32)
    out = d.clever(model, x, samples=2, batches=2)
    assert out["samples"] == 2 and set(out["means"]) == {"original", "heuristic", "njs", "hns"}
    assert all(math.isfinite(v) and v > 0 for v in out["means"].values())


def test_cli_diagnose_writes_report_and_figures(tmp_path, capsys):
    model, x, y = between_lambdas(n=10)
    model_path = tmp_path / "toy.ts"
    torch.jit.script(model).save(str(model_path))
    torch.save((x, y), tmp_path / "toy.pt")
    out = tmp_path / "audit"
    assert main(["diagnose", "--model", str(model_path), "--data", str(tmp_path / "toy.pt"), "--quick", "--eps", "0.3",
                 "--steps", "4", "--no-clever", "--out", str(out), "--quiet"]) == 0
    verdict = capsys.readouterr().out
    assert "underflow" in verdict
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] == SCHEMA_VERSION
    assert report["n"] == 10 and report["steps"] == 4 and report["model"] == str(model_path)
    assert report["zero_gradient"]["float32"]["zero_ratio"] == 100.0
    for name in ("fig2_margins.png", "fig3_relative_error.png", "fig4_5_ft_pgd.png", "fig6_fnz_pgd.png",
                 "fig7_convergence.png", "fig8_margins.png", "pgdpp.png", "report.md"):
        assert (out / name).stat().st_size > 1000, name
    assert (out / "report.md").read_text().startswith("# Floating-point audit of")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["diagnose", "--n", "0"], "must be an integer >= 1"),
        (["diagnose", "--dtypes", "float16,float8"], "--dtypes: unknown float8"),
        (["diagnose", "--device", "meta"], "--device meta cannot run"),
    ],
)
def test_cli_diagnose_bad_input(argv, message, capsys):
    with pytest.raises(SystemExit):
        main([*argv, "--quiet"])
    assert message in capsys.readouterr().err


def test_model_with_one_output_is_rejected():
    model = torch.nn.Linear(4, 1)
    with pytest.raises(ValueError, match="classes >= 2"):
        d.diagnose(model, torch.rand(3, 4), torch.zeros(3, dtype=torch.long), d.Audit(eps=0.1, l2_eps=1.0))
