import math

import pytest
import torch
import torch.nn.functional as F
from conftest import make_mlp_data

from mifpe_plugins import NJS, njs_beta, njs_beta1, prop1_beta
from mifpe_plugins.temperature import (
    hessian_frobenius_norm,
    hns_beta,
    hns_grid,
    input_logit_jacobian,
    jacobian_singular_values,
)


def test_prop1_closed_form_and_guarantee():
    gamma = torch.tensor([2.0, 5.0], dtype=torch.float64)
    beta = prop1_beta(gamma, 0.01, 10)
    expected = -math.log(0.01 / (9 * 0.99)) / gamma
    torch.testing.assert_close(beta, expected)
    # worst case for Proposition 1: all other logits at the bottom of the range
    for g, b in zip(gamma.tolist(), beta.tolist(), strict=False):
        z = torch.tensor([g] + [0.0] * 9, dtype=torch.float64)
        assert 1 - (b * 0.999 * z).softmax(0)[0] > 0.01
    with pytest.raises(ValueError, match="rho must be in"):
        prop1_beta(gamma, 0.95, 10)


def test_input_logit_jacobian_matches_autograd():
    model, x, _ = make_mlp_data(n=3)
    logits, jac = input_logit_jacobian(model, x)
    for i in range(3):
        ref = torch.autograd.functional.jacobian(lambda v: model(v[None])[0], x[i])
        torch.testing.assert_close(jac[i], ref)
    torch.testing.assert_close(logits, model(x).detach())


def test_njs_singular_values_match_svdvals():
    model, x, _ = make_mlp_data(n=5)
    _, jac = input_logit_jacobian(model, x)
    sv = jacobian_singular_values(jac)
    for i in range(5):
        ref = torch.linalg.svdvals(torch.autograd.functional.jacobian(lambda v: model(v[None])[0], x[i]))
        torch.testing.assert_close(sv[i], ref)
    beta1 = njs_beta1(model, x, samples=5)
    torch.testing.assert_close(beta1, 1 / sv.mean())


def test_njs_rule_keeps_error_signal():
    logits = torch.tensor([[40.0, 0.0, -3.0], [0.2, 0.1, 0.0]], dtype=torch.float64)
    beta1 = torch.tensor(1.0, dtype=torch.float64)
    beta = njs_beta(logits, beta1, rho=0.01)
    # confident row: beta_2 from Proposition 1 with gamma = range; flat row: beta_2 = 1
    assert beta[0].item() == pytest.approx(-math.log(0.01 / (2 * 0.99)) / 43.0)
    assert beta[1].item() == 1.0
    p_top = (logits * beta[:, None]).softmax(1).amax(1)
    assert (1 - p_top[0]).item() >= 0.01 * (1 - 1e-9)
    with pytest.raises(RuntimeError, match="NJS needs beta1"):
        NJS()(logits, torch.tensor([0, 0]))


@pytest.mark.parametrize("beta", [0.05, 0.7, 3.0])
def test_hns_closed_form_equals_double_backward(beta):
    model, x, y = make_mlp_data(n=4)
    logits, jac = input_logit_jacobian(model, x)
    closed = hessian_frobenius_norm(logits, jac, torch.full((4, 1), beta, dtype=torch.float64))[:, 0]
    for i in range(4):
        hess = torch.autograd.functional.hessian(
            lambda v, i=i: F.cross_entropy(beta * model(v[None]), y[i : i + 1]), x[i]
        )
        assert closed[i].item() == pytest.approx(hess.norm().item(), rel=1e-4)


def test_hns_beta_is_grid_argmax():
    model, x, y = make_mlp_data(n=6)
    betas = hns_beta(model, x, edge_fallback=None)
    logits, jac = input_logit_jacobian(model, x)
    grid = hns_grid(logits)
    assert grid.shape == (6, 100)
    assert torch.all(grid[:, 1:] > grid[:, :-1])
    for i in range(6):
        norms = []
        for b in grid[i].tolist():
            hess = torch.autograd.functional.hessian(
                lambda v, b=b, i=i: F.cross_entropy(b * model(v[None]), y[i : i + 1]), x[i]
            )
            norms.append(hess.norm().item())
        best = max(range(100), key=lambda j: norms[j])
        assert betas[i].item() == pytest.approx(grid[i, best].item(), rel=1e-9)


def test_hns_edge_fallback():
    # Samples whose maximum sits at a grid end get the fallback; the others keep their argmax.
    model, x, _ = make_mlp_data(n=8)
    free = hns_beta(model, x, edge_fallback=None)
    fixed = hns_beta(model, x, edge_fallback=1.0)
    logits, _ = input_logit_jacobian(model, x)
    grid = hns_grid(logits)
    at_edge = (free == grid[:, 0]) | (free == grid[:, -1])
    torch.testing.assert_close(fixed[at_edge], torch.ones_like(fixed[at_edge]))
    torch.testing.assert_close(fixed[~at_edge], free[~at_edge])
