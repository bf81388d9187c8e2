import gzip

import numpy as np
import pytest
import torch

from mifpe_plugins.data import (
    bundled_fashion_mnist_test,
    load_fashion_mnist,
    load_npz,
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
