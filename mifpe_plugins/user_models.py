"""The user's own model: a factory with a state dict, a ``torch.export`` archive, a timm model, and
the normalisation a model expects.

``package.module:factory``
    A function or class (``module:qualname``, the entry-point syntax of Python packaging) that is
    called with no arguments and returns the ``torch.nn.Module``; the module is imported from the
    current folder or ``sys.path``. Optionally a state dict (``weights``) is loaded into it.
``timm:<name>``
    ``timm.create_model(name, pretrained=False)`` (nothing is downloaded) with the number of
    classes and input channels read from the state dict ``weights``, which is required.
``<path>.pt2``
    A ``torch.export`` archive (``torch.export.save``), run as it was exported: its graph fixes the
    mode, so it must have been exported in eval mode, with a dynamic batch dimension.

A ``.pt2`` archive, like a TorchScript file, can hold pickled objects: load only files you trust.
State dicts are read with ``torch.load(..., weights_only=True)``, which builds tensors only.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import sys
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

from .data import _unreadable, file_digest

__all__ = [
    "ExportedModule", "Normalized", "check_normalization", "is_factory_spec", "load_exported", "load_factory",
    "load_timm", "load_weights", "read_state_dict", "require_timm", "weights_source",
]

# Keys under which training scripts commonly nest the state dict, and prefixes their wrappers add
# (torch.nn.DataParallel / DistributedDataParallel: "module.", torch.compile: "_orig_mod.").
_NESTED_KEYS = ("state_dict", "model_state_dict", "model")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_STATE_DICT = "a state dict saved with torch.save(model.state_dict(), path)"


# ----------------------------------------------------------------------------------------------
# State dicts
# ----------------------------------------------------------------------------------------------


def weights_source(path: str | Path) -> dict:
    """What a report records about a weights file: its path and sha256."""
    return {"weights": str(path), "weights_sha256": file_digest(Path(path))}


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state dict in ``path``, read with ``torch.load(..., weights_only=True)``.

    Parameters
    ----------
    path : str or Path
        A file written by ``torch.save(model.state_dict(), path)``, or holding the state dict under
        ``"state_dict"``, ``"model_state_dict"`` or ``"model"`` (as training scripts save them).

    Returns
    -------
    dict
        Parameter and buffer names to tensors, on the CPU, prefixes still in place.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a damaged or non-tensor file
        raise _unreadable(path, _STATE_DICT, error) from None
    if isinstance(state, dict):
        state = next((state[key] for key in _NESTED_KEYS if isinstance(state.get(key), dict)), state)
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        held = (f"a dict with keys {_few(map(str, state))}" if isinstance(state, dict) and state
                else f"an empty {type(state).__name__}" if isinstance(state, dict) else f"a {type(state).__name__}")
        raise ValueError(f"weights file {path} holds {held}, not a state dict (names to tensors); expected "
                         f"{_STATE_DICT}, or one under {', '.join(map(repr, _NESTED_KEYS))}")
    return state


def _without_wrapper_prefixes(state: dict[str, Tensor], expected: Iterable[str]) -> dict[str, Tensor]:
    """``state`` with the prefixes of DataParallel and torch.compile removed, when every key has one
    and the model's own keys do not."""
    expected = list(expected)
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state) and not all(k.startswith(prefix) for k in expected):
                state, changed = {k.removeprefix(prefix): v for k, v in state.items()}, True
    return state


def _few(keys: Iterable[str], shown: int = 3) -> str:
    keys = list(keys)
    more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def _mismatches(state: dict[str, Tensor], model: nn.Module) -> list[str]:
    """What keeps ``state`` from loading into ``model``: missing and unexpected keys, other shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} is {tuple(v.shape)} in the file, {tuple(own[k].shape)} in the model"
              for k, v in state.items() if k in own and v.shape != own[k].shape]
    problems = [f"missing {_few(missing)}"] if missing else []
    problems += [f"unexpected {_few(unexpected)}"] if unexpected else []
    return problems + ([f"{_few(shapes, 2)}"] if shapes else [])


def load_weights(model: nn.Module, state: dict[str, Tensor], *, path: str | Path, spec: str) -> nn.Module:
    """Load ``state`` (read from ``path`` by :func:`read_state_dict`) into ``model``, every key required.

    Parameters
    ----------
    model : nn.Module
        The freshly built model; its parameters are overwritten in place.
    state : dict
        The state dict; DataParallel's ``module.`` and torch.compile's ``_orig_mod.`` prefixes are removed.
    path, spec : str
        The file and the model specification, named by the error when the keys or shapes differ.

    Returns
    -------
    nn.Module
        ``model``.
    """
    state = _without_wrapper_prefixes(state, model.state_dict())
    problems = _mismatches(state, model)
    if problems:
        raise ValueError(f"weights file {path} does not fit model {spec}: {'; '.join(problems)} "
                         f"({len(state)} tensors in the file, {len(model.state_dict())} in the model)")
    model.load_state_dict(state)
    return model


# ----------------------------------------------------------------------------------------------
# package.module:factory
# ----------------------------------------------------------------------------------------------


def is_factory_spec(spec: str) -> bool:
    """Whether ``spec`` reads ``package.module:qualname``: dotted Python identifiers either side
    of one colon. (The caller checks the reserved prefixes and model-file suffixes first.)"""
    module, colon, qualname = spec.partition(":")
    return bool(colon) and all(part.isidentifier() for part in (*module.split("."), *qualname.split(".")))


@contextmanager
def _current_folder_importable() -> Iterator[None]:
    # The `mifpe` console script, unlike `python -m`, does not put the current folder on sys.path.
    folder = os.getcwd()
    added = folder not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


def _import(name: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and (name == error.name or name.startswith(f"{error.name}.")):
            hint = f" (write {name.removesuffix('.py')}, the module's name, not its file's)" if name.endswith(".py") else ""
            raise ImportError(f"model {spec}: no module named {error.name!r} in the current folder ({os.getcwd()}) "
                              f"or on sys.path{hint}; package.module:factory names an importable module and a function "
                              "or class in it that returns the torch.nn.Module") from None
        raise ImportError(f"model {spec}: importing {name} failed ({type(error).__name__}: {_first_line(error)})") from None
    except (Exception, SystemExit) as error:  # the user's module runs at import: anything can happen
        why = (f"it called sys.exit({error.code}): a script that parses its command line on import?"
               if isinstance(error, SystemExit) else f"{type(error).__name__}: {_first_line(error)}")
        raise ImportError(f"model {spec}: importing {name} failed ({why})") from None


def _first_line(error: BaseException) -> str:
    # reports.one_line strips quotes, which would cut "No module named 'x'" short
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def _attribute(module: ModuleType, qualname: str, spec: str) -> object:
    target: object = module
    for depth, part in enumerate(qualname.split(".")):
        if not hasattr(target, part):
            where = module.__name__ + "".join(f".{p}" for p in qualname.split(".")[:depth])
            found = getattr(module, "__file__", None)
            raise ValueError(f"model {spec}: {where}{f' ({found})' if found and depth == 0 else ''} has no attribute "
                             f"{part!r}; name a function or class in it")
        target = getattr(target, part)
    return target


def _build(target: object, qualname: str, spec: str) -> nn.Module:
    if isinstance(target, nn.Module):  # a module-level instance: used as it is
        return target
    if not callable(target):
        raise ValueError(f"model {spec}: {qualname} is not callable (an object of type {type(target).__name__}); name a "
                         "function or class that returns the torch.nn.Module")
    try:
        model = target()
    except Exception as error:  # the user's code: anything can happen
        raise ValueError(f"model {spec}: calling {qualname}() (with no arguments) failed ({type(error).__name__}: "
                         f"{_first_line(error)})") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {spec}: {qualname}() returned an object of type {type(model).__name__}, not a "
                         "torch.nn.Module")
    return model


def load_factory(spec: str, weights: str | Path | None = None) -> tuple[nn.Module, dict]:
    """The model built by ``package.module:factory``, with the state dict ``weights`` if given.

    Parameters
    ----------
    spec : str
        ``module:qualname``: the module is imported (from the current folder or ``sys.path``) and
        ``qualname`` called with no arguments; a module-level ``nn.Module`` instance is used as it is.
    weights : str or Path, optional
        A state dict for the model (see :func:`read_state_dict`); without it the factory's own
        parameters are evaluated.

    Returns
    -------
    (nn.Module, dict)
        The model and its source: kind, spec, the module's file and the weights file with its sha256.
    """
    name, _, qualname = spec.partition(":")
    state = read_state_dict(weights) if weights is not None else None  # a bad file fails before user code runs
    with _current_folder_importable():
        module = _import(name, spec)
        model = _build(_attribute(module, qualname, spec), qualname, spec)
    source = {"kind": "factory", "spec": spec, "module_file": getattr(module, "__file__", None)}
    if state is not None:
        load_weights(model, state, path=weights, spec=spec)
        source.update(weights_source(weights))
    return model, source


# ----------------------------------------------------------------------------------------------
# timm:<name>
# ----------------------------------------------------------------------------------------------


def require_timm() -> ModuleType:
    """The timm module, or an ImportError naming the install command."""
    try:
        import timm
    except ImportError:
        raise ImportError("`timm:` models need the timm package: pip install timm (or pip install -e \".[timm]\" in "
                          "a checkout of mifpe_plugins)") from None
    return timm


def _create_timm(timm: ModuleType, name: str, **shape: int) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=False, **shape)
    except RuntimeError as error:
        if "nknown model" not in str(error):
            raise
        raise ValueError(f"unknown timm model {name!r} (timm {timm.__version__}); list the names with "
                         "python -c \"import timm; print(timm.list_models('resnet*'))\"") from None


def _timm_shape(model: nn.Module, state: dict[str, Tensor]) -> dict[str, int]:
    """The number of classes and input channels of the weights in ``state``, read from the tensors
    that timm's configuration names as the classifier and the first convolution."""
    config = getattr(model, "pretrained_cfg", None) or {}
    shape = {}
    for option, layer, axis in (("num_classes", config.get("classifier"), 0), ("in_chans", config.get("first_conv"), 1)):
        tensor = state.get(f"{layer}.weight") if isinstance(layer, str) else None
        if tensor is not None and tensor.dim() > axis:
            shape[option] = int(tensor.shape[axis])
    return shape


def load_timm(name: str, weights: str | Path | None) -> tuple[nn.Module, dict]:
    """``timm.create_model(name, pretrained=False)`` with the state dict ``weights`` loaded.

    Parameters
    ----------
    name : str
        A timm model name (``timm.list_models()``), optionally with a tag (``resnet18.a1_in1k``).
    weights : str or Path
        The model's state dict; required, since a timm model built without pretrained weights has
        random ones. Its classifier and first convolution give ``num_classes`` and ``in_chans``.

    Returns
    -------
    (nn.Module, dict)
        The model and its source: kind, name, timm's version, classes, input channels, the weights
        file and its sha256.
    """
    spec = f"timm:{name}"
    if weights is None:
        raise ValueError(f"model {spec} needs weights (--weights FILE, weights=): timm builds it with random weights "
                         "(pretrained=False; nothing is downloaded), and the robustness of an untrained network means "
                         "nothing")
    timm = require_timm()
    state = read_state_dict(weights)
    model = _create_timm(timm, name)
    state = _without_wrapper_prefixes(state, model.state_dict())
    shape = _timm_shape(model, state)
    if shape != _timm_shape(model, model.state_dict()):
        model = _create_timm(timm, name, **shape)
    load_weights(model, state, path=weights, spec=spec)
    return model, {"kind": "timm", "spec": spec, "name": name, "timm": timm.__version__, **shape, **weights_source(weights)}


# ----------------------------------------------------------------------------------------------
# torch.export archives (.pt2)
# ----------------------------------------------------------------------------------------------


class ExportedModule(nn.Module):
    """A ``torch.export`` program as an eval-mode module.

    An exported graph runs in the mode it was exported in, and torch's unlifted module refuses
    ``train()`` and ``eval()`` (``NotImplementedError``) while its ``training`` flags say True. Here
    the flags say what the graph does (eval, :func:`load_exported` checks it), ``eval()`` and
    ``train(False)`` keep them so, and ``train(True)`` is refused: the graph cannot train.
    """

    def __init__(self, program: nn.Module, path: str) -> None:
        super().__init__()
        self.program = program
        self.path = path
        for module in self.modules():
            module.training = False

    def forward(self, x: Tensor) -> Tensor:
        return self.program(x)

    def train(self, mode: bool = True) -> ExportedModule:
        if mode:
            raise NotImplementedError(f"{self.path} is a torch.export graph exported in eval mode: it has no train mode")
        for module in self.modules():
            module.training = False
        return self


def _training_ops(program: object) -> list[str]:
    """The graph's operators called in training mode (dropout, batch norm with batch statistics)."""
    found = []
    for node in program.graph.nodes:
        schema = getattr(node.target, "_schema", None) if node.op == "call_function" else None
        for position, argument in enumerate(schema.arguments if schema is not None else ()):
            if argument.name not in ("train", "training"):
                continue
            value = node.args[position] if position < len(node.args) else node.kwargs.get(argument.name)
            if value is True:
                found.append(str(node.target))
    return sorted(set(found))


def _check_program(program: object, path: Path) -> None:
    """One tensor input with a dynamic batch dimension, and no operator in training mode."""
    inputs = list(program.graph_signature.user_inputs)
    if len(inputs) != 1:
        raise ValueError(f"{path} takes {len(inputs)} inputs ({', '.join(inputs)}); the attacks call the model on one "
                         "batch of inputs")
    placeholder = next(node for node in program.graph.nodes if node.op == "placeholder" and node.name == inputs[0])
    value = placeholder.meta.get("val")
    if isinstance(value, Tensor) and value.dim() > 0 and isinstance(value.shape[0], int):
        raise ValueError(f"{path} was exported with a fixed batch size of {value.shape[0]}, and the attacks run batches "
                         "of any size: export it with dynamic_shapes=({0: torch.export.Dim('batch')},)")
    training = _training_ops(program)
    if training:
        raise ValueError(f"{path} was exported in training mode ({', '.join(training)} with train=True): export it "
                         "after model.eval()")


def _quietly_loaded(export: ModuleType, path: Path) -> object:
    """``torch.export.load(path)`` without the traceback torch logs when it falls back to its older
    format: a file that is neither is reported in one line by the caller."""
    if not zipfile.is_zipfile(path):
        raise ValueError("not a zip archive")
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return export.load(str(path))
    finally:
        logger.setLevel(level)


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """The program of a ``torch.export`` archive as an :class:`ExportedModule` on ``device``.

    Parameters
    ----------
    path : str or Path
        A file written by ``torch.export.save``; the program must take one input with a dynamic
        batch dimension and have been exported in eval mode.
    device : str or torch.device
        Where it runs (torch's ``move_to_device_pass`` also moves the graph's device constants).

    Returns
    -------
    (nn.Module, dict)
        The module and its source: kind, path and sha256.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    export = getattr(torch, "export", None)
    if export is None or not hasattr(export, "load"):
        raise ImportError(f".pt2 files need torch.export.load, which torch {torch.__version__} lacks: upgrade torch")
    try:
        program = _quietly_loaded(export, path)
    except Exception as error:  # the deserialiser raises many types for a damaged archive
        raise _unreadable(path, "a torch.export archive (torch.export.save)", error) from None
    _check_program(program, path)
    if torch.device(device).type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    module = ExportedModule(program.module(), str(path))
    return module, {"kind": "torch.export", "path": str(path), "sha256": file_digest(path)}


# ----------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------


class Normalized(nn.Module):
    """``model((x - mean) / std)`` per channel: a model trained on normalised inputs, attacked in
    [0, 1] pixel space (as RobustBench's models are). ``mean`` and ``std`` follow the inputs' dtype
    and device; the wrapped model is a submodule, so its mode shows in ``.modules()``.

    Parameters
    ----------
    model : nn.Module
        The model that expects normalised inputs.
    mean, std : sequence of float
        One value per channel (dimension 1 of the inputs); every ``std`` > 0.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        check_normalization(mean, std)
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float64))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.mean.numel():
            raise ValueError(f"normalize= (--normalize) gives {self.mean.numel()} means and stds, but the inputs of shape "
                             f"{tuple(x.shape)} have {x.shape[1] if x.dim() > 1 else 'no'} channels (dimension 1): give "
                             "one per channel")
        shape = (1, -1, *([1] * (x.dim() - 2)))
        return self.model((x - self.mean.to(x).view(shape)) / self.std.to(x).view(shape))

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"


def check_normalization(mean: Sequence[float], std: Sequence[float]) -> None:
    """Raise a ValueError unless ``mean`` and ``std`` are as many finite values, at least one, std > 0."""
    if len(mean) == 0 or len(mean) != len(std):
        raise ValueError(f"normalize= (--normalize) needs one mean and one std per channel, got {len(mean)} means and "
                         f"{len(std)} stds")
    if not all(math.isfinite(v) for v in (*mean, *std)) or min(std) <= 0:
        raise ValueError(f"normalize= (--normalize) needs finite means and stds > 0, got mean {list(mean)} and std "
                         f"{list(std)}")
