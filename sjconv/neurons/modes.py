"""SpikingJelly step modes, named once: ``'s'`` (one time step per call, tensors ``[N, ...]``) and
``'m'`` (several steps per call, tensors ``[T, N, ...]``), and how a network's mode is read and
switched for a while. The layers above use these names instead of the letters."""

import contextlib
from typing import Callable

import torch.nn as nn
from spikingjelly.activation_based import functional

#: one time step per network call
SINGLE = "s"
#: several time steps per network call, ``[T, N, ...]``
MULTI = "m"
#: the step modes SpikingJelly modules take
STEP_MODES = (SINGLE, MULTI)


def step_mode_of(net: nn.Module) -> str:
    """Step mode of the first step-mode-aware module of ``net`` (:data:`SINGLE` if there is none)."""
    for m in net.modules():
        mode = getattr(m, "step_mode", None)
        if mode in STEP_MODES:
            return mode
    return SINGLE


def switch_step_mode(net: nn.Module, mode: str) -> Callable[[], None]:
    """Put ``net`` in ``mode`` (SpikingJelly's ``set_step_mode``); returns the function that gives
    every module its own mode back."""
    modes = {m: m.step_mode for m in net.modules() if hasattr(m, "step_mode")}

    def restore():
        for m, old in modes.items():
            m.step_mode = old

    try:
        functional.set_step_mode(net, mode)
    except BaseException:
        restore()
        raise
    return restore


@contextlib.contextmanager
def step_mode(net: nn.Module, mode: str):
    """``net`` in ``mode`` for the ``with`` block (:func:`switch_step_mode`); each module's own
    mode is given back afterwards, also when the block raises."""
    restore = switch_step_mode(net, mode)
    try:
        yield net
    finally:
        restore()
