"""QCFS VGG networks in the official QCFS v2 layout (METHODS.md §5).

Every convolution stage ``layerK`` is an ``nn.Sequential`` of
[Conv2d(bias), BatchNorm2d, QCFS, Dropout] per conv, then AvgPool2d(2); the classifier is
[Flatten, Linear, QCFS, Dropout, Linear, QCFS, Dropout, Linear]. The module indices therefore
match the official keys (``layer1.0.weight``, ``layer1.2.thresh``, ``classifier.7.bias`` ...).
"""

import torch.nn as nn

from ..qcfs import QCFS

#: channels per stage; each stage ends with a 2x2 average pool
STAGES = {
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


class VGG(nn.Module):
    """VGG for CIFAR (32x32 input, 512-wide flatten) or ImageNet (224x224, 512·7·7)."""

    def __init__(self, stages, num_classes=10, dropout=0.0, L=8, thresh=8.0, imagenet=None):
        super().__init__()
        if imagenet is None:
            imagenet = num_classes == 1000
        in_channels = 3
        for index, widths in enumerate(stages, start=1):
            layers = []
            for width in widths:
                layers += [
                    nn.Conv2d(in_channels, width, kernel_size=3, padding=1),
                    nn.BatchNorm2d(width),
                    QCFS(L, thresh),
                    nn.Dropout(dropout),
                ]
                in_channels = width
            layers.append(nn.AvgPool2d(kernel_size=2, stride=2))
            setattr(self, f"layer{index}", nn.Sequential(*layers))
        features = 512 * 7 * 7 if imagenet else 512
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(features, 4096),
            QCFS(L, thresh),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            QCFS(L, thresh),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        for index in range(1, 6):
            x = getattr(self, f"layer{index}")(x)
        return self.classifier(x)


def _factory(name):
    def build(num_classes=10, dropout=0.0, L=8, thresh=8.0, imagenet=None):
        return VGG(STAGES[name], num_classes, dropout, L, thresh, imagenet)

    build.__name__ = name
    build.__doc__ = f"QCFS {name.upper()} (official v2 layout); ``imagenet`` defaults to num_classes == 1000."
    return build


vgg11 = _factory("vgg11")
vgg13 = _factory("vgg13")
vgg16 = _factory("vgg16")
vgg19 = _factory("vgg19")
