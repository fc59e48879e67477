"""The folded layout of multi-step mode: the model's own ``forward`` runs on ``[T·N, ...]``.

A converted network has one of two layouts (``layout_of``, shown as ``ConvertedSNN.layout``):

- ``'layers'``: SpikingJelly ``layer`` modules; in multi-step mode every tensor is ``[T, N, ...]``.
  Right when ``forward`` only calls modules and adds, multiplies or subtracts their outputs.
- ``'folded'``: the ANN's own torch modules and ``forward``; in multi-step mode the network takes
  ``[T, N, ...]`` like any SpikingJelly network, folds it to ``[T·N, ...]`` for the model's code
  (so ``x.view(x.size(0), -1)``, ``torch.flatten(x, 1)``, ``torch.cat(..., 1)``, functional
  pooling work as in the ANN, as in the QCFS reference code), and each spiking node unfolds its
  input to ``[T, N, ...]``, runs its T steps and folds its output back. The logits are unfolded to
  ``[T, N, classes]``. In single-step mode nothing is folded: the model runs on ``[N, ...]``.

Folding is done by forward hooks installed by :func:`install`: a pre-hook and a hook on the root
module (they set and clear :attr:`FoldState.steps`, the T of the call under way), and on every
node a pre-hook (unfold) and a hook (fold). Seen from outside a node (monitors, other hooks), a
folded network's tensors are ``[T·N, ...]``; :func:`steps_view` turns them into ``[T, N, ...]``.
The hooks are plain picklable objects, so ``copy.deepcopy``, ``torch.save`` and ``torch.compile``
keep them.
"""

from typing import Optional

import torch
import torch.nn as nn

from ..errors import ConfigError
from .modes import MULTI, step_mode_of
from .nodes import SpikingNode

__all__ = ["FoldState", "install", "layout_of", "fold_state", "steps_view", "LAYOUTS"]

#: the layouts a converted network may have
LAYOUTS = ("layers", "folded")

_ATTR = "_sjconv_fold"


class FoldState:
    """What a folded network's hooks share: ``steps`` (T of the multi-step call under way, None
    outside one), ``reason`` (why the network is folded, for messages) and ``single_step_only``
    (None, or why the model's forward cannot run in multi-step mode: it mixes the samples of its
    batch, which folded would mix time steps; docs/protocols.md#forward-rule)."""

    def __init__(self, reason: str = "", single_step_only: Optional[str] = None):
        self.steps: Optional[int] = None
        self.reason = reason
        self.single_step_only = single_step_only

    def __setstate__(self, state):   # networks pickled before single_step_only existed
        self.__dict__.update({"single_step_only": None, **state})


class _RootFold:
    """Root pre-hook: in multi-step mode, ``[T, N, ...]`` -> ``[T·N, ...]`` and remember T."""

    def __init__(self, state: FoldState):
        self.state = state

    def __call__(self, module, args):
        self.state.steps = None
        if step_mode_of(module) != MULTI:
            return None
        if self.state.single_step_only:
            raise ConfigError(f"this network runs only in single-step mode (step_mode 's'): "
                              f"{self.state.single_step_only}")
        if not args or not isinstance(args[0], torch.Tensor) or args[0].dim() < 2:
            raise ConfigError("a folded network in multi-step mode takes one tensor [T, N, ...] as its first argument")
        x = args[0]
        self.state.steps = int(x.shape[0])
        return (x.flatten(0, 1),) + tuple(args[1:])


class _RootUnfold:
    """Root hook: the model's ``[T·N, ...]`` output -> ``[T, N, ...]``."""

    def __init__(self, state: FoldState):
        self.state = state

    def __call__(self, module, args, output):
        steps, self.state.steps = self.state.steps, None
        if steps is None:
            return None
        if not isinstance(output, torch.Tensor):
            raise ConfigError("a folded network must return one tensor (the logits) in multi-step mode")
        return output.unflatten(0, (steps, -1))


class _NodeUnfold:
    """Node pre-hook: ``[T·N, ...]`` -> ``[T, N, ...]`` during a folded multi-step call."""

    def __init__(self, state: FoldState, name: str):
        self.state, self.name = state, name

    def __call__(self, module, args):
        steps = self.state.steps
        if steps is None or module.step_mode != MULTI:
            return None
        x = args[0]
        if x.shape[0] % steps:
            raise ConfigError(
                f"spiking node '{self.name}' got {x.shape[0]} rows in a {steps}-step call: the model's forward "
                "changed the batch size before it (it mixes batch elements), which no layout can run")
        return (x.unflatten(0, (steps, -1)),) + tuple(args[1:])


class _NodeFold:
    """Node hook: its ``[T, N, ...]`` output -> ``[T·N, ...]`` for the model's code."""

    def __init__(self, state: FoldState):
        self.state = state

    def __call__(self, module, args, output):
        if self.state.steps is None or module.step_mode != MULTI:
            return None
        return output.flatten(0, 1)


def install(net: nn.Module, reason: str = "", single_step_only: Optional[str] = None) -> FoldState:
    """Give ``net`` (the converted model, plain torch modules and sjconv nodes) the folded layout;
    ``single_step_only``: why its multi-step calls are refused (see :class:`FoldState`)."""
    state = FoldState(reason, single_step_only)
    setattr(net, _ATTR, state)
    net.register_forward_pre_hook(_RootFold(state))
    net.register_forward_hook(_RootUnfold(state))
    for name, module in net.named_modules():
        if isinstance(module, SpikingNode):
            module.register_forward_pre_hook(_NodeUnfold(state, name))
            module.register_forward_hook(_NodeFold(state))
    return state


def fold_state(net: nn.Module) -> Optional[FoldState]:
    """The :class:`FoldState` of the folded network inside ``net`` (None in the layers layout)."""
    for module in net.modules():
        state = module.__dict__.get(_ATTR)
        if state is not None:
            return state
    return None


def layout_of(net: nn.Module) -> str:
    """``'folded'`` or ``'layers'`` (see the module docstring)."""
    return "folded" if fold_state(net) is not None else "layers"


def steps_view(state: Optional[FoldState], tensor: torch.Tensor) -> Optional[torch.Tensor]:
    """A folded ``[T·N, ...]`` tensor seen during a multi-step call as ``[T, N, ...]``; None when
    no folded call is under way (the caller then reads the tensor by its step mode)."""
    if state is None or state.steps is None:
        return None
    return tensor.unflatten(0, (state.steps, -1))
