"""The evaluation engine: chunks with their own randomness, the journal, resume after SIGKILL,
torchrun shards, per-sample results."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TinyCNN, large_margin_problem, make_mlp_data

from mifpe_plugins import evaluate, tables
from mifpe_plugins.engine import CLEAN, Shard, chunk_generator
from mifpe_plugins.journal import ChunkRecord, Journal, JournalMismatch
from mifpe_plugins.provenance import provenance
from mifpe_plugins.tables import Evaluation, table2, table3

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
# The shipped large-margin SmallCNN on 120 bundled images: 6 chunks x 7 columns, a few seconds.
COMMAND = ["table2", "--samples", "120", "--batch-size", "20", "--steps", "20", "--attacks", "fgsm,pgd,apgd", "--threads", "1",
           "--quiet", "--name", "run"]
JOBS = 6 * 7


def _mifpe(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mifpe_plugins", *argv], capture_output=True, text=True, env=ENV,
                          timeout=600, **kwargs)


def _comparable(folder: Path, stem: str = "run") -> dict[str, object]:
    """A run's files without what may differ between equal runs: timings and provenance."""
    origin = set(provenance("")) - {"mifpe_plugins"}

    def strip(value: object) -> object:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in origin and k != "seconds"}
        return [strip(v) for v in value] if isinstance(value, list) else value

    tidy = list(csv.DictReader(io.StringIO((folder / f"{stem}.csv").read_text())))
    markdown = [line for line in (folder / f"{stem}.md").read_text().splitlines()
                if not line.startswith(("| seconds", "`mifpe "))]
    return {"samples": (folder / f"{stem}.samples.csv").read_bytes(),
            "csv": [{k: v for k, v in row.items() if k != "seconds"} for row in tidy],
            "json": strip(json.loads((folder / f"{stem}.json").read_text())), "md": markdown}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, float]:
    """One uninterrupted single-process run, and how long it took."""
    out = tmp_path_factory.mktemp("reference")
    tic = time.perf_counter()
    done = _mifpe(*COMMAND, "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out, time.perf_counter() - tic


# ----------------------------------------------------------------------------------------------
# Chunks and their randomness
# ----------------------------------------------------------------------------------------------


def test_a_chunks_generator_depends_on_the_seed_and_the_chunk_only():
    def draw(seed: int, chunk: int) -> torch.Tensor:
        return torch.rand(4, generator=chunk_generator(seed, chunk))

    assert torch.equal(draw(0, 3), draw(0, 3))
    assert not torch.equal(draw(0, 3), draw(0, 4)) and not torch.equal(draw(0, 3), draw(1, 3))


class _ThreadShard(Shard):
    """Two ranks as two threads of this process: broadcast and barrier through threading."""

    def __init__(self, rank: int, world: int, meeting: threading.Barrier, box: list) -> None:
        object.__setattr__(self, "rank", rank)
        object.__setattr__(self, "world", world)
        object.__setattr__(self, "meeting", meeting)
        object.__setattr__(self, "box", box)

    def broadcast(self, value: object) -> object:
        if self.rank == 0:
            self.box[:] = [value]
        self.meeting.wait()
        return self.box[0]

    def barrier(self) -> None:
        self.meeting.wait()


def test_the_result_does_not_depend_on_which_process_ran_a_chunk(tmp_path, monkeypatch):
    model, x, y = make_mlp_data(n=44, dtype=torch.float64)

    def run(**options) -> tables.Report:
        evaluation = Evaluation(model, x, y, eps=0.1, steps=6, batch_size=8, show_progress=False)
        return table2(evaluation, attacks=("fgsm", "pgd", "apgd"), **options)

    alone = run()
    local, meeting, box, reports = threading.local(), threading.Barrier(2), [], {}
    monkeypatch.setattr(tables.Shard, "current", classmethod(lambda cls: local.shard))

    def rank(index: int) -> None:
        local.shard = _ThreadShard(index, 2, meeting, box)
        reports[index] = run(out=tmp_path, name="sharded")

    threads = [threading.Thread(target=rank, args=(i,)) for i in (1, 0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert sorted(p.name for p in (tmp_path / "sharded.journal").glob("part-*")) == ["part-0.sqlite", "part-1.sqlite"]
    assert reports[1].rows == [] and reports[1].results == {}  # rank 1 reports nothing
    sharded = reports[0]
    assert sharded.results.keys() == alone.results.keys()
    for key, result in alone.results.items():
        for name, values in result.arrays.items():
            assert np.array_equal(values, sharded.results[key].arrays[name]), (key, name)
    assert _tidy(sharded) == _tidy(alone)


def _tidy(report: tables.Report) -> list[dict]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in report.records()]


def test_a_dataset_is_read_chunk_by_chunk_with_the_same_result():
    model, x, y = make_mlp_data(n=20, dtype=torch.float64)

    class Items(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.read: list[int] = []

        def __len__(self) -> int:
            return len(y)

        def __getitem__(self, index: int):
            self.read.append(index)
            return x[index], int(y[index])

    items = Items()
    on_items = table3(Evaluation(model, items, eps=0.1, steps=3, batch_size=8, show_progress=False, dtype=torch.float64),
                      losses=("ce",))
    on_tensors = table3(Evaluation(model, x, y, eps=0.1, steps=3, batch_size=8, show_progress=False), losses=("ce",))
    assert _tidy(on_items) == _tidy(on_tensors)
    # every chunk of every column is read on its own, in order: 3 chunks x (clean + 3 configurations)
    assert items.read == list(range(20)) * 4


# ----------------------------------------------------------------------------------------------
# Per-sample results
# ----------------------------------------------------------------------------------------------


def test_per_sample_gradient_evaluations_add_up_to_the_backward_passes():
    model, x, y = large_margin_problem(torch.float32, n=48)
    report = table2(Evaluation(model, x, y, eps=0.3, steps=12, batch_size=16, show_progress=False), attacks=("pgd", "apgd"))
    for (_, column), result in report.results.items():
        if column == CLEAN:
            continue
        gradients = result.arrays["gradients"]
        assert gradients.sum() == result.backward_passes and result.forward_passes >= result.backward_passes
        assert gradients.min() >= 1 and gradients.max() <= 12
    # batch shrinking: MIFPE fools every sample within 5 steps, so none takes all 12; CE never moves
    assert report.results[("model", "PGD-12 mifpe")].arrays["gradients"].max() <= 5
    assert (report.results[("model", "PGD-12 ce")].arrays["gradients"] == 12).all()


def test_per_sample_results_are_typed_and_go_to_pandas(tmp_path):
    pytest.importorskip("pandas")  # an optional dependency of to_pandas only
    model, x, y = make_mlp_data(n=12, dtype=torch.float64)
    report = table2(Evaluation(model, x, y, eps=0.2, steps=4, batch_size=5, show_progress=False), attacks=("pgd",),
                    out=tmp_path, name="t", save_adversarial=True)
    samples = report.to_pandas(samples=True)
    assert len(samples) == 12 and list(samples["sample"]) == list(range(12))
    robust = (samples["clean_prediction"] == samples["label"]) & (samples["PGD-4 mifpe/success"] == 0)
    assert 100 * robust.mean() == pytest.approx(report.rows[0].mifpe.robust_accuracy)
    assert samples["PGD-4 mifpe/norm"].max() <= 0.2 + 1e-12
    tidy = report.to_pandas()
    assert tidy["robust_accuracy"].dtype == float and set(tidy["loss"]) == {"ce", "mifpe"}
    adversarial = np.load(tmp_path / "t.adversarial" / "model--PGD-4-mifpe.npy")
    assert adversarial.shape == tuple(x.shape) and np.abs(adversarial - x.numpy()).max() <= 0.2 + 1e-12
    result = evaluate(model, x, y, eps=0.2, steps=4, batch_size=5, out=tmp_path, name="e")
    frame = result.to_pandas()
    assert list(frame.columns) == ["sample", "clean_correct", "robust", "margin", "norm", "within_eps", "gradients"]
    assert frame["robust"].sum() == int(result.robust_correct.sum()) and (tmp_path / "e.samples.csv").exists()


# ----------------------------------------------------------------------------------------------
# Never overwrite, refuse other settings
# ----------------------------------------------------------------------------------------------


def test_a_run_is_never_overwritten_silently_and_resumes_only_with_its_settings(tmp_path):
    model, x, y = make_mlp_data(n=10, dtype=torch.float64)

    def run(steps: int = 2, **options) -> tables.Report:
        return table3(Evaluation(model, x, y, eps=0.1, steps=steps, batch_size=4, show_progress=False), losses=("ce",),
                      out=tmp_path, name="t", **options)

    first = run()
    with pytest.raises(FileExistsError, match=r"t\.csv exists .*pass --resume \(resume=True\) to continue it, --overwrite"):
        run()
    with pytest.raises(JournalMismatch, match=r"steps: 2 in the journal, 3 now"):
        run(steps=3, resume=True)
    again = run(resume=True)  # everything journaled: nothing is attacked again
    assert again.records() == first.records()  # the same seconds too: read from the journal
    assert run(steps=3, overwrite=True).settings["steps"] == 3
    assert json.loads((tmp_path / "t.json").read_text())["steps"] == 3


def test_a_part_written_with_other_settings_is_refused(tmp_path):
    journal = Journal(tmp_path / "j", {"steps": 2})
    journal.start()
    other = Journal(tmp_path / "j", {"steps": 3}, rank=1)
    other.record(ChunkRecord("m", "c", 0, {"a": np.zeros(2)}))
    other.close()
    with pytest.raises(JournalMismatch, match="part-1.sqlite was written with other settings"):
        journal.finished()


# ----------------------------------------------------------------------------------------------
# SIGKILL, resume, torchrun
# ----------------------------------------------------------------------------------------------


def _finished_chunks(folder: Path) -> int:
    journal = folder / "run.journal"
    if not (journal / "settings.json").exists():
        return 0
    settings = json.loads((journal / "settings.json").read_text())["settings"]
    return len(Journal(journal, settings).finished())


def test_killed_at_random_moments_then_resumed_gives_the_same_files(reference, tmp_path):
    reference_out, seconds = reference
    out, rng, progress = tmp_path / "killed", random.Random(20261129), []
    for _ in range(4):
        process = subprocess.Popen([sys.executable, "-m", "mifpe_plugins", *COMMAND, "--out", str(out), "--resume"],
                                   env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 0.8) * seconds)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
        progress.append(_finished_chunks(out))
    # at least one kill landed in the middle of the attacks (not before the first chunk, not after the last)
    assert any(0 < done < JOBS for done in progress), progress
    done = _mifpe(*COMMAND, "--out", str(out), "--resume")
    assert done.returncode == 0, done.stderr
    assert _comparable(out) == _comparable(reference_out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(ranks: int, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks), "--master-addr",
                             "127.0.0.1", "--master-port", str(_free_port()), "-m", "mifpe_plugins", *COMMAND, "--out",
                             str(out), *extra], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_torchrun_ranks_give_the_single_process_files(reference, tmp_path):
    process = _torchrun(2, tmp_path)
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    assert sorted(p.name for p in (tmp_path / "run.journal").glob("part-*")) == ["part-0.sqlite", "part-1.sqlite"]
    assert _comparable(tmp_path) == _comparable(reference[0])
    assert stdout.count("Robust accuracy %") == 1  # rank 0 prints the table; rank 1 prints nothing


def _worker_of_rank(parent: int, rank: int) -> int | None:
    """The pid of torchrun's worker process with RANK=rank."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def test_a_dead_rank_takes_the_job_down_and_resume_finishes_with_one_process(reference, tmp_path):
    process = _torchrun(2, tmp_path)
    deadline, worker = time.monotonic() + 120, None
    while time.monotonic() < deadline and not (tmp_path / "run.journal" / "part-1.sqlite").exists():
        time.sleep(0.05)
    worker = _worker_of_rank(process.pid, 1)
    assert worker is not None, "rank 1 never started"
    os.kill(worker, signal.SIGKILL)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode != 0
    assert "mifpe_plugins" in stderr and "Signal 9 (SIGKILL)" in stderr  # torchrun names the rank that died
    done = _mifpe(*COMMAND, "--out", str(tmp_path), "--resume")
    assert done.returncode == 0, done.stderr
    assert _comparable(tmp_path) == _comparable(reference[0])


# ----------------------------------------------------------------------------------------------
# AutoAttack per chunk
# ----------------------------------------------------------------------------------------------


def _images(n: int = 12):
    """A tiny CNN on 1x8x8 images (Square needs images), with its own predictions as labels."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TinyCNN(classes=4).eval()
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model, x, model(x).argmax(1)


def _autoattack(model, **kwargs):
    from mifpe_plugins.adapters import autoattack as aa

    adversary = tables.stock_autoattack(model, norm="Linf", eps=0.08, device=torch.device("cpu"), seed=0, verbose=False, **kwargs)
    for member in ("apgd_targeted", "fab"):
        attack = getattr(adversary, member, None)
        if attack is not None and hasattr(attack, "n_target_classes"):
            attack.n_target_classes = min(attack.n_target_classes, 3)
    return aa, adversary


def test_autoattack_runs_per_chunk_each_chunk_as_one_run_with_bs_the_chunk():
    model, x, y = _images()
    y[0] = (y[0] + 1) % 4  # one sample misclassified from the start
    report = table2(Evaluation(model, x, y, eps=0.08, batch_size=6, show_progress=False), attacks=("autoattack",))
    success = report.results[("model", "AutoAttack standard")].arrays["success"]
    assert 0 < success.sum() < 12  # some samples fooled, some not
    for chunk in (1, 0):  # each chunk alone, in any order, gives the engine's outcome
        aa, adversary = _autoattack(model)
        rows = slice(6 * chunk, 6 * chunk + 6)
        x_adv, _ = aa.run_standard_evaluation(adversary, x[rows], y[rows], batch_size=6)
        with torch.no_grad():
            assert np.array_equal(success[rows], (model(x_adv).argmax(1) != y[rows]).numpy())


def test_per_chunk_autoattack_equals_one_run_with_bs_the_chunk_while_batches_are_the_chunks():
    """AutoAttack reseeds at every perturb call and batches the samples still robust: while those
    are whole chunks (every sample correct, the first attack), one run with bs = chunk size and a
    run per chunk are the same computation. Once a sample drops out, upstream packs the remaining
    ones across chunk boundaries and the random starts of later samples shift."""
    model, x, y = _images()
    aa, adversary = _autoattack(model, version="custom", attacks_to_run=["apgd-ce"])
    whole, _ = aa.run_standard_evaluation(adversary, x, y, batch_size=6)
    chunks = [aa.run_standard_evaluation(_autoattack(model, version="custom", attacks_to_run=["apgd-ce"])[1], x[r], y[r],
                                         batch_size=6)[0] for r in (slice(0, 6), slice(6, 12))]
    assert torch.equal(whole, torch.cat(chunks))


def test_settings_describe_objects_without_memory_addresses():
    from mifpe_plugins.engine import describe

    def my_loss(logits, labels, *, targeted=False):
        return logits.sum(1)

    described = describe({"loss": my_loss, "eps": torch.full((3,), 0.1), "steps": 5})
    assert " at 0x" not in described["loss"] and "my_loss" in described["loss"]
    assert described["eps"] == "tensor of shape (3,), float32" and described["steps"] == 5


def test_compare_lists_the_samples_each_column_alone_fools(tmp_path, capsys):
    from mifpe_plugins.cli import main
    from mifpe_plugins.tables import compare_columns

    model, x, y = make_mlp_data(n=40, dtype=torch.float64)
    y[:3] = (y[:3] + 1) % 4  # three samples wrong from the start: never counted as fooled
    report = table2(Evaluation(model, x, y, eps=0.1, steps=3, batch_size=16, show_progress=False), attacks=("fgsm", "pgd"),
                    out=tmp_path, name="t")
    fgsm, pgd = report.rows[0].original.robust, report.rows[1].mifpe.robust
    comparison = compare_columns(tmp_path / "t.samples.csv", "FGSM ce", "PGD-3 mifpe")
    clean = (model(x).argmax(1) == y).numpy()
    assert comparison["clean_correct"] == int(clean.sum()) == 37
    assert comparison["only_first_fools"] == np.flatnonzero(clean & ~fgsm & pgd).tolist()
    assert comparison["only_second_fools"] == np.flatnonzero(clean & fgsm & ~pgd).tolist()
    assert comparison["only_second_fools"]  # PGD-MIFPE fools samples FGSM-CE does not
    assert comparison["robust_both"] == pytest.approx(100 * (fgsm & pgd).mean())
    assert comparison["robust"]["PGD-3 mifpe"] == report.rows[1].mifpe.robust_accuracy
    assert main(["compare", str(tmp_path / "t.samples.csv"), "FGSM ce", "PGD-3 mifpe"]) == 0
    printed = capsys.readouterr().out
    assert "Samples only PGD-3 mifpe fools: " + ", ".join(map(str, comparison["only_second_fools"])) + "." in printed
    with pytest.raises(SystemExit):
        main(["compare", str(tmp_path / "t.samples.csv"), "FGSM ce", "APGD mifpe"])
    assert "has no column 'APGD mifpe'; its columns are FGSM ce, FGSM mifpe, PGD-3 ce, PGD-3 mifpe" in capsys.readouterr().err
