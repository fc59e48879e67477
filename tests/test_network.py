"""Converted networks against the official QCFS SNN loop; step modes, chunking and methods agree."""

import copy
import sys
import types

import pytest
import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, layer

import sjconv
from sjconv.convert import step_mode_of
from sjconv.errors import BackendUnavailableError, ConversionError
from sjconv.neurons import SpikingNode
from sjconv.qcfs import QCFS

from reference import calibrate_thresholds, reference_network_logits

METHODS = ["qcfs", "neg", "srp", "srp+neg"]


def _nodes(snn):
    return [(n, m) for n, m in snn.net.named_modules() if isinstance(m, SpikingNode)]


@pytest.mark.parametrize("fixture", ["vgg16", "resnet20"])
@pytest.mark.parametrize("mode", ["m", "s"])
def test_converted_network_matches_official_reference_loop(fixture, mode, request):
    ann, images = request.getfixturevalue(fixture)
    T = 6
    snn = sjconv.convert(ann, method="qcfs", step_mode=mode)
    ours = sjconv.simulate(snn, images, T)
    ref = reference_network_logits(ann, images, T)
    assert ours.shape == (T, images.shape[0], 10)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert ours.abs().sum() > 0


def test_network_has_spikes_in_every_layer(vgg16):
    ann, images = vgg16
    snn = sjconv.convert(ann, "qcfs", "m")
    from spikingjelly.activation_based import monitor
    mon = monitor.OutputMonitor(snn.net, SpikingNode)
    sjconv.simulate(snn, images, 8)
    assert len(mon.records) == 15 and all((r != 0).any() for r in mon.records)
    mon.remove_hooks()


@pytest.mark.parametrize("method", METHODS)
def test_step_modes_and_chunks_agree_exactly(resnet20, method):
    ann, images = resnet20
    T = 7
    runs = {}
    for mode, chunk in [("m", None), ("s", None), ("m", 3), ("m", 1), ("m", 5)]:
        snn = sjconv.convert(ann, method=method, step_mode=mode, tau=2 if "srp" in method else None)
        from spikingjelly.activation_based import monitor
        mon = monitor.OutputMonitor(snn.net, SpikingNode)
        logits = sjconv.simulate(snn, images, T, chunk=chunk)
        n_nodes = len(_nodes(snn))
        calls = len(mon.records) // n_nodes
        seqs = [torch.cat([mon.records[c * n_nodes + i] if mode == "m" else mon.records[c * n_nodes + i][None]
                           for c in range(calls)]) for i in range(n_nodes)]
        mon.remove_hooks()
        runs[(mode, chunk)] = (logits, seqs)
    base_logits, base_seqs = runs[("m", None)]
    for key, (logits, seqs) in runs.items():
        torch.testing.assert_close(logits, base_logits, rtol=1e-5, atol=1e-5, msg=f"{method} {key}")
        for a, b in zip(seqs, base_seqs):
            assert torch.equal(a, b), f"spikes differ for {method} {key}"


def test_srp_with_tau_zero_equals_plain_qcfs(resnet20):
    ann, images = resnet20
    plain = sjconv.simulate(sjconv.convert(ann, "qcfs"), images, 5)
    srp0 = sjconv.simulate(sjconv.convert(ann, "srp", tau=0), images, 5)
    assert torch.equal(plain, srp0)


def test_srp_prerun_changes_output_and_masks_per_sample(resnet20):
    ann, images = resnet20
    snn = sjconv.convert(ann, "srp", tau=4)
    out = sjconv.simulate(snn, images, 5)
    assert not torch.equal(out, sjconv.simulate(sjconv.convert(ann, "qcfs"), images, 5))
    masks = [n.mask for _, n in _nodes(snn)]
    assert all(m is not None and m.shape[0] == images.shape[0] for m in masks)
    assert any(not torch.equal(m[0], m[1]) for m in masks)
    assert any((~m).any() for m in masks)


def test_neg_equals_qcfs_at_t1(resnet20):
    ann, images = resnet20
    a = sjconv.simulate(sjconv.convert(ann, "qcfs"), images, 1)
    b = sjconv.simulate(sjconv.convert(ann, "neg"), images, 1)
    assert torch.equal(a, b)


def test_snn_mean_logits_approach_ann_as_T_grows():
    torch.manual_seed(3)
    images = torch.randn(8, 3, 32, 32)
    ann = calibrate_thresholds(sjconv.models.resnet20(num_classes=10), images).eval()
    with torch.no_grad():
        target = ann(images)
    logits = sjconv.simulate(sjconv.convert(ann, "qcfs"), images, 256)
    mean = logits.cumsum(0) / torch.arange(1, 257).view(-1, 1, 1)
    err = {t: float((mean[t - 1] - target).norm() / target.norm()) for t in (1, 4, 16, 64, 256)}
    print("relative error of mean SNN logits vs ANN:", err)
    assert err[256] < err[16] < err[1]
    assert err[256] < 0.5 * err[4]


def test_ann_is_unchanged_and_weights_copied(vgg16):
    ann, images = vgg16
    before = copy.deepcopy(ann.state_dict())
    snn = sjconv.convert(ann, "neg")
    assert all(torch.equal(before[k], v) for k, v in ann.state_dict().items())
    assert isinstance(snn.net.layer1[0], layer.Conv2d) and isinstance(snn.net.layer1[2], sjconv.SignedIFNode)
    for method, cls in [("qcfs", sjconv.ConvertedIFNode), ("srp", sjconv.SRPIFNode),
                        ("srp+neg", sjconv.SRPSignedIFNode)]:
        assert type(sjconv.convert(ann, method).net.classifier[2]) is cls
    assert snn.net.layer1[2].v_threshold == float(ann.layer1[2].thresh.detach())
    assert not snn.training


def test_user_model_converts_by_walking_the_tree():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), QCFS(4, 1.0))
            self.act = QCFS(4, 1.0)

        def forward(self, x):
            return self.act(self.body(x) + x)

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), QCFS(4, 1.0), Block(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Dropout(0.1), nn.Linear(4, 5)).eval()
    x = torch.randn(2, 3, 8, 8)
    snn_m = sjconv.convert(model, "qcfs", "m")
    snn_s = sjconv.convert(model, "qcfs", "s")
    assert isinstance(snn_m.net[2], Block)
    torch.testing.assert_close(sjconv.simulate(snn_m, x, 4), reference_network_logits(model, x, 4))
    torch.testing.assert_close(sjconv.simulate(snn_s, x, 4), sjconv.simulate(snn_m, x, 4))


def test_unsupported_module_is_named():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU()), nn.Flatten())
    with pytest.raises(ConversionError, match=r"'1\.0' of type ReLU.*QCFS"):
        sjconv.convert(model)
    with pytest.raises(ConversionError, match="MaxPool2d.*AvgPool2d"):
        sjconv.convert(nn.Sequential(nn.MaxPool2d(2)))


def test_convert_argument_errors():
    model = nn.Sequential(nn.Linear(2, 2), QCFS())
    with pytest.raises(ValueError, match="method"):
        sjconv.convert(model, method="foo")
    with pytest.raises(ValueError, match="step_mode"):
        sjconv.convert(model, step_mode="x")
    with pytest.raises(ValueError, match="tau"):
        sjconv.convert(model, method="qcfs", tau=3)
    if _cupy_usable():   # pip install ".[cupy13]" on a machine with a GPU
        snn = sjconv.convert(model, backend="cupy")
        assert all(n.backend == "cupy" for n in snn.modules() if isinstance(n, SpikingNode))
    else:                # no CuPy, or CuPy without a visible GPU: refused when the network is built
        with pytest.raises(BackendUnavailableError, match="cupy"):
            sjconv.convert(model, backend="cupy")


def _cupy_usable() -> bool:
    """What building a 'cupy' network needs (the backend's ``check``): CuPy importable and a GPU."""
    import importlib.util

    return importlib.util.find_spec("cupy") is not None and torch.cuda.is_available()


def test_cupy_backend_without_cupy_fails_when_built(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)   # 'import cupy' raises ImportError
    with pytest.raises(BackendUnavailableError, match=r"needs CuPy.*backend='torch'"):
        sjconv.convert(nn.Sequential(nn.Linear(2, 2), QCFS()), backend="cupy")


def test_cupy_backend_with_cupy_but_no_gpu_fails_when_built(monkeypatch):
    """CuPy installed (a stand-in module here) on a machine without a GPU: refused when the network
    is built, with the fix; a CPU input to a 'cupy' node is refused at its first run."""
    from sjconv.neurons.kernels import cupy_backend

    cupy = types.ModuleType("cupy")   # with a loadable NVRTC, which the build-time check asks for
    cupy.__version__ = "14.2.0"
    cupy.cuda = types.SimpleNamespace(nvrtc=types.SimpleNamespace(getVersion=lambda: (13, 0)))
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setattr(cupy_backend, "_ENVIRONMENT_OK", [])   # a success is remembered per process
    monkeypatch.setattr(cupy_backend, "cupy_cuda_major", lambda cupy: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match=r"needs a CUDA GPU.*backend='torch'"):
        sjconv.convert(nn.Sequential(nn.Linear(2, 2), QCFS()), backend="cupy")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    snn = sjconv.convert(nn.Sequential(nn.Linear(2, 2), QCFS()), step_mode="m", backend="cupy")
    with pytest.raises(ValueError, match="CUDA tensors.*backend='torch'"):
        sjconv.simulate(snn, torch.rand(3, 2), 2)


def test_reset_net_and_set_step_mode_on_converted_network(resnet20):
    ann, images = resnet20
    snn = sjconv.convert(ann, "neg", "s")
    expected = sjconv.simulate(snn, images, 3)
    functional.set_step_mode(snn, "m")
    assert step_mode_of(snn) == "m"
    assert torch.allclose(sjconv.simulate(snn, images, 3), expected, atol=1e-5)


def test_evaluate_reports_every_T_from_one_pass(resnet20):
    ann, images = resnet20
    labels = torch.tensor([0, 1, 2])
    loader = [(images, labels)]
    snn = sjconv.convert(ann, "qcfs")
    acc = sjconv.evaluate(snn, loader, T=[1, 2, 4], progress=False)
    logits = sjconv.simulate(snn, images, 4)
    for t in (1, 2, 4):
        pred = logits[:t].mean(0).argmax(-1)
        assert acc[t] == pytest.approx(100.0 * float((pred == labels).float().mean()))
    assert sjconv.evaluate_ann(ann, loader, progress=False) == pytest.approx(
        100.0 * float((ann(images).argmax(-1) == labels).float().mean()))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("method", ["qcfs", "srp+neg"])
def test_nan_or_inf_images_are_refused(resnet20, bad, method):
    """A NaN potential never crosses θ, so undefined inputs would silently give finite logits;
    simulate, evaluate (and count_correct, on a later batch too) refuse them instead."""
    from sjconv.errors import ConfigError

    ann, images = resnet20
    snn = sjconv.convert(ann, method)
    poisoned = images.clone()
    poisoned[1, 0, 5, 7] = bad
    with pytest.raises(ConfigError, match="images contain NaN or inf"):
        sjconv.simulate(snn, poisoned, T=2)
    labels = torch.tensor([0, 1, 2])
    loader = [(images, labels), (poisoned, labels)]
    with pytest.raises(ConfigError, match="images contain NaN or inf"):
        sjconv.evaluate(snn, loader, T=[1, 2], progress=False)
    assert set(sjconv.evaluate(snn, loader[:1], T=[1, 2], progress=False)) == {1, 2}   # clean data still runs


# ------------------------------------------------------------------------------- float64
@pytest.fixture(scope="module")
def ann64():
    """A float64 QCFS CNN whose thresholds float32 cannot hold, and float64 images."""
    torch.manual_seed(6)
    images = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    ann = calibrate_thresholds(sjconv.models.small_cnn(num_classes=10, in_channels=3, image_size=8).double(),
                               images)
    thresholds = [m.thresh for m in ann.modules() if isinstance(m, QCFS)]
    assert all(float(t.detach().float()) != float(t.detach()) for t in thresholds)
    return ann, images


@pytest.mark.parametrize("mode", ["m", "s"])
def test_float64_network_keeps_its_thresholds_and_matches_the_float64_reference(ann64, mode):
    ann, images = ann64
    snn = sjconv.convert(ann, method="qcfs", step_mode=mode)
    nodes = [m for _, m in _nodes(snn)]
    qcfs = [m for m in ann.modules() if isinstance(m, QCFS)]
    assert all(n.theta.dtype == torch.float64 and torch.equal(n.theta, q.thresh.detach().reshape(1))
               for n, q in zip(nodes, qcfs, strict=True))
    ours = sjconv.simulate(snn, images, 6)
    assert ours.dtype == torch.float64 and all(n.v.dtype == torch.float64 for n in nodes)
    # θ rounded to float32, or a float32 state, moves the logits by ~1e-8 relative
    torch.testing.assert_close(ours, reference_network_logits(ann, images, 6), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["qcfs", "neg", "srp", "srp+neg", "cos", "cos+neg"])
def test_float64_step_modes_give_the_same_spikes(ann64, method):
    ann, images = ann64
    runs = {}
    for mode in ("m", "s"):
        snn = sjconv.convert(ann, method=method, step_mode=mode, tau=2 if sjconv.METHODS[method].prerun else None)
        outputs = {}

        def record(module, inputs, output):   # a COS pre-run is one multi-step call in either mode
            outputs.setdefault(module, []).append(output if module.step_mode == "m" else output[None])

        handles = [m.register_forward_hook(record) for _, m in _nodes(snn)]
        logits = sjconv.simulate(snn, images, 5)
        for h in handles:
            h.remove()
        runs[mode] = (logits, [torch.cat(outputs[m])[-5:] for _, m in _nodes(snn)], [m.v for _, m in _nodes(snn)])
    torch.testing.assert_close(runs["s"][0], runs["m"][0], rtol=1e-12, atol=1e-12)
    for a, b in zip(runs["s"][1], runs["m"][1], strict=True):
        assert a.dtype == torch.float64 and torch.equal(a, b), method
    # the first layer's membrane potentials too (a state rounded to float32 between steps shows
    # there first; later layers' inputs may differ in the last bit between a batch of N and of
    # T·N, as matrix products round by batch size, so only their spikes are compared)
    assert all(v.dtype == torch.float64 for v in runs["s"][2] + runs["m"][2])
    assert torch.equal(runs["s"][2][0], runs["m"][2][0]), method


def test_converted_snn_reads_its_backend_from_the_nodes():
    """``snn.backend`` is what the nodes run, never a second copy that can drift from them."""
    ann = nn.Sequential(nn.Conv2d(1, 2, 3), QCFS(L=4, thresh=1.0), nn.Flatten(), nn.Linear(8, 2), QCFS(L=4, thresh=1.0))
    snn = sjconv.convert(ann, method="qcfs")
    assert snn.backend == "torch" and "backend=torch" in repr(snn)
    sjconv.neurons.spiking_nodes(snn)[0].__dict__["_backend"] = "cupy"   # switched by hand, on a machine with CuPy
    assert snn.backend == "mixed"
    assert sjconv.neurons.ConvertedSNN(nn.Sequential(nn.ReLU())).backend == "none"
