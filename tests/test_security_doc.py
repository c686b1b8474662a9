"""SECURITY.md cannot go stale: every test its threat table names exists, every threat not marked
"(pending)" names one, and every setting its limits table names is a setting."""

from __future__ import annotations

import ast
import re
from functools import cache

import pytest
from django.conf import settings

from tests.servers import ROOT

pytestmark = pytest.mark.database_agnostic

SECURITY = ROOT / "SECURITY.md"
TEST_REFERENCE = re.compile(r"`(tests/[\w*]+\.py)(?:::(\w+))?`")
THREAT_ROW = re.compile(r"^\| T(\d+) ")
PENDING = "(pending)"


@cache
def lines() -> list[str]:
    return SECURITY.read_text().splitlines()


def threat_rows() -> list[str]:
    return [line for line in lines() if THREAT_ROW.match(line)]


@cache
def defined_tests(path: str) -> frozenset[str]:
    """The test functions ``path`` defines at module level (empty when it does not exist)."""
    file = ROOT / path
    if not file.is_file():
        return frozenset()
    tree = ast.parse(file.read_text())
    return frozenset(node.name for node in tree.body
                     if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"))


def test_every_named_test_exists() -> None:
    """Each ``tests/x.py::test_y`` (and each file named alone) outside rows marked pending exists."""
    missing = []
    for line in lines():
        if PENDING in line:
            continue
        for path, name in TEST_REFERENCE.findall(line):
            if name and name not in defined_tests(path) or not name and not (ROOT / path).is_file():
                missing.append(f"{path}::{name}" if name else path)
    assert not missing, f"SECURITY.md names tests that do not exist: {missing}"


def test_every_threat_names_a_test_or_is_pending() -> None:
    """A threat row either names at least one test function or says it is pending."""
    rows = threat_rows()
    assert len(rows) >= 20, "the threat table was not found"
    unproven = [row[:60] for row in rows if PENDING not in row and not any(
        name for _path, name in TEST_REFERENCE.findall(row))]
    assert not unproven, f"threats with no test: {unproven}"


def test_threats_are_numbered_in_order() -> None:
    """Threats are T1, T2, ... with no gap or repeat, so a reference to one stays unambiguous."""
    numbers = [int(THREAT_ROW.match(row).group(1)) for row in threat_rows()]  # type: ignore[union-attr]
    assert numbers == list(range(1, len(numbers) + 1))


def test_limits_table_names_settings() -> None:
    """Each setting the limits table names is one the server reads."""
    start = lines().index("## Limits")
    table = [line for line in lines()[start:] if line.startswith("| `")]
    names = [name for line in table for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1])]
    assert len(names) >= 30, names
    unknown = [name for name in names if not hasattr(settings, name)]
    assert not unknown, f"not settings: {unknown}"


def test_readme_links_to_it() -> None:
    """The README points at SECURITY.md."""
    assert "(SECURITY.md)" in (ROOT / "README.md").read_text()
