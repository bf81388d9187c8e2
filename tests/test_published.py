"""`published:<name>` checkpoints: the registry, sha256 checks, the offline and download paths, and
TRADES' MNIST SmallCNN on the real MNIST test set (when the shared data folder is beside the clone)."""

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mifpe_plugins import published, zoo
from mifpe_plugins.cli import main
from mifpe_plugins.data import file_digest, load_data, load_mnist
from mifpe_plugins.models import load_model

NAME = "trades-mnist-smallcnn"
SPEC = f"published:{NAME}"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CHECKPOINT = SHARED / "trades_mnist_smallcnn.pt"
MNIST_DIR = SHARED / "mnist"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    # never read or write the user's cache; default output folders land in the test's folder
    monkeypatch.setenv("MIFPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def shared():
    if not CHECKPOINT.is_file() or not MNIST_DIR.is_dir():
        pytest.skip(f"the shared data folder (checkpoint and MNIST test files) not found at {SHARED}")
    return SHARED


@pytest.fixture
def fake_entry(monkeypatch, tmp_path):
    """A registry entry for a small SmallCNN state dict written with TRADES' key names, so the
    error and download paths run without the real checkpoint."""
    model = zoo.SmallCNN()
    inverse = {ours: theirs for theirs, ours in published.entry(NAME)["state_dict_keys"].items()}
    state = {}
    for key, value in model.state_dict().items():
        prefix = next(p for p in inverse if key.startswith(p))
        state[inverse[prefix] + key.removeprefix(prefix)] = value
    source = tmp_path / "released.pt"
    torch.save(state, source)
    entry = dict(published.entry(NAME), file="fake.pt", sha256=file_digest(source), urls=["https://example.invalid/fake.pt"])
    real = published.registry

    def registry():
        return {**real(), "fake": entry}

    monkeypatch.setattr(published, "registry", registry)
    return source, model


def test_registry_entry_is_complete():
    entry = published.entry(NAME)
    assert entry["sha256"] == "5b99888064f692047d5592b38df2dde126aa1b991a26c6aad683ce709634bea0"
    assert entry["urls"][0].startswith("https://") and entry["file"] == "trades_mnist_smallcnn.pt"
    assert (entry["architecture"], entry["dataset"], entry["threat_model"], entry["eps"]) == ("smallcnn", "mnist", "Linf", 0.3)
    row = entry["paper_rows"][0]
    assert (row["table"], row["row"], row["clean"]) == ("Table 1", "MNIST TRADES", 99.48)
    assert row["pgd100"] == {"ce": 93.69, "cw": 93.88, "dlr": 94.49, "mifpe": 93.67}
    assert (row["best_known"], row["autoattack"]) == (92.71, 92.81)
    assert entry["licence"] == "MIT" and entry["source"]
    # the key mapping covers every parameter of the architecture, once
    assert sorted(v.rstrip(".") for v in entry["state_dict_keys"].values()) == sorted(
        {k.rsplit(".", 1)[0] for k in zoo.build("smallcnn").state_dict()})
    with pytest.raises(ValueError, match="unknown published checkpoint 'nope'; known: trades-mnist-smallcnn"):
        published.entry("nope")


def test_cache_dir_follows_mifpe_cache(monkeypatch, tmp_path):
    assert published.cache_dir() == tmp_path / "cache" / "published"
    monkeypatch.delenv("MIFPE_CACHE")
    assert published.cache_dir() == Path.home() / ".cache" / "mifpe_plugins" / "published"


def test_not_found_says_where_to_put_the_file_and_the_url(tmp_path):
    with pytest.raises(FileNotFoundError) as caught:
        load_model(SPEC, model_dir=tmp_path / "models")
    message = str(caught.value)
    assert "trades_mnist_smallcnn.pt" in message and "downloading is off" in message
    assert str(tmp_path / "models") in message and str(tmp_path / "cache" / "published") in message
    assert published.entry(NAME)["urls"][0] in message and "--download" in message


def test_a_wrong_sha256_is_an_error_naming_file_and_both_hashes(tmp_path, monkeypatch):
    bad = tmp_path / "models" / "trades_mnist_smallcnn.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"not the published checkpoint")
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(ValueError) as caught:
        load_model(SPEC, model_dir=bad.parent)
    message = str(caught.value)
    assert str(bad) in message and file_digest(bad) in message and published.entry(NAME)["sha256"] in message
    assert "Delete it" in message and "--download" in message
    assert loads == []  # checked before torch.load ever sees the file


def test_a_corrupted_copy_of_the_real_file_is_refused(shared, tmp_path):
    copy = tmp_path / "models" / CHECKPOINT.name
    copy.parent.mkdir()
    data = bytearray(CHECKPOINT.read_bytes())
    data[-100] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="is not the published file: its sha256 is"):
        published.locate(NAME, copy.parent)


def test_download_fetches_verifies_and_loads(fake_entry, tmp_path, monkeypatch):
    source, model = fake_entry
    calls = []

    def fake_fetch(url, destination):
        calls.append((url, destination))
        shutil.copyfile(source, destination)

    monkeypatch.setattr(published, "fetch", fake_fetch)
    with pytest.raises(FileNotFoundError, match="downloading is off"):
        load_model("published:fake", model_dir=tmp_path / "models")
    assert calls == []
    loaded = load_model("published:fake", model_dir=tmp_path / "models", download=True)
    target = tmp_path / "cache" / "published" / "fake.pt"
    assert calls == [("https://example.invalid/fake.pt", target.with_name("fake.pt.part"))]
    assert target.is_file() and not target.with_name("fake.pt.part").exists()
    assert loaded.source["kind"] == "published" and loaded.source["path"] == str(target)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(loaded.model(x), model.eval()(x))
    # the next load finds the cached copy and fetches nothing
    load_model("published:fake", download=True)
    assert len(calls) == 1


def test_a_bad_download_never_lands(fake_entry, tmp_path, monkeypatch):
    monkeypatch.setattr(published, "fetch", lambda url, destination: destination.write_bytes(b"<html>rate limited</html>"))
    with pytest.raises(ValueError, match="is not the published file"):
        published.load("fake", download=True)
    assert list((tmp_path / "cache" / "published").iterdir()) == []


def test_mnist_idx_files_directly_in_a_folder(tmp_path):
    images = np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    folder = tmp_path / "mnist"
    folder.mkdir()
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in images.shape) + images.tobytes())
    (folder / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + labels.tobytes())
    x, y = load_data(f"mnist:{folder}", n=4)
    assert x.shape == (4, 1, 28, 28) and y.tolist() == [3, 1, 4, 1]
    assert torch.equal(x[1, 0], torch.from_numpy(images[1].astype(np.float32) / 255))
    assert torch.equal(load_mnist(folder)[1], torch.tensor([3, 1, 4, 1, 5]))
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte\[.gz\].*MNIST/raw.*--download"):
        load_data(f"mnist:{tmp_path / 'empty'}")


def test_clean_accuracy_is_exactly_the_published_99_48(shared):
    loaded = load_model(SPEC, model_dir=shared)
    assert loaded.source["sha256"] == published.entry(NAME)["sha256"]
    x, y = load_data(f"mnist:{shared / 'mnist'}")
    assert x.shape == (10_000, 1, 28, 28) and y.shape == (10_000,)
    with torch.no_grad():
        correct = sum(int((loaded.model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(1000), y.split(1000), strict=True))
    assert correct == 9_948
    assert 100 * correct / 10_000 == published.entry(NAME)["clean_accuracy"] == 99.48


def test_attack_smoke_run(shared):
    from mifpe_plugins import pgd

    model = load_model(SPEC, model_dir=shared).model
    x, y = load_data(f"mnist:{shared / 'mnist'}", n=64)
    x_adv = pgd(model, x, y, eps=0.3, steps=10, loss="mifpe")
    assert torch.isfinite(x_adv).all() and (x_adv - x).abs().max() <= 0.3 + 1e-6
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
        robust = (model(x_adv).argmax(1) == y).float().mean().item()
    assert robust < clean


def test_cli_table2_on_the_published_model(shared, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["table2", "--model", SPEC, "--model-dir", str(shared), "--data", f"mnist:{shared / 'mnist'}", "--n", "8",
            "--attacks", "fgsm", "--eps", "0.3", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    (result,) = out.glob("table2-*.json")
    report = json.loads(result.read_text())
    assert report["n"] == 8 and report["eps"] == 0.3
    assert report["model_source"]["kind"] == "published" and report["model_source"]["name"] == NAME
    capsys.readouterr()


def test_cli_takes_the_published_eps_by_default(shared, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["table2", "--model", SPEC, "--model-dir", str(shared), "--data", f"mnist:{shared / 'mnist'}",
                 "--n", "4", "--attacks", "fgsm", "--out", str(out), "--quiet"]) == 0
    (result,) = out.glob("table2-*.json")
    assert json.loads(result.read_text())["eps"] == 0.3
    capsys.readouterr()


def test_cli_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["table2", "--model", SPEC, "--model-dir", str(tmp_path / "none"), "--data", "bundled", "--n", "4",
              "--attacks", "fgsm", "--out", str(tmp_path / "out"), "--quiet"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "error: " in err and "trades_mnist_smallcnn.pt" in err and published.entry(NAME)["urls"][0] in err


def test_table1_prints_the_paper_row_beside_the_published_model(shared, tmp_path, capsys):
    assert published.paper_table1(NAME) == ("MNIST TRADES", 99.48, {"ce": 93.69, "cw": 93.88, "dlr": 94.49, "mifpe": 93.67}, 92.71)
    assert published.paper_table1("nope") is None
    out = tmp_path / "out"
    assert main(["table1", "--models", SPEC, "--model-dir", str(shared), "--data", f"mnist:{shared / 'mnist'}",
                 "--n", "8", "--steps", "2", "--no-autoattack", "--name", "table1", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "table1.json").read_text())
    assert report["eps"] == 0.3 and report["n"] == 8
    assert "93.67" in (out / "table1.md").read_text()
    capsys.readouterr()
