"""In-place torch loop for inference: the rules of :mod:`sjconv.neurons.rules`, bit for bit, faster.

:func:`sjconv.neurons.rules.run_steps` is the readable reference: every step makes new tensors
(``v + x``, the spike tensor, ``v - θ·s``, the output, the masked output), and copies the output
into its slot. :func:`run_steps` here does the same float32 operations in the same order, but on
buffers allocated once per call: the output is preallocated, the state lives in private copies
updated in place (``add_``, ``sub_``), and the spikes go into reused temporaries through ``out=``.
Two further choices make it fast on the CPU:

- blocks: when every step of the input, the output and the state share one dense layout, the
  neurons are processed in blocks of :data:`BLOCK`, all T steps of a block before the next, so the
  block's state and temporaries stay in cache from one step to the next (the signed neuron keeps
  five buffers, which at 1M neurons no longer fit). The operations per element are unchanged.
  On the CPU only: on a GPU every operation is a kernel launch, and blocks would multiply the
  launches (a signed [64, 4M] layer: 8192 launches instead of 512) for no cache benefit.
- 0/1 flags in float32, not bool: on the CPU, comparisons writing bool or uint8, masked writes
  with a bool mask (``torch.where``, ``masked_fill_``) and mixed float32/int8 operands are several
  times slower than float32 operations, so every buffer is float32.

What this costs: each torch operation is one pass over the block, and on the CPU a pass costs
about the same whatever the float32 operation, so the number of passes per step is the cost. The
IF kinds need 4 (add, compare, reset, output), the least any loop of torch operations can do, and
run at about the speed of the minimal in-place loop of ``benchmarks/neuron_kernels.py`` (which
measures both on the machine at hand). A signed kind takes 8: the same 4, the count update, and 3
for the negative spike (``v < 0``, ``count > 0``, their product taken off ``s``): each operation
gives one value per neuron, the spike is a three-way function of two thresholds and the count,
and no exact formulation with fewer passes was found (folding the two tests into
``max(v, -count) < 0`` keeps 3 passes and would need a second count convention). Only a fused
kernel (the ``cupy`` backend on the GPU: one pass for all T steps) does better.

It is for inference: nothing is recorded for autograd, and an input that needs a gradient is
refused (use the reference loop to train). Callers pick it when
``not torch.is_grad_enabled() or not x_seq.requires_grad``.

Why the results are bit-identical to the reference (its operations, in float32):

- ``v = v + x``: ``v.add_(x)`` on the float32 ``v`` promotes a float16/bfloat16 ``x`` to float32
  exactly and rounds the sum once, as the out-of-place ``v + x`` does.
- ``s = 1[v >= θ]`` (and the negative condition): comparisons are exact; θ is rounded to float32
  in both.
- ``v = v - θ·s``: ``v.sub_(s, alpha=θ)``; ``θ·s`` is exact for s in {-1, 0, 1}, so one rounding
  of ``v - θ·s`` whether or not the kernel fuses the multiply.
- output ``(s·θ).to(dtype)``: ``torch.mul(s, θ, out=out[t])`` computes ``s·θ`` in float32 and
  rounds it to the output dtype on the store. Masked outputs must be +0, also for a masked
  negative spike (``-1·0`` would be -0): the output is ``0 + s·θm`` (``addcmul`` with a +0 scalar
  tensor), with ``θm`` = θ where the mask keeps the neuron and 0 where it does not.
- signed: ``s = pos - neg`` becomes ``s = 1[v >= θ]`` followed by
  ``s.addcmul_(below, count > 0, value=-1)``: ``s + (-1)·(b·c)`` with every factor 0 or 1 is
  exact and gives +0 (not -0) where no spike fires, as ``0.0 - 0.0`` does in the reference.

Inputs of another dtype than float32/float16/bfloat16, or states that are not float32, are
outside the state conventions of :mod:`~sjconv.neurons.rules`; they are passed to the reference
loop unchanged, so every input gets the reference's result.
"""

from typing import Optional

import torch

from ...errors import ConfigError
from .. import rules
from .launch import fills_storage, storage_view

#: input dtypes the in-place loop handles (the state is float32 for all of them)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def run_steps(x_seq: torch.Tensor, v: torch.Tensor, count: Optional[torch.Tensor], mask: Optional[torch.Tensor],
              theta: float, signed: bool, neg_rule: str = "qcfs", record_v: bool = False):
    """All steps of ``x_seq`` [T, ...], in place: same signature, results and return convention as
    :func:`sjconv.neurons.rules.run_steps`, bit for bit.

    Returns ``(out, v, count, v_seq)``: ``out`` [T, ...] in the input dtype and layout (e.g.
    channels_last steps stay channels_last), the final float32 ``v`` and ``count`` (``count`` is
    returned as given when ``signed`` is False), and ``v_seq`` [T, ...] (v after each step) only
    with ``record_v``. The tensors passed in are never modified: ``v`` and ``count`` are copied
    once per call and the copies are updated in place.

    :raises ConfigError: when autograd would need a graph (grad mode on and an input requires
        grad): this loop is for inference only.
    """
    if neg_rule not in rules.NEG_RULES:
        raise ConfigError(f"unknown neg_rule '{neg_rule}'; choose one of {', '.join(rules.NEG_RULES)}")
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad
                                       for t in (x_seq, v, count)):
        raise ConfigError("torch_backend.run_steps is for inference and keeps no autograd graph, but an "
                          "input requires grad: run it under torch.no_grad() or use rules.run_steps to train")
    if x_seq.dtype not in DTYPES or v.dtype != torch.float32 or \
            (signed and count is not None and count.dtype != torch.float32):
        return rules.run_steps(x_seq, v, count, mask, theta, signed, neg_rule, record_v)
    if signed and not isinstance(count, torch.Tensor):
        raise ConfigError("a signed neuron needs its spike count: pass count as a float32 tensor (zeros to start)")
    with torch.no_grad():
        return _run(x_seq, v, count, mask, float(theta), bool(signed), neg_rule, record_v)


#: neurons per block: the loop runs all T steps on one block of neurons before the next, so
#: the state and temporaries of a block (up to 6 float32 buffers) stay in cache between steps
BLOCK = 1 << 18

#: device types whose layers are run in blocks (a cache optimisation; launches cost on a GPU)
BLOCK_DEVICES = ("cpu",)


def _run(x_seq, v, count, mask, theta, signed, neg_rule, record_v):
    T = x_seq.shape[0]
    out = torch.empty_like(x_seq)  # as the reference: same dtype and strides as the input
    v_seq = torch.empty_like(x_seq, dtype=torch.float32) if record_v else None
    step_shape = x_seq.shape[1:]
    # state and temporaries shaped and laid out like one input step (dense layouts kept)
    like = x_seq[0] if T else torch.empty(step_shape, dtype=x_seq.dtype, device=x_seq.device)
    vw = torch.empty_like(like, dtype=torch.float32).copy_(v)
    if T == 0:
        return out, vw, (count.clone() if signed else count), v_seq
    state = {"v": vw, "s": torch.empty_like(vw)}
    if mask is not None:  # θ where the neuron is kept, +0 where it is masked
        state["theta_m"] = torch.zeros_like(vw).masked_fill_(mask, theta)
    if signed:
        state["count"] = torch.empty_like(vw).copy_(count)
        # 0/1 flags kept in float32: CPU kernels that mix bool and float operands are far slower
        state["below"] = torch.empty_like(vw)                  # v below the negative threshold
        state["positive"] = torch.empty_like(vw)               # count > 0
    xs, outs = list(x_seq.unbind(0)), list(out.unbind(0))
    vs = list(v_seq.unbind(0)) if record_v else None
    run_blocked(_steps, xs, outs, vs, state, theta, signed, neg_rule)
    return out, vw, (state["count"] if signed else count), v_seq


def run_blocked(steps, xs, outs, vs, state, *args) -> None:
    """``steps(xs, outs, vs, state, *args)`` on a whole layer (``xs``/``outs``/``vs``: one tensor per
    step; ``state``: the buffers, ``state['v']`` among them), in blocks of :data:`BLOCK` neurons
    when the layer is larger, on a device of :data:`BLOCK_DEVICES`, and every tensor has the dense
    strides of ``v`` (then the k-th storage slot of every tensor is the same neuron); else in one."""
    v = state["v"]
    n = v.numel()
    if n > BLOCK and v.device.type in BLOCK_DEVICES and fills_storage(v) and \
            all(t.stride() == v.stride() for t in xs + outs + (vs or [])):
        flat = {k: storage_view(t) for k, t in state.items()}
        xs, outs = [storage_view(t) for t in xs], [storage_view(t) for t in outs]
        vs = [storage_view(t) for t in vs] if vs is not None else None
        for a in range(0, n, BLOCK):
            part = slice(a, min(n, a + BLOCK))
            steps([x[part] for x in xs], [o[part] for o in outs], [u[part] for u in vs] if vs is not None else None,
                  {k: t[part] for k, t in flat.items()}, *args)
    else:
        steps(xs, outs, vs, state, *args)


def _steps(xs, outs, vs, state, theta, signed, neg_rule):
    """The T steps on one block: ``xs``/``outs``/``vs`` per step, ``state`` the block's buffers
    (``v``, ``s``, optional ``theta_m``, and ``count``/``below``/``positive`` when signed)."""
    v, s, theta_m = state["v"], state["s"], state.get("theta_m")
    if signed:
        count, below, positive = state["count"], state["below"], state["positive"]
        snm = neg_rule == "snm"
    if theta_m is not None and signed:
        zero = torch.zeros((), dtype=torch.float32, device=v.device)
    for t, x in enumerate(xs):
        v.add_(x)                                   # v = v + x (float32)
        torch.ge(v, theta, out=s)                   # s = 1[v >= θ]
        if signed:                                  # s -= 1[below]·1[count > 0]
            if snm:
                torch.le(v, -theta, out=below)      # v <= -θ
            else:
                torch.lt(v, 0, out=below)           # v < 0
            torch.gt(count, 0, out=positive)
            s.addcmul_(below, positive, value=-1)
            count.add_(s)                           # count = count + s
        v.sub_(s, alpha=theta)                      # v = v - θ·s
        if theta_m is None:
            torch.mul(s, theta, out=outs[t])        # (θ·s).to(dtype)
        elif signed:
            torch.addcmul(zero, s, theta_m, out=outs[t])   # +0 + s·θm: masked -1 gives +0
        else:
            torch.mul(s, theta_m, out=outs[t])      # s >= 0: masked gives +0
        if vs is not None:
            vs[t].copy_(v)
