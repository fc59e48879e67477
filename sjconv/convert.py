"""QCFS ANN -> SpikingJelly network, by walking the module tree.

Every QCFS activation (``sjconv.QCFS`` or a reference repository's own class, recognised and
checked by :mod:`sjconv.activations`) becomes a spiking node whose threshold is the trained θ;
every supported torch layer is kept; every other module that holds no parameters of its own (a
``nn.Sequential``, a residual block, a user's own model class) is kept with its own ``forward``
and converted children. Nothing is keyed on layer names. What cannot convert exactly raises a
:class:`~sjconv.errors.ConversionError` naming the module, or the line of ``forward``, and the fix,
before any simulation.

What the model's own ``forward`` does between its layers is checked by watching one probe forward
(:mod:`sjconv.modelcheck`, docs/protocols.md#forward-rule): only maps linear in the activations
that treat every sample alone are accepted; anything else is refused naming its file and line,
and a map across the batch is accepted in single-step mode only. The same probe chooses the layout
of multi-step mode (:mod:`sjconv.neurons.fold`): ``'layers'`` (SpikingJelly ``layer`` modules,
tensors ``[T, N, ...]``) when ``forward`` only calls modules and adds or scales their outputs, else
``'folded'`` (the model's own modules and ``forward`` on ``[T·N, ...]``; each node unfolds T
itself), so a forward with ``x.view(x.size(0), -1)``, ``torch.flatten(x, 1)``, ``torch.cat`` or
functional pooling runs in multi-step mode with the results of single-step mode.
``ConvertedSNN.layout`` says which.
"""

import copy
from typing import Callable, Dict, Optional, Tuple, Type

import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, layer

from .activations import activation_names, check_activation, holds_threshold, not_an_activation
from .catalog import check_levels
from .errors import ConfigError, ConversionError
from .guards import check_device, check_finite_tensors
from .modelcheck import inspect_forward
from .neurons import ConvertedSNN, check_backend, get_backend, node_for, resolve, spiking_nodes, step_mode_of, unwrap
from .neurons.modes import STEP_MODES
from .neurons import fold

__all__ = ["convert", "ConvertedSNN", "LAYER_FACTORIES", "LAYOUTS", "unwrap", "step_mode_of"]

#: the layouts of multi-step mode (:mod:`sjconv.neurons.fold`), and 'auto' to choose one
LAYOUTS = fold.LAYOUTS


def _with_state(new: nn.Module, old: nn.Module) -> nn.Module:
    """``new`` with the parameters and buffers of ``old``, on ``old``'s device, in its floating
    dtype (a float64 or float16 ANN gives a float64/float16 layer) and in its memory format
    (channels_last weights stay channels_last, so the SNN runs the ANN's convolution kernels)."""
    state = old.state_dict()
    floating = [t for t in state.values() if t.is_floating_point()]
    if floating:
        new = new.to(device=floating[0].device, dtype=floating[0].dtype)
    new.load_state_dict(state)
    new = new.to(next(iter(state.values())).device) if state else new
    for name, tensor in list(new.named_parameters()) + list(new.named_buffers()):
        source = state.get(name)
        if source is not None and source.stride() != tensor.stride():
            tensor.data = torch.empty_like(source).copy_(tensor.data)   # empty_like keeps a dense layout
    return new


def _conv2d(m: nn.Conv2d):
    return _with_state(layer.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                    m.dilation, m.groups, m.bias is not None, m.padding_mode), m)


def _batchnorm(cls):
    def make(m):
        return _with_state(cls(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats), m)
    return make


def _linear(m: nn.Linear):
    return _with_state(layer.Linear(m.in_features, m.out_features, m.bias is not None), m)


#: ANN module type -> factory of its SpikingJelly layer (exact type match)
LAYER_FACTORIES: Dict[Type[nn.Module], Callable[[nn.Module], nn.Module]] = {
    nn.Conv2d: _conv2d,
    nn.BatchNorm1d: _batchnorm(layer.BatchNorm1d),
    nn.BatchNorm2d: _batchnorm(layer.BatchNorm2d),
    nn.Linear: _linear,
    nn.AvgPool2d: lambda m: layer.AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode,
                                            m.count_include_pad, m.divisor_override),
    nn.AdaptiveAvgPool2d: lambda m: layer.AdaptiveAvgPool2d(m.output_size),
    nn.Flatten: lambda m: layer.Flatten(m.start_dim, m.end_dim),
    nn.Dropout: lambda m: layer.Dropout(m.p) if m.p < 1 else nn.Identity(),
    nn.Identity: lambda m: nn.Identity(),
}

_HINTS = {
    nn.ReLU: "only QCFS activations become spiking neurons; train (or fine-tune) with sjconv.QCFS instead of ReLU",
    nn.MaxPool2d: "max pooling of spikes is not equivalent to the ANN; use nn.AvgPool2d (as the QCFS models do)",
}


def _check_batch_independent(module: nn.Module, where: str) -> None:
    """Refuse a layer whose eval-mode output for one image depends on the other images (and, with
    T folded into the batch, on the other time steps): batch norm without running statistics."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is None:
        raise ConversionError(
            f"cannot convert module '{where}' of type {type(module).__name__}: it has no running statistics "
            "(track_running_stats=False), so it normalises with the statistics of each batch, mixing images and "
            "time steps; train it with track_running_stats=True (the default)")


def _convert_module(module: nn.Module, path: str, make_node) -> nn.Module:
    """The converted counterpart of ``module`` (a private deep copy: containers are edited in place),
    keeping the torch layers themselves (the folded layout; :func:`_as_layers` swaps them for their
    SpikingJelly ``layer`` counterparts)."""
    where = path or "the model itself"
    if activation_names(module) is not None:
        theta, levels = check_activation(module, path)
        return make_node(theta, levels)
    if type(module) in LAYER_FACTORIES:
        _check_batch_independent(module, where)
        return module
    children = list(module.named_children())
    own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
    builtin = (type(module).__module__.startswith("torch.") and not children
               and not isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)))
    if not own and not builtin and holds_threshold(module) is None:
        for name, child in children:  # the module keeps its class and forward
            module._modules[name] = _convert_module(child, f"{path}.{name}" if path else name, make_node)
        return module
    hint = next((h for t, h in _HINTS.items() if isinstance(module, t)), None)
    theta = holds_threshold(module)
    if hint is None and theta is not None:
        hint = not_an_activation(module, theta)
    hint = hint or ("supported: QCFS activations, " + ", ".join(t.__name__ for t in LAYER_FACTORIES)
                    + ", and modules without parameters of their own built from them")
    raise ConversionError(f"cannot convert module '{where}' of type {type(module).__name__}: {hint}")


def _as_layers(module: nn.Module) -> nn.Module:
    """``module`` with every torch layer replaced by its SpikingJelly ``layer`` counterpart."""
    factory = LAYER_FACTORIES.get(type(module))
    if factory is not None:
        return factory(module)
    for name, child in list(module._modules.items()):
        if child is not None:
            module._modules[name] = _as_layers(child)
    return module


def _choose_layout(plan, layout: str, step_mode: str) -> Tuple[str, str]:
    """``(layout, reason)``: the layout asked for, or for 'auto' the layers layout when the model's
    forward allows it (:func:`sjconv.modelcheck.inspect_forward`), else the folded one. A forward
    that mixes the samples of its batch is refused in multi-step mode and folded in single-step mode."""
    if plan.mixes_batch is not None:
        if step_mode == "m":
            raise ConversionError(plan.mixes_batch)
        if layout == "layers":
            raise ConfigError(f"layout='layers' cannot run this model: {plan.mixes_batch}")
        return "folded", plan.mixes_batch
    reason = plan.fold_reason
    if layout == "layers" and reason is not None:
        raise ConfigError(f"layout='layers' cannot run this model in multi-step mode: {reason}; "
                          "use layout='auto' (it folds T into the batch) or change that line")
    if layout == "auto":
        layout = "folded" if reason is not None else "layers"
    return layout, reason or "layout='folded' was asked for"


def convert(ann: nn.Module, method: str = "qcfs", step_mode: str = "m", backend: str = "torch",
            tau: Optional[int] = None, neg_rule: str = "qcfs", levels: Optional[int] = None,
            layout: str = "auto", example: Optional[torch.Tensor] = None) -> ConvertedSNN:
    """Convert a QCFS ANN into a SpikingJelly SNN.

    :param ann: a QCFS ANN (left untouched; parameters are copied, dtype and device kept)
    :param method: a name of :data:`sjconv.neurons.METHODS`: ``'qcfs'`` (half-threshold IF),
        ``'neg'`` (signed IF), ``'srp'`` (SRP-masked IF), ``'srp+neg'``, ``'cos'`` (COS-calibrated
        IF), ``'cos+neg'``, ``'gn'`` (group neurons, multi-level spikes) or ``'gn+neg'``
    :param step_mode: ``'m'`` (T folded into the batch) or ``'s'`` (one step per call)
    :param backend: ``'torch'`` (torch operations, any device) or ``'cupy'`` (one fused CUDA kernel
        per neuron layer and call; CUDA inputs, inference only)
    :param tau: pre-run steps of SRP (τ) and COS (ρ) methods (default from the method table;
        must be 0/None for methods without a pre-run); the nodes carry it
    :param neg_rule: negative-spike rule of signed nodes: ``'qcfs'`` or ``'snm'``
    :param levels: members m of each group neuron (``'gn'``, ``'gn+neg'``); None: each QCFS layer's own
        L, so that the SNN at T = 1 is the ANN (docs/methods.md#group-neuron); refused for other methods
    :param layout: how multi-step mode runs the model (:mod:`sjconv.neurons.fold`): ``'auto'``
        (``'layers'`` when the model's forward allows it, else ``'folded'``), ``'layers'`` (refused,
        naming the line, when the forward needs folding) or ``'folded'``
    :param example: a batch like the network's inputs ``[N, C, H, W]``, for the one probe forward that
        checks what the model's own ``forward`` does between its layers (:mod:`sjconv.modelcheck`);
        None: a probe batch is made from the first layer (its channels; sizes 32, 224, 28, then 1 to 64, ...)
    :returns: a :class:`ConvertedSNN` in eval mode; ``.layout`` says which layout it has
    :raises ConversionError: for what cannot convert exactly (a plain ReLU, max pooling, a functional
        activation or any other operation in forward that is not linear in the activations, an
        operation across the batch in multi-step mode, batch norm without running statistics, an
        activation module that is not a QCFS clip-floor-shift, one θ per channel), naming the module
        or the file and line, and the fix
    """
    record, tau = resolve(method, tau, neg_rule)
    levels = check_levels(levels, method)
    if step_mode not in STEP_MODES:
        raise ConfigError(f"step_mode must be 's' or 'm', got '{step_mode}'")
    check_backend(backend)
    if layout not in ("auto",) + LAYOUTS:
        raise ConfigError(f"layout must be 'auto', 'layers' or 'folded', got '{layout}'")
    check_device(ann)
    for tensor in (*ann.parameters(), *ann.buffers()):
        if tensor.is_floating_point():
            get_backend(backend).check_dtype(str(tensor.dtype).replace("torch.", ""), "an ANN")
    check_finite_tensors(list(ann.named_parameters()) + list(ann.named_buffers()), "the ANN",
                         "its training diverged or its weights were damaged; load a sound checkpoint")

    def make_node(thresh, L):
        members = (levels or L) if record.group else None
        node = node_for(record.name, thresh, step_mode=step_mode, backend=backend, neg_rule=neg_rule, tau=tau,
                        levels=members)
        return node.to(device=thresh.device, dtype=thresh.dtype)

    net = _convert_module(copy.deepcopy(ann), "", make_node)
    plan = inspect_forward(ann, example)
    layout, reason = _choose_layout(plan, layout, step_mode)
    if plan.mixes_batch is not None and record.prerun is not None and record.prerun.one_call:
        raise ConversionError(f"method '{method}' runs its pre-run as one multi-step call, and {plan.mixes_batch}")
    if layout == "layers":
        net = _as_layers(net)
    else:
        if not spiking_nodes(net):
            raise ConversionError("the model has no QCFS activation: there is nothing to run as a spiking network")
        fold.install(net, reason, single_step_only=plan.mixes_batch)
    functional.set_step_mode(net, step_mode)
    functional.invalidate_reset_cache(net)
    return ConvertedSNN(net).eval()

