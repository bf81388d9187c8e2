"""The user's own model, in one flag: package.module:factory with --weights, torch.export .pt2
archives, timm:<name> and --normalize, through `mifpe table2` end to end on tiny models."""

import csv
import importlib
import importlib.util
import json
import re
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from mifpe_plugins import pgd
from mifpe_plugins.attacks._common import in_training_mode, model_state_kept
from mifpe_plugins.cli import main
from mifpe_plugins.data import file_digest
from mifpe_plugins.models import load_model, spec_kind
from mifpe_plugins.tables import Evaluation, table2
from mifpe_plugins.user_models import Normalized

# A small CNN with BatchNorm (running statistics set away from 0 and 1) and Dropout: in train
# mode it would give other logits, and random ones.
NETS = '''
import sys

import torch
from torch import nn

MEAN, STD = {mean!r}, {std!r}


class Net(nn.Module):
    def __init__(self, channels=1):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.head(self.drop(self.features(x).flatten(1)))


class Folded(nn.Module):
    """Net with the normalisation in its forward."""

    def __init__(self):
        super().__init__()
        self.net = Net(channels=len(MEAN))

    def forward(self, x):
        mean, std = torch.tensor(MEAN).view(1, -1, 1, 1), torch.tensor(STD).view(1, -1, 1, 1)
        return self.net((x - mean) / std)


def build():
    return Net()


def build_rgb():
    return Net(channels=len(MEAN))


instance = Net()
VALUE = 3


def returns_int():
    return 3


def needs_classes(classes):
    return Net()
'''
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def nets(tmp_path, monkeypatch):
    """A factory module written into tmp_path (its name unique to the test), importable."""
    name = "usernets_" + re.sub(r"\W", "_", tmp_path.name)
    (tmp_path / f"{name}.py").write_text(NETS.format(mean=MEAN, std=STD))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module(name)
    yield name
    sys.modules.pop(name, None)


def _trained(module, factory: str = "build") -> nn.Module:
    """The factory's model with fixed, non-trivial weights and BatchNorm statistics, in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = getattr(sys.modules[module], factory)()
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _data(tmp_path, model: nn.Module, channels: int = 1, n: int = 8) -> str:
    """n inputs in [0, 1], labelled by the model (clean accuracy 100 %), as an .npz file."""
    x = torch.rand(n, channels, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    path = tmp_path / f"data{channels}.npz"
    np.savez(path, x=x.numpy(), y=y.numpy())
    return str(path)


def _export(model: nn.Module, path, channels: int = 1, **options) -> str:
    x = torch.rand(2, channels, 8, 8)
    options.setdefault("dynamic_shapes", ({0: torch.export.Dim("batch")},))
    torch.export.save(torch.export.export(model, (x,), **options), str(path))
    return str(path)


def _table2(tmp_path, model: str, data: str, name: str, *options: str) -> dict:
    argv = ["table2", "--model", model, "--data", data, "--attacks", "fgsm,pgd", "--steps", "2", "--n", "8",
            "--eps", "0.1", "--out", str(tmp_path), "--name", name, "--quiet", *options]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the train-mode warning among others
        assert main(argv) == 0
    return json.loads((tmp_path / f"{name}.json").read_text())


def _samples(tmp_path, name: str) -> list[dict]:
    """The per-sample rows without the model column (it names the spec)."""
    with open(tmp_path / f"{name}.samples.csv") as handle:
        return [{k: v for k, v in row.items() if k != "model"} for row in csv.DictReader(handle)]


def _robust(report: dict) -> list:
    return [(row["attack"], row["original"]["robust_accuracy"], row["mifpe"]["robust_accuracy"]) for row in report["rows"]]


def _plain(tmp_path, model: nn.Module, data: str, name: str) -> None:
    """The reference: the model object itself through the Python API, with the command's settings."""
    arrays = np.load(data)
    evaluation = Evaluation(model, torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"]).long(), eps=0.1,
                            steps=2, seed=0, show_progress=False)
    table2(evaluation, attacks=("fgsm", "pgd"), out=tmp_path, name=name)


# ----------------------------------------------------------------------------------------------
# One set of weights, four ways in: the same numbers
# ----------------------------------------------------------------------------------------------


def test_factory_export_and_plain_module_agree(nets, tmp_path):
    model = _trained(nets)
    data = _data(tmp_path, model)
    weights = tmp_path / "weights.pt"
    # the wrapped, DataParallel-prefixed layout many training scripts write
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, weights)
    sys.modules[nets].instance.load_state_dict(model.state_dict())
    archive = _export(model, tmp_path / "model.pt2")

    by_factory = _table2(tmp_path, f"{nets}:build", data, "factory", "--weights", str(weights))
    by_instance = _table2(tmp_path, f"{nets}:instance", data, "instance")
    by_export = _table2(tmp_path, archive, data, "export")
    _plain(tmp_path, model, data, "plain")

    reference = _samples(tmp_path, "plain")
    assert 0 < float(by_factory["rows"][0]["original"]["robust_accuracy"]) < 100  # the attacks do something
    for name, report in (("factory", by_factory), ("instance", by_instance), ("export", by_export)):
        assert _samples(tmp_path, name) == reference, name
        assert _robust(report) == _robust(by_factory)
    assert by_factory["model_source"] == {
        "kind": "factory", "spec": f"{nets}:build", "module_file": str(tmp_path / f"{nets}.py"),
        "weights": str(weights), "weights_sha256": file_digest(weights)}
    assert by_instance["model_source"]["kind"] == "factory" and "weights" not in by_instance["model_source"]
    assert by_export["model_source"] == {"kind": "torch.export", "path": archive, "sha256": file_digest(tmp_path / "model.pt2")}


def test_factory_from_the_current_folder_leaves_sys_path_alone(tmp_path, monkeypatch):
    # the `mifpe` console script does not put the current folder on sys.path; the factory is found there
    name = "cwdnets_" + re.sub(r"\W", "_", tmp_path.name)
    (tmp_path / f"{name}.py").write_text(NETS.format(mean=MEAN, std=STD))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = list(sys.path)
    try:
        loaded = load_model(f"{name}:build", dtype=torch.float64)
    finally:
        sys.modules.pop(name, None)
    assert sys.path == before
    assert not in_training_mode(loaded.model) and next(loaded.model.parameters()).dtype == torch.float64


def test_spec_kinds_are_unambiguous():
    assert [spec_kind(s) for s in ("zoo:standard", "published:x", "robustbench:x", "timm:resnet18", "a.b:c", "a:C.build",
                                   "runs/ckpt:v1.pt", "model.pt2", "b.ts", "a.b", "a:b:c", "a-b:c", "C:\\m.pth")] == [
        "zoo", "published", "robustbench", "timm", "factory", "factory", "file", "file", "file", "unknown", "unknown",
        "unknown", "file"]


# ----------------------------------------------------------------------------------------------
# torch.export archives: gradients through the graph, and an honest mode
# ----------------------------------------------------------------------------------------------


def test_exported_module_is_in_eval_mode_and_keeps_it(nets, tmp_path):
    model = _trained(nets)
    loaded = load_model(_export(model, tmp_path / "model.pt2"))
    exported = loaded.model
    # torch's unlifted module says training=True and refuses eval(): here the flags say eval
    assert not in_training_mode(exported)
    assert exported.eval() is exported and exported.train(False) is exported and not in_training_mode(exported)
    with pytest.raises(NotImplementedError, match="exported in eval mode: it has no train mode"):
        exported.train()
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    labels = model(x).argmax(1)
    torch.testing.assert_close(exported(x), model(x), rtol=0, atol=0)
    # gradients w.r.t. the inputs flow through the graph; the attack warns of nothing, changes nothing
    x.requires_grad_(True)
    (gradient,) = torch.autograd.grad(exported(x).logsumexp(1).sum(), x)
    assert gradient.abs().sum() > 0
    with warnings.catch_warnings(), model_state_kept(exported):
        warnings.simplefilter("error", UserWarning)
        adversarial = pgd(exported, x.detach(), labels, eps=0.1, steps=3, loss="mifpe")
    assert not in_training_mode(exported)
    torch.testing.assert_close(adversarial, pgd(model, x.detach(), labels, eps=0.1, steps=3, loss="mifpe"), rtol=0, atol=0)
    # the dtype follows the run's
    assert load_model(str(tmp_path / "model.pt2"), dtype=torch.float64).model(x.detach().double()).dtype == torch.float64


# ----------------------------------------------------------------------------------------------
# timm:<name>
# ----------------------------------------------------------------------------------------------


def test_timm_model_with_its_weights(tmp_path):
    timm = pytest.importorskip("timm")
    name = "test_efficientnet" if "test_efficientnet" in timm.list_models("test_efficientnet") else "resnet10t"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False, num_classes=3, in_chans=1).eval()
    weights = tmp_path / "weights.pt"
    torch.save(model.state_dict(), weights)
    data = _data(tmp_path, model)
    report = _table2(tmp_path, f"timm:{name}", data, "by-timm", "--weights", str(weights))
    _plain(tmp_path, model, data, "plain")
    assert _samples(tmp_path, "by-timm") == _samples(tmp_path, "plain")
    assert report["model_source"] == {
        "kind": "timm", "spec": f"timm:{name}", "name": name, "timm": timm.__version__, "num_classes": 3, "in_chans": 1,
        "weights": str(weights), "weights_sha256": file_digest(weights)}


# ----------------------------------------------------------------------------------------------
# --normalize
# ----------------------------------------------------------------------------------------------


def test_normalize_equals_the_normalisation_folded_in(nets, tmp_path):
    inner = _trained(nets, "build_rgb")
    folded = sys.modules[nets].Folded().eval()
    folded.net.load_state_dict(inner.state_dict())
    data = _data(tmp_path, folded, channels=3)
    weights = tmp_path / "rgb.pt"
    torch.save(inner.state_dict(), weights)
    mean, std = ",".join(map(str, MEAN)), ",".join(map(str, STD))

    wrapped = _table2(tmp_path, f"{nets}:build_rgb", data, "wrapped", "--weights", str(weights), "--normalize", mean, std,
                      "--save-adversarial")
    _plain(tmp_path, folded, data, "folded")
    assert _samples(tmp_path, "wrapped") == _samples(tmp_path, "folded")
    assert wrapped["model_source"]["normalize"] == {"mean": list(MEAN), "std": list(STD)}
    for adversarial in (tmp_path / "wrapped.adversarial").glob("*.npy"):  # pixel space, not normalised space
        values = np.load(adversarial)
        assert values.min() >= 0 and values.max() <= 1


def test_normalized_keeps_the_wrapped_mode_visible(nets):
    model = _trained(nets).train()
    wrapped = Normalized(model, [0.5], [0.25])
    assert in_training_mode(wrapped)  # the wrapper's own flag is True too, but the child's is what counts
    wrapped.training = False
    assert in_training_mode(wrapped)
    model.eval()
    assert not in_training_mode(wrapped)
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(wrapped(x), model((x - 0.5) / 0.25))


# ----------------------------------------------------------------------------------------------
# Errors: one line after the usage, exit status 2, nothing run
# ----------------------------------------------------------------------------------------------


def _error(capsys, argv: list[str]) -> str:
    """Run the command, expect exit status 2, return the one error line (after the usage)."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: mifpe {argv[0]}"), err
    assert "Traceback" not in err
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith(f"mifpe {argv[0]}: error: "), err
    return last


@pytest.fixture
def run(nets, tmp_path, capsys):
    """table2 on the nets' data, expecting an error: returns its line."""
    data = _data(tmp_path, _trained(nets))

    def error(model: str, *options: str) -> str:
        return _error(capsys, ["table2", "--model", model, "--data", data, "--attacks", "fgsm", "--n", "4", "--eps", "0.1",
                               "--quiet", *options])

    return error


def test_factory_errors(run, nets, tmp_path):
    assert "no module named 'no_such_module_xyz' in the current folder" in run("no_such_module_xyz:build")
    assert f"(write {nets}, the module's name, not its file's)" in run(f"{nets}.py:build")
    (tmp_path / "broken_on_import.py").write_text("import no_such_dependency_xyz\n")
    assert ("model broken_on_import:build: importing broken_on_import failed (ModuleNotFoundError: No module named "
            "'no_such_dependency_xyz')" in run("broken_on_import:build"))
    (tmp_path / "script_like.py").write_text("import sys\n\nif __name__ != '__main__':\n    sys.exit(2)\n")
    try:
        assert "importing script_like failed (it called sys.exit(2): a script that parses" in run("script_like:build")
    finally:
        for name in ("broken_on_import", "script_like"):
            sys.modules.pop(name, None)
    assert f"model {nets}:nothing: {nets} ({tmp_path / nets}.py) has no attribute 'nothing'; name a" in run(f"{nets}:nothing")
    assert f"{nets}.Net has no attribute 'nothing'" in run(f"{nets}:Net.nothing")
    assert "VALUE is not callable (an object of type int)" in run(f"{nets}:VALUE")
    assert "returns_int() returned an object of type int, not a torch.nn.Module" in run(f"{nets}:returns_int")
    assert ("calling needs_classes() (with no arguments) failed (TypeError: needs_classes() missing 1 required "
            "positional argument: 'classes')" in run(f"{nets}:needs_classes"))
    assert "unknown model 'no-such:model': use zoo:<name>" in run("no-such:model")


def test_weights_errors(run, nets, tmp_path):
    good = _trained(nets).state_dict()
    missing, unexpected, shape = tmp_path / "missing.pt", tmp_path / "unexpected.pt", tmp_path / "shape.pt"
    torch.save({k: v for k, v in good.items() if not k.startswith("head.")}, missing)
    torch.save({**good, "extra.weight": torch.zeros(1)}, unexpected)
    torch.save({**good, "head.weight": torch.zeros(5, 64), "head.bias": torch.zeros(5)}, shape)
    spec = f"{nets}:build"
    assert (f"weights file {missing} does not fit model {spec}: missing head.weight, head.bias (7 tensors in the "
            "file, 9 in the model)" in run(spec, "--weights", str(missing)))
    assert "unexpected extra.weight (10 tensors" in run(spec, "--weights", str(unexpected))
    assert "head.weight is (5, 64) in the file, (3, 64) in the model" in run(spec, "--weights", str(shape))
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    assert f"cannot read {tmp_path / 'garbage.pt'}: it is empty, truncated" in run(spec, "--weights", str(tmp_path / "garbage.pt"))
    torch.save({"epoch": 3, "net": good}, tmp_path / "nested.pt")
    assert "holds a dict with keys epoch, net, not a state dict" in run(spec, "--weights", str(tmp_path / "nested.pt"))
    assert "--weights nowhere.pt is not a file" in run(spec, "--weights", "nowhere.pt")
    assert "--weights goes with a package.module:factory or timm:<name> model, and zoo:standard is none" in run(
        "zoo:standard", "--weights", str(missing))


def test_two_models_taking_weights_are_refused(nets, tmp_path, capsys):
    torch.save(_trained(nets).state_dict(), tmp_path / "w.pt")
    line = _error(capsys, ["table1", "--models", f"{nets}:build,{nets}:Net", "--weights", str(tmp_path / "w.pt"),
                           "--no-autoattack", "--eps", "0.1"])
    assert f"--weights goes with one model, but 2 listed take weights ({nets}:build, {nets}:Net)" in line


def test_timm_errors(run, monkeypatch, tmp_path):
    assert "timm:resnet18 needs --weights FILE: timm builds it with random weights" in run("timm:resnet18")
    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pt")
    if "timm" in sys.modules or _importable("timm"):
        assert "unknown timm model 'no_such_net_xyz'" in run("timm:no_such_net_xyz", "--weights", str(tmp_path / "w.pt"))
    monkeypatch.setitem(sys.modules, "timm", None)  # as if it were not installed
    assert "`timm:` models need the timm package: pip install timm" in run("timm:resnet18", "--weights", str(tmp_path / "w.pt"))


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def test_export_errors(run, nets, tmp_path):
    model = _trained(nets)
    fixed = _export(model, tmp_path / "fixed.pt2", dynamic_shapes=None)
    assert f"{fixed} was exported with a fixed batch size of 2" in run(fixed)
    training = _export(model.train(), tmp_path / "training.pt2")
    assert f"{training} was exported in training mode (aten.batch_norm.default, aten.dropout.default with train=True)" in run(training)
    (tmp_path / "garbage.pt2").write_bytes(b"not an archive")
    assert f"cannot read {tmp_path / 'garbage.pt2'}" in run(str(tmp_path / "garbage.pt2"))
    assert "model file missing.pt2 does not exist" in run("missing.pt2")
    assert "--weights goes with" in run(fixed, "--weights", fixed)


def test_normalize_errors(run, nets, tmp_path):
    assert "needs one mean and one std per channel, got 2 means and 1 stds" in run(f"{nets}:instance", "--normalize", "0.5,0.5", "0.5")
    assert "needs finite means and stds > 0" in run(f"{nets}:instance", "--normalize", "0.5", "0")
    assert "argument --normalize: must be comma-separated numbers" in run(f"{nets}:instance", "--normalize", "0.5,x", "1,1")
    line = run(f"{nets}:instance", "--normalize", ",".join(map(str, MEAN)), ",".join(map(str, STD)))
    assert "cannot take the data's inputs" in line and "gives 3 means and stds, but the inputs of shape (1, 1, 8, 8) have 1 channels" in line
