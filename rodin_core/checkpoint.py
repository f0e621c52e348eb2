"""Training checkpoints without pickle: safetensors tensors + a JSON description (docs/data-contracts.md).

A checkpoint is the unit of resume of every training stage (paper §3.2, §3.3, appendix B.1, B.4).
It is a folder of three files:

- ``model.safetensors``: every module's ``state_dict`` under ``<module>.<key>`` (``model.``,
  ``ema.``, ``encoder.``, ...) and the caller's ``extra_tensors`` under ``extra.<name>`` (e.g. the
  plane statistics, RNG states);
- ``optimizer.safetensors``: every tensor of every optimizer's ``state_dict`` (Adam moments, steps);
- ``checkpoint.json``, written last (the folder is complete once it exists): format version,
  step, config, metrics, and each optimizer's non-tensor state and ``param_groups`` with its
  tensors replaced by references into ``optimizer.safetensors``.

:meth:`Checkpoint.restore` checks keys and shapes strictly and raises
:class:`CheckpointMismatchError` listing every missing, unexpected and mis-shaped entry.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn
from torch.optim import Optimizer

CHECKPOINT_FORMAT_VERSION = 2
"""Version of ``checkpoint.json``; 2: the stage config nests the network, diffusion and train configs."""
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
CHECKPOINT_JSON = "checkpoint.json"
CHECKPOINT_FILES = (MODEL_FILE, OPTIMIZER_FILE, CHECKPOINT_JSON)
"""The files of a checkpoint, in the order they are written (the JSON last: the commit point)."""
EXTRA = "extra"
"""Namespace of ``extra_tensors`` in ``model.safetensors``; no module may be named so."""
_TENSOR_REF = "__tensor__"
_TUPLE = "__tuple__"


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel``/``DataParallel`` wrapper (or the model itself)."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or of another format; the message says what to do."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's keys or shapes do not match the modules/optimizers it is restored into."""

    def __init__(self, missing: list[str], unexpected: list[str], mismatched: list[str]) -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        parts = []
        if missing:
            parts.append(f"missing keys (in the model, not in the checkpoint): {_show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys (in the checkpoint, not in the model): {_show(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches: {_show(mismatched)}")
        super().__init__("checkpoint does not match the model: " + "; ".join(parts)
                         + ". Rebuild the model from the checkpoint's config (Checkpoint.config) "
                           "or restore with strict=False to load only the matching entries")


def _show(items: list[str], limit: int = 20) -> str:
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not name or "." in name:
        raise CheckpointError(f"{what} name must be a non-empty string without '.', got {name!r}")
    return name


def _encode(value: Any, path: str, tensors: dict[str, Tensor]) -> Any:
    """JSON-ready copy of ``value``; tensors move to ``tensors[path]`` and leave a reference."""
    if isinstance(value, Tensor):
        tensors[path] = value.detach().cpu().clone().contiguous()
        return {_TENSOR_REF: path}
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise CheckpointError(f"optimizer state at {path!r} has non-string keys {list(value)[:5]}; "
                                  "only string-keyed dicts can be saved")
        return {k: _encode(v, f"{path}.{k}", tensors) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(f"optimizer state at {path!r} holds a {type(value).__name__}, which a checkpoint "
                          "cannot store without pickle; keep optimizer state to tensors and plain numbers")


def _decode(value: Any, tensors: Mapping[str, Tensor]) -> Any:
    if isinstance(value, dict):
        if set(value) == {_TENSOR_REF}:
            key = value[_TENSOR_REF]
            if key not in tensors:
                raise CheckpointError(f"{CHECKPOINT_JSON} refers to tensor {key!r}, missing from {OPTIMIZER_FILE}; "
                                      "the checkpoint is incomplete, use an earlier one")
            return tensors[key]
        if set(value) == {_TUPLE}:
            return tuple(_decode(v, tensors) for v in value[_TUPLE])
        return {k: _decode(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    return value


def _encode_optimizer(name: str, optimizer: Optimizer, tensors: dict[str, Tensor]) -> dict[str, Any]:
    state = optimizer.state_dict()
    return {
        # (param index, per-parameter state) pairs: JSON object keys would turn the indices into strings
        "state": [[int(index), _encode(dict(s), f"{name}.state.{index}", tensors)] for index, s in state["state"].items()],
        "param_groups": _encode(state["param_groups"], f"{name}.param_groups", tensors),
    }


@dataclass
class Checkpoint:
    """A loaded checkpoint: step, config, metrics and tensors, ready to :meth:`restore`."""

    step: int
    config: dict[str, Any]
    metrics: dict[str, Any]
    tensors: dict[str, Tensor]
    """``model.safetensors``: ``<module>.<key>`` and ``extra.<name>`` entries."""
    optimizer_tensors: dict[str, Tensor] = field(default_factory=dict)
    optimizer_json: dict[str, Any] = field(default_factory=dict)

    @property
    def module_names(self) -> list[str]:
        """Names of the modules saved (``extra`` excluded)."""
        return sorted({k.split(".", 1)[0] for k in self.tensors} - {EXTRA})

    @property
    def optimizer_names(self) -> list[str]:
        return sorted(self.optimizer_json)

    @property
    def extra_tensors(self) -> dict[str, Tensor]:
        """The ``extra_tensors`` given to :func:`save_checkpoint`."""
        return {k[len(EXTRA) + 1:]: v for k, v in self.tensors.items() if k.startswith(EXTRA + ".")}

    def module_state(self, name: str) -> dict[str, Tensor]:
        """The saved ``state_dict`` of module ``name``."""
        prefix = f"{name}."
        state = {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}
        if not state or name == EXTRA:
            raise CheckpointError(f"checkpoint has no module {name!r}; it has {self.module_names}")
        return state

    def optimizer_state(self, name: str) -> dict[str, Any]:
        """The saved ``state_dict`` of optimizer ``name``, as ``Optimizer.load_state_dict`` takes it."""
        if name not in self.optimizer_json:
            raise CheckpointError(f"checkpoint has no optimizer {name!r}; it has {self.optimizer_names}")
        body = self.optimizer_json[name]
        state = {int(index): _decode(s, self.optimizer_tensors) for index, s in body["state"]}
        return {"state": state, "param_groups": _decode(body["param_groups"], self.optimizer_tensors)}

    def restore(self, modules: Mapping[str, nn.Module], optimizers: Mapping[str, Optimizer] | None = None,
                strict: bool = True) -> None:
        """Load the saved weights into ``modules`` and state into ``optimizers``, checking keys and shapes.

        With ``strict`` every module/optimizer of the checkpoint must be given and every key and
        shape must match; otherwise only matching entries are loaded. Mismatches raise
        :class:`CheckpointMismatchError` before anything is modified.
        """
        optimizers = dict(optimizers or {})
        missing, unexpected, mismatched = [], [], []
        loads: list[tuple[nn.Module, dict[str, Tensor]]] = []
        for name, wrapped in modules.items():
            module = unwrap(wrapped)
            saved = {k[len(name) + 1:]: v for k, v in self.tensors.items() if k.startswith(f"{name}.")}
            own = module.state_dict()
            missing += [f"{name}.{k}" for k in own if k not in saved]
            unexpected += [f"{name}.{k}" for k in saved if k not in own]
            bad = [k for k in own if k in saved and tuple(own[k].shape) != tuple(saved[k].shape)]
            mismatched += [f"{name}.{k}: checkpoint {tuple(saved[k].shape)} vs model {tuple(own[k].shape)}"
                           for k in bad]
            loads.append((module, {k: v for k, v in saved.items() if k in own and k not in bad}))
        missing_opts = [n for n in optimizers if n not in self.optimizer_json]
        missing += [f"optimizer {n}" for n in missing_opts]
        if strict:
            unexpected += [f"{n}.*" for n in self.module_names if n not in modules]
            unexpected += [f"optimizer {n}" for n in self.optimizer_names if n not in optimizers]
        opt_loads = []
        for name, optimizer in optimizers.items():
            if name in missing_opts:
                continue
            state = self.optimizer_state(name)
            problems = _optimizer_mismatches(name, optimizer, state)
            mismatched += problems
            if not problems:
                opt_loads.append((optimizer, state))
        if strict and (missing or unexpected or mismatched):
            raise CheckpointMismatchError(missing, unexpected, mismatched)
        for module, state in loads:
            module.load_state_dict(state, strict=strict)
        for optimizer, state in opt_loads:
            _match_group_types(optimizer, state)
            optimizer.load_state_dict(state)


def _optimizer_mismatches(name: str, optimizer: Optimizer, state: dict[str, Any]) -> list[str]:
    """Group sizes and per-parameter state tensor shapes that differ from ``optimizer``'s parameters."""
    groups, saved_groups = optimizer.param_groups, state["param_groups"]
    if len(groups) != len(saved_groups):
        return [f"optimizer {name}: checkpoint has {len(saved_groups)} param groups, optimizer {len(groups)}"]
    problems = []
    params: dict[int, Tensor] = {}
    for g, (group, saved) in enumerate(zip(groups, saved_groups, strict=True)):
        if len(group["params"]) != len(saved["params"]):
            problems.append(f"optimizer {name} group {g}: checkpoint has {len(saved['params'])} parameters, "
                            f"optimizer {len(group['params'])}")
            continue
        params.update(zip(saved["params"], group["params"], strict=True))
    for index, entry in state["state"].items():
        param = params.get(index)
        if param is None:
            continue
        for key, value in entry.items():
            if isinstance(value, Tensor) and value.dim() > 0 and tuple(value.shape) != tuple(param.shape):
                problems.append(f"optimizer {name} param {index} {key}: checkpoint {tuple(value.shape)} "
                                f"vs parameter {tuple(param.shape)}")
    return problems


def _match_group_types(optimizer: Optimizer, state: dict[str, Any]) -> None:
    """Give saved hyper-parameters the container types the live optimizer uses (e.g. betas tuples)."""
    for group, saved in zip(optimizer.param_groups, state["param_groups"], strict=True):
        for key, value in group.items():
            if key != "params" and isinstance(value, tuple) and isinstance(saved.get(key), list):
                saved[key] = tuple(saved[key])


def save_checkpoint(
    directory: str | os.PathLike,
    *,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, Optimizer],
    step: int,
    config: Mapping[str, Any],
    extra_tensors: Mapping[str, Tensor] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder (``model.safetensors``, ``optimizer.safetensors``, ``checkpoint.json``).

    ``config`` and ``metrics`` must be JSON-serialisable (e.g. ``RodinConfig.to_dict()``). Returns the folder.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"step must be a non-negative int, got {step!r}")
    tensors: dict[str, Tensor] = {}
    for name, module in modules.items():
        if _check_name(name, "module") == EXTRA:
            raise CheckpointError(f"module name {EXTRA!r} is reserved for extra_tensors; rename the module")
        for key, value in unwrap(module).state_dict().items():  # no DDP "module." prefix
            tensors[f"{name}.{key}"] = value.detach().cpu().clone().contiguous()
    for key, value in (extra_tensors or {}).items():
        if not isinstance(value, Tensor):
            raise CheckpointError(f"extra_tensors[{key!r}] is a {type(value).__name__}, not a tensor")
        tensors[f"{EXTRA}.{key}"] = value.detach().cpu().clone().contiguous()
    opt_tensors: dict[str, Tensor] = {}
    opt_json = {_check_name(name, "optimizer"): _encode_optimizer(name, opt, opt_tensors)
                for name, opt in optimizers.items()}
    body = {"format_version": CHECKPOINT_FORMAT_VERSION, "step": step, "config": dict(config),
            "metrics": dict(metrics or {}), "optimizers": opt_json}
    try:
        text = json.dumps(body, indent=2, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"config and metrics must be JSON-serialisable (use RodinConfig.to_dict()): {exc}") from exc
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CHECKPOINT_JSON).unlink(missing_ok=True)  # un-commit an older checkpoint in this folder first
    (folder / MODEL_FILE).write_bytes(st_save(tensors, metadata={"format_version": str(CHECKPOINT_FORMAT_VERSION)}))
    (folder / OPTIMIZER_FILE).write_bytes(st_save(opt_tensors))
    temp = folder / f"{CHECKPOINT_JSON}.tmp"
    temp.write_text(text)
    temp.replace(folder / CHECKPOINT_JSON)
    return folder


def checkpoint_files(directory: str | os.PathLike) -> dict[str, bytes]:
    """The bytes of a checkpoint folder's files (e.g. to commit them as a store shard)."""
    folder = Path(directory)
    if not (folder / CHECKPOINT_JSON).is_file():
        raise CheckpointError(f"{folder} holds no complete checkpoint (no {CHECKPOINT_JSON}); "
                              "save one with save_checkpoint or pick another folder")
    missing = [n for n in CHECKPOINT_FILES if not (folder / n).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint folder {folder} lacks {missing}; it is incomplete, use an earlier one")
    return {name: (folder / name).read_bytes() for name in CHECKPOINT_FILES}


def checkpoint_from_files(files: Mapping[str, bytes], where: str = "checkpoint") -> Checkpoint:
    """Parse a checkpoint from its files' bytes (as :func:`checkpoint_files` returns or a store shard holds)."""
    missing = [n for n in CHECKPOINT_FILES if n not in files]
    if missing:
        raise CheckpointError(f"{where} lacks {missing}; it is incomplete, use an earlier checkpoint")
    try:
        body = json.loads(files[CHECKPOINT_JSON])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{where}/{CHECKPOINT_JSON} is not valid JSON ({exc}); use an earlier checkpoint") from exc
    keys = {"format_version", "step", "config", "metrics", "optimizers"}
    if isinstance(body, dict) and "format_version" in body:  # the version first: other versions have other fields
        check_format_version(body, where)
    if not isinstance(body, dict) or set(body) != keys:
        got = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise CheckpointError(f"{where}/{CHECKPOINT_JSON} must have the fields {sorted(keys)}, got {got}")
    loaded = {}
    for name in (MODEL_FILE, OPTIMIZER_FILE):
        try:
            loaded[name] = st_load(bytes(files[name]))
        except (SafetensorError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{where}/{name} is not readable safetensors ({exc}); use an earlier checkpoint") from exc
    return Checkpoint(step=int(body["step"]), config=body["config"], metrics=body["metrics"],
                      tensors=loaded[MODEL_FILE], optimizer_tensors=loaded[OPTIMIZER_FILE],
                      optimizer_json=body["optimizers"])


def check_format_version(body: Mapping[str, Any], where: str) -> None:
    """Refuse a ``checkpoint.json`` body (from ``where``) of another format version, naming the command that
    trains its stage again."""
    version = body.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        config = body.get("config")
        stage = config.get("stage", "STAGE") if isinstance(config, Mapping) else "STAGE"
        raise CheckpointError(f"{where} is a checkpoint of format_version {version!r}, this rodin reads "
                              f"{CHECKPOINT_FORMAT_VERSION}; train the stage again from scratch: "
                              f"`rodin train {stage} --out <dataset root> --fresh`")


def load_checkpoint(directory: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint folder written by :func:`save_checkpoint`."""
    folder = Path(directory)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist; check the path or train first")
    return checkpoint_from_files(checkpoint_files(folder), where=str(folder))


def upload_checkpoint(directory: str | os.PathLike, uri: str, storage_options: dict | None = None) -> str:
    """Copy a checkpoint folder to the fsspec folder ``uri`` (``checkpoint.json`` last) and return ``uri``."""
    files = checkpoint_files(directory)
    fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    root = root.rstrip("/")
    fs.makedirs(root, exist_ok=True)
    for name in CHECKPOINT_FILES:
        fs.pipe_file(f"{root}/{name}", files[name])
    return uri


def download_checkpoint(uri: str, directory: str | os.PathLike, storage_options: dict | None = None) -> Path:
    """Copy the checkpoint at fsspec folder ``uri`` into local ``directory`` and return it."""
    fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    root = root.rstrip("/")
    if not fs.exists(f"{root}/{CHECKPOINT_JSON}"):
        raise CheckpointError(f"{uri} holds no complete checkpoint (no {CHECKPOINT_JSON}); check the URI")
    files = {name: fs.cat_file(f"{root}/{name}") for name in CHECKPOINT_FILES}
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CHECKPOINT_JSON).unlink(missing_ok=True)
    for name in CHECKPOINT_FILES:
        (folder / name).write_bytes(files[name])
    return folder


def state_mismatches(expected: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> tuple[list[str], list[str],
                                                                                          list[str]]:
    """How a stored ``state`` differs from the ``expected`` state dict of the model it should load into: its
    missing keys, its unexpected keys, and one ``"key: stored (..), expected (..)"`` line per shape mismatch."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: stored {tuple(state[k].shape)}, expected {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    return missing, unexpected, shapes
