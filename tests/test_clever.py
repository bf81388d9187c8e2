"""mifpe_plugins.clever: ART imported only when the comparison runs, and the caller's model left alone.

The scores themselves (ART's clever_u on softmax(beta z), the paper's temperature rules, the RNG
pairing) are tested in test_adapter_art.py, next to the rest of what runs through ART.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import make_mlp_data

from mifpe_plugins import clever

TINY = {"nb_batches": 2, "batch_size": 2, "pool_factor": 2, "njs_samples": 2, "hns_points": 5}


def test_importing_clever_does_not_import_art():
    code = "import sys, mifpe_plugins.clever; assert 'art' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_missing_art_raises_import_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "art", None)
    monkeypatch.delitem(sys.modules, "art.metrics", raising=False)
    monkeypatch.delitem(sys.modules, "art.estimators.classification", raising=False)
    model, x, _ = make_mlp_data(n=2, dtype=torch.float32)
    with pytest.raises(ImportError, match=r"pip install mifpe-plugins\[art\]"):
        clever.clever_comparison(model, x, nb_classes=4, input_shape=(6,), **TINY)


# tiny pools give nearly equal gradient norms, which scipy's Weibull start-up warns about
@pytest.mark.filterwarnings("ignore:Precision loss occurred in moment calculation")
def test_model_mode_gradients_and_inputs_are_left_alone():
    model, x, _ = make_mlp_data(n=2, dtype=torch.float32)
    model.train()
    sentinel = [torch.full_like(p, 7.0) for p in model.parameters()]
    for param, grad in zip(model.parameters(), sentinel, strict=True):
        param.grad = grad
    x_before = x.clone()
    try:
        from_tensor = clever.clever_comparison(model, x, nb_classes=4, input_shape=(6,), **TINY)
        from_array = clever.clever_comparison(model, x.numpy(), nb_classes=4, input_shape=(6,), **TINY)
        assert all(module.training for module in model.modules())
        for param, grad in zip(model.parameters(), sentinel, strict=True):
            assert param.grad is grad and bool((grad == 7.0).all())
        assert torch.equal(x, x_before)
        for name in from_tensor.scores:
            np.testing.assert_array_equal(from_tensor.scores[name], from_array.scores[name])
    finally:
        model.eval()
        for param in model.parameters():
            param.grad = None


def test_bad_arguments_name_themselves():
    model, x, _ = make_mlp_data(n=2, dtype=torch.float32)
    kwargs = {"nb_classes": 4, "input_shape": (6,)}
    with pytest.raises(ValueError, match="input_shape"):
        clever.clever_comparison(model, x, nb_classes=4, input_shape=(5,))
    with pytest.raises(ValueError, match="float64"):
        clever.clever_comparison(make_mlp_data(n=2)[0], x, **kwargs)
    with pytest.raises(ValueError, match="nb_classes=3"):
        clever.clever_comparison(model, x, nb_classes=3, input_shape=(6,))
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        clever.clever_comparison(model, x, seed=-1, **kwargs)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        clever.clever_comparison(lambda t: t, x, **kwargs)
