"""Exact top-2 ties: every loss stays finite and MIFPE moves a tied sample whenever CE does."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mifpe_plugins import apgd, evaluate, fgsm, get_loss, mifpe, pgd, tempered
from mifpe_plugins.attacks._steps import Ball

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


class TiedLinear(nn.Module):
    """``z = top * [1, 1, 1/5, 0, 0] + A (x - 1/2)``: at ``x = 1/2`` the two top logits tie exactly.

    Every term is exact in every dtype at the clean point, so the tie is not a rounding accident.
    """

    def __init__(self, dtype: torch.dtype, top: float, dim: int = 6) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.weight = nn.Parameter(torch.randn(5, dim, generator=gen).to(dtype))
        self.register_buffer("offset", torch.tensor([top, top, top / 5, 0.0, 0.0], dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.offset + (x - 0.5) @ self.weight.T


def tied_problem(dtype: torch.dtype, top: float) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = TiedLinear(dtype, top).eval()
    x = torch.full((4, 6), 0.5, dtype=dtype)
    y = torch.zeros(4, dtype=torch.long)  # argmax of a tie is the first index: correct at x
    with torch.no_grad():
        logits = model(x)
    assert torch.equal(logits[:, 0], logits[:, 1]) and bool((model(x).argmax(1) == 0).all())
    return model, x, y


def fooled(model: nn.Module, x_adv: torch.Tensor) -> int:
    with torch.no_grad():
        return int((model(x_adv).argmax(dim=1) != 0).sum())


ATTACKS = {
    "fgsm": lambda m, x, y, loss: fgsm(m, x, y, eps=0.1, loss=loss),
    "pgd": lambda m, x, y, loss: pgd(m, x, y, eps=0.1, steps=5, loss=loss, random_start=False),
    "apgd": lambda m, x, y, loss: apgd(m, x, y, eps=0.1, steps=5, loss=loss, random_start=False),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize(("loss", "top"), [("mifpe", 5.0), (mifpe(10.0), 3.0), ("mifpe", 40.0), ("fnz-1", 5.0)])
def test_a_tied_sample_is_moved_by_mifpe_whenever_ce_moves_it(dtype, attack, loss, top):
    model, x, y = tied_problem(dtype, top)
    by_ce = fooled(model, ATTACKS[attack](model, x, y, "ce"))
    assert by_ce == 4
    assert fooled(model, ATTACKS[attack](model, x, y, loss)) == by_ce


@pytest.mark.parametrize("dtype", DTYPES)
def test_l2_plain_pgd_at_a_tie_moves_and_stays_finite(dtype):
    model, x, y = tied_problem(dtype, 5.0)
    x_adv = pgd(model, x, y, eps=0.5, norm="l2", steps=5, keep_best=False, random_start=False)
    assert torch.isfinite(x_adv).all()
    assert fooled(model, x_adv) == 4
    result = evaluate(model, x, y, attack="pgd", eps=0.5, norm="l2", steps=5, keep_best=False, random_start=False)
    assert result.robust_accuracy == 0.0
    assert torch.isfinite(result.perturbation_norm).all() and bool(result.within_eps.all())


@pytest.mark.parametrize("dtype", DTYPES)
def test_l2_direction_of_a_huge_or_tiny_gradient_has_unit_norm(dtype):
    info = torch.finfo(dtype)
    ball = Ball("l2", torch.zeros(3, 50, dtype=dtype), torch.ones(3, dtype=dtype), None)
    grad = torch.ones(3, 50, dtype=dtype)
    grad[0] *= info.max / 4  # ||g||_2 overflows
    grad[1] *= info.tiny  # ||g||_2 underflows through the squares
    grad[2] = 0
    direction = ball.direction(grad).double()
    norms = direction.norm(dim=1)
    torch.testing.assert_close(norms[:2], torch.ones(2, dtype=torch.float64), rtol=2 * info.eps, atol=0)
    assert norms[2] == 0


def _losses(classes: int, targeted: bool) -> dict:
    losses = {
        "ce": get_loss("ce"), "cw": get_loss("cw"), "mifpe": get_loss("mifpe"), "mifpe(T=10)": mifpe(10.0),
        "fnz-1": get_loss("fnz-1"), f"fnz-{classes - 1}": get_loss(f"fnz-{classes - 1}"),
        "tempered(mifpe, 2)": tempered("mifpe", 2.0),
    }
    if classes >= (4 if targeted else 3):
        losses["dlr"] = get_loss("dlr")
    return losses


@settings(max_examples=150, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    digits=st.lists(st.integers(min_value=-4, max_value=4), min_size=2, max_size=10),
    tie=st.booleans(),
    exponent=st.integers(min_value=-40, max_value=300),
    label=st.integers(min_value=0, max_value=9),
    targeted=st.booleans(),
)
def test_every_loss_and_its_gradient_are_finite_for_any_finite_logits(dtype, digits, tie, exponent, label, targeted):
    info = torch.finfo(dtype)
    raw = torch.tensor(digits, dtype=torch.float64)
    if tie:
        raw[raw.argsort(descending=True)[1]] = raw.max()  # the top two tie exactly
    # Any magnitude the dtype holds, with room for CE's own z - max z (twice the largest |z|).
    scale = min(10.0**exponent, info.max / 16)
    logits = (raw * scale).to(dtype)[None]
    assert torch.isfinite(logits).all()
    labels = torch.tensor([label % len(digits)])
    for name, loss in _losses(len(digits), targeted).items():
        z = logits.clone().requires_grad_(True)
        value = loss(z, labels, targeted=targeted)
        (grad,) = torch.autograd.grad(value.sum(), z)
        assert torch.isfinite(value).all(), (name, logits, value)
        assert torch.isfinite(grad).all(), (name, logits, grad)


@pytest.mark.parametrize("name", ["standard", "binarized", "pgd-at"])
def test_real_ties_of_the_zoo_in_bfloat16_are_attacked_like_ce_attacks_them(name):
    from mifpe_plugins import zoo
    from mifpe_plugins.data import bundled_fashion_mnist_test

    model = zoo.load(name).to(torch.bfloat16)
    x, y = bundled_fashion_mnist_test()
    x = x.to(torch.bfloat16)
    with torch.no_grad():
        logits = model(x)
    top2 = logits.topk(2, dim=1).values
    tied = ((top2[:, 0] == top2[:, 1]) & (logits.argmax(dim=1) == y)).nonzero().flatten()
    assert tied.numel() >= 1  # bfloat16's 8-bit mantissa makes exact ties on real images
    x, y = x[tied], y[tied]
    by_ce = (model(fgsm(model, x, y, eps=0.1, loss="ce")).argmax(dim=1) != y)
    by_mifpe = (model(fgsm(model, x, y, eps=0.1, loss="mifpe")).argmax(dim=1) != y)
    assert bool((by_mifpe >= by_ce).all())
