"""ART adapter: parity with ART's stock attacks, the MIFPE boost, CLEVER, errors, side effects.

Everything runs on tiny models on the CPU; ART computes in float32, so every model here is
float32.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from art.attacks.evasion import (
    AutoProjectedGradientDescent,
    FastGradientMethod,
    ProjectedGradientDescent,
)
from art.estimators.classification import PyTorchClassifier
from art.metrics import clever_u
from conftest import large_margin_problem, make_mlp_data
from torch import nn

from mifpe_plugins import NJS, apgd, fgsm, hns_beta, mifpe_loss, njs_beta, njs_beta1, pgd, tempered
from mifpe_plugins.adapters.art import (
    AttackClassifier,
    AttackLoss,
    MIFPELoss,
    TemperedLoss,
    mifpe_classifier,
    njs_loss,
    with_attack_loss,
)
from mifpe_plugins.clever import clever_comparison

REPO = Path(__file__).resolve().parents[1]
LARGE_MARGIN_CLASSES, LARGE_MARGIN_DIM = 5, 20
MLP_CLASSES, MLP_DIM = 4, 6


def stock_classifier(model, loss, *, dim, classes, cls=PyTorchClassifier):
    return cls(
        model, loss=loss, input_shape=(dim,), nb_classes=classes, clip_values=(0.0, 1.0),
        device_type="cpu",
    )


def accuracy(model, x, labels):
    with torch.no_grad():
        predictions = model(torch.as_tensor(x)).argmax(dim=1)
    return (predictions == torch.as_tensor(labels)).float().mean().item()


def seed_art(seed):
    """ART's random starts and CLEVER draw from numpy's legacy global RNG: seed that one."""
    np.random.seed(seed)  # noqa: NPY002


def numpy_global_state():
    return np.random.get_state()[1].copy()  # noqa: NPY002


def one_hot(labels, classes):
    return np.eye(classes, dtype=np.float32)[np.asarray(labels)]


@pytest.fixture(scope="module")
def mlp():
    model, x, labels = make_mlp_data(n=12, dim=MLP_DIM, classes=MLP_CLASSES, dtype=torch.float32)
    return model, x.numpy(), labels.numpy()


@pytest.fixture(scope="module")
def large_margin():
    model, x, labels = large_margin_problem(torch.float32, n=32)
    return model, x, labels


# --------------------------------------------------------------------------------------------
# (1) parity: AttackLoss("ce") / ("dlr") reproduces ART's stock attacks bit for bit
# --------------------------------------------------------------------------------------------

PARITY_ATTACKS = {
    "pgd-linf-random-start": lambda c: ProjectedGradientDescent(
        c, eps=0.1, eps_step=0.02, max_iter=8, num_random_init=1, verbose=False
    ),
    "pgd-l2-random-start": lambda c: ProjectedGradientDescent(
        c, norm=2, eps=0.3, eps_step=0.05, max_iter=8, num_random_init=1, verbose=False
    ),
    "pgd-linf-momentum": lambda c: ProjectedGradientDescent(
        c, eps=0.1, eps_step=0.02, max_iter=8, decay=0.9, verbose=False
    ),
    "pgd-linf-targeted": lambda c: ProjectedGradientDescent(
        c, eps=0.1, eps_step=0.02, max_iter=8, targeted=True, verbose=False
    ),
    "fgsm-linf": lambda c: FastGradientMethod(c, eps=0.1),
    "fgsm-l2-random-start": lambda c: FastGradientMethod(c, norm=2, eps=0.3, num_random_init=1),
}


@pytest.mark.parametrize("attack", sorted(PARITY_ATTACKS))
def test_ce_attack_loss_reproduces_stock_art_bitwise(mlp, attack):
    model, x, labels = mlp
    make = PARITY_ATTACKS[attack]
    y = (labels + 1) % MLP_CLASSES if "targeted" in attack else labels
    results = []
    for loss, cls in [
        (nn.CrossEntropyLoss(), PyTorchClassifier),
        (AttackLoss("ce"), PyTorchClassifier),
        (AttackLoss("ce"), AttackClassifier),
    ]:
        seed_art(1)
        classifier = stock_classifier(model, loss, dim=MLP_DIM, classes=MLP_CLASSES, cls=cls)
        results.append(make(classifier).generate(x, one_hot(y, MLP_CLASSES)))
    assert np.abs(results[0] - x).max() > 0.05  # the attack moved: the comparison is not vacuous
    np.testing.assert_array_equal(results[1], results[0])
    np.testing.assert_array_equal(results[2], results[0])


@pytest.mark.parametrize(
    ("loss_type", "ours", "norm", "eps"),
    [
        ("cross_entropy", "ce", np.inf, 0.1),
        ("difference_logits_ratio", "dlr", np.inf, 0.1),
        ("difference_logits_ratio", "dlr", 2, 0.3),
    ],
)
def test_apgd_loss_type_none_reproduces_stock_art_apgd_bitwise(mlp, loss_type, ours, norm, eps):
    model, x, labels = mlp
    outputs = []
    for loss, kind in [(nn.CrossEntropyLoss(), loss_type), (AttackLoss(ours), None)]:
        seed_art(2)
        classifier = stock_classifier(model, loss, dim=MLP_DIM, classes=MLP_CLASSES)
        attack = AutoProjectedGradientDescent(
            classifier, norm=norm, eps=eps, eps_step=eps / 4, max_iter=10, nb_random_init=1,
            loss_type=kind, verbose=False,
        )
        outputs.append(attack.generate(x, labels))
    assert accuracy(model, outputs[0], labels) < accuracy(model, x, labels)
    np.testing.assert_array_equal(outputs[1], outputs[0])


def test_art_linf_pgd_with_mifpe_is_the_cores_madry_pgd_bitwise(mlp):
    # ART's PGD is Madry's (constant step, no momentum, last iterate). In L-inf the clip to the
    # input range and the projection onto the ball are both box clamps and commute, so the core
    # with that protocol takes exactly the same steps: the loss inside ART is the core's MIFPE.
    model, x, labels = mlp
    classifier = mifpe_classifier(model, input_shape=(MLP_DIM,), nb_classes=MLP_CLASSES)
    x_art = ProjectedGradientDescent(
        classifier, eps=0.1, eps_step=0.02, max_iter=10, verbose=False
    ).generate(x, labels)
    x_core = pgd(
        model, torch.from_numpy(x), torch.from_numpy(labels), eps=0.1, steps=10, step_size=0.02,
        schedule="constant", momentum=None, keep_best=False, random_start=False, loss="mifpe",
    )
    assert accuracy(model, x_art, labels) < accuracy(model, x, labels)
    np.testing.assert_array_equal(x_art, x_core.numpy())


# --------------------------------------------------------------------------------------------
# (2) boost: where CE underflows, ART + MIFPE reaches the core's MIFPE-PGD level
# --------------------------------------------------------------------------------------------

# ART's PGD/FGSM (fixed step, no momentum, last iterate) are not the core's protocol (linear step
# schedule, momentum, keep-best), so only robust accuracies are compared: within 2 of 32 samples.
BOOST_TOLERANCE = 2 / 32


@pytest.mark.parametrize("attack", ["pgd", "fgsm"])
def test_mifpe_breaks_the_large_margin_model_where_stock_ce_cannot(large_margin, attack):
    model, x, labels = large_margin
    classes, dim = LARGE_MARGIN_CLASSES, LARGE_MARGIN_DIM
    clean = accuracy(model, x, labels)
    if attack == "pgd":
        def make(c):
            return ProjectedGradientDescent(c, eps=0.3, eps_step=0.075, max_iter=10, verbose=False)
        core = pgd(model, x, labels, eps=0.3, steps=10, loss="mifpe")
    else:
        def make(c):
            return FastGradientMethod(c, eps=0.3)
        core = fgsm(model, x, labels, eps=0.3, loss="mifpe")
    stock = stock_classifier(model, nn.CrossEntropyLoss(), dim=dim, classes=classes)
    robust_ce = accuracy(model, make(stock).generate(x.numpy(), labels.numpy()), labels)
    ours = mifpe_classifier(model, input_shape=(dim,), nb_classes=classes)
    robust_mifpe = accuracy(model, make(ours).generate(x.numpy(), labels.numpy()), labels)
    robust_core = accuracy(model, core, labels)
    assert clean == 1.0
    assert robust_ce == clean
    assert robust_core <= 0.1
    assert abs(robust_mifpe - robust_core) <= BOOST_TOLERANCE


def test_apgd_with_mifpe_matches_core_mifpe_apgd(large_margin):
    model, x, labels = large_margin
    classes, dim = LARGE_MARGIN_CLASSES, LARGE_MARGIN_DIM
    settings = {"eps": 0.3, "eps_step": 0.075, "max_iter": 10, "nb_random_init": 1}
    settings["verbose"] = False
    seed_art(0)
    stock = stock_classifier(model, nn.CrossEntropyLoss(), dim=dim, classes=classes)
    x_ce = AutoProjectedGradientDescent(stock, loss_type="cross_entropy", **settings).generate(
        x.numpy(), labels.numpy()
    )
    seed_art(0)
    ours = mifpe_classifier(model, input_shape=(dim,), nb_classes=classes)
    x_mifpe = AutoProjectedGradientDescent(ours, loss_type=None, **settings).generate(
        x.numpy(), labels.numpy()
    )
    robust_core = accuracy(model, apgd(model, x, labels, eps=0.3, steps=10, loss="mifpe"), labels)
    # ART's APGD always starts from a random point, which alone flips a few samples; CE's zero
    # gradient then adds nothing.
    assert accuracy(model, x_ce, labels) >= 0.8
    assert robust_core <= 0.1
    assert abs(accuracy(model, x_mifpe, labels) - robust_core) <= BOOST_TOLERANCE


def test_targeted_art_attacks_descend_eq7_which_ascends_eq8(large_margin):
    model, x, labels = large_margin
    classes = LARGE_MARGIN_CLASSES
    with torch.no_grad():
        logits = model(x)
    targets = logits.scatter(1, labels[:, None], float("-inf")).argmax(dim=1)
    ours = mifpe_classifier(model, input_shape=(LARGE_MARGIN_DIM,), nb_classes=classes)
    # ART's targeted attacks step along -loss_gradient(x, y_target)
    art_direction = -ours.loss_gradient(x.numpy(), one_hot(targets, classes))
    xg = x.clone().requires_grad_(True)
    (eq8_gradient,) = torch.autograd.grad(mifpe_loss(model(xg), targets, targeted=True).sum(), xg)
    assert np.count_nonzero(art_direction) == art_direction.size
    np.testing.assert_array_equal(np.sign(art_direction), np.sign(eq8_gradient.numpy()))

    x_adv = ProjectedGradientDescent(
        ours, eps=0.3, eps_step=0.075, max_iter=10, targeted=True, verbose=False
    ).generate(x.numpy(), one_hot(targets, classes))
    core = pgd(model, x, targets, eps=0.3, steps=10, loss="mifpe", targeted=True)
    hit_art = accuracy(model, x_adv, targets)
    hit_core = accuracy(model, core, targets)
    assert hit_core >= 0.9
    assert abs(hit_art - hit_core) <= BOOST_TOLERANCE


# --------------------------------------------------------------------------------------------
# The loss modules: values, reductions, label formats
# --------------------------------------------------------------------------------------------


def test_reductions_and_label_formats(mlp):
    model, x, labels = mlp
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
    y = torch.from_numpy(labels)
    expected = mifpe_loss(logits, y, temperature=2.0)
    loss = MIFPELoss(2.0, reduction="none")
    for target in [y, y.float(), y[:, None], torch.from_numpy(one_hot(labels, MLP_CLASSES))]:
        torch.testing.assert_close(loss(logits, target), expected, rtol=0, atol=0)
    torch.testing.assert_close(MIFPELoss(2.0)(logits, y), expected.mean())
    torch.testing.assert_close(MIFPELoss(2.0, reduction="sum")(logits, y), expected.sum())


def test_art_compute_loss_gets_per_sample_values_and_reduction_is_restored(mlp):
    model, x, labels = mlp
    classifier = mifpe_classifier(model, input_shape=(MLP_DIM,), nb_classes=MLP_CLASSES)
    per_sample = classifier.compute_loss(x, one_hot(labels, MLP_CLASSES), reduction="none")
    with torch.no_grad():
        expected = mifpe_loss(model(torch.from_numpy(x)), torch.from_numpy(labels))
    np.testing.assert_allclose(per_sample, expected.numpy(), rtol=0, atol=0)
    assert classifier.loss.reduction == "mean"


def test_tempered_losses_match_the_core(mlp):
    model, x, labels = mlp
    xt, y = torch.from_numpy(x), torch.from_numpy(labels)
    with torch.no_grad():
        logits = model(xt)
    fixed = TemperedLoss(0.1, reduction="none")(logits, y)
    torch.testing.assert_close(fixed, tempered("ce", 0.1)(logits, y))

    loss = njs_loss(model, x, samples=8, reduction="none")
    beta1 = njs_beta1(model, xt, samples=8)
    torch.testing.assert_close(loss.attack_loss.beta.beta1, beta1)
    expected = tempered("ce", NJS(beta1=beta1))(logits, y)
    torch.testing.assert_close(loss(logits, y), expected)
    assert not torch.equal(expected, tempered("ce", 1.0)(logits, y))
    # beta_2 * beta_1 per sample, as njs_beta computes it
    torch.testing.assert_close(
        loss.attack_loss.betas(logits, y), njs_beta(logits, beta1)
    )


# --------------------------------------------------------------------------------------------
# No side effects on the caller; with_attack_loss
# --------------------------------------------------------------------------------------------


def test_attack_leaves_model_mode_parameter_grads_and_inputs_alone(mlp):
    model, x, labels = mlp
    model.train()
    sentinel = [torch.full_like(p, 7.0) for p in model.parameters()]
    for param, grad in zip(model.parameters(), sentinel, strict=True):
        param.grad = grad
    x_before = x.copy()
    try:
        classifier = mifpe_classifier(model, input_shape=(MLP_DIM,), nb_classes=MLP_CLASSES)
        attack = ProjectedGradientDescent(classifier, eps=0.1, eps_step=0.02, max_iter=3)
        attack.generate(x, labels)
        assert all(module.training for module in model.modules())
        for param, grad in zip(model.parameters(), sentinel, strict=True):
            assert param.grad is grad
            assert bool((grad == 7.0).all())
        np.testing.assert_array_equal(x, x_before)
    finally:
        model.eval()
        for param in model.parameters():
            param.grad = None


def test_adapter_code_draws_from_no_global_rng(mlp):
    # ART's own attack loops do (DataLoader base seeds from torch's RNG, random starts from
    # numpy's); the adapter's construction, probe and loss gradients must not.
    model, x, labels = mlp
    seed_art(7)
    torch.manual_seed(7)
    numpy_before, torch_before = numpy_global_state(), torch.get_rng_state()
    classifier = mifpe_classifier(model, input_shape=(MLP_DIM,), nb_classes=MLP_CLASSES)
    classifier.loss_gradient(x, one_hot(labels, MLP_CLASSES))
    classifier.compute_loss(x, labels, reduction="none")
    assert np.array_equal(numpy_global_state(), numpy_before)
    assert torch.equal(torch.get_rng_state(), torch_before)


def test_with_attack_loss_swaps_only_the_loss(mlp):
    model, x, labels = mlp
    original = PyTorchClassifier(
        model, loss=nn.CrossEntropyLoss(), input_shape=(MLP_DIM,), nb_classes=MLP_CLASSES,
        clip_values=(0.0, 1.0), preprocessing=(0.5, 2.0), device_type="cpu",
    )
    swapped = with_attack_loss(original, temperature=3.0)
    assert isinstance(swapped, AttackClassifier)
    assert not isinstance(original.loss, AttackLoss)
    assert isinstance(swapped.loss, MIFPELoss) and swapped.loss.temperature == 3.0
    assert swapped.model is model
    assert swapped.clip_values is not None and tuple(swapped.clip_values) == (0.0, 1.0)
    # the preprocessing (x - 0.5) / 2 is carried over: same predictions as the original
    np.testing.assert_array_equal(swapped.predict(x), original.predict(x))
    with torch.no_grad():
        logits = model((torch.from_numpy(x) - 0.5) / 2.0)
    expected = mifpe_loss(logits, torch.from_numpy(labels), temperature=3.0).numpy()
    per_sample = swapped.compute_loss(x, labels, reduction="none")
    np.testing.assert_allclose(per_sample, expected, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# (3) missing host, lazy import
# --------------------------------------------------------------------------------------------


def test_missing_art_raises_import_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "art", None)
    monkeypatch.delitem(sys.modules, "mifpe_plugins.adapters.art", raising=False)
    with pytest.raises(ImportError, match=r"pip install mifpe-plugins\[art\]"):
        __import__("mifpe_plugins.adapters.art")


def test_importing_mifpe_plugins_does_not_import_art():
    code = "import sys, mifpe_plugins, mifpe_plugins.adapters; assert 'art' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --------------------------------------------------------------------------------------------
# (4) bad input
# --------------------------------------------------------------------------------------------


class _SoftmaxInForward(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).softmax(dim=1)


def test_probability_outputs_are_refused(mlp):
    model = mlp[0]
    kwargs = {"input_shape": (MLP_DIM,), "nb_classes": MLP_CLASSES}
    with pytest.raises(ValueError, match="ends with Softmax"):
        mifpe_classifier(nn.Sequential(model, nn.Softmax(dim=1)), **kwargs)
    with pytest.raises(ValueError, match="returns probabilities"):
        mifpe_classifier(_SoftmaxInForward(model), **kwargs)
    probability_classifier = stock_classifier(
        _SoftmaxInForward(model), nn.CrossEntropyLoss(), dim=MLP_DIM, classes=MLP_CLASSES
    )
    with pytest.raises(ValueError, match="classifier.model returns probabilities"):
        with_attack_loss(probability_classifier)
    with pytest.raises(ValueError, match="model returns probabilities"):
        clever_comparison(_SoftmaxInForward(model), mlp[1][:1], **kwargs)
    # LogSoftmax outputs are fine: CE and MIFPE ignore a per-sample shift of the logits
    mifpe_classifier(nn.Sequential(model, nn.LogSoftmax(dim=1)), **kwargs)


def test_bad_arguments_name_themselves(mlp):
    model, x, labels = mlp
    kwargs = {"input_shape": (MLP_DIM,), "nb_classes": MLP_CLASSES}
    stock = stock_classifier(model, nn.CrossEntropyLoss(), dim=MLP_DIM, classes=MLP_CLASSES)
    with pytest.raises(TypeError, match="with_attack_loss"):
        mifpe_classifier(stock, **kwargs)
    with pytest.raises(TypeError, match="classifier must be an art.+PyTorchClassifier"):
        with_attack_loss(model)
    with pytest.raises(ValueError, match="nb_classes=3"):
        mifpe_classifier(model, input_shape=(MLP_DIM,), nb_classes=3)
    with pytest.raises(ValueError, match="input_shape"):
        mifpe_classifier(model, input_shape=(MLP_DIM + 1, 2), nb_classes=MLP_CLASSES)
    with pytest.raises(ValueError, match="float64"):
        mifpe_classifier(make_mlp_data(n=2)[0], **kwargs)
    with pytest.raises(ValueError, match="either temperature"):
        mifpe_classifier(model, temperature=2.0, loss=AttackLoss("ce"), **kwargs)
    with pytest.raises(TypeError, match="loss must be an AttackLoss"):
        mifpe_classifier(model, loss=nn.CrossEntropyLoss(), **kwargs)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        MIFPELoss(0.0)
    with pytest.raises(ValueError, match="reduction must be one of 'none', 'mean', 'sum'"):
        MIFPELoss(reduction="average")
    with pytest.raises(ValueError, match="unknown loss"):
        AttackLoss("hinge")
    with pytest.raises(ValueError, match="HNS"):
        AttackLoss("hns")
    with pytest.raises(ValueError, match="beta1"):
        AttackLoss("njs")
    with pytest.raises(ValueError, match="per-sample beta tensor"):
        TemperedLoss(torch.ones(3))
    logits = torch.randn(3, MLP_CLASSES)
    with pytest.raises(ValueError, match="soft"):
        MIFPELoss()(logits, torch.full((3, MLP_CLASSES), 1 / MLP_CLASSES))
    with pytest.raises(ValueError, match=r"lie in \[0, 3\]"):
        MIFPELoss()(logits, torch.tensor([0, 1, 4]))
    loss = MIFPELoss()
    loss.reduction = "average"  # how ART sets it, bypassing the constructor
    with pytest.raises(ValueError, match="reduction must be one of"):
        loss(logits, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="norm must be 1, 2 or numpy.inf"):
        clever_comparison(model, x[:1], norm=3, **kwargs)


# --------------------------------------------------------------------------------------------
# CLEVER (PGD++ Table 11)
# --------------------------------------------------------------------------------------------

class ScaledLogits(nn.Module):
    def __init__(self, model, beta):
        super().__init__()
        self.model, self.beta = model, beta

    def forward(self, inputs):
        return self.beta * self.model(inputs)


class SoftmaxOfScaled(ScaledLogits):
    def forward(self, inputs):
        return super().forward(inputs).softmax(dim=1)


CLEVER_SETTINGS = {"nb_batches": 4, "batch_size": 3, "radius": 5.0, "norm": 1, "pool_factor": 2}


@pytest.fixture(scope="module")
def clever_result():
    model, x, _ = large_margin_problem(torch.float32, n=2)
    seed_art(123)
    numpy_before = numpy_global_state()
    torch_before = torch.get_rng_state()
    result = clever_comparison(
        model, x, nb_classes=LARGE_MARGIN_CLASSES, input_shape=(LARGE_MARGIN_DIM,), seed=5,
        **CLEVER_SETTINGS,
    )
    rng_restored = np.array_equal(numpy_global_state(), numpy_before) and torch.equal(
        torch.get_rng_state(), torch_before
    )
    return model, x, result, rng_restored


def test_clever_temperatures_are_the_papers_rules(clever_result):
    model, x, result, _ = clever_result
    with torch.no_grad():
        logits = model(x)
    np.testing.assert_array_equal(result.betas["original"], [1.0, 1.0])
    np.testing.assert_array_equal(result.betas["heuristic"], [0.01, 0.01])
    njs = njs_beta(logits, njs_beta1(model, x))
    np.testing.assert_allclose(result.betas["njs"], njs.double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(result.betas["hns"], hns_beta(model, x).double().numpy(), rtol=1e-6)


def test_clever_scores_are_arts_on_softmax_of_scaled_logits(clever_result):
    model, x, result, rng_restored = clever_result
    assert rng_restored
    assert sorted(result.scores) == ["heuristic", "hns", "njs", "original"]
    for name in ("njs", "hns"):
        beta = float(result.betas[name][1])

        # no clip_values: clever_comparison's default samples the whole ball
        classifier = PyTorchClassifier(
            SoftmaxOfScaled(model, beta), loss=nn.CrossEntropyLoss(),
            input_shape=(LARGE_MARGIN_DIM,), nb_classes=LARGE_MARGIN_CLASSES, device_type="cpu",
        )
        seed_art([5, 1])
        expected = clever_u(classifier, x[1].numpy(), verbose=False, **CLEVER_SETTINGS)
        assert result.scores[name][1] == pytest.approx(expected, rel=1e-9)
    # Saturated softmax: the original network's gradients are exactly 0 and CLEVER returns its
    # radius; NJS and HNS temperatures make the gradients informative and the bound tighter.
    np.testing.assert_array_equal(result.scores["original"], [5.0, 5.0])
    assert bool((result.scores["njs"] < 5.0).all()) and bool((result.scores["hns"] < 5.0).all())


# tiny pools give nearly equal gradient norms, which scipy's Weibull start-up warns about
@pytest.mark.filterwarnings("ignore:Precision loss occurred in moment calculation")
def test_clever_on_logits_is_invariant_to_temperature(mlp):
    model, x, _ = mlp

    scores = []
    for beta in (0.01, 1.0, 100.0):
        classifier = stock_classifier(
            ScaledLogits(model, beta), nn.CrossEntropyLoss(), dim=MLP_DIM, classes=MLP_CLASSES
        )
        seed_art(0)
        scores.append(clever_u(classifier, x[0], verbose=False, **CLEVER_SETTINGS))
    # equal up to the Weibull fit's tolerance (measured: ~1e-6 relative)
    assert scores[0] == pytest.approx(scores[1], rel=1e-4)
    assert scores[2] == pytest.approx(scores[1], rel=1e-4)


# --------------------------------------------------------------------------------------------
# (5) the example runs
# --------------------------------------------------------------------------------------------


def test_example_script_shows_the_boost():
    completed = subprocess.run(
        [sys.executable, str(REPO / "adapters" / "art_example.py")],
        check=True, capture_output=True, text=True, timeout=300,
    )
    lines = completed.stdout.splitlines()
    assert "clean accuracy: 100.0%" in lines
    assert "ART PGD-10, stock cross-entropy: robust accuracy 100.0%" in lines
    assert "ART PGD-10, MIFPE loss: robust accuracy 0.0%" in lines
