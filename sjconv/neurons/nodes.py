"""SpikingJelly 2.0 neuron nodes for converted QCFS networks.

All nodes share one implementation (:class:`SpikingNode`) and differ in two switches:
``signed`` (negative spikes, docs/methods.md#signed-neuron) and ``prerun`` (what a pre-run phase derives per
neuron: ``'srp'`` an output mask, docs/methods.md#srp; ``'cos'`` a calibrated initial potential, docs/methods.md#cos; see
:mod:`sjconv.neurons.protocol`).

- :class:`ConvertedIFNode`  -- half-threshold IF (v0 = θ/2, soft reset, output θ·spike)
- :class:`SignedIFNode`     -- NegSpike: also takes back earlier spikes with negative ones
- :class:`SRPIFNode`        -- IF whose output is multiplied by a per-sample, per-neuron mask
- :class:`SRPSignedIFNode`  -- both
- :class:`COSIFNode`        -- IF restarted from COS-calibrated initial potentials
- :class:`COSSignedIFNode`  -- signed IF restarted from COS-calibrated potentials
- :class:`GroupNode`        -- group neuron: m members sharing one potential, multi-level spikes (docs/methods.md#group-neuron)
- :class:`SignedGroupNode`  -- group neuron that also takes back units with negative ones

They are ``BaseNode`` subclasses following the 2.0 recipe: the per-step transition is
``single_step_functional_forward`` (pure, states passed explicitly), multi-step mode calls
``multi_step_functional_forward`` once per call, states live in ``self._memories`` (``v``,
then ``count`` for signed nodes, then ``mask`` for SRP nodes) and are restored by ``reset()``.
The membrane (and the signed count) is float64 for float64 inputs and float32 for every other
input dtype (:func:`rules.state_dtype`).

The node carries what a run needs to know about it: θ is the buffer ``theta`` (so it is in the
``state_dict``; ``v_threshold`` reads it as a Python float), stored in the dtype of the tensor it
was given (a float64 QCFS threshold stays exact; a Python float gives float32), and
``prerun``/``prerun_steps`` say which pre-run the node expects and how long it is, so
:func:`sjconv.simulate` finds the protocol from any network or wrapper holding these nodes.
Nodes refuse to run under ``torch.compile`` (:meth:`SpikingNode.forward`, :mod:`sjconv.guards`).
"""

import weakref
from typing import Optional

import torch
from spikingjelly.activation_based.neuron import BaseNode

from .. import catalog
from ..catalog import check_levels, check_neg_rule
from ..errors import ConfigError
from ..catalog import PRERUNS, prerun_kind
from . import dynamics, rules
from .kernels import check_backend, get_backend
from .modes import MULTI, SINGLE
from .records import NeuronKind, NeuronState

__all__ = ["SpikingNode", "ConvertedIFNode", "SignedIFNode", "SRPIFNode", "SRPSignedIFNode", "COSIFNode",
           "COSSignedIFNode", "GroupNode", "SignedGroupNode", "NODE_CLASSES", "GROUP_NODE_CLASSES"]


def _theta_dtype(v_threshold) -> torch.dtype:
    """Dtype of the ``theta`` buffer: that of a floating tensor θ, else float32."""
    if isinstance(v_threshold, torch.Tensor) and v_threshold.is_floating_point():
        return v_threshold.dtype
    return torch.float32


def _theta_of(v_threshold) -> float:
    if isinstance(v_threshold, torch.Tensor) and v_threshold.numel() != 1:
        raise ConfigError(f"v_threshold must be one value (one θ per layer), got a tensor of shape "
                          f"{tuple(v_threshold.shape)}: per-channel thresholds are not supported")
    theta = float(v_threshold.detach().reshape(-1)[0]) if isinstance(v_threshold, torch.Tensor) \
        else float(v_threshold)
    if not theta > 0 or theta == float("inf"):
        raise ConfigError(f"v_threshold must be finite and > 0, got {theta}")
    return theta


class SpikingNode(BaseNode):
    """Converted IF neuron with optional negative spikes (``signed``) and a pre-run (``prerun``).

    :param v_threshold: θ, taken from the QCFS layer (a Python float or a 1-element tensor);
        stored as the buffer ``theta``, in the tensor's dtype (float32 for a Python float)
    :param signed: emit negative spikes that take back earlier positive ones (docs/methods.md#signed-neuron)
    :param prerun: ``None``, ``'srp'`` (outputs multiplied by the mask set at the end of the
        pre-run, docs/methods.md#srp) or ``'cos'`` (main run restarted from calibrated potentials, docs/methods.md#cos)
    :param prerun_steps: length of the pre-run (τ for SRP, ρ for COS); default from
        :data:`sjconv.catalog.PRERUNS`; 0 without a pre-run
    :param neg_rule: ``'qcfs'`` (v0 = θ/2, negative at v < 0) or ``'snm'`` (v0 = 0, negative
        at v <= -θ, the signed neuron with memory of Wang et al.); signed nodes only
    :param backend: ``'torch'`` (a loop of torch operations; trainable) or ``'cupy'`` (one fused
        kernel launch per call running all steps; CUDA inputs, inference only)
    :param surrogate_function: surrogate derivative of the firing condition used when gradients
        are needed (default: the ZIF triangle, γ = 1, :func:`rules.zif`); any
        ``spikingjelly.activation_based.surrogate`` function. The forward never changes.
    :param levels: None for the IF kinds; an int m >= 1 makes the node a group neuron of m members
        (docs/methods.md#group-neuron: quantum q = θ/m, member thresholds j·q, start q/2, outputs k·q with
        k units in 0..m, or -m..m when ``signed``); group neurons take no pre-run

    Training (docs/protocols.md#fine-tuning): with the torch backend, a run under grad mode whose input or θ
    requires grad goes through :func:`rules.run_surrogate_steps` (same spikes, surrogate
    gradients; θ gets both the firing-condition and the amplitude path, the reset is in the
    graph, the start potential θ/2 is a constant). :meth:`learnable_threshold` makes θ a parameter.
    """

    def __init__(self, v_threshold, signed: bool = False, prerun: Optional[str] = None,
                 prerun_steps: Optional[int] = None, neg_rule: str = "qcfs", step_mode: str = SINGLE,
                 backend: str = "torch", store_v_seq: bool = False,
                 surrogate_function=None, levels: Optional[int] = None):
        theta = _theta_of(v_threshold)
        levels = check_levels(levels)
        kind = prerun_kind(prerun)
        steps = kind.check_steps(prerun_steps) if kind is not None else 0
        if kind is None and prerun_steps:
            raise ConfigError(f"prerun_steps={prerun_steps} given to a node without a pre-run")
        check_neg_rule(neg_rule, signed)
        if levels is not None and kind is not None:
            raise ConfigError(f"group neurons (levels={levels}) take no pre-run; got prerun='{prerun}'")
        super().__init__(v_threshold=theta, v_reset=None,
                         surrogate_function=surrogate_function if surrogate_function is not None else rules.zif(),
                         detach_reset=False, step_mode=step_mode, store_v_seq=store_v_seq)
        # BaseNode stored θ through the setter (float32); keep the given tensor's dtype and exact value
        self.register_buffer("theta", torch.tensor([theta], dtype=_theta_dtype(v_threshold)))
        self.signed = bool(signed)
        self.prerun = prerun
        self.prerun_steps = steps
        self.neg_rule = neg_rule
        self.levels = levels
        self.backend = check_backend(backend)
        self.set_reset_value("v", self.v_init)
        self.v = self.v_init
        if self.signed:
            self.register_memory("count", 0.0)
        if self.srp:
            self.register_memory("mask", None)
        self._in_prerun = False
        self._cos_v0 = None

    # -------------------------------------------------------------- backend
    @property
    def backend(self) -> str:
        """The neuron backend (:data:`sjconv.neurons.BACKENDS`); assigning one checks it then, as
        building the node does, so that an unknown or unusable backend fails on the assignment,
        not when the node first runs."""
        return self.__dict__.get("_backend") or self.__dict__.get("backend", "torch")

    @backend.setter
    def backend(self, name: str):
        self.__dict__["_backend"] = check_backend(name)

    # -------------------------------------------------------------- threshold
    @property
    def v_threshold(self) -> float:
        """θ as a Python float, read from the ``theta`` buffer (cached per tensor version on
        CUDA, so a run does not synchronise the device for it)."""
        theta = self.theta
        if not theta.is_cuda:
            return float(theta.detach().reshape(-1)[0])
        key = (id(theta), theta.data_ptr(), theta._version)
        cached = self.__dict__.get("_theta_cache")
        if cached is None or cached[0] != key:
            cached = (key, float(theta.detach().reshape(-1)[0]))
            self.__dict__["_theta_cache"] = cached
        return cached[1]

    @v_threshold.setter
    def v_threshold(self, value):
        value = _theta_of(value)
        if "theta" not in self._buffers and "theta" not in self._parameters:
            self.register_buffer("theta", torch.tensor([value], dtype=torch.float32))
        else:
            with torch.no_grad():
                self.theta.fill_(value)
            self._refresh_start_value()

    def learnable_threshold(self, learnable: bool = True) -> "SpikingNode":
        """Make θ a trainable parameter (or a buffer again); its ``state_dict`` key stays ``theta``."""
        value = self.theta.detach().clone()
        if "theta" in self._parameters:
            del self._parameters["theta"]
        else:
            del self._buffers["theta"]
        if learnable:
            self.theta = torch.nn.Parameter(value)
        else:
            self.register_buffer("theta", value)
        return self

    def forward(self, *args, **kwargs):
        """BaseNode's dispatch by step mode, refused under ``torch.compile`` (:mod:`sjconv.guards`)."""
        if torch.compiler.is_compiling():
            from .no_compile import refuse_compile   # loaded only here: torch._dynamo is loaded already
            refuse_compile()
        return super().forward(*args, **kwargs)

    @property
    def v_init(self) -> float:
        """Potential every neuron starts from: θ/2 (a group neuron: q/2 = θ/(2m)), or 0 for the SNM
        signed rule."""
        return rules.start_potential(self.v_threshold, self.signed, self.neg_rule, self.levels)

    @property
    def kind(self) -> NeuronKind:
        """The fixed facts of this node's neurons that a layer call needs (:mod:`sjconv.neurons.records`)."""
        return NeuronKind(self.signed, self.neg_rule, self.v_threshold, self.levels)

    def _surrogate(self) -> dynamics.Surrogate:
        return dynamics.Surrogate(self.theta, self.surrogate_function)

    @property
    def kind_key(self) -> tuple:
        """This node's kind as the method table names it: ``(signed, prerun, group)``
        (:attr:`sjconv.catalog.MethodSpec.kind`)."""
        return (self.signed, self.prerun, self.group)

    @property
    def group(self) -> bool:
        """Whether this is a group neuron (docs/methods.md#group-neuron, ``levels`` members)."""
        return self.levels is not None

    def _refresh_start_value(self):
        """After θ changed: the reset value of ``v`` (and ``v`` itself before any run) follow."""
        self.set_reset_value("v", self.v_init)
        if not isinstance(self.v, torch.Tensor):
            self.v = self.v_init

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._refresh_start_value()

    @property
    def srp(self) -> bool:
        """Whether outputs are masked by an SRP pre-run (docs/methods.md#srp)."""
        return self.prerun == "srp"

    @property
    def cos(self) -> bool:
        """Whether the main run restarts from COS-calibrated potentials (docs/methods.md#cos)."""
        return self.prerun == "cos"

    # ----------------------------------------------------------------- states
    def _split(self, states) -> NeuronState:
        """The :class:`NeuronState` (v, count or None, mask or None) of the registered-order state tuple."""
        v, rest = states[0], list(states[1:])
        count = rest.pop(0) if self.signed else None
        mask = rest.pop(0) if self.srp else None
        made = self.__dict__.get("_kernel_made")
        owned = made is not None and made[0]() is v and (made[1] is None or made[1]() is count)
        return NeuronState(v, count, mask, owned)

    def _returned(self, state: NeuronState, fresh: bool = True):
        """The registered-order state tuple of a call's result; remembers (weakly) the tensors a
        fused kernel made for this node, so that its next call may update them in place: they are
        the node's own while its memories still hold them and nobody has read them from outside
        (:meth:`__getattr__`, :meth:`memories`), so a monitor's record or a user's ``node.v`` is
        never written over."""
        if fresh and get_backend(self.backend).fused and isinstance(state.v, torch.Tensor) \
                and not state.v.requires_grad:
            count = weakref.ref(state.count) if isinstance(state.count, torch.Tensor) else None
            self.__dict__["_kernel_made"] = (weakref.ref(state.v), count)
        else:
            self.__dict__.pop("_kernel_made", None)
        return self._join(state)

    def _hand_out(self):
        """A state tensor is read from outside: the next fused call writes a new one instead of
        updating it in place (a monitor's record or a kept ``node.v`` must not change later)."""
        self.__dict__.pop("_kernel_made", None)

    def __getattr__(self, name: str):
        memories = self.__dict__.get("_memories")
        if memories is not None and name in memories:
            self._hand_out()
        return super().__getattr__(name)

    def memories(self):
        self._hand_out()
        return super().memories()

    def named_memories(self):
        self._hand_out()
        return super().named_memories()

    def _join(self, state: NeuronState):
        """The registered-order state tuple of a :class:`NeuronState`."""
        return (state.v,) + ((state.count,) if self.signed else ()) + ((state.mask,) if self.srp else ())

    def materialize_states(self, inputs, states, step_mode):
        """Initial values become tensors shaped like one time step of the input, in the state
        dtype of the input (:func:`rules.state_dtype`: float64 for float64, else float32): ``v``
        starts at :attr:`v_init` (from the current θ), ``count`` at 0. State carried from the
        last call keeps its values."""
        x = inputs[0][0] if step_mode == MULTI else inputs[0]
        v, count, mask = self._split(states)[:3]
        dtype = rules.state_dtype(x.dtype)

        def as_state(value, fill):
            if isinstance(value, torch.Tensor) and value.shape == x.shape:
                return value.to(device=x.device, dtype=dtype)
            # same layout as the input (e.g. channels_last), so fused kernels need no copy
            return torch.full_like(x, fill, dtype=dtype)

        v = as_state(v, self.v_init)
        if self.signed:
            count = as_state(count, 0.0)
        if mask is not None:
            if mask.shape != x.shape:
                raise ConfigError(
                    f"SRP mask has shape {tuple(mask.shape)} but the input step has shape "
                    f"{tuple(x.shape)}: call functional.reset_net(net) before a new batch")
            mask = mask.to(x.device)
        return self._join(NeuronState(v, count, mask))

    def reset(self):
        super().reset()
        self._in_prerun = False
        self._cos_v0 = None

    # ------------------------------------------------------------- dynamics
    def single_step_functional_forward(self, inputs, states, **kwargs):
        if self._in_prerun and self.cos:
            raise ConfigError(
                "COS calibration needs all of its pre-run steps in one multi-step call: run the pre-run "
                "with sjconv.protocol.run_prerun(net, images) (it switches to multi-step for that call), "
                "or use sjconv.simulate")
        out, state = dynamics.step(inputs[0], self._split(states), self.kind, self.backend, self._surrogate())
        return (out,), self._returned(state)

    def multi_step_functional_forward(self, inputs, states, **kwargs):
        out, states, _ = self._run_sequence(inputs[0], states, record_v=False)
        return (out,), states

    def _run_sequence(self, x_seq, states, record_v: bool):
        """All T steps of ``x_seq`` [T, ...]; returns (outputs, final states, v per step or None)."""
        out, state, v_seq = dynamics.run_sequence(x_seq, self._split(states), self.kind, self.backend, record_v,
                                                  self._surrogate())
        return out, self._returned(state, fresh=not record_v), v_seq

    def multi_step_forward(self, x_seq: torch.Tensor, *args, **kwargs):
        """One call runs all T steps; ``store_v_seq`` is honoured here instead of falling back
        to BaseNode's generic per-step path (which would bypass a fused kernel). During a COS
        pre-run the call first calibrates the layer on its own input (:meth:`_calibrate`)."""
        states = self.materialize_states((x_seq,), tuple(self._memories.values()), MULTI)
        if self._in_prerun and self.cos:
            states = self._calibrate(x_seq, states)
        out, states, v_seq = self._run_sequence(x_seq, states, record_v=self.store_v_seq)
        for name, value in zip(self._memories, states, strict=True):
            self._memories[name] = value
        if self.store_v_seq:
            self.v_seq = v_seq
        return out

    # --------------------------------------------------------------- pre-run
    def _calibrate(self, x_seq, states):
        """COS (docs/methods.md#cos): pre-simulate this call's steps from v0 = θ/2 with the plain IF rule, keep the
        calibrated initial potentials, and return the states to run the same steps from them
        (their outputs are the next layer's calibration input)."""
        if self._cos_v0 is not None:
            raise ConfigError("COS calibration got a second pre-run call: the pre-run steps must reach "
                              "the node in one multi-step call (sjconv.protocol.run_prerun does this)")
        state = self._split(states)
        with torch.no_grad():
            self._cos_v0 = rules.cos_initial_potential(x_seq, self.v_threshold, state.v.detach())
        return self._join(NeuronState(self._cos_v0.clone(), torch.zeros_like(state.v) if self.signed else None,
                                      state.mask))

    def begin_prerun(self):
        """Start the pre-run phase: every state back to its start (SRP: no mask yet; COS: the
        next multi-step call calibrates)."""
        self.reset()
        self._in_prerun = self.prerun is not None

    def end_prerun(self):
        """End the pre-run: derive the per-neuron state of this node's pre-run kind from it, then
        restart (v <- start potential, count <- 0). SRP: the mask from the residual potential
        (a node that never ran keeps every neuron); COS: the calibrated potentials become the
        start potentials (a node that never ran starts from θ/2)."""
        if self.srp:
            v = self.v
            self.mask = rules.srp_mask(v, self.v_threshold) if isinstance(v, torch.Tensor) else None
        self.v = self._cos_v0 if (self.cos and self._cos_v0 is not None) else self.v_init
        if self.signed:
            self.count = 0.0
        self._in_prerun = False
        self._cos_v0 = None

    def extra_repr(self):
        extra = f"v_threshold={self.v_threshold:.6g}, signed={self.signed}"
        if self.levels is not None:
            extra += f", levels={self.levels}"
        if self.prerun:
            extra += f", prerun={self.prerun}, prerun_steps={self.prerun_steps}"
        if self.signed:
            extra += f", neg_rule={self.neg_rule}"
        return extra + f", backend={self.backend}, step_mode={self.step_mode}"


class _FixedNode(SpikingNode):
    """A node whose kind (signed, prerun) is fixed by its class."""

    SIGNED = False
    PRERUN: Optional[str] = None

    def __init__(self, v_threshold, neg_rule="qcfs", step_mode=SINGLE, backend="torch", store_v_seq=False,
                 prerun_steps=None, surrogate_function=None):
        super().__init__(v_threshold, signed=self.SIGNED, prerun=self.PRERUN, prerun_steps=prerun_steps,
                         neg_rule=neg_rule, step_mode=step_mode, backend=backend, store_v_seq=store_v_seq,
                         surrogate_function=surrogate_function)


class ConvertedIFNode(_FixedNode):
    """Half-threshold IF neuron of a converted QCFS layer (docs/methods.md#if-neuron)."""


class SignedIFNode(_FixedNode):
    """Signed IF ("NegSpike", docs/methods.md#signed-neuron); ``neg_rule='snm'`` gives the SNM variant."""

    SIGNED = True


class SRPIFNode(_FixedNode):
    """IF neuron with the SRP output mask (docs/methods.md#srp)."""

    PRERUN = "srp"


class SRPSignedIFNode(_FixedNode):
    """Signed IF neuron with the SRP mask on both signs (docs/methods.md#srp, SRP + NegSpike)."""

    SIGNED = True
    PRERUN = "srp"


class COSIFNode(_FixedNode):
    """IF neuron whose main run starts from COS-calibrated potentials (docs/methods.md#cos)."""

    PRERUN = "cos"


class COSSignedIFNode(_FixedNode):
    """Signed IF (docs/methods.md#signed-neuron) started from COS potentials calibrated with the plain IF rule (docs/methods.md#cos)."""

    SIGNED = True
    PRERUN = "cos"


class _GroupNode(SpikingNode):
    """A group neuron whose signedness is fixed by its class (docs/methods.md#group-neuron); no pre-run."""

    SIGNED = False
    PRERUN: Optional[str] = None

    def __init__(self, v_threshold, levels: int = 4, neg_rule="qcfs", step_mode=SINGLE, backend="torch",
                 store_v_seq=False, surrogate_function=None):
        super().__init__(v_threshold, signed=self.SIGNED, levels=levels, neg_rule=neg_rule, step_mode=step_mode,
                         backend=backend, store_v_seq=store_v_seq, surrogate_function=surrogate_function)


class GroupNode(_GroupNode):
    """Group neuron ("GN", Lyu et al., ICASSP 2024): m members with thresholds q, 2q, ..., mq
    (q = θ/m) share one potential; a step sends k·q, k the members at or above threshold (docs/methods.md#group-neuron)."""


class SignedGroupNode(_GroupNode):
    """Group neuron with negative units ("GN + Neg", docs/methods.md#group-neuron): takes back up to m earlier units."""

    SIGNED = True


#: group node classes, by signed
GROUP_NODE_CLASSES = {cls.SIGNED: cls for cls in (GroupNode, SignedGroupNode)}

#: every node class, by (signed, prerun)
NODE_CLASSES = {(cls.SIGNED, cls.PRERUN): cls for cls in (ConvertedIFNode, SignedIFNode, SRPIFNode,
                                                          SRPSignedIFNode, COSIFNode, COSSignedIFNode)}
assert set(p for _, p in NODE_CLASSES) == {None, *PRERUNS}

# the node class of every node kind, attached to the method records of the catalog (MethodSpec.node)
for _cls in NODE_CLASSES.values():
    catalog.attach("node", (_cls.SIGNED, _cls.PRERUN, False), _cls)
for _cls in GROUP_NODE_CLASSES.values():
    catalog.attach("node", (_cls.SIGNED, None, True), _cls)
