"""Sphinx directives of the sjconv API reference, so that nothing in it is written twice:

- ``.. sjconv-modules::`` one section per module of ``sjconv_api_modules`` (``conf.py``), each an
  ``automodule`` of its docstrings;
- ``.. sjconv-names::`` a table of ``sjconv.__all__``, each name linked to where it is documented;
- ``.. sjconv-cli::`` one section per command of ``[project.scripts]`` in ``pyproject.toml``, holding
  the ``--help`` its argparse parser prints (the options cannot drift from the code).
"""

import contextlib
import importlib
import io
import os
import sys
import tomllib
import types

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

#: width of the --help text, whatever the terminal of the build
HELP_COLUMNS = "100"


def _parse(directive: SphinxDirective, lines) -> list:
    node = nodes.section()
    node.document = directive.state.document
    nested_parse_with_titles(directive.state, StringList(list(lines), source="<sjconv_docs>"), node)
    return node.children


def console_scripts(root: str) -> dict:
    """{command: "module:function"} of ``[project.scripts]`` in ``root``/pyproject.toml."""
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


def help_text(command: str, target: str) -> str:
    """What ``command --help`` prints: the entry point run with ``["--help"]``, its stdout kept."""
    module, function = target.split(":")
    entry = getattr(importlib.import_module(module), function)
    saved_argv, saved_columns = sys.argv, os.environ.get("COLUMNS")
    sys.argv, os.environ["COLUMNS"] = [command], HELP_COLUMNS
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            entry(["--help"])
    except SystemExit:
        pass
    finally:
        sys.argv = saved_argv
        if saved_columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved_columns
    if not out.getvalue().strip():
        raise RuntimeError(f"{command} --help printed nothing")
    return out.getvalue()


class Modules(SphinxDirective):
    def run(self):
        lines = []
        for module in self.config.sjconv_api_modules:
            lines += [module, "-" * len(module), "", f".. automodule:: {module}", ""]
        return _parse(self, lines)


class Names(SphinxDirective):
    def run(self):
        import sjconv

        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 30 70", "", "   * - name",
                 "     - documented as"]
        documented = self.config.sjconv_api_modules
        for name in sjconv.__all__:
            value = getattr(sjconv, name)
            if isinstance(value, types.ModuleType):   # the module, or the first of its documented submodules
                module = next(m for m in documented if m == value.__name__ or m.startswith(value.__name__ + "."))
                target = f":py:mod:`{module}`"
            elif getattr(value, "__module__", None) and getattr(value, "__qualname__", None):
                target = f":py:obj:`{value.__module__}.{value.__qualname__}`"
            else:   # data: the documented module that holds this very object
                module = next(m for m in documented if getattr(importlib.import_module(m), name, None) is value)
                target = f":py:data:`{module}.{name}`"
            lines += [f"   * - ``sjconv.{name}``", f"     - {target}"]
        return _parse(self, lines)


class Commands(SphinxDirective):
    def run(self):
        lines = []
        for command, target in console_scripts(self.config.sjconv_root).items():
            module = target.split(":")[0]
            script = os.path.join("examples", module.rsplit(".", 1)[-1] + ".py")
            same = (f" and from a checkout as ``python {script}``"
                    if os.path.exists(os.path.join(self.config.sjconv_root, script)) else "")
            lines += [f"``{command}``", "-" * (len(command) + 4), "",
                      f"Installed with sjconv{same}; the code is :py:mod:`{module}`.", "",
                      ".. code-block:: text", ""]
            lines += ["    " + line if line.strip() else "" for line in help_text(command, target).splitlines()]
            lines += [""]
        return _parse(self, lines)


def setup(app):
    app.add_config_value("sjconv_api_modules", [], "env")
    app.add_config_value("sjconv_root", "", "env")   # the repository root (conf.py sets it)
    app.add_config_value("sjconv_internal_modules", [], "env")   # see conf.py
    app.add_directive("sjconv-modules", Modules)
    app.add_directive("sjconv-names", Names)
    app.add_directive("sjconv-cli", Commands)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
