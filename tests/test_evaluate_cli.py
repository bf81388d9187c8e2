import json

import pytest
import torch
from conftest import large_margin_problem, make_mlp_data

from mifpe_plugins import evaluate, pgd, robust_accuracy
from mifpe_plugins.cli import main


def test_evaluate_batches_equal_one_call():
    model, x, y = make_mlp_data(n=10, dtype=torch.float32)
    whole = evaluate(model, x, y, attack="pgd", eps=0.1, steps=5, batch_size=10, random_start=False, keep_adversarial=True)
    parts = evaluate(model, x, y, attack="pgd", eps=0.1, steps=5, batch_size=3, random_start=False, keep_adversarial=True)
    assert torch.equal(whole.robust_correct, parts.robust_correct)
    torch.testing.assert_close(whole.adversarial, parts.adversarial)
    direct = pgd(model, x, y, eps=0.1, steps=5, random_start=False)
    torch.testing.assert_close(whole.adversarial, direct)


def test_evaluate_reports_accuracy_cost_and_norms():
    model, x, y = large_margin_problem(torch.float32, n=20)
    result = evaluate(model, x, y, attack="pgd", eps=0.3, steps=7, loss="ce", random_start=False, batch_size=8)
    assert result.n == 20 and result.clean_accuracy == 1.0 and result.robust_accuracy == 1.0
    # one gradient per sample per step
    assert result.gradient_evaluations == 20 * 7
    assert result.seconds > 0
    summary = result.summary()
    assert summary["robust_accuracy"] == 100.0 and summary["loss"] == "ce"
    assert float(result.perturbation_norm.max()) <= 0.3 + 1e-6
    mifpe = evaluate(model, x, y, attack="pgd", eps=0.3, steps=7, random_start=False)
    assert mifpe.robust_accuracy < 0.5
    assert robust_accuracy(model, x, y, attack="fgsm", eps=0.3, loss="ce") == 1.0


def test_evaluate_per_sample_eps_and_bad_input():
    model, x, y = make_mlp_data(n=6, dtype=torch.float32)
    eps = torch.tensor([0.0, 0.0, 0.0, 0.2, 0.2, 0.2])
    result = evaluate(model, x, y, attack="apgd", eps=eps, steps=5, batch_size=4)
    assert bool((result.perturbation_norm[:3] == 0).all())
    with pytest.raises(ValueError, match="unknown attack 'cw'"):
        evaluate(model, x, y, attack="cw", eps=0.1)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        evaluate(model, x, y, eps=0.1, batch_size=0)
    empty = evaluate(model, x[:0], y[:0], eps=0.1)
    assert empty.n == 0 and empty.gradient_evaluations == 0


def test_cli_demo_shows_the_boost(tmp_path, capsys):
    argv = ["demo", "--n", "120", "--steps", "20", "--out", str(tmp_path), "--quiet"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "| MIFPE loss |" in table
    stem = "demo-linf-eps0.1-float32-n120-seed0"  # the default name: what the numbers depend on
    report = json.loads((tmp_path / f"{stem}.json").read_text())
    assert report["command"] == "mifpe " + " ".join(argv)  # the command that ran, not sys.argv
    assert [r["attack"] for r in report["rows"]] == ["FGSM", "PGD-20", "APGD_DLR-20"]
    assert report["share_of_margins_above_lambda"] > 50
    pgd_row = report["rows"][1]
    # on a model whose margins exceed lambda, CE-PGD stalls near clean accuracy and MIFPE does not
    assert pgd_row["original"]["robust_accuracy"] >= report["clean_accuracy"] - 5
    assert pgd_row["mifpe"]["robust_accuracy"] < pgd_row["original"]["robust_accuracy"] - 30
    assert (tmp_path / f"{stem}.md").read_text().startswith(f"# {stem}\n")
    assert (tmp_path / f"{stem}.csv").exists()


def test_cli_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--n", "0"])
    assert exit_info.value.code == 2 and "--n/--samples: must be an integer >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--eps=-1"])
    assert exit_info.value.code == 2 and "--eps: must be a number >= 0" in capsys.readouterr().err


def test_python_dash_m_is_the_mifpe_command():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "mifpe_plugins", "table2", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "usage: mifpe table2" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "mifpe_plugins", "table2", "--n", "0"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "--n/--samples: must be an integer >= 1" in bad.stderr
