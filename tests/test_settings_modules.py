"""The settings package: settings/__init__.py star-imports settings.base, then one module per feature
(settings.cqrs, ...); a later module must not silently replace a setting of an earlier one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SETTINGS = Path(__file__).resolve().parent.parent / "settings"
# Not feature settings: the package, the environment getters and the ASGI entry point.
NOT_FEATURES = {"__init__.py", "env.py", "asgi.py", "base.py"}


def assigned_settings(path: Path) -> set[str]:
    """Upper-case names a module assigns at its top level (imported names are not its own)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper() and t.id[0] != "_")
    return names


@pytest.mark.database_agnostic
def test_feature_modules_redefine_no_base_setting() -> None:
    """No feature settings module assigns a name settings.base assigns (its star import would win)."""
    base = assigned_settings(SETTINGS / "base.py")
    features = sorted(path for path in SETTINGS.glob("*.py") if path.name not in NOT_FEATURES)
    assert features, "no feature settings module found"
    clashes = {path.name: sorted(assigned_settings(path) & base) for path in features}
    assert clashes == {path.name: [] for path in features}
