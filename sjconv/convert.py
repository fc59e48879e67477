"""QCFS ANN -> SpikingJelly network, by walking the module tree.

Every supported leaf module is replaced by its ``spikingjelly.activation_based.layer``
counterpart (parameters and buffers copied), every :class:`~sjconv.qcfs.QCFS` by a spiking
node whose threshold is the trained θ, and every other module that only *contains* modules
(``nn.Sequential``, a residual block, a user's own model class) is kept with its own
``forward`` and converted children. Nothing is keyed on layer names, so a user's QCFS model
built from standard torch layers converts too. A module that cannot be converted raises a
:class:`~sjconv.errors.ConversionError` naming it.

Multi-step mode needs every tensor operation written in ``forward`` methods to be
elementwise (a residual add is fine); reshape with ``nn.Flatten`` modules, not ``x.view``.
"""

import copy
from typing import Callable, Dict, Optional, Type

import torch.nn as nn
from spikingjelly.activation_based import functional, layer

from .errors import ConfigError, ConversionError
from .guards import check_finite_tensors
from .neurons import ConvertedSNN, check_backend, node_for, resolve, step_mode_of, unwrap
from .qcfs import QCFS

__all__ = ["convert", "ConvertedSNN", "LAYER_FACTORIES", "unwrap", "step_mode_of"]


def _with_state(new: nn.Module, old: nn.Module) -> nn.Module:
    """``new`` with the parameters and buffers of ``old``, on ``old``'s device and in its
    floating dtype (a float64 or float16 ANN gives a float64/float16 layer)."""
    state = old.state_dict()
    floating = [t for t in state.values() if t.is_floating_point()]
    if floating:
        new = new.to(device=floating[0].device, dtype=floating[0].dtype)
    new.load_state_dict(state)
    return new.to(next(iter(state.values())).device) if state else new


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


def _convert_module(module: nn.Module, path: str, make_node) -> nn.Module:
    """The converted counterpart of ``module`` (a private deep copy: containers are edited in place)."""
    if isinstance(module, QCFS):
        return make_node(module.thresh)
    factory = LAYER_FACTORIES.get(type(module))
    if factory is not None:
        return factory(module)
    children = list(module.named_children())
    own = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
    if not own and (children or isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict))):
        for name, child in children:  # the container keeps its class and forward
            module._modules[name] = _convert_module(child, f"{path}.{name}" if path else name, make_node)
        return module
    where = path or "the model itself"
    hint = next((h for t, h in _HINTS.items() if isinstance(module, t)), None)
    hint = hint or ("supported: QCFS, " + ", ".join(t.__name__ for t in LAYER_FACTORIES)
                    + ", and container modules built from them")
    raise ConversionError(f"cannot convert module '{where}' of type {type(module).__name__}: {hint}")


def convert(ann: nn.Module, method: str = "qcfs", step_mode: str = "m", backend: str = "torch",
            tau: Optional[int] = None, neg_rule: str = "qcfs") -> ConvertedSNN:
    """Convert a QCFS ANN into a SpikingJelly SNN.

    :param ann: a QCFS ANN (left untouched; parameters are copied, dtype and device kept)
    :param method: a name of :data:`sjconv.neurons.METHODS`: ``'qcfs'`` (half-threshold IF),
        ``'neg'`` (signed IF), ``'srp'`` (SRP-masked IF), ``'srp+neg'``, ``'cos'`` (COS-calibrated
        IF) or ``'cos+neg'``
    :param step_mode: ``'m'`` (T folded into the batch) or ``'s'`` (one step per call)
    :param backend: ``'torch'`` (torch operations, any device) or ``'cupy'`` (one fused CUDA kernel
        per neuron layer and call; CUDA inputs, inference only)
    :param tau: pre-run steps of SRP (τ) and COS (ρ) methods (default from the method table;
        must be 0/None for methods without a pre-run); the nodes carry it
    :param neg_rule: negative-spike rule of signed nodes: ``'qcfs'`` or ``'snm'``
    :returns: a :class:`ConvertedSNN` in eval mode
    """
    record, tau = resolve(method, tau, neg_rule)
    if step_mode not in ("s", "m"):
        raise ConfigError(f"step_mode must be 's' or 'm', got '{step_mode}'")
    check_backend(backend)
    check_finite_tensors(list(ann.named_parameters()) + list(ann.named_buffers()), "the ANN",
                         "its training diverged or its weights were damaged; load a sound checkpoint")

    def make_node(thresh):
        node = node_for(record.name, thresh, step_mode=step_mode, backend=backend, neg_rule=neg_rule, tau=tau)
        return node.to(device=thresh.device, dtype=thresh.dtype)

    net = _convert_module(copy.deepcopy(ann), "", make_node)
    functional.set_step_mode(net, step_mode)
    functional.invalidate_reset_cache(net)
    return ConvertedSNN(net, backend).eval()

