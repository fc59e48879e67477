"""Sphinx configuration of the sjconv API reference (``docs/api``).

Build it with ``python -m sphinx -W -b html docs/api docs/_build/api`` (``tests/test_docs.py`` does,
warnings as errors). The reference is generated from the docstrings (autodoc + napoleon, as in
PyTorch and SpikingJelly); the modules it covers are listed once, in ``sjconv_api_modules``, and
the command-line options are read from the tools' own argparse parsers (``_ext/sjconv_docs.py``).
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)              # the sjconv of this checkout, installed or not
sys.path.insert(0, os.path.join(HERE, "_ext"))

import sjconv  # noqa: E402

project = "sjconv"
author = "the sjconv authors"
copyright = "the sjconv authors, MIT licence"
release = version = sjconv.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode", "sjconv_docs"]

#: the modules of the reference, one section each, in this order. ADD A NEW MODULE HERE (one line).
sjconv_api_modules = [
    "sjconv.convert",
    "sjconv.simulate",
    "sjconv.checkpoint",
    "sjconv.finetune",
    "sjconv.memory",
    "sjconv.analysis",
    "sjconv.analysis_plots",
    "sjconv.neurons.nodes",
    "sjconv.neurons.methods",
    "sjconv.neurons.protocol",
    "sjconv.neurons.fold",
    "sjconv.neurons.rules",
    "sjconv.neurons.kernels.registry",
    "sjconv.qcfs",
    "sjconv.activations",
    "sjconv.modelcheck",
    "sjconv.forward_rule",
    "sjconv.models",
    "sjconv.data",
    "sjconv.ff",
    "sjconv.distributed",
    "sjconv.experiment",
    "sjconv.train",
    "sjconv.report",
    "sjconv.errors",
    "sjconv.catalog",
]

#: the repository root, whose pyproject.toml lists the commands of the CLI page
sjconv_root = ROOT

autodoc_default_options = {"members": True, "show-inheritance": True, "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_inherit_docstrings = False    # torch.nn.Module's own docstrings are not sjconv's
napoleon_google_docstring = True
napoleon_numpy_docstring = True
suppress_warnings = []

smartquotes = False                   # docstrings hold code: keep its quotes straight
html_theme = "alabaster"              # Sphinx's built-in theme: nothing more to install
html_title = f"sjconv {version} API reference"
exclude_patterns = ["_build"]

#: modules left out of the reference on purpose (helpers of the tools, or re-exports of modules above);
#: tests/test_docs.py asks every other top-level module of sjconv to appear in sjconv_api_modules
sjconv_internal_modules = ["sjconv.cli", "sjconv.guards", "sjconv.torchrun"]
