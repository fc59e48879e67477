"""The names sjconv offers, with their plain facts, readable without torch: conversion methods,
pre-run kinds, negative-spike rules, neuron backends, architectures, datasets, fine-tuning losses
and optimizers, and the checks of those names against each other.

This module is the single source of these tables: each method and each backend is defined once,
here. The torch side attaches its code to these same records (:func:`attach`), without a second
table: :mod:`sjconv.neurons.nodes` the node class of each node kind (``MethodSpec.node``),
:mod:`sjconv.neurons.kernels.registry` the code of each backend (``BackendSpec.check`` and
``.run``); :data:`sjconv.models.ARCHS` maps the architecture names to builders. It imports nothing heavy, so the command-line tools build their
parsers, print ``--help`` and refuse bad arguments before torch or SpikingJelly is imported.
"""

import numbers
from dataclasses import dataclass, field
from typing import Optional, Tuple

from .errors import ConfigError, SjconvError


# ----------------------------------------------------------------------------- attached code

#: what torch-side modules attach to the records below: (what, key) -> object
_ATTACHED = {}


def attach(what: str, key, value) -> None:
    """Attach torch-side code to the records of this module: ``('node', kind)`` the node class of a
    node kind (:attr:`MethodSpec.kind`), ``('check', name)`` / ``('run', name)`` a backend's code."""
    _ATTACHED[(what, key)] = value


def _attached(what: str, key):
    try:
        return _ATTACHED[(what, key)]
    except KeyError:
        raise SjconvError(f"no {what} is attached for {key!r}: import sjconv.neurons first (it attaches the "
                          "torch code to the records of sjconv.catalog)") from None


# ----------------------------------------------------------------------------- pre-run kinds

@dataclass(frozen=True)
class PreRunKind:
    """What one pre-run kind needs from the code that runs a network (see :mod:`sjconv.neurons.protocol`)."""

    name: str
    #: symbol of its length in table labels (τ for SRP, ρ for COS)
    symbol: str
    #: default number of pre-run steps
    default_steps: int
    #: every node must receive all pre-run steps in one multi-step call
    one_call: bool

    def check_steps(self, steps) -> int:
        """``steps`` (None: the default) as a whole number >= 0, else a :class:`ConfigError`."""
        return self.default_steps if steps is None else check_steps(steps)


def is_whole_number(value) -> bool:
    """The one rule for counts (time steps, pre-run steps, levels, chunk sizes): an int, not a float
    such as ``2.0`` (nor a str or a bool); every check of a count uses it."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_steps(steps) -> int:
    """A pre-run length ``tau`` as an int: a whole number >= 0 (:func:`is_whole_number`), else a
    :class:`ConfigError`."""
    if not is_whole_number(steps):
        raise ConfigError(f"tau (pre-run steps) must be a whole number >= 0, got {steps!r}")
    if steps < 0:
        raise ConfigError(f"tau (pre-run steps) must be >= 0, got {steps}")
    return int(steps)


#: every pre-run kind, by name
PRERUNS = {
    "srp": PreRunKind("srp", "τ", 4, one_call=False),
    "cos": PreRunKind("cos", "ρ", 4, one_call=True),
}


def prerun_kind(name: Optional[str]) -> Optional[PreRunKind]:
    """The pre-run kind called ``name`` (None: no pre-run); unknown names are a :class:`ConfigError`."""
    if name is None:
        return None
    try:
        return PRERUNS[name]
    except KeyError:
        raise ConfigError(f"unknown pre-run kind '{name}'; choose one of {', '.join(PRERUNS)}") from None


# ----------------------------------------------------------------------------- methods

@dataclass(frozen=True)
class MethodSpec:
    """One conversion method without its node class: name (API and CLI), table label, whether
    its neurons are signed (negative spikes), its pre-run kind (None: no pre-run) and whether
    they are group neurons (m members, multi-level spikes; docs/methods.md#group-neuron)."""

    name: str
    label: str
    signed: bool
    prerun: Optional[PreRunKind]
    #: keyword-only with a default, so the records that extend this one may add required fields
    group: bool = field(default=False, kw_only=True)

    @property
    def kind(self) -> tuple:
        """The node kind of this method: ``(signed, pre-run kind name or None, group)``."""
        return (self.signed, self.prerun.name if self.prerun else None, self.group)

    @property
    def node(self) -> type:
        """The node class of this method's kind (attached by :mod:`sjconv.neurons.nodes`)."""
        return _attached("node", self.kind)

    @property
    def default_tau(self) -> int:
        """Default pre-run steps (0 for a method without a pre-run)."""
        return self.prerun.default_steps if self.prerun else 0

    def row_label(self, tau: int = 0, neg_rule: str = "qcfs", levels=None) -> str:
        """Table row label, e.g. 'QCFS', 'NegSpike (SNM)', 'SRP (τ=4)', 'COS + Neg (ρ=4)', 'GN (m=4)'.
        ``levels``: the members m of a group method (an int, or a sequence when layers differ)."""
        notes = ["SNM"] if (self.signed and neg_rule == "snm") else []
        if self.prerun:
            notes.append(f"{self.prerun.symbol}={tau}")
        if self.group and levels is not None:
            shown = [levels] if isinstance(levels, numbers.Integral) else sorted(set(levels))
            notes.append("m=" + "/".join(str(int(m)) for m in shown))
        return f"{self.label} ({', '.join(notes)})" if notes else self.label


#: every conversion method, by name, in table order
METHODS = {m.name: m for m in (
    MethodSpec("qcfs", "QCFS", signed=False, prerun=None),
    MethodSpec("neg", "NegSpike", signed=True, prerun=None),
    MethodSpec("srp", "SRP", signed=False, prerun=PRERUNS["srp"]),
    MethodSpec("srp+neg", "SRP + Neg", signed=True, prerun=PRERUNS["srp"]),
    MethodSpec("cos", "COS", signed=False, prerun=PRERUNS["cos"]),
    MethodSpec("cos+neg", "COS + Neg", signed=True, prerun=PRERUNS["cos"]),
    MethodSpec("gn", "GN", signed=False, prerun=None, group=True),
    MethodSpec("gn+neg", "GN + Neg", signed=True, prerun=None, group=True),
)}


def method_spec(name: str) -> MethodSpec:
    """The method called ``name``; unknown names are a :class:`ConfigError` listing the choices."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown method '{name}'; choose one of {', '.join(METHODS)}") from None


#: negative-spike rules of the signed neuron (see :mod:`sjconv.neurons.rules`)
NEG_RULES = ("qcfs", "snm")


def check_neg_rule(neg_rule: str, signed: bool) -> str:
    """``neg_rule`` must be known, and ``'snm'`` needs a signed node (no other node has negative spikes)."""
    if neg_rule not in NEG_RULES:
        raise ConfigError(f"unknown neg_rule '{neg_rule}'; choose one of {', '.join(NEG_RULES)}")
    if neg_rule != "qcfs" and not signed:
        *others, last = [m for m, spec in METHODS.items() if spec.signed]
        raise ConfigError(f"neg_rule='{neg_rule}' is a negative-spike rule: it needs a signed method "
                          f"({', '.join(others)} or {last}), not an unsigned one")
    return neg_rule


def check_method(method: str, tau=None, neg_rule: str = "qcfs") -> Tuple[MethodSpec, int]:
    """Check a method, its pre-run length and negative-spike rule together, before any work.

    ``tau`` None means the method's default (0 without a pre-run); a method without a pre-run
    accepts only 0. Returns the :class:`MethodSpec` and ``tau`` as an int; raises :class:`ConfigError`.
    """
    spec = method_spec(method)
    check_neg_rule(neg_rule, spec.signed)
    if spec.prerun is None:
        if tau not in (None, 0):
            raise ConfigError(f"tau (pre-run steps) is only meaningful for methods with a pre-run "
                              f"({', '.join(m for m, s in METHODS.items() if s.prerun)}); got tau={tau!r} "
                              f"with method '{method}'")
        return spec, 0
    return spec, spec.prerun.check_steps(tau)


def check_levels(levels, method: Optional[str] = None):
    """``levels`` (members m of a group neuron; None: each QCFS layer's own L) as an int >= 1,
    else a :class:`ConfigError`; given with a method that has no group neurons, also an error."""
    if levels is None:
        return None
    if method is not None and not method_spec(method).group:
        grouped = " or ".join(m for m, spec in METHODS.items() if spec.group)
        raise ConfigError(f"levels (members per group neuron) is only meaningful for group methods "
                          f"({grouped}); got levels={levels!r} with method '{method}'")
    if not is_whole_number(levels) or levels < 1:
        raise ConfigError(f"levels (members per group neuron) must be a whole number >= 1, got {levels!r}")
    return int(levels)


# ----------------------------------------------------------------------------- backends

@dataclass(frozen=True)
class BackendSpec:
    """One neuron backend without its code (see :mod:`sjconv.neurons.kernels.registry`)."""

    name: str
    #: runs on CUDA tensors only
    needs_cuda: bool
    #: one fused call runs all steps (single steps go through it with T = 1); else a per-step rule
    fused: bool
    #: has a backward (fine-tuning); the others refuse inputs or thresholds that need gradients
    trainable: bool
    #: one line for help texts
    summary: str
    #: floating dtypes it runs (torch names without the ``torch.``); empty: every floating dtype
    dtypes: Tuple[str, ...] = ()

    def check_dtype(self, dtype_name: str, what: str) -> None:
        """Refuse ``what`` (a network or an input) of a floating dtype this backend does not run."""
        if self.dtypes and dtype_name not in self.dtypes:
            raise ConfigError(f"backend='{self.name}' runs {', '.join(self.dtypes)}, not {what} of dtype "
                              f"{dtype_name}: use backend='torch', or convert a network cast with .to(torch.float32)")

    @property
    def check(self):
        """``check()`` raises :class:`BackendUnavailableError` (with the fix) if the backend is
        unusable here (attached by :mod:`sjconv.neurons.kernels.registry`)."""
        return _attached("check", self.name)

    @property
    def run(self):
        """``run(x_seq, state, kind, record_v) -> (out, state, v_seq)`` (attached by
        :mod:`sjconv.neurons.kernels.registry`)."""
        return _attached("run", self.name)


#: every backend, by name
BACKEND_TABLE = {b.name: b for b in (
    BackendSpec("torch", needs_cuda=False, fused=False, trainable=True,
                summary="torch operations in place, any device, trainable"),
    BackendSpec("cupy", needs_cuda=True, fused=True, trainable=False,
                summary="one fused CUDA kernel launch per layer and call (CuPy), inference only",
                dtypes=("float32", "float16", "bfloat16")),
)}

#: backend names, in table order
BACKENDS = tuple(BACKEND_TABLE)


# ----------------------------------------------------------------------------- models and data

#: QCFS architectures, in table order (:data:`sjconv.models.ARCHS` maps each to its builder)
ARCHS = ("vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet20", "resnet34")

#: name -> (torchvision class name, folder torchvision expects, classes, mean, std) as in QCFS' code
CIFAR = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", 10,
                (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ("CIFAR100", "cifar-100-python", 100,
                 tuple(n / 255 for n in (129.3, 124.1, 112.4)), tuple(n / 255 for n in (68.2, 65.4, 70.4))),
}

#: every dataset the evaluation and training tools take (see :mod:`sjconv.data`)
DATASETS = tuple(CIFAR) + ("imagenet",)

#: fine-tuning losses and optimizers (see :func:`sjconv.finetune.finetune`)
LOSSES = ("tet", "ce")
OPTIMIZERS = ("sgd", "adam")
