"""Training a QCFS ANN with the reference recipe: SGD (lr 0.1, momentum 0.9, weight decay
5e-4), cosine learning-rate schedule, cross-entropy; optional mixed precision (AMP).

Under torchrun (see :mod:`sjconv.distributed`) the model trains as a
``DistributedDataParallel`` replica per process; losses and accuracies are summed over all
processes and rank 0 alone writes files. Two files are written after every epoch: the
checkpoint (``model.state_dict()``, the official QCFS format, no ``module.`` prefix) and,
beside it, the training state that ``resume`` continues from (optimizer, schedule, scaler, the
epoch, and the settings the run was started with, which a resumed run must repeat). With a
``seed``, every epoch re-seeds the random generators from (seed, epoch, rank), so a resumed run
repeats the uninterrupted one.
"""

import os
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Union

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from . import distributed
from .errors import ConfigError
from .report import atomic_path, training_state_path
from .simulate import accuracies, count_correct_ann

#: marks a training-state file (as opposed to a bare checkpoint)
STATE_FORMAT = "sjconv-training-state-1"


def make_optimizer(model: nn.Module, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def save_state_dict(model: nn.Module, path: str) -> None:
    """Save ``model.state_dict()`` (the official QCFS checkpoint format), atomically."""
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)


def read_training_state(path: str) -> Dict:
    """Load a training state written by :func:`fit`, with a clear error for anything else."""
    if not os.path.isfile(path):
        raise ConfigError(f"resume: training state file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle and zip errors have many types
        raise ConfigError(f"resume: could not read {path}: {exc}") from None
    if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
        raise ConfigError(f"resume: {path} is not a training state (a bare checkpoint holds only the weights); "
                          f"pass the '*.state.pth' file written beside the checkpoint")
    return dict(state)


def resume_mismatches(state: Mapping, settings: Mapping) -> Dict[str, tuple]:
    """The settings a training state was written with that differ from ``settings`` (the run
    that would continue it): ``{name: (stored, given)}`` over the names both know. A state
    written before settings were recorded has none, so nothing can be compared."""
    stored = state.get("settings") or {}
    return {k: (stored[k], v) for k, v in settings.items() if k in stored and stored[k] != v}


def check_resume(state: Mapping, settings: Mapping, where: str = "resume",
                 flag: Callable[[str], str] = lambda name: f"{name}=") -> None:
    """Refuse to continue ``state`` with other ``settings`` than it was written with (another L,
    learning rate, architecture, ...): the run would change them mid-training, or the stored
    optimizer would silently override them. One :class:`ConfigError` lists every difference,
    each as ``flag(name)`` followed by the stored value and this run's."""
    mismatches = resume_mismatches(state, settings)
    if mismatches:
        listed = ", ".join(f"{flag(k)}{old} (this run: {new})" for k, (old, new) in mismatches.items())
        raise ConfigError(f"{where} was written with other settings: {listed}; resume with the stored "
                          "settings, or start a new run")


def _seed_epoch(seed: int, epoch: int) -> None:
    """Random generators for one epoch (augmentation, dropout, worker seeds), different per rank."""
    torch.manual_seed((seed * 1_000_003 + epoch) * 1_009 + distributed.get_rank())


def _replicate(model: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel`` around ``model`` when several processes train, else ``model``."""
    if distributed.get_world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _test_accuracy(model: nn.Module, test_loader: Iterable, device) -> float:
    """ANN accuracy from counts summed over every process's shard of the test set."""
    correct, total = distributed.all_reduce_sum(list(count_correct_ann(model, test_loader, device=device,
                                                                       progress=False)))
    return accuracies({0: correct}, total)[0]


def fit(model: nn.Module, train_loader: Iterable, epochs: int, test_loader: Optional[Iterable] = None,
        lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4, amp: bool = False,
        device=None, progress: bool = True,
        on_epoch: Optional[Callable[[int, Dict], None]] = None, checkpoint: Optional[str] = None,
        resume: Optional[Union[str, Mapping]] = None, seed: Optional[int] = None,
        settings: Optional[Mapping] = None) -> List[Dict]:
    """Train ``model`` in place; returns one dict per epoch run (loss, train accuracy, test accuracy).

    :param progress: show a bar over the epochs and, inside it, one over each epoch's batches
        with the running loss
    :param on_epoch: called as ``on_epoch(epoch, record)`` after every epoch, on every process
    :param checkpoint: after every epoch rank 0 writes ``model.state_dict()`` there and the
        training state to :func:`training_state_path` (both atomically)
    :param resume: a training state (path or loaded dict) to continue from: weights, optimizer,
        schedule and scaler are restored and training goes on at the next epoch
    :param seed: re-seed the random generators at the start of every epoch (reproducible resume)
    :param settings: what else defines the run (architecture, L, batch size, ...), recorded in the
        training state beside ``lr``, ``momentum``, ``weight_decay``, ``amp``, ``epochs`` and
        ``seed``; resuming with any of them changed is a :class:`ConfigError` (:func:`check_resume`)

    Under a process group, ``train_loader`` should draw its shard with a
    ``DistributedSampler``; its ``set_epoch`` is called every epoch so the shuffle differs per
    epoch and agrees across processes. ``test_loader`` should hold this process's exact shard
    (:func:`sjconv.distributed.shard`); counts are summed over processes.
    """
    device = torch.device(device or "cpu")
    model.to(device)
    net = _replicate(model, device)
    optimizer = make_optimizer(model, lr, momentum, weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start = 0
    settings = {"epochs": epochs, "lr": lr, "momentum": momentum, "weight_decay": weight_decay, "amp": amp,
                "seed": seed, **(settings or {})}
    if resume is not None:
        state = read_training_state(resume) if isinstance(resume, (str, os.PathLike)) else resume
        if state.get("epochs") != epochs:
            raise ConfigError(f"resume: the training state is for epochs={state.get('epochs')}, got epochs={epochs}")
        check_resume(state, settings)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start = int(state["epoch"])
    criterion = nn.CrossEntropyLoss()
    sampler = getattr(train_loader, "sampler", None)
    history = []
    bar = tqdm(range(start, epochs), desc="train", disable=not progress, initial=start, total=epochs)
    for epoch in bar:
        if seed is not None:
            _seed_epoch(seed, epoch)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        net.train()
        total_loss, correct, seen = 0.0, 0, 0
        # a per-batch bar inside the epoch bar: long epochs show progress and the running loss
        # (this process's share under torchrun, where only rank 0 shows bars)
        batches = tqdm(train_loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for images, labels in batches:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=use_amp):
                logits = net(images)
                loss = criterion(logits, labels)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total_loss += float(loss.detach()) * labels.numel()
            correct += int((logits.argmax(-1) == labels).sum())
            seen += labels.numel()
            batches.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)
        scheduler.step()
        correct, seen = distributed.all_reduce_sum([correct, seen])
        (total_loss,) = distributed.all_reduce_sum([total_loss])
        record = {"epoch": epoch + 1, "loss": total_loss / seen, "train_accuracy": 100.0 * correct / seen}
        if test_loader is not None:
            record["test_accuracy"] = _test_accuracy(model, test_loader, device)
        history.append(record)
        bar.set_postfix({k: round(v, 3) for k, v in record.items() if k != "epoch"})
        if checkpoint and distributed.is_main():
            save_state_dict(model, checkpoint)
            with atomic_path(training_state_path(checkpoint)) as tmp:
                torch.save({"format": STATE_FORMAT, "epoch": epoch + 1, "epochs": epochs, "settings": settings,
                            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict()}, tmp)
        if on_epoch is not None:
            on_epoch(epoch + 1, record)
    model.eval()
    return history
