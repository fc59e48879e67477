"""The cupy backend's real launch path on the CPU, through a stand-in ``cupy`` module.

``cupy_backend._fused`` (layout, kernel cache, device context, stream, arguments, grid) runs
unchanged; only ``require_cupy`` returns the stand-in, whose ``RawModule`` runs the kernel source
compiled for the host with g++ (``host_kernel.py``). The stand-in checks what a GPU would only
show as a crash or wrong numbers: every argument's type against the kernel's signature (parsed
from the source), the grid against n, that compilation, kernel resolution and launches happen
inside the ``Device`` context of the input's device, and that the stream passed is torch's
current stream of that device.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sjconv.errors import BackendUnavailableError
from sjconv.neurons.kernels import cupy_backend as cb
from sjconv.neurons import rules

from host_kernel import FakeCupy, FakeModule, compile_for_host, kernel_signature

@pytest.fixture(scope="module")
def host_lib(tmp_path_factory):
    return compile_for_host(tmp_path_factory.mktemp("launch"))


@pytest.fixture
def fake_cupy(host_lib, monkeypatch):
    streams = {0: 0x1000, 1: 0x2001}
    fake = FakeCupy(host_lib, streams)
    current = {"device": 1}
    monkeypatch.setattr(cb, "require_cupy", lambda: fake)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current["device"])
    monkeypatch.setattr(torch.cuda, "current_stream",
                        lambda device=None: SimpleNamespace(cuda_stream=streams[device]))
    fake.current = current
    for cache in (cb._module, cb._kernel, cb._stream):
        cache.cache_clear()
    yield fake
    for cache in (cb._module, cb._kernel, cb._stream):
        cache.cache_clear()


def _inputs(layout, dtype):
    base = (torch.randn(6, 2, 5, 4, 3) * 0.7).to(dtype)
    if layout == "contiguous":
        return base
    if layout == "channels_last":
        x = base.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(base.shape)
        assert x[0].is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return x
    if layout == "transposed":
        return base.transpose(-1, -2)
    if layout == "sliced":
        return (torch.randn(6, 2, 10, 4, 3) * 0.7).to(dtype)[:, :, ::2]
    if layout == "expanded":
        return base[:1].expand(6, -1, -1, -1, -1)
    if layout == "no steps":
        return base[:0]
    return base[:, :, :0]   # "no neurons"


LAYOUTS = ["contiguous", "channels_last", "transposed", "sliced", "expanded", "no steps", "no neurons"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("signed,masked,snm", [(False, False, False), (True, True, False), (True, False, True)])
def test_fused_launch_matches_the_rules(fake_cupy, layout, dtype, signed, masked, snm):
    theta = 0.6
    x = _inputs(layout, dtype)
    step = x.shape[1:]
    v0 = torch.full(step, 0.0 if snm else theta / 2)
    c0 = torch.zeros(step)
    mask = torch.rand(step) > 0.3 if masked else None
    got = cb._fused(x, v0, c0, mask, theta, signed, snm)
    want = rules.run_steps(x, v0, c0 if signed else None, mask, theta, signed, "snm" if snm else "qcfs")
    assert got[0].shape == x.shape and got[0].dtype == dtype
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    if signed:
        assert torch.equal(got[2], want[2])
    assert torch.equal(v0, torch.full(step, 0.0 if snm else theta / 2))   # the caller's state is untouched
    launched = x.shape[0] > 0 and x[0].numel() > 0
    assert len(fake_cupy.launches) == int(launched)
    if launched:
        assert fake_cupy.launches[0][0] == 1   # the current device (CPU tensors have no index)


def test_kernels_are_resolved_once_per_device_format_and_variant(fake_cupy):
    x = torch.randn(4, 768)      # a whole number of blocks: one block too many would show
    v, c = torch.zeros(768), torch.zeros(768)
    for _ in range(3):
        cb._fused(x, v, c, None, 0.5, True, False)
        cb._fused(x, v, c, None, 0.5, False, False)
        cb._fused(x.half(), v, c, None, 0.5, False, False)
    fake_cupy.current["device"] = 0      # another device: its own module and kernels
    cb._fused(x, v, c, None, 0.5, True, False)
    assert fake_cupy.compiled == [(1, "F32"), (1, "F16"), (0, "F32")]
    assert [(d, n.split("<")[1]) for d, n in fake_cupy.resolved] == [
        (1, "F32, true, false, false>"), (1, "F32, false, false, false>"), (1, "F16, false, false, false>"),
        (0, "F32, true, false, false>")]
    assert len(fake_cupy.launches) == 10 and fake_cupy.launches[-1][0] == 0
    assert all(grid == (3,) and block == (256,) for _, _, grid, block in fake_cupy.launches)


def test_the_stand_in_catches_a_wrong_argument_type(fake_cupy, monkeypatch):
    monkeypatch.setattr(cb.np, "int32", np.int64)    # steps passed as a 64-bit integer
    with pytest.raises(AssertionError, match="argument 6: int64, the kernel takes int32"):
        cb._fused(torch.randn(3, 10), torch.zeros(10), torch.zeros(10), None, 0.5, False, False)


def test_signature_parsed_from_the_source():
    head = [np.uint64] * 5 + [np.int64, np.int32, np.int64, np.int64]
    assert kernel_signature(cb.kernel_source()) == head + [np.float32]
    assert kernel_signature(cb.kernel_source(), "sjconv_group_neuron") == head + [np.float32, np.int32]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_every_variant_passes_the_self_check_through_the_launch_path(fake_cupy, dtype):
    """The GPU's self-check (all 24 variants: 6 IF kinds, 6 group kinds at m = 1, 3, 8) run through
    ``_fused`` and the stand-in's launches, each checked against its own kernel's signature
    (the group kernel takes 11 arguments: q and m in place of θ)."""
    from sjconv.neurons.kernels import kernel_check

    variants = list(cb._flags()) + kernel_check.group_variants(cb._flags())
    assert len(variants) == 24
    assert kernel_check.mismatches(cb._fused, torch.device("cpu"), dtype, variants) == []
    kernels = {name.split("<")[0] for _, name, _, _ in fake_cupy.launches}
    assert kernels == {"sjconv_neuron", "sjconv_group_neuron"}
    assert len({name for _, name, _, _ in fake_cupy.launches}) == 12   # every template instance launched


@pytest.mark.parametrize("message,fix", [
    ("CUDA_ERROR_UNSUPPORTED_PTX_VERSION: the provided PTX was compiled with an unsupported toolchain.",
     "update the driver"),
    ("nvrtc: libnvrtc.so.13 not found\ndetails", "cannot load NVRTC"),
    ("error: identifier \"foo\" is undefined", "backend='torch'")])
def test_build_failures_are_one_line_with_the_fix(fake_cupy, monkeypatch, message, fix):
    def fail(self):
        raise RuntimeError(message)

    monkeypatch.setattr(FakeModule, "compile", fail)
    with pytest.raises(BackendUnavailableError) as err:
        cb._fused(torch.randn(2, 5), torch.zeros(5), torch.zeros(5), None, 0.5, False, False)
    text = str(err.value)
    assert "\n" not in text and fix in text and message.splitlines()[0][:40] in text


def _environment(monkeypatch, cupy_major, nvrtc=lambda: (13, 0), torch_cuda="13.0"):
    fake = SimpleNamespace(__version__="14.2.0", cuda=SimpleNamespace(nvrtc=SimpleNamespace(getVersion=nvrtc)))
    monkeypatch.setattr(cb, "_ENVIRONMENT_OK", [])
    monkeypatch.setattr(cb, "require_cupy", lambda: fake)
    monkeypatch.setattr(cb, "cupy_cuda_major", lambda cupy: cupy_major)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.version, "cuda", torch_cuda)


def test_environment_check_passes_and_is_remembered(monkeypatch):
    calls = []
    _environment(monkeypatch, 13, nvrtc=lambda: calls.append(1) or (13, 0))
    cb.check_environment()
    cb.check_environment()
    assert calls == [1]


def test_cupy_built_for_another_cuda_than_torch_is_refused(monkeypatch):
    _environment(monkeypatch, 12)
    with pytest.raises(BackendUnavailableError, match=r"built for CUDA 12 but torch .* for CUDA 13\.0: .*"
                                                      r"sjconv\[cupy13\]"):
        cb.check_environment()


def test_nvrtc_that_does_not_load_is_one_line_with_the_fix(monkeypatch):
    def missing():
        raise RuntimeError("Failure finding \"libnvrtc.so\": No such file\nsearched: ...")

    _environment(monkeypatch, 13, nvrtc=missing)
    with pytest.raises(BackendUnavailableError) as err:
        cb.check_environment()
    assert "cannot load NVRTC" in str(err.value) and "cuda-toolkit[nvrtc]==13.*" in str(err.value)
    assert "\n" not in str(err.value)


def test_cupy_cuda_major_from_the_wheel_name_or_the_runtime(monkeypatch):
    from importlib import metadata

    def version(name):
        if name == "cupy-cuda12x":
            return "13.6.0"
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", version)
    assert cb.cupy_cuda_major(None) == 12
    monkeypatch.setattr(metadata, "version", lambda name: (_ for _ in ()).throw(metadata.PackageNotFoundError(name)))
    runtime = SimpleNamespace(runtime=SimpleNamespace(runtimeGetVersion=lambda: 13020))
    assert cb.cupy_cuda_major(SimpleNamespace(cuda=runtime)) == 13


def test_nodes_check_the_environment_when_built(monkeypatch):
    from sjconv.neurons import SpikingNode

    _environment(monkeypatch, 12)
    with pytest.raises(BackendUnavailableError, match="built for CUDA 12"):
        SpikingNode(1.0, backend="cupy")


@pytest.mark.parametrize("levels", [None, 4])
def test_single_step_mode_updates_the_node_state_in_place_with_the_same_results(fake_cupy, monkeypatch, levels):
    """In 's' mode a cupy node updates its own state where it lies (no copy of v and count per
    step); the outputs and states equal the torch backend's bit for bit, and a state tensor that
    is not the node's own (the first call's, one read from outside, or one set from outside) is
    never written."""
    from spikingjelly.activation_based import functional

    from sjconv.neurons import SpikingNode

    _environment(monkeypatch, 13)
    monkeypatch.setattr(cb, "check_input", lambda x: None)
    monkeypatch.setattr(cb, "_ensure_verified", lambda device, dtype: None)
    x = torch.randn(10, 3, 7, 5) * 0.8
    nodes = [SpikingNode(0.75, signed=True, levels=levels, step_mode="s", backend=b) for b in ("torch", "cupy")]
    monkeypatch.setattr(cb, "require_cupy", lambda: fake_cupy)   # built: from now on the launching stand-in
    outs, storage = [], []
    for node in nodes:
        functional.reset_net(node)
        steps = []
        for t, xt in enumerate(x):
            steps.append(node(xt))
            if node.backend == "cupy":
                own = node.__dict__["_memories"]   # the node's storage, looked at without handing it out
                storage.append((own["v"].data_ptr(), own["count"].data_ptr()))
                if t == 4:
                    outside, kept_v = node.v, node.v.clone()   # read from outside: handed out
        outs.append((torch.stack(steps), node.v, node.count))
    assert all(torch.equal(a, b) for a, b in zip(*outs))
    assert len(set(storage[:5])) == 1        # one state tensor (made by the first call), updated in place
    assert len(set(storage[5:])) == 1 and storage[5] != storage[4]    # after the read: a new one, then in place
    assert torch.equal(outside, kept_v)                                # what was handed out never changes
    foreign = torch.full((3, 7, 5), 0.1)
    nodes[1].v, kept = foreign, foreign.clone()
    nodes[1](x[0])
    assert torch.equal(foreign, kept) and nodes[1].v is not foreign      # set from outside: not written
    assert len(fake_cupy.launches) == 11


def test_a_monitor_of_v_in_single_step_mode_records_every_step(fake_cupy, monkeypatch):
    """SpikingJelly's AttributeMonitor keeps a reference to ``node.v`` after every step: the
    in-place update of 's' mode must not rewrite what it recorded (each record is that step's v,
    as with the torch backend)."""
    from spikingjelly.activation_based import functional, monitor

    from sjconv.neurons import SpikingNode

    _environment(monkeypatch, 13)
    monkeypatch.setattr(cb, "check_input", lambda x: None)
    monkeypatch.setattr(cb, "_ensure_verified", lambda device, dtype: None)
    x = torch.randn(6, 4, 9) * 0.8
    nodes = [SpikingNode(0.75, step_mode="s", backend=b) for b in ("torch", "cupy")]
    monkeypatch.setattr(cb, "require_cupy", lambda: fake_cupy)
    records = []
    for node in nodes:
        functional.reset_net(node)
        mon = monitor.AttributeMonitor("v", pre_forward=False, net=node, instance=SpikingNode)
        for xt in x:
            node(xt)
        records.append(torch.stack(mon.records))
        mon.remove_hooks()
    assert torch.equal(records[0], records[1])
    assert not torch.equal(records[1][0], records[1][-1])


def test_gpu_smoke_self_check_covers_every_variant(fake_cupy, monkeypatch):
    """The smoke step's self-check runs every variant the backend checks before a launch, the
    group kernels included (24 per dtype), here through the stand-in's launches."""
    import importlib
    import os

    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                             "benchmarks"))
    gpu_smoke = importlib.import_module("gpu_smoke")
    monkeypatch.setattr(cb, "check_environment", lambda: None)
    rows = gpu_smoke.self_check(torch.device("cpu"))
    assert [(r["dtype"], r["variants"], r["status"]) for r in rows] == [
        ("fp32", 24, "pass"), ("fp16", 24, "pass"), ("bf16", 24, "pass")]
    assert {name.split("<")[0] for _, name, _, _ in fake_cupy.launches} == {"sjconv_neuron", "sjconv_group_neuron"}
