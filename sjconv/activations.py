"""Recognising QCFS activation modules, ours and the ones researchers already have.

The converter turns every QCFS activation into a spiking node with the same θ. Besides
:class:`sjconv.qcfs.QCFS`, the reference repositories each wrote their own class; those models
convert without rewriting them. A module is a QCFS activation when

1. **it holds** a threshold tensor named ``thresh``, ``up`` or ``v_threshold`` (its only parameter
   or buffer, recursively) and a positive integer level count named ``L``, ``t`` or ``T`` (first
   found in that order: QCFS v2's ``IF`` holds both ``L`` and a simulation length ``T``), and
2. **it computes** the QCFS clip-floor-shift ``θ·floor(clamp(x/θ, 0, 1)·L + 1/2)/L``
   (docs/methods.md#qcfs-activation): :func:`check_activation` runs it on a grid of inputs 1/64 of a level apart
   across every level and both clip edges, and just below and just above every rounding point
   (2⁻³⁰ of a level), and compares: a shift other than 1/2 by more than that is caught.

This covers QCFS v2's ``IF(T=0, L, thresh)``, v1's ``MyFloor(up, t)``, the SRP/COS repositories'
``QCFS(up, t)`` and the GN repository's ``QCFS(T)`` (``v_threshold``, shift ``p0`` = 1/2). A module
that holds a threshold but fails either rule (no level count, another shift, a floor without the
shift, a simulation mode left on, one θ per channel) is refused with a
:class:`~sjconv.errors.ConversionError` that says why, never converted approximately.
"""

import copy
from typing import Optional, Tuple

import torch
import torch.nn as nn

from .errors import ConversionError
from .qcfs import QCFS

__all__ = ["THRESHOLD_NAMES", "LEVEL_NAMES", "activation_names", "holds_threshold", "check_activation",
           "not_an_activation"]

#: attribute names of the threshold θ, in the order they are looked for
THRESHOLD_NAMES = ("thresh", "up", "v_threshold")
#: attribute names of the number of quantization levels L, in the order they are looked for
LEVEL_NAMES = ("L", "t", "T")


def _held(module: nn.Module, name: str):
    """The attribute ``name`` that ``module`` holds itself (parameter, buffer or plain attribute), read
    without ``getattr`` (torch.fx swaps parameters for proxies while tracing), or None."""
    for store in (module._parameters, module._buffers, module.__dict__):
        if name in store:
            return store[name]
    return None


def _is_level(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def holds_threshold(module: nn.Module) -> Optional[str]:
    """Name of the threshold tensor ``module`` holds (one of :data:`THRESHOLD_NAMES`), or None."""
    if isinstance(module, QCFS):
        return "thresh"
    for name in THRESHOLD_NAMES:
        value = _held(module, name)
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return name
    return None


def activation_names(module: nn.Module) -> Optional[Tuple[str, str]]:
    """``(threshold name, level name)`` when ``module`` holds what a QCFS activation holds (rule 1
    of the module docstring), else None. What it computes is checked by :func:`check_activation`."""
    if isinstance(module, QCFS):
        return "thresh", "L"
    theta = holds_threshold(module)
    if theta is None:
        return None
    level = next((n for n in LEVEL_NAMES if _is_level(_held(module, n))), None)
    if level is None:
        return None
    if _other_tensors(module, theta):
        return None
    return theta, level


def _other_tensors(module: nn.Module, theta: str):
    """Names of the parameters and buffers of ``module`` (recursively) other than its threshold."""
    return [name for name, t in list(module.named_parameters()) + list(module.named_buffers())
            if t is not _held(module, theta)]


def not_an_activation(module: nn.Module, theta: str) -> str:
    """Why ``module``, which holds the threshold ``theta``, fails rule 1 of the module docstring."""
    others = _other_tensors(module, theta)
    if others:
        return (f"it holds a threshold '{theta}' and other tensors as well ({', '.join(others[:4])}), so it is not "
                "a QCFS activation, which holds θ alone; keep other tensors out of the activation module")
    found = next(((n, _held(module, n)) for n in LEVEL_NAMES if _held(module, n) is not None), None)
    if found is not None:
        name, value = found
        return (f"its level count {name}={value!r} is a {type(value).__name__}, not a whole number >= 1 (an int); "
                f"store the level count as an int (e.g. {name}=int({name}))")
    return (f"it holds a threshold '{theta}' but no level count ({', '.join(LEVEL_NAMES)}), so it is not a QCFS "
            "activation; only the QCFS clip-floor-shift converts exactly")


#: grid points per quantization level in the probe
GRID = 64
#: distance (in levels) of the probes on either side of each rounding point: a shift other than 1/2
#: by more than this moves a rounding point across one of them
EDGE = 2.0 ** -30


def _grid(levels: int) -> torch.Tensor:
    """Probe inputs in units of θ: every multiple of 1/(GRID·L) from -1-1/L to 2+1/L except the
    rounding points (k + 1/2)/L themselves, the points EDGE levels below and above each rounding
    point (where the output must step up, and not before), plus far values; float64."""
    steps = [j for j in range(-GRID * (levels + 1), GRID * (2 * levels + 1) + 1) if j % GRID != GRID // 2]
    values = [j / (GRID * float(levels)) for j in steps] + [-100.0, 100.0]
    values += [(k + 0.5 + side * EDGE) / levels for k in range(-1, 2 * levels + 1) for side in (-1, 1)]
    return torch.tensor(values, dtype=torch.float64)


@torch.no_grad()
def check_activation(module: nn.Module, path: str) -> Tuple[torch.Tensor, int]:
    """θ (a 1-element tensor, the module's dtype and device) and L of the QCFS activation ``module``
    at ``path``, after checking that it computes the QCFS clip-floor-shift; raises a
    :class:`ConversionError` naming the module and the fix otherwise."""
    names = activation_names(module)
    where = f"module '{path or 'the model itself'}' ({type(module).__name__})"
    if names is None:
        raise ConversionError(f"{where} holds no QCFS threshold and level count")
    theta_name, level_name = names
    theta = _held(module, theta_name).detach()
    levels = int(_held(module, level_name))
    if theta.numel() != 1:
        raise ConversionError(
            f"{where} holds {theta.numel()} thresholds ({theta_name} of shape {tuple(theta.shape)}): a converted "
            "layer has one θ; train with one threshold per layer (as QCFS does)")
    value = float(theta.reshape(()))
    if not (value > 0 and value != float("inf")):
        raise ConversionError(f"{where} has threshold {theta_name}={value}: it must be finite and > 0")
    u = _grid(levels)
    x = (u * value).to(device=theta.device).view(1, -1)
    expected = value * torch.floor(u.clamp(0.0, 1.0) * levels + 0.5) / levels
    try:  # the rule is checked in float64 on a copy, so a float16 model's rounding cannot blur it
        y = copy.deepcopy(module).to(torch.float64)(x)
    except Exception as error:  # any failure of a foreign forward is a refusal, with its text
        raise ConversionError(f"{where} holds {theta_name}={value:.6g} and {level_name}={levels} but fails on a "
                              f"plain input ({type(error).__name__}: {error}); put it in its ANN mode (T=0 for "
                              "QCFS v2's IF) before converting") from error
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        raise ConversionError(f"{where} does not return a tensor of its input's shape; it is not a QCFS activation")
    diff = (y.detach().double().view(-1).cpu() - expected).abs()
    # equal outputs agree to rounding (~1e-7·θ); a different rule is off by a level, θ/L
    if not bool((diff <= 1e-3 * value / levels).all()):
        worst = int(diff.argmax())
        raise ConversionError(
            f"{where} holds {theta_name}={value:.6g} and {level_name}={levels} but does not compute the QCFS "
            f"clip-floor-shift θ·floor(clamp(x/θ, 0, 1)·L + 1/2)/L (at x = {float(u[worst]) * value:.6g} it gives "
            f"{float(y.view(-1)[worst]):.6g}, QCFS gives {float(expected[worst]):.6g}): only that activation "
            "converts exactly; train with sjconv.QCFS (or a shift of 1/2)")
    return theta.reshape(1).clone(), levels
