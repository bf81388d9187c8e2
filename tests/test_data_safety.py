"""No code runs from a data file: the CIFAR pickles are MD5-checked, then read by an unpickler
that builds only data (issue 9, section 2)."""

import hashlib
import os
import pickle
import re
import struct

import numpy as np
import pytest
import torch

from mifpe_plugins import data
from mifpe_plugins.data import CIFAR_MD5, TORCHVISION_DATASETS, load_data, load_torchvision

# ----------------------------------------------------------------------------------------------
# Files in the real format: the CIFAR archives were written by Python 2's cPickle (protocol 2),
# strings as BINSTRING, arrays through numpy.core.multiarray._reconstruct. Python 3 cannot write
# that, so the opcodes are assembled here.
# ----------------------------------------------------------------------------------------------


def _py2_str(raw: bytes) -> bytes:
    if len(raw) < 256:
        return pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw
    return pickle.BINSTRING + struct.pack("<i", len(raw)) + raw


def _py2_int(value: int) -> bytes:
    if 0 <= value < 256:
        return pickle.BININT1 + bytes([value])
    return pickle.BININT + struct.pack("<i", value)


def _py2_uint8_array(array: np.ndarray) -> bytes:
    dtype = (
        pickle.GLOBAL + b"numpy\ndtype\n" + _py2_str(b"u1") + _py2_int(0) + _py2_int(1) + pickle.TUPLE3 + pickle.REDUCE
        + pickle.MARK + _py2_int(3) + _py2_str(b"|") + pickle.NONE * 3 + _py2_int(-1) + _py2_int(-1) + _py2_int(0)
        + pickle.TUPLE + pickle.BUILD
    )
    shape = pickle.MARK + b"".join(_py2_int(d) for d in array.shape) + pickle.TUPLE
    return (
        pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n" + pickle.GLOBAL + b"numpy\nndarray\n"
        + _py2_int(0) + pickle.TUPLE1 + _py2_str(b"b") + pickle.TUPLE3 + pickle.REDUCE
        + pickle.MARK + _py2_int(1) + shape + dtype + pickle.NEWFALSE + _py2_str(array.tobytes()) + pickle.TUPLE
        + pickle.BUILD
    )


def py2_cifar_batch(images: np.ndarray, labels: list[int], label_key: str = "labels") -> bytes:
    """A CIFAR batch pickled as the published files are: a dict of str keys, a uint8 (N, 3072)
    array, a list of int labels and a list of file names."""
    count = images.shape[0]
    items = [
        (b"batch_label", _py2_str(b"testing batch 1 of 1")),
        (b"data", _py2_uint8_array(images.reshape(count, -1))),
        (label_key.encode(), pickle.EMPTY_LIST + pickle.MARK + b"".join(map(_py2_int, labels)) + pickle.APPENDS),
        (b"filenames", pickle.EMPTY_LIST + pickle.MARK + b"".join(_py2_str(b"img_%d.png" % i) for i in range(count)) + pickle.APPENDS),
    ]
    body = b"".join(_py2_str(key) + value for key, value in items)
    return pickle.PROTO + bytes([2]) + pickle.EMPTY_DICT + pickle.MARK + body + pickle.SETITEMS + pickle.STOP


def _random_batch(count: int, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, 3, 32, 32), dtype=np.uint8), rng.integers(0, classes, count).tolist()


class _Planted:
    """A payload whose unpickling calls ``function(*args)``: what an attacker would plant."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _plant(path, payload, protocol: int = 2) -> None:
    # wrapped in a batch-shaped dict so that only the payload, not the shape, gives it away; it
    # comes first, so that it is the first global the reader meets
    images, labels = _random_batch(2)
    batch = {"x": payload, "data": images.reshape(2, -1), "labels": labels}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))


@pytest.fixture
def cifar10_dir(tmp_path):
    folder = tmp_path / TORCHVISION_DATASETS["cifar10"]
    folder.mkdir()
    return folder


# ----------------------------------------------------------------------------------------------
# First line: the published MD5 of each file is checked before it is read
# ----------------------------------------------------------------------------------------------


def test_checksums_are_torchvisions_published_ones():
    datasets = pytest.importorskip("torchvision.datasets")
    for name, cls in (("cifar10", datasets.CIFAR10), ("cifar100", datasets.CIFAR100)):
        published = dict(cls.train_list + cls.test_list) | {cls.meta["filename"]: cls.meta["md5"]}
        assert CIFAR_MD5[name] == published


@pytest.mark.parametrize("payload", ["open", "os.system"])
def test_planted_batch_fails_its_md5_and_runs_nothing(cifar10_dir, tmp_path, payload):
    marker = tmp_path / "pwned"
    function = (open, (str(marker), "w")) if payload == "open" else (os.system, (f"touch {marker}",))
    _plant(cifar10_dir / "test_batch", _Planted(function[0], *function[1]))
    actual = hashlib.md5((cifar10_dir / "test_batch").read_bytes()).hexdigest()
    pattern = (
        rf"test_batch is not the published cifar10 file 'test_batch': its MD5 is {actual}, expected "
        r"40351d587109b95175f43aff81a1287e\. .*Delete .*cifar-10-batches-py and rerun with `--download`"
    )
    with pytest.raises(ValueError, match=pattern):
        load_torchvision("cifar10", tmp_path)
    with pytest.raises(ValueError, match="MD5 is"):
        load_data(f"cifar10:{tmp_path}")
    assert not marker.exists()


def test_md5_is_checked_before_reading(cifar10_dir, tmp_path, monkeypatch):
    # A well-formed batch with the wrong digest is refused too, and never reaches the unpickler.
    images, labels = _random_batch(3)
    (cifar10_dir / "test_batch").write_bytes(py2_cifar_batch(images, labels))
    monkeypatch.setattr(data, "_restricted_load", lambda *a, **k: pytest.fail("read before its MD5 was checked"))
    with pytest.raises(ValueError, match="expected 40351d587109b95175f43aff81a1287e"):
        load_torchvision("cifar10", tmp_path)


# ----------------------------------------------------------------------------------------------
# Second line: the unpickler builds only data, whatever the checksum says
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_refuses_globals_without_the_md5_check(cifar10_dir, tmp_path, protocol):
    marker = tmp_path / "pwned"
    _plant(cifar10_dir / "test_batch", _Planted(open, str(marker), "w"), protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match=r"test_batch references (io|builtins|__builtin__)\.open, which a CIFAR batch never needs"):
        load_torchvision("cifar10", tmp_path, verify=False)
    _plant(cifar10_dir / "test_batch", _Planted(os.system, f"touch {marker}"), protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match=r"references (posix|nt|os)\.system") as refused:
        data._restricted_load(cifar10_dir / "test_batch")
    assert isinstance(refused.value, ValueError)  # what the `mifpe` command reports without a traceback
    assert not marker.exists()


def test_command_line_reports_both_refusals_and_runs_nothing(cifar10_dir, tmp_path, monkeypatch, capsys):
    from mifpe_plugins.cli import main

    def error_of(argv) -> str:
        with pytest.raises(SystemExit):
            main(argv)
        return capsys.readouterr().err

    marker = tmp_path / "pwned"
    _plant(cifar10_dir / "test_batch", _Planted(os.system, f"touch {marker}"))
    argv = ["table2", "--data", f"cifar10:{tmp_path}", "--n", "2"]
    assert re.search(r"error: .*test_batch is not the published cifar10 file .*expected 40351d58", error_of(argv))
    assert re.search(r"error: .*test_batch references (posix|nt|os)\.system", error_of([*argv, "--no-verify"]))
    monkeypatch.setitem(CIFAR_MD5, "cifar10", {})  # no digest to check: the unpickler alone
    assert re.search(r"error: .*test_batch references (posix|nt|os)\.system", error_of(argv))
    assert not marker.exists()


def test_file_without_a_published_md5_is_still_read_safely(cifar10_dir, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setitem(CIFAR_MD5, "cifar10", {k: v for k, v in CIFAR_MD5["cifar10"].items() if k != "test_batch"})
    _plant(cifar10_dir / "test_batch", _Planted(open, str(marker), "w"))
    with pytest.raises(pickle.UnpicklingError, match="refusing to read it"):
        load_torchvision("cifar10", tmp_path)  # verify=True, but there is no digest to check
    assert not marker.exists()


def test_python3_encodings_outside_the_format_are_refused_with_advice(tmp_path):
    # Python 3's protocol 2 routes bytes through _codecs.encode, protocol 5 numpy through
    # _frombuffer; the published files use neither, and the message says what does work.
    images, labels = _random_batch(2)
    path = tmp_path / "batch"
    for protocol, refused in ((2, r"_codecs\.encode"), (5, r"numpy\._core\.numeric\._frombuffer")):
        path.write_bytes(pickle.dumps({"data": images, "labels": labels}, protocol=protocol))
        with pytest.raises(pickle.UnpicklingError, match=rf"{refused}.*protocol 3 or 4"):
            data._restricted_load(path)


# ----------------------------------------------------------------------------------------------
# The real format still reads
# ----------------------------------------------------------------------------------------------


def test_restricted_unpickler_reads_the_published_format(tmp_path):
    images, labels = _random_batch(5)
    path = tmp_path / "test_batch"
    path.write_bytes(py2_cifar_batch(images, labels))
    batch = data._restricted_load(path)
    assert sorted(batch) == ["batch_label", "data", "filenames", "labels"]
    assert batch["data"].dtype == np.uint8 and batch["data"].shape == (5, 3072)
    np.testing.assert_array_equal(batch["data"], images.reshape(5, -1))
    assert batch["labels"] == labels and batch["filenames"][4] == "img_4.png"
    # numpy 2's own protocol-4 pickles name numpy._core instead of numpy.core: read as well
    path.write_bytes(pickle.dumps({"data": images, "labels": labels, "meta": (1, 2.5, None, b"raw")}, protocol=4))
    batch = data._restricted_load(path)
    np.testing.assert_array_equal(batch["data"], images)
    assert batch["meta"] == (1, 2.5, None, b"raw")


def test_published_format_with_matching_md5_loads_end_to_end(tmp_path, monkeypatch):
    written = {}
    for name, files, key in (
        ("cifar10", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "labels"),
        ("cifar100", ["train", "test"], "fine_labels"),
    ):
        folder = tmp_path / TORCHVISION_DATASETS[name]
        folder.mkdir()
        for seed, file in enumerate(files):
            images, labels = _random_batch(2 + seed % 2, classes=100 if name == "cifar100" else 10, seed=seed)
            (folder / file).write_bytes(py2_cifar_batch(images, labels, key))
            written[name, file] = images, labels
        # the synthetic files stand in for the published ones: record their digests as such
        monkeypatch.setitem(CIFAR_MD5, name, {f: hashlib.md5((folder / f).read_bytes()).hexdigest() for f in files})
    x, y = load_torchvision("cifar10", tmp_path)
    np.testing.assert_array_equal((x * 255).round().to(torch.uint8).numpy(), written["cifar10", "test_batch"][0])
    assert y.tolist() == written["cifar10", "test_batch"][1]
    x, y = load_data(f"cifar100:{tmp_path}", split="train")
    assert x.shape == (2, 3, 32, 32) and y.tolist() == written["cifar100", "train"][1]
    x, _ = load_torchvision("cifar10", tmp_path, split="train")
    assert x.shape == (12, 3, 32, 32)


def test_batch_of_the_wrong_shape_is_a_clear_error(cifar10_dir, tmp_path):
    (cifar10_dir / "test_batch").write_bytes(pickle.dumps([1, 2, 3], protocol=4))
    with pytest.raises(ValueError, match="test_batch is not a cifar10 batch: expected a dict with 'data' and 'labels', got list"):
        load_torchvision("cifar10", tmp_path, verify=False)
    (cifar10_dir / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((1, 3072), np.uint8)}, protocol=4))
    with pytest.raises(ValueError, match=r"got \['data'\]"):
        load_torchvision("cifar10", tmp_path, verify=False)
