"""Training loop details that the CLI tests do not see: progress display."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from sjconv.train import fit


@pytest.mark.parametrize("progress", [True, False])
def test_fit_shows_a_per_batch_bar_with_the_running_loss(progress, capsys, monkeypatch):
    import functools
    import re

    import sjconv.train

    # every update drawn, whatever the machine's speed (tqdm skips redraws within 0.1 s)
    monkeypatch.setattr(sjconv.train, "tqdm", functools.partial(sjconv.train.tqdm, mininterval=0))
    torch.manual_seed(0)
    model = sjconv.models.small_cnn(num_classes=3, in_channels=1, image_size=8, L=4, width=4)
    data = TensorDataset(torch.rand(12, 1, 8, 8), torch.randint(0, 3, (12,)))
    history = fit(model, DataLoader(data, batch_size=4), epochs=2, lr=0.01, progress=progress)
    err = capsys.readouterr().err
    assert len(history) == 2
    if progress:
        for epoch in (1, 2):   # the batch bar of each epoch reaches its 3 batches, with the running loss
            assert re.search(rf"epoch {epoch}/2: +\d+%\|[^\r\n]*\| 3/3 \[[^\]]*loss=\d", err), err
    else:
        assert err == ""


def test_train_qcfs_workers_default_fits_the_machine():
    import os

    from sjconv.cli import train_qcfs

    args = train_qcfs.parse_args(["--arch", "resnet20", "--out", "x.pth"])
    assert 1 <= args.workers <= min(4, os.cpu_count() or 1)


# ----------------------------------------------------------------------------- resume and outputs

def _state(path, settings, epoch=1, epochs=2):
    """A training state file holding what the tool reads before the data (no optimizer yet)."""
    import sjconv
    from sjconv.train import STATE_FORMAT

    state = {"format": STATE_FORMAT, "epoch": epoch, "epochs": epochs,
             "model": sjconv.models.resnet20(num_classes=10, L=4).state_dict()}
    if settings is not None:
        state["settings"] = settings
    torch.save(state, path)
    return path


def _error_lines(capsys):
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_fit_records_its_settings_and_refuses_to_resume_with_others(tmp_path):
    import sjconv
    from sjconv.errors import ConfigError
    from sjconv.report import training_state_path

    model = sjconv.models.small_cnn(num_classes=3, in_channels=1, image_size=8, L=4, width=4)
    data = DataLoader(TensorDataset(torch.rand(8, 1, 8, 8), torch.randint(0, 3, (8,))), batch_size=4)
    ckpt = str(tmp_path / "c.pth")
    fit(model, data, epochs=2, lr=0.01, progress=False, checkpoint=ckpt, seed=1, settings={"L": 4})
    state = torch.load(training_state_path(ckpt), weights_only=True)
    assert state["settings"] == {"epochs": 2, "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "amp": False,
                                 "seed": 1, "L": 4}
    state["epoch"] = 1   # as if stopped after the first epoch
    with pytest.raises(ConfigError, match=r"^resume was written with other settings: lr=0.01 \(this run: 0.05\), "
                                          r"L=4 \(this run: 8\); resume with the stored settings"):
        fit(model, data, epochs=2, lr=0.05, progress=False, resume=state, seed=1, settings={"L": 8})


def test_train_qcfs_resume_refuses_every_changed_setting_before_any_work(tmp_path, capsys):
    """--L and --lr differ from the stored run: one line names both (and nothing else), before
    the data is looked for (the data folder is empty)."""
    from sjconv.cli import train_qcfs

    base = ["--arch", "resnet20", "--epochs", "2", "--L", "4", "--data-dir", str(tmp_path), "--device", "cpu",
            "--out", str(tmp_path / "o.pth"), "--no-progress"]
    state = _state(tmp_path / "o.state.pth", train_qcfs.run_settings(train_qcfs.parse_args(base)))
    assert train_qcfs.cli(base + ["--L", "8", "--lr", "0.05", "--resume", str(state)]) == 2
    lines = _error_lines(capsys)
    assert lines == [f"error: --resume {state} was written with other settings: --L 4 (this run: 8), --lr 0.1 "
                     "(this run: 0.05); resume with the stored settings, or start a new run"]
    assert train_qcfs.cli(base + ["--resume", str(state)]) == 2   # the same settings pass, to the data
    assert _error_lines(capsys)[-1].startswith("error: CIFAR-10 not found")


def test_train_qcfs_resume_of_a_state_without_settings_warns(tmp_path, capsys):
    from sjconv.cli import train_qcfs

    state = _state(tmp_path / "o.state.pth", None)
    assert train_qcfs.cli(["--arch", "resnet20", "--epochs", "2", "--data-dir", str(tmp_path), "--device", "cpu",
                           "--out", str(tmp_path / "o.pth"), "--resume", str(state)]) == 2
    lines = _error_lines(capsys)
    assert lines[0].startswith(f"warning: --resume {state} was written by an older sjconv that did not record")
    assert lines[1].startswith("error: CIFAR-10 not found")


def test_train_qcfs_does_not_overwrite_a_trained_checkpoint(tmp_path, capsys):
    """An existing --out (or its state) without --resume is refused before any work; --overwrite
    and a --resume of that very state go on (here to the missing data)."""
    from sjconv.cli import train_qcfs

    out = tmp_path / "o.pth"
    out.write_bytes(b"trained weights")
    base = ["--arch", "resnet20", "--data-dir", str(tmp_path), "--device", "cpu", "--out", str(out)]
    assert train_qcfs.cli(base) == 2
    assert _error_lines(capsys) == [f"error: {out} exists and would be overwritten: pass --resume "
                                    f"{tmp_path / 'o.state.pth'} to continue that run, choose another --out, "
                                    "or pass --overwrite"]
    assert out.read_bytes() == b"trained weights"
    out.unlink()
    _state(tmp_path / "o.state.pth", None, epochs=300)
    assert train_qcfs.cli(base) == 2 and "o.state.pth exists and would be overwritten" in _error_lines(capsys)[0]
    assert train_qcfs.cli(base + ["--overwrite"]) == 2
    assert _error_lines(capsys)[-1].startswith("error: CIFAR-10 not found")
    assert train_qcfs.cli(base + ["--resume", str(tmp_path / "o.state.pth")]) == 2
    assert _error_lines(capsys)[-1].startswith("error: CIFAR-10 not found")


def test_output_that_is_an_input_is_refused_even_through_a_link(tmp_path):
    from sjconv.cli.common import check_writable
    from sjconv.errors import SjconvError

    source = tmp_path / "a.pth"
    source.write_bytes(b"weights")
    (tmp_path / "link.pth").symlink_to(source)
    for out in (source, tmp_path / "link.pth", tmp_path / "." / "a.pth"):
        with pytest.raises(SjconvError, match=r"is both an input of this run and its output: choose another --out"):
            check_writable(str(out), inputs=[str(source)])
        check_writable(str(out), inputs=[str(source)], overwrite=True)
    check_writable(str(tmp_path / "b.pth"), inputs=[str(source)])


@pytest.mark.parametrize("tool", ["eval_cifar", "finetune_snn"])
def test_wrong_L_is_refused_where_the_training_state_records_it(tool, tmp_path, tiny_checkpoint, capsys):
    """train_qcfs's state beside the checkpoint records --L: another --L is one error line naming
    the right one, before the data is looked for; the recorded L passes (to the missing data)."""
    import importlib

    from sjconv.report import training_state_path

    module = importlib.import_module(f"sjconv.cli.{tool}")
    state = _state(training_state_path(str(tiny_checkpoint)), {"L": 4, "arch": "resnet20"})
    base = ["--arch", "resnet20", "--checkpoint", str(tiny_checkpoint), "--data-dir", str(tmp_path / "none"),
            "--device", "cpu", "--out", str(tmp_path / "r.pth"), "--no-progress"]
    assert module.cli(base + ["--L", "8"]) == 2
    assert _error_lines(capsys) == [f"error: --L 8, but {tiny_checkpoint} was trained with --L 4 (as its training "
                                    f"state {state} records): pass --L 4"]
    assert module.cli(base + ["--L", "4"]) == 2
    assert _error_lines(capsys)[-1].startswith("error: CIFAR-10 not found")
