"""One experiment = one ANN, several conversion methods, accuracy after every T.

Shared by the CIFAR command line and the digits demo, so both print the same table and write
the same JSON and plot.
"""

import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch.nn as nn

from .convert import convert
from .neurons import METHODS
from .report import format_table, method_label, plot_accuracy, rows_from_results, write_json
from .simulate import accuracies, count_correct, count_correct_ann
from .srp import DEFAULT_TAU


def _convert_method(ann, method, tau, step_mode, backend, neg_rule):
    """Convert for one table row: SRP methods get ``tau`` pre-run steps, the others none."""
    method_tau = tau if METHODS[method][1] else 0
    return convert(ann, method=method, step_mode=step_mode, backend=backend, tau=method_tau, neg_rule=neg_rule)


def run_methods(ann: nn.Module, loader: Iterable, methods: Sequence[str], steps: Sequence[int],
                tau: int = DEFAULT_TAU, step_mode: str = "m", backend: str = "torch", device=None,
                chunk: Optional[int] = None, progress: bool = True, neg_rule: str = "qcfs",
                memory_budget=None, reduce: Optional[Callable[[List[int]], List[int]]] = None) -> Dict:
    """ANN accuracy, then for each method: convert, evaluate every T in one pass.

    Returns a JSON-ready dict: ``ann_accuracy``, ``T``, ``num_images`` and ``methods`` (a list of
    ``{method, label, tau, accuracy: {T: %}, seconds}``). SRP methods use ``tau`` pre-run steps.

    Accuracies are computed from integer counts. With ``reduce`` (e.g.
    :func:`sjconv.distributed.all_reduce_sum`), each process passes its own shard as ``loader``
    and the counts of all shards are summed before dividing, so K processes give exactly the
    single-process figures (METHODS.md §11).
    """
    reduce = reduce or (lambda counts: counts)
    ann = ann.to(device).eval()
    started = time.perf_counter()
    ann_correct, total = reduce(list(count_correct_ann(ann, loader, device=device, progress=progress)))
    results = {"T": list(steps), "step_mode": step_mode, "backend": backend, "chunk": chunk,
               "memory_budget": memory_budget,
               "ann_accuracy": accuracies({0: ann_correct}, total)[0],
               "ann_seconds": round(time.perf_counter() - started, 3), "num_images": total, "methods": []}
    for method in methods:
        snn = _convert_method(ann, method, tau, step_mode, backend, neg_rule)
        started = time.perf_counter()
        correct, count = count_correct(snn, loader, T=steps, device=device, chunk=chunk, progress=progress,
                                       desc=method_label(method, snn.tau), memory_budget=memory_budget)
        summed = reduce(list(correct.values()) + [count])
        accuracy = accuracies(dict(zip(correct, summed[:-1])), summed[-1])
        results["methods"].append({
            "method": method, "label": method_label(method, snn.tau), "tau": snn.tau,
            "accuracy": {str(t): round(a, 4) for t, a in accuracy.items()},
            "seconds": round(time.perf_counter() - started, 3)})
    return results


def results_table(results: Dict, title: str) -> str:
    return format_table(title, results["T"], rows_from_results(results), results["ann_accuracy"])


def save_results(results: Dict, json_path: Optional[str], plot_path: Optional[str], title: str) -> None:
    """Write the JSON (atomically) and the accuracy-vs-T plot, where paths are given."""
    if plot_path:
        plot_accuracy(plot_path, results["T"], rows_from_results(results), results["ann_accuracy"], title)
    if json_path:
        write_json(json_path, results)


def first_images(loader: Iterable, count: int):
    """The first ``count`` images of ``loader`` as one batch."""
    import torch

    taken, seen = [], 0
    for images, _ in loader:
        taken.append(images[: count - seen])
        seen += taken[-1].shape[0]
        if seen >= count:
            break
    if not taken:
        raise ValueError("the data loader yielded no samples")
    return torch.cat(taken)


def analyze_methods(ann: nn.Module, images, methods: Sequence[str], steps: Sequence[int],
                    prefix: str, tau: int = DEFAULT_TAU, step_mode: str = "m", backend: str = "torch",
                    device=None, chunk: Optional[int] = None, neg_rule: str = "qcfs") -> Dict:
    """Per-layer analysis (:mod:`sjconv.analysis`) of every method at T = max(steps) and the
    relative error at every T, on ``images``. Prints a per-layer table per method, writes
    ``PREFIX_analysis.json`` and per-method PNGs ``PREFIX_<method>_{rates,cases,error_vs_T}.png``."""
    from . import analysis

    ann = ann.to(device).eval()
    images = images.to(device)
    report = {"images": int(images.shape[0]), "T": max(steps), "methods": []}
    for method in methods:
        snn = _convert_method(ann, method, tau, step_mode, backend, neg_rule)
        result = analysis.analyze(ann, snn, images, max(steps), chunk=chunk)
        errors = analysis.error_vs_T(ann, snn, images, steps, chunk=chunk)
        print(analysis.format_layer_table(result))
        print()
        result["label"] = method_label(method, snn.tau)
        result["error_vs_T"] = errors
        report["methods"].append(result)
        analysis.plot_analysis(result, errors, f"{prefix}_{method.replace('+', '_')}")
    write_json(f"{prefix}_analysis.json", report)
    return report
