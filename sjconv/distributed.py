"""Several processes on torch.distributed, launched by ``torchrun``, with exact counts (docs/protocols.md#counting).

torchrun starts one process per GPU (or CPU worker) and tells each its place through the
environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), which
:mod:`sjconv.torchrun` reads without torch. :func:`process_group` starts the process group (NCCL
on CUDA, each process on ``cuda:LOCAL_RANK``; gloo on the CPU) and ends it on exit.

Evaluation must count every test image exactly once: torch's ``DistributedSampler`` pads the
last shard with repeated images, so :func:`shard` gives each process a contiguous slice of the
indices instead (sizes differ by at most one, nothing repeated, nothing dropped), and
:func:`all_reduce_sum` adds the per-process integer counts. Without torchrun every function
here is the single-process identity, so the same code runs either way.
"""

import contextlib
from dataclasses import dataclass
from typing import Iterator, List, Sequence, Union

import torch
import torch.distributed as dist
from torch.utils.data import Subset

from .errors import ConfigError
from .torchrun import ENV, env_int, launched, launched_world_size

__all__ = ["ENV", "Context", "launched", "launched_world_size", "process_device", "process_group", "active",
           "get_rank", "get_world_size", "is_main", "shard_indices", "shard", "all_reduce_sum", "barrier"]


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints and writes files."""
        return self.rank == 0


def process_device(device: Union[str, torch.device]) -> torch.device:
    """The device of this process: under torchrun ``cuda`` becomes ``cuda:LOCAL_RANK``, so K processes
    on a node use its K GPUs; anything else is returned unchanged. Checked before any process
    group starts, so a bad setting ends every process with the same error instead of a hang."""
    device = torch.device(device)
    if not launched() or device.type != "cuda":
        return device
    local = env_int("LOCAL_RANK")
    if device.index is not None and device.index != local:
        raise ConfigError(f"device {device} was asked, but under torchrun each process uses cuda:LOCAL_RANK "
                          f"(this one cuda:{local}): pass device 'cuda' and choose GPUs with CUDA_VISIBLE_DEVICES")
    count = torch.cuda.device_count()
    if local >= count:
        raise ConfigError(f"process with LOCAL_RANK {local} needs GPU cuda:{local}, but this node has {count}: "
                          f"start at most {count} processes per node (--nproc_per_node)")
    return torch.device("cuda", local)


@contextlib.contextmanager
def process_group(device: Union[str, torch.device]) -> Iterator[Context]:
    """Start the process group when launched by torchrun (NCCL for CUDA devices, gloo otherwise),
    yield this process's :class:`Context`, and destroy the group on exit, errors included.
    Without torchrun it yields rank 0 of 1 and starts nothing."""
    device = process_device(device)
    if not launched() or dist.is_initialized():
        yield Context(get_rank(), get_world_size(), env_int("LOCAL_RANK") if launched() else 0, device)
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        dist.init_process_group(backend="gloo")
    try:
        yield Context(dist.get_rank(), dist.get_world_size(), env_int("LOCAL_RANK"), device)
    finally:
        dist.destroy_process_group()


def active() -> bool:
    """True inside a started process group."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank (0 in a single process)."""
    return dist.get_rank() if active() else 0


def get_world_size() -> int:
    """Number of processes (1 in a single process)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on rank 0, and in a single process."""
    return get_rank() == 0


def shard_indices(length: int, rank: int, world_size: int) -> range:
    """The contiguous slice of ``range(length)`` that process ``rank`` of ``world_size`` takes.

    Slices are disjoint, cover every index exactly once and differ in size by at most one; a
    process may get none when ``length < world_size``. Contiguous slices keep rank 0's first
    items the dataset's first items.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank must be in [0, world_size) with world_size >= 1, got rank={rank}, "
                          f"world_size={world_size}")
    return range(length * rank // world_size, length * (rank + 1) // world_size)


def shard(dataset, rank: int = None, world_size: int = None):
    """This process's exact share of ``dataset`` (see :func:`shard_indices`): the dataset itself
    in a single process, else a ``Subset``. Defaults to the current process group's rank and size."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if world_size == 1:
        return dataset
    return Subset(dataset, shard_indices(len(dataset), rank, world_size))


def all_reduce_sum(values: Sequence[Union[int, float]]) -> List[Union[int, float]]:
    """Sum ``values`` element-wise over all processes; every process gets the sums.

    Integers are added as int64, so counts stay exact at any size; any float makes the sum
    float64. In a single process the values come back unchanged.
    """
    values = list(values)
    if not active():
        return values
    exact = all(isinstance(v, int) for v in values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor(values, dtype=torch.int64 if exact else torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [int(v) for v in tensor.tolist()] if exact else tensor.tolist()


def barrier() -> None:
    """Wait for every process (nothing to wait for in a single process)."""
    if active():
        dist.barrier()
