"""The network protocol, in one place: finding a network's sjconv nodes and the protocol they
carry, step modes, the begin and end of a pre-run, feeding a static input, and :func:`run`, the
reset -> pre-run -> main-run sequence that :func:`sjconv.simulate`, :func:`sjconv.finetune`,
:mod:`sjconv.analysis` and :mod:`sjconv.memory` all use.

The protocol (method, pre-run kind and length) lives on the nodes, so it is found from any
module that holds them: a :class:`ConvertedSNN`, its ``.net``, ``torch.compile(snn)`` or a
user's wrapper give the same answer (running a compiled one is refused, see :mod:`sjconv.guards`).
Nodes that disagree on the pre-run length raise instead of being guessed at.

A pre-run (docs/protocols.md#pre-run; the kinds: docs/methods.md#srp, docs/methods.md#cos) is k
steps on the same input, after which every node derives per-neuron state from what it saw, then
restarts for the main run. The same sequence serves every kind, in any SpikingJelly network
holding sjconv nodes::

    functional.reset_net(net)
    begin_prerun(net)   # nodes enter the pre-run phase
    net(x_prerun)       # k steps; outputs discarded (COS: one multi-step call of all k steps)
    end_prerun(net)     # each node derives its state and restarts
    out = net(x_main)   # T main steps, in any step mode or chunking

:func:`run_prerun` does the middle three lines for static images; :func:`run` all of it. What
each kind derives is written in :class:`sjconv.neurons.nodes.SpikingNode`: ``srp`` an output mask
from the residual potential (the pre-run may be fed in any step mode or chunking); ``cos``
calibrated initial potentials from a pre-simulation of the layer's own first ρ inputs, so every
node needs all ρ steps in one multi-step call (``one_call``).
"""

from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn as nn
from spikingjelly.activation_based import functional

from ..catalog import PRERUNS, check_steps
from ..errors import ConfigError
from ..guards import check_not_compiled
from .fold import layout_of
from .methods import method_of_node
from .modes import MULTI, SINGLE, STEP_MODES, step_mode, step_mode_of, switch_step_mode
from .nodes import SpikingNode

__all__ = ["ConvertedSNN", "spiking_nodes", "prerun_nodes", "protocol_of", "levels_of", "unwrap",
           "converted_network", "SINGLE", "MULTI", "STEP_MODES", "step_mode", "step_mode_of", "switch_step_mode", "begin_prerun",
           "end_prerun", "run_prerun", "feed_steps", "run"]


class ConvertedSNN(nn.Module):
    """A converted network: ``net`` is the plain SpikingJelly network (use it directly in your
    own loops); ``forward`` is ``net.forward``, so ``functional.reset_net``/``set_step_mode`` and
    monitors work on either object. ``method``, ``tau``, ``backend`` and ``levels`` are read from
    the nodes, so they cannot disagree with what runs."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)

    @property
    def method(self) -> str:
        return protocol_of(self.net)[0]

    @property
    def tau(self) -> int:
        return protocol_of(self.net)[1]

    @property
    def backend(self) -> str:
        """The backend of the nodes (``'mixed'`` when they differ, ``'none'`` without nodes)."""
        found = {n.backend for n in spiking_nodes(self.net)}
        return found.pop() if len(found) == 1 else ("mixed" if found else "none")

    @property
    def layout(self) -> str:
        """How multi-step mode runs the model: ``'layers'`` or ``'folded'`` (:mod:`sjconv.neurons.fold`)."""
        return layout_of(self.net)

    @property
    def levels(self):
        """Members per group neuron (:func:`levels_of`); None when the network has none."""
        return levels_of(self.net)

    def extra_repr(self):
        return f"method={self.method}, tau={self.tau}, backend={self.backend}, layout={self.layout}"


# ------------------------------------------------------------------ the nodes and their protocol
def spiking_nodes(net: nn.Module) -> List[SpikingNode]:
    """All sjconv spiking nodes of ``net``, in module order."""
    return [m for m in net.modules() if isinstance(m, SpikingNode)]


def prerun_nodes(net: nn.Module) -> List[SpikingNode]:
    """The nodes of ``net`` that take a pre-run (SRP, COS)."""
    return [n for n in spiking_nodes(net) if n.prerun is not None]


def protocol_of(net: nn.Module) -> Tuple[str, int]:
    """``(method, tau)`` carried by the nodes of ``net``: the method name when every node has the
    same kind (``'mixed'`` otherwise, ``'none'`` without sjconv nodes) and the pre-run length of
    its pre-run nodes (0 if none). Raises :class:`ConfigError` if pre-run nodes disagree on it."""
    nodes = spiking_nodes(net)
    if not nodes:
        return "none", 0
    names = {method_of_node(n) for n in nodes}
    method = names.pop() if len(names) == 1 and None not in names else "mixed"
    lengths = {n.prerun_steps for n in nodes if n.prerun is not None}
    if len(lengths) > 1:
        raise ConfigError(f"the network's pre-run nodes disagree on the pre-run length ({sorted(lengths)}): "
                          "pass tau explicitly, or convert again with one tau")
    return method, (lengths.pop() if lengths else 0)


def levels_of(net: nn.Module):
    """Members m of the group neurons of ``net`` (docs/methods.md#group-neuron): an int when every
    group node has the same m, a sorted tuple of the values when layers differ, None without group nodes."""
    found = sorted({n.levels for n in spiking_nodes(net) if n.levels is not None})
    if not found:
        return None
    return found[0] if len(found) == 1 else tuple(found)


def unwrap(snn: nn.Module):
    """``(net, method, tau)``: the SpikingJelly network inside a :class:`ConvertedSNN` (any other
    module is returned as it is) and the protocol its nodes carry (:func:`protocol_of`)."""
    net = snn.net if isinstance(snn, ConvertedSNN) else snn
    return (net,) + protocol_of(net)


def converted_network(snn: nn.Module, tau=None):
    """:func:`unwrap` for running a network, with the one check of a pre-run length: ``(net,
    method, tau)``, ``tau`` the given one (a whole number >= 0) or, when None, the one the nodes
    carry; a ``tau`` > 0 for a network without pre-run nodes is refused. A ``torch.compile``
    wrapper is refused, or stripped when its backend is ``'eager'``
    (:func:`sjconv.guards.check_not_compiled`), and a network without sjconv nodes (e.g. the ANN
    itself, never converted) is a :class:`ConfigError`: it would run as the ANN and report the
    ANN's accuracy at every T."""
    net, method, carried = unwrap(check_not_compiled(snn))
    if method == "none":
        raise ConfigError(f"the network ({type(net).__name__}) has no sjconv spiking nodes: it is not a converted "
                          "SNN; convert the QCFS ANN first: snn = sjconv.convert(ann, method='qcfs')")
    tau = carried if tau is None else check_steps(tau)
    if tau and not prerun_nodes(net):
        raise ConfigError(f"tau={tau} pre-run steps were asked for, but the network has no pre-run nodes "
                          "(convert with an SRP or COS method)")
    return net, method, tau


# ------------------------------------------------------------------ pre-run
def begin_prerun(net: nn.Module) -> None:
    """Put every pre-run node of ``net`` in its pre-run phase (states back to their start)."""
    for node in prerun_nodes(net):
        node.begin_prerun()


def end_prerun(net: nn.Module) -> None:
    """End the pre-run of every node of ``net``: derive its state, restart for the main run."""
    for node in prerun_nodes(net):
        node.end_prerun()


def run_prerun(net: nn.Module, images: torch.Tensor, steps: int, chunk: Optional[int] = None) -> None:
    """:func:`begin_prerun`, ``steps`` pre-run steps of the static ``images``, :func:`end_prerun`.

    The steps follow the network's step mode (and ``chunk`` in multi-step mode), except where a
    node's kind needs them in one call (COS): then they are one multi-step call, the network being
    switched to multi-step for that call and back. Call ``functional.reset_net(net)`` first.
    """
    nodes = prerun_nodes(net)
    begin_prerun(net)
    if steps:
        mode = step_mode_of(net)
        one_call = any(PRERUNS[n.prerun].one_call for n in nodes)
        if one_call and mode == SINGLE:
            with step_mode(net, MULTI):
                net(images.unsqueeze(0).expand(steps, *images.shape))
        else:
            for _ in feed_steps(net, images, steps, mode, None if one_call else chunk):
                pass
    end_prerun(net)


# ------------------------------------------------------------------ feeding and running
def feed_steps(net: nn.Module, images: torch.Tensor, steps: int, mode: str,
               chunk: Optional[int]) -> Iterator[torch.Tensor]:
    """Feed the static ``images`` for ``steps`` steps; yields output blocks of shape [t, N, ...]:
    one step per call in single-step mode, ``chunk`` steps per call in multi-step mode (None: all at once)."""
    if mode == SINGLE:
        for _ in range(steps):
            yield net(images).unsqueeze(0)
        return
    size = steps if not chunk else int(chunk)
    for start in range(0, steps, size):
        n = min(size, steps - start)
        yield net(images.unsqueeze(0).expand(n, *images.shape))


def run(net: nn.Module, images: torch.Tensor, T: int, tau: int = 0,
        chunk: Optional[int] = None) -> Iterator[torch.Tensor]:
    """The whole protocol on the static ``images``: reset ``net``, run its pre-run of ``tau`` steps
    (without grad; :func:`run_prerun`), then yield the outputs of ``T`` main steps in blocks
    ``[t, N, ...]`` (:func:`feed_steps`, in the network's step mode). ``net`` is the SpikingJelly
    network (:func:`converted_network` finds it and checks ``tau``)."""
    functional.reset_net(net)
    if tau:
        with torch.no_grad():
            run_prerun(net, images, tau, chunk)
    yield from feed_steps(net, images, T, step_mode_of(net), chunk)
