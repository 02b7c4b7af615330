"""The package's import graph, read from the source with ``ast`` (nothing is imported).

Every module under ``resnet_keras/`` counts, subpackages included, with its
module-level and function-level imports: ``import resnet_keras.x``,
``from resnet_keras import x``, ``from resnet_keras.x import y`` and relative
imports. The graph has no cycle; no module uses another module's private
names (``from resnet_keras.x import _name`` or ``x_lib._name``; a private
*module* such as ``resnet_keras._startup`` may be imported); and the model
side never reaches training code.
"""
import ast
import os

import pytest

PACKAGE = "resnet_keras"
ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), PACKAGE)
# The model side: what `import resnet_keras` and a model build need.
MODEL_SIDE = ("specs", "layers", "models", "segmentation", "weights")
# Training, tuning, data, export, experiments and the command line.
TRAINING = ("train", "training", "tuning", "data", "export", "formats", "tf_serving",
            "results", "benchmark", "experiments", "rundir", "cli")


def discover(root=ROOT, package=PACKAGE):
    """``{module name: source path}`` of every module below ``root``."""
    modules = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        parts = [package] + os.path.relpath(folder, root).split(os.sep)
        parts = [p for p in parts if p != "."]
        for file in sorted(files):
            if file.endswith(".py"):
                stem = file[:-3]
                name = ".".join(parts if stem == "__init__" else parts + [stem])
                modules[name] = os.path.join(folder, file)
    return modules


class ModuleImports:
    """The package-internal imports of one module, parsed from its source."""

    def __init__(self, name, path, modules):
        self.name, self.modules = name, modules
        self.is_package = os.path.basename(path) == "__init__.py"
        with open(path, encoding="utf-8") as f:
            self.tree = ast.parse(f.read(), filename=path)
        self.edges = {}        # imported module -> first line
        self.private = []      # (line, "text") of private names used across modules
        self.aliases = {}      # local name -> package module it stands for
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                self._import(node)
            elif isinstance(node, ast.ImportFrom):
                self._import_from(node)
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Attribute):
                self._attribute(node)

    def _edge(self, module, line):
        if module in self.modules and module != self.name:
            self.edges.setdefault(module, line)

    def _import(self, node):
        for alias in node.names:
            if alias.name.split(".")[0] != PACKAGE:
                continue
            self._edge(alias.name, node.lineno)
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                self.aliases[PACKAGE] = PACKAGE

    def _base(self, node):
        """The absolute module a ``from ... import`` reads from."""
        if not node.level:
            return node.module
        package = self.name.split(".")
        if not self.is_package:
            package = package[:-1]
        package = package[:len(package) - (node.level - 1)]
        return ".".join(package + ([node.module] if node.module else []))

    def _import_from(self, node):
        base = self._base(node)
        if not base or base.split(".")[0] != PACKAGE:
            return
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            if submodule in self.modules:  # a module, private or not, may be imported
                self._edge(submodule, node.lineno)
                self.aliases[alias.asname or alias.name] = submodule
                continue
            self._edge(base, node.lineno)
            if _is_private(alias.name) and base != self.name:
                self.private.append((node.lineno, f"from {base} import {alias.name}"))

    def _attribute(self, node):
        chain, value = [node.attr], node.value
        while isinstance(value, ast.Attribute):
            chain.insert(0, value.attr)
            value = value.value
        if not isinstance(value, ast.Name) or value.id not in self.aliases:
            return
        module, names = self.aliases[value.id], list(chain)
        while names and f"{module}.{names[0]}" in self.modules:
            module = f"{module}.{names.pop(0)}"
        if names and _is_private(names[0]) and module != self.name:
            self.private.append((node.lineno, f"{value.id}.{'.'.join(chain)} "
                                              f"(private name of {module})"))


def _is_private(name):
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def import_graph(root=ROOT, package=PACKAGE):
    """``{module: ModuleImports}`` for every module of the package."""
    modules = discover(root, package)
    return {name: ModuleImports(name, path, modules) for name, path in modules.items()}


def find_cycles(edges):
    """One import cycle (a list of modules, first == last) per group of
    modules that import each other, or []."""
    cycles, done = [], set()
    for module in sorted(edges):
        if module in done:
            continue
        group = {m for m in reachable(edges, module) if module in reachable(edges, m)}
        done |= group
        if len(group) > 1:
            cycles.append(_cycle_through(module, {m: edges[m] & group for m in group}))
    return cycles


def _cycle_through(start, edges):
    """A shortest path start -> ... -> start (breadth first)."""
    previous, todo = {}, [start]
    while todo:
        module = todo.pop(0)
        for target in sorted(edges[module]):
            if target == start:
                path = [module]
                while path[0] != start:
                    path.insert(0, previous[path[0]])
                return path + [start]
            if target not in previous:
                previous[target] = module
                todo.append(target)
    raise AssertionError(f"no cycle through {start}")


def reachable(edges, start):
    """Every module that importing ``start`` can import, ``start`` included."""
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(edges.get(module, ()))
    return seen


def _training(module):
    parts = module.split(".")
    return len(parts) > 1 and parts[1] in TRAINING


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_package_is_found(graph):
    assert {f"{PACKAGE}.{m}" for m in MODEL_SIDE} | {PACKAGE} <= set(graph)


def test_no_import_cycle(graph):
    cycles = find_cycles({name: set(m.edges) for name, m in graph.items()})
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_names_across_modules(graph):
    found = [f"{graph[name].modules[name]}:{line}: {text}"
             for name in sorted(graph) for line, text in graph[name].private]
    assert not found, "private names used across modules:\n" + "\n".join(found)


@pytest.mark.parametrize("module", MODEL_SIDE)
def test_model_side_never_imports_training_code(graph, module):
    edges = {name: set(m.edges) for name, m in graph.items()}
    reached = reachable(edges, f"{PACKAGE}.{module}")
    bad = sorted(m for m in reached if _training(m))
    assert not bad, f"{PACKAGE}.{module} reaches training code: {', '.join(bad)}"


def test_the_checks_see_cycles_private_names_and_relative_imports(tmp_path):
    """The checks on a small package: a function-level cycle, a relative
    import, private names by ``from`` and by attribute, a private module."""
    pkg = tmp_path / "resnet_keras"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from resnet_keras import _boot\n")
    (pkg / "_boot.py").write_text("X = 1\n")
    (pkg / "a.py").write_text("from resnet_keras import b as b_lib\n"
                              "def f():\n    return b_lib._hidden()\n")
    (pkg / "b.py").write_text("def g():\n    from .sub.c import _secret\n    return _secret\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("import resnet_keras.a\n_secret = 1\n"
                                      "from .. import train\n")
    (pkg / "train.py").write_text("")
    graph = import_graph(str(pkg))
    edges = {name: set(m.edges) for name, m in graph.items()}
    (cycle,) = find_cycles(edges)
    assert cycle == ["resnet_keras.a", "resnet_keras.b", "resnet_keras.sub.c", "resnet_keras.a"]
    assert edges["resnet_keras"] == {"resnet_keras._boot"} and not graph["resnet_keras"].private
    assert [t for _, t in graph["resnet_keras.a"].private] == [
        "b_lib._hidden (private name of resnet_keras.b)"]
    assert [t for _, t in graph["resnet_keras.b"].private] == [
        "from resnet_keras.sub.c import _secret"]
    assert "resnet_keras.train" in reachable(edges, "resnet_keras.a")
