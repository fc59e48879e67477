#!/usr/bin/env python
"""Whole network: a QCFS VGG16 (CIFAR shape) ANN forward at batch T·N against the converted SNN
in 'm' mode (T folded into the batch) with the torch and the cupy neuron backend, for several T:
ms per image (per original image, i.e. per T·N batch divided by N) and peak memory.

    python benchmarks/network.py --batch-size 128 --T 4 16 64 --out benchmarks/results/network
    python benchmarks/network.py --dtype bf16 --channels-last ...

The ratio SNN/ANN at the same effective batch says what the neuron layers cost. The ANN and the
SNN run in the same format: ``--dtype`` (weights and images) and ``--channels-last`` (weights and
images in channels_last; ``convert`` keeps the ANN's format in every layer). Forward passes are
queued back to back and timed by CUDA events (see ``_common.timed``), for the ANN and the SNN
alike: every row has the median, fastest and slowest of ``--repeat`` runs after ``--warmup``
untimed ones. Writes PREFIX.json and PREFIX.md after every row (``complete`` false until the
end; a run stopped by SIGINT/SIGTERM keeps its rows and says ``cut``).
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sjconv  # noqa: E402
from sjconv.errors import SjconvError  # noqa: E402
from sjconv.simulate import iter_logits  # noqa: E402

from _common import Results, device_info, failure_status, stop_on_signals, timed  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
COLUMNS = ["T", "model", "dtype", "channels_last", "ms_per_image", "ms_per_image_min", "ms_per_image_max", "runs",
           "vs_ann", "peak_gib", "status"]


def _timing(r, n):
    """Per-image figures of a :func:`timed` result for a batch of ``n`` images."""
    return {"ms_per_image": r["ms"] / n, "ms_per_image_min": r["ms_min"] / n, "ms_per_image_max": r["ms_max"] / n,
            "runs": r["runs"], "peak_gib": r["peak_gib"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="vgg16", choices=list(sjconv.models.ARCHS))
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--T", type=int, nargs="+", default=[4, 16, 64])
    p.add_argument("--method", default="qcfs", choices=list(sjconv.neurons.METHODS))
    p.add_argument("--backends", nargs="+", default=list(sjconv.neurons.BACKENDS),
                   choices=list(sjconv.neurons.BACKENDS))
    p.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="ANN and SNN weights and images")
    p.add_argument("--channels-last", action="store_true", help="ANN and SNN in channels_last memory format")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="benchmarks/results/network")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    n = args.batch_size
    dtype = DTYPES[args.dtype]
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    images = torch.randn(n, 3, 32, 32, device=device).to(dtype).contiguous(memory_format=memory_format)
    ann = sjconv.models.build(args.arch, num_classes=10).to(device=device, dtype=dtype,
                                                               memory_format=memory_format).eval()
    fmt = {"dtype": args.dtype, "channels_last": args.channels_last}
    stop_on_signals()
    results = Results(args.out, {"benchmark": "network", "arch": args.arch, "batch_size": n, "method": args.method,
                                 **fmt, "repeat": args.repeat, "warmup": args.warmup, "env": device_info(device)},
                      COLUMNS)
    try:
        with torch.no_grad():
            for T in args.T:
                run_T(results, ann, images, T, args, fmt, device, memory_format)
    except KeyboardInterrupt as exc:
        return results.cut(f"interrupted ({exc or 'SIGINT'})")
    results.finish()
    return 0


def run_T(results, ann, images, T, args, fmt, device, memory_format):
    """The ANN at batch T·N, then the SNN per backend, each row added as it is measured."""
    n = images.shape[0]
    batch = images.repeat(T, 1, 1, 1).contiguous(memory_format=memory_format)
    row = {"T": T, "model": "ANN (batch T·N)", **fmt}
    ann_ms = None
    try:
        r = timed(lambda: ann(batch), device, args.repeat, args.warmup, queued=True)
        ann_ms = r["ms"]
        row.update(_timing(r, n), vs_ann=1.0, status="ok")
    except torch.OutOfMemoryError:
        row["status"] = "OOM"
    except RuntimeError as exc:
        row["status"] = failure_status(exc)
    results.add(row)
    batch = None  # free it before the SNN runs
    for backend in args.backends:
        row = {"T": T, "model": f"SNN 'm' {backend}", **fmt}
        try:
            snn = sjconv.convert(ann, args.method, "m", backend=backend)
            r = timed(lambda: list(iter_logits(snn, images, T)), device, args.repeat, args.warmup, queued=True)
        except torch.OutOfMemoryError:
            row["status"] = "OOM"
        except (SjconvError, ImportError, ValueError) as exc:
            row["status"] = f"unavailable: {exc}"
        except RuntimeError as exc:   # e.g. a cuDNN failure at a huge batch: record it, go on
            row["status"] = failure_status(exc)
        else:
            row.update(_timing(r, n), status="ok", vs_ann=(r["ms"] / ann_ms) if ann_ms else None)
        results.add(row)
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
