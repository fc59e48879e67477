"""Running converted networks: per-step logits and accuracy after every T in one pass.

The network output at step t is that step's logits; the prediction after t steps is the
argmax of the mean (equivalently the sum) of the logits of steps 1..t (docs/methods.md#if-neuron), so one
run of T_max steps yields the accuracy of every T <= T_max. The static image is fed at every
step. For networks with a pre-run (SRP, COS), ``tau`` pre-run steps come first and are not
counted in T; the nodes carry the method and its ``tau``, so any wrapper of them runs the same.

How the steps are run follows the network's step mode: ``'s'`` calls the network once per
step (memory independent of T); ``'m'`` folds T into the batch, optionally in chunks of
``chunk`` steps with all neuron state (potentials, signed counts, SRP masks) carried across
chunks. Every way runs the same neuron updates; the synaptic layers run at different batch sizes
(N, chunk·N, T·N), and neither the CPU's nor CUDA's libraries promise to sum a sample alike at
every batch size (on the CPU a ``Linear`` at batch 1 rounds differently from batch T), so a
neuron at a threshold can fire a step earlier or later and an occasional spike flips, on either
device: the modes agree up to that rounding, not bit for bit. The same mode and chunk give the
same spikes with either backend (on CUDA with deterministic cuDNN): docs/protocols.md#bit-identity.

Every function here runs the network in eval mode and gives each module its own train/eval mode
back afterwards, and checks its arguments first (:mod:`sjconv.guards`): the network must hold
sjconv nodes (an unconverted ANN is refused) and must not be compiled, images must be one finite
batch of static images in the network's dtype (widening dtypes are converted), numbers of steps
and ``chunk`` must be whole numbers >= 1.
"""

import os
import warnings
from typing import Dict, Iterable, Iterator, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .errors import ConfigError
from .guards import (check_chunk, check_labels, check_step_list, check_steps_count, eval_mode, loader_batches,
                     prepare_images)
from .memory import choose_chunk, is_allocation_failure
from .neurons import protocol
from .neurons.modes import MULTI, SINGLE, step_mode_of


def _device_of(module: nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


def check_chunking(net: nn.Module, chunk, memory_budget) -> Optional[int]:
    """``chunk`` checked (:func:`sjconv.guards.check_chunk`); ``chunk`` and ``memory_budget`` set
    how many time steps one multi-step call runs, so for a network in single-step mode (one step
    per call) they are refused, not ignored (as the command-line tools refuse the flags)."""
    chunk = check_chunk(chunk)
    if step_mode_of(net) == SINGLE:
        for name, value in (("chunk", chunk), ("memory_budget", memory_budget)):
            if value is not None:
                raise ConfigError(f"{name} sets how many time steps one multi-step call runs, but the network is in "
                                  f"single-step mode ('s', one step per call): drop {name} or convert with "
                                  "step_mode='m'")
    return chunk


def _resolve_chunk(net: nn.Module, images: torch.Tensor, steps: int, chunk: Optional[int],
                   memory_budget) -> Optional[int]:
    """The explicit chunk, else the one the budget allows in 'm' mode, else None (all steps)."""
    if chunk is not None:
        return check_chunk(chunk)
    if memory_budget is not None and step_mode_of(net) == MULTI:
        return choose_chunk(net, images, steps, memory_budget)
    return None


@torch.no_grad()
def iter_logits(snn: nn.Module, images: torch.Tensor, T: int, tau: Optional[int] = None,
                chunk: Optional[int] = None, memory_budget=None) -> Iterator[torch.Tensor]:
    """Reset ``snn``, run its pre-run if any (SRP, COS), then yield the main-run logits in blocks
    ``[t, N, classes]`` (one block per step in 's' mode, per chunk in 'm' mode).

    :param tau: pre-run steps; defaults to the value the network's nodes carry. A COS pre-run is
        one multi-step call of ``tau`` steps whatever the step mode or chunk (see
        :func:`sjconv.neurons.run_prerun`); the main run then uses them as asked
    :param chunk: in 'm' mode, at most this many steps per network call (None: all at once)
    :param memory_budget: bytes (or '24GB'); in 'm' mode without ``chunk``, the chunk that fits

    The network runs in eval mode; every module's own mode is given back when the generator ends.
    """
    T = check_steps_count(T, "T")
    net, _, tau = protocol.converted_network(snn, tau)
    chunk = check_chunking(net, chunk, memory_budget)
    images = prepare_images(images, net)
    with eval_mode(net):
        chunk = _resolve_chunk(net, images, max(T, tau), chunk, memory_budget)
        yield from protocol.run(net, images, T, tau, chunk)


def simulate(snn: nn.Module, images: torch.Tensor, T: int, tau: Optional[int] = None,
             chunk: Optional[int] = None, memory_budget=None) -> torch.Tensor:
    """Per-step logits ``[T, N, classes]`` of ``snn`` on a batch of static ``images``."""
    return torch.cat(list(iter_logits(snn, images, T, tau=tau, chunk=chunk, memory_budget=memory_budget)))


@torch.no_grad()
def _count_correct(net, images, labels, steps: Sequence[int], tau, chunk) -> Dict[int, int]:
    """Correct predictions of one batch after every T in ``steps`` (float64 running sums).
    ``net``, ``images``, ``tau`` and ``chunk`` are those :func:`count_correct` has checked (and it
    holds the eval mode), so the batch runs the protocol directly."""
    wanted, correct = set(steps), {}
    running, t = None, 0
    for block in protocol.run(net, images, steps[-1], tau, chunk):
        if running is None:
            check_labels(labels, images, block.shape[-1])
        for logits in block:
            t += 1
            running = logits.double() if running is None else running + logits.double()
            if t in wanted:
                correct[t] = int((running.argmax(dim=-1) == labels).sum())
    return correct


@torch.no_grad()
def evaluate(snn: nn.Module, loader: Iterable, T: Union[int, Iterable[int]] = (1, 2, 4, 8, 16, 32, 64),
             device: Optional[Union[str, torch.device]] = None, tau: Optional[int] = None,
             chunk: Optional[int] = None, progress: bool = True, desc: str = "SNN",
             memory_budget=None, info: Optional[Dict] = None) -> Dict[int, float]:
    """Top-1 accuracy (%) after every T in ``T``, from one run of max(T) steps per batch.

    Logits are accumulated in float64 step by step in time order, so every step mode and
    chunking gives the same predictions; nothing of size T·N is kept. With ``memory_budget``
    the chunk is chosen on the first batch and kept for the others; if a batch still runs out
    of memory (the footprint is extrapolated from one and two steps), that batch is run again
    from the start with half the chunk, with a warning. An explicit ``chunk`` is never changed.
    ``info``, if given, receives ``chunk_used`` (see :func:`count_correct`).
    """
    correct, total = count_correct(snn, loader, T, device=device, tau=tau, chunk=chunk, progress=progress,
                                   desc=desc, memory_budget=memory_budget, info=info)
    return accuracies(correct, total)


def accuracies(correct: Dict[int, int], total: int) -> Dict[int, float]:
    """Percentages from correct counts over ``total`` images (an error when there are none)."""
    if total == 0:
        raise ConfigError("the data loader yielded no samples")
    return {t: 100.0 * c / total for t, c in correct.items()}


@torch.no_grad()
def count_correct(snn: nn.Module, loader: Iterable, T: Union[int, Iterable[int]] = (1, 2, 4, 8, 16, 32, 64),
                  device: Optional[Union[str, torch.device]] = None, tau: Optional[int] = None,
                  chunk: Optional[int] = None, progress: bool = True, desc: str = "SNN",
                  memory_budget=None, info: Optional[Dict] = None) -> Tuple[Dict[int, int], int]:
    """What :func:`evaluate` measures, as integers: ``({T: correct predictions}, images)``.

    Counts, unlike percentages, add up exactly across data shards (docs/protocols.md#counting); an empty
    loader gives zero counts.

    :param info: a dict that receives ``chunk_used``, the time steps per network call that the
        run ended with: 1 in 's' mode; in 'm' mode the explicit ``chunk``, or the one chosen under
        ``memory_budget`` (the smallest, after any halving on running out of memory), or None
        for all steps in one call; and ``oom_retries``, how many batch runs were repeated with a
        halved chunk (any allocation failure counts: :func:`sjconv.memory.is_allocation_failure`).
        The return value stays a pair for existing callers.
    """
    steps = check_step_list(T)
    device = torch.device(device) if device is not None else _device_of(snn)
    correct = {t: 0 for t in steps}
    total = 0
    net, _, tau = protocol.converted_network(snn, tau)
    chunk = check_chunking(net, chunk, memory_budget)
    adaptive = chunk is None and memory_budget is not None
    retries = 0
    with eval_mode(net):   # also while the memory budget's trial runs choose the chunk
        for images, labels in tqdm(loader_batches(loader, device), desc=desc, disable=not progress, leave=False):
            images = prepare_images(images, net)
            if adaptive and chunk is None:
                chunk = _resolve_chunk(net, images, max(steps[-1], tau), None, memory_budget)
            while True:
                try:
                    hits = _count_correct(net, images, labels, steps, tau, chunk)
                    break
                except Exception as exc:  # noqa: BLE001 - every allocation failure alike, the rest re-raised
                    if not (adaptive and chunk and chunk > 1 and is_allocation_failure(exc)):
                        raise
                # outside the except block, so the failed attempt's tensors can be freed
                chunk = _halve_chunk(chunk, images)
                retries += 1
            for t in steps:
                correct[t] += hits[t]
            total += labels.numel()
    if info is not None:
        info["chunk_used"] = 1 if step_mode_of(net) == SINGLE else chunk
        info["oom_retries"] = retries
    return correct, total


def _halve_chunk(chunk: int, images: torch.Tensor) -> int:
    smaller = max(1, chunk // 2)
    warnings.warn(f"out of memory with {chunk} time steps per call under the memory budget; "
                  f"running this batch again with {smaller}", RuntimeWarning, stacklevel=_caller_level())
    if images.is_cuda:
        torch.cuda.empty_cache()
    return smaller


def _caller_level() -> int:
    """``stacklevel`` of the first frame outside this module and torch's ``no_grad`` wrappers, so
    a warning names the line that called :func:`evaluate` or :func:`count_correct`."""
    import inspect

    level, frame = 1, inspect.currentframe().f_back  # the function that asks
    while frame is not None and (frame.f_code.co_filename == __file__
                                 or frame.f_code.co_filename.endswith(os.path.join("torch", "utils", "_contextlib.py"))):
        level, frame = level + 1, frame.f_back
    return level


@torch.no_grad()
def evaluate_ann(ann: nn.Module, loader: Iterable, device: Optional[Union[str, torch.device]] = None,
                 progress: bool = True) -> float:
    """Top-1 accuracy (%) of the ANN (the T = 0 column of the tables), in eval mode, with the
    images checked as for the SNN (:func:`sjconv.guards.prepare_images`: NaN/inf refused)."""
    correct, total = count_correct_ann(ann, loader, device=device, progress=progress)
    return accuracies({0: correct}, total)[0]


@torch.no_grad()
def count_correct_ann(ann: nn.Module, loader: Iterable, device: Optional[Union[str, torch.device]] = None,
                      progress: bool = True) -> Tuple[int, int]:
    """What :func:`evaluate_ann` measures, as integers: ``(correct predictions, images)``."""
    device = torch.device(device) if device is not None else _device_of(ann)
    correct = total = 0
    with eval_mode(ann):
        for images, labels in tqdm(loader_batches(loader, device), desc="ANN", disable=not progress, leave=False):
            images = prepare_images(images, ann)
            logits = ann(images)
            check_labels(labels, images, logits.shape[-1])
            correct += int((logits.argmax(dim=-1) == labels).sum())
            total += labels.numel()
    return correct, total
