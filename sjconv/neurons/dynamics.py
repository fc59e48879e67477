"""The functional seam: one neuron layer call, stateless, the one place that chooses its path.

A node (:mod:`sjconv.neurons.nodes`) keeps the state and the SpikingJelly conventions and calls
:func:`run_sequence` (all steps of a multi-step call) or :func:`step` (one step) with two small
records (:mod:`sjconv.neurons.records`): the state (v, count, mask) and the kind (signed,
negative rule, θ, levels). What runs:

- the surrogate path (:func:`sjconv.neurons.rules.run_surrogate_steps`) when the call must be
  differentiable (grad mode on and the input or θ requires grad); a backend without backward
  refuses it instead of dropping the gradient;
- else the backend's kernel (:mod:`sjconv.neurons.kernels`), which matches the rules bit for bit;
  a single step of a per-step backend (``fused`` False) is one call of :func:`rules.step`, the
  reference itself, which avoids the setup of a T-step loop for one step.
"""

from typing import NamedTuple, Optional

import torch

from ..errors import BackendUnavailableError
from . import rules
from .kernels import get_backend
from .records import NeuronKind, NeuronState


class Surrogate(NamedTuple):
    """What the differentiable path needs beyond the kind: θ as the tensor gradients reach
    (a buffer or a parameter) and the surrogate derivative of the firing condition."""

    theta: torch.Tensor
    function: object


def needs_grad(x: torch.Tensor, backend: str, surrogate: Optional[Surrogate]) -> bool:
    """Whether this call must be differentiable; then only a trainable backend may run it."""
    return _needs_grad(x, get_backend(backend), surrogate)


def _needs_grad(x, spec, surrogate) -> bool:
    if surrogate is None or not torch.is_grad_enabled():
        return False
    if not (x.requires_grad or surrogate.theta.requires_grad):
        return False
    if not spec.trainable:
        raise BackendUnavailableError(f"backend='{spec.name}' is inference-only (no backward): train "
                                      "(fine-tune) with backend='torch', or run under torch.no_grad()")
    return True


def _run(x_seq, state, kind, spec, record_v, surrogate):
    if _needs_grad(x_seq, spec, surrogate):
        out, v, count = rules.run_surrogate_steps(x_seq, state.v, state.count, state.mask, surrogate.theta,
                                                  kind.signed, kind.neg_rule, surrogate.function, kind.levels)
        return out, state._replace(v=v, count=count), None
    return spec.run(x_seq, state, kind, record_v)


def run_sequence(x_seq: torch.Tensor, state: NeuronState, kind: NeuronKind, backend: str,
                 record_v: bool = False, surrogate: Optional[Surrogate] = None):
    """All T steps of ``x_seq`` [T, ...]: ``(out, state, v_seq)``, ``v_seq`` the potential after
    every step with ``record_v`` (None on the differentiable path, which records nothing)."""
    return _run(x_seq, state, kind, get_backend(backend), record_v, surrogate)


def step(x: torch.Tensor, state: NeuronState, kind: NeuronKind, backend: str,
         surrogate: Optional[Surrogate] = None):
    """One step of ``x`` [N, ...]: ``(out, state)``."""
    spec = get_backend(backend)
    if spec.fused or _needs_grad(x, spec, surrogate):
        out, state, _ = _run(x.unsqueeze(0), state, kind, spec, False, surrogate)
        return out[0], state
    out, v, count = rules.step(x, state.v, state.count, state.mask, kind.theta, kind.signed, kind.neg_rule,
                               kind.levels)
    return out, state._replace(v=v, count=count)
