"""The benchmark scripts run end to end on a tiny CPU configuration (figures come from the GPU)."""

import json
import os
import subprocess
import sys

import sjconv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_step_modes_benchmark_smoke(tmp_path):
    prefix = tmp_path / "sm"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "step_modes.py"), "--arch", "resnet20",
                           "--batch-size", "2", "--T", "2", "5", "--device", "cpu", "--memory-budget", "1GB",
                           "--chunk", "2", "--backends", "torch", "--out", str(prefix)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "sm.json").read_text())["rows"]
    assert [(r["mode"], r["T"], r["chunk"]) for r in rows] == [
        ("s", 2, 1), ("s", 5, 1), ("m", 2, 2), ("m", 5, 5), ("chunked", 2, 2), ("chunked", 5, 2),
        ("budget", 2, 2), ("budget", 5, 5)]
    assert all(r["status"] == "ok" and r["ms_per_image"] > 0 for r in rows)
    # the budget rows went through the library's own retry path and say so
    assert [(r["chunk_chosen"], r["oom_retries"]) for r in rows if r["mode"] == "budget"] == [(2, 0), (5, 0)]
    assert (tmp_path / "sm.md").read_text().startswith("| backend | mode | T |")
    assert (tmp_path / "sm.png").stat().st_size > 1000


def _run(script, *args):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_neuron_kernels_benchmark_smoke(tmp_path):
    _run("neuron_kernels.py", "--shapes", "3x500", "--device", "cpu", "--repeat", "1", "--warmup", "0",
         "--out", str(tmp_path / "nk"))
    rows = json.loads((tmp_path / "nk.json").read_text())["rows"]
    impls = {(r.get("node"), r["impl"]) for r in rows}
    assert ("IF", "SpikingJelly IFNode(v_reset=None)") in impls and ("srp+neg", "sjconv torch") in impls
    assert ("IF", "minimal in-place loop") in impls
    kinds = ["qcfs", "neg", "neg (snm)", "srp", "srp+neg", "srp+neg (snm)"]
    loops = ["reference loop (rules.run_steps)", "in-place loop (torch_backend.run_steps)"]
    ok = [r for r in rows if r.get("status") == "ok"]
    assert all(r["ms"] > 0 and r["GB_s"] > 0 for r in ok) and len(ok) >= 7
    ok_impls = {(r["node"], r["impl"]) for r in ok if r.get("node")}
    assert {(k, loop) for k in kinds for loop in loops} <= ok_impls
    assert all(r["vs_minimal"] > 0 for r in ok if r.get("node"))
    cupy = [r for r in rows if r["impl"] == "sjconv cupy"]
    # one cupy row per method (sjconv.METHODS), all skipped with --device cpu
    assert [r["node"] for r in cupy] == list(sjconv.METHODS)
    assert all(r["status"] == "skipped: CUDA only" for r in cupy)
    assert "| vs_minimal |" in (tmp_path / "nk.md").read_text().splitlines()[0]


def test_network_benchmark_smoke(tmp_path):
    _run("network.py", "--arch", "resnet20", "--batch-size", "2", "--T", "2", "--device", "cpu",
         "--repeat", "1", "--warmup", "0", "--backends", "torch", "--out", str(tmp_path / "net"))
    rows = json.loads((tmp_path / "net.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["ANN (batch T·N)", "SNN 'm' torch"]
    assert all(r["status"] == "ok" and r["ms_per_image"] > 0 for r in rows)
    assert all(r["dtype"] == "fp32" and r["channels_last"] is False for r in rows)


def test_network_benchmark_runs_ann_and_snn_in_the_same_format(tmp_path):
    _run("network.py", "--arch", "resnet20", "--batch-size", "2", "--T", "2", "--device", "cpu", "--dtype", "bf16",
         "--channels-last", "--repeat", "1", "--warmup", "0", "--backends", "torch", "--out", str(tmp_path / "net"))
    payload = json.loads((tmp_path / "net.json").read_text())
    assert payload["dtype"] == "bf16" and payload["channels_last"] is True
    assert all(r["status"] == "ok" and r["dtype"] == "bf16" and r["channels_last"] for r in payload["rows"])


def test_gpu_check_script_refuses_to_run_without_cuda(tmp_path):
    import pytest
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script would run the whole suite")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "run_gpu_checks.sh"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2 and "no CUDA GPU visible" in proc.stderr


def test_step_modes_reports_what_the_library_does_on_allocation_failures(monkeypatch):
    """Calls of more than 2 steps fail as cuDNN does (a RuntimeError): the budget row shows the
    library's retries and the chunk it ended with; 'm' (no budget, no retry) is OOM."""
    import argparse
    import importlib

    import torch

    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    step_modes = importlib.import_module("step_modes")
    real_convert = sjconv.convert

    def failing_convert(*args, **kwargs):
        snn = real_convert(*args, **kwargs)
        first = next(m for m in snn.net.modules() if not list(m.children()))

        def hook(module, inputs):
            if inputs[0].dim() == 5 and inputs[0].shape[0] > 2:
                raise RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED")
        first.register_forward_pre_hook(hook)
        return snn

    monkeypatch.setattr(sjconv, "convert", failing_convert)
    images = torch.randn(2, 3, 32, 32)
    ann = sjconv.models.build("resnet20", num_classes=10).eval()
    args = argparse.Namespace(method="qcfs", repeat=1, warmup=0, chunk=16)
    budget = sjconv.memory.parse_memory("1TB")
    row = step_modes.run_case(ann, images, "torch", "budget", 8, budget, args, torch.device("cpu"))
    assert row["status"] == "ok" and row["chunk"] == 2 and row["oom_retries"] == 2
    row = step_modes.run_case(ann, images, "torch", "m", 8, budget, args, torch.device("cpu"))
    assert row["status"] == "OOM"
