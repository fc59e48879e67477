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

from .errors import ConversionError
from .neurons import METHODS, SpikingNode, check_backend, node_for
from .qcfs import QCFS
from .srp import DEFAULT_TAU


def _with_state(new: nn.Module, old: nn.Module) -> nn.Module:
    """``new`` with the parameters and buffers of ``old``, on ``old``'s device."""
    state = old.state_dict()
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


class ConvertedSNN(nn.Module):
    """A converted network plus the protocol it was converted for.

    ``net`` is the plain SpikingJelly network (use it directly in your own loops); ``method``
    and ``tau`` (SRP pre-run steps, 0 for non-SRP methods) tell :func:`sjconv.simulate` how to
    run it. ``forward`` is ``net.forward``, so ``functional.reset_net``/``set_step_mode`` and
    monitors work on either object.
    """

    def __init__(self, net: nn.Module, method: str, tau: int, backend: str):
        super().__init__()
        self.net = net
        self.method = method
        self.tau = tau
        self.backend = backend

    def forward(self, x):
        return self.net(x)

    def extra_repr(self):
        return f"method={self.method}, tau={self.tau}, backend={self.backend}"


def unwrap(snn: nn.Module):
    """``(net, method, tau)`` of a :class:`ConvertedSNN`, or of a plain network of sjconv nodes
    (method inferred from its nodes, ``'mixed'`` if they differ; tau 0)."""
    if isinstance(snn, ConvertedSNN):
        return snn.net, snn.method, snn.tau
    flags = {(n.signed, n.srp) for n in snn.modules() if isinstance(n, SpikingNode)}
    names = [m for m, f in METHODS.items() if {f} == flags]
    return snn, (names[0] if names else "mixed"), 0


def step_mode_of(net: nn.Module) -> str:
    """Step mode of the first step-mode-aware module of ``net`` ('s' if there is none)."""
    for m in net.modules():
        mode = getattr(m, "step_mode", None)
        if mode in ("s", "m"):
            return mode
    return "s"


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

    :param ann: a QCFS ANN (left untouched; parameters are copied)
    :param method: ``'qcfs'`` (half-threshold IF), ``'neg'`` (signed IF), ``'srp'`` (SRP-masked IF)
        or ``'srp+neg'``
    :param step_mode: ``'m'`` (T folded into the batch) or ``'s'`` (one step per call)
    :param backend: ``'torch'`` (torch operations, any device) or ``'cupy'`` (one fused CUDA kernel
        per neuron layer and call; CUDA inputs, inference only)
    :param tau: SRP pre-run steps (default 4 for SRP methods; must be 0/None otherwise)
    :param neg_rule: negative-spike rule of signed nodes: ``'qcfs'`` or ``'snm'``
    :returns: a :class:`ConvertedSNN` in eval mode
    """
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")
    if step_mode not in ("s", "m"):
        raise ValueError(f"step_mode must be 's' or 'm', got '{step_mode}'")
    check_backend(backend)
    srp = METHODS[method][1]
    if tau is None:
        tau = DEFAULT_TAU if srp else 0
    if tau < 0 or (tau and not srp):
        raise ValueError(f"tau (SRP pre-run steps) must be >= 0 and is only meaningful for SRP methods; "
                         f"got tau={tau} with method '{method}'")

    def make_node(thresh):
        node = node_for(method, thresh, step_mode=step_mode, backend=backend, neg_rule=neg_rule)
        return node.to(thresh.device)

    net = _convert_module(copy.deepcopy(ann), "", make_node)
    functional.set_step_mode(net, step_mode)
    functional.invalidate_reset_cache(net)
    snn = ConvertedSNN(net, method, int(tau), backend).eval()
    return snn

