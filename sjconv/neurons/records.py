"""The two small records every neuron layer call passes down the stack (nodes -> dynamics -> kernels).

- :class:`NeuronState`: what changes from step to step, per neuron: the potential ``v``, the net
  spike count of a signed neuron (``count``, None otherwise) and the SRP output mask (``mask``,
  None when there is none); the state conventions of :mod:`sjconv.neurons.rules`. ``owned``:
  whether a fused backend may update ``v`` and ``count`` in place.
- :class:`NeuronKind`: what stays fixed during a call: ``signed`` (negative spikes), the negative
  rule (``'qcfs'`` or ``'snm'``), θ as a Python float and ``levels`` (the members m of a group
  neuron, None for the IF kinds).
"""

from typing import NamedTuple, Optional

import torch


class NeuronState(NamedTuple):
    """Per-neuron state of one layer: potential, signed count (or None), SRP mask (or None)."""

    v: torch.Tensor
    count: Optional[torch.Tensor] = None
    mask: Optional[torch.Tensor] = None
    #: ``v`` and ``count`` are the node's own (made by a fused kernel for its last call, not handed
    #: out since): a fused backend may update them in place instead of writing copies
    owned: bool = False


class NeuronKind(NamedTuple):
    """The fixed facts of one layer's neurons that the update rules need."""

    signed: bool
    neg_rule: str
    theta: float
    levels: Optional[int] = None

    @property
    def snm(self) -> bool:
        """Whether the negative rule is the SNM one (v <= -θ, start 0)."""
        return self.neg_rule == "snm"
