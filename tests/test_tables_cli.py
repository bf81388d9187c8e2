"""The `mifpe` command's tables end to end, on tiny models and a handful of samples."""

import csv
import json

import numpy as np
import pytest
import torch
from conftest import large_margin_problem

from mifpe_plugins.cli import main
from mifpe_plugins.reports import SCHEMA_VERSION


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    # default output folders (mifpe-results/) land in the test's folder, not the checkout
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def toy_files(tmp_path):
    """A large-margin linear model (every margin > 2 lambda in fp32) as TorchScript, and its data."""
    model, x, y = large_margin_problem(torch.float32, n=12)
    model_path = tmp_path / "toy.ts"
    torch.jit.script(model).save(str(model_path))
    data_path = tmp_path / "toy.npz"
    np.savez(data_path, x=x.numpy(), y=y.numpy())
    return model_path, data_path


def _run(capsys, *argv):
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_table2_structure_and_boost_sign(toy_files, tmp_path, capsys):
    model_path, data_path = toy_files
    out = tmp_path / "out"
    printed = _run(capsys, "table2", "--model", str(model_path), "--data", str(data_path), "--eps", "0.3",
                   "--steps", "10", "--name", "table2-toy", "--out", str(out), "--quiet")
    report = json.loads((out / "table2-toy.json").read_text())
    assert [r["attack"] for r in report["rows"]] == ["FGSM", "PGD-10", "APGD_DLR-10", "AutoAttack"]
    assert report["n"] == 12 and report["eps"] == 0.3 and report["dtype"] == "float32"
    assert report["clean_accuracy"] == 100.0
    assert report["share_of_margins_above_lambda"] == 100.0
    assert report["model_source"]["kind"] == "torchscript"
    rows = {r["attack"]: r for r in report["rows"]}
    # CE's gradient is exactly zero here: FGSM and PGD with CE only get their random start, MIFPE
    # follows the gradient.
    for attack in ("FGSM", "PGD-10"):
        assert rows[attack]["original"]["robust_accuracy"] >= 70
        assert rows[attack]["boost"] > 40
        assert rows[attack]["boost"] == pytest.approx(
            rows[attack]["original"]["robust_accuracy"] - rows[attack]["mifpe"]["robust_accuracy"]
        )
    # DLR and AutoAttack do not underflow, so MIFPE's boost there is small.
    assert rows["AutoAttack"]["original"]["robust_accuracy"] < 50
    assert abs(rows["AutoAttack"]["boost"]) <= 20
    assert rows["PGD-10"]["paper"] == {"attack": "PGD-100", "original": 79.79, "mifpe": 40.06}
    # Markdown, JSON and CSV carry the same table.
    markdown = (out / "table2-toy.md").read_text()
    assert "| MIFPE loss |" in markdown and "| MIFPE loss |" in printed
    assert "The paper's Table 2" in markdown and report["command"].startswith("mifpe table2")
    with open(out / "table2-toy.csv") as handle:
        lines = list(csv.DictReader(handle))
    assert [(line["attack"], line["loss"]) for line in lines] == [
        ("FGSM", "ce"), ("FGSM", "mifpe"), ("PGD-10", "ce"), ("PGD-10", "mifpe"), ("APGD_DLR-10", "dlr"),
        ("APGD_DLR-10", "mifpe"), ("AutoAttack", "standard"), ("AutoAttack", "mifpe")]
    assert float(lines[3]["robust_accuracy"]) == pytest.approx(rows["PGD-10"]["mifpe"]["robust_accuracy"], abs=1e-4)
    assert float(lines[3]["paper_robust_accuracy"]) == 40.06 and lines[3]["interrupted"] == ""


def test_table1_and_table3(toy_files, tmp_path, capsys):
    model_path, data_path = toy_files
    out = tmp_path / "out"
    common = ["--data", str(data_path), "--eps", "0.3", "--steps", "5", "--out", str(out), "--quiet"]
    copy = tmp_path / "copy.ts"
    copy.write_bytes(model_path.read_bytes())
    _run(capsys, "table1", "--models", f"{model_path},{copy}", "--losses", "ce,mifpe", "--no-autoattack", "--name", "table1",
         *common)
    report = json.loads((out / "table1.json").read_text())
    assert len(report["rows"]) == 2 and report["losses"] == ["ce", "mifpe"]
    row = report["rows"][0]
    assert row["pgd"]["ce"]["robust_accuracy"] >= 70
    assert row["worst_case"] <= min(cell["robust_accuracy"] for cell in row["pgd"].values())
    assert "autoattack" not in row

    _run(capsys, "table3", "--model", str(model_path), "--losses", "ce,cw,mifpe", "--name", "table3-toy", *common)
    report = json.loads((out / "table3-toy.json").read_text())
    assert [r["configuration"] for r in report["rows"]] == ["PGD", "+ momentum", "+ step-size schedule"]
    assert report["rows"][0]["momentum"] is None and report["rows"][2]["schedule"] == "linear"
    for r in report["rows"]:
        assert r["results"]["ce"]["robust_accuracy"] >= 70
        assert r["results"]["mifpe"]["robust_accuracy"] < r["results"]["ce"]["robust_accuracy"] - 40
        assert r["paper"]["mifpe"] < r["paper"]["ce"]


def test_table1_puts_the_papers_row_beside_a_zoo_model(capsys, tmp_path):
    _run(capsys, "table1", "--models", "zoo:trades,zoo:standard", "--losses", "ce", "--no-autoattack", "--n", "4",
         "--steps", "1", "--name", "table1", "--out", str(tmp_path), "--quiet")
    rows = {row["model"]: row for row in json.loads((tmp_path / "table1.json").read_text())["rows"]}
    assert rows["zoo:trades"]["paper"]["row"] == "MNIST TRADES, SmallCNN"
    assert rows["zoo:trades"]["paper"]["pgd"]["mifpe"] == 93.67
    assert "paper" not in rows["zoo:standard"]  # no paper row stands in for it


def test_zoo_model_on_bundled_data(capsys, tmp_path):
    # the default command's path: zoo model, bundled data; a few samples and one cheap attack
    printed = _run(capsys, "table2", "--n", "8", "--attacks", "fgsm", "--out", str(tmp_path), "--quiet")
    # the default name says what the numbers depend on: table, model, data, norm and eps, dtype, n
    report = json.loads((tmp_path / "table2-zoo-large-margin-bundled-linf-eps0.1-float32-n8.json").read_text())
    assert report["model"] == "zoo:large-margin" and report["data"] == "bundled" and report["eps"] == 0.1
    assert report["model_source"] == {"kind": "zoo", "name": "large-margin"}
    assert "| FGSM |" in printed


def test_cli_zoo_list(capsys):
    printed = _run(capsys, "zoo", "list")
    for name in ("standard", "large-margin", "pgd-at", "trades", "fast-at", "normalized-logit", "binarized"):
        assert f"zoo:{name}" in printed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["table2", "--model", "zoo:nope"], "unknown zoo model 'nope'; known: binarized, fast-at"),
        (["table2", "--model", "resnet"], "use zoo:<name>"),
        (["table2", "--n", "5000", "--attacks", "fgsm"], "n=5000 is larger than the data (1000 samples)"),
        (["table2", "--n", "0"], "must be an integer >= 1"),
        (["table2", "--eps", "-1"], "must be a number >= 0"),
        (["table2", "--attacks", "fgsm,cw"], "--attacks: unknown cw; choose from fgsm, pgd, apgd, autoattack"),
        (["table2", "--data", "fashion-mnist:/nonexistent"], "apt-get install dataset-fashion-mnist"),
        (["table2", "--data", "cifar10:/nonexistent"], "--download"),
        (["table1", "--losses", "ce,xent"], "xent"),
        (["table1", "--models", "zoo:standard,zoo:standard"], "--models lists zoo:standard more than once"),
        (["table2", "--dtype", "float16", "--device", "meta"], "--device"),
        (["zoo", "train", "nope"], "unknown zoo model 'nope'"),
    ],
)
def test_cli_bad_input_is_a_clear_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_model_with_one_output_is_rejected(tmp_path, capsys):
    model_path = tmp_path / "one.ts"
    torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 1))).save(str(model_path))
    with pytest.raises(SystemExit):
        main(["table2", "--model", str(model_path), "--n", "4", "--attacks", "fgsm", "--quiet"])
    assert "classes >= 2" in capsys.readouterr().err


def test_cli_leaves_the_global_rng_alone(toy_files, tmp_path, capsys):
    model_path, data_path = toy_files
    state = torch.get_rng_state()
    _run(capsys, "table2", "--model", str(model_path), "--data", str(data_path), "--eps", "0.3", "--steps", "3",
         "--attacks", "fgsm,pgd,apgd", "--out", str(tmp_path), "--quiet")
    assert torch.equal(state, torch.get_rng_state())


def test_pgdpp_table(toy_files, tmp_path, capsys):
    model_path, data_path = toy_files
    out = tmp_path / "out"
    _run(capsys, "pgdpp", "--models", str(model_path), "--data", str(data_path), "--eps", "0.3", "--l2-eps", "1.0",
         "--steps", "5", "--clever-samples", "2", "--clever-batches", "2", "--name", "pgdpp", "--out", str(out), "--quiet")
    report = json.loads((out / "pgdpp.json").read_text())
    row = report["rows"][0]
    assert report["columns"] == list(row["results"]) and "PGD++ NJS" in row["results"] and "L2 PGD++ HNS" in row["results"]
    # CE's gradient is zero on this model; the PGD++ temperatures bring it back
    assert row["results"]["PGD++ NJS"] < row["results"]["PGD"] - 40
    assert row["results"]["PGD++ HNS"] < row["results"]["PGD"] - 40
    assert set(row["clever"]) == {"original", "heuristic", "njs", "hns"}
    with open(out / "pgdpp.csv") as handle:
        lines = list(csv.DictReader(handle))
    assert [(line["attack"], line["loss"]) for line in lines[:2]] == [("FGSM", "ce"), ("FGSM", "beta = 0.1")]
    assert len(lines) == len(report["columns"])  # one model: one line per column of the Markdown table
    njs = next(line for line in lines if (line["attack"], line["loss"]) == ("L2 PGD", "njs"))
    assert float(njs["robust_accuracy"]) == pytest.approx(row["results"]["L2 PGD++ NJS"], abs=1e-4)


_NUMERIC = ("robust_accuracy", "clean_accuracy", "paper_robust_accuracy", "n", "seconds", "forward_passes", "backward_passes")


def test_csv_is_tidy_numbers_and_json_has_a_schema_version(toy_files, tmp_path, capsys):
    model_path, data_path = toy_files
    copy = tmp_path / "copy.ts"
    copy.write_bytes(model_path.read_bytes())
    out = tmp_path / "out"
    _run(capsys, "table1", "--models", f"{model_path},{copy}", "--losses", "ce,mifpe", "--no-autoattack", "--data",
         str(data_path), "--eps", "0.3", "--steps", "3", "--name", "table1", "--out", str(out), "--quiet")
    report = json.loads((out / "table1.json").read_text())
    assert report["schema_version"] == SCHEMA_VERSION
    with open(out / "table1.csv") as handle:
        reader = csv.DictReader(handle)
        lines = list(reader)
    assert reader.fieldnames == ["model", "attack", "loss", *_NUMERIC, "interrupted"]
    # one line per model x attack x loss: PGD per loss, then the per-sample worst case over them
    assert [(line["model"], line["attack"], line["loss"]) for line in lines] == [
        (str(m), a, loss) for m in (model_path, copy) for a, loss in (("PGD-3", "ce"), ("PGD-3", "mifpe"), ("worst case", ""))]
    for line in lines:
        for column in _NUMERIC:  # numbers, or empty where there is none (no paper row for these models)
            assert line[column] == "" or isinstance(float(line[column]), float), (column, line[column])
        assert line["paper_robust_accuracy"] == "" and int(line["n"]) == 12
    by_key = {(line["model"], line["attack"], line["loss"]): line for line in lines}
    for row in report["rows"]:
        assert float(by_key[(row["model"], "PGD-3", "ce")]["robust_accuracy"]) == pytest.approx(
            row["pgd"]["ce"]["robust_accuracy"], abs=1e-4)
        assert float(by_key[(row["model"], "worst case", "")]["robust_accuracy"]) == pytest.approx(row["worst_case"], abs=1e-4)
        assert float(by_key[(row["model"], "PGD-3", "mifpe")]["clean_accuracy"]) == pytest.approx(row["clean_accuracy"], abs=1e-4)
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_csv(out / "table1.csv")
    assert all(frame[column].dtype.kind in "fi" for column in _NUMERIC)
