"""`make audit`: pip-audit of the installed dependency set; fails on a known vulnerability that has a fix.

pip-audit asks PyPI for each pinned version's advisories (https://pypi.org/pypi/<name>/<version>/json).
Where that answers nothing (the per-version documents are not served, or there is no network), pip-audit
skips the package as "not found" and would report "No known vulnerabilities found": that is no audit.
Each package it skipped is audited here instead from PyPI's per-project document
(https://pypi.org/pypi/<name>/json), whose ``vulnerabilities`` describe the project's latest release
only: so only a package installed at that release is audited that way. Any other stays "not audited" and
is named. When nothing at all could be audited the script says NOT AUDITED rather than pass as clean, and
exits 0 unless AUDIT_REQUIRED=1: a check that fails wherever the advisory data cannot be reached would
fail every run on such a machine, whatever the dependencies.

Exit status: 0 audited clean (vulnerabilities without a fix are listed; packages not audited are named),
or nothing audited and not required; 1 a vulnerability with a fix available, or nothing audited and
required.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

PROJECT_URL = "https://pypi.org/pypi/{name}/json"
FETCH_TIMEOUT = 15.0  # seconds per document
FETCH_WORKERS = 8  # documents fetched at once: a PyPI that never answers costs ~packages/8 timeouts, not one each


@dataclass
class Verdict:
    fixable: list[str] = field(default_factory=list)  # "name version id (fixed in ...)"
    unfixed: list[str] = field(default_factory=list)  # known, no fixed version yet: reported, not failed on
    not_audited: list[str] = field(default_factory=list)  # "name version (why)"
    by_pip_audit: int = 0
    by_project_data: int = 0  # skipped by pip-audit, audited from the per-project document

    @property
    def audited(self) -> int:
        return self.by_pip_audit + self.by_project_data

    @property
    def reachable(self) -> bool:
        """Whether any package was audited at all (none: the advisory data was not reached)."""
        return self.audited > 0

    def record(self, name: str, version: str, vuln_id: str, fixes: Iterable[str]) -> None:
        line = f"{name} {version} {vuln_id}"
        fixed = sorted(set(fixes))
        if fixed:
            self.fixable.append(f"{line} (fixed in {', '.join(fixed)})")
        else:
            self.unfixed.append(f"{line} (no fixed version yet)")


def skipped(report: Mapping[str, Any]) -> list[str]:
    """The names of the packages pip-audit skipped (no advisory data for their version)."""
    return [d.get("name", "?") for d in report.get("dependencies", []) if "skip_reason" in d]


def canonical(name: str) -> str:
    """A distribution's name as PEP 503 compares it (``Django`` and ``django``, ``a_b`` and ``a-b`` are one)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(requirements: str) -> dict[str, str]:
    """The pinned version of each package of ``pip freeze`` output, by canonical name."""
    pairs = (line.split("==", 1) for line in requirements.splitlines() if "==" in line)
    return {canonical(name.strip()): version.strip() for name, version in pairs}


def verdict(report: Mapping[str, Any], documents: Mapping[str, Mapping[str, Any] | None] | None = None,
            installed: Mapping[str, str] | None = None) -> Verdict:
    """Read pip-audit's JSON report (``--format json``); audit each package it skipped from ``documents``.

    ``documents`` maps a skipped package's name to PyPI's per-project document, or to None (not fetched,
    unreachable): such a package is not audited. pip-audit gives a skipped package no version (only inside
    its skip reason): ``installed`` (``pins``) supplies it.
    """
    found = Verdict()
    for dependency in report.get("dependencies", []):
        name = dependency.get("name", "?")
        version = dependency.get("version") or (installed or {}).get(canonical(name), "?")
        if "skip_reason" in dependency:
            audit_from_project(found, name, version, (documents or {}).get(name))
            continue
        found.by_pip_audit += 1
        for vuln in dependency.get("vulns", []):
            found.record(name, version, vuln.get("id", "?"), vuln.get("fix_versions") or [])
    return found


def audit_from_project(found: Verdict, name: str, version: str, document: Mapping[str, Any] | None) -> None:
    """Audit one package from its per-project document, if that document speaks of the installed version."""
    if document is None:
        found.not_audited.append(f"{name} {version} (no advisory data reachable)")
        return
    latest = str(document.get("info", {}).get("version", "?"))
    if version == "?" or latest != version:
        # The document's vulnerabilities are the latest release's; the installed one may have others, or fewer.
        found.not_audited.append(f"{name} {version} (per-version advisory data unreachable; latest is {latest})")
        return
    found.by_project_data += 1
    for vuln_id, fixes in distinct(document.get("vulnerabilities") or []):
        found.record(name, version, vuln_id, fixes)


def distinct(vulns: Iterable[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """The advisories not withdrawn, each once (PyPI lists one advisory under each database's id)."""
    merged: list[tuple[set[str], str, list[str]]] = []  # (every id and alias, id shown, fixes)
    for vuln in vulns:
        if vuln.get("withdrawn"):
            continue
        names = {vuln.get("id", "?"), *(vuln.get("aliases") or [])}
        fixes = list(vuln.get("fixed_in") or [])
        for seen, _, seen_fixes in merged:
            if seen & names:
                seen |= names
                seen_fixes.extend(fixes)
                break
        else:
            merged.append((names, vuln.get("id", "?"), fixes))
    return [(shown, fixes) for _, shown, fixes in merged]


def fetch_project(name: str, timeout: float = FETCH_TIMEOUT) -> dict[str, Any] | None:
    """PyPI's per-project document for ``name``, or None when it cannot be had (any network error)."""
    url = PROJECT_URL.format(name=urllib.parse.quote(name, safe=""))
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            document: dict[str, Any] = json.load(answer)
            return document
    except (OSError, ValueError):  # URLError, HTTPError, timeouts and resets are OSErrors; ValueError: not JSON
        return None


def fetch_projects(names: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    names = list(dict.fromkeys(names))
    with ThreadPoolExecutor(FETCH_WORKERS) as pool:
        return dict(zip(names, pool.map(fetch_project, names), strict=True))


def frozen(python: str) -> str:
    """The environment's distributions pinned (``pip freeze``; the project itself, editable, left out)."""
    done = subprocess.run([python, "-m", "pip", "freeze", "--exclude-editable", "--all"],
                          check=True, capture_output=True, text=True)
    return "\n".join(line for line in done.stdout.splitlines() if "==" in line) + "\n"


def unaudited_report(requirements: str, reason: str) -> dict[str, Any]:
    """A report skipping every pinned package, for when pip-audit gave none: each is then audited from PyPI."""
    return {"dependencies": [{"name": name, "version": version, "skip_reason": reason}
                             for name, version in pins(requirements).items()]}


def run_pip_audit(pip_audit: str, requirements: str) -> dict[str, Any] | None:
    """pip-audit's report, or None when it gave none (it failed to reach any service, say)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as pinned:
        pinned.write(requirements)
    try:
        done = subprocess.run([pip_audit, "--requirement", pinned.name, "--no-deps", "--disable-pip",
                               "--progress-spinner", "off", "--format", "json"],
                              capture_output=True, text=True, timeout=900)
    finally:
        os.unlink(pinned.name)
    try:
        report: dict[str, Any] = json.loads(done.stdout)
        return report
    except ValueError:
        sys.stderr.write(done.stderr[-3000:])
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", required=True, help="the interpreter of the environment to audit")
    parser.add_argument("--pip-audit", required=True, help="the pip-audit executable")
    args = parser.parse_args()
    required = os.environ.get("AUDIT_REQUIRED") == "1"
    requirements = frozen(args.python)
    report = run_pip_audit(args.pip_audit, requirements)
    if report is None:
        print("audit: pip-audit produced no report (above: why); auditing from PyPI's per-project data alone")
        report = unaudited_report(requirements, "pip-audit produced no report")
    found = verdict(report, fetch_projects(skipped(report)), pins(requirements))
    for line in found.unfixed:
        print(f"audit: known, no fix yet: {line}")
    for line in found.not_audited:
        print(f"audit: not audited: {line}")
    if not found.reachable:
        print(f"audit: NOT AUDITED: none of {len(found.not_audited)} packages had advisory data for their "
              "installed version (per-version PyPI documents and per-project documents naming it not reached)"
              + ("" if required else " (AUDIT_REQUIRED=1 makes this fail)"))
        return 1 if required else 0
    for line in found.fixable:
        print(f"audit: VULNERABLE, fix available: {line}")
    print(f"audit: {found.by_pip_audit} packages audited by pip-audit, {found.by_project_data} by PyPI's "
          f"per-project data (installed = latest release), {len(found.not_audited)} not audited; "
          f"{len(found.fixable)} vulnerabilities with a fix, {len(found.unfixed)} without")
    return 1 if found.fixable else 0


if __name__ == "__main__":
    sys.exit(main())
