import hashlib
import json
import re
import shutil

import pytest
import torch

from mifpe_plugins import pgd, zoo
from mifpe_plugins.data import bundled_fashion_mnist_test


def test_registry_lists_shipped_models():
    assert set(zoo.available()) == set(zoo.RECIPES)
    with pytest.raises(ValueError, match="unknown zoo model 'trades-xl'; known: "):
        zoo.load("trades-xl")


@pytest.mark.parametrize("name", sorted(zoo.RECIPES))
def test_shipped_weights_reproduce_their_log(name):
    model = zoo.load(name)
    x, y = bundled_fashion_mnist_test()
    stats = zoo.margin_statistics(model, x, y)
    logged = zoo.training_log(name)["bundled_test_subset"]
    assert stats["clean_accuracy"] == pytest.approx(logged["clean_accuracy"], abs=1e-6)
    # The logs' shares were averaged in float32 (92.832762 for 816/879 = 92.832765 %).
    assert stats["share_above_lambda_fp32"] == pytest.approx(logged["share_above_lambda_fp32"], abs=1e-5)
    assert not model.training


def test_large_margin_model_underflows_ce_but_not_mifpe():
    model = zoo.load("large-margin")
    x, y = bundled_fashion_mnist_test(n=64)
    stats = zoo.margin_statistics(model, x, y)
    assert stats["share_above_lambda_fp32"] > 50
    kwargs = dict(eps=0.1, steps=20, random_start=False)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
        ce = (model(pgd(model, x, y, loss="ce", **kwargs)).argmax(1) == y).float().mean().item()
        mifpe = (model(pgd(model, x, y, loss="mifpe", **kwargs)).argmax(1) == y).float().mean().item()
    # The ~7 % of samples below lambda stay attackable with CE; the rest do not move.
    assert ce >= clean - 0.2
    assert mifpe <= ce - 0.4


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_checkpoint_mismatch_is_a_clear_error(tmp_path, monkeypatch):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "standard.pt")
    (tmp_path / "standard.json").write_text(json.dumps({"sha256": _sha256(tmp_path / "standard.pt")}))
    monkeypatch.setattr(zoo, "_zoo_dir", lambda: tmp_path)
    with pytest.raises(ValueError, match="does not match the smallcnn architecture"):
        zoo.load("standard")
    (tmp_path / "standard.pt").unlink()
    with pytest.raises(FileNotFoundError, match="python -m mifpe_plugins.zoo train standard"):
        zoo.load("standard")


@pytest.mark.parametrize("name", sorted(zoo.RECIPES))
def test_shipped_weights_match_their_recorded_sha256(name):
    path = zoo._zoo_dir() / f"{name}.pt"
    assert zoo.training_log(name)["sha256"] == _sha256(path)
    zoo._verify_checkpoint(name, path)


@pytest.fixture
def zoo_copy(tmp_path, monkeypatch):
    """A copy of the shipped zoo that :func:`zoo.load` and :func:`zoo.train` use instead."""
    copy = tmp_path / "zoo"
    shutil.copytree(zoo._zoo_dir(), copy)
    monkeypatch.setattr(zoo, "_zoo_dir", lambda: copy)
    return copy


def _flip_64_bytes(path) -> None:
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(b ^ 0xFF for b in raw[middle : middle + 64])
    path.write_bytes(bytes(raw))


def test_corrupted_checkpoint_is_a_clear_error(zoo_copy, monkeypatch):
    path = zoo_copy / "standard.pt"
    expected, before = zoo.training_log("standard")["sha256"], zoo.load("standard")
    _flip_64_bytes(path)
    # checked before torch.load sees the file
    monkeypatch.setattr(zoo, "load_state_dict_into", lambda *a, **k: pytest.fail("weights read before the check"))
    pattern = (
        rf"zoo model 'standard': {re.escape(str(path))} is corrupted or was replaced: its sha256 is {_sha256(path)}, but "
        rf"standard.json records {expected}\. Restore the shipped pair by reinstalling the package .*"
        r"`git checkout -- mifpe_plugins/_data/zoo/standard.pt mifpe_plugins/_data/zoo/standard.json`\), "
        r"or retrain it with `mifpe zoo train standard`"
    )
    with pytest.raises(ValueError, match=pattern):
        zoo.load("standard")
    assert not before.training  # the intact copy loaded before the flip


def test_checkpoint_without_a_recorded_sha256_is_refused(zoo_copy):
    log = json.loads((zoo_copy / "trades.json").read_text())
    del log["sha256"]
    (zoo_copy / "trades.json").write_text(json.dumps(log))
    with pytest.raises(ValueError, match=r"zoo model 'trades': no sha256 recorded .*has no 'sha256' field.*mifpe zoo train trades"):
        zoo.load("trades")
    (zoo_copy / "trades.json").write_text("{ truncated")
    with pytest.raises(ValueError, match=r"trades.json is missing, unreadable"):
        zoo.load("trades")
    (zoo_copy / "trades.json").unlink()
    with pytest.raises(ValueError, match=r"trades.json is missing"):
        zoo.load("trades")


def test_binarize_is_sign_with_a_clipped_straight_through_gradient():
    u = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.0, 1.5], requires_grad=True)
    out = zoo.binarize(u)
    assert out.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]
    out.sum().backward()
    assert u.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]


def test_binary_and_cosine_architectures():
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    binary = zoo.load("binarized")
    hidden = binary.classifier[:-1](binary.features(x))
    assert set(hidden.unique().tolist()) <= {-1.0, 1.0}
    cosine = zoo.load("normalized-logit")
    logits = cosine(x)
    assert float(logits.abs().max()) <= cosine.scale + 1e-5
    torch.testing.assert_close(logits, cosine.scale * cosine.cosines(x))


@pytest.fixture
def tiny_fashion_dir(tmp_path):
    import numpy as np
    from test_data import write_idx

    rng = np.random.default_rng(0)
    for split, count in (("train", 40), ("t10k", 10)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), compress=False)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, count).astype(np.uint8), compress=False)
    return tmp_path


@pytest.mark.parametrize("name", sorted(zoo.RECIPES))
def test_every_recipe_trains_reproducibly(name, tiny_fashion_dir, tmp_path, monkeypatch):
    # 40 training images: every stage of every recipe runs, twice, to the same weights and log
    monkeypatch.setattr(zoo, "RECIPES", {name: zoo.RECIPES[name]})
    state = torch.get_rng_state()
    runs = []
    for attempt in range(2):
        out = tmp_path / f"run{attempt}"
        model, report = zoo.train(name, root=tiny_fashion_dir, out_dir=out, log=lambda *a: None, show_progress=False)
        runs.append(torch.load(out / f"{name}.pt", weights_only=True))
        assert (out / f"{name}.json").exists() and report["architecture"] == zoo.RECIPES[name].architecture
        # the log records the hash of the weights written next to it
        assert json.loads((out / f"{name}.json").read_text())["sha256"] == report["sha256"] == _sha256(out / f"{name}.pt")
        assert not model.training
    assert torch.equal(state, torch.get_rng_state())
    assert runs[0].keys() == runs[1].keys()
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key
    shipped = zoo.load(name).state_dict()
    assert any(not torch.equal(runs[0][k], shipped[k]) for k in shipped), "40 images cannot give the shipped weights"


def test_retraining_writes_a_pair_that_loads(zoo_copy, tiny_fashion_dir):
    # `mifpe zoo train NAME` over a damaged file: the new weights and their hash are written together
    from mifpe_plugins.cli import main

    _flip_64_bytes(zoo_copy / "standard.pt")
    with pytest.raises(ValueError, match="is corrupted or was replaced"):
        zoo.load("standard")
    assert main(["zoo", "train", "standard", "--root", str(tiny_fashion_dir), "--quiet"]) == 0
    assert zoo.training_log("standard")["sha256"] == _sha256(zoo_copy / "standard.pt")
    retrained = torch.load(zoo_copy / "standard.pt", weights_only=True)
    loaded = zoo.load("standard").state_dict()
    assert all(torch.equal(loaded[key], retrained[key]) for key in retrained)
