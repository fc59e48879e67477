"""The conversion methods, one record each: the single table that ``convert``, ``simulate``,
the experiment runner, the report, the command-line choices and the benchmarks read.

A method is a node kind (signed or not, which pre-run) plus a table label. Adding a method is
one :class:`Method` record here, plus its rule in :mod:`sjconv.neurons.rules` and, for a new
pre-run kind, a :class:`~sjconv.neurons.prerun.PreRunKind` and its step in the node.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

from ..errors import ConfigError
from .nodes import (COSIFNode, COSSignedIFNode, ConvertedIFNode, SignedIFNode, SpikingNode, SRPIFNode,
                    SRPSignedIFNode, check_neg_rule)
from .prerun import PRERUNS, PreRunKind


@dataclass(frozen=True)
class Method:
    """One conversion method: its name (API and CLI), table label and node class."""

    name: str
    label: str
    node: type

    @property
    def signed(self) -> bool:
        return self.node.SIGNED

    @property
    def prerun(self) -> Optional[PreRunKind]:
        return PRERUNS[self.node.PRERUN] if self.node.PRERUN else None

    @property
    def default_tau(self) -> int:
        """Default pre-run steps (0 for a method without a pre-run)."""
        return self.prerun.default_steps if self.prerun else 0

    def row_label(self, tau: int = 0, neg_rule: str = "qcfs") -> str:
        """Table row label, e.g. 'QCFS', 'NegSpike (SNM)', 'SRP (τ=4)', 'COS + Neg (ρ=4)'."""
        notes = ["SNM"] if (self.signed and neg_rule == "snm") else []
        if self.prerun:
            notes.append(f"{self.prerun.symbol}={tau}")
        return f"{self.label} ({', '.join(notes)})" if notes else self.label


#: every conversion method, by name, in table order
METHODS = {m.name: m for m in (
    Method("qcfs", "QCFS", ConvertedIFNode),
    Method("neg", "NegSpike", SignedIFNode),
    Method("srp", "SRP", SRPIFNode),
    Method("srp+neg", "SRP + Neg", SRPSignedIFNode),
    Method("cos", "COS", COSIFNode),
    Method("cos+neg", "COS + Neg", COSSignedIFNode),
)}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown method '{name}'; choose one of {', '.join(METHODS)}") from None


def resolve(method: str, tau=None, neg_rule: str = "qcfs") -> Tuple[Method, int]:
    """Check a method, its pre-run length and negative-spike rule together, before any work.

    ``tau`` None means the method's default (0 without a pre-run); a method without a pre-run
    accepts only 0. Returns the :class:`Method` and ``tau`` as an int; raises :class:`ConfigError`.
    """
    record = get_method(method)
    check_neg_rule(neg_rule, record.signed)
    if record.prerun is None:
        if tau not in (None, 0):
            raise ConfigError(f"tau (pre-run steps) is only meaningful for methods with a pre-run "
                              f"({', '.join(m for m, r in METHODS.items() if r.prerun)}); got tau={tau!r} "
                              f"with method '{method}'")
        return record, 0
    return record, record.prerun.check_steps(tau)


def method_of_node(node: SpikingNode) -> Optional[str]:
    """Name of the method whose node kind ``node`` has (None if no method uses that kind)."""
    for name, record in METHODS.items():
        if (record.signed, record.node.PRERUN) == (node.signed, node.prerun):
            return name
    return None


def node_for(method: str, v_threshold, step_mode="s", backend="torch", neg_rule="qcfs",
             tau=None) -> SpikingNode:
    """The node that a QCFS layer becomes under conversion ``method``."""
    record, tau = resolve(method, tau, neg_rule)
    kwargs = {"prerun_steps": tau} if record.prerun else {}
    return record.node(v_threshold, neg_rule=neg_rule, step_mode=step_mode, backend=backend, **kwargs)
