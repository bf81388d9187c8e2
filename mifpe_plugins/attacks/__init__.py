"""Batched, per-sample gradient attacks that take any loss: FGSM, PGD and APGD, L-inf and L2."""

from ._common import StepInfo
from .apgd import apgd, apgd_checkpoints
from .pgd import fgsm, pgd

__all__ = ["fgsm", "pgd", "apgd", "apgd_checkpoints", "StepInfo"]
