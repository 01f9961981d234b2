"""Sentences out of a streamed reply, as soon as each one is complete.

A reply arrives as text deltas; speech starts with the first whole sentence instead of
waiting for the whole reply. A sentence ends at `.`, `!`, `?` or `…` (and their CJK
forms) followed by whitespace or the end of the reply, or at a line break; a very long
stretch without either is cut at a space so that speech never waits too long.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

# Western ends need the whitespace after them (so "3.5" stays whole); CJK ends do not.
_END = re.compile(r"[.!?\u2026]+[\"')\]\u00bb\u201d\u2019]*(?=\s)|[\u3002\uff01\uff1f]+|\n+")
#: A stretch longer than this without a sentence end is spoken up to its last space.
MAX_SENTENCE_CHARS = 300


def sentences(deltas: Iterable[str]) -> Iterator[str]:
    """Whole sentences from text deltas, in order; the remainder when the deltas end."""
    pending = ""
    for delta in deltas:
        pending += delta
        while True:
            found = _END.search(pending)
            if found is not None:
                cut = found.end()
            elif len(pending) > MAX_SENTENCE_CHARS:
                space = pending.rfind(" ", 0, MAX_SENTENCE_CHARS)
                cut = space + 1 if space > 0 else MAX_SENTENCE_CHARS
            else:
                break
            sentence, pending = pending[:cut].strip(), pending[cut:]
            if sentence:
                yield sentence
    if pending.strip():
        yield pending.strip()
