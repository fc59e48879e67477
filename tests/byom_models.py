"""Small QCFS models written in the style of the reference repositories (our own code: same module
names, attributes and forward idioms, tiny sizes), to check that models researchers bring convert.

- QCFS v2 (putshua/ANN_SNN_QCFS): activation ``IF(T=0, L, thresh)`` with temporal expand/merge
  submodules; ResNet ``BasicBlock`` (``residual_function``, ``shortcut``, ``relu``), flattening with
  ``output.view(output.size(0), -1)``.
- QCFS v1 (putshua/SNN_conversion_QCFS): activation ``MyFloor(up, t)`` (floor, then clip); a
  torchvision-style CNN flattening with ``torch.flatten(x, 1)``.
- SRP / COS (hzc1208/ANN2SNN_SRP, ANN2SNN_COS): activation ``QCFS(up, t)``; a VGG with ``features``
  / ``classifier`` and ``x.view(x.size(0), -1)``.
- GN (Lyu6PosHao/ANN2SNN_GN): activation ``QCFS(T)`` holding a 0-dim ``v_threshold`` and ``p0``;
  a network with ``torch.cat`` and functional average pooling.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class _Floor(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.floor()

    @staticmethod
    def backward(ctx, grad):
        return grad


# ------------------------------------------------------------------ QCFS v2 style
class ExpandTemporalDim(nn.Module):
    def __init__(self, T):
        super().__init__()
        self.T = T

    def forward(self, x):
        return x.view(self.T, x.shape[0] // self.T, *x.shape[1:])


class MergeTemporalDim(nn.Module):
    def __init__(self, T):
        super().__init__()
        self.T = T

    def forward(self, x):
        return x.flatten(0, 1)


class IF(nn.Module):
    """QCFS v2's activation: ANN mode (clip-floor-shift) when T == 0, its own IF loop otherwise."""

    def __init__(self, T=0, L=8, thresh=8.0):
        super().__init__()
        self.thresh = nn.Parameter(torch.tensor([thresh]))
        self.L, self.T = L, T
        self.expand, self.merge = ExpandTemporalDim(T), MergeTemporalDim(T)

    def forward(self, x):
        if self.T > 0:
            x = self.expand(x)
            mem, out = 0.5 * self.thresh.data, []
            for t in range(self.T):
                mem = mem + x[t]
                spike = (mem >= self.thresh.data).float() * self.thresh.data
                mem = mem - spike
                out.append(spike)
            return self.merge(torch.stack(out))
        y = torch.clamp(x / self.thresh, 0, 1)
        return _Floor.apply(y * self.L + 0.5) / self.L * self.thresh


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels, out_channels, stride=1, L=4):
        super().__init__()
        self.residual_function = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), IF(L=L),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels))
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))
        self.relu = IF(L=L)

    def forward(self, x):
        return self.relu(self.residual_function(x) + self.shortcut(x))


class ResNetV2(nn.Module):
    def __init__(self, num_classes=10, L=4):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), IF(L=L))
        self.conv2_x = nn.Sequential(BasicBlock(4, 4, 1, L), BasicBlock(4, 8, 2, L))
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        output = self.conv1(x)
        output = self.conv2_x(output)
        output = self.avg_pool(output)
        output = output.view(output.size(0), -1)
        return self.fc(output)


# ------------------------------------------------------------------ QCFS v1 style
class MyFloor(nn.Module):
    def __init__(self, up=4.0, t=32):
        super().__init__()
        self.up = nn.Parameter(torch.tensor([up]))
        self.t = t

    def forward(self, x):
        x = x / self.up
        x = _Floor.apply(x * self.t + 0.5) / self.t
        return torch.clamp(x, 0, 1) * self.up


class FlattenCNN(nn.Module):
    def __init__(self, num_classes=10, t=4):
        super().__init__()
        self.conv1, self.bn1, self.act1 = nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), MyFloor(t=t)
        self.conv2, self.act2 = nn.Conv2d(6, 6, 3, padding=1), MyFloor(t=t)
        self.pool = nn.AvgPool2d(2)
        self.fc1, self.act3 = nn.Linear(6 * 4 * 4, 12), MyFloor(t=t)
        self.fc2 = nn.Linear(12, num_classes)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.pool(self.act2(self.conv2(x)))
        x = torch.flatten(x, 1)
        return self.fc2(self.act3(self.fc1(x)))


# ------------------------------------------------------------------ SRP / COS style
class QCFS(nn.Module):
    """The SRP/COS repositories' activation: threshold ``up``, levels ``t``."""

    def __init__(self, up=8.0, t=32):
        super().__init__()
        self.up = nn.Parameter(torch.tensor([up]))
        self.t = t

    def forward(self, x):
        out = _Floor.apply(x / self.up * self.t + 0.5) / self.t
        return torch.clamp(out, 0, 1) * self.up


class VGG(nn.Module):
    def __init__(self, num_classes=10, t=4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), QCFS(t=t), nn.AvgPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), QCFS(t=t), nn.AvgPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(8 * 2 * 2, 16), QCFS(t=t), nn.Dropout(0.5),
                                        nn.Linear(16, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = x.view(x.size(0), -1)
        return self.classifier(x)


# ------------------------------------------------------------------ GN style
class GNQCFS(nn.Module):
    """The GN repository's QCFS: ``T`` levels, a 0-dim ``v_threshold`` and the shift ``p0``."""

    def __init__(self, T=4, p0=0.5):
        super().__init__()
        self.T = T
        self.v_threshold = nn.Parameter(torch.tensor(float(T)))
        self.p0 = torch.tensor(p0)

    def forward(self, x):
        y = x * self.T / self.v_threshold + self.p0
        y = (y.floor() - y).detach() + y
        return torch.clamp(y, 0, self.T) * self.v_threshold / self.T


class CatNet(nn.Module):
    def __init__(self, num_classes=10, T=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), GNQCFS(T))
        self.branch_a = nn.Sequential(nn.Conv2d(4, 4, 1), GNQCFS(T))
        self.branch_b = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), GNQCFS(T))
        self.fc = nn.Linear(8 * 2 * 2, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.branch_a(x), self.branch_b(x)], dim=1)
        x = F.avg_pool2d(x, 4)
        return self.fc(x.reshape(x.shape[0], -1))


#: threshold attribute of each style's activation class
THRESHOLD_OF = {IF: "thresh", MyFloor: "up", QCFS: "up", GNQCFS: "v_threshold"}


def thresh_of(module):
    """θ of any of the activation classes above (None for other modules)."""
    name = THRESHOLD_OF.get(type(module))
    return getattr(module, name) if name else None


@torch.no_grad()
def calibrate(model, images, quantile=0.99):
    """Thresholds at the scale of each activation's input (layer by layer), so every layer spikes."""
    model.eval()
    for layer in [m for m in model.modules() if thresh_of(m) is not None]:
        seen = []
        handle = layer.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
        model(images)
        handle.remove()
        positive = seen[0][seen[0] > 0]
        value = float(torch.quantile(positive.flatten(), quantile)) if positive.numel() else 1.0
        thresh_of(layer).fill_(max(value, 1e-3))
    return model
