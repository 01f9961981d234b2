"""Platform signals counted in memory and written to the rollups a few times a minute.

Requests per route family (and their server errors) and authentication failures happen on
every instance, often many times a second; one Cosmos write per request would double the
cost of the cheapest call. A `SignalCounter` adds them up in memory per signal, counter and
UTC minute, and `flush` writes each minute's sums as one rollup sample (a patch increment,
so instances flushing at once lose nothing). A flush that fails keeps the counts for the
next one; minutes older than `keep_minutes` are dropped, so memory stays bounded while
Cosmos is down. The counts of an instance that stops between flushes are lost: at most
`flush_interval_s` of them, which the alert thresholds tolerate.

The signals are the platform's, not a tenant's: an authentication failure has no tenant
that can be trusted, so they are recorded in Timbre's own partition.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from shared.storage.rollups import RollupStore, Sample, minute_of

log = logging.getLogger(__name__)

#: Requests per route family: `<family>` (all) and `<family>_5xx` (server errors).
REQUESTS: Final = "requests"
#: Authentication failures, one counter per reason.
AUTH: Final = "auth"
#: The partition of platform-wide signals (the same as the runtime's SYSTEM_TENANT).
SYSTEM_TENANT: Final = "timbre-system"

_COUNTER = re.compile(r"[^A-Za-z0-9_]")


def counter_name(text: str) -> str:
    """A rollup counter name from free text (letters, digits, `_`; at most 32 characters)."""
    name = _COUNTER.sub("_", text)[:32] or "other"
    return name if name[0].isalpha() else f"x{name[:31]}"


class SignalCounter:
    """Counts per signal, counter and minute, flushed to a `RollupStore`.

    `store` gives the store when the first minute is written, so counting a request never
    builds a storage client (a request refused for its token still counts when Cosmos is
    down or not configured).
    """

    def __init__(
        self,
        store: Callable[[], RollupStore],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        flush_interval_s: float = 10.0,
        keep_minutes: int = 10,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._clock = clock
        self._timer = timer
        self._interval = flush_interval_s
        self._keep = timedelta(minutes=keep_minutes)
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._pending: dict[tuple[str, datetime], Counter[str]] = {}
        self._last_flush = timer()
        self._flushing = False

    def add(self, signal: str, counter: str, n: int = 1) -> None:
        """Count `n` of `counter` in this minute of `signal`."""
        minute = self._clock().astimezone(UTC).replace(second=0, microsecond=0)
        with self._lock:
            self._pending.setdefault((signal, minute), Counter())[counter_name(counter)] += n

    def request(self, family: str, status: int) -> None:
        """One HTTP request of a route family and its status."""
        family = counter_name(family)[:28]
        self.add(REQUESTS, family)
        if status >= 500:
            self.add(REQUESTS, f"{family}_5xx")

    def auth_failure(self, reason: str) -> None:
        """One authentication or authorization failure, by reason."""
        self.add(AUTH, reason)

    def pending(self) -> dict[tuple[str, str], dict[str, int]]:
        """What is counted and not yet written: (signal, minute) -> counters."""
        with self._lock:
            return {
                (signal, minute_of(minute)): dict(counts)
                for (signal, minute), counts in self._pending.items()
            }

    def flush(self) -> int:
        """Write every counted minute; the minutes written (the rest stay for the next)."""
        with self._flush_lock:
            with self._lock:
                taken, self._pending = self._pending, {}
                self._last_flush = self._timer()
            written = 0
            failed: dict[tuple[str, datetime], Counter[str]] = {}
            for (signal, minute), counts in sorted(taken.items(), key=lambda kv: kv[0][1]):
                positive = {name: n for name, n in counts.items() if n > 0}
                if not positive:
                    continue
                try:
                    self._store().record(
                        SYSTEM_TENANT, Sample(signal=signal, at=minute, counts=positive)
                    )
                    written += 1
                except Exception as error:
                    failed[(signal, minute)] = counts
                    log.warning(
                        "signal flush failed",
                        extra={"event": "signal_flush_failed", "error": type(error).__name__},
                    )
            if failed:
                self._keep_failed(failed)
            return written

    def flush_soon(self) -> None:
        """When the interval has passed since the last flush, flush in a short-lived
        background thread (the request that counted does not wait for Cosmos)."""
        if self._timer() - self._last_flush < self._interval:
            return
        with self._lock:
            if self._flushing or self._timer() - self._last_flush < self._interval:
                return
            self._flushing = True
        threading.Thread(
            target=self._flush_in_background, name="timbre-signals", daemon=True
        ).start()

    def _flush_in_background(self) -> None:
        try:
            self.flush()
        except Exception:  # never raises into a thread nobody joins
            log.exception("signal flush failed", extra={"event": "signal_flush_failed"})
        finally:
            with self._lock:
                self._flushing = False

    def _keep_failed(self, failed: dict[tuple[str, datetime], Counter[str]]) -> None:
        oldest = self._clock().astimezone(UTC) - self._keep
        with self._lock:
            for key, counts in failed.items():
                if key[1] < oldest:
                    continue  # bounded: an outage longer than keep_minutes loses its oldest
                self._pending.setdefault(key, Counter()).update(counts)
