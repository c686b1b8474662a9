"""`make audit`: pip-audit of the installed dependency set; fails on a known vulnerability that has a fix.

pip-audit asks PyPI for each pinned version's advisories (https://pypi.org/pypi/<name>/<version>/json).
Where that answers nothing (the per-version documents are not served, or there is no network), pip-audit
skips every package as "not found" and would report "No known vulnerabilities found": that is no audit,
and this script says so instead (NOT AUDITED) rather than pass as clean. It exits 0 then, unless
AUDIT_REQUIRED=1: a check that fails wherever the advisory data cannot be reached would fail every run
on such a machine, whatever the dependencies.

Exit status: 0 audited clean (vulnerabilities without a fix are listed), or not audited and not
required; 1 a vulnerability with a fix available, or not audited and required.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Verdict:
    fixable: list[str]  # "name version id (fixed in ...)"
    unfixed: list[str]  # known, no fixed version yet: reported, not failed on
    skipped: list[str]  # "name: reason": not audited
    audited: int

    @property
    def reachable(self) -> bool:
        """Whether any package was audited at all (none: the advisory data was not reached)."""
        return self.audited > 0


def verdict(report: dict[str, Any]) -> Verdict:
    """Read pip-audit's JSON report (``--format json``)."""
    fixable, unfixed, skipped, audited = [], [], [], 0
    for dependency in report.get("dependencies", []):
        name, version = dependency.get("name", "?"), dependency.get("version", "?")
        if "skip_reason" in dependency:
            skipped.append(f"{name}: {dependency['skip_reason']}")
            continue
        audited += 1
        for vuln in dependency.get("vulns", []):
            fixes = vuln.get("fix_versions") or []
            line = f"{name} {version} {vuln.get('id', '?')}"
            if fixes:
                fixable.append(f"{line} (fixed in {', '.join(fixes)})")
            else:
                unfixed.append(f"{line} (no fixed version yet)")
    return Verdict(fixable, unfixed, skipped, audited)


def frozen(python: str) -> str:
    """The environment's distributions pinned (``pip freeze``; the project itself, editable, left out)."""
    done = subprocess.run([python, "-m", "pip", "freeze", "--exclude-editable", "--all"],
                          check=True, capture_output=True, text=True)
    return "\n".join(line for line in done.stdout.splitlines() if "==" in line) + "\n"


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
    report = run_pip_audit(args.pip_audit, frozen(args.python))
    if report is None:
        print("audit: pip-audit produced no report (above: why); dependencies NOT AUDITED")
        return 1 if required else 0
    found = verdict(report)
    for line in found.unfixed:
        print(f"audit: known, no fix yet: {line}")
    if not found.reachable:
        print(f"audit: NOT AUDITED: none of {len(found.skipped)} packages had advisory data "
              f"(first: {found.skipped[0] if found.skipped else 'none'}); the per-version PyPI documents "
              "pip-audit reads were not reached" + ("" if required else " (AUDIT_REQUIRED=1 makes this fail)"))
        return 1 if required else 0
    for line in found.skipped:
        print(f"audit: skipped {line}")
    for line in found.fixable:
        print(f"audit: VULNERABLE, fix available: {line}")
    print(f"audit: {found.audited} packages audited, {len(found.fixable)} vulnerabilities with a fix, "
          f"{len(found.unfixed)} without, {len(found.skipped)} skipped")
    return 1 if found.fixable else 0


if __name__ == "__main__":
    sys.exit(main())
