"""The forward-forward tool (examples/train_ff.py, ``sjconv-train-ff``): its outputs, resume,
and every bad input refused with one ``error:`` line before any work (and before torch is imported)."""

import json

import pytest
import torch

from sjconv.cli import train_ff
from sjconv.ff import load_ff
from test_cli_fast import _assert_light, _run

#: a tiny, fast run on the digits (the real data, no download)
TINY = ["--dims", "64", "24", "16", "-T", "2", "--epochs", "2", "--batch-size", "128", "--device", "cpu"]


def test_outputs_of_a_run(tmp_path, capsys):
    prefix = str(tmp_path / "ff")
    assert train_ff.cli(TINY + ["--out", prefix]) == 0
    printed = capsys.readouterr()
    rows = [line.split("|")[0].strip() for line in printed.out.splitlines()]
    assert rows == ["model, readout", "spiking FF, goodness", "spiking FF, softmax", "spiking BPTT (baseline)",
                    "ReLU FF, goodness (baseline)"]
    assert "goodness prediction of the 450 test images" in printed.err
    results = json.loads((tmp_path / "ff.json").read_text())
    assert set(results["test_accuracy"]) == {"ff_goodness", "ff_softmax", "bptt", "ff_relu"}
    assert all(0 <= v <= 100 for v in results["test_accuracy"].values())
    assert results["test_images"] == 450 and results["train_images"] == 1347
    assert {k: len(v) for k, v in results["curves"].items()} == {"ff_goodness": 2, "bptt": 2, "ff_relu": 2}
    assert {"ff_train", "ff_curve", "ff_predict_test", "ff_softmax", "bptt", "ff_relu"} <= set(results["seconds"])
    assert results["settings"]["dims"] == [64, 24, 16] and results["settings"]["T"] == 2
    assert results["command"][1:] == TINY + ["--out", prefix] and results["started_utc"].endswith("+00:00")
    assert results["versions"]["torch"] == torch.__version__ and results["batch_size"] == 128
    for name in ("ff.png", "ff_goodness.png", "ff_raster.png"):
        assert (tmp_path / name).stat().st_size > 5000
    net = load_ff(prefix + ".pth")   # the checkpoint predicts, both readouts
    from sjconv.ff import ff_data

    _, _, x_test, y_test = ff_data("digits")
    torch.manual_seed(1)
    goodness_acc = (net.predict(x_test) == y_test).float().mean().item() * 100
    assert abs(goodness_acc - results["test_accuracy"]["ff_goodness"]) < 10   # Poisson spikes differ
    softmax_acc = (net.predict(x_test, "softmax") == y_test).float().mean().item() * 100
    assert abs(softmax_acc - results["test_accuracy"]["ff_softmax"]) < 10


def test_no_baselines_layerwise_direct(tmp_path, capsys):
    prefix = str(tmp_path / "ff")
    args = TINY + ["--no-baselines", "--schedule", "layerwise", "--encoding", "direct", "--negatives", "random",
                   "--skip-first-layer", "--out", prefix]
    assert train_ff.cli(args) == 0
    results = json.loads((tmp_path / "ff.json").read_text())
    assert set(results["test_accuracy"]) == {"ff_goodness", "ff_softmax"}
    assert len(results["curves"]["ff_goodness"]) == 4                       # 2 epochs for each of the 2 layers
    assert [r["layer"] for r in results["ff_history"]] == [1, 1, 2, 2]
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_resume_repeats_the_uninterrupted_run(tmp_path, monkeypatch, capsys):
    whole, part = str(tmp_path / "whole"), str(tmp_path / "part")
    args = TINY + ["--no-baselines", "--epochs", "3"]
    assert train_ff.cli(args + ["--out", whole]) == 0
    from sjconv.ff import experiment

    real_save = experiment.save_ff
    saves = []

    def save_then_stop(*a, **kw):
        real_save(*a, **kw)
        saves.append(1)
        if len(saves) == 2:
            raise KeyboardInterrupt   # Ctrl-C after the second epoch's checkpoint

    monkeypatch.setattr(experiment, "save_ff", save_then_stop)
    assert train_ff.cli(args + ["--out", part]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == f"interrupted: wrote {part}.pth"
    monkeypatch.setattr(experiment, "save_ff", real_save)
    assert train_ff.cli(args + ["--out", part]) == 2                       # the checkpoint is not overwritten
    assert capsys.readouterr().err.strip() == (f"error: {part}.pth exists and would be overwritten: pass --resume to "
                                               "continue its training, or pass --overwrite")
    assert train_ff.cli(args + ["--out", part, "--resume"]) == 0
    a, b = (json.loads(open(p + ".json").read()) for p in (whole, part))
    assert a["curves"] == b["curves"] and a["test_accuracy"] == b["test_accuracy"]
    assert [r["loss"] for r in a["ff_history"]] == [r["loss"] for r in b["ff_history"]]
    assert train_ff.cli(args + ["--out", part, "--resume", "--lr", "0.02"]) == 2
    assert "was written with other settings: --lr 0.01 (this run: 0.02)" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--dims", "784", "500"], "error: --dims must start with the input size of digits, 64, got 784"),
    (["--dims", "64", "8"], "error: --dims: the first layer (8 neurons) must be at least as wide as the 10 classes"),
    (["--dims", "64"], "error: --dims needs the input size and at least one layer width, got 64"),
    (["--goodness-threshold", "0"], "error: --goodness-threshold must be > 0, got 0.0"),
    (["--lr", "-1"], "error: --lr must be > 0, got -1.0"),
    (["--tau", "1"], "error: --tau must be > 1, got 1.0"),
    (["--resume"], "error: --resume: no checkpoint ff.pth to continue; drop --resume to start a new run"),
    (["--dataset", "mnist", "--dims", "784", "100"], "error: MNIST not found in 'nowhere' (expected the folder "
                                                     "'MNIST/raw' there): pass --download to fetch it, or --data-dir "
                                                     "pointing to the folder that holds 'MNIST'"),
])
def test_bad_input_is_one_line_before_torch(args, message, tmp_path):
    status, _, err, imported = _run("train_ff", ["--out", "ff", "--data-dir", "nowhere"] + args, tmp_path)
    assert status == 2 and err == [message], err
    _assert_light(imported)


def test_existing_checkpoint_and_unwritable_out_are_refused_before_torch(tmp_path):
    (tmp_path / "ff.pth").write_bytes(b"")
    status, _, err, imported = _run("train_ff", ["--out", "ff"], tmp_path)
    assert status == 2 and err == ["error: ff.pth exists and would be overwritten: pass --resume to continue its "
                                   "training, or pass --overwrite"]
    _assert_light(imported)
    blocker = tmp_path / "file"
    blocker.write_text("")
    status, _, err, imported = _run("train_ff", ["--out", str(blocker / "ff")], tmp_path)
    assert status == 2 and len(err) == 1 and err[0].startswith("error: cannot write") and "is a file" in err[0]
    _assert_light(imported)


@pytest.mark.parametrize("args, message", [
    (["--dataset", "cifar10"], "argument --dataset: invalid choice: 'cifar10'"),
    (["-T", "0"], "argument -T/--steps: expected a number >= 1, got 0"),
])
def test_argument_errors_before_torch(args, message, tmp_path):
    status, out, err, imported = _run("train_ff", args, tmp_path)
    assert status == 2 and message in err[-1]
    _assert_light(imported)


def test_help_lists_every_option_with_its_default(tmp_path):
    status, out, err, imported = _run("train_ff", ["--help"], tmp_path)
    assert status == 0 and out.startswith("usage:") and err == []
    _assert_light(imported)
    for option in ("--dataset", "--dims", "--steps", "--epochs", "--batch-size", "--lr", "--tau", "--v-threshold",
                   "--goodness-threshold", "--encoding", "--negatives", "--schedule", "--baselines", "--device",
                   "--seed", "--out", "--resume", "--overwrite", "--download", "--data-dir"):
        assert option in out, option
    assert out.count("(default:") >= 15


def _fake_mnist(root, folder="MNIST", n_train=40, n_test=20):
    """Tiny MNIST-format files (idx, as torchvision reads them) in ``root/folder/raw``."""
    import struct

    import numpy as np

    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, n) + labels.tobytes())


@pytest.mark.parametrize("dataset, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_torchvision_datasets(dataset, folder, tmp_path, capsys):
    _fake_mnist(tmp_path, folder)
    prefix = str(tmp_path / "ff")
    args = ["--dataset", dataset, "--data-dir", str(tmp_path), "--dims", "784", "12", "-T", "2", "--epochs", "1",
            "--no-baselines", "--device", "cpu", "--out", prefix]
    assert train_ff.cli(args) == 0
    results = json.loads((tmp_path / "ff.json").read_text())
    assert results["train_images"] == 40 and results["test_images"] == 20 and results["dataset"] == dataset
    assert train_ff.cli(args[:-2] + ["--dims", "64", "12", "--out", prefix + "2"]) == 2
    assert capsys.readouterr().err.strip().endswith(f"--dims must start with the input size of {dataset}, 784, got 64")


def test_installed_as_sjconv_train_ff():
    import os
    import tomllib

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts["sjconv-train-ff"] == "sjconv.cli.train_ff:cli"


def test_benchmark_script_smoke(tmp_path):
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    prefix = str(tmp_path / "bench")
    proc = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "ff_digits.py"), "--out", prefix,
                           "--repeat", "1", "--dims", "64", "16", "-T", "2", "--epochs", "1", "--no-baselines",
                           "--device", "cpu"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": root})
    assert proc.returncode == 0, proc.stderr
    payload = json.loads((tmp_path / "bench.json").read_text())
    assert [r["model"] for r in payload["rows"]] == ["ff_goodness", "ff_softmax"]
    assert payload["predict_seconds_min"] > 0 and payload["test_images"] == 450 and payload["gap_to_bptt"] is None
    assert (tmp_path / "bench.md").read_text().startswith("| model | test % | train % | seconds |")


@pytest.mark.slow   # the full default run: about 70 s on an idle 2-core CPU, up to 10 min on a loaded one
def test_default_digits_run_meets_the_targets(tmp_path, capsys):
    assert train_ff.cli(["--out", str(tmp_path / "ff")]) == 0
    test = json.loads((tmp_path / "ff.json").read_text())["test_accuracy"]
    best = max(test["ff_goodness"], test["ff_softmax"])
    assert best >= 95.0 and test["bptt"] - best <= 3.0, test
