"""The README is the front door: its configuration table must list every variable."""

from __future__ import annotations

import re
from pathlib import Path

from shop.cli.env import every_setting

README = Path(__file__).resolve().parents[1] / "README.md"


def test_configuration_table_lists_every_setting() -> None:
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", README.read_text(), flags=re.MULTILINE))
    read_by_services = {setting.name for setting in every_setting()}
    assert read_by_services - documented == set(), "undocumented variables"
    assert documented - read_by_services == set(), "README documents variables nobody reads"


def test_readme_names_the_two_commands() -> None:
    text = README.read_text()
    assert "make demo" in text and "make test" in text
