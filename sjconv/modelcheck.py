"""Reading a model's ``forward`` code before conversion: what it does with the batch dimension, and
whether it applies an activation that no module carries.

:func:`inspect_forward` traces the ANN with ``torch.fx`` (torch modules and activation modules are
leaves; the user's own modules are traced through) and classifies every operation of the graph:

- **module calls** and **elementwise arithmetic** between activations (``+``, ``-``, ``*``, ``/``,
  ``neg``; a residual add) run unchanged on ``[T, N, ...]`` tensors: the *layers* layout works;
- **anything else** (``view``/``reshape``/``flatten``/``size``, ``torch.cat``, functional pooling,
  a parameter used directly, ...) assumes the batch is the first dimension: the model needs the
  *folded* layout (:mod:`sjconv.neurons.fold`); the first such operation, with its file and line,
  is the reason given;
- a **functional activation** (``F.relu``, ``torch.clamp``, ...) or **functional max-pooling**
  cannot become a spiking neuron: a :class:`~sjconv.errors.ConversionError` names its line.

A model that ``torch.fx`` cannot trace (control flow on tensor values, ...) gets the folded layout,
which runs its ``forward`` as it is, and the source of every ``forward`` of the model's own
classes is scanned (``ast``) for functional activations and max-pooling instead.
"""

import ast
import inspect
import operator
import os
import re
import textwrap
from dataclasses import dataclass
from typing import Optional

import torch
import torch.fx as fx
import torch.nn as nn

from .activations import holds_threshold
from .errors import ConversionError

__all__ = ["ForwardPlan", "inspect_forward", "ACTIVATION_FUNCTIONS", "MAX_POOL_FUNCTIONS"]

#: function and method names that are activations when called in ``forward``
ACTIVATION_FUNCTIONS = frozenset({
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu", "gelu", "silu",
    "mish", "sigmoid", "sigmoid_", "tanh", "tanh_", "hardtanh", "hardtanh_", "hardsigmoid", "hardswish",
    "softplus", "clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_min_", "clamp_max", "clamp_max_",
    "threshold", "threshold_", "prelu", "rrelu"})
#: function names of max-pooling
MAX_POOL_FUNCTIONS = frozenset({
    "max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "adaptive_max_pool3d", "max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "adaptive_max_pool2d_with_indices", "fractional_max_pool2d", "fractional_max_pool3d"})

_ELEMENTWISE_FUNCTIONS = frozenset({operator.add, operator.sub, operator.mul, operator.truediv, operator.neg,
                                    operator.iadd, operator.isub, operator.imul, operator.itruediv,
                                    torch.add, torch.sub, torch.mul, torch.div, torch.neg})
_ELEMENTWISE_METHODS = frozenset({"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "neg", "neg_",
                                  "clone", "contiguous"})


@dataclass
class ForwardPlan:
    """What :func:`inspect_forward` found: ``fold_reason`` is None when the layers layout can run
    the model in multi-step mode, else the first operation that needs the folded layout."""

    fold_reason: Optional[str]
    traced: bool


def _name_of(target) -> str:
    if isinstance(target, str):
        return target
    name = getattr(target, "__name__", None) or str(target)
    if name == "fn":  # torch's boolean_dispatch wrappers (F.max_pool2d, ...) keep the name in __qualname__ only
        name = _dispatch_name(target)
    return name


def _dispatch_name(target) -> str:
    import torch.nn.functional as F
    for name in MAX_POOL_FUNCTIONS:
        if getattr(F, name, None) is target:
            return name
    return str(target)


_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)')


def _where_fx(node: fx.Node) -> str:
    """``file:line in function: `code``` of the line that made ``node`` (its innermost frame)."""
    torch_dir = os.path.dirname(torch.__file__) + os.sep
    frames = [f for f in _FRAME.findall(node.stack_trace or "") if not f[0].startswith(torch_dir)]
    if not frames:
        return f"an operation of forward ({node.format_node()})"
    path, line, function, code = frames[-1]
    return f"{path}:{line} in {function}: `{code.strip()}`"


def _refusal(kind: str, name: str, where: str) -> ConversionError:
    if kind == "maxpool":
        return ConversionError(
            f"{where} max-pools with {name}() in forward: max pooling of spikes is not the ANN's max pooling; "
            "use average pooling (nn.AvgPool2d / F.avg_pool2d, as the QCFS models do) and retrain or fine-tune")
    return ConversionError(
        f"{where} applies the activation {name}() in forward: only activation modules become spiking neurons; "
        "put a QCFS module there (e.g. self.act = sjconv.QCFS(L) and x = self.act(x)) and train with it")


def _refused_kind(name: str) -> Optional[str]:
    if name in MAX_POOL_FUNCTIONS:
        return "maxpool"
    if name in ACTIVATION_FUNCTIONS:
        return "activation"
    return None


class _Tracer(fx.Tracer):
    """Torch modules and every module holding a threshold are leaves; the user's modules are traced."""

    def __init__(self):
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return holds_threshold(m) is not None or super().is_leaf_module(m, qualname)


def _inspect_graph(graph: fx.Graph) -> Optional[str]:
    """Raise on functional activations / max-pooling; return the first reason to fold (or None)."""
    reason = None
    for node in graph.nodes:
        if node.op in ("placeholder", "output", "call_module"):
            continue
        name = _name_of(node.target)
        if node.op in ("call_function", "call_method"):
            kind = _refused_kind(name)
            if kind is not None:
                raise _refusal(kind, name, _where_fx(node))
            if (node.op == "call_function" and node.target in _ELEMENTWISE_FUNCTIONS) or \
                    (node.op == "call_method" and node.target in _ELEMENTWISE_METHODS):
                continue
        if reason is None:
            what = f"reads the tensor '{node.target}' directly" if node.op == "get_attr" else f"calls {name}()"
            reason = f"{_where_fx(node)} {what}, which assumes the batch is the first dimension"
    return reason


def _own_classes(model: nn.Module):
    """Classes of ``model``'s modules whose ``forward`` is the user's code (not torch's or
    SpikingJelly's, not an activation module's), each once."""
    seen = []
    for module in model.modules():
        cls = type(module)
        origin = cls.__module__ or ""
        if origin.startswith(("torch.", "spikingjelly.")) or holds_threshold(module) is not None or cls in seen:
            continue
        seen.append(cls)
    return seen


def _scan_source(model: nn.Module) -> None:
    """Refuse functional activations / max-pooling written in the forward of ``model``'s own classes
    (the fallback when the model cannot be traced)."""
    for cls in _own_classes(model):
        forward = cls.__dict__.get("forward")
        if forward is None:
            continue
        try:
            lines, start = inspect.getsourcelines(forward)
            path = inspect.getsourcefile(forward)
        except (OSError, TypeError):
            continue
        tree = ast.parse(textwrap.dedent("".join(lines)))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else (func.id if isinstance(func, ast.Name) else None)
            kind = _refused_kind(name) if name else None
            if kind is not None:
                line = start + node.lineno - 1
                code = lines[node.lineno - 1].strip()
                raise _refusal(kind, name, f"{path}:{line} in {cls.__name__}.forward: `{code}`")


def inspect_forward(model: nn.Module) -> ForwardPlan:
    """Trace ``model`` (not modified) and return its :class:`ForwardPlan`; raises
    :class:`ConversionError` on a functional activation or max-pooling in its forward code."""
    try:
        graph = _Tracer().trace(model)
    except Exception as error:  # untraceable forward: run it folded, scan its source instead
        _scan_source(model)
        return ForwardPlan(f"the forward could not be traced by torch.fx ({type(error).__name__}: "
                           f"{str(error).splitlines()[0] if str(error) else ''})", traced=False)
    return ForwardPlan(_inspect_graph(graph), traced=True)
