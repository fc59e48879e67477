"""SpikingJelly 2.0 neuron nodes for converted QCFS networks.

All four nodes share one implementation (:class:`SpikingNode`) and differ in two switches:
``signed`` (negative spikes, METHODS.md §3) and ``srp`` (residual-membrane-potential mask, §4).

- :class:`ConvertedIFNode`  -- half-threshold IF (v0 = θ/2, soft reset, output θ·spike)
- :class:`SignedIFNode`     -- NegSpike: also takes back earlier spikes with negative ones
- :class:`SRPIFNode`        -- IF whose output is multiplied by a per-sample, per-neuron mask
- :class:`SRPSignedIFNode`  -- both

They are ``BaseNode`` subclasses following the 2.0 recipe: the per-step transition is
``single_step_functional_forward`` (pure, states passed explicitly), multi-step mode calls
``multi_step_functional_forward`` once per call, states live in ``self._memories`` (``v``,
then ``count`` for signed nodes, then ``mask`` for SRP nodes) and are restored by ``reset()``.
The membrane is kept in float32 for every input dtype.

SRP outside :func:`sjconv.simulate`::

    functional.reset_net(net)            # masks cleared: pre-run phase, no masking
    net(x_prerun)                        # tau steps (or tau single steps in 's' mode)
    sjconv.srp.begin_main_phase(net)     # masks from residual v, v <- θ/2, count <- 0
    out = net(x_main)                    # T masked main steps
"""

from typing import Optional

import torch
from spikingjelly.activation_based import surrogate
from spikingjelly.activation_based.neuron import BaseNode

from . import rules

BACKENDS = ("torch", "cupy")


def check_backend(backend: str) -> str:
    """Validate a backend name. Nothing falls back silently: an unusable backend raises, and
    ``'cupy'`` without CuPy installed raises here, when the network is built, not at its first run."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    if backend == "cupy":
        from .cupy_backend import require_cupy
        require_cupy()
    return backend


class SpikingNode(BaseNode):
    """Converted IF neuron with optional negative spikes (``signed``) and SRP mask (``srp``).

    :param v_threshold: θ, taken from the QCFS layer (a Python float or a 1-element tensor)
    :param signed: emit negative spikes that take back earlier positive ones (§3)
    :param srp: multiply outputs by the SRP mask once :meth:`begin_main_phase` has set it (§4)
    :param neg_rule: ``'qcfs'`` (v0 = θ/2, negative at v < 0) or ``'snm'`` (v0 = 0, negative
        at v <= -θ, the signed neuron with memory of Wang et al.); signed nodes only
    :param backend: ``'torch'`` (a loop of torch operations) or ``'cupy'`` (one fused kernel
        launch per call running all steps; CUDA inputs, inference only)
    """

    def __init__(self, v_threshold, signed: bool = False, srp: bool = False,
                 neg_rule: str = "qcfs", step_mode: str = "s", backend: str = "torch",
                 store_v_seq: bool = False):
        theta = float(v_threshold.detach().reshape(-1)[0]) if isinstance(v_threshold, torch.Tensor) \
            else float(v_threshold)
        if not theta > 0 or theta == float("inf"):
            raise ValueError(f"v_threshold must be finite and > 0, got {theta}")
        if neg_rule not in rules.NEG_RULES:
            raise ValueError(f"unknown neg_rule '{neg_rule}'; choose one of {', '.join(rules.NEG_RULES)}")
        super().__init__(v_threshold=theta, v_reset=None, surrogate_function=surrogate.Sigmoid(),
                         detach_reset=False, step_mode=step_mode, store_v_seq=store_v_seq)
        self.signed = bool(signed)
        self.srp = bool(srp)
        self.neg_rule = neg_rule
        self.backend = check_backend(backend)
        self.v_init = 0.0 if (self.signed and neg_rule == "snm") else theta / 2.0
        self.set_reset_value("v", self.v_init)
        self.v = self.v_init
        if self.signed:
            self.register_memory("count", 0.0)
        if self.srp:
            self.register_memory("mask", None)

    # ----------------------------------------------------------------- states
    def _split(self, states):
        """(v, count or None, mask or None) from the registered-order state tuple."""
        v, rest = states[0], list(states[1:])
        count = rest.pop(0) if self.signed else None
        mask = rest.pop(0) if self.srp else None
        return v, count, mask

    def _join(self, v, count, mask):
        return (v,) + ((count,) if self.signed else ()) + ((mask,) if self.srp else ())

    def materialize_states(self, inputs, states, step_mode):
        """Float initial values become float32 tensors shaped like one time step of the input."""
        x = inputs[0][0] if step_mode == "m" else inputs[0]
        v, count, mask = self._split(states)

        def as_state(value, fill):
            if isinstance(value, torch.Tensor) and value.shape == x.shape:
                return value.to(device=x.device, dtype=torch.float32)
            if not isinstance(value, (float, int)):
                value = fill  # a state left from another input shape restarts from its reset value
            # same layout as the input (e.g. channels_last), so fused kernels need no copy
            return torch.full_like(x, float(value), dtype=torch.float32)

        v = as_state(v, self.v_init)
        if self.signed:
            count = as_state(count, 0.0)
        if mask is not None:
            if mask.shape != x.shape:
                raise ValueError(
                    f"SRP mask has shape {tuple(mask.shape)} but the input step has shape "
                    f"{tuple(x.shape)}: call functional.reset_net(net) before a new batch")
            mask = mask.to(x.device)
        return self._join(v, count, mask)

    # ------------------------------------------------------------- dynamics
    def single_step_functional_forward(self, inputs, states, **kwargs):
        if self.backend == "cupy":  # the fused kernel with T = 1
            out, states, _ = self._run_sequence(inputs[0].unsqueeze(0), states, record_v=False)
            return (out[0],), states
        v, count, mask = self._split(states)
        out, v, count = rules.step(inputs[0], v, count, mask, self.v_threshold, self.signed, self.neg_rule)
        return (out,), self._join(v, count, mask)

    def multi_step_functional_forward(self, inputs, states, **kwargs):
        out, states, _ = self._run_sequence(inputs[0], states, record_v=False)
        return (out,), states

    def _run_sequence(self, x_seq, states, record_v: bool):
        """All T steps of ``x_seq`` [T, ...]; returns (outputs, final states, v per step or None)."""
        v, count, mask = self._split(states)
        if self.backend == "cupy":
            return self._run_sequence_cupy(x_seq, v, count, mask, record_v)
        out, v, count, v_seq = rules.run_steps(x_seq, v, count, mask, self.v_threshold, self.signed,
                                               self.neg_rule, record_v)
        return out, self._join(v, count, mask), v_seq

    def _run_sequence_cupy(self, x_seq, v, count, mask, record_v: bool):
        """One fused launch for all steps; with ``record_v``, one launch per step (to read v)."""
        from . import cupy_backend

        snm = self.neg_rule == "snm"
        if not record_v:
            out, v, count = cupy_backend.multi_step(x_seq, v, count, mask, self.v_threshold, self.signed, snm)
            return out, self._join(v, count, mask), None
        outs, v_steps = [], []
        for t in range(x_seq.shape[0]):
            out, v, count = cupy_backend.multi_step(x_seq[t:t + 1], v, count, mask, self.v_threshold,
                                                    self.signed, snm)
            outs.append(out)
            v_steps.append(v)
        return torch.cat(outs), self._join(v, count, mask), torch.stack(v_steps)

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs):
        """One call runs all T steps; ``store_v_seq`` is honoured here instead of falling back
        to BaseNode's generic per-step path (which would bypass a fused kernel)."""
        states = self.materialize_states((x_seq,), tuple(self._memories.values()), "m")
        out, states, v_seq = self._run_sequence(x_seq, states, record_v=self.store_v_seq)
        for name, value in zip(self._memories, states, strict=True):
            self._memories[name] = value
        if self.store_v_seq:
            self.v_seq = v_seq
        return out

    # ------------------------------------------------------------------ SRP
    def begin_main_phase(self):
        """End the SRP pre-run: store the mask from the residual potential, then restart the
        neuron (v <- v0, count <- 0). A node that never ran keeps every neuron (mask None)."""
        if not self.srp:
            return
        v = self.v
        self.mask = rules.srp_mask(v, self.v_threshold) if isinstance(v, torch.Tensor) else None
        self.v = self.v_init
        if self.signed:
            self.count = 0.0

    def extra_repr(self):
        extra = f"v_threshold={self.v_threshold:.6g}, signed={self.signed}, srp={self.srp}"
        if self.signed:
            extra += f", neg_rule={self.neg_rule}"
        return extra + f", backend={self.backend}, step_mode={self.step_mode}"


class _FixedNode(SpikingNode):
    """A node whose kind (signed, srp) is fixed by its class."""

    SIGNED = False
    SRP = False

    def __init__(self, v_threshold, neg_rule="qcfs", step_mode="s", backend="torch", store_v_seq=False):
        super().__init__(v_threshold, signed=self.SIGNED, srp=self.SRP, neg_rule=neg_rule,
                         step_mode=step_mode, backend=backend, store_v_seq=store_v_seq)


class ConvertedIFNode(_FixedNode):
    """Half-threshold IF neuron of a converted QCFS layer (METHODS.md §2)."""


class SignedIFNode(_FixedNode):
    """Signed IF ("NegSpike", METHODS.md §3); ``neg_rule='snm'`` gives the SNM variant."""

    SIGNED = True


class SRPIFNode(_FixedNode):
    """IF neuron with the SRP output mask (METHODS.md §4)."""

    SRP = True


class SRPSignedIFNode(_FixedNode):
    """Signed IF neuron with the SRP mask on both signs (METHODS.md §4, SRP + NegSpike)."""

    SIGNED = True
    SRP = True


#: conversion method -> node class
METHOD_NODES = {"qcfs": ConvertedIFNode, "neg": SignedIFNode, "srp": SRPIFNode, "srp+neg": SRPSignedIFNode}
#: conversion method -> (signed, srp)
METHODS = {name: (cls.SIGNED, cls.SRP) for name, cls in METHOD_NODES.items()}


def node_for(method: str, v_threshold, step_mode="s", backend="torch", neg_rule="qcfs") -> SpikingNode:
    """The node that a QCFS layer becomes under conversion ``method``."""
    try:
        cls = METHOD_NODES[method]
    except KeyError:
        raise ValueError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}") from None
    return cls(v_threshold, neg_rule=neg_rule, step_mode=step_mode, backend=backend)


def spiking_nodes(net: torch.nn.Module):
    """All sjconv spiking nodes of ``net``, in module order."""
    return [m for m in net.modules() if isinstance(m, SpikingNode)]


def uses_srp(net: torch.nn.Module) -> bool:
    return any(node.srp for node in spiking_nodes(net))


def begin_main_phase(net: torch.nn.Module, nodes: Optional[list] = None):
    """SRP: end the pre-run of every SRP node in ``net`` (see :meth:`SpikingNode.begin_main_phase`)."""
    for node in nodes if nodes is not None else spiking_nodes(net):
        node.begin_main_phase()
