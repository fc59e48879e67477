"""Plain reference implementations, written independently of sjconv's own rule code.

- ``reference_node``: the neuron rules of METHODS.md §2-§4 as a Python loop over time,
  element by element (float32 arithmetic via numpy scalars).
- ``reference_network_logits``: the official QCFS SNN loop (``Models/layer.py`` IF with T > 0:
  T folded into the batch, mem = θ/2, spike = ((mem - θ) >= 0)·θ, mem -= spike) applied to a
  copy of the ANN.
"""

import copy

import numpy as np
import torch
import torch.nn as nn

from sjconv.qcfs import QCFS


def reference_node(x_seq, theta, signed=False, snm=False, mask=None):
    """Outputs [T, ...] (float32) and final (v, count) for one node, one element at a time."""
    x = np.asarray(x_seq, dtype=np.float32)
    T = x.shape[0]
    flat = x.reshape(T, -1)
    th = np.float32(theta)
    out = np.zeros_like(flat)
    v_end = np.zeros(flat.shape[1], np.float32)
    c_end = np.zeros(flat.shape[1], np.float32)
    keep = np.ones(flat.shape[1], bool) if mask is None else np.asarray(mask).reshape(-1)
    for i in range(flat.shape[1]):
        v = np.float32(0.0) if (signed and snm) else th / np.float32(2)
        c = 0
        for t in range(T):
            v = np.float32(v + flat[t, i])
            if v >= th:
                s = 1
            elif signed and c > 0 and ((v <= -th) if snm else (v < 0)):
                s = -1
            else:
                s = 0
            v = np.float32(v - np.float32(s) * th)
            c += s
            out[t, i] = np.float32(s) * th if keep[i] else 0.0
        v_end[i], c_end[i] = v, c
    shape = x.shape[1:]
    return out.reshape(x.shape), v_end.reshape(shape), c_end.reshape(shape)


class _ReferenceIF(nn.Module):
    """The official QCFS IF module in SNN mode (T > 0), re-typed here."""

    def __init__(self, thresh, T):
        super().__init__()
        self.thresh = thresh.detach().clone()
        self.T = T

    def forward(self, x):
        thre = self.thresh
        x = x.view(self.T, x.shape[0] // self.T, *x.shape[1:])
        mem = 0.5 * thre
        spikes = []
        for t in range(self.T):
            mem = mem + x[t]
            spike = ((mem - thre) >= 0).float() * thre
            mem = mem - spike
            spikes.append(spike)
        return torch.stack(spikes).flatten(0, 1)


def _swap_qcfs(module, T):
    for name, child in module.named_children():
        if isinstance(child, QCFS):
            setattr(module, name, _ReferenceIF(child.thresh, T))
        else:
            _swap_qcfs(child, T)


@torch.no_grad()
def reference_network_logits(ann, images, T):
    """Per-step logits [T, N, classes] of the official QCFS SNN loop."""
    net = copy.deepcopy(ann).eval()
    _swap_qcfs(net, T)
    x = images.unsqueeze(0).repeat(T, *([1] * images.dim())).flatten(0, 1)
    out = net(x)
    return out.view(T, images.shape[0], *out.shape[1:])


@torch.no_grad()
def calibrate_thresholds(ann, images, quantile=0.99):
    """Give a randomly initialised QCFS ANN thresholds at the scale of its pre-activations
    (layer by layer, in forward order), so that its neurons actually spike in tests."""
    ann.eval()
    layers = [m for m in ann.modules() if isinstance(m, QCFS)]
    for layer in layers:
        seen = []
        handle = layer.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
        ann(images)
        handle.remove()
        positive = seen[0][seen[0] > 0]
        value = float(torch.quantile(positive.flatten()[:100000], quantile)) if positive.numel() else 1.0
        layer.thresh.fill_(max(value, 1e-3))
    return ann
