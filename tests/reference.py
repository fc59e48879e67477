"""Plain reference implementations, written independently of sjconv's own rule code.

- ``reference_node``: the neuron rules of docs/methods.md#if-neuron, docs/methods.md#signed-neuron, docs/methods.md#srp as a Python loop over time,
  element by element (float32 arithmetic via numpy scalars).
- ``reference_network_logits``: the official QCFS SNN loop (``Models/layer.py`` IF with T > 0:
  T folded into the batch, mem = θ/2, spike = ((mem - θ) >= 0)·θ, mem -= spike) applied to a
  copy of the ANN.
- ``reference_srp_mask`` / ``reference_srp_network_logits``: the SRP mask of docs/methods.md#srp
  element by element, and a whole SRP network with every QCFS layer replaced by a layer in the
  style of the SRP reference code (``MPLayer``: T folded into the batch, τ pre-run steps, then the
  mask from the residual potential and the main run from θ/2).
- ``reference_cos_*``: COS (docs/methods.md#cos), element by element and as a whole network.
"""

import copy

import numpy as np
import torch
import torch.nn as nn

from sjconv.qcfs import QCFS


def reference_node(x_seq, theta, signed=False, snm=False, mask=None, dtype=np.float32):
    """Outputs [T, ...] and final (v, count) for one node, one element at a time, with the
    arithmetic of ``dtype`` (float32 by default; float64 for float64 networks)."""
    x = np.asarray(x_seq, dtype=dtype)
    T = x.shape[0]
    flat = x.reshape(T, -1)
    th = dtype(theta)
    out = np.zeros_like(flat)
    v_end = np.zeros(flat.shape[1], dtype)
    c_end = np.zeros(flat.shape[1], dtype)
    keep = np.ones(flat.shape[1], bool) if mask is None else np.asarray(mask).reshape(-1)
    for i in range(flat.shape[1]):
        v = dtype(0.0) if (signed and snm) else th / dtype(2)
        c = 0
        for t in range(T):
            v = dtype(v + flat[t, i])
            if v >= th:
                s = 1
            elif signed and c > 0 and ((v <= -th) if snm else (v < 0)):
                s = -1
            else:
                s = 0
            v = dtype(v - dtype(s) * th)
            c += s
            out[t, i] = dtype(s) * th if keep[i] else 0.0
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


def qcfs_thresh(module):
    """θ of an sjconv QCFS module, else None (the default ``thresh_of`` of the reference loops)."""
    return module.thresh if isinstance(module, QCFS) else None


def _swap_qcfs(module, T, thresh_of=qcfs_thresh):
    for name, child in module.named_children():
        thresh = thresh_of(child)
        if thresh is not None:
            setattr(module, name, _ReferenceIF(thresh, T))
        else:
            _swap_qcfs(child, T, thresh_of)


@torch.no_grad()
def reference_network_logits(ann, images, T, thresh_of=qcfs_thresh):
    """Per-step logits [T, N, classes] of the official QCFS SNN loop; ``thresh_of(module)`` gives
    the θ of an activation module to replace (None for other modules)."""
    net = copy.deepcopy(ann).eval()
    _swap_qcfs(net, T, thresh_of)
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


def reference_cos_start(x_pre, theta):
    """COS initial potentials (docs/methods.md#cos) for one node, element by element, in potential units
    (v = θ·u; the margins 0.999 and 1.001 scale with θ): float32 numpy, shape of one step."""
    x = np.asarray(x_pre, dtype=np.float32)
    rho = x.shape[0]
    flat = x.reshape(rho, -1)
    th = np.float32(theta)
    half = th / np.float32(2)
    start = np.zeros(flat.shape[1], np.float32)
    for i in range(flat.shape[1]):
        v, n = half, 0
        lowest_fired, highest_silent = np.float32(np.inf), np.float32(-np.inf)
        for t in range(rho):
            v = np.float32(v + flat[t, i])
            if v >= th:
                n += 1
                lowest_fired = min(lowest_fired, v)
                v = np.float32(v - th)
            else:
                highest_silent = max(highest_silent, v)
        down = np.float32(lowest_fired - np.float32(0.999) * th)
        if not down > th:
            down = th
        up = np.float32(np.float32(1.001) * th - highest_silent)
        if not up > th:
            up = th
        value = half
        if v < 0 and n >= 1:
            value = np.float32(half - down)
        if v >= th:
            value = np.float32(half + up)
        start[i] = value
    return start.reshape(x.shape[1:])


def reference_cos_node(x_seq, theta, rho, signed=False, steps=None):
    """Main-run outputs [steps, ...] of a COS node (docs/methods.md#cos): calibrated on the first ``rho`` inputs of
    ``x_seq``, then run from the calibrated potentials on x_1..x_steps (the same first inputs
    again) with the IF rule of docs/methods.md#if-neuron, or the signed rule of docs/methods.md#signed-neuron when ``signed``. Element by element."""
    x = np.asarray(x_seq, dtype=np.float32)
    steps = x.shape[0] if steps is None else steps
    start = reference_cos_start(x[:rho], theta).reshape(-1)
    flat = x[:steps].reshape(steps, -1)
    th = np.float32(theta)
    out = np.zeros_like(flat)
    for i in range(flat.shape[1]):
        v, c = start[i], 0
        for t in range(steps):
            v = np.float32(v + flat[t, i])
            s = 1 if v >= th else (-1 if (signed and c > 0 and v < 0) else 0)
            v = np.float32(v - np.float32(s) * th)
            c += s
            out[t, i] = np.float32(s) * th
    return out.reshape((steps,) + x.shape[1:])


class _ReferenceCOS(nn.Module):
    """A COS layer in the style of the reference code's ``MPLayer`` (T folded into the batch,
    T >= ρ): pre-simulate ρ steps from θ/2 recording firing and silent potentials, shift the
    initial potential, then run all T steps from it. Potential units, re-typed from docs/methods.md#cos."""

    def __init__(self, thresh, T, rho, signed):
        super().__init__()
        self.thresh = float(thresh.detach().reshape(-1)[0])
        self.T, self.rho, self.signed = T, rho, signed

    def forward(self, x):
        th = self.thresh
        x = x.view(self.T, x.shape[0] // self.T, *x.shape[1:])
        mem = torch.full_like(x[0], th / 2)
        fired_pot, silent_pot, fired = [], [], torch.zeros_like(mem)
        for t in range(self.rho):
            mem = mem + x[t]
            spike = (mem - th) >= 0
            fired_pot.append(torch.where(spike, mem, torch.full_like(mem, float("inf"))))
            silent_pot.append(torch.where(spike, torch.full_like(mem, float("-inf")), mem))
            fired = fired + spike.float()
            mem = mem - spike.float() * th
        a = torch.stack(fired_pot).min(dim=0).values
        b = torch.stack(silent_pot).max(dim=0).values
        down = torch.where(a - 0.999 * th > th, a - 0.999 * th, torch.full_like(a, th))
        up = torch.where(1.001 * th - b > th, 1.001 * th - b, torch.full_like(b, th))
        half = torch.full_like(mem, th / 2)
        start = torch.where((mem < 0) & (fired > 0), half - down, half)
        start = torch.where(mem >= th, half + up, start)
        mem, count, outs = start, torch.zeros_like(start), []
        for t in range(self.T):
            mem = mem + x[t]
            pos = (mem - th) >= 0
            neg = (~pos) & (mem < 0) & (count > 0) if self.signed else torch.zeros_like(pos)
            s = pos.float() - neg.float()
            mem = mem - s * th
            count = count + s
            outs.append(s * th)
        return torch.stack(outs).flatten(0, 1)


@torch.no_grad()
def reference_cos_network_logits(ann, images, T, rho, signed=False, thresh_of=qcfs_thresh):
    """Per-step main-run logits [T, N, classes] of a COS network, every QCFS layer replaced by
    :class:`_ReferenceCOS` (run for max(T, ρ) steps, since calibration needs ρ inputs)."""
    steps = max(T, rho)
    net = copy.deepcopy(ann).eval()

    def swap(module):
        for name, child in module.named_children():
            if thresh_of(child) is not None:
                setattr(module, name, _ReferenceCOS(thresh_of(child), steps, rho, signed))
            else:
                swap(child)

    swap(net)
    x = images.unsqueeze(0).repeat(steps, *([1] * images.dim())).flatten(0, 1)
    out = net(x)
    return out.view(steps, images.shape[0], *out.shape[1:])[:T]


def reference_group_node(x_seq, theta, levels, signed=False, snm=False, mask=None):
    """Group neuron of docs/methods.md#group-neuron (gn; gn+neg when ``signed``) for one node, element by
    element: outputs [T, ...] (float32) and final (v, count). q = θ/m rounded to float32, member
    thresholds j·q each rounded once to float32 (the reference code's ``arange(1, m+1)·q`` in
    float32); v starts at q/2 (0 with the SNM rule); k counts the members at or above threshold,
    or, signed and when none is, minus the members j with v below -(j-1)·q (SNM: at or below -j·q)
    while the net count c is >= j; v -= k·q (k·q rounded once); c += k; output k·q."""
    x = np.asarray(x_seq, dtype=np.float32)
    T = x.shape[0]
    flat = x.reshape(T, -1)
    q = np.float32(float(theta) / levels)
    thr = [np.float32(np.float32(j) * q) for j in range(1, levels + 1)]
    neg_thr = [-t for t in thr] if snm else [np.float32(0.0)] + [-t for t in thr[:-1]]
    out = np.zeros_like(flat)
    v_end = np.zeros(flat.shape[1], np.float32)
    c_end = np.zeros(flat.shape[1], np.float32)
    keep = np.ones(flat.shape[1], bool) if mask is None else np.asarray(mask).reshape(-1)
    for i in range(flat.shape[1]):
        v = np.float32(0.0) if (signed and snm) else np.float32(q / np.float32(2))
        c = 0
        for t in range(T):
            v = np.float32(v + flat[t, i])
            k = sum(1 for j in range(levels) if v >= thr[j])
            if signed and k == 0:
                for j in range(1, levels + 1):
                    below = (v <= neg_thr[j - 1]) if snm else (v < neg_thr[j - 1])
                    if below and c >= j:
                        k -= 1
            kq = np.float32(np.float32(k) * q)
            v = np.float32(v - kq)
            c += k
            out[t, i] = kq if keep[i] else 0.0
        v_end[i], c_end[i] = v, c
    shape = x.shape[1:]
    return out.reshape(x.shape), v_end.reshape(shape), c_end.reshape(shape)


class _ReferenceGN(nn.Module):
    """A group neuron as the reference code (``Lyu6PosHao/ANN2SNN_GN``, ``modules.py: GN``) makes its
    comparisons, re-typed: T folded into the batch; one potential per member, all m of them
    updated alike, starting at 0.5·q; member thresholds ``bias = arange(1, m+1)·q`` built in the
    default float dtype, then cast to the input's; a member fires where ``v - bias >= 0``; the
    spikes are summed over members (k); ``v -= k·q``; output ``k·q``. The reference has no signed
    version: ``signed`` adds ours (docs/methods.md#group-neuron), written from the rule."""

    def __init__(self, thresh, T, members, signed=False):
        super().__init__()
        self.T, self.m, self.signed = T, members, signed
        self.q = float(thresh.detach().reshape(-1)[0]) / members       # a Python float, as .item()/m

    def forward(self, x):
        x = x.view(self.T, x.shape[0] // self.T, *x.shape[1:])
        rest = [1] * x[0].dim()
        bias = (torch.arange(1, self.m + 1, 1) * self.q).view(-1, *rest).to(x)
        v = torch.full_like(x[0], self.q * 0.5).repeat(self.m, *rest)
        count = torch.zeros_like(x[0])
        outs = []
        for t in range(self.T):
            v = v + x[t]
            k = ((v - bias) >= 0).to(x).sum(dim=0)
            if self.signed:
                low = torch.cat([torch.zeros_like(bias[:1]), bias[:-1]])          # 0, q, ..., (m-1)q
                members = torch.arange(1, self.m + 1, device=x.device).view(-1, *rest)
                neg = ((v + low) < 0) & (count.unsqueeze(0) >= members) & (k == 0).unsqueeze(0)
                k = k - neg.to(x).sum(dim=0)
                count = count + k
            v = v - k * self.q
            outs.append(k * self.q)
        return torch.stack(outs).flatten(0, 1)


@torch.no_grad()
def reference_gn_network_logits(ann, images, T, levels=None, signed=False):
    """Per-step logits [T, N, classes] with every QCFS layer replaced by :class:`_ReferenceGN`
    (``levels`` members; None: the layer's own L, as ``replace_qcfs_with_sn`` is used with m = L)."""
    net = copy.deepcopy(ann).eval()

    def swap(module):
        for name, child in module.named_children():
            if isinstance(child, QCFS):
                setattr(module, name, _ReferenceGN(child.thresh, T, levels or child.L, signed))
            else:
                swap(child)

    swap(net)
    x = images.unsqueeze(0).repeat(T, *([1] * images.dim())).flatten(0, 1)
    out = net(x)
    return out.view(T, images.shape[0], *out.shape[1:])


#: SRP keeps a neuron whose residual potential after the pre-run is above this fraction of θ (docs/methods.md#srp)
SRP_FRACTION = 1e-3


def srp_bound(theta, dtype=np.float32):
    """1e-3·θ, computed in double precision and rounded once to the state dtype."""
    return dtype(SRP_FRACTION * float(theta))


def reference_srp_mask(v, theta, dtype=np.float32):
    """SRP mask (docs/methods.md#srp) for residual potentials ``v``, one element at a time: True (keep) where
    v > 1e-3·θ, False where v <= 1e-3·θ (dead: no positive residual)."""
    values = np.asarray(v, dtype=dtype)
    bound = srp_bound(theta, dtype)
    flat = values.reshape(-1)
    keep = np.zeros(flat.shape, bool)
    for i in range(flat.shape[0]):
        keep[i] = bool(flat[i] > bound)
    return keep.reshape(values.shape)


class _ReferenceSRP(nn.Module):
    """An SRP layer in the style of the SRP reference code's ``MPLayer``, re-typed from docs/methods.md#srp:
    input [(τ + T)·N, ...] (steps folded into the batch); τ pre-run steps from θ/2 without a
    mask; then the mask ``mem > 1e-3·θ`` per sample and neuron, mem back to θ/2 (and the
    signed count to 0), and T main steps whose outputs θ·s are multiplied by the mask. The
    pre-run outputs (computed as they would be, unmasked) fill the first τ output steps."""

    def __init__(self, thresh, steps, tau, signed):
        super().__init__()
        self.thresh = thresh.detach().clone()
        self.steps, self.tau, self.signed = steps, tau, signed

    def _run(self, x, mem, mask):
        th = self.thresh
        count = torch.zeros_like(mem)
        outs = []
        for t in range(x.shape[0]):
            mem = mem + x[t]
            pos = (mem - th) >= 0
            neg = (~pos) & (mem < 0) & (count > 0) if self.signed else torch.zeros_like(pos)
            s = pos.to(mem.dtype) - neg.to(mem.dtype)
            mem = mem - s * th
            count = count + s
            outs.append(s * th if mask is None else s * th * mask)
        return outs, mem

    def forward(self, x):
        x = x.view(self.steps, x.shape[0] // self.steps, *x.shape[1:])
        half = 0.5 * self.thresh
        pre, mem = self._run(x[:self.tau], torch.zeros_like(x[0]) + half, None)
        mask = (mem > SRP_FRACTION * float(self.thresh)).to(x.dtype) if self.tau else None
        main, _ = self._run(x[self.tau:], torch.zeros_like(x[0]) + half, mask)
        return torch.stack(pre + main).flatten(0, 1)


@torch.no_grad()
def reference_srp_network_logits(ann, images, T, tau, signed=False):
    """Per-step main-run logits [T, N, classes] of an SRP network (docs/methods.md#srp): every QCFS layer of a copy
    of ``ann`` replaced by :class:`_ReferenceSRP`, run for τ + T steps, the first τ dropped."""
    steps = tau + T
    net = copy.deepcopy(ann).eval()

    def swap(module):
        for name, child in module.named_children():
            if isinstance(child, QCFS):
                setattr(module, name, _ReferenceSRP(child.thresh, steps, tau, signed))
            else:
                swap(child)

    swap(net)
    x = images.unsqueeze(0).repeat(steps, *([1] * images.dim())).flatten(0, 1)
    out = net(x)
    return out.view(steps, images.shape[0], *out.shape[1:])[tau:]
