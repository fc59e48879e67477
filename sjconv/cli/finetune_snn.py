"""Fine-tune a converted QCFS network in SNN mode on CIFAR-10/100 and save it as a QCFS checkpoint.

    python examples/finetune_snn.py --arch vgg16 --dataset cifar10 --checkpoint vgg16_c10.pth \\
        --data-dir data --method qcfs -T 2 --epochs 3 --lr 1e-4 --loss tet --out vgg16_c10_ft.pth

The output is the official-layout ``state_dict`` of the QCFS ANN (weights and thresholds from the
fine-tuned SNN), so ``eval_cifar.py --checkpoint vgg16_c10_ft.pth`` evaluates it unchanged.
"""

import argparse
import json
import os
import sys

from ..catalog import ARCHS, CIFAR, LOSSES, METHODS, NEG_RULES, OPTIMIZERS, check_method
from ..errors import ConfigError
from .common import (HelpFormatter, add_overwrite_arg, check_levels, check_writable, non_negative_int, positive_int,
                     resolve_device, run_cli, run_metadata)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    p.add_argument("--arch", required=True, choices=list(ARCHS), help="QCFS architecture")
    p.add_argument("--dataset", choices=list(CIFAR), default="cifar10", help="training set")
    p.add_argument("--checkpoint", required=True, help="QCFS checkpoint to start from (official v1 or v2)")
    p.add_argument("--L", type=positive_int, default=8,
                   help="QCFS quantization levels the ANN was trained with: must match the checkpoint (a wrong L "
                        "changes every figure; checked only where train_qcfs's CHECKPOINT.state.pth is beside it)")
    p.add_argument("--data-dir", default="data", help="folder holding (or receiving) the CIFAR files")
    p.add_argument("--download", action="store_true", help="download CIFAR if it is not in --data-dir")
    p.add_argument("--method", default="qcfs", choices=list(METHODS), help="conversion method to fine-tune")
    p.add_argument("--tau", type=int, default=None, help="pre-run steps of SRP/COS methods (default: the method's)")
    p.add_argument("--neg-rule", choices=list(NEG_RULES), default="qcfs", help="negative-spike rule (signed methods)")
    p.add_argument("-T", "--steps", type=positive_int, default=2, help="training time steps")
    p.add_argument("--epochs", type=positive_int, default=3, help="fine-tuning epochs")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate")
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), default="adam",
                   help="adam: Adam; sgd: SGD with momentum 0.9 (both without weight decay)")
    p.add_argument("--loss", choices=list(LOSSES), default="tet", help="TET or mean-over-steps cross-entropy")
    p.add_argument("--lam", type=float, default=1e-3, help="TET weight of the MSE term")
    p.add_argument("--freeze-weights", action="store_true", help="train the thresholds only")
    p.add_argument("--freeze-thresholds", action="store_true", help="train the weights only")
    p.add_argument("--batch-size", type=positive_int, default=64, help="training images per step")
    p.add_argument("--limit", type=positive_int, default=None, help="train on the first N images only")
    p.add_argument("--workers", type=non_negative_int, default=2, help="data-loading worker processes")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialization and the shuffle")
    p.add_argument("--out", required=True, help="fine-tuned checkpoint (official QCFS state_dict); its log goes "
                                                "to OUT with .json")
    add_overwrite_arg(p, "the --checkpoint file when --out names it")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    record = METHODS[args.method]
    if args.tau is not None and args.tau < 0:   # each check names the one option that is wrong
        raise ConfigError(f"--tau must be a whole number of pre-run steps >= 0, got {args.tau}")
    if args.tau is not None and not record.prerun:
        with_prerun = ", ".join(m for m, r in METHODS.items() if r.prerun)
        raise ConfigError(f"--tau sets pre-run steps, but --method {args.method} has no pre-run: drop --tau or "
                          f"choose a method with one ({with_prerun})")
    check_method(args.method, args.tau, args.neg_rule)   # --neg-rule snm with an unsigned method: one line, now
    if not args.lr > 0:   # each check names the one option that is wrong
        raise ConfigError(f"--lr must be > 0, got {args.lr}")
    if not 0 <= args.lam < 1:
        raise ConfigError(f"--lam must be in [0, 1), got {args.lam}")
    if args.freeze_weights and args.freeze_thresholds:
        raise ConfigError("--freeze-weights and --freeze-thresholds together leave nothing to train")
    log = os.path.splitext(args.out)[0] + ".json"
    check_writable(args.out, log, inputs=[args.checkpoint], overwrite=args.overwrite)
    # torch from here on: every check above needed none
    import torch

    from .. import models
    from ..checkpoint import load_checkpoint
    from ..convert import convert
    from ..data import cifar_dataset, limited, loader, num_classes
    from ..finetune import finetune, load_into_ann
    from ..report import write_json
    from ..train import save_state_dict

    meta = run_metadata(args, argv)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    ann = models.build(args.arch, num_classes=num_classes(args.dataset), L=args.L)
    check_levels(args.checkpoint, args.L)
    load_checkpoint(ann, args.checkpoint, arch=f"{args.arch} ({args.dataset})")
    train_set = limited(cifar_dataset(args.dataset, args.data_dir, train=True, download=args.download), args.limit)
    train_loader = loader(train_set, args.batch_size, shuffle=True, workers=args.workers, seed=args.seed)
    snn = convert(ann.to(device), method=args.method, step_mode="m", backend="torch", tau=args.tau,
                  neg_rule=args.neg_rule)
    history = finetune(snn, train_loader, args.steps, args.epochs, lr=args.lr, loss=args.loss, lam=args.lam,
                       optimizer=args.optimizer, train_weights=not args.freeze_weights,
                       train_thresholds=not args.freeze_thresholds, device=device, progress=not args.no_progress)
    save_state_dict(load_into_ann(ann, snn).cpu(), args.out)   # the official layout, atomically
    write_json(log, {"arch": args.arch, "dataset": args.dataset, "checkpoint": os.path.abspath(args.checkpoint),
                     "method": args.method, "tau": snn.tau, "neg_rule": args.neg_rule, "T": args.steps,
                     "epochs": args.epochs, "lr": args.lr, "optimizer": args.optimizer, "loss": args.loss,
                     "lam": args.lam, "train_images": len(train_set), "history": history, **meta})
    for row in history:
        print(json.dumps(row), file=sys.stderr)
    print(f"wrote {args.out} (official QCFS state_dict) and {log}", file=sys.stderr)
    return 0


def cli(argv=None) -> int:
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
