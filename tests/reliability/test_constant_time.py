"""Secrets are compared in constant time: no `==`, `!=` or `in` on a token, digest or secret."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import SecretStr

from auction.auth import check_admin
from auction.errors import InvalidApiKey

ROOT = Path(__file__).resolve().parents[2]
CHECKED = [
    "auction/auth.py",
    "auction/providers.py",
    "auction/accounts.py",
    "auction/api_keys.py",
    "auction/routes/admin.py",
]
SECRET_WORDS = ("token", "digest", "secret", "api_key", "password")
EQUALITY = (ast.Eq, ast.NotEq, ast.In, ast.NotIn)


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Call):
        return _name(node.func)
    return ""


def secret_comparisons(source: str) -> list[str]:
    """`file:line` of each equality test with an operand named like a secret."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare) or not any(
            isinstance(op, EQUALITY) for op in node.ops
        ):
            continue
        names = [_name(part).lower() for part in (node.left, *node.comparators)]
        if any(word in name for name in names for word in SECRET_WORDS):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_guard_catches_a_plain_comparison() -> None:
    assert secret_comparisons("ok = token == configured.get_secret_value()")
    assert secret_comparisons("ok = stored_digest != digest")
    assert not secret_comparisons("ok = hmac.compare_digest(stored, digest)")


@pytest.mark.parametrize("path", CHECKED)
def test_no_secret_is_compared_with_equality(path: str) -> None:
    assert secret_comparisons((ROOT / path).read_text()) == []


@pytest.mark.parametrize(
    "header",
    ["Bearer s3cre", "Bearer s3cret!", "Bearer sécret", "Bearer " + "s" * 10_000, "s3cret"],
)
def test_a_wrong_admin_token_of_any_length_or_charset_is_refused(header: str) -> None:
    # compare_digest on str raises TypeError for non-ASCII; check_admin compares bytes instead.
    with pytest.raises(InvalidApiKey):
        check_admin(SecretStr("s3cret"), header)
