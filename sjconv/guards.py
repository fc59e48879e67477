"""Guard rails of the Python API: what every run checks before it starts, so that a wrong
argument is a one-line :class:`~sjconv.errors.ConfigError` naming it and the fix, never a wrong
number or a raw torch/SpikingJelly traceback.

- :func:`check_steps_count`, :func:`check_step_list`, :func:`check_chunk`: numbers of time steps
  are whole numbers >= 1 (``2.5``, ``"8"`` and ``True`` are refused, not rounded or iterated);
- :func:`prepare_images`: a batch of static images, finite, shaped ``[N, C, H, W]`` (one time
  step: the run repeats it), in the network's dtype (see there for which dtypes are converted);
- :func:`check_finite_tensors`: weights, buffers and thresholds hold no NaN or inf;
- :func:`eval_mode`: a run sees the network in eval mode and gives every module's own mode back;
- :func:`check_not_compiled`: sjconv networks do not run under ``torch.compile`` (below).

Why ``torch.compile`` is refused: compiled code does the float arithmetic of the layers in
another order or form than eager torch (inductor decomposes batch norm into its formula instead of
the fused kernel, fuses elementwise operations, picks other kernels after a recompilation), so
the input of a neuron layer can differ in its last bit. A neuron turns a last-bit difference at
its threshold into a spike more or less, which the next layers amplify: measured accuracies
changed, and changed again between calls. (On a CPU, a Conv2d + BatchNorm2d pair compiled by
inductor gave 13,976 of 32,768 outputs that differ from eager torch by up to 4.8e-7; batch norm alone
compiled was equal.) Equality with eager cannot be guaranteed at a
reasonable cost, so the nodes refuse to be traced (:mod:`sjconv.neurons.no_compile`), and the functions
of :mod:`sjconv.simulate` and :mod:`sjconv.analysis` refuse a compiled network before running it.
The one exception is ``torch.compile(snn, backend="eager")``, which by definition runs the same
operations eagerly: those functions run the network inside it.
"""

import contextlib
import sys
from typing import Iterable, Iterator, List, Mapping, Tuple

import torch
import torch.nn as nn

from .catalog import is_whole_number
from .errors import ConfigError

#: image dtypes converted to a wider network dtype without changing any value
_WIDENS_TO = {torch.float16: (torch.float32, torch.float64), torch.bfloat16: (torch.float32, torch.float64),
              torch.float32: (torch.float64,)}


# ------------------------------------------------------------------------------ step counts
def check_steps_count(value, name: str = "T") -> int:
    """``value`` as an int if it is a whole number >= 1 (an int, not a float, str or bool)."""
    if not is_whole_number(value):
        hint = "; for several values of T use sjconv.analysis.error_vs_T" if name == "T" and \
            isinstance(value, (list, tuple)) else ""
        raise ConfigError(f"{name} must be a whole number of time steps >= 1, got {value!r} "
                          f"({type(value).__name__}){hint}")
    if value < 1:
        raise ConfigError(f"{name} must be >= 1 time steps, got {value}")
    return int(value)


def check_step_list(T, name: str = "T") -> List[int]:
    """One whole number >= 1, or an iterable of them, as a sorted list without repeats. A string
    is refused (it is iterable: ``"16"`` would otherwise be read as 1 and 6)."""
    if isinstance(T, (str, bytes)) or not (is_whole_number(T) or isinstance(T, Iterable)):
        raise ConfigError(f"{name} must be a whole number >= 1 or a list of them, got {T!r} ({type(T).__name__})")
    values = [T] if is_whole_number(T) else list(T)
    if not values:
        raise ConfigError(f"{name} must name at least one number of time steps, got {T!r}")
    return sorted({check_steps_count(t, name) for t in values})


def check_chunk(chunk, name: str = "chunk"):
    """``None`` (all steps in one call) or a whole number >= 1 of time steps per call."""
    return None if chunk is None else check_steps_count(chunk, name)


# ---------------------------------------------------------------------------------- images
def network_dtype(module: nn.Module):
    """The floating dtype of the first floating parameter or buffer of ``module`` (None if none)."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def _first_conv(module: nn.Module):
    return next((m for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)


def check_finite_images(images: torch.Tensor) -> None:
    """Refuse NaN or infinite inputs. A NaN membrane potential never crosses the threshold, so
    the network would stay silent where the input is undefined and still give finite logits: a
    wrong accuracy with no sign of the bad data (and the ANN predicts class 0 for NaN logits)."""
    if images.is_floating_point() and not bool(torch.isfinite(images).all()):
        bad = int((~torch.isfinite(images)).sum())
        raise ConfigError(f"the images contain NaN or inf ({bad} of {images.numel()} values): check the data "
                          "and its preprocessing")


def prepare_images(images, module: nn.Module) -> torch.Tensor:
    """A batch of static ``images`` checked for ``module`` and in its dtype.

    - a tensor of floats: integer images (e.g. uint8 0..255) are refused, since only the caller
      knows their scaling and normalisation;
    - one time step: when ``module`` starts with a k-d convolution the images must have k + 2
      dimensions (``[N, C, H, W]`` for 2-d); images that already carry a time axis
      (``[T, N, C, H, W]``) are refused: the run repeats the static image at every step;
    - finite (:func:`check_finite_images`);
    - dtype: an image dtype the network's dtype holds exactly (float16/bfloat16 into float32 or
      float64, float32 into float64) is converted, since every value stays the same number; a
      narrowing one (float64 images into a float32 network) is refused, since rounding the images
      is the caller's choice to make (``images.float()``) or the network should be converted
      (``ann.double()`` before :func:`sjconv.convert`).
    """
    if not isinstance(images, torch.Tensor):
        raise ConfigError(f"images must be a torch.Tensor [N, C, H, W], got {type(images).__name__}")
    if not images.is_floating_point():
        raise ConfigError(f"images must be floating point, got {images.dtype}: scale and normalise them as the "
                          "network was trained (e.g. with the dataset's transforms), then pass the float tensor")
    conv = _first_conv(module)
    if conv is not None:
        want = len(conv.kernel_size) + 2
        layout = "[N, C, H, W]" if want == 4 else f"{want}-d [N, C, ...]"
        if images.dim() != want:
            extra = (": they look like they already have a time axis; pass one step, the run repeats it"
                     if images.dim() == want + 1 else "")
            raise ConfigError(f"images must be one batch of static images {layout}, got shape "
                              f"{tuple(images.shape)}{extra}")
        if images.shape[1] != conv.in_channels:
            extra = (f" (channels last? pass images.permute(0, {want - 1}, {', '.join(map(str, range(1, want - 1)))})"
                     f")" if images.shape[-1] == conv.in_channels else "")
            raise ConfigError(f"images of shape {tuple(images.shape)} have {images.shape[1]} channels in dim 1, but "
                              f"the network's first convolution takes {conv.in_channels}: pass {layout}{extra}")
    check_finite_images(images)
    dtype = network_dtype(module)
    if dtype is not None and images.dtype != dtype:
        if dtype in _WIDENS_TO.get(images.dtype, ()):
            return images.to(dtype)
        raise ConfigError(f"images are {images.dtype} but the network is {dtype}: pass images.to({dtype}) "
                          f"or convert a {images.dtype} copy of the network")
    return images


def check_labels(labels, images: torch.Tensor, classes: int) -> None:
    """Labels of a batch: a tensor of class indices, one per image, each in 0..classes-1 (a label
    outside the range is never predicted, so it would count as wrong, silently)."""
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.is_complex() \
            or labels.dtype == torch.bool:
        what = labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ConfigError(f"labels must be a tensor of integer class indices, got {what}")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise ConfigError(f"labels must be one class index per image, shape ({images.shape[0]},), got shape "
                          f"{tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ConfigError(f"labels must be class indices in 0..{classes - 1} (the network has {classes} outputs), "
                          f"got values from {int(labels.min())} to {int(labels.max())}: check the dataset's "
                          "targets and the model's number of classes")


def loader_batches(loader: Iterable, device) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` of every batch of ``loader``, on ``device``; a loader yielding anything but
    pairs of tensors (dicts, triples) is refused, saying what is expected."""
    for batch in loader:
        if isinstance(batch, dict):
            raise ConfigError(f"the data loader must yield (images, labels) pairs, got a dict with keys "
                              f"{sorted(map(str, batch))}: wrap it, e.g. ((b['image'], b['label']) for b in loader)")
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            what = f"a {type(batch).__name__} of {len(batch)} items" if isinstance(batch, (tuple, list)) \
                else f"a {type(batch).__name__}"
            raise ConfigError(f"the data loader must yield (images, labels) pairs, got {what}: wrap it, e.g. "
                              "((images, labels) for images, labels, *_ in loader)")
        images, labels = batch
        if not isinstance(images, torch.Tensor):
            raise ConfigError(f"the data loader must yield (images, labels) pairs of tensors, got images of type "
                              f"{type(images).__name__}")
        yield images.to(device), labels.to(device) if isinstance(labels, torch.Tensor) else labels


def check_device(module: nn.Module, what: str = "the ANN") -> None:
    """Refuse a module whose tensors are on the ``meta`` device: they have shapes but no values."""
    meta = [name for name, t in list(module.named_parameters()) + list(module.named_buffers()) if t.is_meta]
    if meta:
        raise ConfigError(f"{what} holds tensors on the 'meta' device, which have no values ({meta[0]}"
                          f"{f' and {len(meta) - 1} more' if len(meta) > 1 else ''}): materialise and load the weights "
                          "first, e.g. model.to_empty(device='cpu') then model.load_state_dict(state)")


# ------------------------------------------------------------------------ weights and state
def nonfinite_entries(named: Iterable[Tuple[str, torch.Tensor]]) -> List[str]:
    """``'name (k of n values)'`` for every floating tensor holding NaN or inf."""
    found = []
    for name, tensor in named:
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            bad = int((~torch.isfinite(tensor.detach())).sum())
            if bad:
                found.append(f"{name} ({bad} of {tensor.numel()} values)")
    return found


def check_finite_tensors(named, what: str, fix: str, error=ConfigError, show: int = 4) -> None:
    """Raise ``error`` when a tensor of ``named`` (a mapping or (name, tensor) pairs) holds NaN or
    inf: a NaN weight makes every later value NaN, every neuron silent and every prediction
    class 0, which reads as an accuracy, not as an error."""
    items = named.items() if isinstance(named, Mapping) else named
    found = nonfinite_entries(items)
    if found:
        more = f" (+{len(found) - show} more)" if len(found) > show else ""
        raise error(f"{what} holds NaN or inf in {', '.join(found[:show])}{more}: {fix}")


# ------------------------------------------------------------------------------- run modes
@contextlib.contextmanager
def eval_mode(*modules: nn.Module):
    """Run ``modules`` in eval mode inside the block and give every submodule its own train/eval
    mode back afterwards (even on error). In train mode batch norm would normalise with the
    statistics of the batch and overwrite its running statistics, and dropout would drop."""
    modes = [(m, m.training) for module in modules for m in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield modules[0] if len(modules) == 1 else modules
    finally:
        for m, training in modes:
            m.training = training


# ----------------------------------------------------------------------------- torch.compile
def refuse_compiled(what: str):
    """Raise the :class:`ConfigError` of a compiled network, ``what`` saying where it was found."""
    raise ConfigError(f"{what}: torch.compile changes the layers' float arithmetic (fused or decomposed "
                      "operations), which flips spikes at the threshold and changes accuracies; run the network "
                      "itself (for torch.compile(snn) that is snn, or compiled._orig_mod)")


def _compile_backend_name(compiled) -> str:
    """The backend name of a ``torch.compile`` wrapper (``'unknown'`` when it cannot be read)."""
    obj = getattr(getattr(compiled, "dynamo_ctx", None), "callback", None)
    for _ in range(8):
        if obj is None:
            break
        name = getattr(obj, "compiler_name", None)
        if isinstance(name, str):
            return name
        obj = getattr(obj, "_torchdynamo_orig_backend", None)
    return "unknown"


def check_not_compiled(module: nn.Module) -> nn.Module:
    """``module`` itself, or the module inside a ``torch.compile(..., backend="eager")`` wrapper
    (the same operations, run eagerly); any other compiled wrapper or compiled submodule is a
    :class:`ConfigError` (see the module docstring for why)."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    if eval_frame is None:      # dynamo never imported: nothing can be compiled
        return module
    optimized = eval_frame.OptimizedModule
    while isinstance(module, optimized):
        backend = _compile_backend_name(module)
        if backend != "eager":
            refuse_compiled(f"the network is compiled with torch.compile (backend '{backend}')")
        module = module._orig_mod
    for name, m in module.named_modules():
        if isinstance(m, optimized) or getattr(m, "_compiled_call_impl", None) is not None:
            refuse_compiled(f"module '{name or 'the network'}' is compiled with torch.compile")
    return module
