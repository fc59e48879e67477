"""The neuron update rules of docs/methods.md#if-neuron, docs/methods.md#signed-neuron, docs/methods.md#srp, docs/methods.md#cos and docs/methods.md#group-neuron, written once, one time step at a time.

Every backend must reproduce these bit for bit: the torch backend calls them in a loop and
the tests compare other backends and step modes against them.

State conventions (shared by all backends):

- ``v`` (membrane potential) is in :func:`state_dtype` of the input: float64 for float64 inputs
  (a float64 network computes in float64 throughout), float32 for float32, float16 and bfloat16
  inputs; arithmetic is in that dtype.
- ``count`` (net spike count of a signed neuron) is in the same dtype, holding whole numbers.
- ``mask`` (SRP) is a bool tensor or ``None`` (no masking, e.g. during the pre-run).
- the output is θ·s in the input dtype, s ∈ {0, 1} or {-1, 0, 1}; masked outputs are +0.
- group neurons (docs/methods.md#group-neuron, ``levels`` = m members): s is the signed number of units k (``|k| <= m``), the
  output is q·k with q = θ/m, and ``count`` holds the net units transmitted.
"""

from typing import List, Optional

import torch

from .. import catalog

#: negative-spike rules of the signed neuron (named in the catalog, readable without torch)
NEG_RULES = catalog.NEG_RULES

#: SRP keeps a neuron when its residual potential after the pre-run is above this fraction of θ
SRP_MASK_FRACTION = 1e-3

#: COS shift margins (docs/methods.md#cos), in units of θ: a firing potential a gives ``down = a - 0.999θ`` and a
#: silent potential b gives ``up = 1.001θ - b``, each used only when it exceeds θ
COS_DOWN_MARGIN = 0.999
COS_UP_MARGIN = 1.001


def state_dtype(input_dtype: torch.dtype) -> torch.dtype:
    """Dtype of the membrane state for inputs of ``input_dtype``: float64 stays float64, every
    other dtype (float32 and the 16-bit formats, whose sums would lose the small inputs) gets float32."""
    return torch.float64 if input_dtype == torch.float64 else torch.float32


def if_step(x: torch.Tensor, v: torch.Tensor, theta: float):
    """Half-threshold IF, one step: ``v += x; s = v >= θ; v -= θ·s``. Returns ``(s, v)``."""
    v = v + x
    s = (v >= theta).to(v.dtype)
    return s, v - theta * s


def signed_if_step(x: torch.Tensor, v: torch.Tensor, count: torch.Tensor, theta: float,
                   neg_rule: str = "qcfs"):
    """Signed IF, one step. Returns ``(s, v, count)`` with s in {-1, 0, +1}.

    ``neg_rule='qcfs'``: negative spike when ``v < 0`` and ``count > 0`` (default, docs/methods.md#signed-neuron).
    ``neg_rule='snm'``: negative spike when ``v <= -θ`` and ``count > 0`` (Wang et al.).
    A positive spike (``v >= θ``) always wins; the two conditions cannot both hold.
    """
    v = v + x
    pos = v >= theta
    below = (v <= -theta) if neg_rule == "snm" else (v < 0)
    neg = below & (count > 0)
    s = pos.to(v.dtype) - neg.to(v.dtype)
    return s, v - theta * s, count + s


def group_quantum(theta: float, levels: int) -> float:
    """q = θ/m, the value of one unit of a group neuron, as a Python float (the float32 kernels
    round it to float32, which is the correctly rounded float32 θ/m)."""
    return theta / levels


def group_thresholds(theta: float, levels: int) -> List[float]:
    """The member thresholds j·q, j = 1..m, exactly as the reference computes them (docs/methods.md#group-neuron): the
    integers 1..m times q in float32 (q rounded to float32 first, one rounding of the product),
    as Python floats holding those float32 values. They never decrease with j."""
    return (torch.arange(1, levels + 1, dtype=torch.float32) * group_quantum(theta, levels)).tolist()


def group_step(x: torch.Tensor, v: torch.Tensor, count: Optional[torch.Tensor], theta: float, levels: int,
               signed: bool = False, neg_rule: str = "qcfs"):
    """Group neuron (docs/methods.md#group-neuron), one step: ``(k, v, count)``, k the signed units sent.

    ``v += x``; k = the number of members j in 1..m with ``v >= j·q`` (:func:`group_thresholds`);
    signed (``gn+neg``), when no member fires: k = -(the number of members j with
    ``v < -(j-1)·q`` and ``count >= j``) (``neg_rule='snm'``: ``v <= -j·q``), i.e. up to m units
    taken back, never more than the net count sent; ``v -= k·q``, ``count += k``.
    With m = 1 this is :func:`if_step` / :func:`signed_if_step`, bit for bit.
    """
    q = group_quantum(theta, levels)
    thresholds = group_thresholds(theta, levels)
    v = v + x
    k = torch.zeros_like(v)
    for threshold in thresholds:
        k = k + (v >= threshold).to(v.dtype)
    if signed:
        lows = thresholds if neg_rule == "snm" else [0.0] + thresholds[:-1]
        for j, low in enumerate(lows, start=1):
            below = (v <= -low) if neg_rule == "snm" else (v < -low)
            k = k - (below & (count >= j)).to(v.dtype)
        count = count + k
    return k, v - k * q, count


def start_potential(theta: float, signed: bool, neg_rule: str = "qcfs", levels: Optional[int] = None) -> float:
    """Potential every neuron starts from (the only place it is written): θ/2, for a group neuron
    q/2 with q = θ/m (docs/methods.md#group-neuron), and 0 for the SNM signed rule."""
    if signed and neg_rule == "snm":
        return 0.0
    if levels is not None:
        return group_quantum(theta, levels) / 2.0
    return theta / 2.0


def emit(s: torch.Tensor, theta: float, dtype: torch.dtype, mask: Optional[torch.Tensor]):
    """Output of a step: θ·s in ``dtype``; where ``mask`` is False the output is +0."""
    out = (s * theta).to(dtype)
    if mask is not None:
        out = out.masked_fill(~mask, 0)
    return out


def step(x: torch.Tensor, v: torch.Tensor, count: Optional[torch.Tensor], mask: Optional[torch.Tensor],
         theta: float, signed: bool, neg_rule: str = "qcfs", levels: Optional[int] = None):
    """One step of any node kind (IF or signed IF, with or without SRP mask; a group neuron of
    ``levels`` members when that is given): ``(out, v, count)``.
    ``count`` is passed through untouched (it may be None) when the node is not signed."""
    if levels is not None:
        k, v, count = group_step(x, v, count, theta, levels, signed, neg_rule)
        return emit(k, group_quantum(theta, levels), x.dtype, mask), v, count
    if signed:
        s, v, count = signed_if_step(x, v, count, theta, neg_rule)
    else:
        s, v = if_step(x, v, theta)
    return emit(s, theta, x.dtype, mask), v, count


def run_steps(x_seq: torch.Tensor, v: torch.Tensor, count: Optional[torch.Tensor], mask: Optional[torch.Tensor],
              theta: float, signed: bool, neg_rule: str = "qcfs", record_v: bool = False,
              levels: Optional[int] = None):
    """All steps of ``x_seq`` [T, ...] with :func:`step`, the reference every backend matches.

    Returns ``(out, v, count, v_seq)``; ``v_seq`` [T, ...] (v after each step) only with ``record_v``.
    """
    out = torch.empty_like(x_seq)
    v_steps = [] if record_v else None
    for t in range(x_seq.shape[0]):
        out[t], v, count = step(x_seq[t], v, count, mask, theta, signed, neg_rule, levels)
        if record_v:
            v_steps.append(v)
    return out, v, count, (torch.stack(v_steps) if record_v else None)


def srp_mask(v: torch.Tensor, theta: float) -> torch.Tensor:
    """SRP mask after the pre-run: keep neurons whose residual potential is > 1e-3·θ."""
    return v > SRP_MASK_FRACTION * theta


def cos_initial_potential(x_seq: torch.Tensor, theta: float, v_start: torch.Tensor) -> torch.Tensor:
    """COS calibration of one layer (docs/methods.md#cos): the initial potential of its main run.

    Pre-simulates the plain IF rule (:func:`if_step`) on the layer's first inputs ``x_seq``
    [ρ, ...] from ``v_start`` (θ/2) and records per neuron: n, the number of spikes; a, the
    smallest pre-reset potential of a step that fired (+inf if none); b, the largest potential
    of a step that did not fire (-inf if none); v_ρ, the final potential. Then

        down = a - 0.999θ if a - 0.999θ > θ else θ;   up = 1.001θ - b if 1.001θ - b > θ else θ
        v0 = θ/2;  v0 = θ/2 - down where v_ρ < 0 and n >= 1;  v0 = θ/2 + up where v_ρ >= θ

    docs/methods.md#cos is written in threshold units u = v/θ (the reference code divides the input by θ); here,
    like every rule of this module, potentials are in input units, so the margins scale with θ.
    A neuron that fired at every step and still holds v_ρ >= θ gets v0 = +inf (b = -inf): it
    fires at every main-run step, its output θ per step being the QCFS clip value. Returns a
    tensor in ``v_start``'s dtype shaped like one step (``v_start`` is not modified).
    """
    v = v_start
    fired_count = torch.zeros_like(v)
    lowest_fired = torch.full_like(v, float("inf"))
    highest_silent = torch.full_like(v, float("-inf"))
    for t in range(x_seq.shape[0]):
        before_reset = v + x_seq[t]
        s, v = if_step(x_seq[t], v, theta)
        fired = s > 0
        lowest_fired = torch.where(fired, torch.minimum(lowest_fired, before_reset), lowest_fired)
        highest_silent = torch.where(fired, highest_silent, torch.maximum(highest_silent, before_reset))
        fired_count = fired_count + s
    down = lowest_fired - COS_DOWN_MARGIN * theta
    down = torch.where(down > theta, down, torch.full_like(down, theta))
    up = COS_UP_MARGIN * theta - highest_silent
    up = torch.where(up > theta, up, torch.full_like(up, theta))
    half = torch.full_like(v, start_potential(theta, signed=False))
    v0 = torch.where((v < 0) & (fired_count >= 1), half - down, half)
    return torch.where(v >= theta, half + up, v0)


def surrogate_step(x: torch.Tensor, v: torch.Tensor, count: Optional[torch.Tensor], mask: Optional[torch.Tensor],
                   theta: torch.Tensor, theta_value: float, signed: bool, neg_rule: str, surrogate_function):
    """:func:`step` for training (docs/protocols.md#fine-tuning): the same values, with gradients.

    The spike is computed exactly as in :func:`step` (so the forward is bit-identical to
    inference); its gradient is the surrogate derivative of the firing condition, added as
    ``g(z) - g(z).detach()`` (zero in value): ``z = v - θ`` for a positive spike and, for a
    signed neuron whose count is > 0, ``z = -v`` (``-(v + θ)`` with the SNM rule) for a negative one.
    ``theta`` is a tensor (learnable): it enters the firing condition, the reset ``v -= θ·s`` and the
    amplitude ``θ·s``; ``theta_value`` is its float value. The count carries no gradient.
    """
    gate = count > 0 if signed else None   # a negative spike is possible only after a net positive count
    with torch.no_grad():
        if signed:
            s_value, _, count = signed_if_step(x, v, count, theta_value, neg_rule)
        else:
            s_value, _ = if_step(x, v, theta_value)
    v = v + x
    up = surrogate_function(v - theta)
    s = s_value + (up - up.detach())
    if signed:
        low = surrogate_function(-(v + theta) if neg_rule == "snm" else -v)
        s = s - (low - low.detach()) * gate
    out = (s * theta).to(x.dtype)
    if mask is not None:
        out = out.masked_fill(~mask, 0)
    return out, v - theta * s, count


def surrogate_group_step(x: torch.Tensor, v: torch.Tensor, count: Optional[torch.Tensor],
                         mask: Optional[torch.Tensor], theta: torch.Tensor, theta_value: float, levels: int,
                         signed: bool, neg_rule: str, surrogate_function):
    """:func:`group_step` for training (docs/protocols.md#fine-tuning, docs/methods.md#group-neuron): the same values, with gradients.

    Every member's firing condition gets the surrogate derivative: k's gradient is the sum over
    members j of ``g(v - j·q)`` (``q = θ/m``, so θ enters each member's threshold), and for a signed
    group, minus ``g(-(v + (j-1)·q))`` (``-(v + j·q)`` with the SNM rule) for the members whose
    negative unit is possible (``count >= j``). θ also enters the unit value of the output
    ``k·q`` and of the reset ``v -= k·q``. Values are those of :func:`group_step`, bit for bit.
    """
    with torch.no_grad():
        k_value, _, new_count = group_step(x, v, count, theta_value, levels, signed, neg_rule)
    v = v + x
    q = theta / levels
    k = k_value
    for j in range(1, levels + 1):
        up = surrogate_function(v - q * j)
        k = k + (up - up.detach())
        if signed:
            low = surrogate_function(-(v + q * j) if neg_rule == "snm" else -(v + q * (j - 1)))
            k = k - (low - low.detach()) * (count >= j)
    out = (k * q).to(x.dtype)
    if mask is not None:
        out = out.masked_fill(~mask, 0)
    return out, v - k * q, new_count


def run_surrogate_steps(x_seq: torch.Tensor, v: torch.Tensor, count: Optional[torch.Tensor],
                        mask: Optional[torch.Tensor], theta: torch.Tensor, signed: bool, neg_rule: str,
                        surrogate_function, levels: Optional[int] = None):
    """All steps of ``x_seq`` with :func:`surrogate_step` (:func:`surrogate_group_step` for a group
    neuron of ``levels`` members): ``(out [T, ...], v, count)``."""
    theta_value = float(theta.detach().reshape(-1)[0])
    outs = []
    for t in range(x_seq.shape[0]):
        if levels is not None:
            out, v, count = surrogate_group_step(x_seq[t], v, count, mask, theta, theta_value, levels, signed,
                                                 neg_rule, surrogate_function)
            outs.append(out)
            continue
        out, v, count = surrogate_step(x_seq[t], v, count, mask, theta, theta_value, signed, neg_rule,
                                       surrogate_function)
        outs.append(out)
    return torch.stack(outs), v, count


def zif(gamma: float = 1.0):
    """The ZIF triangle surrogate of docs/methods.md#training: forward ``1[z >= 0]``, derivative
    ``(1/γ)² · max(0, γ - |z|)``. That is SpikingJelly's ``PiecewiseQuadratic`` with ``alpha = 1/γ``
    (its derivative ``α - α²|z|`` for ``|z| <= 1/α``, else 0), so it is returned as one."""
    from spikingjelly.activation_based import surrogate

    if not gamma > 0:
        from ..errors import ConfigError
        raise ConfigError(f"the ZIF surrogate width gamma must be > 0, got {gamma}")
    return surrogate.PiecewiseQuadratic(alpha=1.0 / gamma)
