"""A small QCFS CNN for tiny images (the 8x8 scikit-learn digits demo and tests)."""

import torch.nn as nn

from ..qcfs import QCFS


def small_cnn(num_classes=10, in_channels=1, image_size=8, L=4, thresh=2.0, width=32):
    """Conv-BN-QCFS x2, AvgPool, Conv-BN-QCFS, AvgPool, Flatten, Linear-QCFS, Linear."""
    w = width
    side = image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, w, 3, padding=1),
        nn.BatchNorm2d(w),
        QCFS(L, thresh),
        nn.Conv2d(w, w, 3, padding=1),
        nn.BatchNorm2d(w),
        QCFS(L, thresh),
        nn.AvgPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1),
        nn.BatchNorm2d(2 * w),
        QCFS(L, thresh),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * w * side * side, 128),
        QCFS(L, thresh),
        nn.Linear(128, num_classes),
    )
