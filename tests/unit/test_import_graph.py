"""The rules of the house, read from the import statements themselves (docs/architecture.md,
"The wings of shared").

Every import in ``shared``, ``services``, ``simulator``, ``tooling`` and ``bench`` is read with
``ast`` (module level, inside functions and under ``TYPE_CHECKING`` alike, since each of them
is a dependency someone has to reason about), resolved to an absolute module name, and checked:

- a service imports no other service;
- ``shared`` imports no service, nor the simulator, tooling or the benchmarks;
- the simulator imports no service;
- nothing the runtime runs (``shared``, ``services``) imports tooling or the benchmarks.

Dynamic imports by string (the CLI's plugin table) are not imports of the module that holds
the string and are not checked here.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "services", "simulator", "tooling", "bench")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # ``from shared import supervise`` imports a module, not just a package.
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
    return found


def _service(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "services" and len(parts) > 1 else None


def violation(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported``, or None if it may."""
    src, dst = importer.split(".")[0], imported.split(".")[0]
    if dst not in PACKAGES:
        return None
    if src == "services" and dst == "services":
        mine, theirs = _service(importer), _service(imported)
        if theirs is not None and mine != theirs:
            return f"service {mine} imports service {theirs}"
    if src == "shared" and dst in ("services", "simulator", "tooling", "bench"):
        return f"shared imports {dst}"
    if src == "simulator" and dst == "services":
        return "the simulator imports a service"
    if src in ("shared", "services") and dst in ("tooling", "bench"):
        return f"runtime module imports {dst}"
    return None


def _all_modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO_ROOT / pkg).rglob("*.py"))


def test_the_import_graph_keeps_the_rules_of_the_house() -> None:
    problems = []
    for path in _all_modules():
        importer = _module_name(path)
        for line, imported in _imports(path):
            why = violation(importer, imported)
            if why:
                rel = path.relative_to(REPO_ROOT)
                problems.append(f"{rel}:{line}: {importer} -> {imported} ({why})")
    assert problems == []


def test_every_package_is_walked() -> None:
    walked = {_module_name(p).split(".")[0] for p in _all_modules()}
    assert walked == set(PACKAGES)


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("services.aggregator.app", "services.gateway.settings"),
        ("shared.runtime.pipeline", "services.ingest.processing"),
        ("shared.contracts.codec", "simulator.generator"),
        ("shared.settings", "tooling.stack"),
        ("simulator.demo", "services.gateway.auth"),
        ("services.drift.app", "tooling.benchmarking"),
        ("services.policy.app", "bench.policy"),
    ],
)
def test_each_forbidden_edge_is_caught(importer: str, imported: str) -> None:
    assert violation(importer, imported) is not None


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("services.aggregator.app", "services.aggregator.store"),
        ("services.gateway.app", "shared.windows.calibration"),
        ("simulator.demo", "tooling.stack"),
        ("bench.policy", "services.policy.app"),
        ("bench.pipeline", "simulator.generator"),
        ("tooling.cli", "shared.settings"),
    ],
)
def test_allowed_edges_pass(importer: str, imported: str) -> None:
    assert violation(importer, imported) is None


def test_relative_and_from_imports_are_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "REPO_ROOT", tmp_path)
    (tmp_path / "pkg").mkdir()
    module = tmp_path / "pkg" / "mod.py"
    module.write_text(
        "from . import sibling\nfrom .sub import thing\nfrom shared import supervise\n"
    )
    names = {name for _, name in _imports(module)}
    assert {"pkg.sibling", "pkg.sub", "pkg.sub.thing", "shared.supervise"} <= names
