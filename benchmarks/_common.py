"""Shared helpers of the benchmark scripts: timing, peak memory, and JSON + markdown output."""

import json
import os
import platform
import time
from typing import Callable, Dict, List, Sequence

import torch


def device_info(device: torch.device) -> Dict:
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 2))
    else:
        info.update(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeat: int = 1, warmup: int = 0,
          queued: bool = False) -> Dict:
    """Median time (ms) of ``fn`` over ``repeat`` runs after ``warmup`` (and the fastest run,
    ``ms_min``: on a shared CPU the least disturbed one), and its peak memory (GiB, CUDA only:
    the allocator's peak during the timed runs).

    By default each run is timed by the wall clock and ends with a device synchronisation (what
    a user waiting for a result sees). With ``queued`` on CUDA the runs are launched back to
    back, as layers are in a network, and each is timed by CUDA events around it: the host's
    launch overhead then overlaps the device's work, and a run costs what it occupies the GPU.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if queued and device.type == "cuda":
        marks = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeat)]
        for start, end in marks:
            start.record()
            fn()
            end.record()
        sync(device)
        times = [start.elapsed_time(end) for start, end in marks]
    else:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            sync(device)
            times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"ms": times[len(times) // 2], "ms_min": times[0], "peak_gib": peak}


def timed_against(fn: Callable[[], object], base: Callable[[], object], device: torch.device,
                  repeat: int = 1, warmup: int = 0) -> Dict:
    """:func:`timed` for ``fn``, with its runs alternating with runs of ``base`` (wall clock):
    ``{"ms", "ms_min"}`` of ``fn`` and ``{"base_ms", "base_ms_min"}`` of ``base``. On a machine
    shared with other work the load changes over a benchmark; timed side by side, the two see the
    same load, so ``ms_min / base_ms_min`` is a fair ratio where separate timings are not."""
    for _ in range(warmup):
        fn()
        base()
    sync(device)
    times, base_times = [], []
    for _ in range(repeat):
        for f, out in ((fn, times), (base, base_times)):
            start = time.perf_counter()
            f()
            sync(device)
            out.append((time.perf_counter() - start) * 1e3)
    times.sort()
    base_times.sort()
    return {"ms": times[len(times) // 2], "ms_min": times[0],
            "base_ms": base_times[len(base_times) // 2], "base_ms_min": base_times[0]}


def node_runner(node, x, mask=None) -> Callable[[], None]:
    """Reset, (set the SRP mask made once beforehand), run all steps: one layer's work per call."""
    from spikingjelly.activation_based import functional

    def run():
        functional.reset_net(node)
        if mask is not None:
            node.mask = mask
        node(x)
    return run


@torch.no_grad()
def calibrate(ann, images):
    """Thresholds at the 99th percentile of each QCFS layer's positive input (layer by layer), so
    that the neurons of a network with random weights fire; returns ``ann``."""
    import sjconv

    for layer in [m for m in ann.modules() if isinstance(m, sjconv.QCFS)]:
        seen = []
        handle = layer.register_forward_hook(lambda m, i, o: seen.append(i[0]))
        ann(images)
        handle.remove()
        positive = seen[0][seen[0] > 0].flatten()[:1_000_000]
        layer.thresh.fill_(float(torch.quantile(positive.float(), 0.99)) if positive.numel() else 1.0)
    return ann


def failure_status(exc: BaseException) -> str:
    """A failed case's status: the first line of the error, so one bad case does not stop a run."""
    first_line = (str(exc).splitlines() or [""])[0]
    return f"failed: {type(exc).__name__}: {first_line[:200]}"


def markdown_table(rows: List[Dict], columns: Sequence[str]) -> str:
    def cell(value):
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_outputs(prefix: str, payload: Dict, table: str) -> None:
    """``PREFIX.json`` (everything) and ``PREFIX.md`` (the table), directories created as needed."""
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    with open(prefix + ".json", "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    with open(prefix + ".md", "w") as f:
        f.write(table + "\n")
