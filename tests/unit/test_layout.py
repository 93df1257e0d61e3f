"""The code's shape that the README and ARCHITECTURE promise: one module per storage type behind one table, and
no import circles (each module imports on its own, and nothing below the job imports the configuration)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from modelsync import destinations, settings, sources

PACKAGE = Path(sources.__file__).resolve().parent.parent
COMMON_API = ("WRITTEN_AS", "SETTINGS", "read_files", "validate", "spec", "describe")
SOURCE_API = (*COMMON_API, "claims", "in_place", "listing", "facts", "fetch", "public_source", "metadata")
DESTINATION_API = (*COMMON_API, "storage_parts", "preflight", "publish", "model_name", "image")


def test_every_source_type_is_one_module_with_the_whole_interface():
    assert set(settings.SOURCE_TYPES) == {name for t in sources.TYPES for name in t.WRITTEN_AS}
    for module in sources.TYPES:
        assert [a for a in SOURCE_API if not hasattr(module, a)] == [], module.__name__


def test_every_destination_type_is_one_module_with_the_whole_interface():
    assert set(settings.DESTINATION_TYPES) == {name for t in destinations.TYPES for name in t.WRITTEN_AS}
    for module in destinations.TYPES:
        assert [a for a in DESTINATION_API if not hasattr(module, a)] == [], module.__name__


def test_every_type_setting_is_named_for_its_side():
    for side, registry in (("source", sources.TYPES), ("destination", destinations.TYPES)):
        for module in registry:
            for s in module.SETTINGS:
                assert s.name.startswith(f"{side}_") or s.name == "destination_oci_backend", (module, s.name)


def _modules() -> list[str]:
    return sorted("modelsync." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
                  for p in PACKAGE.rglob("*.py") if "awscli_plugin" not in p.parts)


@pytest.mark.parametrize("module", _modules())
def test_each_module_imports_on_its_own(module):
    """An import circle shows up as an ImportError when the circle is entered from the 'wrong' module."""
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def _imports(path: Path) -> set[str]:
    """Every modelsync module a file imports, wherever the import is written: module level, inside a function,
    under `if TYPE_CHECKING:` (a circle of type hints is still a circle for the reader)."""
    name = "modelsync." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = name.removesuffix(".__init__") if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("modelsync")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            elif (node.module or "").startswith("modelsync"):
                target = node.module or ""
            else:
                continue
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names}  # `from . import s3` names a module
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {m: PACKAGE.parent / (m.replace(".", "/") + ".py") for m in _modules()}
    for m in list(modules):
        if not modules[m].exists():
            modules[m] = PACKAGE.parent / m.replace(".", "/") / "__init__.py"
    return {m: {t for t in _imports(p) if t in modules and t != m} for m, p in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_circles_in_the_package():
    """A package's __init__ importing its own modules is not a circle; anything else that comes back is."""
    graph = import_graph()
    for m, targets in graph.items():  # a module importing its own package (for a sibling) goes through __init__
        graph[m] = {t for t in targets if not m.startswith(t + ".")}
    assert _cycle(graph) is None


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_below_the_job_imports_the_configuration():
    """config -> validate -> the types: the types and every stage take specs and values, never the config module."""
    importers = sorted(m for m, targets in import_graph().items() if "modelsync.config" in targets)
    assert importers == ["modelsync.__main__", "modelsync.ops.check"]  # the two entry points that read settings


# ---------------------------------------------------------------- the tests' own shape

TEST_TREES = [PACKAGE.parent / d for d in ("tests", "e2e", "bench")]


def _test_modules_imported(source: str) -> list[str]:
    """Every module named test_* that the source imports: `import a.test_x`, `from .test_x import f`,
    `from ..stack import test_x`; anywhere in the file."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            names = [module] + [f"{module.rstrip('.')}.{a.name}" if node.module else module + a.name
                                for a in node.names]
        else:
            continue
        found += [n for n in names if n.rsplit(".", 1)[-1].startswith("test_")]
    return found


def test_no_test_file_imports_another_test_file():
    """What two test files share lives in tests/support (and fixtures in a conftest): a test module imported from
    elsewhere runs its module-level code, its pytestmark and autouse fixtures are not the importer's, and moving or
    splitting it breaks files that only wanted a helper."""
    offenders = [f"{path.relative_to(PACKAGE.parent)}: {name}" for tree in TEST_TREES
                 for path in sorted(tree.rglob("*.py")) for name in _test_modules_imported(path.read_text())]
    assert offenders == []


def test_the_test_import_finder_finds_each_form():
    assert _test_modules_imported("import tests.stack.test_job\nfrom .test_job import mr_get\n"
                                  "from ..stack import test_hostile, other\nfrom ..unit.sources.test_uri import X\n"
                                  "def f():\n    from .test_signing import s\n") == [
        "tests.stack.test_job", ".test_job", "..stack.test_hostile", "..unit.sources.test_uri", ".test_signing"]
    assert _test_modules_imported("from ..support.jobs import base_env\nimport pytest\nfrom . import conftest\n") == []
