"""The forward-forward targets on the digits: the default ``train_ff`` run (spiking FF with both
readouts, BPTT and ReLU FF) timed end to end, and the goodness prediction of the 450 test images
timed alone (fastest of ``--repeat``). Writes PREFIX.json (everything, with the machine's load
average, which inflates CPU timings on a shared machine) and PREFIX.md (the table).

    python benchmarks/ff_digits.py --out results/bench_ff_digits [train_ff options, e.g. --epochs 10]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import device_info, markdown_table, write_outputs  # noqa: E402

TARGETS = {"ff_best_accuracy": 95.0, "gap_to_bptt": 3.0, "total_seconds": 90.0, "predict_seconds": 2.0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results/bench_ff_digits", help="output prefix (PREFIX.json, PREFIX.md; the "
                                                                    "run's own files as PREFIX_run.*)")
    p.add_argument("--repeat", type=int, default=3, help="timed goodness predictions of the test images")
    args, rest = p.parse_known_args(argv)
    import torch

    from sjconv.cli import train_ff
    from sjconv.ff import ff_data, load_ff

    run_prefix = args.out + "_run"
    load_before = os.getloadavg()
    started = time.perf_counter()
    status = train_ff.cli(rest + ["--out", run_prefix, "--overwrite"])
    total = time.perf_counter() - started
    if status != 0:
        return status
    import json

    results = json.loads(open(run_prefix + ".json").read())
    net = load_ff(run_prefix + ".pth")
    skip = results["settings"]["skip_first_layer"]
    settings = results["settings"]
    _, _, x_test, y_test = ff_data(results["dataset"], settings["data_dir"], seed=settings["seed"])
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        net.predict(x_test, skip_first=skip)
        times.append(time.perf_counter() - t0)
    test, train, seconds = results["test_accuracy"], results["train_accuracy"], results["row_seconds"]
    rows = [{"model": k, "test %": test[k], "train %": train[k], "seconds": seconds[k]} for k in test]
    best = max(test["ff_goodness"], test["ff_softmax"])
    payload = {"rows": rows, "total_seconds": round(total, 2), "predict_seconds_min": round(min(times), 3),
               "predict_seconds": [round(t, 3) for t in times], "test_images": len(y_test),
               "ff_best_accuracy": best, "gap_to_bptt": round(test["bptt"] - best, 2) if "bptt" in test else None,
               "targets": TARGETS, "load_average_before": load_before, "load_average_after": os.getloadavg(),
               "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "command": [sys.argv[0]] + list(argv if argv is not None else sys.argv[1:]),
               "settings": results["settings"], **device_info(torch.device(results["device"]))}
    table = markdown_table(rows, ["model", "test %", "train %", "seconds"])
    table += (f"\n\ntotal {total:.1f} s (target <= 90 s); goodness prediction of {len(y_test)} test images "
              f"{min(times):.2f} s (target <= 2 s); torch threads {torch.get_num_threads()}, load average "
              f"{load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs")
    write_outputs(args.out, payload, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
