"""A gradient-free random search in the L-inf ball: the Square attack's update on the logit margin.

Square (Andriushchenko et al., ECCV 2020) is the one attack of AutoAttack's standard ensemble that
needs no gradient, and on models whose loss surface misleads every gradient attack it is the one
that still finds the adversarial example. Each query moves one random square window of the
perturbation to a random vertex of the ball (per channel) and keeps the move if the margin
``z_y - max_{i != y} z_i`` (MIFPE paper, Fig. 8) drops. The margin is computed on the logits, so it
never underflows: the search sees the same quantity MIFPE's loss is built on.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..losses import logit_margin
from ._common import (
    Bounds,
    EpsLike,
    Model,
    check_bounds,
    check_eps,
    check_inputs,
    check_label_range,
    check_labels,
    check_logits,
    check_positive_int,
    check_start,
    check_unit_interval,
    resolve_generator,
    warn_if_training,
)

__all__ = ["square", "square_window_fraction"]

# The window shrinks at these queries of a 10 000-query run (Andriushchenko et al. 2020, Sec. 4.2);
# shorter runs compress the schedule.
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_SHRINK_EVERY = 10  # queries between host syncs that drop fooled samples from the batch


def square_window_fraction(query: int, queries: int, p_init: float) -> float:
    """The share ``p`` of the image a window covers at ``query`` of ``queries``: ``p_init`` halved
    at each of the paper's checkpoints, rescaled to a run of ``queries``."""
    scaled = int(query * 10_000 / queries)
    return p_init / 2 ** sum(scaled > point for point in _HALVINGS)


def square(
    model: Model,
    inputs: Tensor,
    labels: Tensor,
    *,
    eps: EpsLike,
    queries: int = 1000,
    p_init: float = 0.8,
    start: Tensor | None = None,
    bounds: Bounds = (0.0, 1.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Untargeted L-inf Square attack: ``queries`` forward passes per sample, no gradient.

    Every query draws, per sample, a window of side ``round(sqrt(p H W))`` at a uniform position and
    one sign per channel, sets the perturbation inside the window to ``+-eps`` and keeps it if the
    logit margin decreases. Samples stop at their first adversarial example; every
    ``_SHRINK_EVERY`` queries the batch shrinks to the samples still robust. Signals (B, C, L) and
    feature vectors (B, D) are searched the same way with windows of ``round(p L)`` consecutive
    entries.

    Parameters
    ----------
    model : callable
        Maps inputs to logits (B, K); used as given (only forward passes, under
        ``torch.no_grad()``).
    inputs : Tensor
        Clean images (B, C, H, W), signals (B, C, L) or vectors (B, D), any floating dtype.
    labels : Tensor
        True classes (B,).
    eps : float or Tensor
        L-inf radius, a number or per-sample (B,).
    queries : int
        Queries (forward passes) per sample after the starting point's.
    p_init : float
        Share of the image the first windows cover, in (0, 1]; 0.8 as in the paper.
    start : Tensor, optional
        Starting points, the inputs' shape, projected onto the ball: for example the highest-loss points
        of a gradient attack that did not fool these samples. By default the paper's start, one
        random ``+-eps`` stripe per column and channel.
    bounds : (float, float) or None
        Valid input range.
    generator : torch.Generator, optional
        Source of randomness; a fresh generator seeded with 0 when omitted.

    Returns
    -------
    Tensor
        Adversarial images; for samples never fooled, the point of smallest margin found; samples
        misclassified on the clean input come back unchanged.
    """
    bounds_t = check_bounds(bounds)
    check_inputs(inputs, bounds_t)
    if inputs.dim() > 4:
        raise ValueError("square takes images (batch, channels, height, width), signals (batch, channels, length) or "
                         f"vectors (batch, features), got shape {tuple(inputs.shape)}")
    labels = check_labels(labels, inputs)
    eps_t = check_eps(eps, inputs)
    check_positive_int(queries, "queries")
    check_unit_interval(p_init, "p_init")
    check_start(start, inputs)
    if inputs.shape[0] == 0:
        return inputs.detach().clone()
    warn_if_training(model)
    generator = resolve_generator(generator, inputs.device)
    with torch.no_grad():
        clean = model(inputs.detach())
        check_logits(clean, inputs.shape[0])
        check_label_range(labels, clean.shape[1])
        best = _search(lambda x: model(x.reshape(-1, *inputs.shape[1:])), _as_images(inputs.detach()).clone(), labels,
                       eps_t.view(-1, 1, 1, 1), bounds_t, clean, None if start is None else _as_images(start.detach()),
                       queries, p_init, generator)
    return best.reshape(inputs.shape)


def _as_images(x: Tensor) -> Tensor:
    """A view of ``x`` as images: a signal (B, C, L) is one row of pixels, a vector (B, D) also one channel."""
    return x[:, None, None] if x.dim() == 2 else x.unsqueeze(2) if x.dim() == 3 else x


def _search(model: Model, x0: Tensor, labels: Tensor, eps: Tensor, bounds: tuple[float, float] | None, clean: Tensor,
            start: Tensor | None, queries: int, p_init: float, generator: torch.Generator) -> Tensor:
    def clip(x: Tensor, origin: Tensor, radius: Tensor) -> Tensor:
        x = torch.minimum(torch.maximum(x, origin - radius), origin + radius)
        return x if bounds is None else x.clamp(*bounds)

    batch, channels, height, width = x0.shape
    if start is None:
        stripes = torch.randint(0, 2, (batch, channels, 1, width), generator=generator, device=x0.device)
        start = x0 + eps * (2 * stripes - 1).to(x0.dtype)
    fooled_clean = clean.argmax(1) != labels
    best = torch.where(fooled_clean.view(-1, 1, 1, 1), x0, clip(start.detach().to(x0.dtype), x0, eps))
    margin = torch.where(fooled_clean, logit_margin(clean, labels), logit_margin(model(best), labels))
    index = torch.arange(batch, device=x0.device)
    for query in range(queries):
        if query % _SHRINK_EVERY == 0:
            index = index[margin[index] >= 0]  # one host sync per _SHRINK_EVERY queries
            if index.numel() == 0:
                break
            origin, radius, targets = x0[index], eps[index], labels[index]  # gathered once per shrink
        window = _random_windows(index.numel(), height, width, square_window_fraction(query, queries, p_init),
                                 generator, x0.device)
        signs = 2 * torch.randint(0, 2, (index.numel(), channels, 1, 1), generator=generator, device=x0.device) - 1
        current = best[index]
        candidate = torch.where(window, clip(origin + radius * signs, origin, radius), current)
        # A window already at these signs would waste the query: flip them instead.
        unchanged = (candidate == current).flatten(1).all(1).view(-1, 1, 1, 1)
        candidate = torch.where(window & unchanged, clip(origin - radius * signs, origin, radius), candidate)
        new_margin = logit_margin(model(candidate), targets)
        better = new_margin < margin[index]
        best[index] = torch.where(better.view(-1, 1, 1, 1), candidate, current)
        margin[index] = torch.where(better, new_margin, margin[index])
    return best


def _random_windows(count: int, height: int, width: int, share: float, generator: torch.Generator,
                    device: torch.device) -> Tensor:
    """``count`` masks (count, 1, height, width), each a window over ``share`` of the image at a uniform
    position: a square of side ``round(sqrt(share H W))``, or ``round(share W)`` entries of a single row."""
    if height == 1:
        tall, wide = 1, min(width, max(1, round(share * width)))
    else:
        tall = wide = min(height, width, max(1, round(math.sqrt(share * height * width))))
    top = torch.randint(0, height - tall + 1, (count, 1, 1, 1), generator=generator, device=device)
    left = torch.randint(0, width - wide + 1, (count, 1, 1, 1), generator=generator, device=device)
    rows = torch.arange(height, device=device).view(1, 1, -1, 1)
    cols = torch.arange(width, device=device).view(1, 1, 1, -1)
    return (rows >= top) & (rows < top + tall) & (cols >= left) & (cols < left + wide)
