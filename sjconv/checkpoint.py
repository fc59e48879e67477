"""Loading QCFS checkpoints a user brings (docs/protocols.md#checkpoints).

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
_SHOW = 3  # keys listed per category in an error message

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


def _matching_archs(state: Mapping) -> list:
    """``(arch, num_classes)`` of every known architecture whose state-dict keys are exactly
    those of ``state``, with the class count read from its classifier. The candidates are built
    on the meta device: key names and shapes only, no memory or time spent on weights."""
    from .models import ARCHS

    found = []
    for name, builder in ARCHS.items():
        with torch.device("meta"):
            keys = builder().state_dict().keys()
        if set(keys) == set(state):
            last = [k for k in keys if k.endswith(".weight") and state[k].dim() == 2][-1]   # the classifier
            found.append((name, int(state[last].shape[0])))
    return found


def _arch_hint(state: Mapping) -> Optional[str]:
    """Which known architecture the checkpoint's keys belong to, with the command-line flags."""
    matches = _matching_archs(state)
    if not matches:
        return None
    datasets = {10: "cifar10", 100: "cifar100", 1000: "imagenet"}
    said = [f"a {name} with {n} classes (--arch {name}" + (f" --dataset {datasets[n]})" if n in datasets else ")")
            for name, n in matches]
    return "the checkpoint holds " + " or ".join(said)


def _mismatch_message(model: nn.Module, state: Mapping, expected: Mapping, arch: Optional[str]) -> str:
    """The one-line error for a checkpoint that does not fit ``model``: the architecture that was
    expected, a few of the missing, unexpected and mis-shaped keys (:data:`_SHOW` each, then a
    count), and what to pass instead: the architecture whose keys the checkpoint holds, or, when
    only the classifier differs, the number of classes."""
    missing, unexpected = set(expected) - set(state), set(state) - set(expected)
    shapes = {k for k in set(expected) & set(state) if expected[k].shape != state[k].shape}
    hint = _arch_hint(state) if missing or unexpected else None
    if hint is None and shapes:
        hint = _classifier_hint(model, state, expected)
    problems = [hint] if hint else []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if shapes:
        problems.append("shape mismatch: " + _listing(
            f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in shapes))
    return (f"checkpoint does not match architecture '{arch or type(model).__name__}' "
            f"({sum(p.numel() for p in model.parameters())} parameters): " + "; ".join(problems))


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
        raise CheckpointError(_mismatch_message(model, state, expected, arch))
    where = f"checkpoint {checkpoint}" if isinstance(checkpoint, (str, os.PathLike)) else "the checkpoint"
    check_finite_tensors(state, where, "the training diverged or the file is damaged; use an earlier or "
                         "another checkpoint", error=CheckpointError)
    model.load_state_dict(state)
    return model
