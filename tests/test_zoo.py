import pytest
import torch

from mifpe_plugins import pgd, zoo
from mifpe_plugins.data import bundled_fashion_mnist_test


def test_registry_lists_shipped_models():
    assert set(zoo.available()) >= {"standard", "large-margin"}
    with pytest.raises(ValueError, match="unknown zoo model 'trades-xl'; known: "):
        zoo.load("trades-xl")


@pytest.mark.parametrize("name", ["standard", "large-margin"])
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
    with pytest.raises(ValueError, match="does not match the SmallCNN architecture"):
        zoo.load("standard")
    (tmp_path / "standard.pt").unlink()
    with pytest.raises(FileNotFoundError, match="python -m mifpe_plugins.zoo train standard"):
        zoo.load("standard")
