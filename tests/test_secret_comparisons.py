"""Secrets are verified without timing leaks: compared in Python only with ``compare_digest``; otherwise
looked up by their sha256 in an indexed query (app/auth/services.py says why that leaks nothing)."""

from __future__ import annotations

import ast
import secrets
from pathlib import Path

import pytest
from django.test import RequestFactory, override_settings

from app.server import metrics

ROOT = Path(__file__).resolve().parent.parent

# Every module that reads, verifies or keeps a credential.
VERIFIERS = (
    "app/auth", "app/api/auth.py", "app/api/worker_auth.py", "app/work/workers.py", "app/work/sessions.py",
    "consumers/auth.py", "consumers/worker.py", "app/server/metrics.py", "app/server/access_log.py",
    "settings/cqrs.py", "relays/cqrs_topic_consumer.py",
)
SECRET_WORDS = frozenset({
    "key", "secret", "hash", "digest", "password", "token", "credential", "cookie", "csrf", "authorization",
    "keys", "secrets", "hashes", "digests", "passwords", "tokens", "credentials", "cookies",
})
# Names with a secret word that name no secret: a row's id, the names of headers or query parameters that
# hold one, a revocation's generation.
NOT_SECRET_ENDINGS = frozenset({
    "id", "ids", "pk", "name", "names", "generation", "prefix", "scheme", "schemes", "headers", "parts", "words",
})


def _name(node: ast.expr) -> str:
    """The identifier an operand reads: ``x``, ``a.x``, ``x[...]``, ``x.lower()``; ``h["Name"]`` reads Name."""
    while True:
        if isinstance(node, ast.Call):
            node = node.func.value if isinstance(node.func, ast.Attribute) else node.func
        elif isinstance(node, ast.Subscript):
            if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                return node.slice.value
            node = node.value
        elif isinstance(node, ast.Attribute):
            return node.attr
        elif isinstance(node, ast.Name):
            return node.id
        else:
            return ""


def secret_named(node: ast.expr) -> bool:
    parts = _name(node).lower().strip("_").split("_")
    return bool(SECRET_WORDS & set(parts)) and parts[-1] not in NOT_SECRET_ENDINGS


def secret_comparisons(source: str) -> list[int]:
    """Lines where ``==``/``!=``/``in`` compares a secret-named value with anything but a literal (an
    empty or absent credential may be told apart: that reveals no stored secret)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        for op, left, right in zip(node.ops, operands[:-1], operands[1:], strict=True):
            if not isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)):
                continue
            if isinstance(left, ast.Constant) or isinstance(right, ast.Constant):
                continue
            if secret_named(left) or secret_named(right):
                lines.append(node.lineno)
    return lines


def verifier_files() -> list[Path]:
    files: list[Path] = []
    for entry in VERIFIERS:
        path = ROOT / entry
        files.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return [file for file in files if "migrations" not in file.parts]


def test_no_plain_comparison_of_secrets() -> None:
    """No module that verifies credentials compares a token, key, hash or password with ``==``/``!=``/``in``."""
    found = {str(file.relative_to(ROOT)): lines for file in verifier_files()
             if (lines := secret_comparisons(file.read_text()))}
    assert found == {}


@pytest.mark.parametrize("source", [
    "ok = given_key == stored_key",
    "ok = request.headers['Authorization'] != self.metrics_token",
    "ok = hash_key(key) in known_hashes",
    "ok = candidate.key_hash == key_hash.lower()",
])
def test_comparison_check_flags_plain_comparisons(source: str) -> None:
    """The static check flags a plain comparison of secret-named values."""
    assert secret_comparisons(source) == [1]


@pytest.mark.parametrize("source", [
    "ok = key == ''",
    "ok = token_id == credential_token_id",
    "ok = key is None",
    "ok = secrets.compare_digest(given_key, stored_key)",
])
def test_comparison_check_passes_safe_comparisons(source: str) -> None:
    """Comparisons with a literal, of ids, of identity, and compare_digest pass the static check."""
    assert secret_comparisons(source) == []


@pytest.mark.parametrize(("given", "allowed"), [("Bearer right-token", True), ("Bearer wrong-token", False)])
def test_metrics_token_checked_with_compare_digest(monkeypatch: pytest.MonkeyPatch, given: str,
                                                   allowed: bool) -> None:
    """METRICS_TOKEN, the one secret compared in Python, is compared with compare_digest, right or wrong."""
    calls: list[tuple[bytes, bytes]] = []
    compare = secrets.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(metrics.secrets, "compare_digest", recording)
    request = RequestFactory().get("/metrics", headers={"Authorization": given}, REMOTE_ADDR="192.0.2.1")
    with override_settings(METRICS_TOKEN="right-token"):
        assert metrics.may_scrape(request) is allowed
    assert calls == [(given.removeprefix("Bearer ").encode(), b"right-token")]
