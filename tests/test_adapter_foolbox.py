"""Foolbox adapter: parity with stock Foolbox, the MIFPE / PGD++ boost, and honest behaviour."""

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import foolbox as fb
import pytest
import torch
from conftest import TinyCNN, large_margin_problem, make_mlp_data

import mifpe_plugins
from mifpe_plugins.adapters import foolbox as fba

REPO = Path(__file__).resolve().parents[1]

# Protocol-matched comparisons with the core: Foolbox projects as x0 + clip(x - x0, -eps, eps) and
# normalises L2 gradients by multiplying with 1 / max(||g||, 1e-12); the core clamps to precomputed
# [x0 - eps, x0 + eps] and divides by the norm. Both round differently in the last bit, so iterates
# may differ by a few float32 ulps at values <= 1 (measured: <= 1.8e-7 after 40 steps); 1e-6 is
# ~8 ulps and far below any step (0.01).
PROTOCOL_ATOL = 1e-6


def accuracy(model, x, labels):
    with torch.no_grad():
        return (model(x).argmax(1) == labels).float().mean().item()


def foolbox_protocol_pgd(model, x, labels, *, eps, norm, steps, step_size, loss, targeted=False):
    """The core's PGD run with Foolbox's protocol: constant step, no momentum, last iterate."""
    return mifpe_plugins.pgd(
        model, x, labels, eps=eps, norm=norm, steps=steps, step_size=step_size,
        schedule="constant", momentum=None, keep_best=False, random_start=False, loss=loss,
        targeted=targeted,
    )


# --------------------------------------------------------------------------------------------
# Lazy import and a missing host
# --------------------------------------------------------------------------------------------


def test_importing_the_package_does_not_import_foolbox():
    code = "import sys, mifpe_plugins, mifpe_plugins.adapters; print('foolbox' in sys.modules, 'eagerpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_missing_foolbox_raises_import_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "foolbox", None)
    monkeypatch.delitem(sys.modules, "mifpe_plugins.adapters.foolbox")
    with pytest.raises(ImportError, match=r"pip install mifpe-plugins\[foolbox\]"):
        importlib.import_module("mifpe_plugins.adapters.foolbox")


# --------------------------------------------------------------------------------------------
# Parity: loss="ce" (or beta=1) is stock Foolbox, bitwise
# --------------------------------------------------------------------------------------------

PARITY_CASES = [
    # (ours, stock, epsilons, targeted allowed by Foolbox)
    (lambda: fba.LinfMIFPEPGD(loss="ce", steps=8), lambda: fb.attacks.LinfPGD(steps=8), [0.05, 0.1], True),
    (lambda: fba.L2MIFPEPGD(loss="ce", steps=8), lambda: fb.attacks.L2PGD(steps=8), [0.2, 0.5], True),
    (lambda: fba.LinfMIFPEFGSM(loss="ce", random_start=True), lambda: fb.attacks.FGSM(random_start=True), [0.1], False),
    (lambda: fba.L2MIFPEFGSM(loss="ce"), lambda: fb.attacks.FGM(), [0.5], False),
    (lambda: fba.LinfPGDPP(beta=1.0, steps=8), lambda: fb.attacks.LinfPGD(steps=8), [0.1], True),
    (lambda: fba.L2FGSMPP(beta=1.0, random_start=True), lambda: fb.attacks.FGM(random_start=True), [0.5], False),
]


@pytest.mark.parametrize("ours, stock, epsilons, targeted_ok", PARITY_CASES)
@pytest.mark.parametrize("data", ["mlp", "cnn"])
def test_ce_equals_stock_foolbox_bitwise(ours, stock, epsilons, targeted_ok, data):
    if data == "mlp":
        model, x, labels = make_mlp_data(n=16, dtype=torch.float32)
        num_classes = 4
    else:
        torch.manual_seed(0)
        model = TinyCNN().eval()
        x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            labels = model(x).argmax(1)
        num_classes = 10
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    criteria = [fb.criteria.Misclassification(labels)]
    if targeted_ok:
        criteria.append(fb.criteria.TargetedMisclassification((labels + 1) % num_classes))
    for criterion in criteria:
        torch.manual_seed(123)
        expected = stock()(fmodel, x, criterion, epsilons=epsilons)
        rng_after_stock = torch.get_rng_state()
        torch.manual_seed(123)
        got = ours()(fmodel, x, criterion, epsilons=epsilons)
        # the same random draws, and nothing more, were taken from the global RNG
        assert torch.equal(torch.get_rng_state(), rng_after_stock)
        for exp_list, got_list in zip(expected[:2], got[:2], strict=True):
            for e, g in zip(exp_list, got_list, strict=True):
                assert torch.equal(e, g)
        assert torch.equal(expected[2], got[2])


def test_parity_through_preprocessing_and_transformed_bounds():
    model, x, labels = make_mlp_data(n=16, dtype=torch.float32)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), preprocessing=dict(mean=0.4, std=0.3))
    for fm, inputs, eps in ((fmodel, x, 0.1), (fmodel.transform_bounds((0, 255)), 255 * x, 25.0)):
        torch.manual_seed(7)
        expected = fb.attacks.LinfPGD(steps=5)(fm, inputs, labels, epsilons=eps)
        torch.manual_seed(7)
        got = fba.LinfMIFPEPGD(loss="ce", steps=5)(fm, inputs, labels, epsilons=eps)
        assert torch.equal(expected[0], got[0]) and torch.equal(expected[2], got[2])


def test_constructor_defaults_are_foolboxs():
    pairs = [
        (fba.LinfMIFPEPGD, fb.attacks.LinfPGD), (fba.LinfPGDPP, fb.attacks.LinfPGD),
        (fba.L2MIFPEPGD, fb.attacks.L2PGD), (fba.L2PGDPP, fb.attacks.L2PGD),
        (fba.LinfMIFPEFGSM, fb.attacks.FGSM), (fba.LinfFGSMPP, fb.attacks.FGSM),
        (fba.L2MIFPEFGSM, fb.attacks.FGM), (fba.L2FGSMPP, fb.attacks.FGM),
    ]
    for ours, stock in pairs:
        host = inspect.signature(stock.__init__).parameters
        mine = inspect.signature(ours.__init__).parameters
        for name, param in host.items():
            if name == "self":
                continue
            assert mine[name].default == param.default, (ours.__name__, name)
        assert issubclass(ours, stock)


# --------------------------------------------------------------------------------------------
# Boost: where CE's gradient underflows, MIFPE and PGD++ through Foolbox reach the core's result
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "norm, eps, ours, stock",
    [
        ("linf", 0.3, fba.LinfMIFPEPGD, fb.attacks.LinfPGD),
        ("l2", 1.0, fba.L2MIFPEPGD, fb.attacks.L2PGD),
    ],
)
def test_mifpe_pgd_breaks_what_stock_pgd_cannot(norm, eps, ours, stock):
    model, x, labels = large_margin_problem(torch.float32)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    clean = accuracy(model, x, labels)
    assert clean == 1.0
    # No random start: CE's gradient is exactly 0 at every clean input here, so stock PGD does not
    # move at all (a random start alone already fools ~11% of these samples by luck at eps 0.3).
    _, stock_adv, stock_success = stock(steps=40, random_start=False)(fmodel, x, labels, epsilons=eps)
    assert accuracy(model, stock_adv, labels) == clean
    assert not bool(stock_success.any())
    _, ours_adv, ours_success = ours(steps=40, random_start=False)(fmodel, x, labels, epsilons=eps)
    robust_ours = accuracy(model, ours_adv, labels)
    assert robust_ours == pytest.approx(1.0 - ours_success.float().mean().item())
    # The core's MIFPE-PGD (paper protocol: linear steps, momentum, best point) gets 0.0 here.
    # Foolbox's protocol is weaker per step (constant step 0.01*eps/0.3, last iterate); with 40
    # steps it still reaches the same level. Tolerance: 5 points (3 of 64 samples).
    core_adv = mifpe_plugins.pgd(model, x, labels, eps=eps, norm=norm, steps=40, loss="mifpe")
    robust_core = accuracy(model, core_adv, labels)
    assert robust_ours <= robust_core + 0.05
    assert robust_ours <= 0.05


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("norm, eps, attack, step", [("linf", 0.3, fba.LinfMIFPEPGD, 0.01), ("l2", 1.0, fba.L2MIFPEPGD, 0.025)])
def test_mifpe_pgd_equals_the_core_under_foolboxs_protocol(targeted, norm, eps, attack, step):
    model, x, labels = large_margin_problem(torch.float32)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    target = (labels + 1) % 5 if targeted else labels
    criterion = (fb.criteria.TargetedMisclassification if targeted else fb.criteria.Misclassification)(target)
    raw, clipped, success = attack(steps=40, random_start=False, abs_stepsize=step)(
        fmodel, x, criterion, epsilons=eps
    )
    expected = foolbox_protocol_pgd(
        model, x, target, eps=eps, norm=norm, steps=40, step_size=step, loss="mifpe", targeted=targeted
    )
    # A sign error on targeted runs (ascending CE on the target) would move away from the target.
    torch.testing.assert_close(raw, expected, rtol=0, atol=PROTOCOL_ATOL)
    if targeted:
        with torch.no_grad():
            assert torch.equal(success, model(clipped).argmax(1) == target)
        assert bool(success.all())


@pytest.mark.parametrize("ours, stock, norm, eps", [(fba.LinfMIFPEFGSM, fb.attacks.FGSM, "linf", 0.3), (fba.L2MIFPEFGSM, fb.attacks.FGM, "l2", 1.0)])
def test_mifpe_fgsm_matches_the_core_and_beats_stock(ours, stock, norm, eps):
    model, x, labels = large_margin_problem(torch.float32)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    _, stock_adv, _ = stock()(fmodel, x, labels, epsilons=eps)
    assert accuracy(model, stock_adv, labels) == 1.0
    raw, _, _ = ours()(fmodel, x, labels, epsilons=eps)
    core = mifpe_plugins.fgsm(model, x, labels, eps=eps, norm=norm, loss="mifpe")
    # One step from the clean point: same protocol as the core's FGSM.
    torch.testing.assert_close(raw, core, rtol=0, atol=PROTOCOL_ATOL)
    assert accuracy(model, raw, labels) <= 0.05


@pytest.mark.parametrize("beta", ["njs", "hns"])
def test_pgdpp_equals_the_core_under_foolboxs_protocol(beta):
    model, x, labels = large_margin_problem(torch.float32)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    raw, _, _ = fba.LinfPGDPP(beta=beta, steps=40, random_start=False, abs_stepsize=0.01)(
        fmodel, x, labels, epsilons=0.3
    )
    expected = foolbox_protocol_pgd(model, x, labels, eps=0.3, norm="linf", steps=40, step_size=0.01, loss=beta)
    torch.testing.assert_close(raw, expected, rtol=0, atol=PROTOCOL_ATOL)
    assert accuracy(model, raw, labels) <= 0.05  # stock LinfPGD: 1.0 (test above)
    fgsm_raw, _, _ = fba.LinfFGSMPP(beta=beta)(fmodel, x, labels, epsilons=0.3)
    core = mifpe_plugins.fgsm(model, x, labels, eps=0.3, loss=beta)
    torch.testing.assert_close(fgsm_raw, core, rtol=0, atol=PROTOCOL_ATOL)


def test_pgdpp_accepts_a_prefitted_njs_rule():
    model, x, labels = large_margin_problem(torch.float32)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    beta1 = mifpe_plugins.njs_beta1(model, x)
    by_name = fba.L2PGDPP(beta="njs", steps=5, random_start=False)(fmodel, x, labels, epsilons=1.0)
    prefit = fba.L2PGDPP(beta=mifpe_plugins.NJS(beta1=beta1), steps=5, random_start=False)(
        fmodel, x, labels, epsilons=1.0
    )
    # Same batch, so the beta_1 fitted on it by the attack is the one computed here.
    assert torch.equal(by_name[0], prefit[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_mifpe_through_foolbox_in_other_dtypes(dtype):
    model, x, labels = large_margin_problem(dtype, n=16)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    _, stock_adv, _ = fb.attacks.LinfPGD(steps=20, random_start=False)(fmodel, x, labels, epsilons=0.3)
    raw, clipped, _ = fba.LinfMIFPEPGD(steps=40, random_start=False)(fmodel, x, labels, epsilons=0.3)
    assert raw.dtype == dtype
    assert accuracy(model, stock_adv, labels) == 1.0
    assert accuracy(model, clipped, labels) <= 0.1


# --------------------------------------------------------------------------------------------
# The loss Foolbox receives, and what it does not change
# --------------------------------------------------------------------------------------------


def test_targeted_runs_hand_the_loss_its_targets_and_negate_it():
    model, x, labels = make_mlp_data(n=8, dtype=torch.float32)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    targets = (labels + 1) % 4
    calls = []

    def recording_loss(logits, loss_labels, *, targeted=False):
        calls.append((loss_labels.clone(), targeted))
        return mifpe_plugins.ce_loss(logits, loss_labels, targeted=targeted)

    attack = fba.LinfMIFPEPGD(loss=recording_loss, steps=2)
    attack(fmodel, x, fb.criteria.TargetedMisclassification(targets), epsilons=0.1)
    assert calls and all(torch.equal(lab, targets) and flag for lab, flag in calls)
    calls.clear()
    attack(fmodel, x, labels, epsilons=0.1)  # raw labels mean Misclassification, as in Foolbox
    assert calls and all(torch.equal(lab, labels) and not flag for lab, flag in calls)


def test_no_side_effects_on_model_inputs_and_rng():
    model, x, labels = make_mlp_data(n=8, dtype=torch.float32)
    model.train()  # a mode the attack must leave as it is (this MLP has no dropout/BN)
    with pytest.warns(UserWarning, match="training mode"):
        fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    x_before = x.clone()
    for attack in (fba.LinfPGDPP(beta="hns", steps=3, random_start=False), fba.L2MIFPEPGD(steps=3, random_start=False)):
        rng = torch.get_rng_state()
        attack(fmodel, x, labels, epsilons=[0.1, 0.2])
        assert torch.equal(torch.get_rng_state(), rng)
    assert model.training
    assert torch.equal(x, x_before) and not x.requires_grad
    assert all(p.grad is None for p in model.parameters())
    # stock Foolbox calls backward(), which does fill the parameters' .grad: the check above bites
    fb.attacks.L2PGD(steps=1, random_start=False)(fmodel, x, labels, epsilons=0.1)
    assert any(p.grad is not None for p in model.parameters())


def test_multiple_epsilons_repeat_and_repr():
    model, x, labels = large_margin_problem(torch.float32, n=16)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    attack = fba.LinfMIFPEPGD(steps=20, temperature=2.0)
    raws, clippeds, success = attack.repeat(2)(fmodel, x, labels, epsilons=[0.0, 0.3])
    assert len(raws) == len(clippeds) == 2 and success.shape == (2, 16)
    assert not bool(success[0].any()) and bool(success[1].all())
    assert repr(attack) == (
        "LinfMIFPEPGD(rel_stepsize=0.03333333333333333, abs_stepsize=None, steps=20, "
        "random_start=True, loss=mifpe(T=2))"
    )


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_plain_module_instead_of_foolbox_model_is_a_type_error():
    model, x, labels = make_mlp_data(n=4, dtype=torch.float32)
    with pytest.raises(TypeError, match=r"model must be a Foolbox model.*PyTorchModel"):
        fba.LinfMIFPEPGD()(model, x, labels, epsilons=0.1)
    with pytest.raises(TypeError, match=r"model must be a Foolbox model"):
        fba.LinfMIFPEPGD().run(model, x, labels, epsilon=0.1)


def test_non_torch_inputs_are_a_type_error():
    model, x, labels = make_mlp_data(n=4, dtype=torch.float32)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    with pytest.raises(TypeError, match=r"inputs must be a torch.Tensor"):
        fba.LinfMIFPEFGSM()(fmodel, x.numpy(), labels, epsilons=0.1)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match=r"beta must be one of 'njs', 'hns'.*got 'nsj'"):
        fba.LinfPGDPP(beta="nsj")
    with pytest.raises(ValueError, match=r"beta must be a finite number > 0"):
        fba.L2PGDPP(beta=0.0)
    with pytest.raises(TypeError, match=r"beta must be"):
        fba.LinfFGSMPP(beta=[1.0])
    with pytest.raises(ValueError, match=r"temperature is MIFPE's T and applies only to loss='mifpe'"):
        fba.LinfMIFPEPGD(loss="ce", temperature=2.0)
    with pytest.raises(ValueError, match=r"temperature must be a finite number > 0"):
        fba.L2MIFPEFGSM(temperature=-1.0)
    with pytest.raises(ValueError, match=r"unknown loss 'mifep'"):
        fba.LinfMIFPEPGD(loss="mifep")


def test_bad_call_arguments():
    model, x, labels = make_mlp_data(n=4, dtype=torch.float32)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    with pytest.raises(ValueError, match=r"criterion labels must lie in \[0, 3\]"):
        fba.LinfMIFPEPGD(steps=1)(fmodel, x, labels + 4, epsilons=0.1)
    # Foolbox's FGSM is untargeted only; the adapter keeps the host's refusal.
    with pytest.raises(ValueError, match="unsupported criterion"):
        fba.LinfFGSMPP(beta="hns")(fmodel, x, fb.criteria.TargetedMisclassification(labels), epsilons=0.1)


# --------------------------------------------------------------------------------------------
# The example script
# --------------------------------------------------------------------------------------------


def test_example_script_runs_and_shows_the_boost():
    script = REPO / "adapters" / "foolbox_example.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=120)
    lines = dict(line.split(":", 1) for line in out.stdout.strip().splitlines() if ":" in line)
    percent = {key.strip(): float(value.strip().rstrip("%")) for key, value in lines.items()}
    assert percent["clean accuracy"] == 100.0
    assert percent["robust accuracy, Foolbox LinfPGD (CE)"] == 100.0
    assert percent["robust accuracy, LinfMIFPEPGD (MIFPE)"] <= 5.0


# --------------------------------------------------------------------------------------------
# Epsilons and bounds, checked as the core checks them (Foolbox accepts NaN and negative epsilons,
# and only asserts the bounds, without a message, in __call__ and not at all in run)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "epsilons",
    [float("nan"), -0.1, float("inf"), [0.1, float("nan")], [0.05, -0.01]],
    ids=["nan", "negative", "inf", "nan-in-list", "negative-in-list"],
)
@pytest.mark.parametrize("attack", [fba.LinfMIFPEPGD, fba.L2MIFPEPGD, fba.LinfMIFPEFGSM, fba.L2FGSMPP])
def test_bad_epsilons_are_rejected_before_any_run(attack, epsilons):
    model, x, labels = make_mlp_data(n=4, dtype=torch.float32)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    calls = []

    def recording_ce(logits, targets, *, targeted=False):
        calls.append(targeted)
        return mifpe_plugins.ce_loss(logits, targets, targeted=targeted)

    instance = attack(loss=recording_ce) if "MIFPE" in attack.__name__ else attack(loss=recording_ce, beta=1.0)
    with pytest.raises(ValueError, match=r"epsilons must be finite and >= 0, got"):
        instance(fmodel, x, labels, epsilons=epsilons)
    assert calls == []  # not even the valid epsilons of the list ran


def test_stock_foolbox_accepts_a_nan_epsilon():
    # Why the adapter checks: the host returns NaN "adversarial examples" without a word.
    model, x, labels = make_mlp_data(n=4, dtype=torch.float32)
    raw, _, _ = fb.attacks.LinfPGD(steps=2)(fb.PyTorchModel(model, bounds=(0, 1)), x, labels, epsilons=float("nan"))
    assert bool(torch.isnan(raw).all())


def test_run_checks_its_epsilon_too():
    model, x, labels = make_mlp_data(n=4, dtype=torch.float32)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    with pytest.raises(ValueError, match=r"epsilon must be finite and >= 0, got -0.1"):
        fba.LinfMIFPEPGD(steps=1).run(fmodel, x, fb.criteria.Misclassification(labels), epsilon=-0.1)


def test_zero_and_numpy_epsilons_are_numbers():
    import numpy as np

    model, x, labels = make_mlp_data(n=8, dtype=torch.float32)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    attack = fba.LinfMIFPEPGD(loss="ce", steps=3, random_start=False)
    by_numpy = attack(fmodel, x, labels, epsilons=[np.float32(0.0), np.float64(0.1)])
    by_float = attack(fmodel, x, labels, epsilons=[0.0, 0.1])
    assert all(torch.equal(a, b) for a, b in zip(by_numpy[0], by_float[0], strict=True))
    assert not bool(by_float[2][0].any())  # epsilon 0 leaves every input as it is


@pytest.mark.parametrize("call", ["__call__", "run"])
def test_inputs_outside_the_models_bounds_are_rejected(call):
    model, x, labels = make_mlp_data(n=4, dtype=torch.float32)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    attack = fba.LinfMIFPEPGD(steps=1)
    message = (r"inputs must lie within the Foolbox model's bounds \[0, 1\], got values in \[[^,]+, 2\d\d.*"
               r"fb.PyTorchModel\(net, bounds=\(0, 255\)")
    with pytest.raises(ValueError, match=message):
        if call == "run":
            attack.run(fmodel, 255 * x, fb.criteria.Misclassification(labels), epsilon=8.0)
        else:
            attack(fmodel, 255 * x, labels, epsilons=8.0)
    # Stock Foolbox: a bare AssertionError in __call__ (none at all under python -O or in run).
    with pytest.raises(AssertionError):
        fb.attacks.LinfPGD(steps=1)(fmodel, 255 * x, labels, epsilons=8.0)


def test_inputs_in_a_models_own_bounds_pass_and_nan_inputs_do_not():
    model, x, labels = make_mlp_data(n=4, dtype=torch.float32)
    pixels = fb.PyTorchModel(model, bounds=(0, 255), preprocessing=dict(std=255.0))
    raw, _, _ = fba.LinfMIFPEPGD(loss="ce", steps=2)(pixels, 255 * x, labels, epsilons=8.0)
    assert raw.shape == x.shape
    broken = x.clone()
    broken[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"inputs contain NaN"):
        fba.LinfMIFPEPGD(steps=1)(fb.PyTorchModel(model, bounds=(0, 1)), broken, labels, epsilons=0.1)


def test_constructors_show_our_arguments_then_foolboxs_and_subclasses_keep_theirs():
    import inspect

    from mifpe_plugins.adapters.foolbox import LinfMIFPEPGD, LinfPGDPP

    params = inspect.signature(LinfMIFPEPGD).parameters
    assert list(params)[:2] == ["loss", "temperature"] and "steps" in params and "rel_stepsize" in params
    assert params["loss"].default == "mifpe" and params["steps"].default == fb.attacks.LinfPGD().steps
    assert LinfMIFPEPGD(steps=7, temperature=2.0).steps == 7
    assert repr(LinfPGDPP(beta="hns").loss) == "ce-hns"

    class Mine(LinfMIFPEPGD):
        def __init__(self, note: str) -> None:
            super().__init__(steps=3)
            self.note = note

    mine = Mine("x")
    assert mine.note == "x" and mine.steps == 3 and repr(mine.loss) == "mifpe(T=1)"
