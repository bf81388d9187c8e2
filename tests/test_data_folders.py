"""Image folders (`imagefolder:DIR`, `imagenet:DIR`) are read one chunk at a time, in a fixed
order, with one-line errors; and the radius of a run is never guessed from data of unknown origin."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mifpe_plugins import cli, tables
from mifpe_plugins.cli import main
from mifpe_plugins.data import (
    ImageFolderData,
    as_tensors,
    dataset_of,
    imagenet_wnids,
    load_data,
    load_image_folder,
    load_imagenet,
)

Image = pytest.importorskip("PIL.Image")

# (class folder, file, colour): "dog" has one image, "emu" two, "cat" three; grey and palette
# images are converted to RGB.
IMAGES = [("cat", "a.png", (255, 0, 0)), ("cat", "b.png", (200, 0, 0)), ("cat", "sub/c.png", (150, 0, 0)),
          ("dog", "a.png", (0, 255, 0)), ("emu", "a.png", (0, 0, 255)), ("emu", "b.png", (0, 0, 100))]
# round-robin over the classes: the first image of every class, then the second, ...
ORDER = [("cat", "a.png"), ("dog", "a.png"), ("emu", "a.png"), ("cat", "b.png"), ("emu", "b.png"), ("cat", "sub/c.png")]
FIRST, SECOND, LAST = "n01440764", "n01443537", "n15075141"  # ImageNet-1k classes 0, 1 and 999


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default output folders land in the test's folder


def _image(path: Path, colour, size=(8, 6), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).convert(mode).save(path)


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "images"
    for name, file, colour in IMAGES:
        _image(root / name / file, colour)
    (root / "cat" / "notes.txt").write_text("not an image")  # skipped: not an image suffix
    _image(root / ".ipynb_checkpoints" / "x.png", (1, 2, 3))  # hidden: not a class
    _image(root / "loose.png", (1, 2, 3))  # directly in DIR: not in a class
    return root


def _model_file(tmp_path: Path, channels: int, classes: int, name: str = "model.ts") -> str:
    """A small TorchScript classifier of images of any size."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, classes)).eval()
    path = tmp_path / name
    torch.jit.script(model).save(str(path))
    return str(path)


def _error(capsys, argv: list[str]) -> str:
    """Run the command, expect exit status 2 and one error line; return it."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"mifpe {argv[0]}: error: "), err
    return last


# ----------------------------------------------------------------------------------------------
# imagefolder:DIR
# ----------------------------------------------------------------------------------------------


def test_labels_order_shape_and_range(folder):
    data = load_data(f"imagefolder:{folder}")
    assert isinstance(data, ImageFolderData) and len(data) == 6
    assert data.classes == ["cat", "dog", "emu"]
    assert [tuple(path.relative_to(folder).as_posix().split("/", 1)) for path, _ in data.samples] == ORDER
    assert data.targets.tolist() == [0, 1, 2, 0, 2, 0]
    colours = {(name, file): colour for name, file, colour in IMAGES}
    for index, (name, file) in enumerate(ORDER):
        x, label = data[index]
        assert x.dtype == torch.float32 and x.shape == (3, 6, 8) and label == data.classes.index(name)
        expected = torch.tensor(colours[(name, file)], dtype=torch.float32) / 255
        torch.testing.assert_close(x, expected[:, None, None].expand(3, 6, 8), rtol=0, atol=0)


def test_grey_and_palette_images_are_converted_to_rgb(tmp_path):
    _image(tmp_path / "d" / "grey" / "a.png", (90, 90, 90), mode="L")
    _image(tmp_path / "d" / "palette" / "a.png", (10, 20, 30), mode="P")
    _image(tmp_path / "d" / "rgba" / "a.PNG", (40, 50, 60), mode="RGBA")
    data = load_image_folder(tmp_path / "d")
    images = [data[i][0] for i in range(3)]
    assert all(x.shape == (3, 6, 8) for x in images)
    assert images[0][:, 0, 0].mul(255).round().tolist() == [90, 90, 90]
    assert images[2][:, 0, 0].mul(255).round().tolist() == [40, 50, 60]


def test_n_takes_the_first_items_of_the_fixed_order(folder):
    whole = load_image_folder(folder)
    four = load_data(f"imagefolder:{folder}", n=4)
    assert len(four) == 4 and four.samples == whole.samples[:4] and four.classes == whole.classes
    x, y = as_tensors(four)
    assert x.shape == (4, 3, 6, 8) and y.tolist() == [0, 1, 2, 0]
    assert as_tensors(whole, 2)[1].tolist() == [0, 1] and len(as_tensors(whole, 99)[1]) == 6
    with pytest.raises(ValueError, match=r"n=7 is larger than the data \(6 samples\)"):
        load_data(f"imagefolder:{folder}", n=7)
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        load_image_folder(folder, n=0)


def test_an_empty_class_folder_keeps_its_label(tmp_path):
    for name in ("a", "c"):
        _image(tmp_path / "d" / name / "x.png", (0, 0, 0))
    (tmp_path / "d" / "b").mkdir()
    data = load_image_folder(tmp_path / "d")
    assert data.classes == ["a", "b", "c"] and data.targets.tolist() == [0, 2]


class CountingFolder(ImageFolderData):
    """Records which items are read, in order."""

    def __init__(self, data: ImageFolderData) -> None:
        super().__init__(data.spec, data.classes, data.samples, data.preprocess)
        self.reads: list[int] = []

    def __getitem__(self, index: int):
        self.reads.append(index)
        return super().__getitem__(index)


def test_the_engine_reads_one_chunk_at_a_time(folder, tmp_path):
    data = CountingFolder(load_image_folder(folder))
    model = torch.jit.load(_model_file(tmp_path, 3, 3))
    evaluation = tables.Evaluation(model, data, None, eps=8 / 255, batch_size=4, show_progress=False)
    report = tables.table2(evaluation, attacks=("fgsm",))
    # clean, FGSM ce, FGSM mifpe: each reads chunk 0 (items 0-3), then chunk 1 (items 4-5), and nothing else
    assert data.reads == [0, 1, 2, 3, 4, 5] * 3
    assert report.settings["n"] == 6 and all(result.n == 6 for result in report.results.values())
    assert report.results[("model", "clean")].arrays["label"].tolist() == [0, 1, 2, 0, 2, 0]


def test_table2_on_an_image_folder_end_to_end(folder, tmp_path, capsys):
    model = _model_file(tmp_path, 3, 3)
    out = tmp_path / "out"
    assert main(["table2", "--model", model, "--data", f"imagefolder:{folder}", "--eps", "8/255", "--attacks", "fgsm",
                 "--n", "6", "--batch-size", "4", "--out", str(out), "--quiet"]) == 0
    stem = "table2-model-imagefolder-images-linf-eps0.03137-float32-n6"
    markdown = (out / f"{stem}.md").read_text()
    assert "6 samples, L-inf eps = 0.0313725 (set by --eps)," in markdown
    report = json.loads((out / f"{stem}.json").read_text())
    assert report["eps_source"] == "set by --eps" and report["data"] == f"imagefolder:{folder}"
    labels = [line.split(",") for line in (out / f"{stem}.samples.csv").read_text().splitlines()]
    column = labels[0].index("label")
    assert [int(row[column]) for row in labels[1:]] == [0, 1, 2, 0, 2, 0]


@pytest.mark.parametrize(("make", "message"), [
    (lambda root: root.mkdir(), "{root} is empty; imagefolder:DIR expects one sub-folder of images per class"),
    (lambda root: _image(root / "a.png", (0, 0, 0)), "{root} has no class sub-folders, only 1 file(s) such as a.png; "
                                                     "imagefolder:DIR expects one sub-folder"),
    (lambda root: (root / "cat").mkdir(parents=True), "no images in the 1 class folder(s) of {root} (looked for .bmp"),
    (lambda root: None, "{root} does not exist; imagefolder:DIR expects"),
])
def test_folder_errors_are_one_line_naming_the_folder(make, message, tmp_path, capsys):
    root = tmp_path / "d"
    make(root)
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        load_image_folder(root)
    assert message.format(root=root) in str(error.value)
    line = _error(capsys, ["table2", "--model", _model_file(tmp_path, 3, 2), "--data", f"imagefolder:{root}", "--eps", "0.1",
                           "--attacks", "fgsm", "--quiet"])
    assert message.format(root=root) in line


@pytest.mark.parametrize("content", [b"not an image at all", "truncated"])
def test_an_unreadable_image_is_named(content, folder, tmp_path, capsys):
    bad = folder / "cat" / "a.png"  # item 0: read by the one forward pass before any attack
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if content == "truncated" else content)
    with pytest.raises(ValueError, match=f"cannot read image {bad}: .*expected an image file Pillow can decode"):
        load_image_folder(folder)[0]
    line = _error(capsys, ["table2", "--model", _model_file(tmp_path, 3, 3), "--data", f"imagefolder:{folder}",
                           "--eps", "0.1", "--attacks", "fgsm", "--quiet"])
    assert f"cannot read image {bad}" in line


def test_images_of_another_size_are_refused_naming_both_files(folder):
    _image(folder / "dog" / "a.png", (0, 0, 0), size=(9, 6))
    data = load_image_folder(folder)
    with pytest.raises(ValueError, match=f"{folder / 'dog' / 'a.png'} is 9x6 pixels but {folder / 'cat' / 'a.png'} is 8x6"):
        data[1]


def test_the_model_needs_one_output_per_class_folder(folder, tmp_path, capsys):
    line = _error(capsys, ["table2", "--model", _model_file(tmp_path, 3, 5), "--data", f"imagefolder:{folder}",
                           "--eps", "0.1", "--attacks", "fgsm", "--quiet"])
    assert "has 5 outputs, but imagefolder:" in line and "has 3 class folders, labelled 0-2 in sorted name order" in line


# ----------------------------------------------------------------------------------------------
# imagenet:DIR
# ----------------------------------------------------------------------------------------------


def _jpeg(path: Path, size: tuple[int, int], band: int = 0) -> None:
    """A white JPEG with black vertical bands ``band`` pixels wide at the left and right edges."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, (255, 255, 255))
    if band:
        image.paste((0, 0, 0), (0, 0, band, size[1]))
        image.paste((0, 0, 0), (size[0] - band, 0, size[0], size[1]))
    image.save(path, quality=95)


@pytest.fixture
def imagenet(tmp_path) -> Path:
    root = tmp_path / "val"
    _jpeg(root / FIRST / "ILSVRC2012_val_00000001.JPEG", (400, 300), band=60)
    _jpeg(root / FIRST / "ILSVRC2012_val_00000002.JPEG", (300, 400))
    _jpeg(root / SECOND / "ILSVRC2012_val_00000003.JPEG", (100, 120))
    _jpeg(root / LAST / "ILSVRC2012_val_00000004.JPEG", (500, 375))
    (root / "LOC_val_solution.csv").write_text("")  # files beside the class folders are skipped
    return root


def test_the_shipped_class_list_is_imagenet_1k_in_label_order():
    wnids = imagenet_wnids()
    assert len(wnids) == len(set(wnids)) == 1000 and list(wnids) == sorted(wnids)
    assert (wnids[0], wnids[1], wnids[999]) == (FIRST, SECOND, LAST)


def test_imagenet_labels_and_the_224_centre_crop(imagenet):
    data = load_data(f"imagenet:{imagenet}")
    assert len(data.classes) == 1000 and data.targets.tolist() == [0, 1, 999, 0]
    assert [path.name for path, _ in data.samples] == [f"ILSVRC2012_val_0000000{i}.JPEG" for i in (1, 3, 4, 2)]
    for index in range(4):
        x, _ = data[index]
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    # 400x300 -> 341x256 -> the central 224 columns: the black 60-pixel bands at both edges are cut off
    banded = data[0][0]
    assert banded.min() > 0.9
    assert load_image_folder(imagenet)[0][0].min() < 0.1  # imagefolder: the same file at its own size, bands kept
    assert load_imagenet(imagenet, n=2).samples == data.samples[:2]


def test_imagenet_refuses_folders_that_are_not_imagenet_classes(imagenet):
    (imagenet / "n99999999").mkdir()
    (imagenet / "cats").mkdir()
    with pytest.raises(ValueError, match=f"{imagenet / 'cats'} \\(and 1 more\\) is not an ImageNet-1k class folder: "
                                         "imagenet:DIR expects the ImageNet validation images in one sub-folder per class"):
        load_imagenet(imagenet)


def test_imagenet_needs_a_model_with_1000_outputs(imagenet, tmp_path, capsys):
    line = _error(capsys, ["table2", "--model", _model_file(tmp_path, 3, 10), "--data", f"imagenet:{imagenet}",
                           "--attacks", "fgsm", "--quiet"])
    assert "has 10 outputs, but imagenet:" in line and "is labelled with the 1000 ImageNet-1k classes" in line


# ----------------------------------------------------------------------------------------------
# The radius: each dataset's standard, a published model's own, or --eps
# ----------------------------------------------------------------------------------------------


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _mnist_files(directory: Path) -> None:
    directory.mkdir(parents=True)
    _write_idx(directory / "t10k-images-idx3-ubyte", np.arange(4 * 28 * 28).reshape(4, 28, 28) % 256)
    _write_idx(directory / "t10k-labels-idx1-ubyte", np.arange(4))


def _cifar(root: Path, folder: str, file: str, key: str) -> None:
    (root / folder).mkdir(parents=True)
    batch = {"data": (np.arange(4 * 3072) % 256).astype(np.uint8).reshape(4, 3072), key: [0, 1, 2, 3]}
    (root / folder / file).write_bytes(pickle.dumps(batch, protocol=4))


# data -> (how to make it under a folder, input channels, classes, the header's radius)
DATASETS = {
    "bundled": (None, 1, 10, "L-inf eps = 0.1 (the Fashion-MNIST radius of the zoo)"),
    "fashion-mnist": (_mnist_files, 1, 10, "L-inf eps = 0.1 (the Fashion-MNIST radius of the zoo)"),
    "mnist": (_mnist_files, 1, 10, "L-inf eps = 0.3 (the MNIST standard)"),
    "cifar10": (lambda root: _cifar(root, "cifar-10-batches-py", "test_batch", "labels"), 3, 10,
                "L-inf eps = 0.0313725 (the CIFAR-10 standard 8/255)"),
    "cifar100": (lambda root: _cifar(root, "cifar-100-python", "test", "fine_labels"), 3, 100,
                 "L-inf eps = 0.0313725 (the CIFAR-100 standard 8/255)"),
    "imagenet": (lambda root: _jpeg(root / LAST / "a.JPEG", (300, 260)), 3, 1000,
                 "L-inf eps = 0.0156863 (the ImageNet standard 4/255)"),
}


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_each_datasets_standard_radius_is_the_default_and_shown(dataset, tmp_path, capsys):
    make, channels, classes, header = DATASETS[dataset]
    spec = dataset
    if make is not None:
        make(tmp_path / "data")
        spec = f"{dataset}:{tmp_path / 'data'}"
    argv = ["table2", "--model", _model_file(tmp_path, channels, classes), "--data", spec, "--attacks", "fgsm",
            "--n", "1", "--no-verify", "--out", str(tmp_path / "out"), "--name", "run", "--quiet"]
    assert main(argv) == 0
    assert header in capsys.readouterr().out
    assert header in (tmp_path / "out" / "run.md").read_text()


@pytest.mark.parametrize(("data", "specs", "expected"), [
    ("bundled", (), (0.1, "the Fashion-MNIST radius of the zoo")),
    ("fashion-mnist", (), (0.1, "the Fashion-MNIST radius of the zoo")),
    ("mnist:d", ("zoo:standard",), (0.3, "the MNIST standard")),
    ("cifar10:d", (), (8 / 255, "the CIFAR-10 standard 8/255")),
    ("cifar100:d", (), (8 / 255, "the CIFAR-100 standard 8/255")),
    ("imagenet:d", (), (4 / 255, "the ImageNet standard 4/255")),
    ("bundled", ("published:trades-mnist-smallcnn",), (0.3, "published:trades-mnist-smallcnn's own")),
    ("x.npz", ("published:trades-mnist-smallcnn",), (0.3, "published:trades-mnist-smallcnn's own")),
    ("cifar10:d", ("published:trades-mnist-smallcnn", "zoo:standard"), (8 / 255, "the CIFAR-10 standard 8/255")),
])
def test_default_radius_rules(data, specs, expected):
    assert cli._default_eps(data, specs) == expected


@pytest.mark.parametrize("data", ["x.npz", "x.pt", "x.pth", "imagefolder:d"])
def test_data_of_unknown_origin_needs_eps(data, tmp_path, capsys, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("loaded before --eps was asked for")

    monkeypatch.setattr("mifpe_plugins.data.load_data", no_loading)
    monkeypatch.setattr("mifpe_plugins.models.load_model", no_loading)
    assert dataset_of(data) is None
    line = _error(capsys, ["table2", "--data", data, "--attacks", "fgsm", "--quiet"])
    assert line == (f"mifpe table2: error: --data {data} needs --eps: its dataset, and so its standard radius, is "
                    "unknown; give the L-inf radius of your threat model, e.g. --eps 8/255 (CIFAR), --eps 0.3 (MNIST) "
                    "or --eps 4/255 (ImageNet)")


def test_an_unknown_data_spec_is_named_before_the_radius(capsys):
    with pytest.raises(ValueError, match="unknown data 'imagenet'; use .*`imagenet:DIR`, `imagefolder:DIR`"):
        dataset_of("imagenet")
    assert "unknown data 'nope'" in _error(capsys, ["table2", "--data", "nope", "--attacks", "fgsm", "--quiet"])


def test_image_folders_have_no_split(folder):
    with pytest.raises(ValueError, match="imagefolder:DIR reads the folder DIR, whatever split it holds"):
        load_data(f"imagefolder:{folder}", split="train")


def test_diagnose_materialises_the_first_images(folder, tmp_path, monkeypatch):
    seen = {}

    def fake_diagnose(model, inputs, labels, audit, *, header):
        seen.update(inputs=inputs, labels=labels, header=header)
        return {"verdict": "fine"}

    monkeypatch.setattr("mifpe_plugins.diagnose.diagnose", fake_diagnose)
    monkeypatch.setattr("mifpe_plugins.diagnose.write_diagnosis", lambda report, out: [])
    assert main(["diagnose", "--model", _model_file(tmp_path, 3, 3), "--data", f"imagefolder:{folder}", "--eps", "0.1",
                 "--quick", "--no-clever", "--n", "5", "--out", str(tmp_path / "audit"), "--quiet"]) == 0
    assert isinstance(seen["inputs"], torch.Tensor) and seen["inputs"].shape == (5, 3, 6, 8)
    assert seen["labels"].tolist() == [0, 1, 2, 0, 2] and seen["header"]["eps_source"] == "set by --eps"
