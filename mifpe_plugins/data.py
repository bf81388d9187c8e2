"""Offline datasets: Fashion-MNIST from its IDX files, plain ``.npz`` files, and a bundled test subset.

Everything returns ``(inputs, labels)``: float32 inputs in [0, 1] shaped ``(N, C, H, W)`` and int64
labels shaped ``(N,)``. Nothing here downloads anything.
"""

from __future__ import annotations

import gzip
import os
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "FASHION_MNIST_DIR",
    "read_idx",
    "load_fashion_mnist",
    "load_npz",
    "bundled_fashion_mnist_test",
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
