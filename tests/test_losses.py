import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mifpe_plugins import (
    ce_loss,
    cw_loss,
    dlr_loss,
    fnz_beta,
    fnz_loss,
    get_loss,
    logit_margin,
    mifpe_beta,
    mifpe_loss,
    tempered,
    top_margin,
    underflow_threshold,
)

Z = torch.tensor([[3.0, 1.0, 0.5, -1.0], [0.0, 2.0, 2.0, 1.0]], dtype=torch.float64)
Y = torch.tensor([0, 3])


def _ce(row, label):
    return math.log(sum(math.exp(v) for v in row)) - row[label]


def test_ce_hand_computed_and_targeted_sign():
    expected = torch.tensor([_ce(Z[0].tolist(), 0), _ce(Z[1].tolist(), 3)], dtype=torch.float64)
    torch.testing.assert_close(ce_loss(Z, Y), expected)
    torch.testing.assert_close(ce_loss(Z, Y, targeted=True), -expected)


def test_cw_hand_computed_and_targeted_sign():
    # untargeted: -z_y + max_{i!=y} z_i ; targeted: z_t - max_{i!=t} z_i
    torch.testing.assert_close(cw_loss(Z, Y), torch.tensor([1.0 - 3.0, 2.0 - 1.0], dtype=torch.float64))
    torch.testing.assert_close(cw_loss(Z, Y, targeted=True), torch.tensor([3.0 - 1.0, 1.0 - 2.0], dtype=torch.float64))


def test_dlr_hand_computed():
    # row 0: -(3 - 1) / (3 - 0.5); row 1: -(1 - 2) / (2 - 1)
    torch.testing.assert_close(dlr_loss(Z, Y), torch.tensor([-2.0 / 2.5, 1.0], dtype=torch.float64))


def test_dlr_targeted_autoattack_form():
    targets = torch.tensor([1, 0])
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)
    expected = torch.tensor(
        [-(3.0 - 1.0) / (3.0 - (0.5 - 1.0) / 2), -(1.0 - 0.0) / (2.0 - (1.0 + 0.0) / 2)], dtype=torch.float64
    )
    torch.testing.assert_close(dlr_loss(Z, targets, targeted=True, source_labels=Y), expected)
    # without source labels the best non-target logit stands in for z_y
    expected_free = torch.tensor([-(3.0 - 1.0) / 3.25, -(2.0 - 0.0) / 1.5], dtype=torch.float64)
    torch.testing.assert_close(dlr_loss(Z, targets, targeted=True), expected_free)


def test_dlr_needs_three_classes():
    with pytest.raises(ValueError, match="at least 3 classes"):
        dlr_loss(torch.zeros(2, 2), torch.zeros(2, dtype=torch.long))


def test_mifpe_hand_computed_and_targeted_sign():
    delta = torch.tensor([2.0, 0.0])  # second row is a tie
    assert torch.equal(top_margin(Z), delta.double())
    scaled0 = [v / 2.0 for v in Z[0].tolist()]
    assert mifpe_loss(Z[:1], Y[:1]).item() == pytest.approx(_ce(scaled0, 0), rel=1e-12)
    assert mifpe_loss(Z[:1], Y[:1], targeted=True).item() == pytest.approx(-_ce(scaled0, 0), rel=1e-12)
    scaled_t = [3 * v / 2.0 for v in Z[0].tolist()]
    assert mifpe_loss(Z[:1], Y[:1], temperature=3.0).item() == pytest.approx(_ce(scaled_t, 0), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_mifpe_tie_is_finite(dtype):
    z = torch.tensor([[1.0, 1.0, 0.0], [2.0, 2.0, 2.0]], dtype=dtype, requires_grad=True)
    y = torch.tensor([0, 2])
    loss = mifpe_loss(z, y)
    (grad,) = torch.autograd.grad(loss.sum(), z)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    assert torch.isfinite(mifpe_beta(z)).all()


def test_mifpe_two_classes():
    z = torch.tensor([[5.0, -5.0]], requires_grad=True)
    loss = mifpe_loss(z, torch.tensor([0]))
    expected = math.log(1 + math.exp(-1.0))  # scaled margin is T = 1
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    scale=st.floats(min_value=1e-3, max_value=1e3),
    seed=st.integers(min_value=0, max_value=10_000),
    classes=st.integers(min_value=2, max_value=12),
)
def test_mifpe_invariant_to_logit_scale(scale, seed, classes):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(5, classes, generator=gen, dtype=torch.float64) * 10
    y = torch.randint(0, classes, (5,), generator=gen)
    z1 = z.clone().requires_grad_(True)
    z2 = (z * scale).requires_grad_(True)
    l1, l2 = mifpe_loss(z1, y), mifpe_loss(z2, y)
    torch.testing.assert_close(l1, l2, rtol=1e-9, atol=1e-12)
    (g1,) = torch.autograd.grad(l1.sum(), z1)
    (g2,) = torch.autograd.grad(l2.sum(), z2)
    # d/dz of CE(T z / Delta) scales by 1/scale; the direction is unchanged.
    torch.testing.assert_close(g1, g2 * scale, rtol=1e-7, atol=1e-12)


def test_mifpe_gradient_nonzero_where_ce_underflows():
    lam = underflow_threshold(torch.float32)
    z = torch.tensor([[2 * lam, 0.0, -1.0]], requires_grad=True)
    y = torch.tensor([0])
    (g_ce,) = torch.autograd.grad(ce_loss(z, y).sum(), z)
    (g_mifpe,) = torch.autograd.grad(mifpe_loss(z, y).sum(), z)
    assert torch.count_nonzero(g_ce) == 0
    assert torch.count_nonzero(g_mifpe) == 3


def test_logit_margin():
    torch.testing.assert_close(logit_margin(Z, Y), torch.tensor([2.0, -1.0], dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_fnz_keeps_exactly_n_logits(dtype):
    z = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]], dtype=dtype)
    for n in range(1, 5):
        beta = fnz_beta(z, n)
        probs = (z * beta[:, None]).softmax(dim=1)
        assert int((probs > 0).sum()) == n
    with pytest.raises(ValueError, match="n must be in"):
        fnz_beta(z, 5)
    assert fnz_loss(2)(z, torch.tensor([0])).shape == (1,)


def test_tempered_number_tensor_rule():
    z = torch.randn(3, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    torch.testing.assert_close(tempered("ce", 0.5)(z, y), ce_loss(0.5 * z, y))
    beta = torch.tensor([0.1, 1.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(tempered("ce", beta)(z, y), ce_loss(z * beta[:, None], y))
    torch.testing.assert_close(tempered("ce", lambda logits, labels: mifpe_beta(logits))(z, y), mifpe_loss(z, y))
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        tempered("ce", -1.0)


def test_get_loss_names_and_errors():
    for name in ["ce", "CE", "cw", "dl", "dlr", "mifpe", "njs", "hns", "fnz-3"]:
        assert callable(get_loss(name))
    assert get_loss(ce_loss) is ce_loss
    with pytest.raises(ValueError, match="unknown loss 'foo'"):
        get_loss("foo")
    with pytest.raises(TypeError, match="loss must be a name or a callable"):
        get_loss(3)


def test_resolve_loss_is_the_one_place_for_loss_temperature_and_beta():
    from mifpe_plugins.losses import resolve_loss
    from mifpe_plugins.temperature import NJS

    z = torch.randn(4, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(resolve_loss()(z, y), mifpe_loss(z, y))
    torch.testing.assert_close(resolve_loss("mifpe", temperature=3.0)(z, y), mifpe_loss(z, y, temperature=3.0))
    assert repr(resolve_loss("mifpe", temperature=3.0)) == "mifpe(T=3)"
    torch.testing.assert_close(resolve_loss("ce", beta=0.5)(z, y), ce_loss(0.5 * z, y))
    assert repr(resolve_loss("ce", beta="njs")) == "ce-njs" and isinstance(resolve_loss("ce", beta="NJS").beta, NJS)
    with pytest.raises(ValueError, match="temperature is MIFPE's T and applies only to loss='mifpe'"):
        resolve_loss("ce", temperature=2.0)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        resolve_loss("mifpe", temperature=0.0)
    with pytest.raises(ValueError, match="beta must be one of 'njs', 'hns'"):
        resolve_loss("ce", beta="foo")
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        resolve_loss("ce", beta=-1.0)
    with pytest.raises(TypeError, match="beta must be a name"):
        resolve_loss("ce", beta=True)
    with pytest.raises(ValueError, match="unknown loss 'foo'"):
        resolve_loss("foo")
