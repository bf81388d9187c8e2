"""Batched, per-sample gradient attacks that take any loss: FGSM, PGD and APGD, L-inf and L2; and
Square, a gradient-free random search on the logit margin (L-inf)."""

from ._common import StepInfo
from .apgd import apgd, apgd_checkpoints
from .pgd import fgsm, pgd
from .square import square

__all__ = ["fgsm", "pgd", "apgd", "apgd_checkpoints", "square", "StepInfo"]
