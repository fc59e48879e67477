"""One experiment = one ANN, several conversion methods, accuracy after every T.

Shared by the CIFAR command line and the digits demo, so both print the same table and write
the same JSON and plot.
"""

import time
from typing import Dict, Iterable, Optional, Sequence

import torch.nn as nn

from .convert import convert
from .report import format_table, method_label, plot_accuracy, rows_from_results, write_json
from .simulate import evaluate, evaluate_ann
from .srp import DEFAULT_TAU


def run_methods(ann: nn.Module, loader: Iterable, methods: Sequence[str], steps: Sequence[int],
                tau: int = DEFAULT_TAU, step_mode: str = "m", backend: str = "torch", device=None,
                chunk: Optional[int] = None, progress: bool = True, neg_rule: str = "qcfs") -> Dict:
    """ANN accuracy, then for each method: convert, evaluate every T in one pass.

    Returns a JSON-ready dict: ``ann_accuracy``, ``T`` and ``methods`` (a list of
    ``{method, label, tau, accuracy: {T: %}, seconds}``). SRP methods use ``tau`` pre-run steps.
    """
    ann = ann.to(device).eval()
    started = time.perf_counter()
    results = {"T": list(steps), "step_mode": step_mode, "backend": backend, "chunk": chunk,
               "ann_accuracy": evaluate_ann(ann, loader, device=device, progress=progress),
               "ann_seconds": round(time.perf_counter() - started, 3), "methods": []}
    for method in methods:
        method_tau = tau if method.startswith("srp") else 0
        snn = convert(ann, method=method, step_mode=step_mode, backend=backend, tau=method_tau,
                      neg_rule=neg_rule)
        started = time.perf_counter()
        accuracy = evaluate(snn, loader, T=steps, device=device, chunk=chunk, progress=progress,
                            desc=method_label(method, method_tau))
        results["methods"].append({
            "method": method, "label": method_label(method, method_tau), "tau": method_tau,
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
