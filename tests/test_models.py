"""Model specifications: zoo names, TorchScript and state-dict files, RobustBench checkpoints."""

import importlib
import sys

import pytest
import torch

from mifpe_plugins import zoo
from mifpe_plugins.data import file_digest
from mifpe_plugins.models import load_model


@pytest.fixture
def inputs():
    return torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def test_zoo_spec_is_the_zoo_model(inputs):
    loaded = load_model("zoo:large-margin")
    assert not loaded.model.training and loaded.source["kind"] == "zoo"
    torch.testing.assert_close(loaded.model(inputs), zoo.load("large-margin")(inputs), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown zoo model 'resnet'; known: binarized"):
        load_model("zoo:resnet")


@pytest.mark.parametrize("architecture", sorted(zoo.ARCHITECTURES))
def test_state_dict_file_with_architecture(architecture, tmp_path, inputs):
    torch.manual_seed(1)
    original = zoo.build(architecture).eval()
    path = tmp_path / "weights.pt"
    # the wrapped, DataParallel-prefixed layout many training scripts write
    torch.save({"state_dict": {f"module.{k}": v for k, v in original.state_dict().items()}}, path)
    loaded = load_model(str(path), architecture=architecture, dtype=torch.float64)
    assert loaded.source == {"kind": "state_dict", "path": str(path), "sha256": file_digest(path), "architecture": architecture}
    assert not loaded.model.training
    torch.testing.assert_close(loaded.model(inputs.double()), original.double()(inputs.double()))


def test_state_dict_errors(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(zoo.SmallCNN().state_dict(), path)
    with pytest.raises(ValueError, match="needs an architecture: pass architecture= \\(--arch\\) one of"):
        load_model(str(path))
    with pytest.raises(ValueError, match="does not match the binary-smallcnn architecture"):
        load_model(str(path), architecture="binary-smallcnn")
    with pytest.raises(ValueError, match="unknown architecture 'vgg'; known: "):
        load_model(str(path), architecture="vgg")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "missing.pt"))


def test_torchscript_file(tmp_path, inputs):
    original = zoo.load("standard")
    path = tmp_path / "model.ts"
    torch.jit.trace(original, inputs).save(str(path))
    loaded = load_model(str(path))
    assert loaded.source["kind"] == "torchscript"
    torch.testing.assert_close(loaded.model(inputs), original(inputs))


def test_damaged_model_files_are_one_clear_error(tmp_path, inputs):
    traced = tmp_path / "model.ts"
    torch.jit.trace(zoo.load("standard"), inputs).save(str(traced))
    (tmp_path / "cut.ts").write_bytes(traced.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"cannot read .*cut.ts: it is empty, truncated, corrupt or in another format; "
                                         r"expected a TorchScript archive \(torch.jit.save\)$"):
        load_model(str(tmp_path / "cut.ts"))
    weights = tmp_path / "weights.pt"
    torch.save(zoo.SmallCNN().state_dict(), weights)
    (tmp_path / "cut.pt").write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"cannot read .*cut.pt: .*; expected a state dict saved with torch.save"):
        load_model(str(tmp_path / "cut.pt"), architecture="smallcnn")
    torch.save(zoo.SmallCNN(), tmp_path / "module.pt")  # a pickled module, not a state dict
    with pytest.raises(ValueError, match=r"it pickles a mifpe_plugins.zoo.SmallCNN object, and only tensors are loaded"):
        load_model(str(tmp_path / "module.pt"), architecture="smallcnn")


@pytest.fixture
def robustbench(monkeypatch):
    """robustbench, importable offline.

    PyPI's robustbench 1.1.1 imports upstream AutoAttack's module ``autoattack`` (installable
    only from git) in ``robustbench.eval``; PyPI's AutoAttack is ``pyautoattack`` with the same
    modules, so it stands in under that name while robustbench is imported.
    """
    if "robustbench" not in sys.modules:
        monkeypatch.setitem(sys.modules, "autoattack", importlib.import_module("pyautoattack"))
        monkeypatch.setitem(sys.modules, "autoattack.state", importlib.import_module("pyautoattack.state"))
        importlib.import_module("robustbench")
        monkeypatch.delitem(sys.modules, "autoattack")
        monkeypatch.delitem(sys.modules, "autoattack.state")
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return model_dicts[BenchmarkDataset("cifar10")][ThreatModel("Linf")]


def test_robustbench_checkpoint_offline(robustbench, tmp_path):
    # Wong2020Fast (Fast-AT, PreAct ResNet-18): a checkpoint in RobustBench's own layout, written
    # here; RobustBench must load it without any download.
    torch.manual_seed(0)
    original = robustbench["Wong2020Fast"]["model"]().eval()
    target = tmp_path / "cifar10" / "Linf"
    target.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in original.state_dict().items()}}, target / "Wong2020Fast.pt")
    loaded = load_model("robustbench:Wong2020Fast", model_dir=tmp_path)
    assert loaded.source["kind"] == "robustbench" and loaded.source["checkpoint"] == str(target / "Wong2020Fast.pt")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), original(x))


def test_robustbench_errors(robustbench, tmp_path):
    with pytest.raises(FileNotFoundError, match="Wong2020Fast.pt is missing and downloading is off"):
        load_model("robustbench:Wong2020Fast", model_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown RobustBench model 'Nobody2030' for cifar10/Linf"):
        load_model("robustbench:Nobody2030", model_dir=tmp_path)
    with pytest.raises(ValueError, match="threat_model must be one of Linf, L2, corruptions"):
        load_model("robustbench:Wong2020Fast", model_dir=tmp_path, threat_model="linf")
    target = tmp_path / "cifar10" / "Linf"
    target.mkdir(parents=True)
    torch.save({"state_dict": zoo.SmallCNN().state_dict()}, target / "Wong2020Fast.pt")
    with pytest.raises(ValueError, match="does not match RobustBench's Wong2020Fast architecture"):
        load_model("robustbench:Wong2020Fast", model_dir=tmp_path)
