"""Fine-tuning a converted SNN in SNN mode (docs/methods.md#training, docs/protocols.md#fine-tuning), and back to the ANN's layout.

BPTT in multi-step mode: each batch runs the converted network for T steps on the static images
(after its pre-run, if any, which runs without gradients from the current weights), the loss is
TET (or the mean over steps of the cross-entropy) on the per-step logits, and the weights and the
per-layer thresholds θ are updated. The spikes of the forward are those of inference (the nodes'
surrogate path changes gradients only). BatchNorm statistics stay frozen (the network stays in
eval mode: BN normalises with its running statistics, whose affine parameters still train).

The trained network maps back onto the QCFS ANN it came from (same module paths: a node's
``theta`` is the QCFS layer's ``thresh``), so a fine-tuned checkpoint is an ordinary official-
layout ``state_dict`` that every tool loads unchanged.
"""

import time
from typing import Dict, Iterable, List

import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from tqdm.auto import tqdm

from . import catalog
from .activations import activation_names
from .errors import ConfigError
from .guards import check_labels, loader_batches
from .neurons import protocol
from .neurons.modes import MULTI

#: losses and optimizers (named in the catalog, where the command line reads them without torch)
LOSSES, OPTIMIZERS = catalog.LOSSES, catalog.OPTIMIZERS


def tet_loss(logits: torch.Tensor, labels: torch.Tensor, lam: float = 1e-3, means: float = 1.0) -> torch.Tensor:
    """TET (Deng et al., 2022; docs/methods.md#training) on per-step logits ``[T, N, C]``:
    ``(1 - λ) · mean_t CE(o_t, y) + λ · MSE(o, φ)`` with φ = ``means``. λ = 0 is the mean CE."""
    steps = logits.shape[0]
    ce = F.cross_entropy(logits.flatten(0, 1), labels.repeat(steps))   # = mean over t of CE(o_t, y)
    if lam == 0:
        return ce
    return (1 - lam) * ce + lam * F.mse_loss(logits, torch.full_like(logits, means))


def _check(snn: nn.Module, T: int, epochs: int, lr: float, loss: str, lam: float, optimizer: str) -> List:
    nodes = protocol.spiking_nodes(snn)
    if not nodes:
        raise ConfigError("the network has no sjconv spiking nodes: convert a QCFS ANN with sjconv.convert first")
    untrainable = sorted({n.backend for n in nodes if not catalog.BACKEND_TABLE[n.backend].trainable})
    if untrainable:
        raise ConfigError(f"fine-tuning needs backend='torch' (the {', '.join(untrainable)} "
                          "backend is inference-only): convert with backend='torch' for training; the "
                          "fine-tuned checkpoint then runs with any backend")
    for name, value, low in (("T", T, 1), ("epochs", epochs, 1)):
        if not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be a whole number >= {low}, got {value!r}")
    if not lr > 0:
        raise ConfigError(f"lr must be > 0, got {lr}")
    if loss not in LOSSES:
        raise ConfigError(f"unknown loss '{loss}'; choose one of {', '.join(LOSSES)}")
    if not 0 <= lam < 1:
        raise ConfigError(f"lam (TET weight of the MSE term) must be in [0, 1), got {lam}")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{optimizer}'; choose one of {', '.join(OPTIMIZERS)}")
    return nodes


def finetune(snn: nn.Module, loader: Iterable, T: int, epochs: int = 1, lr: float = 1e-3, loss: str = "tet",
             lam: float = 1e-3, means: float = 1.0, optimizer: str = "adam", momentum: float = 0.9,
             weight_decay: float = 0.0, train_weights: bool = True, train_thresholds: bool = True,
             device=None, progress: bool = True, desc: str = "fine-tune") -> List[Dict]:
    """Fine-tune ``snn`` (a converted network, torch backend) in place; returns the per-epoch history
    ``[{epoch, loss, train_accuracy, seconds}]`` (loss and accuracy at step T, averaged over images).

    :param T: training time steps (main-run steps per batch; a pre-run comes on top, without grad)
    :param loss: ``'tet'`` (with ``lam`` and target ``means``) or ``'ce'`` (mean over steps of CE)
    :param optimizer: ``'adam'`` or ``'sgd'`` (with ``momentum``), both with ``weight_decay``
    :param train_weights, train_thresholds: train the synaptic weights / the per-layer θ (freeze either)
    """
    nodes = _check(snn, T, epochs, lr, loss, lam, optimizer)
    if not (train_weights or train_thresholds):
        raise ConfigError("nothing to train: train_weights and train_thresholds are both False")
    net, _, tau = protocol.unwrap(snn)
    if device is not None:
        snn.to(device)
    was_trainable = {p: p.requires_grad for p in snn.parameters()}   # before θ becomes a parameter
    for node in nodes:
        node.learnable_threshold(train_thresholds)
    thetas = {id(node.theta) for node in nodes}
    params = [p for p in snn.parameters() if (id(p) in thetas) or train_weights]
    trained = {id(p) for p in params}
    for p in snn.parameters():
        p.requires_grad_(id(p) in trained)
    opt = (torch.optim.Adam(params, lr=lr, weight_decay=weight_decay) if optimizer == "adam"
           else torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay))
    device = next(iter(params)).device
    restore_modes = protocol.switch_step_mode(net, MULTI)
    snn.eval()   # frozen BatchNorm statistics, no dropout: the network of inference
    history = []
    try:
        for epoch in range(1, epochs + 1):
            started, total, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
            bar = tqdm(loader_batches(loader, device), desc=f"{desc} {epoch}/{epochs}", disable=not progress,
                       leave=False)
            for images, labels in bar:
                logits = torch.cat(list(protocol.run(net, images, T, tau)))
                check_labels(labels, images, logits.shape[-1])
                value = tet_loss(logits, labels, lam if loss == "tet" else 0.0, means)
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
                n = labels.numel()
                total += n
                loss_sum += float(value.detach()) * n
                correct += int((logits.detach().mean(0).argmax(-1) == labels).sum())
                bar.set_postfix(loss=f"{loss_sum / total:.4f}")
            if total == 0:
                raise ConfigError("the data loader yielded no samples")
            history.append({"epoch": epoch, "loss": round(loss_sum / total, 6),
                            "train_accuracy": round(100.0 * correct / total, 4),
                            "seconds": round(time.perf_counter() - started, 3)})
    finally:
        functional.reset_net(net)
        restore_modes()
        for node in nodes:
            node.learnable_threshold(False)
        for p, flag in was_trainable.items():
            p.requires_grad_(flag)
    return history


def ann_state_dict(snn: nn.Module, ann: nn.Module) -> Dict[str, torch.Tensor]:
    """The state_dict of ``ann`` (the QCFS ANN ``snn`` was converted from) holding the SNN's
    weights and thresholds: every key of the converted network at the same path, ``theta`` of a
    node as the threshold of its QCFS activation (``thresh``, or ``up``/``v_threshold`` for the
    reference repositories' classes, :func:`sjconv.activations.activation_names`), in the ANN's
    shape (a 0-dim θ stays 0-dim). Raises if the two do not match key for key."""
    net, _, _ = protocol.unwrap(snn)
    snn_state = net.state_dict()
    ann_state = ann.state_dict()
    names = {f"{path}.theta" if path else "theta": f"{path}.{found[0]}" if path else found[0]
             for path, found in ((p, activation_names(m)) for p, m in ann.named_modules()) if found}
    mapped = {names.get(k, k): v for k, v in snn_state.items()}
    mapped = {k: (v.reshape(ann_state[k].shape) if k in ann_state and k not in snn_state
                  and v.numel() == ann_state[k].numel() else v) for k, v in mapped.items()}
    missing = sorted(set(ann_state) - set(mapped))
    extra = sorted(set(mapped) - set(ann_state))
    shapes = sorted(k for k in set(ann_state) & set(mapped) if ann_state[k].shape != mapped[k].shape)
    if missing or extra or shapes:
        raise ConfigError(f"the SNN does not map onto the ANN: missing {missing[:5]}, unexpected {extra[:5]}, "
                          f"shapes differ {shapes[:5]} (was the SNN converted from this architecture?)")
    return {k: mapped[k].detach().to(ann_state[k].dtype).clone() for k in ann_state}


def load_into_ann(ann: nn.Module, snn: nn.Module) -> nn.Module:
    """Copy the fine-tuned weights and thresholds of ``snn`` into ``ann`` (in place); returns ``ann``."""
    ann.load_state_dict(ann_state_dict(snn, ann))
    return ann
