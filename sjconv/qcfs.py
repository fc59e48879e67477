"""The QCFS activation (quantization clip-floor-shift), the ANN side of the conversion.

    y = θ · floor(clamp(x / θ, 0, 1) · L + 0.5) / L        (docs/methods.md#qcfs-activation)

θ (``thresh``) is a trainable scalar stored with shape ``[1]``, exactly as in the official
QCFS code, so official checkpoints (key ``...thresh``) load unchanged.
"""

import torch
import torch.nn as nn

from .errors import ConfigError


class _StraightThroughFloor(torch.autograd.Function):
    """floor() in the forward pass, identity gradient in the backward pass."""

    @staticmethod
    def forward(ctx, x):
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


def qcfs(x: torch.Tensor, thresh: torch.Tensor, L: int) -> torch.Tensor:
    """Functional QCFS activation; differentiable in ``x`` and ``thresh``."""
    y = torch.clamp(x / thresh, 0.0, 1.0)
    y = _StraightThroughFloor.apply(y * L + 0.5) / L
    return y * thresh


class QCFS(nn.Module):
    """QCFS activation layer with a trainable threshold θ and ``L`` quantization levels.

    The converter replaces every instance with a spiking neuron whose threshold is θ.
    """

    def __init__(self, L: int = 8, thresh: float = 8.0):
        super().__init__()
        if int(L) < 1:
            raise ConfigError(f"QCFS needs L >= 1 quantization levels, got {L}")
        self.L = int(L)
        self.thresh = nn.Parameter(torch.tensor([float(thresh)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return qcfs(x, self.thresh, self.L)

    def extra_repr(self) -> str:
        return f"L={self.L}, thresh={float(self.thresh.detach()):.4g}"
