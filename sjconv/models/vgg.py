"""QCFS VGG networks in the official QCFS v2 layout (docs/protocols.md#checkpoints).

Every convolution stage ``layerK`` is an ``nn.Sequential`` of
[Conv2d(bias), BatchNorm2d, QCFS, Dropout] per conv, then AvgPool2d(2); the classifier is
[Flatten, Linear, QCFS, Dropout, Linear, QCFS, Dropout, Linear]. The module indices therefore
match the official keys (``layer1.0.weight``, ``layer1.2.thresh``, ``classifier.7.bias`` ...).
"""

import torch.nn as nn

from ..errors import ConfigError
from ..qcfs import QCFS

#: channels per stage; each stage ends with a 2x2 average pool
STAGES = {
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


class VGG(nn.Module):
    """VGG for CIFAR (32x32 input) or ImageNet (224x224 input).

    ``stages`` is a list of stages, each a list of conv widths, named ``layer1`` ... ``layerN``;
    any number of stages works. Each stage halves the resolution, so the classifier's input is
    the last width times (image_size / 2**N)²: for the five standard stages 512 on CIFAR and the
    official 512·7·7 on ImageNet. ``image_size`` defaults to 224 with ``imagenet`` (itself
    defaulting to ``num_classes == 1000``), else 32.
    """

    def __init__(self, stages, num_classes=10, dropout=0.0, L=8, thresh=8.0, imagenet=None, image_size=None):
        super().__init__()
        if imagenet is None:
            imagenet = num_classes == 1000
        if image_size is None:
            image_size = 224 if imagenet else 32
        if not stages or not all(stages):
            raise ConfigError(f"stages must be a non-empty list of non-empty width lists, got {stages!r}")
        side = int(image_size) // 2 ** len(stages)
        if side < 1:
            raise ConfigError(f"image_size={image_size} is too small for {len(stages)} stages "
                              f"(each halves it; at least {2 ** len(stages)} is needed)")
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
        self.num_stages = len(stages)
        features = in_channels * side * side
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
        for index in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{index}")(x)
        return self.classifier(x)


def _factory(name):
    def build(num_classes=10, dropout=0.0, L=8, thresh=8.0, imagenet=None, image_size=None):
        return VGG(STAGES[name], num_classes, dropout, L, thresh, imagenet, image_size)

    build.__name__ = name
    build.__doc__ = (f"QCFS {name.upper()} (official v2 layout); ``imagenet`` (224x224 input, 512·7·7 head) "
                     "defaults to num_classes == 1000.")
    return build


vgg11 = _factory("vgg11")
vgg13 = _factory("vgg13")
vgg16 = _factory("vgg16")
vgg19 = _factory("vgg19")
