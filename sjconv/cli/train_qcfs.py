"""Train a QCFS ANN on CIFAR-10/100 or ImageNet with the reference recipe and save official checkpoints.

    python examples/train_qcfs.py --arch vgg16 --dataset cifar10 --data-dir data --download \\
        --epochs 300 --L 8 --out checkpoints/vgg16_cifar10.pth

Under torchrun every process trains a DistributedDataParallel replica on its share of each
epoch (a shuffling DistributedSampler, re-shuffled every epoch); rank 0 alone writes the
checkpoint (official format) and the training state beside it (``--resume`` continues from it).
"""

import argparse
import json
import os
import sys

from ..catalog import ARCHS, DATASETS
from ..errors import ConfigError
from ..report import training_state_path
from ..torchrun import launched_world_size
from .common import (HelpFormatter, add_overwrite_arg, check_writable, non_negative_int, positive_int,
                     resolve_device, run_cli)
from .eval_cifar import check_download_alone


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--arch", required=True, choices=list(ARCHS), help="QCFS architecture to train")
    p.add_argument("--dataset", choices=list(DATASETS), default="cifar10",
                   help="imagenet: torchvision ImageFolder on DATA_DIR/train and DATA_DIR/val")
    p.add_argument("--data-dir", default="data", help="folder holding (or receiving) the dataset")
    p.add_argument("--download", action="store_true", help="download CIFAR if it is not in --data-dir")
    p.add_argument("--epochs", type=positive_int, default=300, help="training epochs (length of the cosine schedule)")
    p.add_argument("--L", type=positive_int, default=8, help="QCFS quantization levels")
    p.add_argument("--batch-size", type=positive_int, default=128, help="images per process and step")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate at the start of the cosine schedule")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout of VGG models")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--sync-bn", action="store_true",
                   help="under torchrun on GPUs: batch-norm statistics over all processes (SyncBatchNorm)")
    p.add_argument("--resume", default=None, metavar="STATE",
                   help="continue from a training state (the OUT.state.pth written beside a checkpoint)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--workers", type=non_negative_int, default=min(4, os.cpu_count() or 1),
                   help="data-loading worker processes (at most the machine's cores, which torch warns about)")
    p.add_argument("--limit", type=positive_int, default=None, help="train/test on the first N images only")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialization and of every epoch's shuffle")
    p.add_argument("--out", required=True, help="checkpoint path (model.state_dict(), saved every epoch; "
                                                "the training state goes to OUT.state.pth)")
    add_overwrite_arg(p, "an existing --out checkpoint and its training state without --resume")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p.parse_args(argv)


#: the options that define a training run: recorded in its training state, and a --resume with
#: any of them changed is refused (the stored optimizer would override --lr, L would change midway)
RUN_OPTIONS = ("arch", "dataset", "L", "epochs", "batch_size", "lr", "weight_decay", "dropout", "amp", "sync_bn",
               "seed", "limit")


def run_settings(args) -> dict:
    """What defines this run (:data:`RUN_OPTIONS` and the number of processes), as recorded in
    its training state and compared on --resume."""
    return {**{name: getattr(args, name) for name in RUN_OPTIONS}, "world_size": launched_world_size()}


def _flag(name: str) -> str:
    return "processes " if name == "world_size" else f"--{name.replace('_', '-')} "


def outputs_to_keep(args) -> dict:
    """The files of a previous run that this one must not replace silently: an existing --out and
    its training state, unless --resume continues exactly that state (path -> what to do)."""
    state = training_state_path(args.out)
    if args.resume is not None and os.path.abspath(args.resume) == os.path.abspath(state):
        return {}
    hint = f"pass --resume {state} to continue that run, choose another --out"
    return {path: hint for path in (args.out, state)}


def check_training_args(args) -> None:
    """The recipe's numbers, each checked on its own (one error names one option), before torch."""
    if not args.lr > 0:
        raise ConfigError(f"--lr must be > 0, got {args.lr}")
    if not args.weight_decay >= 0:
        raise ConfigError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if not 0 <= args.dropout < 1:
        raise ConfigError(f"--dropout must be in [0, 1), got {args.dropout}")


def main(argv=None) -> int:
    args = parse_args(argv)
    # every check that can fail runs before the process group starts (see eval_cifar.main)
    check_download_alone(args.download)
    check_training_args(args)
    check_writable(args.out, training_state_path(args.out), keep=outputs_to_keep(args), overwrite=args.overwrite)
    # torch from here on: every check above needed none
    import torch
    import torch.nn as nn
    from torch.utils.data import DistributedSampler

    from .. import distributed, models
    from ..checkpoint import load_checkpoint
    from ..data import check_same_classes, get_dataset, limited, loader, num_classes
    from ..train import check_resume, fit, read_training_state

    device = distributed.process_device(resolve_device(args.device))
    if args.sync_bn and device.type != "cuda":
        raise ConfigError("--sync-bn needs --device cuda (torch's SyncBatchNorm synchronizes GPU batches only)")
    resume = read_training_state(args.resume) if args.resume else None
    if resume is not None and resume["epochs"] != args.epochs:
        raise ConfigError(f"--resume {args.resume} was written for --epochs {resume['epochs']}, got --epochs "
                          f"{args.epochs}: pass --epochs {resume['epochs']} (the cosine schedule depends on it)")
    if resume is not None:
        check_resume(resume, run_settings(args), where=f"--resume {args.resume}", flag=_flag)
        if "settings" not in resume:
            print(f"warning: --resume {args.resume} was written by an older sjconv that did not record its "
                  "settings (--L, --lr, ...): make sure this run repeats them", file=sys.stderr)
    if resume is not None and resume["epoch"] >= resume["epochs"]:
        raise ConfigError(f"--resume {args.resume} has finished all {resume['epochs']} epochs: nothing to resume")
    torch.manual_seed(args.seed)
    model = models.build(args.arch, num_classes=num_classes(args.dataset), L=args.L, dropout=args.dropout)
    if resume is not None:  # a state of another architecture is a one-line error naming the keys
        load_checkpoint(model, resume["model"], arch=f"{args.arch} ({args.dataset})")
    train_set = limited(get_dataset(args.dataset, args.data_dir, train=True, download=args.download), args.limit)
    test_set = limited(get_dataset(args.dataset, args.data_dir, train=False, download=args.download), args.limit)
    check_same_classes(getattr(train_set, "dataset", train_set), getattr(test_set, "dataset", test_set))
    with distributed.process_group(device) as ctx:
        if args.sync_bn and ctx.world_size > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                     seed=args.seed)
        train_loader = loader(train_set, args.batch_size, workers=args.workers, sampler=sampler)
        test_loader = loader(distributed.shard(test_set, ctx.rank, ctx.world_size), args.batch_size,
                             workers=args.workers)

        def on_epoch(epoch, record):
            if ctx.is_main:
                print(json.dumps(record), file=sys.stderr)

        fit(model, train_loader, args.epochs, test_loader, lr=args.lr, weight_decay=args.weight_decay,
            amp=args.amp, device=device, progress=not args.no_progress and ctx.is_main, on_epoch=on_epoch,
            checkpoint=args.out, resume=resume, seed=args.seed, settings=run_settings(args))
        if ctx.is_main:
            print(f"saved {args.out} and {training_state_path(args.out)}", file=sys.stderr)
    return 0


def cli(argv=None) -> int:
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
