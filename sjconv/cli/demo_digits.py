"""End-to-end demo on real data that needs no download: scikit-learn's 8x8 handwritten digits.

Trains a small QCFS CNN on a fixed split, converts it with every method, evaluates
T = 1, 2, 4, ..., 64 in one pass per method, prints the table and writes JSON and a plot.

    python examples/demo_digits.py --out results/digits
"""

import argparse
import sys
import time

from ..catalog import METHODS
from ..errors import ConfigError
from .common import (HelpFormatter, add_simulation_args, analysis_outputs, analyze_if_asked,
                     apply_memory_budget, check_simulation_args, check_writable, positive_int, report_chunks,
                     resolve_device, run_cli, run_metadata)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--epochs", type=positive_int, default=30, help="ANN training epochs")
    p.add_argument("--L", type=positive_int, default=4, help="QCFS quantization levels")
    p.add_argument("--width", type=positive_int, default=32, help="channels of the first conv layers")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (cosine schedule)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the initialization and the shuffle")
    p.add_argument("--out", default="results/digits", help="output prefix: writes PREFIX.json and PREFIX.png")
    add_simulation_args(p, default_methods=tuple(METHODS))
    ft = p.add_argument_group("fine-tuning in SNN mode (adds rows marked '+ FT')")
    ft.add_argument("--finetune", action="store_true", help="also fine-tune converted SNNs on the training split")
    ft.add_argument("--finetune-methods", nargs="+", default=["qcfs", "neg"], choices=list(METHODS),
                    help="methods to fine-tune")
    ft.add_argument("--finetune-T", type=positive_int, default=4, help="training time steps")
    ft.add_argument("--finetune-epochs", type=positive_int, default=2, help="fine-tuning epochs")
    ft.add_argument("--finetune-lr", type=float, default=1e-3, help="Adam learning rate")
    p.set_defaults(batch_size=64)
    return p.parse_args(argv)


def run(args, argv=None):
    """Train, convert and evaluate as ``args`` say: ``(results, model, test_loader, device)``;
    ``argv`` only goes into the results' metadata (see :func:`run_metadata`)."""
    check_simulation_args(args)
    if not args.lr > 0:
        raise ConfigError(f"--lr must be > 0, got {args.lr}")
    if args.finetune and not args.finetune_lr > 0:
        raise ConfigError(f"--finetune-lr must be > 0, got {args.finetune_lr}")
    check_writable(args.out + ".json", args.out + ".png", *analysis_outputs(args, args.out))
    # torch from here on: every check above needed none
    import torch

    from ..data import digits_datasets, loader
    from ..experiment import finetuned_rows, run_methods
    from ..models import small_cnn
    from ..train import fit

    meta = run_metadata(args, argv)
    device = resolve_device(args.device, args.backend)
    budget = apply_memory_budget(args, device)
    torch.manual_seed(args.seed)
    train_set, test_set = digits_datasets(seed=args.seed)
    train_loader = loader(train_set, args.batch_size, shuffle=True, seed=args.seed)
    test_loader = loader(test_set, 256)
    model = small_cnn(num_classes=10, in_channels=1, image_size=8, L=args.L, width=args.width)
    started = time.perf_counter()
    history = fit(model, train_loader, args.epochs, lr=args.lr, device=device, progress=not args.no_progress)
    train_seconds = time.perf_counter() - started
    results = run_methods(model, test_loader, args.method, sorted(set(args.steps)), tau=args.tau,
                          step_mode=args.step_mode, backend=args.backend, device=device, chunk=args.chunk,
                          progress=not args.no_progress, neg_rule=args.neg_rule, memory_budget=budget,
                          levels=args.levels)
    if args.finetune:
        results["methods"] += finetuned_rows(
            model, train_loader, test_loader, args.finetune_methods, sorted(set(args.steps)), args.finetune_T,
            args.finetune_epochs, lr=args.finetune_lr, tau=args.tau, step_mode=args.step_mode,
            backend=args.backend, device=device, chunk=args.chunk, progress=not args.no_progress,
            neg_rule=args.neg_rule, memory_budget=budget, levels=args.levels)
    results.update({"dataset": "sklearn-digits", "arch": "small_cnn", "L": args.L, "seed": args.seed,
                    "epochs": args.epochs, "train_images": len(train_set), "num_images": len(test_set),
                    "train_seconds": round(train_seconds, 3), "final_train_loss": round(history[-1]["loss"], 5),
                    "device": str(device), **meta})
    return results, model, test_loader, device


def main(argv=None) -> int:
    args = parse_args(argv)
    results, model, test_loader, device = run(args, argv)
    from ..experiment import results_table, save_results

    report_chunks(args, results)
    print(f"ANN test accuracy: {results['ann_accuracy']:.2f}% "
          f"({results['num_images']} test images, trained {results['train_seconds']:.1f}s)")
    print(results_table(results, "Digits"))
    save_results(results, args.out + ".json", args.out + ".png", "small QCFS CNN on scikit-learn digits")
    print(f"wrote {args.out}.json and {args.out}.png", file=sys.stderr)
    analyze_if_asked(args, model, test_loader, sorted(set(args.steps)), args.out, device, results)
    return 0


def cli(argv=None) -> int:
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
