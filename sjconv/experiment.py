"""One experiment = one ANN, several conversion methods, accuracy after every T.

Shared by the CIFAR command line and the digits demo, so both print the same table and write
the same JSON and plot.
"""

import contextlib
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch.nn as nn

from .convert import convert
from .catalog import check_levels
from .errors import ConfigError
from .guards import eval_mode
from .neurons import METHODS
from .report import finetuned_labels, format_table, method_label, plot_accuracy, rows_from_results, write_json
from .simulate import _device_of, accuracies, count_correct, count_correct_ann


@contextlib.contextmanager
def _borrowed(ann: nn.Module, device):
    """Lend the caller's ANN to an experiment: on ``device`` and in eval mode inside the block,
    back on its own device with every module's own train/eval mode afterwards (even on error,
    :func:`sjconv.guards.eval_mode`). The converted networks are copies, so they stay where they
    were made."""
    original = _device_of(ann)
    try:
        with eval_mode(ann.to(device)) as lent:
            yield lent
    finally:
        ann.to(original)


def _convert_method(ann, method, tau, step_mode, backend, neg_rule, levels=None):
    """Convert for one table row: methods with a pre-run get ``tau`` steps (None: the method's
    default), the others none; the signed-spike rule only goes to signed methods, ``levels``
    (None: each QCFS layer's L) only to group methods."""
    record = METHODS[method]
    return convert(ann, method=method, step_mode=step_mode, backend=backend,
                   tau=tau if record.prerun else None, neg_rule=neg_rule if record.signed else "qcfs",
                   levels=levels if record.group else None)


def _row(method, snn, neg_rule):
    """The identifying fields of a table row: method, label, pre-run length, spike rule and, for
    group methods, the members per neuron (``levels``)."""
    signed = METHODS[method].signed
    levels = snn.levels
    row = {"method": method, "label": method_label(method, snn.tau, neg_rule if signed else "qcfs", levels),
           "tau": snn.tau, "neg_rule": neg_rule if signed else None}
    if METHODS[method].group:
        row["levels"] = list(levels) if isinstance(levels, tuple) else levels
    return row


def run_methods(ann: nn.Module, loader: Iterable, methods: Sequence[str], steps: Sequence[int],
                tau: Optional[int] = None, step_mode: str = "m", backend: str = "torch", device=None,
                chunk: Optional[int] = None, progress: bool = True, neg_rule: str = "qcfs",
                memory_budget=None, reduce: Optional[Callable[[List[int]], List[int]]] = None,
                levels: Optional[int] = None) -> Dict:
    """ANN accuracy, then for each method: convert, evaluate every T in one pass.

    Returns a JSON-ready dict: ``ann_accuracy``, ``T``, ``num_images`` and ``methods`` (a list of
    ``{method, label, tau, neg_rule, accuracy: {T: %}, chunk_used, seconds}``; ``chunk_used``: the
    time steps per network call, see :func:`sjconv.simulate.count_correct`). Methods with a pre-run (SRP,
    COS) use ``tau`` steps (None: each method's default); ``neg_rule`` applies to signed methods,
    ``levels`` (members per group neuron; None: the QCFS layers' L) to group methods.
    The ANN runs on ``device`` in eval mode and is given back on its own device and in its own
    train/eval modes.

    Accuracies are computed from integer counts. With ``reduce`` (e.g.
    :func:`sjconv.distributed.all_reduce_sum`), each process passes its own shard as ``loader``
    and the counts of all shards are summed before dividing, so K processes give exactly the
    single-process figures (docs/protocols.md#counting).
    """
    reduce = reduce or _single_process
    check_levels(levels)
    with _borrowed(ann, device) as ann:
        started = time.perf_counter()
        ann_correct, total = reduce(list(count_correct_ann(ann, loader, device=device, progress=progress)))
        results = {"T": list(steps), "step_mode": step_mode, "backend": backend, "chunk": chunk,
                   "memory_budget": memory_budget,
                   "ann_accuracy": accuracies({0: ann_correct}, total)[0],
                   "ann_seconds": round(time.perf_counter() - started, 3), "num_images": total, "methods": []}
        for method in methods:
            snn = _convert_method(ann, method, tau, step_mode, backend, neg_rule, levels)
            row = _row(method, snn, neg_rule)
            results["methods"].append(_evaluated(row, snn, loader, steps, device, chunk, progress, memory_budget,
                                                 reduce))
    return results


def _single_process(counts: List[int]) -> List[int]:
    """The ``reduce`` of one process: its counts are all the counts."""
    return counts


def _evaluated(row: Dict, snn, loader, steps, device, chunk, progress, memory_budget,
               reduce=_single_process) -> Dict:
    """``row`` with the accuracy after every T in ``steps`` (counts summed by ``reduce`` over the
    processes' shards, if given) and the seconds it took."""
    started = time.perf_counter()
    info = {}
    correct, count = count_correct(snn, loader, T=steps, device=device, chunk=chunk, progress=progress,
                                   desc=row["label"], memory_budget=memory_budget, info=info)
    summed = reduce(list(correct.values()) + [count])
    accuracy = accuracies(dict(zip(correct, summed[:-1])), summed[-1])
    return {**row, "accuracy": {str(t): round(a, 4) for t, a in accuracy.items()},
            "chunk_used": info["chunk_used"], "seconds": round(time.perf_counter() - started, 3)}


def finetuned_rows(ann: nn.Module, train_loader: Iterable, test_loader: Iterable, methods: Sequence[str],
                   steps: Sequence[int], train_T: int, epochs: int, lr: float = 1e-3, loss: str = "tet",
                   lam: float = 1e-3, tau: Optional[int] = None, step_mode: str = "m", backend: str = "torch",
                   device=None, chunk: Optional[int] = None, progress: bool = True, neg_rule: str = "qcfs",
                   memory_budget=None, levels: Optional[int] = None) -> list:
    """For each method: convert (torch backend), fine-tune at ``train_T`` steps on ``train_loader``
    (:func:`sjconv.finetune.finetune`), map back onto a copy of the ANN, convert that as the plain
    rows are (same step mode, backend, chunking) and evaluate it: rows for ``results["methods"]``
    with ``finetuned: true`` and the training settings and history under ``finetune``."""
    import copy

    from .finetune import finetune, load_into_ann

    rows = []
    with _borrowed(ann, device) as ann:
        for method in methods:
            trainable = _convert_method(ann, method, tau, "m", "torch", neg_rule, levels)
            started = time.perf_counter()
            history = finetune(trainable, train_loader, train_T, epochs, lr=lr, loss=loss, lam=lam, device=device,
                               progress=progress, desc=f"fine-tune {method}")
            settings = {"T": train_T, "epochs": epochs, "lr": lr, "loss": loss,
                        "lam": lam if loss == "tet" else 0.0, "seconds": round(time.perf_counter() - started, 3),
                        "history": history}
            tuned = load_into_ann(copy.deepcopy(ann), trainable)
            snn = _convert_method(tuned, method, tau, step_mode, backend, neg_rule, levels)
            row = _row(method, snn, neg_rule)
            row.update(label=f"{row['label']} + FT (T={train_T}, {epochs} ep)", finetuned=True, finetune=settings)
            rows.append(_evaluated(row, snn, test_loader, steps, device, chunk, progress, memory_budget))
    return rows


def results_table(results: Dict, title: str) -> str:
    return format_table(title, results["T"], rows_from_results(results), results["ann_accuracy"])


def save_results(results: Dict, json_path: Optional[str], plot_path: Optional[str], title: str) -> None:
    """Write the JSON (atomically) and the accuracy-vs-T plot, where paths are given."""
    if plot_path:
        plot_accuracy(plot_path, results["T"], rows_from_results(results), results["ann_accuracy"], title,
                      dashed=finetuned_labels(results))
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
        raise ConfigError("the data loader yielded no samples")
    return torch.cat(taken)


def analyze_methods(ann: nn.Module, images, methods: Sequence[str], steps: Sequence[int],
                    prefix: str, tau: Optional[int] = None, step_mode: str = "m", backend: str = "torch",
                    device=None, chunk: Optional[int] = None, neg_rule: str = "qcfs",
                    levels: Optional[int] = None, metadata: Optional[Dict] = None) -> Dict:
    """Per-layer analysis (:mod:`sjconv.analysis`) of every method at T = max(steps) and the
    relative error at every T, on ``images``. Prints a per-layer table per method, writes
    ``PREFIX_analysis.json`` (with ``metadata``: how the run was made) and per-method PNGs
    ``PREFIX_<method>_{rates,cases,error_vs_T}.png``."""
    from . import analysis, analysis_plots

    images = images.to(device)
    report = {"images": int(images.shape[0]), "T": max(steps), "methods": [], **(metadata or {})}
    with _borrowed(ann, device) as ann:
        for method in methods:
            snn = _convert_method(ann, method, tau, step_mode, backend, neg_rule, levels)
            result = analysis.analyze(ann, snn, images, max(steps), chunk=chunk)
            errors = analysis.error_vs_T(ann, snn, images, steps, chunk=chunk)
            print(analysis_plots.format_layer_table(result))
            print()
            result["label"] = _row(method, snn, neg_rule)["label"]
            result["error_vs_T"] = errors
            report["methods"].append(result)
            analysis_plots.plot_analysis(result, errors, analysis_plots.method_prefix(prefix, method))
    write_json(f"{prefix}_analysis.json", report)
    return report
