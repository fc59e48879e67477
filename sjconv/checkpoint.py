"""Loading QCFS checkpoints a user brings (docs/methods.md §5).

Accepts the official v2 format (``model.state_dict()``, thresholds named ``thresh``) as is,
and v1 names (``up``, and ``relu.up`` in residual blocks) mapped to v2. A state dict nested
under ``state_dict``/``model``/``net`` or saved from ``DataParallel`` (``module.`` prefix) is
unwrapped. Anything else that does not match is an error naming the keys and the architecture
(and, when only the class count differs, the ``num_classes`` to use).

Files are read with torch's safe loader (``weights_only=True``: tensors and plain containers, no
code runs), never with ``weights_only=False``. Research checkpoints often store the run's
``argparse.Namespace`` next to the weights; that type is allow-listed (:data:`SAFE_TYPES`).
A file that cannot be read is a one-line :class:`CheckpointError` naming the file and the
problem; so is a checkpoint holding NaN or inf in a weight, buffer or threshold (a diverged run:
its network would predict class 0 everywhere and report that as an accuracy).
"""

import argparse
import os
import re
from collections import OrderedDict
from typing import Mapping, Optional, Union

import torch
import torch.nn as nn

from .errors import CheckpointError
from .guards import check_finite_tensors

_NESTED = ("state_dict", "model", "net", "model_state_dict")
_SHOW = 8  # keys listed per category in an error message

#: types besides tensors and containers that a checkpoint may hold (loaded by the safe loader)
SAFE_TYPES = (argparse.Namespace,)


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


def _read_problem(exc: BaseException) -> str:
    """One line saying why ``torch.load`` failed (its own messages run to several lines)."""
    text = str(exc)
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsupported:
        return (f"it holds an object of type {unsupported.group(1)}, which the safe loader refuses (it "
                "loads tensors, plain containers and argparse.Namespace); re-save just the weights "
                "where the file was made: torch.save(model.state_dict(), path)")
    if isinstance(exc, EOFError):
        return "the file ends early (empty or cut short): copy or save it again"
    detail = text.split("WeightsUnpickler error:", 1)[-1]
    detail = next((line.strip() for line in detail.splitlines() if line.strip()), type(exc).__name__)
    detail = detail.split(". ")[0].rstrip(".")
    return f"not a file written by torch.save, or a damaged one ({detail[:120]})"


def read_checkpoint(path: Union[str, os.PathLike]) -> Mapping:
    """``torch.load`` a checkpoint file onto the CPU with the safe loader (:data:`SAFE_TYPES`
    allowed besides tensors and containers); a missing or unreadable file is a one-line
    :class:`CheckpointError` that names the file and the problem."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        with torch.serialization.safe_globals(list(SAFE_TYPES)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling and zip reading fail with many exception types
        raise CheckpointError(f"could not read checkpoint {path}: {_read_problem(exc)}") from None


def _classifier_hint(model: nn.Module, state: Mapping, expected: Mapping) -> Optional[str]:
    """When the last Linear layer (the classifier) has another number of outputs in the
    checkpoint than in the model, say which ``num_classes`` the checkpoint was trained for."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        return None
    key = f"{names[-1]}.weight" if names[-1] else "weight"
    if key not in state or key not in expected or state[key].dim() != 2:
        return None
    got, want = state[key].shape[0], expected[key].shape[0]
    if got == want:
        return None
    flag = f" (--dataset cifar{got} on the command line)" if got in (10, 100) else ""
    return (f"the checkpoint's classifier '{names[-1]}' has {got} outputs, the model {want}: "
            f"build the model with num_classes={got}{flag}")


def load_checkpoint(model: nn.Module, checkpoint: Union[str, os.PathLike, Mapping],
                    arch: str = None) -> nn.Module:
    """Load ``checkpoint`` (a path or a state dict) into ``model``; return ``model``.

    Raises :class:`CheckpointError` naming missing, unexpected and mis-shaped keys and the
    architecture that was expected (``arch`` or the model's class name), or naming the tensors
    that hold NaN or inf (nothing is loaded then).
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
        hint = _classifier_hint(model, state, expected) if shapes else None
        if hint:
            problems.append(hint)
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
    where = f"checkpoint {checkpoint}" if isinstance(checkpoint, (str, os.PathLike)) else "the checkpoint"
    check_finite_tensors(state, where, "the training diverged or the file is damaged; use an earlier or "
                         "another checkpoint", error=CheckpointError)
    model.load_state_dict(state)
    return model
