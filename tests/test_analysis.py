"""Per-layer analysis (sjconv.analysis) against hand-computed numbers and brute-force counts."""

import json
import math

import pytest
import torch
import torch.nn as nn

import sjconv
from sjconv import analysis
from sjconv.analysis import analyze, error_vs_T
from sjconv.analysis_plots import format_layer_table, plot_analysis
from sjconv.neurons import SpikingNode

METHODS = ["qcfs", "neg", "srp", "srp+neg"]


def hand_net(theta=1.0, scale=None):
    """Flatten -> Linear(2, 3, no bias) -> QCFS(L=4) -> Linear(3, 2). With the identity batch
    (two images [1, 0] and [0, 1]) the QCFS inputs are the columns of the first weight."""
    ann = nn.Sequential(nn.Flatten(), nn.Linear(2, 3, bias=False), sjconv.QCFS(4, theta), nn.Linear(3, 2))
    w = scale if scale is not None else [[0.0625, 0.3125], [0.375, 0.25], [-0.5, 0.625]]
    with torch.no_grad():
        ann[1].weight.copy_(theta * torch.tensor(w))
    return ann.eval()


def chain_net():
    """1 -> 1 -> 1 chain: layer '2' gets 0.5 and fires every other step; layer '4' gets
    out2 - 0.5 = +0.5, -0.5, +0.5, ... (QCFS activation a = 0)."""
    ann = nn.Sequential(nn.Flatten(), nn.Linear(1, 1, bias=False), sjconv.QCFS(4, 1.0),
                        nn.Linear(1, 1), sjconv.QCFS(4, 1.0), nn.Linear(1, 1))
    with torch.no_grad():
        ann[1].weight.fill_(0.5)
        ann[3].weight.fill_(1.0)
        ann[3].bias.fill_(-0.5)
        ann[5].weight.fill_(1.0)
        ann[5].bias.fill_(0.0)
    return ann.eval()


def random_net():
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), sjconv.QCFS(4, 1.0), nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), sjconv.QCFS(4, 1.0), nn.Flatten(),
        nn.Linear(64, 10), sjconv.QCFS(4, 1.0), nn.Linear(10, 3)).eval()


def random_images(n=4):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2


def by_name(result):
    return {layer["name"]: layer for layer in result["layers"]}


def ops_by_name(result):
    return {op["name"]: op for op in result["ops"]["layers"]}


# ------------------------------------------------------------------ hand-computed numbers
@pytest.mark.parametrize("mode,chunk", [("s", None), ("m", None), ("m", 3)])
def test_hand_net_rates_cases_error_and_ops(mode, chunk):
    # QCFS input z, a = floor(4z + .5)/4; IF with v0 = .5 and constant z over T = 8 steps
    # fires floor(8z + .5) times, φ = count/8:
    #   image 1: z = 1/16 -> a 0,    1 spike  (φ 1/8 > a: case 1)
    #            z = 3/8  -> a 1/2,  3 spikes (φ 3/8 < a: case 3)
    #            z = -1/2 -> a 0,    0 spikes (a = 0, φ = a)
    #   image 2: z = 5/16 -> a 1/4,  3 spikes (φ 3/8 > a: case 2)
    #            z = 1/4  -> a 1/4,  2 spikes (φ = a)
    #            z = 5/8  -> a 3/4,  5 spikes (φ 5/8 < a: case 3)
    ann = hand_net()
    snn = sjconv.convert(ann, "qcfs", step_mode=mode)
    result = analyze(ann, snn, torch.eye(2), T=8, chunk=chunk)
    assert result["T"] == 8 and result["method"] == "qcfs" and result["tau"] == 0
    (layer,) = result["layers"]
    assert layer["name"] == "2" and layer["theta"] == 1.0 and layer["neurons"] == 3
    assert layer["rate"] == pytest.approx(14 / (6 * 8))
    assert layer["rate_pos"] == pytest.approx(14 / 48) and layer["rate_neg"] == 0.0
    assert layer["spikes_per_image"] == pytest.approx(7.0)
    assert layer["cases"] == pytest.approx({
        "a0_exact": 1 / 6, "case1": 1 / 6, "a0_below": 0.0, "apos_exact": 1 / 6, "case2": 1 / 6,
        "case3": 2 / 6, "a_zero": 2 / 6, "a_pos": 4 / 6})
    # φ - a = (1/8, -1/8, 0, 1/8, 0, -1/8); ‖a‖² = 1/4 + 1/16 + 1/16 + 9/16
    assert layer["rel_error"] == pytest.approx(math.sqrt(4 / 64) / math.sqrt(15 / 16))

    ops = result["ops"]
    first, last = ops["layers"]
    assert first == {"name": "1", "input": "analog", "macs": 6.0, "sops": 0.0, "sops_prerun": 0.0,
                     "snn_macs": 6.0 * 8, "sop_events": 0.0}
    # 14 spikes in the batch, each reaching 2 outputs -> 28 SOPs, 14 per image
    assert last == {"name": "3", "input": "spikes", "macs": 6.0, "sops": 14.0, "sops_prerun": 0.0,
                    "snn_macs": 0.0, "sop_events": 14.0}
    assert ops["snn_sops_per_image"] == 14.0 and ops["ann_macs_per_image"] == 12.0
    assert ops["snn_energy_pj"] == pytest.approx(14 * 0.9 + 48 * 4.6)
    assert ops["ann_energy_pj"] == pytest.approx(12 * 4.6)
    assert ops["e_ac_pj"] == 0.9 and ops["e_mac_pj"] == 4.6
    json.dumps(result)  # JSON-serialisable


@pytest.mark.parametrize("mode", ["s", "m"])
def test_error_vs_T_hand_net(mode):
    ann = hand_net()
    snn = sjconv.convert(ann, "qcfs", step_mode=mode)
    errs = error_vs_T(ann, snn, torch.eye(2), [8, 1, 4, 4])
    assert errs["Ts"] == [1, 4, 8] and errs["method"] == "qcfs"
    (layer,) = errs["layers"]
    # T = 1: φ = floor(z + .5) = (0, 0, 0 | 0, 0, 1) -> φ - a = (0, -1/2, 0 | -1/4, -1/4, 1/4)
    # T = 4 = L: constant input, φ = floor(4z + .5)/4 = a exactly
    norm_a = math.sqrt(15 / 16)
    assert layer["rel_error"] == pytest.approx([math.sqrt(7 / 16) / norm_a, 0.0, math.sqrt(1 / 16) / norm_a])
    at_8 = analyze(ann, snn, torch.eye(2), 8)["layers"][0]["rel_error"]
    assert layer["rel_error"][-1] == pytest.approx(at_8)


def test_equality_uses_a_tolerance():
    # θ = 0.7 is not a binary fraction: at T = L = 4 φ equals a up to float rounding only
    ann = hand_net(0.7, [[0.3, 0.1], [0.6, 0.8], [-0.5, 0.45]])
    snn = sjconv.convert(ann, "qcfs")
    layer = analyze(ann, snn, torch.eye(2), T=4)["layers"][0]
    assert 0.0 < layer["rel_error"] < 1e-6  # φ != a bitwise somewhere ...
    assert layer["cases"]["a0_exact"] + layer["cases"]["apos_exact"] == pytest.approx(1.0)  # ... yet equal


@pytest.mark.parametrize("mode", ["s", "m"])
def test_signed_reports_negative_spikes_and_removes_case1(mode):
    ann = chain_net()
    x = torch.ones(1, 1)
    T = 8
    plain = by_name(analyze(ann, sjconv.convert(ann, "qcfs", step_mode=mode), x, T))
    signed_result = analyze(ann, sjconv.convert(ann, "neg", step_mode=mode), x, T)
    signed = by_name(signed_result)
    # layer '2': z = 0.5 -> spikes at t = 1, 3, 5, 7 in both methods; φ = 1/2 = a
    for r in (plain, signed):
        assert r["2"]["rate"] == 0.5 and r["2"]["rate_neg"] == 0.0
        assert r["2"]["cases"]["apos_exact"] == 1.0
    # layer '4' (a = 0): the IF fires once at t = 1, then v oscillates -0.5/0 -> case 1
    assert plain["4"]["rate"] == pytest.approx(1 / 8) and plain["4"]["cases"]["case1"] == 1.0
    # the signed IF alternates +1 (v = 1) and -1 (v = -0.5, count 1): φ = 0 = a
    assert signed["4"]["rate_pos"] == 0.5 and signed["4"]["rate_neg"] == 0.5 and signed["4"]["rate"] == 1.0
    assert signed["4"]["cases"]["a0_exact"] == 1.0 and signed["4"]["rel_error"] is None  # ‖a‖ = 0
    ops = ops_by_name(signed_result)
    assert ops["3"]["sops"] == 4.0   # 4 spikes of layer '2', fan-out 1
    assert ops["5"]["sops"] == 8.0   # 4 positive + 4 negative spikes of layer '4'


@pytest.mark.parametrize("mode", ["s", "m"])
def test_srp_prerun_is_excluded_from_rates_and_reported_in_ops(mode):
    ann = chain_net()
    snn = sjconv.convert(ann, "srp", step_mode=mode, tau=4)
    result = analyze(ann, snn, torch.ones(1, 1), T=8)
    assert result["method"] == "srp" and result["tau"] == 4
    layers = by_name(result)
    # pre-run: layer '2' spikes at t = 1, 3 and ends at v = 0.5 (kept); layer '4' spikes at t = 1
    # and ends at v = -0.5 (masked). Main run: layer '2' 4 spikes, layer '4' silent.
    assert layers["2"]["rate"] == 0.5
    assert layers["4"]["rate"] == 0.0 and layers["4"]["cases"]["a0_exact"] == 1.0
    ops = ops_by_name(result)
    assert ops["1"]["input"] == "analog" and ops["1"]["snn_macs"] == 12.0  # (4 + 8) steps x 1 MAC
    assert (ops["3"]["sops"], ops["3"]["sops_prerun"]) == (4.0, 2.0)
    assert (ops["5"]["sops"], ops["5"]["sops_prerun"]) == (0.0, 1.0)
    assert result["ops"]["snn_sops_per_image"] == 7.0


# ------------------------------------------------------------------ SOPs against brute force
def brute_connections(indicator, out_channels, groups, kernel, stride, padding, out_hw, circular):
    """Σ over nonzero input elements of the number of outputs reading them, by explicit loops."""
    C, H, W = indicator.shape
    per_group_out = out_channels // groups
    total = 0
    for oy in range(out_hw[0]):
        for ox in range(out_hw[1]):
            for ky in range(kernel):
                for kx in range(kernel):
                    h, w = oy * stride - padding + ky, ox * stride - padding + kx
                    if circular:
                        h, w = h % H, w % W
                    elif not (0 <= h < H and 0 <= w < W):
                        continue
                    # every input channel of the window feeds every output channel of its group
                    total += int(indicator[:, h, w].sum()) * per_group_out
    return total


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
@pytest.mark.parametrize("mode", ["s", "m"])
def test_conv_sops_match_brute_force_with_padding_stride_groups(padding_mode, mode):
    torch.manual_seed(3)
    ann = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), sjconv.QCFS(4, 1.0),
        nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2, padding_mode=padding_mode), sjconv.QCFS(4, 1.0),
        nn.Flatten(), nn.Linear(4 * 3 * 3, 3)).eval()
    images = torch.rand(2, 1, 5, 5)
    T = 6
    snn = sjconv.convert(ann, "qcfs", step_mode=mode)
    outs = []
    handle = snn.net[1].register_forward_hook(lambda m, i, o: outs.append(o if mode == "m" else o[None]))
    try:
        sjconv.simulate(snn, images, T)
    finally:
        handle.remove()
    spikes = torch.cat(outs)  # [T, N, 2, 5, 5]: the input of conv '2'
    assert 0 < int((spikes != 0).sum()) < spikes.numel()  # some but not all neurons fire
    circular = padding_mode == "circular"
    expected = sum(brute_connections(s != 0, 4, 2, 3, 2, 1, (3, 3), circular)
                   for step in spikes for s in step) / images.shape[0]
    ops = ops_by_name(analyze(ann, snn, images, T))
    assert ops["2"]["input"] == "spikes"
    assert ops["2"]["sops"] == expected
    # ANN MACs: connections of real inputs (dense indicator); circular padding reads real
    # inputs only, so it equals the analytic out_numel * C_in/groups * k * k
    dense2 = brute_connections(torch.ones(2, 5, 5), 4, 2, 3, 2, 1, (3, 3), circular)
    assert ops["2"]["macs"] == dense2
    if circular:
        assert dense2 == 4 * 3 * 3 * 1 * 9
    else:
        assert dense2 < 4 * 3 * 3 * 1 * 9
    dense0 = brute_connections(torch.ones(1, 5, 5), 2, 1, 3, 1, 1, (5, 5), False)
    assert ops["0"] == {"name": "0", "input": "analog", "macs": dense0, "sops": 0.0, "sops_prerun": 0.0,
                        "snn_macs": dense0 * T, "sop_events": 0.0}
    assert ops["5"]["macs"] == 36 * 3  # Linear: every input feature reaches every output


# ------------------------------------------------------------------ random nets, all methods
def reference_stats(ann, snn, images, T, tau):
    """φ and spike counts from every node output stored in full (last T steps kept)."""
    acts, outs, handles = {}, {}, []
    for name, m in ann.named_modules():
        if isinstance(m, sjconv.QCFS):
            handles.append(m.register_forward_hook(lambda m, i, o, n=name: acts.__setitem__(n, o)))
    with torch.no_grad():
        ann(images)
    for name, m in snn.net.named_modules():
        if isinstance(m, SpikingNode):
            outs[name] = []
            handles.append(m.register_forward_hook(
                lambda m, i, o, n=name: outs[n].append(o if m.step_mode == "m" else o[None])))
    try:
        sjconv.simulate(snn, images, T)
    finally:
        for h in handles:
            h.remove()
    stats = {}
    for name, blocks in outs.items():
        seq = torch.cat(blocks)
        assert seq.shape[0] == tau + T
        seq = seq[tau:]
        phi = seq.double().mean(0)
        a = acts[name].double()
        stats[name] = {"pos": int((seq > 0).sum()), "neg": int((seq < 0).sum()),
                       "rel": float((phi - a).norm() / a.norm()),
                       "case2": float(((a > 0) & (phi > a + 1e-6)).double().mean()),
                       "case1": float(((a == 0) & (phi > 1e-6)).double().mean())}
    return stats


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["s", "m"])
def test_random_net_matches_stored_outputs_and_fractions_sum_to_one(method, mode):
    ann = random_net()
    images = random_images()
    T = 8  # the first negative spikes of this net come at t = 6
    snn = sjconv.convert(ann, method, step_mode=mode)
    result = analyze(ann, snn, images, T, chunk=2 if mode == "m" else None)
    ref = reference_stats(ann, snn, images, T, snn.tau)
    assert [layer["name"] for layer in result["layers"]] == ["1", "4", "7"]
    for layer in result["layers"]:
        r = ref[layer["name"]]
        numel = layer["neurons"] * images.shape[0] * T
        assert layer["rate_pos"] == pytest.approx(r["pos"] / numel)
        assert layer["rate_neg"] == pytest.approx(r["neg"] / numel)
        assert layer["rel_error"] == pytest.approx(r["rel"])
        cases = layer["cases"]
        assert cases["case1"] == pytest.approx(r["case1"]) and cases["case2"] == pytest.approx(r["case2"])
        assert sum(cases[k] for k in analysis.CASES) == pytest.approx(1.0)
        assert cases["a_zero"] + cases["a_pos"] == pytest.approx(1.0)
        assert cases["a0_exact"] + cases["case1"] + cases["a0_below"] == pytest.approx(cases["a_zero"])
    if method in ("neg", "srp+neg"):
        assert any(layer["rate_neg"] > 0 for layer in result["layers"])
    else:
        assert all(layer["rate_neg"] == 0 for layer in result["layers"])
    json.dumps(result)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["s", "m"])
def test_analysis_does_not_change_logits_or_leave_hooks(method, mode):
    ann = random_net()
    images = random_images(2)
    ann_logits = ann(images)
    snn = sjconv.convert(ann, method, step_mode=mode)
    before = sjconv.simulate(snn, images, 6)
    acts = analysis._ann_activations(ann, images)
    with analysis._Probe(snn.net, acts, snn.tau, 6, checkpoints=[3, 6]) as probe:
        during = sjconv.simulate(snn, images, 6)
    probe.check_complete()
    assert probe.neurons[0].steps == 6 and probe.synapses[1].count_main.sum() > 0  # hooks were live
    analyze(ann, snn, images, 6)
    error_vs_T(ann, snn, images, [1, 6])
    after = sjconv.simulate(snn, images, 6)
    assert torch.equal(before, during) and torch.equal(before, after)
    for m in list(snn.modules()) + list(ann.modules()):
        assert not m._forward_hooks and not m._forward_pre_hooks
    assert torch.equal(ann(images), ann_logits)


def test_ann_activations_taken_in_eval_mode_and_training_flag_restored():
    ann = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.BatchNorm1d(4), sjconv.QCFS(4, 1.0),
                        nn.Dropout(0.5), nn.Linear(4, 2)).eval()
    images = torch.rand(3, 4)
    with torch.no_grad():
        ann[2].running_mean.fill_(0.3)
        expected = ann[:4](images)
    snn = sjconv.convert(ann, "qcfs")
    ann.train()
    acts = analysis._ann_activations(ann, images)
    assert ann.training
    assert torch.equal(ann[2].running_mean, torch.full((4,), 0.3))  # no batch-stat update
    assert torch.equal(acts["3"], expected)
    analyze(ann, snn, images, 4)
    assert ann.training


def test_error_vs_T_decreases_on_random_net():
    ann = random_net()
    images = random_images()
    for method in ("qcfs", "neg"):
        errs = error_vs_T(ann, sjconv.convert(ann, method), images, [1, 2, 8, 64])
        # measured: T=1 errors 0.72 / 1.0 / 1.0, T=64 errors 0.17 / 0.43 / 0.47
        for layer in errs["layers"]:
            first, last = layer["rel_error"][0], layer["rel_error"][-1]
            assert last < 0.6 * first, (method, layer)


# ------------------------------------------------------------------ errors, output
class TwiceShared(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.act = sjconv.QCFS(4, 1.0)

    def forward(self, x):
        return self.act(self.fc(self.act(x)))


def test_shared_activation_module_and_mismatched_networks_raise():
    ann = TwiceShared().eval()
    with pytest.raises(ValueError, match="more than once"):
        analyze(ann, sjconv.convert(ann, "qcfs"), torch.rand(2, 2), 4)
    with pytest.raises(ValueError, match="does not match"):
        analyze(hand_net(), sjconv.convert(chain_net(), "qcfs"), torch.eye(2), 4)
    with pytest.raises(ValueError, match="Ts must"):
        error_vs_T(hand_net(), sjconv.convert(hand_net(), "qcfs"), torch.eye(2), [0, 4])


def test_format_table_and_plots(tmp_path):
    ann = random_net()
    images = random_images(2)
    snn = sjconv.convert(ann, "srp+neg")
    result = analyze(ann, snn, images, 4)
    text = format_layer_table(result)
    lines = text.splitlines()
    assert lines[0] == "method=srp+neg T=4 tau=4 images=2"
    assert [line.split()[0] for line in lines[2:5]] == ["1", "4", "7"]
    assert f"{result['layers'][0]['rate']:.4f}" in lines[2]
    assert f"{result['ops']['snn_energy_pj']:.4g} pJ" in lines[-1]
    errs = error_vs_T(ann, snn, images, [1, 2, 4])
    paths = plot_analysis(result, errs, str(tmp_path / "run"))
    names = sorted(p.rsplit("/", 1)[1] for p in paths)
    assert names == ["run_cases.png", "run_error_vs_T.png", "run_rates.png"]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert len(plot_analysis(result, None, str(tmp_path / "noerr"))) == 2


def test_statistics_and_presentation_are_separate_modules():
    import os
    import subprocess
    import sys

    from sjconv import analysis_plots
    # the old names stay importable from sjconv.analysis, and are the plotting module's functions
    assert format_layer_table is analysis_plots.format_layer_table
    assert plot_analysis is analysis_plots.plot_analysis
    code = ("import sys, torch, sjconv.analysis as a; import torch.nn as nn; import sjconv;"
            "ann = nn.Sequential(nn.Flatten(), nn.Linear(2, 2), sjconv.QCFS(4, 1.0)).eval();"
            "r = a.analyze(ann, sjconv.convert(ann, 'qcfs'), torch.eye(2), 4);"
            "print('matplotlib' in sys.modules)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # '-c' imports from cwd first
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"   # the statistics never load matplotlib


def test_error_vs_T_plot_gives_every_layer_its_own_colour():
    from matplotlib.colors import to_hex

    from sjconv.analysis_plots import error_vs_T_figure
    layers = [{"name": f"layer{i}", "rel_error": [1.0 / (i + 1), 0.5 / (i + 1)]} for i in range(19)]
    fig = error_vs_T_figure({"Ts": [1, 2], "method": "qcfs", "layers": layers})
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == [L["name"] for L in layers]
    assert len({to_hex(line.get_color()) for line in lines}) == 19


def test_plots_name_the_layers_of_a_sequential_not_only_their_indices():
    """A layer of an nn.Sequential (the digits demo's CNN) has a module path of indices, "2", "5":
    the legend and the axis say which neuron layer it is, with the path beside it."""
    from sjconv.analysis_plots import error_vs_T_figure, layer_labels, rates_figure

    assert layer_labels(["2", "5", "layer1.2", "0.3"]) == ["neuron 1 (module 2)", "neuron 2 (module 5)", "layer1.2",
                                                          "neuron 4 (module 0.3)"]
    layers = [{"name": name, "rel_error": [0.5, 0.25]} for name in ("2", "5", "9")]
    fig = error_vs_T_figure({"Ts": [1, 2], "method": "qcfs", "layers": layers})
    assert [line.get_label() for line in fig.axes[0].get_lines()] == [
        "neuron 1 (module 2)", "neuron 2 (module 5)", "neuron 3 (module 9)"]
    result = _layers_result([(0.1, 0.0), (0.2, 0.0)])
    for i, L in enumerate(result["layers"]):
        L["name"] = str(3 * i + 2)
    ticks = [t.get_text() for t in rates_figure(result).axes[0].get_xticklabels()]
    assert ticks == ["neuron 1 (module 2)", "neuron 2 (module 5)"]


def _layers_result(rates):
    """An ``analyze``-shaped result with the given (positive, negative) rate per layer."""
    cases = {"a0_exact": 0.4, "case1": 0.1, "a0_below": 0.0, "apos_exact": 0.3, "case2": 0.1, "case3": 0.1}
    return {"method": "neg", "T": 4, "tau": 0,
            "layers": [{"name": f"l{i}", "rate_pos": p, "rate_neg": n, "cases": cases} for i, (p, n) in
                       enumerate(rates)]}


def test_bar_plots_leave_headroom_above_the_tallest_bar():
    from sjconv.analysis_plots import cases_figure, rates_figure

    rates = [(0.2, 0.05), (0.6, 0.15), (0.1, 0.0)]
    ax = rates_figure(_layers_result(rates)).axes[0]
    tallest = max(p + n for p, n in rates)
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] >= 1.2 * tallest
    top = max(patch.get_y() + patch.get_height() for patch in ax.patches)
    assert top == pytest.approx(tallest)
    ax = cases_figure(_layers_result(rates)).axes[0]
    top = max(patch.get_y() + patch.get_height() for patch in ax.patches)
    assert top == pytest.approx(1.0) and ax.get_ylim()[1] > 1.0
    assert rates_figure(_layers_result([(0.0, 0.0)])).axes[0].get_ylim()[1] > 0   # a silent net: still an axis


def test_layer_table_explains_its_case_columns():
    """The printed table says what a=0, c1, a>0, c2, c3 and rel_err mean (the docs/protocols.md#unevenness-statistics cases)."""
    ann = random_net()
    text = format_layer_table(analyze(ann, sjconv.convert(ann, "qcfs"), random_images(2), 2))
    header = text.splitlines()[1].split()
    assert header[6:] == ["a=0", "c1", "a>0", "c2", "c3", "rel_err"]
    assert "c1: case 1, a=0 and φ>a" in text and "c2: case 2, a>0 and φ>a" in text
    assert "c3: case 3, a>0 and φ<a" in text and "a=0, a>0: fraction of elements" in text
    assert "rel_err: ‖φ − a‖ / ‖a‖" in text
