"""convert keeps the ANN's memory format, dtype and device in every layer (issue #19): a
channels_last bfloat16 ANN gives a channels_last bfloat16 SNN, whose convolutions then see the
same layouts as the ANN's and whose neurons get channels_last steps."""

import pytest
import torch

import sjconv
from sjconv.neurons import SpikingNode

from reference import calibrate_thresholds


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_and_dtype_survive_conversion(dtype):
    images = torch.randn(2, 3, 32, 32)
    ann = calibrate_thresholds(sjconv.models.resnet20(), images).to(dtype=dtype, memory_format=torch.channels_last)
    snn = sjconv.convert(ann, "neg", "m")
    convs = [m for m in snn.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.dtype == dtype for c in convs)
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert all(not c.weight.is_contiguous() for c in convs if c.weight.shape[-1] > 1)
    ann_convs = [m for m in ann.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(ann_convs) == len(convs)
    for new, old in zip(convs, ann_convs):
        assert new.weight.stride() == old.weight.stride() and torch.equal(new.weight, old.weight)
    steps = []
    handles = [n.register_forward_pre_hook(lambda m, args: steps.append(args[0][0]))
               for n in snn.net.modules() if isinstance(n, SpikingNode)]
    logits = sjconv.simulate(snn, images.to(dtype).contiguous(memory_format=torch.channels_last), 2)
    for h in handles:
        h.remove()
    assert torch.isfinite(logits.float()).all()
    four_d = [s for s in steps if s.dim() == 4 and s.shape[1] > 1 and s.shape[-1] > 1]
    assert four_d and all(s.is_contiguous(memory_format=torch.channels_last) and s.dtype == dtype for s in four_d)


def test_a_contiguous_ann_stays_contiguous():
    ann = sjconv.models.resnet20()
    snn = sjconv.convert(ann, "qcfs", "m")
    assert all(p.is_contiguous() for p in snn.net.parameters())
