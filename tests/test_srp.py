"""SRP (docs/methods.md#srp) against references written from docs/methods.md#srp: the mask element by element, with
the cases at its boundary, and whole converted networks against a reference in the style of the
SRP reference code (tests/reference.py)."""

import numpy as np
import pytest
import torch

import sjconv
from sjconv.neurons import SRPIFNode, SRPSignedIFNode, rules

from reference import reference_node, reference_srp_mask, reference_srp_network_logits, srp_bound


def _boundary_potentials(theta, dtype):
    """Residual potentials at and around the mask bound 1e-3·θ, at 0 and far from both."""
    bound = srp_bound(theta, dtype)
    return np.array([bound, np.nextafter(bound, dtype(np.inf)), np.nextafter(bound, dtype(-np.inf)),
                     dtype(0.0), dtype(-0.0), np.nextafter(dtype(0.0), dtype(1)), bound / dtype(2),
                     dtype(2) * bound, -bound, dtype(theta) / dtype(2), dtype(-theta)], dtype=dtype)


@pytest.mark.parametrize("theta", [1.0, 0.7, 3.3, 1e-3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_srp_mask_matches_element_reference_at_its_boundary(theta, dtype):
    v = _boundary_potentials(theta, dtype)
    want = reference_srp_mask(v, theta, dtype)
    # the cases that pin the rule down: exactly at the bound is dead, one ulp above is kept,
    # one ulp below (still > 0) is dead, 0 and below are dead
    assert want[:6].tolist() == [False, True, False, False, False, False]
    got = rules.srp_mask(torch.from_numpy(v), theta)
    assert got.dtype == torch.bool
    assert got.numpy().tolist() == want.tolist()


@pytest.mark.parametrize("node_cls, signed", [(SRPIFNode, False), (SRPSignedIFNode, True)])
def test_node_mask_from_its_prerun_matches_reference(node_cls, signed):
    """A node's mask after its pre-run is the reference mask of its residual potential (the
    pre-run is the plain or signed rule from θ/2, element by element in the reference), and the
    main run's outputs are the reference node's outputs times that mask."""
    theta, tau, steps = 0.75, 4, 6
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(tau, 8, 50, generator=gen) * 0.4
    bound = srp_bound(theta)
    # residuals exactly on the bound, one ulp below it, on 0 and one ulp above the bound:
    # -θ/2 empties the neuron exactly (θ/2 is exact), the next input is the residual
    x[:, 0, :4] = 0.0
    x[0, 0, :4] = -theta / 2
    x[1, 0, :4] = torch.from_numpy(np.array([bound, np.nextafter(bound, np.float32(0)), 0.0,
                                             np.nextafter(bound, np.float32(1))], dtype=np.float32))
    node = node_cls(theta, step_mode="m", prerun_steps=tau)
    node.begin_prerun()
    node(x)
    node.end_prerun()
    _, v_end, _ = reference_node(x.numpy(), theta, signed=signed)
    want = reference_srp_mask(v_end, theta)
    assert want[0, :4].tolist() == [False, False, False, True] and want.any() and not want.all()
    assert np.array_equal(node.mask.numpy(), want)
    main = torch.randn(steps, 8, 50, generator=gen) * 0.4
    out = node(main)
    ref, _, _ = reference_node(main.numpy(), theta, signed=signed, mask=want)
    assert np.array_equal(out.numpy(), ref)


@pytest.mark.parametrize("fixture, method, T", [("vgg16", "srp", 3), ("vgg16", "srp+neg", 1),
                                                ("resnet20", "srp", 1), ("resnet20", "srp+neg", 3)])
def test_converted_network_matches_srp_reference(fixture, method, T, request):
    """Per-step logits of converted VGG16/ResNet20 against the MPLayer-style reference network."""
    ann, images = request.getfixturevalue(fixture)
    snn = sjconv.convert(ann, method=method, step_mode="m")
    got = sjconv.simulate(snn, images, T=T)
    want = reference_srp_network_logits(ann, images, T, tau=snn.tau, signed=method == "srp+neg")
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), (got - want).abs().max()
    # the mask matters here: some neurons are dead
    assert any((~n.mask).any() for n in sjconv.neurons.spiking_nodes(snn))
