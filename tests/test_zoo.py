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
    assert stats["share_above_lambda_fp32"] == pytest.approx(logged["share_above_lambda_fp32"], abs=1e-6)
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


def test_checkpoint_mismatch_is_a_clear_error(tmp_path, monkeypatch):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "standard.pt")
    monkeypatch.setattr(zoo, "_zoo_dir", lambda: tmp_path)
    with pytest.raises(ValueError, match="does not match the smallcnn architecture"):
        zoo.load("standard")
    (tmp_path / "standard.pt").unlink()
    with pytest.raises(FileNotFoundError, match="python -m mifpe_plugins.zoo train standard"):
        zoo.load("standard")


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
        assert not model.training
    assert torch.equal(state, torch.get_rng_state())
    assert runs[0].keys() == runs[1].keys()
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key
    shipped = zoo.load(name).state_dict()
    assert any(not torch.equal(runs[0][k], shipped[k]) for k in shipped), "40 images cannot give the shipped weights"
