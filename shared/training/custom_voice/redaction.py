"""Redaction of SAS signatures, the one secret Custom Voice text may carry (see README.md)."""

from __future__ import annotations

import re

__all__ = ["redact"]

_SAS_SIGNATURE = re.compile(r"(?i)(sig=)[^&\s\"'<>]+")


def redact(text: str) -> str:
    """Text safe to log: every SAS signature (`sig=...`) replaced."""
    return _SAS_SIGNATURE.sub(r"\1REDACTED", text)
