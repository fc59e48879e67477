"""Pieces shared by the command-line tools: argument types, device checks, error handling.

The options and their checks read only :mod:`sjconv.catalog`, so a tool prints ``--help`` and
refuses bad arguments without importing torch; the functions that need torch (devices, memory
budgets, run metadata, analysis) import it when they are called, after those checks.
"""

import argparse
import sys
from typing import TYPE_CHECKING, Callable, List, Optional

from ..catalog import BACKEND_TABLE, BACKENDS, METHODS, NEG_RULES, PRERUNS
from ..errors import ConfigError, SjconvError

if TYPE_CHECKING:
    import torch

DEFAULT_STEPS = [1, 2, 4, 8, 16, 32, 64]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """The help layout of every tool: each option's default once, written by this class, unless
    the help text states it itself (``(default: ...)``, when the value alone would not explain
    it) or there is nothing to state (a default of None or False: a flag, or "not given").
    Lists are shown as they are typed: ``(default: 1 2 4)``."""

    def _get_help_string(self, action):
        text, default = action.help or "", action.default
        if ("(default" in text or default is None or default is False or default is argparse.SUPPRESS
                or not action.option_strings):
            return action.help
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def _whole_number_at_least(text: str, minimum: int) -> int:
    """``text`` as an int >= ``minimum``, else the argparse error naming what was expected."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """A count of at least 1 (steps, epochs, batch size, ...)."""
    return _whole_number_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """A count that may be 0, e.g. ``--workers`` (0: load data in the main process); a negative
    one is an argument error here, not a DataLoader traceback once torch has loaded."""
    return _whole_number_at_least(text, 0)


def add_simulation_args(parser: argparse.ArgumentParser, default_methods=("qcfs",)) -> None:
    """Options of every tool that converts and simulates: methods, T, step mode, backend, device."""
    parser.add_argument("--method", nargs="+", default=list(default_methods), choices=list(METHODS),
                        help="conversion methods, one table row each")
    prerun_methods = [m for m, r in METHODS.items() if r.prerun]
    defaults = ", ".join(f"{k.name} {k.default_steps}" for k in PRERUNS.values())
    parser.add_argument("--tau", default=None, metavar="STEPS",
                        help=f"pre-run steps of {', '.join(prerun_methods)} (τ for SRP, ρ for COS), not counted "
                             f"in T (default: each method's own: {defaults})")
    parser.add_argument("--neg-rule", choices=list(NEG_RULES), default="qcfs",
                        help="negative-spike rule of the signed methods")
    group_methods = [m for m, r in METHODS.items() if r.group]
    parser.add_argument("--levels", type=positive_int, default=None, metavar="M",
                        help=f"members per group neuron of {', '.join(group_methods)} (default: each QCFS "
                             "layer's L, which makes T = 1 equal the ANN)")
    parser.add_argument("-T", "--steps", nargs="+", type=positive_int, default=DEFAULT_STEPS,
                        help="time steps to report; one run of max(T) per batch")
    parser.add_argument("--step-mode", choices=["m", "s"], default="m",
                        help="'m': T folded into the batch; 's': one step per call")
    parser.add_argument("--chunk", type=positive_int, default=None,
                        help="in 'm' mode, simulate at most this many steps per call (default: all)")
    parser.add_argument("--memory-budget", default=None, metavar="SIZE",
                        help="e.g. 24GB (a bare number is GB): multi-step mode simulates the largest chunk of "
                             "steps that fits, and on CUDA the process is capped at SIZE (default: no budget)")
    parser.add_argument("--backend", choices=list(BACKENDS), default="torch",
                        help="neuron backend: " + "; ".join(f"{b.name}: {b.summary}" for b in BACKEND_TABLE.values()))
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="test images per simulated batch")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--analyze", action="store_true",
                        help="also write per-layer firing rates, unevenness-error cases, errors vs T and "
                             "operation counts (JSON + PNG) for every method")
    parser.add_argument("--analyze-images", type=positive_int, default=64,
                        help="test images used by --analyze")


def check_simulation_args(args) -> None:
    """Check the simulation options together, before any data is loaded or model trained;
    ``--tau`` becomes an int (or None). Raises :class:`ConfigError` naming the flag."""
    if args.tau is not None:
        try:
            tau = int(args.tau)
        except ValueError:
            tau = -1
        if tau < 0:
            raise ConfigError(f"--tau must be a whole number of pre-run steps >= 0, got '{args.tau}'")
        args.tau = tau
    if args.tau is not None and not any(METHODS[m].prerun for m in args.method):
        with_prerun = ", ".join(m for m, r in METHODS.items() if r.prerun)
        raise ConfigError(f"--tau sets pre-run steps, but none of the methods ({' '.join(args.method)}) has a "
                          f"pre-run: add a method with one ({with_prerun}) or drop --tau")
    if getattr(args, "levels", None) is not None and not any(METHODS[m].group for m in args.method):
        grouped = ", ".join(m for m, r in METHODS.items() if r.group)
        raise ConfigError(f"--levels sets the members of group neurons, but none of the methods "
                          f"({' '.join(args.method)}) has them: add a group method ({grouped}) or drop --levels")
    if args.step_mode == "s":   # single-step mode runs one step per call: a chunk size would be ignored
        for flag, value in (("--chunk", args.chunk), ("--memory-budget", args.memory_budget)):
            if value is not None:
                raise ConfigError(f"{flag} sets how many time steps one multi-step call runs, but --step-mode s "
                                  f"runs one step per call: drop {flag} or use --step-mode m")
    if args.neg_rule != "qcfs" and not any(METHODS[m].signed for m in args.method):
        signed = ", ".join(m for m, r in METHODS.items() if r.signed)
        raise ConfigError(f"--neg-rule {args.neg_rule} is a negative-spike rule, but none of the methods "
                          f"({' '.join(args.method)}) is signed: add a signed method ({signed})")


def check_writable(*paths: str, inputs=(), keep=None, overwrite: bool = False) -> None:
    """Every output path can be written, checked before any work starts so that a bad ``--out``
    costs nothing: the path is not a folder, and the nearest existing folder on its way (outputs
    create missing folders) is writable. An existing *file* on the way (``--out results.json/r``)
    is an error too, since no folder can be created there, whoever runs the tool.

    Work is not lost either, unless ``overwrite`` (``--overwrite``) says so: no output may be one
    of the ``inputs`` the run reads (``--out`` equal to ``--checkpoint``), and no file in ``keep``
    (a mapping of path to what to do instead) may exist already (a trained checkpoint)."""
    import os

    for path in paths:
        if os.path.isdir(path):
            raise SjconvError(f"cannot write {path}: it is a folder; choose another output path")
        above = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(above) and os.path.dirname(above) != above:
            above = os.path.dirname(above)
        if not os.path.isdir(above):
            raise SjconvError(f"cannot write {path}: {above} is a file, not a folder; choose another output path")
        if not _can_create_in(above):
            raise SjconvError(f"cannot write {path}: {above} is not writable; choose another output path")
    if overwrite:
        return
    for path in paths:
        for source in inputs:
            if os.path.abspath(path) == os.path.abspath(source) or (
                    os.path.exists(path) and os.path.exists(source) and os.path.samefile(path, source)):
                raise SjconvError(f"{path} is both an input of this run and its output: choose another --out "
                                  "(or pass --overwrite to replace it)")
    for path, instead in (keep or {}).items():
        if os.path.exists(path):
            raise SjconvError(f"{path} exists and would be overwritten: {instead}, or pass --overwrite")


def _can_create_in(folder: str) -> bool:
    """Whether a file can be created in ``folder``, found by creating (and removing) one:
    ``os.access`` answers yes to root for every folder, /proc and read-only mounts included."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".sjconv-write-check-"):
            return True
    except OSError:
        return False


def add_overwrite_arg(parser: argparse.ArgumentParser, what: str) -> None:
    """``--overwrite``: let the run replace ``what`` (see :func:`check_writable`)."""
    parser.add_argument("--overwrite", action="store_true", help=f"replace {what} (refused without it)")


def analysis_outputs(args, prefix: str) -> List[str]:
    """What ``--analyze`` writes, for :func:`check_writable`: its JSON (the per-method PNGs go to
    the same folder), or nothing without ``--analyze``."""
    return [f"{prefix}_analysis.json"] if args.analyze else []


def resolve_device(name: Optional[str], backend: str = "torch") -> "torch.device":
    """The device to run on; clear errors for CUDA, or a CUDA backend, asked on a machine without it."""
    import torch

    from ..neurons import check_backend, get_backend

    needs_cuda = get_backend(backend).needs_cuda
    if needs_cuda and not torch.cuda.is_available():
        raise SjconvError(f"--backend {backend} needs a CUDA GPU and none is visible: use --backend torch")
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SjconvError(f"unknown device '{name}': use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SjconvError(f"--device {name} asked but no CUDA GPU is visible: use --device cpu")
    if needs_cuda and device.type != "cuda":
        raise SjconvError(f"--backend {backend} runs on the GPU: use --device cuda (or --backend torch)")
    check_backend(backend)   # before any data is loaded: e.g. a missing CuPy is a one-line error
    return device


def check_levels(checkpoint: str, L: int) -> None:
    """``--L`` against the L the checkpoint was trained with, where that is known: a checkpoint
    written by ``train_qcfs`` has its training state beside it (``OUT.state.pth``), which records
    the run's settings. A wrong L would silently change every figure (the T=0 column first), so
    a mismatch is refused. An official checkpoint holds only weights and thresholds, so there L
    cannot be checked (the README says to pass the one the checkpoint was trained with)."""
    import os

    from ..report import training_state_path
    from ..train import read_training_state

    state_path = training_state_path(checkpoint)
    if not os.path.isfile(state_path):
        return
    try:
        recorded = read_training_state(state_path).get("settings") or {}
    except ConfigError:   # a file of that name that is not a training state says nothing about L
        return
    if "L" in recorded and recorded["L"] != L:
        raise ConfigError(f"--L {L}, but {checkpoint} was trained with --L {recorded['L']} (as its training state "
                          f"{state_path} records): pass --L {recorded['L']}")


def apply_memory_budget(args, device: "torch.device"):
    """Validate ``--memory-budget`` and, on CUDA, cap the process at it."""
    if args.memory_budget is None:
        return None
    from ..memory import enforce_budget, parse_memory

    budget = parse_memory(args.memory_budget)
    enforce_budget(budget, device)
    return budget


def analyze_if_asked(args, ann, loader, steps, prefix: str, device, results: dict) -> None:
    """``--analyze``: per-layer analysis of every requested method on the first test images,
    its JSON carrying the run's metadata (:data:`RUN_METADATA` of ``results``). Then, with or
    without ``--analyze``, the analysis files of an earlier run with this prefix that this run
    did not write are removed (:func:`remove_stale_analysis`): they would describe other methods."""
    from ..report import written_files

    before = len(written_files())
    if args.analyze:
        from ..experiment import analyze_methods, first_images

        analyze_methods(ann, first_images(loader, args.analyze_images), args.method, steps, prefix, tau=args.tau,
                        step_mode=args.step_mode, backend=args.backend, device=device, chunk=args.chunk,
                        neg_rule=args.neg_rule, levels=getattr(args, "levels", None),
                        metadata={k: results[k] for k in RUN_METADATA if k in results})
        print(f"wrote {prefix}_analysis.json and per-method plots {prefix}_<method>_*.png", file=sys.stderr)
    remove_stale_analysis(prefix, written_files()[before:])


def remove_stale_analysis(prefix: str, written) -> List[str]:
    """Remove the ``--analyze`` files of ``prefix`` (exactly the names sjconv writes there, for
    any method: :func:`sjconv.analysis_plots.analysis_files`) that exist but are not in
    ``written``, this run's files: left from an earlier run, they would sit beside the new
    results as if they belonged to them. Says on stderr what it removed; returns those paths."""
    import os

    from ..analysis_plots import analysis_files

    keep = {os.path.abspath(p) for p in written}
    stale = [p for p in analysis_files(prefix, METHODS) if os.path.isfile(p) and os.path.abspath(p) not in keep]
    for path in stale:
        os.remove(path)
    if stale:
        print(f"removed {len(stale)} analysis file(s) of an earlier run with this output prefix: {', '.join(stale)}",
              file=sys.stderr)
    return stale


#: the keys of :func:`run_metadata`, copied from a results dict into the analysis JSON
RUN_METADATA = ("versions", "command", "started_utc", "batch_size", "neg_rule")


def run_metadata(args, argv: Optional[List[str]] = None) -> dict:
    """What every tool records beside its results, so a JSON file says how it was made: versions
    of sjconv, torch and SpikingJelly, the command line (``sys.argv``; when ``main`` was called
    with an explicit ``argv``, the program name followed by that list), the UTC start time (ISO
    8601), the batch size and the negative-spike rule (the tool's options, where it has them)."""
    import datetime
    import importlib.metadata

    import torch

    from .. import __version__

    try:
        spikingjelly = importlib.metadata.version("spikingjelly")
    except importlib.metadata.PackageNotFoundError:   # e.g. a source checkout on PYTHONPATH
        import spikingjelly as sj

        spikingjelly = getattr(sj, "__version__", "unknown")
    meta = {"versions": {"sjconv": __version__, "torch": torch.__version__, "spikingjelly": spikingjelly},
            "command": list(sys.argv) if argv is None else sys.argv[:1] + list(argv),
            "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    for option in ("batch_size", "neg_rule"):
        if hasattr(args, option):
            meta[option] = getattr(args, option)
    return meta


def report_chunks(args, results: dict) -> None:
    """Under ``--memory-budget``, say once on stderr how many time steps per call the budget
    allowed (per method where they differ), as recorded in each row's ``chunk_used``."""
    if args.memory_budget is None:
        return
    chunks = {row["label"]: row["chunk_used"] for row in results["methods"]}
    shown = {"all" if c is None else c for c in chunks.values()}
    if len(shown) == 1:
        detail = f"{shown.pop()} time steps per call"
    else:
        detail = "time steps per call: " + ", ".join(f"{'all' if c is None else c} ({label})"
                                                     for label, c in chunks.items())
    print(f"memory budget {args.memory_budget}: {detail}", file=sys.stderr)


def run_cli(main: Callable[[Optional[List[str]]], int], argv: Optional[List[str]] = None) -> int:
    """Run ``main``; user errors become one line on stderr and exit status 2, not a traceback.
    On Ctrl-C (exit 130) the line says which files this run wrote, if any (they are complete:
    every output is written atomically, see :func:`sjconv.report.written_files`)."""
    from ..report import written_files

    already = len(written_files())
    try:
        return main(argv)
    except SjconvError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except Exception as exc:
        where = _out_of_memory(exc)
        if where is None:
            raise
        print(OUT_OF_MEMORY[where], file=sys.stderr)
    except KeyboardInterrupt:
        wrote = written_files()[already:]
        print(f"interrupted: wrote {', '.join(dict.fromkeys(wrote))}" if wrote else
              "interrupted: nothing was written", file=sys.stderr)
        return 130
    return 2


#: the one line printed for running out of memory, by where (see :func:`_out_of_memory`)
OUT_OF_MEMORY = {
    "GPU": "error: out of GPU memory: pass --memory-budget with your GPU's size (e.g. 24GB), or "
           "--chunk N, --step-mode s or a lower --batch-size",
    "CPU": "error: out of CPU memory: lower --batch-size, or pass --chunk N or --step-mode s (fewer time "
           "steps per call), or --memory-budget with the memory you can spare (e.g. 8GB)",
}

#: how torch's CPU allocator words a failed allocation (a plain RuntimeError, unlike CUDA's)
_CPU_OOM = "DefaultCPUAllocator: can't allocate memory"


def _out_of_memory(exc: Exception) -> Optional[str]:
    """``"GPU"`` when ``exc`` is torch's (CUDA) out-of-memory error, ``"CPU"`` when it is the CPU
    allocator's failure (a RuntimeError with its own wording), else None. Only torch raises
    them, so without torch imported neither can be one (and the check does not import torch)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    if isinstance(exc, torch.OutOfMemoryError):
        return "GPU"
    if isinstance(exc, RuntimeError) and _CPU_OOM in str(exc):
        return "CPU"
    return None
