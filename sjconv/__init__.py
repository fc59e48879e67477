"""sjconv: convert QCFS-trained CNNs into SpikingJelly spiking networks and run them.

    import sjconv
    ann = sjconv.models.vgg16(num_classes=10)
    snn = sjconv.convert(ann, method="qcfs", step_mode="m", backend="torch")
    logits = sjconv.simulate(snn, images, T=64)                       # [T, N, classes]
    acc = sjconv.evaluate(snn, loader, T=[1, 2, 4, 8, 16, 32, 64])    # {T: accuracy %}
"""

from . import analysis, memory, models, neurons, srp
from .checkpoint import load_checkpoint
from .convert import ConvertedSNN, convert
from .errors import BackendUnavailableError, CheckpointError, ConfigError, ConversionError, SjconvError
from .neurons import (METHODS, COSIFNode, COSSignedIFNode, ConvertedIFNode, SignedIFNode, SRPIFNode,
                      SRPSignedIFNode, prerun)
from .qcfs import QCFS
from .simulate import evaluate, evaluate_ann, iter_logits, simulate
from .finetune import ann_state_dict, finetune, load_into_ann  # noqa: E402  (the function shadows the module name)

__version__ = "0.1.0"

__all__ = ["analysis", "memory", "models", "neurons", "srp", "prerun", "QCFS", "METHODS", "convert", "ConvertedSNN",
           "simulate", "evaluate", "evaluate_ann", "iter_logits", "load_checkpoint", "finetune", "load_into_ann",
           "ann_state_dict", "ConvertedIFNode",
           "SignedIFNode", "SRPIFNode", "SRPSignedIFNode", "COSIFNode", "COSSignedIFNode", "SjconvError",
           "ConfigError", "CheckpointError", "ConversionError", "BackendUnavailableError"]
