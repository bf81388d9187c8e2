"""MIFPE-PGD through torchattacks, Foolbox, ART and the core: the same attack gives the same result.

Each host has its own PGD loop; all four are run with the host-neutral protocol they share (no
random start, constant step, no momentum, the last iterate returned), so the per-sample outcome
must agree. Tolerance: on the linear large-margin model exactly (0 disagreements); on the ReLU MLP
at most 1 sample in 32, because the hosts project onto the ball in a different order (Foolbox and
torchattacks compute ``x0 + clip(x - x0)``, the core clamps against precomputed bounds), which can
move a coordinate by one ulp and, rarely, flip a sign of a later gradient.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import large_margin_problem, make_mlp_data

from mifpe_plugins import pgd

EPS, ALPHA, STEPS = 0.08, 0.01, 15


def core_success(model, x, y):
    x_adv = pgd(
        model, x, y, eps=EPS, steps=STEPS, step_size=ALPHA, schedule="constant", momentum=None,
        loss="mifpe", random_start=False, keep_best=False,
    )
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


def torchattacks_success(model, x, y):
    from mifpe_plugins.adapters.torchattacks import MIFPE

    attack = MIFPE(
        model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=False, momentum=None,
        schedule="constant", keep_best=False,
    )
    with torch.no_grad():
        return model(attack(x, y)).argmax(1) != y


def foolbox_success(model, x, y):
    import foolbox as fb

    from mifpe_plugins.adapters.foolbox import LinfMIFPEPGD

    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    attack = LinfMIFPEPGD(steps=STEPS, abs_stepsize=ALPHA, random_start=False)
    _, clipped, _ = attack(fmodel, x, y, epsilons=EPS)
    with torch.no_grad():
        return model(clipped).argmax(1) != y


def art_success(model, x, y):
    from art.attacks.evasion import ProjectedGradientDescent

    from mifpe_plugins.adapters.art import mifpe_classifier

    clf = mifpe_classifier(model, input_shape=tuple(x.shape[1:]), nb_classes=int(model(x[:1]).shape[1]))
    attack = ProjectedGradientDescent(
        clf, norm=np.inf, eps=EPS, eps_step=ALPHA, max_iter=STEPS, num_random_init=0,
        batch_size=x.shape[0], verbose=False,
    )
    x_adv = torch.from_numpy(attack.generate(x.numpy(), y.numpy()))
    with torch.no_grad():
        return model(x_adv).argmax(1) != y


HOSTS = {"torchattacks": torchattacks_success, "foolbox": foolbox_success, "art": art_success}


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_hosts_agree_with_core_on_large_margin_model(host):
    model, x, y = large_margin_problem(torch.float32, n=48)
    ours = core_success(model, x, y)
    assert 0.2 < ours.float().mean() < 1.0  # a non-trivial split, so agreement means something
    assert torch.equal(HOSTS[host](model, x, y), ours)


@pytest.mark.parametrize("host", sorted(HOSTS))
def test_hosts_agree_with_core_on_relu_mlp(host):
    model, x, y = make_mlp_data(n=32, dtype=torch.float32, seed=2)
    ours = core_success(model, x, y)
    assert int((HOSTS[host](model, x, y) != ours).sum()) <= 1
