"""QCFS ANN architectures (official QCFS v2 layouts) and a name -> builder registry."""

import inspect

from .. import catalog
from ..errors import ConfigError
from .resnet import BasicBlock, ResNet, resnet18, resnet20, resnet34
from .small import small_cnn
from .vgg import VGG, vgg11, vgg13, vgg16, vgg19

#: every builder of an architecture, named like it
_BUILDERS = {f.__name__: f for f in (vgg11, vgg13, vgg16, vgg19, resnet18, resnet20, resnet34)}

#: architecture name -> builder; the names and their order are :data:`sjconv.catalog.ARCHS`
ARCHS = {name: _BUILDERS[name] for name in catalog.ARCHS}

#: options only some architectures have, with the values that mean nothing for a builder without
#: them, which accepts and ignores these (``ANY``: every value). A shared config can pass dropout=0
#: to every model; the ResNets pool adaptively and the official ImageNet ResNets have the CIFAR
#: layout, so ``imagenet`` and ``image_size`` change nothing there.
ANY = object()
NEUTRAL = {"dropout": (0, None), "imagenet": ANY, "image_size": ANY}


def _neutral(name: str, value) -> bool:
    allowed = NEUTRAL.get(name, ())
    return allowed is ANY or any(value is v or value == v for v in allowed)


def accepted_options(arch: str):
    """Keyword arguments the builder of ``arch`` takes besides ``num_classes``."""
    return [name for name in inspect.signature(_factory(arch)).parameters if name != "num_classes"]


def _factory(arch: str):
    try:
        return ARCHS[arch.lower()]
    except (KeyError, AttributeError):
        raise ConfigError(f"unknown architecture '{arch}'; choose one of {', '.join(ARCHS)}") from None


def build(arch: str, num_classes: int = 10, **kwargs):
    """Build a QCFS ANN by name (see ``ARCHS``).

    Keyword arguments are checked against the architecture: an option it does not have is a
    :class:`ConfigError` naming the options it accepts, except the neutral values in ``NEUTRAL``
    (e.g. ``dropout=0`` for a ResNet, which has no dropout layers), which are ignored.
    Unknown names raise a :class:`ConfigError` listing the choices.
    """
    factory = _factory(arch)
    accepted = accepted_options(arch)
    used = {}
    for name, value in kwargs.items():
        if name in accepted:
            used[name] = value
        elif not _neutral(name, value):
            raise ConfigError(f"architecture '{arch}' does not take {name}={value!r}; "
                              f"it accepts {', '.join(['num_classes'] + accepted)}")
    return factory(num_classes=num_classes, **used)


__all__ = ["ARCHS", "NEUTRAL", "accepted_options", "build", "VGG", "ResNet", "BasicBlock", "small_cnn",
           "vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet20", "resnet34"]
