"""Datasets: CIFAR-10/100 through torchvision (official QCFS preprocessing) and the
scikit-learn handwritten digits, which ship inside a package and need no download."""

import os
from typing import Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from .errors import SjconvError

#: name -> (torchvision class name, folder torchvision expects, classes, mean, std) as in QCFS' code
CIFAR = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", 10,
                (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ("CIFAR100", "cifar-100-python", 100,
                 tuple(n / 255 for n in (129.3, 124.1, 112.4)), tuple(n / 255 for n in (68.2, 65.4, 70.4))),
}


def num_classes(dataset: str) -> int:
    return CIFAR[dataset][2]


def display_name(dataset: str) -> str:
    """'cifar10' -> 'CIFAR-10' (table titles and messages)."""
    return dataset.upper().replace("CIFAR", "CIFAR-")


def cifar_dataset(dataset: str, data_dir: str, train: bool = False, download: bool = False):
    """The torchvision CIFAR dataset with QCFS preprocessing (train: crop 32 pad 4 + flip).

    Raises :class:`SjconvError` with the fix when the files are missing or cannot be fetched.
    """
    from torchvision import datasets, transforms

    if dataset not in CIFAR:
        raise SjconvError(f"unknown dataset '{dataset}'; choose one of {', '.join(CIFAR)}")
    cls_name, folder, _, mean, std = CIFAR[dataset]
    pretty = display_name(dataset)
    if not download and not os.path.isdir(os.path.join(data_dir, folder)):
        raise SjconvError(f"{pretty} not found in '{data_dir}' (expected the folder '{folder}' there): "
                          f"pass --download to fetch it, or --data-dir pointing to the folder that holds '{folder}'")
    steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()] if train else []
    transform = transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(mean, std)])
    try:
        return getattr(datasets, cls_name)(data_dir, train=train, transform=transform, download=download)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        raise SjconvError(f"{pretty} in '{data_dir}' is missing or corrupted ({exc}); "
                          f"delete '{os.path.join(data_dir, folder)}' and pass --download") from None
    except OSError as exc:  # network errors while downloading
        raise SjconvError(f"could not download {pretty} into '{data_dir}' ({exc}); download it by hand "
                          f"and pass --data-dir") from None


def limited(dataset, limit: Optional[int]):
    """The first ``limit`` samples of ``dataset`` (all when ``limit`` is None)."""
    if limit is None or limit >= len(dataset):
        return dataset
    if limit < 1:
        raise SjconvError(f"--limit must be >= 1, got {limit}")
    return Subset(dataset, range(limit))


def loader(dataset, batch_size: int, shuffle: bool = False, workers: int = 0, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      generator=generator, pin_memory=torch.cuda.is_available())


def digits_datasets(test_fraction: float = 0.25, seed: int = 0) -> Tuple[TensorDataset, TensorDataset]:
    """scikit-learn's 8x8 handwritten digits (1,797 real images, 10 classes), split once with a
    fixed seed, standardized with the training split's mean and std; images are [1, 8, 8]."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise SjconvError("the digits demo needs scikit-learn: pip install 'sjconv[demo]'") from None
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=test_fraction, random_state=seed,
                                           stratify=digits.target)
    mean, std = x[train_idx].mean(), x[train_idx].std()
    x = (x - mean) / std
    return TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[test_idx], y[test_idx])

