"""`make audit`'s reading of pip-audit's report and of PyPI's per-project documents (.ci/audit.py), offline:
what fails, what is only listed, what is not audited, and a report of nothing audited told apart from a clean
one."""

from __future__ import annotations

import importlib.util
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

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
    assert found.reachable and found.by_pip_audit == 2


def test_vulnerability_without_fix_is_listed_only() -> None:
    """A known vulnerability with no fixed version is listed, not a failing finding."""
    found = audit.verdict({"dependencies": [
        {"name": "pycrypto", "version": "2.6.1", "vulns": [{"id": "PYSEC-2017-94", "fix_versions": []}]},
    ]})
    assert found.fixable == [] and found.unfixed == ["pycrypto 2.6.1 PYSEC-2017-94 (no fixed version yet)"]


def test_every_package_skipped_is_not_a_clean_audit() -> None:
    """A report where every package was skipped (advisory data not reached) is not taken for clean."""
    reason = "Dependency not found on PyPI and could not be audited: django (5.2.1)"
    found = audit.verdict({"dependencies": [{"name": "django", "skip_reason": reason}]}, {}, {"django": "5.2.1"})
    assert not found.reachable and found.fixable == []
    assert found.not_audited == ["django 5.2.1 (no advisory data reachable)"]


SKIPPED = "Dependency not found on PyPI and could not be audited"


def _skipped(name: str, version: str) -> dict[str, Any]:
    """pip-audit's report of one skipped package: as pip-audit 2.10 writes it, with no version field."""
    return {"dependencies": [{"name": name, "skip_reason": f"{SKIPPED}: {name} ({version})"}], "fixes": []}


def _skipped_verdict(name: str, version: str, document: dict[str, Any] | None) -> Any:
    """The verdict on one package pip-audit skipped, installed at ``version``, given its per-project document."""
    return audit.verdict(_skipped(name, version), {name: document}, {name: version})


def _project(latest: str, *vulns: dict[str, Any]) -> dict[str, Any]:
    """A per-project document as https://pypi.org/pypi/<name>/json serves it (the fields the audit reads)."""
    return {"info": {"version": latest}, "vulnerabilities": list(vulns)}


def _vuln(vuln_id: str, fixed_in: list[str], aliases: list[str] | None = None,
          withdrawn: str | None = None) -> dict[str, Any]:
    return {"id": vuln_id, "aliases": aliases or [], "fixed_in": fixed_in, "withdrawn": withdrawn,
            "details": "...", "link": f"https://osv.dev/vulnerability/{vuln_id}", "source": "osv", "summary": None}


def test_latest_release_with_fixable_vulnerability_fails() -> None:
    """A skipped package at its latest release with a fixable advisory in the per-project data fails."""
    document = _project("1.4", _vuln("GHSA-aaaa-bbbb-cccc", ["1.3.9"]))
    found = _skipped_verdict("widget", "1.4", document)
    assert found.fixable == ["widget 1.4 GHSA-aaaa-bbbb-cccc (fixed in 1.3.9)"]
    assert found.by_project_data == 1 and found.by_pip_audit == 0 and found.reachable


def test_latest_release_without_fix_is_listed_once() -> None:
    """An advisory without a fix is listed, once, though PyPI lists it under each database's id."""
    document = _project("2.6.1", _vuln("PYSEC-2017-94", [], ["CVE-2013-7459", "GHSA-cq27-v7xp-c356"]),
                        _vuln("GHSA-cq27-v7xp-c356", [], ["CVE-2013-7459", "PYSEC-2017-94"]))
    found = _skipped_verdict("pycrypto", "2.6.1", document)
    assert found.fixable == [] and found.unfixed == ["pycrypto 2.6.1 PYSEC-2017-94 (no fixed version yet)"]


def test_not_latest_release_is_not_audited() -> None:
    """A skipped package older than the latest release is named as not audited, whatever the latest's advisories."""
    document = _project("2.0", _vuln("GHSA-dddd-eeee-ffff", ["2.1"]))
    found = _skipped_verdict("widget", "1.9", document)
    assert found.not_audited == ["widget 1.9 (per-version advisory data unreachable; latest is 2.0)"]
    assert found.fixable == [] and not found.reachable


def test_withdrawn_advisory_is_ignored() -> None:
    """A withdrawn advisory neither fails the audit nor is listed."""
    document = _project("3.0", _vuln("GHSA-gggg-hhhh-iiii", ["3.1"], withdrawn="2026-01-02T00:00:00Z"))
    found = _skipped_verdict("widget", "3.0", document)
    assert found.fixable == [] and found.unfixed == [] and found.by_project_data == 1


def test_unreachable_project_document_is_not_audited() -> None:
    """A package whose per-project document could not be fetched (network error) is not audited."""
    found = _skipped_verdict("widget", "3.0", None)
    assert found.not_audited == ["widget 3.0 (no advisory data reachable)"] and not found.reachable


def test_installed_version_found_by_canonical_name() -> None:
    """A skipped package's version is looked up in the pins under its canonical name (``Foo_Bar`` is ``foo-bar``)."""
    installed = audit.pins("Foo_Bar==1.0\n")
    found = audit.verdict(_skipped("foo-bar", "1.0"), {"foo-bar": _project("1.0")}, installed)
    assert installed == {"foo-bar": "1.0"} and found.by_project_data == 1 and found.not_audited == []


def test_no_pip_audit_report_skips_every_pin() -> None:
    """Without a pip-audit report every pinned package is left to the per-project data."""
    report = audit.unaudited_report("Django==5.2.1\nidna==3.7\n", "pip-audit produced no report")
    assert audit.skipped(report) == ["django", "idna"]
    found = audit.verdict(report, {"django": _project("5.2.1"), "idna": _project("3.10")})
    assert found.by_project_data == 1
    assert found.not_audited == ["idna 3.7 (per-version advisory data unreachable; latest is 3.10)"]


def test_network_error_reads_as_no_document(monkeypatch: pytest.MonkeyPatch) -> None:
    """A network error fetching the per-project document gives None (not audited), not an exception."""
    def refuse(url: str, timeout: float) -> None:
        raise urllib.error.URLError("unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    assert audit.fetch_project("widget") is None
