"""The neuron backends, one record each: the table that the nodes, the command-line choices and
the benchmarks read.

A backend runs all steps of one neuron layer call: ``run(x_seq, state, kind, record_v) ->
(out, state, v_seq)`` with the records of :mod:`sjconv.neurons.records` (the state: v, count,
mask; the kind: signed, negative rule, θ, levels), with the conventions of
:func:`sjconv.neurons.rules.run_steps` (which every backend must match bit for bit). Its name,
flags and summary are a :class:`~sjconv.catalog.BackendSpec` in :mod:`sjconv.catalog` (readable
without torch); this module attaches its ``check`` and ``run`` to that record. Adding a backend is one record
there and its code in this folder; a fused one reuses :func:`sjconv.neurons.kernels.launch.prepare`
(the launch layout) and :func:`sjconv.neurons.kernels.kernel_check.ensure_verified` (the bit-exact
self-check against the rules before its first launch).
"""

import torch

from ... import catalog
from ...errors import ConfigError
from ..records import NeuronKind, NeuronState
from . import cupy_backend, torch_backend, torch_group


def _torch_run(x_seq, state: NeuronState, kind: NeuronKind, record_v: bool):
    """The in-place loop of :mod:`torch_backend` (bit-identical to the rules, a few times faster);
    group neurons: the one of :mod:`torch_group`."""
    if kind.levels is not None:
        out, v, count, v_seq = torch_group.run_steps(x_seq, state.v, state.count, state.mask, kind.theta,
                                                     kind.signed, kind.neg_rule, record_v, kind.levels)
    else:
        out, v, count, v_seq = torch_backend.run_steps(x_seq, state.v, state.count, state.mask, kind.theta,
                                                       kind.signed, kind.neg_rule, record_v)
    return out, state._replace(v=v, count=count), v_seq


def _cupy_run(x_seq, state: NeuronState, kind: NeuronKind, record_v: bool):
    """One fused CuPy launch for all steps (the state updated in place when the node owns it);
    with ``record_v``, one launch per step (to read v), on copies."""
    def launch(x, v, count, in_place=False):
        return cupy_backend.multi_step(x, v, count, state.mask, kind.theta, kind.signed, kind.snm, kind.levels,
                                       in_place)

    if not record_v:
        out, v, count = launch(x_seq, state.v, state.count, state.owned)
        return out, state._replace(v=v, count=count), None
    outs, v_steps = [], []
    v, count = state.v, state.count
    for t in range(x_seq.shape[0]):
        out, v, count = launch(x_seq[t:t + 1], v, count)
        outs.append(out)
        v_steps.append(v)
    return torch.cat(outs), state._replace(v=v, count=count), torch.stack(v_steps)


#: the code of every backend of the catalog: name -> (check, run)
_CODE = {
    "torch": (lambda: None, _torch_run),
    "cupy": (lambda: cupy_backend.check_environment(), _cupy_run),
}

assert set(_CODE) == set(catalog.BACKEND_TABLE), "every backend of the catalog has its code here"
for _name, (_check, _run) in _CODE.items():
    catalog.attach("check", _name, _check)
    catalog.attach("run", _name, _run)

#: every backend, by name: the records of :data:`sjconv.catalog.BACKEND_TABLE`, with their code attached
BACKEND_TABLE = catalog.BACKEND_TABLE
#: a backend's record
Backend = catalog.BackendSpec

#: backend names, in table order
BACKENDS = catalog.BACKENDS


def get_backend(name: str) -> catalog.BackendSpec:
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
