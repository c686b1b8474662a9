"""The documentation stands on its own: nothing in the repository points at notes outside it, relative
links in the Markdown files lead to files and headings that exist, and the section numbers code cites
are sections of docs/."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

from tests.servers import ROOT

pytestmark = pytest.mark.database_agnostic

# Spelled in pieces, so that this file does not name them itself.
OUTSIDE = ("../" + "shared", "DESIGN" + ".md", "PROTOCOL" + ".md", "STYLE" + ".md")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
SECTION_REFERENCE = re.compile(r"docs/([\w-]+\.md),? sections? (\d+)(?:-(\d+))?(?: and (\d+))?")


@cache
def tracked() -> list[str]:
    try:
        done = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout: {exc}")
    return [name for name in done.stdout.decode().split("\0") if name]


def text_of(name: str) -> str | None:
    path = ROOT / name
    if not path.is_file():
        return None  # deleted in the work tree
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", errors="replace")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "deploy").glob("*.md"))]


def without_code(markdown: str) -> str:
    """The text outside fenced code blocks and inline code (links there are not links)."""
    markdown = re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", markdown)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S),
                              re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def section_numbers(path: Path) -> set[int]:
    return {int(n) for n in re.findall(r"^## (\d+)\. ", path.read_text(), re.M)}


def test_nothing_refers_outside_the_repository() -> None:
    """No tracked file mentions the notes outside the repository (they are not there for readers)."""
    offenders = []
    for name in tracked():
        text = text_of(name)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if any(word in line for word in OUTSIDE):
                offenders.append(f"{name}:{number}: {line.strip()[:100]}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    """Every relative link leads to a tracked file or folder, and its #anchor to a heading there."""
    files = set(tracked())
    folders = {str(parent) for name in files for parent in Path(name).parents}
    broken = []
    for match in LINK.finditer(without_code(path.read_text())):
        target = match.group(1) or match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        try:
            relative = str(resolved.relative_to(ROOT))
        except ValueError:
            broken.append(f"{target}: outside the repository")
            continue
        if relative not in files and relative not in folders:
            broken.append(f"{target}: {relative} is not in the repository")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {relative}")
    assert not broken, "\n".join(broken)


def test_cited_sections_exist() -> None:
    """Every "docs/<name>.md section N" in the code names a numbered section of that document."""
    wrong = []
    cited = 0
    for name in tracked():
        text = text_of(name)
        if text is None or not name.endswith((".py", ".md", ".toml", ".conf", ".yaml")):
            continue
        for match in SECTION_REFERENCE.finditer(text):
            document = ROOT / "docs" / match.group(1)
            numbers = [int(n) for n in match.groups()[1:] if n]
            if len(numbers) > 1 and match.group(3):
                numbers = list(range(numbers[0], int(match.group(3)) + 1)) + numbers[2:]
            cited += 1
            if not document.is_file():
                wrong.append(f"{name}: {match.group(0)}: no such document")
                continue
            missing = set(numbers) - section_numbers(document)
            if missing:
                wrong.append(f"{name}: {match.group(0)}: no section {sorted(missing)}")
    assert cited > 0, "no section references found: has the pattern changed?"
    assert not wrong, "\n".join(wrong)


def test_slug_follows_github() -> None:
    """Anchors are computed as GitHub computes them."""
    assert slug("4. Group commit (app/broker/commit.py)") == "4-group-commit-appbrokercommitpy"
    assert slug("Two semantics on one set of topics") == "two-semantics-on-one-set-of-topics"
