"""The error the local services raise, and the log tail their messages quote."""

from __future__ import annotations

from pathlib import Path

LOG_TAIL_CHARS = 4000


class LocalServicesError(RuntimeError):
    """A local service could not be installed, started or found."""


def log_tail(path: Path) -> str:
    """The last LOG_TAIL_CHARS characters of a service log, for an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-LOG_TAIL_CHARS:] or "(empty log)"
