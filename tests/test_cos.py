"""COS offset-spike calibration (docs/methods.md#cos) and COS + NegSpike, against references written
from docs/methods.md#cos; the method table; protocols carried by the nodes; dtypes kept by conversion."""

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional

import sjconv
from sjconv.report import method_label
from sjconv.errors import ConfigError
from sjconv.neurons import METHODS, COSIFNode, COSSignedIFNode, rules

from reference import reference_cos_network_logits, reference_cos_node, reference_cos_start

COS_METHODS = ["cos", "cos+neg"]


def _run_node(node, x_seq, rho, steps):
    """Pre-run ``rho`` steps of ``x_seq`` through ``node`` (one multi-step call), then ``steps``
    main steps in the node's step mode."""
    functional.reset_net(node)
    mode = node.step_mode
    node.step_mode = "m"
    node.begin_prerun()
    node(x_seq[:rho])
    node.end_prerun()
    node.step_mode = mode
    if mode == "m":
        return node(x_seq[:steps])
    return torch.stack([node(x_seq[t]) for t in range(steps)])


# --------------------------------------------------------------- hand-made cases (θ = 1, u = v)
@pytest.mark.parametrize("x, start", [
    # one spike too many: fires at t=1 (a = 1.5), ends at -0.25 < 0 -> u0 = 1/2 - 1
    ([1.0, -0.75], -0.5),
    # one spike too few: silent at 0.75 (b), ends at 1.25 >= 1 -> u0 = 1/2 + 1
    ([0.25, 1.5], 1.5),
    # a - 0.999 > 1: fires at a = 3.0, ends at -1.0 -> down = 2.001
    ([2.5, -3.0], 0.5 - 2.001),
    # 1.001 - b > 1: silent at b = -0.25, ends at 1.75 -> up = 1.251
    ([-0.75, 3.0], 0.5 + 1.251),
    # fired but ends >= 0: no shift
    ([1.0, 0.25], 0.5),
    # never fired and ends < 0: no shift (n = 0)
    ([-1.0, 0.25], 0.5),
    # fired at every step and still >= 1: b = -inf, u0 = +inf (fires at every main step)
    ([2.0, 2.0], float("inf")),
])
def test_cos_start_hand_cases(x, start):
    x_seq = torch.tensor(x).view(2, 1)
    got = rules.cos_initial_potential(x_seq, 1.0, torch.full((1,), 0.5))
    assert got.item() == pytest.approx(start, rel=1e-6)
    assert reference_cos_start(x_seq.numpy(), 1.0).item() == pytest.approx(start, rel=1e-6)


def test_cos_start_scales_with_theta():
    """Written in potential units, the rule is the docs/methods.md#cos rule in u = v/θ (θ a power of two: exact)."""
    x_u = torch.tensor([[2.5, 1.0, -0.75, 0.25], [-3.0, -0.75, 3.0, 1.5]])
    u0 = rules.cos_initial_potential(x_u, 1.0, torch.full((4,), 0.5))
    v0 = rules.cos_initial_potential(x_u * 4, 4.0, torch.full((4,), 2.0))
    assert torch.allclose(v0, 4 * u0, rtol=1e-6)


def test_cos_node_hand_sequence_one_spike_too_many():
    """x = [1, -0.75, 1, -0.75] (sum 0.5, a mean of 1/8 per step: 0 spikes in 4 steps is closest):
    plain IF fires at t=1 and never takes it back; COS starts at -0.5 and stays silent."""
    x = torch.tensor([1.0, -0.75, 1.0, -0.75]).view(4, 1)
    plain = sjconv.neurons.ConvertedIFNode(1.0, step_mode="m")(x)
    assert plain.view(-1).tolist() == [1.0, 0.0, 0.0, 0.0]
    out = _run_node(COSIFNode(1.0, step_mode="m", prerun_steps=2), x, rho=2, steps=4)
    assert out.view(-1).tolist() == [0.0, 0.0, 0.0, 0.0]


def test_cos_saturated_neuron_fires_every_step():
    node = COSIFNode(2.0, step_mode="s", prerun_steps=2)
    x = torch.full((40, 1), 4.0)
    out = _run_node(node, x, rho=2, steps=40)
    assert torch.equal(out, torch.full_like(out, 2.0))
    assert node.v.item() == float("inf")


# ------------------------------------------------------------------ random vs element loop
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("mode", ["m", "s"])
@pytest.mark.parametrize("rho, steps", [(4, 9), (4, 1), (3, 3), (6, 2)])
def test_cos_node_matches_element_reference(signed, mode, rho, steps):
    gen = torch.Generator().manual_seed(10 * rho + steps)
    theta = 0.7
    x = torch.randn(max(rho, steps), 5, 7, generator=gen) * 0.6
    node = (COSSignedIFNode if signed else COSIFNode)(theta, step_mode=mode, prerun_steps=rho)
    got = _run_node(node, x, rho, steps)
    want = reference_cos_node(x.numpy(), theta, rho, signed=signed, steps=steps)
    assert np.array_equal(got.numpy(), want)


def test_cos_signed_takes_back_spikes_after_calibration():
    """cos+neg: the calibration uses the plain IF rule, the main run the signed rule."""
    x = torch.tensor([[0.5], [0.25], [-1.0], [0.125]])   # calibration: fires, ends at 0.25 -> no shift
    plain = _run_node(COSIFNode(1.0, step_mode="m", prerun_steps=2), x, 2, 4)
    signed = _run_node(COSSignedIFNode(1.0, step_mode="m", prerun_steps=2), x, 2, 4)
    assert plain.view(-1).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert signed.view(-1).tolist() == [1.0, 0.0, -1.0, 0.0]
    assert np.array_equal(signed.numpy(), reference_cos_node(x.numpy(), 1.0, 2, signed=True))


def test_cos_prerun_in_single_step_mode_is_a_clear_error():
    node = COSIFNode(1.0, step_mode="s")
    node.begin_prerun()
    with pytest.raises(ConfigError, match="one multi-step call"):
        node(torch.ones(3))


# ------------------------------------------------------------------------- whole networks
@pytest.mark.parametrize("fixture", ["vgg16", "resnet20"])
@pytest.mark.parametrize("method", COS_METHODS)
@pytest.mark.parametrize("T", [6, 2])
def test_converted_network_matches_cos_reference(fixture, method, T, request):
    ann, images = request.getfixturevalue(fixture)
    snn = sjconv.convert(ann, method=method, step_mode="m")
    got = sjconv.simulate(snn, images, T=T)
    want = reference_cos_network_logits(ann, images, T, rho=snn.tau, signed=method == "cos+neg")
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), (got - want).abs().max()


def _spikes(snn, images, T, **kwargs):
    """Per-step logits and every node's outputs (concatenated over calls) of one simulate()."""
    outputs = {}

    def hook(name):
        def record(module, inputs, output):
            block = output if module.step_mode == "m" else output.unsqueeze(0)
            outputs.setdefault(name, []).append(block)
        return record

    nodes = [(n, m) for n, m in snn.net.named_modules() if isinstance(m, sjconv.neurons.SpikingNode)]
    handles = [m.register_forward_hook(hook(n)) for n, m in nodes]
    try:
        logits = sjconv.simulate(snn, images, T=T, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return logits, {n: torch.cat(v)[-T:] for n, v in outputs.items()}


@pytest.mark.parametrize("method", COS_METHODS)
@pytest.mark.parametrize("T", [7, 2])
def test_step_modes_and_chunks_identical(resnet20, method, T):
    ann, images = resnet20
    ref_logits, ref_spikes = _spikes(sjconv.convert(ann, method=method, step_mode="m"), images, T)
    runs = [("s", None), ("m", 1), ("m", 3), ("m", T + 5)]
    for mode, chunk in runs:
        logits, spikes = _spikes(sjconv.convert(ann, method=method, step_mode=mode), images, T, chunk=chunk)
        assert torch.allclose(logits, ref_logits, atol=1e-6), (mode, chunk)
        for name in ref_spikes:
            assert torch.equal(spikes[name], ref_spikes[name]), (mode, chunk, name)


def test_cos_beats_plain_conversion_at_t1_on_calibrated_network(resnet20):
    """Not a target, a sanity check: COS moves the T=1 logits towards the ANN's."""
    ann, images = resnet20
    with torch.no_grad():
        target = ann.eval()(images)
    errors = {}
    for method in ("qcfs", "cos"):
        logits = sjconv.simulate(sjconv.convert(ann, method=method), images, T=1)[0]
        errors[method] = float((logits - target).norm() / target.norm())
    assert errors["cos"] < errors["qcfs"], errors


# -------------------------------------------------------------------------- method table
def test_method_table_drives_labels_and_defaults():
    assert list(METHODS) == ["qcfs", "neg", "srp", "srp+neg", "cos", "cos+neg", "gn", "gn+neg"]
    assert method_label("cos", 4) == "COS (ρ=4)"
    assert method_label("gn", 0, "qcfs", 4) == "GN (m=4)"
    assert method_label("srp+neg", 2, "snm") == "SRP + Neg (SNM, τ=2)"
    assert method_label("neg", 0, "snm") == "NegSpike (SNM)"
    for name, record in METHODS.items():
        snn = sjconv.convert(sjconv.models.small_cnn(num_classes=3, in_channels=1, image_size=8), method=name)
        assert snn.method == name and snn.tau == record.default_tau
        assert all(type(n) is record.node for n in sjconv.neurons.spiking_nodes(snn))


@pytest.mark.parametrize("method", ["qcfs", "srp", "cos"])
def test_snm_with_an_unsigned_method_is_an_error(method):
    ann = sjconv.models.small_cnn(num_classes=3, in_channels=1, image_size=8)
    with pytest.raises(ConfigError, match="signed"):
        sjconv.convert(ann, method=method, neg_rule="snm")


@pytest.mark.parametrize("tau", [-1, 2.5, "3"])
def test_bad_tau_is_an_error(tau):
    ann = sjconv.models.small_cnn(num_classes=3, in_channels=1, image_size=8)
    with pytest.raises(ConfigError, match="tau"):
        sjconv.convert(ann, method="cos", tau=tau)


def test_unwrap_labels_cos_networks():
    ann = sjconv.models.small_cnn(num_classes=3, in_channels=1, image_size=8)
    for method in COS_METHODS:
        net, name, tau = sjconv.neurons.unwrap(sjconv.convert(ann, method=method, tau=3))
        assert (name, tau) == (method, 3)


# ------------------------------------------------------------------ protocol on the nodes
class _Wrapper(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


@pytest.mark.parametrize("method", ["srp", "srp+neg", "cos", "cos+neg"])
@pytest.mark.parametrize("mode", ["m", "s"])
def test_simulate_finds_the_protocol_from_any_wrapper(resnet20, method, mode):
    ann, images = resnet20
    snn = sjconv.convert(ann, method=method, step_mode=mode, tau=3)
    want = sjconv.simulate(snn, images, T=4)
    assert torch.equal(sjconv.simulate(snn.net, images, T=4), want)
    assert torch.equal(sjconv.simulate(_Wrapper(snn), images, T=4), want)
    # and the pre-run matters: without it the outputs differ
    assert not torch.equal(sjconv.simulate(snn, images, T=4, tau=0), want)


def test_nodes_disagreeing_on_the_prerun_raise(resnet20):
    ann, images = resnet20
    snn = sjconv.convert(ann, method="cos", tau=3)
    sjconv.neurons.spiking_nodes(snn)[2].prerun_steps = 5
    with pytest.raises(ConfigError, match="disagree"):
        sjconv.simulate(snn, images, T=2)


@pytest.mark.parametrize("method", ["qcfs", "srp+neg", "cos"])
def test_state_dict_round_trip_restores_thresholds(resnet20, method):
    ann, images = resnet20
    snn = sjconv.convert(ann, method=method)
    state = snn.state_dict()
    assert any(k.endswith(".theta") for k in state)
    other = sjconv.models.resnet20(num_classes=10)   # fresh thresholds (8.0) and weights
    fresh = sjconv.convert(other, method=method)
    assert not torch.equal(sjconv.simulate(fresh, images, T=3), sjconv.simulate(snn, images, T=3))
    fresh.load_state_dict(state)
    assert torch.equal(sjconv.simulate(fresh, images, T=3), sjconv.simulate(snn, images, T=3))
    node = sjconv.neurons.spiking_nodes(fresh)[0]
    functional.reset_net(fresh)
    assert node.v_threshold == float(ann.conv1[2].thresh.detach()) and node.v == node.v_threshold / 2


# ------------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_convert_keeps_dtype_and_device(dtype):
    ann = sjconv.models.small_cnn(num_classes=3, in_channels=1, image_size=8).to(dtype)
    snn = sjconv.convert(ann, method="cos")
    assert {p.dtype for p in snn.parameters()} == {dtype}
    assert {b.dtype for b in snn.buffers() if b.is_floating_point()} == {dtype}
    if dtype == torch.float64:
        images = torch.randn(2, 1, 8, 8, dtype=dtype)
        logits = sjconv.simulate(snn, images, T=3)
        assert logits.dtype == dtype
        want = sjconv.simulate(sjconv.convert(ann.float(), method="cos"), images.float(), T=3)
        assert torch.allclose(logits.float(), want, atol=1e-4)


def test_simulate_of_a_compiled_network_runs_its_prerun():
    ann = sjconv.models.small_cnn(num_classes=3, in_channels=1, image_size=8)
    snn = sjconv.convert(ann, method="cos", tau=3)
    images = torch.randn(2, 1, 8, 8)
    compiled = torch.compile(snn, backend="eager")   # no C++ toolchain needed; the wrapper is what matters
    assert sjconv.neurons.protocol_of(compiled) == ("cos", 3)
    assert torch.equal(sjconv.simulate(compiled, images, T=4), sjconv.simulate(snn, images, T=4))
