"""Anchored patterns end at the end of the text, not before a trailing newline.

In Python's `re`, `$` also matches just before a final "\\n": `^[a-z]+$` accepts "abc\\n".
A file name, id or header value ending in a newline would then pass a check and fail (or
do harm) further on. Every anchored pattern of the app ends with `\\Z` instead, and this
test keeps it so.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RE_FUNCTIONS = {"compile", "match", "fullmatch", "search"}


def _dollar_patterns(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in RE_FUNCTIONS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "re"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            continue
        pattern = node.args[0].value
        if pattern.endswith("$") and not pattern.endswith("\\$"):
            found.append((node.lineno, pattern))
    return found


def test_the_checker_finds_a_dollar_anchor() -> None:
    tree = ast.parse('import re\nA = re.compile(r"^[a-z]+$")\nB = re.compile(r"^[a-z]+\\Z")\n')
    assert _dollar_patterns(tree) == [(2, "^[a-z]+$")]


@pytest.mark.parametrize(
    "path",
    sorted([*ROOT.glob("shared/**/*.py"), *ROOT.glob("functions/*.py")]),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_pattern_ends_with_a_dollar(path: Path) -> None:
    found = _dollar_patterns(ast.parse(path.read_text(), str(path)))
    assert not found, f"end these patterns with \\Z, not $: {found}"


def test_a_file_name_ending_in_a_newline_gets_no_upload_url(app_runtime: object) -> None:
    from tests.kit.host import json_body, request

    response = request(
        "POST",
        "/api/v1/voices/v-123/uploads",
        body={"kind": "samples", "files": ["utt-1.wav\n"]},
        token="dev_ana_analyst",
    )
    assert response.status_code == 400
    assert json_body(response)["reason"] == "validation_failed"
