"""Loading QCFS checkpoints a user brings (docs/methods.md §5).

Accepts the official v2 format (``model.state_dict()``, thresholds named ``thresh``) as is,
and v1 names (``up``, and ``relu.up`` in residual blocks) mapped to v2. A state dict nested
under ``state_dict``/``model``/``net`` or saved from ``DataParallel`` (``module.`` prefix) is
unwrapped. Anything else that does not match is an error naming the keys and the architecture.
"""

import os
from collections import OrderedDict
from typing import Mapping, Union

import torch
import torch.nn as nn

from .errors import CheckpointError

_NESTED = ("state_dict", "model", "net", "model_state_dict")
_SHOW = 8  # keys listed per category in an error message


def _v1_to_v2(key: str) -> str:
    """Official v1 threshold names -> v2 (``relu.up`` -> ``act.thresh``, ``up`` -> ``thresh``)."""
    if key.endswith("relu.up"):
        return key[: -len("relu.up")] + "act.thresh"
    if key == "up" or key.endswith(".up"):
        return key[: -len("up")] + "thresh"
    return key


def normalize_state_dict(state: Mapping) -> "OrderedDict[str, torch.Tensor]":
    """Unwrap nesting and ``module.`` prefixes and rename v1 keys to v2."""
    for name in _NESTED:
        if isinstance(state.get(name), Mapping):
            state = state[name]
            break
    out = OrderedDict()
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        key = key[len("module."):] if key.startswith("module.") else key
        out[_v1_to_v2(key)] = value
    return out


def _listing(keys) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def read_checkpoint(path: Union[str, os.PathLike]) -> Mapping:
    """``torch.load`` a checkpoint file onto the CPU, with a clear error if it is missing or unreadable."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle and zip errors have many types
        raise CheckpointError(f"could not read checkpoint {path}: {exc}") from None


def load_checkpoint(model: nn.Module, checkpoint: Union[str, os.PathLike, Mapping],
                    arch: str = None) -> nn.Module:
    """Load ``checkpoint`` (a path or a state dict) into ``model``; return ``model``.

    Raises :class:`CheckpointError` naming missing, unexpected and mis-shaped keys and the
    architecture that was expected (``arch`` or the model's class name).
    """
    state = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    if not isinstance(state, Mapping):
        raise CheckpointError(f"checkpoint holds a {type(state).__name__}, expected a state dict")
    state = normalize_state_dict(state)
    expected = model.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    shapes = {k for k in set(expected) & set(state) if expected[k].shape != state[k].shape}
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_listing(unexpected)}")
        if shapes:
            problems.append("shape mismatch: " + _listing(
                f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in shapes))
        name = arch or type(model).__name__
        raise CheckpointError(f"checkpoint does not match architecture '{name}' "
                              f"({sum(p.numel() for p in model.parameters())} parameters): "
                              + "; ".join(problems))
    model.load_state_dict(state)
    return model
