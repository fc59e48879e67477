"""Saving and loading a forward-forward network (and the state to resume its training)."""

from typing import Dict, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from ..checkpoint import read_checkpoint
from ..errors import CheckpointError
from ..report import atomic_path
from .core import FFNet
from .options import CHECKPOINT_FORMAT


def save_ff(path: str, net: FFNet, optimizers: Optional[Sequence[torch.optim.Optimizer]] = None,
            training: Optional[Mapping] = None) -> None:
    """Write ``net`` (its settings, weights and softmax readout, if attached) to ``path``,
    atomically; with ``optimizers`` and ``training`` (epochs done, history, settings), also
    what ``--resume`` needs to continue it."""
    state = {"format": CHECKPOINT_FORMAT, "config": dict(net.config),
             "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
             "readout": None if net.readout is None else {"skip_first": net.readout_skip_first,
                                                          "classes": net.readout.out_features}}
    if optimizers is not None:
        state["optimizers"] = [opt.state_dict() for opt in optimizers]
    if training is not None:
        state["training"] = dict(training)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_ff(path: str) -> Dict:
    """The stored dict of a checkpoint written by :func:`save_ff`, with a clear error for anything else."""
    state = read_checkpoint(path)   # a missing or unreadable file: one line naming it
    if not isinstance(state, Mapping) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a forward-forward checkpoint (written by sjconv.ff.save_ff)")
    return dict(state)


def load_ff(path: str, device="cpu") -> FFNet:
    """The :class:`FFNet` saved at ``path``, on ``device``, in eval mode, its softmax readout
    attached if it was saved with one: ``load_ff(p).predict(x)`` (or ``predict(x, "softmax")``)."""
    state = read_ff(path)
    net = FFNet(**state["config"])
    readout = state.get("readout")
    if readout is not None:
        features = sum(net.config["dims"][2 if readout["skip_first"] and len(net.layers) > 1 else 1:])
        net.attach_readout(nn.Linear(features, readout["classes"]), readout["skip_first"])
    net.load_state_dict(state["state_dict"])
    return net.to(device).eval()
