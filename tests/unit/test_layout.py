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
SOURCE_API = ("READS_IN_PLACE", "validate", "listing", "facts", "fetch", "describe", "public_source")
DESTINATION_API = ("storage_parts", "validate", "preflight", "publish", "describe")


def test_every_source_type_is_one_module_with_the_whole_interface():
    assert set(sources.TYPES) == set(settings.SOURCE_TYPES)
    for name, module in sources.TYPES.items():
        assert [a for a in SOURCE_API if not hasattr(module, a)] == [], name


def test_every_destination_type_is_one_module_with_the_whole_interface():
    assert set(destinations.TYPES) == set(settings.DESTINATION_TYPES)
    for name, module in destinations.TYPES.items():
        assert [a for a in DESTINATION_API if not hasattr(module, a)] == [], name


def _modules() -> list[str]:
    return sorted("modelsync." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
                  for p in PACKAGE.rglob("*.py") if "awscli_plugin" not in p.parts)


@pytest.mark.parametrize("module", _modules())
def test_each_module_imports_on_its_own(module):
    """An import circle shows up as an ImportError when the circle is entered from the 'wrong' module."""
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_only_the_top_imports_the_configuration_at_run_time():
    """config -> validate -> the types -> endpoints...: none of those may import config back (type hints only)."""
    importers = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:  # module level only: TYPE_CHECKING blocks are ast.If
            if isinstance(node, ast.ImportFrom) and node.level and (node.module or "").split(".")[-1] == "config":
                importers.append(path.relative_to(PACKAGE).as_posix())
    assert sorted(importers) == ["job.py"]
