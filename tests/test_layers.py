"""The house rules of imports, checked on every run (docs/architecture.md, "Layers").

Every module of ``toolchain/`` (``edgetl``), ``calibration/`` and ``edge_runtime/`` is parsed (nothing is
imported) and its imports of edgetl's own modules are checked: no circle, no import of a higher layer,
and the four stages never import one another. An import of a package counts as an import of its
``__init__.py``, so a module that imports its own package's face while that face imports it is a circle too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {
    "edgetl": REPO / "toolchain",
    "edgetl.calibration": REPO / "calibration",
    "edgetl.runtime": REPO / "edge_runtime",
}
STAGES = ("edgetl.train", "edgetl.qat", "edgetl.convert", "edgetl.parity")

# Lowest first. A module may import its own layer and the layers below it (stages: their own stage only).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("device runtime", ("edgetl.runtime",)),
    ("calibration set", ("edgetl.calibration",)),
    ("ground", ("edgetl.errors", "edgetl.log")),
    (
        "foundations",
        (
            "edgetl.config",
            "edgetl.data",
            "edgetl.model",
            "edgetl.runfolder",
            "edgetl.untrusted",
            "edgetl.stats",
            "edgetl.metrics",
        ),
    ),
    ("judgement", ("edgetl.gate",)),
    ("run report", ("edgetl.runreport",)),
    ("stages", STAGES),
    ("front ends", ("edgetl.api", "edgetl.cli")),
    ("package face", ("edgetl.__main__", "edgetl")),
)


def _modules() -> dict[str, Path]:
    found = {}
    for prefix, folder in sorted(FOLDERS.items(), key=lambda kv: -len(kv[0])):
        for path in folder.rglob("*.py"):
            if "_vendor" in path.parts:
                continue
            rel = path.relative_to(folder).with_suffix("").parts
            name = ".".join((prefix, *rel)).removesuffix(".__init__")
            found.setdefault(name, path)
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    if "._vendor" in name:
        return None  # generated code (flatbuffers), outside the rules
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> set[str]:
    """edgetl modules ``module`` imports (the package for ``from edgetl.x import name``, the module for a sub-module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets.update(_resolve(alias.name) or "" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("edgetl"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                targets.add(sub if sub in MODULES else _resolve(node.module) or "")
    return {t for t in targets if t and t != module}


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _layer(module: str) -> int:
    best = (-1, -1)
    for number, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                best = max(best, (len(prefix), number))
    assert best[1] >= 0, f"{module} belongs to no layer: add it to LAYERS in tests/test_layers.py"
    return best[1]


def _stage(module: str) -> str | None:
    return next((s for s in STAGES if module == s or module.startswith(s + ".")), None)


def test_every_module_has_a_layer_and_the_toolchain_has_its_folders() -> None:
    for module in MODULES:
        _layer(module)
    for folder in ("cli", "config", "data", "model", "train", "qat", "convert", "parity", "runreport"):
        assert (REPO / "toolchain" / folder / "__init__.py").is_file(), folder


def test_no_import_circle() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert circles == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_and_stages_stand_side_by_side(module: str) -> None:
    mine, stage = _layer(module), _stage(module)
    for target in sorted(GRAPH[module]):
        if module == "edgetl" or target.startswith(module + "."):
            continue  # the package face's lazy look-ups; a package's own modules
        where = f"{module} imports {target}"
        assert _layer(target) <= mine, (
            f"{where}: an upward import ({LAYERS[_layer(target)][0]} above {LAYERS[mine][0]})"
        )
        if stage and _stage(target):
            assert _stage(target) == stage, f"{where}: stages never import one another"


def test_the_checker_sees_a_planted_upward_import_and_circle() -> None:
    """The rules above are live: a foundation importing a stage, and two modules importing each other, are seen."""
    saved = {m: set(GRAPH[m]) for m in ("edgetl.stats", "edgetl.metrics")}
    try:
        GRAPH["edgetl.stats"].add("edgetl.parity.stage")
        with pytest.raises(AssertionError, match="an upward import"):
            test_imports_point_down_and_stages_stand_side_by_side("edgetl.stats")
        GRAPH["edgetl.stats"].add("edgetl.metrics")
        GRAPH["edgetl.metrics"].add("edgetl.stats")
        with pytest.raises(AssertionError):
            test_no_import_circle()
    finally:
        GRAPH.update(saved)


def test_every_package_folder_is_installed() -> None:
    """A folder with an ``__init__.py`` missing from pyproject's package list would be left out of the wheel."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert sorted(folders - listed) == []
