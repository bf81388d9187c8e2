"""A registry of small defended models trained by our own code on Fashion-MNIST (eps = 0.1).

Each entry has a recipe (architecture, objective, epochs, seed) and, once trained, weights and a
training log shipped in ``mifpe_plugins/_data/zoo/``: ``<name>.pt`` (state dict) and
``<name>.json`` (time, clean accuracy on the bundled test subset, logit-margin statistics).
``python -m mifpe_plugins.zoo train NAME`` retrains one on the CPU from Debian's
``dataset-fashion-mnist``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import bundled_fashion_mnist_test, load_fashion_mnist
from .losses import logit_margin, top_margin
from .numerics import underflow_threshold

__all__ = ["SmallCNN", "Recipe", "RECIPES", "available", "load", "train", "training_log"]


class SmallCNN(nn.Module):
    """TRADES' MNIST SmallCNN: conv32-conv32-pool-conv64-conv64-pool-fc200-fc200-fc10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 4 * 4, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(),
            nn.Linear(200, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _ce_step(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(model(x), y)


def _hinge_step(margin: float) -> Callable[[nn.Module, Tensor, Tensor], Tensor]:
    # Pushes z_y - max_{i != y} z_i up to `margin`: in the spirit of large-margin defences such as
    # Neural level sets, whose float32 margins exceed the underflow threshold (~103).
    def step(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return torch.relu(margin - logit_margin(model(x), y)).mean()

    return step


@dataclass(frozen=True)
class Recipe:
    """How a zoo model is trained: a list of (epochs, learning rate, per-batch loss) stages."""

    name: str
    description: str
    stages: tuple[tuple[int, float, Callable[[nn.Module, Tensor, Tensor], Tensor]], ...]
    seed: int = 0
    batch_size: int = 128


RECIPES: dict[str, Recipe] = {
    "standard": Recipe(
        "standard", "SmallCNN, cross-entropy, Adam, 2 epochs (no defence)",
        stages=((2, 1e-3, _ce_step),),
    ),
    "large-margin": Recipe(
        "large-margin",
        "SmallCNN, 2 epochs cross-entropy then 1 epoch hinge on the logit margin (target 250): most "
        "float32 margins exceed lambda ~ 103, so CE's gradient underflows (Neural-level-sets-like)",
        stages=((2, 1e-3, _ce_step), (1, 1e-3, _hinge_step(250.0))),
    ),
}


def _zoo_dir() -> Path:
    return Path(str(resources.files("mifpe_plugins") / "_data" / "zoo"))


def available() -> list[str]:
    """Recipe names whose trained weights ship with the package."""
    return sorted(name for name in RECIPES if (_zoo_dir() / f"{name}.pt").exists())


def _check_name(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown zoo model {name!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def load(name: str, *, device: str | torch.device = "cpu") -> nn.Module:
    """A trained zoo model in eval mode."""
    _check_name(name)
    path = _zoo_dir() / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(
            f"zoo model {name!r} has no shipped weights ({path}); train it with "
            f"`python -m mifpe_plugins.zoo train {name}`"
        )
    model = SmallCNN()
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"checkpoint {path} does not match the SmallCNN architecture: {error}") from None
    return model.to(device).eval()


def training_log(name: str) -> dict:
    """The JSON log written when the shipped weights were trained."""
    _check_name(name)
    return json.loads((_zoo_dir() / f"{name}.json").read_text())


def margin_statistics(model: nn.Module, inputs: Tensor, labels: Tensor) -> dict:
    """Clean accuracy and top-logit margins of correctly classified samples vs the lambdas."""
    with torch.no_grad():
        logits = model(inputs)
    correct = logits.argmax(1) == labels
    delta = top_margin(logits)[correct]
    stats = {"clean_accuracy": 100 * float(correct.float().mean()), "n": int(labels.numel())}
    if delta.numel():
        stats["margin_median"] = float(delta.median())
        for label, dtype in (("fp16", torch.float16), ("fp32", torch.float32), ("fp64", torch.float64)):
            lam = underflow_threshold(dtype)
            stats[f"share_above_lambda_{label}"] = 100 * float((delta >= lam).float().mean())
    return stats


def train(
    name: str, *, root: str | Path | None = None, out_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> tuple[nn.Module, dict]:
    """Train a zoo model on the Fashion-MNIST training split and write its weights and log."""
    recipe = _check_name(name)
    x_train, y_train = load_fashion_mnist(root, split="train")
    rng_state = torch.get_rng_state()
    torch.manual_seed(recipe.seed)
    try:
        model = SmallCNN()
        tic = time.perf_counter()
        for stage, (epochs, lr, step) in enumerate(recipe.stages):
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
            for epoch in range(epochs):
                model.train()
                order = torch.randperm(len(x_train))
                for index in order.split(recipe.batch_size):
                    loss = step(model, x_train[index], y_train[index])
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                log(f"{name}: stage {stage} epoch {epoch + 1}/{epochs} done, {time.perf_counter() - tic:.0f} s")
        seconds = time.perf_counter() - tic
    finally:
        torch.set_rng_state(rng_state)
    model.eval()
    x_test, y_test = bundled_fashion_mnist_test()
    report = {
        "name": name, "description": recipe.description, "seconds": seconds,
        "torch": torch.__version__, "seed": recipe.seed,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bundled_test_subset": margin_statistics(model, x_test, y_test),
    }
    target = Path(out_dir) if out_dir is not None else _zoo_dir()
    target.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), target / f"{name}.pt")
    (target / f"{name}.json").write_text(json.dumps(report, indent=2))
    log(f"{name}: {json.dumps(report['bundled_test_subset'])}")
    return model, report


if __name__ == "__main__":  # pragma: no cover
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "train":
        raise SystemExit(f"usage: python -m mifpe_plugins.zoo train NAME  (NAME in {', '.join(sorted(RECIPES))})")
    train(sys.argv[2])
