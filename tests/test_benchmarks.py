"""The benchmark scripts run end to end on a tiny CPU configuration (figures come from the GPU)."""

import json
import os
import re
import subprocess
import sys

import pytest

import sjconv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_step_modes_benchmark_smoke(tmp_path):
    prefix = tmp_path / "sm"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "step_modes.py"), "--arch", "resnet20",
                           "--batch-size", "2", "--T", "2", "5", "--device", "cpu", "--memory-budget", "1GB",
                           "--chunk", "2", "--backends", "torch", "--repeat", "2", "--warmup", "1", "--out", str(prefix)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((tmp_path / "sm.json").read_text())["rows"]
    assert [(r["mode"], r["T"], r["chunk"]) for r in rows] == [
        ("s", 2, 1), ("s", 5, 1), ("m", 2, 2), ("m", 5, 5), ("chunked", 2, 2), ("chunked", 5, 2),
        ("budget", 2, 2), ("budget", 5, 5)]
    assert all(r["status"] == "ok" and r["ms_per_image"] > 0 and r["runs"] == 2 for r in rows)
    assert all(r["ms_per_image_min"] <= r["ms_per_image"] <= r["ms_per_image_max"] for r in rows)
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
    assert ("IF", "SpikingJelly IFNode (fastest)") in impls and ("srp+neg", "sjconv torch") in impls
    sj = next(r for r in rows if r["impl"] == "SpikingJelly IFNode (fastest)")
    assert "fp32 potential" in sj["sj_impl"] and sj["ms_min"] <= sj["ms"] <= sj["ms_max"]
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


def _only_python3_path(tmp_path):
    """A PATH whose only Python is ``python3`` (a wrapper of this interpreter): no ``python``."""
    import shutil
    import stat

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    path = os.pathsep.join([str(bin_dir), "/usr/bin", "/bin"])
    assert shutil.which("python", path=path) is None
    return path


def _gpu_checks(tmp_path, env, *args):
    return subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "run_gpu_checks.sh"), str(tmp_path / "out"), *args],
                          capture_output=True, text=True, timeout=120, env=env)


def test_gpu_check_script_refuses_to_run_without_cuda(tmp_path):
    """Its own exit status (4) and one line, with only python3 on PATH (no ``python``)."""
    import pytest
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script would run the whole suite")
    env = dict(os.environ, PATH=_only_python3_path(tmp_path), PYTHONPATH=ROOT)
    env.pop("PYTHON", None)
    proc = _gpu_checks(tmp_path, env)
    assert proc.returncode == 4, proc.stderr
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1
    assert "no CUDA GPU visible" in proc.stderr and torch.__version__ in proc.stderr
    proc = _gpu_checks(tmp_path, dict(env, PYTHON=sys.executable))   # $PYTHON is used as given
    assert proc.returncode == 4 and "no CUDA GPU visible" in proc.stderr


def test_gpu_check_script_names_a_gpu_that_torch_cannot_use(tmp_path):
    """A driver too old for torch's CUDA reads as "no CUDA GPU" to torch: when nvidia-smi sees a
    GPU, the one line says so, with the fix."""
    import pytest
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script would run the whole suite")
    path = _only_python3_path(tmp_path)
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.write_text('#!/bin/sh\nif [ "$1" = "-L" ]; then echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1234)"; '
                   'else echo "| NVIDIA-SMI 535.54   Driver Version: 535.54   CUDA Version: 12.2 |"; fi\n')
    smi.chmod(0o755)
    env = dict(os.environ, PATH=path, PYTHONPATH=ROOT)
    env.pop("PYTHON", None)
    proc = _gpu_checks(tmp_path, env)
    assert proc.returncode == 4 and len(proc.stderr.splitlines()) == 1, proc.stderr
    line = proc.stderr
    assert "no CUDA GPU visible" in line and "nvidia-smi sees GPU 0: NVIDIA H100 80GB HBM3" in line
    assert "Driver Version: 535.54" in line and "update the NVIDIA driver" in line


def _dry_run(tmp_path, steps, seconds, **env):
    """``run_gpu_checks.sh`` with a stand-in GPU (tests/standin_gpu: torch reports a GPU and makes
    its tensors on the CPU, the stand-in cupy runs the kernel source compiled for the CPU, every
    benchmark made tiny), ``python3`` the only Python on PATH, as on the GPU machine."""
    import shutil

    if shutil.which("g++") is None:
        import pytest

        pytest.skip("the stand-in cupy compiles the kernel source with g++")
    standin = os.path.join(ROOT, "tests", "standin_gpu")
    path = os.pathsep.join([os.path.join(standin, "bin"), os.path.dirname(shutil.which("g++")), "/usr/bin", "/bin"])
    environ = dict(os.environ, PATH=path, PYTHONPATH=ROOT, SJCONV_STANDIN_PYTHON=sys.executable,
                   SJCONV_STANDIN_CUPY_DIR=str(tmp_path / "standin-cupy"), SJCONV_GPU_CHECKS_SECONDS=str(seconds),
                   **env)
    environ.pop("PYTHON", None)
    out = tmp_path / "out"
    proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "run_gpu_checks.sh"), str(out), *steps],
                          capture_output=True, text=True, timeout=seconds + 120, env=environ)
    stamps = list(out.glob("*.json"))
    assert len(stamps) == 1, proc.stdout + proc.stderr
    md = stamps[0].with_suffix(".md").read_text()
    return proc, json.loads(stamps[0].read_text()), md, sorted(p.name for p in out.iterdir())


def test_dry_run_keeps_and_reports_what_a_step_cut_by_its_time_limit_measured(tmp_path):
    """The network step, given far more T than fit in the plan's 20 s, is stopped with SIGINT:
    its rows written so far are kept, and the report is complete and says the step was cut."""
    proc, payload, md, files = _dry_run(tmp_path, ["network"], 20,
                                        SJCONV_STANDIN_NETWORK_T="2 4 8 16 32 64 128 256 512 1024")
    assert proc.returncode == 1
    assert payload["steps"]["network"].startswith("timed out after") and "SIGINT" in payload["steps"]["network"]
    network = payload["network_fp32"]
    assert network["complete"] is False and "signal 2" in network["cut"] and network["rows"]
    assert all(r["status"] == "ok" and r["ms_per_image_min"] <= r["ms_per_image"] <= r["ms_per_image_max"]
               for r in network["rows"])
    assert "| network | timed out after" in md and "CUT (interrupted" in md and "## Targets" in md
    assert any(t["target"].startswith("resnet20 'm' cupy") or "not measured" in t["measured"]
               for t in payload["targets"])
    assert len(files) <= 8 and "log.txt" in files


@pytest.mark.slow
def test_dry_run_of_every_gpu_check_ends_with_a_complete_report(tmp_path):
    """The whole default plan through the stand-in GPU (as the review did without a GPU): every
    step runs or is cut by its limit, and the report names them all with their targets."""
    proc, payload, md, files = _dry_run(tmp_path, [], 470)
    assert set(payload["steps"]) == {"smoke", "tests", "kernels", "network", "step_modes"}, proc.stdout
    assert all(s.startswith(("ok", "timed out", "failed")) for s in payload["steps"].values())
    assert payload["smoke"]["self_check"][0]["status"] == "pass" and payload["smoke"]["self_check"][0]["variants"] == 24
    assert payload["tests"] is not None and payload["tests"]["tests"] > 0      # junit written, cut or not
    assert {t["target"].split(" ")[0] for t in payload["targets"]} >= {"cupy", "chunked", "spike"}
    assert len(files) <= 8 and "## Targets" in md


def test_gpu_check_script_without_python_or_torch_says_so(tmp_path):
    env = dict(os.environ, PATH="/nonexistent", PYTHON="")
    proc = subprocess.run(["/bin/bash", os.path.join(ROOT, "benchmarks", "run_gpu_checks.sh"), str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 3 and "no Python found" in proc.stderr and len(proc.stderr.splitlines()) == 1
    no_torch = tmp_path / "python-without-torch"
    no_torch.write_text("#!/bin/sh\nexec /usr/bin/env -i /bin/sh -c 'echo \"No module named torch\" >&2; exit 1'\n")
    no_torch.chmod(0o755)
    proc = _gpu_checks(tmp_path, dict(os.environ, PYTHON=str(no_torch)))
    assert proc.returncode == 3 and len(proc.stderr.splitlines()) == 1 and "torch" in proc.stderr
    proc = _gpu_checks(tmp_path, dict(os.environ, PYTHON=sys.executable), "everything")
    assert proc.returncode in (2, 4)   # a usage error (or, first, no GPU): never a run


def _report_parts(parts, cut=False):
    """Step files as run_gpu_checks.sh leaves them (``cut``: the step_modes step stopped by its time
    limit after three rows, and the tests step with it)."""
    parts.mkdir()

    def write(name, payload):
        (parts / f"{name}.json").write_text(json.dumps(payload))

    write("smoke", {"versions": {"gpu": "NVIDIA H200", "driver": "580.1", "torch": "2.9", "cupy": "14.2.0",
                                 "spikingjelly": "2.0.0"},
                    "ftz": [{"backend": "cupy", "spikes": "[1.0, -1.0]", "status": "ok"}],
                    "mode_flips": [{"backend": "cupy", "mode": "s", "flip_rate": 0.0002, "within_bound": True}],
                    "complete": True})
    sj = {"impl": "SpikingJelly IFNode (fastest)", "node": "IF", "status": "ok", "sj_impl": "triton, fp32 potential"}
    write("kernels_fp32", {"complete": True, "rows": [sj, {"impl": "sjconv cupy", "node": "qcfs", "status": "ok",
                                                          "of_copy": 0.93, "speedup_vs_sj_ifnode": 2.5}]})
    write("kernels_bf16", {"complete": True, "rows": [sj, {"impl": "sjconv cupy", "node": "qcfs", "status": "ok",
                                                          "of_copy": 0.7, "speedup_vs_sj_ifnode": 1.3}]})
    write("network_fp32", {"complete": True, "rows": [{"T": 64, "model": "SNN 'm' cupy", "vs_ann": 1.02,
                                                       "status": "ok"}]})
    rows = [{"backend": "cupy", "mode": m, "T": T, "status": "ok", "ms_per_image": ms, "peak_gib": peak, "chunk": c,
             "runs": 3}
            for m, T, ms, peak, c in [("m", 64, 1.0, 9.0, 64), ("chunked", 64, 1.2, 3.0, 16),
                                      ("budget", 64, 1.0, 9.0, 64), ("budget", 256, 4.0, 20.0, 156),
                                      ("budget", 1024, 16.0, 20.5, 156)]]
    write("step_modes", {"memory_budget_bytes": 24 * 10**9, "rows": rows[:3] if cut else rows,
                         "complete": not cut, **({"cut": "interrupted (stopped by signal 2)"} if cut else {})})
    (parts / "step_modes.png").write_bytes(b"png")
    (parts / "tests.xml").write_text('<testsuites><testsuite tests="5" failures="1" errors="0" skipped="1">'
                                     '<testcase classname="tests.test_cupy" name="test_a"><failure/></testcase>'
                                     '</testsuite></testsuites>')
    (parts / "smoke.status").write_text("ok, 40 s\n")
    (parts / "step_modes.status").write_text("timed out after 145 s (SIGINT)\n" if cut else "ok, 100 s\n")


def test_gpu_report_packs_the_steps_into_one_dated_pair_with_the_targets(tmp_path):
    parts, out = tmp_path / "parts", tmp_path / "out"
    _report_parts(parts)
    _run("gpu_report.py", str(parts), str(out), str(out / "log.txt"))
    files = sorted(p.name for p in out.iterdir())
    stamps = [f for f in files if f.endswith(".json")]
    assert len(files) == 3 and "step_modes.png" in files and len(stamps) == 1
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}-nvidia-h200\.json", stamps[0])
    payload = json.loads((out / stamps[0]).read_text())
    assert payload["versions"]["driver"] == "580.1" and payload["steps"]["smoke"] == "ok, 40 s"
    assert payload["tests"]["passed"] == 3 and payload["tests"]["failed"] == ["tests.test_cupy::test_a"]
    met = {t["target"]: t["met"] for t in payload["targets"]}
    measured = {t["target"]: t["measured"] for t in payload["targets"]}
    assert met["cupy IF kernel [64, 4M] fp32 >= 90% of copy bandwidth"] is True
    assert met["cupy IF kernel [64, 4M] bf16 >= 80% of copy bandwidth"] is False
    sj = "cupy IF kernel [64, 4M] {} >= 1.4x SpikingJelly's IF neuron at fp32 potential"
    assert met[sj.format("fp32")] is True and met[sj.format("bf16")] is False     # 1.3x < 1.4x
    assert "triton, fp32 potential" in measured[sj.format("fp32")]                # which SpikingJelly ran
    assert met["VGG16 'm' cupy T=64 fp32 <= 1.05x the ANN at batch T·N"] is True
    assert met["chunked (cupy, T=64) >= 90% of 'm' speed"] is False          # 1.0 / 1.2 = 83%
    flat = "T=1024 (cupy) inside the budget with a flat peak (budget rows, both chunked)"
    assert met[flat] is True and "T=256" in measured[flat]                   # 20.5 GiB vs 20.0 at T=256, both chunked
    assert met["spike flips between modes within the derived bound (first layer)"] is True
    md = (out / stamps[0].replace(".json", ".md")).read_text()
    assert md.startswith("# sjconv GPU checks") and "| NVIDIA H200 |" in md and "## Targets" in md


def test_gpu_report_marks_a_step_cut_by_its_time_limit(tmp_path):
    parts, out = tmp_path / "parts", tmp_path / "out"
    _report_parts(parts, cut=True)
    _run("gpu_report.py", str(parts), str(out), str(out / "log.txt"))
    payload = json.loads(next(out.glob("*.json")).read_text())
    measured = {t["target"]: t["measured"] for t in payload["targets"]}
    flat = next(k for k in measured if k.startswith("T=max (cupy)") or k.startswith("T=64 (cupy)"))
    assert "flatness not judged" in measured[flat]          # only T=64 kept, in one chunk: nothing to judge
    md = next(out.glob("*.md")).read_text()
    assert "| step_modes | timed out after 145 s (SIGINT) | 3 rows, CUT (interrupted (stopped by signal 2)) |" in md


def test_flat_peak_is_not_judged_from_a_run_in_one_chunk():
    """T = 64 fits in one chunk under a 24 GB cap, T = 1024 runs in chunks: comparing them says
    nothing about flatness (the issue's case), so only two chunked runs are compared."""
    import importlib

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        gpu_report = importlib.import_module("gpu_report")
    finally:
        sys.path.remove(os.path.join(ROOT, "benchmarks"))
    rows = [{"backend": "cupy", "mode": "budget", "T": T, "status": "ok", "peak_gib": p, "chunk": c}
            for T, p, c in [(64, 9.0, 64), (1024, 20.5, 156)]]
    target = gpu_report._flat_peak("cupy", rows, 24 * 10**9, {"rows": rows, "complete": True})
    assert target["met"] is None and "flatness not judged" in target["measured"]
    rows.append({"backend": "cupy", "mode": "budget", "T": 256, "status": "ok", "peak_gib": 20.0, "chunk": 156})
    assert gpu_report._flat_peak("cupy", rows, 24 * 10**9, {"rows": rows})["met"] is True
    rows[-1]["peak_gib"] = 15.0       # 20.5 > 1.1 x 15: not flat
    assert gpu_report._flat_peak("cupy", rows, 24 * 10**9, {"rows": rows})["met"] is False
    assert gpu_report._flat_peak("cupy", rows, 20 * 2**30, {"rows": rows})["met"] is False   # over the budget


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


def test_gpu_smoke_on_the_cpu_measures_mode_flips(tmp_path):
    """The smoke step's CPU part (versions and the flip rates, also for COS, whose pre-run is one
    multi-step call in 's' mode too); the CUDA sections say skipped."""
    _run("gpu_smoke.py", "--device", "cpu", "--arch", "resnet20", "--batch-size", "2", "--T", "3", "--chunk", "2",
         "--method", "cos", "--out", str(tmp_path / "smoke"))
    payload = json.loads((tmp_path / "smoke.json").read_text())
    assert payload["complete"] is True
    assert payload["versions"]["torch"] and payload["versions"]["spikingjelly"]
    assert payload["self_check"] == payload["bandwidth"] == "skipped: needs CUDA"
    flips = payload["mode_flips"]
    assert [r["mode"] for r in flips[:3]] == ["m", "m, chunk 2", "s"] and "ulp" in flips[3]["mode"]
    assert all(r["status"] == "ok" and r["outputs"] > 0 and r["within_bound"] for r in flips[:3])
    assert all(r["flipped"] == 0 for r in flips[:3])   # this small network: no potential near enough to a threshold


def test_modes_can_flip_spikes_on_the_cpu_within_the_derived_bound():
    """docs/protocols.md#bit-identity: on the CPU too, the synaptic layers need not sum a sample
    alike at every batch size: a Linear layer at batch 1 ('s': a matrix-vector product) and at
    batch T or chunk ('m': a matrix product) rounds differently, so a neuron right at a threshold
    can fire one step earlier or later in one mode, and the flip cascades through later layers.
    The flip rate between modes is measured and the first layer's flips bounded
    (gpu_smoke.flip_bound: the first neuron layer, whose input differs by rounding alone)."""
    import importlib

    import torch
    import torch.nn as nn

    from reference import calibrate_thresholds

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        gpu_smoke = importlib.import_module("gpu_smoke")
    finally:
        sys.path.remove(os.path.join(ROOT, "benchmarks"))
    torch.manual_seed(0)
    width = 1024
    ann = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, width), sjconv.QCFS(), nn.Linear(width, width),
                        sjconv.QCFS(), nn.Linear(width, width), sjconv.QCFS(), nn.Linear(width, 10)).eval()
    images = torch.randn(1, 3, 32, 32)
    calibrate_thresholds(ann, images)
    rows = gpu_smoke.mode_flips(torch.device("cpu"), ann, images, 256, 4, ["torch"], "qcfs")
    modes, bound = rows[:3], rows[3]
    assert [r["mode"] for r in modes] == ["m", "m, chunk 4", "s"] and all(r["status"] == "ok" for r in modes)
    assert modes[0]["flipped"] == 0
    assert modes[2]["first_layer_max_ulps"] > 0          # batch 1 and batch 256 round the first layer differently
    assert all(r["within_bound"] for r in modes), rows  # the first layer's flips, bounded by their cause
    assert all(r["flip_rate"] < 0.01 for r in modes)     # measured on this machine: 0.077 % (1024 wide, T = 256)
    assert bound["first_layer_flipped_neurons"] >= 0 and bound["flip_rate"] >= 0


def test_step_modes_reports_a_library_error_with_its_own_message(monkeypatch):
    """A budget too small for one step is the library's error, reported as it reads (not as
    "does not fit" with any error)."""
    import argparse
    import importlib

    import torch

    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    step_modes = importlib.import_module("step_modes")
    images = torch.randn(2, 3, 32, 32)
    ann = sjconv.models.build("resnet20", num_classes=10).eval()
    args = argparse.Namespace(method="qcfs", repeat=1, warmup=0, chunk=16)
    row = step_modes.run_case(ann, images, "torch", "budget", 4, 1000, args, torch.device("cpu"))
    assert row["status"].startswith("failed: SjconvError: a memory budget of 1000 B does not fit even one time step") \
        or row["status"].startswith("failed: SjconvError: a memory budget of")
