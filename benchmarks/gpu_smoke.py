#!/usr/bin/env python3
"""First contact with a GPU, in about a minute: what is installed, whether the fused kernel passes
its self-check in every dtype, how close it runs to the copy bandwidth, the subnormal (FTZ) case,
and how often spikes differ between step modes.

    python3 benchmarks/gpu_smoke.py --out OUT/smoke          # CUDA: the full check
    python3 benchmarks/gpu_smoke.py --device cpu --out X     # CPU: versions and the flip rates only

Sections (each recorded, a failing one does not stop the others):

- ``versions``: GPU, driver, torch/CUDA/cuDNN, CuPy (its CUDA build, NVRTC), SpikingJelly, sjconv.
- ``self_check``: :func:`sjconv.neurons.kernels.kernel_check.mismatches` of the cupy kernels per dtype,
  every variant the backend checks before its first launch (the IF kinds and the group kernels;
  seconds include NVRTC compilation).
- ``bandwidth``: an elementwise copy of a [T, N] tensor, the cupy kernel (IF and signed+SRP) and
  the torch backend and SpikingJelly's IF neuron in its fastest configuration (float32 potential,
  the implementation it selects: ``_common.sj_if_fastest``), per dtype: median, fastest and
  slowest ms, GB/s and share of the copy.
- ``ftz``: signed, θ = 1, v0 = 0.5, x = [0.5, -1e-39] through the cupy and torch backends; the
  rules give spikes [1, -1] (a flush-to-zero kernel gives [1, 0]).
- ``mode_flips``: one converted network (random weights, calibrated thresholds) run in 'm' (all
  steps in one call), 'm' in chunks, and 's', per backend; every neuron output is compared with
  the torch backend's 'm' run. The synaptic layers run at different batch sizes (T·N, chunk·N,
  N) and may round a sample's sums differently (cuDNN/cuBLAS on CUDA, the CPU's GEMV/GEMM too),
  so a few spikes can flip: this measures how many (docs/protocols.md#bit-identity). The backends at the same mode must agree exactly
  (the neuron kernels are bit-identical given the same input). ``first_layer_max_ulps``: the
  largest difference of the first neuron layer's input from the reference, in units in the last
  place (that input is the first synaptic layer's output on the same images in every mode, so
  this is the synaptic rounding alone). Then ``flip_bound`` (:func:`flip_bound`): the flip rate of
  the reference run with every synaptic output moved by ±u ulps (random signs), u derived from
  the first layer's difference; the rows say whether each mode's rate is within it.

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

from _common import (calibrate, failure_status, markdown_table, node_runner, sj_if_fastest, stop_on_signals,  # noqa: E402
                     timed, write_outputs)

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
    variants = list(cupy_backend._flags()) + kernel_check.group_variants(cupy_backend._flags())
    for name, dtype in DTYPES.items():
        start = time.perf_counter()
        try:
            cupy_backend.check_environment()
            found = kernel_check.mismatches(cupy_backend._fused, device, dtype, variants)
            status = "pass" if not found else "FAIL: " + "; ".join(found[:3])
        except Exception as exc:  # noqa: BLE001
            status = failure_status(exc)
        rows.append({"dtype": name, "variants": len(variants), "status": status,
                     "seconds": time.perf_counter() - start})
    return rows


def bandwidth(device, T, N, dtypes, repeat, warmup) -> list:
    """Copy bandwidth and the neuron kernels' share of it on a [T, N] input; every row the median,
    fastest and slowest of ``repeat`` runs after ``warmup``."""
    rows = []
    for name in dtypes:
        dtype = DTYPES[name]
        x = (torch.randn(T, N, device=device) * 0.8).to(dtype)
        mask = torch.rand(N, device=device) > 0.3
        dst = torch.empty_like(x)
        io = 2 * x.numel() * x.element_size()
        copy = timed(lambda: dst.copy_(x), device, repeat, warmup, queued=True)
        copy_bw = io / copy["ms"] / 1e6
        rows.append({"dtype": name, "T": T, "N": N, "impl": "copy", "ms": copy["ms"], "ms_min": copy["ms_min"],
                     "ms_max": copy["ms_max"], "GB_s": copy_bw, "of_copy": 1.0})
        sj_run, sj_info = sj_if_fastest(x, 1.0)
        cases = [("sjconv cupy IF", node_runner(SpikingNode(1.0, step_mode="m", backend="cupy"), x), 8, {}),
                 ("sjconv cupy srp+neg", node_runner(SpikingNode(1.0, signed=True, prerun="srp", step_mode="m",
                                                                 backend="cupy"), x, mask), 17, {}),
                 ("sjconv torch IF", node_runner(SpikingNode(1.0, step_mode="m", backend="torch"), x), 8, {}),
                 ("SpikingJelly IFNode (fastest)", sj_run, sj_info["extra_bytes_per_neuron"],
                  {"sj_impl": sj_info["label"]})]
        sj_ms = None
        for impl, run, state_bytes, extra in cases:
            row = {"dtype": name, "T": T, "N": N, "impl": impl, **extra}
            try:
                r = timed(run, device, repeat, warmup, queued=True)
            except Exception as exc:  # noqa: BLE001
                row["status"] = failure_status(exc)
                rows.append(row)
                continue
            bw = (io + state_bytes * N) / r["ms"] / 1e6
            row.update(ms=r["ms"], ms_min=r["ms_min"], ms_max=r["ms_max"], GB_s=bw, of_copy=bw / copy_bw, status="ok")
            if extra:
                sj_ms = r["ms"]
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
def _spikes(snn, images, T, chunk, perturb_ulps=0, seed=0):
    """Every neuron output of a run, per node, flattened in time order (an 'm' call's [t, N, ...],
    an 's' call's [N, ...] and a folded [t·N, ...] all flatten to the same order), the first
    node's inputs (flattened alike), its neurons per step, and the logits. ``perturb_ulps``: every
    node's input (a synaptic layer's output) moved by that many units in the last place of the
    call's largest input magnitude (:func:`_ulp_of_max`), up or down at random per neuron and
    the same way at every step (as a synaptic layer that rounds a static image's sum differently
    does at every step)."""
    from sjconv.simulate import simulate

    outs, first_in, first_n = {}, [], []
    nodes = [m for m in snn.net.modules() if isinstance(m, SpikingNode)]
    gen = torch.Generator(device=images.device).manual_seed(seed)
    signs = {}

    def pre_hook(module, args):
        x = args[0]
        if module is nodes[0]:
            first_in.append(x.reshape(-1))
        if perturb_ulps:
            step = x.shape[1:] if module.step_mode == "m" else x.shape
            if id(module) not in signs:
                signs[id(module)] = torch.randint(0, 2, step, generator=gen, device=x.device).to(x.dtype) * 2 - 1
            return (x + signs[id(module)] * (perturb_ulps * _ulp_of_max(x)),) + tuple(args[1:])
        return None

    def hook(module, args, out):
        if module is nodes[0] and not first_n:
            first_n.append(out[0].numel() if module.step_mode == "m" else out.numel())
        outs.setdefault(id(module), []).append(out.reshape(-1))

    handles = [n.register_forward_hook(hook) for n in nodes] + [n.register_forward_pre_hook(pre_hook) for n in nodes]
    try:
        logits = simulate(snn, images, T, chunk=chunk)
    finally:
        for h in handles:
            h.remove()
    return [torch.cat(outs[id(n)]) for n in nodes], torch.cat(first_in), first_n[0], logits


def _ulp_of_max(x: torch.Tensor) -> torch.Tensor:
    """The unit in the last place of ``x``'s largest magnitude, in ``x``'s dtype: the scale of a
    synaptic sum's rounding error (it follows the size of the terms, not of the result, which
    can be near 0 after cancellation)."""
    big = x.detach().abs().max()
    return torch.nextafter(big, torch.full_like(big, float("inf"))) - big


def max_ulps(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b| in units of :func:`_ulp_of_max` of ``b`` (0 where equal)."""
    if not a.numel():
        return 0.0
    return float((a.float() - b.float()).abs().max() / _ulp_of_max(b).float())


def _flips(spikes, reference, first_n):
    """(outputs, flipped outputs, first layer with flips, first-layer neurons with a flipped output)."""
    total = sum(s.numel() for s in spikes)
    per_layer = [int((a != b).sum()) for a, b in zip(spikes, reference)]
    first = (spikes[0] != reference[0]).reshape(-1, first_n).any(0)
    return total, sum(per_layer), next((i for i, n in enumerate(per_layer) if n), None), int(first.sum())


def allowed_flipped_neurons(perturbed: int) -> float:
    """The first-layer neurons a mode change may flip, given that moving every first-layer input by
    u ulps (up or down at random, fixed per neuron) flipped ``perturbed`` of them (:func:`flip_bound`):
    twice that (a neuron near a threshold flips when moved towards it, half of the time at
    random), plus 3 standard deviations of a Poisson count, plus 3."""
    return 2 * perturbed + 3 * (2 * perturbed) ** 0.5 + 3


def flip_bound(snn, images, T, reference, first_n, first_layer_ulps):
    """The bound of a mode change's flips, derived from their cause. The synaptic layers sum each
    sample in another order at another batch size, which moves their outputs by a few units in the
    last place (of the layer's largest output: :func:`_ulp_of_max`). In the first neuron layer,
    whose input is the first synaptic layer's output on the same images in every mode, that is
    the only difference, at most u = ``first_layer_ulps`` (≥ 1) per input, the same at every step;
    each neuron flips on its own (no earlier layer's flip reaches it). A neuron flips only if its
    potential comes within the accumulated difference of a threshold; moving every input by
    exactly u ulps, in a random direction per neuron, flips at least about half of the neurons
    the mode change can flip. So the mode change's flipped first-layer neurons are bounded by
    :func:`allowed_flipped_neurons` of the perturbed run's. Deeper layers add cascades (a flipped
    spike moves the next layer's potentials by a whole θ·w), so the whole network's rate is
    reported, next to the perturbed run's, not bounded. Returns ``(first-layer neurons flipped,
    whole-network flip rate, u)`` of the perturbed run."""
    ulps = max(1.0, first_layer_ulps)
    spikes, _, _, _ = _spikes(snn, images, T, None, perturb_ulps=ulps)
    total, flips, _, first = _flips(spikes, reference, first_n)
    return first, flips / total, ulps


def mode_flips(device, ann, images, T, chunk, backends, method) -> list:
    """Share of neuron outputs that differ from the torch backend's 'm' run, per backend and mode,
    and first-layer neurons with a flip against the bound of :func:`flip_bound` (its own row last)."""
    runs = [(b, m, c) for b in backends for m, c in (("m", None), ("m", chunk), ("s", None))]
    reference, rows = None, []
    for backend, mode, c in runs:
        row = {"backend": backend, "mode": mode if c is None else f"m, chunk {c}", "T": T, "batch": images.shape[0]}
        try:
            spikes, first_in, first_n, logits = _spikes(sjconv.convert(ann, method, mode, backend=backend), images,
                                                        T, c)
        except Exception as exc:  # noqa: BLE001
            row["status"] = failure_status(exc)
            rows.append(row)
            continue
        if reference is None:
            reference = (spikes, first_in, first_n, logits)
        total, flips, first, first_neurons = _flips(spikes, reference[0], first_n)
        row.update(status="ok", outputs=total, flipped=flips, flip_rate=flips / total,
                   first_layer_with_flips=first, first_layer_max_ulps=max_ulps(first_in, reference[1]),
                   first_layer_flipped_neurons=first_neurons, max_logit_diff=float((logits - reference[3]).abs().max()),
                   same_predictions=float((logits.sum(0).argmax(-1) == reference[3].sum(0).argmax(-1)).float().mean()))
        rows.append(row)
    ok = [r for r in rows if r.get("status") == "ok"]
    if reference is not None:
        u = max(r["first_layer_max_ulps"] for r in ok)
        first, rate, ulps = flip_bound(sjconv.convert(ann, method, "m", backend="torch"), images, T, reference[0],
                                       reference[2], u)
        allowed = allowed_flipped_neurons(first)
        for r in ok:
            r.update(first_layer_allowed=allowed, within_bound=r["first_layer_flipped_neurons"] <= allowed)
        rows.append({"backend": "torch", "mode": f"m, every synaptic output ±{ulps:.3g} ulp", "T": T,
                     "batch": images.shape[0], "status": "ok (the bound's run)", "flip_rate": rate,
                     "first_layer_flipped_neurons": first})
    return rows


def flip_network(device, arch, batch):
    """The smoke step's network: ``arch`` with random weights and thresholds calibrated on random
    images (so that the neurons fire), and the images."""
    torch.manual_seed(0)
    images = torch.randn(batch, 3, 32, 32, device=device)
    return calibrate(sjconv.models.build(arch, num_classes=10).to(device).eval(), images), images


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
                ("mode_flips", lambda: mode_flips(device, *flip_network(device, args.arch, args.batch_size), args.T,
                                                  args.chunk, ["torch", "cupy"] if on_cuda else ["torch"],
                                                  args.method), True)]
    tables = ["## Versions", markdown_table([payload["versions"]], list(payload["versions"]))]
    payload["complete"] = False
    write_outputs(args.out, payload, "\n\n".join(tables))
    stop_on_signals()
    try:
        run_sections(args, payload, tables, sections, on_cuda)
    except KeyboardInterrupt as exc:
        payload["cut"] = f"interrupted ({exc or 'SIGINT'})"
        write_outputs(args.out, payload, "\n\n".join(tables))
        print(f"stopped early: {payload['cut']}", flush=True)
        return 130
    payload["complete"] = True
    write_outputs(args.out, payload, "\n\n".join(tables))
    print("\n\n".join(tables))
    return 0


def run_sections(args, payload, tables, sections, on_cuda):
    """Each section in turn, the results written after each (a timeout keeps the finished ones)."""
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


if __name__ == "__main__":
    sys.exit(main())
