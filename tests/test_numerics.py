import pytest
import torch

from mifpe_plugins import ce_loss, smallest_subnormal, underflow_threshold


@pytest.mark.parametrize(
    "dtype, expected",
    [(torch.float16, 16.64), (torch.float32, 103.28), (torch.float64, 744.44)],
)
def test_underflow_threshold_matches_paper(dtype, expected):
    assert underflow_threshold(dtype) == pytest.approx(expected, abs=0.1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_threshold_is_where_exp_underflows(dtype):
    lam = underflow_threshold(dtype)
    assert torch.exp(torch.tensor(-(lam - 0.5), dtype=dtype)) > 0
    assert torch.exp(torch.tensor(-(lam + 1.0), dtype=dtype)) == 0
    assert smallest_subnormal(dtype) > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_ce_gradient_exactly_zero_above_threshold(dtype):
    lam = underflow_threshold(dtype)
    z = torch.tensor([[lam + 1.0, 0.0, -0.5]], dtype=dtype, requires_grad=True)
    (grad,) = torch.autograd.grad(ce_loss(z, torch.tensor([0])).sum(), z)
    assert torch.count_nonzero(grad) == 0
    z = torch.tensor([[lam / 2, 0.0, -0.5]], dtype=dtype, requires_grad=True)
    (grad,) = torch.autograd.grad(ce_loss(z, torch.tensor([0])).sum(), z)
    assert torch.count_nonzero(grad) > 0


def test_non_float_dtype_rejected():
    with pytest.raises(ValueError, match="floating-point dtype"):
        smallest_subnormal(torch.int32)


def test_percent_underflowing_counts_margins_at_or_above_lambda():
    from mifpe_plugins.numerics import percent_underflowing

    lam16 = underflow_threshold(torch.float16)
    margins = torch.tensor([0.5, lam16, lam16 + 1, 200.0], dtype=torch.float64)
    assert percent_underflowing(margins, torch.float16) == 75.0
    assert percent_underflowing(margins, torch.float32) == 25.0
    assert percent_underflowing(margins[:0], torch.float32) == 0.0
