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
