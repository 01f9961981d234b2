"""The one fake clock of the tests: a `() -> datetime` that only moves when told to.

Services take `clock: Callable[[], datetime]`; `Runtime(settings, clock=...)` hands one
to every service it builds. The Durable replay driver runs on the same kind of clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class FakeClock:
    """Fake UTC time: call it (or `now()`) for the time; move it with `advance`/`set`."""

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        self._now = _utc(start)

    def __call__(self) -> datetime:
        return self._now

    def now(self) -> datetime:
        """Return the current fake time (UTC)."""
        return self._now

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward by `delta`."""
        if delta < timedelta(0):
            raise ValueError("a clock does not go back; use set()")
        self._now += delta

    def advance_to(self, when: datetime) -> None:
        """Move the clock forward to `when` (never backwards)."""
        self._now = max(self._now, _utc(when))

    def set(self, when: datetime) -> None:
        """Put the clock at `when`, even backwards (the driver does after a sub-orchestration)."""
        self._now = _utc(when)
