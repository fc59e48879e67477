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
judged against the allowlist :data:`ALLOWED` (with its arguments: the dimensions it touches, which
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
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .activations import activation_names, holds_threshold
from .errors import ConversionError
from .guards import eval_mode, network_dtype

__all__ = ["ForwardPlan", "inspect_forward", "probe_inputs", "ACTIVATION_FUNCTIONS", "MAX_POOL_FUNCTIONS",
           "ALLOWED", "PROBE_SIZES"]

#: function and method names that are activations when called in ``forward``
ACTIVATION_FUNCTIONS = frozenset({
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu", "gelu", "silu",
    "mish", "sigmoid", "sigmoid_", "tanh", "tanh_", "hardtanh", "hardtanh_", "hardsigmoid", "hardswish",
    "softplus", "clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_min_", "clamp_max", "clamp_max_",
    "threshold", "threshold_", "prelu", "rrelu", "softmax", "log_softmax", "softsign", "logsigmoid"})
#: function names of max-pooling
MAX_POOL_FUNCTIONS = frozenset({
    "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "adaptive_max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "adaptive_max_pool2d_with_indices", "fractional_max_pool2d", "fractional_max_pool3d"})

#: operations that read only a tensor's shape, type or place (no values flow through them)
_METADATA = frozenset({
    "size", "dim", "ndimension", "numel", "nelement", "__len__", "stride", "is_contiguous", "is_floating_point",
    "is_complex", "element_size", "get_device", "data_ptr", "storage_offset", "shape", "ndim", "dtype", "device",
    "is_cuda", "requires_grad", "layout", "is_leaf", "grad", "names", "itemsize", "nbytes", "__bool__", "item",
    "tolist", "__index__", "__int__", "__float__", "__format__", "__repr__", "__hash__", "numpy", "__array__",
    "equal", "allclose", "isfinite", "isnan", "isinf"})
#: operations whose result depends on a tensor's shape only (``torch.zeros_like(x)``): not on the activations
_SHAPE_ONLY = frozenset({"zeros_like", "ones_like", "empty_like", "full_like", "new_zeros", "new_ones",
                         "new_empty", "new_full", "new_tensor"})
#: elementwise operations that run unchanged on ``[T, N, ...]``: the layers layout allows only these
_ELEMENTWISE = frozenset({"add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__", "__rsub__",
                          "__isub__", "rsub", "subtract", "neg", "neg_", "negative", "__neg__", "positive",
                          "__pos__", "mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply", "div", "div_",
                          "__truediv__", "__itruediv__", "__div__", "true_divide", "divide", "clone",
                          "contiguous"})

NONLINEAR, BATCH = "nonlinear", "batch"


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


# ------------------------------------------------------------------ judging one operation
def _tensors(obj) -> List[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _tensors(item)]
    return []


class _Call:
    """One operation under judgement: its name, arguments, result, and which tensors depend on the
    activations (``tainted``: ids)."""

    def __init__(self, name, args, kwargs, out, tainted):
        self.name, self.args, self.kwargs, self.out, self.tainted = name, args, kwargs, out, tainted
        self.x = args[0] if args and isinstance(args[0], torch.Tensor) else None

    def arg(self, pos: int, key: str, default=None):
        return self.args[pos] if len(self.args) > pos else self.kwargs.get(key, default)

    def dirty(self, obj) -> bool:
        return any(id(t) in self.tainted for t in _tensors(obj))

    def operands(self):
        return _tensors(self.args) + _tensors(self.kwargs)


def _dims(value, ndim: int):
    """The dimensions ``value`` names (an int or a sequence), non-negative; None for all."""
    if value is None:
        return None
    values = list(value) if isinstance(value, (list, tuple, torch.Size)) else [value]
    return {int(v) % max(ndim, 1) for v in values}


def _touches_batch(value, ndim: int) -> bool:
    dims = _dims(value, ndim)
    return dims is None or 0 in dims


def _batch_kept(c: _Call) -> Optional[str]:
    """The first result tensor keeps dim 0 as the batch (same size, no dimension put before it)."""
    outs = _tensors(c.out)
    if c.x is None or not outs:
        return None
    out = outs[0]
    if out.dim() == 0 or c.x.dim() == 0 or out.shape[0] != c.x.shape[0]:
        return (BATCH, f"gives shape {tuple(out.shape)} from {tuple(c.x.shape)}, so dim 0 is no longer the batch")
    return None


def _aligned(c: _Call) -> Optional[str]:
    """Elementwise operands line up sample by sample: every operand that depends on the activations
    has the result's rank and batch size, and a constant operand is the same for every sample."""
    outs = _tensors(c.out)
    if not outs:
        return None
    out = outs[0]
    for t in c.operands():
        if t is out:            # the target of an in-place operation
            continue
        if id(t) in c.tainted:
            if t.dim() != out.dim() or (out.dim() and t.shape[0] != out.shape[0]):
                return (BATCH, f"broadcasts a tensor of shape {tuple(t.shape)} to {tuple(out.shape)}, "
                               "so samples meet other samples")
        elif t.dim() == out.dim() and t.dim() and t.shape[0] != 1 and not bool((t == t[:1]).all()):
            return (BATCH, f"combines the activations with a tensor of shape {tuple(t.shape)} that differs "
                           "from one row of the batch to the next")
    return None


def _scaled(c: _Call):
    """mul/div: exactly one operand depends on the activations (the dividend, for div)."""
    if c.name in ("div", "div_", "divide", "true_divide") and c.arg(2, "rounding_mode") is not None:
        return (NONLINEAR, "rounds the quotient")
    dirty = [t for t in c.operands() if id(t) in c.tainted]
    if len(dirty) > 1:
        return (NONLINEAR, "multiplies two tensors that both depend on the activations")
    if c.name in ("div", "div_", "__truediv__", "__itruediv__", "__div__", "true_divide", "divide") and \
            not c.dirty(c.args[0]):
        return (NONLINEAR, "divides by the activations")
    return _aligned(c)


def _same_values(c: _Call):
    outs = _tensors(c.out)
    if outs and not outs[0].is_floating_point():
        return (NONLINEAR, f"turns the activations into {outs[0].dtype}")
    return None


def _dim_check(pos: int, key: str = "dim", default=0, what: str = "works along"):
    def check(c: _Call):
        value = c.arg(pos, key, default)
        if c.x is not None and _touches_batch(value, c.x.dim()):
            return (BATCH, f"{what} dim 0, the batch")
        return None
    return check


def _reduction(c: _Call):
    value = c.arg(1, "dim", None)
    if value is None and "axis" in c.kwargs:
        value = c.kwargs["axis"]
    if c.x is not None and (_touches_batch(value, c.x.dim()) or (isinstance(value, (list, tuple)) and not value)):
        return (BATCH, "reduces over dim 0, the batch" if value is not None else "reduces over every dimension, "
                       "the batch included (name the dims, e.g. dim=(2, 3))")
    return None


def _flatten(c: _Call):
    start = c.arg(1, "start_dim", 0)
    if c.x is not None and c.x.dim() and int(start) % c.x.dim() == 0:
        return (BATCH, "flattens dim 0, the batch, into the others (use flatten(1))")
    return None


def _unsqueeze(c: _Call):
    dim = c.arg(1, "dim")
    if c.x is not None and int(dim) % (c.x.dim() + 1) == 0:
        return (BATCH, "puts a new dimension before the batch")
    return None


def _permute(c: _Call):
    dims = c.args[1:] if len(c.args) > 2 or (len(c.args) == 2 and isinstance(c.args[1], int)) \
        else c.arg(1, "dims")
    dims = list(dims) if isinstance(dims, (list, tuple, torch.Size)) else [dims]
    if c.x is not None and int(dims[0]) % c.x.dim() != 0:
        return (BATCH, "moves dim 0, the batch, away from the front")
    return None


def _swap(c: _Call):
    if c.x is None:
        return None
    if _touches_batch(c.arg(1, "dim0", c.kwargs.get("source")), c.x.dim()) or \
            _touches_batch(c.arg(2, "dim1", c.kwargs.get("destination")), c.x.dim()):
        return (BATCH, "moves dim 0, the batch")
    return None


def _item_touches_batch(key, ndim: int) -> bool:
    key = key if isinstance(key, tuple) else (key,)
    if not key:
        return False
    first = key[0]
    if first is Ellipsis:
        consumed = sum(1 if not isinstance(k, torch.Tensor) else max(k.dim(), 1)
                       for k in key[1:] if k is not None and k is not Ellipsis)
        return consumed >= ndim
    return not (isinstance(first, slice) and first == slice(None))


def _getitem(c: _Call):
    key = c.args[1]
    if c.dirty(key):
        return (NONLINEAR, "indexes with positions or masks computed from the activations")
    if c.x is not None and _item_touches_batch(key, c.x.dim()):
        return (BATCH, "indexes dim 0, the batch (index dims >= 1 only, e.g. x[:, 0])")
    return None


def _setitem(c: _Call):
    if c.dirty(c.args[1]):
        return (NONLINEAR, "indexes with positions or masks computed from the activations")
    if c.x is not None and _item_touches_batch(c.args[1], c.x.dim()):
        return (BATCH, "writes into dim 0, the batch")
    return None


def _cat(c: _Call):
    tensors = c.arg(0, "tensors", ())
    rank = max((t.dim() for t in _tensors(tensors)), default=1)
    if _touches_batch(c.arg(1, "dim", 0), rank):
        return (BATCH, "joins along dim 0, the batch (join along dim 1 or later)")
    return None


def _stack(c: _Call):
    tensors = _tensors(c.arg(0, "tensors", ()))
    rank = max((t.dim() for t in tensors), default=0) + 1
    if _touches_batch(c.arg(1, "dim", 0), rank):
        return (BATCH, "stacks along dim 0, the batch (stack along dim 1 or later)")
    return None


def _weights_fixed(c: _Call):
    """linear / conv: the input depends on the activations, the weights and bias do not."""
    if c.dirty(c.args[1:]) or c.dirty(c.kwargs):
        return (NONLINEAR, "uses weights computed from the activations")
    return _batch_kept(c)


def _matmul(c: _Call):
    a, b = c.args[0], c.args[1]
    if c.dirty(a) and c.dirty(b):
        return (NONLINEAR, "multiplies two tensors that both depend on the activations")
    if c.dirty(a) and b.dim() <= 2:
        return _batch_kept(c)
    if c.dirty(b) and b.dim() >= 3 and a.dim() <= 2:
        return None
    return (BATCH, "multiplies across dim 0, the batch")


def _batch_norm(c: _Call):
    if c.arg(5, "training", False) or c.arg(1, "running_mean") is None:
        return (BATCH, "normalises with the statistics of the batch")
    return None


def _dropout(c: _Call):
    if c.arg(2, "training", True):
        return (NONLINEAR, "drops activations at random at inference (pass training=self.training)")
    return None


def _pad(c: _Call):
    pad = c.arg(1, "pad", ())
    if c.x is not None and len(pad) >= 2 * c.x.dim():
        return (BATCH, "pads dim 0, the batch")
    return None


def _repeat(c: _Call):
    sizes = c.args[1:] if len(c.args) > 2 or (len(c.args) == 2 and isinstance(c.args[1], int)) else c.arg(1, "sizes")
    sizes = list(sizes) if isinstance(sizes, (list, tuple, torch.Size)) else [sizes]
    if c.x is not None and (len(sizes) != c.x.dim() or int(sizes[0]) != 1):
        return (BATCH, "repeats along dim 0, the batch, or puts dimensions before it")
    return _batch_kept(c)


def _expand(c: _Call):
    outs = _tensors(c.out)
    if c.x is not None and outs and outs[0].dim() != c.x.dim():
        return (BATCH, "puts dimensions before the batch")
    return _batch_kept(c)


def _transpose_all(c: _Call):
    if c.x is not None and c.x.dim() >= 2:
        return (BATCH, "reverses the dimensions, moving the batch")
    return None


def _roll(c: _Call):
    if c.x is not None and _touches_batch(c.arg(2, "dims"), c.x.dim()):
        return (BATCH, "rolls along dim 0, the batch (name dims >= 1)")
    return None


def _rot90(c: _Call):
    if c.x is not None and _touches_batch(c.arg(2, "dims", (0, 1)), c.x.dim()):
        return (BATCH, "rotates through dim 0, the batch")
    return None


def _fine(c: _Call):
    return None


#: the linear, per-sample operations a converted network may apply between its spiking layers, by
#: name, each with the check of its arguments (docs/protocols.md#forward-rule)
ALLOWED: Dict[str, Callable[[_Call], Optional[tuple]]] = {
    # sums and differences (of activations, or of an activation and a bias)
    **{n: _aligned for n in ("add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__", "__rsub__",
                            "__isub__", "rsub", "subtract", "neg", "neg_", "negative", "__neg__", "positive",
                            "__pos__")},
    # scaling by a constant, parameter or buffer
    **{n: _scaled for n in ("mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply", "div", "div_",
                            "__truediv__", "__itruediv__", "__div__", "true_divide", "divide")},
    # the same values
    **{n: _same_values for n in ("clone", "contiguous", "detach", "detach_", "float", "double", "half", "bfloat16",
                                 "to", "type", "type_as", "cpu", "cuda", "requires_grad_", "data", "alias")},
    # views and reshapes that keep dim 0 the batch
    **{n: _batch_kept for n in ("view", "view_as", "reshape", "reshape_as", "squeeze", "squeeze_")},
    "flatten": _flatten, "unflatten": _dim_check(1, what="unflattens"), "unsqueeze": _unsqueeze,
    "unsqueeze_": _unsqueeze, "permute": _permute, "transpose": _swap, "swapaxes": _swap, "swapdims": _swap,
    "movedim": _swap, "moveaxis": _swap, "T": _transpose_all, "mT": _fine, "t": _transpose_all,
    "expand": _expand, "expand_as": _expand, "broadcast_to": _expand, "repeat": _repeat,
    # slicing and selecting along dims >= 1
    "__getitem__": _getitem, "__setitem__": _setitem, "narrow": _dim_check(1, what="narrows"),
    "select": _dim_check(1, what="selects along"), "index_select": _dim_check(1, what="selects along"),
    "chunk": _dim_check(2, what="splits"), "split": _dim_check(2, what="splits"),
    "split_with_sizes": _dim_check(2, what="splits"), "tensor_split": _dim_check(2, what="splits"),
    "unbind": _dim_check(1, what="unbinds"), "flip": _dim_check(1, "dims", None, "flips"), "fliplr": _fine,
    "roll": _roll, "rot90": _rot90,
    # joining along dims >= 1
    "cat": _cat, "concat": _cat, "concatenate": _cat, "stack": _stack,
    # sums and means over dims >= 1, and pooling that averages
    **{n: _reduction for n in ("sum", "mean", "nansum", "nanmean")},
    "cumsum": _dim_check(1, what="sums cumulatively along"),
    **{n: _batch_kept for n in ("avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
                                "adaptive_avg_pool2d", "adaptive_avg_pool3d", "interpolate", "upsample",
                                "upsample_nearest", "upsample_bilinear", "pixel_shuffle", "pixel_unshuffle",
                                "channel_shuffle")},
    "pad": _pad,
    # layers written as functions, with fixed weights
    **{n: _weights_fixed for n in ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                                   "conv_transpose3d")},
    "matmul": _matmul, "__matmul__": _matmul, "mm": _matmul,
    "batch_norm": _batch_norm, "dropout": _dropout, "dropout1d": _dropout, "dropout2d": _dropout,
    "dropout3d": _dropout,
}


def _judge(c: _Call) -> Optional[tuple]:
    """``(kind, detail)`` for an operation a converted network cannot apply, or None."""
    if c.name in MAX_POOL_FUNCTIONS:
        return ("maxpool", "")
    if c.name in ACTIVATION_FUNCTIONS:
        return ("activation", "")
    check = ALLOWED.get(c.name)
    if check is None:
        return (NONLINEAR, "")
    return check(c)


def _message(kind: str, name: str, detail: str, where: str) -> str:
    if kind == "maxpool":
        return (f"{where} max-pools with {name}() in forward: max pooling of spikes is not the ANN's max pooling; "
                "use average pooling (nn.AvgPool2d / F.avg_pool2d, as the QCFS models do) and retrain or fine-tune")
    if kind == "activation":
        return (f"{where} applies the activation {name}() in forward: only activation modules become spiking "
                "neurons; put a QCFS module there (e.g. self.act = sjconv.QCFS(L) and x = self.act(x)) and train "
                "with it")
    if kind == BATCH:
        return (f"{where} {name}() {detail}: in multi-step mode the batch holds T·N rows (T folded into it), so "
                "this mixes time steps and samples; make it work on each sample alone (dims >= 1), or convert "
                "with step_mode='s' (one step per call, the samples mixed as in the ANN)")
    what = detail or "is not one of the linear, per-sample operations"
    return (f"{where} {name}() {what}: between spiking layers a converted network may apply only maps that are "
            "linear in the activations (sums, averages, reshapes, scaling by constants; docs/protocols.md"
            "#forward-rule), as a spiking layer passes on the mean of its input and nothing else commutes with it; "
            "replace it by a linear operation or a QCFS activation module, and retrain")


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
        for t in _tensors(obj):
            self.producer[id(t)] = node
            self.keep.append(t)

    def sources(self, *objs) -> List[_Node]:
        found = []
        for t in _tensors(list(objs)):
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
        if self.fold_reason is None and name not in _ELEMENTWISE:
            self.fold_reason = f"{where} calls {name}(), which assumes the batch is the first dimension"
        if name in _METADATA or name in _SHAPE_ONLY:
            return out
        tainted = {id(t) for t in _tensors((args, kwargs)) if id(t) in self.producer}
        node = _Node(name, where, _judge(_Call(name, args, kwargs, out, tainted)), inputs)
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
            raise ConversionError(_message(node.verdict[0], node.name, node.verdict[1], node.where))
    recorder.batch = next((_message(BATCH, n.name, n.verdict[1], n.where) for n in recorder.nodes
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
        got = _tensors(model(moved))
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
    (or not one of :data:`ALLOWED`), naming it, its file and line and the fix.

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
            mixes = recorder.batch or _mixing(model, x, _tensors(recorder.output), generator)
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
