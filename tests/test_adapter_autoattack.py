"""AutoAttack adapter: parity with stock AutoAttack, the MIFPE boost, and honest behaviour.

Tested against PyPI ``pyautoattack`` (installed here); upstream ``autoattack`` shares its
``autopgd_base`` module line for line and is reached through the same seam.
"""

import importlib
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import large_margin_problem, make_mlp_data
from pyautoattack import AutoAttack
from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

import mifpe_plugins
from mifpe_plugins.adapters import autoattack as aa

REPO = Path(__file__).resolve().parents[1]

# On large_margin_problem(float32) every clean margin exceeds 2 * lambda, so CE's gradient is
# exactly zero. At eps = 0.09, 35 of the 64 samples lie within eps of the (linear) boundary, yet
# no random start of stock APGD-CE with seed 0 crosses it: stock robust accuracy = clean = 64/64.
EPS = 0.09
# The exact answer is known (linear model), and the core's MIFPE-PGD reaches it. APGD is another
# algorithm: one sample sits 2.5e-4 (0.3 % of eps) inside the ball, where APGD's halved steps may
# stop short, so APGD-based results may keep at most that one sample more.
BOOST_TOLERANCE = 1


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny tensors on 2 shared cores: intra-op threading makes these runs ~10x slower here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def robust_count(model, x_adv, labels) -> int:
    with torch.no_grad():
        return int((model(x_adv).argmax(dim=1) == labels).sum())


def exact_robust_count(model, x, labels, eps) -> int:
    """Samples whose L-inf distance to the linear decision boundary exceeds eps (box inactive)."""
    weight = model.linear.weight.double()
    raw = x.double().flatten(1) @ weight.T
    z_y = raw.gather(1, labels[:, None])
    w_diff = (weight[labels][:, None, :] - weight[None, :, :]).abs().sum(-1)
    distance = ((z_y - raw) / w_diff).scatter(1, labels[:, None], float("inf"))
    return int((distance.amin(dim=1) > eps).sum())


def stock_autoattack(model, attacks, eps, *, target_classes=3):
    adversary = AutoAttack(model, attacks=attacks, version="custom", eps=eps, seed=0, device="cpu")
    adversary.apgd.n_restarts = 1  # as in the standard version
    adversary.apgd_targeted.n_target_classes = target_classes  # the host's 9 needs K >= 10
    return adversary


def our_autoattack(model, attacks, eps, *, target_classes=3, **kwargs):
    adversary = aa.mifpe_autoattack(
        model, version="custom", attacks_to_run=attacks, eps=eps, device="cpu",
        distribution="pyautoattack", **kwargs,
    )
    adversary.apgd.n_restarts = 1
    adversary.apgd_targeted.n_target_classes = target_classes
    return adversary


@pytest.fixture(scope="module")
def mlp():
    # 4 classes: DLR (K >= 3) and targeted DLR (K >= 4) both apply.
    return make_mlp_data(n=32, dtype=torch.float32)


@pytest.fixture(scope="module")
def large_margin():
    return large_margin_problem(torch.float32)


# --------------------------------------------------------------------------------------------
# Lazy import and a missing host
# --------------------------------------------------------------------------------------------


def test_importing_the_package_does_not_import_autoattack():
    code = (
        "import sys, mifpe_plugins, mifpe_plugins.adapters; "
        "print('pyautoattack' in sys.modules, 'autoattack' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_missing_host_raises_import_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyautoattack", None)
    monkeypatch.setitem(sys.modules, "autoattack", None)
    monkeypatch.delitem(sys.modules, "mifpe_plugins.adapters.autoattack")
    with pytest.raises(ImportError, match=r"pip install mifpe-plugins\[autoattack\]"):
        importlib.import_module("mifpe_plugins.adapters.autoattack")


def test_asking_for_an_absent_distribution_names_how_to_install_it(monkeypatch, mlp):
    model, _, _ = mlp
    monkeypatch.setattr(aa, "_HOSTS", {"pyautoattack": aa._HOSTS["pyautoattack"]})
    with pytest.raises(ImportError, match=r"pip install git\+https://github.com/fra31/auto-attack"):
        aa.mifpe_autoattack(model, distribution="autoattack")


# --------------------------------------------------------------------------------------------
# Parity: loss="ce" / "dlr" is the stock attack, bitwise
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm, eps", [("Linf", 0.1), ("L2", 0.3)])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_equals_stock_apgd_bitwise(mlp, loss, norm, eps):
    model, x, labels = mlp
    settings = dict(eps=eps, norm=norm, n_iter=30, n_restarts=2, seed=0, device="cpu")
    stock = APGDAttack(model, loss=loss, **settings).perturb(x, labels)
    ours = aa.mifpe_apgd(model, loss=loss, distribution="pyautoattack", **settings).perturb(x, labels)
    assert torch.equal(ours, stock)
    # The comparison means something only if the attack succeeded on some samples, not all.
    assert 0 < robust_count(model, stock, labels) < robust_count(model, x, labels)


def test_apgd_single_run_equals_stock_bitwise_in_every_output(mlp):
    """Best point, success flags, best loss and adversarial point of one host run all agree."""
    model, x, labels = mlp
    stock = APGDAttack(model, loss="dlr", eps=0.1, n_iter=30, seed=0, device="cpu")
    ours = aa.mifpe_apgd(model, loss="dlr", eps=0.1, n_iter=30, seed=0, device="cpu")
    outputs = []
    for attack in (stock, ours):
        attack.init_hyperparam(x)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            outputs.append(attack.attack_single_run(x, labels))
    for stock_out, our_out in zip(*outputs, strict=True):
        assert torch.equal(stock_out, our_out)


def test_apgd_targeted_dlr_equals_stock_apgd_t_bitwise(mlp):
    model, x, labels = mlp
    settings = dict(eps=0.1, n_iter=30, n_target_classes=3, seed=0, device="cpu")
    stock = APGDAttack_targeted(model, **settings).perturb(x, labels)
    ours = aa.mifpe_apgd(model, loss="dlr", targeted=True, **settings).perturb(x, labels)
    assert torch.equal(ours, stock)
    assert 0 < robust_count(model, stock, labels) < robust_count(model, x, labels)


@pytest.mark.parametrize("loss, attacks", [("ce", ["apgd-ce"]), ("dlr", ["apgd-dlr", "apgd-t"])])
def test_whole_autoattack_equals_stock_bitwise(mlp, loss, attacks):
    model, x, labels = mlp
    stock = stock_autoattack(model, attacks, 0.1)
    ours = our_autoattack(model, attacks, 0.1, loss=loss)
    stock_adv, stock_pred = stock.run_standard_evaluation(x, labels)
    our_adv, our_pred = ours.run_standard_evaluation(x, labels)
    assert torch.equal(our_adv, stock_adv) and torch.equal(our_pred, stock_pred)
    assert 0 < robust_count(model, stock_adv, labels) < len(labels)


# --------------------------------------------------------------------------------------------
# Boost: where CE underflows, MIFPE inside AutoAttack reaches the core's MIFPE-PGD level
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def core_mifpe_level(large_margin):
    model, x, labels = large_margin
    level = robust_count(model, mifpe_plugins.pgd(model, x, labels, eps=EPS, loss="mifpe"), labels)
    assert level == exact_robust_count(model, x, labels, EPS) == 29
    return level


def test_stock_apgd_ce_stalls_and_mifpe_reaches_the_core_level(large_margin, core_mifpe_level):
    model, x, labels = large_margin
    stock_adv, _ = stock_autoattack(model, ["apgd-ce"], EPS).run_standard_evaluation(x, labels)
    assert robust_count(model, stock_adv, labels) == robust_count(model, x, labels) == 64
    our_adv, _ = our_autoattack(model, ["apgd-ce"], EPS).run_standard_evaluation(x, labels)
    assert abs(robust_count(model, our_adv, labels) - core_mifpe_level) <= BOOST_TOLERANCE
    assert (our_adv - x).abs().max() <= EPS + 1e-7


def test_swap_loss_turns_a_user_built_autoattack_into_mifpe(large_margin, core_mifpe_level):
    model, x, labels = large_margin
    adversary = stock_autoattack(model, ["apgd-ce"], EPS)
    assert aa.swap_loss(adversary) is adversary
    x_adv, _ = aa.run_standard_evaluation(adversary, x, labels)
    assert abs(robust_count(model, x_adv, labels) - core_mifpe_level) <= BOOST_TOLERANCE


def test_targeted_mifpe_in_apgd_t_reaches_the_core_level(large_margin, core_mifpe_level):
    # A wrong sign (descending eq. 8) would push every sample away from its target: nothing fooled.
    model, x, labels = large_margin
    adversary = our_autoattack(model, ["apgd-t"], EPS, target_classes=4)  # 5 classes
    x_adv, _ = adversary.run_standard_evaluation(x, labels)
    assert abs(robust_count(model, x_adv, labels) - core_mifpe_level) <= BOOST_TOLERANCE


@pytest.mark.parametrize("loss", ["hns", "njs"])
def test_pgdpp_temperatures_bind_inside_the_host_loop(large_margin, loss):
    # AutoAttack runs APGD under torch.no_grad(); NJS / HNS need the Jacobian at the clean inputs
    # (PGD++ Alg. 1 / Alg. 2). The CE gradient is zero here, so any success is theirs.
    model, x, labels = large_margin
    x_adv, _ = our_autoattack(model, ["apgd-ce"], EPS, loss=loss).run_standard_evaluation(x, labels)
    assert robust_count(model, x_adv, labels) < 64


def test_small_standard_run_finds_the_exact_robust_accuracy(caplog):
    # Image-shaped inputs (Square needs C x H x W); K = 5, so at most 4 target classes.
    model, x, labels = large_margin_problem(torch.float32, n=16)
    x = x.view(-1, 1, 4, 5)
    adversary = aa.mifpe_autoattack(model, eps=EPS, distribution="pyautoattack")
    adversary.apgd_targeted.n_target_classes = 4
    adversary.fab.n_target_classes = 4
    caplog.set_level(logging.DEBUG, logger="auto-attack")
    x_adv, _ = adversary.run_standard_evaluation(x, labels)
    assert adversary.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert robust_count(model, x_adv, labels) == exact_robust_count(model, x, labels, EPS) == 5
    assert "robust accuracy after SQUARE" in caplog.text  # FAB-T and Square ran, untouched


# --------------------------------------------------------------------------------------------
# The seam: our loss survives the host, the log says so, nothing of the caller changes
# --------------------------------------------------------------------------------------------


def test_the_hosts_loss_reset_does_not_undo_our_loss_and_the_log_names_it(mlp, caplog):
    model, x, labels = mlp
    calls = []

    def counting_ce(logits, targets, *, targeted=False):
        calls.append(targeted)
        return mifpe_plugins.ce_loss(logits, targets, targeted=targeted)

    adversary = our_autoattack(model, ["apgd-ce", "apgd-dlr"], 0.1, loss=counting_ce)
    caplog.set_level(logging.DEBUG, logger="auto-attack")
    adversary.run_standard_evaluation(x, labels)
    # run_standard_evaluation wrote 'ce', then 'dlr' into apgd.loss; our loss ran both times.
    assert adversary.apgd.requested_loss == "dlr" and adversary.apgd.loss == "dlr"
    assert len(calls) > 100 and not any(calls)
    assert "apgd-ce: mifpe_plugins runs APGD on the loss counting_ce in place of the host's 'ce'" in caplog.text
    assert "apgd-dlr: mifpe_plugins runs APGD on the loss counting_ce in place of the host's 'dlr'" in caplog.text
    assert "initial accuracy" in caplog.text  # the host's own log lines are still there


def test_targeted_loss_gets_targets_and_true_labels_when_it_asks(mlp):
    model, x, labels = mlp
    seen = {}

    def recording_dlr(logits, targets, *, targeted=False, source_labels=None):
        seen.update(targets=targets, targeted=targeted, source=source_labels)
        return mifpe_plugins.dlr_loss(logits, targets, targeted=targeted, source_labels=source_labels)

    attack = aa.mifpe_apgd(model, loss=recording_dlr, targeted=True, eps=0.1, n_iter=5, n_target_classes=1)
    attack.perturb(x, labels)
    assert seen["targeted"] is True
    assert torch.equal(seen["source"], labels) and bool((seen["targets"] != labels).all())


def test_caller_global_rng_is_restored(mlp):
    model, x, labels = mlp
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    stock = stock_autoattack(model, ["apgd-ce"], 0.1)
    stock.run_standard_evaluation(x, labels)
    assert not torch.equal(torch.get_rng_state(), before)  # the host reseeds the global RNG

    for run in (
        lambda: our_autoattack(model, ["apgd-ce", "apgd-t"], 0.1).run_standard_evaluation(x, labels),
        lambda: aa.run_standard_evaluation(stock_autoattack(model, ["apgd-ce"], 0.1), x, labels),
        lambda: aa.mifpe_apgd(model, eps=0.1, n_iter=5).perturb(x, labels),
    ):
        torch.manual_seed(1234)
        run()
        assert torch.equal(torch.get_rng_state(), before)


def test_caller_model_inputs_and_gradients_untouched(mlp):
    model, x, labels = mlp
    x_before, labels_before = x.clone(), labels.clone()
    our_autoattack(model, ["apgd-ce", "apgd-t"], 0.1).run_standard_evaluation(x, labels)
    assert not model.training and not x.requires_grad
    assert torch.equal(x, x_before) and torch.equal(labels, labels_before)
    assert all(p.grad is None for p in model.parameters())


def test_swap_loss_carries_every_setting_and_leaves_the_rest_alone(mlp):
    model, _, _ = mlp
    adversary = AutoAttack(model, eps=0.05, norm="L2", seed=7, device="cpu")  # standard version
    adversary.apgd.n_restarts = 3
    adversary.apgd_targeted.n_target_classes = 3
    old_apgd, old_apgd_t = adversary.apgd, adversary.apgd_targeted
    fab, square = adversary.fab, adversary.square
    aa.swap_loss(adversary, "mifpe", temperature=2.0)
    for new, old, host_cls in ((adversary.apgd, old_apgd, APGDAttack), (adversary.apgd_targeted, old_apgd_t, APGDAttack_targeted)):
        assert isinstance(new, host_cls) and type(new) is not host_cls
        settings = {k: v for k, v in vars(old).items() if k != "loss"}
        assert {k: vars(new)[k] for k in settings} == settings
        assert new.attack_loss_label == "mifpe(T=2)"
    assert adversary.apgd.loss == "dlr" and adversary.apgd_targeted.loss == "dlr-targeted"
    assert adversary.apgd.n_restarts == 3 and adversary.apgd_targeted.n_target_classes == 3
    assert adversary.fab is fab and adversary.square is square
    assert adversary.model is model and fab.predict is model and square.predict is model
    # Swapping again replaces the loss, keeps the settings.
    aa.swap_loss(adversary, "ce")
    assert adversary.apgd.attack_loss_label == "ce" and adversary.apgd.n_restarts == 3


def test_log_path_with_pyautoattack_writes_this_adversarys_log(mlp, tmp_path):
    model, x, labels = mlp
    log_file = tmp_path / "aa.log"
    adversary = our_autoattack(model, ["apgd-ce"], 0.1, log_path=log_file)
    adversary.run_standard_evaluation(x, labels)
    text = log_file.read_text()
    assert "initial accuracy" in text and "the loss mifpe(T=1)" in text
    assert logging.getLogger("auto-attack").handlers == []  # nothing configured globally


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(version="fast"), ValueError, r"version must be one of 'standard', 'plus', 'rand', 'custom'"),
        (dict(version="custom"), ValueError, r"version='custom' needs attacks_to_run"),
        (dict(version="custom", attacks_to_run=["apgd-cw"]), ValueError, r"unknown attack\(s\) \['apgd-cw'\]"),
        (dict(attacks_to_run=["apgd-ce"]), ValueError, r"attacks_to_run is only for version='custom'"),
        (dict(norm="Lfoo"), ValueError, r"norm must be one of 'Linf', 'L2', 'L1'"),
        (dict(eps=-0.1), ValueError, r"eps must be a finite number > 0"),
        (dict(loss="softmax"), ValueError, r"unknown loss 'softmax'"),
        (dict(loss=3), TypeError, r"loss must be a name"),
        (dict(loss="ce", temperature=2.0), ValueError, r"temperature applies to loss='mifpe' only"),
        (dict(temperature=0.0), ValueError, r"temperature must be a finite number > 0"),
        (dict(distribution="torchattacks"), ValueError, r"distribution must be None"),
    ],
)
def test_bad_arguments_get_clear_errors(mlp, kwargs, error, message):
    model, _, _ = mlp
    with pytest.raises(error, match=message):
        aa.mifpe_autoattack(model, **kwargs)


def test_float64_model_is_rejected_up_front():
    model, _, _ = make_mlp_data(n=4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"AutoAttack evaluates in float32"):
        aa.mifpe_autoattack(model)


@pytest.mark.parametrize("thing", [object(), None, "autoattack"])
def test_swap_loss_rejects_what_is_not_an_autoattack(thing):
    with pytest.raises(TypeError, match=r"swap_loss: adversary must be an AutoAttack object"):
        aa.swap_loss(thing)


def test_swap_loss_rejects_a_bare_apgd_attack(mlp):
    model, _, _ = mlp
    with pytest.raises(TypeError, match=r"got pyautoattack\.autopgd_base\.APGDAttack"):
        aa.swap_loss(APGDAttack(model, eps=0.1))


def test_swap_loss_rejects_an_autoattack_of_unknown_layout(mlp):
    model, _, _ = mlp
    adversary = AutoAttack(model, device="cpu")
    adversary.apgd_targeted = None
    with pytest.raises(ValueError, match=r"unknown version: expected members apgd .* apgd_targeted"):
        aa.swap_loss(adversary)


def test_run_standard_evaluation_rejects_other_objects(mlp):
    _, x, labels = mlp
    with pytest.raises(TypeError, match=r"run_standard_evaluation: adversary must be an AutoAttack"):
        aa.run_standard_evaluation(object(), x, labels)


# --------------------------------------------------------------------------------------------
# The example
# --------------------------------------------------------------------------------------------


def test_example_script_runs_and_shows_the_boost():
    script = REPO / "adapters" / "autoattack_example.py"
    # One intra-op thread: on a loaded machine torch's threading slows these tiny tensors ~5x.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=120, env=env
    )
    found = dict(re.findall(r"robust accuracy, (.+?): ([\d.]+)%", out.stdout))
    assert float(found["AutoAttack APGD-CE (stock)"]) == 100.0, out.stdout
    exact = float(re.search(r"exact robust accuracy of this linear model: ([\d.]+)%", out.stdout).group(1))
    assert exact < 50.0, out.stdout
    for name in ("AutoAttack APGD-CE with MIFPE", "AutoAttack APGD-CE + APGD-T with MIFPE"):
        assert abs(float(found[name]) - exact) <= 100 * BOOST_TOLERANCE / 64 + 0.05, out.stdout


def test_stock_autoattack_is_the_hosts_own_and_matches_a_stock_run(mlp):
    model, x, y = mlp
    ours = aa.stock_autoattack(model, norm="l2", eps=0.3, version="custom", attacks_to_run=["apgd-ce", "apgd-t"], device="cpu")
    assert type(ours) is AutoAttack
    assert type(ours.apgd) is APGDAttack and type(ours.apgd_targeted) is APGDAttack_targeted
    stock = AutoAttack(model, norm="L2", eps=0.3, version="custom", attacks=["apgd-ce", "apgd-t"], device="cpu", seed=0)
    for adversary in (ours, stock):
        adversary.apgd_targeted.n_target_classes = 3  # 4 classes
    state = torch.get_rng_state()
    x_ours, _ = aa.run_standard_evaluation(ours, x, y)
    assert torch.equal(state, torch.get_rng_state())
    x_stock, _ = stock.run_standard_evaluation(x, y)
    assert torch.equal(x_ours, x_stock)
    with pytest.raises(ValueError, match="norm"):
        aa.stock_autoattack(model, norm="l3")
