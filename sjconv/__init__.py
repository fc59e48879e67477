"""sjconv: convert QCFS-trained CNNs into SpikingJelly spiking networks and run them.

    import sjconv
    ann = sjconv.models.vgg16(num_classes=10)
    snn = sjconv.convert(ann, method="qcfs", step_mode="m", backend="torch")
    logits = sjconv.simulate(snn, images, T=64)                       # [T, N, classes]
    acc = sjconv.evaluate(snn, loader, T=[1, 2, 4, 8, 16, 32, 64])    # {T: accuracy %}

The names below are loaded on first use (PEP 562), so ``import sjconv`` does not import torch:
the command-line tools answer ``--help`` and refuse bad arguments without paying for it.
"""

import importlib
import importlib.util
import sys
import types

__version__ = "0.1.0"   # the one place the version is written: pyproject.toml reads it, CHANGELOG.md names it

#: public name -> the submodule (relative to this package) that defines it
_HOMES = {
    **dict.fromkeys(["analysis", "memory", "models", "neurons"], None),   # submodules themselves
    "protocol": ".neurons",
    "QCFS": ".qcfs",
    "METHODS": ".neurons",
    "convert": ".convert", "ConvertedSNN": ".convert",
    **dict.fromkeys(["simulate", "evaluate", "evaluate_ann", "iter_logits"], ".simulate"),
    "load_checkpoint": ".checkpoint",
    **dict.fromkeys(["finetune", "load_into_ann", "ann_state_dict"], ".finetune"),
    **dict.fromkeys(["ConvertedIFNode", "SignedIFNode", "SRPIFNode", "SRPSignedIFNode", "COSIFNode",
                     "COSSignedIFNode", "GroupNode", "SignedGroupNode"], ".neurons"),
    **dict.fromkeys(["SjconvError", "ConfigError", "CheckpointError", "ConversionError",
                     "BackendUnavailableError"], ".errors"),
}

__all__ = list(_HOMES)

#: submodules shadowed by the function of the same name: ``sjconv.convert`` is the function
_SHADOWED = ("convert", "simulate", "finetune")


def __getattr__(name: str):
    """Load a public name, or any submodule, on first access, and keep it."""
    if name in _HOMES:
        home = _HOMES[name]
        value = importlib.import_module(f".{name}" if home is None else home, __name__)
        if home is not None:
            value = getattr(value, name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)   # e.g. sjconv.data, as before
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    setattr(sys.modules[__name__], name, value)
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Importing a submodule sets it as an attribute of its package. Where a function shares
    the submodule's name (``convert``, ``simulate``, ``finetune``) the package keeps the
    function, as an eager ``from .convert import convert`` did, whichever is imported first."""

    def __setattr__(self, name, value):
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
