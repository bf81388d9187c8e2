"""Datasets: Fashion-MNIST from its IDX files, torchvision's datasets from a root directory,
``.npz`` / tensor files, a bundled Fashion-MNIST test subset, and folders of image files.

The array formats return ``(inputs, labels)``: float32 inputs in [0, 1] shaped ``(N, C, H, W)`` and
int64 labels shaped ``(N,)``. Image folders (:func:`load_image_folder`, :func:`load_imagenet`) return
an :class:`ImageFolderData`, a map-style dataset that decodes one image per item, so an evaluation
reads one chunk at a time. Only :func:`load_torchvision` with ``download=True`` touches the network.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import itertools
import json
import operator
import os
import pickle
import re
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import torch
from torch import Tensor

from .reports import one_line

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "CIFAR_MD5",
    "FASHION_MNIST_DIR",
    "IMAGE_SUFFIXES",
    "TORCHVISION_DATASETS",
    "ImageFolderData",
    "as_tensors",
    "bundled_fashion_mnist_test",
    "check_classes",
    "dataset_of",
    "imagenet_wnids",
    "load_data",
    "load_fashion_mnist",
    "load_image_folder",
    "load_imagenet",
    "load_mnist",
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


_FASHION_HINT = ("Fashion-MNIST comes offline with Debian's package: `apt-get install dataset-fashion-mnist` "
                 "(files in /usr/share/datasets/fashion-mnist), or pass root= a directory holding the four IDX files")


def _idx_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.exists():
            return candidate
    return None


def _find(directory: Path, stem: str, hint: str = _FASHION_HINT) -> Path:
    found = _idx_file(directory, stem)
    if found is None:
        raise FileNotFoundError(f"{stem}(.gz) not found in {directory}. {hint}")
    return found


def _load_idx_split(directory: Path, split: str, n: int | None, *, dataset: str, hint: str) -> tuple[Tensor, Tensor]:
    """One split of an MNIST-format dataset from the IDX files directly in ``directory``."""
    image_stem, label_stem = _SPLIT_FILES[split]
    images = read_idx(_find(directory, image_stem, hint))
    labels = read_idx(_find(directory, label_stem, hint))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{dataset} files in {directory} disagree: images {images.shape}, labels {labels.shape}")
    return _take(_as_tensors(images[:, None], labels), n)


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
    return _load_idx_split(directory, split, n, dataset="Fashion-MNIST", hint=_FASHION_HINT)


def _mnist_hint(directory: Path) -> str:
    return (f"Put the official MNIST IDX files ({', '.join(f'{stem}[.gz]' for stem in _SPLIT_FILES['test'])} for the "
            f"test split, train-* for training) directly in {directory}, or torchvision's layout "
            f"{directory / TORCHVISION_DATASETS['mnist']}, or allow downloading into torchvision's layout "
            "(download=True, `--download`)")


def load_mnist(root: str | Path, *, split: str = "test", n: int | None = None) -> tuple[Tensor, Tensor]:
    """MNIST from the official IDX files directly in ``root`` (``t10k-images-idx3-ubyte[.gz]``,
    ``t10k-labels-idx1-ubyte[.gz]``, and ``train-*`` for ``split="train"``): the format of
    :func:`load_fashion_mnist`. For torchvision's layout (``root/MNIST/raw``) use
    :func:`load_torchvision`; ``load_data("mnist:DIR")`` takes either.

    Returns float32 inputs (N, 1, 28, 28) in [0, 1] and int64 labels (N,).
    """
    if split not in _SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(_SPLIT_FILES)}, got {split!r}")
    directory = Path(root)
    if not directory.is_dir():
        raise FileNotFoundError(f"MNIST directory {directory} does not exist. {_mnist_hint(directory)}")
    return _load_idx_split(directory, split, n, dataset="MNIST", hint=_mnist_hint(directory))


def _as_tensors(images: np.ndarray, labels: np.ndarray) -> tuple[Tensor, Tensor]:
    if images.dtype == np.uint8:
        inputs = torch.from_numpy(images.astype(np.float32) / 255.0)
    else:
        inputs = torch.from_numpy(np.asarray(images, dtype=np.float32))
    return inputs, torch.from_numpy(np.asarray(labels, dtype=np.int64))


def _check_n(n: int, available: int) -> None:
    """``n`` (a number of samples to take) is an integer from 1 to ``available``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if n > available:
        raise ValueError(f"n={n} is larger than the data ({available} samples)")


def _take(data: tuple[Tensor, Tensor], n: int | None) -> tuple[Tensor, Tensor]:
    inputs, labels = data
    if n is None:
        return inputs, labels
    _check_n(n, inputs.shape[0])
    return inputs[:n], labels[:n]


def _unreadable(path: str | Path, expected: str, error: BaseException) -> ValueError:
    """One line for a data or model file that cannot be parsed: which file, and what was expected."""
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    why = (f"it pickles a {unsupported.group(1)} object, and only tensors are loaded" if unsupported
           else "it is empty, truncated, corrupt or in another format")
    return ValueError(f"cannot read {path}: {why}; expected {expected}")


def _check_samples(path: str | Path, labels: np.ndarray) -> None:
    """At least one sample, and labels that are class indices (a float 3.5 would become class 3)."""
    if labels.shape[0] == 0:
        raise ValueError(f"{path} holds no samples; expected at least one (input, label) pair")
    numeric = labels.dtype.kind in "biuf"
    wrong = ((labels < 0) | (labels != np.floor(labels))) if numeric else np.ones(labels.shape, dtype=bool)
    if wrong.any():
        raise ValueError(
            f"{path}: labels must be class indices (whole numbers >= 0), found {labels[wrong][0].item()!r} "
            f"({labels.dtype}); save integer labels"
        )


def load_npz(path: str | Path, *, x_key: str = "x", y_key: str = "y", n: int | None = None) -> tuple[Tensor, Tensor]:
    """Inputs and labels from an ``.npz`` file (uint8 images are scaled to [0, 1]).

    Images of shape (N, H, W) get a channel axis; (N, H, W, C) with C in {1, 3} is moved to
    channels-first. Labels must be whole numbers >= 0; a file that cannot be parsed, or holds no
    samples, raises a ValueError naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    expected = f"an .npz archive (numpy.savez) with arrays {x_key!r} (inputs) and {y_key!r} (labels)"
    try:
        with np.load(path) as archive:
            missing = [key for key in (x_key, y_key) if key not in archive.files]
            images, labels = (None, None) if missing else (archive[x_key], archive[y_key])
    except Exception as error:  # numpy and zipfile raise many types for a damaged file
        raise _unreadable(path, expected, error) from None
    if missing:
        raise KeyError(f"{path} has no array(s) {missing}; it holds {sorted(archive.files)}")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = np.transpose(images, (0, 3, 1, 2))
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"{path}: {y_key} must have shape ({images.shape[0]},), got {labels.shape}")
    _check_samples(path, labels)
    return _take(_as_tensors(np.ascontiguousarray(images), labels), n)


def load_tensors(path: str | Path, *, n: int | None = None) -> tuple[Tensor, Tensor]:
    """Inputs and labels saved with ``torch.save``: a ``(inputs, labels)`` pair or a dict with
    keys ``x``/``y`` (or ``inputs``/``labels``). Loaded with ``weights_only=True``; labels must be
    whole numbers >= 0, and a file that cannot be parsed raises a ValueError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or non-tensor file
        raise _unreadable(path, "a torch.save file of (inputs, labels) tensors, or a dict with x/y", error) from None
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
    _check_samples(path, (labels.double() if labels.is_floating_point() else labels).cpu().numpy())
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


#: The MD5 of every file of the CIFAR archives, as published with the datasets (and checked by
#: torchvision). The files are pickles, and unpickling an altered one could run code, so
#: :func:`load_torchvision` refuses any file whose digest differs, before reading it.
CIFAR_MD5: dict[str, dict[str, str]] = {
    "cifar10": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
    "cifar100": {
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
}


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file, read in 1 MiB chunks (CIFAR's MD5s, checkpoints' sha256s)."""
    # usedforsecurity=False: the digests here match published ones, and FIPS builds refuse MD5 otherwise
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_md5(path: Path, name: str) -> None:
    """Raise unless ``path`` has the published MD5 of its file in dataset ``name``.

    Files without a published digest pass; the restricted unpickler still guards them.
    """
    expected = CIFAR_MD5.get(name, {}).get(path.name)
    if expected is None:
        return
    actual = file_digest(path, "md5")
    if actual != expected:
        raise ValueError(
            f"{path} is not the published {name} file {path.name!r}: its MD5 is {actual}, expected "
            f"{expected}. It is corrupted or was replaced, and it was not read (it is a pickle: an "
            f"altered one can run code). Delete {path.parent} and rerun with `--download` "
            "(download=True) to fetch a fresh copy; if you re-encoded the files yourself and trust "
            "them, pass --no-verify (verify=False)"
        )


def _numpy_reconstruct() -> object:
    # numpy 2 moved numpy.core to numpy._core; importing the old path only warns, so prefer the new
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


# Every global a CIFAR batch references: a numpy array pickles as _reconstruct(ndarray, shape,
# dtype) plus its raw bytes, its dtype as dtype("u1"). The real files (protocol 2, written by
# Python 2 with numpy 1) name numpy.core; numpy 2 with protocol 3 or 4 writes numpy._core. None of
# these runs anything but numpy's own array constructors. Python 3's protocol 2 (bytes through
# _codecs.encode) and protocol 5 (numpy's _frombuffer) are refused: the real files use neither.
_RECONSTRUCT = _numpy_reconstruct()
_CIFAR_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _RefusedGlobal(pickle.UnpicklingError, ValueError):
    """A pickle asked for a callable outside :data:`_CIFAR_GLOBALS`. Also a ``ValueError`` so that
    the ``mifpe`` command reports it like any other bad input, without a traceback."""


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, tuples, strings, numbers and numpy arrays.

    ``find_class`` is where pickle resolves every callable it will call (``os.system``,
    ``builtins.open``, ...); refusing all but :data:`_CIFAR_GLOBALS` there means no file, altered
    or not, can run code while it is read.
    """

    def __init__(self, file: BinaryIO, *, source: str = "the pickle", encoding: str = "latin1") -> None:
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> object:
        allowed = _CIFAR_GLOBALS.get((module, name))
        if allowed is None:
            raise _RefusedGlobal(
                f"{self.source} references {module}.{name}, which a CIFAR batch never needs (it holds only "
                "dicts, lists, strings, integers and numpy arrays); refusing to read it. If you wrote "
                "the file yourself, pickle it with protocol 3 or 4 (`pickle.dump(batch, file, protocol=4)`), "
                "or save an .npz file instead (`--data file.npz`)"
            )
        return allowed


def _restricted_load(path: Path, *, encoding: str = "latin1") -> object:
    """Unpickle ``path`` with :class:`_CifarUnpickler` (``encoding`` decodes Python 2 strings)."""
    with open(path, "rb") as handle:
        return _CifarUnpickler(handle, source=str(path), encoding=encoding).load()


def _read_batch(path: Path, name: str, label_key: str, *, verify: bool = True) -> dict:
    """One CIFAR batch file: MD5 checked first (unless ``verify=False``), then safely unpickled."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; the dataset folder is incomplete")
    if verify:
        _verify_md5(path, name)
    # The CIFAR archives are Python-2 pickles of numpy arrays (what torchvision reads too); latin1
    # turns their byte strings into str keys and lets numpy take the raw array bytes unchanged.
    batch = _restricted_load(path, encoding="latin1")
    if not isinstance(batch, dict) or "data" not in batch or label_key not in batch:
        keys = sorted(map(str, batch)) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path} is not a {name} batch: expected a dict with 'data' and {label_key!r}, got {keys}")
    return batch


def _read_cifar(directory: Path, name: str, split: str, *, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    if name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key = "labels"
    else:
        files, label_key = [split], "fine_labels"
    batches = [_read_batch(directory / file, name, label_key, verify=verify) for file in files]
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
    name: str, root: str | Path, *, split: str = "test", n: int | None = None, download: bool = False,
    verify: bool = True,
) -> tuple[Tensor, Tensor]:
    """A torchvision dataset (CIFAR-10/100, MNIST, Fashion-MNIST) from its folder under ``root``.

    The files are read in the layout torchvision keeps them in (``root/cifar-10-batches-py``,
    ``root/cifar-100-python``, ``root/MNIST/raw``, ``root/FashionMNIST/raw``), so a root already
    used with ``torchvision.datasets`` works without torchvision itself. With ``download=True`` a
    missing dataset is fetched by ``torchvision.datasets.<Class>(root, download=True)`` first.

    The CIFAR files are pickles. Each one's MD5 is checked against the published digest
    (:data:`CIFAR_MD5`) before it is read, and it is read by an unpickler that builds only dicts,
    lists, strings, numbers and numpy arrays, so a planted file cannot run code.

    Parameters
    ----------
    name : {"cifar10", "cifar100", "mnist", "fashion-mnist"}
    root : path
    split : {"train", "test"}
    n : int, optional
        The first ``n`` samples only.
    download : bool
        Allow fetching a missing dataset from the internet (off by default).
    verify : bool
        Check each CIFAR file's MD5 before reading it (on by default). Turn it off only for a
        re-encoded copy you trust; the restricted unpickler still refuses anything but data.
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
        images, labels = _read_cifar(directory, name, split, verify=verify)
    else:
        image_stem, label_stem = _SPLIT_FILES[split]
        images, labels = read_idx(_find(directory, image_stem))[:, None], read_idx(_find(directory, label_stem))
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{name} files in {directory} disagree: {images.shape[0]} images, {labels.shape[0]} labels")
    return _take(_as_tensors(images, labels), n)


# ----------------------------------------------------------------------------------------------
# Folders of image files: imagefolder:DIR and imagenet:DIR
# ----------------------------------------------------------------------------------------------

#: File suffixes read as images (compared in lower case); other files in a class folder are skipped.
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp")

_FOLDER_LAYOUT = "one sub-folder of images per class (DIR/<class>/<image>.png), labelled 0, 1, ... in sorted name order"
_IMAGENET_LAYOUT = ("the ImageNet validation images in one sub-folder per class named by WordNet id "
                    "(DIR/n01440764/<image>.JPEG, ...)")
_TORCHVISION_HINT = "`pip install torchvision` (matching your torch), or this package's extra: `pip install 'mifpe-plugins[torchvision]'`"


def _pillow() -> Any:
    """``PIL.Image``, imported when an image folder is loaded (Pillow comes with torchvision)."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(f"imagefolder:DIR and imagenet:DIR read images with Pillow, which is not installed: "
                          f"{_TORCHVISION_HINT} brings it") from None
    return Image


def _imagenet_preprocessing() -> Callable[[Image], Tensor]:
    """torchvision's resize of the shorter side to 256 (bilinear), centre crop to 224x224 and
    scaling to [0, 1]: the standard preprocessing of ImageNet robustness evaluations (RobustBench's),
    with no normalisation (that belongs to the model)."""
    try:
        from torchvision import transforms
    except Exception as error:  # noqa: BLE001 - a broken torchvision raises more than ImportError
        raise ImportError(f"imagenet:DIR resizes and crops with torchvision, which failed to import ({error}): "
                          f"{_TORCHVISION_HINT}") from None
    return transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])


def _pixels(image: Image) -> Tensor:
    """An RGB image at its own size as a float32 (3, H, W) tensor in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
    return torch.from_numpy(array.astype(np.float32) / 255.0)


def _read_image(path: Path) -> Image:
    """The image in ``path``, decoded and converted to RGB; a ValueError naming the file if it
    cannot be read."""
    pil = _pillow()
    try:
        with pil.open(path) as image:
            return image.convert("RGB")
    except Exception as error:  # noqa: BLE001 - Pillow raises many types for a damaged file
        raise ValueError(f"cannot read image {path}: {one_line(error)}; expected an image file Pillow can decode "
                         "(delete or replace it)") from None


class ImageFolderData:
    """Image files in one folder per class, as a map-style dataset of ``(image, label)`` items.

    Only the list of files is made up front: item ``i`` opens its file, converts it to RGB and
    preprocesses it, so an evaluation holds one chunk of images at a time.

    Parameters
    ----------
    spec : str
        The data specification (``imagefolder:DIR``, ``imagenet:DIR``), for messages.
    classes : sequence of str
        The class names; label ``k`` is ``classes[k]``.
    samples : sequence of (Path, int)
        The items' files and labels, in evaluation order.
    preprocess : callable
        RGB PIL image -> float32 (C, H, W) tensor in [0, 1]. Every item must come out with the
        shape of item 0.
    """

    def __init__(self, spec: str, classes: Sequence[str], samples: Sequence[tuple[Path, int]],
                 preprocess: Callable[[Image], Tensor]) -> None:
        self.spec = spec
        self.classes = list(classes)
        self.samples = list(samples)
        self.preprocess = preprocess
        self._shape: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"ImageFolderData({self.spec!r}, {len(self)} images, {len(self.classes)} classes)"

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[operator.index(index)]
        image = self.preprocess(_read_image(path))
        expected = self._first_shape(image if index == 0 else None)
        if tuple(image.shape) != expected:
            raise ValueError(
                f"{path} is {image.shape[2]}x{image.shape[1]} pixels but {self.samples[0][0]} is "
                f"{expected[2]}x{expected[1]}: {self.spec.partition(':')[0]}:DIR reads images at their own size, so "
                "all must have one size; resize them first (imagenet:DIR resizes to 256 and crops 224x224)"
            )
        return image, label

    def _first_shape(self, first: Tensor | None) -> tuple[int, ...]:
        """The shape of item 0, which every item must have (read once)."""
        if self._shape is None:
            if first is None:
                first = self.preprocess(_read_image(self.samples[0][0]))
            self._shape = tuple(first.shape)
        return self._shape

    @property
    def targets(self) -> Tensor:
        """Every item's label (int64, in item order), known without reading any image."""
        return torch.tensor([label for _, label in self.samples], dtype=torch.int64)

    def first(self, n: int) -> ImageFolderData:
        """The first ``n`` items, in this dataset's order."""
        _check_n(n, len(self))
        return ImageFolderData(self.spec, self.classes, self.samples[:n], self.preprocess)


def _class_folders(root: Path, spec: str, layout: str) -> list[Path]:
    """The class sub-folders of ``root`` in sorted name order (hidden ones, named ``.*``, skipped)."""
    if not root.is_dir():
        state = "is not a folder" if root.exists() else "does not exist"
        raise FileNotFoundError(f"{root} {state}; {spec} expects {layout}")
    entries = sorted((entry for entry in root.iterdir() if not entry.name.startswith(".")), key=lambda e: e.name)
    if not entries:
        raise ValueError(f"{root} is empty; {spec} expects {layout}")
    folders = [entry for entry in entries if entry.is_dir()]
    if not folders:
        raise ValueError(f"{root} has no class sub-folders, only {len(entries)} file(s) such as {entries[0].name}; "
                         f"{spec} expects {layout}")
    return folders


def _image_files(folder: Path) -> list[Path]:
    """The image files in ``folder`` and below it (hidden entries skipped), sorted by their path
    inside ``folder``."""
    found = []
    for directory, subfolders, files in os.walk(folder):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found += [Path(directory, name) for name in files
                  if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(found, key=lambda path: path.relative_to(folder).parts)


def _round_robin(per_class: Sequence[Sequence[tuple[Path, int]]]) -> list[tuple[Path, int]]:
    """The first image of every class, then the second of every class, and so on (a class with
    fewer images drops out): the first n items cover min(n, classes) classes."""
    return [item for rank in itertools.zip_longest(*per_class) for item in rank if item is not None]


def _folder_data(spec: str, layout: str, root: Path, folders: Sequence[Path], labels: Sequence[int],
                 classes: Sequence[str], preprocess: Callable[[Image], Tensor], n: int | None) -> ImageFolderData:
    """The dataset of the images in ``folders`` (each with its label), in round-robin order."""
    per_class = [[(path, label) for path in _image_files(folder)] for folder, label in zip(folders, labels, strict=True)]
    if not any(per_class):
        raise ValueError(f"no images in the {len(folders)} class folder(s) of {root} (looked for "
                         f"{', '.join(IMAGE_SUFFIXES)} files); {spec} expects {layout}")
    data = ImageFolderData(spec.replace("DIR", str(root)), classes, _round_robin(per_class), preprocess)
    return data if n is None else data.first(n)


def load_image_folder(root: str | Path, *, n: int | None = None) -> ImageFolderData:
    """Images in one sub-folder per class (torchvision's ``ImageFolder`` layout), at their own size.

    The class folders of ``root``, sorted by name, are labels 0, 1, ... (as in torchvision's
    ``ImageFolder``; an empty class folder keeps its label). A class's images are its files with a
    suffix in :data:`IMAGE_SUFFIXES` (any case), sub-folders included; files directly in ``root``,
    other files and hidden entries (``.*``) are skipped. Each image is converted to RGB and scaled
    to [0, 1] at its own size, so all must have one size.

    The order is fixed: round-robin over the classes in label order -- the first image (by path) of
    every class, then the second, and so on -- so the first ``n`` items cover min(n, classes)
    classes.

    Parameters
    ----------
    root : path
    n : int, optional
        The first ``n`` items only.

    Returns
    -------
    ImageFolderData
        Items ``(float32 (3, H, W) in [0, 1], label)``, read when indexed; ``classes`` are the folder
        names, ``samples`` the (file, label) pairs in order.
    """
    _pillow()  # missing Pillow is reported before any listing
    root = Path(root)
    folders = _class_folders(root, "imagefolder:DIR", _FOLDER_LAYOUT)
    return _folder_data("imagefolder:DIR", _FOLDER_LAYOUT, root, folders, range(len(folders)),
                        [folder.name for folder in folders], _pixels, n)


@functools.cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1 000 ImageNet-1k classes' WordNet ids in label order (sorted), shipped in
    ``_data/imagenet_wnids.json``: class ``k`` of an ImageNet classifier is ``imagenet_wnids()[k]``."""
    text = (resources.files("mifpe_plugins") / "_data" / "imagenet_wnids.json").read_text(encoding="utf-8")
    return tuple(json.loads(text)["wnids"])


def load_imagenet(root: str | Path, *, n: int | None = None) -> ImageFolderData:
    """The ImageNet-1k validation set (all of it or some classes) in one folder per class named by
    WordNet id, preprocessed as robustness evaluations do.

    A folder's label is its WordNet id's position in :func:`imagenet_wnids` -- the standard class
    index, which is also the folders' sorted order when all 1 000 are there -- so a subset of the
    classes keeps the right labels; a folder that is not an ImageNet-1k class is an error. Every
    image is converted to RGB, its shorter side resized to 256 (bilinear), centre-cropped to
    224x224 and scaled to [0, 1], with no normalisation (torchvision's transforms, RobustBench's
    preprocessing). Files and order as in :func:`load_image_folder`: round-robin over the classes
    in label order, so the first ``n`` items cover min(n, classes) classes (``n=5000`` on the full
    set: the first 5 images of every class).

    Returns
    -------
    ImageFolderData
        Items ``(float32 (3, 224, 224) in [0, 1], label)``; ``classes`` are the 1 000 WordNet ids.
    """
    _pillow()
    preprocess = _imagenet_preprocessing()
    root = Path(root)
    folders = _class_folders(root, "imagenet:DIR", _IMAGENET_LAYOUT)
    wnids = imagenet_wnids()
    index = {wnid: label for label, wnid in enumerate(wnids)}
    unknown = [folder for folder in folders if folder.name not in index]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ValueError(f"{unknown[0]}{more} is not an ImageNet-1k class folder: imagenet:DIR expects {_IMAGENET_LAYOUT}, "
                         f"{wnids[0]} ... {wnids[-1]}; for other classes use imagefolder:DIR")
    return _folder_data("imagenet:DIR", _IMAGENET_LAYOUT, root, folders, [index[f.name] for f in folders], wnids,
                        preprocess, n)


def check_classes(data: object, outputs: int, model: str) -> None:
    """Refuse a ``model`` whose number of ``outputs`` differs from an image folder's number of
    classes: the labels are the classes' positions, which mean the model's classes only when both
    count the same ones. Data without a ``classes`` list passes."""
    classes = getattr(data, "classes", None)
    if classes is None or len(classes) == outputs:
        return
    spec = getattr(data, "spec", "the data")
    if spec.startswith("imagenet:"):
        raise ValueError(f"{model} has {outputs} outputs, but {spec} is labelled with the {len(classes)} ImageNet-1k "
                         "classes; use an ImageNet model (one output per class, in the standard order)")
    raise ValueError(f"{model} has {outputs} outputs, but {spec} has {len(classes)} class folders, labelled 0-{len(classes) - 1} "
                     "in sorted name order; give it one folder per output, sorted as the model's classes (an empty "
                     "folder keeps the label of a class without images)")


def as_tensors(data: tuple[Tensor, Tensor] | ImageFolderData, n: int | None = None) -> tuple[Tensor, Tensor]:
    """The first ``n`` samples (default all; all when there are fewer) as two tensors, the images
    of a dataset read and stacked."""
    if isinstance(data, tuple):
        inputs, labels = data
        return inputs[:n], labels[:n]
    items = [data[i] for i in range(len(data) if n is None else min(n, len(data)))]
    return torch.stack([x for x, _ in items]), torch.tensor([label for _, label in items], dtype=torch.int64)


def dataset_of(spec: str) -> str | None:
    """The dataset a data specification of the ``mifpe`` command holds: ``"fashion-mnist"``
    (``bundled`` too), ``"mnist"``, ``"cifar10"``, ``"cifar100"`` or ``"imagenet"``; ``None`` when
    only its owner knows (an .npz or .pt file, ``imagefolder:DIR``). An unknown specification
    raises the ValueError of :func:`load_data`."""
    kind, _, where = spec.partition(":")
    if spec == "bundled" or kind == "fashion-mnist":
        return "fashion-mnist"
    if kind in ("mnist", "cifar10", "cifar100", "imagenet") and where:
        return kind
    if (kind == "imagefolder" and where) or Path(spec).suffix in (".npz", ".pt", ".pth"):
        return None
    raise ValueError(_unknown_data(spec))


def _unknown_data(spec: str) -> str:
    return (f"unknown data {spec!r}; use `bundled`, `fashion-mnist[:DIR]`, `mnist:DIR`, `cifar10:ROOT`, `cifar100:ROOT`, "
            "`imagenet:DIR`, `imagefolder:DIR`, or a path to an .npz or .pt file")


def load_data(
    spec: str, *, split: str = "test", n: int | None = None, download: bool = False, verify: bool = True
) -> tuple[Tensor, Tensor] | ImageFolderData:
    """Resolve a data specification of the ``mifpe`` command.

    ``bundled`` (the shipped 1 000 Fashion-MNIST test images), ``fashion-mnist`` (Debian's IDX
    files) or ``fashion-mnist:DIR``, ``mnist:DIR`` (the official IDX files directly in DIR, or
    torchvision's layout under DIR), ``cifar10:ROOT`` / ``cifar100:ROOT`` (torchvision's layout),
    or a path to an ``.npz`` or ``.pt`` file give ``(inputs, labels)`` tensors. ``imagenet:DIR``
    (:func:`load_imagenet`) and ``imagefolder:DIR`` (:func:`load_image_folder`) give an
    :class:`ImageFolderData` read one item at a time, with ``n`` its first items in its documented
    order; DIR is the split they read, so ``split`` must stay ``"test"``. ``verify`` is passed to
    :func:`load_torchvision` (the CIFAR files' MD5 check).
    """
    kind, _, where = spec.partition(":")
    if spec == "bundled":
        if split != "test":
            raise ValueError("the bundled data is a test subset; use `fashion-mnist` for the training split")
        return bundled_fashion_mnist_test(n)
    if kind in ("imagefolder", "imagenet") and where:
        if split != "test":
            raise ValueError(f"{kind}:DIR reads the folder DIR, whatever split it holds; pass the split's folder "
                             f"and leave split at 'test', got {split!r}")
        return load_imagenet(where, n=n) if kind == "imagenet" else load_image_folder(where, n=n)
    if kind == "fashion-mnist":
        if where and (Path(where) / "FashionMNIST").is_dir():
            return load_torchvision("fashion-mnist", where, split=split, n=n, download=download)
        return load_fashion_mnist(where or None, split=split, n=n)
    if kind == "mnist" and where and split in _SPLIT_FILES:
        directory = Path(where)
        if any(_idx_file(directory, stem) for stem in _SPLIT_FILES[split]):
            return load_mnist(directory, split=split, n=n)  # the official files directly in DIR
        if not download and not (directory / TORCHVISION_DATASETS["mnist"]).is_dir():
            raise FileNotFoundError(f"mnist not found in {directory}. {_mnist_hint(directory)}")
    if kind in TORCHVISION_DATASETS and where:
        return load_torchvision(kind, where, split=split, n=n, download=download, verify=verify)
    path = Path(spec)
    if path.suffix == ".npz":
        return load_npz(path, n=n)
    if path.suffix in (".pt", ".pth"):
        return load_tensors(path, n=n)
    raise ValueError(_unknown_data(spec))


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
