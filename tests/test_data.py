import gzip
import hashlib

import numpy as np
import pytest
import torch

from mifpe_plugins.data import (
    CIFAR_MD5,
    TORCHVISION_DATASETS,
    bundled_fashion_mnist_test,
    load_data,
    load_fashion_mnist,
    load_npz,
    load_tensors,
    load_torchvision,
    read_idx,
    save_npz,
)


def write_idx(path, array: np.ndarray, *, compress: bool) -> None:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    if compress:
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)


@pytest.fixture
def fashion_dir(tmp_path):
    rng = np.random.default_rng(0)
    for split, count, compress in (("t10k", 7, True), ("train", 5, False)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(tmp_path / f"{split}-images-idx3-ubyte{suffix}", images, compress=compress)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte{suffix}", labels, compress=compress)
    return tmp_path


def test_fashion_mnist_from_idx_files(fashion_dir):
    x, y = load_fashion_mnist(fashion_dir, split="test")
    raw = read_idx(fashion_dir / "t10k-images-idx3-ubyte.gz")
    assert x.shape == (7, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    torch.testing.assert_close(x[:, 0], torch.from_numpy(raw.astype(np.float32) / 255))
    x_train, _ = load_fashion_mnist(fashion_dir, split="train", n=3)
    assert x_train.shape == (3, 1, 28, 28)
    assert float(x.min()) >= 0 and float(x.max()) <= 1


def test_fashion_mnist_errors(fashion_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split must be one of"):
        load_fashion_mnist(fashion_dir, split="val")
    with pytest.raises(ValueError, match="larger than the data"):
        load_fashion_mnist(fashion_dir, n=8)
    (fashion_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_fashion_mnist(fashion_dir)


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(bad)
    short = tmp_path / "short"
    write_idx(short, np.zeros((2, 3), dtype=np.uint8), compress=False)
    short.write_bytes(short.read_bytes()[:-1])
    with pytest.raises(ValueError, match="header says"):
        read_idx(short)
    wide = tmp_path / "wide"
    write_idx(wide, np.arange(6, dtype=">i4").reshape(2, 3), compress=False)
    assert read_idx(wide).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_npz_round_trip_and_layouts(tmp_path):
    x = torch.rand(4, 3, 5, 5)
    y = torch.tensor([0, 1, 2, 3])
    save_npz(tmp_path / "d.npz", x, y)
    x2, y2 = load_npz(tmp_path / "d.npz")
    assert torch.equal(y2, y)
    assert float((x2 - x).abs().max()) <= 0.5 / 255 + 1e-7
    np.savez(tmp_path / "hwc.npz", images=np.zeros((2, 6, 6, 3), np.uint8), targets=np.array([1, 2]))
    x3, _ = load_npz(tmp_path / "hwc.npz", x_key="images", y_key="targets")
    assert x3.shape == (2, 3, 6, 6)
    with pytest.raises(KeyError, match="no array"):
        load_npz(tmp_path / "hwc.npz")
    with pytest.raises(ValueError, match="larger than the data"):
        load_npz(tmp_path / "d.npz", n=5)


def test_bundled_subset_ships_with_the_package():
    x, y = bundled_fashion_mnist_test()
    assert x.shape == (1000, 1, 28, 28) and y.shape == (1000,)
    assert set(y.tolist()) == set(range(10))
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    x5, y5 = bundled_fashion_mnist_test(n=5)
    assert torch.equal(x5, x[:5]) and torch.equal(y5, y[:5])


# ----------------------------------------------------------------------------------------------
# torchvision's on-disk layouts, tensor files and the command line's data specifications
# ----------------------------------------------------------------------------------------------


def _write_cifar(root, name, counts, rng):
    import pickle

    folder = root / TORCHVISION_DATASETS[name]
    folder.mkdir(parents=True)
    written = {}
    for file, count in counts.items():
        images = rng.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10 if name == "cifar10" else 100, size=count).tolist()
        key = "labels" if name == "cifar10" else "fine_labels"
        # CIFAR's rows are the R, G and B planes one after another (3072 bytes per image).
        # Protocol 4 pickles numpy arrays through the globals the safe reader allows (5 would not).
        with open(folder / file, "wb") as handle:
            pickle.dump({"data": images.reshape(count, -1), key: labels}, handle, protocol=4)
        written[file] = (images, labels)
    return written


def _trust(monkeypatch, root, name):
    # The synthetic files stand in for the published ones: record their MD5s as the expected ones.
    folder = root / TORCHVISION_DATASETS[name]
    digests = {file.name: hashlib.md5(file.read_bytes()).hexdigest() for file in folder.iterdir()}
    monkeypatch.setitem(CIFAR_MD5, name, digests)


def test_cifar10_and_cifar100_from_torchvision_layout(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    batches = {f"data_batch_{i}": 2 for i in range(1, 6)} | {"test_batch": 3}
    written = _write_cifar(tmp_path, "cifar10", batches, rng)
    with pytest.raises(ValueError, match="test_batch is not the published cifar10 file"):
        load_torchvision("cifar10", tmp_path, split="test")
    _trust(monkeypatch, tmp_path, "cifar10")
    x, y = load_torchvision("cifar10", tmp_path, split="test")
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32
    np.testing.assert_array_equal((x * 255).round().to(torch.uint8).numpy(), written["test_batch"][0])
    assert y.tolist() == written["test_batch"][1]
    x_train, y_train = load_torchvision("cifar10", tmp_path, split="train", n=7)
    assert x_train.shape == (7, 3, 32, 32)
    assert y_train[:2].tolist() == written["data_batch_1"][1]

    written = _write_cifar(tmp_path, "cifar100", {"train": 2, "test": 4}, rng)
    x, y = load_data(f"cifar100:{tmp_path}", verify=False)
    assert x.shape == (4, 3, 32, 32) and y.tolist() == written["test"][1]


def test_mnist_layout_matches_torchvision(tmp_path):
    rng = np.random.default_rng(1)
    for name, folder in (("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")):
        raw = tmp_path / folder / "raw"
        raw.mkdir(parents=True)
        for split, count in (("t10k", 6), ("train", 4)):
            write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), compress=False)
            write_idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, count).astype(np.uint8), compress=False)
        x, y = load_torchvision(name, tmp_path)
        assert x.shape == (6, 1, 28, 28) and y.shape == (6,)
        # torchvision itself reads the same files to the same images and labels
        import torchvision.datasets

        reference = getattr(torchvision.datasets, {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}[name])(
            str(tmp_path), train=False, download=False
        )
        np.testing.assert_array_equal((x[:, 0] * 255).round().to(torch.uint8).numpy(), reference.data.numpy())
        assert y.tolist() == reference.targets.tolist()
    # `fashion-mnist:ROOT` accepts torchvision's layout as well as a bare IDX directory
    x, _ = load_data(f"fashion-mnist:{tmp_path}", n=2)
    assert x.shape == (2, 1, 28, 28)


def test_torchvision_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar10 not found: .*cifar-10-batches-py does not exist. Allow downloading"):
        load_torchvision("cifar10", tmp_path)
    with pytest.raises(ValueError, match="unknown torchvision dataset 'svhn'; known: cifar10, cifar100, mnist, fashion-mnist"):
        load_torchvision("svhn", tmp_path)
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(FileNotFoundError, match="test_batch is missing"):
        load_torchvision("cifar10", tmp_path)


def test_tensor_files_and_data_specs(tmp_path):
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    labels = torch.arange(5)
    torch.save((images, labels), tmp_path / "pair.pt")
    torch.save({"inputs": images.float() / 255, "labels": labels}, tmp_path / "dict.pt")
    for file in ("pair.pt", "dict.pt"):
        x, y = load_data(str(tmp_path / file), n=4)
        assert x.shape == (4, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
        torch.testing.assert_close(x, images[:4, None].float() / 255)
    torch.save({"a": images}, tmp_path / "bad.pt")
    with pytest.raises(KeyError, match="expected x/y or inputs/labels"):
        load_tensors(tmp_path / "bad.pt")
    torch.save((images, labels[:3]), tmp_path / "short.pt")
    with pytest.raises(ValueError, match="labels must have shape \\(5,\\)"):
        load_tensors(tmp_path / "short.pt")
    assert load_data("bundled", n=3)[0].shape == (3, 1, 28, 28)
    with pytest.raises(ValueError, match="unknown data 'imagenet'"):
        load_data("imagenet")
    with pytest.raises(ValueError, match="n=1001 is larger than the data \\(1000 samples\\)"):
        load_data("bundled", n=1001)
