"""Shared helpers of the benchmark scripts: timing, peak memory, JSON + markdown output written
after every row (:class:`Results`), and a stop by SIGINT/SIGTERM that keeps what was measured."""

import platform
import signal
import time
from typing import Callable, Dict, List, Sequence

import torch

from sjconv.report import atomic_path, write_json


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


def _summary(times: List[float], prefix: str = "") -> Dict:
    """Median, fastest and slowest of ``times`` (ms) and their number, as ``{prefix}ms`` etc."""
    times = sorted(times)
    return {f"{prefix}ms": times[len(times) // 2], f"{prefix}ms_min": times[0], f"{prefix}ms_max": times[-1],
            f"{prefix}runs": len(times)}


def timed(fn: Callable[[], object], device: torch.device, repeat: int = 1, warmup: int = 0,
          queued: bool = False) -> Dict:
    """Median time (ms) of ``fn`` over ``repeat`` runs after ``warmup`` untimed ones, the fastest
    (``ms_min``: on a shared CPU the least disturbed one) and slowest (``ms_max``) run, the number
    of runs (``runs``), and the peak memory (``peak_gib``, CUDA only: the allocator's peak during
    the timed runs).

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
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {**_summary(times), "peak_gib": peak}


def timed_against(fn: Callable[[], object], base: Callable[[], object], device: torch.device,
                  repeat: int = 1, warmup: int = 0) -> Dict:
    """:func:`timed` for ``fn``, with its runs alternating with runs of ``base`` (wall clock):
    ``{"ms", "ms_min", "ms_max", "runs"}`` of ``fn`` and the same with ``base_`` of ``base``. On a machine
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
    return {**_summary(times), **_summary(base_times, "base_")}


def node_runner(node, x, mask=None) -> Callable[[], None]:
    """Reset, (set the SRP mask made once beforehand), run all steps: one layer's work per call."""
    from spikingjelly.activation_based import functional

    def run():
        functional.reset_net(node)
        if mask is not None:
            node.mask = mask
        node(x)
    return run


def sj_if_fastest(x: torch.Tensor, theta: float):
    """SpikingJelly 2.0's IF neuron in its fastest configuration for ``x``'s dtype, as the
    baseline of the neuron kernels: ``(run, info)``.

    ``run()`` is one call of ``functional.if_multi_step`` (what ``IFNode(v_reset=None,
    step_mode='m').multi_step_forward`` calls) from v0 = θ/2 with a **float32 potential** whatever
    the input dtype: then SpikingJelly runs its registered operator (Triton on a GPU unless its
    optional native CUDA build is installed), with float32 arithmetic as sjconv's kernels. An
    ``IFNode`` module would materialise its potential in the input's dtype, and for bf16/fp16
    input run SpikingJelly's slow reference loop in half precision: neither the fastest nor equal
    precision. ``info``: ``label`` (implementation, potential and spike precision, what it
    writes), ``impl`` and ``extra_bytes_per_neuron`` (bytes per neuron beside reading x and writing
    the spikes: the potential read and written, and the float32 ``charged`` [T, N] tensor it
    writes for its backward even in inference, per step, folded in as bytes per neuron)."""
    from spikingjelly.activation_based import functional

    v0 = torch.full_like(x[0], theta / 2, dtype=torch.float32)
    impl = "torch (CPU)"
    if x.is_cuda:
        try:
            impl = functional.neuron_implementation("if", x.device)["implementation"]
        except Exception as exc:  # noqa: BLE001 - recorded; the run itself says whether it works
            impl = f"unknown ({type(exc).__name__})"
    steps = x.shape[0]
    label = f"{impl}, fp32 potential and arithmetic, {str(x.dtype).replace('torch.', '')} spikes, +fp32 charged"
    info = {"impl": impl, "label": label, "extra_bytes_per_neuron": 8 + 4 * steps}

    def run():
        return functional.if_multi_step(x, v0, theta, None)
    return run, info


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


def stop_on_signals() -> None:
    """SIGINT (what ``run_gpu_checks.sh`` sends at a step's time limit) and SIGTERM raise
    KeyboardInterrupt, so a benchmark can write what it measured before it stops, also where
    its parent started it with SIGINT ignored."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


class Results:
    """A benchmark's results file pair, written after every row: ``PREFIX.json`` (the payload,
    its ``rows``, and ``complete``: False until :meth:`finish`; ``cut``: why it stopped early)
    and ``PREFIX.md`` (the table). A run stopped by its time limit keeps every finished row."""

    def __init__(self, prefix: str, payload: Dict, columns: Sequence[str]):
        self.prefix, self.payload, self.columns = prefix, dict(payload, complete=False), list(columns)
        self.rows = self.payload.setdefault("rows", [])
        self.write()

    def add(self, row: Dict) -> Dict:
        self.rows.append(row)
        self.write()
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
        return row

    def table(self) -> str:
        columns = [c for c in self.columns if any(c in r for r in self.rows)] or self.columns
        return markdown_table(self.rows, columns)

    def write(self) -> None:
        write_outputs(self.prefix, self.payload, self.table())

    def finish(self) -> None:
        self.payload["complete"] = True
        self.write()
        print(self.table())

    def cut(self, why: str) -> int:
        """Record that the run stopped early (``why``), write, and return the exit status 130."""
        self.payload["cut"] = why
        self.write()
        print(f"stopped early ({why}): {len(self.rows)} rows written to {self.prefix}.json", flush=True)
        return 130


def write_outputs(prefix: str, payload: Dict, table: str) -> None:
    """``PREFIX.json`` (everything) and ``PREFIX.md`` (the table), directories created as needed,
    each written whole (:func:`sjconv.report.atomic_path`): a stop mid-write keeps the last one."""
    write_json(prefix + ".json", payload)
    with atomic_path(prefix + ".md") as tmp, open(tmp, "w") as f:
        f.write(table + "\n")
