"""The architecture, guarded: Kong's imports run one way and never in a circle.

Layers, highest first; a module may import its own layer or a lower one:

- faces: what people and Django call (commands, views, admin, template tags,
  system checks, the Tasks entry point, command output);
- services: orchestration and read models (planning, running, recording,
  claims, the scheduler loop, run-now, the dashboard);
- domain: the engine that wraps twill, notifiers, rollups;
- base: models, settings, statuses, masking and the cron maths the models
  validate with.

Every import counts, including those inside functions and under
``TYPE_CHECKING``: a type-level dependency is still a dependency.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "kong"

LAYERS: dict[str, tuple[str, ...]] = {
    "faces": (
        "kong.views", "kong.urls", "kong.admin", "kong.forms", "kong.apps", "kong.system_checks",
        "kong.templatetags", "kong.management", "kong.formats", "kong.progress", "kong.tasks",
    ),
    "services": ("kong.services", "kong.scheduler", "kong.run_now", "kong.dashboard"),
    "domain": ("kong.engine", "kong.notifiers", "kong.rollups"),
    "base": ("kong.models", "kong.conf", "kong.status", "kong.masking", "kong.schedule", "kong.migrations"),
}  # fmt: skip
ORDER = list(LAYERS)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str | None:
    if module == "kong":
        return "base"
    for layer, prefixes in LAYERS.items():
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return layer
    return None


def resolve(target: str, known: dict[str, Path]) -> str | None:
    """The Kong module ``target`` names (a module, or a name inside one)."""
    while target:
        if target in known:
            return target
        target = target.rpartition(".")[0]
    return None


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The Kong modules ``module`` imports, anywhere in its source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            target = resolve(name, known)
            if target and target not in (module, "kong") and name.startswith("kong"):
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {module: imports(module, path, known) for module, path in known.items()}


def test_every_module_has_a_layer():
    assert [module for module in modules() if layer_of(module) is None] == []


def test_no_import_runs_up_the_layers():
    wrong = [
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in sorted(graph().items())
        for target in sorted(targets)
        if ORDER.index(layer_of(target) or "base") < ORDER.index(layer_of(module) or "base")
    ]
    assert wrong == []


def test_no_import_cycles():
    edges = graph()
    # A package importing its own submodules (re-exports) is not a cycle
    # unless a submodule imports the package back.
    cycles: list[list[str]] = []
    state: dict[str, int] = defaultdict(int)  # 0 new, 1 on the stack, 2 done
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(edges.get(module, ())):
            if state[target] == 1:
                cycles.append([*stack[stack.index(target) :], target])
            elif state[target] == 0:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(edges):
        if state[module] == 0:
            visit(module)
    assert cycles == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from kong.models import Check", {"kong.models"}),
        ("from kong import services, models", {"kong.services", "kong.models"}),
        ("def f():\n    from kong.engine.scripts import Step", {"kong.engine.scripts"}),
        ("from .fleet import Row", {"kong.dashboard.fleet"}),
    ],
)
def test_the_import_reader_sees_every_form(tmp_path, source, expected):
    path = tmp_path / "probe.py"
    path.write_text(source)
    known = {**modules(), "kong.dashboard.probe": path}
    assert imports("kong.dashboard.probe", path, known) == expected
