"""The data of forward-forward training as tensors: flattened images in [0, 1] and labels."""

from typing import Tuple

import torch

from ..errors import SjconvError
from .options import DATASETS, missing_data

Tensors = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def ff_data(dataset: str = "digits", data_dir: str = "data", download: bool = False, seed: int = 0) -> Tensors:
    """``(x_train, y_train, x_test, y_test)``: images flattened to [N, D] with values in [0, 1]
    (the firing probabilities of Poisson coding), labels [N].

    ``digits`` is the demo's split (:func:`sjconv.data.digits_datasets` with ``seed``), its
    standardisation undone by the training split's range (pixels /16 again); ``mnist`` and
    ``fashion-mnist`` are torchvision's training and test sets, pixels /255."""
    if dataset not in DATASETS:
        raise SjconvError(f"unknown dataset '{dataset}'; choose one of {', '.join(DATASETS)}")
    if dataset == "digits":
        from ..data import digits_datasets

        train, test = digits_datasets(seed=seed)
        (x_train, y_train), (x_test, y_test) = train.tensors, test.tensors
        low, high = x_train.min(), x_train.max()
        scale = lambda x: ((x.flatten(1) - low) / (high - low)).clamp(0, 1)   # noqa: E731
        return scale(x_train), y_train, scale(x_test), y_test
    problem = None if download else missing_data(dataset, data_dir)
    if problem:
        raise SjconvError(problem)
    from torchvision import datasets

    record = DATASETS[dataset]
    splits = []
    for train in (True, False):
        try:
            data = getattr(datasets, record.torchvision)(data_dir, train=train, download=download)
        except RuntimeError as exc:   # torchvision: "Dataset not found or corrupted"
            raise SjconvError(f"{record.title} in '{data_dir}' is missing or corrupted ({exc}); pass --download") \
                from None
        except OSError as exc:   # network errors while downloading
            raise SjconvError(f"could not download {record.title} into '{data_dir}' ({exc}); download it by hand "
                              "and pass --data-dir") from None
        splits += [data.data.flatten(1).float() / 255.0, data.targets.long()]
    return tuple(splits)
