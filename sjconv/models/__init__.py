"""QCFS ANN architectures (official QCFS v2 layouts) and a name -> builder registry."""

from .resnet import BasicBlock, ResNet, resnet18, resnet20, resnet34
from .small import small_cnn
from .vgg import VGG, vgg11, vgg13, vgg16, vgg19

ARCHS = {
    "vgg11": vgg11,
    "vgg13": vgg13,
    "vgg16": vgg16,
    "vgg19": vgg19,
    "resnet18": resnet18,
    "resnet20": resnet20,
    "resnet34": resnet34,
}


def build(arch: str, num_classes: int = 10, **kwargs):
    """Build a QCFS ANN by name (see ``ARCHS``); unknown names raise a ValueError listing the choices."""
    try:
        factory = ARCHS[arch.lower()]
    except KeyError:
        raise ValueError(f"unknown architecture '{arch}'; choose one of {', '.join(ARCHS)}") from None
    return factory(num_classes=num_classes, **kwargs)


__all__ = ["ARCHS", "build", "VGG", "ResNet", "BasicBlock", "small_cnn",
           "vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet20", "resnet34"]
