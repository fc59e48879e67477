"""Evaluate a QCFS checkpoint on CIFAR-10/100 as an SNN: accuracy after every T, per method.

    python examples/eval_cifar.py --arch vgg16 --dataset cifar10 --checkpoint vgg16_c10.pth \\
        --data-dir data --method qcfs neg srp srp+neg -T 1 2 4 8 16 32 64 --out results.json
"""

import argparse
import os
import sys
import time

from .. import models
from ..checkpoint import load_checkpoint
from ..data import cifar_dataset, display_name, limited, loader, num_classes
from ..experiment import results_table, run_methods, save_results
from .common import (add_simulation_args, analyze_if_asked, apply_memory_budget, check_simulation_args,
                     positive_int, resolve_device, run_cli)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", required=True, choices=list(models.ARCHS), help="QCFS architecture")
    p.add_argument("--dataset", choices=["cifar10", "cifar100"], default="cifar10")
    p.add_argument("--checkpoint", required=True, help="QCFS checkpoint (official v1 or v2 state dict)")
    p.add_argument("--L", type=positive_int, default=8, help="QCFS quantization levels the ANN was trained with")
    p.add_argument("--data-dir", default="data", help="folder holding (or receiving) the CIFAR files")
    p.add_argument("--download", action="store_true", help="download CIFAR if it is not in --data-dir")
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N test images")
    p.add_argument("--workers", type=int, default=2, help="data-loading worker processes")
    p.add_argument("--out", default="results.json", help="JSON results file")
    p.add_argument("--plot", default=None, help="accuracy-vs-T PNG (default: --out with .png)")
    add_simulation_args(p)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    check_simulation_args(args)
    device = resolve_device(args.device, args.backend)
    budget = apply_memory_budget(args, device)
    steps = sorted(set(args.steps))
    ann = models.build(args.arch, num_classes=num_classes(args.dataset), L=args.L)
    load_checkpoint(ann, args.checkpoint, arch=f"{args.arch} ({args.dataset})")
    test_set = limited(cifar_dataset(args.dataset, args.data_dir, train=False, download=args.download),
                       args.limit)
    test_loader = loader(test_set, args.batch_size, workers=args.workers)
    started = time.perf_counter()
    results = run_methods(ann, test_loader, args.method, steps, tau=args.tau, step_mode=args.step_mode,
                          backend=args.backend, device=device, chunk=args.chunk,
                          progress=not args.no_progress, neg_rule=args.neg_rule, memory_budget=budget)
    results.update({"arch": args.arch, "dataset": args.dataset, "checkpoint": os.path.abspath(args.checkpoint),
                    "L": args.L, "device": str(device), "num_images": len(test_set),
                    "seconds": round(time.perf_counter() - started, 3)})
    title = display_name(args.dataset)
    print(results_table(results, title))
    plot = args.plot or os.path.splitext(args.out)[0] + ".png"
    save_results(results, args.out, plot, f"{args.arch} on {title}")
    print(f"wrote {args.out} and {plot}", file=sys.stderr)
    analyze_if_asked(args, ann, test_loader, steps, os.path.splitext(args.out)[0], device)
    return 0


def cli(argv=None) -> int:
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
