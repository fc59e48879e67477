"""Watching one forward of a model before conversion: which operations its own code applies
between the layers, whether a spiking network can carry them, and whether it treats every sample
of the batch alone (docs/protocols.md#forward-rule).

**The rule.** Between spiking nodes a converted network may apply only maps that are linear in
the activations (affine where a constant or parameter is added: a bias, added once per step) and
that treat every sample alone. A spiking layer passes on the running mean of its input; only a
linear map commutes with that mean, so anything else (a max, a square, an absolute value, a
comparison, a functional activation) makes an SNN that never approaches its ANN. In multi-step
mode the batch holds T·N rows (T folded into it), so an operation across the batch mixes time
steps; in single-step mode (one step per call) a linear map across the batch runs as in the ANN.

**How it is checked** (:func:`inspect_forward`; no ``torch.fx``, so any forward that runs can be
checked): the ANN runs once in eval mode on a probe batch of 2, with every activation module
passing its input through (so that the network is linear), while a ``TorchFunctionMode`` records
every tensor operation that the model's own code applies outside the known layers (torch layer
modules and activation modules are opaque: what they do inside is not recorded), with the Python
file and line that called it. Each operation that depends on the input and reaches the output is
judged against the allowlist :data:`sjconv.forward_rule.ALLOWED` (with its arguments: the dimensions it touches, which
operands depend on the activations). The first one that fails is refused with a one-line
:class:`~sjconv.errors.ConversionError` naming it, ``file:line`` and what to do; an operation across
the batch (dim 0) is returned as :attr:`ForwardPlan.mixes_batch`, which the converter refuses in
multi-step mode. Then the **sample-independence probe** runs the forward once more on the batch
permuted, with the sample that lands first replaced: every other sample's output must be its
output of the first run; a forward that fails mixes samples even where no single operation showed
it.

The same recording chooses the layout of multi-step mode (:mod:`sjconv.neurons.fold`): ``'layers'``
when the forward only calls modules and adds, subtracts or scales their outputs elementwise,
else ``'folded'``, with the first other operation as the reason.
"""

import linecache
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .activations import activation_names, holds_threshold
from .forward_rule import (ACTIVATION_FUNCTIONS, ALLOWED, BATCH, ELEMENTWISE, MAX_POOL_FUNCTIONS, METADATA,
                           SHAPE_ONLY, Call, judge, message, tensors_in)
from .errors import ConversionError
from .guards import eval_mode, network_dtype

__all__ = ["ForwardPlan", "inspect_forward", "probe_inputs", "PROBE_SIZES"]


@dataclass
class ForwardPlan:
    """What :func:`inspect_forward` found. ``fold_reason``: None when the layers layout can run the
    model in multi-step mode, else the first operation that needs the folded layout;
    ``mixes_batch``: None, or why the forward mixes the samples of its batch (refused in
    multi-step mode); ``probe``: the shape of the probe batch."""

    fold_reason: Optional[str]
    mixes_batch: Optional[str]
    probe: tuple


# ------------------------------------------------------------------ where an operation was called
_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def _caller() -> str:
    """``file:line in function: `code``` of the innermost frame outside torch and this module."""
    frame = sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename.startswith(_TORCH_DIR)
                                 or frame.f_code.co_filename == __file__):
        frame = frame.f_back
    if frame is None:
        return "an operation of forward"
    code = frame.f_code
    text = linecache.getline(code.co_filename, frame.f_lineno).strip()
    return f"{code.co_filename}:{frame.f_lineno} in {getattr(code, 'co_qualname', code.co_name)}: `{text}`"


def _func_name(func) -> str:
    name = getattr(func, "__name__", None) or str(func)
    if name == "__get__":           # a property: x.shape, x.T, x.data
        return getattr(getattr(func, "__self__", None), "__name__", name)
    if name == "fn":                # torch's boolean_dispatch wrappers keep the name in their qualname only
        return next((n for n in MAX_POOL_FUNCTIONS if getattr(F, n, None) is func), name)
    return name



# ------------------------------------------------------------------ recording one forward
class _Node:
    __slots__ = ("name", "where", "verdict", "inputs")

    def __init__(self, name, where, verdict, inputs):
        self.name, self.where, self.verdict, self.inputs = name, where, verdict, inputs


def _opaque(module: nn.Module) -> bool:
    """A module whose inside is not the user's code between layers: a torch or SpikingJelly layer
    (a leaf), an activation module, a module holding a threshold."""
    origin = type(module).__module__ or ""
    leaf = not module._modules
    return (activation_names(module) is not None or holds_threshold(module) is not None
            or (leaf and origin.startswith(("torch.", "spikingjelly.", "sjconv.neurons"))))


class _Recorder(TorchFunctionMode):
    """Records the operations applied outside opaque modules, and which tensors they came from."""

    def __init__(self):
        super().__init__()
        self.depth = 0
        self.producer: Dict[int, _Node] = {}
        self.keep: List[torch.Tensor] = []     # ids stay unique while the tensors live
        self.nodes: List[_Node] = []
        self.modules: List[_Node] = []
        self.fold_reason: Optional[str] = None

    def mark(self, obj, node: _Node) -> None:
        for t in tensors_in(obj):
            self.producer[id(t)] = node
            self.keep.append(t)

    def sources(self, *objs) -> List[_Node]:
        found = []
        for t in tensors_in(list(objs)):
            node = self.producer.get(id(t))
            if node is not None and node not in found:
                found.append(node)
        return found

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth:
            return out
        inputs = self.sources(args, kwargs)
        if not inputs:
            return out
        name = _func_name(func)
        where = _caller()
        if self.fold_reason is None and name not in ELEMENTWISE:
            self.fold_reason = f"{where} calls {name}(), which assumes the batch is the first dimension"
        if name in METADATA or name in SHAPE_ONLY:
            return out
        tainted = {id(t) for t in tensors_in((args, kwargs)) if id(t) in self.producer}
        node = _Node(name, where, judge(Call(name, args, kwargs, out, tainted)), inputs)
        self.nodes.append(node)
        self.mark(args[0] if name == "__setitem__" else out, node)
        return out

    def enter_module(self, module, args):
        if self.depth == 0:
            self.modules.append(_Node("module", "", None, self.sources(args)))
        self.depth += 1

    def leave_module(self, module, args, output):
        self.depth -= 1
        if self.depth == 0:
            self.mark(output, self.modules.pop())


def _reached(outputs: Sequence[_Node]) -> set:
    seen, todo = set(), list(outputs)
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        todo.extend(node.inputs)
    return seen


def _record(model: nn.Module, x: torch.Tensor) -> _Recorder:
    recorder = _Recorder()
    handles = _pass_through(model)      # first, so that the recorder sees the output passed on
    for module in model.modules():
        if module is not model and _opaque(module):
            handles.append(module.register_forward_pre_hook(recorder.enter_module))
            handles.append(module.register_forward_hook(recorder.leave_module, always_call=True))
    recorder.mark(x, _Node("input", "", None, []))
    try:
        with recorder:
            out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    recorder.output = out
    reached = _reached(recorder.sources(out))
    for node in recorder.nodes:
        if node.verdict is not None and node.verdict[0] != BATCH and id(node) in reached:
            raise ConversionError(message(node.verdict[0], node.name, node.verdict[1], node.where))
    recorder.batch = next((message(BATCH, n.name, n.verdict[1], n.where) for n in recorder.nodes
                           if n.verdict is not None and id(n) in reached), None)
    return recorder


# ------------------------------------------------------------------ the sample-independence probe
def _pass_through(model: nn.Module) -> list:
    """Hooks making every activation module of ``model`` return its input (the network is then
    linear, so any mixing of samples shows in the output); remove them when done."""
    return [m.register_forward_hook(lambda module, args, output: args[0]) for m in model.modules()
            if activation_names(m) is not None or holds_threshold(m) is not None]


def _independence(model: nn.Module, x: torch.Tensor, base: List[torch.Tensor],
                  generator: torch.Generator) -> Optional[str]:
    """None when every sample's output depends on that sample only, else what was seen: ``base``
    are the outputs for ``x``; the batch is run again permuted (rolled by one) with the sample that
    lands first replaced, and every other row must be the permuted row of ``base``."""
    n = x.shape[0]
    order = torch.roll(torch.arange(n), 1)
    moved = x[order].clone()
    moved[0] = torch.randn(x.shape[1:], generator=generator, dtype=x.dtype).to(x.device) * 3
    handles = _pass_through(model)
    try:
        got = tensors_in(model(moved))
    finally:
        for handle in handles:
            handle.remove()
    for a, b in zip(base, got):
        if a.dim() == 0 or a.shape[0] != n or a.shape != b.shape:
            return f"its output of shape {tuple(a.shape)} for a batch of {n} has no row per sample"
        want, have = a[order][1:], b[1:]
        scale = float(want.abs().max()) if want.numel() else 0.0
        diff = float((have - want).abs().max()) if want.numel() else 0.0
        if not diff <= 1e-4 * scale + 1e-6:
            return (f"with the batch permuted and sample {int(order[0])} changed, the outputs of the other samples "
                    f"changed (by up to {diff:.3g})")
    return None


# ------------------------------------------------------------------ probe inputs
#: spatial sizes tried, in order, for a probe input when no example is given: CIFAR's, ImageNet's,
#: MNIST's, then every size up to 64 (a failed small try costs little), then larger common ones
PROBE_SIZES = (32, 224, 28) + tuple(s for s in range(1, 65) if s not in (28, 32)) + \
    (96, 112, 128, 160, 192, 227, 256, 299, 320, 384, 512)
_BATCH = 2


def probe_inputs(model: nn.Module, generator: torch.Generator):
    """Candidate probe batches ``[2, C, S, ...]`` for ``model``: from its first convolution (its
    channels; each size of :data:`PROBE_SIZES`), else its first linear or batch-norm layer."""
    params = list(model.parameters()) + list(model.buffers())
    device = params[0].device if params else torch.device("cpu")
    dtype = network_dtype(model) or torch.float32
    shapes = []
    conv = next((m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if conv is not None:
        shapes += [(conv.in_channels,) + (s,) * len(conv.kernel_size) for s in PROBE_SIZES]
    first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.batchnorm._BatchNorm))), None)
    if isinstance(first, nn.Linear):
        shapes.append((first.in_features,))
    elif isinstance(first, nn.BatchNorm1d):
        shapes.append((first.num_features,))
    for shape in shapes:
        yield torch.randn((_BATCH,) + shape, generator=generator, dtype=dtype).to(device)


def _example_batch(example: torch.Tensor, model: nn.Module, generator: torch.Generator) -> torch.Tensor:
    """A probe batch of 2 samples shaped like ``example``'s: its own samples, then random ones."""
    if not isinstance(example, torch.Tensor) or not example.is_floating_point() or example.dim() < 2:
        raise ConversionError(f"example must be a floating-point batch of inputs [N, C, ...], got "
                              f"{tuple(example.shape) if isinstance(example, torch.Tensor) else type(example).__name__}")
    dtype = network_dtype(model) or example.dtype
    rows = example[:_BATCH].to(dtype)
    if rows.shape[0] < _BATCH:
        extra = torch.randn((_BATCH - rows.shape[0],) + tuple(rows.shape[1:]), generator=generator, dtype=dtype)
        rows = torch.cat([rows, extra.to(rows.device) * rows.std().clamp_min(1e-3) + rows.mean()])
    return rows


# ------------------------------------------------------------------ the entry point
@torch.no_grad()
def inspect_forward(model: nn.Module, example: Optional[torch.Tensor] = None) -> ForwardPlan:
    """Watch one forward of ``model`` (in eval mode; every module's mode is given back) and return
    its :class:`ForwardPlan`; raises :class:`ConversionError` on an operation that is not linear
    (or not one of :data:`sjconv.forward_rule.ALLOWED`), naming it, its file and line and the fix.

    :param example: a batch like the network's inputs; None: a probe batch is made from the model's
        first layer (:func:`probe_inputs`), the first that its forward accepts
    """
    generator = torch.Generator().manual_seed(0)
    candidates = [_example_batch(example, model, generator)] if example is not None \
        else list(probe_inputs(model, generator))
    if not candidates:
        raise ConversionError(f"cannot make a probe input for {type(model).__name__}: it has no convolution, linear "
                              "or batch-norm layer to read the input shape from; pass example=images to convert")
    failure = None
    with eval_mode(model):
        for x in candidates:
            try:
                recorder = _record(model, x)
            except ConversionError:
                raise
            except Exception as error:  # noqa: BLE001 - a shape the model does not take: try the next one
                failure = failure or (x, error)
                continue
            mixes = recorder.batch or _mixing(model, x, tensors_in(recorder.output), generator)
            return ForwardPlan(recorder.fold_reason, mixes, tuple(x.shape))
    x, error = failure
    tried = "an example batch" if example is not None else f"probe batches like {list(x.shape)}"
    raise ConversionError(f"the forward of {type(model).__name__} fails on {tried} ({type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''}); pass example=images (a batch like "
                          "the network's inputs) to convert")


def _mixing(model: nn.Module, x: torch.Tensor, base, generator: torch.Generator) -> Optional[str]:
    found = _independence(model, x, base, generator)
    if found is None:
        return None
    return (f"the forward of {type(model).__name__} mixes the samples of its batch ({found}), though no single "
            "operation showed it: in multi-step mode the batch holds T·N rows, so it would mix time steps; make "
            "every sample's output depend on that sample alone, or convert with step_mode='s'")
