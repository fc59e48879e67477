"""Training without backpropagation between layers: per-layer Adam optimizers, the ``joint`` and
``layerwise`` schedules, random or hard negatives; the softmax readout; and the two baselines of
the same run (the spiking network trained end to end with BPTT, and non-spiking FF).

Data are tensors (``x`` [N, D] in [0, 1], ``y`` [N]) on the training device: minibatches are
index slices of one permutation per epoch, no DataLoader. Each epoch re-seeds torch's generators
from (seed, epoch), so a run resumed after epoch e repeats the uninterrupted one.
"""

import math
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from .core import FFNet, ff_loss, goodness, overlay
from .options import NEGATIVES, SCHEDULES


def layer_optimizers(net: FFNet, lr: float) -> List[torch.optim.Optimizer]:
    """One Adam per layer, each holding only that layer's parameters."""
    return [torch.optim.Adam(layer.parameters(), lr=lr) for layer in net.layers]


def random_wrong_labels(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """A wrong label per sample, uniform over the C - 1 others."""
    return (y + torch.randint(1, num_classes, y.shape, device=y.device)) % num_classes


def hard_wrong_labels(scores: torch.Tensor, y: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """A wrong label per sample drawn in proportion to how much the network likes it (Hinton
    2022's hard negatives: wrong labels the network itself predicts): ``scores`` [N, C] are the
    label scores of :meth:`FFNet.label_scores`, standardised per sample, and the wrong labels are
    drawn from softmax(score / temperature); the true label is never drawn."""
    z = (scores - scores.mean(dim=1, keepdim=True)) / (scores.std(dim=1, keepdim=True) + 1e-8)
    z = (z / temperature).scatter(1, y[:, None], float("-inf"))
    return torch.multinomial(z.softmax(dim=1), 1).squeeze(1)


def _seed_epoch(seed: int, epoch: int) -> None:
    torch.manual_seed(seed * 100_003 + epoch)


def _cosine(lr: float, step: int, total: int) -> float:
    return 0.5 * lr * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def ff_step(net: FFNet, optimizers: Sequence[torch.optim.Optimizer], x_pos: torch.Tensor, x_neg: torch.Tensor,
            train: Sequence[int]) -> List[float]:
    """One minibatch of FF: positives and negatives run together ([T, 2B, D]); each layer in
    ``train`` takes one step of its own optimizer on its own loss, the layers below it run
    without a graph. Returns the losses of the trained layers."""
    b, last = x_pos.shape[0], max(train)
    h = net.encode(torch.cat([x_pos, x_neg]))
    losses = []
    for k, layer in enumerate(net.layers[:last + 1]):
        if k not in train:
            with torch.no_grad():
                h = layer(h)
            continue
        h = layer(h.detach())
        g = goodness(h)
        loss = ff_loss(g[:b], g[b:], net.goodness_threshold, net.sharpness)
        optimizers[k].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[k].step()
        losses.append(loss.item())
    return losses


def train_ff(net: FFNet, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int = 64, lr: float = 1e-2,
             schedule: str = "joint", negatives: str = "hard", seed: int = 0, hard_temperature: float = 1.0,
             hard_every: int = 1, skip_first: bool = False,
             optimizers: Optional[Sequence[torch.optim.Optimizer]] = None, start_epoch: int = 0,
             on_epoch: Optional[Callable[[int, Dict], None]] = None) -> List[Dict]:
    """Train ``net`` with forward-forward on the whole training set.

    Args:
        net: the network; its layers are trained in place.
        x, y: training images [N, D] in [0, 1] and labels [N], on the network's device.
        epochs: ``joint``: epochs of minibatches, every layer updated on every minibatch;
            ``layerwise``: epochs per layer, layer after layer (the run has L·epochs epochs).
        batch_size, lr: minibatch size and Adam's initial rate (cosine decay to 0 over each
            layer's updates).
        negatives: ``random`` (a wrong label drawn uniformly) or ``hard`` (drawn from the
            network's own label scores of the training set, refreshed every ``hard_every``
            epochs of each layer's training: scoring every candidate of every image costs
            about as much as an epoch of training).
        seed: re-seeds torch's generators at every epoch (see the module docstring).
        skip_first: the hard negatives' scores leave out the first layer (as the prediction).
        optimizers: one per layer (default: :func:`layer_optimizers`); pass those of a
            checkpoint, with ``start_epoch``, to resume.
        on_epoch: called after every epoch with (epoch index, this epoch's record).

    Returns:
        one record per epoch trained: ``epoch``, ``layer`` (the trained layer, or ``"all"``),
        ``loss`` (mean over minibatches of each trained layer's loss), ``seconds``.
    """
    import time

    if schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got '{schedule}'")
    if negatives not in NEGATIVES:
        raise ConfigError(f"negatives must be one of {', '.join(NEGATIVES)}, got '{negatives}'")
    optimizers = list(optimizers) if optimizers is not None else layer_optimizers(net, lr)
    n, c, depth = x.shape[0], net.num_classes, len(net.layers)
    per_epoch = math.ceil(n / batch_size)
    phases = [list(range(depth))] if schedule == "joint" else [[k] for k in range(depth)]
    history, scores = [], None
    for epoch in range(start_epoch, epochs * len(phases)):
        started = time.perf_counter()
        phase, within = divmod(epoch, epochs)
        train_layers = phases[phase]
        _seed_epoch(seed, epoch)
        if negatives == "hard" and (within % hard_every == 0 or scores is None):
            reach = max(train_layers) + 1
            with torch.no_grad():
                scores = torch.cat([net.label_scores(chunk, skip_first and reach > 1, depth=reach)
                                    for chunk in x.split(256)])
        order = torch.randperm(n, device=x.device)
        sums = [0.0] * len(train_layers)
        for i, start in enumerate(range(0, n, batch_size)):
            idx = order[start:start + batch_size]
            xb, yb = x[idx], y[idx]
            wrong = (hard_wrong_labels(scores[idx], yb, hard_temperature) if negatives == "hard"
                     else random_wrong_labels(yb, c))
            for k in train_layers:
                _set_lr(optimizers[k], _cosine(lr, within * per_epoch + i, epochs * per_epoch))
            losses = ff_step(net, optimizers, overlay(xb, yb, c), overlay(xb, wrong, c), train_layers)
            sums = [s + v for s, v in zip(sums, losses)]
        record = {"epoch": epoch + 1, "layer": "all" if schedule == "joint" else train_layers[0] + 1,
                  "loss": [round(s / per_epoch, 5) for s in sums],
                  "seconds": round(time.perf_counter() - started, 3)}
        history.append(record)
        if on_epoch is not None:
            on_epoch(epoch, record)
    return history


def trained_depth(schedule: str, epoch: int, epochs: int, num_layers: int) -> int:
    """How many layers have been trained after epoch index ``epoch`` (0-based) of a run."""
    return num_layers if schedule == "joint" else min(epoch // epochs + 1, num_layers)


def train_readout(features: torch.Tensor, y: torch.Tensor, num_classes: int, steps: int = 300,
                  lr: float = 0.01, weight_decay: float = 1e-4, seed: int = 0) -> nn.Linear:
    """The softmax readout: a linear classifier on fixed features (the hidden layers' firing
    rates of the image with the neutral label), full-batch Adam on cross-entropy."""
    torch.manual_seed(seed)
    head = nn.Linear(features.shape[1], num_classes).to(features.device)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        loss = F.cross_entropy(head(features), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return head


class BPTTNet(nn.Module):
    """The BPTT baseline: the same spiking layers as an :class:`FFNet` (normalisation, Linear,
    LIF), no label in the input, a linear classifier on the last layer's firing rates; trained
    end to end through time with the surrogate gradient."""

    def __init__(self, net: FFNet):
        super().__init__()
        self.body = net
        self.head = nn.Linear(net.config["dims"][-1], net.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.body.encode(x), detach=False)[-1].mean(dim=0))

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        return torch.cat([self(chunk).argmax(dim=1) for chunk in x.split(batch_size)])


def train_bptt(model: BPTTNet, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int = 64,
               lr: float = 1e-3, seed: int = 0, on_epoch: Optional[Callable[[int, Dict], None]] = None) -> List[Dict]:
    """Cross-entropy, one Adam over every parameter, cosine decay; records as :func:`train_ff`."""
    import time

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    n = x.shape[0]
    per_epoch = math.ceil(n / batch_size)
    history = []
    for epoch in range(epochs):
        started = time.perf_counter()
        _seed_epoch(seed, epoch)
        order, total = torch.randperm(n, device=x.device), 0.0
        for i, start in enumerate(range(0, n, batch_size)):
            idx = order[start:start + batch_size]
            _set_lr(optimizer, _cosine(lr, epoch * per_epoch + i, epochs * per_epoch))
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
        record = {"epoch": epoch + 1, "loss": round(total / per_epoch, 5),
                  "seconds": round(time.perf_counter() - started, 3)}
        history.append(record)
        if on_epoch is not None:
            on_epoch(epoch, record)
    return history
