"""sjconv.experiment borrows the caller's ANN: device and train/eval modes come back as they were."""

import pytest
import torch

import sjconv
from sjconv.experiment import analyze_methods, run_methods


def _model_and_loader():
    torch.manual_seed(0)
    ann = sjconv.models.small_cnn(num_classes=3, in_channels=1, image_size=8, L=4, width=4)
    images, labels = torch.rand(6, 1, 8, 8), torch.randint(0, 3, (6,))
    return ann, [(images[:3], labels[:3]), (images[3:], labels[3:])], images


def _modes(ann):
    return [module.training for module in ann.modules()]


def test_run_and_analyze_methods_restore_the_train_eval_modes(tmp_path):
    ann, loader, images = _model_and_loader()
    ann.train()
    next(m for m in ann.modules() if isinstance(m, torch.nn.BatchNorm2d)).eval()   # a mixed state
    before = _modes(ann)
    assert len(set(before)) == 2
    results = run_methods(ann, loader, ["qcfs", "srp"], [1, 2], tau=1, progress=False)
    assert _modes(ann) == before and len(results["methods"]) == 2
    analyze_methods(ann, images, ["qcfs"], [1, 2], str(tmp_path / "a"))
    assert _modes(ann) == before
    with pytest.raises(sjconv.ConfigError):   # restored on errors too
        run_methods(ann, loader, ["qcfs"], [1], progress=False, chunk=0)
    assert _modes(ann) == before


@pytest.mark.gpu
def test_run_methods_gives_the_ann_back_on_its_own_device(tmp_path):
    ann, loader, images = _model_and_loader()
    results = run_methods(ann, loader, ["qcfs"], [1, 2], device="cuda", progress=False)
    assert next(ann.parameters()).device.type == "cpu" and results["num_images"] == 6
    analyze_methods(ann.cuda(), images, ["qcfs"], [1], str(tmp_path / "a"), device="cpu")
    assert next(ann.parameters()).is_cuda
