#!/usr/bin/env python
"""Step modes under a memory budget: time, throughput and peak memory of a converted network
for growing T, per backend, in four modes:

- ``s``: one step per call (memory independent of T);
- ``m``: all T steps in one call (memory grows with T; OOM past the budget);
- ``chunked``: 'm' in calls of ``--chunk`` steps (default 16; memory independent of T);
- ``budget``: what ``sjconv.evaluate(..., memory_budget=...)`` does: the largest chunk the budget
  allows (``choose_chunk``), and on an allocation failure the batch rerun with half the chunk;
  the row reports the chunk chosen, the chunk used in the end and the number of retries. Its
  time includes the footprint measurement (three short calls), as every ``evaluate`` run does.

    python benchmarks/step_modes.py --device cuda --memory-budget 24GB \\
        --T 4 16 64 256 1024 --out benchmarks/results/step_modes

An 's', 'm' or chunked run that runs out of memory is recorded as OOM (the library does not
retry those: it retries only under a budget), other failures with their own message, and the
run goes on.
Each backend is warmed up first (CuPy compilation and self-check, cuDNN), outside the timings;
then every row is warmed up ``--warmup`` times with the calls it will time (the same batch per
call: 's' 2 steps, chunked and budget 2 chunks, 'm' all T steps) and timed ``--repeat`` times:
median (``ms_per_image``), fastest and slowest run. A budget row's chunk and retries are those of
its last timed run (every run starts again from the chosen chunk).

Writes PREFIX.json and PREFIX.md (table) after every row (``complete`` false until the end; a run
stopped by SIGINT/SIGTERM keeps its rows and says ``cut``), and PREFIX.png (time and memory vs T
per mode) at the end or at the cut.
Random weights (thresholds calibrated on the random images so that neurons fire).
"""

import argparse
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sjconv  # noqa: E402
from sjconv.errors import SjconvError  # noqa: E402
from sjconv.memory import choose_chunk, enforce_budget, is_allocation_failure, parse_memory  # noqa: E402
from sjconv.simulate import count_correct, iter_logits  # noqa: E402

from _common import Results, calibrate, device_info, failure_status, stop_on_signals, timed  # noqa: E402

MODES = ("s", "m", "chunked", "budget")
COLUMNS = ["backend", "mode", "T", "chunk", "chunk_chosen", "oom_retries", "status", "ms_per_image",
           "ms_per_image_min", "ms_per_image_max", "runs", "images_per_s", "peak_gib"]


def warm_up(ann, images, backend, method):
    """One short run per step mode: compiles and self-checks the CuPy kernels, initialises cuDNN."""
    for step_mode in ("s", "m"):
        try:
            for _ in iter_logits(sjconv.convert(ann, method=method, step_mode=step_mode, backend=backend), images, 2):
                pass
        except (SjconvError, RuntimeError):
            return   # run_case records the reason for every case


def run_case(ann, images, backend, mode, T, budget, args, device):
    row = {"backend": backend, "mode": mode, "T": T, "batch": images.shape[0]}
    try:
        snn = sjconv.convert(ann, method=args.method, step_mode="s" if mode == "s" else "m", backend=backend)
    except SjconvError as exc:
        row["status"] = f"unavailable: {exc}"
        return row
    chunk = None
    info = {}
    try:
        if mode == "chunked":
            chunk = min(args.chunk, T)
        elif mode == "budget":
            row["chunk_chosen"] = choose_chunk(snn.net, images, T, budget)
        row["chunk"] = chunk if chunk else (1 if mode == "s" else T)
        labels = torch.zeros(images.shape[0], dtype=torch.long, device=device)

        def run(steps=T):
            if mode == "budget":   # the library's own path: chosen chunk, halved and rerun on OOM
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    count_correct(snn, [(images, labels)], [steps], progress=False, memory_budget=budget, info=info)
                row["chunk"], row["oom_retries"] = info["chunk_used"], info["oom_retries"]
            else:
                for _ in iter_logits(snn, images, steps, chunk=chunk):
                    pass

        per_call = {"s": 1, "m": T, "chunked": chunk, "budget": row.get("chunk_chosen")}[mode] or T
        for _ in range(args.warmup):   # the calls of the timed runs (same batch per call), fewer of them
            run(T if mode == "m" else min(T, 2 * per_call))
        result = timed(run, device, repeat=args.repeat, warmup=0)
    except Exception as exc:  # noqa: BLE001 - recorded, and the benchmark goes on
        if is_allocation_failure(exc):   # torch's OOM and cuDNN/cuBLAS allocation failures alike
            row["status"] = "OOM" if mode != "budget" else f"OOM after {row.get('oom_retries', 0)} retries"
        elif isinstance(exc, (SjconvError, RuntimeError)):   # its own message (a refused budget, a cuDNN failure)
            row["status"] = failure_status(exc)
        else:
            raise
        return row
    n = images.shape[0]
    row.update(status="ok", ms=result["ms"], ms_per_image=result["ms"] / n, ms_per_image_min=result["ms_min"] / n,
               ms_per_image_max=result["ms_max"] / n, runs=result["runs"], images_per_s=1e3 * n / result["ms"],
               peak_gib=result["peak_gib"])
    return row


def plot(prefix, rows, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    keys = sorted({(r["backend"], r["mode"]) for r in rows if r.get("status") == "ok"})
    for backend, mode in keys:
        ok = [r for r in rows if r["backend"] == backend and r["mode"] == mode and r.get("status") == "ok"]
        label = f"{mode} ({backend})"
        ax_t.plot([r["T"] for r in ok], [r["ms_per_image"] for r in ok], marker="o", label=label)
        if ok and ok[0]["peak_gib"] is not None:
            ax_m.plot([r["T"] for r in ok], [r["peak_gib"] for r in ok], marker="o", label=label)
    for ax, ylabel in ((ax_t, "ms per image"), (ax_m, "peak GPU memory (GiB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("T")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    ax_t.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(prefix + ".png")
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="vgg16", choices=list(sjconv.models.ARCHS))
    p.add_argument("--method", default="qcfs", choices=list(sjconv.neurons.METHODS))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--T", type=int, nargs="+", default=[4, 16, 64, 256, 1024])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--backends", nargs="+", default=list(sjconv.neurons.BACKENDS),
                   choices=list(sjconv.neurons.BACKENDS))
    p.add_argument("--memory-budget", default="24GB")
    p.add_argument("--chunk", type=int, default=16, help="steps per call of the chunked mode (default: 16)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per row (median, min, max; default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per row first (default 1)")
    p.add_argument("--out", default="benchmarks/results/step_modes")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    budget = parse_memory(args.memory_budget)
    fraction = enforce_budget(budget, device)
    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, 32, 32, device=device)
    ann = calibrate(sjconv.models.build(args.arch, num_classes=10).to(device).eval(), images)
    stop_on_signals()
    results = Results(args.out, {"benchmark": "step_modes", "arch": args.arch, "method": args.method,
                                 "batch_size": args.batch_size, "memory_budget_bytes": budget,
                                 "memory_fraction": fraction, "repeat": args.repeat, "warmup": args.warmup,
                                 "env": device_info(device)}, COLUMNS)
    where = device_info(device).get("gpu", args.device)
    title = f"{args.arch}, batch {args.batch_size}, budget {args.memory_budget} ({where})"
    try:
        for backend in args.backends:
            warm_up(ann, images, backend, args.method)
            for mode in args.modes:
                for T in args.T:
                    row = run_case(ann, images, backend, mode, T, budget, args, device)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()  # the case's network and activations are gone now
                    results.add(row)
    except KeyboardInterrupt as exc:
        status = results.cut(f"interrupted ({exc or 'SIGINT'})")
        plot(args.out, results.rows, title + ", cut")
        return status
    results.finish()
    plot(args.out, results.rows, title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
