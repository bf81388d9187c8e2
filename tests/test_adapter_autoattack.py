"""AutoAttack adapter: parity with stock AutoAttack, the MIFPE boost, and honest behaviour.

Runs against whichever AutoAttack distributions are importable: PyPI ``pyautoattack`` (the
``autoattack`` extra; what CI has) and upstream ``autoattack`` from git. Tests of the adapter's
default compare against the distribution the adapter picks (upstream when importable). Tests
parametrized over ``DISTRIBUTIONS`` run once per distribution and are skipped, with the reason,
where that distribution is not installed.
"""

import importlib
import json
import logging
import os
import re
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path

import pytest
import torch
from conftest import large_margin_problem, make_mlp_data
from torch import nn

import mifpe_plugins
from mifpe_plugins import tables
from mifpe_plugins.adapters import autoattack as aa
from mifpe_plugins.tables import Evaluation, table2, to_markdown, write_report

REPO = Path(__file__).resolve().parents[1]

# On large_margin_problem(float32) every clean margin exceeds 2 * lambda, so CE's gradient is
# exactly zero. At eps = 0.09, 35 of the 64 samples lie within eps of the (linear) boundary, yet
# no random start of stock APGD-CE with seed 0 crosses it: stock robust accuracy = clean = 64/64.
EPS = 0.09
# The exact answer is known (linear model), and the core's MIFPE-PGD reaches it. APGD is another
# algorithm: one sample sits 2.5e-4 (0.3 % of eps) inside the ball, where APGD's halved steps may
# stop short, so APGD-based results may keep at most that one sample more.
BOOST_TOLERANCE = 1

#: The distribution the adapter uses when none is named: the "host" of the default-path tests.
PICKED = aa.default_distribution()
AVAILABLE = tuple(name for name in aa.DISTRIBUTIONS if name in aa._HOSTS)

needs_upstream = pytest.mark.skipif(
    "autoattack" not in aa._HOSTS,
    reason="upstream AutoAttack (import name 'autoattack') is not installed; it is on GitHub only: "
    "pip install git+https://github.com/fra31/auto-attack",
)
needs_pyautoattack = pytest.mark.skipif(
    "pyautoattack" not in aa._HOSTS,
    reason="PyPI pyautoattack is not installed: pip install mifpe-plugins[autoattack]",
)
DISTRIBUTIONS = [
    pytest.param("autoattack", marks=needs_upstream, id="upstream"),
    pytest.param("pyautoattack", marks=needs_pyautoattack, id="pyautoattack"),
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny tensors on 2 shared cores: intra-op threading makes these runs ~10x slower here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# The hosts, called in their own spelling
# --------------------------------------------------------------------------------------------


def host(name):
    return importlib.import_module(name)


def host_apgd(name):
    return importlib.import_module(f"{name}.autopgd_base")


def distribution_of(adversary) -> str:
    return next(name for name in AVAILABLE if isinstance(adversary, host(name).AutoAttack))


def host_autoattack(name, model, *, eps, norm="Linf", seed=0, attacks=None):
    """Distribution ``name``'s own AutoAttack, built with its own constructor spelling."""
    version = "standard" if attacks is None else "custom"
    if name == "pyautoattack":
        return host(name).AutoAttack(model, attacks=attacks, version=version, eps=eps, norm=norm, seed=seed, device="cpu")
    return host(name).AutoAttack(
        model, norm=norm, eps=eps, seed=seed, version=version, attacks_to_run=attacks or [], device="cpu"
    )


def host_run(adversary, x, y):
    """The host's own ``run_standard_evaluation`` in its own spelling, as ``(x_adv, y_adv)``."""
    if distribution_of(adversary) == "pyautoattack":
        return adversary.run_standard_evaluation(x, y)
    return adversary.run_standard_evaluation(x, y, return_labels=True)


def host_log(caplog, capsys) -> str:
    """What the host logged: pyautoattack logs to the 'auto-attack' logger, upstream prints."""
    return caplog.text + capsys.readouterr().out


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


def stock_autoattack(model, attacks, eps, *, target_classes=3, name=PICKED):
    adversary = host_autoattack(name, model, attacks=attacks, eps=eps)
    adversary.apgd.n_restarts = 1  # as in the standard version
    adversary.apgd_targeted.n_target_classes = target_classes  # the host's 9 needs K >= 10
    return adversary


def our_autoattack(model, attacks, eps, *, target_classes=3, **kwargs):
    adversary = aa.mifpe_autoattack(model, version="custom", attacks_to_run=attacks, eps=eps, device="cpu", **kwargs)
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


class Flat(nn.Module):
    """Logits that do not depend on the input: every input gradient is exactly zero."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([3.0, 1.0, 0.0, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1) + 0 * x.flatten(1).sum(1, keepdim=True)


# --------------------------------------------------------------------------------------------
# Lazy import, a missing host, which distribution runs
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
    monkeypatch.setattr(aa, "_HOSTS", {k: v for k, v in aa._HOSTS.items() if k != "autoattack"})
    with pytest.raises(ImportError, match=r"pip install git\+https://github.com/fra31/auto-attack"):
        aa.mifpe_autoattack(model, distribution="autoattack")


def test_the_default_is_upstream_when_importable():
    assert PICKED == ("autoattack" if "autoattack" in aa._HOSTS else "pyautoattack")
    assert isinstance(aa.mifpe_autoattack(Flat()), host(PICKED).AutoAttack)
    assert aa.describe_distribution() == aa.describe_distribution(PICKED)


@needs_pyautoattack
def test_describe_distribution_names_pyautoattack_and_its_version():
    assert aa.describe_distribution("pyautoattack") == f"pyautoattack {metadata.version('pyautoattack')}"


@needs_upstream
def test_describe_distribution_names_upstream_and_its_version():
    label = aa.describe_distribution("autoattack")
    assert re.fullmatch(r"autoattack \(upstream, git [^,()]+(, commit [0-9a-f]{12})?\)", label), label


@needs_upstream
def test_describe_distribution_without_installed_metadata(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(aa.metadata, "version", missing)
    monkeypatch.setattr(aa.metadata, "distribution", missing)
    assert aa.describe_distribution("autoattack") == "autoattack (upstream, git unknown)"


class RecordedGitInstall:
    """The metadata `pip install git+https://github.com/fra31/auto-attack` leaves (PEP 610)."""

    def read_text(self, name):
        assert name == "direct_url.json"
        return json.dumps({"url": "https://github.com/fra31/auto-attack",
                           "vcs_info": {"vcs": "git", "commit_id": "a39220048b3c9f2cca9a4d3a54604793c68eca7e"}})


def test_vcs_install_records_the_commit(monkeypatch):
    monkeypatch.setattr(aa.metadata, "distribution", lambda name: RecordedGitInstall())
    assert aa._vcs_commit("autoattack") == "a39220048b3c9f2cca9a4d3a54604793c68eca7e"


@needs_upstream
def test_describe_distribution_names_the_recorded_commit(monkeypatch):
    monkeypatch.setattr(aa.metadata, "version", lambda name: "0.1")
    monkeypatch.setattr(aa.metadata, "distribution", lambda name: RecordedGitInstall())
    assert aa.describe_distribution("autoattack") == "autoattack (upstream, git 0.1, commit a39220048b3c)"


# --------------------------------------------------------------------------------------------
# Parity: loss="ce" / "dlr" is the stock attack, bitwise, for each distribution
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DISTRIBUTIONS)
@pytest.mark.parametrize("norm, eps", [("Linf", 0.1), ("L2", 0.3)])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_equals_stock_apgd_bitwise(mlp, loss, norm, eps, name):
    model, x, labels = mlp
    settings = dict(eps=eps, norm=norm, n_iter=30, n_restarts=2, seed=0, device="cpu")
    stock = host_apgd(name).APGDAttack(model, loss=loss, **settings).perturb(x, labels)
    ours = aa.mifpe_apgd(model, loss=loss, distribution=name, **settings).perturb(x, labels)
    assert torch.equal(ours, stock)
    # The comparison means something only if the attack succeeded on some samples, not all.
    assert 0 < robust_count(model, stock, labels) < robust_count(model, x, labels)


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_apgd_single_run_equals_stock_bitwise_in_every_output(mlp, name):
    """Best point, success flags, best loss and adversarial point of one host run all agree."""
    model, x, labels = mlp
    stock = host_apgd(name).APGDAttack(model, loss="dlr", eps=0.1, n_iter=30, seed=0, device="cpu")
    ours = aa.mifpe_apgd(model, loss="dlr", eps=0.1, n_iter=30, seed=0, device="cpu", distribution=name)
    outputs = []
    for attack in (stock, ours):
        attack.init_hyperparam(x)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            outputs.append(attack.attack_single_run(x, labels))
    for stock_out, our_out in zip(*outputs, strict=True):
        assert torch.equal(stock_out, our_out)


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_apgd_targeted_dlr_equals_stock_apgd_t_bitwise(mlp, name):
    model, x, labels = mlp
    settings = dict(eps=0.1, n_iter=30, n_target_classes=3, seed=0, device="cpu")
    stock = host_apgd(name).APGDAttack_targeted(model, **settings).perturb(x, labels)
    ours = aa.mifpe_apgd(model, loss="dlr", targeted=True, distribution=name, **settings).perturb(x, labels)
    assert torch.equal(ours, stock)
    assert 0 < robust_count(model, stock, labels) < robust_count(model, x, labels)


@pytest.mark.parametrize("name", DISTRIBUTIONS)
@pytest.mark.parametrize("loss, attacks", [("ce", ["apgd-ce"]), ("dlr", ["apgd-dlr", "apgd-t"])])
def test_whole_autoattack_equals_stock_bitwise(mlp, loss, attacks, name):
    model, x, labels = mlp
    stock = stock_autoattack(model, attacks, 0.1, name=name)
    ours = our_autoattack(model, attacks, 0.1, loss=loss, distribution=name)
    stock_adv, stock_pred = host_run(stock, x, labels)
    our_adv, our_pred = aa.run_standard_evaluation(ours, x, labels)
    assert torch.equal(our_adv, stock_adv) and torch.equal(our_pred, stock_pred)
    assert 0 < robust_count(model, stock_adv, labels) < len(labels)


@pytest.mark.parametrize("distribution", [pytest.param(None, id="picked"), *DISTRIBUTIONS])
def test_stock_autoattack_is_the_hosts_own_and_matches_a_stock_run(mlp, distribution):
    model, x, y = mlp
    name = distribution or PICKED
    ours = tables.stock_autoattack(
        model, norm="l2", eps=0.3, version="custom", attacks_to_run=["apgd-ce", "apgd-t"], device="cpu",
        distribution=distribution,
    )
    assert type(ours) is host(name).AutoAttack
    assert type(ours.apgd) is host_apgd(name).APGDAttack
    assert type(ours.apgd_targeted) is host_apgd(name).APGDAttack_targeted
    stock = host_autoattack(name, model, norm="L2", eps=0.3, attacks=["apgd-ce", "apgd-t"])
    for adversary in (ours, stock):
        adversary.apgd_targeted.n_target_classes = 3  # 4 classes
    state = torch.get_rng_state()
    x_ours, _ = aa.run_standard_evaluation(ours, x, y)
    assert torch.equal(state, torch.get_rng_state())
    x_stock, _ = host_run(stock, x, y)
    assert torch.equal(x_ours, x_stock)
    with pytest.raises(ValueError, match="norm"):
        tables.stock_autoattack(model, norm="l3")


# --------------------------------------------------------------------------------------------
# One call for both distributions (README: run_standard_evaluation(adversary, x, y, batch_size=...))
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_run_standard_evaluation_has_one_spelling_and_one_result(mlp, name, tmp_path):
    model, x, labels = mlp
    attacks = ["apgd-ce", "apgd-t"]
    ours = our_autoattack(model, attacks, 0.1, distribution=name)
    x_adv, y_adv = aa.run_standard_evaluation(ours, x, labels, batch_size=7, state_path=str(tmp_path / "state.json"))
    # What the host's own method returns with its own spelling of the same call.
    stock = stock_autoattack(model, attacks, 0.1, name=name)
    aa.swap_loss(stock, "mifpe")
    if name == "pyautoattack":
        expected = stock.run_standard_evaluation(x, labels, batch_size=7)
    else:
        expected = stock.run_standard_evaluation(x, labels, bs=7, return_labels=True)
    assert torch.equal(x_adv, expected[0]) and torch.equal(y_adv, expected[1])
    with torch.no_grad():
        assert torch.equal(y_adv, model(x_adv).argmax(1))
    assert (tmp_path / "state.json").exists()  # the hosts' state_path, passed through
    for host_spelling in ({"bs": 7}, {"return_labels": True}):
        with pytest.raises(TypeError, match="unexpected keyword argument"):
            aa.run_standard_evaluation(ours, x, labels, **host_spelling)


def test_norm_and_eps_are_positional_as_in_the_hosts_constructor(mlp):
    model, _, _ = mlp
    for build in (aa.mifpe_autoattack, tables.stock_autoattack):
        adversary = build(model, "Linf", 0.1)
        assert adversary.norm == "Linf" and adversary.epsilon == 0.1
        assert adversary.apgd.eps == adversary.apgd_targeted.eps == 0.1
        adversary = build(model, "l2", 0.5, version="plus")
        assert adversary.norm == "L2" and adversary.epsilon == 0.5 and adversary.version == "plus"


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
    stock_adv, _ = host_run(stock_autoattack(model, ["apgd-ce"], EPS), x, labels)
    assert robust_count(model, stock_adv, labels) == robust_count(model, x, labels) == 64
    our_adv, _ = aa.run_standard_evaluation(our_autoattack(model, ["apgd-ce"], EPS), x, labels)
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
    x_adv, _ = aa.run_standard_evaluation(adversary, x, labels)
    assert abs(robust_count(model, x_adv, labels) - core_mifpe_level) <= BOOST_TOLERANCE


@pytest.mark.parametrize("loss", ["hns", "njs"])
def test_pgdpp_temperatures_bind_inside_the_host_loop(large_margin, loss):
    # AutoAttack runs APGD under torch.no_grad(); NJS / HNS need the Jacobian at the clean inputs
    # (PGD++ Alg. 1 / Alg. 2). The CE gradient is zero here, so any success is theirs.
    model, x, labels = large_margin
    x_adv, _ = aa.run_standard_evaluation(our_autoattack(model, ["apgd-ce"], EPS, loss=loss), x, labels)
    assert robust_count(model, x_adv, labels) < 64


def test_small_standard_run_finds_the_exact_robust_accuracy(caplog, capsys):
    # The README's call, on the picked distribution. Image-shaped inputs (Square needs C x H x W);
    # K = 5, so at most 4 target classes.
    model, x, labels = large_margin_problem(torch.float32, n=16)
    x = x.view(-1, 1, 4, 5)
    adversary = aa.mifpe_autoattack(model, norm="Linf", eps=EPS, version="standard")
    adversary.apgd_targeted.n_target_classes = 4
    adversary.fab.n_target_classes = 4
    caplog.set_level(logging.DEBUG, logger="auto-attack")
    x_adv, y_adv = aa.run_standard_evaluation(adversary, x, labels, batch_size=250)
    assert adversary.attacks_to_run == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert robust_count(model, x_adv, labels) == exact_robust_count(model, x, labels, EPS) == 5
    assert int((y_adv == labels).sum()) == 5
    assert "robust accuracy after SQUARE" in host_log(caplog, capsys)  # FAB-T and Square ran, untouched


# --------------------------------------------------------------------------------------------
# The seam: our loss survives the host, the log says so, nothing of the caller changes
# --------------------------------------------------------------------------------------------


def test_the_hosts_loss_reset_does_not_undo_our_loss_and_the_log_names_it(mlp, caplog, capsys):
    model, x, labels = mlp
    calls = []

    def counting_ce(logits, targets, *, targeted=False):
        calls.append(targeted)
        return mifpe_plugins.ce_loss(logits, targets, targeted=targeted)

    adversary = our_autoattack(model, ["apgd-ce", "apgd-dlr"], 0.1, loss=counting_ce)
    caplog.set_level(logging.DEBUG, logger="auto-attack")
    aa.run_standard_evaluation(adversary, x, labels)
    # run_standard_evaluation wrote 'ce', then 'dlr' into apgd.loss; our loss ran both times.
    assert adversary.apgd.requested_loss == "dlr" and adversary.apgd.loss == "dlr"
    assert len(calls) > 100 and not any(calls)
    log = host_log(caplog, capsys)
    assert "apgd-ce: mifpe_plugins runs APGD on the loss counting_ce in place of the host's 'ce'" in log
    assert "apgd-dlr: mifpe_plugins runs APGD on the loss counting_ce in place of the host's 'dlr'" in log
    assert "initial accuracy" in log  # the host's own log lines are still there


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
    host_run(stock_autoattack(model, ["apgd-ce"], 0.1), x, labels)
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
    aa.run_standard_evaluation(our_autoattack(model, ["apgd-ce", "apgd-t"], 0.1), x, labels)
    assert not model.training and not x.requires_grad
    assert torch.equal(x, x_before) and torch.equal(labels, labels_before)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_swap_loss_carries_every_setting_and_leaves_the_rest_alone(mlp, name):
    model, _, _ = mlp
    adversary = host_autoattack(name, model, eps=0.05, norm="L2", seed=7)  # standard version
    adversary.apgd.n_restarts = 3
    adversary.apgd_targeted.n_target_classes = 3
    old_apgd, old_apgd_t = adversary.apgd, adversary.apgd_targeted
    fab, square = adversary.fab, adversary.square
    aa.swap_loss(adversary, "mifpe", temperature=2.0)
    base = host_apgd(name)
    for new, old, host_cls in ((adversary.apgd, old_apgd, base.APGDAttack), (adversary.apgd_targeted, old_apgd_t, base.APGDAttack_targeted)):
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


@needs_pyautoattack
def test_log_path_with_pyautoattack_writes_this_adversarys_log(mlp, tmp_path):
    model, x, labels = mlp
    log_file = tmp_path / "aa.log"
    adversary = our_autoattack(model, ["apgd-ce"], 0.1, log_path=log_file, distribution="pyautoattack")
    aa.run_standard_evaluation(adversary, x, labels)
    text = log_file.read_text()
    assert "initial accuracy" in text and "the loss mifpe(T=1)" in text
    assert logging.getLogger("auto-attack").handlers == []  # nothing configured globally


@needs_upstream
@pytest.mark.parametrize("verbose", [True, False])
def test_log_path_with_upstream_is_its_own(mlp, tmp_path, verbose):
    model, x, labels = mlp
    log_file = tmp_path / "aa.log"
    adversary = our_autoattack(model, ["apgd-ce"], 0.1, log_path=log_file, distribution="autoattack", verbose=verbose)
    aa.run_standard_evaluation(adversary, x, labels)
    text = log_file.read_text() if log_file.exists() else ""
    # verbose=True: upstream's whole log; verbose=False: only what upstream logs regardless (none here).
    assert ("initial accuracy" in text and "the loss mifpe(T=1)" in text) is verbose


# --------------------------------------------------------------------------------------------
# Quiet means quiet, for both distributions; tables record which AutoAttack ran
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DISTRIBUTIONS)
@pytest.mark.parametrize("verbose", [True, False])
def test_verbose_false_keeps_stdout_empty_and_still_reports_the_hosts_warnings(mlp, name, verbose, caplog, capsys):
    model, x, labels = mlp
    # Softmax outputs: the host's check_range_output warns that they look like probabilities.
    probabilities = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    caplog.set_level(logging.DEBUG, logger="auto-attack")
    for build in (aa.mifpe_autoattack, tables.stock_autoattack):
        adversary = build(probabilities, "Linf", 0.1, version="custom", attacks_to_run=["apgd-ce"],
                          distribution=name, verbose=verbose)
        aa.run_standard_evaluation(adversary, x, labels)
    out = capsys.readouterr().out
    records = [r for r in caplog.records if r.name == "auto-attack"]
    warned = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    if verbose:
        # The hosts' own behaviour: upstream prints its log, pyautoattack logs it.
        assert "initial accuracy" in (out if name == "autoattack" else caplog.text)
    else:
        assert out == ""
        # No progress and no loss line at any level (pyautoattack still logs "running apgd-ce" at
        # DEBUG whatever its verbose says; unseen unless logging is configured for it).
        logged = " ".join(r.getMessage() for r in records)
        assert "initial accuracy" not in logged and "mifpe_plugins runs APGD" not in logged, logged
        assert all(r.levelno in (logging.DEBUG, logging.WARNING) for r in records), logged
        assert len(warned) == 2 and all("probability distribution" in m for m in warned), warned


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_table2_quiet_prints_nothing_and_records_the_distribution(monkeypatch, capsys, tmp_path, name):
    monkeypatch.setattr(aa, "_HOSTS", {name: aa._HOSTS[name]})
    model, x, labels = make_mlp_data(n=12, dtype=torch.float32)
    # eps = 0.5 reaches another class for every sample: APGD-CE fools them all and the slow
    # FAB-T and Square have nothing left to do.
    evaluation = Evaluation(model, x, labels, eps=0.5, steps=10, batch_size=8, show_progress=False)
    result = table2(evaluation, attacks=("autoattack",), command="mifpe table2 --quiet")
    report = result.to_json()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert report["autoattack_distribution"] == aa.describe_distribution(name)
    assert report["autoattack_distribution"].startswith(name)
    assert report["rows"][0]["original"]["robust_accuracy"] == 0.0
    assert f"AutoAttack: {aa.describe_distribution(name)}, " in to_markdown(result)
    written = write_report(result, tmp_path, stem="t2")
    assert json.loads(written[1].read_text())["autoattack_distribution"] == aa.describe_distribution(name)


def test_tables_without_autoattack_record_no_distribution(mlp):
    model, x, labels = mlp
    evaluation = Evaluation(model, x, labels, eps=0.1, steps=2, show_progress=False)
    assert "autoattack_distribution" not in table2(evaluation, attacks=("fgsm",)).to_json()


# --------------------------------------------------------------------------------------------
# The host's zero-gradient check reports where the stock attack runs it (APGD-DLR, APGD-T)
# --------------------------------------------------------------------------------------------


def zero_gradient_reported(run) -> bool:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    return any("points with zero gradient" in str(w.message) for w in caught)


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_zero_gradient_check_as_in_the_stock_apgd(name):
    model, x = Flat().eval(), torch.rand(8, 6, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(8, dtype=torch.long)
    base = host_apgd(name)
    settings = dict(eps=0.1, n_iter=5, seed=0, device="cpu")
    cases = [
        # (stock attack, ours, whether the stock attack reports the zero gradients)
        (lambda: base.APGDAttack(model, loss="ce", **settings), lambda: aa.mifpe_apgd(model, loss="ce", distribution=name, **settings), False),
        (lambda: base.APGDAttack(model, loss="ce", **settings), lambda: aa.mifpe_apgd(model, loss="mifpe", distribution=name, **settings), False),
        (lambda: base.APGDAttack(model, loss="dlr", **settings), lambda: aa.mifpe_apgd(model, loss="dlr", distribution=name, **settings), True),
        (lambda: base.APGDAttack_targeted(model, n_target_classes=3, **settings),
         lambda: aa.mifpe_apgd(model, loss="ce", targeted=True, n_target_classes=3, distribution=name, **settings), True),
    ]
    for stock, ours, reported in cases:
        assert zero_gradient_reported(lambda s=stock: s().perturb(x, labels)) is reported
        assert zero_gradient_reported(lambda o=ours: o().perturb(x, labels)) is reported


@pytest.mark.parametrize("name", DISTRIBUTIONS)
@pytest.mark.parametrize("attack, reported", [("apgd-ce", False), ("apgd-dlr", True), ("apgd-t", True)])
def test_zero_gradient_check_inside_autoattack_as_stock(name, attack, reported, caplog, capsys):
    model, x = Flat().eval(), torch.rand(8, 6, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(8, dtype=torch.long)
    caplog.set_level(logging.DEBUG, logger="auto-attack")
    for adversary in (
        stock_autoattack(model, [attack], 0.1, name=name),
        our_autoattack(model, [attack], 0.1, loss="ce", distribution=name),
    ):
        aa.run_standard_evaluation(adversary, x, labels)
        assert ("points with zero gradient" in host_log(caplog, capsys)) is reported
        caplog.clear()


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
        (dict(eps=-0.1), ValueError, r"eps must be a finite number > 0, got -0.1"),
        (dict(eps=float("nan")), ValueError, r"eps must be a finite number > 0, got nan"),
        (dict(eps=float("inf")), ValueError, r"eps must be a finite number > 0, got inf"),
        (dict(eps=0.0), ValueError, r"eps must be a finite number > 0, got 0.0"),
        (dict(eps="8/255"), ValueError, r"eps must be a finite number > 0"),
        (dict(eps=torch.tensor([0.1, 0.2])), ValueError, r"eps must be a finite number > 0"),
        (dict(loss="softmax"), ValueError, r"unknown loss 'softmax'"),
        (dict(loss=3), TypeError, r"loss must be a name"),
        (dict(loss="ce", temperature=2.0), ValueError, r"temperature is MIFPE's T and applies only to loss='mifpe'"),
        (dict(temperature=0.0), ValueError, r"temperature must be a finite number > 0"),
        (dict(distribution="torchattacks"), ValueError, r"distribution must be None"),
    ],
)
def test_bad_arguments_get_clear_errors(mlp, kwargs, error, message):
    model, _, _ = mlp
    with pytest.raises(error, match=message):
        aa.mifpe_autoattack(model, **kwargs)


def test_a_zero_dim_tensor_eps_is_a_number(mlp):
    model, _, _ = mlp
    assert aa.mifpe_autoattack(model, eps=torch.tensor(0.25, dtype=torch.float64)).epsilon == 0.25


def test_float64_model_is_rejected_up_front():
    model, _, _ = make_mlp_data(n=4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"AutoAttack evaluates in float32"):
        aa.mifpe_autoattack(model)


IN_0_255 = r"inputs must lie in \[0, 1\], AutoAttack's input domain .* got values in \[[^,]+, 2\d\d"


def test_inputs_outside_0_1_are_rejected_before_the_host_runs(mlp):
    model, x, labels = mlp
    pixels = 255 * x
    # What the hosts do with them: clip every point to [0, 1], far outside the eps-ball.
    stock = host_apgd(PICKED).APGDAttack(model, eps=0.1, n_iter=2, device="cpu").perturb(pixels, labels)
    assert float((stock.detach() - pixels).abs().max()) > 100
    runs = {
        "run_standard_evaluation": lambda: aa.run_standard_evaluation(stock_autoattack(model, ["apgd-ce"], 0.1), pixels, labels),
        "the adversary's own method": lambda: aa.mifpe_autoattack(model).run_standard_evaluation(pixels, labels),
        "mifpe_apgd perturb": lambda: aa.mifpe_apgd(model, eps=0.1).perturb(pixels, labels),
    }
    for run in runs.values():
        with pytest.raises(ValueError, match=IN_0_255):
            run()
    with pytest.raises(ValueError, match=r"inputs must lie in \[0, 1\].*got values in \[-0\.\d+"):
        aa.run_standard_evaluation(aa.mifpe_autoattack(model), x - 0.5, labels)
    nan_inputs = x.clone()
    nan_inputs[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"inputs contain NaN"):
        aa.run_standard_evaluation(aa.mifpe_autoattack(model), nan_inputs, labels)
    with pytest.raises(ValueError, match=r"inputs must have a floating dtype"):
        aa.run_standard_evaluation(aa.mifpe_autoattack(model), pixels.to(torch.uint8), labels)


def test_a_bad_eps_the_host_accepted_is_rejected_before_it_runs(mlp):
    model, x, labels = mlp
    adversary = host_autoattack(PICKED, model, eps=float("nan"), attacks=["apgd-ce"])  # the host takes it
    with pytest.raises(ValueError, match=r"adversary.epsilon must be a finite number > 0, got nan"):
        aa.swap_loss(adversary)
    with pytest.raises(ValueError, match=r"adversary.epsilon must be a finite number > 0, got nan"):
        aa.run_standard_evaluation(adversary, x, labels)
    attack = aa.mifpe_apgd(model, eps=0.1)
    attack.eps = -0.1
    with pytest.raises(ValueError, match=r"eps must be a finite number > 0, got -0.1"):
        attack.perturb(x, labels)
    with pytest.raises(ValueError, match=r"batch_size must be an integer >= 1, got 0"):
        aa.run_standard_evaluation(aa.mifpe_autoattack(model), x, labels, batch_size=0)


@pytest.mark.parametrize("thing", [object(), None, "autoattack"])
def test_swap_loss_rejects_what_is_not_an_autoattack(thing):
    with pytest.raises(TypeError, match=r"swap_loss: adversary must be an AutoAttack object"):
        aa.swap_loss(thing)


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_swap_loss_rejects_a_bare_apgd_attack(mlp, name):
    model, _, _ = mlp
    with pytest.raises(TypeError, match=rf"got {name}\.autopgd_base\.APGDAttack"):
        aa.swap_loss(host_apgd(name).APGDAttack(model, eps=0.1))


def test_swap_loss_rejects_an_autoattack_of_unknown_layout(mlp):
    model, _, _ = mlp
    adversary = host_autoattack(PICKED, model, eps=0.1)
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
    assert f"AutoAttack: {aa.describe_distribution()}" in out.stdout
