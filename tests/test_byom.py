"""Models researchers bring: any forward code in multi-step mode (the folded layout), the reference
repositories' own QCFS activation classes, and a clear refusal for what cannot convert."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import functional, monitor

import sjconv
from sjconv.errors import ConfigError, ConversionError
from sjconv.neurons import SpikingNode
from sjconv.neurons.nodes import ConvertedIFNode
from sjconv.qcfs import QCFS

import byom_models as bm
from reference import reference_cos_network_logits, reference_network_logits

T = 5
STYLES = {"qcfs_v2": bm.ResNetV2, "qcfs_v1": bm.FlattenCNN, "srp_cos": bm.VGG, "gn": bm.CatNet}


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), QCFS(4, 1.0),
                                  nn.Conv2d(4, 4, 3, padding=1))
        self.act = QCFS(4, 1.0)

    def forward(self, x):
        return self.act(self.body(x) + x)


@pytest.fixture(scope="module")
def residual():
    """A small residual QCFS net that both layouts can run (modules and a residual add only)."""
    from reference import calibrate_thresholds
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), QCFS(4, 1.0), _Block(), nn.AvgPool2d(2), _Block(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)).eval()
    images = torch.randn(3, 3, 8, 8)
    return calibrate_thresholds(model, images), images


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(3)
    images = torch.randn(4, 3, 8, 8)
    return {name: bm.calibrate(cls().eval(), images) for name, cls in STYLES.items()}, images


def _spikes(snn, images, steps, **kwargs):
    """Logits and every node's outputs, flattened in time order (one multi-step call [T, N, ...] or
    folded [T·N, ...], or one call per step [N, ...]: the same memory order)."""
    mon = monitor.OutputMonitor(snn.net, SpikingNode)
    logits = sjconv.simulate(snn, images, steps, **kwargs)
    nodes = len(sjconv.neurons.spiking_nodes(snn.net))
    calls = len(mon.records) // nodes
    seqs = [torch.cat([mon.records[c * nodes + i].reshape(-1) for c in range(calls)]) for i in range(nodes)]
    mon.remove_hooks()
    return logits, seqs


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("style", list(STYLES))
def test_reference_styles_convert_and_run_in_both_step_modes(models, style, batch):
    nets, images = models
    ann, x = nets[style], images[:batch]
    snn_m, snn_s = sjconv.convert(ann, "qcfs", "m"), sjconv.convert(ann, "qcfs", "s")
    assert snn_m.layout == "folded" and snn_s.layout == "folded"
    assert len(sjconv.neurons.spiking_nodes(snn_m)) == sum(bm.thresh_of(m) is not None for m in ann.modules())
    logits_m, spikes_m = _spikes(snn_m, x, T)
    logits_s, spikes_s = _spikes(snn_s, x, T)
    assert logits_m.shape == (T, batch, 10) and logits_s.shape == (T, batch, 10)
    for a, b in zip(spikes_m, spikes_s):
        assert torch.equal(a, b)
    assert any((s != 0).any() for s in spikes_m)
    # logits agree to the rounding of the layers at batch N vs T·N (CPU kernels depend on the batch size)
    torch.testing.assert_close(logits_m, logits_s, rtol=1e-5, atol=1e-6)
    assert torch.equal(logits_m, reference_network_logits(ann, x, T, thresh_of=bm.thresh_of))
    logits_c, spikes_c = _spikes(snn_m, x, T, chunk=2)
    assert all(torch.equal(a, b) for a, b in zip(spikes_c, spikes_m))
    torch.testing.assert_close(logits_c, logits_m, rtol=1e-5, atol=1e-6)


def test_cos_style_model_matches_the_reference_cos_loop(models):
    nets, images = models
    ann = nets["srp_cos"]
    for signed, method in ((False, "cos"), (True, "cos+neg")):
        snn = sjconv.convert(ann, method, "m", tau=3)
        out = sjconv.simulate(snn, images, T)
        ref = reference_cos_network_logits(ann, images, T, 3, signed, thresh_of=bm.thresh_of)
        assert torch.equal(out, ref), method
        assert torch.equal(sjconv.simulate(sjconv.convert(ann, method, "s", tau=3), images, T).argmax(-1),
                           out.argmax(-1))


@pytest.mark.parametrize("method", sjconv.METHODS)
def test_folded_layout_equals_the_layers_layout_for_every_method(residual, method):
    ann, images = residual
    tau = 2 if method in ("srp", "srp+neg", "cos", "cos+neg") else None
    layers = sjconv.convert(ann, method, "m", tau=tau)
    folded = sjconv.convert(ann, method, "m", tau=tau, layout="folded")
    assert (layers.layout, folded.layout) == ("layers", "folded")
    assert "layout=folded" in repr(folded)
    want, want_spikes = _spikes(layers, images, 4)
    got, got_spikes = _spikes(folded, images, 4)
    assert torch.equal(got, want)  # the same layers on the same [T·N, ...] batches
    assert all(torch.equal(a, b) for a, b in zip(got_spikes, want_spikes))
    for mode, chunk in (("m", 3), ("s", None)):
        snn = sjconv.convert(ann, method, mode, tau=tau, layout="folded")
        logits, spikes = _spikes(snn, images, 4, chunk=chunk)
        assert all(torch.equal(a, b) for a, b in zip(spikes, want_spikes)), (mode, chunk)
        torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-6)


def test_folded_layout_in_evaluate_memory_budget_and_own_loops(models):
    nets, images = models
    snn = sjconv.convert(nets["qcfs_v2"], "srp", "m", tau=2)
    labels = torch.arange(4) % 10
    loader = [(images[:2], labels[:2]), (images[2:], labels[2:])]
    info = {}
    budget = sjconv.evaluate(snn, loader, T=[1, 3], progress=False, memory_budget="1MB", info=info)
    assert info["chunk_used"] >= 1
    assert budget == sjconv.evaluate(snn, loader, T=[1, 3], progress=False)
    # the README's own loop: [tau, N, ...] then [T, N, ...] calls of the network
    net = snn.net
    functional.reset_net(net)
    sjconv.protocol.begin_prerun(net)
    net(images.unsqueeze(0).expand(2, *images.shape))
    sjconv.protocol.end_prerun(net)
    out = net(images.unsqueeze(0).expand(3, *images.shape))
    assert out.shape == (3, 4, 10) and torch.equal(out, sjconv.simulate(snn, images, 3))
    # a deep copy (and a pickled copy) carries its own fold hooks and state
    import copy
    import io
    twin = copy.deepcopy(snn)
    buffer = io.BytesIO()
    torch.save(snn, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert twin.layout == loaded.layout == "folded"
    assert torch.equal(sjconv.simulate(twin, images, 3), out) and torch.equal(sjconv.simulate(loaded, images, 3), out)
    # switching the step mode afterwards works in the folded layout too
    functional.set_step_mode(net, "s")
    torch.testing.assert_close(sjconv.simulate(snn, images, 3), out, rtol=1e-5, atol=1e-6)


def test_analysis_of_a_folded_network_matches_the_layers_layout(residual):
    ann, images = residual
    a = sjconv.analysis.analyze(ann, sjconv.convert(ann, "qcfs", "m"), images, 3)
    b = sjconv.analysis.analyze(ann, sjconv.convert(ann, "qcfs", "m", layout="folded"), images, 3)
    assert [(l["name"], l["rate"], l["cases"]) for l in a["layers"]] == \
        [(l["name"], l["rate"], l["cases"]) for l in b["layers"]]


def test_analysis_reads_reference_activation_classes(models):
    nets, images = models
    out = sjconv.analysis.analyze(nets["srp_cos"], sjconv.convert(nets["srp_cos"], "qcfs"), images[:2], 3)
    assert len(out["layers"]) == 3


def test_finetune_runs_on_a_folded_network(models):
    nets, images = models
    snn = sjconv.convert(nets["qcfs_v1"], "qcfs", backend="torch")
    history = sjconv.finetune(snn, [(images, torch.arange(4))], T=2, epochs=1, lr=1e-3, progress=False)
    assert history[0]["loss"] > 0 and snn.layout == "folded"


def test_own_models_keep_the_layers_layout():
    for ann in (sjconv.models.resnet20(num_classes=10), sjconv.models.vgg16(num_classes=10)):
        snn = sjconv.convert(ann)
        assert snn.layout == "layers"
        assert not any(type(m) in (nn.Conv2d, nn.Linear) for m in snn.net.modules())


# ----------------------------------------------------------------------------- layouts
class _ViewNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.act, self.fc = nn.Conv2d(3, 2, 3), QCFS(4, 1.0), nn.Linear(2 * 6 * 6, 10)

    def forward(self, x):
        x = self.act(self.conv(x))
        return self.fc(x.view(x.size(0), -1))  # the line named by the layers refusal


def test_layers_layout_is_refused_naming_the_line():
    with pytest.raises(ConfigError, match=r"layout='layers'.*test_byom\.py:\d+ in _ViewNet\.forward: `return self\.fc"):
        sjconv.convert(_ViewNet(), layout="layers")
    with pytest.raises(ConfigError, match="layout must be"):
        sjconv.convert(_ViewNet(), layout="time")


def test_batch_one_gives_a_batch_dimension():
    torch.manual_seed(0)
    model = _ViewNet().eval()
    x = torch.randn(1, 3, 8, 8)
    snn = sjconv.convert(model, "qcfs", "m")
    out = sjconv.simulate(snn, x, 4)
    assert out.shape == (4, 1, 10)
    torch.testing.assert_close(out, sjconv.simulate(sjconv.convert(model, "qcfs", "s"), x, 4), rtol=1e-5, atol=1e-6)


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.act, self.fc = nn.Conv2d(3, 2, 3), QCFS(4, 1.0), nn.Linear(2 * 6 * 6, 10)

    def forward(self, x):
        if x.sum() > -1e9:  # control flow on a tensor value: torch.fx cannot trace it
            x = self.conv(x)
        return self.fc(torch.flatten(self.act(x), 1))


class _UntraceableRelu(_Untraceable):
    def forward(self, x):
        if x.sum() > -1e9:
            x = F.relu(self.conv(x))
        return self.fc(torch.flatten(self.act(x), 1))


def test_untraceable_model_runs_folded_and_its_source_is_checked():
    torch.manual_seed(0)
    model = _Untraceable().eval()
    snn = sjconv.convert(model)
    assert snn.layout == "folded"
    x = torch.randn(3, 3, 8, 8)
    assert torch.equal(sjconv.simulate(snn, x, 3), reference_network_logits(model, x, 3))
    with pytest.raises(ConversionError, match=r"test_byom\.py:\d+ in _UntraceableRelu\.forward: `x = F\.relu.*relu\(\)"):
        sjconv.convert(_UntraceableRelu())


# ----------------------------------------------------------------------------- refusals
class _FunctionalRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 2, 3), nn.Linear(2, 2)

    def forward(self, x):
        x = F.relu(self.conv(x))
        return self.fc(x.mean((2, 3)))


class _FunctionalMaxPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.act = nn.Conv2d(3, 2, 3), QCFS(4, 1.0)

    def forward(self, x):
        return F.max_pool2d(self.act(self.conv(x)), 2)


def test_functional_activation_and_max_pool_are_refused_naming_the_line():
    with pytest.raises(ConversionError, match=r"test_byom\.py:\d+ in _FunctionalRelu\.forward: `x = F\.relu.*relu\(\).*QCFS module"):
        sjconv.convert(_FunctionalRelu())
    with pytest.raises(ConversionError, match=r"test_byom\.py:\d+ in _FunctionalMaxPool\.forward: .*max_pool2d\(\).*avg"):
        sjconv.convert(_FunctionalMaxPool())


def test_modules_that_cannot_convert_are_named():
    with pytest.raises(ConversionError, match=r"'2' of type MaxPool2d.*AvgPool2d"):
        sjconv.convert(nn.Sequential(nn.Conv2d(3, 2, 3), QCFS(), nn.MaxPool2d(2)))
    with pytest.raises(ConversionError, match=r"'2\.1' of type ReLU.*QCFS"):
        sjconv.convert(nn.Sequential(nn.Conv2d(3, 2, 3), QCFS(), nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU())))
    with pytest.raises(ConversionError, match=r"'1' of type BatchNorm2d.*running statistics"):
        sjconv.convert(nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2, track_running_stats=False), QCFS()))


class _TCL(nn.Module):
    """A trainable clip (threshold ``up``, no quantization levels)."""

    def __init__(self):
        super().__init__()
        self.up = nn.Parameter(torch.tensor([4.0]))

    def forward(self, x):
        return self.up - F.relu(self.up - F.relu(x))


class _FloorOnly(bm.MyFloor):
    """A clip-floor without the shift of 1/2."""

    def forward(self, x):
        return torch.clamp(torch.floor(x / self.up * self.t) / self.t, 0, 1) * self.up


@pytest.mark.parametrize("activation, match", [
    (_FloorOnly(up=2.0, t=4), r"'1' \(_FloorOnly\) holds up=2 and t=4 but does not compute the QCFS"),
    (bm.GNQCFS(T=4, p0=0.3), r"'1' \(GNQCFS\) holds v_threshold=4 and T=4 but does not compute"),
    (bm.IF(T=4, L=8, thresh=1.0), r"'1' \(IF\) holds thresh=1 and L=8 but fails on a plain input.*T=0"),
    (_TCL(), r"'1' of type _TCL: it holds a threshold 'up' but no level count"),
])
def test_activations_that_are_not_qcfs_are_refused(activation, match):
    with pytest.raises(ConversionError, match=match):
        sjconv.convert(nn.Sequential(nn.Linear(3, 3), activation, nn.Linear(3, 2)))


def test_per_channel_thresholds_are_refused():
    act = QCFS(4, 1.0)
    act.thresh = nn.Parameter(torch.linspace(1.0, 2.0, 3))
    with pytest.raises(ConversionError, match=r"'1' \(QCFS\) holds 3 thresholds.*one θ"):
        sjconv.convert(nn.Sequential(nn.Linear(3, 3), act))
    with pytest.raises(ConfigError, match="one value.*per-channel"):
        ConvertedIFNode(torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize("style", list(STYLES))
def test_finetuned_thresholds_map_back_onto_each_styles_own_names(models, style):
    """``ann_state_dict`` writes a node's θ back under the activation's own name (thresh, up,
    v_threshold) and shape (GN's 0-dim θ stays 0-dim), so the reference model loads it as is."""
    import copy

    from sjconv.finetune import ann_state_dict

    nets, images = models
    ann = nets[style]
    snn = sjconv.convert(ann, method="qcfs")
    for i, node in enumerate(sjconv.neurons.spiking_nodes(snn.net)):
        node.theta.mul_(1.0 + 0.01 * (i + 1))        # as if fine-tuning had moved every θ
    state = ann_state_dict(snn, ann)
    assert set(state) == set(ann.state_dict())
    tuned = copy.deepcopy(ann)
    tuned.load_state_dict(state)
    moved = [(name, m) for name, m in tuned.named_modules() if isinstance(m, tuple(bm.THRESHOLD_OF))]
    assert moved
    for i, (name, module) in enumerate(moved):
        theta = getattr(module, bm.THRESHOLD_OF[type(module)])
        original = getattr(dict(ann.named_modules())[name], bm.THRESHOLD_OF[type(module)])
        assert theta.shape == original.shape
    again = sjconv.convert(tuned, method="qcfs")
    assert torch.equal(sjconv.simulate(again, images, T=3), sjconv.simulate(snn, images, T=3))


# ----------------------------------------------------------------------------- found in the same trial (issue #27)
class _Shifted(bm.MyFloor):
    """MyFloor with the shift 1/2 + ``delta`` (a rounding point moved by ``delta`` of a level)."""

    def __init__(self, delta, **kwargs):
        super().__init__(**kwargs)
        self.delta = delta

    def forward(self, x):
        return torch.clamp(torch.floor(x / self.up * self.t + 0.5 + self.delta) / self.t, 0, 1) * self.up


@pytest.mark.parametrize("delta", [1 / 200, -1 / 200, 1e-4, -1e-4, 1e-7, -1e-7])
def test_a_shift_off_by_a_little_is_refused_on_either_side_of_the_rounding_points(delta):
    with pytest.raises(ConversionError, match=r"does not compute the QCFS clip-floor-shift"):
        sjconv.convert(nn.Sequential(nn.Linear(3, 3), _Shifted(delta, up=2.0, t=4), nn.Linear(3, 2)))
    sjconv.convert(nn.Sequential(nn.Linear(3, 3), _Shifted(0.0, up=2.0, t=4), nn.Linear(3, 2)))


class _Extra(bm.QCFS):
    def __init__(self):
        super().__init__(up=2.0, t=4)
        self.register_buffer("scale", torch.ones(1))


def test_activation_modules_that_hold_the_wrong_things_are_named_for_it():
    with pytest.raises(ConversionError, match=r"'1' of type QCFS: its level count t=4\.0 is a float, not a whole "
                       r"number >= 1 \(an int\)"):
        sjconv.convert(nn.Sequential(nn.Linear(3, 3), bm.QCFS(up=2.0, t=4.0), nn.Linear(3, 2)))
    with pytest.raises(ConversionError, match=r"'1' of type _Extra: it holds a threshold 'up' and other tensors as "
                       r"well \(scale\)"):
        sjconv.convert(nn.Sequential(nn.Linear(3, 3), _Extra(), nn.Linear(3, 2)))


def test_a_model_on_the_meta_device_is_refused():
    with torch.device("meta"):
        ann = nn.Sequential(nn.Linear(3, 3), QCFS(4, 1.0), nn.Linear(3, 2))
    with pytest.raises(ConfigError, match=r"'meta' device, which have no values \(0\.weight and \d+ more\).*to_empty"):
        sjconv.convert(ann)


def test_counts_are_whole_numbers_everywhere():
    ann = nn.Sequential(nn.Linear(3, 3), QCFS(4, 1.0), nn.Linear(3, 2))
    for kwargs, name in (({"method": "srp", "tau": 2.0}, "tau"), ({"method": "gn", "levels": 2.0}, "levels")):
        with pytest.raises(ConfigError, match=name + r" .*must be a whole number.*got 2\.0"):
            sjconv.convert(ann, **kwargs)
    snn = sjconv.convert(ann)
    with pytest.raises(ConfigError, match=r"T must be a whole number.*got 1\.0"):
        sjconv.simulate(snn, torch.randn(2, 3), 1.0)


def test_chunking_a_single_step_network_is_refused():
    ann = nn.Sequential(nn.Linear(3, 3), QCFS(4, 1.0), nn.Linear(3, 2))
    snn = sjconv.convert(ann, "qcfs", "s")
    loader = [(torch.randn(2, 3), torch.tensor([0, 1]))]
    for kwargs in ({"chunk": 2}, {"memory_budget": "1GB"}):
        name = next(iter(kwargs))
        with pytest.raises(ConfigError, match=name + r" sets how many time steps one multi-step call runs.*'s'"):
            sjconv.simulate(snn, torch.randn(2, 3), 4, **kwargs)
        with pytest.raises(ConfigError, match=name + " sets"):
            sjconv.evaluate(snn, loader, T=[2], progress=False, **kwargs)


def test_an_unusable_backend_is_refused_when_assigned():
    snn = sjconv.convert(nn.Sequential(nn.Linear(3, 3), QCFS(4, 1.0), nn.Linear(3, 2)))
    node = sjconv.neurons.spiking_nodes(snn)[0]
    with pytest.raises(ConfigError, match="unknown backend 'triton'"):
        node.backend = "triton"
    assert node.backend == "torch" and snn.backend == "torch"


def test_images_labels_and_loaders_are_checked(models):
    nets, images = models
    ann = nets["qcfs_v1"]
    snn = sjconv.convert(ann)
    with pytest.raises(ConfigError, match=r"images of shape \(4, 8, 8, 3\) have 8 channels in dim 1, but the network's "
                       r"first convolution takes 3: pass \[N, C, H, W\] \(channels last\? pass images\.permute\(0, 3, 1, 2\)\)"):
        sjconv.simulate(snn, images.permute(0, 2, 3, 1), 2)
    bad = [(images, torch.tensor([0, 1, 2, 10]))]
    for run in (lambda loader: sjconv.evaluate(snn, loader, T=[2], progress=False),
                lambda loader: sjconv.evaluate_ann(ann, loader, progress=False)):
        with pytest.raises(ConfigError, match=r"labels must be class indices in 0\.\.9 \(the network has 10 outputs\), "
                           r"got values from 0 to 10"):
            run(bad)
        with pytest.raises(ConfigError, match=r"\(images, labels\) pairs, got a dict with keys \['image', 'label'\]"):
            run([{"image": images, "label": torch.arange(4)}])
        with pytest.raises(ConfigError, match=r"\(images, labels\) pairs, got a tuple of 3 items"):
            run([(images, torch.arange(4), torch.arange(4))])
