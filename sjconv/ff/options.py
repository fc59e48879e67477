"""The choices of forward-forward training, readable without torch (the command line checks its
arguments with them before torch is imported)."""

import os
from typing import NamedTuple, Optional

#: input codings (see :func:`sjconv.ff.encode`)
ENCODINGS = ("poisson", "direct")
#: training schedules (see :func:`sjconv.ff.train_ff`)
SCHEDULES = ("joint", "layerwise")
#: how negative labels are drawn (see :func:`sjconv.ff.train_ff`)
NEGATIVES = ("random", "hard")
#: the models and readouts of a run, in table order: key of ``test_accuracy`` -> row label
ROWS = {"ff_goodness": "spiking FF, goodness", "ff_softmax": "spiking FF, softmax",
        "bptt": "spiking BPTT (baseline)", "ff_relu": "ReLU FF, goodness (baseline)"}
#: marks a checkpoint written by :func:`sjconv.ff.save_ff`
CHECKPOINT_FORMAT = "sjconv-ff-1"


class Dataset(NamedTuple):
    """A dataset of the FF tool: its name in messages, the torchvision class and the folder it
    expects in ``--data-dir`` (None: shipped with scikit-learn), inputs after flattening, classes."""
    title: str
    torchvision: Optional[str]
    folder: Optional[str]
    inputs: int
    classes: int


DATASETS = {
    "digits": Dataset("scikit-learn digits", None, None, 64, 10),
    "mnist": Dataset("MNIST", "MNIST", "MNIST", 784, 10),
    "fashion-mnist": Dataset("Fashion-MNIST", "FashionMNIST", "FashionMNIST", 784, 10),
}


def missing_data(dataset: str, data_dir: str) -> Optional[str]:
    """Why ``dataset`` cannot be read from ``data_dir`` without a download, or None."""
    record = DATASETS[dataset]
    if record.folder is None:
        return None
    raw = os.path.join(data_dir, record.folder, "raw")
    if os.path.isdir(raw) and os.listdir(raw):
        return None
    return (f"{record.title} not found in '{data_dir}' (expected the folder '{os.path.join(record.folder, 'raw')}' "
            f"there): pass --download to fetch it, or --data-dir pointing to the folder that holds "
            f"'{record.folder}'")
