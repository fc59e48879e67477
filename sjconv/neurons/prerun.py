"""Pre-run phases: k steps on the same input, after which every node derives per-neuron state
from what it saw, then restarts for the main run (docs/methods.md §4 SRP, §9 COS).

The protocol is the same for every kind, in any SpikingJelly network holding sjconv nodes::

    functional.reset_net(net)
    begin(net)          # nodes enter the pre-run phase
    net(x_prerun)       # k steps; outputs discarded (COS: one multi-step call of all k steps)
    end(net)            # each node derives its state and restarts
    out = net(x_main)   # T main steps, in any step mode or chunking

:func:`sjconv.simulate` does all of it; :func:`run_prerun` does the middle three lines.

What each kind derives (written in :class:`sjconv.neurons.nodes.SpikingNode`):

- ``srp``: an output mask ``v > 1e-3·θ`` from the residual potential after the pre-run (§4);
  the pre-run may be fed in any step mode or chunking.
- ``cos``: a calibrated initial potential per neuron (§9), from a pre-simulation of the layer's
  *own* first ρ inputs; layer l+1 must see layer l's outputs from the calibrated potentials, so
  the pre-run is one pass through the network, and every node needs all ρ steps in one
  multi-step call (``one_call``).
"""

from typing import Optional

import torch
import torch.nn as nn
from spikingjelly.activation_based import functional

# the kinds are plain records, kept in the catalog, where the command-line tools read them without torch
from ..catalog import PRERUNS, PreRunKind, check_steps, prerun_kind

__all__ = ["PRERUNS", "PreRunKind", "check_steps", "prerun_kind", "begin", "end", "run_prerun"]


def _nodes(net: nn.Module):
    from .nodes import SpikingNode
    return [m for m in net.modules() if isinstance(m, SpikingNode) and m.prerun is not None]


def begin(net: nn.Module) -> None:
    """Put every pre-run node of ``net`` in its pre-run phase (states back to their start)."""
    for node in _nodes(net):
        node.begin_prerun()


def end(net: nn.Module) -> None:
    """End the pre-run of every node of ``net``: derive its state, restart for the main run."""
    for node in _nodes(net):
        node.end_prerun()


def run_prerun(net: nn.Module, images: torch.Tensor, steps: int, chunk: Optional[int] = None) -> None:
    """:func:`begin`, ``steps`` pre-run steps of the static ``images``, :func:`end`.

    The steps follow the network's step mode (and ``chunk`` in 'm' mode), except where a node's
    kind needs them in one call (COS): then they are one multi-step call, the network being
    switched to 'm' for that call and back. Call ``functional.reset_net(net)`` first.
    """
    from .network import feed_steps, step_mode_of

    nodes = _nodes(net)
    begin(net)
    if steps:
        mode = step_mode_of(net)
        one_call = any(PRERUNS[n.prerun].one_call for n in nodes)
        if one_call and mode == "s":
            functional.set_step_mode(net, "m")
            try:
                net(images.unsqueeze(0).expand(steps, *images.shape))
            finally:
                functional.set_step_mode(net, "s")
        else:
            for _ in feed_steps(net, images, steps, mode, None if one_call else chunk):
                pass
    end(net)
