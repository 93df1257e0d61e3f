"""The README, --help and the code say the same thing."""

from __future__ import annotations

import re
from pathlib import Path

from modelsync.settings import markdown_table

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_readme_settings_table_is_the_generated_one():
    table = re.search(r"<!-- settings-table:begin.*?-->\n(.*?)\n<!-- settings-table:end -->", README, re.S)
    assert table, "README lost its settings-table markers"
    assert table.group(1) == markdown_table(), "README table is stale: regenerate it from modelsync.settings"


def test_readme_quick_start_has_the_two_commands():
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make demo" in quick and "make test" in quick
