"""The neuron backends, one record each: the table that the nodes, the command-line choices and
the benchmarks read.

A backend runs all steps of one neuron layer call: ``run(x_seq, v, count, mask, theta, signed,
neg_rule, record_v, levels=None) -> (out, v, count, v_seq)`` (``levels``: the members of a group
neuron, docs/methods.md §14; None for the IF kinds), with the conventions of
:func:`sjconv.neurons.rules.run_steps` (which every backend must match bit for bit). Its name,
flags and summary are a :class:`~sjconv.catalog.BackendSpec` in :mod:`sjconv.catalog` (readable
without torch); this module attaches its ``check`` and ``run``. Adding a backend is one record
there and its code here; a fused one reuses :func:`sjconv.neurons.launch.prepare`
(the launch layout) and :func:`sjconv.neurons.kernel_check.ensure_verified` (the bit-exact
self-check against the rules before its first launch).
"""

from dataclasses import dataclass
from typing import Callable

import torch

from .. import catalog
from ..errors import ConfigError
from . import torch_backend


@dataclass(frozen=True, kw_only=True)
class Backend(catalog.BackendSpec):
    """One neuron backend: its record in the catalog and its code."""

    #: ``check()`` raises :class:`BackendUnavailableError` (with the fix) if unusable here
    check: Callable[[], None]
    #: ``run(x_seq, v, count, mask, theta, signed, neg_rule, record_v) -> (out, v, count, v_seq)``
    run: Callable


def _torch_run(x_seq, v, count, mask, theta, signed, neg_rule, record_v, levels=None):
    """The in-place loop of :mod:`torch_backend` (bit-identical to the rules, a few times faster);
    group neurons: the one of :mod:`torch_group`."""
    if levels is not None:
        from . import torch_group

        return torch_group.run_steps(x_seq, v, count, mask, theta, signed, neg_rule, record_v, levels)
    return torch_backend.run_steps(x_seq, v, count, mask, theta, signed, neg_rule, record_v)


def _cupy_check():
    """CuPy, a GPU, CuPy built for torch's CUDA major version, NVRTC loadable (see
    :func:`sjconv.neurons.cupy_backend.check_environment`): checked when a node is built."""
    from .cupy_backend import check_environment

    check_environment()


def _cupy_run(x_seq, v, count, mask, theta, signed, neg_rule, record_v, levels=None):
    """One fused CuPy launch for all steps; with ``record_v``, one launch per step (to read v)."""
    from .cupy_backend import multi_step

    snm = neg_rule == "snm"
    if not record_v:
        out, v, count = multi_step(x_seq, v, count, mask, theta, signed, snm, levels)
        return out, v, count, None
    outs, v_steps = [], []
    for t in range(x_seq.shape[0]):
        out, v, count = multi_step(x_seq[t:t + 1], v, count, mask, theta, signed, snm, levels)
        outs.append(out)
        v_steps.append(v)
    return torch.cat(outs), v, count, torch.stack(v_steps)


#: the code of every backend of the catalog: name -> (check, run)
_CODE = {
    "torch": (lambda: None, _torch_run),
    "cupy": (_cupy_check, _cupy_run),
}

#: every backend, by name (:data:`sjconv.catalog.BACKEND_TABLE` with its code)
BACKEND_TABLE = {name: catalog.extend(spec, Backend, check=_CODE[name][0], run=_CODE[name][1])
                 for name, spec in catalog.BACKEND_TABLE.items()}

#: backend names, in table order
BACKENDS = catalog.BACKENDS


def get_backend(name: str) -> Backend:
    """The record of backend ``name`` (unknown: :class:`ConfigError`)."""
    try:
        return BACKEND_TABLE[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}") from None


def check_backend(name: str) -> str:
    """Validate a backend name and that it can run here. Nothing falls back silently: an
    unusable backend raises when the network is built, not at its first run."""
    get_backend(name).check()
    return name
