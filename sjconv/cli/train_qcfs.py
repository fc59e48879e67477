"""Train a QCFS ANN on CIFAR-10/100 with the reference recipe and save official checkpoints.

    python examples/train_qcfs.py --arch vgg16 --dataset cifar10 --data-dir data --download \\
        --epochs 300 --L 8 --out checkpoints/vgg16_cifar10.pth
"""

import argparse
import json
import sys

import torch

from .. import models
from ..data import cifar_dataset, limited, loader, num_classes
from ..train import fit, save_state_dict
from .common import positive_int, resolve_device, run_cli


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", required=True, choices=list(models.ARCHS))
    p.add_argument("--dataset", choices=["cifar10", "cifar100"], default="cifar10")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--download", action="store_true")
    p.add_argument("--epochs", type=positive_int, default=300)
    p.add_argument("--L", type=positive_int, default=8, help="QCFS quantization levels")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--dropout", type=float, default=0.0, help="dropout of VGG models")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--device", default=None)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--limit", type=positive_int, default=None, help="train/test on the first N images only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="checkpoint path (model.state_dict(), saved every epoch)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    extra = {"dropout": args.dropout} if args.arch.startswith("vgg") else {}
    model = models.build(args.arch, num_classes=num_classes(args.dataset), L=args.L, **extra)
    train_set = limited(cifar_dataset(args.dataset, args.data_dir, train=True, download=args.download), args.limit)
    test_set = limited(cifar_dataset(args.dataset, args.data_dir, train=False, download=args.download), args.limit)
    train_loader = loader(train_set, args.batch_size, shuffle=True, workers=args.workers, seed=args.seed)
    test_loader = loader(test_set, args.batch_size, workers=args.workers)

    def on_epoch(epoch, record):
        save_state_dict(model, args.out)
        print(json.dumps(record), file=sys.stderr)

    fit(model, train_loader, args.epochs, test_loader, lr=args.lr, weight_decay=args.weight_decay,
        amp=args.amp, device=device, progress=not args.no_progress, on_epoch=on_epoch)
    print(f"saved {args.out}", file=sys.stderr)
    return 0


def cli(argv=None) -> int:
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
