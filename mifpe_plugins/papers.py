"""The papers' published numbers that our reports print beside ours: data, not code.

MIFPE : Y. Yu, C.-Z. Xu, CVPR 2023, Tables 1-3.
PGD++ : K. Gupta, T. Ajanthan, AAAI 2022, Tables 3, 4 and 11.
"""

from __future__ import annotations

__all__ = ["PAPER_CLEVER", "PAPER_PGDPP", "PAPER_TABLE1", "PAPER_TABLE2", "PAPER_TABLE3"]

#: MIFPE paper, Table 2 (CIFAR-10, eps = 0.031, the Neural-level-sets RN-18 model; the caption says
#: TRADES, the numbers are Table 1's Neural-level-sets row): attack -> (original loss, MIFPE).
PAPER_TABLE2 = {"FGSM": (79.83, 49.76), "PGD-100": (79.79, 40.06), "APGD_DLR-100": (45.90, 40.49), "AA (4900)": (40.22, 39.89)}

#: MIFPE paper, Table 3 (CIFAR-10, PGD-100; the numbers match Table 1's TRADES WRN-34-10 row):
#: configuration -> {loss: robust accuracy}.
PAPER_TABLE3 = {
    "PGD": {"ce": 55.46, "cw": 54.23, "dlr": 54.39, "mifpe": 53.42},
    "+ momentum": {"ce": 55.25, "cw": 54.02, "dlr": 54.18, "mifpe": 53.23},
    "+ step-size schedule": {"ce": 55.21, "cw": 53.94, "dlr": 54.11, "mifpe": 53.22},
}

#: MIFPE paper, Table 1 rows that our zoo models stand in for (MNIST eps = 0.3 unless noted):
#: zoo name -> (paper row, clean, {loss: PGD-100}, best known).
PAPER_TABLE1 = {
    "large-margin": ("MNIST Neural level sets, SmallCNN", 99.35, {"ce": 99.28, "cw": 94.68, "dlr": 95.09, "mifpe": 94.67}, 90.85),
    "trades": ("MNIST TRADES, SmallCNN", 99.48, {"ce": 93.69, "cw": 93.88, "dlr": 94.49, "mifpe": 93.67}, 92.71),
    "pgd-at": ("MNIST Robust optimization (Madry PGD-AT), SmallCNN", 99.35, {"ce": 93.06, "cw": 93.19, "dlr": 93.63, "mifpe": 92.88}, 90.85),
    "fast-at": ("MNIST Fast adversarial training, SmallCNN", 98.50, {"ce": 86.82, "cw": 86.96, "dlr": 87.42, "mifpe": 86.57}, 82.93),
    "normalized-logit": ("CIFAR-10 Hypersphere embedding, WRN-34-20 (eps 8/255)", 85.14, {"ce": 61.43, "cw": 55.35, "dlr": 56.21, "mifpe": 53.85}, 53.74),
}

#: PGD++ paper (Gupta & Ajanthan, AAAI 2022), CIFAR-10 ResNet-18 rows of its Tables 2-4 that our zoo
#: models stand in for: zoo name -> (paper row, {attack: robust accuracy %}). L-inf eps 8/255, L2 eps
#: 120/255; "-" where the paper has no number.
PAPER_PGDPP = {
    "binarized": ("BNN-WAQ ResNet-18 (Table 3)", {
        "FGSM": 40.84, "FGSM++ NJS": 19.46, "FGSM++ HNS": 19.09, "PGD": 8.57, "PGD++ NJS": 0.03, "PGD++ HNS": 0.04,
        "L2 PGD": 25.24, "L2 PGD++ NJS": 2.33, "L2 PGD++ HNS": 2.59}),
    "standard": ("REF (float) ResNet-18 (Table 3)", {
        "FGSM": 7.62, "FGSM++ NJS": 5.55, "FGSM++ HNS": 5.35, "PGD": 0.00, "PGD++ NJS": 0.00, "PGD++ HNS": 0.00,
        "L2 PGD": 1.12, "L2 PGD++ NJS": 0.09, "L2 PGD++ HNS": 0.05}),
    "pgd-at": ("adversarially trained REF ResNet-18 (Table 4)", {
        "FGSM": 62.38, "FGSM beta=0.1": 69.52, "FGSM++ NJS": 61.43, "FGSM++ HNS": 61.40, "PGD": 48.73,
        "PGD beta=0.1": 61.27, "PGD++ NJS": 47.17, "PGD++ HNS": 48.54}),
}

#: PGD++ paper, Table 11 (CLEVER scores, L1): beta rule -> (BNN-WQ, BNN-WAQ).
PAPER_CLEVER = {"original": (0.8585, 0.7239), "heuristic": (0.8845, 3.1578), "njs": (0.4139, 0.3120), "hns": (0.3450, 0.2774)}
