"""MIFPE inside AutoAttack: a toy model on which AutoAttack's own APGD-CE sees no gradient.

Run: python adapters/autoattack_example.py   (needs: pip install -e ".[autoattack]", or
upstream AutoAttack from git, which is used when both are installed)

The model is linear with logit margins above float32's softmax underflow margin (~103), so the
cross-entropy gradient is exactly zero and stock APGD-CE cannot move; the same AutoAttack with the
MIFPE loss (MIFPE paper, eq. 7 untargeted, eq. 8 in APGD-T) can. The exact robust accuracy of a
linear model is known, and printed for comparison.
"""

import torch
from torch import nn

from mifpe_plugins import underflow_threshold
from mifpe_plugins.adapters.autoattack import (
    describe_distribution,
    mifpe_autoattack,
    run_standard_evaluation,
)

EPS = 0.09


def large_margin_toy(n: int = 64, dim: int = 20, classes: int = 5):
    """A linear classifier scaled so every clean top-logit margin exceeds 2 * lambda(float32)."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(classes, dim, generator=gen, dtype=torch.float64)
    inputs = 0.25 + 0.5 * torch.rand(20 * n, dim, generator=gen, dtype=torch.float64)
    top2 = (inputs @ weight.T).topk(2, dim=1).values
    inputs = inputs[(top2[:, 0] - top2[:, 1]) >= 0.5][:n].float()  # unscaled margin >= 0.5
    net = nn.Linear(dim, classes, bias=False)
    with torch.no_grad():
        net.weight.copy_(4 * underflow_threshold(torch.float32) * weight)
    net.eval()
    with torch.no_grad():
        labels = net(inputs).argmax(dim=1)
    return net, inputs, labels


def exact_robust_accuracy(net: nn.Linear, inputs, labels, eps: float) -> float:
    """Fraction of samples farther than eps (L-inf) from the linear decision boundary."""
    weight = net.weight.double()
    logits = inputs.double() @ weight.T
    own = logits.gather(1, labels[:, None])
    dual_norms = (weight[labels][:, None, :] - weight[None]).abs().sum(-1)
    distance = ((own - logits) / dual_norms).scatter(1, labels[:, None], float("inf"))
    return (distance.amin(dim=1) > eps).double().mean().item()


def robust_accuracy(net: nn.Module, x_adv, labels) -> float:
    with torch.no_grad():
        return (net(x_adv).argmax(dim=1) == labels).float().mean().item()


def main() -> None:
    net, images, labels = large_margin_toy()
    print(f"AutoAttack: {describe_distribution()}")
    print(f"clean accuracy: {100 * robust_accuracy(net, images, labels):.1f}%")

    # The host's own AutoAttack (loss=None: nothing swapped), APGD-CE only (one restart, as in its
    # standard version). verbose=False: no log, whichever distribution is installed.
    stock = mifpe_autoattack(net, "Linf", EPS, loss=None, version="custom", attacks_to_run=["apgd-ce"], verbose=False)
    stock.apgd.n_restarts = 1
    x_adv, _ = run_standard_evaluation(stock, images, labels)  # one call for both distributions
    print(f"robust accuracy, AutoAttack APGD-CE (stock): {100 * robust_accuracy(net, x_adv, labels):.1f}%")

    # The same attacks with MIFPE in APGD and APGD-T (5 classes: at most 4 target classes).
    ours = mifpe_autoattack(net, "Linf", EPS, version="custom", attacks_to_run=["apgd-ce", "apgd-t"], verbose=False)
    ours.apgd.n_restarts = 1
    ours.apgd_targeted.n_target_classes = 4
    for attacks in (["apgd-ce"], ["apgd-ce", "apgd-t"]):
        ours.attacks_to_run = attacks
        x_adv, _ = run_standard_evaluation(ours, images, labels)
        name = " + ".join(a.upper() for a in attacks)
        print(f"robust accuracy, AutoAttack {name} with MIFPE: {100 * robust_accuracy(net, x_adv, labels):.1f}%")
    print(f"exact robust accuracy of this linear model: {100 * exact_robust_accuracy(net, images, labels, EPS):.1f}%")


if __name__ == "__main__":
    main()
