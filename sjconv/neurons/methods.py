"""The conversion methods: the node a method makes, and the method a node's kind belongs to.

A method is a node kind (signed or not, which pre-run, group neurons or not) plus a table label,
one record in :data:`sjconv.catalog.METHODS` (readable without torch), the single table that
``convert``, ``simulate``, the experiment runner, the report, the command-line choices and the
benchmarks read; :mod:`sjconv.neurons.nodes` attaches the node class of each kind to it. Adding a
method is one record there, plus its rule in :mod:`sjconv.neurons.rules` and, for a new pre-run
kind, a :class:`~sjconv.catalog.PreRunKind` and its step in the node.
"""

from typing import Optional, Tuple

from .. import catalog
from ..errors import ConfigError
from .modes import SINGLE
from .nodes import SpikingNode


#: every conversion method, by name, in table order: the records of :data:`sjconv.catalog.METHODS`
#: (their node classes attached by :mod:`sjconv.neurons.nodes`)
METHODS = catalog.METHODS
#: a method's record
Method = catalog.MethodSpec


def get_method(name: str) -> Method:
    """The method called ``name``; unknown names are a :class:`ConfigError` listing the choices."""
    return catalog.method_spec(name)


def resolve(method: str, tau=None, neg_rule: str = "qcfs") -> Tuple[Method, int]:
    """Check a method, its pre-run length and negative-spike rule together, before any work
    (:func:`sjconv.catalog.check_method`). Returns the :class:`Method` and ``tau`` as an int."""
    return catalog.check_method(method, tau, neg_rule)


#: method name by node kind (:attr:`sjconv.catalog.MethodSpec.kind`), read from the table
_BY_KIND = {spec.kind: name for name, spec in METHODS.items()}


def method_of_node(node: SpikingNode) -> Optional[str]:
    """Name of the method whose node kind ``node`` has (None if no method uses that kind)."""
    return _BY_KIND.get(node.kind_key)


def node_for(method: str, v_threshold, step_mode=SINGLE, backend="torch", neg_rule="qcfs",
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
