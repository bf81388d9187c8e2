"""Floating-point facts behind the MIFPE paper (Sec. 3): the softmax underflow margin.

When the top logit margin ``Delta = z_pi1 - z_pi2`` reaches ``lambda``, ``exp(-Delta)`` is below
the smallest number the dtype can hold, every non-top softmax probability is 0, the top one is 1,
and the cross-entropy gradient is exactly zero.
"""

from __future__ import annotations

import math

import torch

__all__ = ["underflow_threshold", "smallest_subnormal", "percent_underflowing"]


def smallest_subnormal(dtype: torch.dtype) -> float:
    """The smallest positive (subnormal) number of a floating dtype: ``tiny * eps``.

    ``tiny`` is the smallest normal number ``2**(emin)`` and ``eps = 2**(-mantissa bits)``, so
    their product is ``2**(emin - mantissa bits)``: 2**-24 (float16), 2**-149 (float32),
    2**-1074 (float64), 2**-133 (bfloat16).
    """
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    info = torch.finfo(dtype)
    return info.tiny * info.eps


def underflow_threshold(dtype: torch.dtype) -> float:
    """The softmax underflow margin ``lambda`` of a dtype (MIFPE paper, Sec. 3).

    ``lambda = -ln(smallest subnormal)``: once ``Delta >= lambda``, ``exp(-Delta)`` is below the
    smallest representable positive number and softmax cross-entropy's gradient is exactly zero.
    Derived from ``torch.finfo``: 16.64 (float16), 92.19 (bfloat16), 103.28 (float32),
    744.44 (float64).

    Parameters
    ----------
    dtype : torch.dtype
        A floating-point dtype.

    Returns
    -------
    float
    """
    info = torch.finfo(dtype)
    # ln(tiny * eps) computed as a sum of logs: tiny * eps underflows to 0.0 in a Python float
    # for float64 (2**-1074 is the float64 subnormal itself, but keep the form uniform).
    return -(math.log(info.tiny) + math.log(info.eps))


def percent_underflowing(margins: torch.Tensor, dtype: torch.dtype) -> float:
    """Percentage of top-logit margins ``Delta`` at or above ``lambda`` of ``dtype``.

    Those are the samples whose softmax cross-entropy gradient is exactly zero in that precision
    (MIFPE paper, Sec. 3, Fig. 2). ``margins`` may be in any dtype (e.g. float64 margins measured
    against float16's lambda); 0.0 when there are none.
    """
    if margins.numel() == 0:
        return 0.0
    return 100 * float((margins >= underflow_threshold(dtype)).double().mean())
