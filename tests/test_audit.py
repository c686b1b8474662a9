"""`make audit`'s reading of pip-audit's report (.ci/audit.py), offline: what fails, what is only listed,
and a report of nothing audited told apart from a clean one."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

# Reads a JSON document: nothing here touches a database.
pytestmark = pytest.mark.database_agnostic


def _audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_audit", Path(__file__).resolve().parent.parent / ".ci/audit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ci_audit"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


audit = _audit()


def test_vulnerability_with_fix_fails() -> None:
    """A known vulnerability with a fixed version is a finding that fails the audit."""
    found = audit.verdict({"dependencies": [
        {"name": "requests", "version": "2.19.0", "vulns": [{"id": "PYSEC-2018-28", "fix_versions": ["2.20.0"]}]},
        {"name": "idna", "version": "3.7", "vulns": []},
    ]})
    assert found.fixable == ["requests 2.19.0 PYSEC-2018-28 (fixed in 2.20.0)"]
    assert found.reachable and found.audited == 2


def test_vulnerability_without_fix_is_listed_only() -> None:
    """A known vulnerability with no fixed version is listed, not a failing finding."""
    found = audit.verdict({"dependencies": [
        {"name": "pycrypto", "version": "2.6.1", "vulns": [{"id": "PYSEC-2017-94", "fix_versions": []}]},
    ]})
    assert found.fixable == [] and found.unfixed == ["pycrypto 2.6.1 PYSEC-2017-94 (no fixed version yet)"]


def test_every_package_skipped_is_not_a_clean_audit() -> None:
    """A report where every package was skipped (advisory data not reached) is not taken for clean."""
    reason = "Dependency not found on PyPI and could not be audited: django (5.2.1)"
    found = audit.verdict({"dependencies": [{"name": "django", "version": "5.2.1", "skip_reason": reason}]})
    assert not found.reachable and found.fixable == [] and found.skipped == [f"django: {reason}"]
