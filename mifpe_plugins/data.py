"""Datasets: Fashion-MNIST from its IDX files, torchvision's datasets from a root directory,
``.npz`` / tensor files, and a bundled Fashion-MNIST test subset.

Everything returns ``(inputs, labels)``: float32 inputs in [0, 1] shaped ``(N, C, H, W)`` and int64
labels shaped ``(N,)``. Only :func:`load_torchvision` with ``download=True`` touches the network.
"""

from __future__ import annotations

import gzip
import os
import pickle
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "FASHION_MNIST_DIR",
    "TORCHVISION_DATASETS",
    "bundled_fashion_mnist_test",
    "load_data",
    "load_fashion_mnist",
    "load_npz",
    "load_tensors",
    "load_torchvision",
    "read_idx",
    "save_npz",
]

#: Where Debian's ``dataset-fashion-mnist`` package puts the IDX files; ``MIFPE_FASHION_MNIST``
#: overrides it.
FASHION_MNIST_DIR = Path(os.environ.get("MIFPE_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_BUNDLED = "fashion_mnist_test_1000.npz"


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not.

    The header is two zero bytes, a type code, the number of dimensions, then one big-endian
    uint32 per dimension.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: header says {shape} ({expected} bytes), file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(
        f"{stem}(.gz) not found in {directory}. Fashion-MNIST comes offline with Debian's package: "
        "`apt-get install dataset-fashion-mnist` (files in /usr/share/datasets/fashion-mnist), or "
        "pass root= a directory holding the four IDX files"
    )


def load_fashion_mnist(root: str | Path | None = None, *, split: str = "test", n: int | None = None) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST from its IDX files.

    Parameters
    ----------
    root : path, optional
        Directory with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``; default
        :data:`FASHION_MNIST_DIR`.
    split : {"train", "test"}
    n : int, optional
        The first ``n`` samples only.

    Returns
    -------
    inputs : Tensor
        float32, (N, 1, 28, 28), in [0, 1].
    labels : Tensor
        int64, (N,).
    """
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(_SPLIT_FILES)}, got {split!r}")
    directory = Path(root) if root is not None else FASHION_MNIST_DIR
    if not directory.is_dir():
        raise FileNotFoundError(
            f"Fashion-MNIST directory {directory} does not exist. Install it offline with "
            "`apt-get install dataset-fashion-mnist`, or pass root= a directory holding the IDX files"
        )
    image_stem, label_stem = _SPLIT_FILES[split]
    images = read_idx(_find(directory, image_stem))
    labels = read_idx(_find(directory, label_stem))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"Fashion-MNIST files in {directory} disagree: images {images.shape}, labels {labels.shape}")
    return _take(_as_tensors(images[:, None], labels), n)


def _as_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[Tensor, Tensor]:
    if images.dtype == np.uint8:
        inputs = torch.from_numpy(images.astype(np.float32) / 255.0)
    else:
        inputs = torch.from_numpy(np.asarray(images, dtype=np.float32))
    return inputs, torch.from_numpy(np.asarray(labels, dtype=np.int64))


def _take(data: tuple[Tensor, Tensor], n: int | None) -> tuple[Tensor, Tensor]:
    inputs, labels = data
    if n is None:
        return inputs, labels
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if n > inputs.shape[0]:
        raise ValueError(f"n={n} is larger than the data ({inputs.shape[0]} samples)")
    return inputs[:n], labels[:n]


def load_npz(path: str | Path, *, x_key: str = "x", y_key: str = "y", n: int | None = None) -> tuple[Tensor, Tensor]:
    """Inputs and labels from an ``.npz`` file (uint8 images are scaled to [0, 1]).

    Images of shape (N, H, W) get a channel axis; (N, H, W, C) with C in {1, 3} is moved to
    channels-first.
    """
    with np.load(Path(path)) as archive:
        missing = [key for key in (x_key, y_key) if key not in archive.files]
        if missing:
            raise KeyError(f"{path} has no array(s) {missing}; it holds {sorted(archive.files)}")
        images, labels = archive[x_key], archive[y_key]
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = np.transpose(images, (0, 3, 1, 2))
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"{path}: {y_key} must have shape ({images.shape[0]},), got {labels.shape}")
    return _take(_as_tensors(np.ascontiguousarray(images), labels), n)


def load_tensors(path: str | Path, *, n: int | None = None) -> tuple[Tensor, Tensor]:
    """Inputs and labels saved with ``torch.save``: a ``(inputs, labels)`` pair or a dict with
    keys ``x``/``y`` (or ``inputs``/``labels``). Loaded with ``weights_only=True``."""
    data = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(data, dict):
        for x_key, y_key in (("x", "y"), ("inputs", "labels")):
            if x_key in data and y_key in data:
                data = (data[x_key], data[y_key])
                break
        else:
            raise KeyError(f"{path} holds a dict with keys {sorted(data)}; expected x/y or inputs/labels")
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)):
        raise ValueError(f"{path} must hold (inputs, labels) tensors or a dict of them, got {type(data).__name__}")
    inputs, labels = data
    if inputs.dtype == torch.uint8:
        inputs = inputs.float() / 255.0
    if inputs.dim() == 3:
        inputs = inputs[:, None]
    if labels.dim() != 1 or labels.shape[0] != inputs.shape[0]:
        raise ValueError(f"{path}: labels must have shape ({inputs.shape[0]},), got {tuple(labels.shape)}")
    return _take((inputs.float().contiguous(), labels.long()), n)


#: torchvision dataset names accepted by :func:`load_torchvision`, with the folder torchvision
#: keeps each one in under ``root``.
TORCHVISION_DATASETS = {
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "mnist": "MNIST/raw",
    "fashion-mnist": "FashionMNIST/raw",
}
_TORCHVISION_CLASSES = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "mnist": "MNIST", "fashion-mnist": "FashionMNIST"}


def _unpickle(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; the dataset folder is incomplete")
    with open(path, "rb") as handle:
        # The CIFAR archives are Python-2 pickles of numpy arrays (what torchvision reads too).
        return pickle.load(handle, encoding="latin1")


def _read_cifar(directory: Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key = "labels"
    else:
        files, label_key = [split], "fine_labels"
    batches = [_unpickle(directory / file) for file in files]
    images = np.concatenate([np.asarray(b["data"], dtype=np.uint8).reshape(-1, 3, 32, 32) for b in batches])
    labels = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
    return images, labels


def _download_with_torchvision(name: str, root: Path, split: str) -> None:
    try:
        import torchvision.datasets as datasets
    except Exception as error:  # noqa: BLE001 - a broken torchvision raises more than ImportError
        raise ImportError(
            f"download=True needs torchvision, which failed to import ({error}); install a torchvision "
            "that matches your torch, or put the files in place yourself"
        ) from None
    getattr(datasets, _TORCHVISION_CLASSES[name])(str(root), train=split == "train", download=True)


def load_torchvision(
    name: str, root: str | Path, *, split: str = "test", n: int | None = None, download: bool = False
) -> tuple[Tensor, Tensor]:
    """A torchvision dataset (CIFAR-10/100, MNIST, Fashion-MNIST) from its folder under ``root``.

    The files are read in the layout torchvision keeps them in (``root/cifar-10-batches-py``,
    ``root/cifar-100-python``, ``root/MNIST/raw``, ``root/FashionMNIST/raw``), so a root already
    used with ``torchvision.datasets`` works without torchvision itself. With ``download=True`` a
    missing dataset is fetched by ``torchvision.datasets.<Class>(root, download=True)`` first.

    Parameters
    ----------
    name : {"cifar10", "cifar100", "mnist", "fashion-mnist"}
    root : path
    split : {"train", "test"}
    n : int, optional
        The first ``n`` samples only.
    download : bool
        Allow fetching a missing dataset from the internet (off by default).
    """
    if name not in TORCHVISION_DATASETS:
        raise ValueError(f"unknown torchvision dataset {name!r}; known: {', '.join(TORCHVISION_DATASETS)}")
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(_SPLIT_FILES)}, got {split!r}")
    root = Path(root)
    directory = root / TORCHVISION_DATASETS[name]
    if not directory.is_dir():
        if not download:
            hint = " (or, offline, `apt-get install dataset-fashion-mnist` and the `fashion-mnist` data)" if name == "fashion-mnist" else ""
            raise FileNotFoundError(
                f"{name} not found: {directory} does not exist. Allow downloading (download=True, or "
                f"`--download` on the command line) or put torchvision's files there{hint}"
            )
        _download_with_torchvision(name, root, split)
    if name.startswith("cifar"):
        images, labels = _read_cifar(directory, name, split)
    else:
        image_stem, label_stem = _SPLIT_FILES[split]
        images, labels = read_idx(_find(directory, image_stem))[:, None], read_idx(_find(directory, label_stem))
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{name} files in {directory} disagree: {images.shape[0]} images, {labels.shape[0]} labels")
    return _take(_as_tensors(images, labels), n)


def load_data(spec: str, *, split: str = "test", n: int | None = None, download: bool = False) -> tuple[Tensor, Tensor]:
    """Resolve a data specification of the ``mifpe`` command.

    ``bundled`` (the shipped 1 000 Fashion-MNIST test images), ``fashion-mnist`` (Debian's IDX
    files) or ``fashion-mnist:DIR``, ``cifar10:ROOT`` / ``cifar100:ROOT`` / ``mnist:ROOT``
    (torchvision's layout), or a path to an ``.npz`` or ``.pt`` file.
    """
    kind, _, where = spec.partition(":")
    if spec == "bundled":
        if split != "test":
            raise ValueError("the bundled data is a test subset; use `fashion-mnist` for the training split")
        return bundled_fashion_mnist_test(n)
    if kind == "fashion-mnist":
        if where and (Path(where) / "FashionMNIST").is_dir():
            return load_torchvision("fashion-mnist", where, split=split, n=n, download=download)
        return load_fashion_mnist(where or None, split=split, n=n)
    if kind in TORCHVISION_DATASETS and where:
        return load_torchvision(kind, where, split=split, n=n, download=download)
    path = Path(spec)
    if path.suffix == ".npz":
        return load_npz(path, n=n)
    if path.suffix in (".pt", ".pth"):
        return load_tensors(path, n=n)
    raise ValueError(
        f"unknown data {spec!r}; use `bundled`, `fashion-mnist[:DIR]`, `cifar10:ROOT`, `cifar100:ROOT`, "
        "`mnist:ROOT`, or a path to an .npz or .pt file"
    )


def save_npz(path: str | Path, inputs: Tensor, labels: Tensor) -> None:
    """Save inputs in [0, 1] as uint8 images and labels, compressed (the bundled subset's format)."""
    images = (inputs.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    np.savez_compressed(Path(path), x=images, y=labels.detach().cpu().numpy().astype(np.int64))


def bundled_fashion_mnist_test(n: int | None = None) -> tuple[Tensor, Tensor]:
    """The first 1 000 Fashion-MNIST test images, shipped inside the package (no install needed).

    Made by ``python -m mifpe_plugins.data`` from Debian's ``dataset-fashion-mnist``.
    """
    with resources.as_file(resources.files("mifpe_plugins") / "_data" / _BUNDLED) as path:
        return load_npz(path, n=n)


def _write_bundled_subset(count: int = 1000) -> Path:
    inputs, labels = load_fashion_mnist(split="test", n=count)
    target = Path(__file__).resolve().parent / "_data" / _BUNDLED
    target.parent.mkdir(exist_ok=True)
    save_npz(target, inputs, labels)
    return target


if __name__ == "__main__":  # pragma: no cover
    print(f"wrote {_write_bundled_subset()}")
