"""mifpe_plugins: honest gradient-based robustness evaluation.

The core is host-free PyTorch: losses (:mod:`.losses`), PGD++ temperature rules
(:mod:`.temperature`), floating-point facts (:mod:`.numerics`), batched attacks (:mod:`.attacks`)
and batch evaluation (:mod:`.evaluate`). Importing this package imports no host library.
"""

from .adapters._register import install
from .attacks import StepInfo, apgd, fgsm, pgd, square
from .evaluate import EvaluationResult, evaluate, robust_accuracy
from .losses import (
    LOSS_NAMES,
    Tempered,
    ce_loss,
    cw_loss,
    dlr_loss,
    fnz_beta,
    fnz_loss,
    get_loss,
    logit_margin,
    mifpe,
    mifpe_beta,
    mifpe_loss,
    tempered,
    top_margin,
)
from .numerics import smallest_subnormal, underflow_threshold
from .temperature import HNS, NJS, hns_beta, njs_beta, njs_beta1, prop1_beta

install()

__version__ = "0.2.0"

__all__ = [
    "__version__",
    "fgsm",
    "pgd",
    "apgd",
    "square",
    "StepInfo",
    "evaluate",
    "robust_accuracy",
    "EvaluationResult",
    "ce_loss",
    "cw_loss",
    "dlr_loss",
    "mifpe_loss",
    "mifpe",
    "mifpe_beta",
    "fnz_loss",
    "fnz_beta",
    "tempered",
    "Tempered",
    "get_loss",
    "logit_margin",
    "top_margin",
    "LOSS_NAMES",
    "underflow_threshold",
    "smallest_subnormal",
    "prop1_beta",
    "njs_beta1",
    "njs_beta",
    "hns_beta",
    "NJS",
    "HNS",
]
