"""The forward rule, operation by operation: which tensor operations a converted network may apply
between its spiking layers (docs/protocols.md#forward-rule), each judged with its arguments.

Between spiking nodes only maps that are linear in the activations (affine where a constant or a
parameter is added) and that treat every sample alone can be carried by spikes. :data:`ALLOWED`
lists those operations by name, each with the check of its arguments (the dimensions it touches,
which operands depend on the activations); :func:`judge` gives the verdict on one recorded
:class:`Call` and :func:`message` the one-line refusal. :mod:`sjconv.modelcheck` records the calls
of one probe forward and asks this module about each.
"""

from typing import Callable, Dict, List, Optional

import torch

__all__ = ["ALLOWED", "ACTIVATION_FUNCTIONS", "MAX_POOL_FUNCTIONS", "METADATA", "SHAPE_ONLY", "ELEMENTWISE",
           "NONLINEAR", "BATCH", "Call", "judge", "message", "tensors_in"]

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
METADATA = frozenset({
    "size", "dim", "ndimension", "numel", "nelement", "__len__", "stride", "is_contiguous", "is_floating_point",
    "is_complex", "element_size", "get_device", "data_ptr", "storage_offset", "shape", "ndim", "dtype", "device",
    "is_cuda", "requires_grad", "layout", "is_leaf", "grad", "names", "itemsize", "nbytes", "__bool__", "item",
    "tolist", "__index__", "__int__", "__float__", "__format__", "__repr__", "__hash__", "numpy", "__array__",
    "equal", "allclose", "isfinite", "isnan", "isinf"})
#: operations whose result depends on a tensor's shape only (``torch.zeros_like(x)``): not on the activations
SHAPE_ONLY = frozenset({"zeros_like", "ones_like", "empty_like", "full_like", "new_zeros", "new_ones",
                         "new_empty", "new_full", "new_tensor"})
#: elementwise operations that run unchanged on ``[T, N, ...]``: the layers layout allows only these
ELEMENTWISE = frozenset({"add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__", "__rsub__",
                          "__isub__", "rsub", "subtract", "neg", "neg_", "negative", "__neg__", "positive",
                          "__pos__", "mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply", "div", "div_",
                          "__truediv__", "__itruediv__", "__div__", "true_divide", "divide", "clone",
                          "contiguous"})

NONLINEAR, BATCH = "nonlinear", "batch"


# ------------------------------------------------------------------ judging one operation
def tensors_in(obj) -> List[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in tensors_in(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in tensors_in(item)]
    return []


class Call:
    """One operation under judgement: its name, arguments, result, and which tensors depend on the
    activations (``tainted``: ids)."""

    def __init__(self, name, args, kwargs, out, tainted):
        self.name, self.args, self.kwargs, self.out, self.tainted = name, args, kwargs, out, tainted
        self.x = args[0] if args and isinstance(args[0], torch.Tensor) else None

    def arg(self, pos: int, key: str, default=None):
        return self.args[pos] if len(self.args) > pos else self.kwargs.get(key, default)

    def dirty(self, obj) -> bool:
        return any(id(t) in self.tainted for t in tensors_in(obj))

    def operands(self):
        return tensors_in(self.args) + tensors_in(self.kwargs)


def _dims(value, ndim: int):
    """The dimensions ``value`` names (an int or a sequence), non-negative; None for all."""
    if value is None:
        return None
    values = list(value) if isinstance(value, (list, tuple, torch.Size)) else [value]
    return {int(v) % max(ndim, 1) for v in values}


def _touches_batch(value, ndim: int) -> bool:
    dims = _dims(value, ndim)
    return dims is None or 0 in dims


def _batch_kept(c: Call) -> Optional[str]:
    """The first result tensor keeps dim 0 as the batch (same size, no dimension put before it)."""
    outs = tensors_in(c.out)
    if c.x is None or not outs:
        return None
    out = outs[0]
    if out.dim() == 0 or c.x.dim() == 0 or out.shape[0] != c.x.shape[0]:
        return (BATCH, f"gives shape {tuple(out.shape)} from {tuple(c.x.shape)}, so dim 0 is no longer the batch")
    return None


def _aligned(c: Call) -> Optional[str]:
    """Elementwise operands line up sample by sample: every operand that depends on the activations
    has the result's rank and batch size, and a constant operand is the same for every sample."""
    outs = tensors_in(c.out)
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


def _scaled(c: Call):
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


def _same_values(c: Call):
    outs = tensors_in(c.out)
    if outs and not outs[0].is_floating_point():
        return (NONLINEAR, f"turns the activations into {outs[0].dtype}")
    return None


def _dim_check(pos: int, key: str = "dim", default=0, what: str = "works along"):
    def check(c: Call):
        value = c.arg(pos, key, default)
        if c.x is not None and _touches_batch(value, c.x.dim()):
            return (BATCH, f"{what} dim 0, the batch")
        return None
    return check


def _reduction(c: Call):
    value = c.arg(1, "dim", None)
    if value is None and "axis" in c.kwargs:
        value = c.kwargs["axis"]
    if c.x is not None and (_touches_batch(value, c.x.dim()) or (isinstance(value, (list, tuple)) and not value)):
        return (BATCH, "reduces over dim 0, the batch" if value is not None else "reduces over every dimension, "
                       "the batch included (name the dims, e.g. dim=(2, 3))")
    return None


def _flatten(c: Call):
    start = c.arg(1, "start_dim", 0)
    if c.x is not None and c.x.dim() and int(start) % c.x.dim() == 0:
        return (BATCH, "flattens dim 0, the batch, into the others (use flatten(1))")
    return None


def _unsqueeze(c: Call):
    dim = c.arg(1, "dim")
    if c.x is not None and int(dim) % (c.x.dim() + 1) == 0:
        return (BATCH, "puts a new dimension before the batch")
    return None


def _permute(c: Call):
    dims = c.args[1:] if len(c.args) > 2 or (len(c.args) == 2 and isinstance(c.args[1], int)) \
        else c.arg(1, "dims")
    dims = list(dims) if isinstance(dims, (list, tuple, torch.Size)) else [dims]
    if c.x is not None and int(dims[0]) % c.x.dim() != 0:
        return (BATCH, "moves dim 0, the batch, away from the front")
    return None


def _swap(c: Call):
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


def _getitem(c: Call):
    key = c.args[1]
    if c.dirty(key):
        return (NONLINEAR, "indexes with positions or masks computed from the activations")
    if c.x is not None and _item_touches_batch(key, c.x.dim()):
        return (BATCH, "indexes dim 0, the batch (index dims >= 1 only, e.g. x[:, 0])")
    return None


def _setitem(c: Call):
    if c.dirty(c.args[1]):
        return (NONLINEAR, "indexes with positions or masks computed from the activations")
    if c.x is not None and _item_touches_batch(c.args[1], c.x.dim()):
        return (BATCH, "writes into dim 0, the batch")
    return None


def _cat(c: Call):
    tensors = c.arg(0, "tensors", ())
    rank = max((t.dim() for t in tensors_in(tensors)), default=1)
    if _touches_batch(c.arg(1, "dim", 0), rank):
        return (BATCH, "joins along dim 0, the batch (join along dim 1 or later)")
    return None


def _stack(c: Call):
    tensors = tensors_in(c.arg(0, "tensors", ()))
    rank = max((t.dim() for t in tensors), default=0) + 1
    if _touches_batch(c.arg(1, "dim", 0), rank):
        return (BATCH, "stacks along dim 0, the batch (stack along dim 1 or later)")
    return None


def _weights_fixed(c: Call):
    """linear / conv: the input depends on the activations, the weights and bias do not."""
    if c.dirty(c.args[1:]) or c.dirty(c.kwargs):
        return (NONLINEAR, "uses weights computed from the activations")
    return _batch_kept(c)


def _matmul(c: Call):
    a, b = c.args[0], c.args[1]
    if c.dirty(a) and c.dirty(b):
        return (NONLINEAR, "multiplies two tensors that both depend on the activations")
    if c.dirty(a) and b.dim() <= 2:
        return _batch_kept(c)
    if c.dirty(b) and b.dim() >= 3 and a.dim() <= 2:
        return None
    return (BATCH, "multiplies across dim 0, the batch")


def _batch_norm(c: Call):
    if c.arg(5, "training", False) or c.arg(1, "running_mean") is None:
        return (BATCH, "normalises with the statistics of the batch")
    return None


def _dropout(c: Call):
    if c.arg(2, "training", True):
        return (NONLINEAR, "drops activations at random at inference (pass training=self.training)")
    return None


def _pad(c: Call):
    pad = c.arg(1, "pad", ())
    if c.x is not None and len(pad) >= 2 * c.x.dim():
        return (BATCH, "pads dim 0, the batch")
    return None


def _repeat(c: Call):
    sizes = c.args[1:] if len(c.args) > 2 or (len(c.args) == 2 and isinstance(c.args[1], int)) else c.arg(1, "sizes")
    sizes = list(sizes) if isinstance(sizes, (list, tuple, torch.Size)) else [sizes]
    if c.x is not None and (len(sizes) != c.x.dim() or int(sizes[0]) != 1):
        return (BATCH, "repeats along dim 0, the batch, or puts dimensions before it")
    return _batch_kept(c)


def _expand(c: Call):
    outs = tensors_in(c.out)
    if c.x is not None and outs and outs[0].dim() != c.x.dim():
        return (BATCH, "puts dimensions before the batch")
    return _batch_kept(c)


def _transpose_all(c: Call):
    if c.x is not None and c.x.dim() >= 2:
        return (BATCH, "reverses the dimensions, moving the batch")
    return None


def _roll(c: Call):
    if c.x is not None and _touches_batch(c.arg(2, "dims"), c.x.dim()):
        return (BATCH, "rolls along dim 0, the batch (name dims >= 1)")
    return None


def _rot90(c: Call):
    if c.x is not None and _touches_batch(c.arg(2, "dims", (0, 1)), c.x.dim()):
        return (BATCH, "rotates through dim 0, the batch")
    return None


def _fine(c: Call):
    return None


#: the linear, per-sample operations a converted network may apply between its spiking layers, by
#: name, each with the check of its arguments (docs/protocols.md#forward-rule)
ALLOWED: Dict[str, Callable[[Call], Optional[tuple]]] = {
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


def judge(c: Call) -> Optional[tuple]:
    """``(kind, detail)`` for an operation a converted network cannot apply, or None."""
    if c.name in MAX_POOL_FUNCTIONS:
        return ("maxpool", "")
    if c.name in ACTIVATION_FUNCTIONS:
        return ("activation", "")
    check = ALLOWED.get(c.name)
    if check is None:
        return (NONLINEAR, "")
    return check(c)


def message(kind: str, name: str, detail: str, where: str) -> str:
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
