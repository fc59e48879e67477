"""Train a spiking network with forward-forward (no backpropagation between layers) and compare it with BPTT.

    python examples/train_ff.py --out results/ff_digits

Trains spiking FF (LIF layers, SpikingJelly multi-step), reads it out two ways (goodness of every
candidate label; a softmax classifier on the rates of the image with a neutral label), and, on the
same split, architecture and epoch budget, the same spiking network trained end to end with BPTT
and non-spiking FF (ReLU). Prints one row per model and readout; writes PREFIX.json, PREFIX.png
(accuracy per epoch), PREFIX_goodness.png, PREFIX_raster.png and the checkpoint PREFIX.pth
(``sjconv.ff.load_ff``). See docs/methods.md#forward-forward.
"""

import argparse
import os
import sys
import time

from ..errors import ConfigError
from ..ff.options import DATASETS, ENCODINGS, NEGATIVES, SCHEDULES, missing_data
from .common import (HelpFormatter, add_overwrite_arg, check_writable, positive_int, resolve_device, run_cli,
                     run_metadata)

#: the settings a resumed run must repeat (they shape the network or its training)
RESUME_SETTINGS = ("dataset", "dims", "T", "epochs", "batch_size", "lr", "tau", "v_threshold", "goodness_threshold",
                   "sharpness", "encoding", "negatives", "schedule", "hard_temperature", "hard_every", "seed")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    p.add_argument("--dataset", choices=list(DATASETS), default="digits",
                   help="digits: scikit-learn's 8x8 digits, the demo's split (no download); mnist, fashion-mnist: "
                        "torchvision")
    p.add_argument("--data-dir", default="data", help="folder holding (or receiving) MNIST / Fashion-MNIST")
    p.add_argument("--download", action="store_true", help="download the dataset if it is not in --data-dir")
    p.add_argument("--dims", nargs="+", type=positive_int, default=None,
                   help="input size, then the width of each layer (default: the input size, 500 500)")
    p.add_argument("-T", "--steps", type=positive_int, default=8, help="time steps per sample")
    p.add_argument("--epochs", type=positive_int, default=30,
                   help="epochs of every model (layerwise: per layer)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="training images per minibatch")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate of every FF layer (cosine decay)")
    p.add_argument("--tau", type=float, default=2.0, help="LIF time constant (> 1)")
    p.add_argument("--v-threshold", type=float, default=0.5, help="LIF firing threshold")
    p.add_argument("--goodness-threshold", type=float, default=0.1, help="θ_g of the FF loss")
    p.add_argument("--sharpness", type=float, default=10.0,
                   help="scale of the FF loss's logit, softplus(s(θ_g − g)) (the rates' goodness lies in [0, 1])")
    p.add_argument("--encoding", choices=list(ENCODINGS), default="direct",
                   help="poisson: rate-coded spikes; direct: the analog image as input current every step")
    p.add_argument("--negatives", choices=list(NEGATIVES), default="hard",
                   help="random: a wrong label drawn uniformly; hard: drawn from the network's own label scores")
    p.add_argument("--hard-temperature", type=float, default=1.0,
                   help="temperature of the hard negatives' softmax over standardised label scores")
    p.add_argument("--hard-every", type=positive_int, default=1,
                   help="score the training set for hard negatives every N epochs (each scoring costs about an "
                        "epoch of training)")
    p.add_argument("--schedule", choices=list(SCHEDULES), default="joint",
                   help="joint: every layer on every minibatch; layerwise: layer after layer, --epochs each")
    p.add_argument("--skip-first-layer", action="store_true",
                   help="the goodness and softmax readouts leave out the first layer (as Hinton does)")
    p.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                   help="also train the same spiking network with BPTT and non-spiking (ReLU) FF")
    p.add_argument("--bptt-lr", type=float, default=1e-3, help="Adam learning rate of the BPTT baseline")
    p.add_argument("--relu-lr", type=float, default=0.03, help="Adam learning rate of the ReLU FF baseline")
    p.add_argument("--relu-goodness-threshold", type=float, default=2.0, help="θ_g of the ReLU FF baseline")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the initialization, the shuffle and "
                                                       "the spikes")
    p.add_argument("--out", default="results/ff_digits",
                   help="output prefix: PREFIX.json, PREFIX.png, PREFIX_goodness.png, PREFIX_raster.png, PREFIX.pth")
    p.add_argument("--resume", action="store_true",
                   help="continue the FF training stored in PREFIX.pth (written after every epoch) with the same "
                        "settings")
    add_overwrite_arg(p, "an existing checkpoint PREFIX.pth")
    return p.parse_args(argv)


def check_args(args) -> None:
    """Every check that needs no torch, each naming its option; fills in the default ``--dims``."""
    record = DATASETS[args.dataset]
    if args.dims is None:
        args.dims = [record.inputs, 500, 500]
    if len(args.dims) < 2:
        raise ConfigError(f"--dims needs the input size and at least one layer width, got {args.dims[0]}")
    if args.dims[0] != record.inputs:
        raise ConfigError(f"--dims must start with the input size of {args.dataset}, {record.inputs}, got "
                          f"{args.dims[0]}")
    if args.dims[1] < record.classes:
        raise ConfigError(f"--dims: the first layer ({args.dims[1]} neurons) must be at least as wide as the "
                          f"{record.classes} classes")
    for flag, value in (("--lr", args.lr), ("--goodness-threshold", args.goodness_threshold),
                        ("--sharpness", args.sharpness), ("--v-threshold", args.v_threshold),
                        ("--hard-temperature", args.hard_temperature), ("--bptt-lr", args.bptt_lr),
                        ("--relu-lr", args.relu_lr), ("--relu-goodness-threshold", args.relu_goodness_threshold)):
        if not value > 0:
            raise ConfigError(f"{flag} must be > 0, got {value}")
    if not args.tau > 1:
        raise ConfigError(f"--tau must be > 1, got {args.tau}")
    problem = None if args.download else missing_data(args.dataset, args.data_dir)
    if problem:
        raise ConfigError(problem)
    outputs = [args.out + s for s in (".json", ".png", "_goodness.png", "_raster.png", ".pth")]
    keep = {} if args.resume else {args.out + ".pth": "pass --resume to continue its training"}
    check_writable(*outputs, keep=keep, overwrite=args.overwrite)
    if args.resume and not os.path.isfile(args.out + ".pth"):
        raise ConfigError(f"--resume: no checkpoint {args.out}.pth to continue; drop --resume to start a new run")


def settings_of(args) -> dict:
    return {"dataset": args.dataset, "data_dir": args.data_dir, "download": args.download, "dims": list(args.dims),
            "T": args.steps, "epochs": args.epochs,
            "batch_size": args.batch_size, "lr": args.lr, "tau": args.tau, "v_threshold": args.v_threshold,
            "goodness_threshold": args.goodness_threshold, "sharpness": args.sharpness, "encoding": args.encoding,
            "negatives": args.negatives, "hard_temperature": args.hard_temperature, "hard_every": args.hard_every,
            "schedule": args.schedule,
            "skip_first_layer": args.skip_first_layer, "baselines": args.baselines, "bptt_lr": args.bptt_lr,
            "relu_lr": args.relu_lr, "relu_goodness_threshold": args.relu_goodness_threshold, "seed": args.seed}


def run(args, argv=None) -> dict:
    """Train and evaluate every model as ``args`` say; returns the results (see the module docstring)."""
    check_args(args)
    # torch from here on: every check above needed none
    import torch

    from ..ff import experiment

    meta = run_metadata(args, argv)
    device = resolve_device(args.device)
    return experiment.run_experiment(settings_of(args), args.out, device, resume=args.resume, metadata=meta,
                                     resume_settings=RESUME_SETTINGS, threads=torch.get_num_threads())


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    results = run(args, argv)
    from ..ff.experiment import format_table

    print(format_table(results))
    print(f"total {time.perf_counter() - started:.1f}s; goodness prediction of the {results['test_images']} test "
          f"images {results['seconds']['ff_predict_test']:.2f}s", file=sys.stderr)
    print(f"wrote {args.out}.json, {args.out}.png, {args.out}_goodness.png, {args.out}_raster.png and "
          f"{args.out}.pth", file=sys.stderr)
    return 0


def cli(argv=None) -> int:
    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli())
