"""Group neurons (docs/methods.md#group-neuron): gn and gn+neg against the element reference written from the
rule and the comparisons of the reference code; every step mode, chunking and the in-place torch
loop; converted networks; the property that m = L makes T = 1 the QCFS ANN; the method table,
labels and levels; fine-tuning and the operation counts of multi-level spikes."""

import numpy as np
import pytest
import torch
import torch.nn as nn
from spikingjelly.activation_based import functional

import sjconv
from sjconv import catalog
from sjconv.errors import ConfigError
from sjconv.neurons import METHODS, ConvertedIFNode, GroupNode, SignedGroupNode, SignedIFNode, SpikingNode, rules
from sjconv.neurons.kernels import torch_backend, torch_group

from reference import _ReferenceGN, reference_gn_network_logits, reference_group_node

#: (signed, snm) kinds of group neuron
KINDS = [(False, False), (True, False), (True, True)]


def _node(theta, levels, signed, snm, mode="m"):
    return (SignedGroupNode if signed else GroupNode)(theta, levels=levels, step_mode=mode,
                                                      neg_rule="snm" if snm else "qcfs")


def _tie_inputs(theta, levels, steps, neurons, seed):
    """Inputs on a grid of q/2 with q a power of two times θ/m: the potential lands exactly on member
    thresholds j·q, on 0 and on -j·q, so every >=, < and <= edge is taken."""
    gen = torch.Generator().manual_seed(seed)
    q = theta / levels
    return torch.randint(-2 * levels, 2 * levels + 1, (steps, neurons), generator=gen).float() * (q / 2)


# ------------------------------------------------------------------------------ the rule
@pytest.mark.parametrize("signed,snm", KINDS)
@pytest.mark.parametrize("levels", [1, 3, 4, 8])
@pytest.mark.parametrize("inputs", ["random", "ties"])
@pytest.mark.parametrize("masked", [False, True])
def test_rule_matches_element_reference(signed, snm, levels, inputs, masked):
    theta = 2.0 if inputs == "ties" else 0.7
    x = _tie_inputs(theta, levels, 16, 120, levels) if inputs == "ties" else \
        torch.randn(16, 120, generator=torch.Generator().manual_seed(levels)) * 0.9
    mask = torch.rand(120, generator=torch.Generator().manual_seed(3)) > 0.3 if masked else None
    v0 = torch.full((120,), 0.0 if snm else rules.group_quantum(theta, levels) / 2)
    c0 = torch.zeros(120) if signed else None
    out, v, c, _ = rules.run_steps(x, v0, c0, mask, theta, signed, "snm" if snm else "qcfs", levels=levels)
    want_out, want_v, want_c = reference_group_node(x.numpy(), theta, levels, signed, snm,
                                                    None if mask is None else mask.numpy())
    assert np.array_equal(out.numpy(), want_out) and np.array_equal(v.numpy(), want_v)
    if signed:
        assert np.array_equal(c.numpy(), want_c)
        assert (out < 0).any()                    # negative units were taken back
        assert (c >= 0).all()                     # never more than were sent
    units = out / rules.group_quantum(theta, levels)
    assert units.abs().max() <= levels and (levels == 1 or (units.abs() > 1).any())


def test_hand_sequence():
    """θ = 1, m = 4 (q = 1/4): v0 = 1/8; 0.2 -> 0.325 sends one unit; 0.3 -> 0.375 one; 2.0 -> 2.125
    all four (the clip of QCFS). gn+neg, after those six units (v = 1.125): -1.625 -> v = -0.5, below
    0 and -q but not below -2q: takes back 2; -0.5 -> -0.5: 2 more; -1.0 -> -1.0 is below four
    negative thresholds, but only the 2 units still counted go back; then v < 0 with nothing left."""
    node = GroupNode(1.0, levels=4, step_mode="m")
    out = node(torch.tensor([[0.0], [0.2], [0.3], [2.0]]))
    assert out.view(-1).tolist() == [0.0, 0.25, 0.25, 1.0] and node.v.item() == pytest.approx(1.125)
    signed = SignedGroupNode(1.0, levels=4, step_mode="m")
    out = signed(torch.tensor([[0.2], [0.3], [2.0], [-1.625], [-0.5], [-1.0], [0.0]]))
    assert out.view(-1).tolist() == [0.25, 0.25, 1.0, -0.5, -0.5, -0.5, 0.0]
    assert signed.count.item() == 0.0 and signed.v.item() == -0.5


@pytest.mark.parametrize("signed,snm", KINDS)
def test_one_member_is_the_if_neuron(signed, snm):
    x = torch.randn(30, 200, generator=torch.Generator().manual_seed(5)) * 0.8
    group = _node(0.6, 1, signed, snm)
    plain = (SignedIFNode if signed else ConvertedIFNode)(0.6, step_mode="m", neg_rule="snm" if snm else "qcfs")
    assert torch.equal(group(x), plain(x)) and torch.equal(group.v, plain.v)


def test_member_thresholds_are_the_reference_codes():
    """j·q in float32 with q rounded first, one rounding of the product: not the double product."""
    differ = 0
    for theta in torch.linspace(0.05, 9.0, 400).tolist():
        theta = float(torch.tensor(theta))    # a float32 value, as the node's θ
        for levels in (3, 5, 7, 8):
            ours = rules.group_thresholds(theta, levels)
            theirs = (torch.arange(1, levels + 1, 1) * (theta / levels)).tolist()
            assert ours == theirs
            differ += sum(np.float32(j * (theta / levels)) != t for j, t in enumerate(ours, 1))
    assert differ > 0   # the test could tell the double product apart


# ------------------------------------------------------------- the reference code's comparisons
def _exact_ties(theta, levels, neurons):
    """Inputs of one step that put v0 + x exactly on a member threshold j·q (rounded as the
    reference rounds it) for thresholds that are not the exact j·θ/m, with neighbours one ulp on
    either side. Returns x [1, n] and how many land exactly on a threshold."""
    q32 = np.float32(theta / levels)
    v0 = np.float32(q32 / np.float32(2))
    values = []
    for j in range(1, levels + 1):
        thr = np.float32(np.float32(j) * q32)
        x = np.float32(thr - v0)
        for candidate in (x, np.nextafter(x, np.float32(-np.inf)), np.nextafter(x, np.float32(np.inf))):
            values.append(candidate)
    values = (values * (neurons // len(values) + 1))[:neurons]
    x = np.array(values, np.float32)
    thresholds = np.float32(np.arange(1, levels + 1, dtype=np.float32) * q32)
    on = int(np.isin(np.float32(v0 + x), thresholds).sum())
    return torch.from_numpy(x).view(1, -1), on


@pytest.mark.parametrize("theta", [0.7, 1.3, 5.9])
@pytest.mark.parametrize("levels", [3, 7, 8])
def test_gn_makes_the_reference_codes_comparisons(theta, levels):
    """Random inputs plus inputs that land exactly on member thresholds: the node's outputs at
    every step equal those of the reference code's comparisons (``v - bias >= 0``, summed)."""
    theta = float(torch.tensor(theta))
    ties, on = _exact_ties(theta, levels, 300)
    assert on > 0
    x = torch.cat([ties.expand(1, -1), torch.randn(11, 300, generator=torch.Generator().manual_seed(levels)) * 0.8])
    want = _ReferenceGN(torch.tensor([theta]), 12, levels)(x.reshape(12 * 300, 1)).view(12, 300)
    for mode in ("m", "s"):
        node = GroupNode(theta, levels=levels, step_mode=mode)
        got = node(x) if mode == "m" else torch.stack([node(step) for step in x])
        assert torch.equal(got, want)
    assert (want[0] > 0).sum() >= on   # the ties fired (>=)


def test_signed_reference_module_matches_element_reference():
    """The two references of gn+neg (element loop; torch module) agree: the rule is written twice."""
    x = _tie_inputs(2.0, 4, 12, 50, 9)
    mod = _ReferenceGN(torch.tensor([2.0]), 12, 4, signed=True)(x.reshape(12 * 50, 1)).view(12, 50)
    want, _, _ = reference_group_node(x.numpy(), 2.0, 4, signed=True)
    assert np.array_equal(mod.numpy(), want) and (mod < 0).any()


# --------------------------------------------------------- backends, step modes, chunks, dtypes
@pytest.mark.parametrize("signed,snm", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("masked", [False, True])
def test_in_place_loop_matches_rule(signed, snm, dtype, masked):
    theta, levels = 0.9, 5
    x = (torch.randn(9, 4, 6, 5, generator=torch.Generator().manual_seed(1)) * 0.9).to(dtype)
    mask = torch.rand(4, 6, 5, generator=torch.Generator().manual_seed(2)) > 0.4 if masked else None
    v0 = torch.full((4, 6, 5), 0.0 if snm else theta / levels / 2)
    c0 = torch.zeros(4, 6, 5) if signed else None
    rule = "snm" if snm else "qcfs"
    want = rules.run_steps(x, v0, c0, mask, theta, signed, rule, True, levels)
    got = torch_group.run_steps(x, v0, c0, mask, theta, signed, rule, True, levels)
    for a, b in zip(got, want):
        assert (a is None and b is None) or (torch.equal(a, b) and a.dtype == b.dtype)
    if masked and signed:   # masked negative outputs are +0, as the rule's
        assert not torch.signbit(got[0][:, ~mask]).any()


def test_in_place_loop_blocks_and_layouts():
    """More neurons than a block (the blocked path), and a channels_last input."""
    n = torch_backend.BLOCK + 1000
    x = torch.randn(3, n, generator=torch.Generator().manual_seed(4))
    v0, c0 = torch.full((n,), 0.1), torch.zeros(n)
    want = rules.run_steps(x, v0, c0, None, 0.8, True, "qcfs", False, 4)
    got = torch_group.run_steps(x, v0, c0, None, 0.8, True, "qcfs", False, 4)
    assert all(torch.equal(a, b) for a, b in zip(got[:3], want[:3]))
    xc = torch.randn(4, 2, 3, 5, 5).flatten(0, 1).contiguous(memory_format=torch.channels_last).view(4, 2, 3, 5, 5)
    v0 = torch.full((2, 3, 5, 5), 0.1)
    want = rules.run_steps(xc, v0, None, None, 0.8, False, "qcfs", False, 3)
    got = torch_group.run_steps(xc, v0, None, None, 0.8, False, "qcfs", False, 3)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize("signed,snm", KINDS)
def test_step_modes_and_chunks_identical(signed, snm):
    x = torch.randn(10, 3, 7, generator=torch.Generator().manual_seed(6)) * 0.9
    whole = _node(1.1, 4, signed, snm)(x)
    single = _node(1.1, 4, signed, snm, mode="s")
    steps = torch.stack([single(step) for step in x])
    chunked = _node(1.1, 4, signed, snm)
    parts = torch.cat([chunked(x[:3]), chunked(x[3:4]), chunked(x[4:])])
    want, _, _ = reference_group_node(x.numpy(), 1.1, 4, signed, snm)
    assert torch.equal(whole, steps) and torch.equal(whole, parts) and np.array_equal(whole.numpy(), want)


# ------------------------------------------------------------------------- whole networks
@pytest.mark.parametrize("fixture, levels", [("vgg16", None), ("resnet20", None), ("resnet20", 3)])
def test_converted_network_matches_reference_code(fixture, levels, request):
    ann, images = request.getfixturevalue(fixture)
    T = 3
    want = reference_gn_network_logits(ann, images, T, levels)
    for mode, chunk in (("m", None), ("m", 2), ("s", None)):
        snn = sjconv.convert(ann, "gn", step_mode=mode, levels=levels)
        assert snn.levels == (levels or 8) and snn.method == "gn"
        got = sjconv.simulate(snn, images, T, chunk=chunk)
        assert torch.equal(got, want), (mode, chunk)


@pytest.mark.parametrize("fixture", ["vgg16", "resnet20"])
def test_converted_signed_network_matches_reference(fixture, request):
    ann, images = request.getfixturevalue(fixture)
    T = 4
    want = reference_gn_network_logits(ann, images, T, 4, signed=True)
    for mode, chunk in (("m", None), ("m", 3), ("s", None)):
        got = sjconv.simulate(sjconv.convert(ann, "gn+neg", step_mode=mode, levels=4), images, T, chunk=chunk)
        assert torch.equal(got, want), (mode, chunk)
    plain = sjconv.simulate(sjconv.convert(ann, "gn", levels=4), images, T)
    assert torch.equal(plain[0], want[0]) and not torch.equal(plain, want)   # same at T = 1, then apart


@pytest.mark.parametrize("fixture", ["vgg16", "resnet20"])
def test_members_equal_to_L_make_T1_the_ann(fixture, request):
    """m = L: the converted SNN at T = 1 is the QCFS ANN up to float rounding (docs/methods.md#group-neuron)."""
    ann, images = request.getfixturevalue(fixture)
    with torch.no_grad():
        ann_logits = ann.eval()(images)
        snn_logits = sjconv.simulate(sjconv.convert(ann, "gn"), images, 1)[0]
        other = sjconv.simulate(sjconv.convert(ann, "gn", levels=3), images, 1)[0]
    scale = float(ann_logits.abs().max())
    assert torch.allclose(snn_logits, ann_logits, rtol=1e-4, atol=1e-5 * scale)
    assert not torch.allclose(other, ann_logits, rtol=1e-4, atol=1e-5 * scale)   # the property needs m = L


@pytest.mark.parametrize("L", [2, 4, 8, 16])
def test_one_layer_at_T1_is_the_qcfs_activation(L):
    """Layer by layer: k·q equals θ·floor(clamp(x/θ, 0, 1)·L + 1/2)/L for every input away from the
    exact rounding edges (random inputs hit none), to float32 rounding."""
    layer = sjconv.QCFS(L, 1.7)
    x = torch.randn(20000, generator=torch.Generator().manual_seed(L)) * 1.5
    with torch.no_grad():
        want = layer(x)
    got = GroupNode(layer.thresh, levels=L, step_mode="m")(x.unsqueeze(0))[0]
    assert torch.allclose(got, want, rtol=0, atol=4e-7 * 1.7)
    assert torch.equal(torch.round(got / (1.7 / L)), torch.round(want / (1.7 / L)))


# ------------------------------------------------------------------------ table and levels
def test_method_records_and_labels():
    for name, signed in (("gn", False), ("gn+neg", True)):
        record = METHODS[name]
        assert record.group and record.signed == signed and record.prerun is None
        assert record.node is (SignedGroupNode if signed else GroupNode)
    assert catalog.METHODS["gn"].row_label(0, "qcfs", 4) == "GN (m=4)"
    assert catalog.METHODS["gn+neg"].row_label(0, "snm", 8) == "GN + Neg (SNM, m=8)"
    assert catalog.METHODS["gn"].row_label(0, "qcfs", (4, 8)) == "GN (m=4/8)"
    assert catalog.METHODS["qcfs"].row_label(0, "qcfs", 4) == "QCFS"


def test_levels_default_to_each_layers_L_and_are_checked():
    ann = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), sjconv.QCFS(4, 1.0), nn.Linear(3, 3), sjconv.QCFS(8, 1.0))
    snn = sjconv.convert(ann, "gn")
    assert [n.levels for n in sjconv.neurons.spiking_nodes(snn)] == [4, 8] and snn.levels == (4, 8)
    assert sjconv.convert(ann, "gn+neg", levels=2).levels == 2
    assert sjconv.convert(ann, "qcfs").levels is None
    with pytest.raises(ConfigError, match="only meaningful for group methods"):
        sjconv.convert(ann, "qcfs", levels=4)
    with pytest.raises(ConfigError, match="whole number >= 1"):
        sjconv.convert(ann, "gn", levels=0)
    with pytest.raises(ConfigError, match="take no pre-run"):
        SpikingNode(1.0, prerun="srp", levels=4)


def test_node_state_and_repr():
    node = SignedGroupNode(torch.tensor([2.0]), levels=8, step_mode="s")
    assert node.v_init == 0.125 and "levels=8" in repr(node) and node.group
    assert not ConvertedIFNode(1.0).group
    node(torch.tensor([3.0]))
    assert node.count.item() == 8 and node.v.item() == pytest.approx(1.125)
    functional.reset_net(node)
    assert node.v == 0.125 and node.count == 0.0


# ---------------------------------------------------------------------------- fine-tuning
@pytest.mark.parametrize("signed", [False, True])
def test_surrogate_forward_is_inference_and_every_member_has_a_gradient(signed):
    theta, levels = 1.2, 4
    x = (torch.randn(6, 40, generator=torch.Generator().manual_seed(8)) * 0.8).requires_grad_()
    node = (SignedGroupNode if signed else GroupNode)(theta, levels=levels, step_mode="m").learnable_threshold()
    out = node(x)
    with torch.no_grad():
        plain = (SignedGroupNode if signed else GroupNode)(theta, levels=levels, step_mode="m")(x)
    assert torch.equal(out.detach(), plain)
    out.sum().backward()
    assert x.grad is not None and node.theta.grad is not None and node.theta.grad.abs().item() > 0
    # one step: d out/d x = q · Σ_j g'(v - j·q), the ZIF triangle over every member's threshold
    xs = torch.tensor([[0.1, 0.4, 0.62, 0.95]], requires_grad=True)
    one = GroupNode(theta, levels=levels, step_mode="m")
    one(xs).sum().backward()
    v = 0.15 + xs.detach()[0]
    q = theta / levels
    want = q * sum(torch.clamp(1 - (v - j * q).abs(), min=0) for j in range(1, levels + 1))
    assert torch.allclose(xs.grad[0], want, rtol=1e-5)


def test_finetune_gn_changes_thresholds_and_keeps_inference_spikes():
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), sjconv.QCFS(4, 1.0), nn.Linear(12, 3)).eval()
    images = torch.randn(24, 16)
    labels = torch.randint(0, 3, (24,))
    loader = [(images[:12], labels[:12]), (images[12:], labels[12:])]
    snn = sjconv.convert(ann, "gn", step_mode="m")
    before = snn.net[2].theta.clone()
    history = sjconv.finetune(snn, loader, T=2, epochs=2, lr=1e-2, progress=False)
    assert len(history) == 2 and snn.net[2].theta.item() != before.item()
    tuned = sjconv.load_into_ann(ann, snn)
    again = sjconv.convert(tuned, "gn")
    assert torch.equal(sjconv.simulate(again, images, 3), sjconv.simulate(snn, images, 3))


# ------------------------------------------------------------------------------ analysis
def test_synaptic_operations_count_units_of_multi_level_spikes():
    """Flatten -> Linear(2, 3) -> QCFS(L=4) -> Linear(3, 2): every unit the group layer sends
    reaches 2 outputs; SOPs count k per event, sop_events one per event (from the element reference)."""
    from sjconv.analysis import analyze

    ann = nn.Sequential(nn.Flatten(), nn.Linear(2, 3, bias=False), sjconv.QCFS(4, 1.0), nn.Linear(3, 2)).eval()
    with torch.no_grad():
        ann[1].weight.copy_(torch.tensor([[0.0625, 0.9], [0.7, 0.25], [-0.5, 1.6]]))
    T = 6
    images = torch.eye(2)
    with torch.no_grad():
        z = ann[1](images)                               # the group layer's input, every step
    out, _, _ = reference_group_node(z.unsqueeze(0).expand(T, -1, -1).numpy(), 1.0, 4)
    units = float(np.abs(out).sum() / 0.25)
    events = float((out != 0).sum())
    assert units > events
    for mode in ("m", "s"):
        result = analyze(ann, sjconv.convert(ann, "gn", step_mode=mode), images, T)
        (layer,) = result["layers"]
        assert layer["spikes_per_image"] == events / 2 and layer["units_per_image"] == units / 2
        op = result["ops"]["layers"][1]
        assert op["sops"] == 2 * units / 2 and op["sop_events"] == 2 * events / 2
        # per image: the units reach 2 outputs each (2·units/2 SOPs); the analog layer costs 6 MACs a step
        assert result["ops"]["snn_energy_pj"] == pytest.approx(0.9 * units + 4.6 * 6.0 * T)


def test_pooled_group_spikes_count_their_units_rounded_up():
    from sjconv.analysis import analyze

    torch.manual_seed(1)
    ann = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), sjconv.QCFS(4, 1.0), nn.AvgPool2d(2),
                        nn.Conv2d(4, 4, 3, padding=1), sjconv.QCFS(4, 1.0), nn.Flatten(),
                        nn.Linear(64, 3)).eval()
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2
    result = analyze(ann, sjconv.convert(ann, "gn"), images, 4)
    ops = {op["name"]: op for op in result["ops"]["layers"]}
    for name in ("3", "6"):
        assert ops[name]["sop_events"] <= ops[name]["sops"] <= 4 * ops[name]["sop_events"]
    assert ops["3"]["sops"] > ops["3"]["sop_events"]   # pooled multi-level spikes: more units than events
    plain = analyze(ann, sjconv.convert(ann, "qcfs"), images, 4)
    assert all(op["sops"] == op["sop_events"] for op in plain["ops"]["layers"])


@pytest.mark.parametrize("mode", ["s", "m"])
def test_analysis_of_gn_leaves_logits_and_finds_no_error_at_T1(mode):
    """With m = L the unevenness-error cases at T = 1 are all 'exact' (φ(1) = a in every layer),
    and the probe's tags and hooks change nothing: logits with and without analysis are equal."""
    from sjconv.analysis import analyze

    torch.manual_seed(1)
    ann = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), sjconv.QCFS(4, 1.0), nn.AvgPool2d(2),
                        nn.Conv2d(4, 4, 3, padding=1), sjconv.QCFS(4, 1.0), nn.Flatten(),
                        nn.Linear(64, 3)).eval()
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2
    snn = sjconv.convert(ann, "gn", step_mode=mode)
    before = sjconv.simulate(snn, images, 3)
    result = analyze(ann, snn, images, 1)
    for layer in result["layers"]:
        assert layer["cases"]["a0_exact"] + layer["cases"]["apos_exact"] == pytest.approx(1.0)
        assert layer["rel_error"] < 1e-6
    assert torch.equal(sjconv.simulate(snn, images, 3), before)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in snn.modules())
