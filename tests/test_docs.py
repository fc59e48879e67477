"""The docs cannot rot: the API reference builds with warnings as errors and holds the public API
(``sjconv.__all__``, the neuron nodes, every module of the package, every option of every command);
links between the README and the docs pages resolve; the README stays short.

The build takes a few seconds (one Sphinx run in a subprocess, shared by the tests of this file)."""

import argparse
import html
import importlib
import os
import pkgutil
import re
import runpy
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API = os.path.join(ROOT, "docs", "api")
sys.path.insert(0, os.path.join(API, "_ext"))

from sjconv_docs import console_scripts  # noqa: E402

#: README.md at most a third of its 31 KB of before (issue #30)
README_MAX_BYTES = 11 * 1024


def _text(path):
    """The visible text of an HTML page."""
    return html.unescape(re.sub(r"<[^>]+>", "", open(path, encoding="utf-8").read()))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("api")
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", API, str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _config():
    return runpy.run_path(os.path.join(API, "conf.py"))


def test_public_names_and_nodes_are_documented(built):
    import sjconv

    package = _text(built / "package.html")
    assert [n for n in sjconv.__all__ if f"sjconv.{n}" not in package] == []
    links = re.findall(r'href="modules.html#([^"]+)"', open(built / "package.html", encoding="utf-8").read())
    assert len(links) == len(sjconv.__all__)      # each name links to where it is documented
    modules = open(built / "modules.html", encoding="utf-8").read()
    nodes = {record.node.__name__ for record in sjconv.METHODS.values()}
    assert {"ConvertedIFNode", "SignedIFNode", "GroupNode", "SignedGroupNode"} <= nodes
    # each node class, each function of the package: an object described in the reference
    anchors = set(re.findall(r'<dt class="sig sig-object py" id="([^"]+)"', modules))
    missing = [n for n in nodes if f"sjconv.neurons.nodes.{n}" not in anchors]
    for name in sjconv.__all__:
        value = getattr(sjconv, name)
        if callable(value) and hasattr(value, "__qualname__"):
            missing += [] if f"{value.__module__}.{value.__qualname__}" in anchors else [name]
    assert missing == []


def test_every_module_is_in_the_reference_or_named_internal():
    """A new module (sjconv.ff, ...) needs one line in sjconv_api_modules of docs/api/conf.py."""
    import sjconv

    config = _config()
    listed = config["sjconv_api_modules"] + config["sjconv_internal_modules"]
    for name in listed:
        importlib.import_module(name)
    top = [f"sjconv.{m.name}" for m in pkgutil.iter_modules(sjconv.__path__) if not m.name.startswith("_")]
    assert [m for m in top if not any(e == m or e.startswith(m + ".") for e in listed)] == []


class _Parser(BaseException):
    """Carries a tool's parser out of its entry point, before it parses anything."""


def _options(target):
    module, function = target.split(":")
    entry = getattr(importlib.import_module(module), function)

    def grab(self, *args, **kwargs):
        raise _Parser(self)

    real = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = grab
    try:
        entry([])
    except _Parser as caught:
        parser = caught.args[0]
    finally:
        argparse.ArgumentParser.parse_args = real
    return [s for action in parser._actions for s in action.option_strings]


def test_every_command_and_option_is_documented(built):
    page = _text(built / "cli.html")
    scripts = console_scripts(ROOT)
    assert {"sjconv-eval-cifar", "sjconv-train-qcfs", "sjconv-demo-digits", "sjconv-finetune-snn"} <= set(scripts)
    missing = []
    for command, target in scripts.items():
        start = page.index(f"usage: {command}")
        end = page.find("usage: ", start + 1)
        section = page[start:end if end > 0 else None]
        options = _options(target)
        assert "--help" in options and len(options) > 5
        missing += [f"{command} {o}" for o in options if not re.search(re.escape(o) + r"\b", section)]
    assert missing == []


#: a relative link in markdown: [text](path) or [text](path#anchor); web links and pure anchors left out
LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)#\s]+)(?:#([^)\s]+))?\)")


def _markdown_pages():
    pages = [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "CHANGELOG.md")]
    for folder, _, files in os.walk(os.path.join(ROOT, "docs")):
        if "_build" not in folder:
            pages += [os.path.join(folder, f) for f in files if f.endswith(".md")]
    return pages


def _anchors(path):
    """Explicit ``<a id>`` anchors and GitHub's heading anchors of a markdown page."""
    text = open(path, encoding="utf-8").read()
    found = set(re.findall(r'<a id="([^"]+)"></a>', text))
    for heading in re.findall(r"^#+ (.+)$", text, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_links_of_readme_and_guide_resolve():
    wrong = []
    for page in _markdown_pages():
        text = open(page, encoding="utf-8").read()
        for target, anchor in LINK.findall(text):
            path = os.path.normpath(os.path.join(os.path.dirname(page), target))
            if not os.path.exists(path):
                wrong.append(f"{os.path.relpath(page, ROOT)}: {target}")
            elif anchor and path.endswith(".md") and anchor not in _anchors(path):
                wrong.append(f"{os.path.relpath(page, ROOT)}: {target}#{anchor}")
    assert wrong == []


def test_readme_is_short_and_its_setup_block_creates_the_venv():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert len(readme.encode()) <= README_MAX_BYTES
    first_block = re.search(r"```bash\n(.*?)```", readme, flags=re.S).group(1)
    assert "-m venv .venv" in first_block and "source .venv/bin/activate" in first_block
    assert 'pip install -e ".[dev]"' in first_block and "python -m pytest -q" in first_block


def test_version_is_written_once():
    """pyproject.toml reads the version from sjconv/__init__.py; CHANGELOG.md has a section for it."""
    import tomllib

    import sjconv

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    assert "version" not in project and "version" in project["dynamic"]
    changelog = open(os.path.join(ROOT, "CHANGELOG.md"), encoding="utf-8").read()
    assert f"## [{sjconv.__version__}]" in changelog
