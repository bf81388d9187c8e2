"""A registry of small defended models trained by our own code on Fashion-MNIST (eps = 0.1).

Each entry has a recipe (architecture, objective, epochs, seed) and, once trained, weights and a
training log shipped in ``mifpe_plugins/_data/zoo/``: ``<name>.pt`` (state dict) and
``<name>.json`` (time, clean accuracy on the bundled test subset, logit-margin statistics, and the
``sha256`` of ``<name>.pt``, checked by :func:`load` before the weights are read).
``python -m mifpe_plugins.zoo train NAME`` retrains one on the CPU from Debian's
``dataset-fashion-mnist`` and writes both files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import bundled_fashion_mnist_test, file_digest, load_fashion_mnist
from .losses import logit_margin, top_margin
from .numerics import percent_underflowing
from .progress import bar

__all__ = [
    "ARCHITECTURES", "BinarySmallCNN", "CosineSmallCNN", "RECIPES", "Recipe", "SmallCNN", "available", "binarize",
    "build", "load", "load_state_dict_into", "margin_statistics", "train", "training_log",
]


class SmallCNN(nn.Module):
    """TRADES' MNIST SmallCNN: conv32-conv32-pool-conv64-conv64-pool-fc200-fc200-fc10."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 4 * 4, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(),
            nn.Linear(200, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


class CosineSmallCNN(nn.Module):
    """SmallCNN whose last layer gives ``scale * cos(w_i, f(x))`` (hypersphere embedding, Pang et
    al. 2020): features and class weights are normalised, so every logit lies in [-scale, scale].

    ``angular_margin`` is subtracted from the true class's cosine during training only (the HE
    loss); ``forward`` always returns the plain scaled cosines that an attacker sees.
    """

    def __init__(self, num_classes: int = 10, scale: float = 15.0) -> None:
        super().__init__()
        base = SmallCNN(num_classes)
        self.features = base.features
        self.embedding = nn.Sequential(*list(base.classifier.children())[:-1])
        self.class_weights = nn.Parameter(torch.randn(num_classes, 200) / 200**0.5)
        self.scale = scale

    def cosines(self, x: Tensor) -> Tensor:
        embedding = F.normalize(self.embedding(self.features(x)), dim=1)
        return embedding @ F.normalize(self.class_weights, dim=1).T

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * self.cosines(x)


class _SignSTE(torch.autograd.Function):
    # Straight-through estimator (Hubara et al.): sign forward, identity clipped to |u| <= 1
    # backward. Attacks see the same estimator, as in the PGD++ paper's BNN experiments.
    @staticmethod
    def forward(ctx, u: Tensor) -> Tensor:  # noqa: ANN001 - autograd signature
        ctx.save_for_backward(u)
        return torch.where(u >= 0, torch.ones_like(u), -torch.ones_like(u))

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001 - autograd signature
        (u,) = ctx.saved_tensors
        return grad * (u.abs() <= 1).to(grad.dtype)


def binarize(u: Tensor) -> Tensor:
    """``sign(u)`` (with sign(0) = +1) whose gradient is the clipped straight-through estimator."""
    return _SignSTE.apply(u)


class _BinaryActivation(nn.Module):
    def forward(self, u: Tensor) -> Tensor:
        return binarize(u)


class _BinaryConv2d(nn.Conv2d):
    def forward(self, x: Tensor) -> Tensor:
        # XNOR-Net style: sign of the weights times their mean magnitude per output channel.
        scale = self.weight.abs().mean(dim=(1, 2, 3), keepdim=True).detach()
        return self._conv_forward(x, binarize(self.weight) * scale, self.bias)


class _BinaryLinear(nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight.abs().mean(dim=1, keepdim=True).detach()
        return F.linear(x, binarize(self.weight) * scale, self.bias)


class BinarySmallCNN(nn.Module):
    """SmallCNN with binary weights and binary activations (BNN-WAQ in the PGD++ paper).

    Every hidden layer's weights and outputs are signs; the first convolution and the last linear
    layer keep real weights, as is usual for BNNs. Batch normalisation precedes each sign; attack
    the model in eval mode (running statistics).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.BatchNorm2d(32), _BinaryActivation(),
            _BinaryConv2d(32, 32, 3), nn.BatchNorm2d(32), _BinaryActivation(), nn.MaxPool2d(2),
            _BinaryConv2d(32, 64, 3), nn.BatchNorm2d(64), _BinaryActivation(),
            _BinaryConv2d(64, 64, 3), nn.BatchNorm2d(64), _BinaryActivation(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), _BinaryLinear(64 * 4 * 4, 200), nn.BatchNorm1d(200), _BinaryActivation(),
            _BinaryLinear(200, 200), nn.BatchNorm1d(200), _BinaryActivation(), nn.Linear(200, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "smallcnn": SmallCNN,
    "cosine-smallcnn": CosineSmallCNN,
    "binary-smallcnn": BinarySmallCNN,
}
"""Architecture names accepted by :func:`build` and by ``mifpe --arch`` for state-dict files."""

TRAIN_EPS = 0.1
"""L-inf radius every adversarially trained zoo model is trained for (Fashion-MNIST, [0, 1])."""

# A training objective: (model, inputs, labels, generator) -> scalar loss to minimise.
Objective = Callable[[nn.Module, Tensor, Tensor, torch.Generator], Tensor]


def _sign_ascent(
    model: nn.Module, x: Tensor, start: Tensor, objective: Callable[[Tensor], Tensor], *,
    steps: int, step_size: float, eps: float = TRAIN_EPS,
) -> Tensor:
    """L-inf sign-gradient ascent of ``objective(model(x'))`` inside the eps-ball around ``x``,
    from ``start``; the inner maximisation of adversarial training (only input gradients).

    Not the core's :func:`~mifpe_plugins.attacks.pgd`: that validates its inputs, probes the loss
    on a clean forward and scores the last iterate, two extra forwards that made a PGD-7 inner
    loop 14 % slower (0.51 s vs 0.45 s per SmallCNN batch of 128, one thread, 2026-11-29); TRADES
    starts from a Gaussian point, which the core does not offer; and the shipped weights were
    trained with this loop, which their reproducibility tests rerun bit for bit.
    """
    x_adv = start.clamp(0, 1).detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(model(x_adv)), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step_size * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def _uniform_start(x: Tensor, generator: torch.Generator, eps: float = TRAIN_EPS) -> Tensor:
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + eps * (2 * noise - 1)


def _ce_objective(model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
    return F.cross_entropy(model(x), y)


def _hinge_objective(margin: float) -> Objective:
    # Pushes z_y - max_{i != y} z_i up to `margin`: in the spirit of large-margin defences such as
    # Neural level sets, whose float32 margins exceed the underflow threshold (~103).
    def objective(model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        return torch.relu(margin - logit_margin(model(x), y)).mean()

    return objective


def _pgd_at_objective(steps: int = 7, step_size: float = 0.025) -> Objective:
    # Madry et al.: CE on the PGD-`steps` point from a uniform random start.
    def objective(model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        def ce(logits: Tensor) -> Tensor:
            return F.cross_entropy(logits, y)

        x_adv = _sign_ascent(model, x, _uniform_start(x, generator), ce, steps=steps, step_size=step_size)
        return F.cross_entropy(model(x_adv), y)

    return objective


def _trades_objective(beta: float = 6.0, steps: int = 7, step_size: float = 0.025) -> Objective:
    # Zhang et al. 2019: CE(f(x), y) + beta * KL(f(x) || f(x')), x' maximising the KL from a
    # 0.001-Gaussian start.
    def objective(model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        with torch.no_grad():
            clean_log_p = F.log_softmax(model(x), dim=1)

        def kl(logits: Tensor) -> Tensor:
            return F.kl_div(F.log_softmax(logits, dim=1), clean_log_p, reduction="batchmean", log_target=True)

        start = x + 0.001 * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_adv = _sign_ascent(model, x, start, kl, steps=steps, step_size=step_size)
        logits = model(x)
        robust_kl = F.kl_div(
            F.log_softmax(model(x_adv), dim=1), F.log_softmax(logits, dim=1), reduction="batchmean", log_target=True
        )
        return F.cross_entropy(logits, y) + beta * robust_kl

    return objective


def _fast_at_objective(step_size: float = 1.25 * TRAIN_EPS, angular_margin: float = 0.0) -> Objective:
    # Wong et al. 2020: one FGSM step of 1.25 eps from a uniform random start. With an angular
    # margin (cosine models only), the HE loss of Pang et al. 2020: CE(s (cos - m e_y), y).
    def training_logits(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        if angular_margin == 0.0:
            return model(x)
        cosines = model.cosines(x)
        return model.scale * (cosines - angular_margin * F.one_hot(y, cosines.shape[1]).to(cosines.dtype))

    def objective(model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
        def ce(logits: Tensor) -> Tensor:
            return F.cross_entropy(logits, y)

        x_adv = _sign_ascent(model, x, _uniform_start(x, generator), ce, steps=1, step_size=step_size)
        return F.cross_entropy(training_logits(model, x_adv, y), y)

    return objective


@dataclass(frozen=True)
class Recipe:
    """How a zoo model is trained: an architecture and (epochs, learning rate, objective) stages,
    each stage a fresh Adam optimiser over the Fashion-MNIST training split."""

    name: str
    description: str
    stages: tuple[tuple[int, float, Objective], ...]
    architecture: str = "smallcnn"
    seed: int = 0
    batch_size: int = 128


RECIPES: dict[str, Recipe] = {
    "standard": Recipe(
        "standard", "SmallCNN, cross-entropy, Adam, 2 epochs (no defence)",
        stages=((2, 1e-3, _ce_objective),),
    ),
    "large-margin": Recipe(
        "large-margin",
        "SmallCNN, 2 epochs cross-entropy then 1 epoch hinge on the logit margin (target 250): most "
        "float32 margins exceed lambda ~ 103, so CE's gradient underflows (Neural-level-sets-like)",
        stages=((2, 1e-3, _ce_objective), (1, 1e-3, _hinge_objective(250.0))),
    ),
    "pgd-at": Recipe(
        "pgd-at",
        "SmallCNN, PGD adversarial training (Madry et al.): CE on PGD-7 points, eps 0.1, step 0.025, "
        "uniform random start, 2 epochs",
        stages=((2, 1e-3, _pgd_at_objective()),),
    ),
    "trades": Recipe(
        "trades",
        "SmallCNN, TRADES (Zhang et al. 2019): CE + 6 KL(f(x) || f(x')), x' from 7 KL-ascent steps of "
        "0.025 within eps 0.1, 2 epochs",
        stages=((2, 1e-3, _trades_objective()),),
    ),
    "fast-at": Recipe(
        "fast-at",
        "SmallCNN, Fast-AT (Wong et al. 2020): CE on FGSM points with step 1.25 eps from a uniform "
        "random start, eps 0.1, 3 epochs",
        stages=((3, 1e-3, _fast_at_objective()),),
    ),
    "normalized-logit": Recipe(
        "normalized-logit",
        "SmallCNN with cosine logits x 15 (hypersphere embedding, Pang et al. 2020), HE loss with "
        "angular margin 0.2 on Fast-AT points (eps 0.1), 3 epochs",
        stages=((3, 1e-3, _fast_at_objective(angular_margin=0.2)),),
        architecture="cosine-smallcnn",
    ),
    "binarized": Recipe(
        "binarized",
        "SmallCNN with binary weights and activations (straight-through estimator, BNN-WAQ of the "
        "PGD++ paper), cross-entropy, 2 epochs (no adversarial training)",
        stages=((2, 1e-3, _ce_objective),),
        architecture="binary-smallcnn",
    ),
}


def build(architecture: str) -> nn.Module:
    """A freshly initialised network of a named architecture (see :data:`ARCHITECTURES`)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[architecture]()


def _zoo_dir() -> Path:
    return Path(str(resources.files("mifpe_plugins") / "_data" / "zoo"))


def available() -> list[str]:
    """Recipe names whose trained weights ship with the package."""
    return sorted(name for name in RECIPES if (_zoo_dir() / f"{name}.pt").exists())


def _check_name(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown zoo model {name!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def _restore_hint(name: str) -> str:
    return (
        f"Restore the shipped pair by reinstalling the package (`pip install --force-reinstall "
        f"--no-deps mifpe-plugins`; in a source checkout `git checkout -- mifpe_plugins/_data/zoo/{name}.pt "
        f"mifpe_plugins/_data/zoo/{name}.json`), or retrain it with `mifpe zoo train {name}`"
    )


def _recorded_sha256(log_path: Path) -> str | None:
    # a missing or damaged log is reported as "no hash recorded", with the same remedy
    try:
        recorded = json.loads(log_path.read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None
    return recorded if isinstance(recorded, str) else None


def _verify_checkpoint(name: str, path: Path) -> None:
    """Raise unless ``path`` has the sha256 recorded in its training log (``<name>.json``).

    The weights and the log are written together by :func:`train`; a mismatch means the file was
    damaged or replaced, and the numbers the log (and README) report would not be reproduced.
    """
    log_path = path.with_name(f"{name}.json")
    expected = _recorded_sha256(log_path)
    if expected is None:
        raise ValueError(
            f"zoo model {name!r}: no sha256 recorded for {path} ({log_path} is missing, unreadable or "
            f"has no 'sha256' field), so the weights cannot be checked. {_restore_hint(name)}"
        )
    actual = file_digest(path)
    if actual != expected:
        raise ValueError(
            f"zoo model {name!r}: {path} is corrupted or was replaced: its sha256 is {actual}, "
            f"but {log_path.name} records {expected}. {_restore_hint(name)}"
        )


def load(name: str, *, device: str | torch.device = "cpu") -> nn.Module:
    """A trained zoo model in eval mode, its weights checked against their recorded sha256."""
    _check_name(name)
    path = _zoo_dir() / f"{name}.pt"
    if not path.exists():
        raise FileNotFoundError(
            f"zoo model {name!r} has no shipped weights ({path}); train it with "
            f"`python -m mifpe_plugins.zoo train {name}`"
        )
    _verify_checkpoint(name, path)
    model = load_state_dict_into(build(RECIPES[name].architecture), path, architecture=RECIPES[name].architecture)
    return model.to(device).eval()


def load_state_dict_into(model: nn.Module, path: str | Path, *, architecture: str = "the given") -> nn.Module:
    """Load a state-dict checkpoint (optionally wrapped as ``{"state_dict": ...}`` or
    ``{"model": ...}``, ``module.`` prefixes of DataParallel removed) into ``model``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise ValueError(
            f"checkpoint {path} does not match the {architecture} architecture: {first_line} "
            f"({len(state)} tensors in the file, {len(model.state_dict())} expected)"
        ) from None
    return model


def training_log(name: str) -> dict:
    """The JSON log written when the shipped weights were trained."""
    _check_name(name)
    return json.loads((_zoo_dir() / f"{name}.json").read_text())


def margin_statistics(model: nn.Module, inputs: Tensor, labels: Tensor) -> dict:
    """Clean accuracy and top-logit margins of correctly classified samples vs the lambdas."""
    with torch.no_grad():
        logits = model(inputs)
    correct = logits.argmax(1) == labels
    delta = top_margin(logits)[correct]
    stats = {"clean_accuracy": 100 * float(correct.float().mean()), "n": int(labels.numel())}
    if delta.numel():
        stats["margin_median"] = float(delta.median())
        for label, dtype in (("fp16", torch.float16), ("fp32", torch.float32), ("fp64", torch.float64)):
            stats[f"share_above_lambda_{label}"] = percent_underflowing(delta, dtype)
    return stats


def train(
    name: str, *, root: str | Path | None = None, out_dir: str | Path | None = None,
    log: Callable[[str], None] = print, show_progress: bool = True,
) -> tuple[nn.Module, dict]:
    """Train a zoo model on the Fashion-MNIST training split and write its weights and log.

    The log records the weights' sha256, which :func:`load` checks, so the pair stays consistent.
    """
    recipe = _check_name(name)
    x_train, y_train = load_fashion_mnist(root, split="train")
    rng_state = torch.get_rng_state()
    torch.manual_seed(recipe.seed)
    generator = torch.Generator().manual_seed(recipe.seed + 1)
    try:
        model = build(recipe.architecture)
        tic = time.perf_counter()
        for stage, (epochs, lr, objective) in enumerate(recipe.stages):
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
            for epoch in range(epochs):
                model.train()
                order = torch.randperm(len(x_train))
                batches = order.split(recipe.batch_size)
                for index in bar(batches, f"{name} stage {stage + 1} epoch {epoch + 1}/{epochs}", enabled=show_progress, unit="batch"):
                    loss = objective(model, x_train[index], y_train[index], generator)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                log(f"{name}: stage {stage} epoch {epoch + 1}/{epochs} done, {time.perf_counter() - tic:.0f} s")
        seconds = time.perf_counter() - tic
    finally:
        torch.set_rng_state(rng_state)
    model.eval()
    x_test, y_test = bundled_fashion_mnist_test()
    report = {
        "name": name, "description": recipe.description, "architecture": recipe.architecture,
        "train_eps": TRAIN_EPS, "seconds": seconds,
        "torch": torch.__version__, "seed": recipe.seed,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bundled_test_subset": margin_statistics(model, x_test, y_test),
    }
    target = Path(out_dir) if out_dir is not None else _zoo_dir()
    target.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), target / f"{name}.pt")
    report["sha256"] = file_digest(target / f"{name}.pt")
    (target / f"{name}.json").write_text(json.dumps(report, indent=2))
    log(f"{name}: {json.dumps(report['bundled_test_subset'])}")
    return model, report


if __name__ == "__main__":  # pragma: no cover
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "train":
        raise SystemExit(f"usage: python -m mifpe_plugins.zoo train NAME  (NAME in {', '.join(sorted(RECIPES))})")
    train(sys.argv[2])
