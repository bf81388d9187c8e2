"""Threat-model geometry: projection, ascent direction and random start for L-inf and L2 balls."""

from __future__ import annotations

import torch
from torch import Tensor


class Ball:
    """An L-inf or L2 ball of per-sample radius ``eps`` around ``center``, intersected with ``bounds``.

    Built once per attacked batch so that every per-step operation is a handful of fused
    element-wise kernels with no host synchronisation.
    """

    def __init__(
        self,
        norm: str,
        center: Tensor,
        eps: Tensor,
        bounds: tuple[float, float] | None,
    ) -> None:
        self.norm = norm
        self.center = center
        self.eps = eps  # (B,)
        self.bounds = bounds
        self._eps_view = eps.view(-1, *([1] * (center.dim() - 1)))
        if norm == "linf":
            low, high = center - self._eps_view, center + self._eps_view
            if bounds is not None:
                low, high = low.clamp_min(bounds[0]), high.clamp_max(bounds[1])
            # Projection onto the box-intersected L-inf ball is a single clamp against these, and
            # a point returned by it lies inside [low, high] exactly, with no rounding of x - x0.
            self.low, self.high = low, high

    def subset(self, index: Tensor) -> Ball:
        """The ball of the samples ``index`` only."""
        return Ball(self.norm, self.center[index], self.eps[index], self.bounds)

    def per_sample(self, values: Tensor) -> Tensor:
        """Reshape a (B,) tensor to broadcast against inputs."""
        return values.view(-1, *([1] * (self.center.dim() - 1)))

    def project(self, x: Tensor) -> Tensor:
        if self.norm == "linf":
            return torch.clamp(x, self.low, self.high)
        delta = x - self.center
        norms = _flat_norm(delta)
        scale = (self.eps / norms.clamp_min(torch.finfo(x.dtype).tiny)).clamp_max(1.0)
        x = self.center + delta * self.per_sample(scale)
        return x if self.bounds is None else x.clamp(self.bounds[0], self.bounds[1])

    def project_(self, x: Tensor) -> Tensor:
        """:meth:`project` in place where the norm allows (``x`` must be a fresh tensor)."""
        if self.norm == "linf":
            return torch.clamp(x, self.low, self.high, out=x)
        return self.project(x)

    def direction(self, grad: Tensor) -> Tensor:
        """Steepest-ascent direction of unit norm: ``sign(g)`` (L-inf) or ``g / ||g||_2`` (L2).

        A zero gradient gives a zero direction in both norms, so an underflowed loss does not move.
        The L2 direction divides by the largest entry first: ``||g||_2`` of a gradient with
        entries near the dtype's maximum (or its square's underflow for tiny ones) would
        overflow to ``inf`` and give a zero direction.
        """
        if self.norm == "linf":
            return grad.sign()
        return _unit_l2(grad)

    def random_start(self, generator: torch.Generator) -> Tensor:
        """A uniform sample of the ball (then clipped to the bounds)."""
        x0 = self.center
        if self.norm == "linf":
            noise = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            return self.project(x0 + (2 * noise - 1) * self._eps_view)
        direction = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        direction = _unit_l2(direction)
        dim = x0[0].numel()
        radius = torch.rand(x0.shape[0], generator=generator, device=x0.device, dtype=x0.dtype)
        radius = radius ** (1.0 / dim) * self.eps
        return self.project(x0 + direction * self.per_sample(radius))


def _flat_norm(x: Tensor) -> Tensor:
    return x.flatten(1).norm(p=2, dim=1)


def _unit_l2(x: Tensor) -> Tensor:
    """``x / ||x||_2`` per sample, computed on ``x / max|x|`` so that the norm neither overflows
    nor underflows; zero rows stay zero."""
    view = (-1,) + (1,) * (x.dim() - 1)
    tiny = torch.finfo(x.dtype).tiny
    scaled = x / x.flatten(1).abs().amax(dim=1).clamp_min(tiny).view(view)
    return scaled / _flat_norm(scaled).clamp_min(tiny).view(view)


def norm_of(delta: Tensor, norm: str) -> Tensor:
    """Per-sample L-inf or L2 norm of a perturbation."""
    flat = delta.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(p=2, dim=1)

