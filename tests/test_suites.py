"""Evaluation suites: stages on the samples still robust, their passes, the sanity flags, AutoAttack beside them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import large_margin_problem, make_mlp_data, tiny_cnn_problem
from torch import nn

from mifpe_plugins.cli import main
from mifpe_plugins.suites import evaluate_suite, get_suite, sanity_check, suite_names
from mifpe_plugins.tables import Evaluation


def test_every_registered_suite_is_valid_and_unknown_names_are_refused():
    assert "fast" in suite_names()
    for name in suite_names():
        assert get_suite(name)
    with pytest.raises(ValueError, match="unknown suite 'fastest'; choose from fast"):
        get_suite("fastest")


def test_each_stage_attacks_only_the_samples_still_robust():
    model, x, y = make_mlp_data(n=48, dtype=torch.float64)
    report = evaluate_suite(Evaluation(model, x, y, eps=0.06, steps=10, batch_size=16, show_progress=False))
    rows, result = report.rows, report.results[("model", "suite fast")]
    accuracies = [r.robust_accuracy for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)  # every stage can only fool more
    clean = report.summary["clean_accuracy"]
    assert rows[0].attacked == round(clean * 48 / 100)
    for stage, before, row in zip(get_suite("fast")[1:], rows[:-1], rows[1:], strict=True):
        survivors = round(before.robust_accuracy * 48 / 100)
        if stage.share == 1:
            assert row.attacked == survivors
        else:  # the share rounded up in each of the 3 chunks
            assert stage.share * survivors <= row.attacked <= stage.share * survivors + 3
    assert result.arrays["gradients"].sum() == sum(r.backward_passes for r in rows) == result.backward_passes
    stage = result.arrays["stage"]
    robust = report.summary["suite_result"]["robust_accuracy"]
    assert robust == accuracies[-1] == pytest.approx(100 * np.mean((stage < 0) & (report.results[("model", "clean")].arrays["prediction"] == y.numpy())))


def test_the_sanity_check_flags_zero_gradients_probabilities_and_randomness():
    model, x, y = large_margin_problem(torch.float32, n=16)
    flags = sanity_check(model, x, y)
    assert flags["zero_gradient_percent"] == 100.0 and not flags["softmax_outputs"] and not flags["random_outputs"]
    assert "run mifpe diagnose" in flags["warnings"][0]
    softmax = nn.Sequential(model, nn.Softmax(dim=1))
    assert sanity_check(softmax, x, y)["softmax_outputs"]

    class Noisy(nn.Module):
        def forward(self, inputs):
            return model(inputs) + torch.randn(inputs.shape[0], 5)

    assert sanity_check(Noisy(), x, y)["random_outputs"]
    mlp, xm, ym = make_mlp_data(n=16, dtype=torch.float64)
    assert sanity_check(mlp, xm, ym)["warnings"] == []


def test_autoattack_beside_the_suite_lists_the_disagreement():
    model, x, y = tiny_cnn_problem(12)
    report = evaluate_suite(Evaluation(model, x, y, eps=0.08, steps=10, batch_size=6, show_progress=False), suite="pgd",
                            autoattack=True)
    summary = report.summary
    ours, theirs = report.results[("model", "suite pgd")], report.results[("model", "AutoAttack standard")]
    suite_robust, aa_robust = ~ours.arrays["success"], ~theirs.arrays["success"]
    assert summary["only_autoattack_fools"] == np.flatnonzero(suite_robust & ~aa_robust).tolist()
    assert summary["only_suite_fools"] == np.flatnonzero(~suite_robust & aa_robust).tolist()
    assert summary["worst_case"] == pytest.approx(100 * np.mean(suite_robust & aa_robust))
    assert summary["suite_result"]["backward_passes"] < summary["autoattack"]["backward_passes"]


def test_mifpe_evaluate_writes_the_suite_report(tmp_path, capsys):
    assert main(["evaluate", "--n", "20", "--batch-size", "10", "--out", str(tmp_path), "--name", "s",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| MIFPE-PGD-100 |" in printed and "run mifpe diagnose" in printed
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["suite"] == "fast" and len(report["rows"]) == len(get_suite("fast"))
    assert report["sanity"]["zero_gradient_percent"] > 50  # the large-margin zoo model underflows in float32
    with pytest.raises(SystemExit):
        main(["evaluate", "--suite", "nope", "--quiet"])
    assert "unknown suite 'nope'; choose from fast" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--steps", "20", "--quiet"])
    assert "--steps does not apply to mifpe evaluate: each stage of the suite 'fast' sets its own" in capsys.readouterr().err


def _with_suites(monkeypatch, **suites):
    from mifpe_plugins import suites as module

    monkeypatch.setattr(module, "_registry", lambda: suites)


def test_a_stage_option_its_attack_does_not_take_is_refused_naming_the_allowed_ones(monkeypatch):
    _with_suites(monkeypatch, bad={"description": "", "stages": [{"name": "S", "attack": "square", "loss": "ce"}]},
                 worse={"description": "", "stages": [{"name": "P", "attack": "pgd2"}]})
    with pytest.raises(ValueError, match="suite 'bad', stage 'S': square takes the options p_init, queries, smallest_margins, start; got loss"):
        get_suite("bad")
    with pytest.raises(ValueError, match="stage 'P': attack must be one of fgsm, pgd, apgd, square, got 'pgd2'"):
        get_suite("worse")


def test_the_search_continues_from_the_smallest_margin_point_of_the_stages_before(monkeypatch):
    pgd_stage = {"name": "PGD-5", "attack": "pgd", "loss": "ce", "steps": 5}
    search = {"name": "Square-20", "attack": "square", "queries": 20, "p_init": 0.05, "start": "smallest_margin"}
    _with_suites(monkeypatch, one={"description": "", "stages": [pgd_stage]},
                 two={"description": "", "stages": [pgd_stage, search]})
    model, x, y = tiny_cnn_problem(24)
    evaluation = Evaluation(model, x, y, eps=0.02, batch_size=8, show_progress=False)
    margins = {}
    for name in ("one", "two"):
        report = evaluate_suite(evaluation, suite=name)
        margins[name] = report.results[("model", f"suite {name}")].arrays["margin"]
    clean = report.results[("model", "clean")].arrays["margin"]
    # The gradient stage's points are kept where they lower the margin, and the search only improves on them.
    assert (margins["one"] <= clean + 1e-6).all() and (margins["one"] < clean).any()
    assert (margins["two"] <= margins["one"] + 1e-6).all() and (margins["two"] < margins["one"]).any()


def test_a_share_of_smallest_margins_attacks_only_the_survivors_closest_to_the_boundary(monkeypatch):
    first = {"name": "PGD-5", "attack": "pgd", "loss": "ce", "steps": 5}
    closest = {"name": "PGD-3 closest", "attack": "pgd", "loss": "mifpe", "steps": 3, "smallest_margins": 0.25}
    _with_suites(monkeypatch, one={"description": "", "stages": [first]},
                 two={"description": "", "stages": [first, closest]})
    model, x, y = tiny_cnn_problem(40, seed=2)
    evaluation = Evaluation(model, x, y, eps=0.01, batch_size=40, show_progress=False)
    one = evaluate_suite(evaluation, suite="one").results[("model", "suite one")]
    two = evaluate_suite(evaluation, suite="two")
    survivors = np.flatnonzero(~one.arrays["success"])
    expected = survivors[np.argsort(one.arrays["margin"][survivors], kind="stable")[:int(np.ceil(0.25 * survivors.size))]]
    gradients = two.results[("model", "suite two")].arrays["gradients"]
    assert two.rows[1].attacked == expected.size > 0
    assert sorted(np.flatnonzero(gradients > one.arrays["gradients"]).tolist()) == sorted(expected.tolist())


@pytest.mark.parametrize(("option", "message"), [
    ({"start": "clean"}, "start must be one of 'smallest_margin', got 'clean'"),
    ({"smallest_margins": 0}, "smallest_margins must be a share in \\(0, 1\\], got 0"),
    ({"smallest_margins": True}, "smallest_margins must be a share in \\(0, 1\\], got True"),
])
def test_the_suites_own_stage_options_are_checked(monkeypatch, option, message):
    _with_suites(monkeypatch, bad={"description": "", "stages": [{"name": "P", "attack": "pgd", **option}]})
    with pytest.raises(ValueError, match=f"suite 'bad', stage 'P': {message}"):
        get_suite("bad")


def test_the_run_logs_robust_accuracy_after_each_stage_as_chunks_finish(tmp_path, capsys):
    assert main(["evaluate", "--n", "20", "--batch-size", "10", "--out", str(tmp_path), "--name", "s"]) == 0
    log = [line for line in capsys.readouterr().err.splitlines() if line.startswith("suite fast: samples")]
    assert [line.split(" done")[0] for line in log] == ["suite fast: samples 0-9", "suite fast: samples 10-19"]
    assert log[-1].startswith("suite fast: samples 10-19 done (20 of 20 attacked by this process): clean ")
    assert all(f"after {stage.name} " in log[-1] for stage in get_suite("fast"))
    report = json.loads((tmp_path / "s.json").read_text())
    final = float(log[-1].rsplit("after Square-3000 ", 1)[1].split(" %")[0])
    assert final == pytest.approx(report["suite_result"]["robust_accuracy"], abs=0.005)
