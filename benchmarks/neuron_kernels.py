#!/usr/bin/env python
"""Neuron-layer kernels on [T, N] inputs: median time of a plain torch time loop, SpikingJelly
2.0's IF neuron in its fastest configuration, and sjconv's torch and cupy backends for every node
type, next to the device's measured copy bandwidth.

    python benchmarks/neuron_kernels.py --out benchmarks/results/neuron_kernels
    python benchmarks/neuron_kernels.py --device cpu          # [32, 1M], 5 repeats

On CUDA each call is timed by CUDA events while calls are queued back to back (as layers are in
a network), so Python launch overhead overlaps the GPU's work instead of being counted as kernel
time. On the CPU each call is timed by ``time.perf_counter`` (median of ``--repeat`` runs) and
the CUDA-only rows (cupy) are listed as skipped.

For every node kind it also times the two torch loops directly: the reference loop
(``rules.run_steps``, new tensors every step) and the in-place loop (``torch_backend.run_steps``,
same results bit for bit), next to a minimal in-place IF loop written here (the least work a
loop of torch operations can do per step); ``vs_minimal`` is each row's median time over that
loop's. ``vs_minimal_min`` compares the fastest runs; on the CPU every row's runs alternate with
runs of the minimal loop (``timed_against``), so the ratio holds even when other work shares the
machine and its load changes during the benchmark.
Bandwidth of a kernel = (bytes of x read + output written + states read and written) / time;
its fraction of the copy bandwidth (a copy of the same [T, N] tensor) is the figure of merit for
an elementwise kernel. Every row has the median, fastest and slowest of ``--repeat`` runs after
``--warmup`` untimed ones (``ms``, ``ms_min``, ``ms_max``).

SpikingJelly's IF neuron runs as :func:`_common.sj_if_fastest` sets it up: the registered
operator of ``IFNode`` ('m', soft reset, start θ/2) with a float32 potential for every input
dtype (the precision of sjconv's kernels; a ``IFNode`` module given bf16 input would keep its
potential in bf16 and run SpikingJelly's slow reference loop), on the implementation SpikingJelly
selects (Triton on a GPU without its optional native build). Its row names the implementation and
precision (``sj_impl``), its bandwidth counts what it writes besides the spikes (the float32
``charged`` tensor), and ``speedup_vs_sj_ifnode`` compares every row's time with it.

Writes PREFIX.json and PREFIX.md after every row (``complete`` false until the end; a run stopped
by SIGINT/SIGTERM keeps its rows and says ``cut``).
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sjconv.errors import SjconvError  # noqa: E402
from sjconv.neurons import BACKENDS, METHODS, SpikingNode, get_backend, rules  # noqa: E402
from sjconv.neurons.kernels import torch_backend  # noqa: E402

from _common import (Results, device_info, failure_status, node_runner, sj_if_fastest, stop_on_signals,  # noqa: E402
                     timed, timed_against)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
MINIMAL = "minimal in-place loop"
SJ_IF = "SpikingJelly IFNode (fastest)"
COLUMNS = ["T", "N", "node", "impl", "ms", "ms_min", "ms_max", "GB_s", "of_copy", "speedup_vs_sj_ifnode", "sj_impl",
           "vs_minimal", "vs_minimal_min", "status"]


def plain_loop(x, theta):
    """The textbook IF loop in torch, one step at a time (the baseline to beat)."""
    v = torch.full_like(x[0], theta / 2)
    out = []
    for t in range(x.shape[0]):
        v = v + x[t]
        s = (v >= theta).to(x.dtype)
        v = v - s * theta
        out.append(s * theta)
    return torch.stack(out)


def minimal_inplace_loop(x, theta):
    """The simplest in-place IF loop: one preallocated output and spike buffer, the potential
    updated in place, four torch operations per step. No node kind can do less per step, so it is
    the yardstick of the in-place backend (``vs_minimal``)."""
    v = torch.full_like(x[0], theta / 2, dtype=torch.float32)
    spike = torch.empty_like(v)
    out = torch.empty_like(x)
    for t in range(x.shape[0]):
        v.add_(x[t])
        torch.ge(v, theta, out=spike)
        v.sub_(spike, alpha=theta)
        torch.mul(spike, theta, out=out[t])
    return out


#: members of the group neurons (gn, gn+neg) timed here
GROUP_LEVELS = 4


def loop_runner(run_steps, x, theta, signed, neg_rule, mask, levels=None):
    """One call of a ``run_steps`` loop (reference or in-place) from the node's initial state
    (``levels``: a group neuron's members; its in-place loop is :mod:`sjconv.neurons.kernels.torch_group`)."""
    unit = theta / levels if levels else theta
    v0 = torch.full_like(x[0], 0.0 if neg_rule == "snm" else unit / 2, dtype=torch.float32)
    c0 = torch.zeros_like(v0) if signed else None
    if levels:
        if run_steps is torch_backend.run_steps:
            from sjconv.neurons.kernels import torch_group

            return lambda: torch_group.run_steps(x, v0, c0, mask, theta, signed, neg_rule, False, levels)
        return lambda: run_steps(x, v0, c0, mask, theta, signed, neg_rule, levels=levels)
    return lambda: run_steps(x, v0, c0, mask, theta, signed, neg_rule)


#: the loops timed directly, per node kind: (row name, run_steps)
LOOPS = [("reference loop (rules.run_steps)", rules.run_steps),
         ("in-place loop (torch_backend.run_steps)", torch_backend.run_steps)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=None,
                   help="TxN shapes (default: 8x1M 64x1M 64x4M on CUDA, 32x1M on the CPU)")
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    p.add_argument("--repeat", type=int, default=None, help="timed runs per case (default: 20 CUDA, 5 CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs first (default: 3 CUDA, 1 CPU)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's own; 1 gives steadier figures on a shared CPU)")
    p.add_argument("--out", default="benchmarks/results/neuron_kernels")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but torch sees no CUDA device: use --device cpu")
    on_cuda = device.type == "cuda"
    shapes = args.shapes or (["8x1048576", "64x1048576", "64x4194304"] if on_cuda else ["32x1048576"])
    repeat = args.repeat if args.repeat is not None else (20 if on_cuda else 5)
    warmup = args.warmup if args.warmup is not None else (3 if on_cuda else 1)
    theta = 1.0
    stop_on_signals()
    results = Results(args.out, {"benchmark": "neuron_kernels", "dtype": args.dtype, "env": device_info(device),
                                 "repeat": repeat, "warmup": warmup}, COLUMNS)
    try:
        with torch.no_grad():
            for shape in shapes:
                run_shape(results, shape, device, dtype, theta, repeat, warmup)
    except KeyboardInterrupt as exc:
        return results.cut(f"interrupted ({exc or 'SIGINT'})")
    results.finish()
    return 0


def run_shape(results, shape, device, dtype, theta, repeat, warmup):
    """Every row of one [T, N] shape, each added to ``results`` as it is measured."""
    on_cuda = device.type == "cuda"
    T, N = (int(v) for v in shape.lower().split("x"))
    x = (torch.randn(T, N, device=device) * 0.8).to(dtype)
    io_bytes = 2 * x.numel() * x.element_size()
    dst = torch.empty_like(x)
    mask = torch.rand(x.shape[1:], device=device) > 0.3   # an SRP mask, made outside the timing
    copy = timed(lambda: dst.copy_(x), device, repeat, warmup, queued=True)
    copy_bw = io_bytes / copy["ms"] / 1e6  # GB/s
    results.add({"T": T, "N": N, "impl": "copy (x -> y)", "ms": copy["ms"], "ms_min": copy["ms_min"],
                 "ms_max": copy["ms_max"], "GB_s": copy_bw, "of_copy": 1.0, "status": "ok"})
    minimal = lambda: minimal_inplace_loop(x, theta)  # noqa: E731
    sj_run, sj_info = sj_if_fastest(x, theta)
    # (node, impl, run, bytes per neuron besides x and the output, extra row fields)
    cases = [("IF", "plain torch loop", lambda: plain_loop(x, theta), 4, {}),
             ("IF", MINIMAL, minimal, 4, {}),
             ("IF", SJ_IF, sj_run, sj_info["extra_bytes_per_neuron"], {"sj_impl": sj_info["label"]})]
    for method, record in METHODS.items():
        signed, srp = record.signed, record.node.PRERUN == "srp"
        levels = GROUP_LEVELS if record.group else None
        state_bytes = 4 * (2 if signed else 1) * 2 + (1 if srp else 0)
        for neg_rule in (("qcfs", "snm") if signed else ("qcfs",)):
            kind = method + (" (snm)" if neg_rule == "snm" else "")
            for impl, run_steps in LOOPS:
                cases.append((kind, impl, loop_runner(run_steps, x, theta, signed, neg_rule,
                                                      mask if srp else None, levels), state_bytes, {}))
        for backend in BACKENDS:
            if get_backend(backend).needs_cuda and not on_cuda:
                results.add({"T": T, "N": N, "node": method, "impl": f"sjconv {backend}",
                             "status": "skipped: CUDA only"})
                continue
            try:
                node = SpikingNode(theta, signed=signed, prerun="srp" if srp else None, step_mode="m", backend=backend,
                                   levels=levels)
            except SjconvError as exc:
                results.add({"T": T, "N": N, "node": method, "impl": f"sjconv {backend}", "status": str(exc)})
                continue
            cases.append((method, f"sjconv {backend}", node_runner(node, x, mask if srp else None), state_bytes, {}))
    found = {}
    for node_name, impl, fn, state_bytes, extra in cases:
        row = {"T": T, "N": N, "node": node_name, "impl": impl, **extra}
        try:
            if on_cuda or impl == MINIMAL:
                timing = timed(fn, device, repeat, warmup, queued=True)
            else:   # side by side with the minimal loop: both see the same load
                timing = timed_against(fn, minimal, device, repeat, warmup)
                row.update(vs_minimal=timing["ms"] / timing["base_ms"],
                           vs_minimal_min=timing["ms_min"] / timing["base_ms_min"])
        except Exception as exc:  # e.g. CuPy missing on this machine: record, go on
            row["status"] = failure_status(exc)
            results.add(row)
            continue
        ms = timing["ms"]
        bw = (io_bytes + state_bytes * N) / ms / 1e6
        row.update(ms=ms, ms_min=timing["ms_min"], ms_max=timing["ms_max"], GB_s=bw, of_copy=bw / copy_bw,
                   status="ok")
        found[impl] = timing
        if SJ_IF in found and impl != SJ_IF:
            row["speedup_vs_sj_ifnode"] = found[SJ_IF]["ms"] / ms
        if MINIMAL in found:   # CUDA rows (the minimal loop itself: 1); CPU rows were timed side by side
            row.setdefault("vs_minimal", ms / found[MINIMAL]["ms"])
            row.setdefault("vs_minimal_min", timing["ms_min"] / found[MINIMAL]["ms_min"])
        results.add(row)


if __name__ == "__main__":
    sys.exit(main())
