"""Launch layout shared by fused neuron kernels (any backend that runs one thread per neuron).

A fused kernel reads element i of every time step at offset ``t·x_step + i`` and keeps element i
of the states (potential, signed count, SRP mask) at offset i. :func:`prepare` arranges that on the
storage as it is: a step that is dense (contiguous, channels_last or channels_last_3d) is used in
place with no copy, so fp16/bf16 channels_last activations are read where they lie; anything
else is copied to contiguous. The states are given exactly the strides of one input step.
"""

from typing import NamedTuple

import torch


def fills_storage(t: torch.Tensor) -> bool:
    """Whether ``t``'s elements fill ``numel`` consecutive storage slots (any dim order, e.g.
    contiguous or channels_last; no gaps, no overlap): the in-place torch loops then run on
    :func:`storage_view` in blocks."""
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def storage_view(t: torch.Tensor) -> torch.Tensor:
    """A tensor that :func:`fills_storage`, as a 1-D view of its storage in memory order."""
    return t.as_strided((t.numel(),), (1,), t.storage_offset())


def kernel_ready(t: torch.Tensor) -> bool:
    """Whether a fused kernel can read one step ``t`` in place: contiguous, channels_last or
    channels_last_3d (a narrower test than :func:`fills_storage`: the states get these strides)."""
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)) \
        or (t.dim() == 5 and t.is_contiguous(memory_format=torch.channels_last_3d))


def _like(state: torch.Tensor, step: torch.Tensor, dtype, fresh: bool) -> torch.Tensor:
    """``state`` with exactly the strides of one input step; a new tensor when ``fresh`` (the
    kernel writes states in place, and the caller's tensors must stay untouched)."""
    if state.stride() == step.stride() and state.dtype == dtype and state.device == step.device:
        return state.clone() if fresh else state
    out = torch.empty_like(step, dtype=dtype)
    out.copy_(state)
    return out


class Launch(NamedTuple):
    """Tensors and sizes of one kernel launch, laid out so that element i of one step has the
    same storage offset in x, out, v, count and mask."""
    x: torch.Tensor
    out: torch.Tensor
    v: torch.Tensor
    count: torch.Tensor   # v again when the node is not signed (never written then)
    mask: torch.Tensor    # v again when there is no mask (never read then)
    n: int                # neurons per step
    steps: int

    def pointer_args(self):
        """Kernel arguments after the flags: pointers and sizes as Python ints (without θ)."""
        return (self.x.data_ptr(), self.out.data_ptr(), self.v.data_ptr(), self.count.data_ptr(),
                self.mask.data_ptr(), self.n, self.steps, self.x.stride(0), self.out.stride(0))


def prepare(x_seq, v, count, mask, signed: bool, in_place: bool = False) -> Launch:
    """Arrange a launch on the storage as it is: one dense step (contiguous or channels_last)
    is used in place, anything else is copied to contiguous; states get the step's strides.
    ``in_place``: ``v`` and ``count`` are the caller's own and are updated where they lie when
    their layout allows (else, and by default, the launch gets copies and the arguments stay
    untouched): a step in 's' mode then reads and writes the state once instead of also copying it."""
    step = x_seq[0] if x_seq.shape[0] else x_seq.new_empty(x_seq.shape[1:])
    if not kernel_ready(step):
        x_seq = x_seq.contiguous()
        step = x_seq[0]
    out = torch.empty_like(x_seq)
    if x_seq.shape[0] and out[0].stride() != step.stride():
        x_seq, out = x_seq.contiguous(), torch.empty(x_seq.shape, dtype=x_seq.dtype, device=x_seq.device)
        step = x_seq[0]
    v = _like(v, step, torch.float32, fresh=not in_place)
    count = _like(count, step, torch.float32, fresh=not in_place) if signed else v
    mask_arg = _like(mask, step, torch.bool, fresh=False) if mask is not None else v
    return Launch(x_seq, out, v, count, mask_arg, step.numel(), x_seq.shape[0])


