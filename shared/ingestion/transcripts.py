"""Transcript files: `utterance_id<TAB>text` lines, UTF-8, as Custom Voice expects them."""

from __future__ import annotations

import re

from pydantic import Field

from shared.core.models import LazyModel

_UTTERANCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
MAX_TEXT_CHARS = 1_000


class TranscriptProblem(LazyModel):
    """One line that could not be used."""

    line: int
    code: str = Field(
        description="empty_line, missing_tab, invalid_id, empty_text, text_too_long, duplicate_id"
    )
    detail: str


class TranscriptFile(LazyModel):
    """The usable lines of a transcript file, and the problems of the others."""

    lines: dict[str, str]
    problems: list[TranscriptProblem]


class TranscriptRejected(ValueError):
    """The whole file is unusable (not UTF-8, or binary)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_transcript(data: bytes) -> TranscriptFile:
    """Parse and validate a transcript; bad lines are reported, not fatal."""
    if not data.strip():
        raise TranscriptRejected("empty_file", "the transcript is empty")
    if b"\x00" in data:
        raise TranscriptRejected("not_text", "the transcript is not a text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TranscriptRejected(
            "invalid_encoding", f"the transcript is not UTF-8 (byte {exc.start})"
        ) from None
    lines: dict[str, str] = {}
    problems: list[TranscriptProblem] = []

    def problem(number: int, code: str, detail: str) -> None:
        problems.append(TranscriptProblem(line=number, code=code, detail=detail))

    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            problem(number, "empty_line", "empty line")
            continue
        utterance_id, tab, content = raw.partition("\t")
        utterance_id, content = utterance_id.strip(), content.strip()
        if not tab:
            problem(number, "missing_tab", "expected utterance_id<TAB>text")
        elif not _UTTERANCE_ID.match(utterance_id):
            problem(number, "invalid_id", "utterance ids are letters, digits, - and _ (1-64)")
        elif not content:
            problem(number, "empty_text", f"no text for {utterance_id}")
        elif len(content) > MAX_TEXT_CHARS:
            problem(number, "text_too_long", f"over {MAX_TEXT_CHARS} characters")
        elif utterance_id in lines:
            problem(number, "duplicate_id", f"{utterance_id} appears more than once")
        else:
            lines[utterance_id] = content
    return TranscriptFile(lines=lines, problems=problems)
