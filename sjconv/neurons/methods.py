"""The conversion methods, one record each: the single table that ``convert``, ``simulate``,
the experiment runner, the report, the command-line choices and the benchmarks read.

A method is a node kind (signed or not, which pre-run, group neurons or not) plus a table label.
Its name, label and kind are a :class:`~sjconv.catalog.MethodSpec` in :mod:`sjconv.catalog`
(readable without torch); this module attaches the node class of that kind. Adding a method is one record there, plus its
rule in :mod:`sjconv.neurons.rules` and, for a new pre-run kind, a
:class:`~sjconv.catalog.PreRunKind` and its step in the node.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

from .. import catalog
from ..errors import ConfigError
from .nodes import GROUP_NODE_CLASSES, NODE_CLASSES, SpikingNode


@dataclass(frozen=True)
class Method(catalog.MethodSpec):
    """One conversion method: its name (API and CLI), table label, kind and node class."""

    node: type


def _attach_node(spec: catalog.MethodSpec) -> Method:
    """``spec`` with the node class of its kind (signed or not, which pre-run, group neurons or not)."""
    if spec.group:
        return catalog.extend(spec, Method, node=GROUP_NODE_CLASSES[spec.signed])
    return catalog.extend(spec, Method, node=NODE_CLASSES[(spec.signed, spec.prerun.name if spec.prerun else None)])


#: every conversion method, by name, in table order (:data:`sjconv.catalog.METHODS` with node classes)
METHODS = {name: _attach_node(spec) for name, spec in catalog.METHODS.items()}


def get_method(name: str) -> Method:
    """The method called ``name``; unknown names are a :class:`ConfigError` listing the choices."""
    return METHODS[catalog.method_spec(name).name]


def resolve(method: str, tau=None, neg_rule: str = "qcfs") -> Tuple[Method, int]:
    """Check a method, its pre-run length and negative-spike rule together, before any work
    (:func:`sjconv.catalog.check_method`). Returns the :class:`Method` and ``tau`` as an int."""
    spec, tau = catalog.check_method(method, tau, neg_rule)
    return METHODS[spec.name], tau


#: method name by node kind (signed, pre-run kind, group neurons): what a node's kind reads
_BY_KIND = {(m.signed, m.prerun.name if m.prerun else None, m.group): name for name, m in METHODS.items()}


def method_of_node(node: SpikingNode) -> Optional[str]:
    """Name of the method whose node kind ``node`` has (None if no method uses that kind)."""
    return _BY_KIND.get((node.signed, node.prerun, node.group))


def node_for(method: str, v_threshold, step_mode="s", backend="torch", neg_rule="qcfs",
             tau=None, levels=None) -> SpikingNode:
    """The node that a QCFS layer becomes under conversion ``method``; ``levels`` is the members
    of a group method's neurons (required by those, refused by the others)."""
    record, tau = resolve(method, tau, neg_rule)
    levels = catalog.check_levels(levels, method)
    if record.group and levels is None:
        raise ConfigError(f"method '{method}' needs levels (members per group neuron), e.g. the QCFS layer's L")
    kwargs = {"prerun_steps": tau} if record.prerun else {}
    if record.group:
        kwargs["levels"] = levels
    return record.node(v_threshold, neg_rule=neg_rule, step_mode=step_mode, backend=backend, **kwargs)
