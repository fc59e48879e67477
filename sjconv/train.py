"""Training a QCFS ANN with the reference recipe: SGD (lr 0.1, momentum 0.9, weight decay
5e-4), cosine learning-rate schedule, cross-entropy; optional mixed precision (AMP)."""

from typing import Callable, Dict, Iterable, List, Optional

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .report import atomic_path
from .simulate import evaluate_ann


def make_optimizer(model: nn.Module, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def save_state_dict(model: nn.Module, path: str) -> None:
    """Save ``model.state_dict()`` (the official QCFS checkpoint format), atomically."""
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)


def fit(model: nn.Module, train_loader: Iterable, epochs: int, test_loader: Optional[Iterable] = None,
        lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4, amp: bool = False,
        device=None, progress: bool = True,
        on_epoch: Optional[Callable[[int, Dict], None]] = None) -> List[Dict]:
    """Train ``model`` in place; returns one dict per epoch (loss, train accuracy, test accuracy).

    ``on_epoch(epoch, record)`` is called after every epoch (e.g. to save a checkpoint).
    """
    device = torch.device(device or "cpu")
    model.to(device)
    optimizer = make_optimizer(model, lr, momentum, weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    criterion = nn.CrossEntropyLoss()
    history = []
    bar = tqdm(range(epochs), desc="train", disable=not progress)
    for epoch in bar:
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=use_amp):
                logits = model(images)
                loss = criterion(logits, labels)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            total_loss += float(loss.detach()) * labels.numel()
            correct += int((logits.argmax(-1) == labels).sum())
            seen += labels.numel()
        scheduler.step()
        record = {"epoch": epoch + 1, "loss": total_loss / seen, "train_accuracy": 100.0 * correct / seen}
        if test_loader is not None:
            record["test_accuracy"] = evaluate_ann(model, test_loader, device=device, progress=False)
        history.append(record)
        bar.set_postfix({k: round(v, 3) for k, v in record.items() if k != "epoch"})
        if on_epoch is not None:
            on_epoch(epoch + 1, record)
    model.eval()
    return history
