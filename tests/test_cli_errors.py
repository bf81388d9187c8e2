"""The `mifpe` command checks what it can before the first attack, reports every problem in one
line after the subcommand's usage (exit status 2), and keeps finished work on Ctrl-C (status 130)."""

import csv
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import large_margin_problem

from mifpe_plugins import cli, engine, tables
from mifpe_plugins import diagnose as d
from mifpe_plugins.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    # default output folders (mifpe-results/) land in the test's folder, not the checkout
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def no_attack(monkeypatch):
    """Fail the test (at once) if any table, audit, attack or the demo's training starts (a table's
    columns are planned by Evaluation.core/.autoattack and run by engine._run_job)."""

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the problem was reported")

    for name in ("table1", "table2", "table3", "pgdpp_table"):
        monkeypatch.setattr(tables, name, forbidden)
    monkeypatch.setattr(tables.Evaluation, "core", forbidden)
    monkeypatch.setattr(tables.Evaluation, "autoattack", forbidden)
    monkeypatch.setattr(engine, "_run_job", forbidden)
    monkeypatch.setattr(d, "diagnose", forbidden)
    monkeypatch.setattr(cli, "large_margin_mlp", forbidden)


def _error(capsys, argv: list[str]) -> str:
    """Run the command, expect exit status 2, return the one error line (after the usage)."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    command = argv[0]
    assert err.startswith(f"usage: mifpe {command}"), err
    assert "Traceback" not in err
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"mifpe {command}: error: "), err
    return last


@pytest.fixture
def toy(tmp_path):
    model, x, y = large_margin_problem(torch.float32, n=8)
    model_path = tmp_path / "toy.ts"
    torch.jit.script(model).save(str(model_path))
    data_path = tmp_path / "toy.npz"
    np.savez(data_path, x=x.numpy(), y=y.numpy())
    return str(model_path), str(data_path)


# ----------------------------------------------------------------------------------------------
# Checked before the first attack
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["table2", "--attacks", "fgsm", "--n", "4"], ["demo", "--n", "4"]])
@pytest.mark.parametrize(("where", "message"), [
    ("a-file", "--out a-file is a file"),
    ("a-file/sub", "cannot write to --out a-file/sub (Not a directory)"),
    ("/proc/mifpe-test", "cannot write to --out /proc/mifpe-test"),
    ("x" * 300, "(File name too long); pass --out a folder"),
    ("bad\0name", "(embedded null byte); pass --out a folder"),
])
def test_out_is_created_and_test_written_first(command, where, message, tmp_path, capsys, no_attack):
    (tmp_path / "a-file").write_text("")
    assert message in _error(capsys, [*command, "--out", where, "--quiet"])


def test_a_new_out_folder_is_removed_when_the_command_fails(capsys, tmp_path):
    _error(capsys, ["table2", "--model", "zoo:nope", "--attacks", "fgsm", "--out", "new", "--quiet"])
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["table2", "--dtype", "float16"], "AutoAttack runs in float32 only, so --dtype float16 cannot run its column: use "
                                       "--dtype float32, or leave AutoAttack out with --attacks fgsm,pgd,apgd"),
    (["table2", "--dtype", "bfloat16", "--attacks", "pgd,autoattack"], "leave AutoAttack out with --attacks pgd"),
    (["table1", "--dtype", "float64"], "leave AutoAttack out with --no-autoattack"),
    (["table2", "--eps", "0"], "AutoAttack needs --eps > 0"),
])
def test_dtype_and_attack_list_conflicts_are_refused_before_starting(argv, message, capsys, no_attack):
    assert message in _error(capsys, [*argv, "--quiet"])


def test_other_dtypes_run_without_the_autoattack_column(toy, tmp_path, capsys):
    model_path, data_path = toy
    assert main(["table2", "--model", model_path, "--data", data_path, "--dtype", "float64", "--attacks", "fgsm",
                 "--eps", "0.3", "--name", "table2-toy", "--out", str(tmp_path), "--quiet"]) == 0
    assert json.loads((tmp_path / "table2-toy.json").read_text())["dtype"] == "float64"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", [["table2"], ["demo"], ["diagnose"], ["pgdpp"]])
def test_an_unavailable_device_is_refused_before_loading(command, capsys, no_attack, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("loaded before the device was checked")

    monkeypatch.setattr("mifpe_plugins.models.load_model", no_loading)
    monkeypatch.setattr("mifpe_plugins.data.load_data", no_loading)
    line = _error(capsys, [*command, "--device", "cuda", "--quiet"])
    assert "--device cuda cannot run --dtype float32 here" in line and "use --device cpu" in line


@pytest.mark.parametrize(("argv", "message"), [
    (["table2", "--threat-model", "L2"], "mifpe table2 attacks in Linf only, but --threat-model L2"),
    (["diagnose", "--threat-model", "L2"], "use --threat-model Linf"),
    (["pgdpp", "--threat-model", "corruptions"], "mifpe pgdpp attacks in Linf and L2 only"),
])
def test_threat_model_must_fit_the_attacks(argv, message, capsys, no_attack):
    assert message in _error(capsys, [*argv, "--quiet"])


def test_pgdpp_accepts_an_l2_threat_model(tmp_path):
    args = build_parser().parse_args(["pgdpp", "--threat-model", "L2", "--models", "zoo:standard", "--out", str(tmp_path)])
    cli._validate(args)  # no error: pgdpp has L2 columns
    assert args.models == ["zoo:standard"]


def test_model_and_data_shapes_are_checked_with_one_forward(tmp_path, capsys, no_attack):
    np.savez(tmp_path / "flat.npz", x=np.full((4, 64), 0.5, np.float32), y=np.arange(4))
    line = _error(capsys, ["table2", "--data", str(tmp_path / "flat.npz"), "--eps", "0.1", "--attacks", "fgsm", "--quiet"])
    assert "model zoo:large-margin cannot take the data's inputs (shape (64,) per sample)" in line


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_float_labels_are_refused_not_truncated(suffix, tmp_path, capsys, no_attack):
    x, y = np.full((4, 1, 28, 28), 0.5, np.float32), np.array([1.0, 2.0, 3.5, 4.0])
    path = tmp_path / f"labels{suffix}"
    if suffix == ".npz":
        np.savez(path, x=x, y=y)
    else:
        torch.save((torch.from_numpy(x), torch.from_numpy(y)), path)
    line = _error(capsys, ["table2", "--data", str(path), "--eps", "0.1", "--attacks", "fgsm", "--quiet"])
    assert f"{path}: labels must be class indices (whole numbers >= 0), found 3.5" in line


def _damaged_files(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (extra argv, what the message says was expected)"""
    np.savez(tmp_path / "good.npz", x=np.zeros((4, 1, 28, 28), np.float32), y=np.arange(4))
    torch.save((torch.zeros(4, 1, 28, 28), torch.arange(4)), tmp_path / "good.pt")
    npz, pt = (tmp_path / "good.npz").read_bytes(), (tmp_path / "good.pt").read_bytes()
    random = np.random.default_rng(0).bytes(300)
    files = {"truncated.npz": npz[: len(npz) // 2], "random.npz": random, "empty.npz": b"",
             "truncated.pt": pt[: len(pt) // 2], "random.pt": random, "empty.pt": b"", "weights.pt": random}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    with zipfile.ZipFile(tmp_path / "fake.ts", "w") as archive:
        archive.writestr("fake/code/model.py", "not TorchScript")
    torch.save(torch.nn.Linear(784, 10), tmp_path / "pickled.pt")
    np.savez(tmp_path / "nothing.npz", x=np.zeros((0, 1, 28, 28), np.float32), y=np.zeros(0, np.int64))
    npz_expected, pt_expected = "expected an .npz archive (numpy.savez)", "expected a torch.save file of (inputs, labels)"
    state_dict = "expected a state dict saved with torch.save(model.state_dict(), path)"
    return {
        "truncated.npz": (["--data"], npz_expected), "random.npz": (["--data"], npz_expected),
        "empty.npz": (["--data"], npz_expected), "truncated.pt": (["--data"], pt_expected),
        "random.pt": (["--data"], pt_expected), "empty.pt": (["--data"], pt_expected),
        "weights.pt": (["--arch", "smallcnn", "--model"], state_dict),
        "pickled.pt": (["--arch", "smallcnn", "--model"], "it pickles a torch.nn.modules.linear.Linear object"),
        "fake.ts": (["--model"], "expected a TorchScript archive (torch.jit.save)"),
        "nothing.npz": (["--data"], "holds no samples"),
    }


@pytest.mark.parametrize("name", ["truncated.npz", "random.npz", "empty.npz", "truncated.pt", "random.pt", "empty.pt",
                                  "weights.pt", "pickled.pt", "fake.ts", "nothing.npz"])
def test_damaged_files_are_one_line_naming_the_file(name, tmp_path, capsys, no_attack):
    option, expected = _damaged_files(tmp_path)[name]
    line = _error(capsys, ["table2", *option, str(tmp_path / name), "--eps", "0.1", "--attacks", "fgsm", "--quiet"])
    assert str(tmp_path / name) in line and expected in line


def test_errors_print_the_subcommands_usage(capsys):
    line = _error(capsys, ["diagnose", "--dtypes", "float8"])
    assert line == "mifpe diagnose: error: --dtypes: unknown float8; choose from float16, float32, float64"


# ----------------------------------------------------------------------------------------------
# Ctrl-C
# ----------------------------------------------------------------------------------------------


def _main(argv: list[str]) -> int:
    try:
        return main(argv)
    except KeyboardInterrupt:  # as a test failure, not the end of the test session
        pytest.fail("Ctrl-C escaped mifpe's handler")


def _interrupt_at(monkeypatch, target, name: str, call: int) -> list:
    """Make ``target.name`` raise KeyboardInterrupt on its ``call``-th call (1-based)."""
    original, calls = getattr(target, name), []

    def patched(*args, **kwargs):
        calls.append(args)
        if len(calls) == call:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, patched)
    return calls


_RUN_JOB = engine._run_job  # the engine's own, unpatched


def _stop_at(monkeypatch, column: str, error: BaseException | None = None) -> list[str]:
    """Make the engine raise ``error`` (default KeyboardInterrupt, as Ctrl-C does) as it starts the
    first chunk of ``column``. Returns the column of every job started, in order (the toy data is
    one chunk per column; each model's clean pass comes first)."""
    started: list[str] = []

    def run_job(evaluation, job, keep_adversarial):
        started.append(job.column.name)
        if job.column.name == column:
            raise KeyboardInterrupt if error is None else error
        return _RUN_JOB(evaluation, job, keep_adversarial)

    monkeypatch.setattr(engine, "_run_job", run_job)
    return started


def _journaled(out: Path, stem: str) -> str:
    """The end of the stop line when finished chunks are in the journal."""
    return f"; the finished chunks are journaled in {out / f'{stem}.journal'}: rerun with --resume to continue"


def test_ctrl_c_after_a_column_writes_it_marked_partial(toy, tmp_path, capsys, monkeypatch):
    model_path, data_path = toy
    out = tmp_path / "out"
    argv = ["table2", "--model", model_path, "--data", data_path, "--eps", "0.3", "--steps", "2", "--attacks",
            "fgsm,pgd,apgd", "--name", "table2-toy", "--out", str(out), "--quiet"]
    started = _stop_at(monkeypatch, "PGD-2 ce")
    assert _main(argv) == 130
    assert started == ["clean", "FGSM ce", "FGSM mifpe", "PGD-2 ce"]
    captured = capsys.readouterr()
    assert captured.err == (f"mifpe table2: interrupted (Ctrl-C); the finished columns, marked partial, are in {out}"
                            f"{_journaled(out, 'table2-toy')}\n")
    report = json.loads((out / "table2-toy.json").read_text())
    assert report["interrupted"] == "interrupted by Ctrl-C"
    assert [r["attack"] for r in report["rows"]] == ["FGSM"] and "boost" in report["rows"][0]
    markdown = (out / "table2-toy.md").read_text()
    assert markdown.startswith("# table2-toy (partial)\n\n**Partial result: interrupted by Ctrl-C.**")
    with open(out / "table2-toy.csv") as handle:
        lines = list(csv.DictReader(handle))
    assert [(r["attack"], r["loss"], r["interrupted"]) for r in lines] == [
        ("FGSM", "ce", "interrupted by Ctrl-C"), ("FGSM", "mifpe", "interrupted by Ctrl-C")]
    with open(out / "table2-toy.samples.csv") as handle:  # per sample: the finished columns only
        header = next(csv.reader(handle))
    assert "FGSM ce/success" in header and "FGSM mifpe/success" in header and not any("PGD" in h for h in header)
    assert "| MIFPE loss |" in captured.out  # the finished part is printed too
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"table2-toy.{suffix}" for suffix in ("md", "json", "csv", "samples.csv", "journal"))
    # --resume, as the line says, runs only the columns not finished and completes the report
    started = _stop_at(monkeypatch, "none")
    assert _main([*argv, "--resume"]) == 0
    assert started == ["PGD-2 ce", "PGD-2 mifpe", "APGD_DLR-2 dlr", "APGD_DLR-2 mifpe"]
    report = json.loads((out / "table2-toy.json").read_text())
    assert "interrupted" not in report and [r["attack"] for r in report["rows"]] == ["FGSM", "PGD-2", "APGD_DLR-2"]


def test_ctrl_c_inside_a_column_keeps_its_finished_half(toy, tmp_path, capsys, monkeypatch):
    model_path, data_path = toy
    started = _stop_at(monkeypatch, "FGSM mifpe")  # FGSM CE done, FGSM MIFPE interrupted
    assert _main(["table2", "--model", model_path, "--data", data_path, "--eps", "0.3", "--attacks", "fgsm",
                 "--name", "table2-toy", "--out", str(tmp_path), "--quiet"]) == 130
    assert started == ["clean", "FGSM ce", "FGSM mifpe"]
    rows = json.loads((tmp_path / "table2-toy.json").read_text())["rows"]
    assert "original" in rows[0] and "mifpe" not in rows[0]
    assert "| MIFPE loss | – |" in (tmp_path / "table2-toy.md").read_text()
    with open(tmp_path / "table2-toy.csv") as handle:  # the cell not computed is empty in the tidy CSV
        lines = list(csv.DictReader(handle))
    assert [r["loss"] for r in lines] == ["ce", "mifpe"] and lines[0]["robust_accuracy"] and lines[1]["robust_accuracy"] == ""


@pytest.mark.parametrize(("column", "journaled"), [("clean", False), ("FGSM ce", True)])
def test_ctrl_c_before_anything_finished_writes_nothing(column, journaled, toy, tmp_path, capsys, monkeypatch):
    # Ctrl-C during the clean pass (nothing journaled), or during the first attack column (the
    # clean pass is journaled): no column had finished, so there is no report, only the journal.
    model_path, data_path = toy
    out = tmp_path / "out"
    out.mkdir()
    started = _stop_at(monkeypatch, column)
    assert _main(["table2", "--model", model_path, "--data", data_path, "--eps", "0.3", "--attacks", "fgsm", "--name", "table2-toy",
                  "--out", str(out), "--quiet"]) == 130
    jobs = ["clean", "FGSM ce"]
    assert started == jobs[:jobs.index(column) + 1]
    suffix = _journaled(out, "table2-toy") if journaled else ""
    assert capsys.readouterr().err == (f"mifpe table2: interrupted (Ctrl-C); no column had finished, no report was "
                                       f"written{suffix}\n")
    assert [p.name for p in out.iterdir()] == ["table2-toy.journal"]  # no .md, .json, .csv or .samples.csv
    assert bool(list((out / "table2-toy.journal").glob("part-*.sqlite"))) is journaled


def test_ctrl_c_keeps_finished_cells_of_table1_and_pgdpp(toy, tmp_path, capsys, monkeypatch):
    model_path, data_path = toy
    common = ["--data", data_path, "--eps", "0.3", "--steps", "2", "--out", str(tmp_path), "--quiet"]
    started = _stop_at(monkeypatch, "PGD-2 mifpe")
    assert _main(["table1", "--models", model_path, "--losses", "ce,mifpe", "--no-autoattack", "--name", "table1",
                  *common]) == 130
    assert started == ["clean", "PGD-2 ce", "PGD-2 mifpe"]
    row = json.loads((tmp_path / "table1.json").read_text())["rows"][0]
    assert list(row["pgd"]) == ["ce"] and "worst_case" not in row
    # PGD++: the L-inf FGSM columns and PGD, PGD beta=0.1 finish; PGD++ NJS is interrupted
    started = _stop_at(monkeypatch, "PGD++ NJS")
    assert _main(["pgdpp", "--models", model_path, "--l2-eps", "1", "--name", "pgdpp", *common]) == 130
    finished = ["FGSM", "FGSM beta=0.1", "FGSM++ NJS", "FGSM++ HNS", "PGD", "PGD beta=0.1"]
    assert started == ["clean", *finished, "PGD++ NJS"]
    row = json.loads((tmp_path / "pgdpp.json").read_text())["rows"][0]
    assert list(row["results"]) == finished
    markdown = (tmp_path / "pgdpp.md").read_text()
    assert markdown.startswith("# pgdpp (partial)") and "| – |" in markdown


def test_ctrl_c_in_diagnose_keeps_the_finished_analyses(toy, tmp_path, capsys, monkeypatch):
    model_path, data_path = toy
    _interrupt_at(monkeypatch, d, "fnz_pgd", 1)
    out = tmp_path / "audit"
    assert _main(["diagnose", "--model", model_path, "--data", data_path, "--quick", "--steps", "2", "--eps", "0.3",
                 "--no-clever", "--out", str(out), "--quiet"]) == 130
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] == "interrupted by Ctrl-C" and "ft_pgd" in report and "fnz_pgd" not in report
    assert "verdict" not in report and report["model"] == model_path
    assert "**Partial audit: interrupted by Ctrl-C.**" in (out / "report.md").read_text()
    assert (out / "fig4_5_ft_pgd.png").exists() and not (out / "fig6_fnz_pgd.png").exists()


def test_an_error_mid_run_also_keeps_the_finished_columns(toy, tmp_path, capsys, monkeypatch):
    model_path, data_path = toy
    _stop_at(monkeypatch, "PGD-100 ce", RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB"))
    line = _error(capsys, ["table2", "--model", model_path, "--data", data_path, "--eps", "0.3", "--attacks", "fgsm,pgd",
                           "--name", "table2-toy", "--out", str(tmp_path), "--quiet"])
    assert line == (f"mifpe table2: error: CUDA out of memory. (the finished columns, marked partial, are in {tmp_path}"
                    f"{_journaled(tmp_path, 'table2-toy')})")
    report = json.loads((tmp_path / "table2-toy.json").read_text())
    assert report["interrupted"] == "stopped by an error: CUDA out of memory." and len(report["rows"]) == 1


def test_sigint_to_a_running_command(toy, tmp_path):
    """A real SIGINT (as Ctrl-C sends) in a separate process: one line, status 130, partial table."""
    model_path, data_path = toy
    script = (
        "import os, signal, sys\n"
        "from mifpe_plugins import engine\n"
        "from mifpe_plugins.cli import main\n"
        "original = engine._run_job\n"
        "def run_job(evaluation, job, keep_adversarial):\n"
        "    if job.column.name == 'PGD-2 ce':  # once both FGSM columns are done\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    return original(evaluation, job, keep_adversarial)\n"
        "engine._run_job = run_job\n"
        "raise SystemExit(main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-c", script, "table2", "--model", model_path, "--data", data_path, "--eps", "0.3",
                           "--steps", "2", "--attacks", "fgsm,pgd", "--name", "table2-toy", "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines() == [f"mifpe table2: interrupted (Ctrl-C); the finished columns, marked partial, are "
                                        f"in {out}{_journaled(out, 'table2-toy')}"]
    report = json.loads((out / "table2-toy.json").read_text())
    assert report["interrupted"] == "interrupted by Ctrl-C" and [r["attack"] for r in report["rows"]] == ["FGSM"]


def test_result_files_are_written_as_one_set(tmp_path, monkeypatch):
    old = {"a.md": "old a", "b.json": "old b"}
    tables.write_files(tmp_path, old)
    written = []
    real_write = Path.write_text

    def write_text(self, *args, **kwargs):
        written.append(self)
        if len(written) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second file is written
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(KeyboardInterrupt):
        tables.write_files(tmp_path, {"a.md": "new a", "b.json": "new b"})
    monkeypatch.undo()
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == old  # the old set, no temporary files
    assert all(p.parent == tmp_path for p in written)  # the temporary files were in the same folder


# ----------------------------------------------------------------------------------------------
# Help texts and option parsing
# ----------------------------------------------------------------------------------------------


def _subparsers() -> dict:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return {name: p for name, p in sub.choices.items()}


def test_help_matches_the_defaults_that_run():
    parsers = _subparsers()
    assert "(default 20, the PGD++ paper's)" in " ".join(parsers["pgdpp"].format_help().split())
    assert parsers["pgdpp"].parse_args([]).steps == d.Budget().pgdpp_steps == 20
    help_text = " ".join(parsers["diagnose"].format_help().split())
    assert "(default: 500, or 200 with --quick; all if the data has fewer)" in help_text
    assert (d.Budget().samples, d.Budget.quick().samples) == (500, 200)


def test_every_subcommand_has_a_description_and_plain_help():
    for name, parser in _subparsers().items():
        text = parser.format_help()
        assert parser.description, name
        assert "`" not in text, name  # no RST or Markdown markup
        for action in parser._actions:
            assert action.help or not action.option_strings, f"{name} {action.option_strings}"
    assert "`" not in build_parser().format_help()
    assert "AutoAttack runs in float32 only" in " ".join(_subparsers()["table2"].format_help().split())


@pytest.mark.parametrize(("argv", "attribute", "value"), [
    (["table2", "--eps", "8/255"], "eps", 8 / 255),
    (["demo", "--eps", "2/255"], "eps", 2 / 255),
    (["pgdpp", "--l2-eps", "120/255"], "l2_eps", 120 / 255),
    (["diagnose", "--l2-eps", "0.5", "--eps", "1e-2"], "eps", 0.01),
])
def test_radii_accept_fractions(argv, attribute, value):
    assert getattr(build_parser().parse_args(argv), attribute) == pytest.approx(value)


@pytest.mark.parametrize("text", ["8/0", "-1/255", "eight", "nan", "inf"])
def test_bad_radii_are_refused(text, capsys):
    line = _error(capsys, ["table2", f"--eps={text}"])
    assert "must be a number >= 0 such as 0.1 or 8/255" in line


def test_the_diagnose_report_quotes_the_papers_bnn_waq_row():
    report = {"n": 1, "dtype": "float32", "eps": 0.1, "steps": 1, "verdict": "v",
              "pgdpp": {"steps": 1, "linf": {"PGD CE": 1.0}, "l2": {"PGD CE": 1.0}}}
    markdown = d._markdown(report, {})
    assert "BNN-WAQ ResNet-18 (Table 3), L∞ 8/255): PGD 8.57, PGD++ NJS 0.03, HNS 0.04" in markdown
    assert "26.98" not in markdown  # BNN-WQ's number (Table 2), not BNN-WAQ's


def test_docs_match_the_code():
    quick = d.Budget.quick()
    reproducing = (ROOT / "docs" / "reproducing.md").read_text()
    assert f"`--quick` is {quick.samples} samples" in reproducing
    demo = (ROOT / "docs" / "results" / "demo" / "demo.md").read_text()
    assert "`mifpe demo --out docs/results/demo --name demo --overwrite --quiet`" in demo
    assert json.loads((ROOT / "docs" / "results" / "demo" / "demo.json").read_text())["command"] == "mifpe demo --out docs/results/demo --name demo --overwrite --quiet"


@pytest.mark.parametrize(("argv", "message"), [
    (["pgdpp", "--models", ""], "--models needs at least one name"),
    (["table2", "--attacks", "fgsm,fgsm"], "--attacks lists fgsm more than once"),
    (["table1", "--losses", "ce,ce"], "--losses lists ce more than once"),
    (["table1", "--models", "zoo:standard,zoo:standard"], "--models lists zoo:standard more than once"),
])
def test_empty_and_repeated_lists_are_refused(argv, message, capsys, no_attack):
    assert message in _error(capsys, [*argv, "--quiet"])
