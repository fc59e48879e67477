"""Per-layer statistics of a converted SNN against its QCFS ANN, collected with forward hooks.

For a batch of images, a method and a number of main-run steps T, :func:`analyze` reports per
neuron layer (every QCFS module of the ANN and the spiking node at the same path of the SNN):

- firing rate: nonzero outputs (spike events) per neuron per step, split into positive and negative
  spikes; a group neuron's event carries k units (docs/methods.md#group-neuron), counted apart;
- the unevenness-error case fractions of docs/protocols.md#unevenness-statistics, comparing the ANN's QCFS activation ``a``
  with the SNN's mean output ``φ(T) = (1/T) Σ_t out[t]``;
- the relative error ``‖φ(T) − a‖ / ‖a‖`` over the whole batch;

and per synaptic layer (Conv/Linear) the synaptic operations of the SNN, the MACs of the ANN and
an energy estimate. :func:`error_vs_T` gives the relative error after every requested T from one
run of max(T) steps.

This module computes statistics only: its public functions return plain, JSON-serialisable
dicts and print nothing. The text table and the plots of those dicts are in
:mod:`sjconv.analysis_plots` (``format_layer_table``, ``plot_analysis``).

Nothing in the networks is modified: the hooks only read tensors (they return ``None``), are
removed in a ``finally`` block, and the simulation is the one of :func:`sjconv.neurons.protocol.run`,
so the logits are bit-identical to a run without analysis. Statistics are running sums (one
float64 sum of outputs per neuron layer, one spike-count map per synaptic layer), never a store
of all steps. SRP pre-run steps are counted per module and kept out of every main-run statistic;
their synaptic operations are reported separately.
"""

import weakref
from typing import Dict, Iterable, Optional, Sequence

import torch
import torch.nn as nn

from .errors import ConfigError, SjconvError
from .activations import activation_names
from .guards import check_chunk, check_step_list, check_steps_count, eval_mode, prepare_images
from .neurons import SpikingNode, protocol, rules
from .neurons.fold import fold_state, steps_view
from .neurons.modes import MULTI, step_mode_of

#: energy of one accumulate (a synaptic operation driven by a spike), pJ (45 nm, 32-bit float)
E_AC_PJ = 0.9
#: energy of one multiply-accumulate, pJ (45 nm, 32-bit float)
E_MAC_PJ = 4.6

#: case names of docs/protocols.md#unevenness-statistics (plus ``a0_below`` so that the fractions sum to 1)
CASES = ("a0_exact", "case1", "a0_below", "apos_exact", "case2", "case3")

_SYNAPTIC = (nn.modules.conv._ConvNd, nn.Linear)

#: a synaptic input x counts ``ceil(|x|/q - UNIT_SLACK)`` units (q: its group neuron's unit), so
#: k·q rounded to float counts k, and an average-pooled value counts its units rounded up
UNIT_SLACK = 1e-3


def _units(x: torch.Tensor, unit: float) -> torch.Tensor:
    """Units of each element of ``x`` (float64): ⌈|x|/q − slack⌉, the slack being
    :data:`UNIT_SLACK` plus 4 rounding errors of x's dtype (k·q in float16 may round up by
    k·2⁻¹¹), so that a value k·q counts k units and any other value its units rounded up."""
    ratio = x.double().abs() / unit
    eps = torch.finfo(x.dtype).eps if x.is_floating_point() else 0.0
    return torch.ceil(ratio * (1 - 4 * eps) - UNIT_SLACK).clamp_min(0)


def _unit_of(node: SpikingNode) -> float:
    """The value of one unit of ``node``'s spikes: q = θ/m for a group neuron, θ otherwise."""
    theta = float(node.v_threshold)
    return rules.group_quantum(theta, node.levels) if node.levels is not None else theta


# ------------------------------------------------------------------------------ ANN side
@torch.no_grad()
def _ann_activations(ann: nn.Module, images: torch.Tensor) -> Dict[str, torch.Tensor]:
    """QCFS outputs of ``ann`` on ``images`` (eval mode), keyed by module path."""
    acts: Dict[str, torch.Tensor] = {}
    calls: Dict[str, int] = {}

    def hook_for(name):
        def hook(module, inputs, output):
            calls[name] = calls.get(name, 0) + 1
            acts[name] = output.detach()
        return hook

    handles = [m.register_forward_hook(hook_for(name)) for name, m in ann.named_modules()
               if activation_names(m) is not None]
    try:
        with eval_mode(ann):
            ann(images)
    finally:
        for h in handles:
            h.remove()
    shared = sorted(name for name, n in calls.items() if n != 1)
    if shared:
        raise ConfigError(f"QCFS module(s) {', '.join(shared)} run more than once per forward pass; "
                         "per-layer analysis needs one module instance per activation layer")
    return acts


# ------------------------------------------------------------------------------ SNN side
def _fanout_map(module: nn.Module, step_shape: Sequence[int], device) -> torch.Tensor:
    """Number of outputs every input element of one sample connects to (float64, the sample's
    input shape). Conv: gradient of Σ conv(x, all-ones weight) w.r.t. x, which counts each
    (input element, output element) connection exactly, with stride, padding (any mode),
    dilation and groups. Linear: ``out_features`` for every element."""
    if isinstance(module, nn.Linear):
        return torch.full(tuple(step_shape), float(module.out_features), dtype=torch.float64, device=device)
    groups = module.groups
    weight = torch.ones((groups, module.in_channels // groups) + tuple(module.kernel_size),
                        dtype=torch.float64, device=device)
    x = torch.zeros((1,) + tuple(step_shape), dtype=torch.float64, device=device, requires_grad=True)
    with torch.enable_grad():
        module._conv_forward(x, weight, None).sum().backward()
    # one output channel per group was computed; every channel of the group connects alike
    return x.grad[0] * (module.out_channels // groups)


class _NeuronLayer:
    """Running sums of one spiking node: Σ out over main steps, spike counts, errors at checkpoints."""

    def __init__(self, name: str, node: SpikingNode, a: torch.Tensor):
        self.name, self.node, self.a = name, node, a
        self.a_norm = float(a.double().norm())
        self.seen = 0          # steps seen, pre-run included
        self.steps = 0         # main-run steps accumulated
        self.sum = None        # float64 Σ out over main steps, shape of a
        self.pos = 0
        self.neg = 0
        self.units = 0         # Σ |out| / unit: the units the spikes carry (= pos + neg unless group)
        self.errors: Dict[int, Optional[float]] = {}
        self.dtype = None

    def rel_error(self) -> Optional[float]:
        """‖φ − a‖ / ‖a‖ for the steps so far (None when ‖a‖ = 0: undefined)."""
        if self.a_norm == 0.0:
            return None
        return float((self.sum / self.steps - self.a.double()).norm()) / self.a_norm


class _SynapticLayer:
    """Per-input-element spike counts of one Conv/Linear layer (main run and pre-run)."""

    def __init__(self, name: str, module: nn.Module):
        self.name, self.module = name, module
        self.seen = 0
        self.analog = None     # True when it runs before any neuron layer: its input is the image
        self.fanout = None     # float64 map, shape of one sample's input
        self.batch = None
        self.count_main = None
        self.count_pre = None
        self.units_main = None  # float64 map: units of the main-run inputs (events unless from a group neuron)


class _Probe:
    """Context manager that hooks every neuron and synaptic layer of ``net`` while it runs
    ``tau`` pre-run steps and ``T`` main steps (as :func:`sjconv.neurons.protocol.run` feeds them).

    ``acts`` are the ANN's QCFS activations by path; ``checkpoints`` the main-run steps at which
    each neuron layer's relative error is recorded; ``ops`` turns synaptic counting on.
    """

    def __init__(self, net: nn.Module, acts: Dict[str, torch.Tensor], tau: int, T: int,
                 checkpoints: Iterable[int] = (), ops: bool = True):
        self.net, self.tau, self.T = net, int(tau), int(T)
        self.checkpoints = set(int(t) for t in checkpoints)
        modules = dict(net.named_modules())
        nodes = {name for name, m in modules.items() if isinstance(m, SpikingNode)}
        missing = sorted(set(acts) - nodes)
        extra = sorted(nodes - set(acts))
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"QCFS layers without a spiking node at the same path: {', '.join(missing)}")
            if extra:
                parts.append(f"spiking nodes without a QCFS layer run by the ANN: {', '.join(extra)}")
            raise ConfigError("the SNN does not match the ANN layer for layer: " + "; ".join(parts))
        self.neurons = [_NeuronLayer(name, modules[name], acts[name])
                        for name in modules if name in acts]
        self.synapses = [_SynapticLayer(name, m) for name, m in modules.items()
                         if ops and isinstance(m, _SYNAPTIC)]
        self._default_mode = step_mode_of(net)
        self._fold = fold_state(net)
        self._node_ran = False
        self._handles = []
        # group neurons send k units per event: their outputs are tagged with their unit q, and the
        # tag follows them through parameter-free modules (pooling, flatten, dropout) to a synapse
        self._grouped = any(layer.node.levels is not None for layer in self.neurons)
        self._carriers = [m for m in modules.values() if self._grouped and not isinstance(m, (SpikingNode,) + _SYNAPTIC)
                          and not list(m.children()) and not list(m.parameters(recurse=False))]
        self._units: Dict[int, tuple] = {}

    # ----------------------------------------------------------------- hooks
    def _steps_of(self, module, tensor):
        """One call's tensor as a block [n, N, ...]: 'm' modules get n steps at once, 's' one; in a
        folded network's multi-step call every module sees [n·N, ...] (sjconv.neurons.fold)."""
        folded = steps_view(self._fold, tensor)
        if folded is not None:
            return folded
        mode = getattr(module, "step_mode", self._default_mode)
        return tensor if mode == MULTI else tensor.unsqueeze(0)

    def _main_part(self, layer, block):
        """Advance ``layer.seen`` by the block's steps; return the main-run steps of the block and
        the pre-run steps (either may be empty)."""
        start, n = layer.seen, block.shape[0]
        layer.seen += n
        cut = min(max(self.tau - start, 0), n)
        return block[cut:], block[:cut]

    def _on_root(self, module, inputs):
        self._node_ran = False
        self._units = {}

    def _tag(self, tensor, unit: float):
        if isinstance(tensor, torch.Tensor):
            self._units[id(tensor)] = (weakref.ref(tensor), unit)

    def _unit_tag(self, tensor) -> Optional[float]:
        """The unit q of the group neuron whose output ``tensor`` is (through parameter-free
        modules), or None."""
        entry = self._units.get(id(tensor))
        return entry[1] if entry is not None and entry[0]() is tensor else None

    def _on_carrier(self, module, inputs, output):
        unit = self._unit_tag(inputs[0]) if len(inputs) == 1 else None
        if unit is not None:
            self._tag(output, unit)

    def _on_node(self, layer: _NeuronLayer):
        unit = _unit_of(layer.node)

        def hook(module, inputs, output):
            self._node_ran = True
            if self._grouped:
                self._tag(output, unit)
            block = self._steps_of(module, output)
            main, _ = self._main_part(layer, block)
            if main.shape[0] == 0:
                return
            if main.shape[1:] != layer.a.shape:
                raise ConfigError(f"layer '{layer.name}': SNN output step shape {tuple(main.shape[1:])} "
                                 f"differs from the ANN activation shape {tuple(layer.a.shape)}")
            if layer.sum is None:
                layer.a = layer.a.to(output.device)
                layer.sum = torch.zeros(layer.a.shape, dtype=torch.float64, device=output.device)
                layer.dtype = output.dtype
            for out in main:
                layer.steps += 1
                layer.sum += out.double()
                layer.pos = layer.pos + (out > 0).sum()  # tensors: no device sync per step
                layer.neg = layer.neg + (out < 0).sum()
                layer.units = layer.units + torch.round(out.double().abs() / unit).sum()
                if layer.steps in self.checkpoints:
                    layer.errors[layer.steps] = layer.rel_error()
        return hook

    def _on_synapse(self, layer: _SynapticLayer):
        def hook(module, inputs, output):
            block = self._steps_of(module, inputs[0])
            if layer.analog is None:
                layer.analog = not self._node_ran
                layer.batch = block.shape[1]
                step_shape = block.shape[2:]
                layer.fanout = _fanout_map(module, step_shape, block.device)
                layer.count_main = torch.zeros(step_shape, dtype=torch.int64, device=block.device)
                layer.count_pre = torch.zeros_like(layer.count_main)
                layer.units_main = torch.zeros(step_shape, dtype=torch.float64, device=block.device)
            main, pre = self._main_part(layer, block)
            if not layer.analog:
                events = (main != 0).sum(dim=(0, 1))
                layer.count_main += events
                layer.count_pre += (pre != 0).sum(dim=(0, 1))
                unit = self._unit_tag(inputs[0]) if self._grouped else None
                if unit is None:
                    layer.units_main += events
                else:
                    layer.units_main += _units(main, unit).sum(dim=(0, 1))
        return hook

    def __enter__(self):
        try:
            self._handles.append(self.net.register_forward_pre_hook(self._on_root))
            for layer in self.neurons:
                self._handles.append(layer.node.register_forward_hook(self._on_node(layer)))
            for layer in self.synapses:
                self._handles.append(layer.module.register_forward_hook(self._on_synapse(layer)))
            for module in self._carriers:
                self._handles.append(module.register_forward_hook(self._on_carrier))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc):
        self.remove()
        return False

    def remove(self):
        for h in self._handles:
            h.remove()
        self._handles = []

    def check_complete(self):
        """Every hooked module must have run exactly tau + T steps (one call per step or chunk)."""
        want = self.tau + self.T
        bad = [f"{layer.name} ({layer.seen})" for layer in self.neurons + self.synapses
               if layer.seen not in (0, want)]
        bad += [f"{layer.name} (0)" for layer in self.neurons if layer.seen == 0]
        if bad:
            raise SjconvError(f"expected every layer to run {want} steps; steps seen: {', '.join(bad)} "
                               "(modules shared between positions in the network are not supported)")


# -------------------------------------------------------------------------- helpers
def _run(ann, snn, images, T, tau, chunk, checkpoints, ops):
    """Checks (as :func:`sjconv.simulate.iter_logits` makes them, before the ANN runs), then the
    ANN's activations and one run of the protocol (:func:`sjconv.neurons.protocol.run`, ``T``
    main steps) under the probe; both networks in eval mode."""
    T = check_steps_count(T, "T")
    chunk = check_chunk(chunk)
    net, method, tau = protocol.converted_network(snn, tau)
    images = prepare_images(images, net)
    acts = _ann_activations(ann, images)
    with torch.no_grad(), eval_mode(net), _Probe(net, acts, tau, T, checkpoints, ops) as probe:
        for _ in protocol.run(net, images, T, tau, chunk):
            pass
    probe.check_complete()
    return probe, method, tau


def _tolerance(theta: float, dtype: Optional[torch.dtype], rtol: float, atol: float) -> float:
    eps = torch.finfo(dtype).eps if dtype is not None and dtype.is_floating_point else 0.0
    return max(rtol, 4.0 * eps) * theta + atol


def _cases(a: torch.Tensor, phi: torch.Tensor, tol: float) -> Dict[str, float]:
    a = a.double()
    zero = a <= tol
    above = phi > a + tol
    below = phi < a - tol
    exact = ~(above | below)
    total = a.numel()
    counts = {"a0_exact": zero & exact, "case1": zero & above, "a0_below": zero & below,
              "apos_exact": ~zero & exact, "case2": ~zero & above, "case3": ~zero & below}
    out = {k: int(v.sum()) / total for k, v in counts.items()}
    out["a_zero"] = int(zero.sum()) / total
    out["a_pos"] = 1.0 - out["a_zero"]
    return out


# ---------------------------------------------------------------------------- public
def analyze(ann: nn.Module, snn: nn.Module, images: torch.Tensor, T: int, tau: Optional[int] = None,
            chunk: Optional[int] = None, rtol: float = 1e-6, atol: float = 1e-12) -> dict:
    """Firing rates, docs/protocols.md#unevenness-statistics case fractions, relative errors and operation counts of ``snn`` (converted
    from ``ann``) on ``images`` after ``T`` main-run steps. Returns a JSON-serialisable dict.

    :param tau: SRP pre-run steps (default: the network's own); pre-run outputs are excluded from
        rates, cases and errors, their synaptic operations are reported as ``sops_prerun``
    :param chunk: in 'm' step mode, at most this many steps per network call
    :param rtol, atol: φ and a count as equal when ``|φ − a| <= rtol'·θ + atol``, with
        ``rtol' = max(rtol, 4·eps(output dtype))``: φ is a float mean of multiples of θ and a is
        θ·k/L rounded to the activation dtype, so exact comparison would misfile equal values,
        while any real difference is at least θ/(L·T). ``a = 0`` means ``a <= tol``.

    Per neuron layer (``layers``): ``name`` (module path), ``theta``, ``neurons`` (per sample),
    ``rate``/``rate_pos``/``rate_neg`` (nonzero, positive, negative outputs per neuron per step),
    ``spikes_per_image`` (spike events), ``units_per_image`` (the units they carry: k for a group
    neuron's event of value k·q, docs/methods.md#group-neuron; equal to the events otherwise), ``cases`` (fractions of all batch elements: ``a0_exact``, ``case1``
    (a=0, φ>a), ``a0_below``, ``apos_exact``, ``case2`` (a>0, φ>a), ``case3`` (a>0, φ<a), summing to
    1, and totals ``a_zero``, ``a_pos``), ``rel_error`` (None when ‖a‖ = 0).

    Operations (``ops``), all per image: for each Conv/Linear layer ``macs`` are the ANN's
    multiply-accumulates, counted as (input element, output element) connections of the layer,
    i.e. without products with padding zeros (the analytic out_numel·C_in/groups·k² count includes
    those and is larger for padded convolutions). A layer that runs before any neuron layer sees the
    analog image (``input: 'analog'``): in the SNN it costs ``snn_macs`` = its MACs at every executed
    step, pre-run included (an implementation caching the static image's result would pay it
    once). Every other layer costs ``sops`` = Σ over main steps and input elements of
    units(input) × the element's exact fan-out, and ``sops_prerun`` for SRP pre-run steps.
    units(x) is 1[x ≠ 0] for spikes of one unit (either sign; after average pooling a nonzero
    pooled value counts as one event); for an input that comes from a group neuron (directly or
    through parameter-free modules such as pooling) it is ⌈|x|/q − 10⁻³⌉, the k units of a
    multi-level spike k·q (a pooled value: its units rounded up): an event of k units costs k
    accumulates per connection. ``sop_events`` is the same sum with 1[x ≠ 0] (events, whatever
    they carry); the two are equal without group neurons.
    Bias additions, batch norm (assumed folded), pooling and neuron updates are not counted.
    Energy: SNN = (all SOPs, in units)·E_AC + snn_macs·E_MAC, ANN = macs·E_MAC, with E_AC = 0.9 pJ and
    E_MAC = 4.6 pJ (45 nm figures commonly used in the SNN literature).
    """
    probe, method, tau = _run(ann, snn, images, T, tau, chunk, checkpoints=(), ops=True)
    layers = []
    for layer in probe.neurons:
        theta = float(layer.node.v_threshold)
        step_numel = layer.a.numel()
        batch = layer.a.shape[0] if layer.a.dim() else 1
        denom = step_numel * layer.steps
        phi = layer.sum / layer.steps
        tol = _tolerance(theta, layer.dtype, rtol, atol)
        pos, neg = int(layer.pos), int(layer.neg)
        layers.append({
            "name": layer.name, "theta": theta, "neurons": step_numel // batch,
            "rate": (pos + neg) / denom, "rate_pos": pos / denom, "rate_neg": neg / denom,
            "spikes_per_image": (pos + neg) / batch, "units_per_image": float(layer.units) / batch,
            "cases": _cases(layer.a, phi, tol), "rel_error": layer.rel_error()})

    op_layers = []
    for s in probe.synapses:
        if s.analog is None:  # never ran
            continue
        per_sample = float(s.fanout.sum())
        op = {"name": s.name, "input": "analog" if s.analog else "spikes", "macs": per_sample,
              "sops": 0.0, "sops_prerun": 0.0, "snn_macs": 0.0, "sop_events": 0.0}
        if s.analog:
            op["snn_macs"] = per_sample * s.seen
        else:
            op["sops"] = float((s.units_main * s.fanout).sum()) / s.batch
            op["sop_events"] = float((s.count_main.double() * s.fanout).sum()) / s.batch
            op["sops_prerun"] = float((s.count_pre.double() * s.fanout).sum()) / s.batch
        op_layers.append(op)
    sops = sum(o["sops"] + o["sops_prerun"] for o in op_layers)
    snn_macs = sum(o["snn_macs"] for o in op_layers)
    ann_macs = sum(o["macs"] for o in op_layers)
    ops = {"layers": op_layers, "snn_sops_per_image": sops, "snn_macs_per_image": snn_macs,
           "snn_sop_events_per_image": sum(o["sop_events"] + o["sops_prerun"] for o in op_layers),
           "ann_macs_per_image": ann_macs,
           "snn_energy_pj": sops * E_AC_PJ + snn_macs * E_MAC_PJ, "ann_energy_pj": ann_macs * E_MAC_PJ,
           "e_ac_pj": E_AC_PJ, "e_mac_pj": E_MAC_PJ}
    return {"T": int(T), "method": method, "tau": tau, "images": int(images.shape[0]),
            "layers": layers, "ops": ops}


def error_vs_T(ann: nn.Module, snn: nn.Module, images: torch.Tensor, Ts: Iterable[int],
               tau: Optional[int] = None, chunk: Optional[int] = None) -> dict:
    """Relative error ‖φ(t) − a‖ / ‖a‖ per neuron layer for every t in ``Ts``, from ONE simulation
    of max(Ts) main steps (φ(t) from a running sum). Returns
    ``{"Ts": [...], "method", "tau", "layers": [{"name", "rel_error": [one value per t]}]}``
    (a value is None where ‖a‖ = 0)."""
    steps = check_step_list(Ts, "Ts")
    probe, method, tau = _run(ann, snn, images, steps[-1], tau, chunk, checkpoints=steps, ops=False)
    return {"Ts": steps, "method": method, "tau": tau,
            "layers": [{"name": layer.name, "rel_error": [layer.errors[t] for t in steps]}
                       for layer in probe.neurons]}
