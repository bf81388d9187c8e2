"""The gradient-free Square search: it sees what gradients miss, stays in the ball, costs forward passes only."""

from __future__ import annotations

import pytest
import torch
from conftest import large_margin_problem, make_mlp_data, tiny_cnn_problem

from mifpe_plugins.attacks import pgd, square
from mifpe_plugins.attacks.square import square_window_fraction
from mifpe_plugins.engine import PassCounter
from mifpe_plugins.evaluate import evaluate
from mifpe_plugins.losses import logit_margin


def test_it_fools_a_model_whose_cross_entropy_gradient_underflows():
    model, x, y = large_margin_problem(torch.float32, n=32)
    by_ce = pgd(model, x, y, eps=0.3, loss="ce", steps=20, random_start=False)
    by_search = square(model, x, y, eps=0.3, queries=300, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert bool((model(by_ce).argmax(1) == y).all())  # CE sees an exactly zero gradient
        fooled = model(by_search).argmax(1) != y
    assert fooled.float().mean() > 0.5
    assert float((by_search - x).abs().max()) <= 0.3 + 1e-6 and 0 <= float(by_search.min()) and float(by_search.max()) <= 1


@pytest.mark.parametrize("shape", [(12, 1, 8, 8), (12, 64), (12, 4, 16)])
def test_it_stays_in_the_ball_and_the_bounds_for_images_signals_and_vectors(shape):
    model, x, y = tiny_cnn_problem(12)
    x = x.reshape(shape)

    def forward(inputs):
        return model(inputs.reshape(-1, 1, 8, 8))

    eps = torch.linspace(0.01, 0.2, shape[0])
    adversarial = square(forward, x, y, eps=eps, queries=50, generator=torch.Generator().manual_seed(0))
    assert adversarial.shape == x.shape and adversarial.dtype == x.dtype
    distance = (adversarial - x).flatten(1).abs().amax(1)
    assert bool((distance <= eps + 1e-6).all()) and 0 <= float(adversarial.min()) and float(adversarial.max()) <= 1
    with torch.no_grad():
        assert bool((logit_margin(forward(adversarial), y) <= logit_margin(forward(x), y) + 1e-6).all())


def test_fooled_samples_stop_and_misclassified_ones_never_move():
    model, x, y = tiny_cnn_problem(16)
    y = y.clone()
    y[0] = (y[0] + 1) % 4  # misclassified from the start
    counter = PassCounter(model)
    queries = 200
    adversarial = square(counter, x, y, eps=0.3, queries=queries, generator=torch.Generator().manual_seed(0))
    assert torch.equal(adversarial[0], x[0])
    with torch.no_grad():
        fooled = model(adversarial).argmax(1) != y
    assert bool(fooled[1:].any())
    # One clean pass, one for the start, then one per query per sample still robust (checked every 10 queries).
    assert counter.backward_passes == 0
    assert counter.forward_passes < 16 * (queries + 2)


def test_a_start_that_is_already_adversarial_costs_one_forward_pass():
    model, x, y = tiny_cnn_problem(8)
    found = pgd(model, x, y, eps=0.3, steps=50)
    with torch.no_grad():
        fooled = model(found).argmax(1) != y
    assert bool(fooled.all())
    counter = PassCounter(model)
    adversarial = square(counter, x, y, eps=0.3, queries=100, start=found)
    assert torch.equal(adversarial, found) and counter.forward_passes == 2 * 8


def test_the_same_generator_gives_the_same_result_and_nothing_of_the_caller_changes():
    model, x, y = make_mlp_data(n=16, dtype=torch.float64)
    model.train()
    x_before, state = x.clone(), torch.get_rng_state()
    with pytest.warns(UserWarning, match="train\\(\\) mode"):
        first = square(model, x, y, eps=0.1, queries=40, generator=torch.Generator().manual_seed(3))
    second = square(model.eval(), x, y, eps=0.1, queries=40, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, second)
    assert torch.equal(x, x_before) and torch.equal(torch.get_rng_state(), state)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_the_window_schedule_halves_at_the_papers_checkpoints():
    assert square_window_fraction(0, 10_000, 0.8) == 0.8
    assert square_window_fraction(11, 10_000, 0.8) == 0.4
    assert square_window_fraction(9_000, 10_000, 0.8) == pytest.approx(0.8 / 2**9)
    assert square_window_fraction(100, 1000, 0.8) == square_window_fraction(1000, 10_000, 0.8)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"queries": 0}, "queries must be an integer >= 1, got 0"),
    ({"p_init": 1.5}, "p_init must be in \\(0, 1\\], got 1.5"),
    ({"start": torch.zeros(3, 1, 8, 8)}, "start must be a tensor of the inputs' shape \\(12, 1, 8, 8\\)"),
    ({"eps": -0.1}, "eps must be finite and >= 0"),
])
def test_bad_settings_are_refused_by_name(kwargs, message):
    model, x, y = tiny_cnn_problem(12)
    with pytest.raises(ValueError, match=message):
        square(model, x, y, **{"eps": 0.1, **kwargs})
    with pytest.raises(ValueError, match="square takes images .* got shape \\(12, 1, 1, 8, 8\\)"):
        square(model, x[:, None], y, eps=0.1)


def test_evaluate_runs_it_by_name_and_counts_no_backward_pass():
    model, x, y = tiny_cnn_problem(12)
    result = evaluate(model, x, y, attack="square", eps=0.2, queries=30, batch_size=6)
    assert result.gradient_evaluations == 0 and result.forward_passes > 0
    assert result.robust_accuracy <= float(result.clean_correct.float().mean())
