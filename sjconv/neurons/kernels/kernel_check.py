"""Self-check of a fused neuron kernel against the rules, on the device it is about to run on.

Why: the GPU test suite compares the kernels with the torch backend on our machines, but a
user's GPU, driver, CuPy and NVRTC differ from ours, and a kernel that compiles can still be
wrong (an unexpected fused multiply-add, a different half-precision rounding, a launch that
misses the last block). So before the first real launch for a (device, dtype), every kernel
variant runs on small probes built to hit each edge of the rules, and must match
:func:`sjconv.neurons.rules.run_steps` bit for bit; otherwise the backend refuses to run
(no silent fallback, no silently wrong spikes).

The probes:
- inputs on a grid of θ/4, so the potential lands exactly on θ, 0 and −θ (the ``>=``, ``< 0``
  and ``<= -θ`` edges) and the signed count goes up and down;
- a θ halfway between two values of the input dtype, so outputs θ·s round at a tie;
- subnormal inputs (float32 values below 2^-126) next to steps that bring the potential to exactly
  0, so potentials become subnormal and the ``< 0`` edge sees them: a kernel compiled with
  flush-to-zero arithmetic (CuPy compiles with ``-ftz=true``) reads them as 0 and misses
  negative spikes that the torch backend fires (θ = 1, v0 = 0.5, x = [0.5, -1e-39]: torch gives
  [1, -1], a flushing kernel [1, 0]; the probe starts with exactly that);
- a size that is not a multiple of the block size, an SRP mask, and every run split into two
  calls, so the initial state is read and the final state written back;
- group neurons (variants ``(signed, masked, snm, levels)``, docs/methods.md#group-neuron): a grid of q/2
  (q = θ/m a power of two) on which the potential lands exactly on member thresholds j·q, on 0 and
  on -j·q; noise with q halfway between two values of the dtype (outputs round at a tie); noise
  with θ = 0.7, whose thresholds j·q are rounded products; for m = 1 (the IF neuron), 3 and 8.
"""

from typing import Callable, Iterable

import torch

from ...errors import BackendUnavailableError
from .. import rules

PROBE_STEPS = 24
PROBE_NEURONS = 3 * 256 + 77
SPLIT_AT = 7

#: thresholds exactly halfway between two neighbouring values of the dtype (odd last bit), so
#: that an output rounded any other way than to nearest even differs
TIE_THETA = {torch.float32: 0.75, torch.float16: 1 + 3 * 2**-11, torch.bfloat16: 1 + 3 * 2**-8}


#: float32 subnormals of the subnormal probe: the smallest, two in between, the largest
SUBNORMALS = (2.0**-149, 1e-39, 5.9e-39, 2.0**-126 - 2.0**-149)


def subnormal_probe(gen) -> torch.Tensor:
    """θ = 1 inputs: steps of ±θ/2 (the potential returns to exactly 0 often) mixed with
    ±subnormals; neuron 0 starts with the case of the docstring (0.5, then -1e-39)."""
    shape = (PROBE_STEPS, PROBE_NEURONS)
    half_steps = torch.randint(-1, 2, shape, generator=gen).float() * 0.5
    tiny = torch.tensor(SUBNORMALS)[torch.randint(0, len(SUBNORMALS), shape, generator=gen)]
    tiny = tiny * (torch.randint(0, 2, shape, generator=gen).float() * 2 - 1)
    x = torch.where(torch.rand(shape, generator=gen) < 0.4, tiny, half_steps)
    x[0, 0], x[1, 0] = 0.5, -1e-39
    return x


def probes(device, dtype):
    """``[(theta, x_seq)]``: the grid probe (exact ties of the potential), the rounding probe and
    the subnormal probe (subnormals survive in float32 and bfloat16; float16 rounds them to 0)."""
    gen = torch.Generator().manual_seed(20261125)
    shape = (PROBE_STEPS, PROBE_NEURONS)
    grid_theta = 0.5
    grid = torch.randint(-2, 3, shape, generator=gen).float() * (grid_theta / 2)   # exact in every dtype
    noise = torch.randn(shape, generator=gen) * 0.8
    return [(grid_theta, grid.to(device=device, dtype=dtype)),
            (TIE_THETA[dtype], noise.to(device=device, dtype=dtype)),
            (1.0, subnormal_probe(gen).to(device=device, dtype=dtype))]


#: members of the group-neuron probes: 1 (the IF neuron), 3 and 8
GROUP_PROBE_LEVELS = (1, 3, 8)


def group_variants(flags: Iterable) -> list:
    """``(signed, masked, snm, levels)`` group-neuron variants: every flag combination of ``flags``
    with every m of :data:`GROUP_PROBE_LEVELS`."""
    return [(*f, levels) for f in flags for levels in GROUP_PROBE_LEVELS]


def group_probes(device, dtype, levels: int):
    """``[(theta, x_seq)]`` for group neurons of ``levels`` members: exact ties of the potential on
    the member thresholds, 0 and -j·q (q = 1/8), a rounding probe (q at a tie of the dtype) and
    θ = 0.7 (q = 0.7/m: rounded thresholds), and the subnormal probe with q = 1 (a negative subnormal
    potential takes a unit back unless the kernel flushes it to zero)."""
    gen = torch.Generator().manual_seed(20261126 + levels)
    shape = (PROBE_STEPS, PROBE_NEURONS)
    q = 0.125
    grid = torch.randint(-2 * levels - 1, 2 * levels + 2, shape, generator=gen).float() * (q / 2)
    noise = torch.randn(shape, generator=gen) * (1.5 * levels * TIE_THETA[dtype])
    return [(q * levels, grid.to(device=device, dtype=dtype)),
            (TIE_THETA[dtype] * levels, noise.to(device=device, dtype=dtype)),
            (0.7, (noise * (0.7 / (levels * TIE_THETA[dtype]))).to(device=device, dtype=dtype)),
            (float(levels), subnormal_probe(gen).to(device=device, dtype=dtype))]


def _split_run(run, x_seq, v, count, mask, theta, signed, snm, **group):
    first = run(x_seq[:SPLIT_AT], v, count, mask, theta, signed, snm, **group)
    second = run(x_seq[SPLIT_AT:], first[1], first[2], mask, theta, signed, snm, **group)
    return torch.cat([first[0], second[0]]), second[1], second[2]


def mismatches(run: Callable, device, dtype, variants: Iterable) -> list:
    """Run every ``(signed, masked, snm)`` variant with ``run(x_seq, v, count, mask, theta, signed,
    snm) -> (out, v, count)`` on the probes; one line per difference from the rules. A variant
    ``(signed, masked, snm, levels)`` is a group neuron, run as ``run(..., snm, levels=levels)``."""
    found = []
    mask = torch.rand(PROBE_NEURONS, generator=torch.Generator().manual_seed(1)).to(device) > 0.3
    variants = list(variants)
    found += _group_mismatches(run, device, dtype, [v for v in variants if len(v) == 4], mask)
    variants = [v for v in variants if len(v) == 3]
    for theta, x_seq in probes(device, dtype):
        for signed, masked, snm in variants:
            v0 = torch.full((PROBE_NEURONS,), rules.start_potential(theta, signed, "snm" if snm else "qcfs"), device=device)
            c0 = torch.zeros(PROBE_NEURONS, device=device)
            m = mask if masked else None
            got = _split_run(run, x_seq, v0, c0, m, theta, signed, snm)
            want = rules.run_steps(x_seq, v0, c0 if signed else None, m, theta, signed, "snm" if snm else "qcfs")
            names = ("outputs", "potentials", "counts") if signed else ("outputs", "potentials")
            for name, a, b in zip(names, got, want):
                if not torch.equal(a, b):
                    wrong = int((a != b).sum()) if a.shape == b.shape else "all"
                    found.append(f"signed={signed} mask={masked} snm={snm} θ={theta}: {wrong} {name} differ")
    return found


def _group_mismatches(run: Callable, device, dtype, variants, mask) -> list:
    """:func:`mismatches` for group-neuron variants ``(signed, masked, snm, levels)``."""
    found = []
    for signed, masked, snm, levels in variants:
        for theta, x_seq in group_probes(device, dtype, levels):
            v0 = torch.full((PROBE_NEURONS,), rules.start_potential(theta, signed, "snm" if snm else "qcfs", levels),
                            device=device)
            c0 = torch.zeros(PROBE_NEURONS, device=device)
            m = mask if masked else None
            got = _split_run(run, x_seq, v0, c0, m, theta, signed, snm, levels=levels)
            want = rules.run_steps(x_seq, v0, c0 if signed else None, m, theta, signed, "snm" if snm else "qcfs",
                                   levels=levels)
            names = ("outputs", "potentials", "counts") if signed else ("outputs", "potentials")
            for name, a, b in zip(names, got, want):
                if not torch.equal(a, b):
                    wrong = int((a != b).sum()) if a.shape == b.shape else "all"
                    found.append(f"group m={levels} signed={signed} mask={masked} snm={snm} θ={theta}: "
                                 f"{wrong} {name} differ")
    return found


def verify(run: Callable, device, dtype, variants: Iterable, where: str = "") -> None:
    """Raise :class:`BackendUnavailableError` naming the variants that disagree with the rules."""
    found = mismatches(run, device, dtype, variants)
    if found:
        raise BackendUnavailableError(
            f"the fused neuron kernel failed its self-check for {dtype} on {where or device} "
            f"({'; '.join(found[:4])}{'; ...' if len(found) > 4 else ''}): its spikes would differ from "
            "the torch backend, so it will not run. Use backend='torch' (identical results) and please "
            "report this with your GPU, CUDA and CuPy versions")


#: (backend, device index, dtype) whose kernels passed the self-check in this process
_VERIFIED = set()


def ensure_verified(backend: str, run: Callable, device, dtype, variants: Iterable,
                    where: Callable[[], str] = lambda: "") -> None:
    """Run :func:`verify` for ``backend``'s kernels once per device and dtype in this process (a
    failure is not remembered: the next call checks, and raises, again). ``where`` names the
    device, driver and compiler for the error message."""
    key = (backend, torch.device(device).index, dtype)
    if key in _VERIFIED:
        return
    with torch.no_grad():
        verify(run, device, dtype, variants, where())
    _VERIFIED.add(key)
