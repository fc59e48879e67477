"""Datasets: CIFAR-10/100 and ImageNet through torchvision (official QCFS preprocessing) and
the scikit-learn handwritten digits, which ship inside a package and need no download."""

import os
from typing import Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from . import catalog
from .errors import SjconvError

#: the CIFAR table (torchvision class, folder, classes, mean, std) and every dataset the tools take,
#: both in the catalog, where the tools read them without torch
CIFAR, DATASETS = catalog.CIFAR, catalog.DATASETS

#: ImageNet as the QCFS repository reads it: ImageFolder on train/ and val/, torchvision's statistics
IMAGENET_CLASSES = 1000
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def num_classes(dataset: str) -> int:
    return IMAGENET_CLASSES if dataset == "imagenet" else CIFAR[dataset][2]


def display_name(dataset: str) -> str:
    """'cifar10' -> 'CIFAR-10', 'imagenet' -> 'ImageNet' (table titles and messages)."""
    if dataset == "imagenet":
        return "ImageNet"
    return dataset.upper().replace("CIFAR", "CIFAR-")


def get_dataset(dataset: str, data_dir: str, train: bool = False, download: bool = False):
    """The training or test split of ``dataset`` (one of ``DATASETS``) with QCFS preprocessing."""
    if dataset == "imagenet":
        if download:
            raise SjconvError("ImageNet cannot be downloaded automatically (its licence asks for a sign-up at "
                              "image-net.org): drop download and pass a data_dir holding train/ and val/")
        return imagenet_dataset(data_dir, train=train)
    return cifar_dataset(dataset, data_dir, train=train, download=download)


def imagenet_transform(train: bool):
    """The QCFS repository's ImageNet preprocessing. Training: random resized crop to 224,
    horizontal flip, colour jitter (brightness, contrast, saturation 0.2, hue 0.1); test: resize
    the short side to 256 and take the central 224x224. Both normalize with ImageNet statistics."""
    from torchvision import transforms

    if train:
        steps = [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                 transforms.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1)]
    else:
        steps = [transforms.Resize(256), transforms.CenterCrop(224)]
    return transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def imagenet_dataset(data_dir: str, train: bool = False):
    """ImageNet as a torchvision ``ImageFolder`` on ``data_dir``/train or ``data_dir``/val: one
    sub-folder per class (e.g. ``n01440764``, sorted names give the label order, as in the
    official training), images inside. The validation images must be sorted into class folders
    too. A missing or malformed folder raises :class:`SjconvError` naming the expected layout.
    """
    from torchvision import datasets

    split = "train" if train else "val"
    folder = os.path.join(data_dir, split)
    layout = (f"expected '{folder}' to hold one folder per class (e.g. {split}/n01440764/*.JPEG); "
              f"pass --data-dir pointing to the folder that holds train/ and val/")
    if not os.path.isdir(folder):
        raise SjconvError(f"ImageNet not found in '{data_dir}': {layout}")
    try:
        data = datasets.ImageFolder(folder, transform=imagenet_transform(train))
    except (FileNotFoundError, OSError) as exc:  # no class folders, or no image in them
        raise SjconvError(f"ImageNet folder '{folder}' is malformed ({_first_line(exc)}): {layout}") from None
    if len(data.classes) > IMAGENET_CLASSES:
        raise SjconvError(f"ImageNet folder '{folder}' holds {len(data.classes)} class folders, more than "
                          f"{IMAGENET_CLASSES}: {layout}")
    return data


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


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


def loader(dataset, batch_size: int, shuffle: bool = False, workers: int = 0, seed: int = 0,
           sampler=None) -> DataLoader:
    """A DataLoader; ``shuffle`` draws from a generator seeded with ``seed``. With a ``sampler``
    (e.g. a ``DistributedSampler``, which shuffles by itself) no generator is attached, so worker
    seeds come from torch's global generator, which training re-seeds every epoch."""
    if sampler is not None:
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                          pin_memory=torch.cuda.is_available())
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



def check_same_classes(train_set, test_set) -> None:
    """Folder datasets (ImageNet) label classes by sorted folder names, so the two splits must hold
    the same class folders for a label to mean the same class in both."""
    train_classes, test_classes = getattr(train_set, "classes", None), getattr(test_set, "classes", None)
    if train_classes is None or test_classes is None or list(train_classes) == list(test_classes):
        return
    only_train = sorted(set(train_classes) - set(test_classes))[:3]
    only_test = sorted(set(test_classes) - set(train_classes))[:3]
    raise SjconvError(f"the training and test splits hold different class folders ({len(train_classes)} vs "
                      f"{len(test_classes)}; only in train: {only_train or '-'}, only in test: {only_test or '-'}): "
                      "both need the same class folders so that labels match")
