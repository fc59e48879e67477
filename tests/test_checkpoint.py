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


def _damaged_files(tmp_path):
    """Files torch.load cannot read safely, by name: each must give a one-line error."""
    whole = tmp_path / "whole_model.pth"
    torch.save(sjconv.models.resnet20(), whole)          # a pickled nn.Module, not a state dict
    text = tmp_path / "text.pth"
    text.write_text("not a checkpoint")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    good = tmp_path / "good.pth"
    torch.save(sjconv.models.resnet20().state_dict(), good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return {"whole": whole, "text": text, "empty": empty, "cut": cut}


@pytest.mark.parametrize("kind,problem", [("whole", "sjconv.models.resnet.ResNet.*state_dict"),
                                          ("text", "not a file written by torch.save"),
                                          ("empty", "ends early"),
                                          ("cut", "not a file written by torch.save, or a damaged one")])
def test_unreadable_checkpoint_is_one_line_naming_file_and_problem(tmp_path, kind, problem):
    path = _damaged_files(tmp_path)[kind]
    with pytest.raises(CheckpointError, match=problem) as info:
        sjconv.load_checkpoint(sjconv.models.resnet20(), path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"could not read checkpoint {path}: ")
    assert "weights_only" not in msg and len(msg) < 400


def test_checkpoint_with_argparse_namespace_loads_safely(tmp_path, monkeypatch):
    import argparse
    src = _randomized(sjconv.models.resnet20())
    path = tmp_path / "research.pth"
    torch.save({"state_dict": src.state_dict(), "args": argparse.Namespace(arch="resnet20", lr=0.1),
                "epoch": 299, "best_acc": 91.5}, path)
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    dst = sjconv.load_checkpoint(sjconv.models.resnet20(), path)
    assert calls == [True]   # the safe loader, with the type allow-listed, never weights_only=False
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k
    # the allow-list is scoped to the read: a plain safe torch.load still refuses the type
    with pytest.raises(Exception, match="argparse.Namespace"):
        real_load(path, weights_only=True)


@pytest.mark.parametrize("arch,key", [("resnet20", "fc"), ("vgg16", "classifier.7")])
def test_class_count_mismatch_names_num_classes(tmp_path, arch, key):
    path = tmp_path / "c100.pth"
    torch.save(sjconv.models.build(arch, num_classes=100).state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        sjconv.load_checkpoint(sjconv.models.build(arch, num_classes=10), path, arch=f"{arch} (cifar10)")
    msg = str(info.value)
    assert f"the checkpoint's classifier '{key}' has 100 outputs, the model 10: build the model with " \
           "num_classes=100 (--dataset cifar100 on the command line)" in msg
    assert f"shape mismatch: {key}.bias (100,) vs (10,)" in msg


def test_no_class_count_hint_when_the_classifier_matches(tmp_path):
    path = tmp_path / "r20.pth"
    state = sjconv.models.resnet20().state_dict()
    state["conv1.0.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        sjconv.load_checkpoint(sjconv.models.resnet20(), path)
    assert "num_classes" not in str(info.value) and "conv1.0.weight (8, 3, 3, 3)" in str(info.value)


@pytest.mark.parametrize("key, value", [("conv1.0.weight", float("nan")), ("conv1.1.running_var", float("inf")),
                                        ("conv1.2.thresh", float("nan"))])
def test_non_finite_checkpoint_is_refused_and_nothing_loaded(tmp_path, key, value):
    """A diverged run's weights, batch norm buffers or thresholds are refused by name (a NaN weight
    evaluates to 0.00 % at every T without a sign of the cause)."""
    model = sjconv.models.resnet20(num_classes=10)
    state = _randomized(sjconv.models.resnet20(num_classes=10)).state_dict()
    state[key].view(-1)[:2] = value
    bad = min(2, state[key].numel())
    path = tmp_path / "diverged.pth"
    torch.save(state, path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} holds NaN or inf in {key} \({bad} of "):
        sjconv.load_checkpoint(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match=rf"the checkpoint holds NaN or inf in {key} "):
        sjconv.load_checkpoint(model, state)


def test_non_finite_checkpoint_is_one_error_line_of_the_tool(tmp_path, capsys):
    from sjconv.cli import eval_cifar

    state = sjconv.models.resnet20(num_classes=10, L=4).state_dict()
    state["fc.weight"][0, 0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    (tmp_path / "data").mkdir()
    status = eval_cifar.cli(["--arch", "resnet20", "--checkpoint", str(path), "--L", "4", "--device", "cpu",
                             "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "never.json")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status != 0 and len(err) == 1, err
    assert err[0].startswith("error: checkpoint") and "holds NaN or inf in fc.weight (1 of 640 values)" in err[0]
    assert not (tmp_path / "never.json").exists()
