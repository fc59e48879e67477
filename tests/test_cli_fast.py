"""``--help`` and every argument error that needs no torch to detect return before torch or
SpikingJelly is imported (they cost seconds to load). Each case runs a tool's entry point in a
fresh interpreter under ``-X importtime`` and checks, from that list, that neither was imported,
along with the exit status and the message."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = ["eval_cifar", "train_qcfs", "finetune_snn", "demo_digits"]
HEAVY = {"torch", "spikingjelly"}

#: the arguments each tool requires besides --out, so that the one under test is the only thing wrong
REQUIRED = {"eval_cifar": ["--arch", "vgg16", "--checkpoint", "x.pth"],
            "train_qcfs": ["--arch", "vgg16"],
            "finetune_snn": ["--arch", "vgg16", "--checkpoint", "x.pth"],
            "demo_digits": []}
#: an output path, for the tools that require one
OUT = {"train_qcfs": ["--out", "x.pth"], "finetune_snn": ["--out", "x.pth"]}

#: a value outside an option's choices, for argparse to refuse
CHOICE_ERRORS = {"eval_cifar": ["--arch", "nope"], "train_qcfs": ["--arch", "nope"],
                 "finetune_snn": ["--arch", "nope"], "demo_digits": ["--method", "nope"]}


def _run(tool, args, cwd):
    """Run ``examples/<tool>.py args``: ``(exit status, stdout, stderr lines, top-level modules imported)``."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-X", "importtime", os.path.join(ROOT, "examples", f"{tool}.py"),
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.splitlines()
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in lines if line.startswith("import time:")}
    message = [line for line in lines if not line.startswith("import time:")]
    return proc.returncode, proc.stdout, message, imported


def _assert_light(imported):
    assert "argparse" in imported            # the import list was read
    assert not imported & HEAVY, f"imported {sorted(imported & HEAVY)}"


@pytest.mark.parametrize("tool", TOOLS)
def test_help_imports_no_torch(tool, tmp_path):
    status, out, err, imported = _run(tool, ["--help"], tmp_path)
    assert status == 0 and out.startswith("usage:") and err == []
    _assert_light(imported)


@pytest.mark.parametrize("tool", TOOLS)
def test_argparse_choice_error_imports_no_torch(tool, tmp_path):
    option = CHOICE_ERRORS[tool][0]
    args = [a for a in REQUIRED[tool] if a not in ("--arch", "vgg16")] + OUT.get(tool, []) + CHOICE_ERRORS[tool]
    status, _, err, imported = _run(tool, args, tmp_path)
    assert status == 2 and err[0].startswith("usage:")
    assert err[-1].startswith(f"{tool}.py: error: argument {option}: invalid choice: 'nope'")
    _assert_light(imported)


def _one_line_error(tool, args, cwd):
    status, _, err, imported = _run(tool, REQUIRED[tool] + OUT.get(tool, []) + args, cwd)
    assert status == 2 and len(err) == 1 and err[0].startswith("error: "), err
    _assert_light(imported)
    return err[0]


@pytest.mark.parametrize("tool", ["eval_cifar", "demo_digits", "finetune_snn"])
def test_bad_tau_imports_no_torch(tool, tmp_path):
    line = _one_line_error(tool, ["--method", "srp", "--tau", "-1"], tmp_path)
    assert "--tau must be" in line


@pytest.mark.parametrize("tool", ["eval_cifar", "demo_digits", "finetune_snn"])
def test_snm_without_a_signed_method_imports_no_torch(tool, tmp_path):
    line = _one_line_error(tool, ["--method", "qcfs", "--neg-rule", "snm"], tmp_path)
    assert "negative-spike rule" in line and "signed" in line


@pytest.mark.parametrize("tool", ["eval_cifar", "demo_digits"])
def test_tau_without_a_prerun_method_imports_no_torch(tool, tmp_path):
    """--tau with only methods that have no pre-run would be ignored: it is refused instead."""
    line = _one_line_error(tool, ["--method", "qcfs", "neg", "--tau", "2"], tmp_path)
    assert "none of the methods (qcfs neg) has a pre-run" in line and "srp" in line


@pytest.mark.parametrize("tool", ["eval_cifar", "demo_digits"])
def test_levels_without_a_group_method_imports_no_torch(tool, tmp_path):
    """--levels with no group method would be ignored: it is refused instead; 0 members is an
    argument error."""
    line = _one_line_error(tool, ["--method", "qcfs", "cos", "--levels", "4"], tmp_path)
    assert "none of the methods (qcfs cos) has them" in line and "gn, gn+neg" in line
    status, _, err, imported = _run(tool, REQUIRED[tool] + ["--method", "gn", "--levels", "0"], tmp_path)
    assert status == 2 and "argument --levels: expected a number >= 1, got 0" in err[-1]
    _assert_light(imported)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
@pytest.mark.parametrize("tool", ["eval_cifar", "demo_digits"])
def test_folder_that_refuses_files_is_caught_even_for_root(tool, tmp_path):
    """/proc takes no new files, yet ``os.access`` says it is writable to root: the check creates
    a file to know, so the run stops before any work instead of failing when it writes."""
    status, _, err, imported = _run(tool, REQUIRED[tool] + ["--out", "/proc/sjconv-check/r.json"], tmp_path)
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith("error: cannot write /proc/sjconv-check/r.json")      # the demo adds .json
    assert err[0].endswith(": /proc is not writable; choose another output path")
    _assert_light(imported)


def test_write_check_leaves_nothing_behind(tmp_path):
    from sjconv.cli.common import check_writable

    check_writable(str(tmp_path / "r.json"), str(tmp_path / "new" / "folder" / "r.png"))
    assert list(tmp_path.iterdir()) == []        # the probe file is removed, no folder is made


@pytest.mark.parametrize("tool", TOOLS)
def test_unwritable_out_imports_no_torch(tool, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    status, _, err, imported = _run(tool, REQUIRED[tool] + ["--out", str(blocker / "out")], tmp_path)
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith("error: cannot write") and f"{blocker} is a file" in err[0]
    _assert_light(imported)


def test_other_pure_checks_import_no_torch(tmp_path):
    assert "--finetune-lr must be > 0" in _one_line_error("demo_digits", ["--finetune", "--finetune-lr", "0"],
                                                          tmp_path)
    assert "leave nothing to train" in _one_line_error(
        "finetune_snn", ["--freeze-weights", "--freeze-thresholds"], tmp_path)
    assert "--lam must be in [0, 1)" in _one_line_error("finetune_snn", ["--lam", "1"], tmp_path)


def test_import_sjconv_is_light_and_complete():
    """``import sjconv`` and the catalog load no torch; every public name still resolves, including
    ``from sjconv import *``, and ``sjconv.convert`` etc. stay the functions, whichever is imported first."""
    code = "\n".join([
        "import sys, sjconv, sjconv.catalog, sjconv.report, sjconv.torchrun, sjconv.cli.common",
        "assert not {'torch', 'spikingjelly'} & set(sys.modules), sorted(sys.modules)",
        "import sjconv.convert, sjconv.simulate, sjconv.finetune",
        "assert sjconv.convert is sys.modules['sjconv.convert'].convert",
        "assert sjconv.simulate is sys.modules['sjconv.simulate'].simulate",
        "assert sjconv.finetune is sys.modules['sjconv.finetune'].finetune",
        "ns = {}",
        "exec('from sjconv import *', ns)",
        "assert set(sjconv.__all__) <= set(ns) and set(sjconv.__all__) <= set(dir(sjconv))",
        "assert sjconv.models.vgg16 and sjconv.neurons.METHODS is sjconv.METHODS and sjconv.data.DATASETS",
        "assert sjconv.protocol is sys.modules['sjconv.neurons.protocol']",
        "print(sjconv.__version__)",
    ])
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0.1.0"


@pytest.mark.parametrize("flag", [["--chunk", "2"], ["--memory-budget", "1GB"]])
def test_single_step_mode_refuses_chunk_and_budget(flag, tmp_path):
    """'s' mode runs one step per call, so a chunk size or a budget (which picks one) would be
    ignored while the JSON records it: refused, naming the flag, as --tau without a pre-run is."""
    line = _one_line_error("eval_cifar", ["--step-mode", "s", *flag], tmp_path)
    assert f"{flag[0]} sets how many time steps" in line and "--step-mode m" in line


@pytest.mark.parametrize("tool", ["eval_cifar", "train_qcfs", "finetune_snn"])
def test_negative_workers_is_an_argument_error(tool, tmp_path):
    status, _, err, imported = _run(tool, REQUIRED[tool] + OUT.get(tool, []) + ["--workers", "-1"], tmp_path)
    assert status == 2 and err[-1].endswith("argument --workers: expected a number >= 0, got -1"), err
    _assert_light(imported)


def test_each_finetune_check_names_the_one_option_that_is_wrong(tmp_path):
    line = _one_line_error("finetune_snn", ["--lr", "-1"], tmp_path)
    assert line == "error: --lr must be > 0, got -1.0"
    line = _one_line_error("finetune_snn", ["--lam", "1"], tmp_path)
    assert line == "error: --lam must be in [0, 1), got 1.0"


def test_finetune_out_equal_to_its_checkpoint_is_refused(tmp_path):
    """finetune_snn --checkpoint a.pth --out a.pth would replace the source: refused before torch
    is imported, unless --overwrite."""
    args = ["--arch", "vgg16", "--checkpoint", "a.pth", "--out", "./a.pth"]
    status, _, err, imported = _run("finetune_snn", args, tmp_path)
    assert status == 2 and err == ["error: ./a.pth is both an input of this run and its output: choose another "
                                   "--out (or pass --overwrite to replace it)"]
    _assert_light(imported)


@pytest.mark.parametrize("tool, args, message", [
    ("train_qcfs", ["--lr", "-1"], "error: --lr must be > 0, got -1.0"),
    ("train_qcfs", ["--weight-decay", "-0.1"], "error: --weight-decay must be >= 0, got -0.1"),
    ("train_qcfs", ["--dropout", "1"], "error: --dropout must be in [0, 1), got 1.0"),
    ("demo_digits", ["--lr", "0"], "error: --lr must be > 0, got 0.0"),
    ("finetune_snn", ["--method", "srp", "--tau", "-2"], "error: --tau must be a whole number of pre-run steps >= 0, "
                                                          "got -2"),
    ("finetune_snn", ["--method", "neg", "--tau", "2"], "error: --tau sets pre-run steps, but --method neg has no "
                                                         "pre-run: drop --tau or choose a method with one (srp, "
                                                         "srp+neg, cos, cos+neg)"),
])
def test_training_numbers_are_checked_one_option_at_a_time(tool, args, message, tmp_path):
    assert _one_line_error(tool, args, tmp_path) == message
