"""Shared fixtures: a fake CIFAR in torchvision's file layout, a tiny official checkpoint, and random
VGG16 / ResNet20 QCFS networks whose thresholds are calibrated so that every layer spikes."""

import os
import pickle

import numpy as np
import pytest
import torch

import sjconv

from reference import calibrate_thresholds


def write_fake_cifar(root, dataset="cifar10", n=12, seed=0):
    """Files in torchvision's CIFAR layout (pickled batches) holding ``n`` random images."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
    if dataset == "cifar10":
        folder, classes, label_key, meta = "cifar-10-batches-py", 10, "labels", ("batches.meta", "label_names")
        files = ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]
    else:
        folder, classes, label_key, meta = "cifar-100-python", 100, "fine_labels", ("meta", "fine_label_names")
        files = ["test", "train"]
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    for name in files:
        batch = {"data": data, label_key: [int(v) for v in rng.integers(0, classes, n)]}
        with open(os.path.join(root, folder, name), "wb") as f:
            pickle.dump(batch, f)
    with open(os.path.join(root, folder, meta[0]), "wb") as f:
        pickle.dump({meta[1]: [f"class{i}" for i in range(classes)]}, f)


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    """A data dir with synthetic CIFAR-10/100; torchvision's md5 check is bypassed for it."""
    from torchvision.datasets import cifar
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    write_fake_cifar(str(tmp_path / "data"), "cifar10")
    write_fake_cifar(str(tmp_path / "data"), "cifar100")
    return tmp_path


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = sjconv.models.resnet20(num_classes=10, L=4, thresh=1.0)
    path = tmp_path / "resnet20.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(2)
    images = torch.randn(3, 3, 32, 32)
    return calibrate_thresholds(sjconv.models.resnet20(num_classes=10), images), images


@pytest.fixture(scope="module")
def vgg16():
    torch.manual_seed(1)
    images = torch.randn(2, 3, 32, 32)
    return calibrate_thresholds(sjconv.models.vgg16(num_classes=10), images), images


def assert_run_metadata(record, argv, batch_size=None, neg_rule=None):
    """``record`` (a results JSON or a fine-tuning log) says how it was made: versions of sjconv,
    torch and SpikingJelly, the command line ending in ``argv``, a UTC ISO 8601 start time, and
    the batch size and negative-spike rule it ran with."""
    import datetime

    assert record["versions"]["sjconv"] == sjconv.__version__
    assert record["versions"]["torch"] == torch.__version__ and record["versions"]["spikingjelly"]
    assert record["command"][1:] == [str(a) for a in argv]
    started = datetime.datetime.fromisoformat(record["started_utc"])
    assert started.utcoffset() == datetime.timedelta(0)
    assert abs(datetime.datetime.now(datetime.timezone.utc) - started) < datetime.timedelta(hours=1)
    assert record["batch_size"] == batch_size and record["neg_rule"] == neg_rule
