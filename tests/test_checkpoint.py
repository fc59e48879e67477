"""Official checkpoint layouts (v2 as is, v1 names mapped) and clear errors on mismatch."""

from collections import OrderedDict

import pytest
import torch

import sjconv
from sjconv.errors import CheckpointError


def _randomized(model):
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    return model


def _v1_names(state):
    """Rename v2 keys to the official v1 names (thresholds 'up', blocks' act -> 'relu')."""
    out = OrderedDict()
    for k, v in state.items():
        if k.endswith("act.thresh"):
            k = k[: -len("act.thresh")] + "relu.up"
        elif k.endswith("thresh"):
            k = k[: -len("thresh")] + "up"
        out[k] = v
    return out


@pytest.mark.parametrize("arch", ["vgg16", "resnet20"])
@pytest.mark.parametrize("version", ["v2", "v1", "dataparallel", "nested"])
def test_checkpoint_round_trip(tmp_path, arch, version):
    src = _randomized(sjconv.models.build(arch, num_classes=100))
    state = src.state_dict()
    if version == "v1":
        state = _v1_names(state)
        assert any(k.endswith(".up") for k in state)
    elif version == "dataparallel":
        state = OrderedDict(("module." + k, v) for k, v in state.items())
    elif version == "nested":
        state = {"state_dict": state, "epoch": 300}
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)
    dst = sjconv.load_checkpoint(sjconv.models.build(arch, num_classes=100), path)
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k


def test_official_v2_state_dict_loads_with_plain_load_state_dict():
    src = _randomized(sjconv.models.vgg16(num_classes=10))
    keys = list(src.state_dict())
    for key in ["layer1.0.weight", "layer1.1.running_mean", "layer1.2.thresh", "layer1.4.weight",
                "layer1.6.thresh", "classifier.1.weight", "classifier.2.thresh", "classifier.4.weight",
                "classifier.5.thresh", "classifier.7.weight"]:
        assert key in keys
    assert src.classifier[1].in_features == 512
    assert sjconv.models.vgg16(num_classes=1000).classifier[1].in_features == 512 * 7 * 7
    sjconv.models.vgg16(num_classes=10).load_state_dict(src.state_dict())


def test_resnet_keys_follow_official_layout():
    keys = set(sjconv.models.resnet18().state_dict())
    for key in ["conv1.0.weight", "conv1.2.thresh", "conv2_x.0.residual_function.0.weight",
                "conv2_x.0.residual_function.2.thresh", "conv2_x.0.act.thresh",
                "conv3_x.0.shortcut.0.weight", "conv3_x.0.shortcut.1.running_var", "conv5_x.1.act.thresh",
                "fc.weight"]:
        assert key in keys
    assert "conv2_x.0.shortcut.0.weight" not in keys
    r20 = set(sjconv.models.resnet20().state_dict())
    assert "conv4_x.2.act.thresh" in r20 and "conv5_x.0.act.thresh" not in r20


def test_mismatching_checkpoint_names_keys_and_architecture(tmp_path):
    state = sjconv.models.resnet20().state_dict()
    path = tmp_path / "r20.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        sjconv.load_checkpoint(sjconv.models.vgg16(), path, arch="vgg16")
    msg = str(info.value)
    assert "vgg16" in msg and "missing keys: classifier.1.bias" in msg and "unexpected keys: conv1.0.weight" in msg


def test_shape_mismatch_is_reported(tmp_path):
    path = tmp_path / "c100.pth"
    torch.save(sjconv.models.resnet20(num_classes=100).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"shape mismatch: fc.bias \(100,\) vs \(10,\)"):
        sjconv.load_checkpoint(sjconv.models.resnet20(num_classes=10), path)


def test_missing_or_unreadable_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        sjconv.load_checkpoint(sjconv.models.resnet20(), tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="could not read"):
        sjconv.load_checkpoint(sjconv.models.resnet20(), bad)


def test_qcfs_forward_matches_formula():
    layer = sjconv.QCFS(L=4, thresh=2.0)
    x = torch.tensor([-1.0, 0.0, 0.24, 0.26, 0.74, 1.0, 1.9, 2.0, 5.0])
    # y = θ·floor(clamp(x/θ,0,1)·L + 0.5)/L with θ = 2, L = 4: steps of 0.5, rounding at 0.25, 0.75 ...
    assert layer(x).tolist() == [0.0, 0.0, 0.0, 0.5, 0.5, 1.0, 2.0, 2.0, 2.0]
    x.requires_grad_(True)
    layer(x).sum().backward()
    assert layer.thresh.grad is not None and x.grad[3] == pytest.approx(1.0)  # straight-through floor
