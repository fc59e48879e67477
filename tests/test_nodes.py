"""Neuron nodes against hand-computed sequences and a plain reference loop (docs/methods.md#if-neuron, docs/methods.md#signed-neuron, docs/methods.md#srp)."""

import sys

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional, monitor

from sjconv.neurons import protocol
from sjconv.errors import BackendUnavailableError
from sjconv.neurons import ConvertedIFNode, SignedIFNode, SpikingNode, SRPIFNode, SRPSignedIFNode

from reference import reference_node

KINDS = [  # (signed, srp)
    (False, False), (True, False), (False, True), (True, True)]


def run(node, x_seq, mode):
    functional.reset_net(node)
    node.step_mode = mode
    if mode == "m":
        return node(x_seq)
    return torch.stack([node(x) for x in x_seq])


def tensor(values):
    return torch.tensor(values, dtype=torch.float32)


# ------------------------------------------------------------------ hand-computed sequences
def test_if_hand_sequence_fires_at_threshold_and_soft_resets():
    node = ConvertedIFNode(1.0)
    # v: 0.5 -> 1.1 spike (0.1) -> 0.7 -> 0.7 -> 1.9 spike (0.9) -> 1.4 spike (0.4)
    out = run(node, tensor([[0.6], [0.6], [0.0], [1.2], [0.5]]), "m")
    assert out.flatten().tolist() == [1.0, 0.0, 0.0, 1.0, 1.0]
    assert node.v.item() == pytest.approx(0.4, abs=1e-6)
    # exactly at threshold fires (>=): v = 0.5 + 0.5 = θ
    assert run(ConvertedIFNode(1.0), tensor([[0.5]]), "s").item() == 1.0


def test_if_output_amplitude_is_theta():
    out = run(ConvertedIFNode(2.5), tensor([[3.0], [0.0]]), "m")
    assert out.flatten().tolist() == [2.5, 0.0]


def test_signed_negative_spike_takes_back_earlier_positive():
    node = SignedIFNode(1.0)
    # t1: v = 1.1 -> +1 (v 0.1, c 1); t2: v = -0.8 < 0 and c > 0 -> -1 (v 0.2, c 0); t3: v = -0.8, c = 0 -> 0
    out = run(node, tensor([[0.6], [-0.9], [-1.0]]), "m")
    assert out.flatten().tolist() == [1.0, -1.0, 0.0]
    assert node.count.item() == 0.0
    assert node.v.item() == pytest.approx(-0.8, abs=1e-6)


def test_signed_no_negative_spike_at_t1_or_while_count_zero():
    out = run(SignedIFNode(1.0), tensor([[-2.0], [-1.0], [-3.0]]), "m")
    assert out.flatten().tolist() == [0.0, 0.0, 0.0]


def test_signed_snm_rule_starts_at_zero_and_fires_negative_at_minus_theta():
    node = SignedIFNode(1.0, neg_rule="snm")
    # v0 = 0: t1 v = 1 -> +1 (v 0); t2 v = -0.6 > -θ -> 0; t3 v = -1.0 <= -θ -> -1 (v 0)
    out = run(node, tensor([[1.0], [-0.6], [-0.4]]), "m")
    assert out.flatten().tolist() == [1.0, 0.0, -1.0]
    assert node.v.item() == 0.0
    # the default rule (v0 = 0.5) fires negative at t2: v = 1.5 -> +1 (0.5), then -0.1 < 0 -> -1
    assert run(SignedIFNode(1.0), tensor([[1.0], [-0.6]]), "m").flatten().tolist() == [1.0, -1.0]


def test_signed_integrated_output_is_rounded_sum_for_constant_input():
    theta = 0.75
    values = torch.arange(-64, 49, dtype=torch.float32) / 64  # dyadic, up to θ (one spike per step)
    for T in (1, 2, 3, 7, 16):
        out = run(SignedIFNode(theta), values.expand(T, -1).contiguous(), "m")
        expected = theta * torch.clamp(torch.floor(T * values / theta + 0.5), min=0)
        torch.testing.assert_close(out.sum(0), expected, rtol=0, atol=1e-5)


def test_signed_integrated_output_is_rounded_sum_for_bounded_random_input():
    """With |x| < θ the signed neuron keeps Σout = θ·round-half-up(Σx/θ) clipped at 0 every step."""
    theta = 1.0
    x = torch.randint(-63, 64, (32, 500)).float() / 64
    out = run(SignedIFNode(theta), x, "m")
    expected = theta * torch.clamp(torch.floor(x.cumsum(0) / theta + 0.5), min=0)
    torch.testing.assert_close(out.cumsum(0), expected, rtol=0, atol=0)


def test_srp_masked_neuron_still_integrates_and_resets():
    node = SRPIFNode(1.0)
    functional.reset_net(node)
    node.step_mode = "m"
    node(tensor([[-1.0, 0.3]]))           # pre-run: v = [-0.5, 0.8]
    protocol.end_prerun(node)
    assert node.mask.tolist() == [False, True]
    assert node.v == 0.5                  # restarted at θ/2
    out = node(tensor([[0.6, 0.6], [0.6, 0.6]]))
    # both integrate identically (1.1 -> spike -> 0.1, then 0.7); only the dead one's output is suppressed
    assert out.tolist() == [[0.0, 1.0], [0.0, 0.0]]
    assert node.v.tolist() == pytest.approx([0.7, 0.7], abs=1e-6)


def test_srp_signed_mask_applies_to_both_signs_and_count_restarts():
    node = SRPSignedIFNode(1.0)
    functional.reset_net(node)
    node(tensor([0.6]))                   # pre-run: spike, v = 0.1, count 1
    assert node.count.item() == 1.0
    protocol.end_prerun(node)
    assert node.count == 0.0 and node.mask.tolist() == [True]
    node.mask = torch.tensor([False])     # force the neuron dead: no output of either sign
    out = run_keep(node, tensor([[0.6], [-0.9]]))
    assert out.flatten().tolist() == [0.0, 0.0]
    assert node.count.item() == 0.0       # it did spike +1 then -1 internally


def run_keep(node, x_seq):
    node.step_mode = "m"
    return node(x_seq)


def test_srp_masks_are_per_sample():
    node = SRPIFNode(1.0)
    functional.reset_net(node)
    node(torch.tensor([[-1.0, 0.2], [0.2, -1.0]]))   # two samples, two neurons
    protocol.end_prerun(node)
    assert node.mask.tolist() == [[False, True], [True, False]]


def test_reset_clears_state_and_mask():
    node = SRPSignedIFNode(1.0)
    node(tensor([0.9]))
    protocol.end_prerun(node)
    functional.reset_net(node)
    assert node.v == 0.5 and node.count == 0.0 and node.mask is None


# ---------------------------------------------------------------- random vs reference loop
@pytest.mark.parametrize("signed,masked", KINDS)
@pytest.mark.parametrize("mode", ["s", "m"])
def test_random_input_matches_reference_loop(signed, masked, mode):
    theta = 0.7
    x = torch.randn(12, 3, 5) * 0.6
    mask = torch.rand(3, 5) > 0.3 if masked else None
    node = SpikingNode(theta, signed=signed, prerun="srp" if masked else None)
    functional.reset_net(node)
    node.step_mode = mode
    if masked:
        node.mask = mask
    out = node(x) if mode == "m" else torch.stack([node(xt) for xt in x])
    ref_out, ref_v, ref_c = reference_node(x.numpy(), theta, signed=signed, mask=mask)
    assert torch.equal(out, torch.from_numpy(ref_out))
    assert torch.equal(node.v, torch.from_numpy(ref_v))
    if signed:
        assert torch.equal(node.count, torch.from_numpy(ref_c))


@pytest.mark.parametrize("snm", [False, True])
def test_signed_random_matches_reference_with_both_rules(snm):
    x = torch.randn(20, 64) * 0.8
    node = SignedIFNode(0.5, neg_rule="snm" if snm else "qcfs")
    out = run(node, x, "m")
    ref_out, _, ref_c = reference_node(x.numpy(), 0.5, signed=True, snm=snm)
    assert torch.equal(out, torch.from_numpy(ref_out))
    assert torch.equal(node.count, torch.from_numpy(ref_c))
    assert (out < 0).any() and (out > 0).any()   # both signs exercised


@pytest.mark.parametrize("signed,masked", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_step_modes_bit_identical_and_dtypes(signed, masked, dtype):
    x = (torch.randn(9, 4, 6, 5) * 0.8).to(dtype)
    results = []
    for mode in ("s", "m"):
        node = SpikingNode(0.9, signed=signed, prerun="srp" if masked else None)
        out = run(node, x, mode)
        assert out.dtype == dtype
        assert node.v.dtype == torch.float32          # membrane stays float32
        results.append((out, node.v))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


def test_split_calls_continue_where_the_last_stopped():
    x = torch.randn(10, 8) * 0.7
    whole = run(SignedIFNode(0.6), x, "m")
    node = SignedIFNode(0.6)
    parts = [run(node, x[:3], "m")] + [node(x[3:7]), node(x[7:])]
    assert torch.equal(torch.cat(parts), whole)


def test_store_v_seq_in_multistep_mode():
    node = ConvertedIFNode(1.0, store_v_seq=True)
    out = run(node, tensor([[0.6], [0.6], [0.2]]), "m")
    assert out.flatten().tolist() == [1.0, 0.0, 0.0]
    assert node.v_seq.shape == (3, 1)
    assert node.v_seq.flatten().tolist() == pytest.approx([0.1, 0.7, 0.9], abs=1e-6)


# ------------------------------------------------------------- SpikingJelly integration
def test_works_with_spikingjelly_functional_and_monitor():
    net = torch.nn.Sequential(torch.nn.Identity(), ConvertedIFNode(1.0), SignedIFNode(1.0))
    functional.set_step_mode(net, "m")
    assert net[1].step_mode == "m" and net[2].step_mode == "m"
    mon = monitor.OutputMonitor(net, SignedIFNode)
    out = net(torch.full((4, 2), 0.7))
    assert len(mon.records) == 1 and torch.equal(mon.records[0], out)
    functional.reset_net(net)
    assert net[1].v == 0.5 and net[2].count == 0.0
    mon.remove_hooks()


def test_half_threshold_matches_spikingjelly_half_threshold_if_node():
    from spikingjelly.activation_based.neuron import HalfThresholdIFNode
    x = torch.randn(16, 100)
    sj = HalfThresholdIFNode(0.8, step_mode="m")
    ours = run(ConvertedIFNode(0.8), x, "m")
    assert torch.equal(ours, sj(x) * 0.8)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="v_threshold"):
        ConvertedIFNode(0.0)
    with pytest.raises(ValueError, match="neg_rule"):
        SignedIFNode(1.0, neg_rule="foo")
    with pytest.raises(ValueError, match="backend"):
        ConvertedIFNode(1.0, backend="jax")


def test_cupy_backend_without_cupy_fails_when_the_node_is_built(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)   # as on an install without the cupy extra
    with pytest.raises(BackendUnavailableError, match=r"pip install 'sjconv\[cupy13\]'"):
        ConvertedIFNode(1.0, backend="cupy")


def test_threshold_from_parameter_tensor():
    node = ConvertedIFNode(torch.nn.Parameter(torch.tensor([2.0])))
    assert node.v_threshold == 2.0 and isinstance(node.v_threshold, float)
    assert np.isclose(node.v_init, 1.0)


@pytest.mark.parametrize("signed,masked", KINDS)
def test_float64_inputs_keep_float64_theta_and_state_in_both_step_modes(signed, masked):
    """θ = 0.1 as a float64 tensor is not a float32 number: the node keeps it exactly, its state is
    float64 in 's' and 'm' mode alike, and the spikes are the float64 reference's."""
    theta = torch.tensor(0.1, dtype=torch.float64)
    assert float(theta.float()) != float(theta)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(12, 4, 30, generator=gen, dtype=torch.float64) * 0.08
    mask = torch.rand(4, 30, generator=gen) > 0.3 if masked else None
    want, v_end, count_end = reference_node(x.numpy(), 0.1, signed=signed, dtype=np.float64,
                                            mask=None if mask is None else mask.numpy())
    for mode in ("s", "m"):
        node = SpikingNode(theta, signed=signed, prerun="srp" if masked else None)
        assert node.theta.dtype == torch.float64 and node.v_threshold == 0.1
        functional.reset_net(node)
        node.mask = mask
        node.step_mode = mode
        out = node(x) if mode == "m" else torch.stack([node(step) for step in x])
        assert out.dtype == torch.float64 and node.v.dtype == torch.float64, mode
        assert np.array_equal(out.numpy(), want), mode
        assert np.array_equal(node.v.numpy(), v_end), mode
        if signed:
            assert node.count.dtype == torch.float64 and np.array_equal(node.count.numpy(), count_end)
