"""PGD++ / FGSM++ temperature rules: Network Jacobian Scaling (NJS) and Hessian Norm Scaling (HNS).

PGD++ attacks cross-entropy on ``beta * z`` (PGD++ paper, Sec. 4). The gradient is
``psi(beta) * beta * J`` with ``psi(beta) = -(y - p(beta))^T`` (eq. 7) and ``J = dz/dx`` the
K x N input-logit Jacobian. NJS makes ``beta * J`` well-conditioned and keeps ``psi`` away from 0;
HNS maximises the Frobenius norm of the input Hessian (eq. 8) over a grid of ``beta``.

Both are rules for :class:`mifpe_plugins.losses.Tempered`; the attacks bind them to the model and
the batch once, before the first step (``Tempered.bind``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "prop1_beta",
    "input_logit_jacobian",
    "jacobian_singular_values",
    "njs_beta1",
    "njs_beta",
    "NJS",
    "hessian_frobenius_norm",
    "hns_beta",
    "HNS",
]

Model = Callable[[Tensor], Tensor]


def prop1_beta(gamma: Tensor, rho: float, num_classes: int) -> Tensor:
    """Proposition 1 of the PGD++ paper: ``beta = -log(rho / ((K - 1)(1 - rho))) / gamma``.

    For logits whose range is ``gamma``, any ``beta`` below this value keeps
    ``1 - softmax(beta * z)_top > rho``. ``0 < rho < (K - 1) / K``.

    Parameters
    ----------
    gamma : Tensor
        Logit spread per sample (range for NJS, top-1 minus top-2 for HNS), shape (B,).
    rho : float
        Lower bound on ``1 - p_top``.
    num_classes : int
        ``K`` (``d`` in the paper), >= 2.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    upper = (num_classes - 1) / num_classes
    if not 0 < rho < upper:
        raise ValueError(f"rho must be in (0, {upper:g}) for {num_classes} classes, got {rho!r}")
    # log(rho) - log(1 - rho) stays exact for rho = 1e-72, where rho / (1 - rho) is fine but
    # (K - 1) * (1 - rho) would round; log1p keeps 1 - rho accurate near 0.
    numerator = -(math.log(rho) - math.log(num_classes - 1) - math.log1p(-rho))
    floor = torch.finfo(gamma.dtype).tiny
    return numerator / gamma.clamp_min(floor)


def input_logit_jacobian(model: Model, inputs: Tensor) -> tuple[Tensor, Tensor]:
    """Logits and the per-sample input-logit Jacobian ``J = dz/dx``.

    One forward pass and K backward passes through the same graph (one per class); samples are
    independent, so ``d(sum_b z_bk)/dx_b`` is row k of sample b's Jacobian.

    Returns
    -------
    logits : Tensor
        Shape (B, K), detached.
    jacobian : Tensor
        Shape (B, K, N) with N the number of input elements per sample.
    """
    x = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        if logits.dim() != 2:
            raise ValueError(f"model must return logits of shape (batch, classes), got {tuple(logits.shape)}")
        rows = []
        num_classes = logits.shape[1]
        for k in range(num_classes):
            (grad,) = torch.autograd.grad(logits[:, k].sum(), x, retain_graph=k < num_classes - 1)
            rows.append(grad.reshape(grad.shape[0], -1))
    return logits.detach(), torch.stack(rows, dim=1)


def _linalg_dtype(dtype: torch.dtype) -> torch.dtype:
    # Linear algebra (SVD, the K x K Hessian algebra) runs in at least float32: half precision has
    # no CPU SVD and the statistic should not carry the very rounding error under study.
    return torch.promote_types(dtype, torch.float32)


def jacobian_singular_values(jacobian: Tensor) -> Tensor:
    """Singular values of each sample's Jacobian, shape (B, min(K, N)), in >= float32."""
    return torch.linalg.svdvals(jacobian.to(_linalg_dtype(jacobian.dtype)))


def njs_beta1(model: Model, inputs: Tensor, *, samples: int = 100) -> Tensor:
    """NJS's network-wide ``beta_1``: the inverse mean Jacobian singular value (PGD++ Alg. 1, l. 3).

    ``beta_1 = (M * K) / sum_i sum_j mu_j(J_i)`` over the first ``M = samples`` inputs.

    Returns
    -------
    Tensor
        A 0-dim tensor (in >= float32) on the inputs' device.
    """
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if inputs.shape[0] == 0:
        raise ValueError("njs_beta1: inputs is empty; NJS needs at least one sample")
    _, jacobian = input_logit_jacobian(model, inputs[:samples])
    mean_sv = jacobian_singular_values(jacobian).mean()
    return 1.0 / mean_sv.clamp_min(torch.finfo(mean_sv.dtype).tiny)


def njs_beta(logits: Tensor, beta1: Tensor, *, rho: float = 0.01) -> Tensor:
    """Per-sample NJS temperature ``beta_2 * beta_1`` for the current logits (PGD++ Alg. 1, l. 6-10).

    ``p' = softmax(beta_1 z)``; where ``1 - max p' <= rho`` the error signal would vanish, so
    ``beta_2 = prop1_beta(gamma, rho, K)`` with ``gamma`` the range of ``beta_1 z``, else
    ``beta_2 = 1``. The paper tests the true class ``k``; the top class is used here because the
    two coincide for every sample an untargeted attack still moves, and the top class is also
    defined for targeted attacks.
    """
    work = _linalg_dtype(logits.dtype)
    scaled = logits.detach().to(work) * beta1.to(device=logits.device, dtype=work)
    p_top = scaled.softmax(dim=1).amax(dim=1)
    gamma = scaled.amax(dim=1) - scaled.amin(dim=1)
    beta2 = prop1_beta(gamma, rho, logits.shape[1])
    beta2 = torch.where(1 - p_top <= rho, beta2, torch.ones_like(beta2))
    return (beta2 * beta1.to(device=logits.device, dtype=work)).to(logits.dtype)


class NJS:
    """Network Jacobian Scaling rule (PGD++ paper, Sec. 4, Alg. 1).

    Parameters
    ----------
    beta1 : float or Tensor, optional
        The network's ``beta_1``; computed by :func:`njs_beta1` on the first ``samples`` inputs of
        the attacked batch when ``None``. Compute it once with :func:`njs_beta1` on 100 test images
        and pass it here to match the paper's one-``beta_1``-per-network protocol.
    rho : float
        Lower bound on ``1 - p_top``, 0.01 in the paper.
    samples : int
        ``M``, the number of samples for ``beta_1``.
    """

    def __init__(self, beta1: float | Tensor | None = None, *, rho: float = 0.01, samples: int = 100):
        if not 0 < rho < 0.5:
            raise ValueError(f"NJS: rho must be in (0, 0.5), got {rho!r}")
        if beta1 is not None and not float(beta1) > 0:
            raise ValueError(f"NJS: beta1 must be > 0, got {beta1!r}")
        self.beta1 = None if beta1 is None else torch.as_tensor(beta1)
        self.rho = rho
        self.samples = samples

    def bind(self, model: Model, inputs: Tensor, labels: Tensor) -> NJS:
        if self.beta1 is not None:
            return self
        return NJS(njs_beta1(model, inputs, samples=self.samples), rho=self.rho, samples=self.samples)

    def __call__(self, logits: Tensor, labels: Tensor) -> Tensor:
        if self.beta1 is None:
            raise RuntimeError(
                "NJS needs beta1: pass NJS(beta1=njs_beta1(model, x)) or let an attack bind it"
            )
        return njs_beta(logits, self.beta1, rho=self.rho)

    def __repr__(self) -> str:
        b1 = "unbound" if self.beta1 is None else f"{float(self.beta1):.4g}"
        return f"NJS(beta1={b1}, rho={self.rho:g})"


def hessian_frobenius_norm(logits: Tensor, jacobian: Tensor, betas: Tensor) -> Tensor:
    """``|| d^2 CE(beta z) / dx^2 ||_F`` for piecewise-linear networks, for many ``beta`` at once.

    With ``dJ/dx = 0`` (ReLU networks, almost everywhere) the Hessian of PGD++ eq. 8 is
    ``beta^2 J^T S(beta) J`` with ``S = diag(p) - p p^T`` the softmax Jacobian, independent of the
    label. With ``G = J J^T`` (K x K), ``||J^T S J||_F^2 = tr(S G S G)``: no pass through the network.

    Parameters
    ----------
    logits : Tensor
        Shape (B, K).
    jacobian : Tensor
        Shape (B, K, N).
    betas : Tensor
        Shape (B, G): G candidate temperatures per sample.

    Returns
    -------
    Tensor
        Shape (B, G), in >= float32.
    """
    work = _linalg_dtype(logits.dtype)
    jac = jacobian.to(work)
    gram = jac @ jac.transpose(1, 2)  # (B, K, K)
    return _hessian_norm_from_gram(logits.to(work), gram, betas.to(work))


def _hessian_norm_from_gram(logits: Tensor, gram: Tensor, betas: Tensor) -> Tensor:
    probs = (betas[:, :, None] * logits[:, None, :]).softmax(dim=2)  # (B, G, K)
    soft_jac = torch.diag_embed(probs) - probs[..., :, None] * probs[..., None, :]
    sg = soft_jac @ gram[:, None]  # (B, G, K, K)
    trace = (sg * sg.transpose(-1, -2)).sum(dim=(-1, -2)).clamp_min(0)
    return betas**2 * trace.sqrt()


def hns_grid(logits: Tensor, points: int = 100) -> Tensor:
    """The HNS search grid per sample: ``points`` values evenly spaced between the Proposition-1
    temperatures for ``rho = 1 - 1/K - 1e-2`` (small beta) and ``rho = 1e-72`` (large beta), with
    ``gamma = z_pi1 - z_pi2`` (PGD++ appendix, "Computational overhead")."""
    num_classes = logits.shape[1]
    work = _linalg_dtype(logits.dtype)
    top2 = logits.detach().to(work).topk(2, dim=1).values
    gamma = top2[:, 0] - top2[:, 1]
    low = prop1_beta(gamma, 1 - 1 / num_classes - 1e-2, num_classes)
    high = prop1_beta(gamma, 1e-72, num_classes)
    steps = torch.linspace(0, 1, points, dtype=work, device=logits.device)
    return low[:, None] + (high - low)[:, None] * steps[None, :]


def hns_beta(
    model: Model,
    inputs: Tensor,
    *,
    points: int = 100,
    edge_fallback: float | None = 1.0,
) -> Tensor:
    """Per-sample HNS temperature ``beta* = argmax_beta ||d^2 l(beta)/dx^2||_F`` (PGD++ eq. 8, Alg. 2).

    The Jacobian is computed once per sample (one forward, K backward passes); the grid search
    over ``points`` temperatures (:func:`hns_grid`) reuses it through ``G = J J^T``.

    Parameters
    ----------
    edge_fallback : float or None
        The grid is bounded by Proposition 1, so a maximum at either end means the true optimum lies
        outside the region the paper considers (typically ties, ``Delta ~ 0``, or logits so flat the
        norm keeps growing). The paper does not say what to do; its authors' code falls back to
        ``beta = 1`` (plain CE) and so does this default. ``None`` keeps the grid end instead.

    Returns
    -------
    Tensor
        Shape (B,), in the logits' dtype.
    """
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    logits, jacobian = input_logit_jacobian(model, inputs)
    grid = hns_grid(logits, points)
    norms = hessian_frobenius_norm(logits, jacobian, grid)
    best = norms.argmax(dim=1)
    beta = grid.gather(1, best[:, None]).squeeze(1)
    if edge_fallback is not None:
        at_edge = (best == 0) | (best == points - 1)
        beta = torch.where(at_edge, torch.full_like(beta, edge_fallback), beta)
    return beta.to(logits.dtype)


class HNS:
    """Hessian Norm Scaling rule (PGD++ paper, Sec. 4, Alg. 2): ``beta*`` per sample, chosen once
    on the clean inputs when the attack binds the rule, then fixed for every iteration."""

    def __init__(self, *, points: int = 100, edge_fallback: float | None = 1.0) -> None:
        if points < 2:
            raise ValueError(f"HNS: points must be >= 2, got {points}")
        self.points = points
        self.edge_fallback = edge_fallback

    def bind(self, model: Model, inputs: Tensor, labels: Tensor) -> Tensor:
        return hns_beta(model, inputs, points=self.points, edge_fallback=self.edge_fallback)

    def __call__(self, logits: Tensor, labels: Tensor) -> Tensor:
        raise RuntimeError(
            "HNS is chosen per sample from the model's Jacobian: use it inside an attack, or pass "
            "tempered('ce', hns_beta(model, x)) for a fixed batch"
        )

    def __repr__(self) -> str:
        return f"HNS(points={self.points})"
