"""Networks of sjconv nodes: finding the nodes, their step mode and the protocol they carry,
and feeding a static input for a number of steps.

The protocol (method, pre-run kind and length) lives on the nodes, so it is found from any
module that holds them: a :class:`ConvertedSNN`, its ``.net``, ``torch.compile(snn)`` or a
user's wrapper give the same answer (running a compiled one is refused, see :mod:`sjconv.guards`).
Nodes that disagree on the pre-run length raise instead of being guessed at.
"""

from typing import Iterator, List, Optional

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..guards import check_not_compiled
from .methods import method_of_node
from .nodes import SpikingNode


class ConvertedSNN(nn.Module):
    """A converted network: ``net`` is the plain SpikingJelly network (use it directly in your
    own loops); ``forward`` is ``net.forward``, so ``functional.reset_net``/``set_step_mode`` and
    monitors work on either object. ``method`` and ``tau`` are read from the nodes."""

    def __init__(self, net: nn.Module, backend: str):
        super().__init__()
        self.net = net
        self.backend = backend

    def forward(self, x):
        return self.net(x)

    @property
    def method(self) -> str:
        return protocol_of(self.net)[0]

    @property
    def tau(self) -> int:
        return protocol_of(self.net)[1]

    @property
    def layout(self) -> str:
        """How multi-step mode runs the model: ``'layers'`` or ``'folded'`` (:mod:`sjconv.neurons.fold`)."""
        from .fold import layout_of
        return layout_of(self.net)

    @property
    def levels(self):
        """Members per group neuron (:func:`levels_of`); None when the network has none."""
        return levels_of(self.net)

    def extra_repr(self):
        return f"method={self.method}, tau={self.tau}, backend={self.backend}, layout={self.layout}"


def spiking_nodes(net: nn.Module) -> List[SpikingNode]:
    """All sjconv spiking nodes of ``net``, in module order."""
    return [m for m in net.modules() if isinstance(m, SpikingNode)]


def uses_srp(net: nn.Module) -> bool:
    return any(node.srp for node in spiking_nodes(net))


def protocol_of(net: nn.Module):
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
    """Members m of the group neurons of ``net`` (docs/methods.md §14): an int when every group node
    has the same m, a sorted tuple of the values when layers differ, None without group nodes."""
    found = sorted({n.levels for n in spiking_nodes(net) if n.levels is not None})
    if not found:
        return None
    return found[0] if len(found) == 1 else tuple(found)


def unwrap(snn: nn.Module):
    """``(net, method, tau)``: the SpikingJelly network inside a :class:`ConvertedSNN` (any other
    module is returned as it is) and the protocol its nodes carry (:func:`protocol_of`)."""
    net = snn.net if isinstance(snn, ConvertedSNN) else snn
    return (net,) + protocol_of(net)


def converted_network(snn: nn.Module):
    """:func:`unwrap` for running a network: a ``torch.compile`` wrapper is refused, or stripped
    when its backend is ``'eager'`` (:func:`sjconv.guards.check_not_compiled`), and a network
    without sjconv nodes (e.g. the ANN itself, never converted) is a :class:`ConfigError`: it
    would run as the ANN and report the ANN's accuracy at every T."""
    net, method, tau = unwrap(check_not_compiled(snn))
    if method == "none":
        raise ConfigError(f"the network ({type(net).__name__}) has no sjconv spiking nodes: it is not a converted "
                          "SNN; convert the QCFS ANN first: snn = sjconv.convert(ann, method='qcfs')")
    return net, method, tau


def step_mode_of(net: nn.Module) -> str:
    """Step mode of the first step-mode-aware module of ``net`` ('s' if there is none)."""
    for m in net.modules():
        mode = getattr(m, "step_mode", None)
        if mode in ("s", "m"):
            return mode
    return "s"


def feed_steps(net: nn.Module, images: torch.Tensor, steps: int, mode: str,
               chunk: Optional[int]) -> Iterator[torch.Tensor]:
    """Feed the static ``images`` for ``steps`` steps; yields output blocks of shape [t, N, ...]:
    one step per call in 's' mode, ``chunk`` steps per call in 'm' mode (None: all at once)."""
    if mode == "s":
        for _ in range(steps):
            yield net(images).unsqueeze(0)
        return
    size = steps if not chunk else int(chunk)
    for start in range(0, steps, size):
        n = min(size, steps - start)
        yield net(images.unsqueeze(0).expand(n, *images.shape))
