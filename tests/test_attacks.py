import warnings

import pytest
import torch
from conftest import TinyCNN, large_margin_problem, make_mlp_data
from hypothesis import given, settings
from hypothesis import strategies as st

from mifpe_plugins import apgd, ce_loss, fgsm, mifpe_loss, pgd
from mifpe_plugins.attacks import apgd_checkpoints

ATTACKS = {
    "fgsm": lambda m, x, y, **kw: fgsm(m, x, y, **kw),
    "pgd": lambda m, x, y, **kw: pgd(m, x, y, steps=10, **kw),
    "apgd": lambda m, x, y, **kw: apgd(m, x, y, steps=10, **kw),
}


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_ce_underflows_and_mifpe_does_not(dtype):
    model, x, y = large_margin_problem(dtype)
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    (g_ce,) = torch.autograd.grad(ce_loss(logits, y).sum(), xg, retain_graph=True)
    (g_mifpe,) = torch.autograd.grad(mifpe_loss(logits, y).sum(), xg)
    assert torch.count_nonzero(g_ce) == 0
    assert bool((g_mifpe.flatten(1).abs().sum(1) > 0).all())

    clean = accuracy(model, x, y)
    assert clean == 1.0
    for attack in ("fgsm", "pgd", "apgd"):
        robust_ce = accuracy(model, ATTACKS[attack](model, x, y, eps=0.3, loss="ce", random_start=False), y)
        robust_mifpe = accuracy(model, ATTACKS[attack](model, x, y, eps=0.3, loss="mifpe", random_start=False), y)
        assert robust_ce == clean, attack
        assert robust_mifpe <= 0.5 * clean, (attack, robust_mifpe)


def test_pgd_runs_in_bfloat16():
    model, x, y = large_margin_problem(torch.bfloat16)
    x_adv = pgd(model, x, y, eps=0.3, steps=10)
    assert x_adv.dtype == torch.bfloat16
    assert accuracy(model, x_adv, y) <= 0.5


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_batch_equals_each_sample_alone(attack, norm):
    model, x, y = make_mlp_data(n=6)
    eps = 0.1 if norm == "linf" else 0.3
    together = ATTACKS[attack](model, x, y, eps=eps, norm=norm, random_start=False)
    for i in range(6):
        alone = ATTACKS[attack](model, x[i : i + 1], y[i : i + 1], eps=eps, norm=norm, random_start=False)
        torch.testing.assert_close(together[i : i + 1], alone, rtol=0, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(
    attack=st.sampled_from(sorted(ATTACKS)),
    norm=st.sampled_from(["linf", "l2"]),
    eps=st.floats(min_value=0.0, max_value=1.0),
    loss=st.sampled_from(["ce", "mifpe", "cw", "dlr"]),
    seed=st.integers(0, 1000),
)
def test_results_inside_ball_and_bounds(attack, norm, eps, loss, seed):
    model, x, y = make_mlp_data(n=8, dtype=torch.float32, seed=seed % 5)
    gen = torch.Generator().manual_seed(seed)
    x_adv = ATTACKS[attack](model, x, y, eps=eps, norm=norm, loss=loss, random_start=True, generator=gen)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert bool((x_adv >= 0).all()) and bool((x_adv <= 1).all())
    if norm == "linf":
        # exactly inside [x - eps, x + eps] as the dtype represents those bounds
        assert bool((x_adv >= x - eps).all()) and bool((x_adv <= x + eps).all())
    else:
        assert bool(((x_adv - x).flatten(1).norm(dim=1) <= eps * (1 + 1e-5) + 1e-7).all())


@settings(max_examples=10, deadline=None)
@given(attack=st.sampled_from(sorted(ATTACKS)), eps=st.floats(0.01, 0.5), seed=st.integers(0, 100))
def test_scalar_eps_equals_per_sample_eps(attack, eps, seed):
    model, x, y = make_mlp_data(n=5)
    a = ATTACKS[attack](model, x, y, eps=eps, generator=torch.Generator().manual_seed(seed))
    b = ATTACKS[attack](model, x, y, eps=torch.full((5,), eps, dtype=x.dtype), generator=torch.Generator().manual_seed(seed))
    assert torch.equal(a, b)


def test_per_sample_eps_respected():
    model, x, y = make_mlp_data(n=4)
    eps = torch.tensor([0.0, 0.05, 0.1, 0.2], dtype=x.dtype)
    x_adv = pgd(model, x, y, eps=eps, steps=5)
    linf = (x_adv - x).abs().amax(1)
    assert linf[0] == 0
    assert bool((linf <= eps + 1e-12).all())


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_no_side_effects(attack):
    model, x, y = make_mlp_data(n=6, dtype=torch.float32)
    model.train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    first = next(model.parameters())
    first.requires_grad_(True)
    inputs = x.clone().requires_grad_(True)
    before = inputs.detach().clone()
    rng = torch.get_rng_state()
    with pytest.warns(UserWarning, match=r"train\(\) mode"):
        ATTACKS[attack](model, inputs, y, eps=0.1, random_start=True)
    assert model.training
    assert torch.equal(torch.get_rng_state(), rng)
    assert inputs.requires_grad and inputs.grad is None
    assert torch.equal(inputs.detach(), before)
    for p in model.parameters():
        assert torch.equal(p.grad, torch.full_like(p, 7.0))
    model.eval()
    ATTACKS[attack](model, inputs, y, eps=0.1)
    assert not model.training


def test_generator_makes_runs_repeatable():
    model, x, y = make_mlp_data(n=6, dtype=torch.float32)
    a = pgd(model, x, y, eps=0.1, steps=5, generator=torch.Generator().manual_seed(3))
    b = pgd(model, x, y, eps=0.1, steps=5, generator=torch.Generator().manual_seed(3))
    c = pgd(model, x, y, eps=0.1, steps=5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(pgd(model, x, y, eps=0.1, steps=5), pgd(model, x, y, eps=0.1, steps=5))


def test_images_and_callback():
    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.rand(5, 1, 8, 8)
    y = model(x).argmax(1)
    seen = []
    x_adv = pgd(model, x, y, eps=8 / 255, steps=4, callback=seen.append)
    assert x_adv.shape == x.shape
    assert [s.iteration for s in seen] == [0, 1, 2, 3]
    assert all(s.loss.shape == (5,) and s.margin.shape == (5,) and s.success.dtype == torch.bool for s in seen)
    # margin at the clean point is z_y - max_other > 0 for correctly classified samples
    with torch.no_grad():
        clean_margin = model(x).sort(1, descending=True).values
    assert torch.all(seen[0].margin <= (clean_margin[:, 0] - clean_margin[:, 1]) + 1)
    fooled = pgd(model, x, y, eps=0.5, steps=20)
    assert torch.equal(seen[-1].success.any().reshape(()), seen[-1].success.any().reshape(()))
    assert accuracy(model, fooled, y) < 1.0


def test_success_is_first_adversarial_and_frozen():
    model, x, y = large_margin_problem(torch.float32, n=16)
    records = []
    x_adv = pgd(model, x, y, eps=0.3, steps=20, random_start=False, callback=records.append)
    success = records[-1].success
    assert bool(success.all())
    # returned points are adversarial exactly where success was reported
    with torch.no_grad():
        assert bool((model(x_adv).argmax(1) != y).all())
    # success flags never turn off
    for a, b in zip(records, records[1:], strict=False):
        assert bool((a.success <= b.success).all())


def test_targeted_and_multitargeted():
    model, x, y = make_mlp_data(n=12, dtype=torch.float32)
    targets = (y + 1) % 4
    x_adv = pgd(model, x, targets, eps=1.0, steps=30, loss="ce", targeted=True)
    with torch.no_grad():
        hit = (model(x_adv).argmax(1) == targets).float().mean().item()
    assert hit >= 0.9
    for fn in (pgd, apgd):
        x_mt = fn(model, x, y, eps=1.0, steps=20, loss="dlr", target_classes=3)
        assert accuracy(model, x_mt, y) <= 0.1
    with pytest.raises(ValueError, match="target_classes"):
        pgd(model, x, y, eps=0.1, target_classes=4)
    with pytest.raises(ValueError, match="targeted=False"):
        pgd(model, x, y, eps=0.1, targeted=True, target_classes=2)


def test_restarts_only_help():
    model, x, y = make_mlp_data(n=16, dtype=torch.float32)
    one = accuracy(model, pgd(model, x, y, eps=0.05, steps=5, restarts=1), y)
    three = accuracy(model, pgd(model, x, y, eps=0.05, steps=5, restarts=3), y)
    assert three <= one


def test_pgd_plus_plus_losses_run():
    model, x, y = make_mlp_data(n=8, dtype=torch.float32)
    for loss in ("njs", "hns"):
        x_adv = pgd(model, x, y, eps=0.1, steps=5, loss=loss)
        assert torch.isfinite(x_adv).all()
        x_adv = fgsm(model, x, y, eps=0.1, loss=loss)
        assert torch.isfinite(x_adv).all()


def test_apgd_checkpoints():
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert all(0 < w < 10 for w in apgd_checkpoints(10))


# --- bad input ---------------------------------------------------------------------------------


@pytest.fixture
def mlp():
    return make_mlp_data(n=4, dtype=torch.float32)


@pytest.mark.parametrize("eps", [-0.1, float("nan"), float("inf")])
def test_bad_eps(mlp, eps):
    model, x, y = mlp
    with pytest.raises(ValueError, match="eps must be finite and >= 0"):
        pgd(model, x, y, eps=eps)


@pytest.mark.parametrize("steps", [0, -1, 1.5])
def test_bad_steps(mlp, steps):
    model, x, y = mlp
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        pgd(model, x, y, eps=0.1, steps=steps)


def test_bad_names(mlp):
    model, x, y = mlp
    with pytest.raises(ValueError, match="unknown loss 'xent'"):
        pgd(model, x, y, eps=0.1, loss="xent")
    with pytest.raises(ValueError, match="norm must be 'linf'"):
        pgd(model, x, y, eps=0.1, norm="l1")
    with pytest.raises(ValueError, match="schedule must be"):
        pgd(model, x, y, eps=0.1, schedule="cosine")


def test_bad_labels(mlp):
    model, x, y = mlp
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        pgd(model, x, y[:3], eps=0.1)
    with pytest.raises(ValueError, match="labels must hold integer class indices"):
        pgd(model, x, y.float(), eps=0.1)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\]"):
        pgd(model, x, y + 4, eps=0.1)


def test_bad_inputs(mlp):
    model, x, y = mlp
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="inputs contain NaN"):
        pgd(model, bad, y, eps=0.1)
    with pytest.raises(ValueError, match="inputs lie outside bounds"):
        pgd(model, x * 3 - 1, y, eps=0.1)
    assert pgd(model, x * 3 - 1, y, eps=0.1, bounds=(-1, 2), steps=2).shape == x.shape
    with pytest.raises(ValueError, match="bounds must satisfy low < high"):
        pgd(model, x, y, eps=0.1, bounds=(1, 0))


def test_dlr_needs_three_classes():
    model, x, _ = make_mlp_data(n=4, classes=2)
    y = model(x).argmax(1)
    with pytest.raises(ValueError, match="at least 3 classes"):
        apgd(model, x, y, eps=0.1, loss="dlr")


def test_probabilities_warn(mlp):
    model, x, y = mlp

    def probs(v):
        return model(v).softmax(1)

    with pytest.warns(UserWarning, match="look like probabilities"):
        pgd(probs, x, y, eps=0.1, steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pgd(model, x, y, eps=0.1, steps=1)


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_empty_batch(mlp, attack):
    model, x, y = mlp
    out = ATTACKS[attack](model, x[:0], y[:0], eps=0.1)
    assert out.shape == (0, x.shape[1])


def _plain_pgd_reference(model, x0, y, eps, alpha, steps):
    x = x0.clone()
    for _ in range(steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y, reduction="sum"), x)
        x = torch.min(torch.max(x.detach() + alpha * grad.sign(), x0 - eps), x0 + eps).clamp(0, 1)
    return x


def test_keep_best_false_is_plain_pgd():
    model, x, y = make_mlp_data(n=10, dtype=torch.float32)
    ours = pgd(
        model, x, y, eps=0.1, steps=7, step_size=0.02, schedule="constant", momentum=None,
        loss="ce", random_start=False, keep_best=False,
    )
    assert torch.equal(ours, _plain_pgd_reference(model, x, y, 0.1, 0.02, 7))


def test_keep_best_never_worse_than_last_iterate():
    model, x, y = make_mlp_data(n=32, dtype=torch.float32, seed=1)
    kwargs = dict(eps=0.08, steps=10, loss="ce", random_start=False)
    best = accuracy(model, pgd(model, x, y, keep_best=True, **kwargs), y)
    last = accuracy(model, pgd(model, x, y, keep_best=False, **kwargs), y)
    assert best <= last


@pytest.mark.parametrize("attack", [pgd, apgd])
@pytest.mark.parametrize("loss", ["mifpe", "hns", "dlr"])
def test_shrinking_the_batch_changes_nothing(attack, loss):
    # Without a callback, PGD and APGD drop fooled samples from the batch every few steps; with
    # one they keep the whole batch (masking). Both must return the same points: APGD's step
    # sizes and checkpoints are per sample.
    model, x, y = make_mlp_data(n=24, dtype=torch.float64, seed=3)
    kwargs = dict(eps=0.15, steps=23, loss=loss, restarts=2, generator=None)
    shrunk = attack(model, x, y, **kwargs)
    masked = attack(model, x, y, callback=lambda info: None, **kwargs)
    torch.testing.assert_close(shrunk, masked, rtol=0, atol=1e-12)
    assert accuracy(model, shrunk, y) < 1.0


@pytest.mark.parametrize("attack", ["pgd", "apgd"])
def test_shrinking_the_batch_saves_gradients(attack):
    from mifpe_plugins import evaluate

    model, x, y = large_margin_problem(torch.float32, n=32)
    result = evaluate(model, x, y, attack=attack, eps=0.3, steps=50, random_start=False)
    assert result.robust_accuracy < 0.5
    assert result.gradient_evaluations < 0.5 * 32 * 50
    # Masking keeps every row: one gradient per sample per step.
    masked = evaluate(model, x, y, attack=attack, eps=0.3, steps=50, random_start=False, callback=lambda info: None)
    assert masked.gradient_evaluations == 32 * 50


@pytest.mark.parametrize("attack", [pgd, apgd])
def test_a_warm_start_is_projected_and_an_adversarial_one_is_kept(attack):
    from mifpe_plugins.attacks._loop import per_sample_gradients

    model, x, y = make_mlp_data(n=12, dtype=torch.float64)
    found = pgd(model, x, y, eps=0.05, steps=50)
    with torch.no_grad():
        fooled = model(found).argmax(1) != y
    assert bool(fooled.any()) and not bool(fooled.all())
    with per_sample_gradients() as tallies:
        again = attack(model, x, y, eps=0.05, steps=20, start=found)
    assert torch.equal(again[fooled], found[fooled])
    # A sample fooled at its start leaves the batch at the next compaction (every 5 steps).
    assert bool((tallies[0][fooled] <= 5).all()) and bool((tallies[0][~fooled] == 20).all())
    far = attack(model, x, y, eps=0.05, steps=3, start=x + 10.0)  # outside the ball and the bounds
    assert float((far - x).abs().max()) <= 0.05 + 1e-12 and float(far.max()) <= 1.0
    with pytest.raises(ValueError, match="start must be a tensor of the inputs' shape \\(12, 6\\), got \\(3, 6\\)"):
        attack(model, x, y, eps=0.05, start=x[:3])
