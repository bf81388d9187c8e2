"""MIFPE and PGD++ inside Foolbox: a toy model on which Foolbox's own LinfPGD sees no gradient.

Run: python adapters/foolbox_example.py   (needs: pip install -e ".[foolbox]")

The model is linear with logit margins above float32's softmax underflow margin (~103), so the
cross-entropy gradient is exactly zero and stock PGD cannot move; the same Foolbox attack with the
MIFPE loss (MIFPE paper, eq. 7) or PGD++ temperature scaling (HNS, Alg. 2) can.
"""

import foolbox as fb
import torch
from torch import nn

from mifpe_plugins import underflow_threshold
from mifpe_plugins.adapters.foolbox import LinfMIFPEPGD, LinfPGDPP


def large_margin_toy(n: int = 64, dim: int = 20, classes: int = 5):
    """A linear classifier scaled so every clean top-logit margin exceeds 2 * lambda(float32)."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(classes, dim, generator=gen)
    inputs = 0.25 + 0.5 * torch.rand(20 * n, dim, generator=gen)
    top2 = (inputs @ weight.T).topk(2, dim=1).values
    inputs = inputs[(top2[:, 0] - top2[:, 1]) >= 0.5][:n]  # unscaled margin >= 0.5
    net = nn.Linear(dim, classes, bias=False)
    with torch.no_grad():
        net.weight.copy_(4 * underflow_threshold(torch.float32) * weight)
    net.eval()
    with torch.no_grad():
        labels = net(inputs).argmax(dim=1)
    return net, inputs, labels


def main() -> None:
    net, images, labels = large_margin_toy()
    fmodel = fb.PyTorchModel(net, bounds=(0, 1))
    criterion = fb.criteria.Misclassification(labels)
    eps = 0.3
    print(f"clean accuracy: {100 * fb.utils.accuracy(fmodel, images, labels):.1f}%")
    attacks = {
        "Foolbox LinfPGD (CE)": fb.attacks.LinfPGD(steps=40, random_start=False),
        "LinfMIFPEPGD (MIFPE)": LinfMIFPEPGD(steps=40, random_start=False),
        "LinfPGDPP (HNS)": LinfPGDPP(beta="hns", steps=40, random_start=False),
    }
    for name, attack in attacks.items():
        _, _, success = attack(fmodel, images, criterion, epsilons=eps)
        robust = 1.0 - success.float().mean().item()
        print(f"robust accuracy, {name}: {100 * robust:.1f}%")


if __name__ == "__main__":
    main()
