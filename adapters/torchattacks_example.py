"""torchattacks + mifpe_plugins: the MIFPE loss breaks a model that only looks robust to CE-PGD.

A linear classifier with huge logit margins (every top-1 minus top-2 gap > 2 x 103.28, float32's
softmax underflow margin) makes cross-entropy's input gradient exactly zero, so torchattacks' own
PGD cannot move. The same model, inputs and budget through ``torchattacks.MIFPE`` (added to
torchattacks by ``import mifpe_plugins``) find adversarial examples. Runs in a few seconds on a CPU.

    pip install -e ".[torchattacks]"
    python adapters/torchattacks_example.py
"""

import torch
import torchattacks
from torch import nn

import mifpe_plugins  # noqa: F401  (adds torchattacks.MIFPE, .APGDMIFPE, .PGDPP, ...)


def large_margin_model(dim: int = 20, classes: int = 5, n: int = 64, seed: int = 0):
    """A linear model scaled so that every logit margin exceeds twice float32's underflow margin."""
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(classes, dim, generator=gen)
    images = 0.25 + 0.5 * torch.rand(20 * n, 1, 4, 5, generator=gen)
    raw = images.flatten(1) @ weight.T
    top2 = raw.topk(2, dim=1).values
    keep = (top2[:, 0] - top2[:, 1]) >= 0.5
    images, labels = images[keep][:n], raw[keep][:n].argmax(dim=1)
    lam = mifpe_plugins.underflow_threshold(torch.float32)
    model = nn.Sequential(nn.Flatten(), nn.Linear(dim, classes, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(4 * lam * weight)  # margins >= 0.5 * 4 * lambda = 2 * lambda
    return model.eval(), images, labels


def robust_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(images).argmax(dim=1) == labels).float().mean().item()


def main() -> None:
    model, images, labels = large_margin_model()
    eps = 0.08
    stock = torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=10, random_start=False)
    ours = torchattacks.MIFPE(model, eps=eps, steps=10)
    print(f"clean accuracy:                         {robust_accuracy(model, images, labels):6.1%}")
    print(f"torchattacks.PGD   (CE)    robust acc.: {robust_accuracy(model, stock(images, labels), labels):6.1%}")
    print(f"torchattacks.MIFPE (MIFPE) robust acc.: {robust_accuracy(model, ours(images, labels), labels):6.1%}")


if __name__ == "__main__":
    main()
