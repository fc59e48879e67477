"""In-place torch loop for group neurons (docs/methods.md#group-neuron): :func:`sjconv.neurons.rules.group_step`
bit for bit, on buffers allocated once per call, as :mod:`sjconv.neurons.kernels.torch_backend` does for
the IF kinds (same blocks of neurons, same 0/1 flags in float32, same return convention).

Per step and block: ``v += x``; k = Σ_j 1[v ≥ j·q] (one compare and one add per member, thresholds
from :func:`~sjconv.neurons.rules.group_thresholds`, so the same float32 values); for ``gn+neg``,
when no member fires, ``k -= 1[v below member j's negative threshold]·1[count ≥ j]`` per member;
``kq = k·q`` (its own pass: k·q is not exact for k > 1, so it must be rounded once before the
subtraction, as the reference does, never fused into it); ``v -= kq``; output kq rounded to the
input dtype (masked: ``+0 + kq·1[kept]``, so a masked negative output is +0 as in the reference).
A pass costs about the same whatever the operation on the CPU, so an m-member neuron takes about
2m + 4 passes per step (3m more when signed): the price of exact comparisons with the reference's
member thresholds (a floor of v/q would round differently near them).
"""

from typing import Optional

import torch

from .. import rules
from .torch_backend import DTYPES, run_blocked


def run_steps(x_seq: torch.Tensor, v: torch.Tensor, count: Optional[torch.Tensor], mask: Optional[torch.Tensor],
              theta: float, signed: bool, neg_rule: str, record_v: bool, levels: int):
    """All steps of ``x_seq`` [T, ...] for a group neuron of ``levels`` members: the result of
    :func:`sjconv.neurons.rules.run_steps` with ``levels``, bit for bit. The tensors passed in
    are not modified. For inference (call it under no_grad or without inputs that need grad)."""
    if x_seq.dtype not in DTYPES or v.dtype != torch.float32 or \
            (signed and count is not None and count.dtype != torch.float32):
        return rules.run_steps(x_seq, v, count, mask, theta, signed, neg_rule, record_v, levels)
    with torch.no_grad():
        T = x_seq.shape[0]
        out = torch.empty_like(x_seq)
        v_seq = torch.empty_like(x_seq, dtype=torch.float32) if record_v else None
        like = x_seq[0] if T else torch.empty(x_seq.shape[1:], dtype=x_seq.dtype, device=x_seq.device)
        vw = torch.empty_like(like, dtype=torch.float32).copy_(v)
        if T == 0:
            return out, vw, (count.clone() if signed else count), v_seq
        state = {"v": vw, "k": torch.empty_like(vw), "flag": torch.empty_like(vw), "kq": torch.empty_like(vw)}
        if mask is not None:   # 1 where the neuron is kept, 0 where masked
            state["keep"] = torch.zeros_like(vw).masked_fill_(mask, 1.0)
        if signed:
            state["count"] = torch.empty_like(vw).copy_(count)
            state["allowed"] = torch.empty_like(vw)
        xs, outs = list(x_seq.unbind(0)), list(out.unbind(0))
        vs = list(v_seq.unbind(0)) if record_v else None
        run_blocked(_steps, xs, outs, vs, state, float(theta), int(levels), bool(signed), neg_rule)
        return out, vw, (state["count"] if signed else count), v_seq


def _steps(xs, outs, vs, state, theta, levels, signed, neg_rule):
    """The T steps on one block of neurons (``state``: its buffers)."""
    q = rules.group_quantum(theta, levels)
    thresholds = rules.group_thresholds(theta, levels)
    snm = neg_rule == "snm"
    lows = thresholds if snm else [0.0] + thresholds[:-1]
    v, k, flag, kq, keep = state["v"], state["k"], state["flag"], state["kq"], state.get("keep")
    count, allowed = state.get("count"), state.get("allowed")
    zero = torch.zeros((), dtype=torch.float32, device=v.device)
    for t, x in enumerate(xs):
        v.add_(x)                                       # v = v + x (float32)
        torch.ge(v, thresholds[0], out=k)               # k = Σ_j 1[v >= j·q]
        for threshold in thresholds[1:]:
            torch.ge(v, threshold, out=flag)
            k.add_(flag)
        if signed:                                      # k -= 1[below member j]·1[count >= j]
            for j, low in enumerate(lows, start=1):
                (torch.le if snm else torch.lt)(v, -low, out=flag)
                torch.ge(count, j, out=allowed)
                k.addcmul_(flag, allowed, value=-1)
            count.add_(k)
        torch.mul(k, q, out=kq)                         # k·q, rounded once to float32
        v.sub_(kq)                                      # v = v - k·q
        if keep is None:
            outs[t].copy_(kq)                           # (k·q).to(dtype)
        else:
            torch.addcmul(zero, kq, keep, out=outs[t])  # +0 + k·q·1[kept]
        if vs is not None:
            vs[t].copy_(v)
