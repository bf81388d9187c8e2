"""Tiny analytic models for offline tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mifpe_plugins import underflow_threshold


class ScaledLinear(nn.Module):
    """``z = scale * (W x + b)``: a linear classifier whose logit margins grow with ``scale``."""

    def __init__(self, weight: torch.Tensor, scale: float) -> None:
        super().__init__()
        self.linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.zero_()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.linear(x.flatten(1))


def large_margin_problem(dtype: torch.dtype, n: int = 64, dim: int = 20, classes: int = 5, seed: int = 0):
    """A linear model and inputs whose every top-logit margin exceeds 2 * lambda(dtype).

    The unscaled margins are at least 0.5 and the scale is 4 * lambda, so CE's gradient underflows
    to exactly zero, while an L-inf budget of 0.3 crosses the (linear) decision boundary.
    """
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(classes, dim, generator=gen, dtype=torch.float64)
    x = 0.25 + 0.5 * torch.rand(20 * n, dim, generator=gen, dtype=torch.float64)
    raw = x @ weight.T
    top2 = raw.topk(2, dim=1).values
    keep = (top2[:, 0] - top2[:, 1]) >= 0.5
    x = x[keep][:n]
    labels = raw[keep][:n].argmax(dim=1)
    model = ScaledLinear(weight, 4 * underflow_threshold(dtype)).to(dtype).eval()
    return model, x.to(dtype), labels


@pytest.fixture
def fp32_problem():
    return large_margin_problem(torch.float32)


class SmallMLP(nn.Module):
    def __init__(self, dim: int = 6, hidden: int = 16, classes: int = 4, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # centred and stretched so that the unit cube spans several decision regions
        return self.net(8 * (x.flatten(1) - 0.5))


class TinyCNN(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(4 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def tiny_cnn_problem(n: int, *, seed: int = 1, classes: int = 4):
    """A random-weight TinyCNN (the global RNG untouched), ``n`` random 8x8 images and its own predictions as labels."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = TinyCNN(classes=classes).eval()
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def make_mlp_data(n: int = 16, dim: int = 6, classes: int = 4, dtype=torch.float64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    rng_state = torch.get_rng_state()
    model = SmallMLP(dim, 16, classes, seed=seed).to(dtype).eval()
    torch.set_rng_state(rng_state)
    x = torch.rand(n, dim, generator=gen, dtype=dtype)
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    return model, x, labels
