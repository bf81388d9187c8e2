"""Edges of the Python API: targeted evaluation, malformed arguments, inference mode, train mode,
and the rounding of the perturbation norm."""

import warnings

import numpy as np
import pytest
import torch
from conftest import make_mlp_data
from torch import nn

from mifpe_plugins import apgd, evaluate, fgsm, pgd


def test_targeted_evaluation_measures_accuracy_against_the_true_labels():
    model, x, y = make_mlp_data(n=12, dtype=torch.float32)
    targets = (y + 1) % 4
    # eps = 0 moves nothing: clean and robust accuracy are the model's own, 100 % on its predictions.
    result = evaluate(model, x, y, attack="pgd", eps=0.0, steps=2, targeted=True, targets=targets)
    assert result.clean_accuracy == 1.0 and result.robust_accuracy == 1.0
    attacked = evaluate(model, x, y, attack="pgd", eps=0.5, steps=20, targeted=True, targets=targets,
                        keep_adversarial=True)
    with torch.no_grad():
        hit = model(attacked.adversarial).argmax(dim=1) == targets
    assert attacked.clean_accuracy == 1.0 and hit.any()
    assert attacked.robust_accuracy <= 1 - float(hit.float().mean())


def test_targeted_evaluation_needs_targets_and_targets_need_targeted():
    model, x, y = make_mlp_data(n=4, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"targeted=True\) needs targets="):
        evaluate(model, x, y, eps=0.1, targeted=True)
    with pytest.raises(ValueError, match="targets is only for targeted attacks"):
        evaluate(model, x, y, eps=0.1, targets=y)
    with pytest.raises(ValueError, match=r"targets must have shape \(4,\)"):
        evaluate(model, x, y, eps=0.1, targeted=True, targets=y[:3])


def test_per_sample_eps_of_the_wrong_length_is_an_error():
    model, x, y = make_mlp_data(n=6, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"eps must be a number, a 0-dim tensor or shape \(6,\), got \(4,\)"):
        evaluate(model, x, y, eps=torch.full((4,), 0.1), batch_size=2)


@pytest.mark.parametrize("attack", [fgsm, pgd, apgd])
def test_infinite_inputs_are_an_error_even_without_bounds(attack):
    model, x, y = make_mlp_data(n=4, dtype=torch.float32)
    x[1, 2] = float("inf")
    with pytest.raises(ValueError, match="inputs contain NaN or inf"):
        attack(model, x, y, eps=0.1, bounds=None)
    with pytest.raises(ValueError, match="inputs contain NaN or inf"):
        evaluate(model, x, y, eps=0.1, bounds=None)


def test_a_loss_returning_a_scalar_is_an_error():
    model, x, y = make_mlp_data(n=4, dtype=torch.float32)

    def mean_ce(logits, labels, *, targeted=False):
        return nn.functional.cross_entropy(logits, labels)

    with pytest.raises(ValueError, match=r"loss must return one value per sample, shape \(4,\), got \(\)"):
        pgd(model, x, y, eps=0.1, loss=mean_ce)


def test_numpy_and_one_dimensional_inputs_get_messages_about_the_inputs():
    model, x, y = make_mlp_data(n=4, dtype=torch.float32)
    with pytest.raises(TypeError, match=r"inputs must be a torch.Tensor, got ndarray \(convert .*torch.from_numpy"):
        evaluate(model, x.numpy(), y)
    with pytest.raises(TypeError, match=r"labels must be a torch.Tensor .*got ndarray"):
        evaluate(model, x, np.asarray(y))
    with pytest.raises(ValueError, match=r"inputs must have shape \(batch, \.\.\.\).*inputs\[None\]"):
        evaluate(model, x[0], y[:1])
    with pytest.raises(ValueError, match=r"inputs must have shape \(batch, \.\.\.\)"):
        pgd(model, x[0], y[:1], eps=0.1)


def test_inference_mode_is_named():
    model, x, y = make_mlp_data(n=4, dtype=torch.float32)
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"cannot run under torch.inference_mode\(\)"):
        pgd(model, x, y, eps=0.1)
    with torch.inference_mode():
        x_inf = x.clone()
    assert x_inf.is_inference()
    # Tensors made under inference_mode are fine outside it.
    torch.testing.assert_close(pgd(model, x_inf, y, eps=0.1, steps=3), pgd(model, x, y, eps=0.1, steps=3))


class BatchNormMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x):
        return self.net(x)


def test_train_mode_warns_and_batch_norm_survives_batch_shrinking():
    model = BatchNormMLP().train()
    x = torch.rand(8, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pred = model(x).argmax(dim=1)
    # Seven samples are misclassified from the start: the paper's protocol would shrink the
    # attacked batch to the one row left, which BatchNorm1d refuses in train mode.
    y = torch.where(torch.arange(8) == 0, pred, (pred + 1) % 4)
    with pytest.warns(UserWarning, match=r"train\(\) mode: dropout makes the attack random"):
        x_adv = pgd(model, x, y, eps=0.05, steps=10)
    assert x_adv.shape == x.shape and model.training


def test_eval_mode_does_not_warn():
    model, x, y = make_mlp_data(n=4, dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pgd(model, x, y, eps=0.1, steps=2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_perturbation_norm_is_within_eps_up_to_the_rounding_of_the_inputs(dtype):
    model, x, y = make_mlp_data(n=32, dtype=torch.float32)
    model, x = model.to(dtype), x.to(dtype)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    eps = 0.1 if dtype == torch.bfloat16 else 8 / 255
    result = evaluate(model, x, y, attack="pgd", eps=eps, steps=5)
    assert bool(result.within_eps.all()) and result.summary()["all_within_eps"] is True
    # A perturbation beyond eps is reported as such.
    outside = evaluate(model, x, y, attack=lambda m, xb, yb, eps: xb + 2 * eps, eps=eps)
    assert not bool(outside.within_eps.any()) and outside.summary()["all_within_eps"] is False


@pytest.mark.parametrize("momentum", [True, "0.5", 0.0, 1.5])
def test_momentum_and_rho_must_be_numbers_in_the_unit_interval(momentum):
    model, x, y = make_mlp_data(n=4, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"momentum must be in \(0, 1\] or None"):
        pgd(model, x, y, eps=0.1, momentum=momentum)
    with pytest.raises(ValueError, match=r"momentum must be in \(0, 1\], got"):
        apgd(model, x, y, eps=0.1, momentum=None)
    with pytest.raises(ValueError, match=r"rho must be in \(0, 1\], got"):
        apgd(model, x, y, eps=0.1, rho=momentum)


def test_reliability_probe_findings_are_clear_errors():
    model, x, y = make_mlp_data(n=4, dtype=torch.float32)
    with pytest.raises(ValueError, match="NaN or inf logits"):
        pgd(lambda inputs: model(inputs) * float("nan"), x, y, eps=0.1)
    with pytest.raises(ValueError, match="NaN or inf logits"):
        evaluate(lambda inputs: model(inputs) * float("inf"), x, y, eps=0.1)
    with pytest.raises(TypeError, match="callback must be a callable or None, got int"):
        pgd(model, x, y, eps=0.1, callback=5)
    with pytest.raises(TypeError, match="progress must be a callable or None, got int"):
        evaluate(model, x, y, eps=0.1, progress=5)
    with pytest.raises(TypeError, match="model must be a callable, got str"):
        pgd("not a model", x, y, eps=0.1)
    with pytest.raises(TypeError, match="eps must hold real numbers"):
        pgd(model, x, y, eps=torch.full((4,), 0.1, dtype=torch.complex64))
    with pytest.raises(ValueError, match="bounds must be"):
        pgd(model, x, y, eps=0.1, bounds="01")
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\]"):
        evaluate(model, x, y, eps=0.1, targeted=True, targets=y + 5)


def test_tempered_checks_per_sample_and_rule_betas():
    from mifpe_plugins import mifpe_loss, tempered

    z = torch.randn(4, 5)
    t = torch.arange(4)
    with pytest.raises(ValueError, match=r"beta must be finite and > 0 for every sample"):
        tempered("ce", torch.tensor([1.0, -1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"beta must be a number or have shape \(4,\), got \(3,\)"):
        tempered("ce", torch.ones(3))(z, t)
    torch.testing.assert_close(tempered("ce", lambda logits, labels: torch.tensor(2.0))(z, t),
                               tempered("ce", 2.0)(z, t))
    model, x, y = make_mlp_data(n=4, dtype=torch.float32)
    negative_rule = tempered("ce", lambda logits, labels: -torch.ones(logits.shape[0]))
    with pytest.raises(ValueError, match="beta must be finite and > 0"):
        pgd(model, x, y, eps=0.1, loss=negative_rule)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        mifpe_loss(z, t, temperature="1")
    with pytest.raises(TypeError, match="logits must be a floating-point torch.Tensor"):
        mifpe_loss(z.numpy(), t)
    with pytest.raises(TypeError, match="labels must be a torch.Tensor of integer class indices"):
        mifpe_loss(z, t.float())


class _TwoBranches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.ReLU())
        self.second = nn.Linear(8, 4)

    def forward(self, x):
        return self.second(self.first(x))


@pytest.mark.parametrize("raises", [False, True])
def test_model_state_kept_restores_modes_grads_and_requires_grad(raises):
    from mifpe_plugins.attacks._common import model_state_kept

    model = _TwoBranches().eval()
    model.first[1].train()  # mixed modes: one submodule in train mode
    model.second.bias.requires_grad_(False)
    caller_grads = [torch.full((8, 6), 7.0), None, torch.arange(32.0).view(4, 8), None]
    for param, grad in zip(model.parameters(), caller_grads, strict=True):
        param.grad = grad
    saved = [None if g is None else g.clone() for g in caller_grads]
    modes = [m.training for m in model.modules()]
    requires = [p.requires_grad for p in model.parameters()]

    def host_code():
        with model_state_kept(model):
            model.train()
            model.zero_grad()  # set_to_none: the caller's tensors are dropped, not written into
            for param in model.parameters():
                param.requires_grad_(True)
            model(torch.rand(3, 6, generator=torch.Generator().manual_seed(0))).sum().backward()
            assert all(p.grad is not None for p in model.parameters())
            if raises:
                raise RuntimeError("host failure")

    if raises:
        with pytest.raises(RuntimeError, match="host failure"):
            host_code()
    else:
        host_code()
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == requires
    for param, grad, before in zip(model.parameters(), caller_grads, saved, strict=True):
        assert param.grad is grad
        if grad is not None:
            assert torch.equal(grad, before)


def test_looks_like_probabilities_is_the_check_behind_the_warning():
    from mifpe_plugins.attacks._common import check_logits, looks_like_probabilities

    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0)) * 3
    probabilities = logits.softmax(dim=1)
    assert looks_like_probabilities(probabilities) and not looks_like_probabilities(logits)
    # Only what check_logits would accept as logits otherwise: floating, (B, K >= 2).
    assert not looks_like_probabilities(torch.eye(4, dtype=torch.long))
    assert not looks_like_probabilities(torch.ones(3, 1))
    with pytest.warns(UserWarning, match="look like probabilities"):
        check_logits(probabilities, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_logits(logits, 5)
