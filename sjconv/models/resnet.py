"""QCFS ResNets in the official QCFS v2 layout (docs/protocols.md#checkpoints).

Stem ``conv1`` = [Conv3x3(no bias), BN, QCFS] (no max-pool); stages ``conv2_x`` ...;
blocks hold ``residual_function`` = [conv, bn, QCFS, conv, bn], ``shortcut`` = [conv1x1, bn]
when the shape changes, and ``act`` (QCFS after the residual add); then adaptive average
pooling and ``fc``. ResNet20 (``ResNet4Cifar``) has 3 stages of 16/32/64 channels.

The official repository builds its ImageNet ResNet18/34 with this very class and 1000 classes
(the 3x3 stride-1 stem and no max-pool are kept at 224x224), so ``resnet18(num_classes=1000)``
and ``resnet34(num_classes=1000)`` load the official ImageNet checkpoints unchanged.
"""

import torch.nn as nn

from ..qcfs import QCFS


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, out_channels, stride=1, L=8, thresh=8.0):
        super().__init__()
        self.residual_function = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            QCFS(L, thresh),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.act = QCFS(L, thresh)

    def forward(self, x):
        return self.act(self.residual_function(x) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem + ``len(widths)`` stages of BasicBlocks, first stage stride 1, others stride 2."""

    def __init__(self, blocks_per_stage, widths, num_classes=10, L=8, thresh=8.0):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            QCFS(L, thresh),
        )
        in_channels = widths[0]
        for index, (count, width) in enumerate(zip(blocks_per_stage, widths)):
            stride = 1 if index == 0 else 2
            blocks = []
            for s in [stride] + [1] * (count - 1):
                blocks.append(BasicBlock(in_channels, width, s, L, thresh))
                in_channels = width
            setattr(self, f"conv{index + 2}_x", nn.Sequential(*blocks))
        self.num_stages = len(widths)
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        for index in range(self.num_stages):
            x = getattr(self, f"conv{index + 2}_x")(x)
        return self.fc(self.flatten(self.avg_pool(x)))


def resnet18(num_classes=10, L=8, thresh=8.0):
    """QCFS ResNet18 for CIFAR, or ImageNet with num_classes=1000 (official layout)."""
    return ResNet([2, 2, 2, 2], [64, 128, 256, 512], num_classes, L, thresh)


def resnet34(num_classes=10, L=8, thresh=8.0):
    """QCFS ResNet34 for CIFAR, or ImageNet with num_classes=1000 (official layout)."""
    return ResNet([3, 4, 6, 3], [64, 128, 256, 512], num_classes, L, thresh)


def resnet20(num_classes=10, L=8, thresh=8.0):
    """QCFS ResNet20 for CIFAR (official ``ResNet4Cifar`` layout)."""
    return ResNet([3, 3, 3], [16, 32, 64], num_classes, L, thresh)
