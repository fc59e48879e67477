"""Evaluation and training on several processes (torchrun, gloo on the CPU) count exactly.

docs/protocols.md#counting: every test image is counted once, whatever the number of processes, so two
processes must give the single-process accuracies to the last digit. The tools are run
through ``python -m torch.distributed.run`` (what ``torchrun`` is) on a test set whose size is
not divisible by the number of processes.
"""

import json
import os
import pickle
import socket
import subprocess
import sys

import pytest
import torch

import sjconv
from sjconv import distributed
from sjconv.cli import eval_cifar, train_qcfs

from fakes import write_fake_cifar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = 101   # odd: two processes get 50 and 51 images

#: runs a CLI with torchvision's CIFAR md5 check bypassed (the synthetic files have other sums)
LAUNCHER = """
import sys
from torchvision.datasets import cifar
cifar.CIFAR10._check_integrity = lambda self: True
cifar.check_integrity = lambda *args, **kwargs: True
from sjconv.cli import {module}
sys.exit({module}.cli(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(tmp_path, module, args, nproc=2, timeout=120):
    """Run ``sjconv.cli.<module>`` under torchrun with ``nproc`` CPU processes."""
    script = tmp_path / f"launch_{module}.py"
    script.write_text(LAUNCHER.format(module=module))
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    for name in distributed.ENV:
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(script), *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cifar101(tmp_path, monkeypatch):
    from torchvision.datasets import cifar
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    write_fake_cifar(str(tmp_path / "data"), "cifar10", n=IMAGES, seed=3)
    return tmp_path / "data"


@pytest.fixture
def resnet_checkpoint(tmp_path, cifar101):
    """A ResNet20 whose SNN accuracy changes with T: the classifier bias is centred on the mean
    feature of the test images (so the predictions spread over the classes), and the test
    labels are rewritten to the ANN's predictions (ANN 100 %, the SNN below it and varying)."""
    from sjconv.data import cifar_dataset

    torch.manual_seed(1)
    model = sjconv.models.resnet20(num_classes=10, L=4, thresh=1.0).eval()
    images = torch.stack([image for image, _ in cifar_dataset("cifar10", str(cifar101))])
    with torch.no_grad():
        features = model.flatten(model.avg_pool(model.conv4_x(model.conv3_x(model.conv2_x(model.conv1(images))))))
        model.fc.bias.copy_(-(model.fc.weight @ features.mean(0)))
        predictions = model(images).argmax(-1)
    batch_file = cifar101 / "cifar-10-batches-py" / "test_batch"
    batch = pickle.loads(batch_file.read_bytes())
    batch["labels"] = predictions.tolist()
    batch_file.write_bytes(pickle.dumps(batch))
    path = tmp_path / "r20.pth"
    torch.save(model.state_dict(), path)
    return path


def eval_args(data, checkpoint, out, *extra):
    return ["--arch", "resnet20", "--checkpoint", str(checkpoint), "--L", "4", "--data-dir", str(data),
            "--method", "qcfs", "srp+neg", "--tau", "2", "-T", "1", "2", "4", "--batch-size", "8",
            "--device", "cpu", "--workers", "0", "--no-progress", "--out", str(out), *extra]


@pytest.mark.parametrize("length", range(0, 12))
def test_shards_cover_every_index_exactly_once(length):
    for world in range(1, 5):
        shards = [list(distributed.shard_indices(length, rank, world)) for rank in range(world)]
        assert sorted(i for s in shards for i in s) == list(range(length))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_single_process_helpers_are_the_identity():
    assert not distributed.launched() and not distributed.active()
    assert distributed.get_world_size() == 1 and distributed.is_main()
    data = list(range(7))
    assert distributed.shard(data) is data
    assert distributed.all_reduce_sum([3, 4]) == [3, 4]
    with pytest.raises(sjconv.ConfigError, match="rank"):
        distributed.shard_indices(5, 2, 2)


@pytest.mark.slow   # torchrun with two processes: seconds of start-up each
def test_two_processes_give_the_single_process_table(tmp_path, cifar101, resnet_checkpoint, capsys):
    one = tmp_path / "one" / "r.json"
    assert eval_cifar.cli(eval_args(cifar101, resnet_checkpoint, one)) == 0
    table_one = capsys.readouterr().out
    two = tmp_path / "two" / "r.json"
    # two processes, and a different chunking on top: the counts must not change
    proc = torchrun(tmp_path, "eval_cifar", eval_args(cifar101, resnet_checkpoint, two, "--chunk", "2"))
    assert proc.returncode == 0, proc.stderr
    r1, r2 = json.loads(one.read_text()), json.loads(two.read_text())
    assert r1["num_images"] == r2["num_images"] == IMAGES
    assert (r1["world_size"], r2["world_size"]) == (1, 2)
    assert r2["ann_accuracy"] == r1["ann_accuracy"]
    assert [m["accuracy"] for m in r2["methods"]] == [m["accuracy"] for m in r1["methods"]]
    accuracies = {a for m in r1["methods"] for a in m["accuracy"].values()}
    assert len(accuracies) > 2 and r1["ann_accuracy"] == 100   # the figures vary, so a miscount would show
    assert proc.stdout.count("CIFAR-10") == 1        # rank 0 alone prints the table
    assert proc.stdout.strip() == table_one.strip()
    assert sorted(os.listdir(two.parent)) == ["r.json", "r.png"]


@pytest.mark.slow   # torchrun with two processes: seconds of start-up each
def test_two_processes_step_by_step_and_budget_match(tmp_path, cifar101, resnet_checkpoint):
    """Two processes step by step give the counts of one process in multi-step mode under a memory
    budget (a budget chooses the steps per call of multi-step mode; 's' mode refuses one)."""
    one = tmp_path / "one.json"
    assert eval_cifar.cli(eval_args(cifar101, resnet_checkpoint, one, "--limit", "21", "--memory-budget", "1GB")) == 0
    two = tmp_path / "two.json"
    proc = torchrun(tmp_path, "eval_cifar", eval_args(cifar101, resnet_checkpoint, two, "--limit", "21",
                                                      "--step-mode", "s"))
    assert proc.returncode == 0, proc.stderr
    r1, r2 = json.loads(one.read_text()), json.loads(two.read_text())
    assert r2["num_images"] == 21 and r2["step_mode"] == "s" and r1["memory_budget"] == 10**9
    assert [m["accuracy"] for m in r2["methods"]] == [m["accuracy"] for m in r1["methods"]]


@pytest.mark.slow   # torchrun with two processes: seconds of start-up each
def test_two_processes_fail_with_one_line_each_and_no_hang(tmp_path, resnet_checkpoint):
    proc = torchrun(tmp_path, "eval_cifar", ["--arch", "resnet20", "--checkpoint", str(resnet_checkpoint),
                                             "--data-dir", str(tmp_path / "nothing"), "--device", "cpu",
                                             "--out", str(tmp_path / "never.json")], timeout=60)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all(line.startswith("error: CIFAR-10 not found") for line in errors)
    # the only traceback is torchrun's own report that its workers exited with status 2
    assert proc.stderr.count("Traceback") == 1 and "ChildFailedError" in proc.stderr
    proc = torchrun(tmp_path, "eval_cifar", ["--arch", "resnet20", "--checkpoint", str(resnet_checkpoint),
                                             "--download", "--device", "cpu"], timeout=60)
    assert proc.returncode != 0 and "--download under torchrun" in proc.stderr
    assert not (tmp_path / "never.json").exists()


@pytest.mark.slow   # torchrun with two processes: seconds of start-up each
def test_two_process_training_writes_one_loadable_checkpoint(tmp_path, monkeypatch):
    from torchvision.datasets import cifar
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    write_fake_cifar(str(tmp_path / "data"), "cifar10", n=13)
    out = tmp_path / "ckpt" / "r20.pth"
    args = ["--arch", "resnet20", "--data-dir", str(tmp_path / "data"), "--epochs", "2", "--batch-size", "4",
            "--device", "cpu", "--workers", "0", "--L", "4", "--no-progress", "--out", str(out)]
    proc = torchrun(tmp_path, "train_qcfs", args)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out.parent)) == ["r20.pth", "r20.state.pth"]
    records = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert [r["epoch"] for r in records] == [1, 2]   # printed by rank 0 only
    state = torch.load(out, weights_only=True)
    assert not any(k.startswith("module.") for k in state)
    model = sjconv.models.resnet20(num_classes=10, L=4)
    model.load_state_dict(state)   # the official way: no prefix, no nesting


def _train(tmp_path, data, out, *extra):
    return train_qcfs.cli(["--arch", "vgg11", "--data-dir", str(data), "--epochs", "2", "--batch-size", "4",
                           "--limit", "8", "--device", "cpu", "--workers", "0", "--L", "4", "--dropout", "0.2",
                           "--no-progress", "--out", str(out), *extra])


def test_resume_repeats_the_uninterrupted_run(tmp_path, monkeypatch):
    from torchvision.datasets import cifar
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    write_fake_cifar(str(tmp_path / "data"), "cifar10", n=10)
    data = tmp_path / "data"
    assert _train(tmp_path, data, tmp_path / "full.pth") == 0
    # one epoch, then stop: fake an interruption by training 2 epochs' schedule for one epoch only
    import sjconv.train as train_module
    real_fit = train_module.fit
    calls = []

    def one_epoch_then_stop(*args, on_epoch=None, **kwargs):
        def stop(epoch, record):
            calls.append(epoch)
            raise KeyboardInterrupt
        try:
            return real_fit(*args, on_epoch=stop, **kwargs)
        except KeyboardInterrupt:
            return []

    monkeypatch.setattr(train_module, "fit", one_epoch_then_stop)   # the tool imports it when it runs
    assert _train(tmp_path, data, tmp_path / "part.pth") == 0 and calls == [1]
    monkeypatch.setattr(train_module, "fit", real_fit)
    state = torch.load(tmp_path / "part.state.pth", weights_only=True)
    assert state["epoch"] == 1 and state["optimizer"]["state"]   # momentum buffers are saved
    assert {k: state["settings"][k] for k in ("arch", "L", "dropout", "lr", "world_size")} == {
        "arch": "vgg11", "L": 4, "dropout": 0.2, "lr": 0.1, "world_size": 1}   # what --resume compares
    assert _train(tmp_path, data, tmp_path / "part.pth", "--resume", str(tmp_path / "part.state.pth")) == 0
    full, resumed = torch.load(tmp_path / "full.pth"), torch.load(tmp_path / "part.pth")
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)


def test_resume_errors_are_one_line(tmp_path, capsys):
    ckpt = tmp_path / "bare.pth"
    torch.save(sjconv.models.resnet20().state_dict(), ckpt)
    base = ["--arch", "resnet20", "--data-dir", str(tmp_path), "--device", "cpu", "--out", str(tmp_path / "o.pth")]
    assert train_qcfs.cli(base + ["--resume", str(ckpt)]) == 2
    assert "is not a training state" in capsys.readouterr().err
    assert train_qcfs.cli(base + ["--resume", str(tmp_path / "missing.state.pth")]) == 2
    assert "training state file not found" in capsys.readouterr().err
    assert train_qcfs.cli(base + ["--sync-bn"]) == 2
    assert "--sync-bn needs --device cuda" in capsys.readouterr().err
