#!/usr/bin/env python3
"""First contact with a GPU, in about a minute: what is installed, whether the fused kernel passes
its self-check in every dtype, how close it runs to the copy bandwidth, the subnormal (FTZ) case,
and how often spikes differ between step modes.

    python3 benchmarks/gpu_smoke.py --out OUT/smoke          # CUDA: the full check
    python3 benchmarks/gpu_smoke.py --device cpu --out X     # CPU: versions and the flip rates only

Sections (each recorded, a failing one does not stop the others):

- ``versions``: GPU, driver, torch/CUDA/cuDNN, CuPy (its CUDA build, NVRTC), SpikingJelly, sjconv.
- ``self_check``: :func:`sjconv.neurons.kernels.kernel_check.mismatches` of the cupy kernels per dtype
  (seconds include NVRTC compilation).
- ``bandwidth``: an elementwise copy of a [T, N] tensor, the cupy kernel (IF and signed+SRP) and
  the torch backend and SpikingJelly's IFNode (IF), per dtype: ms, GB/s and share of the copy.
- ``ftz``: signed, θ = 1, v0 = 0.5, x = [0.5, -1e-39] through the cupy and torch backends; the
  rules give spikes [1, -1] (a flush-to-zero kernel gives [1, 0]).
- ``mode_flips``: one converted network (random weights, calibrated thresholds) run in 'm' (all
  steps in one call), 'm' in chunks, and 's', per backend; every neuron output is compared with
  the torch backend's 'm' run. On the CPU all are identical; on CUDA the synaptic layers run at
  different batch sizes (T·N, chunk·N, N) and cuDNN/cuBLAS may round differently, so a few
  spikes can flip: this measures how many. The backends at the same mode must agree exactly
  (the neuron kernels are bit-identical given the same input).

Writes PREFIX.json and PREFIX.md.
"""

import argparse
import os
import platform
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import sjconv  # noqa: E402
from sjconv.neurons import SpikingNode  # noqa: E402

from _common import calibrate, failure_status, markdown_table, node_runner, timed, write_outputs  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _version(dist):
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions(device) -> dict:
    """Everything a result depends on, for the header of a results file."""
    info = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "spikingjelly": _version("spikingjelly"), "sjconv": _version("sjconv")}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        info["sjconv_commit"] = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                                               text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["sjconv_commit"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                    gpu_memory_gib=round(props.total_memory / 2**30, 1))
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.split("\n")[0].strip()
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
    try:
        import cupy

        from sjconv.neurons.kernels.cupy_backend import cupy_cuda_major

        info.update(cupy=cupy.__version__, cupy_cuda=cupy_cuda_major(cupy))
        info["nvrtc"] = ".".join(map(str, cupy.cuda.nvrtc.getVersion()))
        if device.type == "cuda":
            info["driver_cuda"] = cupy.cuda.runtime.driverGetVersion()
    except Exception as exc:  # noqa: BLE001 - recorded: CuPy missing or broken is a finding
        info.setdefault("cupy", None)
        info["cupy_problem"] = failure_status(exc)
    return info


def self_check(device) -> list:
    from sjconv.neurons.kernels import cupy_backend, kernel_check

    rows = []
    for name, dtype in DTYPES.items():
        start = time.perf_counter()
        try:
            cupy_backend.check_environment()
            found = kernel_check.mismatches(cupy_backend._fused, device, dtype, cupy_backend._flags())
            status = "pass" if not found else "FAIL: " + "; ".join(found[:3])
        except Exception as exc:  # noqa: BLE001
            status = failure_status(exc)
        rows.append({"dtype": name, "status": status, "seconds": time.perf_counter() - start})
    return rows


def bandwidth(device, T, N, dtypes, repeat, warmup) -> list:
    """Copy bandwidth and the neuron kernels' share of it on a [T, N] input."""
    from spikingjelly.activation_based import neuron

    rows = []
    for name in dtypes:
        dtype = DTYPES[name]
        x = (torch.randn(T, N, device=device) * 0.8).to(dtype)
        mask = torch.rand(N, device=device) > 0.3
        dst = torch.empty_like(x)
        io = 2 * x.numel() * x.element_size()
        copy = timed(lambda: dst.copy_(x), device, repeat, warmup, queued=True)["ms"]
        rows.append({"dtype": name, "T": T, "N": N, "impl": "copy", "ms": copy, "GB_s": io / copy / 1e6,
                     "of_copy": 1.0})
        cases = [("sjconv cupy IF", SpikingNode(1.0, step_mode="m", backend="cupy"), None, 8),
                 ("sjconv cupy srp+neg", SpikingNode(1.0, signed=True, prerun="srp", step_mode="m", backend="cupy"),
                  mask, 17),
                 ("sjconv torch IF", SpikingNode(1.0, step_mode="m", backend="torch"), None, 8),
                 ("SpikingJelly IFNode", neuron.IFNode(v_threshold=1.0, v_reset=None, step_mode="m"), None, 8)]
        sj_ms = None
        for impl, node, m, state_bytes in cases:
            row = {"dtype": name, "T": T, "N": N, "impl": impl}
            try:
                ms = timed(node_runner(node, x, m), device, repeat, warmup, queued=True)["ms"]
            except Exception as exc:  # noqa: BLE001
                row["status"] = failure_status(exc)
                rows.append(row)
                continue
            bw = (io + state_bytes * N) / ms / 1e6
            row.update(ms=ms, GB_s=bw, of_copy=bw / (io / copy / 1e6), status="ok")
            if impl == "SpikingJelly IFNode":
                sj_ms = ms
            rows.append(row)
        for row in rows:
            if row["dtype"] == name and sj_ms and "ms" in row and row["impl"] != "copy":
                row["speedup_vs_sj_ifnode"] = sj_ms / row["ms"]
        del x, dst
    return rows


def ftz_case(device) -> list:
    from sjconv.neurons import get_backend
    from sjconv.neurons.records import NeuronKind, NeuronState

    x = torch.tensor([[0.5], [-1e-39]], device=device)
    rows = []
    for backend in ("torch", "cupy"):
        try:
            state = NeuronState(torch.full((1,), 0.5, device=device), torch.zeros(1, device=device))
            out = get_backend(backend).run(x, state, NeuronKind(True, "qcfs", 1.0), False)[0]
            spikes = out.flatten().tolist()
            rows.append({"backend": backend, "spikes": str(spikes), "status": "ok" if spikes == [1.0, -1.0]
                         else "WRONG (flush to zero?)"})
        except Exception as exc:  # noqa: BLE001
            rows.append({"backend": backend, "status": failure_status(exc)})
    return rows


@torch.no_grad()
def _spikes(snn, images, T, chunk):
    """Every neuron output of a run, per node, concatenated over time, and the logits."""
    from sjconv.simulate import simulate

    outs = {}
    nodes = [m for m in snn.net.modules() if isinstance(m, SpikingNode)]
    mode = nodes[0].step_mode

    def hook(module, args, out):
        outs.setdefault(id(module), []).append(out if mode == "m" else out.unsqueeze(0))

    handles = [n.register_forward_hook(hook) for n in nodes]
    try:
        logits = simulate(snn, images, T, chunk=chunk)
    finally:
        for h in handles:
            h.remove()
    return [torch.cat(outs[id(n)]) for n in nodes], logits


def mode_flips(device, arch, batch, T, chunk, backends, method) -> list:
    """Share of neuron outputs that differ from the torch backend's 'm' run, per backend and mode."""
    torch.manual_seed(0)
    images = torch.randn(batch, 3, 32, 32, device=device)
    ann = calibrate(sjconv.models.build(arch, num_classes=10).to(device).eval(), images)
    runs = [(b, m, c) for b in backends for m, c in (("m", None), ("m", chunk), ("s", None))]
    reference, rows = None, []
    for backend, mode, c in runs:
        row = {"backend": backend, "mode": mode if c is None else f"m, chunk {c}", "T": T, "batch": batch}
        try:
            spikes, logits = _spikes(sjconv.convert(ann, method, mode, backend=backend), images, T, c)
        except Exception as exc:  # noqa: BLE001
            row["status"] = failure_status(exc)
            rows.append(row)
            continue
        if reference is None:
            reference = (spikes, logits)
        total = sum(s.numel() for s in spikes)
        flips = sum(int((a != b).sum()) for a, b in zip(spikes, reference[0]))
        per_layer = [int((a != b).sum()) for a, b in zip(spikes, reference[0])]
        first = next((i for i, n in enumerate(per_layer) if n), None)
        row.update(status="ok", outputs=total, flipped=flips, flip_rate=flips / total,
                   first_layer_with_flips=first, max_logit_diff=float((logits - reference[1]).abs().max()),
                   same_predictions=float((logits.sum(0).argmax(-1) == reference[1].sum(0).argmax(-1)).float().mean()))
        rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--shape", default="64x4194304", help="TxN of the bandwidth check (default 64x4194304)")
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES),
                   help="dtypes of the bandwidth check (the self-check runs every dtype)")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--arch", default="vgg16", choices=list(sjconv.models.ARCHS))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--T", type=int, default=16)
    p.add_argument("--chunk", type=int, default=4)
    p.add_argument("--method", default="srp+neg", choices=list(sjconv.neurons.METHODS))
    p.add_argument("--out", default="benchmarks/results/gpu_smoke")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    payload = {"benchmark": "gpu_smoke", "versions": versions(device)}
    print(payload["versions"], flush=True)
    sections = [("self_check", lambda: self_check(device), on_cuda),
                ("ftz", lambda: ftz_case(device), on_cuda),
                ("bandwidth", lambda: bandwidth(device, *(int(v) for v in args.shape.lower().split("x")),
                                                args.dtypes, args.repeat, args.warmup), on_cuda),
                ("mode_flips", lambda: mode_flips(device, args.arch, args.batch_size, args.T, args.chunk,
                                                  ["torch", "cupy"] if on_cuda else ["torch"], args.method), True)]
    tables = ["## Versions", markdown_table([payload["versions"]], list(payload["versions"]))]
    for name, run, wanted in sections:
        if not wanted:
            payload[name] = "skipped: needs CUDA"
            continue
        start = time.perf_counter()
        try:
            rows = run()
        except Exception as exc:  # noqa: BLE001 - one broken section must not hide the others
            rows = [{"status": failure_status(exc)}]
        payload[name] = rows
        print(name, f"{time.perf_counter() - start:.1f} s", rows, flush=True)
        columns = list(dict.fromkeys(k for r in rows for k in r))
        tables += [f"## {name}", markdown_table(rows, columns)]
        write_outputs(args.out, payload, "\n\n".join(tables))   # after every section: a timeout keeps the rest
        if on_cuda:
            torch.cuda.empty_cache()
    write_outputs(args.out, payload, "\n\n".join(tables))
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
