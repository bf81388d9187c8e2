"""MIFPE inside ART's PGD: a large-margin toy model that stock cross-entropy cannot attack.

Run:  python adapters/art_example.py

The model is linear with every top-logit margin above 200 (float32 softmax underflows past
~103), so cross-entropy's input gradient is exactly zero and ART's PGD never moves. The same ART
attack with the MIFPE loss (CVPR 2023, eq. 7) finds adversarial examples for every input.
"""

from __future__ import annotations

import numpy as np
import torch
from art.attacks.evasion import ProjectedGradientDescent
from art.estimators.classification import PyTorchClassifier
from torch import nn

from mifpe_plugins.adapters.art import mifpe_classifier

NUM_CLASSES, DIM, COUNT = 5, 20, 64


def large_margin_toy_problem(seed: int = 0) -> tuple[nn.Module, np.ndarray, np.ndarray]:
    """A linear classifier whose logit margins are at least 0.5 before a x400 scale."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(NUM_CLASSES, DIM, generator=gen)
    x = 0.25 + 0.5 * torch.rand(20 * COUNT, DIM, generator=gen)
    top2 = (x @ weight.T).topk(2, dim=1).values
    x = x[(top2[:, 0] - top2[:, 1]) >= 0.5][:COUNT]
    linear = nn.Linear(DIM, NUM_CLASSES, bias=False)
    with torch.no_grad():
        linear.weight.copy_(400.0 * weight)
    model = linear.eval()
    with torch.no_grad():
        labels = model(x).argmax(dim=1)
    return model, x.numpy(), labels.numpy()


def accuracy(model: nn.Module, x: np.ndarray, labels: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(dim=1).numpy() == labels).mean())


def main() -> None:
    model, x, labels = large_margin_toy_problem()
    stock = PyTorchClassifier(
        model, loss=nn.CrossEntropyLoss(), input_shape=(DIM,), nb_classes=NUM_CLASSES,
        clip_values=(0.0, 1.0), device_type="cpu",
    )
    ours = mifpe_classifier(model, input_shape=(DIM,), nb_classes=NUM_CLASSES)
    attack = {"eps": 0.3, "eps_step": 0.075, "max_iter": 10, "verbose": False}
    x_ce = ProjectedGradientDescent(stock, **attack).generate(x, labels)
    x_mifpe = ProjectedGradientDescent(ours, **attack).generate(x, labels)
    print(f"clean accuracy: {accuracy(model, x, labels):.1%}")
    print(f"ART PGD-10, stock cross-entropy: robust accuracy {accuracy(model, x_ce, labels):.1%}")
    print(f"ART PGD-10, MIFPE loss: robust accuracy {accuracy(model, x_mifpe, labels):.1%}")


if __name__ == "__main__":
    main()
