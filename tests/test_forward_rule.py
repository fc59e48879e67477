"""The forward rule (docs/protocols.md#forward-rule): between spiking nodes a converted network
applies only maps that are linear in the activations and treat every sample alone. Each forward
below is written the way researchers write them (issue #27): the silent cases are refused in one
line naming this file and the line, the linear per-sample ones convert and multi-step mode matches
single-step mode."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import sjconv
from sjconv.errors import ConfigError, ConversionError
from sjconv.qcfs import QCFS

from reference import calibrate_thresholds


class _Net(nn.Module):
    """conv -> QCFS -> ``between`` (the forward code under test) -> QCFS -> mean -> linear."""

    def __init__(self, between, channels_out=4):
        super().__init__()
        self.between = between
        self.conv1, self.act1 = nn.Conv2d(3, 4, 3, padding=1), QCFS(4, 1.0)
        self.conv2, self.act2 = nn.Conv2d(channels_out, 6, 3, padding=1), QCFS(4, 1.0)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        g = self.act1(self.conv1(x))
        g = type(self).between(g)
        g = self.act2(self.conv2(g))
        return self.fc(g.mean((2, 3)))


def _net(between, channels_out=4):
    cls = type(f"Net_{between.__name__}", (_Net,), {"between": staticmethod(between)})
    torch.manual_seed(1)
    model = cls(between, channels_out).eval()
    del model.between
    images = torch.randn(4, 3, 8, 8)
    return calibrate_thresholds(model, images), images


# ------------------------------------------------------------------ batch-mixing forwards (issue #27, 1)
def batch_halves(g):
    a, b = g.chunk(2, 0)
    return torch.cat([a + b, a - b], 0)


def flip_batch(g):
    return g.flip(0)


def centre_batch(g):
    return g - g.mean(0)


def first_sample(g):
    return g + g[0]


def batch_cat(g):
    return torch.cat([g, g], 0)[: g.shape[0]]


MIXING = {batch_halves: r"chunk\(\) splits dim 0", flip_batch: r"flip\(\) flips dim 0",
          centre_batch: r"mean\(\) reduces over dim 0", first_sample: r"__getitem__\(\) indexes dim 0",
          batch_cat: r"cat\(\) joins along dim 0"}


@pytest.mark.parametrize("between", list(MIXING), ids=lambda f: f.__name__)
def test_batch_mixing_forwards_are_refused_in_multi_step_mode(between):
    ann, images = _net(between)
    with pytest.raises(ConversionError, match=r"test_forward_rule\.py:\d+ in " + between.__name__ + ": `.*` "
                       + MIXING[between] + r".*T·N rows.*step_mode='s'") as caught:
        sjconv.convert(ann, "qcfs", "m")
    assert "\n" not in str(caught.value)
    # one step per call runs the forward on [N, ...], the samples mixed as in the ANN
    snn = sjconv.convert(ann, "qcfs", "s")
    assert snn.layout == "folded"
    out = sjconv.simulate(snn, images, 3)
    assert out.shape == (3, 4, 5) and torch.isfinite(out).all()
    from spikingjelly.activation_based import functional
    functional.set_step_mode(snn.net, "m")
    with pytest.raises(ConfigError, match=r"only in single-step mode.*" + between.__name__):
        sjconv.simulate(snn, images, 3)
    with pytest.raises(ConversionError, match="one multi-step call"):
        sjconv.convert(ann, "cos", "s")


def test_single_step_conversion_of_a_mixing_forward_approaches_the_ann():
    """In 's' mode the batch is the ANN's batch: the mean over T of the SNN approaches the ANN with
    the clip only (docs/methods.md#convergence), as for any other network."""
    ann, images = _net(batch_halves)
    snn = sjconv.convert(ann, "qcfs", "s")
    mean = sjconv.simulate(snn, images, 256).mean(0)
    with torch.no_grad():
        clip = _clip_only(ann)(images)
    assert float((mean - clip).abs().max()) < 0.05 * float(clip.abs().max())


def test_the_independence_probe_finds_mixing_that_no_single_operation_shows(monkeypatch):
    """The probe is the backstop of the operation table: with flip() allowed whatever its dims,
    changing one sample (or permuting the batch) still shows the mixing."""
    from sjconv import forward_rule

    monkeypatch.setitem(forward_rule.ALLOWED, "flip", lambda call: None)
    ann, _ = _net(flip_batch)
    with pytest.raises(ConversionError, match=r"Net_flip_batch mixes the samples of its batch \(with the batch permuted and sample 1 changed, "
                       r"the outputs of the other samples changed.*step_mode='s'"):
        sjconv.convert(ann, "qcfs", "m")
    assert sjconv.convert(ann, "qcfs", "s").layout == "folded"


# ------------------------------------------------------------------ non-linear operations (issue #27, 2)
def amax_pool(g):
    return g + g.amax(dim=(2, 3), keepdim=True)


def max_values(g):
    return torch.max(g, 1, keepdim=True).values.expand_as(g)


def topk_channels(g):
    return g.topk(4, dim=1).values


def sort_channels(g):
    return g.sort(dim=1).values


def square(g):
    return g ** 2


def absolute(g):
    return g.abs()


def where_positive(g):
    return torch.where(g > 0.5, g, torch.zeros_like(g))


def product(g):
    return g * g


def divide_by_activations(g):
    return g / (g.mean((1, 2, 3), keepdim=True) + 1)


def layer_norm(g):
    return F.layer_norm(g, g.shape[1:])


def gelu(g):
    return F.gelu(g)


NONLINEAR = {amax_pool: "amax", max_values: "max", topk_channels: "topk", sort_channels: "sort", square: "pow",
             absolute: "abs", where_positive: "gt", product: "mul", divide_by_activations: "div",
             layer_norm: "layer_norm", gelu: "gelu"}


@pytest.mark.parametrize("between", list(NONLINEAR), ids=lambda f: f.__name__)
@pytest.mark.parametrize("mode", ["m", "s"])
def test_non_linear_operations_are_refused_naming_the_line(between, mode):
    ann, _ = _net(between)
    with pytest.raises(ConversionError, match=r"test_forward_rule\.py:\d+ in " + between.__name__ + r": `return .*` .*"
                       + NONLINEAR[between] + r"\(\) ") as caught:
        sjconv.convert(ann, "qcfs", mode)
    assert "\n" not in str(caught.value)
    assert "linear" in str(caught.value) or "activation" in str(caught.value)


def test_an_operation_that_does_not_reach_the_output_is_not_refused():
    def control_flow(g):
        if g.amax() > 1e9:        # decides nothing here; its result never reaches the logits
            return g * 2
        return g

    ann, images = _net(control_flow)
    snn = sjconv.convert(ann, "qcfs", "m")
    assert snn.layout == "folded"


# ------------------------------------------------------------------ linear, per-sample forwards: convert and match 's'
def view_round_trip(g):
    return g.view(g.size(0), -1).view_as(g)


def reshape_flatten(g):
    return torch.flatten(g, 1).reshape(g.shape)


def cat_channels(g):
    return torch.cat([g[:, :2], g[:, 2:]], dim=1)


def stack_and_sum(g):
    return torch.stack([g, 2 * g], dim=1).sum(1) / 3


def mean_over_space(g):
    return g - 0.5 * g.mean((2, 3), keepdim=True)


def pooling(g):
    return F.interpolate(F.avg_pool2d(g, 2), scale_factor=2) + F.adaptive_avg_pool2d(g, 1)


def slices(g):
    return g[:, :, 1:-1, 1:-1].contiguous().clone()


def padded_slices(g):
    return F.pad(g[..., 1:, :], (0, 0, 0, 1))


def scaled_sums(g):
    h = 1.5 * g - g / 4 + 0.25
    h += g
    return -h + torch.ones(4, 1, 1)


def permuted(g):
    return g.permute(0, 2, 3, 1).permute(0, 3, 1, 2)


def channel_halves(g):
    a, b = g.chunk(2, 1)
    return torch.cat([a + b, a - b], 1)


def channel_flip(g):
    return g.flip(1) + g.transpose(2, 3)


def matmul_weights(g):
    return (g.permute(0, 2, 3, 1) @ torch.eye(4)).permute(0, 3, 1, 2)


def zeros_accumulator(g):
    out = torch.zeros_like(g)
    out += g
    return out


LINEAR = [view_round_trip, reshape_flatten, cat_channels, stack_and_sum, mean_over_space, pooling, slices,
          padded_slices, scaled_sums, permuted, channel_halves, channel_flip, matmul_weights, zeros_accumulator]


@pytest.mark.parametrize("between", LINEAR, ids=lambda f: f.__name__)
def test_linear_per_sample_forwards_convert_and_match_single_step_mode(between):
    ann, images = _net(between)
    snn_m, snn_s = sjconv.convert(ann, "qcfs", "m"), sjconv.convert(ann, "qcfs", "s")
    out_m, out_s = sjconv.simulate(snn_m, images, 6), sjconv.simulate(snn_s, images, 6)
    torch.testing.assert_close(out_m, out_s, rtol=1e-5, atol=1e-5)
    assert out_m.abs().sum() > 0


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.act1 = nn.Conv2d(3, 4, 3, padding=1), QCFS(4, 1.0)
        self.conv2, self.act2 = nn.Conv2d(4, 4, 3, padding=1), QCFS(4, 1.0)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))

    def forward(self, x):
        g = self.act1(self.conv1(x))
        g = self.act2(self.conv2(g) + 0.5 * g - g / 4)
        return self.head(g)


def test_elementwise_only_forwards_keep_the_layers_layout():
    torch.manual_seed(0)
    images = torch.randn(4, 3, 8, 8)
    ann = calibrate_thresholds(_Residual().eval(), images)
    snn = sjconv.convert(ann, "qcfs", "m")
    assert snn.layout == "layers"
    assert torch.equal(sjconv.simulate(snn, images, 4),
                       sjconv.simulate(sjconv.convert(ann, "qcfs", "m", layout="folded"), images, 4))


# ------------------------------------------------------------------ probe inputs
class _Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.act, self.fc = nn.Conv2d(3, 2, 3), QCFS(4, 1.0), nn.Linear(2 * 7 * 11, 3)  # 9×13 inputs

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).flatten(1))


def test_a_model_whose_input_size_is_not_guessed_needs_an_example():
    with pytest.raises(ConversionError, match=r"fails on probe batches like \[2, 3, \d+, \d+\].*pass example=images"):
        sjconv.convert(_Odd())
    snn = sjconv.convert(_Odd(), example=torch.randn(1, 3, 9, 13))
    assert sjconv.simulate(snn, torch.randn(2, 3, 9, 13), 2).shape == (2, 2, 3)


# ------------------------------------------------------------------ what the SNN converges to
def _clip_only(ann):
    """The ANN with every QCFS activation's quantization removed (L -> ∞): θ·clamp(x/θ, 0, 1)."""
    import copy

    clip = copy.deepcopy(ann)
    for module in clip.modules():
        if isinstance(module, QCFS):
            module.forward = (lambda m: lambda x: m.thresh * torch.clamp(x / m.thresh, 0, 1))(module)
    return clip


def test_the_snn_approaches_the_clip_only_ann_not_the_quantized_one():
    """docs/methods.md#convergence: the mean output over T approaches the ANN without the
    quantization; from the quantized QCFS ANN it stays a fixed distance away."""
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Linear(8, 16), QCFS(2, 1.0), nn.Linear(16, 16), QCFS(2, 1.0), nn.Linear(16, 4)).eval()
    images = torch.randn(16, 8)
    ann = calibrate_thresholds(ann, images)
    snn = sjconv.convert(ann, "qcfs", "m")
    logits = sjconv.simulate(snn, images, 1024).double()
    with torch.no_grad():
        quantized, clip = ann(images).double(), _clip_only(ann)(images).double()
    cumulative = logits.cumsum(0) / torch.arange(1, 1025, dtype=torch.float64).view(-1, 1, 1)
    to_clip = [float((cumulative[t - 1] - clip).abs().mean()) for t in (16, 1024)]
    to_quantized = [float((cumulative[t - 1] - quantized).abs().mean()) for t in (16, 1024)]
    assert to_clip[1] < to_clip[0] / 4                    # it converges to the clip-only ANN
    assert to_clip[1] < to_quantized[1] / 10
    assert to_quantized[1] > 0.5 * to_quantized[0]        # and stays away from the quantized one
