"""Evaluate a QCFS checkpoint on CIFAR-10/100 or ImageNet as an SNN: accuracy after every T, per method.

    python examples/eval_cifar.py --arch vgg16 --dataset cifar10 --checkpoint vgg16_c10.pth \\
        --data-dir data --method qcfs neg srp srp+neg -T 1 2 4 8 16 32 64 --out results.json

Under torchrun (``torchrun --nproc_per_node=K examples/eval_cifar.py ...``) each process
evaluates its own slice of the test set, every image exactly once, the integer counts are
summed over processes, and rank 0 alone prints the table and writes the files.
"""

import argparse
import os
import sys
import time

from ..catalog import ARCHS, DATASETS
from ..errors import ConfigError, SjconvError
from ..torchrun import launched_world_size
from .common import (HelpFormatter, add_simulation_args, analysis_outputs, analyze_if_asked, apply_memory_budget,
                     check_levels, check_simulation_args, check_writable, non_negative_int, positive_int,
                     report_chunks, resolve_device, run_cli, run_metadata)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--arch", required=True, choices=list(ARCHS), help="QCFS architecture")
    p.add_argument("--dataset", choices=list(DATASETS), default="cifar10",
                   help="imagenet: torchvision ImageFolder on DATA_DIR/val (one folder per class)")
    p.add_argument("--checkpoint", required=True, help="QCFS checkpoint (official v1 or v2 state dict)")
    p.add_argument("--L", type=positive_int, default=8,
                   help="QCFS quantization levels the ANN was trained with: must match the checkpoint (a wrong L "
                        "changes every figure; checked only where train_qcfs's CHECKPOINT.state.pth is beside it)")
    p.add_argument("--data-dir", default="data", help="folder holding (or receiving) the CIFAR files, "
                                                      "or holding ImageNet's train/ and val/")
    p.add_argument("--download", action="store_true", help="download CIFAR if it is not in --data-dir")
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N test images")
    p.add_argument("--workers", type=non_negative_int, default=2, help="data-loading worker processes")
    p.add_argument("--out", default="results.json", help="JSON results file")
    p.add_argument("--plot", default=None, help="accuracy-vs-T PNG (default: --out with .png)")
    add_simulation_args(p)
    return p.parse_args(argv)


def check_download_alone(download: bool) -> None:
    """Several processes downloading into one folder would overwrite each other's files."""
    if download and launched_world_size() > 1:
        raise ConfigError("--download under torchrun with several processes: download once without torchrun "
                          "(or with --nproc_per_node=1), then launch without --download")


def main(argv=None) -> int:
    args = parse_args(argv)
    # everything a user can get wrong is checked before the process group starts, so under
    # torchrun every process stops with the same one-line error instead of waiting for the others
    check_simulation_args(args)
    check_download_alone(args.download)
    prefix = os.path.splitext(args.out)[0]
    plot = args.plot or prefix + ".png"
    check_writable(args.out, plot, *analysis_outputs(args, prefix))
    # torch from here on: every check above needed none
    from .. import distributed, models
    from ..checkpoint import load_checkpoint
    from ..data import display_name, get_dataset, limited, loader, num_classes
    from ..experiment import results_table, run_methods, save_results

    meta = run_metadata(args, argv)
    device = distributed.process_device(resolve_device(args.device, args.backend))
    budget = apply_memory_budget(args, device)
    steps = sorted(set(args.steps))
    ann = models.build(args.arch, num_classes=num_classes(args.dataset), L=args.L)
    check_levels(args.checkpoint, args.L)
    load_checkpoint(ann, args.checkpoint, arch=f"{args.arch} ({args.dataset})")
    test_set = limited(get_dataset(args.dataset, args.data_dir, train=False, download=args.download), args.limit)
    with distributed.process_group(device) as ctx:
        shard_loader = loader(distributed.shard(test_set, ctx.rank, ctx.world_size), args.batch_size,
                              workers=args.workers)
        started = time.perf_counter()
        results = run_methods(ann, shard_loader, args.method, steps, tau=args.tau, step_mode=args.step_mode,
                              backend=args.backend, device=device, chunk=args.chunk,
                              progress=not args.no_progress and ctx.is_main, neg_rule=args.neg_rule,
                              memory_budget=budget, reduce=distributed.all_reduce_sum, levels=args.levels)
        if results["num_images"] != len(test_set):  # the shards must cover the test set exactly once
            raise SjconvError(f"evaluated {results['num_images']} images across {ctx.world_size} processes, "
                              f"but the test set holds {len(test_set)}")
        results.update({"arch": args.arch, "dataset": args.dataset, "checkpoint": os.path.abspath(args.checkpoint),
                        "L": args.L, "device": str(device), "world_size": ctx.world_size,
                        "seconds": round(time.perf_counter() - started, 3), **meta})
        if not ctx.is_main:
            return 0
        report_chunks(args, results)
        title = display_name(args.dataset)
        print(results_table(results, title), flush=True)
        save_results(results, args.out, plot, f"{args.arch} on {title}")
        print(f"wrote {args.out} and {plot}", file=sys.stderr)
        # the analysis looks at the first test images of the whole set, on rank 0 alone
        analyze_if_asked(args, ann, loader(test_set, args.batch_size, workers=args.workers), steps,
                         prefix, device, results)
    return 0


def cli(argv=None) -> int:
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
