"""Memory budgets for multi-step simulation: pick the largest chunk of time steps that fits.

Multi-step mode holds every layer's activations for all steps of a call, so its peak memory
grows linearly with the steps per call. Given a budget, :func:`choose_chunk` finds the
per-step footprint and the fixed part (weights, images, neuron states) and returns the largest
chunk that fits:

- on CUDA it is **measured**: the peak of a 1-step and a 2-step call from a reset network, after
  an unmeasured 2-step call (cuDNN/cuBLAS pick their algorithms and workspaces and CuPy compiles
  on the first calls, which would distort the peaks); a per-step difference that comes out <= 0
  (workspaces that shrink with the batch) is replaced by the computed one below;
- elsewhere it is **computed** with forward hooks from one 1-step call: the fixed part is the
  parameters, buffers and neuron states; the per-step part is the largest input + output of any
  module (the two that are alive together), counted twice for the neuron nodes' loop temporaries.
"""

import re
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn as nn
from spikingjelly.activation_based import base, functional

from .errors import ConfigError, SjconvError
from .neurons import protocol

_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}

#: unit of a size written as a bare number ('24' is 24 GB): nobody means a budget of 24 bytes
BARE_UNIT = "GB"

#: the share of a budget that a chosen chunk may plan to use (allocator slack, fragmentation)
SAFETY = 0.9


def parse_memory(text: Union[str, int, float]) -> int:
    """A memory size in bytes.

    A string is a number and a unit: '24GB' (10^9 bytes per GB), '24GiB' (2^30 bytes), '512MB',
    '2KiB', '1.5e9B'; units are case-insensitive. **A bare number is in gigabytes**: '24' (as in
    ``--memory-budget 24``) is 24 GB, because a budget of a few bytes is never what is meant.
    A Python ``int`` or ``float`` is a byte count (what the library itself computes and passes).
    """
    if isinstance(text, (int, float)):
        value = int(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        unit = (match.group(2).upper() or BARE_UNIT) if match else None
        if not match or unit not in _UNITS:
            raise ConfigError(f"cannot read memory size '{text}': write it like 24GB, 24GiB or 512MB "
                              f"(a bare number is {BARE_UNIT})")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ConfigError(f"a memory budget must be positive, got '{text}'")
    return value


def format_bytes(n: float) -> str:
    """A byte count for messages, in the largest binary unit that keeps it >= 1 ('1.50 GiB',
    '3.20 MiB', '24 B'), so that small sizes do not print as '0.00 GiB'."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def _sizes_like(budget: int):
    """A formatter of byte counts in the unit the budget was most likely typed in, so that a
    message about it shows every size in the user's unit: decimal (GB, MB) for a whole number of
    kB ('2GB', a bare '2'), binary (GiB, MiB) for a whole number of KiB ('24GiB', '100KiB'); the
    largest unit that keeps the budget >= 1, and no exponents ('1153434 B', not '1.153e+06 B')."""
    binary = budget % 2**30 == 0 or (budget % 1000 != 0 and budget % 1024 == 0)
    units = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)) if binary else (("GB", 10**9), ("MB", 10**6),
                                                                           ("KB", 10**3))
    unit, size = next(((u, n) for u, n in units if budget >= n), ("B", 1))
    return lambda n: f"{n / size:.0f} {unit}" if n / size >= 10**4 else f"{n / size:.4g} {unit}"


@dataclass
class Footprint:
    """Memory model of one multi-step call: ``fixed + per_step * steps`` bytes."""
    fixed: int
    per_step: int
    how: str  # "measured" (CUDA) or "computed" (hooks)

    def chunk_for(self, budget: int, T: int) -> int:
        room = SAFETY * budget - self.fixed
        if room < self.per_step:
            show = _sizes_like(budget)
            raise SjconvError(
                f"a memory budget of {show(budget)} does not fit even one time step: it needs "
                f"{show(self.fixed + self.per_step)} ({self.how}), and a run plans for at most {SAFETY:.0%} "
                f"of the budget ({show(SAFETY * budget)}; the rest is a safety margin): lower --batch-size "
                "or raise --memory-budget")
        return max(1, min(int(T), int(room // self.per_step)))


def _tensor_bytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def _state_bytes(net: nn.Module) -> int:
    total = 0
    for module in net.modules():
        if isinstance(module, base.MemoryModule):
            total += sum(_tensor_bytes(v) for v in module._memories.values())
    return total


@torch.no_grad()
def measure_footprint(net: nn.Module, images: torch.Tensor) -> Footprint:
    """Per-step and fixed memory of ``net`` (multi-step mode) on ``images``."""
    if images.is_cuda:
        return _measured(net, images)
    return _computed(net, images)


def _cuda_peak(net, images, steps: int) -> int:
    """Peak CUDA memory (bytes) of one ``steps``-step call of ``net`` from a reset state."""
    functional.reset_net(net)   # the last call's states freed before the peak is reset
    torch.cuda.synchronize(images.device)
    torch.cuda.reset_peak_memory_stats(images.device)
    for out in protocol.run(net, images, steps):   # one call of all steps, from a reset state
        del out
    torch.cuda.synchronize(images.device)
    return torch.cuda.max_memory_allocated(images.device)


#: steps of the unmeasured warm-up call before the footprint is measured
WARMUP_STEPS = 2


def _measured(net, images, peak=_cuda_peak) -> Footprint:
    """Footprint from the peaks of a 1- and a 2-step call after a warm-up call (``peak(net,
    images, steps)`` measures one call; a parameter so that tests can stand in for CUDA)."""
    try:
        peak(net, images, WARMUP_STEPS)
        one, two = peak(net, images, 1), peak(net, images, 2)
    finally:
        functional.reset_net(net)
    per_step, how = two - one, "measured"
    if per_step <= 0:   # the 2-step call peaked no higher: extrapolating would allow any chunk
        per_step, how = _computed(net, images).per_step, "measured, per step computed"
    return Footprint(fixed=max(one - per_step, 0), per_step=per_step, how=how)


def _computed(net, images) -> Footprint:
    largest = [0]

    def hook(module, inputs, output):
        largest[0] = max(largest[0], _tensor_bytes(inputs) + _tensor_bytes(output))

    handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    try:
        for _ in protocol.run(net, images, 1):
            pass
        states = _state_bytes(net)
    finally:
        for h in handles:
            h.remove()
        functional.reset_net(net)
    params = sum(_tensor_bytes(t) for t in list(net.parameters()) + list(net.buffers()))
    per_step = 2 * largest[0] + _tensor_bytes(images)
    return Footprint(fixed=params + states + _tensor_bytes(images), per_step=max(per_step, 1), how="computed")


#: what cuDNN, cuBLAS and the CUDA runtime say when an allocation fails (raised as RuntimeError)
ALLOCATION_FAILURES = ("CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED", "CUDA error: out of memory",
                       "cudaErrorMemoryAllocation", "CUDA out of memory")


def is_allocation_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says that memory ran out: torch's ``OutOfMemoryError``, a ``MemoryError``
    (also CuPy's), or a cuDNN/cuBLAS/CUDA allocation failure raised as ``RuntimeError``. The
    memory budget's retry treats them all alike."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in ALLOCATION_FAILURES)


def choose_chunk(net: nn.Module, images: torch.Tensor, T: int, budget: Union[int, str]) -> int:
    """Largest number of steps per multi-step call that keeps ``net`` within ``budget`` bytes."""
    return measure_footprint(net, images).chunk_for(parse_memory(budget), T)


def enforce_budget(budget: Union[int, str], device: Optional[torch.device] = None) -> Optional[float]:
    """Cap this process's CUDA memory at ``budget`` (emulates a smaller GPU on a larger one).

    Returns the fraction set, or None when the device is not CUDA or the budget exceeds it.
    """
    device = torch.device(device) if device is not None else None
    if device is None or device.type != "cuda":
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = parse_memory(budget) / total
    if fraction >= 1:
        return None
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return fraction
