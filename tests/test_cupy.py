"""The fused CuPy backend against the torch backend (GPU tests are marked and skip without CUDA)."""

import pytest
import torch
from spikingjelly.activation_based import functional

import sjconv
from sjconv.neurons import SpikingNode

from reference import calibrate_thresholds

KINDS = [(False, False, "qcfs"), (True, False, "qcfs"), (True, False, "snm"), (False, True, "qcfs"),
         (True, True, "qcfs"), (True, True, "snm")]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def test_cupy_backend_refuses_cpu_tensors():
    from sjconv.neurons.kernels import cupy_backend
    with pytest.raises(ValueError, match="CUDA tensors"):
        cupy_backend.check_input(torch.ones(2, 3))


def _pair(signed, srp, neg_rule, mode="m"):
    nodes = [SpikingNode(0.75, signed=signed, prerun="srp" if srp else None, neg_rule=neg_rule, step_mode=mode, backend=b)
             for b in ("torch", "cupy")]
    return nodes


def _run_both(x, signed, srp, neg_rule, mask=None, mode="m"):
    results = []
    for node in _pair(signed, srp, neg_rule, mode):
        functional.reset_net(node)
        if mask is not None:
            node.mask = mask
        out = node(x) if mode == "m" else torch.stack([node(xt) for xt in x])
        results.append((out, node.v, node.count if signed else None))
    return results


def _assert_same(results):
    (o1, v1, c1), (o2, v2, c2) = results
    assert o1.dtype == o2.dtype and o1.shape == o2.shape
    assert torch.equal(o1, o2), f"{(o1 != o2).sum().item()} outputs differ"
    assert torch.equal(v1, v2)
    if c1 is not None:
        assert torch.equal(c1, c2)


@pytest.mark.gpu
@pytest.mark.parametrize("signed,srp,neg_rule", KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7, 1), (16, 3, 5, 7), (33, 1000003)])
def test_spikes_bit_identical_to_torch(signed, srp, neg_rule, dtype, shape):
    pytest.importorskip("cupy")
    torch.manual_seed(0)
    x = (torch.randn(shape, device="cuda") * 0.8).to(dtype)
    mask = (torch.rand(shape[1:], device="cuda") > 0.3) if srp else None
    _assert_same(_run_both(x, signed, srp, neg_rule, mask))


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["channels_last", "transposed", "sliced"])
def test_non_contiguous_and_channels_last_inputs(layout):
    pytest.importorskip("cupy")
    x = torch.randn(6, 4, 8, 5, 5, device="cuda")
    if layout == "channels_last":
        x = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(6, 4, 8, 5, 5)
        assert x[0].is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    elif layout == "transposed":
        x = x.transpose(-1, -2)
    else:
        x = x[:, :, ::2]
    _assert_same(_run_both(x, True, True, "qcfs", mask=torch.rand(x.shape[1:], device="cuda") > 0.5))


@pytest.mark.gpu
def test_single_step_mode_and_state_continuity():
    pytest.importorskip("cupy")
    x = torch.randn(12, 257, device="cuda")
    _assert_same(_run_both(x, True, False, "qcfs", mode="s"))
    mask = torch.rand(257, device="cuda") > 0.2
    node = SpikingNode(0.75, signed=True, prerun="srp", step_mode="m", backend="cupy")
    functional.reset_net(node)
    node.mask = mask
    parts = torch.cat([node(x[:5]), node(x[5:6]), node(x[6:])])
    whole = _run_both(x, True, True, "qcfs", mask=mask)[0]   # torch backend, one call
    assert torch.equal(parts, whole[0]) and torch.equal(node.v, whole[1]) and torch.equal(node.count, whole[2])


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["qcfs", "neg", "srp", "srp+neg"])
def test_whole_vgg16_backends_identical_at_the_same_mode_and_chunk(method, monkeypatch):
    """At the same step mode and chunk the synaptic layers get the same inputs at the same batch
    size, and the neuron kernels are bit-identical given the same input, so the logits are equal
    bit for bit (with cuDNN's deterministic algorithms, which are chosen by shape alone)."""
    pytest.importorskip("cupy")
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    torch.manual_seed(0)
    images = torch.randn(4, 3, 32, 32, device="cuda")
    ann = calibrate_thresholds(sjconv.models.vgg16().cuda(), images)
    for chunk in (None, 5):
        logits = [sjconv.simulate(sjconv.convert(ann, method, "m", backend=b), images, 16, chunk=chunk)
                  for b in ("torch", "cupy")]
        assert torch.equal(logits[0], logits[1]), f"chunk={chunk}: {(logits[0] != logits[1]).sum().item()} differ"


@pytest.mark.gpu
def test_modes_and_chunks_on_cuda_agree_up_to_synaptic_rounding(monkeypatch):
    """On CUDA 'm' (batch T·N), chunks (chunk·N) and 's' (N) run the synaptic layers at different
    batch sizes, and cuDNN/cuBLAS may round a sample's sums differently, so a spike can flip:
    not bit-identical, and not claimed to be. The bound is derived from that cause
    (``gpu_smoke.flip_bound``): the first neuron layer's flipped neurons are within what moving
    its every input by the measured rounding difference flips; the whole network's rate is
    reported by benchmarks/run_gpu_checks.sh. The backends agree exactly at the same mode."""
    pytest.importorskip("cupy")
    import os

    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                             "benchmarks"))
    from gpu_smoke import flip_network, mode_flips

    ann, images = flip_network(torch.device("cuda"), "vgg16", 8)
    rows = mode_flips(torch.device("cuda"), ann, images, 16, 4, ["torch", "cupy"], "srp+neg")
    modes = rows[:-1]
    assert all(r["status"] == "ok" for r in modes), rows
    assert all(r["within_bound"] for r in modes), rows
    cupy_m = next(r for r in modes if r["backend"] == "cupy" and r["mode"] == "m")
    assert cupy_m["flipped"] == 0 and cupy_m["max_logit_diff"] == 0


@pytest.mark.gpu
def test_grad_inputs_are_refused():
    pytest.importorskip("cupy")
    node = SpikingNode(1.0, backend="cupy", step_mode="m")
    with pytest.raises(RuntimeError, match="inference-only"):
        node(torch.randn(3, 4, device="cuda", requires_grad=True))


def test_external_stream_follows_each_cupy_api():
    from types import SimpleNamespace

    from sjconv.neurons.kernels import cupy_backend

    seen = {}

    class Stream14:  # CuPy 14: Stream.from_external(obj with __cuda_stream__)
        @staticmethod
        def from_external(obj):
            seen["14"] = obj.__cuda_stream__()
            return "stream14"

    cupy14 = SimpleNamespace(cuda=SimpleNamespace(Stream=Stream14))
    assert cupy_backend.external_stream(cupy14, 1234, 0) == "stream14" and seen["14"] == (0, 1234)
    cupy13 = SimpleNamespace(cuda=SimpleNamespace(Stream=type("Stream", (), {}),
                                                  ExternalStream=lambda ptr, dev: ("ext", ptr, dev)))
    assert cupy_backend.external_stream(cupy13, 99, 1) == ("ext", 99, 1)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_self_check_passes_on_this_gpu(dtype):
    pytest.importorskip("cupy")
    from sjconv.neurons.kernels import cupy_backend, kernel_check
    assert kernel_check.mismatches(cupy_backend._fused, torch.device("cuda"), dtype, cupy_backend._flags()) == []


def test_self_check_runs_once_per_device_and_dtype_and_a_failure_is_not_remembered(monkeypatch):
    from types import SimpleNamespace

    from sjconv.errors import BackendUnavailableError
    from sjconv.neurons.kernels import cupy_backend, kernel_check

    calls = []

    def fake_verify(run, device, dtype, variants, where):
        calls.append((device, dtype, where))
        if dtype is torch.float16:
            raise BackendUnavailableError("failed its self-check")

    monkeypatch.setattr(kernel_check, "_VERIFIED", set())
    monkeypatch.setattr(cupy_backend, "require_cupy", lambda: SimpleNamespace(__version__="14.2"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Fake GPU")
    monkeypatch.setattr(kernel_check, "verify", fake_verify)
    dev0, dev1 = torch.device("cuda", 0), torch.device("cuda", 1)
    for _ in range(3):
        cupy_backend._ensure_verified(dev0, torch.float32)
    cupy_backend._ensure_verified(dev1, torch.float32)
    for _ in range(2):
        with pytest.raises(BackendUnavailableError):
            cupy_backend._ensure_verified(dev0, torch.float16)
    assert [(c[0], c[1]) for c in calls] == [(dev0, torch.float32), (dev1, torch.float32),
                                             (dev0, torch.float16), (dev0, torch.float16)]
    assert "Fake GPU" in calls[0][2] and "CuPy 14.2" in calls[0][2]


@pytest.mark.gpu
@pytest.mark.parametrize("signed,neg_rule", [(False, "qcfs"), (True, "qcfs"), (True, "snm")])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("levels", [1, 4, 8])
@pytest.mark.parametrize("mode", ["m", "s"])
def test_group_neurons_bit_identical_to_torch(signed, neg_rule, dtype, levels, mode):
    """gn / gn+neg (docs/methods.md#group-neuron) on the fused kernel, in both step modes and split calls."""
    pytest.importorskip("cupy")
    torch.manual_seed(0)
    x = (torch.randn(12, 3, 37, 41, device="cuda") * 0.8).to(dtype)
    results = []
    for backend in ("torch", "cupy"):
        node = SpikingNode(0.75, signed=signed, levels=levels, neg_rule=neg_rule, step_mode=mode, backend=backend)
        out = torch.cat([node(x[:5]), node(x[5:])]) if mode == "m" else torch.stack([node(xt) for xt in x])
        results.append((out, node.v, node.count if signed else None))
    _assert_same(results)
    assert (results[0][0].abs() > 0.75 / levels * 1.5).any() or levels == 1


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["gn", "gn+neg"])
@pytest.mark.parametrize("chunk", [None, 4])
def test_converted_group_network_on_cupy_equals_torch(method, chunk, monkeypatch):
    """Bit-identity holds at the same mode and chunk (the synaptic layers then run at the same
    batch sizes) with deterministic cuDNN (docs/protocols.md#bit-identity): the same chunk on both sides."""
    pytest.importorskip("cupy")
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    torch.manual_seed(1)
    images = torch.randn(4, 3, 32, 32)
    ann = calibrate_thresholds(sjconv.models.resnet20(num_classes=10, L=4), images).cuda()
    want = sjconv.simulate(sjconv.convert(ann, method, backend="torch"), images.cuda(), 6, chunk=chunk)
    got = sjconv.simulate(sjconv.convert(ann, method, backend="cupy"), images.cuda(), 6, chunk=chunk)
    assert torch.equal(got, want)
