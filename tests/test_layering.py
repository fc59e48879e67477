"""The package's import graph, read from the source (ast): no circle anywhere in sjconv, and the
neuron stack imports only downwards (docs/protocols.md#layout). Imports inside functions count too:
one written there to dodge a circle would still be a circle."""

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "sjconv")

#: the neuron stack, bottom to top: a module may import its own layer and the ones below it
LAYERS = [
    {"rules", "records", "modes", "no_compile"},
    {"kernels"},
    {"dynamics"},
    {"nodes"},
    {"methods", "fold"},
    {"protocol"},
]

#: what the neuron stack may import from the rest of sjconv (torch-free facts and guards)
BELOW_NEURONS = {"sjconv", "sjconv.catalog", "sjconv.errors", "sjconv.guards"}


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph():
    """{module: {imported sjconv modules}} with every import statement, at any depth; ``from
    package import submodule`` is an edge to the submodule only."""
    modules = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                modules[_module_name(path)] = path
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        is_package = path.endswith("__init__.py")
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(module, is_package, node)
                submodules = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules}
                found |= submodules
                if len(submodules) < len(node.names):   # a name defined by the module itself
                    found.add(target)
        graph[module] = {t for t in found if t in modules and t != module}
    return graph


def _cycle(graph):
    """One circle of ``graph`` as a list of modules, or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def _layer(module: str):
    parts = module.split(".")
    if parts[:2] != ["sjconv", "neurons"] or len(parts) < 3:
        return None
    for index, names in enumerate(LAYERS):
        if parts[2] in names:
            return index
    raise AssertionError(f"{module} is in no layer of the neuron stack: add it to LAYERS")


def test_no_import_circle_in_the_package():
    graph = import_graph()
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_neuron_stack_imports_only_downwards():
    graph = import_graph()
    wrong = []
    for module, targets in graph.items():
        layer = _layer(module)
        if layer is None:
            continue
        for target in targets:
            if target == "sjconv.neurons" or target.startswith("sjconv.neurons."):
                other = _layer(target) if target != "sjconv.neurons" else len(LAYERS)
                if other > layer:
                    wrong.append(f"{module} -> {target}")
            elif target not in BELOW_NEURONS:
                wrong.append(f"{module} -> {target} (outside the stack)")
    assert not wrong, wrong


def test_the_checks_find_a_circle_and_an_upward_import():
    """The checks can fail: a circle and an upward edge added to the real graph are reported."""
    graph = import_graph()
    graph["sjconv.neurons.rules"] = graph["sjconv.neurons.rules"] | {"sjconv.neurons.protocol"}
    assert _cycle(graph) is not None
    assert _layer("sjconv.neurons.protocol") > _layer("sjconv.neurons.rules")
    with pytest.raises(AssertionError):
        _layer("sjconv.neurons.unplaced")


def test_the_cuda_source_is_package_data():
    """The kernels' CUDA source is a file inside the package, declared as package data, so a
    non-editable install carries it (tests/host_kernel.py and the CuPy build read the same file)."""
    import tomllib

    from sjconv.neurons.kernels import cupy_backend

    assert os.path.dirname(cupy_backend.SOURCE_FILE) == os.path.join(PACKAGE, "neurons", "kernels")
    assert "sjconv_neuron" in cupy_backend.kernel_source()
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        data = tomllib.load(f)["tool"]["setuptools"]["package-data"]
    assert "*.cu" in data["sjconv.neurons.kernels"]
