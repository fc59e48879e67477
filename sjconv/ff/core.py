"""The forward-forward network: label overlay, input coding, FF layers, goodness, the local loss
and the goodness prediction (docs/methods.md#forward-forward).

Every tensor that runs through the network is time-major, ``[T, N, features]``; a layer runs
all T steps in one call (SpikingJelly multi-step mode), and nothing here loops over samples or
time steps in Python (the LIF node's own kernel steps through time).
"""

from typing import List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import encoding, neuron, surrogate

from ..errors import ConfigError
from ..guards import check_steps_count
from .options import ENCODINGS

#: added to the RMS of :func:`rms_normalize` (a sample with no input spike at all stays zero)
_EPS = 1e-6


def overlay(x: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``x`` ([N, D], flattened images) with each label written into its first ``num_classes``
    inputs: one-hot, the active entry set to the image's maximum, the others zero. ``labels`` is
    [N] (one label per image) or [N, K] (K candidates per image: the result is [N, K, D]). One
    vectorised operation, no loop over samples."""
    if labels.dim() == 1:
        return overlay(x, labels[:, None], num_classes)[:, 0]
    peak = x.amax(dim=1)                                           # [N]
    out = x[:, None, :].expand(-1, labels.shape[1], -1).clone()    # [N, K, D]
    out[..., :num_classes] = F.one_hot(labels, num_classes).to(x.dtype) * peak[:, None, None]
    return out


def neutral(x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``x`` with its first ``num_classes`` inputs all equal (the image's maximum / C): the
    neutral label of the softmax readout, one pass per image."""
    out = x.clone()
    out[:, :num_classes] = (x.amax(dim=1) / num_classes)[:, None]
    return out


def encode(x: torch.Tensor, T: int, coding: str = "poisson") -> torch.Tensor:
    """[..., D] images in [0, 1] -> [T, ..., D] input of the first layer: Poisson spikes (the
    value is the firing probability of each step) or the value itself every step (``direct``)."""
    if coding not in ENCODINGS:
        raise ConfigError(f"encoding must be one of {', '.join(ENCODINGS)}, got '{coding}'")
    seq = x.unsqueeze(0).expand(T, *x.shape)
    if coding == "direct":
        return seq
    return encoding.PoissonEncoder(step_mode="m")(seq)


def rms_normalize(x: torch.Tensor) -> torch.Tensor:
    """Each sample of ``x`` ([T, N, F]) divided by its root mean square over time and features:
    only its direction passes on (a layer cannot hand its goodness to the next), scaled so the
    entries are of order one (unit L2 norm would leave the LIF currents far below threshold)."""
    rms = x.pow(2).mean(dim=(0, 2), keepdim=True).sqrt()
    return x / (rms + _EPS)


def goodness(spikes: torch.Tensor) -> torch.Tensor:
    """Goodness of each sample: the mean over neurons of the squared firing rate over the T
    steps. ``spikes`` [T, N, H] -> [N] (for a ReLU layer, T = 1 and the "rate" is the activity)."""
    return spikes.mean(dim=0).pow(2).mean(dim=-1)


def ff_loss(g_pos: torch.Tensor, g_neg: torch.Tensor, threshold: float, sharpness: float = 1.0) -> torch.Tensor:
    """The local FF loss, mean over samples: softplus(s(θ − g_pos)) + softplus(s(g_neg − θ)).

    Softplus, log(1 + eᶻ), is the negative log-likelihood of the logistic "positive" probability
    σ(g − θ); the users' ``log1p(1 + exp(z))`` is log(2 + eᶻ), whose minimum is log 2, not 0, and
    whose slope is eᶻ/(2 + eᶻ), a third less than softplus's at z = 0. ``sharpness`` s scales the
    logit (the rates' goodness lies in [0, 1], so s = 1 keeps the loss almost linear)."""
    return (F.softplus(sharpness * (threshold - g_pos)) + F.softplus(sharpness * (g_neg - threshold))).mean()


class FFLayer(nn.Module):
    """One forward-forward layer: per-sample normalisation of its input, ``Linear(bias=False)``,
    then a multi-step SpikingJelly ``LIFNode`` (ATan surrogate) or, for the non-spiking baseline,
    ReLU. Input and output are [T, N, features]."""

    def __init__(self, in_features: int, out_features: int, tau: float = 2.0, v_threshold: float = 0.5,
                 spiking: bool = True):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.spiking = spiking
        if spiking:
            self.node = neuron.LIFNode(tau=float(tau), v_threshold=float(v_threshold),
                                       surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m")
        else:
            self.node = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        current = self.linear(rms_normalize(x))
        if self.spiking:
            self.node.reset()   # every call is a fresh sample batch: the membrane starts at rest
        return self.node(current)


class FFNet(nn.Module):
    """A forward-forward network: ``dims`` = [inputs, hidden, ...], one :class:`FFLayer` per
    pair; the first ``num_classes`` inputs carry the label (:func:`overlay`).

    Args:
        dims: input size then the width of each layer, e.g. ``[64, 500, 500]``.
        num_classes: C, the label entries at the start of the input.
        T: time steps per sample (1 for ``spiking=False``).
        tau, v_threshold: the LIF neurons' time constant and threshold.
        goodness_threshold: θ_g of the loss.
        coding: ``"poisson"`` or ``"direct"`` (see :func:`encode`).
        spiking: LIF layers (True) or ReLU layers (the non-spiking FF baseline).
        sharpness: scale of the loss's logit (see :func:`ff_loss`).
    """

    def __init__(self, dims: Sequence[int], num_classes: int = 10, T: int = 8, tau: float = 2.0,
                 v_threshold: float = 0.5, goodness_threshold: float = 0.1, coding: str = "direct",
                 spiking: bool = True, sharpness: float = 10.0):
        super().__init__()
        check_dims(dims, num_classes)
        T = check_steps_count(T)
        if not goodness_threshold > 0:
            raise ConfigError(f"goodness_threshold must be > 0, got {goodness_threshold}")
        if coding not in ENCODINGS:
            raise ConfigError(f"coding must be one of {', '.join(ENCODINGS)}, got '{coding}'")
        self.config = {"dims": [int(d) for d in dims], "num_classes": int(num_classes), "T": int(T),
                       "tau": float(tau), "v_threshold": float(v_threshold),
                       "goodness_threshold": float(goodness_threshold), "coding": coding, "spiking": bool(spiking),
                       "sharpness": float(sharpness)}
        self.num_classes, self.T, self.coding = num_classes, T, coding
        self.goodness_threshold, self.sharpness = goodness_threshold, sharpness
        self.layers = nn.ModuleList(FFLayer(a, b, tau, v_threshold, spiking) for a, b in zip(dims[:-1], dims[1:]))
        #: the softmax readout (:meth:`attach_readout`), None until one is trained
        self.readout: Optional[nn.Linear] = None
        self.readout_skip_first = False

    def attach_readout(self, head: nn.Linear, skip_first: bool = False) -> None:
        """Keep ``head``, a linear classifier on :meth:`features` (with the same ``skip_first``),
        as this network's softmax readout: saved with it and used by ``predict(..., "softmax")``."""
        self.readout, self.readout_skip_first = head, skip_first

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[N, D] (label already written in) -> [T, N, D]."""
        return encode(x, self.T, self.coding)

    def forward(self, x_seq: torch.Tensor, detach: bool = True, depth: Optional[int] = None) -> List[torch.Tensor]:
        """Every layer's output ([T, N, H] each) for the encoded input ``x_seq`` (the first
        ``depth`` layers only, if given). With ``detach`` (FF), each layer's input is cut from
        the graph, so a layer's loss reaches only its own weights; ``detach=False`` is the
        end-to-end (BPTT) network."""
        outputs, h = [], x_seq
        for layer in self.layers[:depth]:
            h = layer(h.detach() if detach else h)
            outputs.append(h)
        return outputs

    def layer_goodness(self, x: torch.Tensor) -> torch.Tensor:
        """[L, N] goodness of every layer for [N, D] inputs (labels already written in)."""
        return torch.stack([goodness(out) for out in self(self.encode(x))])

    def label_scores(self, x: torch.Tensor, skip_first: bool = False, depth: Optional[int] = None) -> torch.Tensor:
        """[N, C] goodness, summed over the layers (all but the first with ``skip_first``; the
        first ``depth`` only, if given), of
        every candidate label of every image: all N·C overlays in one batched pass. With
        Poisson coding the image's spikes are drawn once and shared by its C candidates (only
        the label entries differ), so the candidates are compared on the same input noise."""
        n, c = x.shape[0], self.num_classes
        seq = self.encode(x)[:, :, None].expand(-1, -1, c, -1).clone()       # [T, N, C, D], one draw per image
        label_seq = encode(x.amax(dim=1, keepdim=True), self.T, self.coding)   # [T, N, 1]: one train per image
        seq[..., :c] = torch.eye(c, dtype=x.dtype, device=x.device) * label_seq[..., None]
        outs = self(seq.reshape(self.T, n * c, -1), depth=depth)
        per_layer = torch.stack([goodness(out) for out in outs])               # [L, N·C]
        first = 1 if skip_first and len(outs) > 1 else 0
        return per_layer[first:].sum(dim=0).reshape(n, c)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, readout: str = "goodness", skip_first: bool = False, batch_size: int = 256,
                depth: Optional[int] = None) -> torch.Tensor:
        """Predicted labels [N] of [N, D] images in [0, 1] (flattened, label entries included).

        ``readout="goodness"``: the candidate label with the largest total goodness
        (:meth:`label_scores`, C candidates per image in one pass); ``"softmax"``: the attached
        readout on the rates of the image with the neutral label (one pass per image)."""
        if readout == "softmax":
            if self.readout is None:
                raise ConfigError("this network has no softmax readout: train one (sjconv.ff.train_readout) and "
                                  "attach it with attach_readout, or predict with readout='goodness'")
            return self.readout(self.features(x, self.readout_skip_first)).argmax(dim=1)
        if readout != "goodness":
            raise ConfigError(f"readout must be 'goodness' or 'softmax', got '{readout}'")
        return torch.cat([self.label_scores(chunk, skip_first, depth).argmax(dim=1) for chunk in x.split(batch_size)])

    @torch.no_grad()
    def features(self, x: torch.Tensor, skip_first: bool = False, batch_size: int = 1024) -> torch.Tensor:
        """[N, ΣH] firing rates of the layers (all but the first with ``skip_first``) for the
        images with the neutral label: the input of the softmax readout."""
        first = 1 if skip_first and len(self.layers) > 1 else 0
        chunks = []
        for chunk in x.split(batch_size):
            outs = self(self.encode(neutral(chunk, self.num_classes)))
            chunks.append(torch.cat([o.mean(dim=0) for o in outs[first:]], dim=1))
        return torch.cat(chunks)


def check_dims(dims: Sequence[int], num_classes: int, input_size: Optional[int] = None, flag: str = "dims") -> None:
    """``dims`` is an input size and at least one layer width, every one >= 1; the input holds
    the C label entries; with ``input_size``, the first entry must equal it."""
    dims = list(dims)
    if len(dims) < 2 or any(int(d) < 1 for d in dims):
        raise ConfigError(f"{flag} needs the input size and at least one layer width, all >= 1, got "
                          f"{' '.join(map(str, dims))}")
    if input_size is not None and dims[0] != input_size:
        raise ConfigError(f"{flag} must start with the input size {input_size}, got {dims[0]}")
    if dims[0] < num_classes:
        raise ConfigError(f"{flag}: the input ({dims[0]}) must hold the {num_classes} label entries")
    if dims[1] < num_classes:
        raise ConfigError(f"{flag}: the first layer ({dims[1]} neurons) must be at least as wide as the "
                          f"{num_classes} classes")
